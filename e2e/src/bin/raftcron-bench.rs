//! raftcron-bench: measurements on a real 3-node cluster of the binaries next
//! to this one (build with `cargo build --release --workspace --bins` and run
//! `target/release/raftcron-bench …`). Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use raftcron_e2e::bench;

#[derive(Parser)]
#[command(about = "Benchmarks of a real raftcron cluster on loopback")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Print the figures as JSON too.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Committed writes (schedule upserts) per second and their latency.
    Writes {
        #[arg(long, value_delimiter = ',', default_value = "1,64")]
        clients: Vec<usize>,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// kill -9 of the leader just before a due instant → that fire executed.
    Failover {
        #[arg(long, default_value_t = 10)]
        trials: usize,
        /// Extra node flags, e.g. "--election-timeout-min=150ms --election-timeout-max=300ms --heartbeat=50ms".
        #[arg(long, default_value = "")]
        node_args: String,
    },
    /// With RAFTCRON_E2E_KUBECONFIG: N ScheduledJobs applied → all Ready.
    KubernetesReady {
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Fire lateness of N per-second schedules, at the node and at the target.
    Lateness {
        #[arg(long, default_value_t = 1000)]
        schedules: usize,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let report = rt.block_on(async {
        match cli.command {
            Cmd::Writes { clients, duration } => bench::writes(&clients, duration).await,
            Cmd::Failover { trials, node_args } => {
                let args: Vec<String> = node_args.split_whitespace().map(str::to_string).collect();
                bench::failover(trials, args).await
            }
            Cmd::Lateness {
                schedules,
                duration,
            } => bench::lateness(schedules, duration).await,
            Cmd::KubernetesReady { count } => bench::kubernetes_ready(count).await,
        }
    })?;
    println!("{}", report.table());
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    }
    eprintln!("(took {:?})", started.elapsed());
    Ok(())
}
