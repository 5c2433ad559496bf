//! Leader election on the operator's Lease: one active replica.
//!
//! ```text
//!  kube-lease-manager changed() ── "holds it" ───────────┐
//!  watch on the one Lease ──────── holder, renewTime ────┼─► Tracker (pure) ──► leading: watch<bool>
//!  timer: expiry - grace/2 ──────────────────────────────┘        │
//!            fresh manager (Lease released, view stale) ◄─────────┘
//!  release(): stop electing, give the Lease up (after the controllers stopped)
//! ```
//!
//! kube-lease-manager acquires, renews and releases the Lease. On its own it
//! hands over slowly: a standby sleeps until the holder's Lease would expire
//! before it looks again, even when the holder released it long before
//! (after each `helm upgrade` no operator led for ~47 s). So the elector also
//! watches the Lease, and when it sees it released it replaces the standby's
//! manager with a fresh one, whose first look finds the Lease free.
//!
//! A replica leads only while its manager says it holds the Lease *and* the
//! newest Lease the API server has shown it names this replica and stays
//! valid for more than half the grace period. The manager renews a grace
//! period before expiry; when that renewal does not show up in time (a hung
//! request: the client has no read timeout; a broken watch) the replica stops
//! leading before another one can take over, and stops renewing until the
//! watch works again, so a replica that cannot see the Lease does not keep it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Longest Lease duration accepted (the Lease stores seconds as int32).
const MAX_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--lease-{flag}: {message}")]
    Settings { flag: &'static str, message: String },
}

/// Validated election settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub namespace: String,
    pub lease: String,
    /// This replica's name in the Lease (`holderIdentity`), unique per replica.
    pub identity: String,
    /// How long a Lease stays valid after its last renewal: the longest a
    /// leader that died without releasing it keeps the others waiting.
    pub duration: Duration,
    /// The leader renews this long before expiry.
    pub grace: Duration,
}

impl Settings {
    pub fn new(
        namespace: String,
        lease: String,
        identity: String,
        duration: Duration,
        grace: Duration,
    ) -> Result<Self, Error> {
        let bad = |flag, message: String| Error::Settings { flag, message };
        for (flag, d) in [("duration", duration), ("grace", grace)] {
            if d.subsec_nanos() != 0 || d.is_zero() {
                return Err(bad(
                    flag,
                    format!(
                        "{} must be a whole number of seconds, at least 1s (a Lease counts seconds)",
                        humantime::format_duration(d)
                    ),
                ));
            }
        }
        if grace >= duration {
            return Err(bad(
                "grace",
                format!(
                    "{} must be shorter than --lease-duration {}",
                    humantime::format_duration(grace),
                    humantime::format_duration(duration)
                ),
            ));
        }
        if duration > MAX_DURATION {
            return Err(bad(
                "duration",
                format!("{} is longer than 1h", humantime::format_duration(duration)),
            ));
        }
        if identity.is_empty() {
            return Err(bad("identity", "must not be empty".into()));
        }
        Ok(Self {
            namespace,
            lease,
            identity,
            duration,
            grace,
        })
    }

    /// How long before the observed expiry a leader stops leading.
    pub fn margin(&self) -> Duration {
        self.grace / 2
    }

    fn params(&self) -> LeaseParams {
        // The field manager names the identity: acquiring is a server-side
        // apply of holderIdentity, and only a *different* field manager gets
        // the conflict that keeps two replicas from both taking a free Lease.
        LeaseParams::new(
            self.identity.clone(),
            self.duration.as_secs(),
            self.grace.as_secs(),
        )
    }
}

/// What one watch event showed of the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub holder: Option<String>,
    /// `renewTime + leaseDurationSeconds`; None when either is missing.
    pub expires: Option<SystemTime>,
}

impl Observed {
    /// A deleted Lease (None) is a free one.
    pub fn from_lease(lease: Option<&Lease>) -> Self {
        let spec = lease.and_then(|l| l.spec.as_ref());
        let holder = spec.and_then(|s| s.holder_identity.clone());
        let expires = spec.and_then(|s| {
            let renew: SystemTime = s.renew_time.as_ref()?.0.into();
            let secs = u64::try_from(s.lease_duration_seconds?).ok()?;
            renew.checked_add(Duration::from_secs(secs))
        });
        Self { holder, expires }
    }
}

/// The election's decisions, without IO or a clock (time is an argument).
#[derive(Debug, Clone)]
pub struct Tracker {
    identity: String,
    margin: Duration,
    /// Since when the manager says it holds the Lease.
    holder_since: Option<SystemTime>,
    /// The newest Lease the watch delivered.
    observed: Option<Observed>,
}

impl Tracker {
    pub fn new(identity: impl Into<String>, margin: Duration) -> Self {
        Self {
            identity: identity.into(),
            margin,
            holder_since: None,
            observed: None,
        }
    }

    /// The manager's answer (it answers on a change; a fresh one starts at false).
    pub fn set_holder(&mut self, holder: bool, now: SystemTime) {
        self.holder_since = holder.then(|| self.holder_since.unwrap_or(now));
    }

    /// A watch event. True when the manager's view is stale and a fresh
    /// manager must look again now: the Lease is free (released or
    /// deleted), or someone else holds it while the manager thinks it does.
    pub fn observe(&mut self, observed: Observed) -> bool {
        let restart = match &observed.holder {
            None => true,
            Some(h) => *h != self.identity && self.holder_since.is_some(),
        };
        self.observed = Some(observed);
        restart
    }

    /// Until when this replica may lead, if the Lease it saw last names it.
    pub fn valid_until(&self) -> Option<SystemTime> {
        self.holder_since?;
        let o = self.observed.as_ref()?;
        if o.holder.as_deref() != Some(self.identity.as_str()) {
            return None;
        }
        o.expires?.checked_sub(self.margin)
    }

    pub fn leading(&self, now: SystemTime) -> bool {
        self.valid_until().is_some_and(|until| now < until)
    }

    /// The manager holds the Lease, but the watch has not shown it valid:
    /// not within `margin` of the manager taking it, or no renewal before
    /// `expiry - margin`. The request may hang, or the watch be broken.
    pub fn unconfirmed(&self, now: SystemTime) -> bool {
        self.next_check(now).is_some_and(|t| now >= t)
    }

    /// When `leading` or `unconfirmed` changes next by the clock alone.
    pub fn next_check(&self, now: SystemTime) -> Option<SystemTime> {
        let since = self.holder_since?;
        match self.valid_until() {
            Some(until) if now < until => Some(until),
            _ => Some(since + self.margin),
        }
    }
}

/// The running election: a task that publishes whether this replica leads.
pub struct Elector {
    leading: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Elector {
    pub fn start(client: kube::Client, settings: Settings) -> Self {
        let (tx, leading) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(elect(client, settings, tx, stopped));
        Self {
            leading,
            stop,
            task,
        }
    }

    /// True while this replica leads. Ends (`changed()` errs) only if the
    /// election task panicked.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops electing and releases the Lease if this replica holds it, so a
    /// standby takes over at once. Call it after the work that needs
    /// leadership has stopped.
    pub async fn release(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "leader election task failed");
        }
    }
}

type Changed = Pin<Box<dyn Future<Output = kube_lease_manager::Result<bool>> + Send>>;

fn next_change(manager: &Arc<LeaseManager>) -> Changed {
    let m = manager.clone();
    Box::pin(async move { m.changed().await })
}

async fn manager(client: &kube::Client, s: &Settings) -> kube_lease_manager::Result<LeaseManager> {
    // AutoCreate reads first and creates only a missing Lease (the chart
    // creates it; a plain `raftcron-operator` with more rights need not).
    LeaseManager::new(
        client.clone(),
        &s.lease,
        &s.namespace,
        s.params(),
        LeaseCreateMode::AutoCreate,
    )
    .await
}

fn publish(tx: &watch::Sender<bool>, leading: bool) {
    tx.send_if_modified(|v| {
        if *v == leading {
            return false;
        }
        *v = leading;
        if leading {
            tracing::info!("leading: this replica holds the Lease");
        } else {
            tracing::info!("not leading");
        }
        true
    });
}

fn until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(30))
}

async fn elect(
    client: kube::Client,
    s: Settings,
    tx: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &s.namespace);
    let mut events = watcher::watch_object(api, &s.lease)
        .default_backoff()
        .boxed();
    let mut tracker = Tracker::new(s.identity.clone(), s.margin());
    tracing::info!(identity = %s.identity, lease = %s.lease, "waiting for leadership");
    let mut failures = 0u32;
    // Before a fresh manager looks, wait for a watch event: the first one
    // (so that a Lease released just before start counts), and after an
    // unconfirmed renewal, the next one or `grace`, whichever comes first.
    let mut wait: Option<Option<Duration>> = Some(None);
    'fresh: loop {
        tracker.set_holder(false, SystemTime::now());
        publish(&tx, false);
        if let Some(limit) = wait.take() {
            let timeout = tokio::time::sleep(limit.unwrap_or(Duration::MAX));
            tokio::pin!(timeout);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stop => break 'fresh,
                    ev = events.next() => match ev {
                        Some(Ok(lease)) => {
                            tracker.observe(Observed::from_lease(lease.as_ref()));
                            break;
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, lease = %s.lease, "cannot watch the Lease; not leading until it can"),
                        None => break 'fresh,
                    },
                    _ = &mut timeout, if limit.is_some() => break,
                }
            }
        }
        let m = tokio::select! {
            biased;
            _ = &mut stop => break 'fresh,
            m = manager(&client, &s) => m,
        };
        let m = match m {
            Ok(m) => Arc::new(m),
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, lease = %s.lease, "leader election: cannot read the Lease");
                tokio::select! {
                    biased;
                    _ = &mut stop => break 'fresh,
                    _ = tokio::time::sleep(backoff(failures)) => continue 'fresh,
                }
            }
        };
        let mut changed = next_change(&m);
        loop {
            let now = SystemTime::now();
            publish(&tx, tracker.leading(now));
            if tracker.unconfirmed(now) {
                tracing::warn!(
                    lease = %s.lease,
                    "this replica holds the Lease but the watch has not shown it valid in time; not leading, not renewing for a while"
                );
                wait = Some(Some(s.grace));
                continue 'fresh;
            }
            let wake = tracker.next_check(now).map(until);
            tokio::select! {
                biased;
                _ = &mut stop => break 'fresh,
                r = &mut changed => match r {
                    Ok(holder) => {
                        failures = 0;
                        tracker.set_holder(holder, SystemTime::now());
                        changed = next_change(&m);
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, lease = %s.lease, "leader election failed; looking again");
                        tracker.set_holder(false, SystemTime::now());
                        publish(&tx, false);
                        tokio::select! {
                            biased;
                            _ = &mut stop => break 'fresh,
                            _ = tokio::time::sleep(backoff(failures)) => continue 'fresh,
                        }
                    }
                },
                ev = events.next() => match ev {
                    Some(Ok(lease)) => {
                        let observed = Observed::from_lease(lease.as_ref());
                        if tracker.observe(observed.clone()) {
                            tracing::debug!(holder = ?observed.holder, "Lease free, or the manager's view stale: looking again now");
                            continue 'fresh;
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, lease = %s.lease, "cannot watch the Lease"),
                    None => break 'fresh,
                },
                _ = tokio::time::sleep(wake.unwrap_or_default()), if wake.is_some() => {}
            }
        }
    }
    publish(&tx, false);
    // Whatever an interrupted manager was doing, a fresh one reads the Lease
    // first and clears it only if this replica holds it (or it expired).
    let release = async {
        let m = manager(&client, &s).await?;
        m.release().await
    };
    match tokio::time::timeout(s.grace, release).await {
        Ok(Ok(())) => tracing::info!(lease = %s.lease, "Lease released"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, lease = %s.lease, "cannot release the Lease; the next leader waits for it to expire")
        }
        Err(_) => {
            tracing::warn!(lease = %s.lease, "releasing the Lease timed out; the next leader waits for it to expire")
        }
    }
}

#[cfg(test)]
mod tests;
