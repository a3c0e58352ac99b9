//! The state store: per pipeline, the run ledger, a mirror of the committed state (cursors,
//! backfill windows) and the lease that keeps two runs of one pipeline apart.
//!
//! Embedded default: a SQLite file (`.pipe/state.db`); `[state] url = "postgres://…"` shares
//! it between hosts. Where the destination commits state atomically with its data (DuckDB),
//! the destination is the truth and the store mirrors it for `pipe status`; the store is what
//! keeps the lease and the ledger everywhere.

mod lease;
#[cfg(test)]
mod tests;
mod unit_status;
mod units;
#[cfg(test)]
mod units_tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

use crate::context::State;
use crate::error::{Error, Result};
use crate::secret::Secret;

pub use lease::Lease;
pub use unit_status::{RunningUnit, UnitsStatus, WorkerStats};
pub use units::{Registered, Unit, UnitOutcome, WorkerId};

/// `[state]`: where the state store lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// SQLite file of the embedded store (default `.pipe/state.db`, relative to the working
    /// directory). Ignored when `url` is set.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A PostgreSQL URL to share the store between hosts (`postgres://…`, `${ENV}` for the
    /// password).
    #[serde(default)]
    pub url: Option<Secret>,
    /// Seconds a lease lasts without renewal (default 60): how long a pipeline stays locked
    /// after its runner died on another host (1 to 86400). A dead runner on the same host is
    /// detected at once.
    #[serde(
        default = "default_lease_secs",
        deserialize_with = "crate::config::within::<_, _, 1, MAX_LEASE_SECS>"
    )]
    pub lease_secs: u64,
}

fn default_lease_secs() -> u64 {
    60
}

/// The longest lease: a day. Longer would keep a pipeline locked for that long after its
/// runner died on another host.
pub const MAX_LEASE_SECS: u64 = 86_400;

impl Default for StateConfig {
    /// What a pipeline without a `[state]` section gets: the embedded store and a 60 s lease
    /// (the serde defaults; a derived `Default` would give a lease of 0 s).
    fn default() -> Self {
        Self {
            path: None,
            url: None,
            lease_secs: default_lease_secs(),
        }
    }
}

/// How a run ended, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerStatus {
    /// Started, not finished (or its process died: see `abandoned`).
    Running,
    /// Committed.
    Committed,
    /// Failed; nothing committed.
    Failed,
    /// Interrupted; nothing committed.
    Cancelled,
    /// Its process died while running; nothing committed (the destination is atomic).
    Abandoned,
    /// Its commit failed in a way that leaves the outcome unknown (files kept); marked
    /// committed at the next start if the destination has it.
    Unknown,
}

impl LedgerStatus {
    fn as_str(self) -> &'static str {
        match self {
            LedgerStatus::Running => "running",
            LedgerStatus::Committed => "committed",
            LedgerStatus::Failed => "failed",
            LedgerStatus::Cancelled => "cancelled",
            LedgerStatus::Abandoned => "abandoned",
            LedgerStatus::Unknown => "unknown",
        }
    }
}

/// One ledger row, for `pipe status`.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    /// Run id.
    pub run_id: String,
    /// `run` or `backfill`.
    pub kind: String,
    /// The backfill window, `start..end`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// running / committed / failed / cancelled / abandoned / unknown.
    pub status: String,
    /// Rows the source produced.
    pub rows_read: i64,
    /// Rows committed.
    pub rows_written: i64,
    /// The first line of the error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The state store.
#[derive(Debug, Clone)]
pub struct StateStore {
    pool: AnyPool,
    /// For messages: the file or `user@host/db`.
    location: String,
    lease_secs: u64,
    /// PostgreSQL (else SQLite): the work-unit queue locks rows with `SKIP LOCKED` there.
    postgres: bool,
}

const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS pipe_runs (run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, \
     kind TEXT NOT NULL, window_start TEXT, window_end TEXT, started_at TEXT NOT NULL, \
     ended_at TEXT, status TEXT NOT NULL, rows_read BIGINT NOT NULL DEFAULT 0, \
     rows_written BIGINT NOT NULL DEFAULT 0, error TEXT, host TEXT NOT NULL, pid BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pipe_state (pipeline TEXT NOT NULL, key TEXT NOT NULL, \
     value TEXT NOT NULL, run_id TEXT NOT NULL, updated_at TEXT NOT NULL, \
     PRIMARY KEY (pipeline, key))",
    "CREATE TABLE IF NOT EXISTS pipe_leases (pipeline TEXT PRIMARY KEY, holder TEXT NOT NULL, \
     host TEXT NOT NULL, pid BIGINT NOT NULL, pid_start BIGINT NOT NULL DEFAULT 0, \
     expires_at BIGINT NOT NULL)",
    units::SCHEMA,
];

/// Columns added since the first release: a probe that fails when the column is missing, and
/// the statement that adds it (stores written by an older `pipe` keep working).
const UPGRADES: [(&str, &str); 1] = [(
    "SELECT pid_start FROM pipe_leases WHERE 1 = 0",
    "ALTER TABLE pipe_leases ADD COLUMN pid_start BIGINT NOT NULL DEFAULT 0",
)];

fn store_err(location: &str, what: &str, e: sqlx::Error) -> Error {
    // Lost connections, PostgreSQL shutting down or restarting (SQLSTATE classes 08 and 57P:
    // "connection exception", "operator intervention") and a busy SQLite file (5, 517
    // SQLITE_BUSY_SNAPSHOT) pass: a retry can succeed.
    let retryable = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "5" || c == "517"),
        _ => false,
    };
    let err = Error::external(format!("state store {location}: {what}")).with_source(e);
    if retryable { err.retryable() } else { err }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// This host's name, for leases and the ledger.
/// This host: its name and, on Linux, the boot id (so a reboot frees leases at once).
pub(crate) fn host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(boot) => format!("{name}/{}", &boot.trim()[..8.min(boot.trim().len())]),
        Err(_) => name,
    }
}

impl StateStore {
    /// Open (creating if needed) the store `config` names.
    pub async fn open(config: &StateConfig) -> Result<Self> {
        install_default_drivers();
        let (url, location) = match &config.url {
            Some(url) => {
                let location = url
                    .expose()
                    .rsplit_once('@')
                    .map_or_else(|| "postgres".to_string(), |(_, rest)| rest.to_string());
                (url.expose().to_string(), location)
            }
            None => {
                let path = config
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(".pipe/state.db"));
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Error::from(e)
                            .context(format!("creating {} for the state store", dir.display()))
                    })?;
                }
                (
                    format!("sqlite://{}?mode=rwc", path.display()),
                    path.display().to_string(),
                )
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(|e| store_err(&location, "connecting", e))?;
        for ddl in SCHEMA {
            // Two runners creating the tables at once can collide on PostgreSQL's catalog;
            // the loser's retry finds them.
            let mut attempt = 0;
            loop {
                match sqlx::query(ddl).execute(&pool).await {
                    Ok(_) => break,
                    Err(_) if attempt < 3 => {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                    }
                    Err(e) => return Err(store_err(&location, "creating its tables", e)),
                }
            }
        }
        for (probe, ddl) in UPGRADES {
            if sqlx::query(probe).execute(&pool).await.is_err()
                && let Err(e) = sqlx::query(ddl).execute(&pool).await
            {
                // A concurrent runner may have added the column first.
                if sqlx::query(probe).execute(&pool).await.is_err() {
                    return Err(store_err(&location, "upgrading its tables", e));
                }
            }
        }
        Ok(Self {
            pool,
            location,
            lease_secs: config.lease_secs.clamp(1, MAX_LEASE_SECS),
            postgres: config.url.is_some(),
        })
    }

    /// Check the store `config` names can be used, creating nothing (`pipe validate`): a
    /// PostgreSQL store answers; an embedded one is a readable SQLite file, or can be created
    /// in an existing writable directory.
    pub async fn check(config: &StateConfig) -> Result<()> {
        install_default_drivers();
        let (url, location) = match &config.url {
            Some(url) => (url.expose().to_string(), "the state store".to_string()),
            None => {
                let path = config
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(".pipe/state.db"));
                if !path.exists() {
                    return crate::probe::creatable(&path, "the state store");
                }
                (
                    format!("sqlite://{}?mode=ro", path.display()),
                    path.display().to_string(),
                )
            }
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(|e| store_err(&location, "connecting", e))?;
        let probe = sqlx::query("SELECT 1").execute(&pool).await;
        pool.close().await;
        probe.map_err(|e| store_err(&location, "querying", e))?;
        Ok(())
    }

    /// Open the embedded store at `path` (tests, tools).
    pub async fn open_path(path: &Path) -> Result<Self> {
        Self::open(&StateConfig {
            path: Some(path.to_path_buf()),
            ..StateConfig::default()
        })
        .await
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Take the pipeline's lease (see [`Lease`]); an error naming the holder if another live
    /// run has it.
    pub async fn lease(&self, pipeline: &str) -> Result<Lease> {
        Lease::acquire(self.clone(), pipeline, self.lease_secs).await
    }

    /// Record a run as started.
    pub async fn start_run(
        &self,
        pipeline: &str,
        run_id: &str,
        kind: &str,
        window: Option<(&str, &str)>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO pipe_runs (run_id, pipeline, kind, window_start, window_end, started_at, \
             status, host, pid) VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8)",
        )
        .bind(run_id)
        .bind(pipeline)
        .bind(kind)
        .bind(window.map(|w| w.0.to_string()))
        .bind(window.map(|w| w.1.to_string()))
        .bind(now())
        .bind(host())
        .bind(i64::from(std::process::id()))
        .execute(&self.pool)
        .await
        .map_err(|e| store_err(&self.location, "recording the run", e))?;
        Ok(())
    }

    /// Runs of `pipeline` still marked `running` whose process is gone become `abandoned`
    /// (the caller holds the lease, so a run of another host cannot be running — except a
    /// worker's run of a work unit, which its unit's lease settles; one of this host is alive
    /// if its process is — a parallel backfill's sibling windows are).
    pub async fn abandon_dead_runs(&self, pipeline: &str) -> Result<()> {
        let rows = sqlx::query(
            "SELECT run_id, host, pid FROM pipe_runs WHERE pipeline = $1 AND status = 'running' \
             AND NOT EXISTS (SELECT 1 FROM pipe_units u WHERE u.pipeline = pipe_runs.pipeline \
             AND u.window_start = pipe_runs.window_start AND u.window_end = pipe_runs.window_end \
             AND u.status = 'running')",
        )
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| store_err(&self.location, "reconciling the ledger", e))?;
        let (me, my_pid) = (host(), i64::from(std::process::id()));
        for row in rows {
            let err = |e| store_err(&self.location, "reconciling the ledger", e);
            let run_id: String = row.try_get(0).map_err(err)?;
            let run_host: String = row.try_get(1).map_err(err)?;
            let pid: i64 = row.try_get(2).map_err(err)?;
            if run_host == me && (pid == my_pid || lease::alive(pid)) {
                continue;
            }
            sqlx::query("UPDATE pipe_runs SET status = 'abandoned', ended_at = $1 WHERE run_id = $2 AND status = 'running'")
                .bind(now())
                .bind(&run_id)
                .execute(&self.pool)
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// Record how a run ended.
    pub async fn finish_run(
        &self,
        run_id: &str,
        status: LedgerStatus,
        rows_read: u64,
        rows_written: u64,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE pipe_runs SET status = $1, ended_at = $2, rows_read = $3, rows_written = $4, \
             error = $5 WHERE run_id = $6",
        )
        .bind(status.as_str())
        .bind(now())
        .bind(rows_read as i64)
        .bind(rows_written as i64)
        .bind(error.map(str::to_string))
        .bind(run_id)
        .execute(&self.pool)
        .await
        .map_err(|e| store_err(&self.location, "recording the run's end", e))?;
        Ok(())
    }

    /// Mark a run committed (reconciliation: the destination has its data).
    pub async fn mark_committed(&self, run_id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE pipe_runs SET status = 'committed', error = NULL WHERE run_id = $1 \
             AND status IN ('running', 'abandoned', 'unknown')",
        )
        .bind(run_id)
        .execute(&self.pool)
        .await
        .map_err(|e| store_err(&self.location, "reconciling the ledger", e))?;
        Ok(())
    }

    /// The state the store holds for `pipeline`.
    pub async fn state(&self, pipeline: &str) -> Result<State> {
        let rows = sqlx::query("SELECT key, value FROM pipe_state WHERE pipeline = $1")
            .bind(pipeline)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| store_err(&self.location, "reading the state", e))?;
        rows.iter()
            .map(|r| {
                let k: String = r
                    .try_get(0)
                    .map_err(|e| store_err(&self.location, "reading", e))?;
                let v: String = r
                    .try_get(1)
                    .map_err(|e| store_err(&self.location, "reading", e))?;
                Ok((k, v))
            })
            .collect()
    }

    /// Record committed state changes (a mirror of the destination's, or the only copy).
    pub async fn put_state(&self, pipeline: &str, run_id: &str, changes: &State) -> Result<()> {
        for (key, value) in changes {
            sqlx::query(
                "INSERT INTO pipe_state (pipeline, key, value, run_id, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (pipeline, key) DO UPDATE SET \
                 value = excluded.value, run_id = excluded.run_id, updated_at = excluded.updated_at",
            )
            .bind(pipeline)
            .bind(key)
            .bind(value)
            .bind(run_id)
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(|e| store_err(&self.location, "saving the state", e))?;
        }
        Ok(())
    }

    /// The last `limit` runs of `pipeline`, newest first.
    pub async fn runs(&self, pipeline: &str, limit: i64) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT run_id, kind, window_start, window_end, started_at, ended_at, status, \
             rows_read, rows_written, error FROM pipe_runs WHERE pipeline = $1 \
             ORDER BY started_at DESC, run_id DESC LIMIT $2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| store_err(&self.location, "reading the ledger", e))?;
        rows.iter()
            .map(|r| {
                let err = |e| store_err(&self.location, "reading the ledger", e);
                let start: Option<String> = r.try_get(2).map_err(err)?;
                let end: Option<String> = r.try_get(3).map_err(err)?;
                Ok(LedgerEntry {
                    run_id: r.try_get(0).map_err(err)?,
                    kind: r.try_get(1).map_err(err)?,
                    window: start.zip(end).map(|(s, e)| format!("{s}..{e}")),
                    started_at: r.try_get(4).map_err(err)?,
                    ended_at: r.try_get(5).map_err(err)?,
                    status: r.try_get(6).map_err(err)?,
                    rows_read: r.try_get(7).map_err(err)?,
                    rows_written: r.try_get(8).map_err(err)?,
                    error: r.try_get(9).map_err(err)?,
                })
            })
            .collect()
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn err(&self, what: &str, e: sqlx::Error) -> Error {
        store_err(&self.location, what, e)
    }
}
