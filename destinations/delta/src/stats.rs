//! Per-file column statistics (`add.stats`), exact for every type or left out.
//!
//! delta-rs' own statistics turn decimals into `f64` (a `decimal(38,10)` maximum of
//! 12345678901234567890.1234567890 becomes `1.2345678901234567e19`, so readers skip a file
//! that holds the value, and `9999…9.9999999999` becomes `1e28`, which its own log reader then
//! refuses), write timestamps before year 1 that no reader parses, and panic on dates past
//! year 262143. So the writers collect none, and this module writes them from each file's
//! Parquet footer:
//!
//! - integers, dates, timestamps and decimals exactly (decimals as JSON numbers written
//!   digit by digit, timestamps with microseconds);
//! - floats only when the run wrote no NaN into the column and the bound is finite
//!   (`-0.0` as the minimum, `0.0` as the maximum of a zero bound);
//! - strings as bounds of at most [`STRING_PREFIX_CHARS`] characters: the minimum a prefix, a
//!   longer maximum cut and its last character incremented (still an upper bound in UTF-8
//!   byte order);
//! - dates and timestamps outside years 1–9999, binary, unsigned and legacy INT96 columns,
//!   and anything inside a list or map: no bounds (statistics are optional per column);
//!   a column gets both bounds or neither;
//! - `nullCount` when every row group recorded one.
//!
//! Columns get statistics like delta-rs decides: the table's
//! `delta.dataSkippingStatsColumns`, else the first `delta.dataSkippingNumIndexedCols`
//! (default 32) top-level non-partition columns.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::kernel::Add;
use deltalake::logstore::ObjectStoreRef;
use futures::TryStreamExt;
use object_store::path::Path;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetObjectReader};
use parquet::basic::{ConvertedType, LogicalType, TimeUnit, Type as Physical};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnDescriptor;

use crate::error::{Result, data};

/// Longest string bound written, in characters (as Spark does).
pub(crate) const STRING_PREFIX_CHARS: usize = 32;

/// Which columns get statistics.
#[derive(Debug, Clone)]
pub(crate) struct StatsSpec {
    /// `delta.dataSkippingNumIndexedCols`.
    pub indexed: DataSkippingNumIndexedCols,
    /// `delta.dataSkippingStatsColumns` (dotted names), when set.
    pub columns: Option<Vec<String>>,
    /// Partition columns (never in the data files).
    pub partition_columns: Vec<String>,
}

/// Replace the `stats` of each of `adds` (files under `store`) with exact ones. `nan_columns`:
/// top-level float columns the run wrote a NaN into.
pub(crate) async fn restate(
    store: &ObjectStoreRef,
    adds: &mut [Add],
    spec: &StatsSpec,
    nan_columns: &HashSet<String>,
) -> Result<()> {
    futures::stream::iter(adds.iter_mut().map(Ok))
        .try_for_each_concurrent(FOOTER_READS, |add| async move {
            let path = Path::parse(&add.path).unwrap_or_else(|_| Path::from(add.path.as_str()));
            let mut reader = ParquetObjectReader::new(Arc::clone(store), path);
            if let Ok(size) = u64::try_from(add.size) {
                reader = reader.with_file_size(size);
            }
            let metadata = reader
                .get_metadata(None)
                .await
                .map_err(data(format!("reading the footer of {}", add.path)))?;
            add.stats = Some(file_stats(&metadata, spec, nan_columns));
            Ok(())
        })
        .await
}

/// Footers read at once by [`restate`]: on an object store each is a round trip.
const FOOTER_READS: usize = 8;

/// One bound as aggregated over row groups.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Bound {
    Int(i128),
    Float(f64),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// How a leaf column's bounds are read and written.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Int,
    Date,
    /// Units per second.
    Timestamp(i64),
    Decimal(u32),
    Float,
    Str,
}

fn kind(col: &ColumnDescriptor) -> Option<Kind> {
    let logical = col.logical_type_ref();
    Some(match (col.physical_type(), logical) {
        (Physical::BOOLEAN, _) => Kind::Bool,
        (Physical::INT32 | Physical::INT64, Some(LogicalType::Date)) => Kind::Date,
        (Physical::INT64, Some(LogicalType::Timestamp { unit, .. })) => {
            Kind::Timestamp(match unit {
                TimeUnit::MILLIS => 1_000,
                TimeUnit::MICROS => 1_000_000,
                TimeUnit::NANOS => 1_000_000_000,
            })
        }
        (
            Physical::INT32 | Physical::INT64 | Physical::FIXED_LEN_BYTE_ARRAY,
            Some(LogicalType::Decimal { scale, .. }),
        ) => Kind::Decimal(u32::try_from(*scale).ok()?),
        (Physical::INT32 | Physical::INT64, Some(LogicalType::Integer { is_signed, .. })) => {
            if !is_signed {
                return None;
            }
            Kind::Int
        }
        (Physical::INT32 | Physical::INT64, None) => match col.converted_type() {
            ConvertedType::NONE | ConvertedType::INT_8 | ConvertedType::INT_16 => Kind::Int,
            ConvertedType::INT_32 | ConvertedType::INT_64 => Kind::Int,
            ConvertedType::DATE => Kind::Date,
            _ => return None,
        },
        (Physical::FLOAT | Physical::DOUBLE, None) => Kind::Float,
        (Physical::BYTE_ARRAY, Some(LogicalType::String | LogicalType::Enum)) => Kind::Str,
        (Physical::BYTE_ARRAY, None) if col.converted_type() == ConvertedType::UTF8 => Kind::Str,
        _ => return None,
    })
}

/// A row group's (min, max) of a column as [`Bound`]s, when it recorded both.
fn bounds(stats: &Statistics) -> Option<(Bound, Bound)> {
    Some(match stats {
        Statistics::Boolean(s) => (Bound::Bool(*s.min_opt()?), Bound::Bool(*s.max_opt()?)),
        Statistics::Int32(s) => (
            Bound::Int(i128::from(*s.min_opt()?)),
            Bound::Int(i128::from(*s.max_opt()?)),
        ),
        Statistics::Int64(s) => (
            Bound::Int(i128::from(*s.min_opt()?)),
            Bound::Int(i128::from(*s.max_opt()?)),
        ),
        Statistics::Float(s) => (
            Bound::Float(f64::from(*s.min_opt()?)),
            Bound::Float(f64::from(*s.max_opt()?)),
        ),
        Statistics::Double(s) => (Bound::Float(*s.min_opt()?), Bound::Float(*s.max_opt()?)),
        Statistics::ByteArray(s) => (
            Bound::Bytes(s.min_bytes_opt()?.to_vec()),
            Bound::Bytes(s.max_bytes_opt()?.to_vec()),
        ),
        Statistics::FixedLenByteArray(s) => (
            Bound::Int(be_signed(s.min_bytes_opt()?)?),
            Bound::Int(be_signed(s.max_bytes_opt()?)?),
        ),
        Statistics::Int96(_) => return None,
    })
}

/// A big-endian two's complement integer of at most 16 bytes (a decimal's unscaled value).
fn be_signed(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(full))
}

/// A column's aggregated statistics.
#[derive(Debug, Default)]
struct Aggregate {
    min: Option<Bound>,
    max: Option<Bound>,
    /// False once a row group lacked min/max: then no bounds are written.
    complete: bool,
    nulls: Option<u64>,
}

fn aggregate(metadata: &ParquetMetaData, index: usize) -> Aggregate {
    let mut agg = Aggregate {
        complete: true,
        nulls: Some(0),
        ..Aggregate::default()
    };
    for group in metadata.row_groups() {
        let stats = group.column(index).statistics();
        agg.nulls = match (agg.nulls, stats.and_then(Statistics::null_count_opt)) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        // A row group of only NULLs has no bounds, and needs none.
        let all_null = stats
            .and_then(Statistics::null_count_opt)
            .is_some_and(|n| i64::try_from(n).ok() == Some(group.num_rows()));
        match stats.and_then(bounds) {
            Some((lo, hi)) => {
                if agg.min.as_ref().is_none_or(|m| lo < *m) {
                    agg.min = Some(lo);
                }
                if agg.max.as_ref().is_none_or(|m| hi > *m) {
                    agg.max = Some(hi);
                }
            }
            None if all_null => {}
            None => agg.complete = false,
        }
    }
    agg
}

/// The `stats` JSON of one data file.
fn file_stats(
    metadata: &ParquetMetaData,
    spec: &StatsSpec,
    nan_columns: &HashSet<String>,
) -> String {
    let schema = metadata.file_metadata().schema_descr();
    let mut min = Tree::default();
    let mut max = Tree::default();
    let mut nulls = Tree::default();
    for (index, col) in chosen_columns(schema.columns(), spec) {
        let parts = col.path().parts();
        let agg = aggregate(metadata, index);
        if let Some(n) = agg.nulls {
            nulls.insert(parts, n.to_string());
        }
        let Some(kind) = kind(&col) else { continue };
        if !agg.complete || matches!(kind, Kind::Float) && nan_columns.contains(&parts[0]) {
            continue;
        }
        // Both bounds or neither: some readers (python deltalake's pyarrow fragments) skip a
        // file whose column has one bound and not the other.
        let lo = agg.min.as_ref().and_then(|b| format(b, kind, Side::Min));
        let hi = agg.max.as_ref().and_then(|b| format(b, kind, Side::Max));
        if let (Some(lo), Some(hi)) = (lo, hi) {
            min.insert(parts, lo);
            max.insert(parts, hi);
        }
    }
    let mut out = format!("{{\"numRecords\":{}", metadata.file_metadata().num_rows());
    for (key, tree) in [("minValues", min), ("maxValues", max), ("nullCount", nulls)] {
        let _ = write!(out, ",\"{key}\":");
        tree.write(&mut out);
    }
    out.push('}');
    out
}

/// The leaf columns (with their index in the file) that get statistics.
fn chosen_columns(
    columns: &[Arc<ColumnDescriptor>],
    spec: &StatsSpec,
) -> Vec<(usize, Arc<ColumnDescriptor>)> {
    let partition = |top: &str| spec.partition_columns.iter().any(|p| p == top);
    let mut admitted: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (index, col) in columns.iter().enumerate() {
        // Inside a list or map, bounds do not describe rows.
        if col.max_rep_level() > 0 {
            continue;
        }
        let parts = col.path().parts();
        let Some(top) = parts.first() else { continue };
        if partition(top) {
            continue;
        }
        let take = match (&spec.columns, spec.indexed) {
            (Some(names), _) => {
                let dotted = parts.join(".");
                names
                    .iter()
                    .any(|n| *n == dotted || dotted.starts_with(&format!("{n}.")))
            }
            (None, DataSkippingNumIndexedCols::AllColumns) => true,
            (None, DataSkippingNumIndexedCols::NumColumns(n)) => {
                if !admitted.contains(&top.as_str()) {
                    if admitted.len() as u64 >= n {
                        break;
                    }
                    admitted.push(top);
                }
                true
            }
        };
        if take {
            out.push((index, Arc::clone(col)));
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Min,
    Max,
}

/// A bound as JSON text, or `None` when it cannot be written exactly (or safely).
fn format(bound: &Bound, kind: Kind, side: Side) -> Option<String> {
    match (kind, bound) {
        (Kind::Bool, Bound::Bool(b)) => Some(b.to_string()),
        (Kind::Int, Bound::Int(i)) => Some(i.to_string()),
        (Kind::Decimal(scale), Bound::Int(i)) => Some(decimal(*i, scale)),
        (Kind::Date, Bound::Int(days)) => {
            let days = i64::try_from(*days).ok()?;
            let date = NaiveDate::from_ymd_opt(1970, 1, 1)?
                .checked_add_signed(chrono::Duration::try_days(days)?)?;
            in_common_era(date.format("%Y").to_string())
                .then(|| json_string(&date.format("%Y-%m-%d").to_string()))
        }
        (Kind::Timestamp(per_second), Bound::Int(v)) => {
            let v = i64::try_from(*v).ok()?;
            let (secs, rest) = (v.div_euclid(per_second), v.rem_euclid(per_second));
            let nanos = u32::try_from(rest * (1_000_000_000 / per_second)).ok()?;
            // Microseconds, rounded outwards for nanosecond timestamps.
            let mut t = DateTime::from_timestamp(secs, nanos)?;
            let sub = nanos % 1_000;
            if sub != 0 {
                t -= chrono::Duration::nanoseconds(i64::from(sub));
                if side == Side::Max {
                    t += chrono::Duration::microseconds(1);
                }
            }
            in_common_era(t.format("%Y").to_string())
                .then(|| json_string(&t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
        }
        (Kind::Float, Bound::Float(f)) => {
            if !f.is_finite() {
                return None;
            }
            if *f == 0.0 {
                return Some(if side == Side::Min { "-0.0" } else { "0.0" }.to_string());
            }
            Some(format!("{f:?}"))
        }
        (Kind::Str, Bound::Bytes(bytes)) => {
            let s = std::str::from_utf8(bytes).ok()?;
            string_bound(s, side).map(|b| json_string(&b))
        }
        _ => None,
    }
}

/// Years 0001 to 9999: what every Delta reader parses.
fn in_common_era(year: String) -> bool {
    year.len() == 4 && year.as_str() >= "0001" && year.chars().all(|c| c.is_ascii_digit())
}

/// An unscaled decimal as exact JSON number text.
fn decimal(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// A string bound of at most [`STRING_PREFIX_CHARS`] characters: a prefix is a lower bound;
/// an upper bound is cut and its last character incremented.
fn string_bound(s: &str, side: Side) -> Option<String> {
    let Some((cut, _)) = s.char_indices().nth(STRING_PREFIX_CHARS) else {
        return Some(s.to_string());
    };
    let prefix = &s[..cut];
    if side == Side::Min {
        return Some(prefix.to_string());
    }
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = next_char(last) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn next_char(c: char) -> Option<char> {
    let mut n = u32::from(c) + 1;
    if (0xD800..=0xDFFF).contains(&n) {
        n = 0xE000;
    }
    char::from_u32(n)
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Nested JSON objects of raw values (already JSON text).
#[derive(Debug, Default)]
struct Tree(BTreeMap<String, Node>);

#[derive(Debug)]
enum Node {
    Leaf(String),
    Branch(Tree),
}

impl Tree {
    fn insert(&mut self, path: &[String], value: String) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            self.0.insert(first.clone(), Node::Leaf(value));
            return;
        }
        let node = self
            .0
            .entry(first.clone())
            .or_insert_with(|| Node::Branch(Tree::default()));
        if let Node::Branch(tree) = node {
            tree.insert(rest, value);
        }
    }

    fn write(&self, out: &mut String) {
        out.push('{');
        for (i, (key, node)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_string(key));
            out.push(':');
            match node {
                Node::Leaf(v) => out.push_str(v),
                Node::Branch(tree) => tree.write(out),
            }
        }
        out.push('}');
    }
}

/// A batch's top-level float columns holding a NaN (their statistics are left out).
pub(crate) fn nan_columns(batch: &arrow_array::RecordBatch, into: &mut HashSet<String>) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float16Type, Float32Type, Float64Type};
    use arrow_schema::DataType;
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if into.contains(field.name()) {
            continue;
        }
        let nan = match field.data_type() {
            DataType::Float64 => column
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .any(|v| v.is_nan()),
            DataType::Float32 => column
                .as_primitive::<Float32Type>()
                .values()
                .iter()
                .any(|v| v.is_nan()),
            DataType::Float16 => column
                .as_primitive::<Float16Type>()
                .values()
                .iter()
                .any(|v| v.is_nan()),
            _ => false,
        };
        // A NaN under a NULL slot counts too: that only drops bounds, which is safe.
        if nan {
            into.insert(field.name().clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_digit_by_digit() {
        assert_eq!(
            decimal(99_999_999_999_999_999_999_999_999_999_999_999_999, 10),
            "9999999999999999999999999999.9999999999"
        );
        assert_eq!(
            decimal(-123_456_789_012_345_678_901_234_567_890, 10),
            "-12345678901234567890.1234567890"
        );
        assert_eq!(decimal(1, 10), "0.0000000001");
        assert_eq!(decimal(-5, 2), "-0.05");
        assert_eq!(decimal(42, 0), "42");
    }

    #[test]
    fn string_bounds_are_short_and_still_bounds() {
        let long = "a".repeat(40);
        assert_eq!(string_bound(&long, Side::Min).as_deref(), Some(&long[..32]));
        let max = string_bound(&long, Side::Max).expect("bound");
        assert_eq!(max, format!("{}b", "a".repeat(31)));
        assert!(max.as_str() > long.as_str());
        assert_eq!(string_bound("short", Side::Max).as_deref(), Some("short"));
        let top = "\u{10FFFF}".repeat(40);
        assert!(string_bound(&top, Side::Max).is_none());
    }

    #[test]
    fn dates_and_timestamps_outside_years_1_to_9999_have_no_bounds() {
        let before_year_one = -719_163 - 400; // days before 0001-01-01
        assert!(format(&Bound::Int(before_year_one), Kind::Date, Side::Min).is_none());
        assert_eq!(
            format(&Bound::Int(0), Kind::Date, Side::Min).as_deref(),
            Some("\"1970-01-01\"")
        );
        let max_ts = 253_402_300_799_999_999_i128; // 9999-12-31T23:59:59.999999
        assert_eq!(
            format(&Bound::Int(max_ts), Kind::Timestamp(1_000_000), Side::Max).as_deref(),
            Some("\"9999-12-31T23:59:59.999999Z\"")
        );
        assert!(format(&Bound::Int(i128::from(i64::MAX)), Kind::Date, Side::Max).is_none());
    }

    #[test]
    fn float_bounds_are_finite_and_zero_is_signed_outwards() {
        assert!(format(&Bound::Float(f64::INFINITY), Kind::Float, Side::Max).is_none());
        assert_eq!(
            format(&Bound::Float(0.0), Kind::Float, Side::Min).as_deref(),
            Some("-0.0")
        );
        assert_eq!(
            format(&Bound::Float(-0.0), Kind::Float, Side::Max).as_deref(),
            Some("0.0")
        );
        assert_eq!(
            format(&Bound::Float(1e-7), Kind::Float, Side::Max).as_deref(),
            Some("1e-7")
        );
    }
}
