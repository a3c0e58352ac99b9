//! Incremental reads on a cursor column, exactly once at the boundary.
//!
//! A run reads `cursor >= v`, where `v` is the high-water mark the last successful run
//! committed with its data. Rows at exactly `v` may have been loaded already, or may have
//! arrived since (equal timestamps are common), so the committed state also holds a hash of
//! every row loaded at `v` — of its primary key when the table has one (stable when columns
//! change), else of the whole row — as a multiset: those are dropped, the others kept. No row
//! at the boundary is lost, none is loaded twice, and append mode needs no merge key. (This is
//! dlt's approach; a tie-breaker column would need a unique, monotonic second key.)
//!
//! Rows that commit *late* with a cursor below `v` (`updated_at DEFAULT now()` is the
//! transaction's start time) are only caught by `lookback`, which re-reads a window and needs
//! merge mode.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_row::{RowConverter, SortField};
use arrow_select::filter::filter_record_batch;
use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::error::PgError;
use crate::types::PgKind;

/// A cursor column's type, as compared values (`i64`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CursorKind {
    Int,
    Date,
    Timestamp,
    Timestamptz,
}

impl CursorKind {
    pub(crate) fn of(column: &str, kind: &PgKind) -> Result<Self, PgError> {
        match kind {
            PgKind::Int2 | PgKind::Int4 | PgKind::Int8 => Ok(Self::Int),
            PgKind::Date => Ok(Self::Date),
            PgKind::Timestamp => Ok(Self::Timestamp),
            PgKind::Timestamptz => Ok(Self::Timestamptz),
            _ => Err(PgError::Config(format!(
                "cursor column `{column}` must be an integer, date or timestamp column"
            ))),
        }
    }

    /// The PostgreSQL type values are cast to for arithmetic (`lookback`).
    pub(crate) fn sql_type(self) -> &'static str {
        match self {
            Self::Int => "bigint",
            Self::Date => "date",
            Self::Timestamp => "timestamp",
            Self::Timestamptz => "timestamptz",
        }
    }

    /// The SQL literal of a compared value, in the column's own type.
    fn sql(self, raw: i64) -> String {
        match self {
            Self::Int => raw.to_string(),
            Self::Date => NaiveDate::from_num_days_from_ce_opt(719_163 + raw as i32)
                .map_or_else(|| raw.to_string(), |d| d.format("%Y-%m-%d").to_string()),
            Self::Timestamp | Self::Timestamptz => {
                let text = DateTime::from_timestamp_micros(raw).map_or_else(
                    || raw.to_string(),
                    |t| t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                );
                if self == Self::Timestamptz {
                    format!("{text}+00")
                } else {
                    text
                }
            }
        }
    }
}

/// What a run commits for its cursor (stored as JSON under `cursor.<column>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct CursorState {
    /// The high-water mark as a SQL literal of the column's type.
    pub value: String,
    /// The same, as compared (`i64`: integer, days, or microseconds since 1970).
    pub raw: i64,
    /// Hashes of the rows loaded at exactly `raw`.
    pub boundary: Vec<String>,
}

/// The state key of a cursor column.
pub(crate) fn state_key(column: &str) -> String {
    format!("cursor.{column}")
}

fn values(array: &ArrayRef) -> Vec<Option<i64>> {
    use arrow_schema::DataType as D;
    let collect = |it: &mut dyn Iterator<Item = Option<i64>>| it.collect::<Vec<_>>();
    match array.data_type() {
        D::Int16 => collect(
            &mut array
                .as_primitive::<Int16Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        D::Int32 => collect(
            &mut array
                .as_primitive::<Int32Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        D::Int64 => collect(&mut array.as_primitive::<Int64Type>().iter()),
        D::Date32 => collect(
            &mut array
                .as_primitive::<Date32Type>()
                .iter()
                .map(|v| v.map(i64::from)),
        ),
        D::Timestamp(..) => collect(&mut array.as_primitive::<TimestampMicrosecondType>().iter()),
        _ => vec![None; array.len()],
    }
}

fn row_hashes(converter: &RowConverter, columns: &[ArrayRef]) -> Result<Vec<String>, PgError> {
    let rows = converter
        .convert_columns(columns)
        .map_err(|e| PgError::Protocol(format!("hashing boundary rows: {e}")))?;
    Ok(rows
        .iter()
        .map(|r| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(r.as_ref())))
        .collect())
}

/// Per-read cursor bookkeeping: drops rows already loaded at the old boundary and tracks the
/// new high-water mark with the rows at it.
pub(crate) struct Tracker {
    column: usize,
    kind: CursorKind,
    /// The columns identifying a row (the primary key's, else all).
    identity: Vec<usize>,
    converter: RowConverter,
    /// The old boundary: its value and how many rows of each hash are still to be dropped.
    previous: Option<(i64, HashMap<String, usize>)>,
    /// The old boundary's hashes as committed (still loaded, whatever this run drops).
    original: Vec<String>,
    max: Option<i64>,
    at_max: Vec<String>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    pub(crate) fn new(
        column: usize,
        kind: CursorKind,
        schema: &arrow_schema::Schema,
        key: Option<&[usize]>,
        previous: Option<&CursorState>,
    ) -> Result<Self, PgError> {
        let identity: Vec<usize> = match key {
            Some(k) => k.to_vec(),
            None => (0..schema.fields().len()).collect(),
        };
        let fields = identity
            .iter()
            .map(|i| SortField::new(schema.field(*i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)
            .map_err(|e| PgError::Config(format!("the cursor needs hashable columns: {e}")))?;
        let counts = previous.map(|p| {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for h in &p.boundary {
                *counts.entry(h.clone()).or_default() += 1;
            }
            (p.raw, counts)
        });
        Ok(Self {
            column,
            kind,
            identity,
            converter,
            previous: counts,
            original: previous.map(|p| p.boundary.clone()).unwrap_or_default(),
            max: previous.map(|p| p.raw),
            at_max: Vec::new(),
        })
    }

    fn hashes(&self, batch: &RecordBatch) -> Result<Vec<String>, PgError> {
        let columns: Vec<ArrayRef> = self
            .identity
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        row_hashes(&self.converter, &columns)
    }

    /// Drop the rows loaded at the old boundary; record the new maximum.
    pub(crate) fn process(&mut self, batch: RecordBatch) -> Result<RecordBatch, PgError> {
        let mut batch = batch;
        if let Some(old) = self.previous.as_ref().map(|p| p.0) {
            let at_old: Vec<bool> = values(batch.column(self.column))
                .iter()
                .map(|v| *v == Some(old))
                .collect();
            if at_old.contains(&true) {
                let candidates = filter_record_batch(&batch, &BooleanArray::from(at_old.clone()))
                    .map_err(|e| PgError::Protocol(e.to_string()))?;
                let mut hashes = self.hashes(&candidates)?.into_iter();
                let mut remaining = self.previous.as_mut().map(|p| &mut p.1);
                // Drop as many rows of each hash as were loaded, no more.
                let keep: Vec<bool> = at_old
                    .iter()
                    .map(|at| {
                        if !*at {
                            return true;
                        }
                        let Some(h) = hashes.next() else { return true };
                        match remaining.as_mut().and_then(|r| r.get_mut(&h)) {
                            Some(n) if *n > 0 => {
                                *n -= 1;
                                false
                            }
                            _ => true,
                        }
                    })
                    .collect();
                batch = filter_record_batch(&batch, &BooleanArray::from(keep))
                    .map_err(|e| PgError::Protocol(e.to_string()))?;
            }
        }
        let vals = values(batch.column(self.column));
        let Some(batch_max) = vals.iter().flatten().max().copied() else {
            return Ok(batch);
        };
        if self.max.is_none_or(|m| batch_max > m) {
            self.max = Some(batch_max);
            self.at_max.clear();
        }
        if Some(batch_max) == self.max {
            let at: Vec<bool> = vals.iter().map(|v| *v == Some(batch_max)).collect();
            let rows = filter_record_batch(&batch, &BooleanArray::from(at))
                .map_err(|e| PgError::Protocol(e.to_string()))?;
            let hashes = self.hashes(&rows)?;
            self.at_max.extend(hashes);
        }
        Ok(batch)
    }

    /// Combine with another partition's tracker of the same read.
    pub(crate) fn merge(&mut self, other: Tracker) {
        match (self.max, other.max) {
            (_, None) => {}
            (Some(a), Some(b)) if b < a => {}
            (Some(a), Some(b)) if b == a => self.at_max.extend(other.at_max),
            _ => {
                self.max = other.max;
                self.at_max = other.at_max;
            }
        }
    }

    /// The state to commit: the new high-water mark and the rows at it. If nothing newer
    /// was read, the old boundary rows stay (they are still loaded).
    pub(crate) fn state(self) -> Option<CursorState> {
        let raw = self.max?;
        let mut boundary = self.at_max;
        if self.previous.as_ref().is_some_and(|p| p.0 == raw) {
            boundary.extend(self.original);
        }
        boundary.sort();
        Some(CursorState {
            value: self.kind.sql(raw),
            raw,
            boundary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    fn batch(ids: &[i64], names: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn rows_at_the_boundary_load_exactly_once() {
        let schema = batch(&[], &[]).schema();
        let mut first = Tracker::new(0, CursorKind::Int, &schema, None, None).expect("tracker");
        let out = first
            .process(batch(&[1, 3, 3], &["a", "b", "c"]))
            .expect("ok");
        assert_eq!(out.num_rows(), 3);
        let state = first.state().expect("state");
        assert_eq!((state.raw, state.boundary.len()), (3, 2));

        // Next run reads v >= 3: b and c again (already loaded), d new at 3, e at 4.
        let mut second = Tracker::new(0, CursorKind::Int, &schema, None, Some(&state)).expect("t");
        let out = second
            .process(batch(&[3, 3, 3, 4], &["b", "c", "d", "e"]))
            .expect("ok");
        let names = out.column(1).as_string::<i32>();
        assert_eq!(names.iter().flatten().collect::<Vec<_>>(), vec!["d", "e"]);
        assert_eq!(
            second.state().map(|s| (s.raw, s.boundary.len())),
            Some((4, 1))
        );
    }

    #[test]
    fn a_run_without_new_rows_keeps_the_boundary() {
        let schema = batch(&[], &[]).schema();
        let mut t = Tracker::new(0, CursorKind::Int, &schema, None, None).expect("t");
        t.process(batch(&[5], &["x"])).expect("ok");
        let state = t.state().expect("state");
        let mut again = Tracker::new(0, CursorKind::Int, &schema, None, Some(&state)).expect("t");
        assert_eq!(
            again.process(batch(&[5], &["x"])).expect("ok").num_rows(),
            0
        );
        assert_eq!(again.state(), Some(state));
    }

    #[test]
    fn identical_rows_at_the_boundary_are_counted_not_collapsed() {
        let schema = batch(&[], &[]).schema();
        let mut t = Tracker::new(0, CursorKind::Int, &schema, None, None).expect("t");
        t.process(batch(&[7, 7], &["same", "same"])).expect("ok");
        let state = t.state().expect("state");
        assert_eq!(state.boundary.len(), 2);
        // A third identical row arrived since: exactly one of the three is new.
        let mut next = Tracker::new(0, CursorKind::Int, &schema, None, Some(&state)).expect("t");
        let out = next
            .process(batch(&[7, 7, 7], &["same", "same", "same"]))
            .expect("ok");
        assert_eq!(out.num_rows(), 1);
        assert_eq!(next.state().map(|s| s.boundary.len()), Some(3));
    }

    #[test]
    fn a_key_identifies_boundary_rows_whatever_the_other_columns() {
        let schema = batch(&[], &[]).schema();
        let key = [1usize];
        let mut t = Tracker::new(0, CursorKind::Int, &schema, Some(&key), None).expect("t");
        t.process(batch(&[9], &["k1"])).expect("ok");
        let state = t.state().expect("state");
        let mut next =
            Tracker::new(0, CursorKind::Int, &schema, Some(&key), Some(&state)).expect("t");
        let out = next.process(batch(&[9, 9], &["k1", "k2"])).expect("ok");
        assert_eq!(out.num_rows(), 1, "k1 was loaded; k2 is new");
    }

    #[test]
    fn literals_round_trip_in_the_columns_type() {
        assert_eq!(CursorKind::Date.sql(0), "1970-01-01");
        assert_eq!(
            CursorKind::Timestamptz.sql(1_500_000),
            "1970-01-01 00:00:01.500000+00"
        );
        assert_eq!(CursorKind::Int.sql(-7), "-7");
    }
}
