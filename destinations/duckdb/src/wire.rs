//! The shape of batches on their way into DuckDB, and the SELECT list that turns them back
//! into the table's columns.
//!
//! Two columns do not travel as they are: merge batches carry an extra arrival sequence, and
//! INTERVAL columns travel as `STRUCT(months, days, micros)` because duckdb-rs' Arrow
//! conversion of intervals drops their NULLs (it rebuilds the array from the values alone);
//! the INSERT's SELECT list rebuilds the interval, keeping NULL as NULL.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::IntervalMonthDayNanoType;
use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StructArray};
use arrow_schema::{
    ArrowError, DataType, Field, FieldRef, Fields, IntervalUnit, Schema, SchemaRef,
};

use crate::types::ident;

/// Column added to staged rows for merges: arrival order, so the last duplicate key wins.
pub(crate) const SEQ_COLUMN: &str = "__pipe_seq";

fn interval_parts() -> Fields {
    Fields::from(vec![
        Field::new("months", DataType::Int32, false),
        Field::new("days", DataType::Int32, false),
        Field::new("micros", DataType::Int64, false),
    ])
}

fn is_interval(f: &Field) -> bool {
    matches!(
        f.data_type(),
        DataType::Interval(IntervalUnit::MonthDayNano)
    )
}

/// The streamed schema for `target` (plus the sequence column when `sequenced`).
pub(crate) fn stream_schema(target: &Schema, sequenced: bool) -> SchemaRef {
    let mut fields: Vec<FieldRef> = target
        .fields()
        .iter()
        .map(|f| {
            if is_interval(f) {
                Arc::new(Field::new(
                    f.name(),
                    DataType::Struct(interval_parts()),
                    true,
                ))
            } else {
                f.clone()
            }
        })
        .collect();
    if sequenced {
        fields.push(Arc::new(Field::new(SEQ_COLUMN, DataType::Int64, false)));
    }
    Arc::new(Schema::new(fields))
}

/// The INSERT's SELECT list over the stream, producing `target`'s columns (and the sequence).
pub(crate) fn select_list(target: &Schema, sequenced: bool) -> String {
    let mut exprs: Vec<String> = target
        .fields()
        .iter()
        .map(|f| {
            let c = ident(f.name());
            if is_interval(f) {
                format!(
                    "CASE WHEN {c} IS NULL THEN NULL ELSE to_months({c}.months) + \
                     to_days({c}.days) + to_microseconds({c}.micros) END AS {c}"
                )
            } else {
                c
            }
        })
        .collect();
    if sequenced {
        exprs.push(ident(SEQ_COLUMN));
    }
    exprs.join(", ")
}

/// Convert a batch of the target schema into the streamed schema; `seq` is the arrival
/// number of its first row when merging.
pub(crate) fn to_stream(
    batch: RecordBatch,
    streamed: &SchemaRef,
    seq: Option<i64>,
) -> Result<RecordBatch, ArrowError> {
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(streamed.fields().len());
    for column in batch.columns() {
        if matches!(
            column.data_type(),
            DataType::Interval(IntervalUnit::MonthDayNano)
        ) {
            let iv = column.as_primitive::<IntervalMonthDayNanoType>();
            let months = Int32Array::from_iter_values(iv.values().iter().map(|v| v.months));
            let days = Int32Array::from_iter_values(iv.values().iter().map(|v| v.days));
            let micros =
                Int64Array::from_iter_values(iv.values().iter().map(|v| v.nanoseconds / 1000));
            columns.push(Arc::new(StructArray::try_new(
                interval_parts(),
                vec![Arc::new(months), Arc::new(days), Arc::new(micros)],
                iv.nulls().cloned(),
            )?));
        } else {
            columns.push(column.clone());
        }
    }
    if let Some(start) = seq {
        columns.push(Arc::new(Int64Array::from_iter_values(
            start..start + rows as i64,
        )));
    }
    RecordBatch::try_new(streamed.clone(), columns)
}
