//! The election's pure parts, then the elector against a real API server:
//! skipped (saying why) unless `RAFTCRON_E2E_KUBECONFIG` names a kubeconfig.
//! Each of those tests works in a namespace of its own and deletes it.
//!
//! ```text
//! RAFTCRON_E2E_KUBECONFIG=/opt/k8s/admin.kubeconfig cargo test -p raftcron-operator --lib leadership::
//! ```

use std::path::PathBuf;
use std::time::Instant;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use super::*;

const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(s: u64) -> SystemTime {
    T0 + secs(s)
}

fn lease_of(holder: Option<&str>, renewed: u64, duration: u64) -> Observed {
    Observed {
        holder: holder.map(str::to_string),
        expires: Some(at(renewed + duration)),
    }
}

fn settings(duration: u64, grace: u64) -> Result<Settings, Error> {
    Settings::new(
        "ns".into(),
        "lease".into(),
        "me".into(),
        secs(duration),
        secs(grace),
    )
}

#[test]
fn the_default_lease_settings_are_valid_and_bad_ones_are_refused_naming_the_flag() {
    let s = settings(15, 5).unwrap();
    assert_eq!(s.margin(), Duration::from_millis(2500));
    let err = |r: Result<Settings, Error>| r.unwrap_err().to_string();
    assert!(err(settings(15, 15)).starts_with("--lease-grace: 15s must be shorter"));
    assert!(err(settings(5, 10)).contains("shorter than --lease-duration"));
    assert!(err(settings(15, 0)).starts_with("--lease-grace"));
    assert!(err(settings(7200, 5)).starts_with("--lease-duration"));
    let fractional = Settings::new(
        "ns".into(),
        "lease".into(),
        "me".into(),
        Duration::from_millis(1500),
        secs(1),
    );
    assert!(err(fractional).contains("whole number of seconds"));
}

#[test]
fn a_released_lease_makes_a_standby_look_again_at_once() {
    let mut t = Tracker::new("me", secs(2));
    assert!(
        !t.observe(lease_of(Some("other"), 0, 15)),
        "a held Lease: keep waiting"
    );
    assert!(!t.leading(at(1)));
    assert!(
        t.observe(lease_of(None, 0, 15)),
        "released: look now, not at its expiry"
    );
    assert!(t.observe(Observed::from_lease(None)), "deleted: look now");
}

#[test]
fn a_replica_leads_only_once_the_watch_shows_the_lease_it_took() {
    let mut t = Tracker::new("me", secs(2));
    t.observe(lease_of(None, 0, 15));
    t.set_holder(true, at(1));
    assert!(
        !t.leading(at(1)),
        "the event of its own write has not arrived"
    );
    assert!(!t.unconfirmed(at(2)), "it may take up to the margin");
    assert!(!t.observe(lease_of(Some("me"), 1, 15)));
    assert!(t.leading(at(2)));
    assert_eq!(
        t.valid_until(),
        Some(at(14)),
        "expiry (16) minus the margin"
    );
}

#[test]
fn a_lease_taken_that_never_shows_up_in_the_watch_is_not_led() {
    let mut t = Tracker::new("me", secs(2));
    t.observe(lease_of(Some("old"), 0, 15));
    t.set_holder(true, at(20));
    assert_eq!(t.next_check(at(20)), Some(at(22)));
    assert!(!t.leading(at(21)));
    assert!(t.unconfirmed(at(22)));
}

#[test]
fn a_leader_whose_renewal_does_not_show_up_stops_before_its_lease_expires() {
    let mut t = Tracker::new("me", secs(2));
    t.set_holder(true, at(0));
    t.observe(lease_of(Some("me"), 0, 15));
    assert!(t.leading(at(12)));
    assert_eq!(t.next_check(at(12)), Some(at(13)));
    assert!(!t.leading(at(13)), "13 = expiry 15 - margin 2");
    assert!(t.unconfirmed(at(13)));
    // A renewal seen in time moves the end.
    t.observe(lease_of(Some("me"), 10, 15));
    assert!(t.leading(at(13)));
    assert_eq!(t.valid_until(), Some(at(23)));
}

#[test]
fn a_leader_stops_as_soon_as_the_watch_shows_another_holder() {
    let mut t = Tracker::new("me", secs(2));
    t.set_holder(true, at(0));
    t.observe(lease_of(Some("me"), 0, 15));
    assert!(t.leading(at(1)));
    assert!(
        t.observe(lease_of(Some("intruder"), 1, 15)),
        "the manager's view is stale: replace it"
    );
    assert!(!t.leading(at(1)));
    let mut t = Tracker::new("me", secs(2));
    t.set_holder(true, at(0));
    t.observe(lease_of(Some("me"), 0, 15));
    assert!(
        t.observe(lease_of(None, 0, 15)),
        "cleared by someone: look again"
    );
    assert!(!t.leading(at(1)));
}

#[test]
fn a_stepped_down_holder_does_not_lead_on_an_old_event() {
    let mut t = Tracker::new("me", secs(2));
    t.observe(lease_of(Some("me"), 0, 15));
    assert!(
        !t.leading(at(1)),
        "the manager does not say it holds the Lease"
    );
    t.set_holder(true, at(1));
    t.set_holder(false, at(2));
    assert!(!t.leading(at(2)));
    assert_eq!(t.next_check(at(2)), None);
}

#[test]
fn a_lease_without_renew_time_or_duration_is_never_valid() {
    let mut t = Tracker::new("me", secs(2));
    t.set_holder(true, at(0));
    t.observe(Observed {
        holder: Some("me".into()),
        expires: None,
    });
    assert!(!t.leading(at(0)));
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "l"},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    assert_eq!(Observed::from_lease(Some(&lease)).expires, None);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "l"},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15, "renewTime": "1970-01-01T00:00:10.500000Z"},
    }))
    .unwrap();
    assert_eq!(
        Observed::from_lease(Some(&lease)),
        Observed {
            holder: Some("me".into()),
            expires: Some(T0 + Duration::from_millis(25_500))
        }
    );
}

// --- against a real API server -------------------------------------------------

/// The API server's kubeconfig, or None (and a note) to skip.
pub(crate) fn kubeconfig(test: &str) -> Option<PathBuf> {
    match std::env::var_os("RAFTCRON_E2E_KUBECONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            println!(
                "SKIPPED {test}: set RAFTCRON_E2E_KUBECONFIG to a kubeconfig \
                 (e.g. /opt/k8s/admin.kubeconfig) to run it against a real API server"
            );
            None
        }
    }
}

async fn client(path: &PathBuf) -> kube::Client {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAFTCRON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
    raftcron_node::tls::install_crypto_provider();
    let kc = Kubeconfig::read_from(path).expect("reading the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// A namespace of its own with an empty Lease in it (as the chart makes it);
/// deleted on drop.
struct TempNs {
    client: kube::Client,
    name: String,
}

impl TempNs {
    async fn create(client: &kube::Client, prefix: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("{prefix}-{}-{nanos:x}", std::process::id());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        let lease: Lease =
            serde_json::from_value(json!({"metadata": {"name": "raftcron-operator"}})).unwrap();
        Api::<Lease>::namespaced(client.clone(), &name)
            .create(&PostParams::default(), &lease)
            .await
            .expect("create Lease");
        Self {
            client: client.clone(),
            name,
        }
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    async fn holder(&self) -> Option<String> {
        self.leases()
            .get("raftcron-operator")
            .await
            .expect("get Lease")
            .spec
            .and_then(|s| s.holder_identity)
    }
}

impl Drop for TempNs {
    fn drop(&mut self) {
        let (client, name) = (self.client.clone(), self.name.clone());
        // Best effort, on a runtime of its own: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await;
            })
        })
        .join();
    }
}

fn elector(client: &kube::Client, ns: &str, identity: &str) -> Elector {
    // The operator's defaults: 15 s Lease, 5 s grace.
    let s = Settings::new(
        ns.into(),
        "raftcron-operator".into(),
        identity.into(),
        secs(15),
        secs(5),
    )
    .unwrap();
    Elector::start(client.clone(), s)
}

/// Waits until `leading` is `want`; the time it took, or None after `limit`.
async fn until_leading(
    leading: &mut watch::Receiver<bool>,
    want: bool,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    tokio::time::timeout(limit, leading.wait_for(|l| *l == want))
        .await
        .ok()?
        .ok()?;
    Some(start.elapsed())
}

/// Both replicas' transitions, with the time each happened.
fn record(mut rx: watch::Receiver<bool>) -> JoinHandle<Vec<(bool, Instant)>> {
    tokio::spawn(async move {
        let mut seen = vec![(*rx.borrow_and_update(), Instant::now())];
        while rx.changed().await.is_ok() {
            seen.push((*rx.borrow_and_update(), Instant::now()));
        }
        seen
    })
}

fn leading_at(seen: &[(bool, Instant)], t: Instant) -> bool {
    seen.iter()
        .rev()
        .find(|(_, at)| *at <= t)
        .is_some_and(|(l, _)| *l)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_leads_within_five_seconds_of_the_leader_releasing_its_lease() {
    let Some(kc) =
        kubeconfig("a_standby_leads_within_five_seconds_of_the_leader_releasing_its_lease")
    else {
        return;
    };
    let client = client(&kc).await;
    let ns = TempNs::create(&client, "rc-op-lease").await;
    let a = elector(&client, &ns.name, "replica-a");
    let mut a_leading = a.leading();
    assert!(
        until_leading(&mut a_leading, true, secs(10))
            .await
            .is_some(),
        "the first replica did not lead a free Lease"
    );
    let b = elector(&client, &ns.name, "replica-b");
    let mut b_leading = b.leading();
    let (a_seen, b_seen) = (record(a.leading()), record(b.leading()));
    assert!(
        until_leading(&mut b_leading, true, secs(2)).await.is_none(),
        "the standby led while the other held the Lease"
    );
    assert_eq!(ns.holder().await.as_deref(), Some("replica-a"));

    let released = Instant::now();
    a.release().await;
    until_leading(&mut b_leading, true, secs(20))
        .await
        .expect("the standby did not lead within 20 s of the release");
    let took = released.elapsed();
    println!("standby leading {took:?} after the leader began to release");
    assert!(
        took <= secs(5),
        "the standby led {took:?} after the release (target: 5 s; the Lease lasts 15 s)"
    );
    assert_eq!(ns.holder().await.as_deref(), Some("replica-b"));
    b.release().await;
    assert_eq!(
        ns.holder().await,
        None,
        "a releasing leader clears the Lease"
    );

    let (a_seen, b_seen) = (a_seen.await.unwrap(), b_seen.await.unwrap());
    for (l, t) in &b_seen {
        assert!(
            !(*l && leading_at(&a_seen, *t)),
            "both led at once: a {a_seen:?}, b {b_seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stops_as_soon_as_someone_else_holds_the_lease() {
    let Some(kc) = kubeconfig("a_leader_stops_as_soon_as_someone_else_holds_the_lease") else {
        return;
    };
    let client = client(&kc).await;
    let ns = TempNs::create(&client, "rc-op-lease").await;
    let a = elector(&client, &ns.name, "replica-a");
    let mut leading = a.leading();
    assert!(until_leading(&mut leading, true, secs(10)).await.is_some());
    // Someone takes the Lease over its holder's head (an admin, or a replica
    // that saw it expire while this one hung).
    let patch = json!({"spec": {
        "holderIdentity": "intruder",
        "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
        "leaseDurationSeconds": 15,
    }});
    ns.leases()
        .patch(
            "raftcron-operator",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let took = until_leading(&mut leading, false, secs(2))
        .await
        .expect("the leader kept leading after the Lease named someone else");
    println!("stopped leading {took:?} after the Lease named someone else");
    assert!(
        until_leading(&mut leading, true, secs(3)).await.is_none(),
        "led again while the intruder's Lease was valid"
    );
    a.release().await;
    assert_eq!(
        ns.holder().await.as_deref(),
        Some("intruder"),
        "a replica that does not hold the Lease leaves it alone on the way out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_a_lease_whose_holder_died_once_it_expires_and_not_before() {
    let Some(kc) =
        kubeconfig("a_standby_takes_a_lease_whose_holder_died_once_it_expires_and_not_before")
    else {
        return;
    };
    let client = client(&kc).await;
    let ns = TempNs::create(&client, "rc-op-lease").await;
    // A holder that was killed (-9): renewed now, for 4 s, never again.
    let patch = json!({"spec": {
        "holderIdentity": "killed",
        "acquireTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
        "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
        "leaseDurationSeconds": 4,
    }});
    ns.leases()
        .patch(
            "raftcron-operator",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let start = Instant::now();
    let b = elector(&client, &ns.name, "replica-b");
    let mut leading = b.leading();
    let took = until_leading(&mut leading, true, secs(10))
        .await
        .expect("the standby did not take the expired Lease");
    println!("standby leading {took:?} after a 4 s Lease of a dead holder was renewed");
    assert!(
        start.elapsed() >= Duration::from_millis(3900),
        "led after {:?}, before the dead holder's Lease expired",
        start.elapsed()
    );
    assert_eq!(ns.holder().await.as_deref(), Some("replica-b"));
    b.release().await;
}
