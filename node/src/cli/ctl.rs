//! `raftcronctl`: the command-line client of the scheduler API.

use std::path::PathBuf;

use anyhow::{Context, bail};

use super::out;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::api::convert::{Origin, upsert_request};
use crate::client::Client;
use crate::pb::scheduler as pb;
use raftcron_crds::names::{self, rfc3339_ms};

#[derive(Parser, Debug)]
#[command(
    name = "raftcronctl",
    version,
    about = "Control a raftcron scheduler cluster"
)]
pub struct CtlCli {
    /// gRPC address of any node (HOST:PORT); several, comma separated, are tried in turn.
    #[arg(
        long,
        env = "RAFTCRON_ENDPOINT",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001",
        global = true
    )]
    pub endpoint: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table", global = true)]
    pub output: Output,
    /// PEM CA certificate to verify the nodes (enables TLS).
    #[arg(long, env = "RAFTCRON_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (mutual TLS).
    #[arg(long, env = "RAFTCRON_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM key for --tls-cert.
    #[arg(long, env = "RAFTCRON_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The state of the node asked (not forwarded).
    Status,
    /// Schedules, all namespaces unless -n is given.
    List {
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Runs of one schedule, newest first.
    Runs { target: String },
    /// Fire a schedule now, outside its schedule.
    Trigger { target: String },
    /// Stop new runs of a schedule.
    Suspend { target: String },
    /// Resume a suspended schedule (instants that passed meanwhile are not caught up).
    Resume { target: String },
    /// Create or update schedules from a multi-document ScheduledJob YAML file or a directory of them.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Delete a schedule.
    Delete { target: String },
    /// Cluster members.
    Members,
    /// Add or remove a member.
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
    /// If the node asked (--endpoint, not followed) leads, hand leadership to
    /// the most up-to-date other voter; otherwise do nothing. For preStop hooks.
    StepDown,
    /// Move leadership to another voter.
    TransferLeader {
        /// Target node id; default: the most up-to-date other voter.
        #[arg(long, default_value_t = 0)]
        to: u64,
    },
    /// Leases held by app code through their sidecars (docs/sidecar.md, "Leases").
    Leases {
        #[command(subcommand)]
        action: LeasesAction,
    },
    /// Jobs created by app code through their sidecars (docs/sidecar.md, "Jobs").
    Jobs {
        #[command(subcommand)]
        action: super::jobs::JobsAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum LeasesAction {
    /// Leases held now, all namespaces unless -n is given.
    List {
        #[arg(short, long)]
        namespace: Option<String>,
        /// Only this app's (needs -n).
        #[arg(long, requires = "namespace")]
        app: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberAction {
    /// Add node ID at ADDR (its uid is asked from it) and promote it to voter.
    Add {
        id: u64,
        addr: String,
        /// Keep it a learner (no vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove node ID from the membership.
    Remove { id: u64 },
}

/// Splits `NAMESPACE/NAME`; a bare `NAME` is in `default`.
pub fn parse_target(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.into(), name.into()))
        }
        None if !s.is_empty() => Ok((names::DEFAULT_NAMESPACE.into(), s.into())),
        _ => bail!("{s:?}: expected NAMESPACE/NAME"),
    }
}

fn ts(ms: Option<i64>) -> String {
    ms.map(rfc3339_ms).unwrap_or_else(|| "-".into())
}

fn print_json(v: serde_json::Value) {
    out!("{}", serde_json::to_string_pretty(&v).expect("json"));
}

pub async fn run(cli: CtlCli) -> anyhow::Result<()> {
    let tls = crate::tls::client_config(
        cli.tls_ca.as_deref(),
        cli.tls_cert.as_deref(),
        cli.tls_key.as_deref(),
    )?;
    let client = Client::new(cli.endpoint.clone(), tls.clone());
    let json_out = cli.output == Output::Json;
    match cli.command {
        Command::Status => {
            let s = client.status_of(&cli.endpoint[0]).await?;
            if json_out {
                print_json(json!({
                    "id": s.id, "leader": s.leader, "term": s.term,
                    "members": s.members.iter().map(|m| m.id).collect::<Vec<_>>(),
                    "voters": s.members.iter().filter(|m| m.voter).map(|m| m.id).collect::<Vec<_>>(),
                    "commit_index": s.commit_index, "applied_index": s.applied_index,
                    "state": s.state, "uid": s.uid, "cluster_id": s.cluster_id, "schedules": s.schedules,
                    "last_log_index": s.last_log_index, "snapshot_index": s.snapshot_index,
                }));
            } else {
                out!("node:      {} ({})", s.id, s.state);
                out!(
                    "leader:    {}",
                    s.leader.map_or("none".into(), |l| l.to_string())
                );
                out!("term:      {}", s.term);
                out!(
                    "committed: {}",
                    s.commit_index.map_or("-".into(), |i| i.to_string())
                );
                out!(
                    "applied:   {}",
                    s.applied_index.map_or("-".into(), |i| i.to_string())
                );
                out!("schedules: {}", s.schedules);
                out!(
                    "cluster:   {}",
                    if s.cluster_id.is_empty() {
                        "-"
                    } else {
                        &s.cluster_id
                    }
                );
                for m in &s.members {
                    out!(
                        "member:    {} {} {}",
                        m.id,
                        m.addr,
                        if m.voter { "voter" } else { "learner" }
                    );
                }
            }
        }
        Command::List { namespace } => {
            let list = client.list(namespace.as_deref().unwrap_or("")).await?;
            if json_out {
                print_json(serde_json::Value::Array(
                    list.schedules
                        .iter()
                        .map(|s| {
                            json!({"namespace": s.namespace, "name": s.name, "schedule": s.schedule,
                                   "time_zone": s.time_zone, "suspend": s.suspend,
                                   "next_fire": s.next_fire_ms.map(rfc3339_ms),
                                   "last_schedule": s.last_schedule_ms.map(rfc3339_ms), "uid": s.uid})
                        })
                        .collect(),
                ));
            } else {
                out!(
                    "{:<20} {:<32} {:<20} {:<8} {:<26}",
                    "NAMESPACE",
                    "NAME",
                    "SCHEDULE",
                    "SUSPEND",
                    "NEXT FIRE"
                );
                for s in &list.schedules {
                    out!(
                        "{:<20} {:<32} {:<20} {:<8} {:<26}",
                        s.namespace,
                        s.name,
                        s.schedule,
                        s.suspend,
                        ts(s.next_fire_ms)
                    );
                }
            }
        }
        Command::Runs { target } => {
            let (ns, name) = parse_target(&target)?;
            let runs = client.runs(&ns, &name).await?;
            if json_out {
                print_json(serde_json::Value::Array(
                    runs.runs
                        .iter()
                        .map(|r| {
                            json!({"run_id": r.run_id, "scheduled_time": rfc3339_ms(r.scheduled_ms),
                                   "start_time": r.start_ms.map(rfc3339_ms), "end_time": r.end_ms.map(rfc3339_ms),
                                   "node": r.node, "attempt": r.attempt, "result": r.result,
                                   "lateness_ms": r.lateness_ms, "message": r.message, "kind": r.kind,
                                   "pod": (!r.pod.is_empty()).then_some(&r.pod)})
                        })
                        .collect(),
                ));
            } else {
                out!(
                    "{:<26} {:<13} {:>7} {:>5} {:>9}  RUN ID",
                    "SCHEDULED",
                    "RESULT",
                    "ATTEMPT",
                    "NODE",
                    "LATENESS"
                );
                for r in &runs.runs {
                    let late = r.lateness_ms.map_or("-".into(), |l| format!("{l}ms"));
                    out!(
                        "{:<26} {:<13} {:>7} {:>5} {:>9}  {}",
                        rfc3339_ms(r.scheduled_ms),
                        r.result,
                        r.attempt,
                        r.node,
                        late,
                        r.run_id
                    );
                }
            }
        }
        Command::Trigger { target } => {
            let (ns, name) = parse_target(&target)?;
            let r = client.trigger(&ns, &name).await?;
            // The leader decides at the start (suspend, concurrency policy),
            // a few milliseconds after the trigger is recorded: wait for it.
            let run = decided(&client, &ns, &name, &r.run_id).await?;
            let result = run.as_ref().map_or("Claimed", |r| r.result.as_str());
            let started = run.as_ref().is_some_and(|r| r.start_ms.is_some());
            let message = run.as_ref().map(|r| r.message.clone()).unwrap_or_default();
            if json_out {
                print_json(json!({
                    "run_id": r.run_id, "scheduled_time": rfc3339_ms(r.scheduled_ms),
                    "started": started, "result": result, "message": message,
                }));
            } else if started {
                out!("triggered {ns}/{name}: run {} {result}", r.run_id);
            }
            if !started {
                let why = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                };
                match run {
                    Some(_) => bail!(
                        "{ns}/{name}: run {} was not started: {result}{why}",
                        r.run_id
                    ),
                    None => bail!(
                        "{ns}/{name}: run {} is recorded but did not start within {}s (no leader firing?)",
                        r.run_id,
                        TRIGGER_WAIT.as_secs()
                    ),
                }
            }
        }
        Command::Suspend { ref target } | Command::Resume { ref target } => {
            let suspend = matches!(cli.command, Command::Suspend { .. });
            let (ns, name) = parse_target(target)?;
            let r = client.set_suspend(&ns, &name, suspend).await?;
            let verb = if suspend { "suspended" } else { "resumed" };
            out!(
                "{ns}/{name} {}",
                if r.changed {
                    verb.to_string()
                } else {
                    format!("already {verb}")
                }
            );
        }
        Command::Apply { file } => {
            let jobs = super::yaml_files::load_path(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
            if jobs.is_empty() {
                bail!("{}: no ScheduledJob documents", file.display());
            }
            let items: Vec<_> = jobs
                .iter()
                .map(|(_, j)| upsert_request(j, Origin::File))
                .collect();
            let mut total = 0;
            for chunk in items.chunks(1000) {
                let reply = client.upsert_batch(chunk.to_vec()).await.context("apply")?;
                for (req, r) in chunk.iter().zip(reply.replies) {
                    let outcome = match pb::UpsertOutcome::try_from(r.outcome)
                        .unwrap_or(pb::UpsertOutcome::Unspecified)
                    {
                        pb::UpsertOutcome::Created => "created",
                        pb::UpsertOutcome::Updated => "configured",
                        pb::UpsertOutcome::Unchanged => "unchanged",
                        pb::UpsertOutcome::Stale => "stale (a newer generation is stored)",
                        pb::UpsertOutcome::Unspecified => "?",
                    };
                    if !json_out {
                        out!("scheduledjob {}/{} {outcome}", req.namespace, req.name);
                    }
                    total += 1;
                }
            }
            if json_out {
                print_json(json!({"applied": total}));
            }
        }
        Command::Delete { target } => {
            let (ns, name) = parse_target(&target)?;
            let r = client.delete(&ns, &name, "").await?;
            if !r.existed {
                bail!("no schedule {ns}/{name}");
            }
            out!("scheduledjob {ns}/{name} deleted");
        }
        Command::Members => {
            let s = client.status_of(&cli.endpoint[0]).await?;
            print_members(&s.members, json_out);
        }
        Command::Member { action } => {
            let reply = match action {
                MemberAction::Add { id, addr, learner } => {
                    client
                        .add_member(pb::AddMemberRequest {
                            id,
                            addr,
                            uid: String::new(),
                            voter: !learner,
                        })
                        .await?
                }
                MemberAction::Remove { id } => client.remove_member(id).await?,
            };
            print_members(&reply.members, json_out);
        }
        Command::StepDown => {
            let addr = &cli.endpoint[0];
            let s = client.status_of(addr).await?;
            if s.leader != Some(s.id) {
                out!("node {} does not lead; nothing to do", s.id);
                return Ok(());
            }
            let r = client.transfer_leader_at(addr, 0).await?;
            out!(
                "node {} stepped down; leader: {}",
                s.id,
                r.leader.map_or("unknown".into(), |l| l.to_string())
            );
        }
        Command::TransferLeader { to } => {
            let r = client.transfer_leader(to).await?;
            out!(
                "leader: {}",
                r.leader.map_or("unknown".into(), |l| l.to_string())
            );
        }
        Command::Leases {
            action: LeasesAction::List { namespace, app },
        } => list_leases(cli.endpoint.clone(), tls, namespace, app, json_out).await?,
        Command::Jobs { action } => super::jobs::run(&client, action, json_out).await?,
    }
    Ok(())
}

/// `leases list`: from the leader (linearizable), through the Attach service.
async fn list_leases(
    endpoints: Vec<String>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    namespace: Option<String>,
    app: Option<String>,
    json_out: bool,
) -> anyhow::Result<()> {
    use crate::pb::sidecar::{ListLeasesRequest, attach_client::AttachClient};
    let follow = crate::sidecar::follow::Follow::new(
        endpoints,
        crate::raft::network::Dialer::new(tls, std::time::Duration::from_secs(2)),
    );
    let req = ListLeasesRequest {
        namespace: namespace.unwrap_or_default(),
        app: app.unwrap_or_default(),
    };
    let r = follow
        .call(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(15),
            |ch| {
                let req = req.clone();
                async move { AttachClient::new(ch).list_leases(req).await }
            },
        )
        .await
        .map_err(|s| anyhow::anyhow!("leases list: {}", s.message()))?;
    if json_out {
        print_json(serde_json::Value::Array(
            r.leases
                .iter()
                .map(|l| {
                    json!({"namespace": l.namespace, "app": l.app, "key": l.key, "holder": l.holder,
                           "token": l.token, "acquired": rfc3339_ms(l.acquired_ms),
                           "expires": rfc3339_ms(l.expires_ms), "ttl_seconds": l.ttl_ms / 1000})
                })
                .collect(),
        ));
        return Ok(());
    }
    out!(
        "{:<20} {:<20} {:<24} {:<24} {:>8}  EXPIRES",
        "NAMESPACE",
        "APP",
        "KEY",
        "HOLDER",
        "TOKEN"
    );
    for l in &r.leases {
        out!(
            "{:<20} {:<20} {:<24} {:<24} {:>8}  {} (in {:.1}s)",
            l.namespace,
            l.app,
            l.key,
            l.holder,
            l.token,
            rfc3339_ms(l.expires_ms),
            (l.expires_ms - r.now_ms) as f64 / 1000.0
        );
    }
    Ok(())
}

/// How long `trigger` waits for the leader's start decision.
const TRIGGER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The run once the leader has decided it (started, or ended without a
/// start); `None` if it is still only claimed after [`TRIGGER_WAIT`].
async fn decided(
    client: &Client,
    namespace: &str,
    name: &str,
    run_id: &str,
) -> anyhow::Result<Option<pb::Run>> {
    let until = tokio::time::Instant::now() + TRIGGER_WAIT;
    loop {
        let runs = client.runs(namespace, name).await?;
        if let Some(r) = runs.runs.into_iter().find(|r| r.run_id == run_id)
            && r.result != "Claimed"
        {
            return Ok(Some(r));
        }
        if tokio::time::Instant::now() >= until {
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn print_members(members: &[pb::Member], json_out: bool) {
    if json_out {
        print_json(serde_json::Value::Array(
            members
                .iter()
                .map(|m| json!({"id": m.id, "addr": m.addr, "uid": m.uid, "voter": m.voter}))
                .collect(),
        ));
    } else {
        for m in members {
            out!(
                "{:<4} {:<24} {:<8} {}",
                m.id,
                m.addr,
                if m.voter { "voter" } else { "learner" },
                m.uid
            );
        }
    }
}
