//! Table operations (`pipe table history|inspect|optimize|vacuum|restore`) and the
//! post-commit maintenance of `[destination.maintenance]`.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use pipe_framework::operations::{OperationReport, RestoreTarget};
use pipe_framework::{ColumnInfo, CommitInfo, TableInfo};
use serde_json::Value;
use tracing::{info, warn};

use crate::config::MaintenanceConfig;
use crate::error::{DeltaError, Result, delta};
use crate::table::{Location, PIPELINE_KEY, RUN_ID_KEY, RUN_SEQ_KEY, info_value};

fn version_of(table: &DeltaTable) -> i64 {
    table
        .version()
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(-1)
}

/// History entries get the table's totals (rows, files, bytes) at their version when there are
/// at most this many of them (each needs the log replayed up to its version).
const TOTALS_UP_TO: usize = 50;

/// The table's commits, newest first.
pub async fn history(location: &Location, limit: Option<usize>) -> Result<Vec<CommitInfo>> {
    let table = location.open_existing().await?;
    let mut commits = commits(&table, limit).await?;
    if commits.len() <= TOTALS_UP_TO {
        for c in &mut commits {
            let Ok(version) = c.id.parse::<u64>() else {
                continue;
            };
            let mut at = location.open_existing().await?;
            if at.load_version(version).await.is_ok()
                && let Ok(snapshot) = at.snapshot()
            {
                let (rows, files, bytes) = totals(snapshot);
                (c.rows, c.files, c.bytes) = (rows, Some(files), Some(bytes));
            }
        }
    }
    Ok(commits)
}

/// Rows (when every file recorded its count), files and bytes of a version.
fn totals(snapshot: &deltalake::table::state::DeltaTableState) -> (Option<u64>, u64, u64) {
    let (mut rows, mut files, mut bytes) = (0u64, 0u64, 0u64);
    let mut rows_known = true;
    for view in snapshot.log_data().iter() {
        files += 1;
        bytes += u64::try_from(view.size()).unwrap_or(0);
        match view.num_records() {
            Some(n) => rows += n as u64,
            None => rows_known = false,
        }
    }
    (rows_known.then_some(rows), files, bytes)
}

async fn commits(table: &DeltaTable, limit: Option<usize>) -> Result<Vec<CommitInfo>> {
    // Labels count down from the handle's version: right for a handle on the newest version
    // (a commit landing between its load and this listing would shift them).
    let current = version_of(table);
    let infos: Vec<_> = table
        .history(limit)
        .await
        .map_err(delta("reading the table history"))?
        .collect();
    // Newest first, one per version down from the current one.
    Ok(infos
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let version = current - i as i64;
            let mut summary = BTreeMap::new();
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            for (k, v) in c.operation_parameters.iter().flatten() {
                summary.insert(format!("parameter.{k}"), text(v));
            }
            if let Some(Value::Object(m)) = c.info.get("operationMetrics") {
                for (mk, mv) in m {
                    summary.insert(format!("metric.{mk}"), text(mv));
                }
            }
            if let Some(seq) = info_value(&c.info, RUN_SEQ_KEY) {
                summary.insert(RUN_SEQ_KEY.into(), text(seq));
            }
            let value = |key: &str| info_value(&c.info, key).map(text);
            CommitInfo {
                id: version.to_string(),
                parent: (version > 0).then(|| (version - 1).to_string()),
                timestamp: c
                    .timestamp
                    .and_then(DateTime::<Utc>::from_timestamp_millis)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                operation: c.operation.clone().unwrap_or_default(),
                current: version == current,
                pipeline: value(PIPELINE_KEY),
                run_id: value(RUN_ID_KEY),
                summary,
                ..CommitInfo::default()
            }
        })
        .collect())
}

/// Schema, size and history of the table at `version` (default: the newest); `None` when
/// there is no table.
pub async fn inspect(location: &Location, version: Option<i64>) -> Result<Option<TableInfo>> {
    let Some(mut table) = location.open().await? else {
        return Ok(None);
    };
    let newest = version_of(&table);
    if let Some(v) = version {
        if v < 0 || v > newest {
            return Err(DeltaError::Config(format!(
                "version {v} does not exist: the table's versions are 0 to {newest}"
            )));
        }
        let version = u64::try_from(v).unwrap_or_default();
        table
            .load_version(version)
            .await
            .map_err(delta(format!("loading version {v}")))?;
    }
    let state = table.snapshot().map_err(delta("reading the table state"))?;
    let schema: StructType = state.schema().as_ref().clone();
    let columns = schema
        .fields()
        .map(|f| ColumnInfo {
            name: f.name().clone(),
            r#type: f.data_type().to_string(),
            id: None,
            required: !f.is_nullable(),
        })
        .collect();
    let (rows, files, bytes) = totals(state);
    let metadata = state.metadata();
    let protocol = state.protocol();
    let mut properties = BTreeMap::from([
        ("version".to_string(), version_of(&table).to_string()),
        ("location".to_string(), location.url.to_string()),
        ("table-id".to_string(), metadata.id().to_string()),
        (
            "partition-columns".to_string(),
            metadata.partition_columns().join(", "),
        ),
        (
            "protocol".to_string(),
            format!(
                "reader {} writer {}",
                protocol.min_reader_version(),
                protocol.min_writer_version()
            ),
        ),
    ]);
    for (k, v) in metadata.configuration() {
        properties.insert(format!("property.{k}"), v.clone());
    }
    // The history as of the inspected version. delta-rs lists every commit file in the log,
    // newer ones included, so versions are labelled from a handle on the newest version (not
    // the time-travelled one) and the newer commits dropped here.
    let current = version_of(&table);
    let mut history = commits(&location.open_existing().await?, None).await?;
    history.retain(|c| c.id.parse::<i64>().is_ok_and(|v| v <= current));
    for c in &mut history {
        c.current = c.id == current.to_string();
        if c.current {
            (c.rows, c.files, c.bytes) = (rows, Some(files), Some(bytes));
        }
    }
    history.reverse();
    Ok(Some(TableInfo {
        table: location.url.to_string(),
        location: Some(location.url.to_string()),
        columns,
        properties,
        rows,
        files: Some(files),
        bytes: Some(bytes),
        commits: history,
    }))
}

/// Compact small files (bin-packing, or Z-order by `zorder`) into files of about
/// `target_size` bytes.
pub async fn optimize(
    location: &Location,
    zorder: &[String],
    target_size: Option<u64>,
    dry_run: bool,
) -> Result<OperationReport> {
    let table = location.open_existing().await?;
    let before = version_of(&table);
    let mut report = OperationReport {
        operation: "optimize".into(),
        dry_run,
        ..OperationReport::default()
    };
    if dry_run {
        let snapshot = table.snapshot().map_err(delta("reading the table state"))?;
        let size = target_size.unwrap_or(DEFAULT_TARGET_SIZE);
        let small = snapshot
            .log_data()
            .iter()
            .filter(|f| u64::try_from(f.size()).unwrap_or(0) < size)
            .count();
        report
            .detail
            .insert("small_files".into(), small.to_string());
        return Ok(report);
    }
    let mut builder = table.optimize();
    if !zorder.is_empty() {
        builder = builder.with_type(OptimizeType::ZOrder(zorder.to_vec()));
    }
    if let Some(size) = target_size.and_then(NonZeroU64::new) {
        builder = builder.with_target_size(size);
    }
    let (table, metrics) = builder.await.map_err(delta("optimizing the table"))?;
    let after = version_of(&table);
    report.commit_id = (after != before).then(|| after.to_string());
    report.files_added = metrics.num_files_added;
    report.files_removed = metrics.num_files_removed;
    Ok(report)
}

/// delta-rs' default compaction target (100 MiB).
const DEFAULT_TARGET_SIZE: u64 = 100 * 1024 * 1024;

/// Delete data files no longer referenced by the table and older than `retain`.
/// Retention below the table's `delta.deletedFileRetentionDuration` (default 7 days) is
/// refused unless `enforce_retention` is false: readers of older versions need those files.
pub async fn vacuum(
    location: &Location,
    retain: chrono::Duration,
    dry_run: bool,
    enforce_retention: bool,
) -> Result<OperationReport> {
    let table = location.open_existing().await?;
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retain)
        .with_dry_run(dry_run)
        .with_mode(VacuumMode::Full)
        .with_enforce_retention_duration(enforce_retention)
        .await
        .map_err(|e| match e {
            deltalake::DeltaTableError::Generic(m) if m.contains("retention") => {
                DeltaError::Config(format!("{m} (pass --no-enforce-retention to override)"))
            }
            e => delta("vacuuming the table")(e),
        })?;
    Ok(OperationReport {
        operation: "vacuum".into(),
        dry_run: metrics.dry_run,
        deleted: metrics.files_deleted,
        ..OperationReport::default()
    })
}

/// Make the table's content that of an earlier version, as a new version.
pub async fn restore(location: &Location, to: &RestoreTarget) -> Result<OperationReport> {
    let table = location.open_existing().await?;
    let builder = table.restore();
    let builder = match to {
        RestoreTarget::Commit(v) => {
            let v: u64 = v
                .parse()
                .map_err(|_| DeltaError::Config(format!("`{v}` is not a Delta version")))?;
            builder.with_version_to_restore(v)
        }
        RestoreTarget::Timestamp(t) => builder.with_datetime_to_restore(*t),
    };
    let (table, metrics) = builder.await.map_err(delta("restoring the table"))?;
    Ok(OperationReport {
        operation: "restore".into(),
        commit_id: Some(version_of(&table).to_string()),
        files_removed: metrics.num_removed_file as u64,
        files_added: metrics.num_restored_file as u64,
        ..OperationReport::default()
    })
}

/// `[destination.maintenance]` for one table.
#[derive(Debug, Clone)]
pub(crate) struct Maintenance {
    /// The table.
    pub location: Location,
    /// The settings.
    pub config: MaintenanceConfig,
    /// Target file size for compaction.
    pub target_size: u64,
}

impl Maintenance {
    /// After run `seq` committed: optimize (and vacuum) when it is due. Failures are logged,
    /// not returned: the run's data is already committed.
    pub(crate) async fn after_commit(&self, seq: i64) -> Vec<String> {
        let mut warnings = Vec::new();
        let Some(every) = self.config.optimize_every_runs.filter(|n| *n > 0) else {
            return warnings;
        };
        if u64::try_from(seq).map_or(true, |s| s % every != 0) {
            return warnings;
        }
        match optimize(
            &self.location,
            &self.config.zorder_by,
            Some(self.target_size),
            false,
        )
        .await
        {
            Ok(r) => info!(
                version = ?r.commit_id,
                added = r.files_added,
                removed = r.files_removed,
                "maintenance: optimized"
            ),
            Err(e) => {
                warn!(error = %e, "maintenance: optimize failed (the run is committed)");
                warnings.push(format!("maintenance: optimize failed: {e}"));
            }
        }
        let retain = self
            .config
            .vacuum_retain_hours
            .and_then(|h| i64::try_from(h).ok())
            .and_then(chrono::Duration::try_hours);
        if let Some(retain) = retain {
            match vacuum(&self.location, retain, false, true).await {
                Ok(r) => info!(deleted = r.deleted.len(), "maintenance: vacuumed"),
                Err(e) => {
                    warn!(error = %e, "maintenance: vacuum failed (the run is committed)");
                    warnings.push(format!("maintenance: vacuum failed: {e}"));
                }
            }
        }
        warnings
    }
}
