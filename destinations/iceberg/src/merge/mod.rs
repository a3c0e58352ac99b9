//! Copy-on-write merge: the run's rows are staged (sorted as they come when clustered by the
//! merge keys, else spooled to a local Arrow IPC file) while their keys are indexed; at
//! commit, live data files whose column bounds can hold an incoming key are
//! read (key columns first, the whole file only if a key matches), rewritten without the
//! matched rows, and the deduplicated incoming rows (last occurrence of a key wins) are
//! added. Memory holds the incoming keys, not the table.
//!
//! Clustered (a sort key): the rows written come out in key order — the incoming rows sorted
//! while they were staged, the remains of unsorted or overlapping files through an external
//! sort, and the remains of the sorted, disjoint files streamed in key order, all merged — so
//! the new files hold disjoint key ranges and the next merge touches few of them.

pub(crate) mod read;

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::BooleanBuffer;
use arrow_schema::SchemaRef;
use iceberg::io::FileIO;
use iceberg::spec::Schema;

use futures::TryStreamExt;
use iceberg::spec::{Datum, PrimitiveLiteral};
use pipe_framework::cluster::{self, SortKey};
use pipe_framework::merge_keys::{KeyValue, Matched, StagedMerge};
use pipe_framework::parallel::{self, SCANS_AT_ONCE};

use crate::commit::live::LiveFile;
use crate::error::Result;
use crate::parallel::ParallelWriter;

/// One run's staged merge.
#[derive(Debug)]
pub(crate) struct MergeState {
    staged: StagedMerge,
    schema: SchemaRef,
    cluster: Option<Arc<SortKey>>,
}

/// What a merge changes.
#[derive(Debug)]
pub(crate) struct MergeOutcome {
    /// Data files rewritten without their matched rows (to remove from the table).
    pub rewritten: HashSet<String>,
    /// Incoming keys that matched a row of the table.
    pub updated: u64,
    /// Incoming keys that did not.
    pub inserted: u64,
    /// Data files read to look for keys.
    pub scanned: usize,
}

impl MergeState {
    /// Start staging rows of `schema` keyed on the columns at `key_columns`, to be written
    /// clustered by `cluster` (if any).
    pub(crate) fn new(
        schema: SchemaRef,
        key_columns: Vec<usize>,
        cluster: Option<Arc<SortKey>>,
    ) -> Result<Self> {
        let staged = StagedMerge::new(schema.clone(), key_columns, cluster.as_ref())?;
        Ok(Self {
            staged,
            schema,
            cluster,
        })
    }

    /// Stage one batch.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        Ok(self.staged.write(batch)?)
    }

    /// Whether live data file `file` can hold an incoming key, judging by its bounds.
    pub(crate) fn may_match(&self, file: &LiveFile, key_field_id: i32) -> bool {
        let df = file.entry.data_file();
        self.staged.keys().may_match(
            df.lower_bounds().get(&key_field_id).and_then(key_value),
            df.upper_bounds().get(&key_field_id).and_then(key_value),
        )
    }

    /// Rewrite the live files holding incoming keys and write the incoming rows, all into
    /// `writer`.
    pub(crate) async fn finish(
        &mut self,
        io: &FileIO,
        table: &Schema,
        key_field_ids: &[i32],
        live: &[LiveFile],
        writer: &mut ParallelWriter,
    ) -> Result<MergeOutcome> {
        // The incoming rows' sort finishes on a task of its own while the files are scanned.
        let incoming = parallel::spawn(self.staged.finish()?);
        let keys = self.staged.keys();
        let mut matched = Matched::default();
        let mut touched = Vec::new();
        let mut scanned = 0;
        let Some(&first_key) = key_field_ids.first() else {
            return Err(crate::error::IcebergError::Config(
                "mode = \"merge\" needs merge_keys".into(),
            ));
        };
        let candidates: Vec<String> = live
            .iter()
            .filter(|f| self.may_match(f, first_key))
            .map(|f| f.entry.file_path().to_string())
            .collect();
        let table = Arc::new(table.clone());
        let shared = (
            io.clone(),
            Arc::clone(&table),
            self.staged.shared_keys(),
            Arc::clone(&self.schema),
            self.cluster.clone(),
        );
        // Key columns of several files decoded at once, each on its own task.
        let mut scans = parallel::spawn_each(candidates, SCANS_AT_ONCE, move |path: String| {
            let (io, table, keys, schema, cluster) = shared.clone();
            async move {
                let scan = read::scan(&io, &path, &table, &keys, &schema, cluster.as_deref());
                (scan.await, path)
            }
        });
        while let Some((scan, path)) = scans.try_next().await? {
            scanned += 1;
            touched.extend(scan?.finish(path, &mut matched));
        }
        let rewritten: HashSet<String> = touched.iter().map(|((p, _), _)| p.clone()).collect();
        let incoming = incoming.await??;
        let schema = &self.schema;
        let shared = (io.clone(), table, Arc::clone(schema));
        let remainder = move |(path, keep): (String, BooleanBuffer)| {
            let (io, table, schema) = shared.clone();
            async move { read::remainder(&io, &path, &table, &schema, keep).await }
        };
        let mut rows =
            cluster::merge_output(self.cluster.as_ref(), schema, touched, remainder, incoming)
                .await?;
        while let Some(batch) = rows.try_next().await? {
            writer.write(batch).await?;
        }
        let updated = matched.len();
        Ok(MergeOutcome {
            rewritten,
            updated,
            inserted: (keys.len() as u64).saturating_sub(updated),
            scanned,
        })
    }
}

/// A data file's column bound as a [`KeyValue`], if merge pruning can compare it.
fn key_value(d: &Datum) -> Option<KeyValue> {
    Some(match d.literal() {
        PrimitiveLiteral::Int(v) => KeyValue::Int(i128::from(*v)),
        PrimitiveLiteral::Long(v) => KeyValue::Int(i128::from(*v)),
        PrimitiveLiteral::Int128(v) => KeyValue::Int(*v),
        PrimitiveLiteral::String(s) => KeyValue::Str(s.clone()),
        PrimitiveLiteral::Binary(b) => KeyValue::Bytes(b.clone()),
        PrimitiveLiteral::UInt128(u) => KeyValue::Bytes(u.to_be_bytes().to_vec()),
        _ => return None,
    })
}
