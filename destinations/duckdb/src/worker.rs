//! The thread that owns the DuckDB connection for one run.
//!
//! `duckdb::Connection` is not `Sync` and every call blocks, so a run gets a dedicated thread:
//! it opens the database, starts the transaction, runs the metadata stage's DDL, then runs one
//! `INSERT INTO … SELECT * FROM pipe_stream(run_id)` that DuckDB's threads feed from the
//! batches the sink streams in (see `stream.rs`), and finally commits or rolls back as the
//! sink says. Everything a run does is one DuckDB transaction; if the sink goes away without
//! committing, the thread rolls back.

use std::path::PathBuf;

use arrow_schema::SchemaRef;
use duckdb::{AccessMode, Config, Connection};
use pipe_framework::{CommitReport, CommitRequest, Error, PrepareRequest, WriteMode};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::commit::{self, STAGE_TABLE};
use crate::database::Database;
use crate::error::{DuckError, Result, sql_err};
use crate::stream::{self, Message, Registration, StreamScan};
use crate::table::{self, TableName};
use crate::types::literal;
use crate::wire::{self, SEQ_COLUMN};

/// Batches in flight between the sink and DuckDB's scan threads.
const STREAM_CAPACITY: usize = 4;

/// Messages from the sink to the worker once the data has been streamed.
#[derive(Debug)]
pub(crate) enum Command {
    /// Commit everything staged and report.
    Commit(
        Box<CommitRequest>,
        oneshot::Sender<std::result::Result<CommitReport, Error>>,
    ),
    /// Roll back.
    Abort,
}

/// What the sink gets once the table is prepared.
#[derive(Debug)]
pub(crate) struct Ready {
    /// The table's schema after evolution: what batches arrive in.
    pub target: SchemaRef,
    /// The schema streamed into DuckDB (see `wire.rs`).
    pub streamed: SchemaRef,
    /// Merging: batches carry an arrival sequence.
    pub sequenced: bool,
    /// Where the sink sends batches.
    pub data: mpsc::Sender<Message>,
}

/// Everything the worker needs to know about its run.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub path: PathBuf,
    pub table: TableName,
    pub connection: ConnectionOptions,
    pub request: PrepareRequest,
}

/// How to open the database.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionOptions {
    pub memory_limit_mb: u64,
    pub threads: Option<u32>,
    pub settings: std::collections::BTreeMap<String, String>,
}

/// What prepare settled.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The table's schema after evolution: what batches arrive in.
    pub target: SchemaRef,
    /// Merging: rows go to a temp staging table with an arrival sequence.
    pub staging: bool,
    /// Rows deleted by replace.
    pub deleted: u64,
}

/// Open the database file (creating its directory), read-write or read-only.
pub(crate) fn open(
    path: &PathBuf,
    options: &ConnectionOptions,
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
    // Rows carry their own order where it matters (the merge sequence column), so DuckDB may
    // insert from all its threads in parallel.
    let mut config = Config::default()
        .enable_autoload_extension(false)
        .and_then(|c| c.with("preserve_insertion_order", "false"))
        .map_err(|e| fail(e.to_string()))?;
    if read_only {
        config = config
            .access_mode(AccessMode::ReadOnly)
            .map_err(|e| fail(e.to_string()))?;
    }
    config = config
        .max_memory(&format!("{}MB", options.memory_limit_mb))
        .map_err(|e| fail(e.to_string()))?;
    if let Some(n) = options.threads {
        config = config
            .threads(i64::from(n))
            .map_err(|e| fail(e.to_string()))?;
    }
    for (key, value) in &options.settings {
        config = config
            .with(key, value)
            .map_err(|e| fail(format!("setting `{key}`: {e}")))?;
    }
    Connection::open_with_flags(path, config).map_err(|e| fail(e.to_string()))
}

/// A started worker: its command channel, the prepare outcome to await, and its thread.
pub(crate) struct Started {
    pub commands: mpsc::Sender<Command>,
    pub ready: oneshot::Receiver<std::result::Result<Ready, Error>>,
    pub thread: std::thread::JoinHandle<std::result::Result<(), Error>>,
}

/// Start the worker; `ready` yields the target schema and the data sender once the table is
/// prepared.
pub(crate) fn spawn(job: Job) -> std::io::Result<Started> {
    let (commands, rx) = mpsc::channel(1);
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
    mut job: Job,
    ready: oneshot::Sender<std::result::Result<Ready, Error>>,
    mut commands: mpsc::Receiver<Command>,
) -> std::result::Result<(), Error> {
    let opened = Database::shared(&job.path, &job.connection).and_then(|db| {
        let conn = db.connect()?;
        Ok((db, conn))
    });
    // The connection is declared after the instance: it is dropped first.
    let (_db, conn) = match opened {
        Ok(pair) => pair,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return Ok(());
        }
    };
    // One writer per database at a time, from BEGIN to COMMIT/ROLLBACK (see database.rs).
    let _writing = _db.write_lock();
    let setup = conn
        .query_row("SELECT current_database()", [], |r| r.get::<_, String>(0))
        .map_err(|e| sql_err("reading the database name", e))
        .and_then(|catalog| {
            job.table.catalog = catalog;
            conn.register_table_function::<StreamScan>(stream::FUNCTION)
                .map_err(|e| sql_err("registering the stream scan", e))
        })
        .and_then(|()| prepare(&conn, &job));
    let prepared = match setup {
        Ok(p) => p,
        Err(e) => {
            rollback(&conn);
            let _ = ready.send(Err(e.into()));
            return Ok(());
        }
    };
    let streamed = wire::stream_schema(&prepared.target, prepared.staging);
    let stream_id = stream::unique_id(&job.request.ctx.run_id);
    let (registration, data) = Registration::new(&stream_id, streamed.clone(), STREAM_CAPACITY);
    let handoff = Ready {
        target: prepared.target.clone(),
        streamed,
        sequenced: prepared.staging,
        data,
    };
    if ready.send(Ok(handoff)).is_err() {
        rollback(&conn);
        return Ok(());
    }
    let into = if prepared.staging {
        STAGE_TABLE.to_string()
    } else {
        job.table.sql()
    };
    let insert = format!(
        "INSERT INTO {into} SELECT {} FROM {}({})",
        wire::select_list(&prepared.target, prepared.staging),
        stream::FUNCTION,
        literal(&stream_id)
    );
    let staged = match conn.execute(&insert, []) {
        Ok(n) => n as u64,
        Err(e) => {
            registration.stream().close();
            rollback(&conn);
            return Err(sql_err("loading the rows", e).into());
        }
    };
    drop(registration);
    debug!(table = %job.table, rows = staged, "rows staged");
    match commands.blocking_recv() {
        Some(Command::Commit(request, reply)) => {
            let result = commit::finish(&conn, &job, &prepared, staged, &request);
            if result.is_err() {
                rollback(&conn);
            }
            let _ = reply.send(result.map_err(Error::from));
        }
        Some(Command::Abort) | None => rollback(&conn),
    }
    Ok(())
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
        staging: false,
        deleted: 0,
    };
    match req.write.mode {
        WriteMode::Append => {}
        // The factory does not offer it: the pipeline is refused before a run.
        WriteMode::Register => {
            return Err(DuckError::Framework(pipe_framework::Error::user(
                "DuckDB tables cannot reference existing files (mode = \"register\")",
            )));
        }
        WriteMode::Replace => {
            let n = conn
                .execute(&format!("DELETE FROM {}", job.table.sql()), [])
                .map_err(|e| sql_err("clearing the table for replace", e))?;
            prepared.deleted = n as u64;
        }
        WriteMode::Merge => {
            // A key the source lacks would be NULL in every row and collapse the run to one.
            table::resolve_columns(&req.source_schema, &req.write.merge_keys, "the source")?;
            table::resolve_columns(&target, &req.write.merge_keys, "the table")?;
            let sql = format!(
                "CREATE OR REPLACE TEMP TABLE {STAGE_TABLE} AS SELECT *, 0::BIGINT AS {SEQ_COLUMN} FROM {} LIMIT 0",
                job.table.sql()
            );
            conn.execute_batch(&sql)
                .map_err(|e| sql_err("creating the staging table", e))?;
            prepared.staging = true;
        }
    }
    info!(table = %job.table, mode = %req.write.mode, "duckdb prepared");
    Ok(prepared)
}
