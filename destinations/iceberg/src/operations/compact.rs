//! `optimize` on Iceberg: rewrite the small data files of each partition into files of the
//! target size, as one `replace` snapshot. Rows stream from the old files into the writers
//! (memory: the writers' open row groups); with a sort order (the table's, or `order_by`) each
//! partition's rows go through an external sort (bounded memory, spilling to temp files) and
//! are written in order by one writer, so the new files (at the target size) do not overlap. A concurrent append does not conflict (its files are not touched); a
//! concurrent rewrite of the same files does, and nothing is committed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_schema::{SchemaRef, SortOptions};
use futures::TryStreamExt;
use iceberg::spec::{NullOrder, Schema, SortDirection, TableMetadata};
use pipe_framework::cluster::{self, ExternalSort, SortKey};
use pipe_framework::operations::{OperationReport, OptimizeRequest};
use pipe_framework::parquet_options::WriterSettings;

use crate::catalog::{CommitTarget, Loaded};
use crate::commit::live::{self, LiveFile};
use crate::commit::{Removal, SnapshotChange, commit_once};
use crate::error::{IcebergError, Result};
use crate::merge::read;
use crate::parallel::ParallelWriter;
use crate::write::{DataFiles, WrittenFiles};

/// Files at least this share of the target size are left alone.
const SMALL_SHARE: (u64, u64) = (3, 4);

/// The compaction's settings.
#[derive(Debug)]
pub(super) struct Settings<'a> {
    pub options: &'a WriterSettings,
    pub retries: u32,
}

/// Small live files of the default spec, by partition, where a partition has at least two.
fn plan(meta: &TableMetadata, live: Vec<LiveFile>, target: u64) -> Vec<Vec<LiveFile>> {
    let default_spec = meta.default_partition_spec_id();
    let small = |f: &LiveFile| {
        f.entry.data_file().file_size_in_bytes() * SMALL_SHARE.1 < target * SMALL_SHARE.0
    };
    let mut groups: BTreeMap<String, Vec<LiveFile>> = BTreeMap::new();
    for file in live {
        if file.spec_id == default_spec && small(&file) {
            let key = format!("{:?}", file.entry.data_file().partition());
            groups.entry(key).or_default().push(file);
        }
    }
    groups.into_values().filter(|g| g.len() >= 2).collect()
}

/// The sort to apply: `order_by` column names, else the table's default sort order (fields
/// with identity transforms), as (column index in the write schema, descending, nulls first).
fn sort_columns(
    schema: &Schema,
    meta: &TableMetadata,
    write_schema: &SchemaRef,
    order_by: &[String],
) -> Result<Vec<(usize, bool, bool)>> {
    if !order_by.is_empty() {
        return order_by
            .iter()
            .map(|name| {
                pipe_framework::columns::find(write_schema, name)
                    .map(|i| (i, false, true))
                    .ok_or_else(|| {
                        IcebergError::Config(format!(
                            "order_by column `{name}` is not in the table"
                        ))
                    })
            })
            .collect();
    }
    Ok(meta
        .default_sort_order()
        .fields
        .iter()
        .filter(|f| f.transform == iceberg::spec::Transform::Identity)
        .filter_map(|f| {
            let name = schema.field_by_id(f.source_id)?.name.clone();
            let i = write_schema.index_of(&name).ok()?;
            Some((
                i,
                f.direction == SortDirection::Descending,
                f.null_order == NullOrder::First,
            ))
        })
        .collect())
}

/// Compact the table behind `target`.
pub(super) async fn optimize(
    target: &Arc<dyn CommitTarget>,
    request: &OptimizeRequest,
    settings: &Settings<'_>,
) -> Result<OperationReport> {
    let mut report = OperationReport {
        operation: "optimize".into(),
        dry_run: request.dry_run,
        ..OperationReport::default()
    };
    let Some(base) = target.load().await? else {
        return Err(IcebergError::Config("the table does not exist".into()));
    };
    let io = target.file_io();
    let size = request
        .target_file_size
        .unwrap_or(settings.options.target_file_size);
    let groups = plan(
        &base.metadata,
        live::live_data_files(io, &base.metadata).await?,
        size,
    );
    let count: usize = groups.iter().map(Vec::len).sum();
    report
        .detail
        .insert("partitions".into(), groups.len().to_string());
    if groups.is_empty() || request.dry_run {
        report.files_removed = if request.dry_run { count as u64 } else { 0 };
        return Ok(report);
    }
    let written = WrittenFiles::default();
    let result = rewrite(target, &base, groups, request, settings, size, &written).await;
    match result {
        Ok((snapshot, added, removed)) => {
            written.forget_all();
            report.commit_id = Some(snapshot.to_string());
            report.files_added = added;
            report.files_removed = removed;
            Ok(report)
        }
        Err(e) => {
            written.delete_all(io).await;
            Err(e)
        }
    }
}

async fn rewrite(
    target: &Arc<dyn CommitTarget>,
    base: &Loaded,
    groups: Vec<Vec<LiveFile>>,
    request: &OptimizeRequest,
    settings: &Settings<'_>,
    size: u64,
    written: &WrittenFiles,
) -> Result<(i64, u64, u64)> {
    let io = target.file_io();
    let meta = &base.metadata;
    let schema = meta.current_schema().as_ref().clone();
    let write_schema: SchemaRef = Arc::new(crate::schema::write_schema(&schema)?);
    let order = sort_columns(&schema, meta, &write_schema, &request.order_by)?;
    let options = WriterSettings {
        target_file_size: size,
        ..settings.options.clone()
    };
    let data_location = meta
        .properties()
        .get("write.data.path")
        .cloned()
        .unwrap_or_else(|| format!("{}/data", meta.location()));
    let files = DataFiles {
        io: io.clone(),
        data_location,
        schema: Arc::new(schema.clone()),
        spec: meta.default_partition_spec().clone(),
        prefix: format!("optimize-{}", uuid::Uuid::now_v7().simple()),
        options,
        written: written.clone(),
    };
    // Sorted: each partition's rows through an external sort (bounded memory), written by one
    // writer in order, so the files (rolled at the target size) do not overlap.
    let key = if order.is_empty() {
        None
    } else {
        let columns: Vec<(usize, SortOptions)> = order
            .iter()
            .map(|&(i, descending, nulls_first)| {
                (
                    i,
                    SortOptions {
                        descending,
                        nulls_first,
                    },
                )
            })
            .collect();
        Some(SortKey::new(&write_schema, &columns)?)
    };
    let writers = if key.is_some() {
        1
    } else {
        settings.options.writers.max(1)
    };
    let mut writer = ParallelWriter::new(files, writers, None);
    let mut removed: HashSet<String> = HashSet::new();
    let copied = async {
        for group in &groups {
            let mut sorter = key
                .as_ref()
                .map(|k| ExternalSort::new(write_schema.clone(), k.clone(), cluster::SORT_MEMORY));
            for file in group {
                let path = file.entry.file_path().to_string();
                let mut batches = Box::pin(read::batches(io, &path, &schema, &write_schema).await?);
                while let Some(batch) = batches.try_next().await? {
                    match &mut sorter {
                        Some(sorter) => sorter.push(batch)?,
                        None => writer.write(batch).await?,
                    }
                }
                removed.insert(path);
            }
            if let Some(sorter) = sorter {
                let mut sorted = sorter.finish().await?;
                while let Some(batch) = sorted.try_next().await? {
                    writer.write(batch).await?;
                }
            }
        }
        Ok::<(), IcebergError>(())
    }
    .await;
    if let Err(e) = copied {
        let _ = writer.close().await;
        return Err(e);
    }
    let added = writer.close().await?;
    let files = (added.len() as u64, removed.len() as u64);
    let change = SnapshotChange {
        added,
        removal: Removal::Files(removed),
        schema: None,
        properties: vec![("pipe.operation".to_string(), "optimize".to_string())],
        rewrite: true,
        name_mapping: false,
    };
    let mut base = base.clone();
    let mut attempt = 0;
    loop {
        if let Some(done) = commit_once(target.as_ref(), &base, &change).await? {
            return Ok((done.snapshot_id, files.0, files.1));
        }
        attempt += 1;
        if attempt > settings.retries {
            return Err(IcebergError::Conflict(format!(
                "gave up after {attempt} attempts: other writers kept committing first; \
                 nothing was compacted"
            )));
        }
        base = target
            .load()
            .await?
            .ok_or_else(|| IcebergError::Conflict("the table was dropped".into()))?;
        if base.metadata.current_schema_id() != meta.current_schema_id()
            || base.metadata.default_partition_spec_id() != meta.default_partition_spec_id()
        {
            return Err(IcebergError::Conflict(
                "another writer changed the table's schema or partition spec while it was \
                 compacted; nothing was committed, run again"
                    .into(),
            ));
        }
    }
}
