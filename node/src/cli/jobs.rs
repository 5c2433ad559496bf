//! `raftcronctl jobs list|get|delete NAMESPACE/APP[/NAME]`: the jobs app code
//! created through its sidecars (docs/sidecar.md, "Jobs"), read and removed
//! through the scheduler API. A job is the schedule `<app>/<name>` of its
//! namespace.

use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

use super::out;
use crate::client::Client;
use raftcron_crds::names::rfc3339_ms;

#[derive(Subcommand, Debug)]
pub enum JobsAction {
    /// The jobs of one app.
    List {
        /// NAMESPACE/APP
        target: String,
    },
    /// One job and its runs.
    Get {
        /// NAMESPACE/APP/NAME
        target: String,
    },
    /// Remove a job (its runs go with it).
    Delete {
        /// NAMESPACE/APP/NAME
        target: String,
    },
}

/// `NAMESPACE/APP` or `NAMESPACE/APP/NAME`, as (namespace, app, name).
pub fn parse(target: &str, with_name: bool) -> anyhow::Result<(String, String, Option<String>)> {
    let parts: Vec<&str> = target.split('/').collect();
    match (parts.as_slice(), with_name) {
        ([ns, app], false) if !ns.is_empty() && !app.is_empty() => {
            Ok((ns.to_string(), app.to_string(), None))
        }
        ([ns, app, name], true) if [ns, app, name].iter().all(|p| !p.is_empty()) => {
            Ok((ns.to_string(), app.to_string(), Some(name.to_string())))
        }
        (_, false) => bail!("{target:?}: expected NAMESPACE/APP"),
        (_, true) => bail!("{target:?}: expected NAMESPACE/APP/NAME"),
    }
}

pub async fn run(client: &Client, action: JobsAction, json_out: bool) -> anyhow::Result<()> {
    match action {
        JobsAction::List { target } => {
            let (ns, app, _) = parse(&target, false)?;
            let prefix = format!("{app}/");
            let list = client.list(&ns).await?;
            let jobs: Vec<_> = list
                .schedules
                .iter()
                .filter(|s| s.name.starts_with(&prefix))
                .collect();
            if json_out {
                let v: Vec<_> = jobs
                    .iter()
                    .map(|s| {
                        json!({"namespace": s.namespace, "app": app, "name": &s.name[prefix.len()..],
                               "schedule": s.schedule, "next_fire": s.next_fire_ms.map(rfc3339_ms)})
                    })
                    .collect();
                out!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                out!("{:<32} {:<20} NEXT FIRE", "NAME", "SCHEDULE");
                for s in jobs {
                    let schedule = if s.schedule.is_empty() {
                        "(one-shot)"
                    } else {
                        s.schedule.as_str()
                    };
                    out!(
                        "{:<32} {:<20} {}",
                        &s.name[prefix.len()..],
                        schedule,
                        s.next_fire_ms.map_or("-".into(), rfc3339_ms)
                    );
                }
            }
        }
        JobsAction::Get { target } => {
            let (ns, app, name) = parse(&target, true)?;
            let key = format!("{app}/{}", name.unwrap_or_default());
            let list = client.list(&ns).await?;
            let Some(s) = list.schedules.iter().find(|s| s.name == key) else {
                bail!(
                    "no job {target} (a finished job is removed: its app's GET /v1/jobs/NAME says why)"
                );
            };
            let runs = client.runs(&ns, &key).await?;
            let runs: Vec<_> = runs
                .runs
                .iter()
                .map(|r| {
                    json!({"run_id": r.run_id, "scheduled_time": rfc3339_ms(r.scheduled_ms),
                           "result": r.result, "attempt": r.attempt, "pod": r.pod, "message": r.message})
                })
                .collect();
            let spec: serde_json::Value = serde_json::from_str(&s.spec_json).unwrap_or_default();
            let v = json!({"namespace": ns, "app": app, "name": &key[app.len() + 1..],
                           "schedule": s.schedule, "dueTime": spec["dueTime"], "repeats": spec["repeats"],
                           "next_fire": s.next_fire_ms.map(rfc3339_ms), "runs": runs});
            // One format: a job is a document.
            out!("{}", serde_json::to_string_pretty(&v)?);
        }
        JobsAction::Delete { target } => {
            let (ns, app, name) = parse(&target, true)?;
            let key = format!("{app}/{}", name.unwrap_or_default());
            let r = client.delete(&ns, &key, "").await?;
            if !r.existed {
                bail!("no job {target}");
            }
            out!("job {target} deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn targets_name_namespace_app_and_job() {
        assert_eq!(
            parse("shop/web", false).unwrap(),
            ("shop".into(), "web".into(), None)
        );
        assert_eq!(
            parse("shop/web/report", true).unwrap(),
            ("shop".into(), "web".into(), Some("report".into()))
        );
        assert!(parse("shop", false).is_err());
        assert!(parse("shop/web", true).is_err());
        assert!(parse("shop//x", true).is_err());
    }
}
