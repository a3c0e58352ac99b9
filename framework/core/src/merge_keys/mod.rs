//! Merge keys for copy-on-write merges: the incoming rows' keys (last occurrence of a key
//! wins) and the first key column's values, for pruning data files by their column bounds.
//! Destinations turn their file statistics into [`KeyValue`]s.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Int8Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, BooleanArray, RecordBatch};
use arrow_buffer::{BooleanBuffer, BooleanBufferBuilder};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use arrow_select::filter::filter_record_batch;
use hashbrown::HashMap;
use hashbrown::hash_map::Entry;

use crate::cluster::{Extent, SortKey};
use crate::error::{Error, Result};

mod bounds;
mod staged;

use bounds::Firsts;
pub use bounds::KeyValue;
pub use staged::StagedMerge;

fn data<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> Error {
    move |e| Error::external(what).with_source(e)
}

/// Incoming keys → dense ids (0, 1, ... in order of first occurrence). A key of one integer
/// column (integers, dates, timestamps) is hashed as the integer; any other key (several
/// columns, strings, decimals, ...) as its arrow-row encoding.
enum Ids {
    /// The key column's type (lookups must be of the same type) and the keys.
    Int(DataType, IntIds),
    Rows(RowConverter, HashMap<Box<[u8]>, u32>),
}

/// Integer keys → ids, the NULL key kept apart: an entry takes 16 bytes, not the 24 of an
/// `Option<i64>` key (at 5M keys, the difference is 60 MB of hash table).
#[derive(Default)]
struct IntIds {
    map: HashMap<i64, u32>,
    null: Option<u32>,
}

impl IntIds {
    fn get(&self, key: Option<i64>) -> Option<u32> {
        match key {
            Some(k) => self.map.get(&k).copied(),
            None => self.null,
        }
    }

    /// Give `key` the id `id(its id so far)` returns.
    fn set(&mut self, key: Option<i64>, id: impl FnOnce(Option<u32>) -> u32) {
        match key {
            Some(k) => match self.map.entry(k) {
                Entry::Occupied(e) => {
                    id(Some(*e.get()));
                }
                Entry::Vacant(e) => {
                    e.insert(id(None));
                }
            },
            None => self.null = Some(id(self.null)),
        }
    }
}

/// `column`'s values as integers, when it is one of the types [`Ids::Int`] keys on.
fn int_keys(column: &ArrayRef) -> Option<Vec<Option<i64>>> {
    fn widen<T>(column: &ArrayRef) -> Vec<Option<i64>>
    where
        T: ArrowPrimitiveType,
        T::Native: Into<i64>,
    {
        column
            .as_primitive::<T>()
            .iter()
            .map(|v| v.map(Into::into))
            .collect()
    }
    Some(match column.data_type() {
        DataType::Int8 => widen::<Int8Type>(column),
        DataType::Int16 => widen::<Int16Type>(column),
        DataType::Int32 => widen::<Int32Type>(column),
        DataType::Int64 => widen::<Int64Type>(column),
        DataType::UInt8 => widen::<UInt8Type>(column),
        DataType::UInt16 => widen::<UInt16Type>(column),
        DataType::UInt32 => widen::<UInt32Type>(column),
        DataType::Date32 => widen::<Date32Type>(column),
        DataType::Timestamp(TimeUnit::Second, _) => widen::<TimestampSecondType>(column),
        DataType::Timestamp(TimeUnit::Millisecond, _) => widen::<TimestampMillisecondType>(column),
        DataType::Timestamp(TimeUnit::Microsecond, _) => widen::<TimestampMicrosecondType>(column),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => widen::<TimestampNanosecondType>(column),
        _ => return None,
    })
}

fn is_int_key(data_type: &DataType) -> bool {
    int_keys(&arrow_array::new_empty_array(data_type)).is_some()
}

/// The integer key column among `columns`, which must be of the key's type: integers of
/// another type or unit would compare wrongly.
fn int_column(data_type: &DataType, columns: &[ArrayRef]) -> Result<Vec<Option<i64>>> {
    let column = columns
        .first()
        .ok_or_else(|| Error::internal("no merge key column"))?;
    if column.data_type() != data_type {
        return Err(Error::internal(format!(
            "merge key column of type {} looked up among keys of type {data_type}",
            column.data_type()
        )));
    }
    int_keys(column).ok_or_else(|| Error::internal("merge key column of an unexpected type"))
}

/// A run's incoming keys.
pub struct KeyIndex {
    /// Positions of the key columns in the write schema.
    pub columns: Vec<usize>,
    ids: Ids,
    /// Id → (batch, row) of the key's last occurrence, to deduplicate spooled rows; `None`
    /// when the rows are deduplicated by sorting them (8 bytes a key saved).
    last: Option<Vec<(u32, u32)>>,
    /// Distinct keys (their ids are `0..keys`).
    keys: u32,
    /// The first key column's values, sorted and distinct after [`KeyIndex::seal`]; `None`
    /// when its type cannot prune (or it holds NULLs). Created by the first batch.
    first: Option<Firsts>,
    /// Whether the first key column can prune (false once it held a NULL or an unusable type).
    prunes: bool,
    batches: u32,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex")
            .field("columns", &self.columns)
            .field("keys", &self.keys)
            .field("integer", &matches!(self.ids, Ids::Int(..)))
            .finish()
    }
}

/// Which rows of a batch hold an incoming key.
#[derive(Debug)]
pub struct Split {
    /// Ids of the incoming keys found, one per matching row.
    pub hits: Vec<u32>,
    /// True for the rows whose key is not incoming (what a rewrite keeps).
    pub keep: BooleanBuffer,
}

/// The distinct incoming keys a merge found in the table (by id).
#[derive(Debug, Default)]
pub struct Matched {
    bits: Vec<u64>,
    count: u64,
}

impl Matched {
    /// Record keys found.
    pub fn extend(&mut self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
            if word >= self.bits.len() {
                self.bits.resize(word + 1, 0);
            }
            if let Some(w) = self.bits.get_mut(word)
                && *w & bit == 0
            {
                *w |= bit;
                self.count += 1;
            }
        }
    }

    /// Distinct keys found.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// A merge's key scan of one data file, batch by batch: the incoming keys it holds, which of
/// its rows stay, and how its rows lie along the cluster key.
#[derive(Debug)]
pub struct FileScan {
    hits: Vec<u32>,
    keep: BooleanBufferBuilder,
    extent: Extent,
}

impl Default for FileScan {
    fn default() -> Self {
        Self {
            hits: Vec::new(),
            keep: BooleanBufferBuilder::new(0),
            extent: Extent::new(),
        }
    }
}

impl FileScan {
    /// The file's next rows: their merge key columns (in key order) looked up in `keys`, and
    /// when the merge is clustered, the cluster key with its columns.
    pub fn add(
        &mut self,
        keys: &KeyIndex,
        key_columns: &[ArrayRef],
        cluster: Option<(&SortKey, &[ArrayRef])>,
    ) -> Result<()> {
        let split = keys.split(key_columns)?;
        self.hits.extend(split.hits);
        self.keep.append_buffer(&split.keep);
        if let Some((key, columns)) = cluster {
            self.extent.add(&key.rows_of(columns)?);
        }
        Ok(())
    }

    /// The keys the file holds recorded into `matched`; if it holds any, `file` to rewrite
    /// with the mask of its rows that stay, and its extent.
    pub fn finish<T>(
        mut self,
        file: T,
        matched: &mut Matched,
    ) -> Option<((T, BooleanBuffer), Extent)> {
        if self.hits.is_empty() {
            return None;
        }
        matched.extend(self.hits);
        Some(((file, self.keep.finish()), self.extent))
    }
}

impl KeyIndex {
    pub fn new(schema: &SchemaRef, columns: Vec<usize>) -> Result<Self> {
        let types: Vec<DataType> = columns
            .iter()
            .map(|&i| schema.field(i).data_type().clone())
            .collect();
        let ids = match types.as_slice() {
            [one] if is_int_key(one) => Ids::Int(one.clone(), IntIds::default()),
            _ => {
                let fields = types.into_iter().map(SortField::new).collect();
                let converter = RowConverter::new(fields).map_err(data("setting up merge keys"))?;
                Ids::Rows(converter, HashMap::new())
            }
        };
        Ok(Self {
            columns,
            ids,
            last: Some(Vec::new()),
            keys: 0,
            first: None,
            prunes: true,
            batches: 0,
        })
    }

    /// Keep no positions: the rows are deduplicated by sorting them, not by [`Self::dedup`].
    fn without_positions(mut self) -> Self {
        self.last = None;
        self
    }

    /// `batch`'s key columns (a batch of the write schema).
    pub fn key_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect()
    }

    /// Call `f(row, id)` for every row of `key_columns` (in key order), `id` being its key's
    /// when the key is incoming.
    fn each(&self, key_columns: &[ArrayRef], mut f: impl FnMut(usize, Option<u32>)) -> Result<()> {
        match &self.ids {
            Ids::Int(data_type, map) => {
                let values = int_column(data_type, key_columns)?;
                for (r, v) in values.into_iter().enumerate() {
                    f(r, map.get(v));
                }
            }
            Ids::Rows(converter, map) => {
                let rows = converter
                    .convert_columns(key_columns)
                    .map_err(data("encoding merge keys"))?;
                for (r, row) in rows.iter().enumerate() {
                    f(r, map.get(row.as_ref()).copied());
                }
            }
        }
        Ok(())
    }

    /// Record the next incoming batch (batches count from 0, as they are spooled). A NULL
    /// key matches a NULL key, as in the other destinations.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns = self.key_columns(batch);
        if columns.first().is_none_or(|c| c.null_count() > 0) {
            // Column bounds say nothing about NULLs: every file is a candidate.
            self.prunes = false;
            self.first = None;
        }
        let n = self.batches;
        let (last, keys) = (&mut self.last, &mut self.keys);
        let mut record = |id: Option<u32>, r: usize| -> u32 {
            let r = u32::try_from(r).unwrap_or(u32::MAX);
            match id {
                Some(id) => {
                    if let Some(slot) = last.as_mut().and_then(|l| l.get_mut(id as usize)) {
                        *slot = (n, r);
                    }
                    id
                }
                None => {
                    if let Some(last) = last {
                        last.push((n, r));
                    }
                    let id = *keys;
                    *keys = keys.saturating_add(1);
                    id
                }
            }
        };
        match &mut self.ids {
            Ids::Int(data_type, map) => {
                let values = int_column(data_type, &columns)?;
                for (r, v) in values.into_iter().enumerate() {
                    map.set(v, |id| record(id, r));
                }
            }
            Ids::Rows(converter, map) => {
                let rows = converter
                    .convert_columns(&columns)
                    .map_err(data("encoding merge keys"))?;
                for (r, row) in rows.iter().enumerate() {
                    let known = map.get(row.as_ref()).copied();
                    let id = record(known, r);
                    if known.is_none() {
                        map.insert(row.as_ref().into(), id);
                    }
                }
            }
        }
        if self.prunes {
            let more = columns.first().and_then(Firsts::of);
            self.prunes = match (&mut self.first, more) {
                (_, None) => false,
                (None, Some(more)) => {
                    self.first = Some(more);
                    true
                }
                (Some(first), Some(more)) => first.append(more),
            };
            if !self.prunes {
                self.first = None;
            }
        }
        self.batches += 1;
        Ok(())
    }

    /// Sort the first key column's values; call once every batch was added.
    pub fn seal(&mut self) {
        if let Some(first) = &mut self.first {
            first.seal();
        }
    }

    /// Distinct incoming keys.
    pub fn len(&self) -> usize {
        self.keys as usize
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Which rows of `key_columns` (in key order) hold an incoming key.
    pub fn split(&self, key_columns: &[ArrayRef]) -> Result<Split> {
        let rows = key_columns.first().map_or(0, |c| c.len());
        let mut keep = BooleanBufferBuilder::new(rows);
        keep.append_n(rows, true);
        let mut hits = Vec::new();
        self.each(key_columns, |r, id| {
            if let Some(id) = id {
                hits.push(id);
                keep.set_bit(r, false);
            }
        })?;
        Ok(Split {
            hits,
            keep: keep.finish(),
        })
    }

    /// Incoming batch number `n` (counting from 0, as they were added) without the rows a
    /// later row of the same key replaces.
    fn dedup(&self, n: usize, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let mut keep = BooleanBufferBuilder::new(batch.num_rows());
        let last = self.last.as_ref().ok_or_else(|| {
            Error::internal("merge rows deduplicated by position without their positions")
        })?;
        self.each(&self.key_columns(batch), |r, id| {
            let r = u32::try_from(r).unwrap_or(u32::MAX);
            keep.append(id.and_then(|id| last.get(id as usize)) == Some(&(n, r)));
        })?;
        filter_record_batch(batch, &BooleanArray::new(keep.finish(), None))
            .map_err(data("deduplicating merge rows"))
    }

    /// Whether a data file whose first key column lies in `[lower, upper]` can hold an
    /// incoming key (no bounds, or no usable first-key values: it can).
    pub fn may_match(&self, lower: Option<KeyValue>, upper: Option<KeyValue>) -> bool {
        if self.is_empty() {
            return false;
        }
        let (Some(first), Some(lo), Some(hi)) = (&self.first, lower, upper) else {
            return true;
        };
        if lo > hi {
            // Bounds from a writer that ordered differently (signed UUID bytes, say).
            return true;
        }
        first.any_within(&lo, &hi)
    }
}
