//! A run's commit: the log entry decided against the log as it is at commit time, then the
//! files published — under the work directory's lock for a local directory (a replace swaps
//! the whole directory in one rename), by conditional put of the entry on an object store
//! (retried on the new log when another writer took the number).

use std::collections::BTreeSet;

use arrow_schema::{Schema, SchemaRef};
use pipe_framework::committed::state_to_commit;
use pipe_framework::{Error, Result, RunContext, State, WriteMode};

use crate::config::ReplaceScope;
use crate::location::Location;
use crate::log::{DataFile, Entry, History, Replaced};
use crate::{local, remote};

/// What a run commits.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) ctx: RunContext,
    pub(crate) mode: WriteMode,
    pub(crate) scope: ReplaceScope,
    pub(crate) format: String,
    pub(crate) schema: SchemaRef,
    pub(crate) partition_by: Vec<String>,
    pub(crate) added: Vec<DataFile>,
    /// This run's state changes.
    pub(crate) changes: State,
}

/// What a commit did.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub(crate) entry: Entry,
    /// Rows of the files it replaced.
    pub(crate) rows_deleted: u64,
    /// Problems after the commit point (files not yet in place: the next commit finishes
    /// their publication).
    pub(crate) warnings: Vec<String>,
}

impl Committed {
    /// A commit whose publication `published` reports on.
    pub(crate) fn new(entry: Entry, removed: &[DataFile], published: Result<()>) -> Self {
        let warnings = match published {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!(
                "commit {} is in the log, but publishing its files failed ({}); the next run \
                 or `pipe table vacuum` finishes it",
                entry.version,
                e.chain().join(": ")
            )],
        };
        Self {
            entry,
            rows_deleted: removed.iter().map(|f| f.rows).sum(),
            warnings,
        }
    }
}

impl Plan {
    /// The entry this plan makes on top of `history`, and the files it replaces; or why it
    /// must not commit (another run moved the pipeline's state).
    pub(crate) fn entry(&self, history: &History) -> Result<(Entry, Vec<DataFile>)> {
        let pipeline = &self.ctx.pipeline;
        let current = history
            .last_of(pipeline)
            .map(|e| e.state.clone())
            .unwrap_or_default();
        let state = state_to_commit(&self.ctx, &current, &self.changes)?;
        let run_seq = history
            .entries
            .iter()
            .filter(|e| &e.pipeline == pipeline)
            .count() as u64
            + 1;
        let replaced = match (self.mode, self.scope) {
            (WriteMode::Replace, ReplaceScope::Table) => Some(Replaced::Table),
            (WriteMode::Replace, ReplaceScope::Partitions) => {
                let parts: BTreeSet<String> =
                    self.added.iter().map(|f| f.partition.clone()).collect();
                Some(Replaced::Partitions(parts.into_iter().collect()))
            }
            _ => None,
        };
        let removed: Vec<DataFile> = match &replaced {
            None => Vec::new(),
            Some(Replaced::Table) => history.live(None).into_values().collect(),
            Some(Replaced::Partitions(parts)) => history
                .live(None)
                .into_values()
                .filter(|f| parts.contains(&f.partition))
                .collect(),
        };
        // another run (a sibling backfill window) may have added columns since this one
        // prepared: the table's schema is the union, unless this run replaces every file
        let schema = match (history.last(), &replaced) {
            (Some(last), None | Some(Replaced::Partitions(_))) if last.schema != *self.schema => {
                Schema::try_merge([last.schema.clone(), self.schema.as_ref().clone()]).map_err(
                    |e| {
                        Error::external(format!(
                            "another run changed the table's columns incompatibly while this \
                             one loaded: {e}; nothing was committed"
                        ))
                        .retryable()
                    },
                )?
            }
            _ => self.schema.as_ref().clone(),
        };
        let entry = Entry {
            version: history.next_version(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            operation: self.mode.as_str().to_string(),
            pipeline: pipeline.clone(),
            run_id: self.ctx.run_id.clone(),
            run_seq,
            format: self.format.clone(),
            schema,
            partition_by: self.partition_by.clone(),
            replaced,
            added: self.added.clone(),
            staging: self.ctx.run_id.clone(),
            state,
        };
        Ok((entry, removed))
    }
}

/// Commit `plan` at `location`, trying at most `retries` more times after losing a race.
pub(crate) async fn commit(location: &Location, plan: &Plan, retries: usize) -> Result<Committed> {
    if let Some(dirs) = &location.local {
        return local::commit(location, dirs, plan).await;
    }
    let log = location.log();
    for _ in 0..=retries {
        let history = log.read().await?;
        remote::recover(location, &history).await?;
        let (entry, removed) = plan.entry(&history)?;
        if !log.create(&entry).await? {
            tracing::debug!(
                version = entry.version,
                "another writer committed this log version first; retrying"
            );
            continue;
        }
        let published = remote::publish(location, &entry, &removed).await;
        return Ok(Committed::new(entry, &removed, published));
    }
    Err(Error::external(format!(
        "{}: lost the commit race to other writers {} times; nothing was committed",
        location.display,
        retries + 1
    ))
    .retryable())
}
