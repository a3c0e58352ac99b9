//! `pipe inspect`: the table's schema, partition spec, size and snapshots, from its metadata.

use std::collections::BTreeMap;

use pipe_framework::{ColumnInfo, CommitInfo, TableInfo};

use crate::catalog::Loaded;

fn total(summary: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    summary.get(key).and_then(|v| v.parse().ok())
}

/// The [`TableInfo`] of a loaded table.
pub(crate) fn table_info(name: &str, table: &Loaded) -> TableInfo {
    let meta = &table.metadata;
    let columns = meta
        .current_schema()
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
    let current = meta.current_snapshot_id();
    let mut snapshots: Vec<_> = meta.snapshots().collect();
    snapshots.sort_by_key(|s| (s.sequence_number(), s.timestamp_ms()));
    let commits: Vec<CommitInfo> = snapshots
        .iter()
        .map(|s| CommitInfo {
            id: s.snapshot_id().to_string(),
            parent: s.parent_snapshot_id().map(|p| p.to_string()),
            timestamp: s
                .timestamp()
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|_| s.timestamp_ms().to_string()),
            operation: s.summary().operation.as_str().to_string(),
            current: Some(s.snapshot_id()) == current,
            summary: s
                .summary()
                .additional_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .collect();
    let head = commits.iter().find(|c| c.current).map(|c| &c.summary);
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
    TableInfo {
        table: name.to_string(),
        location: Some(table.location.clone()),
        columns,
        properties,
        rows: head.map_or(Some(0), |s| total(s, "total-records")),
        files: head.map_or(Some(0), |s| total(s, "total-data-files")),
        bytes: head.map_or(Some(0), |s| total(s, "total-files-size")),
        commits,
    }
}
