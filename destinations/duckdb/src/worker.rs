//! The thread that owns the DuckDB connection for one run.
//!
//! `duckdb::Connection` is not `Sync` and every call blocks, so a run gets a dedicated thread:
//! it opens the database, starts the transaction, runs the metadata stage's DDL, appends the
//! batches it receives, and finally commits or rolls back. Everything a run does is one DuckDB
//! transaction; if the thread's channel closes without a commit, it rolls back.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::SchemaRef;
use duckdb::{AccessMode, Config, Connection};
use pipe_framework::{CommitReport, CommitRequest, Error, PrepareRequest, WriteMode};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::commit::{self, STAGE_TABLE};
use crate::error::{DuckError, Result, sql_err};
use crate::table::{self, TableName};

/// Column added to staged rows for merges: arrival order, so the last duplicate key wins.
pub(crate) const SEQ_COLUMN: &str = "__pipe_seq";

/// Messages from the sink to the worker.
#[derive(Debug)]
pub(crate) enum Command {
    /// Stage a batch of the target schema.
    Write(RecordBatch),
    /// Commit everything staged and report.
    Commit(
        CommitRequest,
        oneshot::Sender<std::result::Result<CommitReport, Error>>,
    ),
    /// Roll back.
    Abort,
}

/// Everything the worker needs to know about its run.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub path: PathBuf,
    pub table: TableName,
    pub memory_limit_mb: Option<u64>,
    pub threads: Option<u32>,
    pub request: PrepareRequest,
}

/// What prepare settled.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The table's schema after evolution: what batches arrive in.
    pub target: SchemaRef,
    /// Merge only: the staging table's schema (target + sequence column).
    pub staging: Option<SchemaRef>,
    /// Rows deleted by replace.
    pub deleted: u64,
}

/// Open the database file (creating its directory), read-write or read-only.
pub(crate) fn open(
    path: &PathBuf,
    memory_limit_mb: Option<u64>,
    threads: Option<u32>,
    read_only: bool,
) -> Result<Connection> {
    let fail = |message: String| DuckError::Open {
        path: path.display().to_string(),
        message,
    };
    if !read_only && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
    }
    let mut config = Config::default()
        .enable_autoload_extension(false)
        .map_err(|e| fail(e.to_string()))?;
    if read_only {
        config = config
            .access_mode(AccessMode::ReadOnly)
            .map_err(|e| fail(e.to_string()))?;
    }
    if let Some(mb) = memory_limit_mb {
        config = config
            .max_memory(&format!("{mb}MB"))
            .map_err(|e| fail(e.to_string()))?;
    }
    if let Some(n) = threads {
        config = config
            .threads(i64::from(n))
            .map_err(|e| fail(e.to_string()))?;
    }
    Connection::open_with_flags(path, config).map_err(|e| fail(e.to_string()))
}

/// A started worker: its command channel, the prepare outcome to await, and its thread.
pub(crate) struct Started {
    pub commands: mpsc::Sender<Command>,
    pub ready: oneshot::Receiver<std::result::Result<SchemaRef, Error>>,
    pub thread: std::thread::JoinHandle<std::result::Result<(), Error>>,
}

/// Start the worker; `ready` yields the target schema once the table is prepared.
pub(crate) fn spawn(job: Job) -> std::io::Result<Started> {
    let (commands, rx) = mpsc::channel(2);
    let (ready_tx, ready) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("pipe-duckdb".into())
        .spawn(move || run(job, ready_tx, rx))?;
    Ok(Started {
        commands,
        ready,
        thread,
    })
}

fn run(
    job: Job,
    ready: oneshot::Sender<std::result::Result<SchemaRef, Error>>,
    mut rx: mpsc::Receiver<Command>,
) -> std::result::Result<(), Error> {
    let conn = match open(&job.path, job.memory_limit_mb, job.threads, false) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok(());
        }
    };
    let prepared = match prepare(&conn, &job) {
        Ok(p) => p,
        Err(e) => {
            rollback(&conn);
            let _ = ready.send(Err(e.into()));
            return Ok(());
        }
    };
    if ready.send(Ok(prepared.target.clone())).is_err() {
        rollback(&conn);
        return Ok(());
    }
    let result = load(&conn, &job, &prepared, &mut rx);
    if result.is_err() {
        rollback(&conn);
    }
    result.map_err(Error::from)
}

fn rollback(conn: &Connection) {
    if let Err(e) = conn.execute_batch("ROLLBACK") {
        debug!(error = %e, "rollback");
    }
}

/// Begin the transaction and run the metadata stage.
fn prepare(conn: &Connection, job: &Job) -> Result<Prepared> {
    let req = &job.request;
    conn.execute_batch("BEGIN TRANSACTION")
        .map_err(|e| sql_err("starting the transaction", e))?;
    let target = table::create_or_evolve(conn, &job.table, &req.source_schema, req.evolution)?;
    let mut prepared = Prepared {
        target: target.clone(),
        staging: None,
        deleted: 0,
    };
    match req.write.mode {
        WriteMode::Append => {}
        WriteMode::Replace => {
            let n = conn
                .execute(&format!("DELETE FROM {}", job.table.sql()), [])
                .map_err(|e| sql_err("clearing the table for replace", e))?;
            prepared.deleted = n as u64;
        }
        WriteMode::Merge => {
            table::resolve_columns(&target, &req.write.merge_keys)?;
            let sql = format!(
                "CREATE OR REPLACE TEMP TABLE {STAGE_TABLE} AS SELECT *, 0::BIGINT AS {SEQ_COLUMN} FROM {} LIMIT 0",
                job.table.sql()
            );
            conn.execute_batch(&sql)
                .map_err(|e| sql_err("creating the staging table", e))?;
            prepared.staging = Some(table::with_sequence(&target, SEQ_COLUMN));
        }
    }
    info!(table = %job.table, mode = %req.write.mode, "duckdb prepared");
    Ok(prepared)
}

/// Append every batch, then commit or roll back as told.
fn load(
    conn: &Connection,
    job: &Job,
    prepared: &Prepared,
    rx: &mut mpsc::Receiver<Command>,
) -> Result<()> {
    let mut appender = match &prepared.staging {
        Some(_) => conn.appender_to_catalog_and_db(STAGE_TABLE, "temp", "main"),
        None => conn.appender_to_db(&job.table.table, &job.table.schema),
    }
    .map_err(|e| sql_err("opening the appender", e))?;
    let mut seq: i64 = 0;
    let mut staged: u64 = 0;
    while let Some(command) = rx.blocking_recv() {
        match command {
            Command::Write(batch) => {
                let rows = batch.num_rows();
                let batch = match &prepared.staging {
                    Some(schema) => {
                        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                        columns.push(Arc::new(Int64Array::from_iter_values(
                            seq..seq + rows as i64,
                        )));
                        seq += rows as i64;
                        RecordBatch::try_new(schema.clone(), columns)
                            .map_err(|e| DuckError::Worker(e.to_string()))?
                    }
                    None => batch,
                };
                appender
                    .append_record_batch(batch)
                    .map_err(|e| sql_err("appending rows", e))?;
                staged += rows as u64;
            }
            Command::Commit(request, reply) => {
                let flushed = appender
                    .flush()
                    .map_err(|e| sql_err("flushing the appender", e));
                drop(appender);
                let result = flushed
                    .and_then(|()| commit::finish(conn, job, prepared, staged, &request))
                    .map_err(Error::from);
                if result.is_err() {
                    rollback(conn);
                }
                let _ = reply.send(result);
                return Ok(());
            }
            Command::Abort => break,
        }
    }
    drop(appender);
    rollback(conn);
    Ok(())
}
