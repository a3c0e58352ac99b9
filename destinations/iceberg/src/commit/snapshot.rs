//! The snapshot producer: one `append`, `overwrite`, `delete` or `replace` snapshot adding and
//! removing data files, built from the iceberg crate's public manifest, manifest-list and
//! metadata builders. Written against the table metadata and a [`FileIO`] only, so it does
//! not care which catalog holds the table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use iceberg::io::FileIO;
use iceberg::spec::{
    DEFAULT_SCHEMA_NAME_MAPPING, DataContentType, DataFile, MAIN_BRANCH, ManifestContentType,
    ManifestFile, ManifestListWriter, ManifestStatus, ManifestWriterBuilder, Operation, Schema,
    Snapshot, SnapshotReference, SnapshotRetention, SnapshotSummaryCollector, Struct, Summary,
    TableMetadata,
};

use super::{TableChange, live, requirements};
use crate::catalog::Loaded;
use crate::error::{IcebergError, Result, ice};
use crate::write::WrittenFiles;

/// Which live files a change removes.
#[derive(Debug, Clone)]
pub(crate) enum Removal {
    /// None: an append.
    None,
    /// Every live file, data and delete files.
    All,
    /// Live data files of the default spec whose partition is one of these.
    Partitions(HashSet<Struct>),
    /// Live data files at these paths (each must still be live).
    Files(HashSet<String>),
}

/// A snapshot's change to the table.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotChange {
    /// New data files (written with the default partition spec).
    pub added: Vec<DataFile>,
    /// What goes.
    pub removal: Removal,
    /// An evolved schema to make current with this snapshot.
    pub schema: Option<Schema>,
    /// Extra snapshot summary properties (`pipe.*`).
    pub properties: Vec<(String, String)>,
    /// The added files hold exactly the rows of the removed ones (a compaction): the
    /// snapshot's operation is `replace`.
    pub rewrite: bool,
    /// Write the table's name mapping (registered files may lack field ids).
    pub name_mapping: bool,
}

/// A committed snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    /// The new snapshot's id.
    pub snapshot_id: i64,
    /// The table after the commit.
    pub table: Loaded,
    /// Rows in the data files this snapshot removed.
    pub removed_rows: u64,
}

/// What staging a snapshot produced besides the change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Staged {
    pub snapshot_id: i64,
    pub removed_rows: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh positive snapshot id not used by the table.
fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let bits = uuid::Uuid::now_v7().as_u128();
        let id = ((bits as u64) ^ ((bits >> 64) as u64)) as i64 & i64::MAX;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// Whether `removal` takes the live entry `file` (of spec `spec_id`).
fn removes(removal: &Removal, file: &DataFile, spec_id: i32, default_spec: i32) -> bool {
    match removal {
        Removal::None => false,
        Removal::All => true,
        Removal::Partitions(parts) => spec_id == default_spec && parts.contains(file.partition()),
        Removal::Files(paths) => paths.contains(file.file_path()),
    }
}

const TOTALS: [(&str, &str, &str); 6] = [
    ("total-data-files", "added-data-files", "deleted-data-files"),
    ("total-records", "added-records", "deleted-records"),
    ("total-files-size", "added-files-size", "removed-files-size"),
    (
        "total-delete-files",
        "added-delete-files",
        "removed-delete-files",
    ),
    (
        "total-position-deletes",
        "added-position-deletes",
        "removed-position-deletes",
    ),
    (
        "total-equality-deletes",
        "added-equality-deletes",
        "removed-equality-deletes",
    ),
];

/// The `total-*` summary fields: the parent's plus this snapshot's changes (left out, as
/// Java does, when the parent has no such total).
fn totals(props: &mut HashMap<String, String>, parent: Option<&Summary>) {
    let num = |m: &HashMap<String, String>, k: &str| m.get(k).and_then(|v| v.parse::<u64>().ok());
    for (total, added, removed) in TOTALS {
        let before = match parent {
            None => Some(0),
            Some(p) => num(&p.additional_properties, total),
        };
        if let Some(before) = before {
            let after = (before + num(props, added).unwrap_or(0))
                .saturating_sub(num(props, removed).unwrap_or(0));
            props.insert(total.to_string(), after.to_string());
        }
    }
}

/// Writes the manifests and the manifest list of one snapshot.
struct Producer<'a> {
    io: &'a FileIO,
    meta: &'a TableMetadata,
    schema: Arc<Schema>,
    snapshot_id: i64,
    sequence: i64,
    written: &'a WrittenFiles,
    manifests_written: usize,
    commit_uuid: uuid::Uuid,
    summary: SnapshotSummaryCollector,
    removed_rows: u64,
    removed_paths: HashSet<String>,
}

impl Producer<'_> {
    fn manifest_writer(&mut self, spec_id: i32) -> Result<ManifestWriterBuilder> {
        let spec = self.meta.partition_spec_by_id(spec_id).ok_or_else(|| {
            IcebergError::Config(format!("the table has no partition spec {spec_id}"))
        })?;
        self.manifests_written += 1;
        let path = format!(
            "{}/metadata/{}-m{}.avro",
            self.meta.location(),
            self.commit_uuid,
            self.manifests_written
        );
        self.written.record(&path);
        let output = self
            .io
            .new_output(&path)
            .map_err(ice(format!("creating manifest {path}")))?;
        Ok(ManifestWriterBuilder::new(
            output,
            Some(self.snapshot_id),
            self.schema.clone(),
            spec.as_ref().clone(),
        ))
    }

    /// The manifest of the added data files.
    async fn added(&mut self, files: &[DataFile]) -> Result<ManifestFile> {
        let default_spec = self.meta.default_partition_spec_id();
        let mut writer = self.manifest_writer(default_spec)?.build_v2_data();
        let spec = self.meta.default_partition_spec().clone();
        for file in files {
            self.summary
                .add_file(file, self.schema.clone(), spec.clone());
            writer
                .add_file(file.clone(), self.sequence)
                .map_err(ice("adding a data file to the manifest"))?;
        }
        writer
            .write_manifest_file()
            .await
            .map_err(ice("writing the manifest"))
    }

    /// `manifest` as the new snapshot lists it: unchanged when `removal` takes none of its
    /// live entries, else rewritten with those entries deleted and the others kept.
    async fn kept(&mut self, manifest: ManifestFile, removal: &Removal) -> Result<ManifestFile> {
        if matches!(removal, Removal::None) {
            return Ok(manifest);
        }
        let default_spec = self.meta.default_partition_spec_id();
        let entries = live::entries(self.io, &manifest).await?;
        let spec_id = manifest.partition_spec_id;
        let hit = entries
            .iter()
            .any(|e| e.is_alive() && removes(removal, e.data_file(), spec_id, default_spec));
        if !hit {
            return Ok(manifest);
        }
        let spec = self
            .meta
            .partition_spec_by_id(spec_id)
            .cloned()
            .ok_or_else(|| {
                IcebergError::Config(format!("the table has no partition spec {spec_id}"))
            })?;
        let builder = self.manifest_writer(spec_id)?;
        let mut writer = match manifest.content {
            ManifestContentType::Data => builder.build_v2_data(),
            ManifestContentType::Deletes => builder.build_v2_deletes(),
        };
        for entry in entries.iter().filter(|e| e.is_alive()) {
            let file = entry.data_file().clone();
            let seq = entry.sequence_number().unwrap_or(manifest.sequence_number);
            let file_seq = entry.file_sequence_number.or(Some(seq));
            if removes(removal, &file, spec_id, default_spec) {
                self.summary
                    .remove_file(&file, self.schema.clone(), spec.clone());
                self.removed_paths.insert(file.file_path().to_string());
                if entry.content_type() == DataContentType::Data {
                    self.removed_rows += file.record_count();
                }
                writer
                    .add_delete_file(file, seq, file_seq)
                    .map_err(ice("recording a removed file"))?;
            } else {
                let added_by = entry.snapshot_id().unwrap_or(manifest.added_snapshot_id);
                debug_assert!(entry.status() != ManifestStatus::Deleted);
                writer
                    .add_existing_file(file, added_by, seq, file_seq)
                    .map_err(ice("recording a kept file"))?;
            }
        }
        writer
            .write_manifest_file()
            .await
            .map_err(ice("writing the manifest"))
    }

    /// Write the manifest list of `manifests`; returns its path.
    async fn manifest_list(&mut self, manifests: Vec<ManifestFile>) -> Result<String> {
        let path = format!(
            "{}/metadata/snap-{}-1-{}.avro",
            self.meta.location(),
            self.snapshot_id,
            self.commit_uuid
        );
        self.written.record(&path);
        let parent = self.meta.current_snapshot().map(|p| p.snapshot_id());
        let mut list = ManifestListWriter::v2(
            self.io
                .new_output(&path)
                .map_err(ice("creating the manifest list"))?
                .writer()
                .await
                .map_err(ice("creating the manifest list"))?,
            self.snapshot_id,
            parent,
            self.sequence,
        );
        list.add_manifests(manifests.into_iter())
            .map_err(ice("writing the manifest list"))?;
        list.close()
            .await
            .map_err(ice("writing the manifest list"))?;
        Ok(path)
    }
}

/// `base`'s metadata with `change`'s evolved schema made current (if any) and the name
/// mapping brought up to date (when the change asks for one or the table has one), the
/// updates that did it, and whether there were any.
fn evolved(
    base: &Loaded,
    change: &SnapshotChange,
) -> Result<(TableMetadata, Vec<iceberg::TableUpdate>, bool)> {
    let metadata = base.metadata.as_ref().clone();
    let current = change
        .schema
        .as_ref()
        .unwrap_or_else(|| metadata.current_schema().as_ref());
    let mapping = (change.name_mapping
        || metadata
            .properties()
            .contains_key(DEFAULT_SCHEMA_NAME_MAPPING))
    .then(|| crate::schema::name_mapping(current))
    .filter(|m| metadata.properties().get(DEFAULT_SCHEMA_NAME_MAPPING) != Some(m));
    if change.schema.is_none() && mapping.is_none() {
        return Ok((metadata, Vec::new(), false));
    }
    let mut builder = metadata.into_builder(Some(base.location.clone()));
    if let Some(schema) = &change.schema {
        builder = builder
            .add_current_schema(schema.clone())
            .map_err(ice("adding the evolved schema"))?;
    }
    if let Some(mapping) = mapping {
        builder = builder
            .set_properties(HashMap::from([(
                DEFAULT_SCHEMA_NAME_MAPPING.to_string(),
                mapping,
            )]))
            .map_err(ice("setting the name mapping"))?;
    }
    let built = builder.build().map_err(ice("adding the evolved schema"))?;
    Ok((built.metadata, built.changes, true))
}

/// The snapshot's operation: `append` (nothing removed), `delete` (nothing added), `replace`
/// (a rewrite of the same rows) or `overwrite`.
fn operation(removed_any: bool, added_any: bool, rewrite: bool) -> Operation {
    match (removed_any, added_any) {
        (false, _) => Operation::Append,
        (true, false) => Operation::Delete,
        (true, true) if rewrite => Operation::Replace,
        (true, true) => Operation::Overwrite,
    }
}

/// Stage `change` on `base`: write its manifests and manifest list (recorded in `written`)
/// and build the new metadata with the snapshot as `main`.
pub(super) async fn stage(
    io: &FileIO,
    base: &Loaded,
    change: &SnapshotChange,
    written: &WrittenFiles,
) -> Result<(TableChange, Staged)> {
    let (metadata, mut updates, evolved_any) = evolved(base, change)?;
    let meta = &metadata;
    let mut producer = Producer {
        io,
        meta,
        schema: meta.current_schema().clone(),
        snapshot_id: new_snapshot_id(meta),
        sequence: meta.next_sequence_number(),
        written,
        manifests_written: 0,
        commit_uuid: uuid::Uuid::now_v7(),
        summary: SnapshotSummaryCollector::default(),
        removed_rows: 0,
        removed_paths: HashSet::new(),
    };
    let mut manifests: Vec<ManifestFile> = Vec::new();
    if !change.added.is_empty() {
        manifests.push(producer.added(&change.added).await?);
    }
    for manifest in live::manifests(io, meta).await? {
        manifests.push(producer.kept(manifest, &change.removal).await?);
    }
    if let Removal::Files(paths) = &change.removal
        && let Some(gone) = paths.iter().find(|p| !producer.removed_paths.contains(*p))
    {
        return Err(IcebergError::Conflict(format!(
            "data file {gone} was removed by another writer while this run rewrote it; \
             nothing was committed, run again"
        )));
    }
    let list_path = producer.manifest_list(manifests).await?;
    let parent = meta.current_snapshot();
    let mut props = std::mem::take(&mut producer.summary).build();
    totals(&mut props, parent.map(|p| p.summary()));
    if matches!(change.removal, Removal::Partitions(_)) {
        props.insert("replace-partitions".into(), "true".into());
    }
    props.extend(change.properties.iter().cloned());
    let snapshot = Snapshot::builder()
        .with_snapshot_id(producer.snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(producer.sequence)
        .with_timestamp_ms(now_ms().max(meta.last_updated_ms()))
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: operation(
                !producer.removed_paths.is_empty(),
                !change.added.is_empty(),
                change.rewrite,
            ),
            additional_properties: props,
        })
        .with_schema_id(meta.current_schema_id())
        .build();
    let location = (!evolved_any).then(|| base.location.clone());
    let built = metadata
        .clone()
        .into_builder(location)
        .add_snapshot(snapshot)
        .map_err(ice("adding the snapshot"))?
        .set_ref(
            MAIN_BRANCH,
            SnapshotReference::new(
                producer.snapshot_id,
                SnapshotRetention::branch(None, None, None),
            ),
        )
        .map_err(ice("moving the main branch"))?
        .build()
        .map_err(ice("building the new table metadata"))?;
    updates.extend(built.changes);
    let staged = Staged {
        snapshot_id: producer.snapshot_id,
        removed_rows: producer.removed_rows,
    };
    let table_change = TableChange {
        base: base.clone(),
        staged: built.metadata,
        updates,
        requirements: requirements(&base.metadata, change.schema.is_some()),
    };
    Ok((table_change, staged))
}
