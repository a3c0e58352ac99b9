//! Work units: a backfill split into windows that any number of `pipe worker` processes, on
//! any hosts, claim from the state store, run as ordinary atomic runs and record.
//!
//! A unit is claimed with one `UPDATE … WHERE unit = (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED)`
//! (PostgreSQL; the embedded SQLite store serializes writers itself), which gives it a lease:
//! the worker renews it while the run goes on. A unit whose lease expired (its worker died or
//! lost the store for longer than the lease) is claimable again, at once if its worker was a
//! process of this host that no longer exists. Running a unit twice is harmless: its window's
//! state key is committed with its data, so the second commit is refused by the destination
//! (`committed::state_to_commit`), and a worker checks the destination before it starts.

use serde::Serialize;
use sqlx::Row;

use super::lease::{alive_since, own_start};
use super::{StateStore, host};
use crate::context::{State, Window};
use crate::error::Result;

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS pipe_units (pipeline TEXT NOT NULL, \
     unit TEXT NOT NULL, job TEXT NOT NULL, seq BIGINT NOT NULL, window_start TEXT NOT NULL, \
     window_end TEXT NOT NULL, status TEXT NOT NULL, worker TEXT, host TEXT, pid BIGINT, \
     pid_start BIGINT, expires_at BIGINT NOT NULL DEFAULT 0, attempts BIGINT NOT NULL DEFAULT 0, \
     run_id TEXT, rows_written BIGINT NOT NULL DEFAULT 0, started_ms BIGINT, ended_ms BIGINT, \
     error TEXT, PRIMARY KEY (pipeline, unit))";

/// Claims of one unit whose workers all died or lost it, after which it is failed rather
/// than claimed again (a unit that kills its worker — out of memory, say — must not cycle
/// through every worker forever).
const MAX_CLAIMS: i64 = 10;

/// A worker process: who holds a unit.
#[derive(Debug, Clone)]
pub struct WorkerId {
    /// Unique per process start.
    pub id: String,
    /// Host name and boot id.
    pub host: String,
    /// Process id.
    pub pid: i64,
    /// The process's start time (to tell it from a later process reusing the pid).
    pid_start: i64,
}

impl WorkerId {
    /// This process.
    pub fn this_process() -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            host: host(),
            pid: i64::from(std::process::id()),
            pid_start: own_start(),
        }
    }
}

/// A claimed unit.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The window's state key (`backfill.<start>..<end>`).
    pub key: String,
    /// The window.
    pub window: Window,
    /// How many times it was claimed, this time included.
    pub attempts: i64,
}

/// How a unit ended.
#[derive(Debug, Clone)]
pub enum UnitOutcome {
    /// Committed (by this run, or found committed).
    Done { run_id: String, rows: u64 },
    /// Failed; a later registration of the same plan makes it pending again.
    Failed {
        run_id: Option<String>,
        error: String,
    },
    /// Given back for another attempt (the worker is stopping, or the run failed in a way
    /// another attempt may not): pending again at once, behind the units not tried yet.
    Released {
        /// Why, if the run failed.
        error: Option<String>,
    },
}

/// What registering a plan did.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    /// Windows in the plan.
    pub windows: usize,
    /// Windows the destination already holds (not registered).
    pub already_committed: usize,
    /// Units added now.
    pub added: usize,
    /// Units registered before (by an earlier registration of the same plan).
    pub existing: usize,
    /// Failed units made pending again.
    pub retried: usize,
}

impl StateStore {
    /// Register `planned` windows as units of `pipeline` (those not in `committed`, the
    /// destination's state). Idempotent: units registered before are kept as they are, except
    /// failed ones, which become pending again. A window overlapping a registered or committed
    /// one without being the same is refused, as for a single-process backfill.
    pub async fn register_units(
        &self,
        pipeline: &str,
        planned: &[Window],
        committed: &State,
    ) -> Result<Registered> {
        let err = |e| self.err("registering work units", e);
        let rows = sqlx::query("SELECT unit FROM pipe_units WHERE pipeline = $1")
            .bind(pipeline)
            .fetch_all(self.pool())
            .await
            .map_err(err)?;
        let registered: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(err)?;
        let not_committed = crate::backfill::pending(planned, committed.keys())?;
        let new = crate::backfill::pending(&not_committed, registered.iter())?;
        let job = uuid::Uuid::now_v7().to_string();
        let mut tx = self.pool().begin().await.map_err(err)?;
        let base: i64 = sqlx::query(
            "SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM pipe_units WHERE pipeline = $1",
        )
        .bind(pipeline)
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(err)?;
        let mut added = 0;
        for (i, w) in new.iter().enumerate() {
            let done = sqlx::query(
                "INSERT INTO pipe_units (pipeline, unit, job, seq, window_start, window_end, \
                 status) VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT DO NOTHING",
            )
            .bind(pipeline)
            .bind(w.state_key())
            .bind(&job)
            .bind(base + 1 + i as i64)
            .bind(&w.start)
            .bind(&w.end)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            added += done.rows_affected() as usize;
        }
        let mut retried = 0;
        for w in &not_committed {
            let done = sqlx::query(
                "UPDATE pipe_units SET status = 'pending', error = NULL, expires_at = 0, \
                 attempts = 0 WHERE pipeline = $1 AND unit = $2 AND status = 'failed'",
            )
            .bind(pipeline)
            .bind(w.state_key())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            retried += done.rows_affected() as usize;
        }
        tx.commit().await.map_err(err)?;
        Ok(Registered {
            windows: planned.len(),
            already_committed: planned.len() - not_committed.len(),
            added,
            existing: not_committed.len() - added,
            retried,
        })
    }

    /// Claim the next claimable unit of `pipeline` for `worker` (pending, or running with an
    /// expired lease or a dead worker of this host), with a lease of the store's `lease_secs`.
    /// `None`: nothing to claim now.
    pub async fn claim_unit(&self, pipeline: &str, worker: &WorkerId) -> Result<Option<Unit>> {
        self.free_dead_local_units(pipeline).await?;
        let now = self.now_sql();
        let err = |e| self.err("claiming a work unit", e);
        // A unit whose workers died or lost it MAX_CLAIMS times is failed, not claimed again.
        sqlx::query(&format!(
            "UPDATE pipe_units SET status = 'failed', ended_ms = {now}, error = 'claimed ' || \
             CAST(attempts AS TEXT) || ' times; each time its worker died or lost its lease' \
             WHERE pipeline = $1 AND status = 'running' AND expires_at < {now} AND attempts >= $2"
        ))
        .bind(pipeline)
        .bind(MAX_CLAIMS)
        .execute(self.pool())
        .await
        .map_err(err)?;
        let lock = if self.postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        // Claimable: pending; running with an expired lease; or held by this very worker (its
        // claim committed but the answer was lost: it runs one unit at a time, so it is not
        // running that one). Units given back after a failure go behind the others.
        let sql = format!(
            "UPDATE pipe_units SET status = 'running', worker = $2, host = $3, pid = $4, \
             pid_start = $5, expires_at = {now} + $6, attempts = attempts + 1, \
             started_ms = {now}, ended_ms = NULL, rows_written = 0, run_id = NULL \
             WHERE pipeline = $1 AND unit = (SELECT unit FROM pipe_units WHERE pipeline = $1 \
             AND (status = 'pending' OR (status = 'running' AND (expires_at < {now} \
             OR worker = $2))) ORDER BY CASE WHEN worker = $2 AND status = 'running' \
             THEN 0 ELSE 1 END, attempts, seq, unit LIMIT 1 {lock}) \
             RETURNING unit, window_start, window_end, attempts"
        );
        let row = sqlx::query(&sql)
            .bind(pipeline)
            .bind(&worker.id)
            .bind(&worker.host)
            .bind(worker.pid)
            .bind(worker.pid_start)
            .bind(self.lease_ms())
            .fetch_optional(self.pool())
            .await
            .map_err(err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let unit = Unit {
            key: row.try_get(0).map_err(err)?,
            window: Window {
                start: row.try_get(1).map_err(err)?,
                end: row.try_get(2).map_err(err)?,
            },
            attempts: row.try_get(3).map_err(err)?,
        };
        // An earlier holder's run of this window, if the ledger still says running, is over.
        // The ledger is for people: failing to say so must not strand the claim.
        let abandoned = sqlx::query(
            "UPDATE pipe_runs SET status = 'abandoned', ended_at = $1 WHERE pipeline = $2 \
             AND window_start = $3 AND window_end = $4 AND status = 'running'",
        )
        .bind(chrono::Utc::now().to_rfc3339())
        .bind(pipeline)
        .bind(&unit.window.start)
        .bind(&unit.window.end)
        .execute(self.pool())
        .await;
        if let Err(e) = abandoned {
            tracing::warn!(pipeline, unit = %unit.key, error = ?e, "marking the unit's earlier run abandoned");
        }
        Ok(Some(unit))
    }

    /// Extend `worker`'s lease on `unit`; `false` if the unit is no longer its (the lease
    /// expired and another worker claimed it): its run must stop.
    pub async fn renew_unit(&self, pipeline: &str, unit: &str, worker: &WorkerId) -> Result<bool> {
        let done = sqlx::query(&format!(
            "UPDATE pipe_units SET expires_at = {} + $1 WHERE pipeline = $2 AND unit = $3 \
                 AND worker = $4 AND status = 'running'",
            self.now_sql()
        ))
        .bind(self.lease_ms())
        .bind(pipeline)
        .bind(unit)
        .bind(&worker.id)
        .execute(self.pool())
        .await
        .map_err(|e| self.err("renewing a work unit's lease", e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Record how `worker`'s run of `unit` ended. A committed unit is done whoever holds it
    /// now; failing or releasing one applies only while `worker` still holds it.
    pub async fn finish_unit(
        &self,
        pipeline: &str,
        unit: &str,
        worker: &WorkerId,
        outcome: &UnitOutcome,
    ) -> Result<()> {
        let now = self.now_sql();
        // Each statement's own parameters first, then $n pipeline, $n+1 unit, $n+2 worker.
        let sql = match outcome {
            UnitOutcome::Done { .. } => format!(
                "UPDATE pipe_units SET status = 'done', ended_ms = {now}, rows_written = $1, \
                 run_id = $2, error = NULL, host = $3, pid = $4, worker = $7 \
                 WHERE pipeline = $5 AND unit = $6 AND status <> 'done'"
            ),
            UnitOutcome::Failed { .. } => format!(
                "UPDATE pipe_units SET status = 'failed', ended_ms = {now}, rows_written = 0, \
                 run_id = $1, error = $2 WHERE pipeline = $3 AND unit = $4 AND worker = $5 \
                 AND status = 'running'"
            ),
            UnitOutcome::Released { .. } => format!(
                "UPDATE pipe_units SET status = 'pending', expires_at = 0, ended_ms = {now}, \
                 error = $1 WHERE pipeline = $2 AND unit = $3 AND worker = $4 \
                 AND status = 'running'"
            ),
        };
        let query = sqlx::query(&sql);
        let query = match outcome {
            UnitOutcome::Done { run_id, rows } => query
                .bind(*rows as i64)
                .bind(run_id.clone())
                .bind(worker.host.clone())
                .bind(worker.pid),
            UnitOutcome::Failed { run_id, error } => query.bind(run_id.clone()).bind(error.clone()),
            UnitOutcome::Released { error } => query.bind(error.clone()),
        };
        query
            .bind(pipeline.to_string())
            .bind(unit.to_string())
            .bind(worker.id.clone())
            .execute(self.pool())
            .await
            .map_err(|e| self.err("recording a work unit", e))?;
        Ok(())
    }

    /// Whether `pipeline` has units not finished (pending or running): a worker waits while
    /// there are (a running unit's worker may die, and its unit come back).
    pub async fn units_left(&self, pipeline: &str) -> Result<i64> {
        sqlx::query(
            "SELECT COUNT(*) FROM pipe_units WHERE pipeline = $1 \
             AND status IN ('pending', 'running')",
        )
        .bind(pipeline)
        .fetch_one(self.pool())
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| self.err("counting work units", e))
    }

    /// Units of this host whose worker process is gone become pending at once (a `kill -9`ed
    /// worker need not wait for its lease to expire).
    async fn free_dead_local_units(&self, pipeline: &str) -> Result<()> {
        let err = |e| self.err("reading work units", e);
        let rows = sqlx::query(
            "SELECT unit, worker, pid, pid_start FROM pipe_units WHERE pipeline = $1 \
             AND status = 'running' AND host = $2",
        )
        .bind(pipeline)
        .bind(host())
        .fetch_all(self.pool())
        .await
        .map_err(err)?;
        for row in rows {
            let unit: String = row.try_get(0).map_err(err)?;
            let worker: String = row.try_get(1).map_err(err)?;
            let pid: i64 = row.try_get(2).map_err(err)?;
            let start: i64 = row.try_get(3).map_err(err)?;
            if alive_since(pid, start) {
                continue;
            }
            sqlx::query(
                "UPDATE pipe_units SET expires_at = 0, \
                 status = CASE WHEN attempts >= $4 THEN 'failed' ELSE 'pending' END, \
                 error = CASE WHEN attempts >= $4 THEN 'claimed ' || CAST(attempts AS TEXT) || \
                 ' times; each time its worker died or lost its lease' ELSE error END \
                 WHERE pipeline = $1 AND unit = $2 AND worker = $3 AND status = 'running'",
            )
            .bind(pipeline)
            .bind(&unit)
            .bind(&worker)
            .bind(MAX_CLAIMS)
            .execute(self.pool())
            .await
            .map_err(err)?;
            tracing::info!(pipeline, %unit, pid, "the worker running this unit is gone; unit pending again");
        }
        Ok(())
    }

    /// The database's clock in milliseconds since 1970, as SQL: leases are compared with one
    /// clock, whatever the workers' hosts think the time is.
    pub(super) fn now_sql(&self) -> &'static str {
        if self.postgres {
            "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
        } else {
            "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
        }
    }

    fn lease_ms(&self) -> i64 {
        (self.lease_secs * 1000) as i64
    }

    /// The lease of a unit, for the worker's renewal period.
    pub fn lease_secs(&self) -> u64 {
        self.lease_secs
    }
}
