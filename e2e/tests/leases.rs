//! Leases for app code with real processes: 3 nodes, 3 sidecars (one per
//! replica of app `web`), the app's calls made on each sidecar's local API.
//! One holder at a time; a holder whose sidecar is killed -9 loses the key
//! to another replica about TTL + skew later; a leader kill keeps the
//! holder; tokens only grow; a SIGTERM'd sidecar frees its leases at once;
//! bad input is refused naming the field and loses nothing; the lease
//! safety checker under kill -9, SIGSTOP, partitions and slow links.

mod common;

use std::time::{Duration, Instant};

use raftcron_e2e::lease_check::{self, LabTls, LeaseCheckOptions, LocalApi, Sidecar};
use raftcron_e2e::netlab::NetLab;
use raftcron_e2e::{Cluster, ClusterOptions, http_get, now_ms};
use serde_json::Value;

const T: Duration = Duration::from_secs(8);

async fn post(api: &mut LocalApi, key: &str, ttl: u32) -> (u16, Value) {
    api.call(
        "POST",
        &format!("/v1/leases/{key}"),
        Some(&format!(r#"{{"ttlSeconds": {ttl}}}"#)),
        T,
    )
    .await
    .expect("sidecar answers")
}

async fn get(api: &mut LocalApi, path: &str) -> (u16, Value) {
    api.call("GET", path, None, Duration::from_secs(40))
        .await
        .expect("sidecar answers")
}

fn logs(c: &Cluster, sidecars: &[Sidecar]) -> String {
    let mut s = c.logs();
    for sc in sidecars {
        s.push_str(&format!("--- sidecar {} ---\n{}", sc.pod, sc.log_text()));
    }
    s
}

async fn start(c: &Cluster, n: usize) -> Vec<Sidecar> {
    let endpoints = c.endpoints();
    let sidecars: Vec<Sidecar> = (0..n)
        .map(|i| Sidecar::start(c.path(), &endpoints, "shop", &format!("web-{i}"), &[]))
        .collect();
    for s in &sidecars {
        assert!(s.serving(Duration::from_secs(10)).await, "{}", s.log_text());
    }
    sidecars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_holds_a_lease_at_a_time_through_holder_and_leader_kills() {
    let ttl = 2u32;
    let mut c = Cluster::start(ClusterOptions::default()).await;
    let mut sidecars = start(&c, 3).await;
    let mut apis: Vec<LocalApi> = sidecars.iter().map(|s| LocalApi::new(&s.listen)).collect();

    // All three ask at once: exactly one holds it, the others are told who.
    let mut replies = Vec::new();
    for api in apis.iter_mut() {
        replies.push(post(api, "leader", ttl).await);
    }
    let winners: Vec<usize> = (0..3).filter(|i| replies[*i].0 == 200).collect();
    assert_eq!(winners.len(), 1, "{replies:?}\n{}", logs(&c, &sidecars));
    let holder = winners[0];
    let first = replies[holder].1.clone();
    let token1 = first["token"].as_u64().unwrap();
    assert_eq!(first["holder"], format!("web-{holder}"));
    assert_eq!(first["renewed"], false);
    for i in (0..3).filter(|i| *i != holder) {
        assert_eq!(replies[i].0, 409, "{:?}", replies[i]);
        assert_eq!(replies[i].1["holder"], first["holder"]);
        assert_eq!(replies[i].1["token"], token1);
        assert!(
            replies[i].1["error"]
                .as_str()
                .unwrap()
                .contains("is held by")
        );
    }
    // A renewal keeps the token; raftcronctl lists the lease.
    let (code, renewed) = post(&mut apis[holder], "leader", ttl).await;
    assert_eq!(
        (
            code,
            renewed["token"].as_u64(),
            renewed["renewed"].as_bool()
        ),
        (200, Some(token1), Some(true))
    );
    let listed = c.ctl_json(&["leases", "list", "-n", "shop"]);
    assert_eq!(listed[0]["key"], "leader", "{listed}");
    assert_eq!(listed[0]["app"], "web");
    assert_eq!(listed[0]["holder"], first["holder"]);
    assert_eq!(listed[0]["token"], token1);

    // A standby long-polls for a change of the token it saw.
    let standby = (holder + 1) % 3;
    let mut poller = LocalApi::new(&sidecars[standby].listen);
    let poll = tokio::spawn(async move {
        let r = get(
            &mut poller,
            &format!("/v1/leases/leader?wait=30s&token={token1}"),
        )
        .await;
        (r, now_ms())
    });

    // The holder's sidecar dies (kill -9) right after a renewal; the other
    // replicas keep asking. The next holder comes about TTL + skew later.
    let (code, _) = post(&mut apis[holder], "leader", ttl).await;
    assert_eq!(code, 200);
    let renewed_at = now_ms();
    sidecars[holder].kill9();
    let killed = Instant::now();
    let mut next = None;
    while killed.elapsed() < Duration::from_secs(10) && next.is_none() {
        for i in (0..3).filter(|i| *i != holder) {
            let (code, v) = post(&mut apis[i], "leader", ttl).await;
            if code == 200 {
                next = Some((i, v, now_ms()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (next, v, at) = next.unwrap_or_else(|| panic!("no new holder\n{}", logs(&c, &sidecars)));
    let token2 = v["token"].as_u64().unwrap();
    let handover = at - renewed_at;
    println!(
        "kill -9 of the holder's sidecar → web-{next} holds the key {handover} ms after the last renewal (ttl {ttl} s)"
    );
    assert!(token2 > token1, "token {token2} after {token1}");
    assert!(
        handover >= i64::from(ttl) * 1000,
        "granted {handover} ms after the last renewal, before the TTL had run out"
    );
    assert!(handover < i64::from(ttl) * 1000 + 3000, "{handover} ms");
    let ((code, polled), returned) = poll.await.unwrap();
    assert_eq!(code, 200);
    assert_ne!(polled["token"], token1, "{polled}");
    assert!(
        returned <= at + 1000,
        "the long poll returned {} ms after the new grant",
        returned - at
    );

    // The leader dies: the holder keeps the key through the election (its
    // sidecar follows the new leader), the others are still refused.
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    c.node(leader).kill9();
    let mut last = token2;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let (code, v) = post(&mut apis[next], "leader", ttl).await;
        if code == 200 {
            let t = v["token"].as_u64().unwrap();
            assert!(t >= last, "token {t} after {last}");
            last = t;
        }
        for i in (0..3).filter(|i| *i != next && *i != holder) {
            let (code, v) = post(&mut apis[i], "leader", ttl).await;
            assert_ne!(
                code, 200,
                "web-{i} got the key while web-{next} renewed: {v}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        last, token2,
        "the holder lost its tenure across the leader kill"
    );

    // The killed sidecar comes back; its replica is refused (tokens grew).
    sidecars[holder].restart();
    assert!(sidecars[holder].serving(Duration::from_secs(10)).await);
    let (code, v) = post(&mut apis[holder], "leader", ttl).await;
    assert_eq!((code, v["token"].as_u64()), (409, Some(token2)), "{v}");

    // A SIGTERM'd sidecar releases its pod's leases at once.
    sidecars[next].signal("TERM");
    let freed = raftcron_e2e::wait_for(Duration::from_secs(5), || {
        let listen = sidecars[holder].listen.clone();
        async move {
            let (_, body) = http_get(&listen, "/v1/leases/leader").await.ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            v["holder"].is_null().then_some(())
        }
    })
    .await;
    assert!(
        freed.is_some(),
        "not released on SIGTERM\n{}",
        logs(&c, &sidecars)
    );
    let (code, v) = post(&mut apis[holder], "leader", ttl).await;
    assert_eq!(code, 200, "{v}");
    assert!(v["token"].as_u64().unwrap() > token2);

    // The leader counted what happened (labels bounded, all present from the start).
    let leader = c.wait_leader(Duration::from_secs(5)).await.unwrap();
    let (_, metrics) = http_get(&c.node(leader).http.clone(), "/metrics")
        .await
        .unwrap();
    for name in [
        "raftcron_node_lease_grants_total{kind=\"new\"",
        "raftcron_node_lease_grants_total{kind=\"takeover\"",
        "raftcron_node_lease_grants_total{kind=\"renewal\"",
        "raftcron_node_lease_refusals_total",
        "raftcron_node_lease_ends_total{reason=\"expired\"",
        "raftcron_node_lease_ends_total{reason=\"released\"",
        "raftcron_node_lease_ends_total{reason=\"shutdown\"",
        "raftcron_node_leases",
    ] {
        assert!(metrics.contains(name), "no {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lease_requests_are_refused_naming_the_field_and_lose_nothing() {
    let c = Cluster::start(ClusterOptions::default()).await;
    let sidecars = start(&c, 1).await;
    let mut api = LocalApi::new(&sidecars[0].listen);
    let (code, kept) = post(&mut api, "kept", 60).await;
    assert_eq!(code, 200, "{kept}");
    let big = format!(r#"{{"ttlSeconds": 5, "pad": "{}"}}"#, "x".repeat(5000));
    // (method, path, body, expected status, field, words of the error)
    type Case<'a> = (&'a str, String, Option<String>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/leases/a/b".into(),
            Some(r#"{"ttlSeconds": 5}"#.into()),
            400,
            "key",
            "key: must not contain '/'",
        ),
        (
            "POST",
            "/v1/leases/a%2Fb".into(),
            Some(r#"{"ttlSeconds": 5}"#.into()),
            400,
            "key",
            "key: must not contain '/'",
        ),
        (
            "DELETE",
            "/v1/leases/a/b".into(),
            None,
            400,
            "key",
            "key: must not contain '/'",
        ),
        (
            "POST",
            "/v1/leases/k%20k".into(),
            Some(r#"{"ttlSeconds": 5}"#.into()),
            400,
            "key",
            "key: only letters",
        ),
        (
            "POST",
            "/v1/leases/k".into(),
            Some(r#"{"ttlSeconds": 0}"#.into()),
            400,
            "ttlSeconds",
            "ttlSeconds: must be between 1 and 3600",
        ),
        (
            "POST",
            "/v1/leases/k".into(),
            Some(r#"{"ttlSeconds": 31536000}"#.into()),
            400,
            "ttlSeconds",
            "ttlSeconds: must be between 1 and 3600 (an hour), got 31536000",
        ),
        (
            "POST",
            "/v1/leases/k".into(),
            Some(r#"{"ttlSeconds": 2.5}"#.into()),
            400,
            "ttlSeconds",
            "ttlSeconds: whole seconds",
        ),
        (
            "POST",
            "/v1/leases/k".into(),
            Some(r#"{"ttlSeconds": 5, "holder": "web-9"}"#.into()),
            400,
            "body",
            "body: unknown field `holder`",
        ),
        (
            "POST",
            "/v1/leases/k".into(),
            Some("{}".into()),
            400,
            "body",
            "body: missing field `ttlSeconds`",
        ),
        (
            "POST",
            "/v1/leases/k".into(),
            None,
            400,
            "ttlSeconds",
            "body: required",
        ),
        (
            "POST",
            "/v1/leases/k".into(),
            Some(big),
            413,
            "body",
            "body: larger than 4096 bytes",
        ),
        (
            "GET",
            "/v1/leases/k?wait=forever".into(),
            None,
            400,
            "wait",
            "wait: \"forever\" is not a duration",
        ),
        (
            "GET",
            "/v1/leases/k?wait=1h".into(),
            None,
            400,
            "wait",
            "wait: at most 300s",
        ),
        (
            "GET",
            "/v1/leases/k?since=3".into(),
            None,
            400,
            "since",
            "since: unknown query parameter",
        ),
    ];
    for (method, path, body, status, field, starts) in cases {
        let (code, v) = api.call(method, &path, body.as_deref(), T).await.unwrap();
        assert_eq!(code, status, "{method} {path}: {v}");
        assert_eq!(v["field"], field, "{method} {path}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.starts_with(starts), "{method} {path}: {msg:?}");
    }
    // Nothing stored was lost or changed.
    let (code, v) = get(&mut api, "/v1/leases/kept").await;
    assert_eq!(code, 200);
    assert_eq!(
        (&v["holder"], &v["token"], &v["expiresAt"]),
        (&kept["holder"], &kept["token"], &kept["expiresAt"])
    );
    let (_, all) = get(&mut api, "/v1/leases").await;
    assert_eq!(all["leases"].as_array().map(Vec::len), Some(1), "{all}");
}

fn lab_tls(dir: &std::path::Path, lab: &NetLab) -> LabTls {
    use common::certs::{ca, leaf};
    let cluster_ca = ca("raftcron lease check CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &cluster_ca.pem).unwrap();
    let ips: Vec<String> = (1..=3).map(|i| lab.ip(i)).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    LabTls {
        ca: ca_file,
        node: leaf(&cluster_ca, dir, "node", &ip_refs),
        client: leaf(&cluster_ca, dir, "client", &[]),
        sidecar: leaf(
            &cluster_ca,
            dir,
            "sidecar",
            &[&format!(
                "{}.namespaces.raftcron.dev",
                lease_check::NAMESPACE
            )],
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_holders_never_overlap_and_tokens_only_grow_under_faults() {
    let dir = tempfile::tempdir().unwrap();
    let lab = match NetLab::available().and_then(|()| NetLab::create(3)) {
        Ok(lab) => {
            let tls = lab_tls(dir.path(), &lab);
            Some((lab, tls))
        }
        Err(why) => {
            println!("no network namespaces ({why}): kill -9 and SIGSTOP only, on loopback");
            None
        }
    };
    let secs = std::env::var("RAFTCRON_LEASE_CHECK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let opts = LeaseCheckOptions {
        duration: Duration::from_secs(secs),
        replicas: 3,
        ttl_s: 2,
        seed: std::env::var("RAFTCRON_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20261201),
    };
    println!("lease check: {} s, seed {}", secs, opts.seed);
    let report = lease_check::run(opts, lab).await.expect("lease check");
    for (at, f) in &report.faults {
        println!("  +{at:>6} ms {f}");
    }
    println!("{}", report.verdict.summary());
    assert!(
        report.verdict.violations.is_empty(),
        "{}",
        report.verdict.summary()
    );
}

/// `deploy/examples/lease-election/` run as its README says without
/// Kubernetes: the store, and three replicas (each app.py beside its own
/// sidecar). One writer at a time, tokens only grow in the store, a leader
/// paused past its TTL (SIGSTOP) is replaced, and the store refuses the old
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_election_example_has_one_writer_and_its_store_refuses_stale_tokens() {
    use std::process::{Command, Stdio};
    if Command::new("python3").arg("--version").output().is_err() {
        println!("SKIPPED: no python3");
        return;
    }
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/lease-election");
    let c = Cluster::start(ClusterOptions::default()).await;
    let sidecars = start(&c, 3).await;
    let store_addr = format!("127.0.0.1:{}", raftcron_e2e::free_port());
    let spawn = |script: &str, env: Vec<(&str, String)>, log: &str| {
        let log = std::fs::File::create(c.path().join(log)).unwrap();
        raftcron_e2e::process::ChildGuard::running(
            Command::new("python3")
                .arg(example.join(script))
                .envs(env)
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        )
    };
    let (host, port) = store_addr.split_once(':').unwrap();
    let _store = spawn(
        "store.py",
        vec![("HOST", host.to_string()), ("PORT", port.to_string())],
        "store.log",
    );
    let mut apps: Vec<_> = sidecars
        .iter()
        .map(|s| {
            spawn(
                "app.py",
                vec![
                    ("SIDECAR", format!("http://{}", s.listen)),
                    ("STORE", format!("http://{store_addr}")),
                    ("POD", s.pod.clone()),
                    ("TTL", "2".into()),
                ],
                &format!("app-{}.log", s.pod),
            )
        })
        .collect();
    let writes = || async {
        let (_, body) = http_get(&store_addr, "/writes").await.ok()?;
        serde_json::from_str::<Vec<Value>>(&body).ok()
    };
    let first = raftcron_e2e::wait_for(Duration::from_secs(20), || async {
        writes().await.filter(|w| w.len() >= 3)
    })
    .await
    .unwrap_or_else(|| panic!("no writes\n{}", logs(&c, &sidecars)));
    let leader_pod = first[0]["writer"].as_str().unwrap().to_string();
    let old_token = first[0]["token"].as_u64().unwrap();
    // The leader's process pauses for longer than its TTL (a GC pause, a
    // stuck disk): another replica takes over and writes.
    let i = sidecars.iter().position(|s| s.pod == leader_pod).unwrap();
    let pid = apps[i].pid().unwrap().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let taken = raftcron_e2e::wait_for(Duration::from_secs(10), || async {
        writes()
            .await
            .filter(|w| w.iter().any(|w| w["writer"] != leader_pod.as_str()))
    })
    .await;
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    let w = taken.unwrap_or_else(|| panic!("nobody took over\n{}", logs(&c, &sidecars)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A write the paused leader would make with its old token is refused.
    let mut store = LocalApi::new(&store_addr);
    let stale = format!(
        r#"{{"key": "leader", "token": {old_token}, "writer": "{leader_pod}", "value": 0}}"#
    );
    let (code, v) = store.call("POST", "/write", Some(&stale), T).await.unwrap();
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().starts_with("stale token"),
        "{v}"
    );
    // In the store, tokens never go down and each token has one writer.
    let all = writes().await.unwrap();
    let mut writer_of = std::collections::BTreeMap::new();
    for pair in all.windows(2) {
        assert!(
            pair[1]["token"].as_u64() >= pair[0]["token"].as_u64(),
            "{pair:?}"
        );
    }
    for w in &all {
        let prev = writer_of.insert(w["token"].as_u64().unwrap(), w["writer"].clone());
        assert!(
            prev.is_none_or(|p| p == w["writer"]),
            "token {} written by two pods",
            w["token"]
        );
    }
    assert!(writer_of.len() >= 2, "{writer_of:?}");
    println!(
        "{} writes, tokens and writers {writer_of:?}; first takeover after {} writes",
        all.len(),
        w.len()
    );
    for a in apps.iter_mut() {
        a.kill9();
    }
}
