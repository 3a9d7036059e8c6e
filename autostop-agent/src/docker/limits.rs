//! What a hibernation changes on a container's memory cgroup, and who
//! puts it back. The reclaim records the original limits in a
//! [`LimitJournal`] (the state file's owner: on disk, fsync'd, before the
//! first change) and clears the record once they are back; whoever comes
//! next undoes a record left behind ([`crate::cgroup::undo`]): the next
//! agent at its start ([`undo_at_start`]), a thaw or a stop before it
//! unpauses ([`undo_recorded`]). A reclaim still running when a thaw, a
//! stop or a new hibernation of its service comes is cancelled, and they
//! wait for its thread to have put the limits back and ended
//! ([`Reclaims::settle`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cgroup::{self, CgroupError, SavedLimits, Undo};
use crate::state::StateStore;

/// How long an undo waits for another process (another agent) holding the
/// cgroup's lock.
pub const UNDO_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Where the original limits are kept while a hibernation changes them,
/// by container id.
pub trait LimitJournal: std::fmt::Debug + Send + Sync {
    /// `container`'s record, if one is kept.
    fn recorded(&self, container: &str) -> Option<SavedLimits>;
    /// Records `saved` for `container` and returns once it is on disk (or
    /// why not). Blocking: called from the reclaim's blocking thread.
    fn record(&self, container: &str, saved: &SavedLimits) -> Result<(), String>;
    /// Forgets `container`'s record if it is `saved` (`None`: any).
    fn clear(&self, container: &str, saved: Option<&SavedLimits>);
}

/// One container's part of a [`LimitJournal`], as the cgroup module asks.
pub(super) struct ContainerJournal<'a> {
    pub journal: &'a dyn LimitJournal,
    pub container: &'a str,
}

impl cgroup::Journal for ContainerJournal<'_> {
    fn pending(&self) -> Option<SavedLimits> {
        self.journal.recorded(self.container)
    }

    fn record(&self, saved: &SavedLimits) -> Result<(), String> {
        self.journal.record(self.container, saved)
    }

    fn restored(&self, saved: &SavedLimits) {
        self.journal.clear(self.container, Some(saved));
    }
}

/// Undoes one record; `Ok(true)` when it may be forgotten (its limits are
/// back, or there is nothing left to undo), `Err` when it must stay.
fn undo_one(container: &str, saved: &SavedLimits) -> Result<bool, CgroupError> {
    match cgroup::undo(saved, UNDO_LOCK_WAIT) {
        Ok(Undo::Restored { limit, swappiness }) => {
            if limit || swappiness {
                info!(container, dir = %saved.dir.display(), limit_in_bytes = saved.limit_in_bytes,
                    swappiness = saved.swappiness, event = "memory_limits_restored");
            }
            Ok(true)
        }
        Ok(outcome @ (Undo::Gone | Undo::Replaced)) => {
            info!(container, dir = %saved.dir.display(), ?outcome,
                "a recorded memory limit's cgroup is no longer the container's: nothing to restore");
            Ok(true)
        }
        Err(e @ CgroupError::NotACgroup(_)) => {
            warn!(container, error = %e, "a memory limit record that names no cgroup is dropped");
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Undoes the records of `containers` (name, id) before they are
/// unpaused. Blocking. `Err` names the first one whose limits could not be
/// put back (its record stays; those before it are done).
pub(super) fn undo_recorded(
    journal: &dyn LimitJournal,
    containers: &[(String, String)],
) -> Result<(), String> {
    for (name, id) in containers {
        let Some(saved) = journal.recorded(id) else {
            continue;
        };
        match undo_one(id, &saved) {
            Ok(_) => journal.clear(id, Some(&saved)),
            Err(e) => return Err(format!("container {name}: memory limits not restored: {e}")),
        }
    }
    Ok(())
}

/// At the agent's start, before any service is looked at: undoes every
/// record the state file holds (an agent killed mid-reclaim, or one whose
/// last undo failed), forgets those done and saves. Those that fail stay
/// for the thaw or stop that comes before any unpause. Blocking. Returns
/// how many records are left.
pub fn undo_at_start(store: &mut StateStore) -> usize {
    let records: Vec<(String, SavedLimits)> = store
        .limits()
        .iter()
        .map(|(c, s)| (c.clone(), s.clone()))
        .collect();
    if records.is_empty() {
        return 0;
    }
    let mut changed = false;
    for (container, saved) in &records {
        match undo_one(container, saved) {
            Ok(_) => changed |= store.clear_limits(container, Some(saved)),
            Err(e) => warn!(container, error = %e,
                "memory limits recorded by an earlier agent not restored yet; retried before the container is unpaused"),
        }
    }
    if changed {
        if let Err(e) = store.save() {
            // The records that were undone stay in the file: undoing them
            // again finds nothing to change.
            warn!(error = %e, "cannot save the state after restoring memory limits");
        }
    }
    store.limits().len()
}

/// The reclaims under way, by service.
#[derive(Debug, Default)]
pub(super) struct Reclaims(Mutex<HashMap<String, InFlight>>);

#[derive(Debug, Clone)]
struct InFlight {
    cancel: Arc<AtomicBool>,
    done: watch::Receiver<bool>,
}

/// Dropped by the reclaim's thread when it ends (also by a panic's
/// unwinding): the waiters of [`Reclaims::settle`] go on.
#[derive(Debug)]
pub(super) struct Finished(watch::Sender<bool>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl Reclaims {
    /// Registers a reclaim of `service` about to start: the flag that
    /// cancels it and what its thread drops at its end.
    pub(super) fn begin(&self, service: &str) -> (Arc<AtomicBool>, Finished) {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, done) = watch::channel(false);
        self.0.lock().insert(
            service.to_owned(),
            InFlight {
                cancel: Arc::clone(&cancel),
                done,
            },
        );
        (cancel, Finished(tx))
    }

    /// Cancels `service`'s reclaim if one is under way and waits until its
    /// thread has put the limits back and ended.
    pub(super) async fn settle(&self, service: &str) {
        let Some(inflight) = self.0.lock().get(service).cloned() else {
            return;
        };
        inflight.cancel.store(true, Ordering::Release);
        let mut done = inflight.done.clone();
        // An error means the sender is gone: the thread ended too.
        let _ = done.wait_for(|d| *d).await;
        let mut map = self.0.lock();
        if map
            .get(service)
            .is_some_and(|i| i.done.same_channel(&inflight.done))
        {
            map.remove(service);
        }
    }

    /// Cancels every reclaim under way and waits, up to `wait`, for their
    /// threads (at shutdown: what is left is undone by the next agent).
    pub(super) async fn settle_all(&self, wait: Duration) {
        let services: Vec<String> = {
            let map = self.0.lock();
            for inflight in map.values() {
                inflight.cancel.store(true, Ordering::Release);
            }
            map.keys().cloned().collect()
        };
        let all = async {
            for service in &services {
                self.settle(service).await;
            }
        };
        if tokio::time::timeout(wait, all).await.is_err() {
            warn!("a memory reclaim still runs at shutdown: the next agent restores its limits");
        }
    }

    /// Forgets the services no longer configured whose reclaims ended.
    pub(super) fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.0
            .lock()
            .retain(|name, inflight| keep(name) || !*inflight.done.borrow());
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;

    use parking_lot::Mutex;

    use super::*;

    /// Records in memory.
    #[derive(Debug, Default)]
    struct Records(Mutex<std::collections::BTreeMap<String, SavedLimits>>);

    impl LimitJournal for Records {
        fn recorded(&self, container: &str) -> Option<SavedLimits> {
            self.0.lock().get(container).cloned()
        }

        fn record(&self, container: &str, saved: &SavedLimits) -> Result<(), String> {
            self.0.lock().insert(container.to_owned(), saved.clone());
            Ok(())
        }

        fn clear(&self, container: &str, saved: Option<&SavedLimits>) {
            let mut map = self.0.lock();
            if map
                .get(container)
                .is_some_and(|kept| saved.is_none_or(|s| s == kept))
            {
                map.remove(container);
            }
        }
    }

    fn record_at(dir: &str) -> SavedLimits {
        SavedLimits {
            dir: PathBuf::from(dir),
            instance: 7,
            limit_in_bytes: 1 << 30,
            swappiness: 60,
        }
    }

    /// A cgroup directory that does not exist (a container gone since).
    const GONE: &str = "/sys/fs/cgroup/memory/autostop-test-no-such-container";

    #[test]
    fn records_of_gone_or_foreign_cgroups_are_dropped_before_an_unpause() {
        let records = Records::default();
        records.record("gone", &record_at(GONE)).expect("record");
        records
            .record("foreign", &record_at("/etc"))
            .expect("record");
        let containers = [
            ("a".to_owned(), "gone".to_owned()),
            ("b".to_owned(), "foreign".to_owned()),
            ("c".to_owned(), "never-recorded".to_owned()),
        ];
        undo_recorded(&records, &containers).expect("nothing to restore");
        assert!(records.0.lock().is_empty(), "{:?}", records.0.lock());
    }

    #[test]
    fn the_start_undoes_and_forgets_what_an_earlier_agent_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = StateStore::open(dir.path()).expect("open");
        store.record_limits("gone", record_at(GONE));
        store.record_limits("foreign", record_at("/sys/fs/cgroup/memory/../../etc"));
        store.save().expect("save");
        assert_eq!(undo_at_start(&mut store), 0);
        let (again, _) = StateStore::open(dir.path()).expect("reopen");
        assert!(again.limits().is_empty(), "saved without them");
    }

    #[tokio::test]
    async fn settle_cancels_the_reclaim_and_waits_until_its_limits_are_back() {
        let reclaims = Reclaims::default();
        // Nothing under way: at once.
        reclaims.settle("web").await;
        let (cancel, finished) = reclaims.begin("web");
        let restored = Arc::new(AtomicBool::new(false));
        let thread_restored = Arc::clone(&restored);
        let thread = std::thread::spawn(move || {
            while !cancel.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            // The last step's write, then the limits back.
            std::thread::sleep(Duration::from_millis(50));
            thread_restored.store(true, Ordering::Release);
            drop(finished);
        });
        reclaims.settle("web").await;
        assert!(
            restored.load(Ordering::Acquire),
            "settle returned before the limits were back"
        );
        assert!(reclaims.0.lock().is_empty(), "forgotten once settled");
        thread.join().expect("thread");
    }

    #[tokio::test]
    async fn a_reclaim_thread_that_panics_still_releases_its_waiters() {
        let reclaims = Reclaims::default();
        let (_, finished) = reclaims.begin("web");
        let thread = std::thread::spawn(move || {
            let _finished = finished;
            panic!("reclaim thread died");
        });
        reclaims.settle("web").await;
        assert!(thread.join().is_err());
    }
}
