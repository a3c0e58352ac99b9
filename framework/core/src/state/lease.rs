//! A pipeline's lease: at most one runner at a time, and a dead runner does not lock it out.
//!
//! The lease row names its holder (run id, host, pid) and an expiry. It is taken when free,
//! expired, or held by a process of this host that no longer exists (a `kill -9`ed run);
//! it is renewed every third of its lifetime while the run goes on; it is released at the end.
//! A runner that fails to renew (its lease was taken after expiring) cancels its run.

use std::time::Duration;

use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{StateStore, host};
use crate::error::{Error, Result};

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `/proc/<pid>/stat`'s state and start time (clock ticks since boot), if the process exists.
fn proc_stat(pid: i64) -> Option<(char, i64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// This process's start time, to tell it from a later process that reuses its pid.
pub(super) fn own_start() -> i64 {
    proc_stat(i64::from(std::process::id())).map_or(0, |(_, s)| s)
}

/// Whether process `pid` of this host is alive (Linux `/proc`; elsewhere assumed alive, so
/// only expiry frees the lease). A zombie is dead.
pub(crate) fn alive(pid: i64) -> bool {
    alive_since(pid, 0)
}

/// Like [`alive`], and started at `start` (0: any start): not a later process reusing the pid.
pub(super) fn alive_since(pid: i64, start: i64) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    match proc_stat(pid) {
        Some((state, started)) => state != 'Z' && (start == 0 || started == start),
        None => false,
    }
}

/// A held lease; renewed in the background until released or dropped.
#[derive(Debug)]
pub struct Lease {
    store: StateStore,
    pipeline: String,
    holder: String,
    /// Fires if the lease is lost: the run must stop.
    lost: CancellationToken,
    stop: CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    pub(crate) async fn acquire(store: StateStore, pipeline: &str, secs: u64) -> Result<Self> {
        let holder = uuid::Uuid::now_v7().to_string();
        let (me, pid, started) = (host(), i64::from(std::process::id()), own_start());
        let ttl = (secs * 1000) as i64;
        let pool = store.pool().clone();
        let current = sqlx::query(
            "SELECT holder, host, pid, expires_at, pid_start FROM pipe_leases WHERE pipeline = $1",
        )
        .bind(pipeline)
        .fetch_optional(&pool)
        .await
        .map_err(|e| store.err("reading the lease", e))?;
        let query = match current {
            None => sqlx::query(
                "INSERT INTO pipe_leases (pipeline, holder, host, pid, pid_start, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (pipeline) DO NOTHING",
            )
            .bind(pipeline)
            .bind(&holder)
            .bind(&me)
            .bind(pid)
            .bind(started)
            .bind(now_ms() + ttl),
            Some(row) => {
                let err = |e| store.err("reading the lease", e);
                let old: String = row.try_get(0).map_err(err)?;
                let old_host: String = row.try_get(1).map_err(err)?;
                let old_pid: i64 = row.try_get(2).map_err(err)?;
                let expires: i64 = row.try_get(3).map_err(err)?;
                let old_start: i64 = row.try_get(4).map_err(err)?;
                let dead = old_host == me && !alive_since(old_pid, old_start);
                if expires >= now_ms() && !dead {
                    return Err(Error::user(format!(
                        "pipeline `{pipeline}` is already running (pid {old_pid} on {old_host}; \
                         its lease in {} expires in {} s unless renewed); not starting a second run",
                        store.location(),
                        (expires - now_ms()).max(0) / 1000
                    )));
                }
                // Compare-and-swap on holder *and* expiry: a holder that renewed since we read
                // keeps its lease.
                sqlx::query(
                    "UPDATE pipe_leases SET holder = $1, host = $2, pid = $3, pid_start = $4, \
                     expires_at = $5 WHERE pipeline = $6 AND holder = $7 AND expires_at = $8",
                )
                .bind(holder.clone())
                .bind(me.clone())
                .bind(pid)
                .bind(started)
                .bind(now_ms() + ttl)
                .bind(pipeline.to_string())
                .bind(old)
                .bind(expires)
            }
        };
        let taken = query
            .execute(&pool)
            .await
            .map_err(|e| store.err("taking the lease", e))?
            .rows_affected()
            == 1;
        if !taken {
            return Err(Error::user(format!(
                "pipeline `{pipeline}` was just started by another runner; not starting a second run"
            )));
        }
        let (lost, stop) = (CancellationToken::new(), CancellationToken::new());
        let renewer = tokio::spawn(renew(
            store.clone(),
            pipeline.to_string(),
            holder.clone(),
            ttl,
            lost.clone(),
            stop.clone(),
        ));
        Ok(Self {
            store,
            pipeline: pipeline.to_string(),
            holder,
            lost,
            stop,
            renewer: Some(renewer),
        })
    }

    /// Cancelled if the lease is lost (expired and taken by another runner).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Give the lease up.
    pub async fn release(mut self) -> Result<()> {
        self.stop.cancel();
        if let Some(r) = self.renewer.take() {
            let _ = r.await;
        }
        sqlx::query("DELETE FROM pipe_leases WHERE pipeline = $1 AND holder = $2")
            .bind(&self.pipeline)
            .bind(&self.holder)
            .execute(self.store.pool())
            .await
            .map_err(|e| self.store.err("releasing the lease", e))?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Without `release`, the renewer stops and the lease expires on its own.
        self.stop.cancel();
    }
}

async fn renew(
    store: StateStore,
    pipeline: String,
    holder: String,
    ttl: i64,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let period = Duration::from_millis((ttl / 3).max(100) as u64);
    let mut renewed_at = now_ms();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let renewed = sqlx::query(
            "UPDATE pipe_leases SET expires_at = $1 WHERE pipeline = $2 AND holder = $3",
        )
        .bind(now_ms() + ttl)
        .bind(&pipeline)
        .bind(&holder)
        .execute(store.pool())
        .await;
        match renewed {
            Ok(r) if r.rows_affected() == 1 => renewed_at = now_ms(),
            Ok(_) => {
                warn!(%pipeline, "the lease was taken by another runner; stopping this run");
                lost.cancel();
                return;
            }
            // Cut off from the store: once the lease may have expired, another runner may
            // have it, so this run must stop.
            Err(e) if now_ms() - renewed_at >= ttl => {
                warn!(%pipeline, error = %e, "could not renew the lease before it expired; stopping this run");
                lost.cancel();
                return;
            }
            Err(e) => warn!(%pipeline, error = %e, "could not renew the lease; retrying"),
        }
    }
}
