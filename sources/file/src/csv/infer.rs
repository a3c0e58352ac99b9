//! Column types of CSV text, from the first records of a file.
//!
//! Every non-NULL value of a column votes (a quoted value by its text, like an unquoted one;
//! only an unquoted null marker is NULL): a column whose values are all `true`/`false` is
//! boolean, all integers `int64` (`decimal(38,0)` when one does not fit 64 bits), all
//! numbers `float64`, all ISO dates `date`, dates and timestamps without an offset
//! `timestamp` (the unit the most fraction digits need: s, ms, µs or ns), timestamps that all
//! carry a `Z` or UTC offset `timestamptz` (µs, or ns for more than six fraction digits;
//! instants in UTC). Anything else, including a mix of offset and plain timestamps, and a
//! column without a value, is `string`.

use std::sync::LazyLock;

use arrow_schema::{DataType, TimeUnit};
use regex::Regex;

static FLOAT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^[-+]?((\d*\.\d+|\d+\.\d*)([eE][-+]?\d+)?|\d+[eE][-+]?\d+)$").ok()
});
static DATE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}$").ok());
/// A timestamp; group 1 the fraction digits, group 2 the offset.
static TIMESTAMP: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.(\d{1,9}))?)?(Z|z|[+-]\d{2}(?::?\d{2})?)?$",
    )
    .ok()
});

/// What one column's values have been so far.
#[derive(Debug, Clone)]
pub(crate) struct Votes {
    any: bool,
    boolean: bool,
    int: bool,
    /// An integer too large for 64 bits (but at most 38 digits).
    big: bool,
    float: bool,
    date: bool,
    naive: bool,
    zoned: bool,
    /// Most fraction digits of a timestamp.
    digits: usize,
}

impl Default for Votes {
    fn default() -> Self {
        Self {
            any: false,
            boolean: true,
            int: true,
            big: false,
            float: true,
            date: true,
            naive: true,
            zoned: true,
            digits: 0,
        }
    }
}

impl Votes {
    /// Count one non-NULL value.
    pub(crate) fn add(&mut self, value: &str) {
        self.any = true;
        if self.boolean {
            self.boolean =
                value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false");
        }
        let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
        let is_int = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        if self.int {
            if is_int && value.parse::<i64>().is_err() {
                self.big |= digits.len() <= 38;
                self.int = digits.len() <= 38;
            } else {
                self.int = is_int;
            }
        }
        if self.float && !is_int {
            self.float = FLOAT.as_ref().is_some_and(|re| re.is_match(value));
        }
        let date = DATE.as_ref().is_some_and(|re| re.is_match(value));
        self.date &= date;
        if self.naive || self.zoned {
            match TIMESTAMP.as_ref().and_then(|re| re.captures(value)) {
                Some(c) => {
                    self.digits = self.digits.max(c.get(1).map_or(0, |m| m.len()));
                    let offset = c.get(2).is_some();
                    self.naive &= !offset;
                    self.zoned &= offset;
                }
                None if date => self.zoned = false,
                None => {
                    self.naive = false;
                    self.zoned = false;
                }
            }
        }
    }

    /// The column's type.
    pub(crate) fn data_type(&self) -> DataType {
        if !self.any {
            return DataType::Utf8;
        }
        if self.boolean {
            DataType::Boolean
        } else if self.int && self.big {
            DataType::Decimal128(38, 0)
        } else if self.int {
            DataType::Int64
        } else if self.float {
            DataType::Float64
        } else if self.date {
            DataType::Date32
        } else if self.naive {
            let unit = match self.digits {
                0 => TimeUnit::Second,
                1..=3 => TimeUnit::Millisecond,
                4..=6 => TimeUnit::Microsecond,
                _ => TimeUnit::Nanosecond,
            };
            DataType::Timestamp(unit, None)
        } else if self.zoned {
            let unit = if self.digits > 6 {
                TimeUnit::Nanosecond
            } else {
                TimeUnit::Microsecond
            };
            DataType::Timestamp(unit, Some("UTC".into()))
        } else {
            DataType::Utf8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(values: &[&str]) -> DataType {
        let mut v = Votes::default();
        for value in values {
            v.add(value);
        }
        v.data_type()
    }

    #[test]
    fn numbers_booleans_and_text() {
        assert_eq!(infer(&["1", "-2", "+3"]), DataType::Int64);
        assert_eq!(infer(&["1", "2.5", "1e3"]), DataType::Float64);
        assert_eq!(infer(&["True", "false"]), DataType::Boolean);
        assert_eq!(infer(&["1", "x"]), DataType::Utf8);
        assert_eq!(
            infer(&[""]),
            DataType::Utf8,
            "a quoted empty string is text"
        );
        assert_eq!(infer(&[]), DataType::Utf8);
        assert_eq!(
            infer(&["12345678901234567890123"]),
            DataType::Decimal128(38, 0)
        );
        assert_eq!(
            infer(&["12345678901234567890123", "1.5"]),
            DataType::Float64
        );
    }

    #[test]
    fn dates_and_timestamps_with_and_without_offsets() {
        assert_eq!(infer(&["2024-01-01"]), DataType::Date32);
        assert_eq!(
            infer(&["2024-01-01", "2024-01-01 00:00:07"]),
            DataType::Timestamp(TimeUnit::Second, None)
        );
        assert_eq!(
            infer(&["2024-01-01T00:00:07.123456"]),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(
            infer(&["2024-01-01 00:00:07+00", "2024-06-01T12:00:00.5Z"]),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            infer(&["2024-01-01 00:00:07+02:00", "2024-01-01 00:00:07"]),
            DataType::Utf8,
            "a mix of instants and wall-clock times stays text"
        );
    }
}
