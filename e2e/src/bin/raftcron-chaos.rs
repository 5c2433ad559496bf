//! Long fault runs: `raftcron-chaos --nodes 5 --duration 2h --seed 7`.
//! Needs root (network namespaces) and the debug or release binaries of
//! raftcron-node beside it (or RAFTCRON_BIN_DIR). Exits non-zero on any
//! violation.

use std::time::Duration;

use clap::Parser;
use raftcron_e2e::chaos::{self, ChaosOptions};

#[derive(Parser)]
#[command(about = "Seeded fault injection against a raftcron cluster in network namespaces")]
struct Args {
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long faults are injected (e.g. 10m, 2h).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Schedules firing every second.
    #[arg(long, default_value_t = 20)]
    schedules: usize,
    /// App replicas (a ledger target and a sidecar each, on hosts of their
    /// own; the cluster runs on mutual TLS); 0 for none.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// `app` schedules firing every second into the replicas.
    #[arg(long, default_value_t = 6)]
    app_schedules: usize,
    /// Longest a fault holds (quorum losses: at most 4 s).
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    max_hold: Duration,
    /// Only this fault kind: 0-1 kill leader, 2 kill minority, 3 kill majority,
    /// 4 minority partition, 5-6 leader in minority, 7 leader one-way, 8 random
    /// one-way link, 9 slow leader; with replicas: 10 kill a sidecar, 11 kill
    /// every sidecar but one, 12 cut a replica from the leader, 13 a replica's
    /// packets to the leader dropped, 14 the leader's to a replica, 15 every
    /// replica but one cut from every node, 16 kill every sidecar.
    #[arg(long)]
    only: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    raftcron_e2e::install_crypto();
    let a = Args::parse();
    if !(3..=9).contains(&a.nodes) {
        anyhow::bail!("--nodes: {} is out of range 3..=9", a.nodes);
    }
    if a.replicas == 1 || a.replicas > 9 {
        anyhow::bail!("--replicas: {} is not 0 or in 2..=9", a.replicas);
    }
    let kinds = if a.replicas > 0 { 16 } else { 9 };
    if a.only.is_some_and(|k| k > kinds) {
        anyhow::bail!(
            "--only: kinds go up to {kinds} with --replicas {}",
            a.replicas
        );
    }
    let report = chaos::run(ChaosOptions {
        nodes: a.nodes,
        seed: a.seed,
        duration: a.duration,
        schedules: a.schedules,
        replicas: a.replicas,
        app_schedules: a.app_schedules,
        max_hold: a.max_hold,
        only: a.only,
    })
    .await
    .map_err(anyhow::Error::msg)?;
    for (at, f) in &report.faults {
        println!("+{at:>8} ms {f}");
    }
    println!("{}", report.summary());
    if report.violations() > 0 {
        std::process::exit(1);
    }
    Ok(())
}
