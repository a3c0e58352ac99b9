//! One run's staged files: written by [`Writers`] into the run's staging place, published by
//! the commit, removed by an abort.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use pipe_framework::{CommitReport, CommitRequest, Result, Sink};

use crate::commit::{self, Plan};
use crate::local::{self, Lock};
use crate::location::Location;
use crate::write::Writers;

/// A run's staged writes into a file table.
#[derive(Debug)]
pub struct FilesSink {
    pub(crate) location: Location,
    /// The table's schema (partition columns included): what batches arrive in.
    pub(crate) schema: SchemaRef,
    pub(crate) writers: Writers,
    /// The commit, less the files and the state (known at commit time).
    pub(crate) plan: Plan,
    pub(crate) staging: Path,
    /// Local: the run's staging lock, held until the sink ends.
    pub(crate) _staged: Option<Lock>,
    pub(crate) retries: usize,
}

#[async_trait]
impl Sink for FilesSink {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.writers.write(batch).await
    }

    async fn commit(self: Box<Self>, req: CommitRequest) -> Result<CommitReport> {
        let this = *self;
        let added = match this.writers.close().await {
            Ok(files) => files,
            Err(e) => {
                discard(&this.location, &this.staging, &this.plan.ctx.run_id).await;
                return Err(e);
            }
        };
        let mut plan = this.plan;
        plan.added = added;
        plan.changes = req.state;
        let result = commit::commit(&this.location, &plan, this.retries).await;
        match result {
            Ok(done) => {
                // the lock file of the run's staging directory (the directory is gone unless
                // publishing failed, and then the next commit needs what it holds)
                if let Some(dirs) = &this.location.local
                    && done.warnings.is_empty()
                {
                    local::unstage(dirs, &plan.ctx.run_id).await;
                }
                let rows_inserted = done.entry.added.iter().map(|f| f.rows).sum();
                tracing::info!(
                    version = done.entry.version,
                    files = done.entry.added.len(),
                    rows = rows_inserted,
                    "committed files"
                );
                Ok(CommitReport {
                    rows_inserted,
                    rows_deleted: done.rows_deleted,
                    commit_id: Some(done.entry.version.to_string()),
                    warnings: done.warnings,
                    ..CommitReport::default()
                })
            }
            Err(e) => {
                // Not committed: the log has no entry naming these files.
                if !e.is_commit_unknown() {
                    discard(&this.location, &this.staging, &plan.ctx.run_id).await;
                }
                Err(e)
            }
        }
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        let this = *self;
        let _ = this.writers.close().await;
        discard(&this.location, &this.staging, &this.plan.ctx.run_id).await;
        Ok(())
    }
}

/// Remove a run's staged files.
async fn discard(location: &Location, staging: &Path, run_id: &str) {
    if let Some(dirs) = &location.local {
        local::unstage(dirs, run_id).await;
        return;
    }
    let store = location.store.as_ref();
    let listed: Vec<Path> = match store
        .list(Some(staging))
        .map_ok(|m| m.location)
        .try_collect()
        .await
    {
        Ok(paths) => paths,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the run's staged files to remove them");
            return;
        }
    };
    for path in listed {
        if let Err(e) = store.delete(&path).await {
            tracing::warn!(path = %path, error = %e, "could not remove a staged file");
        }
    }
}
