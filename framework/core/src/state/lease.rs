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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether process `pid` of this host is alive (Linux `/proc`; elsewhere assumed alive, so
/// only expiry frees the lease).
fn alive(pid: i64) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    // A zombie has a /proc entry but is dead; its state field says so.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

use std::path::Path;

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
        let (me, pid) = (host(), i64::from(std::process::id()));
        let ttl = (secs * 1000) as i64;
        let pool = store.pool().clone();
        let current = sqlx::query(
            "SELECT holder, host, pid, expires_at FROM pipe_leases WHERE pipeline = $1",
        )
        .bind(pipeline)
        .fetch_optional(&pool)
        .await
        .map_err(|e| store.err("reading the lease", e))?;
        let taken = match current {
            None => {
                sqlx::query(
                    "INSERT INTO pipe_leases (pipeline, holder, host, pid, expires_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (pipeline) DO NOTHING",
                )
                .bind(pipeline)
                .bind(&holder)
                .bind(&me)
                .bind(pid)
                .bind(now_ms() + ttl)
                .execute(&pool)
                .await
                .map_err(|e| store.err("taking the lease", e))?
                .rows_affected()
                    == 1
            }
            Some(row) => {
                let err = |e| store.err("reading the lease", e);
                let old: String = row.try_get(0).map_err(err)?;
                let old_host: String = row.try_get(1).map_err(err)?;
                let old_pid: i64 = row.try_get(2).map_err(err)?;
                let expires: i64 = row.try_get(3).map_err(err)?;
                let free = expires < now_ms() || (old_host == me && !alive(old_pid));
                if !free {
                    return Err(Error::user(format!(
                        "pipeline `{pipeline}` is already running (pid {old_pid} on {old_host}; \
                         its lease in {} expires in {} s unless renewed); not starting a second run",
                        store.location(),
                        (expires - now_ms()).max(0) / 1000
                    )));
                }
                sqlx::query(
                    "UPDATE pipe_leases SET holder = $1, host = $2, pid = $3, expires_at = $4 \
                     WHERE pipeline = $5 AND holder = $6",
                )
                .bind(&holder)
                .bind(&me)
                .bind(pid)
                .bind(now_ms() + ttl)
                .bind(pipeline)
                .bind(&old)
                .execute(&pool)
                .await
                .map_err(|e| store.err("taking the lease", e))?
                .rows_affected()
                    == 1
            }
        };
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
            Ok(r) if r.rows_affected() == 1 => {}
            Ok(_) => {
                warn!(%pipeline, "the lease was taken by another runner; stopping this run");
                lost.cancel();
                return;
            }
            Err(e) => warn!(%pipeline, error = %e, "could not renew the lease; retrying"),
        }
    }
}
