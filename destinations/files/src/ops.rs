//! `pipe table history|inspect|vacuum` on a file table, read from its commit log.

use std::collections::BTreeMap;

use async_trait::async_trait;
use pipe_framework::operations::{
    Commit, OperationReport, TableOperations, VacuumRequest, keys, no_such_commit,
};
use pipe_framework::{ColumnInfo, CommitInfo, Result, TableInfo};

use crate::FilesDestination;
use crate::log::{Entry, History};

fn commit_info(history: &History, entry: &Entry) -> CommitInfo {
    let live = history.live(Some(entry.version));
    let mut summary = BTreeMap::from([
        (keys::PIPELINE.to_string(), entry.pipeline.clone()),
        (keys::RUN_ID.to_string(), entry.run_id.clone()),
        (keys::RUN_SEQ.to_string(), entry.run_seq.to_string()),
        ("added-files".to_string(), entry.added.len().to_string()),
        (
            "added-rows".to_string(),
            entry.added.iter().map(|f| f.rows).sum::<u64>().to_string(),
        ),
    ]);
    for (k, v) in &entry.state {
        summary.insert(format!("{}.{k}", keys::STATE), v.clone());
    }
    CommitInfo {
        id: entry.version.to_string(),
        parent: (entry.version > 1).then(|| (entry.version - 1).to_string()),
        timestamp: entry.timestamp.clone(),
        operation: entry.operation.clone(),
        current: history.last().is_some_and(|l| l.version == entry.version),
        pipeline: Some(entry.pipeline.clone()),
        run_id: Some(entry.run_id.clone()),
        rows: Some(live.values().map(|f| f.rows).sum()),
        files: Some(live.len() as u64),
        bytes: Some(live.values().map(|f| f.bytes).sum()),
        summary,
    }
}

#[async_trait]
impl TableOperations for FilesDestination {
    async fn history(&self, limit: Option<usize>) -> Result<Vec<Commit>> {
        let history = self.location.log().read().await?;
        Ok(history
            .entries
            .iter()
            .rev()
            .take(limit.unwrap_or(usize::MAX))
            .map(|e| commit_info(&history, e))
            .collect())
    }

    async fn inspect(&self, at: Option<&str>) -> Result<Option<TableInfo>> {
        let history = self.location.log().read().await?;
        let entry = match at {
            None => match history.last() {
                Some(e) => e,
                None => return Ok(None),
            },
            Some(id) => history
                .entries
                .iter()
                .find(|e| e.version.to_string() == id)
                .ok_or_else(|| {
                    no_such_commit(
                        id,
                        history.entries.iter().rev().map(|e| e.version.to_string()),
                    )
                })?,
        };
        let info = commit_info(&history, entry);
        let properties = BTreeMap::from([
            ("format".to_string(), entry.format.clone()),
            ("partition_by".to_string(), entry.partition_by.join(", ")),
        ]);
        Ok(Some(TableInfo {
            table: self.location.display.clone(),
            location: Some(format!("{}/_pipe/log", self.location.display)),
            columns: entry
                .schema
                .fields()
                .iter()
                .map(|f| ColumnInfo {
                    name: f.name().clone(),
                    r#type: f.data_type().to_string(),
                    id: None,
                    required: !f.is_nullable(),
                })
                .collect(),
            properties,
            rows: info.rows,
            files: info.files,
            bytes: info.bytes,
            commits: history
                .entries
                .iter()
                .filter(|e| e.version <= entry.version)
                .map(|e| commit_info(&history, e))
                .collect(),
        }))
    }

    /// Removes what runs that died left staged (a local directory's dead staging
    /// directories; an object store's staged files older than `older_than`) and finishes a
    /// publication cut short. The log keeps every commit.
    async fn vacuum(&self, request: &VacuumRequest) -> Result<OperationReport> {
        let mut report = OperationReport {
            operation: "vacuum".into(),
            dry_run: request.dry_run,
            ..OperationReport::default()
        };
        if request.dry_run {
            return Ok(report);
        }
        match &self.location.local {
            Some(dirs) => report.deleted = crate::local::vacuum(&self.location, dirs).await?,
            None => {
                let history = self.location.log().read().await?;
                crate::remote::recover(&self.location, &history).await?;
                report.deleted = crate::remote::vacuum(&self.location, request.older_than).await?;
            }
        }
        Ok(report)
    }
}
