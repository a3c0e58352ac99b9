//! Run-wide uniqueness of key columns with bounded memory per key.
//!
//! A single integer key is remembered exactly (8 bytes per distinct key). Any other key is
//! encoded with Arrow's row format (exact, type-aware) and remembered as its 128-bit XXH3 hash:
//! 16 bytes per distinct key whatever its width, with a false-duplicate probability around
//! n²/2¹²⁹ (10⁻²⁶ at a billion keys). With hashbrown's overhead and growth that is about
//! 15 MB (integers) or 27 MB (others) of hash table per million distinct keys.

use hashbrown::HashSet;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{ArrowError, DataType};

/// Keys seen so far in this run.
#[derive(Debug)]
pub(crate) enum KeySet {
    /// One Int32/Int64 column: the values themselves.
    Int(HashSet<i64>),
    /// Anything else: hashes of the row-encoded key.
    Hashed {
        converter: RowConverter,
        seen: HashSet<u128>,
    },
}

impl KeySet {
    pub(crate) fn new(types: &[DataType]) -> Result<Self, ArrowError> {
        if matches!(types, [DataType::Int64 | DataType::Int32]) {
            return Ok(Self::Int(HashSet::new()));
        }
        Ok(Self::Hashed {
            converter: RowConverter::new(
                types.iter().map(|t| SortField::new(t.clone())).collect(),
            )?,
            seen: HashSet::new(),
        })
    }

    /// Distinct keys remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Int(seen) => seen.len(),
            Self::Hashed { seen, .. } => seen.len(),
        }
    }

    /// For each row of `columns`: `true` if its key was already seen (a duplicate); the keys
    /// newly remembered, with their rows, go to `added` (so a caller that drops a row later
    /// can [`KeySet::forget`] its key). Rows with a NULL in any key column and rows where
    /// `skip` is true are neither checked nor remembered.
    pub(crate) fn check(
        &mut self,
        columns: &[ArrayRef],
        skip: &[bool],
        added: &mut Vec<(usize, u128)>,
    ) -> Result<Vec<bool>, ArrowError> {
        let rows = columns.first().map_or(0, |c| c.len());
        let mut dup = vec![false; rows];
        let null_at = |i: usize| columns.iter().any(|c| c.is_null(i));
        match self {
            Self::Int(seen) => {
                let col = &columns[0];
                let mut check = |i: usize, v: i64| {
                    if !skip[i] && !col.is_null(i) {
                        dup[i] = !seen.insert(v);
                        if !dup[i] {
                            added.push((i, v as u128));
                        }
                    }
                };
                match col.data_type() {
                    DataType::Int32 => {
                        for (i, v) in col.as_primitive::<Int32Type>().values().iter().enumerate() {
                            check(i, i64::from(*v));
                        }
                    }
                    _ => {
                        for (i, v) in col.as_primitive::<Int64Type>().values().iter().enumerate() {
                            check(i, *v);
                        }
                    }
                }
            }
            Self::Hashed { converter, seen } => {
                let encoded = converter.convert_columns(columns)?;
                for (i, row) in encoded.iter().enumerate() {
                    if skip[i] || null_at(i) {
                        continue;
                    }
                    let h = xxhash_rust::xxh3::xxh3_128(row.as_ref());
                    dup[i] = !seen.insert(h);
                    if !dup[i] {
                        added.push((i, h));
                    }
                }
            }
        }
        Ok(dup)
    }

    /// Forget keys [`KeySet::check`] added (their rows were dropped after all).
    pub(crate) fn forget(&mut self, keys: impl Iterator<Item = u128>) {
        match self {
            Self::Int(seen) => keys.for_each(|k| {
                seen.remove(&(k as i64));
            }),
            Self::Hashed { seen, .. } => keys.for_each(|k| {
                seen.remove(&k);
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray};

    #[test]
    fn flags_repeats_across_batches_and_ignores_nulls() {
        let mut keys = KeySet::new(&[DataType::Int64]).expect("keys");
        let mut added = Vec::new();
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(1)]));
        let dups = keys.check(&[a], &[false; 4], &mut added).expect("ok");
        assert_eq!(dups, vec![false, false, false, true]);
        let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(2), None, Some(-3)]));
        let dups = keys.check(&[b], &[false; 3], &mut added).expect("ok");
        assert_eq!(dups, vec![true, false, false]);
        assert_eq!(keys.len(), 3);
        keys.forget(added.iter().map(|(_, k)| *k));
        assert_eq!(keys.len(), 0, "negative keys round-trip through forget too");
    }

    #[test]
    fn composite_keys_compare_all_columns() {
        let mut keys = KeySet::new(&[DataType::Int64, DataType::Utf8]).expect("keys");
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, 1, 1]));
        let b: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "x"]));
        let dups = keys
            .check(&[a, b], &[false; 3], &mut Vec::new())
            .expect("ok");
        assert_eq!(dups, vec![false, false, true]);
    }
}
