//! One DuckDB database instance per file per process.
//!
//! Two DuckDB instances on one file in one process would corrupt it (they each think they own
//! it), and two runs writing to the same file at once are normal here (a backfill's parallel
//! windows, a scheduler running two pipelines into one database). So every run of this process
//! that writes to a file connects through the same instance — separate connections, separate
//! transactions, one instance — which lives as long as some run uses it, so the file is not
//! held open (and locked against other processes) between runs.
//!
//! Writes are serialized: a run holds the instance's write lock from its `BEGIN` to its
//! `COMMIT` or `ROLLBACK`. Concurrent appends from several connections of one instance (a
//! parallel backfill) have tripped DuckDB's storage assertions and left string segments
//! unreadable; one writer at a time cannot, and it makes the committed state a run reads
//! inside its transaction the newest (see `commit.rs`). Readers never wait.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

use duckdb::Connection;

use crate::error::{DuckError, Result};
use crate::worker::{ConnectionOptions, open};

// Note: the first run to open a file sets its instance's settings (memory limit, threads,
// `settings`); later runs in this process while it is open share them.

/// A shared database instance.
pub(crate) struct Database {
    root: Mutex<Connection>,
    /// Held by the run that is writing (see the module docs).
    writer: Mutex<()>,
    path: PathBuf,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({})", self.path.display())
    }
}

static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Database>>>> = LazyLock::new(Default::default);

fn registry() -> MutexGuard<'static, HashMap<PathBuf, Weak<Database>>> {
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The file's identity: its canonical path (of its directory, if it does not exist yet).
fn key(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (
        path.parent().filter(|d| !d.as_os_str().is_empty()),
        path.file_name(),
    ) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| path.to_path_buf(), |d| d.join(name)),
        _ => std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path)),
    }
}

impl Database {
    /// The instance for `path`, opened read-write (with `options`) if no run has it open.
    pub(crate) fn shared(path: &Path, options: &ConnectionOptions) -> Result<Arc<Database>> {
        let mut open_dbs = registry();
        open_dbs.retain(|_, db| db.strong_count() > 0);
        let id = key(path);
        if let Some(db) = open_dbs.get(&id).and_then(Weak::upgrade) {
            return Ok(db);
        }
        let root = open(&path.to_path_buf(), options, false)?;
        let db = Arc::new(Database {
            root: Mutex::new(root),
            writer: Mutex::new(()),
            path: path.to_path_buf(),
        });
        open_dbs.insert(key(path), Arc::downgrade(&db));
        Ok(db)
    }

    /// Wait until no other run of this process writes to the database, and hold it until the
    /// guard drops (after this run's COMMIT or ROLLBACK).
    pub(crate) fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection (its own transactions) to this instance.
    pub(crate) fn connect(&self) -> Result<Connection> {
        self.root
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_clone()
            .map_err(|e| DuckError::Open {
                path: self.path.display().to_string(),
                message: e.to_string(),
            })
    }
}

/// A connection for reading an existing database file, through the process's shared
/// instance (opened if no run has it open): never a second instance of the same file in this
/// process. The guard keeps the instance alive as long as the connection.
pub(crate) fn read_connection(path: &Path, options: &ConnectionOptions) -> Result<ReadConnection> {
    let db = Database::shared(path, options)?;
    let conn = db.connect()?;
    Ok(ReadConnection { conn, _db: db })
}

/// A connection and the instance it belongs to (dropped in that order).
pub(crate) struct ReadConnection {
    pub conn: Connection,
    _db: Arc<Database>,
}
