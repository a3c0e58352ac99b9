//! Run-wide uniqueness of key columns with bounded memory per key.
//!
//! A single integer key is remembered exactly (8 bytes per distinct key). Any other key is
//! encoded with Arrow's row format (exact, type-aware) and remembered as its 128-bit XXH3 hash:
//! 16 bytes per distinct key whatever its width, with a false-duplicate probability around
//! n²/2¹²⁹ (10⁻²⁶ at a billion keys). With hashbrown's overhead and growth that is about
//! 15 MB (integers) or 27 MB (others) of hash table per million distinct keys.

use hashbrown::HashSet;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef};
use arrow_buffer::NullBuffer;
use arrow_row::{RowConverter, SortField};
use arrow_schema::{ArrowError, DataType};
use pipe_framework::Result;

use crate::rules::{Bound, Check};
use crate::spec::Action;

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

    /// Each row's key: the integer itself or the hash of the row-encoded key columns;
    /// `None` where a key column is NULL (logically: all-NULL and dictionary columns too).
    pub(crate) fn keys(&self, columns: &[ArrayRef]) -> Result<Vec<Option<u128>>, ArrowError> {
        let rows = columns.first().map_or(0, |c| c.len());
        let nulls = columns.iter().fold(None, |acc: Option<NullBuffer>, c| {
            NullBuffer::union(acc.as_ref(), c.logical_nulls().as_ref())
        });
        let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
        Ok(match self {
            Self::Int(_) => {
                let col = &columns[0];
                let ints: Vec<i64> = match col.data_type() {
                    DataType::Int32 => col
                        .as_primitive::<Int32Type>()
                        .values()
                        .iter()
                        .map(|v| i64::from(*v))
                        .collect(),
                    _ => col.as_primitive::<Int64Type>().values().to_vec(),
                };
                (0..rows)
                    .map(|i| valid(i).then_some(ints[i] as u128))
                    .collect()
            }
            Self::Hashed { converter, .. } => {
                let encoded = converter.convert_columns(columns)?;
                encoded
                    .iter()
                    .enumerate()
                    .map(|(i, row)| valid(i).then(|| xxhash_rust::xxh3::xxh3_128(row.as_ref())))
                    .collect()
            }
        })
    }

    /// Whether `key` was seen.
    pub(crate) fn contains(&self, key: u128) -> bool {
        match self {
            Self::Int(seen) => seen.contains(&(key as i64)),
            Self::Hashed { seen, .. } => seen.contains(&key),
        }
    }

    /// Remember `key`; false if it was already there.
    pub(crate) fn insert(&mut self, key: u128) -> bool {
        match self {
            Self::Int(seen) => seen.insert(key as i64),
            Self::Hashed { seen, .. } => seen.insert(key),
        }
    }
}

/// The key rules (`unique`, `primary_key`) of `rules` over `batch`, all at once: which rows
/// break each. A row already left out (`remove`) is not checked and claims no key, and a row
/// one key rule leaves out (`drop`/`quarantine`) claims no key of any other:
/// so a later valid row with that key is kept. Returns (rule index, mask) per key rule.
pub(crate) fn key_masks(
    rules: &mut [Bound],
    batch: &RecordBatch,
    remove: Option<&[bool]>,
) -> Result<Vec<(usize, Vec<bool>)>> {
    let mut keyed = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if let Check::Keys { keys, nulls_fail } = &rule.check {
            let columns: Vec<ArrayRef> = rule
                .indices
                .iter()
                .map(|c| batch.column(*c).clone())
                .collect();
            let removes = matches!(rule.def.action, Action::Drop | Action::Quarantine);
            keyed.push((i, keys.keys(&columns)?, *nulls_fail, removes));
        }
    }
    let n = batch.num_rows();
    let mut masks = vec![vec![false; n]; keyed.len()];
    let mut sets: Vec<&mut KeySet> = rules
        .iter_mut()
        .filter_map(|r| match &mut r.check {
            Check::Keys { keys, .. } => Some(keys),
            _ => None,
        })
        .collect();
    let rows = (0..n).filter(|r| !remove.is_some_and(|rm| rm[*r]));
    if let ([(_, keys, nulls_fail, _)], [set], [mask]) =
        (keyed.as_slice(), sets.as_mut_slice(), masks.as_mut_slice())
    {
        // One key rule: remembering a key is checking it.
        for row in rows {
            mask[row] = keys[row].map_or(*nulls_fail, |k| !set.insert(k));
        }
    } else {
        for row in rows {
            let mut left_out = false;
            for (j, (_, keys, nulls_fail, removes)) in keyed.iter().enumerate() {
                let broken = keys[row].map_or(*nulls_fail, |k| sets[j].contains(k));
                masks[j][row] = broken;
                left_out |= broken && *removes;
            }
            if !left_out {
                for (j, (_, keys, ..)) in keyed.iter().enumerate() {
                    if let Some(k) = keys[row] {
                        sets[j].insert(k);
                    }
                }
            }
        }
    }
    Ok(finish_masks(keyed, masks))
}

/// (rule index, mask) for the key rules some row broke.
fn finish_masks<T>(
    keyed: Vec<(usize, T, bool, bool)>,
    masks: Vec<Vec<bool>>,
) -> Vec<(usize, Vec<bool>)> {
    keyed
        .into_iter()
        .map(|(i, ..)| i)
        .zip(masks)
        .filter(|(_, m)| m.contains(&true))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{Int64Array, NullArray, StringArray};

    #[test]
    fn integer_keys_round_trip_and_nulls_have_none() {
        let mut keys = KeySet::new(&[DataType::Int64]).expect("keys");
        let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(-3), None, Some(1)]));
        let k = keys.keys(&[a]).expect("ok");
        assert_eq!(k[2], None);
        assert!(keys.insert(k[0].expect("key")));
        assert!(keys.insert(k[1].expect("key")));
        assert!(!keys.insert(k[3].expect("key")), "1 again");
        assert!(
            keys.contains(k[1].expect("key")),
            "negative keys round-trip"
        );
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn composite_keys_compare_all_columns() {
        let mut keys = KeySet::new(&[DataType::Int64, DataType::Utf8]).expect("keys");
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, 1, 1]));
        let b: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), Some("y"), Some("x")]));
        let k = keys.keys(&[a, b]).expect("ok");
        let inserted: Vec<bool> = k.iter().map(|k| keys.insert(k.expect("key"))).collect();
        assert_eq!(inserted, vec![true, true, false]);
    }

    #[test]
    fn all_null_columns_have_no_keys() {
        let keys = KeySet::new(&[DataType::Null]).expect("keys");
        let a: ArrayRef = Arc::new(NullArray::new(3));
        assert_eq!(keys.keys(&[a]).expect("ok"), vec![None, None, None]);
    }
}
