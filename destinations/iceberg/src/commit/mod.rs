//! Our own snapshot producer: one `append` or `overwrite` snapshot per run, built from the
//! iceberg crate's public manifest, manifest-list and metadata builders and committed through
//! a [`CommitTarget`] by compare-and-swap. (iceberg 0.10.1 only commits fast appends itself;
//! see DESIGN.md §5.) Written against [`CommitTarget`] only, so it does not care which
//! catalog holds the table.

pub(crate) mod live;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, MAIN_BRANCH, ManifestContentType, ManifestFile, ManifestListWriter, ManifestStatus,
    ManifestWriterBuilder, Operation, Schema, Snapshot, SnapshotReference, SnapshotRetention,
    SnapshotSummaryCollector, Struct, Summary, TableMetadata,
};

use crate::catalog::{CommitTarget, Loaded};
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

/// One run's change to the table.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// New data files (written with the default partition spec).
    pub added: Vec<DataFile>,
    /// What goes.
    pub removal: Removal,
    /// An evolved schema to make current with this snapshot.
    pub schema: Option<Schema>,
    /// Extra snapshot summary properties (`pipe.*`).
    pub properties: Vec<(String, String)>,
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

struct Producer<'a> {
    io: &'a FileIO,
    base: &'a TableMetadata,
    schema: Arc<Schema>,
    snapshot_id: i64,
    sequence: i64,
    written: &'a WrittenFiles,
    manifests_written: usize,
    commit_uuid: uuid::Uuid,
}

impl Producer<'_> {
    fn manifest_writer(&mut self, spec_id: i32) -> Result<ManifestWriterBuilder> {
        let spec = self.base.partition_spec_by_id(spec_id).ok_or_else(|| {
            IcebergError::Config(format!("the table has no partition spec {spec_id}"))
        })?;
        self.manifests_written += 1;
        let path = format!(
            "{}/metadata/{}-m{}.avro",
            self.base.location(),
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
}

/// Stage `change` on `base` and try to commit it once. `Ok(None)`: another writer committed
/// first (this attempt's files are deleted; the caller reloads and tries again).
pub(crate) async fn commit_once(
    target: &dyn CommitTarget,
    base: &Loaded,
    change: &Change,
) -> Result<Option<Committed>> {
    let io = target.file_io();
    let attempt = WrittenFiles::default();
    let result = stage_and_commit(target, base, change, &attempt).await;
    match &result {
        Ok(Some(_)) => {}
        // The catalog may have taken the commit: keep everything.
        Err(IcebergError::CommitUnknown { .. }) => {}
        Ok(None) | Err(_) => {
            attempt.delete_all(io).await;
        }
    }
    result
}

async fn stage_and_commit(
    target: &dyn CommitTarget,
    base: &Loaded,
    change: &Change,
    written: &WrittenFiles,
) -> Result<Option<Committed>> {
    let io = target.file_io();
    let mut metadata = base.metadata.as_ref().clone();
    let mut builder_location = Some(base.location.clone());
    if let Some(schema) = &change.schema {
        metadata = metadata
            .into_builder(builder_location.take())
            .add_current_schema(schema.clone())
            .map_err(ice("adding the evolved schema"))?
            .build()
            .map_err(ice("adding the evolved schema"))?
            .metadata;
    }
    let meta = &metadata;
    let default_spec = meta.default_partition_spec_id();
    let mut producer = Producer {
        io,
        base: meta,
        schema: meta.current_schema().clone(),
        snapshot_id: new_snapshot_id(meta),
        sequence: meta.next_sequence_number(),
        written,
        manifests_written: 0,
        commit_uuid: uuid::Uuid::now_v7(),
    };
    let mut summary = SnapshotSummaryCollector::default();
    let mut manifests: Vec<ManifestFile> = Vec::new();
    let mut removed_rows = 0u64;
    let mut removed_paths = HashSet::new();

    if !change.added.is_empty() {
        let mut writer = producer.manifest_writer(default_spec)?.build_v2_data();
        let spec = meta.default_partition_spec().clone();
        for file in &change.added {
            summary.add_file(file, producer.schema.clone(), spec.clone());
            writer
                .add_file(file.clone(), producer.sequence)
                .map_err(ice("adding a data file to the manifest"))?;
        }
        manifests.push(
            writer
                .write_manifest_file()
                .await
                .map_err(ice("writing the manifest"))?,
        );
    }

    for manifest in live::manifests(io, meta).await? {
        if matches!(change.removal, Removal::None) {
            manifests.push(manifest);
            continue;
        }
        let entries = live::entries(io, &manifest).await?;
        let spec_id = manifest.partition_spec_id;
        let hit = entries.iter().any(|e| {
            e.is_alive() && removes(&change.removal, e.data_file(), spec_id, default_spec)
        });
        if !hit {
            manifests.push(manifest);
            continue;
        }
        let spec = meta.partition_spec_by_id(spec_id).cloned().ok_or_else(|| {
            IcebergError::Config(format!("the table has no partition spec {spec_id}"))
        })?;
        let builder = producer.manifest_writer(spec_id)?;
        let mut writer = match manifest.content {
            ManifestContentType::Data => builder.build_v2_data(),
            ManifestContentType::Deletes => builder.build_v2_deletes(),
        };
        for entry in entries.iter().filter(|e| e.is_alive()) {
            let file = entry.data_file().clone();
            let seq = entry.sequence_number().unwrap_or(manifest.sequence_number);
            let file_seq = entry.file_sequence_number.or(Some(seq));
            if removes(&change.removal, &file, spec_id, default_spec) {
                summary.remove_file(&file, producer.schema.clone(), spec.clone());
                removed_paths.insert(file.file_path().to_string());
                if entry.content_type() == iceberg::spec::DataContentType::Data {
                    removed_rows += file.record_count();
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
        manifests.push(
            writer
                .write_manifest_file()
                .await
                .map_err(ice("writing the manifest"))?,
        );
    }
    if let Removal::Files(paths) = &change.removal
        && let Some(gone) = paths.iter().find(|p| !removed_paths.contains(*p))
    {
        return Err(IcebergError::Conflict(format!(
            "data file {gone} was removed by another writer while this run rewrote it; \
             nothing was committed, run again"
        )));
    }

    let list_path = format!(
        "{}/metadata/snap-{}-1-{}.avro",
        meta.location(),
        producer.snapshot_id,
        producer.commit_uuid
    );
    written.record(&list_path);
    let parent = meta.current_snapshot();
    let mut list = ManifestListWriter::v2(
        io.new_output(&list_path)
            .map_err(ice("creating the manifest list"))?
            .writer()
            .await
            .map_err(ice("creating the manifest list"))?,
        producer.snapshot_id,
        parent.map(|p| p.snapshot_id()),
        producer.sequence,
    );
    list.add_manifests(manifests.into_iter())
        .map_err(ice("writing the manifest list"))?;
    list.close()
        .await
        .map_err(ice("writing the manifest list"))?;

    let operation = match (removed_paths.is_empty(), change.added.is_empty()) {
        (true, _) => Operation::Append,
        (false, true) => Operation::Delete,
        (false, false) => Operation::Overwrite,
    };
    let mut props = summary.build();
    totals(&mut props, parent.map(|p| p.summary()));
    if matches!(change.removal, Removal::Partitions(_)) {
        props.insert("replace-partitions".into(), "true".into());
    }
    for (k, v) in &change.properties {
        props.insert(k.clone(), v.clone());
    }
    let snapshot = Snapshot::builder()
        .with_snapshot_id(producer.snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(producer.sequence)
        .with_timestamp_ms(now_ms().max(meta.last_updated_ms()))
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation,
            additional_properties: props,
        })
        .with_schema_id(meta.current_schema_id())
        .build();
    let staged = metadata
        .clone()
        .into_builder(builder_location)
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
        .map_err(ice("building the new table metadata"))?
        .metadata;
    let snapshot_id = producer.snapshot_id;
    Ok(target.commit(base, staged).await?.map(|table| Committed {
        snapshot_id,
        table,
        removed_rows,
    }))
}
