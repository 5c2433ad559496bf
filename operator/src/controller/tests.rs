//! The reconciler against a mocked API server (tower-test): each scenario
//! states the requests the operator must make, in order, and answers them as
//! the API server would. The scheduler cluster is `RecordingNodes`, a fake
//! that records calls (a real cluster is exercised by the e2e suite).

use std::sync::Mutex;

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use super::*;

#[derive(Default)]
struct RecordingNodes {
    calls: Mutex<Vec<String>>,
    unavailable: bool,
}

impl NodeApi for RecordingNodes {
    fn upsert(
        &self,
        req: pb::UpsertRequest,
    ) -> BoxFuture<'_, Result<pb::UpsertOutcome, NodeError>> {
        self.calls.lock().unwrap().push(format!(
            "upsert {}/{} {} gen {} k8s {}",
            req.namespace, req.name, req.uid, req.generation, req.kubernetes
        ));
        let unavailable = self.unavailable;
        Box::pin(async move {
            if unavailable {
                Err(NodeError::Unavailable("no leader".into()))
            } else {
                Ok(pb::UpsertOutcome::Created)
            }
        })
    }
    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<bool, NodeError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("delete {namespace}/{name} {uid}"));
        let unavailable = self.unavailable;
        Box::pin(async move {
            if unavailable {
                Err(NodeError::Unavailable("no leader".into()))
            } else {
                Ok(true)
            }
        })
    }
    fn members(&self) -> BoxFuture<'_, Result<Vec<pb::Member>, NodeError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn remove_member(&self, _id: u64) -> BoxFuture<'_, Result<(), NodeError>> {
        Box::pin(async { Ok(()) })
    }
}

fn job(extra: Value) -> ScheduledJob {
    let mut v = json!({
        "apiVersion": raftcron_crds::names::API_VERSION,
        "kind": "ScheduledJob",
        "metadata": {"name": "report", "namespace": "billing", "uid": "uid-1", "generation": 2, "resourceVersion": "7"},
        "spec": {"schedule": "0 30 2 * * *", "action": {"http": {"url": "http://billing-api:8080/report"}}},
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The next request: method, path and parsed JSON body.
async fn next(
    handle: &mut Handle,
) -> (
    String,
    String,
    Value,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    let (req, send) =
        tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request())
            .await
            .expect("the operator made no further request")
            .expect("service dropped");
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let body = req.into_body().collect_bytes().await.unwrap();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    (method, path, body, send)
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, obj: &impl serde::Serialize) {
    send.send_response(Response::new(Body::from(serde_json::to_vec(obj).unwrap())));
}

fn ctx(nodes: Arc<RecordingNodes>) -> (Arc<Ctx>, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "raftcron-operator".into(),
            instance: None,
        },
    );
    (
        Arc::new(Ctx::new(
            client,
            nodes,
            false,
            recorder,
            Arc::new(Metrics::default()),
        )),
        handle,
    )
}

const SJ_PATH: &str = "/apis/raftcron.dev/v1alpha1/namespaces/billing/scheduledjobs/report";

#[tokio::test]
async fn a_new_scheduled_job_first_gets_the_finalizer_and_nothing_else() {
    let nodes = Arc::new(RecordingNodes::default());
    let (ctx, mut api) = ctx(nodes.clone());
    let sj = job(json!({}));
    let server = tokio::spawn(async move {
        let (method, path, body, send) = next(&mut api).await;
        assert_eq!((method.as_str(), path.as_str()), ("PATCH", SJ_PATH));
        assert!(body.to_string().contains(names::FINALIZER), "{body}");
        respond(
            send,
            &job(json!({"metadata": {"finalizers": [names::FINALIZER]}})),
        );
    });
    let action = reconcile(Arc::new(sj), ctx).await.unwrap();
    server.await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(
        nodes.calls.lock().unwrap().is_empty(),
        "registered before the finalizer was in place"
    );
}

#[tokio::test]
async fn a_valid_job_is_registered_and_marked_ready_with_its_generation() {
    let nodes = Arc::new(RecordingNodes::default());
    let (ctx, mut api) = ctx(nodes.clone());
    let sj = job(json!({"metadata": {"finalizers": [names::FINALIZER]}}));
    let server = tokio::spawn(async move {
        let (method, path, body, send) = next(&mut api).await;
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("PATCH", &*format!("{SJ_PATH}/status"))
        );
        let status = &body["status"];
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["conditions"][0]["type"], "Ready");
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][0]["reason"], reason::REGISTERED);
        assert!(
            body.get("spec").is_none(),
            "the operator must not write the spec: {body}"
        );
        respond(
            send,
            &job(json!({"metadata": {"finalizers": [names::FINALIZER]}})),
        );
    });
    let action = reconcile(Arc::new(sj), ctx).await.unwrap();
    server.await.unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(
        *nodes.calls.lock().unwrap(),
        vec!["upsert billing/report uid-1 gen 2 k8s true"]
    );
}

#[tokio::test]
async fn an_invalid_spec_is_not_registered_and_gets_ready_false_with_the_field() {
    let nodes = Arc::new(RecordingNodes::default());
    let (ctx, mut api) = ctx(nodes.clone());
    let sj = job(
        json!({"metadata": {"finalizers": [names::FINALIZER]}, "spec": {"schedule": "61 * * * *"}}),
    );
    let server = tokio::spawn(async move {
        let (_, path, body, send) = next(&mut api).await;
        assert_eq!(path, format!("{SJ_PATH}/status"));
        let cond = &body["status"]["conditions"][0];
        assert_eq!(cond["status"], "False");
        assert_eq!(cond["reason"], reason::INVALID_SPEC);
        assert!(
            cond["message"].as_str().unwrap().contains("spec.schedule"),
            "{cond}"
        );
        respond(send, &job(json!({})));
        // …and a Warning Event naming the reason.
        let (method, path, body, send) = next(&mut api).await;
        assert_eq!(method, "POST");
        assert!(path.ends_with("/events"), "{path}");
        assert_eq!(body["reason"], reason::INVALID_SPEC);
        assert_eq!(body["type"], "Warning");
        respond(send, &body);
    });
    let action = reconcile(Arc::new(sj), ctx).await.unwrap();
    server.await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(nodes.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn deleting_removes_the_schedule_then_the_finalizer() {
    let nodes = Arc::new(RecordingNodes::default());
    let (ctx, mut api) = ctx(nodes.clone());
    let sj = job(
        json!({"metadata": {"finalizers": [names::FINALIZER], "deletionTimestamp": "2026-11-22T10:00:00Z"}}),
    );
    let server = tokio::spawn(async move {
        let (method, path, body, send) = next(&mut api).await;
        assert_eq!((method.as_str(), path.as_str()), ("PATCH", SJ_PATH));
        assert!(body.to_string().contains("remove"), "{body}");
        respond(send, &job(json!({})));
    });
    reconcile(Arc::new(sj), ctx).await.unwrap();
    server.await.unwrap();
    assert_eq!(
        *nodes.calls.lock().unwrap(),
        vec!["delete billing/report uid-1"]
    );
}

#[tokio::test]
async fn deleting_while_the_scheduler_is_down_keeps_the_finalizer() {
    let nodes = Arc::new(RecordingNodes {
        unavailable: true,
        ..Default::default()
    });
    let (ctx, mut api) = ctx(nodes.clone());
    let sj = job(
        json!({"metadata": {"finalizers": [names::FINALIZER], "deletionTimestamp": "2026-11-22T10:00:00Z"}}),
    );
    let server = tokio::spawn(async move {
        // Only a status update; no finalizer patch.
        let (_, path, body, send) = next(&mut api).await;
        assert_eq!(path, format!("{SJ_PATH}/status"));
        assert_eq!(body["status"]["conditions"][0]["reason"], reason::DELETING);
        respond(send, &job(json!({})));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(200), api.next_request())
                .await
                .is_err(),
            "the finalizer was touched"
        );
    });
    let err = reconcile(Arc::new(sj), ctx.clone()).await.unwrap_err();
    server.await.unwrap();
    assert_eq!(err.category(), "scheduler_unavailable");
    assert!(
        matches!(error_policy(Arc::new(job(json!({}))), &err, ctx), a if a == Action::requeue(backoff(1)))
    );
}

#[test]
fn the_transition_time_only_moves_when_the_status_changes() {
    let before = Timestamp::from_second(1_800_000_000).unwrap();
    let later = Timestamp::from_second(1_800_000_600).unwrap();
    let sj = job(
        json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Registered", "message": "m",
        "lastTransitionTime": "2027-01-15T08:00:00Z"}]}}),
    );
    assert_eq!(
        ready_condition(&sj, true, "Registered", "m2", later).last_transition_time,
        Time(before)
    );
    assert_eq!(
        ready_condition(&sj, false, "InvalidSpec", "x", later).last_transition_time,
        Time(later)
    );
}

#[test]
fn exec_actions_are_refused_when_the_installation_disables_them() {
    let sj = job(json!({"spec": {"action": {"http": null, "exec": {"command": ["/bin/true"]}}}}));
    let r = decide(&sj, false).unwrap_err();
    assert_eq!(r.reason, reason::EXEC_DISABLED);
    assert!(decide(&sj, true).is_ok());
}
