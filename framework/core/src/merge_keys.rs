//! Merge keys for copy-on-write merges: the incoming rows' keys (last occurrence of a key
//! wins) and the first key column's values, for pruning data files by their column bounds.
//! Destinations turn their file statistics into [`KeyValue`]s.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use arrow_select::filter::filter_record_batch;
use hashbrown::HashMap;

use crate::error::{Error, Result};
use crate::spool::{BatchSpool, Spooled};

fn data<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> Error {
    move |e| Error::external(what).with_source(e)
}

/// A key value, ordered like table formats order their column bounds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyValue {
    /// Integers, dates, times, timestamps, decimals (of one scale).
    Int(i128),
    /// Strings (UTF-8 byte order).
    Str(String),
    /// Binary and fixed.
    Bytes(Vec<u8>),
}

/// Values of `column` as [`KeyValue`]s (`None` for types bounds cannot prune on).
fn key_values(column: &ArrayRef) -> Option<Vec<KeyValue>> {
    let n = column.len();
    let ints = |f: &dyn Fn(usize) -> i128| Some((0..n).map(|i| KeyValue::Int(f(i))).collect());
    match column.data_type() {
        DataType::Int32 => {
            let a = column.as_primitive::<Int32Type>();
            ints(&|i| i128::from(a.value(i)))
        }
        DataType::Int64 => {
            let a = column.as_primitive::<Int64Type>();
            ints(&|i| i128::from(a.value(i)))
        }
        DataType::Date32 => {
            let a = column.as_primitive::<Date32Type>();
            ints(&|i| i128::from(a.value(i)))
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let a = column.as_primitive::<Time64MicrosecondType>();
            ints(&|i| i128::from(a.value(i)))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = column.as_primitive::<TimestampMicrosecondType>();
            ints(&|i| i128::from(a.value(i)))
        }
        DataType::Decimal128(_, _) => {
            let a = column.as_primitive::<Decimal128Type>();
            ints(&|i| a.value(i))
        }
        DataType::Utf8 => {
            let a = column.as_string::<i32>();
            Some(
                (0..n)
                    .map(|i| KeyValue::Str(a.value(i).to_string()))
                    .collect(),
            )
        }
        DataType::LargeBinary => {
            let a = column.as_binary::<i64>();
            Some(
                (0..n)
                    .map(|i| KeyValue::Bytes(a.value(i).to_vec()))
                    .collect(),
            )
        }
        DataType::FixedSizeBinary(_) => {
            let a = column.as_fixed_size_binary();
            Some(
                (0..n)
                    .map(|i| KeyValue::Bytes(a.value(i).to_vec()))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// A run's incoming keys.
pub struct KeyIndex {
    /// Positions of the key columns in the write schema.
    pub columns: Vec<usize>,
    converter: RowConverter,
    /// Key → (batch, row) of its last occurrence.
    last: HashMap<Box<[u8]>, (u32, u32)>,
    /// The first key column's values, sorted and distinct after [`KeyIndex::seal`]; `None`
    /// when its type cannot prune.
    first: Option<Vec<KeyValue>>,
    batches: u32,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex")
            .field("columns", &self.columns)
            .field("keys", &self.last.len())
            .finish()
    }
}

impl KeyIndex {
    pub fn new(schema: &SchemaRef, columns: Vec<usize>) -> Result<Self> {
        let fields = columns
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(data("setting up merge keys"))?;
        Ok(Self {
            columns,
            converter,
            last: HashMap::new(),
            first: Some(Vec::new()),
            batches: 0,
        })
    }

    /// The key rows of `batch`'s key columns (found by position in `columns`).
    pub fn rows(&self, key_columns: &[ArrayRef]) -> Result<Rows> {
        self.converter
            .convert_columns(key_columns)
            .map_err(data("encoding merge keys"))
    }

    /// `batch`'s key columns (a batch of the write schema).
    pub fn key_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect()
    }

    /// Record the next incoming batch (batches count from 0, as they are spooled). A NULL
    /// key matches a NULL key, as in the other destinations.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns = self.key_columns(batch);
        if columns.first().is_none_or(|c| c.null_count() > 0) {
            // Column bounds say nothing about NULLs: every file is a candidate.
            self.first = None;
        }
        let rows = self.rows(&columns)?;
        let n = self.batches;
        for (r, row) in rows.iter().enumerate() {
            let r = u32::try_from(r).unwrap_or(u32::MAX);
            self.last.insert(row.as_ref().into(), (n, r));
        }
        if let Some(first) = &mut self.first {
            match columns.first().and_then(key_values) {
                Some(mut v) => first.append(&mut v),
                None => self.first = None,
            }
        }
        self.batches += 1;
        Ok(())
    }

    /// Sort the first key column's values; call once every batch was added.
    pub fn seal(&mut self) {
        if let Some(first) = &mut self.first {
            first.sort_unstable();
            first.dedup();
        }
    }

    /// Distinct incoming keys.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// The incoming keys (encoded) among the rows of `key_columns` (in key order).
    pub fn hits(&self, key_columns: &[ArrayRef]) -> Result<Vec<Box<[u8]>>> {
        let rows = self.rows(key_columns)?;
        Ok(rows
            .iter()
            .filter(|r| self.contains(r.as_ref()))
            .map(|r| Box::<[u8]>::from(r.as_ref()))
            .collect())
    }

    /// `batch` (of the schema the index was made for) without the rows whose key is
    /// incoming: what stays of a data file a merge rewrites.
    pub fn without_incoming(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = self.rows(&self.key_columns(batch))?;
        let keep: BooleanArray = rows
            .iter()
            .map(|r| Some(!self.contains(r.as_ref())))
            .collect();
        filter_record_batch(batch, &keep).map_err(data("rewriting a data file"))
    }

    /// Whether a key is incoming.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.last.contains_key(key)
    }

    /// Whether row `row` of incoming batch `batch` is its key's last occurrence.
    pub fn is_last(&self, key: &[u8], batch: u32, row: u32) -> bool {
        self.last.get(key) == Some(&(batch, row))
    }

    /// Whether a data file whose first key column lies in `[lower, upper]` can hold an
    /// incoming key (no bounds, or no usable first-key values: it can).
    pub fn may_match(&self, lower: Option<KeyValue>, upper: Option<KeyValue>) -> bool {
        let (Some(first), Some(lo), Some(hi)) = (&self.first, lower, upper) else {
            return true;
        };
        if lo > hi {
            // Bounds from a writer that ordered differently (signed UUID bytes, say).
            return true;
        }
        let at = first.partition_point(|v| v < &lo);
        first.get(at).is_some_and(|v| v <= &hi)
    }
}

/// A merge's incoming rows: spooled to a local Arrow IPC file while their keys are indexed,
/// then read back deduplicated (the last occurrence of a key wins). Memory holds the keys.
#[derive(Debug)]
pub struct StagedMerge {
    keys: KeyIndex,
    /// The incoming rows; taken by [`StagedMerge::finish`].
    spool: Option<BatchSpool>,
}

impl StagedMerge {
    /// Stage rows of `schema` keyed on the columns at `key_columns`.
    pub fn new(schema: SchemaRef, key_columns: Vec<usize>) -> Result<Self> {
        let keys = KeyIndex::new(&schema, key_columns)?;
        let spool = BatchSpool::new(schema, "merge")?;
        Ok(Self {
            keys,
            spool: Some(spool),
        })
    }

    /// The incoming keys.
    pub fn keys(&self) -> &KeyIndex {
        &self.keys
    }

    /// Stage one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let Some(spool) = &mut self.spool else {
            return Err(Error::internal("merge rows after the merge finished"));
        };
        self.keys.add(batch)?;
        spool.write(batch)
    }

    /// Every row is staged: seal the keys and hand back the spooled rows (deduplicate each
    /// batch, in order, with [`StagedMerge::dedup`]).
    pub fn finish(&mut self) -> Result<Spooled> {
        let spooled = self
            .spool
            .take()
            .ok_or_else(|| Error::internal("the merge finished twice"))?
            .finish()?;
        self.keys.seal();
        Ok(spooled)
    }

    /// Spooled batch number `n` without the rows a later row of the same key replaces.
    pub fn dedup(&self, n: usize, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let rows = self.keys.rows(&self.keys.key_columns(batch))?;
        let keep: BooleanArray = rows
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let r = u32::try_from(r).unwrap_or(u32::MAX);
                Some(self.keys.is_last(row.as_ref(), n, r))
            })
            .collect();
        filter_record_batch(batch, &keep).map_err(data("deduplicating merge rows"))
    }
}
