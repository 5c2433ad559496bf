//! Leases for app code: per-key leader election and mutual exclusion among
//! the replicas of one app, pure (commands carry the leader's clock).
//!
//! ```text
//!  sidecar ──(leader) Command::Lease(Acquire{key, pod, ttl, now, skew})──► Leases::apply
//!                                                                          │
//!   Granted{lease, New|TakenOver|Renewed} / Refused{lease} ◄───────────────┘
//! ```
//!
//! Rules, all decided here from the times in the commands:
//! - A key is `(namespace, app, key)`; one holder (a pod) at a time.
//! - **Token**: a fencing token from one replicated counter, bumped by every
//!   grant to a new holder (or to the same pod after its grant had
//!   expired). So tokens of a key strictly increase with every new tenure,
//!   and any store can refuse a write carrying a token lower than one it
//!   has seen. A renewal keeps the token.
//! - **Expiry**: a grant at `now` with `ttl` expires at `now + ttl` (the
//!   holder must stop acting by then). Another pod is granted the key only
//!   once `now >= expires + skew`: the old grant has expired on every clock
//!   that is within `skew` (`--max-clock-skew`) of the leader's.
//! - A renewal never moves the expiry earlier: a holder whose renewal reply
//!   was lost still relies on the expiry it was last told.
//! - A release by the holder frees the key at once (the holder has stopped).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Millis;

/// Shortest TTL a lease may be asked for.
pub const TTL_MIN_MS: i64 = 1_000;
/// Longest TTL: an hour (a crashed holder blocks its key at most that long).
pub const TTL_MAX_MS: i64 = 3_600_000;
/// Keys held at once by one app: a bound on the replicated state.
pub const MAX_KEYS_PER_APP: usize = 10_000;
/// Longest key.
pub const KEY_MAX_LEN: usize = 253;

/// `(namespace, app, key)`: keys of different apps never meet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey {
    pub namespace: String,
    pub app: String,
    pub key: String,
}

impl LeaseKey {
    pub fn new(
        namespace: impl Into<String>,
        app: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            app: app.into(),
            key: key.into(),
        }
    }
}

impl std::fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.app, self.key)
    }
}

/// One grant, as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The pod holding it.
    pub holder: String,
    /// The fencing token of this tenure.
    pub token: u64,
    /// When this tenure began (the leader's clock).
    pub acquired: Millis,
    /// The holder stops acting at this instant; others may take the key
    /// from `expires + skew` on.
    pub expires: Millis,
    /// The TTL of the latest grant or renewal.
    pub ttl_ms: i64,
}

impl Lease {
    /// Whether the grant has expired on every clock within `skew` of `now`'s:
    /// another pod may have the key.
    pub fn free_at(&self, now: Millis, skew_ms: i64) -> bool {
        now >= self.expires.saturating_add(skew_ms.max(0))
    }
}

/// How a lease was granted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The key was free (never held, or released).
    New,
    /// The previous grant had expired (its holder may be this same pod).
    TakenOver,
    /// The holder renewed its own unexpired grant; the token is unchanged.
    Renewed,
}

/// A lease operation, proposed by the leader.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum LeaseCommand {
    /// Acquire `key` for `pod`, or renew it if `pod` holds it.
    Acquire {
        key: LeaseKey,
        pod: String,
        ttl_ms: i64,
        now: Millis,
        skew_ms: i64,
    },
    /// `pod` gives `key` up (nothing happens if another pod holds it).
    Release { key: LeaseKey, pod: String },
    /// Every lease `pod` holds in its app: its sidecar is shutting down.
    ReleasePod {
        namespace: String,
        app: String,
        pod: String,
    },
    /// Drops every grant free at `now` (expired on every clock): keeps the
    /// state bounded by the keys actually held.
    Expire { now: Millis, skew_ms: i64 },
}

impl std::fmt::Display for LeaseCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseCommand::Acquire { key, pod, .. } => write!(f, "Acquire({key}, {pod})"),
            LeaseCommand::Release { key, pod } => write!(f, "Release({key}, {pod})"),
            LeaseCommand::ReleasePod {
                namespace,
                app,
                pod,
            } => write!(f, "ReleasePod({namespace}/{app}, {pod})"),
            LeaseCommand::Expire { now, .. } => write!(f, "Expire({now})"),
        }
    }
}

/// The state machine's answer to a [`LeaseCommand`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum LeaseResponse {
    /// The caller holds the key now.
    Granted { lease: Lease, how: Grant },
    /// Another pod holds it (until `lease.expires`, free from `+ skew`).
    Refused { lease: Lease },
    /// The app holds [`MAX_KEYS_PER_APP`] keys already.
    TooMany { limit: usize },
    /// `released`: the caller held it and the key is free now. `current`:
    /// the holder when it was another pod.
    Released {
        released: bool,
        current: Option<Lease>,
    },
    /// The keys a pod held (its sidecar shut down).
    ReleasedPod { keys: Vec<String> },
    /// Grants dropped because they had expired everywhere.
    Expired { keys: Vec<LeaseKey> },
}

/// Every lease held, and the token counter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    /// The last token issued; the next grant to a new holder gets one more.
    last_token: u64,
    held: BTreeMap<LeaseKey, Lease>,
}

impl Leases {
    pub fn get(&self, key: &LeaseKey) -> Option<&Lease> {
        self.held.get(key)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn last_token(&self) -> u64 {
        self.last_token
    }

    /// Every grant stored (some may have expired but not been dropped yet).
    pub fn iter(&self) -> impl Iterator<Item = (&LeaseKey, &Lease)> {
        self.held.iter()
    }

    /// The grants of one app (`app` empty: every app of the namespace;
    /// `namespace` empty: everything).
    pub fn of<'a>(
        &'a self,
        namespace: &'a str,
        app: &'a str,
    ) -> impl Iterator<Item = (&'a LeaseKey, &'a Lease)> + 'a {
        let start = LeaseKey::new(namespace, if namespace.is_empty() { "" } else { app }, "");
        self.held.range(start..).take_while(move |(k, _)| {
            namespace.is_empty() || (k.namespace == namespace && (app.is_empty() || k.app == app))
        })
    }

    /// The earliest instant a stored grant becomes free, if any.
    pub fn next_free(&self, skew_ms: i64) -> Option<Millis> {
        self.held
            .values()
            .map(|l| l.expires.saturating_add(skew_ms.max(0)))
            .min()
    }

    pub fn apply(&mut self, cmd: &LeaseCommand) -> LeaseResponse {
        match cmd {
            LeaseCommand::Acquire {
                key,
                pod,
                ttl_ms,
                now,
                skew_ms,
            } => self.acquire(key, pod, *ttl_ms, *now, *skew_ms),
            LeaseCommand::Release { key, pod } => match self.held.get(key) {
                Some(l) if l.holder == *pod => {
                    self.held.remove(key);
                    LeaseResponse::Released {
                        released: true,
                        current: None,
                    }
                }
                other => LeaseResponse::Released {
                    released: false,
                    current: other.cloned(),
                },
            },
            LeaseCommand::ReleasePod {
                namespace,
                app,
                pod,
            } => {
                let keys: Vec<LeaseKey> = self
                    .of(namespace, app)
                    .filter(|(_, l)| l.holder == *pod)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &keys {
                    self.held.remove(k);
                }
                LeaseResponse::ReleasedPod {
                    keys: keys.into_iter().map(|k| k.key).collect(),
                }
            }
            LeaseCommand::Expire { now, skew_ms } => {
                let keys: Vec<LeaseKey> = self
                    .held
                    .iter()
                    .filter(|(_, l)| l.free_at(*now, *skew_ms))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &keys {
                    self.held.remove(k);
                }
                LeaseResponse::Expired { keys }
            }
        }
    }

    fn acquire(
        &mut self,
        key: &LeaseKey,
        pod: &str,
        ttl_ms: i64,
        now: Millis,
        skew_ms: i64,
    ) -> LeaseResponse {
        let expires = now.saturating_add(ttl_ms.max(0));
        let how = match self.held.get_mut(key) {
            Some(l) if l.holder == pod && now < l.expires => {
                // Never earlier: the holder may not have seen this reply.
                l.expires = l.expires.max(expires);
                l.ttl_ms = ttl_ms;
                return LeaseResponse::Granted {
                    lease: l.clone(),
                    how: Grant::Renewed,
                };
            }
            // Its own grant lapsed: a new tenure, so a new token (the pod
            // may have stopped acting as holder meanwhile).
            Some(l) if l.holder == pod => Grant::TakenOver,
            Some(l) if l.free_at(now, skew_ms) => Grant::TakenOver,
            Some(l) => return LeaseResponse::Refused { lease: l.clone() },
            None => {
                if self
                    .of(&key.namespace, &key.app)
                    .nth(MAX_KEYS_PER_APP - 1)
                    .is_some()
                {
                    return LeaseResponse::TooMany {
                        limit: MAX_KEYS_PER_APP,
                    };
                }
                Grant::New
            }
        };
        self.last_token += 1;
        let lease = Lease {
            holder: pod.to_string(),
            token: self.last_token,
            acquired: now,
            expires,
            ttl_ms,
        };
        self.held.insert(key.clone(), lease.clone());
        LeaseResponse::Granted { lease, how }
    }
}

/// Why a lease key or TTL is refused (the message names the field).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidLease {
    #[error("key: must not be empty")]
    EmptyKey,
    #[error("key: must not contain '/' (a key is one path segment), got {0:?}")]
    Slash(String),
    #[error("key: at most {KEY_MAX_LEN} characters, got {0}")]
    KeyTooLong(usize),
    #[error("key: only letters, digits, '-', '_', '.' and ':' are allowed, got {0:?}")]
    KeyChars(String),
    #[error("ttlSeconds: must be between 1 and 3600 (an hour), got {0}")]
    Ttl(String),
}

/// Checks a lease key: one path segment of `[A-Za-z0-9._:-]`, 1-253 long.
pub fn validate_key(key: &str) -> Result<(), InvalidLease> {
    if key.is_empty() {
        return Err(InvalidLease::EmptyKey);
    }
    if key.contains('/') {
        return Err(InvalidLease::Slash(key.to_string()));
    }
    if key.len() > KEY_MAX_LEN {
        return Err(InvalidLease::KeyTooLong(key.len()));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(InvalidLease::KeyChars(key.to_string()));
    }
    Ok(())
}

/// Checks a TTL in milliseconds against [`TTL_MIN_MS`]..=[`TTL_MAX_MS`].
pub fn validate_ttl_ms(ttl_ms: i64) -> Result<(), InvalidLease> {
    if (TTL_MIN_MS..=TTL_MAX_MS).contains(&ttl_ms) {
        Ok(())
    } else {
        Err(InvalidLease::Ttl(format!("{}", ttl_ms as f64 / 1000.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: i64 = 50;

    fn key(k: &str) -> LeaseKey {
        LeaseKey::new("shop", "web", k)
    }

    fn acquire(l: &mut Leases, k: &str, pod: &str, ttl_ms: i64, now: Millis) -> LeaseResponse {
        l.apply(&LeaseCommand::Acquire {
            key: key(k),
            pod: pod.into(),
            ttl_ms,
            now,
            skew_ms: SKEW,
        })
    }

    fn granted(r: LeaseResponse) -> (Lease, Grant) {
        match r {
            LeaseResponse::Granted { lease, how } => (lease, how),
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    #[test]
    fn a_free_key_is_granted_with_a_token_and_an_expiry() {
        let mut l = Leases::default();
        let (lease, how) = granted(acquire(&mut l, "leader", "web-0", 10_000, 1_000));
        assert_eq!(how, Grant::New);
        assert_eq!(lease.holder, "web-0");
        assert_eq!(lease.token, 1);
        assert_eq!(lease.acquired, 1_000);
        assert_eq!(lease.expires, 11_000);
    }

    #[test]
    fn the_holder_renews_keeping_its_token_and_the_expiry_never_moves_earlier() {
        let mut l = Leases::default();
        granted(acquire(&mut l, "leader", "web-0", 10_000, 1_000));
        let (lease, how) = granted(acquire(&mut l, "leader", "web-0", 10_000, 5_000));
        assert_eq!(
            (how, lease.token, lease.expires),
            (Grant::Renewed, 1, 15_000)
        );
        // A shorter TTL does not shorten what the holder was already told.
        let (lease, _) = granted(acquire(&mut l, "leader", "web-0", 1_000, 6_000));
        assert_eq!(lease.expires, 15_000);
        assert_eq!(lease.acquired, 1_000, "renewals keep the tenure's start");
    }

    #[test]
    fn another_pod_is_refused_while_the_key_is_held() {
        let mut l = Leases::default();
        granted(acquire(&mut l, "leader", "web-0", 10_000, 1_000));
        match acquire(&mut l, "leader", "web-1", 10_000, 2_000) {
            LeaseResponse::Refused { lease } => assert_eq!(lease.holder, "web-0"),
            other => panic!("{other:?}"),
        }
        // Other keys and other apps are independent.
        granted(acquire(&mut l, "other", "web-1", 10_000, 2_000));
        let r = l.apply(&LeaseCommand::Acquire {
            key: LeaseKey::new("shop", "api", "leader"),
            pod: "api-0".into(),
            ttl_ms: 10_000,
            now: 2_000,
            skew_ms: SKEW,
        });
        assert!(matches!(r, LeaseResponse::Granted { .. }));
    }

    #[test]
    fn expiry_frees_the_key_for_others_only_after_ttl_plus_the_skew_margin() {
        let mut l = Leases::default();
        granted(acquire(&mut l, "leader", "web-0", 10_000, 1_000));
        // At the expiry itself and within the margin: still refused.
        for now in [11_000, 11_000 + SKEW - 1] {
            assert!(
                matches!(
                    acquire(&mut l, "leader", "web-1", 10_000, now),
                    LeaseResponse::Refused { .. }
                ),
                "granted at {now}"
            );
        }
        let (lease, how) = granted(acquire(&mut l, "leader", "web-1", 10_000, 11_000 + SKEW));
        assert_eq!(
            (how, lease.holder.as_str(), lease.token),
            (Grant::TakenOver, "web-1", 2)
        );
    }

    #[test]
    fn tokens_strictly_increase_across_holders_and_tenures() {
        let mut l = Leases::default();
        let mut now = 0;
        let mut last = 0;
        for round in 0..20 {
            let pod = format!("web-{}", round % 3);
            let (lease, how) = granted(acquire(&mut l, "leader", &pod, 1_000, now));
            assert_ne!(how, Grant::Renewed);
            assert!(lease.token > last, "token {} after {last}", lease.token);
            last = lease.token;
            // Renewals inside the tenure keep it.
            let (renewed, _) = granted(acquire(&mut l, "leader", &pod, 1_000, now + 500));
            assert_eq!(renewed.token, last);
            // Alternate between expiry and release.
            if round % 2 == 0 {
                now += 1_500 + SKEW;
            } else {
                l.apply(&LeaseCommand::Release {
                    key: key("leader"),
                    pod: pod.clone(),
                });
                now += 10;
            }
        }
    }

    #[test]
    fn the_same_pod_after_its_grant_lapsed_gets_a_new_token() {
        let mut l = Leases::default();
        granted(acquire(&mut l, "leader", "web-0", 1_000, 0));
        // Expired for the holder, not yet for others: only the holder may
        // take it back, as a new tenure.
        let (lease, how) = granted(acquire(&mut l, "leader", "web-0", 1_000, 1_000));
        assert_eq!(
            (how, lease.token, lease.acquired),
            (Grant::TakenOver, 2, 1_000)
        );
    }

    #[test]
    fn release_frees_the_key_at_once_but_only_for_its_holder() {
        let mut l = Leases::default();
        granted(acquire(&mut l, "leader", "web-0", 10_000, 0));
        let r = l.apply(&LeaseCommand::Release {
            key: key("leader"),
            pod: "web-1".into(),
        });
        match r {
            LeaseResponse::Released {
                released: false,
                current: Some(c),
            } => assert_eq!(c.holder, "web-0"),
            other => panic!("{other:?}"),
        }
        let r = l.apply(&LeaseCommand::Release {
            key: key("leader"),
            pod: "web-0".into(),
        });
        assert_eq!(
            r,
            LeaseResponse::Released {
                released: true,
                current: None
            }
        );
        // A retried release is harmless.
        let r = l.apply(&LeaseCommand::Release {
            key: key("leader"),
            pod: "web-0".into(),
        });
        assert_eq!(
            r,
            LeaseResponse::Released {
                released: false,
                current: None
            }
        );
        let (lease, how) = granted(acquire(&mut l, "leader", "web-1", 10_000, 10));
        assert_eq!((how, lease.token), (Grant::New, 2));
    }

    #[test]
    fn a_pods_leases_go_when_its_sidecar_shuts_down() {
        let mut l = Leases::default();
        granted(acquire(&mut l, "a", "web-0", 10_000, 0));
        granted(acquire(&mut l, "b", "web-0", 10_000, 0));
        granted(acquire(&mut l, "c", "web-1", 10_000, 0));
        let r = l.apply(&LeaseCommand::ReleasePod {
            namespace: "shop".into(),
            app: "web".into(),
            pod: "web-0".into(),
        });
        assert_eq!(
            r,
            LeaseResponse::ReleasedPod {
                keys: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(l.len(), 1);
        assert!(l.get(&key("c")).is_some());
    }

    #[test]
    fn expire_drops_only_grants_free_on_every_clock() {
        let mut l = Leases::default();
        granted(acquire(&mut l, "a", "web-0", 1_000, 0));
        granted(acquire(&mut l, "b", "web-0", 5_000, 0));
        assert_eq!(l.next_free(SKEW), Some(1_000 + SKEW));
        let r = l.apply(&LeaseCommand::Expire {
            now: 1_000,
            skew_ms: SKEW,
        });
        assert_eq!(r, LeaseResponse::Expired { keys: vec![] });
        let r = l.apply(&LeaseCommand::Expire {
            now: 1_000 + SKEW,
            skew_ms: SKEW,
        });
        assert_eq!(
            r,
            LeaseResponse::Expired {
                keys: vec![key("a")]
            }
        );
        // The counter survives: the next holder of `a` gets a larger token.
        let (lease, _) = granted(acquire(&mut l, "a", "web-1", 1_000, 2_000));
        assert_eq!(lease.token, 3);
    }

    #[test]
    fn listing_by_app_stays_inside_the_app() {
        let mut l = Leases::default();
        for (ns, app) in [("a", "x"), ("a", "y"), ("b", "x")] {
            l.apply(&LeaseCommand::Acquire {
                key: LeaseKey::new(ns, app, "k"),
                pod: "p".into(),
                ttl_ms: 1_000,
                now: 0,
                skew_ms: 0,
            });
        }
        assert_eq!(l.of("a", "x").count(), 1);
        assert_eq!(l.of("a", "").count(), 2);
        assert_eq!(l.of("", "").count(), 3);
        assert_eq!(l.of("c", "").count(), 0);
    }

    #[test]
    fn an_app_holds_a_bounded_number_of_keys() {
        let mut l = Leases::default();
        for i in 0..MAX_KEYS_PER_APP {
            granted(acquire(&mut l, &format!("k{i}"), "web-0", 1_000, 0));
        }
        assert_eq!(
            acquire(&mut l, "one-more", "web-0", 1_000, 0),
            LeaseResponse::TooMany {
                limit: MAX_KEYS_PER_APP
            }
        );
        // Renewing a held key is still fine.
        granted(acquire(&mut l, "k0", "web-0", 1_000, 10));
    }

    #[test]
    fn keys_and_ttls_outside_the_bounds_are_refused_naming_the_field() {
        assert_eq!(validate_key("leader"), Ok(()));
        assert_eq!(validate_key("shard-7.a:b_c"), Ok(()));
        assert!(
            validate_key("a/b")
                .unwrap_err()
                .to_string()
                .starts_with("key: must not contain '/'")
        );
        assert!(matches!(validate_key(""), Err(InvalidLease::EmptyKey)));
        assert!(matches!(validate_key("é"), Err(InvalidLease::KeyChars(_))));
        assert!(matches!(
            validate_key(&"k".repeat(254)),
            Err(InvalidLease::KeyTooLong(254))
        ));
        assert_eq!(validate_ttl_ms(1_000), Ok(()));
        assert_eq!(validate_ttl_ms(3_600_000), Ok(()));
        for bad in [0, 999, 3_600_001, 365 * 24 * 3_600_000] {
            assert!(
                validate_ttl_ms(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("ttlSeconds:")
            );
        }
    }

    #[test]
    fn a_snapshot_from_before_leases_loads_without_any() {
        #[derive(Serialize)]
        struct Old {
            cluster_id: Option<String>,
            schedules: BTreeMap<String, ()>,
        }
        let old = Old {
            cluster_id: Some("c1".into()),
            schedules: BTreeMap::new(),
        };
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        let s: crate::sm::State = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(s.cluster_id.as_deref(), Some("c1"));
        assert!(s.leases().is_empty());
    }

    #[test]
    fn leases_travel_through_the_log_and_snapshots() {
        let mut s = crate::sm::State::default();
        let cmd = crate::sm::Command::Lease(LeaseCommand::Acquire {
            key: key("leader"),
            pod: "web-0".into(),
            ttl_ms: 5_000,
            now: 0,
            skew_ms: SKEW,
        });
        let bytes = rmp_serde::to_vec_named(&cmd).unwrap();
        let cmd: crate::sm::Command = rmp_serde::from_slice(&bytes).unwrap();
        assert!(matches!(
            s.apply(&cmd),
            crate::sm::Response::Lease(LeaseResponse::Granted { .. })
        ));
        let snap = rmp_serde::to_vec_named(&s).unwrap();
        let back: crate::sm::State = rmp_serde::from_slice(&snap).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.leases().get(&key("leader")).unwrap().token, 1);
    }
}
