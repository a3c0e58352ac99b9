//! What `pipe table inspect|history` show of an Iceberg table: schema (with field ids),
//! partition spec, sort order, size and snapshots, from its metadata — now, or as of a
//! snapshot (time travel).

use std::collections::BTreeMap;

use iceberg::spec::{Snapshot, TableMetadata};
use pipe_framework::operations::keys;
use pipe_framework::{ColumnInfo, CommitInfo, TableInfo};

use crate::catalog::Loaded;
use crate::error::{IcebergError, Result};

fn total(summary: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    summary.get(key).and_then(|v| v.parse().ok())
}

/// One snapshot as a commit.
fn commit(s: &Snapshot, current: Option<i64>) -> CommitInfo {
    let summary: BTreeMap<String, String> = s
        .summary()
        .additional_properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    CommitInfo {
        id: s.snapshot_id().to_string(),
        parent: s.parent_snapshot_id().map(|p| p.to_string()),
        timestamp: s
            .timestamp()
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|_| s.timestamp_ms().to_string()),
        operation: s.summary().operation.as_str().to_string(),
        current: Some(s.snapshot_id()) == current,
        pipeline: summary.get(keys::PIPELINE).cloned(),
        run_id: summary.get(keys::RUN_ID).cloned(),
        rows: total(&summary, "total-records"),
        files: total(&summary, "total-data-files"),
        bytes: total(&summary, "total-files-size"),
        summary,
    }
}

/// Every snapshot of the table as a commit, oldest first; `current` marks the one shown as
/// the table's state.
pub(crate) fn commits(meta: &TableMetadata, current: Option<i64>) -> Vec<CommitInfo> {
    let mut snapshots: Vec<_> = meta.snapshots().collect();
    snapshots.sort_by_key(|s| (s.sequence_number(), s.timestamp_ms()));
    snapshots.iter().map(|s| commit(s, current)).collect()
}

/// The [`TableInfo`] of a loaded table, as of snapshot `at` (default: the current one).
pub(crate) fn table_info(name: &str, table: &Loaded, at: Option<i64>) -> Result<TableInfo> {
    let meta = &table.metadata;
    let shown = match at {
        None => meta.current_snapshot().cloned(),
        Some(id) => Some(meta.snapshot_by_id(id).cloned().ok_or_else(|| {
            IcebergError::Config(format!(
                "snapshot {id} is not in the table (expired, or of another table); its \
                 snapshots: {}",
                meta.snapshots()
                    .map(|s| s.snapshot_id().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
    };
    let schema = match &shown {
        Some(s) => s
            .schema(meta)
            .map_err(|e| IcebergError::Config(format!("the snapshot's schema: {e}")))?,
        None => meta.current_schema().clone(),
    };
    let columns = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| ColumnInfo {
            name: f.name.clone(),
            r#type: f.field_type.to_string(),
            id: Some(i64::from(f.id)),
            required: f.required,
        })
        .collect();
    let current = shown.as_ref().map(|s| s.snapshot_id());
    let mut commits = commits(meta, current);
    if let Some(shown) = &shown {
        // Time travel: the history up to the snapshot shown.
        commits.retain(|c| {
            meta.snapshot_by_id(c.id.parse().unwrap_or_default())
                .is_some_and(|s| s.sequence_number() <= shown.sequence_number())
        });
    }
    let head = commits.iter().find(|c| c.current);
    let mut properties = BTreeMap::from([
        (
            "format-version".to_string(),
            (meta.format_version() as u8).to_string(),
        ),
        ("table-uuid".to_string(), meta.uuid().to_string()),
        ("location".to_string(), meta.location().to_string()),
        (
            "partition-spec".to_string(),
            meta.default_partition_spec()
                .fields()
                .iter()
                .map(|f| format!("{}: {}({})", f.name, f.transform, f.source_id))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "sort-order".to_string(),
            meta.default_sort_order()
                .fields
                .iter()
                .map(|f| format!("{} {} {}", f.source_id, f.direction, f.null_order))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ]);
    for (k, v) in meta.properties() {
        properties.insert(format!("property.{k}"), v.clone());
    }
    Ok(TableInfo {
        table: name.to_string(),
        location: Some(table.location.clone()),
        columns,
        properties,
        rows: head.map_or(Some(0), |c| c.rows),
        files: head.map_or(Some(0), |c| c.files),
        bytes: head.map_or(Some(0), |c| c.bytes),
        commits,
    })
}

/// Live data files outside the table's location (registered with `mode = "register"`) are
/// not the table's own writes and may have been moved or deleted since: check each exists
/// (one HEAD each) and report `registered_files` and `missing_files` (the first few named).
pub(crate) async fn registered_files(
    io: &iceberg::io::FileIO,
    metadata: &TableMetadata,
    info: &mut TableInfo,
) -> crate::error::Result<()> {
    use futures::StreamExt;
    let own = format!("{}/", metadata.location().trim_end_matches('/'));
    let outside: Vec<String> = crate::commit::live::live_data_files(io, metadata)
        .await?
        .iter()
        .map(|f| f.entry.file_path().to_string())
        .filter(|p| !p.starts_with(&own))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    let mut missing: Vec<String> = futures::stream::iter(outside.iter().cloned())
        .map(|path| {
            let io = io.clone();
            async move { (!io.exists(&path).await.unwrap_or(false)).then_some(path) }
        })
        .buffer_unordered(32)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    missing.sort();
    info.properties
        .insert("registered_files".into(), outside.len().to_string());
    let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
    let text = match missing.len() {
        0 => "0".to_string(),
        n if n > shown.len() => format!("{n}: {}, …", shown.join(", ")),
        n => format!("{n}: {}", shown.join(", ")),
    };
    if !missing.is_empty() {
        tracing::warn!(missing = missing.len(), "registered data files are missing");
    }
    info.properties.insert("missing_files".into(), text);
    Ok(())
}
