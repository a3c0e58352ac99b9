//! The commit log under `_pipe/log/`: one JSON file per commit, numbered from 1, created
//! only if absent (a lock serializes local writers; object stores' conditional put decides
//! races). An entry names the files its commit added, what it replaced, the table's schema
//! and the writing pipeline's whole state after it — the ledger and the state store of a
//! directory of files.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::Schema;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use pipe_framework::{Error, Result, State};
use serde::{Deserialize, Serialize};

/// The directory of pipe's own files inside the table directory.
pub(crate) const PIPE_DIR: &str = "_pipe";

/// One data file of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DataFile {
    /// Path relative to the table directory (`region=eu/part-….parquet`).
    pub(crate) path: String,
    /// Its partition directory (`region=eu`), empty when unpartitioned.
    pub(crate) partition: String,
    /// Rows it holds.
    pub(crate) rows: u64,
    /// Its size.
    pub(crate) bytes: u64,
}

/// What a commit replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "partitions")]
pub(crate) enum Replaced {
    /// Every earlier file.
    Table,
    /// Every earlier file of these partitions.
    Partitions(Vec<String>),
}

/// One commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Its number in the log (from 1).
    pub(crate) version: u64,
    /// When, RFC 3339.
    pub(crate) timestamp: String,
    /// `append` or `replace`.
    pub(crate) operation: String,
    /// The pipeline that wrote it.
    pub(crate) pipeline: String,
    /// The run that wrote it.
    pub(crate) run_id: String,
    /// The pipeline's commits to this table so far, this one included.
    pub(crate) run_seq: u64,
    /// The file format.
    pub(crate) format: String,
    /// The table's schema after the commit, partition columns included.
    pub(crate) schema: Schema,
    /// The partition columns.
    pub(crate) partition_by: Vec<String>,
    /// What it replaced, if it was a replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replaced: Option<Replaced>,
    /// The files it added.
    pub(crate) added: Vec<DataFile>,
    /// Where those files were staged before publication (object stores: a prefix under
    /// `_pipe/staging/`; local: the work directory's staging directory).
    pub(crate) staging: String,
    /// The writing pipeline's whole state after the commit.
    pub(crate) state: State,
}

/// The log of one table: its store and the table directory's path in it.
#[derive(Debug, Clone)]
pub(crate) struct Log {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) root: Path,
}

/// The log as read: every entry, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    pub(crate) entries: Vec<Entry>,
}

impl History {
    /// The newest entry.
    pub(crate) fn last(&self) -> Option<&Entry> {
        self.entries.last()
    }

    /// The next entry's number.
    pub(crate) fn next_version(&self) -> u64 {
        self.last().map_or(1, |e| e.version + 1)
    }

    /// The newest entry `pipeline` wrote.
    pub(crate) fn last_of(&self, pipeline: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.pipeline == pipeline)
    }

    /// The table's files after entry `upto` (inclusive; `None`: the newest), by path.
    pub(crate) fn live(&self, upto: Option<u64>) -> BTreeMap<String, DataFile> {
        let mut live = BTreeMap::new();
        for entry in &self.entries {
            if upto.is_some_and(|v| entry.version > v) {
                break;
            }
            match &entry.replaced {
                Some(Replaced::Table) => live.clear(),
                Some(Replaced::Partitions(parts)) => {
                    live.retain(|_, f: &mut DataFile| !parts.contains(&f.partition));
                }
                None => {}
            }
            for file in &entry.added {
                live.insert(file.path.clone(), file.clone());
            }
        }
        live
    }
}

impl Log {
    fn dir(&self) -> Path {
        self.root.clone().join(PIPE_DIR).join("log")
    }

    fn entry_path(&self, version: u64) -> Path {
        self.dir().join(format!("{version:020}.json"))
    }

    /// Every entry, oldest first (an empty history when there is no log).
    pub(crate) async fn read(&self) -> Result<History> {
        let mut names: Vec<Path> = self
            .store
            .list(Some(&self.dir()))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| store_error("listing the commit log", e))?;
        names.retain(|p| p.filename().is_some_and(|f| f.ends_with(".json")));
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let bytes = self
                .store
                .get(&name)
                .await
                .map_err(|e| store_error("reading the commit log", e))?
                .bytes()
                .await
                .map_err(|e| store_error("reading the commit log", e))?;
            let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| {
                Error::user(format!(
                    "commit log entry {name} is not pipe's: {e}; the directory holds files of \
                     another writer"
                ))
            })?;
            entries.push(entry);
        }
        Ok(History { entries })
    }

    /// The entry numbered `version`, if there is one.
    async fn get(&self, version: u64) -> Result<Option<Entry>> {
        let path = self.entry_path(version);
        let bytes = match self.store.get(&path).await {
            Ok(got) => got
                .bytes()
                .await
                .map_err(|e| store_error("reading the commit log", e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error("reading the commit log", e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::user(format!("commit log entry {path} is not pipe's: {e}")))
    }

    /// Create `entry` if no entry of its number exists: `Ok(false)` when another writer's
    /// entry took the number first. A put whose outcome is unclear (a timeout, a retried
    /// request answered "exists") is settled by reading the entry back: ours means committed;
    /// absent after an error is "commit outcome unknown" (the put may still land).
    pub(crate) async fn create(&self, entry: &Entry) -> Result<bool> {
        let body = serde_json::to_vec_pretty(entry)
            .map_err(|e| Error::internal("encoding a commit log entry").with_source(e))?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let put = (self.store)
            .put_opts(
                &self.entry_path(entry.version),
                PutPayload::from(body),
                options,
            )
            .await;
        let failure = match put {
            Ok(_) => return Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => None,
            Err(e) => Some(e),
        };
        match self.get(entry.version).await {
            Ok(Some(found)) => Ok(found.run_id == entry.run_id),
            Ok(None) if failure.is_none() => Ok(false),
            Ok(None) | Err(_) => {
                let err = match failure {
                    Some(e) => store_error("writing the commit log", e),
                    None => Error::external("the commit log entry vanished after the put"),
                };
                Err(err
                    .context(format!(
                        "commit log entry {} may or may not have been written",
                        entry.version
                    ))
                    .commit_unknown())
            }
        }
    }
}

/// An object store error as a pipe error: a missing object or a refusal is the user's to fix,
/// anything else a service failure (retryable when transient).
pub(crate) fn store_error(what: &str, e: object_store::Error) -> Error {
    let transient = pipe_framework::is_transient(&e);
    let err = match &e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::user(what.to_string()),
        _ => Error::external(what.to_string()),
    }
    .with_source(e);
    if transient { err.retryable() } else { err }
}
