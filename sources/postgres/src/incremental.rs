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
//!
//! The state stays small however many rows tie at `v` (a bulk insert with `DEFAULT now()`):
//! past [`MAX_BOUNDARY_ROWS`] the hashes give way to a digest of the set (count, sum and xor of
//! the hashes). The next run first reads just the rows at `v` (their identity columns) in its
//! snapshot: if their digest is unchanged, none is new and the read continues past `v`
//! (`cursor > v`); if it changed, a merge re-reads them all (the merge deduplicates them), and
//! an append stops with an error rather than guess which rows are new.

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

/// Rows at the high-water mark kept as hashes; more are kept as a [`Digest`].
pub(crate) const MAX_BOUNDARY_ROWS: usize = 1000;

/// What a run commits for its cursor (stored as JSON under `cursor.<column>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct CursorState {
    /// The high-water mark as a SQL literal of the column's type.
    pub value: String,
    /// The same, as compared (`i64`: integer, days, or microseconds since 1970).
    pub raw: i64,
    /// Hashes of the rows loaded at exactly `raw` (at most [`MAX_BOUNDARY_ROWS`]).
    pub boundary: Vec<String>,
    /// Instead of `boundary`, when more rows than that sit at `raw`: their digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// A multiset of row hashes in constant space: how many, their sum and their xor.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Digest {
    /// Rows.
    pub rows: u64,
    /// The sum of their 64-bit hashes (hex, 128 bits).
    #[serde(with = "hex128")]
    pub sum: u128,
    /// The xor of their hashes (hex).
    #[serde(with = "hex64")]
    pub xor: u64,
}

impl Digest {
    pub(crate) fn add(&mut self, hash: u64) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(u128::from(hash));
        self.xor ^= hash;
    }
}

mod hex128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:032x}"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        u128::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

mod hex64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
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

fn row_hashes(converter: &RowConverter, columns: &[ArrayRef]) -> Result<Vec<u64>, PgError> {
    let rows = converter
        .convert_columns(columns)
        .map_err(|e| PgError::Protocol(format!("hashing boundary rows: {e}")))?;
    Ok(rows
        .iter()
        .map(|r| xxhash_rust::xxh3::xxh3_64(r.as_ref()))
        .collect())
}

fn hex(hash: u64) -> String {
    format!("{hash:016x}")
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
    /// The old boundary's digest, when it was kept as one.
    original_digest: Option<Digest>,
    max: Option<i64>,
    /// Hashes of the rows read at `max` (the first [`MAX_BOUNDARY_ROWS`] + 1) and the digest
    /// of all of them.
    at_max: Vec<u64>,
    at_max_digest: Digest,
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
            original_digest: previous.and_then(|p| p.digest),
            max: previous.map(|p| p.raw),
            at_max: Vec::new(),
            at_max_digest: Digest::default(),
        })
    }

    /// The digest of the rows of `batch` (the boundary's rows, read by themselves).
    pub(crate) fn digest_of(&self, batch: &RecordBatch, into: &mut Digest) -> Result<(), PgError> {
        for h in self.hashes(batch)? {
            into.add(h);
        }
        Ok(())
    }

    fn hashes(&self, batch: &RecordBatch) -> Result<Vec<u64>, PgError> {
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
                let mut hashes = self.hashes(&candidates)?.into_iter().map(hex);
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
            self.at_max_digest = Digest::default();
        }
        if Some(batch_max) == self.max {
            let at: Vec<bool> = vals.iter().map(|v| *v == Some(batch_max)).collect();
            let rows = filter_record_batch(&batch, &BooleanArray::from(at))
                .map_err(|e| PgError::Protocol(e.to_string()))?;
            for h in self.hashes(&rows)? {
                self.at_max_digest.add(h);
                if self.at_max.len() <= MAX_BOUNDARY_ROWS {
                    self.at_max.push(h);
                }
            }
        }
        Ok(batch)
    }

    /// Combine with another partition's tracker of the same read.
    pub(crate) fn merge(&mut self, other: Tracker) {
        match (self.max, other.max) {
            (_, None) => {}
            (Some(a), Some(b)) if b < a => {}
            (Some(a), Some(b)) if b == a => {
                let room = (MAX_BOUNDARY_ROWS + 1).saturating_sub(self.at_max.len());
                self.at_max.extend(other.at_max.into_iter().take(room));
                let (d, o) = (&mut self.at_max_digest, other.at_max_digest);
                d.rows += o.rows;
                d.sum = d.sum.wrapping_add(o.sum);
                d.xor ^= o.xor;
            }
            _ => {
                self.max = other.max;
                self.at_max = other.at_max;
                self.at_max_digest = other.at_max_digest;
            }
        }
    }

    /// The state to commit: the new high-water mark and the rows at it (hashes, or their
    /// digest past [`MAX_BOUNDARY_ROWS`]). If nothing newer was read, the old boundary rows
    /// stay (they are still loaded).
    pub(crate) fn state(self) -> Option<CursorState> {
        let raw = self.max?;
        let value = self.kind.sql(raw);
        let same = self.previous.as_ref().is_some_and(|p| p.0 == raw)
            || self.original_digest.is_some() && self.at_max_digest.rows == 0;
        if same && let Some(old) = self.original_digest {
            // The old boundary was a digest: rows at it read again (a merge) are all of them;
            // none read (`cursor > v`) leaves it as it was.
            let digest = if self.at_max_digest.rows > 0 {
                self.at_max_digest
            } else {
                old
            };
            return Some(CursorState {
                value,
                raw,
                boundary: Vec::new(),
                digest: Some(digest),
            });
        }
        let mut digest = self.at_max_digest;
        let mut boundary: Vec<String> = self.at_max.into_iter().map(hex).collect();
        if same {
            for h in &self.original {
                if let Ok(v) = u64::from_str_radix(h, 16) {
                    digest.add(v);
                }
            }
            boundary.extend(self.original);
        }
        if digest.rows as usize > MAX_BOUNDARY_ROWS {
            return Some(CursorState {
                value,
                raw,
                boundary: Vec::new(),
                digest: Some(digest),
            });
        }
        boundary.sort();
        Some(CursorState {
            value,
            raw,
            boundary,
            digest: None,
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
    fn many_tied_rows_keep_a_digest_not_their_hashes() {
        let schema = batch(&[], &[]).schema();
        let n = MAX_BOUNDARY_ROWS + 500;
        let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut t = Tracker::new(0, CursorKind::Int, &schema, None, None).expect("t");
        t.process(batch(&vec![8; n], &refs)).expect("ok");
        let state = t.state().expect("state");
        assert!(state.boundary.is_empty());
        let digest = state.digest.expect("digest");
        assert_eq!(digest.rows, n as u64);
        let json = serde_json::to_string(&state).expect("json");
        assert!(json.len() < 200, "{json}");
        assert_eq!(
            serde_json::from_str::<CursorState>(&json).expect("back"),
            state
        );

        // The same rows read by themselves give the same digest.
        let mut again = Digest::default();
        t = Tracker::new(0, CursorKind::Int, &schema, None, None).expect("t");
        t.digest_of(&batch(&vec![8; n], &refs), &mut again)
            .expect("ok");
        assert_eq!(again, digest);

        // A run past the boundary that reads nothing keeps it; one that reads newer rows
        // moves on to a small boundary of hashes again.
        let idle = Tracker::new(0, CursorKind::Int, &schema, None, Some(&state)).expect("t");
        assert_eq!(idle.state(), Some(state.clone()));
        let mut next = Tracker::new(0, CursorKind::Int, &schema, None, Some(&state)).expect("t");
        next.process(batch(&[9, 9], &["a", "b"])).expect("ok");
        let moved = next.state().expect("state");
        assert_eq!(
            (moved.raw, moved.boundary.len(), moved.digest),
            (9, 2, None)
        );
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
