//! Change notes from the state machine to its in-process readers (the fire
//! loop and the status writer), coalesced per subscriber so a slow reader
//! sees "these schedules changed" rather than an unbounded event queue.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::sm::{Change, Key};

/// What changed since a subscriber last looked.
#[derive(Default, Debug)]
pub struct Dirty {
    /// Everything may have changed (a snapshot was installed).
    pub all: bool,
    pub uids: HashSet<String>,
    pub deleted: Vec<(String, Key)>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        !self.all && self.uids.is_empty() && self.deleted.is_empty()
    }
}

/// One reader's view of the feed.
#[derive(Default)]
pub struct Subscriber {
    dirty: Mutex<Dirty>,
    notify: Notify,
}

impl Subscriber {
    /// Waits until something changed (returns at once if it already has).
    pub async fn changed(&self) {
        let notified = self.notify.notified();
        if !self.dirty.lock().expect("feed lock").is_empty() {
            return;
        }
        notified.await;
    }

    /// Takes the accumulated changes.
    pub fn take(&self) -> Dirty {
        std::mem::take(&mut *self.dirty.lock().expect("feed lock"))
    }
}

/// The publishing side, owned by the state machine store.
#[derive(Clone, Default)]
pub struct ChangeFeed {
    subscribers: Arc<Mutex<Vec<Weak<Subscriber>>>>,
}

impl ChangeFeed {
    /// A new subscriber; it starts with `all` set so it loads everything once.
    pub fn subscribe(&self) -> Arc<Subscriber> {
        let s = Arc::new(Subscriber::default());
        s.dirty.lock().expect("feed lock").all = true;
        self.subscribers
            .lock()
            .expect("feed lock")
            .push(Arc::downgrade(&s));
        s
    }

    fn each(&self, f: impl Fn(&mut Dirty)) {
        let mut subs = self.subscribers.lock().expect("feed lock");
        subs.retain(|w| match w.upgrade() {
            Some(s) => {
                f(&mut s.dirty.lock().expect("feed lock"));
                s.notify.notify_one();
                true
            }
            None => false,
        });
    }

    pub fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        self.each(|d| {
            for c in &changes {
                match c {
                    Change::Schedule { uid } => {
                        d.uids.insert(uid.clone());
                    }
                    Change::Deleted { uid, key } => {
                        d.uids.remove(uid);
                        d.deleted.push((uid.clone(), key.clone()));
                    }
                }
            }
        });
    }

    pub fn publish_all(&self) {
        self.each(|d| d.all = true);
    }
}
