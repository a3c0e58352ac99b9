//! Copy-on-write merge: the run's rows are spooled to a local Arrow IPC file while their keys
//! are indexed; at commit, live data files whose statistics can hold an incoming key are read
//! (key columns first, the whole file only if a key matches), rewritten without the matched
//! rows, and the deduplicated incoming rows (last occurrence of a key wins) are added. Memory
//! holds the incoming keys, not the table.

use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::{Schema, SchemaRef};
use arrow_select::filter::filter_record_batch;
use deltalake::logstore::ObjectStoreRef;
use futures::TryStreamExt;
use pipe_framework::merge_keys::{KeyIndex, KeyValue};
use pipe_framework::spool::BatchSpool;

use crate::error::{DeltaError, Result, data};
use crate::read::{self, LiveFile};
use crate::write::ParallelWriter;

/// One run's staged merge.
#[derive(Debug)]
pub(crate) struct MergeState {
    keys: KeyIndex,
    /// Key column names, in key order.
    key_names: Vec<String>,
    /// The incoming rows; taken when the merge finishes.
    spool: Option<BatchSpool>,
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
        let keys = KeyIndex::new(&schema, key_columns)?;
        let spool = BatchSpool::new(schema.clone(), "merge")?;
        Ok(Self {
            keys,
            key_names,
            spool: Some(spool),
            schema,
        })
    }

    /// Stage one batch.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let Some(spool) = &mut self.spool else {
            return Err(DeltaError::Internal(
                "merge rows after the merge finished".into(),
            ));
        };
        self.keys.add(batch)?;
        spool.write(batch)?;
        Ok(())
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
                Some(Some(v)) => self.keys.may_match(Some(v.clone()), Some(v)),
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
        self.keys.may_match(bound("minValues"), bound("maxValues"))
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
        let spooled = self
            .spool
            .take()
            .ok_or_else(|| DeltaError::Internal("the merge finished twice".into()))?
            .finish()?;
        self.keys.seal();
        let key_schema = Arc::new(
            self.schema
                .project(&self.keys.columns)
                .map_err(data("projecting merge keys"))?,
        );
        let mut outcome = MergeOutcome::default();
        let mut matched: hashbrown::HashSet<Box<[u8]>> = hashbrown::HashSet::new();
        let key_positions: Vec<usize> = (0..self.keys.columns.len()).collect();
        for file in live.iter().filter(|f| self.may_match(f, partition_columns)) {
            outcome.scanned += 1;
            let mut hits = Vec::new();
            let mut stream =
                Box::pin(read::read(store, file, key_schema.clone(), partition_columns).await?);
            while let Some(batch) = stream.try_next().await? {
                let columns: Vec<_> = key_positions
                    .iter()
                    .map(|&i| batch.column(i).clone())
                    .collect();
                let rows = self.keys.rows(&columns)?;
                hits.extend(
                    rows.iter()
                        .filter(|r| self.keys.contains(r.as_ref()))
                        .map(|r| Box::<[u8]>::from(r.as_ref())),
                );
            }
            if hits.is_empty() {
                continue;
            }
            outcome.copied += self
                .rewrite_without(store, file, partition_columns, writer)
                .await?;
            matched.extend(hits);
            outcome.rewritten.push(file.clone());
        }
        for (n, batch) in spooled.batches()?.enumerate() {
            let batch = batch?;
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            let rows = self.keys.rows(&self.keys.key_columns(&batch))?;
            let keep: BooleanArray = rows
                .iter()
                .enumerate()
                .map(|(r, row)| {
                    let r = u32::try_from(r).unwrap_or(u32::MAX);
                    Some(self.keys.is_last(row.as_ref(), n, r))
                })
                .collect();
            let batch =
                filter_record_batch(&batch, &keep).map_err(data("deduplicating merge rows"))?;
            writer.write(batch).await?;
        }
        outcome.updated = matched.len() as u64;
        outcome.inserted = (self.keys.len() as u64).saturating_sub(outcome.updated);
        Ok(outcome)
    }

    /// Copy `file`'s rows whose key is not incoming into `writer`; returns how many.
    async fn rewrite_without(
        &self,
        store: &ObjectStoreRef,
        file: &LiveFile,
        partition_columns: &[String],
        writer: &mut ParallelWriter,
    ) -> Result<u64> {
        let mut copied = 0;
        let mut stream =
            Box::pin(read::read(store, file, self.schema.clone(), partition_columns).await?);
        while let Some(batch) = stream.try_next().await? {
            let rows = self.keys.rows(&self.keys.key_columns(&batch))?;
            let keep: BooleanArray = rows
                .iter()
                .map(|r| Some(!self.keys.contains(r.as_ref())))
                .collect();
            let kept = filter_record_batch(&batch, &keep).map_err(data("rewriting a data file"))?;
            copied += kept.num_rows() as u64;
            writer.write(kept).await?;
        }
        Ok(copied)
    }
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
