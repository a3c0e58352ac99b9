//! Copy-on-write merge: the run's rows are spooled to a local Arrow IPC file while their keys
//! are indexed; at commit, live data files whose column bounds can hold an incoming key are
//! read (key columns first, the whole file only if a key matches), rewritten without the
//! matched rows, and the deduplicated incoming rows (last occurrence of a key wins) are
//! added. Memory holds the incoming keys, not the table.

mod keys;
mod read;

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter};

use arrow_array::{BooleanArray, RecordBatch};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;
use arrow_select::filter::filter_record_batch;
use iceberg::io::FileIO;
use iceberg::spec::Schema;

pub(crate) use keys::KeyIndex;

use crate::commit::live::LiveFile;
use crate::error::{Result, data};
use crate::parallel::ParallelWriter;

/// One run's staged merge.
pub(crate) struct MergeState {
    keys: KeyIndex,
    spool: FileWriter<BufWriter<File>>,
    file: tempfile::NamedTempFile,
    schema: SchemaRef,
    rows: u64,
}

impl std::fmt::Debug for MergeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergeState")
            .field("keys", &self.keys)
            .field("rows", &self.rows)
            .finish()
    }
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
    /// Start staging rows of `schema` keyed on the columns at `key_columns`.
    pub(crate) fn new(schema: SchemaRef, key_columns: Vec<usize>) -> Result<Self> {
        let keys = KeyIndex::new(&schema, key_columns)?;
        let file = tempfile::Builder::new()
            .prefix("pipe-merge-")
            .suffix(".arrow")
            .tempfile()
            .map_err(data("creating the merge spool file"))?;
        let handle = file
            .reopen()
            .map_err(data("opening the merge spool file"))?;
        let spool = FileWriter::try_new(BufWriter::new(handle), &schema)
            .map_err(data("writing the merge spool file"))?;
        Ok(Self {
            keys,
            spool,
            file,
            schema,
            rows: 0,
        })
    }

    /// Stage one batch.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.keys.add(batch)?;
        self.spool
            .write(batch)
            .map_err(data("writing the merge spool file"))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Whether live data file `file` can hold an incoming key, judging by its bounds.
    pub(crate) fn may_match(&self, file: &LiveFile, key_field_id: i32) -> bool {
        let df = file.entry.data_file();
        self.keys.may_match(
            df.lower_bounds().get(&key_field_id),
            df.upper_bounds().get(&key_field_id),
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
        self.spool
            .finish()
            .map_err(data("finishing the merge spool file"))?;
        self.keys.seal();
        let mut rewritten = HashSet::new();
        let mut matched: hashbrown::HashSet<Box<[u8]>> = hashbrown::HashSet::new();
        let mut scanned = 0;
        let Some(&first_key) = key_field_ids.first() else {
            return Err(crate::error::IcebergError::Config(
                "mode = \"merge\" needs merge_keys".into(),
            ));
        };
        for file in live.iter().filter(|f| self.may_match(f, first_key)) {
            scanned += 1;
            let path = file.entry.file_path();
            let hits =
                read::matching_keys(io, path, key_field_ids, &self.keys, &self.schema).await?;
            if hits.is_empty() {
                continue;
            }
            read::rewrite_without(io, path, table, &self.schema, &self.keys, writer).await?;
            matched.extend(hits);
            rewritten.insert(path.to_string());
        }
        let handle = File::open(self.file.path()).map_err(data("reading the merge spool file"))?;
        let reader = FileReader::try_new(BufReader::new(handle), None)
            .map_err(data("reading the merge spool file"))?;
        for (n, batch) in reader.enumerate() {
            let batch = batch.map_err(data("reading the merge spool file"))?;
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            let columns: Vec<_> = self
                .keys
                .columns
                .iter()
                .map(|&i| batch.column(i).clone())
                .collect();
            let rows = self.keys.rows(&columns)?;
            let keep: BooleanArray = rows
                .iter()
                .enumerate()
                .map(|(r, row)| {
                    Some(
                        self.keys
                            .is_last(row.as_ref(), n, u32::try_from(r).unwrap_or(u32::MAX)),
                    )
                })
                .collect();
            let batch =
                filter_record_batch(&batch, &keep).map_err(data("deduplicating merge rows"))?;
            writer.write(batch).await?;
        }
        let updated = matched.len() as u64;
        Ok(MergeOutcome {
            rewritten,
            updated,
            inserted: (self.keys.len() as u64).saturating_sub(updated),
            scanned,
        })
    }
}
