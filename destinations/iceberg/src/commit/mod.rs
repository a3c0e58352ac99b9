//! Our own Iceberg commits. Every write operation — an append, an overwrite, a merge's
//! copy-on-write rewrite, a compaction, expiring snapshots, a rollback — produces one
//! [`TableChange`]: the new table metadata, and the same change as the REST catalog protocol
//! spells it (`TableUpdate`s plus the `TableRequirement`s the base must still meet). A catalog
//! applies whichever form it takes ([`crate::catalog::CommitTarget`]): the SQL catalog writes
//! the metadata file and swaps its pointer by compare-and-swap; a REST catalog posts the
//! updates and requirements. (iceberg 0.10.1 only commits fast appends itself and keeps its
//! transaction builders private; see docs/dependencies.md.)

pub(crate) mod live;
mod snapshot;

use iceberg::TableRequirement;
use iceberg::TableUpdate;
use iceberg::spec::{MAIN_BRANCH, SnapshotReference, SnapshotRetention, TableMetadata};

use crate::catalog::{CommitTarget, Loaded};
use crate::error::{IcebergError, Result, ice};
use crate::write::WrittenFiles;

pub(crate) use snapshot::{Committed, Removal, SnapshotChange};

/// One commit, in both forms a catalog may want.
#[derive(Debug, Clone)]
pub(crate) struct TableChange {
    /// The table as the change was planned on.
    pub base: Loaded,
    /// The whole new metadata (what a pointer-swapping catalog writes).
    pub staged: TableMetadata,
    /// What changed, as `TableUpdate`s (what a REST catalog is sent).
    pub updates: Vec<TableUpdate>,
    /// What must still hold of the table for the updates to apply.
    pub requirements: Vec<TableRequirement>,
}

/// The requirements of a change planned on `base`: the same table, `main` still at the same
/// snapshot, the same default partition spec, and — when `schema_changed` — the same current
/// schema and last column id.
pub(crate) fn requirements(base: &TableMetadata, schema_changed: bool) -> Vec<TableRequirement> {
    let mut out = vec![
        TableRequirement::UuidMatch { uuid: base.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.to_string(),
            snapshot_id: base.current_snapshot_id(),
        },
        TableRequirement::DefaultSpecIdMatch {
            default_spec_id: base.default_partition_spec_id(),
        },
    ];
    if schema_changed {
        out.push(TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: base.current_schema_id(),
        });
        out.push(TableRequirement::LastAssignedFieldIdMatch {
            last_assigned_field_id: base.last_column_id(),
        });
    }
    out
}

/// Stage `change` (a snapshot adding and removing files) on `base` and try to commit it once.
/// `Ok(None)`: another writer committed first (this attempt's files are deleted; the caller
/// reloads and tries again).
pub(crate) async fn commit_once(
    target: &dyn CommitTarget,
    base: &Loaded,
    change: &SnapshotChange,
) -> Result<Option<Committed>> {
    let attempt = WrittenFiles::default();
    let result = async {
        let (table_change, staged) =
            snapshot::stage(target.file_io(), base, change, &attempt).await?;
        Ok::<_, IcebergError>(target.commit(&table_change).await?.map(|table| Committed {
            snapshot_id: staged.snapshot_id,
            table,
            removed_rows: staged.removed_rows,
        }))
    }
    .await;
    match &result {
        Ok(Some(_)) => {}
        // The catalog may have taken the commit: keep everything.
        Err(IcebergError::CommitUnknown { .. }) => {}
        Ok(None) | Err(_) => {
            attempt.delete_all(target.file_io()).await;
        }
    }
    result
}

/// A change of the table's metadata only: no data or manifest files.
#[derive(Debug, Clone)]
pub(crate) enum MetadataChange {
    /// Remove these snapshots (expiry); `main` must not be one of them.
    ExpireSnapshots(Vec<i64>),
    /// Point `main` at this earlier snapshot (rollback).
    SetMain(i64),
}

/// Stage a metadata-only change on `base`.
pub(crate) fn stage_metadata(base: &Loaded, change: &MetadataChange) -> Result<TableChange> {
    let builder = base
        .metadata
        .as_ref()
        .clone()
        .into_builder(Some(base.location.clone()));
    let builder = match change {
        MetadataChange::ExpireSnapshots(ids) => builder.remove_snapshots(ids),
        MetadataChange::SetMain(id) => builder
            .set_ref(
                MAIN_BRANCH,
                SnapshotReference::new(*id, SnapshotRetention::branch(None, None, None)),
            )
            .map_err(ice("moving the main branch"))?,
    };
    let built = builder
        .build()
        .map_err(ice("building the new table metadata"))?;
    Ok(TableChange {
        base: base.clone(),
        staged: built.metadata,
        updates: built.changes,
        requirements: requirements(&base.metadata, false),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use iceberg::spec::{
        NestedField, PrimitiveType, Schema, TableMetadataBuilder, Type, UnboundPartitionSpec,
    };

    use super::*;

    fn table() -> Loaded {
        let schema = Schema::builder()
            .with_fields(vec![Arc::new(NestedField::required(
                1,
                "id",
                Type::Primitive(PrimitiveType::Long),
            ))])
            .build()
            .expect("schema");
        let creation = iceberg::TableCreation::builder()
            .name("t".into())
            .location("file:///tmp/t".into())
            .schema(schema)
            .partition_spec(UnboundPartitionSpec::builder().build())
            .build();
        let metadata = TableMetadataBuilder::from_table_creation(creation)
            .expect("builder")
            .build()
            .expect("metadata")
            .metadata;
        Loaded {
            metadata: Arc::new(metadata),
            location: "file:///tmp/t/metadata/00000-x.metadata.json".into(),
        }
    }

    #[test]
    fn a_change_says_what_the_base_must_still_be() {
        let base = table();
        let plain = requirements(&base.metadata, false);
        assert!(plain.contains(&TableRequirement::UuidMatch {
            uuid: base.metadata.uuid()
        }));
        assert!(plain.contains(&TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.into(),
            snapshot_id: None,
        }));
        assert_eq!(plain.len(), 3);
        let evolving = requirements(&base.metadata, true);
        assert!(
            evolving.contains(&TableRequirement::LastAssignedFieldIdMatch {
                last_assigned_field_id: 1
            })
        );
    }

    #[test]
    fn a_metadata_change_lists_its_updates() {
        let base = table();
        let change =
            stage_metadata(&base, &MetadataChange::ExpireSnapshots(vec![])).expect("staged");
        assert!(change.updates.is_empty(), "{:?}", change.updates);
        assert_eq!(change.requirements.len(), 3);
    }
}
