//! Tokenized records → an Arrow record batch of the planned schema, column by column.
//!
//! Each column's field bytes are gathered into one binary array (an unquoted field matching
//! a null marker is NULL; a quoted field is always its text), validated as UTF-8 once, and
//! converted with Arrow's casts; a value that does not convert is an error naming its line,
//! column and text. Decimals are parsed here, exactly: a digit the type's scale cannot hold is
//! an error, never rounded or cut off.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Decimal128Builder};
use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::{DataType, SchemaRef};

use super::tokenize::Records;

/// A decoding failure at a record.
#[derive(Debug)]
pub(crate) struct DecodeError {
    pub line: u64,
    pub message: String,
}

/// Field values read as NULL when they appear unquoted.
#[derive(Debug, Clone)]
pub(crate) struct NullMarkers(Vec<Vec<u8>>);

impl NullMarkers {
    pub(crate) fn new(values: &[String]) -> Self {
        Self(values.iter().map(|v| v.as_bytes().to_vec()).collect())
    }

    /// Whether a field is NULL.
    pub(crate) fn is_null(&self, bytes: &[u8], quoted: bool) -> bool {
        !quoted && self.0.iter().any(|m| m.as_slice() == bytes)
    }
}

/// Decode every record of `records` (each `schema.fields().len()` wide) into a batch.
pub(crate) fn decode(
    records: &Records,
    schema: &SchemaRef,
    nulls: &NullMarkers,
) -> Result<RecordBatch, DecodeError> {
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(c, field)| {
            let raw = gather(records, c, nulls);
            let array = convert(records, &raw, field.data_type(), field.name())?;
            if !field.is_nullable()
                && let Some(row) = (0..array.len()).find(|&r| array.is_null(r))
            {
                return Err(DecodeError {
                    line: records.line(row),
                    message: format!(
                        "column `{}` is declared not nullable but has no value",
                        field.name()
                    ),
                });
            }
            Ok(array)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(records.len()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(|e| DecodeError {
        line: records.line(0),
        message: e.to_string(),
    })
}

/// Column `c`'s fields as bytes, NULL where a null marker stands unquoted.
fn gather(records: &Records, c: usize, nulls: &NullMarkers) -> BinaryArray {
    let rows = records.len();
    let mut builder = BinaryBuilder::with_capacity(rows, rows * 8);
    for r in 0..rows {
        let (bytes, quoted) = records.field(r, c);
        if nulls.is_null(bytes, quoted) {
            builder.append_null();
        } else {
            builder.append_value(bytes);
        }
    }
    builder.finish()
}

fn convert(
    records: &Records,
    raw: &BinaryArray,
    to: &DataType,
    name: &str,
) -> Result<ArrayRef, DecodeError> {
    if matches!(to, DataType::Binary) {
        return Ok(Arc::new(raw.clone()));
    }
    let text = match StringArray::try_from_binary(raw.clone()) {
        Ok(text) => text,
        Err(_) => {
            let row = (0..raw.len())
                .find(|&r| raw.is_valid(r) && std::str::from_utf8(raw.value(r)).is_err())
                .unwrap_or(0);
            return Err(DecodeError {
                line: records.line(row),
                message: format!("column `{name}`: invalid UTF-8"),
            });
        }
    };
    match to {
        DataType::Utf8 => Ok(Arc::new(text)),
        // The first file had no rows to type the column by; a later one that has values
        // cannot be read into it without losing them.
        DataType::Null => match (0..text.len()).find(|&r| text.is_valid(r)) {
            None => Ok(arrow_array::new_null_array(to, text.len())),
            Some(row) => Err(DecodeError {
                line: records.line(row),
                message: format!(
                    "column `{name}` has a value, but the first file had no rows to infer its \
                     type from; declare it with `column_types`"
                ),
            }),
        },
        DataType::Decimal128(p, s) => decimals(records, &text, *p, *s, name),
        _ => {
            let options = CastOptions {
                safe: true,
                ..Default::default()
            };
            let cast = cast_with_options(&text, to, &options).map_err(|e| DecodeError {
                line: records.line(0),
                message: format!("column `{name}`: {e}"),
            })?;
            if cast.null_count() != text.null_count()
                && let Some(row) = (0..text.len()).find(|&r| text.is_valid(r) && cast.is_null(r))
            {
                return Err(DecodeError {
                    line: records.line(row),
                    message: format!(
                        "column `{name}`: cannot parse {:?} as {to}",
                        text.value(row)
                    ),
                });
            }
            Ok(cast)
        }
    }
}

fn decimals(
    records: &Records,
    text: &StringArray,
    precision: u8,
    scale: i8,
    name: &str,
) -> Result<ArrayRef, DecodeError> {
    let mut builder = Decimal128Builder::with_capacity(text.len())
        .with_data_type(DataType::Decimal128(precision, scale));
    for (row, value) in text.iter().enumerate() {
        match value {
            None => builder.append_null(),
            Some(v) => match exact_decimal(v, precision, scale) {
                Ok(d) => builder.append_value(d),
                Err(why) => {
                    return Err(DecodeError {
                        line: records.line(row),
                        message: format!(
                            "column `{name}`: cannot read {v:?} as decimal({precision},{scale}): {why}"
                        ),
                    });
                }
            },
        }
    }
    Ok(Arc::new(builder.finish()))
}

/// `text` as an unscaled decimal of `scale` fraction digits and at most `precision` digits:
/// digits, an optional sign, point and exponent (`-12.50`, `1.5e3`). Fraction digits beyond
/// the scale must be zeros; nothing is rounded.
pub(crate) fn exact_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let s = text.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => {
            let e: i32 = s[i + 1..].parse().map_err(|_| "not a number".to_string())?;
            (&s[..i], e)
        }
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("not a number".into());
    }
    // All digits, and how many of them are fraction digits once the exponent applies.
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let fraction = i64::try_from(frac.len()).unwrap_or(i64::MAX) - i64::from(exponent);
    let shift = i64::from(scale) - fraction;
    let mut value: i128 = 0;
    let mut kept = digits.as_slice();
    if shift < 0 {
        // More fraction digits than the scale: the extra ones must be zero.
        let cut = usize::try_from(-shift).unwrap_or(usize::MAX);
        let (head, tail) = digits.split_at(digits.len().saturating_sub(cut));
        if tail.iter().any(|d| *d != 0) || cut > digits.len() && digits.iter().any(|d| *d != 0) {
            return Err(format!("more than {scale} fraction digits"));
        }
        kept = head;
    }
    for d in kept {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(*d)))
            .ok_or("too many digits")?;
    }
    if shift > 0 && value != 0 {
        if shift > 38 {
            return Err(format!("more than {precision} digits"));
        }
        for _ in 0..shift {
            value = value.checked_mul(10).ok_or("too many digits")?;
        }
    }
    let limit = 10_i128
        .checked_pow(u32::from(precision))
        .unwrap_or(i128::MAX);
    if value >= limit {
        return Err(format!("more than {precision} digits"));
    }
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::exact_decimal;

    #[test]
    fn decimals_are_exact_or_refused() {
        assert_eq!(exact_decimal("12.5", 10, 2), Ok(1250));
        assert_eq!(exact_decimal("-0.05", 10, 2), Ok(-5));
        assert_eq!(exact_decimal("1.500", 10, 2), Ok(150));
        assert_eq!(exact_decimal("1.5e3", 10, 2), Ok(150_000));
        assert_eq!(exact_decimal("7", 38, 10), Ok(70_000_000_000));
        assert_eq!(
            exact_decimal("9999999999999999999999999999.9999999999", 38, 10),
            Ok(99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
        assert!(exact_decimal("1.005", 10, 2).is_err(), "never rounded");
        assert!(exact_decimal("12345678901", 10, 0).is_err(), "precision");
        assert!(exact_decimal("1.2.3", 10, 2).is_err());
        assert!(exact_decimal("", 10, 2).is_err());
        assert!(exact_decimal(".", 10, 2).is_err());
        assert!(exact_decimal("abc", 10, 2).is_err());
        assert_eq!(exact_decimal("1e-2", 10, 2), Ok(1));
        assert!(exact_decimal("1e-3", 10, 2).is_err());
    }
}
