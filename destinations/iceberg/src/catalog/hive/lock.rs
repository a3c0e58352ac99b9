//! The metastore's table lock for one commit: acquired with bounded waiting, kept alive by
//! heartbeats, released when the commit ends — also when the run is cancelled or fails, by
//! the guard's `Drop`. A writer killed while holding it leaves the lock to the metastore,
//! which frees it once its heartbeats stop for `hive.txn.timeout`.

use std::time::{Duration, Instant};

use hive_metastore::LockState;

use super::client::Metastore;
use crate::error::{IcebergError, Result};

/// How often a held lock is heartbeated (the metastore's default `hive.txn.timeout` is 300 s).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// The longest pause between two checks of a waiting lock.
const MAX_POLL: Duration = Duration::from_secs(2);

/// A held lock; released by [`HeldLock::release`] or, failing that, when dropped.
pub(super) struct HeldLock {
    metastore: Metastore,
    id: i64,
    heartbeat: tokio::task::JoinHandle<()>,
    released: bool,
}

/// Take the exclusive lock on `db.name`, waiting at most `timeout` for another holder.
pub(super) async fn acquire(
    metastore: &Metastore,
    db: &str,
    name: &str,
    timeout: Duration,
) -> Result<HeldLock> {
    let started = Instant::now();
    let agent = format!("pipe {}", uuid::Uuid::now_v7());
    let response = metastore.lock(db, name, &agent).await?;
    let id = response.lockid;
    // From here on the guard owns the lock: any early return unlocks it.
    let mut held = HeldLock {
        metastore: metastore.clone(),
        id,
        heartbeat: tokio::spawn(std::future::pending()),
        released: false,
    };
    let mut state = response.state;
    let mut pause = Duration::from_millis(50);
    if state == LockState::WAITING {
        tracing::warn!(
            table = %format!("{db}.{name}"),
            lock = id,
            timeout_secs = timeout.as_secs(),
            "waiting for the Hive Metastore lock (another writer holds it, or a killed one left it \
             until the metastore's hive.txn.timeout)"
        );
    }
    while state == LockState::WAITING {
        if started.elapsed() >= timeout {
            held.release().await;
            return Err(IcebergError::Metastore {
                what: format!(
                    "locking table {db}.{name} (Hive Metastore {})",
                    metastore.uri
                ),
                message: format!(
                    "still waiting for the lock after {} s (lock_timeout_secs); another writer \
                     holds it, or a killed writer's lock has not yet timed out \
                     (hive.txn.timeout)",
                    timeout.as_secs()
                ),
                reached: true,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
        state = metastore.check_lock(id).await?.state;
    }
    if state != LockState::ACQUIRED {
        held.release().await;
        return Err(IcebergError::Metastore {
            what: format!(
                "locking table {db}.{name} (Hive Metastore {})",
                metastore.uri
            ),
            message: format!("the metastore answered lock state {}", state.inner()),
            reached: true,
        });
    }
    let waited = started.elapsed();
    if waited > Duration::from_secs(1) {
        tracing::warn!(
            table = %format!("{db}.{name}"),
            lock = id,
            waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            "got the Hive Metastore lock"
        );
    }
    let beat = metastore.clone();
    held.heartbeat.abort();
    held.heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = beat.heartbeat(id).await {
                tracing::warn!(lock = id, error = %e, "heartbeat of the Hive Metastore lock failed");
            }
        }
    });
    Ok(held)
}

impl HeldLock {
    /// Fail unless the metastore still holds the lock for us (heartbeats may have failed and
    /// the lock expired): checked right before the table is altered.
    pub(super) async fn ensure_active(&self) -> Result<()> {
        let state = self.metastore.check_lock(self.id).await?.state;
        if state == LockState::ACQUIRED {
            return Ok(());
        }
        Err(IcebergError::Metastore {
            what: format!("committing (Hive Metastore {})", self.metastore.uri),
            message: format!(
                "the table lock {} is no longer held (state {}): it expired",
                self.id,
                state.inner()
            ),
            reached: true,
        })
    }

    /// Release the lock now (a failure is logged: the metastore times the lock out).
    pub(super) async fn release(mut self) {
        self.heartbeat.abort();
        if let Err(e) = self.metastore.unlock(self.id).await {
            tracing::warn!(lock = self.id, error = %e, "releasing the Hive Metastore lock failed");
        }
        // Only now: cancelled during the unlock, the guard's Drop still releases it.
        self.released = true;
    }

    /// Keep the lock without releasing it or heartbeating: after a commit whose outcome is
    /// unknown, a late `alter_table` must not land after another writer's commit, so the lock
    /// stays until the metastore expires it (`hive.txn.timeout`).
    pub(super) fn abandon(mut self) {
        self.heartbeat.abort();
        self.released = true;
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.released {
            return;
        }
        // Cancelled mid-commit: release from a task of its own.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let metastore = self.metastore.clone();
            let id = self.id;
            runtime.spawn(async move {
                let _ = metastore.unlock(id).await;
            });
        }
    }
}
