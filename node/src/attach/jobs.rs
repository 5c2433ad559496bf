//! Jobs created by app code: the sidecar's `PUT|GET|DELETE /v1/jobs/{name}`
//! and `GET /v1/jobs`, relayed to the leader as the Job RPCs of the Attach
//! service. A job is stored as a schedule of the caller's app, named
//! `<app>/<name>` in the caller's namespace (a name Kubernetes objects
//! cannot have, so it never meets a ScheduledJob), with an `app` action
//! that delivers the job's `data` to one replica, and claimed, fired and
//! retried exactly as every schedule.
//!
//! ```text
//!  app ──PUT /v1/jobs/report {dueTime: "2h", data: {...}}──► sidecar ──PutJob──► leader
//!        parse (errors name the app's fields) → ScheduledJobSpec (action.app) → validate → Upsert
//!  fire: claim → dispatch to one replica → POST /raftcron/jobs/report (data as body)
//!  complete (repeats used up, dueTime fired, ttl passed) → EndJob: removed, and GET says why
//! ```

use std::sync::Arc;

use raftcron_crds::{Priority, RetryPolicy, ScheduledJobSpec};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use super::leases::LeaseService;
use crate::clock::now_ms;
use crate::ctx::NodeCtx;
use crate::pb::sidecar as pb;
use crate::raft::{propose, read_barrier};
use crate::sm::{
    AppJob, Command, Key, Millis, Response as SmResponse, ScheduleRecord, UpsertOutcome,
    UpsertSchedule,
};
use raftcron_crds::names::rfc3339_ms;

/// Largest `data`, serialized.
pub const DATA_MAX_BYTES: usize = 65_536;
/// Shortest and longest `ttl`.
pub const TTL_MIN_MS: Millis = 1_000;
pub const TTL_MAX_MS: Millis = 366 * 24 * 3_600_000;
/// A `dueTime` instant this far in the past still counts as "now" (clocks
/// of sidecar and leader differ a little).
const PAST_SLACK_MS: Millis = 1_000;
/// Jobs per page of `GET /v1/jobs`.
pub const PAGE_DEFAULT: usize = 100;
pub const PAGE_MAX: usize = 1_000;

/// The body of `PUT /v1/jobs/{name}`.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobBody {
    /// The cron grammar of ScheduledJobs (`@every 30s`, `0 */5 * * * *`).
    pub schedule: Option<String>,
    /// An RFC 3339 instant, or a duration from now (`0s`: now, `2h`).
    pub due_time: Option<String>,
    pub repeats: Option<u32>,
    /// A duration: the job fires nothing after it and is removed then.
    pub ttl: Option<String>,
    /// Delivered as the request body (JSON).
    pub data: Option<Value>,
    pub retry: Option<RetryPolicy>,
    pub timeout_seconds: Option<i64>,
    pub priority: Option<Priority>,
    /// Where on the app; default `/raftcron/jobs/<name>`.
    pub path: Option<String>,
    /// Replace a job of the same name (its runs go with it).
    #[serde(default)]
    pub overwrite: bool,
}

/// A field of the app's request that is wrong, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    fn status(self) -> Status {
        Status::invalid_argument(format!("{}: {}", self.field, self.message))
    }
}

/// Checks a job (or lease key) name: what the app puts in the URL.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            "name",
            format!("{name:?} must be 1-253 letters, digits, '-', '.' or '_' (no '/')"),
        ))
    }
}

/// The key a job of `app` named `name` is stored under.
pub fn job_key(namespace: &str, app: &str, name: &str) -> Key {
    Key::new(namespace, format!("{app}/{name}"))
}

fn duration_ms(field: &str, text: &str) -> Result<Millis, Invalid> {
    humantime::parse_duration(text)
        .map(|d| d.as_millis() as Millis)
        .map_err(|e| {
            Invalid::new(
                field,
                format!("{text:?} is not a duration (like 30s, 2h) : {e}"),
            )
        })
}

/// The spec a job's body means, and its ttl's end; pure (`now` given).
/// Validation of the spec itself comes after, with the same code as every
/// schedule (`validate_spec`), its field names mapped back by [`app_field`].
pub fn spec_of(
    app: &str,
    name: &str,
    body: &JobBody,
    now: Millis,
) -> Result<(ScheduledJobSpec, Option<Millis>), Invalid> {
    check_name(name)?;
    let due = match body.due_time.as_deref() {
        None => None,
        Some(text) => Some(match raftcron_crds::names::parse_rfc3339_ms(text) {
            Some(at) if at < now - PAST_SLACK_MS => {
                return Err(Invalid::new(
                    "dueTime",
                    format!("{text} is in the past (use \"0s\" for now)"),
                ));
            }
            Some(at) => at.max(now),
            None => now + duration_ms("dueTime", text)?,
        }),
    };
    let schedule = body.schedule.clone().unwrap_or_default();
    if schedule.trim().is_empty() && due.is_none() {
        return Err(Invalid::new(
            "schedule",
            "one of schedule and dueTime is required",
        ));
    }
    let expires = match body.ttl.as_deref() {
        None => None,
        Some(text) => {
            let ttl = duration_ms("ttl", text)?;
            if !(TTL_MIN_MS..=TTL_MAX_MS).contains(&ttl) {
                return Err(Invalid::new(
                    "ttl",
                    format!("{text} is outside 1s ..= 366d"),
                ));
            }
            Some(now + ttl)
        }
    };
    let data = match &body.data {
        None => None,
        Some(v) => {
            let text = v.to_string();
            if text.len() > DATA_MAX_BYTES {
                return Err(Invalid::new(
                    "data",
                    format!("{} bytes, at most {DATA_MAX_BYTES}", text.len()),
                ));
            }
            Some(text)
        }
    };
    let path = body
        .path
        .clone()
        .unwrap_or_else(|| format!("/raftcron/jobs/{name}"));
    let mut action = json!({
        "name": app,
        "path": path,
        "method": "POST",
        "priority": body.priority.unwrap_or_default(),
    });
    if let Some(data) = data {
        action["body"] = Value::String(data);
        action["headers"] = json!([{"name": "Content-Type", "value": "application/json"}]);
    }
    let mut spec = json!({"schedule": schedule, "action": {"app": action}});
    if let Some(due) = due {
        spec["dueTime"] = Value::String(rfc3339_ms(due));
    }
    if let Some(r) = body.repeats {
        spec["repeats"] = json!(r);
    }
    if let Some(r) = &body.retry {
        spec["retry"] = serde_json::to_value(r).expect("retry serializes");
    }
    if let Some(t) = body.timeout_seconds {
        spec["timeoutSeconds"] = json!(t);
    }
    let spec: ScheduledJobSpec =
        serde_json::from_value(spec).map_err(|e| Invalid::new("body", e.to_string()))?;
    if let Err(errors) = raftcron_crds::validate::validate_spec(&spec) {
        let first = errors.0.into_iter().next().expect("errors are never empty");
        return Err(Invalid::new(app_field(&first.field), first.message));
    }
    Ok((spec, expires))
}

/// A ScheduledJob field path as the app wrote it in its job.
pub fn app_field(spec_field: &str) -> String {
    let f = spec_field.strip_prefix("spec.").unwrap_or(spec_field);
    match f {
        "action.app.path" => "path".into(),
        "action.app.body" => "data".into(),
        "action.app.priority" => "priority".into(),
        other => other.to_string(),
    }
}

/// The job as the app reads it back.
pub fn view(s: &ScheduleRecord, app: &str, now: Millis) -> Value {
    let name = s.name.strip_prefix(&format!("{app}/")).unwrap_or(&s.name);
    let a = s.spec.action.app.as_ref();
    let runs: Vec<Value> = s
        .active
        .iter()
        .rev()
        .chain(s.history.iter())
        .take(10)
        .map(|r| {
            json!({
                "runId": r.run_id,
                "scheduledTime": rfc3339_ms(r.instant),
                "result": r.phase.as_str(),
                "attempt": r.attempt,
                "pod": r.pod,
                "message": r.message,
            })
        })
        .collect();
    json!({
        "name": name,
        "schedule": (!s.spec.schedule.is_empty()).then_some(&s.spec.schedule),
        "dueTime": s.spec.due_time,
        "repeats": s.spec.repeats,
        "fired": s.fired,
        "nextFire": crate::api::convert::next_fire(s, now).map(rfc3339_ms),
        "expiresAt": s.app_job.as_ref().and_then(|j| j.expires).map(rfc3339_ms),
        "priority": a.map(|a| a.priority),
        "path": a.map(|a| a.path.clone()),
        "data": a.and_then(|a| a.body.as_deref()).and_then(|b| serde_json::from_str::<Value>(b).ok()),
        "runs": runs,
    })
}

/// The Job RPCs; the caller check is the lease calls'.
pub struct JobService {
    ctx: Arc<NodeCtx>,
    leases: LeaseService,
}

impl JobService {
    pub fn new(ctx: Arc<NodeCtx>, leases: LeaseService) -> Self {
        Self { ctx, leases }
    }

    pub async fn put(
        &self,
        req: Request<pb::PutJobRequest>,
    ) -> Result<Response<pb::JobReply>, Status> {
        let c = self
            .leases
            .caller(&req, req.get_ref().caller.as_ref())
            .await?;
        let r = req.get_ref();
        let body: JobBody = {
            let de = &mut serde_json::Deserializer::from_str(&r.body_json);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." { "body".into() } else { path };
                Status::invalid_argument(format!("{field}: {}", e.inner()))
            })?
        };
        let now = now_ms();
        let (spec, expires) = spec_of(&c.app, &r.name, &body, now).map_err(Invalid::status)?;
        let key = job_key(&c.namespace, &c.app, &r.name);
        read_barrier(&self.ctx.raft)
            .await
            .map_err(crate::api::propose_status)?;
        let existing = {
            let d = self.ctx.sm.read();
            d.state.get(&key).map(|s| (s.uid.clone(), s.spec.clone()))
        };
        let uid = match existing {
            Some((uid, stored)) if *stored == spec => uid, // the same job again
            Some(_) if !body.overwrite => {
                return Err(Status::already_exists(format!(
                    "job {} exists; \"overwrite\": true replaces it",
                    r.name
                )));
            }
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let item = UpsertSchedule {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid,
            generation: 1,
            spec,
            kubernetes: false,
            app_job: Some(AppJob { expires }),
        };
        let created = match propose(
            &self.ctx.raft,
            Command::Upsert {
                items: vec![item],
                now,
            },
        )
        .await
        .map_err(crate::api::propose_status)?
        {
            SmResponse::Upsert(o) => o.first() == Some(&UpsertOutcome::Created),
            other => return Err(Status::internal(format!("unexpected {other:?}"))),
        };
        let d = self.ctx.sm.read();
        let s = d
            .state
            .get(&key)
            .ok_or_else(|| Status::unavailable("the job was written but is gone; retry"))?;
        Ok(Response::new(pb::JobReply {
            job_json: view(s, &c.app, now_ms()).to_string(),
            created,
        }))
    }

    /// The caller and the key of the job a get or delete names, once this
    /// leader has applied everything committed before the call.
    async fn named(
        &self,
        req: &Request<pb::JobRequest>,
    ) -> Result<(super::leases::Caller, Key), Status> {
        let c = self
            .leases
            .caller(req, req.get_ref().caller.as_ref())
            .await?;
        let name = &req.get_ref().name;
        check_name(name).map_err(Invalid::status)?;
        read_barrier(&self.ctx.raft)
            .await
            .map_err(crate::api::propose_status)?;
        let key = job_key(&c.namespace, &c.app, name);
        Ok((c, key))
    }

    pub async fn get(
        &self,
        req: Request<pb::JobRequest>,
    ) -> Result<Response<pb::JobReply>, Status> {
        let (c, key) = self.named(&req).await?;
        let name = &req.get_ref().name;
        let d = self.ctx.sm.read();
        match d.state.get(&key) {
            Some(s) => Ok(Response::new(pb::JobReply {
                job_json: view(s, &c.app, now_ms()).to_string(),
                created: false,
            })),
            None => Err(gone(&d.state, &key, name)),
        }
    }

    pub async fn delete(
        &self,
        req: Request<pb::JobRequest>,
    ) -> Result<Response<pb::JobReply>, Status> {
        let (c, key) = self.named(&req).await?;
        let name = &req.get_ref().name;
        let found = {
            let d = self.ctx.sm.read();
            match d.state.get(&key) {
                Some(s) => (s.uid.clone(), view(s, &c.app, now_ms())),
                None => return Err(gone(&d.state, &key, name)),
            }
        };
        propose(
            &self.ctx.raft,
            Command::Delete {
                namespace: key.namespace,
                name: key.name,
                uid: Some(found.0),
            },
        )
        .await
        .map_err(crate::api::propose_status)?;
        Ok(Response::new(pb::JobReply {
            job_json: found.1.to_string(),
            created: false,
        }))
    }

    pub async fn list(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsReply>, Status> {
        let c = self
            .leases
            .caller(&req, req.get_ref().caller.as_ref())
            .await?;
        let r = req.get_ref();
        let limit = match r.limit as usize {
            0 => PAGE_DEFAULT,
            n => n.min(PAGE_MAX),
        };
        read_barrier(&self.ctx.raft)
            .await
            .map_err(crate::api::propose_status)?;
        let prefix = format!("{}/", c.app);
        let after = format!("{prefix}{}", r.after);
        let now = now_ms();
        let d = self.ctx.sm.read();
        let mut page: Vec<&ScheduleRecord> = d
            .state
            .schedules()
            .filter(|s| s.namespace == c.namespace && s.name.starts_with(&prefix))
            .filter(|s| r.after.is_empty() || s.name > after)
            .take(limit + 1)
            .collect();
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last()
                .map(|s| s.name[prefix.len()..].to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let jobs: Vec<Value> = page.iter().map(|s| view(s, &c.app, now)).collect();
        Ok(Response::new(pb::ListJobsReply {
            jobs_json: Value::Array(jobs).to_string(),
            next,
        }))
    }
}

/// NOT_FOUND, saying why when the job completed recently.
fn gone(state: &crate::sm::State, key: &Key, name: &str) -> Status {
    match state.ended_job(key) {
        Some(e) => Status::not_found(format!(
            "job {name} {} at {}; it was removed",
            e.reason,
            rfc3339_ms(e.at)
        )),
        None => Status::not_found(format!("no job {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_800_000_000_000;

    fn body(v: Value) -> JobBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_due_time_from_now_becomes_a_one_shot_delivering_the_data_to_the_app() {
        let (spec, expires) = spec_of(
            "web",
            "remind-42",
            &body(json!({"dueTime": "2h", "data": {"user": 42}, "priority": "High"})),
            NOW,
        )
        .unwrap();
        assert_eq!(spec.due_ms(), Some(NOW + 7_200_000));
        assert!(spec.schedule.is_empty());
        assert_eq!(expires, None);
        let app = spec.action.app.unwrap();
        assert_eq!(app.name, "web");
        assert_eq!(app.path, "/raftcron/jobs/remind-42");
        assert_eq!(app.body.as_deref(), Some(r#"{"user":42}"#));
        assert_eq!(app.priority, Priority::High);
    }

    #[test]
    fn now_is_an_enqueue_and_a_past_instant_is_refused() {
        let (spec, _) = spec_of("web", "j", &body(json!({"dueTime": "0s"})), NOW).unwrap();
        assert_eq!(spec.due_ms(), Some(NOW));
        let past = rfc3339_ms(NOW - 60_000);
        let e = spec_of("web", "j", &body(json!({"dueTime": past})), NOW).unwrap_err();
        assert_eq!(e.field, "dueTime");
        assert!(e.message.contains("in the past"), "{}", e.message);
    }

    #[test]
    fn bad_input_names_the_field_the_app_wrote() {
        let cases = [
            (json!({}), "schedule"),
            (json!({"schedule": "61 * * * *"}), "schedule"),
            (json!({"dueTime": "tomorrow"}), "dueTime"),
            (json!({"schedule": "@every 1m", "ttl": "0s"}), "ttl"),
            (json!({"schedule": "@every 1m", "ttl": "400d"}), "ttl"),
            (json!({"schedule": "@every 1m", "path": "no-slash"}), "path"),
            (
                json!({"schedule": "@every 1m", "data": "x".repeat(DATA_MAX_BYTES)}),
                "data",
            ),
            (json!({"schedule": "@every 1m", "repeats": 0}), "repeats"),
        ];
        for (b, field) in cases {
            let e = spec_of("web", "j", &body(b.clone()), NOW).unwrap_err();
            assert_eq!(e.field, field, "{b}: {}", e.message);
        }
        assert_eq!(
            spec_of("web", "a/b", &body(json!({"dueTime": "0s"})), NOW)
                .unwrap_err()
                .field,
            "name"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e =
            serde_json::from_value::<JobBody>(json!({"dueTime": "0s", "payload": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `payload`"), "{e}");
    }

    #[test]
    fn a_ttl_ends_the_job() {
        let (_, expires) = spec_of(
            "web",
            "j",
            &body(json!({"schedule": "@every 10s", "ttl": "1h"})),
            NOW,
        )
        .unwrap();
        assert_eq!(expires, Some(NOW + 3_600_000));
    }
}
