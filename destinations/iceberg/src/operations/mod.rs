//! Table operations on Iceberg: history and time-travel inspect from the table metadata,
//! `optimize` (compaction into a `replace` snapshot), `vacuum` (expire snapshots, delete the
//! files only they referenced, optionally orphan files) and `restore` (point `main` back at
//! an earlier snapshot — the pipeline state in that snapshot's summary comes back with it).

mod compact;
mod expire;

use async_trait::async_trait;
use pipe_framework::operations::{
    OperationReport, OptimizeRequest, RestoreTarget, TableOperations, VacuumRequest,
};
use pipe_framework::{CommitInfo, Error, Result, TableInfo};

use crate::IcebergDestination;
use crate::catalog::CommitTarget;
use crate::commit::{MetadataChange, stage_metadata};
use crate::error::IcebergError;
use crate::inspect;

#[async_trait]
impl TableOperations for IcebergDestination {
    async fn history(&self, limit: Option<usize>) -> Result<Vec<CommitInfo>> {
        let Some(table) = self.load_existing().await? else {
            return Err(Error::user(format!(
                "there is no Iceberg table {} in {}",
                self.config.table,
                crate::catalog::describe(&self.config.catalog)
            )));
        };
        let current = table.metadata.current_snapshot_id();
        let mut commits = inspect::commits(&table.metadata, current);
        commits.reverse();
        commits.truncate(limit.unwrap_or(usize::MAX));
        Ok(commits)
    }

    async fn inspect(&self, at: Option<&str>) -> Result<Option<TableInfo>> {
        let Some(table) = self.load_existing().await? else {
            return Ok(None);
        };
        let at = at
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| Error::user(format!("`{s}` is not an Iceberg snapshot id")))
            })
            .transpose()?;
        let mut info = inspect::table_info(&self.config.table, &table, at)?;
        if at.is_none() {
            let target = self.connect().await?;
            inspect::registered_files(target.file_io(), &table.metadata, &mut info).await?;
        }
        Ok(Some(info))
    }

    async fn optimize(&self, request: &OptimizeRequest) -> Result<OperationReport> {
        let target = self.connect().await?;
        let settings = compact::Settings {
            options: &self.options,
            retries: self.config.commit_retries,
        };
        Ok(compact::optimize(&target, request, &settings).await?)
    }

    async fn vacuum(&self, request: &VacuumRequest) -> Result<OperationReport> {
        let target = self.connect().await?;
        Ok(expire::vacuum(target.as_ref(), request, self.config.commit_retries).await?)
    }

    async fn restore(&self, to: &RestoreTarget) -> Result<OperationReport> {
        let target = self.connect().await?;
        Ok(rollback(target.as_ref(), to, self.config.commit_retries).await?)
    }
}

/// Point `main` at the snapshot `to` names (by id, or the one current at a time).
async fn rollback(
    target: &dyn CommitTarget,
    to: &RestoreTarget,
    retries: u32,
) -> std::result::Result<OperationReport, IcebergError> {
    let mut attempt = 0;
    loop {
        let base = target
            .load()
            .await?
            .ok_or_else(|| IcebergError::Config("the table does not exist".into()))?;
        let meta = &base.metadata;
        let id = match to {
            RestoreTarget::Commit(id) => {
                let id: i64 = id.parse().map_err(|_| {
                    IcebergError::Config(format!("`{id}` is not an Iceberg snapshot id"))
                })?;
                if meta.snapshot_by_id(id).is_none() {
                    return Err(IcebergError::Framework(
                        pipe_framework::operations::no_such_commit(
                            &id.to_string(),
                            meta.snapshots().map(|s| s.snapshot_id().to_string()),
                        ),
                    ));
                }
                id
            }
            RestoreTarget::Timestamp(t) => {
                let at = t.timestamp_millis();
                meta.history()
                    .iter()
                    .rfind(|entry| {
                        entry.timestamp_ms <= at && meta.snapshot_by_id(entry.snapshot_id).is_some()
                    })
                    .map(|entry| entry.snapshot_id)
                    .ok_or_else(|| {
                        IcebergError::Config(format!("no snapshot of the table was current at {t}"))
                    })?
            }
        };
        if meta.current_snapshot_id() == Some(id) {
            return Ok(OperationReport {
                operation: "restore".into(),
                commit_id: Some(id.to_string()),
                ..OperationReport::default()
            });
        }
        let change = stage_metadata(&base, &MetadataChange::SetMain(id))?;
        if target.commit(&change).await?.is_some() {
            return Ok(OperationReport {
                operation: "restore".into(),
                commit_id: Some(id.to_string()),
                ..OperationReport::default()
            });
        }
        attempt += 1;
        if attempt > retries {
            return Err(IcebergError::Conflict(format!(
                "gave up restoring after {attempt} attempts: other writers kept committing first"
            )));
        }
    }
}
