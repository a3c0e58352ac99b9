//! The binary COPY stream → Arrow record batches, field by field into typed builders.
//!
//! Stream layout: an 11-byte signature, a 4-byte flags word and a 4-byte header-extension
//! length (plus the extension), then tuples: an `i16` field count (`-1` ends the stream) and per
//! field an `i32` byte length (`-1` is NULL) followed by the value in the type's binary send
//! format. No text parsing, no per-row allocation beyond the builders' own buffers.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    IntervalMonthDayNanoBuilder, StringBuilder, StringDictionaryBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::types::{Int32Type, IntervalMonthDayNano};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StringArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{FieldRef, SchemaRef};

use crate::error::PgError;
use crate::numeric::Numeric;
use crate::types::{PgKind, field};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Days from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// A batch is flushed once its values reach this size (well below i32 offsets' 2 GiB).
const MAX_BATCH_BYTES: usize = 256 << 20;
/// Microseconds in a day: a time of day is below it.
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn exact<'a>(data: &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if data.len() == n {
        Ok(data)
    } else {
        Err(format!(
            "{what} value of {} bytes, expected {n}",
            data.len()
        ))
    }
}

fn utf8(data: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(data).map_err(|e| format!("invalid UTF-8 text: {e}"))
}

/// One column's decoder and builder.
enum Column {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Oid(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    NumericText(StringBuilder),
    /// Text is collected as bytes and validated as UTF-8 once per batch, not per value.
    Text(BinaryBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
    Uuid(FixedSizeBinaryBuilder),
    Json(StringBuilder, bool),
    Enum(StringDictionaryBuilder<Int32Type>),
    List(Box<ListColumn>),
}

struct ListColumn {
    field: FieldRef,
    items: Column,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl Column {
    fn new(kind: &PgKind, capacity: usize) -> Self {
        match kind {
            PgKind::Bool => Self::Bool(BooleanBuilder::with_capacity(capacity)),
            PgKind::Int2 => Self::Int2(Int16Builder::with_capacity(capacity)),
            PgKind::Int4 => Self::Int4(Int32Builder::with_capacity(capacity)),
            PgKind::Int8 => Self::Int8(Int64Builder::with_capacity(capacity)),
            PgKind::Oid => Self::Oid(Int64Builder::with_capacity(capacity)),
            PgKind::Float4 => Self::Float4(Float32Builder::with_capacity(capacity)),
            PgKind::Float8 => Self::Float8(Float64Builder::with_capacity(capacity)),
            PgKind::Decimal { precision, scale } => Self::Decimal(
                Decimal128Builder::with_capacity(capacity)
                    .with_data_type(arrow_schema::DataType::Decimal128(*precision, *scale)),
                *precision,
                *scale,
            ),
            PgKind::NumericText => Self::NumericText(StringBuilder::new()),
            PgKind::Text => Self::Text(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            PgKind::Bytea => Self::Bytea(BinaryBuilder::new()),
            PgKind::Date => Self::Date(Date32Builder::with_capacity(capacity)),
            PgKind::Time => Self::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgKind::Timestamp => {
                Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            PgKind::Timestamptz => Self::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
            ),
            PgKind::Interval => {
                Self::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
            PgKind::Uuid => Self::Uuid(FixedSizeBinaryBuilder::with_capacity(capacity, 16)),
            PgKind::Json => Self::Json(StringBuilder::new(), false),
            PgKind::Jsonb => Self::Json(StringBuilder::new(), true),
            PgKind::Enum => Self::Enum(StringDictionaryBuilder::new()),
            PgKind::Array(inner) => Self::List(Box::new(ListColumn {
                field: Arc::new(field("item", inner)),
                items: Column::new(inner, capacity),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(capacity),
            })),
        }
    }

    /// Append one value (`None` = NULL) in the type's binary format.
    fn push(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(d) = value else {
            self.push_null();
            return Ok(());
        };
        match self {
            Self::Bool(b) => b.append_value(exact(d, 1, "bool")?[0] != 0),
            Self::Int2(b) => {
                let v = exact(d, 2, "int2")?;
                b.append_value(i16::from_be_bytes([v[0], v[1]]));
            }
            Self::Int4(b) => b.append_value(be_i32(exact(d, 4, "int4")?)),
            Self::Int8(b) => b.append_value(be_i64(exact(d, 8, "int8")?)),
            Self::Oid(b) => b.append_value(i64::from(be_i32(exact(d, 4, "oid")?) as u32)),
            Self::Float4(b) => {
                b.append_value(f32::from_bits(be_i32(exact(d, 4, "float4")?) as u32));
            }
            Self::Float8(b) => {
                b.append_value(f64::from_bits(be_i64(exact(d, 8, "float8")?) as u64));
            }
            Self::Decimal(b, precision, scale) => {
                b.append_value(Numeric::parse(d)?.to_i128(*precision, *scale)?);
            }
            Self::NumericText(b) => b.append_value(Numeric::parse(d)?.to_text()),
            Self::Text(b) => b.append_value(d),
            Self::Bytea(b) => b.append_value(d),
            Self::Date(b) => {
                let days = be_i32(exact(d, 4, "date")?);
                if days == i32::MAX || days == i32::MIN {
                    return Err("the date ±infinity has no Arrow equivalent".into());
                }
                b.append_value(days.checked_add(PG_EPOCH_DAYS).ok_or("date out of range")?);
            }
            Self::Time(b) => {
                let micros = be_i64(exact(d, 8, "time")?);
                // PostgreSQL allows 24:00:00; an Arrow time of day ends before it.
                if !(0..MICROS_PER_DAY).contains(&micros) {
                    return Err(format!(
                        "the time {} has no Arrow equivalent (a time of day ends before \
                         24:00:00); read the column through a `query` that maps it, e.g. \
                         `LEAST(col, '23:59:59.999999')`",
                        if micros == MICROS_PER_DAY {
                            "24:00:00".to_string()
                        } else {
                            format!("of {micros} µs")
                        }
                    ));
                }
                b.append_value(micros);
            }
            Self::Timestamp(b) => {
                let micros = be_i64(exact(d, 8, "timestamp")?);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err("the timestamp ±infinity has no Arrow equivalent".into());
                }
                b.append_value(
                    micros
                        .checked_add(PG_EPOCH_MICROS)
                        .ok_or("timestamp out of range")?,
                );
            }
            Self::Interval(b) => {
                let v = exact(d, 16, "interval")?;
                let nanos = be_i64(&v[0..8])
                    .checked_mul(1000)
                    .ok_or("interval out of range")?;
                b.append_value(IntervalMonthDayNano::new(
                    be_i32(&v[12..16]),
                    be_i32(&v[8..12]),
                    nanos,
                ));
            }
            Self::Uuid(b) => b
                .append_value(exact(d, 16, "uuid")?)
                .map_err(|e| e.to_string())?,
            Self::Json(b, jsonb) => {
                let text = if *jsonb {
                    match d.split_first() {
                        Some((1, rest)) => rest,
                        _ => return Err("unknown jsonb binary version".into()),
                    }
                } else {
                    d
                };
                b.append_value(utf8(text)?);
            }
            Self::Enum(b) => {
                b.append(utf8(d)?).map_err(|e| e.to_string())?;
            }
            Self::List(list) => list.push_array(d)?,
        }
        Ok(())
    }

    fn push_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::Int2(b) => b.append_null(),
            Self::Int4(b) => b.append_null(),
            Self::Int8(b) | Self::Oid(b) => b.append_null(),
            Self::Float4(b) => b.append_null(),
            Self::Float8(b) => b.append_null(),
            Self::Decimal(b, ..) => b.append_null(),
            Self::NumericText(b) | Self::Json(b, _) => b.append_null(),
            Self::Bytea(b) | Self::Text(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Time(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
            Self::Interval(b) => b.append_null(),
            Self::Uuid(b) => b.append_null(),
            Self::Enum(b) => b.append_null(),
            Self::List(list) => {
                let last = list.offsets.last().copied().unwrap_or(0);
                list.offsets.push(last);
                list.nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> Result<ArrayRef, String> {
        Ok(match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int2(b) => Arc::new(b.finish()),
            Self::Int4(b) => Arc::new(b.finish()),
            Self::Int8(b) | Self::Oid(b) => Arc::new(b.finish()),
            Self::Float4(b) => Arc::new(b.finish()),
            Self::Float8(b) => Arc::new(b.finish()),
            Self::Decimal(b, ..) => Arc::new(b.finish()),
            Self::NumericText(b) | Self::Json(b, _) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(
                StringArray::try_from_binary(b.finish())
                    .map_err(|e| format!("invalid UTF-8 text: {e}"))?,
            ),
            Self::Bytea(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Time(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
            Self::Interval(b) => Arc::new(b.finish()),
            Self::Uuid(b) => Arc::new(b.finish()),
            Self::Enum(b) => Arc::new(b.finish()),
            Self::List(list) => list.finish()?,
        })
    }
}

impl ListColumn {
    /// A one-dimensional array: `ndim, has_nulls, element oid`, per dimension `size, lower
    /// bound`, then each element as `length, bytes`.
    fn push_array(&mut self, d: &[u8]) -> Result<(), String> {
        if d.len() < 12 {
            return Err("array value shorter than its header".into());
        }
        let ndim = be_i32(&d[0..4]);
        let last = self.offsets.last().copied().unwrap_or(0);
        if ndim == 0 {
            self.offsets.push(last);
            self.nulls.append_non_null();
            return Ok(());
        }
        if ndim != 1 {
            return Err(format!(
                "{ndim}-dimensional arrays are not supported (read it as text with \
                 `unsupported_types = \"text\"` and a `::text` cast in `query`)"
            ));
        }
        if d.len() < 20 {
            return Err("array value shorter than its dimension header".into());
        }
        let count = be_i32(&d[12..16]);
        if count < 0 {
            return Err("array with a negative element count".into());
        }
        let mut pos = 20;
        for _ in 0..count {
            let len_bytes = d
                .get(pos..pos + 4)
                .ok_or("array element past the value's end")?;
            let len = be_i32(len_bytes);
            pos += 4;
            if len < 0 {
                self.items.push(None)?;
            } else {
                let end = pos + len as usize;
                let value = d
                    .get(pos..end)
                    .ok_or("array element past the value's end")?;
                self.items.push(Some(value))?;
                pos = end;
            }
        }
        self.offsets
            .push(last.checked_add(count).ok_or("array too large")?);
        self.nulls.append_non_null();
        Ok(())
    }

    fn finish(&mut self) -> Result<ArrayRef, String> {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let values = self.items.finish()?;
        let nulls = self.nulls.finish();
        Ok(Arc::new(ListArray::new(
            self.field.clone(),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            values,
            nulls,
        )))
    }
}

/// Decodes one COPY stream into batches of `schema`.
pub(crate) struct CopyDecoder {
    schema: SchemaRef,
    names: Vec<String>,
    columns: Vec<Column>,
    batch_rows: usize,
    rows: usize,
    /// Value bytes in the current batch: flushed early past [`MAX_BATCH_BYTES`], so string
    /// and binary offsets (i32) can never overflow.
    batch_bytes: usize,
    pending: Vec<u8>,
    header_done: bool,
    ended: bool,
    /// Bytes consumed, for the run summary.
    pub bytes: u64,
}

impl std::fmt::Debug for CopyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyDecoder")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl CopyDecoder {
    pub(crate) fn new(schema: SchemaRef, kinds: &[PgKind], batch_rows: usize) -> Self {
        let batch_rows = batch_rows.max(1);
        Self {
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
            columns: kinds.iter().map(|k| Column::new(k, batch_rows)).collect(),
            schema,
            batch_rows,
            rows: 0,
            batch_bytes: 0,
            pending: Vec::new(),
            header_done: false,
            ended: false,
            bytes: 0,
        }
    }

    /// Decode a chunk of the stream; each full batch goes to `emit`.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        emit: &mut dyn FnMut(RecordBatch) -> Result<(), PgError>,
    ) -> Result<(), PgError> {
        self.bytes += chunk.len() as u64;
        if self.pending.is_empty() {
            let used = self.parse(chunk, emit)?;
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut data = std::mem::take(&mut self.pending);
            data.extend_from_slice(chunk);
            let used = self.parse(&data, emit)?;
            data.drain(..used);
            self.pending = data;
        }
        Ok(())
    }

    /// The last, partial batch. Errors if the stream ended early.
    pub(crate) fn finish(&mut self) -> Result<Option<RecordBatch>, PgError> {
        if !self.ended || !self.pending.is_empty() {
            return Err(PgError::Protocol(
                "the stream ended inside a row or before its trailer".into(),
            ));
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>, PgError> {
        if self.rows == 0 {
            return Ok(None);
        }
        self.batch_bytes = 0;
        let arrays = self
            .columns
            .iter_mut()
            .zip(&self.names)
            .map(|(c, name)| {
                c.finish().map_err(|message| PgError::Value {
                    column: name.clone(),
                    message,
                })
            })
            .collect::<Result<Vec<ArrayRef>, PgError>>()?;
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map(Some)
            .map_err(|e| PgError::Protocol(format!("assembling a batch: {e}")))
    }

    /// Parse complete rows from `data`; returns the bytes consumed.
    fn parse(
        &mut self,
        data: &[u8],
        emit: &mut dyn FnMut(RecordBatch) -> Result<(), PgError>,
    ) -> Result<usize, PgError> {
        let mut pos = 0;
        if !self.header_done {
            if data.len() < 19 {
                return Ok(0);
            }
            if &data[..11] != SIGNATURE {
                return Err(PgError::Protocol("missing the PGCOPY signature".into()));
            }
            let ext = be_i32(&data[15..19]).max(0) as usize;
            if data.len() < 19 + ext {
                return Ok(0);
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        let ncols = self.columns.len();
        while !self.ended {
            let Some(count) = data.get(pos..pos + 2) else {
                break;
            };
            let count = i16::from_be_bytes([count[0], count[1]]);
            if count == -1 {
                self.ended = true;
                pos += 2;
                break;
            }
            if count as usize != ncols {
                return Err(PgError::Protocol(format!(
                    "a row of {count} fields, expected {ncols}"
                )));
            }
            // Is the whole row here? Walk the field lengths first.
            let mut end = pos + 2;
            let mut complete = true;
            for _ in 0..ncols {
                let Some(len) = data.get(end..end + 4) else {
                    complete = false;
                    break;
                };
                let len = be_i32(len);
                end += 4 + len.max(0) as usize;
            }
            if !complete || end > data.len() {
                break;
            }
            let mut p = pos + 2;
            for (i, column) in self.columns.iter_mut().enumerate() {
                let len = be_i32(&data[p..p + 4]);
                p += 4;
                let value = if len < 0 {
                    None
                } else {
                    let v = &data[p..p + len as usize];
                    p += len as usize;
                    Some(v)
                };
                column.push(value).map_err(|message| PgError::Value {
                    column: self.names[i].clone(),
                    message,
                })?;
            }
            self.batch_bytes += end - pos;
            pos = end;
            self.rows += 1;
            if (self.rows == self.batch_rows || self.batch_bytes >= MAX_BATCH_BYTES)
                && let Some(batch) = self.flush()?
            {
                emit(batch)?;
            }
        }
        Ok(pos)
    }
}
