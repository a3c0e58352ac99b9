//! Copy-on-write merge: the run's rows are staged (sorted as they come when clustered by the
//! merge keys, else spooled to a local Arrow IPC file) while their keys are indexed; at
//! commit, live data files whose statistics can hold an incoming key are read
//! (key columns first, the whole file only if a key matches), rewritten without the matched
//! rows, and the deduplicated incoming rows (last occurrence of a key wins) are added. Memory
//! holds the incoming keys, not the table.
//!
//! Clustered (a sort key): the rows written come out in key order — the incoming rows sorted
//! while they were staged, the remains of unsorted or overlapping files through an external
//! sort, and the remains of the sorted, disjoint files streamed in key order, all merged — so
//! the new files hold disjoint key ranges and the next merge touches few of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{ArrayRef, RecordBatch};
use arrow_buffer::BooleanBuffer;
use arrow_schema::{Schema, SchemaRef};
use deltalake::logstore::ObjectStoreRef;
use futures::{StreamExt, TryStreamExt};
use pipe_framework::cluster::{self, SortKey};
use pipe_framework::merge_keys::{FileScan, KeyIndex, KeyValue, Matched, StagedMerge};
use pipe_framework::parallel::{self, SCANS_AT_ONCE};

use crate::error::{DeltaError, Result, data};
use crate::read::{self, LiveFile};
use crate::write::ParallelWriter;

/// One run's staged merge.
#[derive(Debug)]
pub(crate) struct MergeState {
    staged: StagedMerge,
    /// Key column names, in key order.
    key_names: Vec<String>,
    schema: SchemaRef,
    cluster: Option<Arc<SortKey>>,
}

/// What a merge changes.
#[derive(Debug, Default)]
pub(crate) struct MergeOutcome {
    /// Live files rewritten without their matched rows (to remove from the table).
    pub rewritten: Vec<LiveFile>,
    /// Incoming keys that matched a row of the table.
    pub updated: u64,
    /// Incoming keys that did not.
    pub inserted: u64,
    /// Files read to look for keys.
    pub scanned: usize,
    /// Rows copied unchanged into rewritten files.
    pub copied: u64,
}

impl MergeState {
    /// Start staging rows of `schema` (the table's) keyed on the columns at `key_columns`, to
    /// be written clustered by `cluster` (if any).
    pub(crate) fn new(
        schema: SchemaRef,
        key_columns: Vec<usize>,
        cluster: Option<Arc<SortKey>>,
    ) -> Result<Self> {
        let key_names = key_columns
            .iter()
            .map(|&i| schema.field(i).name().clone())
            .collect();
        let staged = StagedMerge::new(schema.clone(), key_columns, cluster.as_ref())?;
        Ok(Self {
            staged,
            key_names,
            schema,
            cluster,
        })
    }

    /// Stage one batch.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        Ok(self.staged.write(batch)?)
    }

    /// Whether `file` can hold an incoming key, judging by its first key column's
    /// statistics (or partition value).
    fn may_match(&self, file: &LiveFile, partition_columns: &[String]) -> bool {
        let Some(first) = self.key_names.first() else {
            return true;
        };
        if !prunes(first, &self.schema) {
            return true;
        }
        if partition_columns.contains(first) {
            let value = file
                .partition_value(first)
                .map(|v| parse_bound(v, first, &self.schema));
            return match value {
                Some(Some(v)) => self.staged.keys().may_match(Some(v.clone()), Some(v)),
                _ => true,
            };
        }
        let Some(stats) = file
            .stats
            .as_deref()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        else {
            return true;
        };
        let bound = |which: &str| json_bound(stats.get(which)?.get(first)?);
        let upper = bound("maxValues").filter(|v| {
            // Spark truncates long string maxima and ends them with U+FFFD, which sorts below
            // 4-byte characters: not an upper bound in byte order.
            !matches!(v, KeyValue::Str(s) if s.ends_with('\u{FFFD}'))
        });
        self.staged.keys().may_match(bound("minValues"), upper)
    }

    /// Rewrite the live files holding incoming keys and write the incoming rows, all into
    /// `writer`.
    pub(crate) async fn finish(
        &mut self,
        store: &ObjectStoreRef,
        live: &[LiveFile],
        partition_columns: &[String],
        writer: &mut ParallelWriter,
    ) -> Result<MergeOutcome> {
        // The incoming rows' sort finishes on a task of its own while the files are scanned.
        let incoming = parallel::spawn(self.staged.finish()?);
        let mut outcome = MergeOutcome::default();
        let mut touched = Vec::new();
        let mut matched = Matched::default();
        let candidates: Vec<LiveFile> = live
            .iter()
            .filter(|f| self.may_match(f, partition_columns))
            .cloned()
            .collect();
        let scanner = Scanner {
            store: Arc::clone(store),
            keys: self.staged.shared_keys(),
            cluster: self.cluster.clone(),
            schema: Arc::clone(&self.schema),
            partition_columns: partition_columns.into(),
        };
        // Key columns of several files decoded at once, each on its own task.
        let mut scans = parallel::spawn_each(candidates, SCANS_AT_ONCE, move |file: LiveFile| {
            let scanner = scanner.clone();
            async move { (scanner.scan(&file).await, file) }
        });
        while let Some((scan, file)) = scans.try_next().await? {
            outcome.scanned += 1;
            touched.extend(scan?.finish(file, &mut matched));
        }
        outcome.rewritten = touched.iter().map(|((f, _), _)| f.clone()).collect();
        let keys = self.staged.keys();
        let incoming = incoming.await??;
        let schema = &self.schema;
        let copied = Arc::new(AtomicU64::new(0));
        let shared = (
            Arc::clone(store),
            Arc::clone(schema),
            Arc::<[String]>::from(partition_columns),
            Arc::clone(&copied),
        );
        let remainder = move |(file, keep): Touched| {
            let (store, schema, partition_columns, copied) = shared.clone();
            async move {
                let rows = read::read(&store, &file, schema, &partition_columns).await?;
                let rows = rows.map_err(pipe_framework::Error::from).boxed();
                let kept = cluster::kept_rows(&file.remove.path, rows, keep).inspect_ok(move |r| {
                    copied.fetch_add(r.num_rows() as u64, Ordering::Relaxed);
                });
                Ok::<_, DeltaError>(kept.boxed())
            }
        };
        let mut rows =
            cluster::merge_output(self.cluster.as_ref(), schema, touched, remainder, incoming)
                .await?;
        while let Some(batch) = rows.try_next().await? {
            writer.write(batch).await?;
        }
        drop(rows);
        outcome.copied = copied.load(Ordering::Relaxed);
        outcome.updated = matched.len();
        outcome.inserted = (keys.len() as u64).saturating_sub(outcome.updated);
        Ok(outcome)
    }
}

/// What a merge's key scan of one data file needs, shared by the scans' tasks.
#[derive(Clone)]
struct Scanner {
    store: ObjectStoreRef,
    keys: Arc<KeyIndex>,
    cluster: Option<Arc<SortKey>>,
    schema: SchemaRef,
    partition_columns: Arc<[String]>,
}

impl Scanner {
    /// Read `file`'s key columns (and cluster key columns): which incoming keys it holds,
    /// which of its rows stay, and how its rows lie along the cluster key.
    async fn scan(&self, file: &LiveFile) -> Result<FileScan> {
        let keys = &self.keys;
        let cluster_at: &[usize] = self.cluster.as_deref().map_or(&[], |k| k.columns());
        let mut columns: Vec<usize> = keys.columns.iter().chain(cluster_at).copied().collect();
        columns.sort_unstable();
        columns.dedup();
        let scan_schema = Arc::new(
            self.schema
                .project(&columns)
                .map_err(data("projecting merge keys"))?,
        );
        let position = |at: &usize| columns.iter().position(|c| c == at).unwrap_or_default();
        let key_at: Vec<usize> = keys.columns.iter().map(position).collect();
        let sort_at: Vec<usize> = cluster_at.iter().map(position).collect();
        let mut scan = FileScan::default();
        let rows = read::read(&self.store, file, scan_schema, &self.partition_columns).await?;
        let mut stream = Box::pin(rows);
        while let Some(batch) = stream.try_next().await? {
            let pick = |at: &[usize]| -> Vec<ArrayRef> {
                at.iter().map(|&i| Arc::clone(batch.column(i))).collect()
            };
            let sort_columns = self.cluster.as_ref().map(|_| pick(&sort_at));
            let cluster = self.cluster.as_deref().zip(sort_columns.as_deref());
            scan.add(keys, &pick(&key_at), cluster)?;
        }
        Ok(scan)
    }
}

/// A file the merge rewrites, and which of its rows stay.
type Touched = (LiveFile, BooleanBuffer);

/// Whether key column `column`'s statistics compare like its [`KeyValue`]s: integers
/// (JSON numbers) and strings. Dates, timestamps and decimals are written as strings or
/// scaled numbers that do not, so files are not pruned on them.
fn prunes(column: &str, schema: &Schema) -> bool {
    use arrow_schema::DataType::*;
    schema
        .field_with_name(column)
        .is_ok_and(|f| matches!(f.data_type(), Int32 | Int64 | Utf8))
}

/// A `stats` JSON bound as a [`KeyValue`] (integers and strings; other types do not prune).
fn json_bound(v: &serde_json::Value) -> Option<KeyValue> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().map(|i| KeyValue::Int(i128::from(i))),
        serde_json::Value::String(s) => Some(KeyValue::Str(s.clone())),
        _ => None,
    }
}

/// A partition value of key column `column` as a [`KeyValue`], when its type prunes.
fn parse_bound(value: &str, column: &str, schema: &Schema) -> Option<KeyValue> {
    let field = schema.field_with_name(column).ok()?;
    match field.data_type() {
        arrow_schema::DataType::Utf8 => Some(KeyValue::Str(value.to_string())),
        arrow_schema::DataType::Int8
        | arrow_schema::DataType::Int16
        | arrow_schema::DataType::Int32
        | arrow_schema::DataType::Int64 => value
            .parse::<i64>()
            .ok()
            .map(|i| KeyValue::Int(i128::from(i))),
        _ => None,
    }
}
