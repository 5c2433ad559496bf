//! `raftcron-node local`: a whole cluster in this process, on loopback, from
//! ScheduledJob YAML files, printing each run as it finishes.
//!
//! ```text
//!  PATH… ──load + validate──► UpsertBatch ──► node 1..N (real gRPC on 127.0.0.1, own data dirs)
//!                                                  │
//!  stdout ◄── run printer (watches node 1's replica of the state) ◄──┘
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use super::out;
use clap::Args;

use super::LogFormat;
use crate::client::Client;
use crate::ctx::NodeConfig;
use crate::node::Node;
use crate::raft::RaftTiming;
use crate::scheduler::SchedulerArgs;
use crate::sm::runs::{Phase, RunRecord};
use crate::store::StateMachineStore;
use raftcron_crds::names::rfc3339_ms;

#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Number of nodes.
    #[arg(long, env = "RAFTCRON_NODES", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Keep the cluster's data here (node-1, node-2, …) so it survives a
    /// restart; default: a temporary directory removed on exit.
    #[arg(long, env = "RAFTCRON_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node i listens for gRPC on 127.0.0.1:(BASE+i) and HTTP on 127.0.0.1:(BASE+100+i).
    #[arg(long, env = "RAFTCRON_BASE_PORT", default_value_t = 7100)]
    pub base_port: u16,
    /// Where to serve the example HTTP target the deploy/examples call.
    #[arg(long, env = "RAFTCRON_TARGET", default_value = "127.0.0.1:7180")]
    pub target: String,
    /// Do not serve the example target.
    #[arg(long)]
    pub no_target: bool,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    /// Log format.
    #[arg(long, env = "RAFTCRON_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// ScheduledJob YAML files or directories.
    pub paths: Vec<PathBuf>,
}

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let LocalArgs {
        nodes,
        data_dir,
        base_port,
        target,
        no_target,
        scheduler,
        log_format,
        paths,
    } = args;
    // The run lines on stdout are the point of local mode; logs are kept to
    // warnings unless RAFTCRON_LOG asks for more.
    super::init_logging(log_format, "warn");
    if std::env::var_os("RAFTCRON_LOG").is_none() {
        out!("node logs: warnings only (RAFTCRON_LOG=info for more)");
    }
    let mut jobs = Vec::new();
    let mut seen = BTreeMap::new();
    for p in &paths {
        for (file, job) in super::yaml_files::load_path(p).map_err(|e| anyhow::anyhow!("{e}"))? {
            let req = crate::api::convert::upsert_request(&job, crate::api::convert::Origin::File);
            let key = format!("{}/{}", req.namespace, req.name);
            if let Some(prev) = seen.insert(key.clone(), file.clone()) {
                bail!(
                    "{key} is defined in both {} and {}",
                    prev.display(),
                    file.display()
                );
            }
            jobs.push(req);
        }
    }
    let temp = match &data_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("raftcron-local-")
                .tempdir()?,
        ),
    };
    let root = data_dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("temp dir").path().to_path_buf());
    let scheduler = scheduler.into_config()?;
    let (target_stop, target_rx) = tokio::sync::oneshot::channel::<()>();
    let target_task = if no_target {
        None
    } else {
        let listener = super::run::bind(
            &target,
            "the example target; pass --no-target to go without",
        )
        .await?;
        out!("example target on http://{}", listener.local_addr()?);
        Some(tokio::spawn(super::target::serve(
            listener,
            None,
            async move {
                let _ = target_rx.await;
            },
        )))
    };

    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=nodes {
        let port = |off: u64| {
            if base_port == 0 {
                0
            } else {
                base_port as u64 + off
            }
        };
        let grpc = super::run::bind(&format!("127.0.0.1:{}", port(id)), "gRPC").await?;
        let http = super::run::bind(&format!("127.0.0.1:{}", port(100 + id)), "HTTP").await?;
        peers.insert(id, grpc.local_addr()?.to_string());
        listeners.push((id, grpc, http));
    }
    let mut running = Vec::new();
    for (id, grpc, http) in listeners {
        let config = NodeConfig {
            id,
            advertise: peers[&id].clone(),
            data_dir: root.join(format!("node-{id}")),
            peers: peers.clone(),
            bootstrap: id == 1,
            timing: RaftTiming::default(),
            tls: None,
            scheduler: scheduler.clone(),
            kube: None,
        };
        running.push(
            Node::start(config, grpc, http)
                .await
                .with_context(|| format!("starting node {id}"))?,
        );
    }
    for n in &running {
        out!(
            "node {} gRPC {} HTTP http://{}",
            n.ctx.identity.id,
            n.grpc_addr,
            n.http_addr
        );
    }
    let client =
        Client::new(peers.values().cloned().collect(), None).with_deadline(Duration::from_secs(30));
    if data_dir.is_some() {
        report_reapply(&client, &jobs, &seen).await?;
    }
    if !jobs.is_empty() {
        let reply = client
            .upsert_batch(jobs.clone())
            .await
            .context("loading the ScheduledJobs")?;
        out!(
            "loaded {} ScheduledJob(s) from {}",
            reply.replies.len(),
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out!(
        "raftcronctl --endpoint {} list   # in another terminal; Ctrl-C stops the cluster",
        peers[&1]
    );
    let printer = tokio::spawn(print_runs(running[0].ctx.sm.clone()));
    super::shutdown_signal().await;
    printer.abort();
    out!("stopping");
    for n in running {
        n.shutdown().await;
    }
    let _ = target_stop.send(());
    if let Some(t) = target_task {
        let _ = t.await;
    }
    drop(temp);
    Ok(())
}

/// With a persistent data dir the YAML is applied again at every start and
/// wins over what was changed at run time (as `kubectl apply` does over
/// `kubectl patch`): each field it changes is printed, so a `raftcronctl
/// suspend` undone by the file does not go unnoticed. Schedules in the data
/// dir but in no file are kept and named.
async fn report_reapply(
    client: &Client,
    jobs: &[crate::pb::scheduler::UpsertRequest],
    files: &BTreeMap<String, PathBuf>,
) -> anyhow::Result<()> {
    let stored = client
        .list("")
        .await
        .context("reading the schedules kept in the data dir")?;
    let mut stored: BTreeMap<String, serde_json::Value> = stored
        .schedules
        .into_iter()
        .map(|s| {
            let spec = serde_json::from_str(&s.spec_json).unwrap_or_default();
            (format!("{}/{}", s.namespace, s.name), spec)
        })
        .collect();
    for job in jobs {
        let key = format!("{}/{}", job.namespace, job.name);
        let Some(old) = stored.remove(&key) else {
            continue;
        };
        let new: serde_json::Value = serde_json::from_str(&job.spec_json).unwrap_or_default();
        for change in spec_changes(&old, &new, "spec") {
            out!(
                "{key}: {change} (re-applied from {}; the YAML wins over changes made at run time)",
                files
                    .get(&key)
                    .map_or("?".into(), |f| f.display().to_string())
            );
        }
    }
    for key in stored.keys() {
        out!(
            "{key}: in the data dir but in no YAML file given; kept (raftcronctl delete {key} removes it)"
        );
    }
    Ok(())
}

/// The fields that differ between two specs, as `path: old → new`.
fn spec_changes(old: &serde_json::Value, new: &serde_json::Value, path: &str) -> Vec<String> {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    let (x, y) = (
                        a.get(k).unwrap_or(&Value::Null),
                        b.get(k).unwrap_or(&Value::Null),
                    );
                    spec_changes(x, y, &format!("{path}.{k}"))
                })
                .collect()
        }
        (a, b) if a == b => Vec::new(),
        // `suspend: false` is not serialized when unset; say "false", not "null".
        (Value::Null, Value::Bool(false)) | (Value::Bool(false), Value::Null) => Vec::new(),
        (a, b) => vec![format!("{path}: {} → {}", show(a), show(b))],
    }
}

fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "unset".into(),
        other => other.to_string(),
    }
}

/// Prints every run once it has a result, from one node's replica.
async fn print_runs(sm: StateMachineStore) {
    let feed = sm.feed().subscribe();
    let mut printed: HashSet<(String, u32, &'static str)> = HashSet::new();
    let started = crate::clock::now_ms();
    loop {
        feed.changed().await;
        let dirty = feed.take();
        let mut lines = Vec::new();
        {
            let d = sm.read();
            let schedules: Vec<_> = if dirty.all {
                d.state.schedules().collect()
            } else {
                dirty
                    .uids
                    .iter()
                    .filter_map(|u| d.state.get_by_uid(u))
                    .collect()
            };
            for s in schedules {
                for r in s.active.iter().chain(s.history.iter()) {
                    if r.instant < started && r.end.is_some_and(|e| e < started) {
                        continue; // from a previous session of a persistent data dir
                    }
                    if let Some(line) = run_line(&format!("{}/{}", s.namespace, s.name), r)
                        && printed.insert((r.run_id.clone(), r.attempt, r.phase.as_str()))
                    {
                        lines.push((r.end.unwrap_or(r.instant), line));
                    }
                }
            }
        }
        lines.sort();
        for (_, l) in lines {
            out!("{l}");
        }
        if printed.len() > 1_000_000 {
            // Bounded memory for long sessions; a run finishing again is not possible,
            // so forgetting old entries only risks nothing.
            printed.clear();
        }
    }
}

/// A line for a finished run, or a retry about to happen.
fn run_line(job: &str, r: &RunRecord) -> Option<String> {
    let late = r
        .lateness_ms()
        .map_or("-".to_string(), |l| format!("{l}ms"));
    let node = match (r.node, &r.pod) {
        (0, _) => "-".to_string(),
        (n, Some(pod)) => format!("{n} pod {pod}"),
        (n, None) => n.to_string(),
    };
    match r.phase {
        Phase::Done(result) => Some(format!(
            "{}  {:<36} {:<10} late {:>6}  attempt {} node {}{}",
            rfc3339_ms(r.instant),
            job,
            result.as_str(),
            late,
            r.attempt,
            node,
            r.message
                .as_deref()
                .filter(|m| !m.is_empty())
                .map(|m| format!("  ({m})"))
                .unwrap_or_default()
        )),
        Phase::RetryPending { at } => Some(format!(
            "{}  {:<36} {:<10} late {:>6}  attempt {} node {}  (retry at {})",
            rfc3339_ms(r.instant),
            job,
            "Retrying",
            late,
            r.attempt,
            node,
            rfc3339_ms(at)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::spec_changes;
    use serde_json::json;

    #[test]
    fn a_reapplied_spec_names_every_field_it_changes() {
        let stored =
            json!({"schedule": "* * * * * *", "suspend": true, "retry": {"maxAttempts": 3}});
        let file = json!({"schedule": "*/2 * * * * *", "retry": {"maxAttempts": 3}});
        assert_eq!(
            spec_changes(&stored, &file, "spec"),
            vec![
                r#"spec.schedule: "* * * * * *" → "*/2 * * * * *""#.to_string(),
                "spec.suspend: true → unset".to_string(),
            ]
        );
        assert!(spec_changes(&file, &file, "spec").is_empty());
    }
}
