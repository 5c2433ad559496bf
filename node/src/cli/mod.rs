//! Command-line entry points of `raftcron-node` and `raftcronctl`; the
//! binaries only call these.

mod common;
pub mod ctl;
pub mod jobs;
pub mod local;
pub mod run;
pub mod target;
pub mod yaml_files;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// What the commands share lives in common.rs, a leaf they all import: were it
// here, each command would import from the module that starts it.
pub(crate) use common::out;
pub use common::{DEFAULT_LOG, LogFormat, init_logging, shutdown_signal, write_line};

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
