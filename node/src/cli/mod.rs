//! Command-line entry points of `raftcron-node` and `raftcronctl`; the
//! binaries only call these.

pub mod ctl;
pub mod local;
pub mod run;
pub mod target;
pub mod yaml_files;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// Default log filter of `run` and `target`: openraft's chatter at `warn`.
pub const DEFAULT_LOG: &str = "info,openraft=warn";

/// Sets up logging from `RAFTCRON_LOG` (an env-filter directive), or
/// `default` when it is unset.
pub fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFTCRON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[derive(Parser, Debug)]
#[command(name = "raftcron-node", version, about = "raftcron scheduler node")]
struct NodeCli {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Run one node of a cluster.
    Run(Box<run::RunArgs>),
    /// Run a whole cluster on this machine from ScheduledJob YAML files.
    Local(local::LocalArgs),
    /// Serve the small HTTP target the examples, benchmarks and tests call.
    Target(TargetArgs),
    /// Run one app replica's sidecar: attach to the cluster's leader and
    /// deliver the app's jobs to it on loopback.
    Sidecar(Box<crate::sidecar::SidecarArgs>),
}

#[derive(clap::Args, Debug)]
struct TargetArgs {
    /// Listen address.
    #[arg(long, env = "RAFTCRON_TARGET_LISTEN", default_value = "127.0.0.1:7180")]
    listen: String,
    /// Append one JSON line per request received to this file.
    #[arg(long, env = "RAFTCRON_TARGET_LEDGER")]
    ledger: Option<std::path::PathBuf>,
}

/// `raftcron-node`.
pub fn node_main() -> ExitCode {
    let cli = NodeCli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            NodeCommand::Run(args) => run::run(*args).await,
            NodeCommand::Local(args) => local::run(args).await,
            NodeCommand::Sidecar(args) => crate::sidecar::run(*args).await,
            NodeCommand::Target(TargetArgs { listen, ledger }) => {
                init_logging(LogFormat::Plain, DEFAULT_LOG);
                let listener = run::bind(&listen, "--listen").await?;
                target::serve(listener, ledger, shutdown_signal()).await?;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftcron-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `raftcronctl`.
pub fn ctl_main() -> ExitCode {
    let cli = ctl::CtlCli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(ctl::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftcronctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `println!` that ends the process quietly, with status 0, once stdout is
/// closed: `raftcronctl list | head -1` must not panic with "failed
/// printing to stdout: Broken pipe" when `head` has what it wanted.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_line(format_args!($($arg)*)) };
}
pub(crate) use out;

pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
