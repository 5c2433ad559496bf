//! The leader's attached replicas, per (namespace, app), in memory only: an
//! attachment is a live stream, not Raft state, and a new leader is
//! attached to afresh.
//!
//! ```text
//!  attach stream ──Hello──► Registry::attach ──► AppReplicas { replica → (pod, capacity, active, tx) }
//!  fire loop: arm ──prepare──► place() picks one ──Prepare──► tx        (a few ms ahead)
//!             instant ──go──► Go ──► tx;  Result ◄── stream ──► the waiting attempt
//!  stream ends / heartbeats stop ──► detach: every attempt it held ends Lost
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::pb::sidecar as pb;

/// How an attempt's replica is chosen (`spec.action.app.placement`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    LeastActive,
    RoundRobin,
}

/// What placement sees of one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub id: u64,
    pub active: u32,
    pub capacity: u32,
}

/// Picks the replica for the next attempt among `replicas` (ordered by
/// attachment), skipping those at capacity. `cursor` is the app's
/// round-robin position, advanced past the pick. Pure.
pub fn place(replicas: &[Load], placement: Placement, cursor: &mut u64) -> Option<u64> {
    let free = replicas.iter().filter(|r| r.active < r.capacity.max(1));
    let pick = match placement {
        // Fewest in flight; ties go to the replica after the cursor, so
        // an idle app's attempts still spread over its replicas.
        Placement::LeastActive => free.min_by_key(|r| (r.active, r.id <= *cursor, r.id)),
        Placement::RoundRobin => {
            let free: Vec<&Load> = free.collect();
            free.iter()
                .find(|r| r.id > *cursor)
                .or_else(|| free.first())
                .copied()
        }
    }?;
    *cursor = pick.id;
    Some(pick.id)
}

/// An attempt's result as the sidecar reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct AppResult {
    pub outcome: pb::Outcome,
    pub message: String,
    pub sent_us: i64,
}

/// Why a waiting attempt got no result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unfinished {
    /// The replica detached (died, was cut off, or the leader stepped down).
    Detached { pod: String },
}

type Waiter = oneshot::Sender<Result<AppResult, Unfinished>>;

struct Replica {
    pod: String,
    capacity: u32,
    tx: mpsc::Sender<pb::ToSidecar>,
    /// Cancelled when it is detached: its stream tasks end.
    gone: CancellationToken,
    /// Attempts sent to it and not finished: (run id, attempt) → who waits.
    pending: HashMap<(String, u32), Option<Waiter>>,
}

#[derive(Default)]
struct AppReplicas {
    replicas: BTreeMap<u64, Replica>,
    cursor: u64,
}

#[derive(Default)]
struct Inner {
    apps: HashMap<(String, String), AppReplicas>,
    /// Replica id → its app, to find it again from the stream.
    app_of: HashMap<u64, (String, String)>,
    next_id: u64,
}

/// Attached replicas of every app. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

/// An attempt placed on a replica: Prepare sent, waiting for Go.
pub struct Placed {
    pub replica: u64,
    pub pod: String,
    tx: mpsc::Sender<pb::ToSidecar>,
    result: oneshot::Receiver<Result<AppResult, Unfinished>>,
}

impl Registry {
    /// Adds a replica; returns its id for [`detach`](Self::detach) and the
    /// token cancelled when it is detached (by its stream, or by [`clear`](Self::clear)).
    pub fn attach(
        &self,
        namespace: &str,
        app: &str,
        pod: &str,
        capacity: u32,
        tx: mpsc::Sender<pb::ToSidecar>,
    ) -> (u64, CancellationToken) {
        let gone = CancellationToken::new();
        let mut g = self.inner.lock().expect("registry lock");
        g.next_id += 1;
        let id = g.next_id;
        let key = (namespace.to_string(), app.to_string());
        g.app_of.insert(id, key.clone());
        g.apps.entry(key).or_default().replicas.insert(
            id,
            Replica {
                pod: pod.to_string(),
                capacity: capacity.max(1),
                tx,
                gone: gone.clone(),
                pending: HashMap::new(),
            },
        );
        (id, gone)
    }

    /// Removes a replica: every attempt it held ends [`Unfinished::Detached`].
    pub fn detach(&self, id: u64) {
        let mut g = self.inner.lock().expect("registry lock");
        let Some(key) = g.app_of.remove(&id) else {
            return;
        };
        let Some(app) = g.apps.get_mut(&key) else {
            return;
        };
        if let Some(r) = app.replicas.remove(&id) {
            r.gone.cancel();
            for (_, waiter) in r.pending {
                if let Some(w) = waiter {
                    let _ = w.send(Err(Unfinished::Detached { pod: r.pod.clone() }));
                }
            }
        }
        if app.replicas.is_empty() {
            g.apps.remove(&key);
        }
    }

    /// Drops every attachment (leadership ended): the streams close and
    /// the sidecars attach to the next leader.
    pub fn clear(&self) {
        let ids: Vec<u64> = self
            .inner
            .lock()
            .expect("registry lock")
            .app_of
            .keys()
            .copied()
            .collect();
        for id in ids {
            self.detach(id);
        }
    }

    /// Replicas attached for `namespace/app`, by pod.
    pub fn replicas(&self, namespace: &str, app: &str) -> Vec<String> {
        let g = self.inner.lock().expect("registry lock");
        g.apps
            .get(&(namespace.to_string(), app.to_string()))
            .map(|a| a.replicas.values().map(|r| r.pod.clone()).collect())
            .unwrap_or_default()
    }

    /// Attached replicas per app, for the metrics.
    pub fn counts(&self) -> Vec<((String, String), usize)> {
        let g = self.inner.lock().expect("registry lock");
        g.apps
            .iter()
            .map(|(k, a)| (k.clone(), a.replicas.len()))
            .collect()
    }

    /// Places an attempt and sends its Prepare. `Err` says why none could
    /// take it now: no replica attached, or every one at capacity.
    pub fn place(
        &self,
        namespace: &str,
        app: &str,
        placement: Placement,
        prepare: pb::Prepare,
    ) -> Result<Placed, String> {
        let mut g = self.inner.lock().expect("registry lock");
        let Some(a) = g.apps.get_mut(&(namespace.to_string(), app.to_string())) else {
            return Err(format!("no replica of app {namespace}/{app} is attached"));
        };
        let loads: Vec<Load> = a
            .replicas
            .iter()
            .map(|(id, r)| Load {
                id: *id,
                active: r.pending.len() as u32,
                capacity: r.capacity,
            })
            .collect();
        let Some(id) = place(&loads, placement, &mut a.cursor) else {
            return Err(format!(
                "all {} replicas of app {namespace}/{app} are at capacity",
                loads.len()
            ));
        };
        let r = a
            .replicas
            .get_mut(&id)
            .expect("placed on an attached replica");
        let key = (prepare.run_id.clone(), prepare.attempt);
        let msg = pb::ToSidecar {
            msg: Some(pb::to_sidecar::Msg::Prepare(prepare)),
        };
        // A full stream (a stuck replica) does not take the attempt.
        if r.tx.try_send(msg).is_err() {
            return Err(format!(
                "replica {} of app {namespace}/{app} is not keeping up",
                r.pod
            ));
        }
        let (tx, rx) = oneshot::channel();
        r.pending.insert(key, Some(tx));
        Ok(Placed {
            replica: id,
            pod: r.pod.clone(),
            tx: r.tx.clone(),
            result: rx,
        })
    }

    /// A result from replica `id`'s stream.
    pub fn finished(&self, id: u64, result: pb::Result) {
        let mut g = self.inner.lock().expect("registry lock");
        let Some(key) = g.app_of.get(&id).cloned() else {
            return;
        };
        let Some(r) = g.apps.get_mut(&key).and_then(|a| a.replicas.get_mut(&id)) else {
            return;
        };
        if let Some(Some(w)) = r.pending.remove(&(result.run_id.clone(), result.attempt)) {
            let _ = w.send(Ok(AppResult {
                outcome: pb::Outcome::try_from(result.outcome).unwrap_or(pb::Outcome::Failed),
                message: result.message,
                sent_us: result.sent_us,
            }));
        }
    }

    /// Forgets an attempt that will not run or whose result nobody waits
    /// for any more (cancelled, timed out on the leader), freeing its slot.
    pub fn release(&self, id: u64, run_id: &str, attempt: u32) {
        let mut g = self.inner.lock().expect("registry lock");
        let Some(key) = g.app_of.get(&id).cloned() else {
            return;
        };
        if let Some(r) = g.apps.get_mut(&key).and_then(|a| a.replicas.get_mut(&id)) {
            r.pending.remove(&(run_id.to_string(), attempt));
        }
    }
}

impl Placed {
    /// Tells the replica to call its app now.
    pub fn go(&self, run_id: &str, attempt: u32, term: u64) -> bool {
        self.tx
            .try_send(pb::ToSidecar {
                msg: Some(pb::to_sidecar::Msg::Go(pb::Go {
                    run_id: run_id.to_string(),
                    attempt,
                    term,
                })),
            })
            .is_ok()
    }

    /// Asks the replica to drop the attempt.
    pub fn cancel(&self, run_id: &str, attempt: u32) {
        let _ = self.tx.try_send(pb::ToSidecar {
            msg: Some(pb::to_sidecar::Msg::Cancel(pb::Cancel {
                run_id: run_id.to_string(),
                attempt,
            })),
        });
    }

    /// Waits for the replica's result.
    pub async fn result(&mut self) -> Result<AppResult, Unfinished> {
        (&mut self.result).await.unwrap_or_else(|_| {
            Err(Unfinished::Detached {
                pod: self.pod.clone(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(active: &[u32]) -> Vec<Load> {
        active
            .iter()
            .enumerate()
            .map(|(i, a)| Load {
                id: i as u64 + 1,
                active: *a,
                capacity: 2,
            })
            .collect()
    }

    #[test]
    fn least_active_picks_the_replica_with_fewest_attempts_in_flight() {
        let mut cursor = 0;
        assert_eq!(
            place(&loads(&[1, 0, 1]), Placement::LeastActive, &mut cursor),
            Some(2)
        );
    }

    #[test]
    fn least_active_spreads_an_idle_apps_attempts_over_its_replicas() {
        let mut cursor = 0;
        let picks: Vec<_> = (0..4)
            .map(|_| place(&loads(&[0, 0, 0]), Placement::LeastActive, &mut cursor).unwrap())
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 1]);
    }

    #[test]
    fn round_robin_takes_turns_and_skips_a_full_replica() {
        let mut cursor = 0;
        let l = loads(&[0, 2, 0]);
        let picks: Vec<_> = (0..3)
            .map(|_| place(&l, Placement::RoundRobin, &mut cursor).unwrap())
            .collect();
        assert_eq!(picks, vec![1, 3, 1]);
    }

    #[test]
    fn nothing_is_placed_when_every_replica_is_full_or_none_is_attached() {
        let mut cursor = 0;
        assert_eq!(
            place(&loads(&[2, 2]), Placement::LeastActive, &mut cursor),
            None
        );
        assert_eq!(place(&[], Placement::RoundRobin, &mut cursor), None);
    }

    fn prepare(run: &str) -> pb::Prepare {
        pb::Prepare {
            run_id: run.into(),
            attempt: 1,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_replica_that_detaches_ends_its_attempts_and_the_next_goes_elsewhere() {
        let reg = Registry::default();
        let (tx1, _rx1) = mpsc::channel(16);
        let (tx2, _rx2) = mpsc::channel(16);
        let (a, gone_a) = reg.attach("ns", "web", "web-a", 4, tx1);
        let (b, _) = reg.attach("ns", "web", "web-b", 4, tx2);
        let mut first = reg
            .place("ns", "web", Placement::LeastActive, prepare("r1"))
            .unwrap();
        assert_eq!(first.replica, a);
        reg.detach(a);
        assert!(gone_a.is_cancelled(), "its stream is told to end");
        assert_eq!(
            first.result().await,
            Err(Unfinished::Detached {
                pod: "web-a".into()
            })
        );
        let next = reg
            .place("ns", "web", Placement::LeastActive, prepare("r1"))
            .unwrap();
        assert_eq!(next.replica, b);
        reg.detach(b);
        assert!(
            reg.place("ns", "web", Placement::LeastActive, prepare("r2"))
                .is_err()
        );
        assert!(reg.counts().is_empty());
    }

    #[tokio::test]
    async fn a_result_reaches_the_attempt_waiting_for_it() {
        let reg = Registry::default();
        let (tx, _rx) = mpsc::channel(16);
        let (id, _) = reg.attach("ns", "web", "web-a", 1, tx);
        let mut placed = reg
            .place("ns", "web", Placement::RoundRobin, prepare("r1"))
            .unwrap();
        // At capacity (1) until the result comes back.
        assert!(
            reg.place("ns", "web", Placement::RoundRobin, prepare("r2"))
                .is_err()
        );
        reg.finished(
            id,
            pb::Result {
                run_id: "r1".into(),
                attempt: 1,
                outcome: pb::Outcome::Succeeded as i32,
                message: "HTTP 200".into(),
                sent_us: 7,
            },
        );
        let r = placed.result().await.unwrap();
        assert_eq!(r.outcome, pb::Outcome::Succeeded);
        assert!(
            reg.place("ns", "web", Placement::RoundRobin, prepare("r2"))
                .is_ok()
        );
    }
}
