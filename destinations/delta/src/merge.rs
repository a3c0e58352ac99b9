//! Copy-on-write merge: the run's rows are spooled to a local Arrow IPC file while their keys
//! are indexed; at commit, live data files whose statistics can hold an incoming key are read
//! (key columns first, the whole file only if a key matches), rewritten without the matched
//! rows, and the deduplicated incoming rows (last occurrence of a key wins) are added. Memory
//! holds the incoming keys, not the table.

use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch};
use arrow_buffer::BooleanBufferBuilder;
use arrow_schema::{Schema, SchemaRef};
use arrow_select::filter::filter_record_batch;
use deltalake::logstore::ObjectStoreRef;
use futures::TryStreamExt;
use pipe_framework::merge_keys::{KeyValue, Matched, StagedMerge};

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
    /// Start staging rows of `schema` (the table's) keyed on the columns at `key_columns`.
    pub(crate) fn new(schema: SchemaRef, key_columns: Vec<usize>) -> Result<Self> {
        let key_names = key_columns
            .iter()
            .map(|&i| schema.field(i).name().clone())
            .collect();
        let staged = StagedMerge::new(schema.clone(), key_columns)?;
        Ok(Self {
            staged,
            key_names,
            schema,
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
        let spooled = self.staged.finish()?;
        let keys = self.staged.keys();
        let key_schema = Arc::new(
            self.schema
                .project(&keys.columns)
                .map_err(data("projecting merge keys"))?,
        );
        let mut outcome = MergeOutcome::default();
        let mut matched = Matched::default();
        for file in live.iter().filter(|f| self.may_match(f, partition_columns)) {
            outcome.scanned += 1;
            // Which rows to keep, from the key columns alone: the file is read whole only if
            // a key matches, and its keys are looked up once.
            let mut hits = Vec::new();
            let mut keep = BooleanBufferBuilder::new(0);
            let mut stream =
                Box::pin(read::read(store, file, key_schema.clone(), partition_columns).await?);
            while let Some(batch) = stream.try_next().await? {
                // The key schema's columns are the keys, in key order.
                let split = keys.split(batch.columns())?;
                hits.extend(split.hits);
                keep.append_buffer(&split.keep);
            }
            if hits.is_empty() {
                continue;
            }
            let keep = keep.finish();
            let mut at = 0;
            let mut rows =
                Box::pin(read::read(store, file, self.schema.clone(), partition_columns).await?);
            while let Some(batch) = rows.try_next().await? {
                let n = batch.num_rows();
                if at + n > keep.len() {
                    return Err(changed(file));
                }
                let kept = filter_record_batch(&batch, &BooleanArray::new(keep.slice(at, n), None))
                    .map_err(data("rewriting a data file"))?;
                at += n;
                outcome.copied += kept.num_rows() as u64;
                writer.write(kept).await?;
            }
            if at != keep.len() {
                return Err(changed(file));
            }
            matched.extend(hits);
            outcome.rewritten.push(file.clone());
        }
        for (n, batch) in spooled.batches()?.enumerate() {
            writer.write(self.staged.dedup(n, &batch?)?).await?;
        }
        outcome.updated = matched.len();
        outcome.inserted = (keys.len() as u64).saturating_sub(outcome.updated);
        Ok(outcome)
    }
}

/// A data file whose two reads returned different row counts.
fn changed(file: &LiveFile) -> DeltaError {
    DeltaError::Internal(format!(
        "data file {} returned different rows when read again",
        file.remove.path
    ))
}

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
