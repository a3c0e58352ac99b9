//! The incremental cursor of an HTTP source: a field of the records whose maximum is
//! committed with the data (state key `cursor.<field>`) and sent back as `{cursor}`.
//!
//! APIs differ on whether `since=v` includes `v`, and some ignore it: the source keeps rows
//! above the committed value, drops rows below it, and of the rows at exactly `v` drops those
//! it already loaded (a hash of each row loaded at `v` is committed with the value, up to
//! [`MAX_BOUNDARY_ROWS`]; past that, rows at `v` are all treated as loaded). Rows whose cursor
//! is null are kept and counted.

use std::collections::HashSet;

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, Scalar, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_ord::cmp;
use arrow_ord::sort::{SortOptions, sort_to_indices};
use arrow_schema::{ArrowError, DataType, SchemaRef};
use arrow_select::filter::filter_record_batch;
use serde::{Deserialize, Serialize};

/// Rows at the high-water mark remembered by hash.
pub(crate) const MAX_BOUNDARY_ROWS: usize = 10_000;

/// What a run commits for its cursor.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct CursorState {
    /// The highest value loaded, as text (what `{cursor}` sends).
    pub value: String,
    /// Hashes of the rows loaded at exactly `value`; empty with `all_at_value`.
    #[serde(default)]
    pub boundary: Vec<String>,
    /// More rows than [`MAX_BOUNDARY_ROWS`] were at `value`: every row at it counts as loaded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_at_value: bool,
}

/// The state key of a cursor field.
pub(crate) fn state_key(field: &str) -> String {
    format!("cursor.{field}")
}

/// Filters the rows of one run against the committed position and tracks the new one.
pub(crate) struct Tracker {
    column: usize,
    data_type: DataType,
    /// The committed value (as the column's type) and its boundary hashes.
    from: Option<(ArrayRef, HashSet<u64>, bool)>,
    /// The running maximum and the hashes of the rows at it.
    max: Option<ArrayRef>,
    at_max: HashSet<u64>,
    overflow: bool,
    /// Rows whose cursor is null.
    pub nulls: u64,
    /// Rows dropped as already loaded or below the position.
    pub dropped: u64,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("column", &self.column)
            .field("nulls", &self.nulls)
            .finish_non_exhaustive()
    }
}

fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// `text` as a one-element array of `data_type`.
fn parse(text: &str, data_type: &DataType) -> Result<ArrayRef, ArrowError> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(&StringArray::from(vec![text]), data_type, &options)
}

impl Tracker {
    /// For the column `field` of `schema`, from the committed `state` (if any), else from
    /// `initial` (inclusive, nothing dropped at it).
    pub(crate) fn new(
        schema: &SchemaRef,
        field: &str,
        state: Option<&str>,
        initial: Option<&str>,
    ) -> Result<Self, String> {
        let column = schema
            .index_of(field)
            .map_err(|_| format!("the cursor field `{field}` is not among the columns"))?;
        let data_type = schema.field(column).data_type().clone();
        if data_type.is_nested() || matches!(data_type, DataType::Boolean) {
            return Err(format!(
                "the cursor field `{field}` is {data_type}: use a number, string, date or \
                 timestamp"
            ));
        }
        let from = match (state, initial) {
            (Some(json), _) => {
                let state: CursorState = serde_json::from_str(json)
                    .map_err(|e| format!("the committed cursor state is unreadable: {e}"))?;
                let value = parse(&state.value, &data_type).map_err(|e| {
                    format!(
                        "the committed cursor `{}` is not a {data_type}: {e}",
                        state.value
                    )
                })?;
                let hashes = state
                    .boundary
                    .iter()
                    .filter_map(|h| u64::from_str_radix(h, 16).ok())
                    .collect();
                Some((value, hashes, state.all_at_value))
            }
            (None, Some(initial)) => {
                let value = parse(initial, &data_type)
                    .map_err(|e| format!("initial_value `{initial}` is not a {data_type}: {e}"))?;
                Some((value, HashSet::new(), false))
            }
            (None, None) => None,
        };
        Ok(Self {
            column,
            data_type,
            from,
            max: None,
            at_max: HashSet::new(),
            overflow: false,
            nulls: 0,
            dropped: 0,
        })
    }

    /// The rows of `batch` not loaded before; the new position is tracked over them.
    /// `hash(i)` is the hash of row `i`'s record as the API sent it (its raw JSON bytes:
    /// stable when the inferred schema changes between runs).
    pub(crate) fn filter(
        &mut self,
        batch: RecordBatch,
        hash: &dyn Fn(usize) -> u64,
    ) -> Result<RecordBatch, ArrowError> {
        let batch = match &self.from {
            None => batch,
            Some((value, loaded, all_at_value)) => {
                let cursor = batch.column(self.column);
                let from = Scalar::new(value.clone());
                let above = cmp::gt(cursor, &from)?;
                let at = cmp::eq(cursor, &from)?;
                let keep_at: BooleanArray = if *all_at_value || at.true_count() == 0 {
                    BooleanArray::from(vec![false; batch.num_rows()])
                } else {
                    (0..batch.num_rows())
                        .map(|i| Some(at.is_valid(i) && at.value(i) && !loaded.contains(&hash(i))))
                        .collect()
                };
                // Null cursors compare as null: kept (Kleene `or`: null or true is true).
                let null = arrow_arith::boolean::is_null(cursor.as_ref())?;
                let keep = arrow_arith::boolean::or_kleene(
                    &arrow_arith::boolean::or_kleene(&above, &keep_at)?,
                    &null,
                )?;
                let keep = if keep.null_count() > 0 {
                    arrow_select::filter::prep_null_mask_filter(&keep)
                } else {
                    keep
                };
                let kept_rows: Vec<usize> = (0..keep.len()).filter(|i| keep.value(*i)).collect();
                let kept = filter_record_batch(&batch, &keep)?;
                self.dropped += (batch.num_rows() - kept.num_rows()) as u64;
                self.track(&kept, &|i| hash(kept_rows[i]))?;
                return Ok(kept);
            }
        };
        self.track(&batch, hash)?;
        Ok(batch)
    }

    fn track(
        &mut self,
        batch: &RecordBatch,
        hash: &dyn Fn(usize) -> u64,
    ) -> Result<(), ArrowError> {
        let cursor = batch.column(self.column);
        self.nulls += cursor.null_count() as u64;
        if cursor.null_count() == cursor.len() {
            return Ok(());
        }
        let options = SortOptions {
            descending: true,
            nulls_first: false,
        };
        let top = sort_to_indices(cursor.as_ref(), Some(options), Some(1))?;
        let batch_max = arrow_select::take::take(cursor.as_ref(), &top, None)?;
        let (raised, below) = match &self.max {
            None => (true, false),
            Some(max) => {
                let max = Scalar::new(max.clone());
                (
                    cmp::gt(&batch_max, &max)?.value(0),
                    cmp::lt(&batch_max, &max)?.value(0),
                )
            }
        };
        if raised {
            self.max = Some(batch_max.clone());
            self.at_max.clear();
            self.overflow = false;
        }
        // Rows below the running maximum are not at the boundary.
        if below || self.overflow {
            return Ok(());
        }
        let at = cmp::eq(cursor, &Scalar::new(batch_max))?;
        if at.true_count() > 0 {
            for i in 0..at.len() {
                if at.is_valid(i) && at.value(i) {
                    self.at_max.insert(hash(i));
                }
            }
            if self.at_max.len() > MAX_BOUNDARY_ROWS {
                self.overflow = true;
                self.at_max.clear();
            }
        }
        Ok(())
    }

    /// The state to commit, or `None` when the run loaded no row with a cursor value (the
    /// committed position stays).
    pub(crate) fn finish(&self) -> Result<Option<String>, ArrowError> {
        let Some(max) = &self.max else {
            return Ok(None);
        };
        let options = FormatOptions::default().with_display_error(true);
        let value = ArrayFormatter::try_new(max.as_ref(), &options)?
            .value(0)
            .try_to_string()?;
        // A run whose maximum equals the committed value keeps the boundary rows loaded
        // before (they were dropped from this run, so are not in `at_max`).
        let mut boundary: HashSet<u64> = self.at_max.clone();
        let mut all_at_value = self.overflow;
        if let Some((from, loaded, all)) = &self.from
            && cmp::eq(from, &Scalar::new(max.clone()))?.value(0)
        {
            boundary.extend(loaded);
            all_at_value |= *all;
        }
        let mut boundary: Vec<String> = if all_at_value || boundary.len() > MAX_BOUNDARY_ROWS {
            all_at_value = true;
            Vec::new()
        } else {
            boundary.into_iter().map(hex).collect()
        };
        boundary.sort();
        let state = CursorState {
            value,
            boundary,
            all_at_value,
        };
        serde_json::to_string(&state)
            .map(Some)
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))
    }

    /// The cursor's type (for messages).
    pub(crate) fn data_type(&self) -> &DataType {
        &self.data_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    fn batch(ids: &[i64], at: &[Option<i64>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("at", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(Int64Array::from(at.to_vec())),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn each_row_once_across_runs() {
        let first = batch(&[1, 2, 3], &[Some(10), Some(20), Some(20)]);
        let hash = |b: &RecordBatch| {
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("i64")
                .clone();
            move |i: usize| ids.value(i) as u64
        };
        let mut t = Tracker::new(&first.schema(), "at", None, None).expect("tracker");
        assert_eq!(
            t.filter(first.clone(), &hash(&first))
                .expect("f")
                .num_rows(),
            3
        );
        let state = t.finish().expect("f").expect("state");
        // The API includes the boundary and one new row ties with it; one is older.
        let second = batch(
            &[2, 3, 4, 0, 5],
            &[Some(20), Some(20), Some(20), Some(5), None],
        );
        let mut t = Tracker::new(&second.schema(), "at", Some(&state), None).expect("tracker");
        let h = hash(&second);
        let kept = t.filter(second, &h).expect("f");
        let ids = kept
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("i64");
        assert_eq!(ids.values().to_vec(), vec![4, 5]);
        assert_eq!((t.nulls, t.dropped), (1, 3));
        let state: CursorState =
            serde_json::from_str(&t.finish().expect("f").expect("state")).expect("json");
        assert_eq!(state.value, "20");
        assert_eq!(state.boundary.len(), 3, "rows 2, 3 and 4 are all at 20");
    }
}
