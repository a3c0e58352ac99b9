//! The first key column's incoming values, for pruning data files by their column bounds.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};

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

/// The first key column's incoming values, for pruning data files by their column bounds:
/// 8 bytes a key for the integer types bounds hold as 64-bit integers (a merge's usual key),
/// a [`KeyValue`] (32 bytes and the string's own) for the others.
#[derive(Debug)]
pub(super) enum Firsts {
    Int(Vec<i64>),
    Other(Vec<KeyValue>),
}

impl Firsts {
    /// `column`'s values (`None` for types bounds cannot prune on).
    pub(super) fn of(column: &ArrayRef) -> Option<Self> {
        let n = column.len();
        let ints = |f: &dyn Fn(usize) -> i64| Some(Self::Int((0..n).map(f).collect()));
        let other = |f: &dyn Fn(usize) -> KeyValue| Some(Self::Other((0..n).map(f).collect()));
        match column.data_type() {
            DataType::Int32 => {
                let a = column.as_primitive::<Int32Type>();
                ints(&|i| i64::from(a.value(i)))
            }
            DataType::Int64 => {
                let a = column.as_primitive::<Int64Type>();
                ints(&|i| a.value(i))
            }
            DataType::Date32 => {
                let a = column.as_primitive::<Date32Type>();
                ints(&|i| i64::from(a.value(i)))
            }
            DataType::Time64(TimeUnit::Microsecond) => {
                let a = column.as_primitive::<Time64MicrosecondType>();
                ints(&|i| a.value(i))
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                let a = column.as_primitive::<TimestampMicrosecondType>();
                ints(&|i| a.value(i))
            }
            DataType::Decimal128(_, _) => {
                let a = column.as_primitive::<Decimal128Type>();
                other(&|i| KeyValue::Int(a.value(i)))
            }
            DataType::Utf8 => {
                let a = column.as_string::<i32>();
                other(&|i| KeyValue::Str(a.value(i).to_string()))
            }
            DataType::LargeBinary => {
                let a = column.as_binary::<i64>();
                other(&|i| KeyValue::Bytes(a.value(i).to_vec()))
            }
            DataType::FixedSizeBinary(_) => {
                let a = column.as_fixed_size_binary();
                other(&|i| KeyValue::Bytes(a.value(i).to_vec()))
            }
            _ => None,
        }
    }

    /// Add `more` (values of the same column); `false` if they are of another kind.
    pub(super) fn append(&mut self, more: Self) -> bool {
        match (self, more) {
            (Self::Int(a), Self::Int(mut b)) => a.append(&mut b),
            (Self::Other(a), Self::Other(mut b)) => a.append(&mut b),
            _ => return false,
        }
        true
    }

    pub(super) fn seal(&mut self) {
        match self {
            Self::Int(v) => {
                v.sort_unstable();
                v.dedup();
                v.shrink_to_fit();
            }
            Self::Other(v) => {
                v.sort_unstable();
                v.dedup();
                v.shrink_to_fit();
            }
        }
    }

    /// Whether a value lies in `[lo, hi]` (`lo <= hi`).
    pub(super) fn any_within(&self, lo: &KeyValue, hi: &KeyValue) -> bool {
        match self {
            Self::Int(v) => {
                let (KeyValue::Int(lo), KeyValue::Int(hi)) = (lo, hi) else {
                    // Bounds of another kind than the column's: they cannot rule a file out.
                    return true;
                };
                let at = v.partition_point(|&x| i128::from(x) < *lo);
                v.get(at).is_some_and(|&x| i128::from(x) <= *hi)
            }
            Self::Other(v) => {
                let at = v.partition_point(|x| x < lo);
                v.get(at).is_some_and(|x| x <= hi)
            }
        }
    }
}
