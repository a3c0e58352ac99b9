//! The newest value of a date/timestamp column over a run, for the `freshness` rule.

use arrow_arith::aggregate::max;
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Date64Type, TimestampMicrosecondType};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, Utc};
use pipe_framework::Result;

/// Tracks the newest value of one column (timestamps without a zone count as UTC).
#[derive(Debug)]
pub(crate) struct Newest {
    column: usize,
    micros: Option<i64>,
}

impl Newest {
    pub(crate) fn new(column: usize) -> Self {
        Self {
            column,
            micros: None,
        }
    }

    pub(crate) fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let col = batch.column(self.column);
        // Microseconds; a date too far out to be one (overflow) counts as none.
        let newest = match col.data_type() {
            DataType::Date32 => max(col.as_primitive::<Date32Type>())
                .and_then(|d| i64::from(d).checked_mul(86_400_000_000)),
            DataType::Date64 => {
                max(col.as_primitive::<Date64Type>()).and_then(|d| d.checked_mul(1000))
            }
            DataType::Timestamp(_, tz) => {
                let micros =
                    arrow_cast::cast(col, &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))?;
                max(micros.as_primitive::<TimestampMicrosecondType>())
            }
            _ => None,
        };
        self.micros = self.micros.max(newest);
        Ok(())
    }

    pub(crate) fn value(&self) -> Option<DateTime<Utc>> {
        self.micros.and_then(DateTime::from_timestamp_micros)
    }
}

/// `2d 3h`-style text for a duration.
pub(crate) fn describe(age: chrono::Duration) -> String {
    let s = age.num_seconds();
    match s {
        s if s % 604_800 == 0 => format!("{}w", s / 604_800),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
