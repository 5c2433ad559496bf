//! What every command shares: the log set-up, stdout that survives a
//! closed pipe, and the stop signal. A leaf: it imports no other module of
//! the crate, so the commands (and the sidecar) use it without importing
//! from `cli/mod.rs`, which starts them.

use clap::ValueEnum;

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
    // Colours only for a person at a terminal: in a container log or a
    // file the escape codes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
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
