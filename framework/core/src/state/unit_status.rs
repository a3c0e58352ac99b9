//! What `pipe status` shows of a pipeline's work units: counts, what runs where, per-worker
//! throughput, an ETA, the failures.

use serde::Serialize;
use sqlx::Row;

use super::StateStore;
use crate::error::Result;

/// A unit being run, for `pipe status`.
#[derive(Debug, Clone, Serialize)]
pub struct RunningUnit {
    /// `start..end`.
    pub window: String,
    /// The worker's host.
    pub host: String,
    /// The worker's pid.
    pub pid: i64,
    /// Seconds since it was claimed.
    pub seconds: f64,
    /// Seconds until its lease expires unless renewed (negative: expired, claimable).
    pub lease_left: f64,
}

/// One worker's finished units, for `pipe status`.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStats {
    /// Host.
    pub host: String,
    /// Process id.
    pub pid: i64,
    /// Units it committed.
    pub units: i64,
    /// Rows it committed.
    pub rows: i64,
    /// Rows per second over its first claim to its last finish.
    pub rows_per_second: f64,
}

/// The units of a pipeline, for `pipe status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnitsStatus {
    /// All units registered.
    pub total: i64,
    /// Waiting for a worker.
    pub pending: i64,
    /// Claimed (lease live or expired).
    pub running: i64,
    /// Committed.
    pub done: i64,
    /// Failed.
    pub failed: i64,
    /// Rows committed by units.
    pub rows: i64,
    /// What runs now, and where.
    pub running_units: Vec<RunningUnit>,
    /// Per worker.
    pub workers: Vec<WorkerStats>,
    /// Seconds left at the current pace (units left × mean unit time / workers running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// The first lines of the failed units' errors (`start..end: error`), at most 10.
    pub failures: Vec<String>,
}

impl StateStore {
    /// The units of `pipeline`; `None` if it never had any.
    pub async fn units_status(&self, pipeline: &str) -> Result<Option<UnitsStatus>> {
        let err = |e| self.err("reading work units", e);
        let rows = sqlx::query(
            "SELECT status, COUNT(*), CAST(COALESCE(SUM(rows_written), 0) AS BIGINT), \
             CAST(COALESCE(SUM(ended_ms - started_ms), 0) AS BIGINT) FROM pipe_units \
             WHERE pipeline = $1 GROUP BY status",
        )
        .bind(pipeline)
        .fetch_all(self.pool())
        .await
        .map_err(err)?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut s = UnitsStatus::default();
        let mut done_ms = 0i64;
        for row in rows {
            let status: String = row.try_get(0).map_err(err)?;
            let n: i64 = row.try_get(1).map_err(err)?;
            s.total += n;
            match status.as_str() {
                "pending" => s.pending = n,
                "running" => s.running = n,
                "done" => {
                    s.done = n;
                    s.rows = row.try_get(2).map_err(err)?;
                    done_ms = row.try_get(3).map_err(err)?;
                }
                _ => s.failed += n,
            }
        }
        let running = sqlx::query(&format!(
            "SELECT window_start, window_end, host, pid, started_ms, expires_at, {} \
             FROM pipe_units WHERE pipeline = $1 AND status = 'running' ORDER BY seq",
            self.now_sql()
        ))
        .bind(pipeline)
        .fetch_all(self.pool())
        .await
        .map_err(err)?;
        for row in running {
            let start: String = row.try_get(0).map_err(err)?;
            let end: String = row.try_get(1).map_err(err)?;
            let started: i64 = row.try_get(4).map_err(err)?;
            let expires: i64 = row.try_get(5).map_err(err)?;
            let now: i64 = row.try_get(6).map_err(err)?;
            s.running_units.push(RunningUnit {
                window: format!("{start}..{end}"),
                host: row.try_get(2).map_err(err)?,
                pid: row.try_get(3).map_err(err)?,
                seconds: (now - started) as f64 / 1000.0,
                lease_left: (expires - now) as f64 / 1000.0,
            });
        }
        let workers = sqlx::query(
            "SELECT host, pid, COUNT(*), CAST(COALESCE(SUM(rows_written), 0) AS BIGINT), \
             MIN(started_ms), MAX(ended_ms) FROM pipe_units WHERE pipeline = $1 \
             AND status = 'done' AND host IS NOT NULL GROUP BY host, pid ORDER BY host, pid",
        )
        .bind(pipeline)
        .fetch_all(self.pool())
        .await
        .map_err(err)?;
        for row in workers {
            let rows: i64 = row.try_get(3).map_err(err)?;
            let first: Option<i64> = row.try_get(4).map_err(err)?;
            let last: Option<i64> = row.try_get(5).map_err(err)?;
            let secs = last
                .zip(first)
                .map_or(0.0, |(l, f)| (l - f) as f64 / 1000.0);
            s.workers.push(WorkerStats {
                host: row.try_get(0).map_err(err)?,
                pid: row.try_get(1).map_err(err)?,
                units: row.try_get(2).map_err(err)?,
                rows,
                rows_per_second: if secs > 0.0 { rows as f64 / secs } else { 0.0 },
            });
        }
        if s.done > 0 && s.pending + s.running > 0 {
            let mean = done_ms as f64 / 1000.0 / s.done as f64;
            let active = s
                .running_units
                .iter()
                .filter(|u| u.lease_left >= 0.0)
                .count();
            s.eta_seconds = Some(mean * (s.pending + s.running) as f64 / active.max(1) as f64);
        }
        let failed = sqlx::query(
            "SELECT window_start, window_end, error FROM pipe_units WHERE pipeline = $1 \
             AND status = 'failed' ORDER BY seq LIMIT 10",
        )
        .bind(pipeline)
        .fetch_all(self.pool())
        .await
        .map_err(err)?;
        for row in failed {
            let start: String = row.try_get(0).map_err(err)?;
            let end: String = row.try_get(1).map_err(err)?;
            let error: Option<String> = row.try_get(2).map_err(err)?;
            s.failures
                .push(format!("{start}..{end}: {}", error.unwrap_or_default()));
        }
        Ok(Some(s))
    }
}
