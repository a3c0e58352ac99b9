//! Settings shared by the destinations that write Parquet data files, and the tracker of the
//! files a run wrote (so a failed run deletes exactly its own).

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::{BinaryType, ByteArrayType, LargeBinaryType, LargeUtf8Type, Utf8Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_buffer::ArrowNativeType;
use arrow_row::{RowConverter, SortField};
use arrow_schema::DataType;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::parallel::RoundRobin;

/// How a table destination writes data files, resolved from its config keys
/// (`target_file_size_mb`, `row_group_rows`, `writers`, `compression`; each destination
/// keeps its own defaults and doc comments, since serde's `flatten` does not mix with
/// `deny_unknown_fields`).
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Roll to a new file past this many bytes.
    pub target_file_size: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Parquet compression.
    pub compression: Compression,
    /// Data files written at the same time, each on its own task.
    pub writers: usize,
}

impl WriterSettings {
    /// Resolve the config keys; `writers = None` means one per core, at most 4.
    pub fn resolve(
        target_file_size_mb: u64,
        row_group_rows: usize,
        writers: Option<usize>,
        compression: &str,
    ) -> Result<Self> {
        let writers = match writers {
            Some(0) => return Err(Error::user("`writers` must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        };
        Ok(Self {
            target_file_size: target_file_size_mb.max(1).saturating_mul(1024 * 1024),
            row_group_rows: row_group_rows.max(1),
            compression: parse_compression(compression)?,
            writers,
        })
    }

    /// Parquet writer properties; the top-level columns in `plain` are written without
    /// dictionary encoding (see [`plain_columns`]).
    pub fn properties(&self, plain: &[String]) -> WriterProperties {
        let mut builder = WriterProperties::builder()
            .set_compression(self.compression)
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
            .set_created_by(format!("pipe {}", env!("CARGO_PKG_VERSION")));
        for column in plain {
            builder =
                builder.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false);
        }
        builder.build()
    }
}

/// Rows looked at to pick the columns written without a dictionary.
const SAMPLE_ROWS: usize = 64 * 1024;
/// At most this much Arrow memory is held for the sample (wide or large rows end it early).
const SAMPLE_BYTES: usize = 32 * 1024 * 1024;
/// Below this many rows a run says too little; every column keeps its dictionary.
const MIN_SAMPLE_ROWS: usize = 4096;
/// Share of distinct values above which a dictionary cannot pay for itself.
const PLAIN_ABOVE: f64 = 0.9;
/// The Parquet writer's dictionary page limit (parquet's default): past it, a column chunk's
/// dictionary is abandoned and the rest of the row group written plain.
const DICTIONARY_PAGE_BYTES: f64 =
    parquet::file::properties::DEFAULT_DICTIONARY_PAGE_SIZE_LIMIT as f64;

/// The top-level columns of `sample` (a run's first rows, up to 64k) that are more than 90%
/// distinct values, or whose dictionary would outgrow its page within a row group of
/// `row_group_rows` rows. A Parquet writer hashes every value into the column's dictionary
/// until the dictionary page is full (1 MiB), then falls back to plain encoding for the rest
/// of the row group: for keys, timestamps, amounts and free text that hashing is wasted work
/// (a fifth of a merge's CPU on the benchmark's orders), while a column with fewer distinct
/// values (a customer key within a clustered file) keeps its dictionary. The distinct values
/// a row group will hold are extrapolated from the sample's as if it were drawn at random
/// (sorted rows make them look fewer: the choice then errs toward the dictionary). Nested,
/// boolean and dictionary columns keep the default.
pub fn plain_columns(sample: &RecordBatch, row_group_rows: usize) -> Vec<String> {
    let rows = sample.num_rows().min(SAMPLE_ROWS);
    if rows < MIN_SAMPLE_ROWS {
        return Vec::new();
    }
    let schema = sample.schema();
    schema
        .fields()
        .iter()
        .zip(sample.columns())
        .filter(|(field, _)| {
            let t = field.data_type();
            !t.is_nested() && !matches!(t, DataType::Boolean | DataType::Dictionary(_, _))
        })
        .filter(|(_, column)| {
            let column = column.slice(0, rows);
            let (Some(distinct), Some(width)) = (distinct(&column), value_width(&column)) else {
                return false;
            };
            if distinct as f64 > PLAIN_ABOVE * rows as f64 {
                return true;
            }
            let domain = domain_size(distinct as f64, rows as f64);
            let in_row_group = expected_distinct(domain, row_group_rows.max(rows) as f64);
            in_row_group * width > DICTIONARY_PAGE_BYTES
        })
        .map(|(field, _)| field.name().clone())
        .collect()
}

/// Distinct values expected among `n` draws from `domain` equally likely values.
fn expected_distinct(domain: f64, n: f64) -> f64 {
    if domain.is_infinite() {
        return n;
    }
    domain * -(-n / domain).exp_m1()
}

/// The number of equally likely values that `n` random draws show `distinct` of (infinite
/// when every draw differed).
fn domain_size(distinct: f64, n: f64) -> f64 {
    if distinct >= n {
        return f64::INFINITY;
    }
    // expected_distinct grows with the domain: bisect.
    let (mut lo, mut hi) = (distinct, distinct.max(1.0));
    while expected_distinct(hi, n) < distinct {
        hi *= 2.0;
        if hi > 1e15 {
            return f64::INFINITY;
        }
    }
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if expected_distinct(mid, n) < distinct {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Bytes one value takes in a Parquet dictionary: the type's width, or for strings and
/// binaries their mean length plus the 4-byte length prefix.
fn value_width(column: &ArrayRef) -> Option<f64> {
    if let DataType::Decimal32(p, _)
    | DataType::Decimal64(p, _)
    | DataType::Decimal128(p, _)
    | DataType::Decimal256(p, _) = column.data_type()
    {
        return Some(decimal_width(*p));
    }
    if let Some(width) = column.data_type().primitive_width() {
        return Some(width as f64);
    }
    let n = column.len().max(1) as f64;
    let bytes = match column.data_type() {
        DataType::Utf8 => offset_bytes::<Utf8Type>(column),
        DataType::LargeUtf8 => offset_bytes::<LargeUtf8Type>(column),
        DataType::Binary => offset_bytes::<BinaryType>(column),
        DataType::LargeBinary => offset_bytes::<LargeBinaryType>(column),
        // a view's low 32 bits are its value's length
        DataType::Utf8View => (column.as_string_view().views().iter())
            .map(|v| *v as u32 as usize)
            .sum(),
        DataType::BinaryView => (column.as_binary_view().views().iter())
            .map(|v| *v as u32 as usize)
            .sum(),
        DataType::FixedSizeBinary(w) => return Some(f64::from((*w).max(0))),
        _ => return None,
    };
    Some(bytes as f64 / n + 4.0)
}

/// The bytes Parquet stores a decimal of `precision` digits in: INT32 up to 9 digits, INT64 up
/// to 18, else the fewest bytes that hold the digits (a fixed-length byte array).
fn decimal_width(precision: u8) -> f64 {
    match precision {
        0..=9 => 4.0,
        10..=18 => 8.0,
        p => ((f64::from(p) * std::f64::consts::LOG2_10 + 1.0) / 8.0).ceil(),
    }
}

/// The value bytes of a string or binary array.
fn offset_bytes<T: ByteArrayType>(column: &ArrayRef) -> usize {
    let offsets = column.as_bytes::<T>().value_offsets();
    match (offsets.first(), offsets.last()) {
        (Some(first), Some(last)) => last.as_usize().saturating_sub(first.as_usize()),
        _ => 0,
    }
}

/// Distinct values of `column` (NULL counting as one).
fn distinct(column: &ArrayRef) -> Option<usize> {
    let converter = RowConverter::new(vec![SortField::new(column.data_type().clone())]).ok()?;
    let rows = converter
        .convert_columns(std::slice::from_ref(column))
        .ok()?;
    let values: HashSet<&[u8]> = rows.iter().map(|r| r.data()).collect();
    Some(values.len())
}

/// A run's first rows, held until there are 64k of them (or 32 MiB, or the run ended) to
/// pick the columns written without a dictionary before the writers start.
#[derive(Debug, Default)]
struct FirstRows {
    held: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

/// The rows held, and the columns to write without a dictionary.
#[derive(Debug)]
struct Sampled {
    plain: Vec<String>,
    batches: Vec<RecordBatch>,
}

impl FirstRows {
    /// Hold `batch`; once enough rows came, hand them all back with the plain columns.
    fn push(&mut self, batch: RecordBatch, row_group_rows: usize) -> Result<Option<Sampled>> {
        self.rows += batch.num_rows();
        self.bytes += crate::cluster::batch_bytes(&batch);
        self.held.push(batch);
        if self.rows < SAMPLE_ROWS && self.bytes < SAMPLE_BYTES {
            return Ok(None);
        }
        self.finish(row_group_rows)
    }

    /// Hand back what is held (`None` if nothing is).
    fn finish(&mut self, row_group_rows: usize) -> Result<Option<Sampled>> {
        let batches = std::mem::take(&mut self.held);
        (self.rows, self.bytes) = (0, 0);
        let Some(first) = batches.first() else {
            return Ok(None);
        };
        let plain = if batches.len() == 1 {
            plain_columns(first, row_group_rows)
        } else {
            let mut wanted = SAMPLE_ROWS;
            let parts: Vec<RecordBatch> = batches
                .iter()
                .map_while(|b| {
                    let take = b.num_rows().min(wanted);
                    wanted -= take;
                    (take > 0).then(|| b.slice(0, take))
                })
                .collect();
            let sample = arrow_select::concat::concat_batches(&first.schema(), &parts)
                .map_err(|e| Error::internal("sampling the first rows").with_source(e))?;
            plain_columns(&sample, row_group_rows)
        };
        Ok(Some(Sampled { plain, batches }))
    }
}

/// A run's parallel data file writers ([`RoundRobin`]), started once its first rows came:
/// they pick the columns written without a dictionary ([`plain_columns`]), which `start`
/// receives to make the writers.
#[derive(Debug)]
pub struct SampledWriters<T> {
    row_group_rows: usize,
    first: FirstRows,
    running: Option<RoundRobin<T>>,
}

impl<T: Send + 'static> SampledWriters<T> {
    /// Writers of row groups of `row_group_rows` rows, not started yet.
    pub fn new(row_group_rows: usize) -> Self {
        Self {
            row_group_rows,
            first: FirstRows::default(),
            running: None,
        }
    }

    /// Hand `batch` to the writers, starting them with `start(plain columns)` once the first
    /// rows came.
    pub async fn write(
        &mut self,
        batch: RecordBatch,
        start: impl FnOnce(Vec<String>) -> RoundRobin<T>,
    ) -> Result<()> {
        if let Some(writers) = &mut self.running {
            return writers.write(batch).await;
        }
        let sampled = self.first.push(batch, self.row_group_rows)?;
        self.start(sampled, start).await
    }

    /// Finish every writer (starting them first if the run had fewer rows than the sample):
    /// what each returned, or the first error; nothing if no row came.
    pub async fn close(
        mut self,
        start: impl FnOnce(Vec<String>) -> RoundRobin<T>,
    ) -> Result<Vec<T>> {
        let sampled = self.first.finish(self.row_group_rows)?;
        self.start(sampled, start).await?;
        match self.running {
            Some(writers) => writers.close().await,
            None => Ok(Vec::new()),
        }
    }

    async fn start(
        &mut self,
        sampled: Option<Sampled>,
        start: impl FnOnce(Vec<String>) -> RoundRobin<T>,
    ) -> Result<()> {
        let Some(Sampled { plain, batches }) = sampled else {
            return Ok(());
        };
        if !plain.is_empty() {
            tracing::debug!(columns = ?plain, "writing without dictionary encoding");
        }
        let writers = self.running.insert(start(plain));
        for batch in batches {
            writers.write(batch).await?;
        }
        Ok(())
    }
}

/// The files a run wrote (paths or URIs), shared by its writer tasks: deleted when the run
/// fails, forgotten when it commits.
#[derive(Debug, Clone, Default)]
pub struct WrittenFiles(Arc<Mutex<Vec<String>>>);

impl WrittenFiles {
    /// Record one file.
    pub fn record(&self, location: &str) {
        if let Ok(mut files) = self.0.lock() {
            files.push(location.to_string());
        }
    }

    /// Everything recorded so far.
    pub fn list(&self) -> Vec<String> {
        self.0.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Delete every recorded file with `delete` (true when it deleted one); how many went.
    pub async fn delete_all<F, Fut>(&self, mut delete: F) -> usize
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut deleted = 0;
        for file in self.list() {
            if delete(file).await {
                deleted += 1;
            }
        }
        deleted
    }

    /// Forget every file: they became part of the table.
    pub fn forget_all(&self) {
        if let Ok(mut files) = self.0.lock() {
            files.clear();
        }
    }
}

/// Parse a `compression` setting: `zstd` (level 3), `zstd(1..22)`, `snappy`, `lz4`, `gzip`,
/// `gzip(0..9)` or `none`.
pub fn parse_compression(text: &str) -> Result<Compression> {
    let t = text.trim().to_ascii_lowercase();
    let level = |name: &str| -> Option<i32> {
        t.strip_prefix(name)?
            .strip_prefix('(')?
            .strip_suffix(')')?
            .trim()
            .parse()
            .ok()
    };
    let bad = || {
        Error::user(format!(
            "compression = \"{text}\": expected zstd, zstd(1..22), snappy, lz4, gzip, gzip(0..9) \
             or none"
        ))
    };
    Ok(match t.as_str() {
        "zstd" => Compression::ZSTD(ZstdLevel::try_new(3).map_err(|_| bad())?),
        "snappy" => Compression::SNAPPY,
        "lz4" => Compression::LZ4_RAW,
        "gzip" => Compression::GZIP(GzipLevel::default()),
        "none" | "uncompressed" => Compression::UNCOMPRESSED,
        _ if t.starts_with("zstd(") => Compression::ZSTD(
            ZstdLevel::try_new(level("zstd").ok_or_else(bad)?).map_err(|_| bad())?,
        ),
        _ if t.starts_with("gzip(") => {
            let l = u32::try_from(level("gzip").ok_or_else(bad)?).map_err(|_| bad())?;
            Compression::GZIP(GzipLevel::try_new(l).map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use arrow_array::{BooleanArray, Int64Array, StringArray};

    use super::*;

    /// splitmix64: a well-mixed draw per `i`.
    fn random(i: u64) -> u64 {
        let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn decimals_count_the_bytes_parquet_stores_them_in() {
        let widths: Vec<f64> = [1, 9, 10, 18, 19, 38].map(decimal_width).to_vec();
        assert_eq!(widths, [4.0, 4.0, 8.0, 8.0, 9.0, 16.0]);
    }

    #[test]
    fn columns_whose_dictionary_would_overflow_are_written_plain() {
        let n = 20_000_i64;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("c{}", i % 7)),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("free text {i}")),
            )),
            Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 2 == 0)))),
            // 1,500 values: a dictionary of 12 kB whatever the row group
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 1_500))),
            // 40-byte strings drawn from 40,000: ~79% distinct here; a dictionary of ~1.8 MB
            // in 1M rows, ~0.98 MB in 32k
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("{:040}", random(i as u64) % 40_000)),
            )),
        ];
        let names = ["id", "status", "comment", "flag", "few", "many"];
        let batch = RecordBatch::try_from_iter(names.into_iter().zip(columns)).unwrap();
        assert_eq!(plain_columns(&batch, 1 << 20), ["id", "comment", "many"]);
        assert_eq!(plain_columns(&batch, 32 * 1024), ["id", "comment"]);
        // too few rows to judge: every column keeps its dictionary
        assert!(plain_columns(&batch.slice(0, 100), 1 << 20).is_empty());
    }

    #[test]
    fn the_domain_is_recovered_from_a_random_sample() {
        let d = expected_distinct(150_000.0, 65_536.0);
        let domain = domain_size(d, 65_536.0);
        assert!((domain - 150_000.0).abs() < 1.0, "{domain}");
        assert!(domain_size(10.0, 10.0).is_infinite());
    }

    #[test]
    fn first_rows_are_held_until_the_sample_is_full() {
        let batch = |from: i64, to: i64| {
            RecordBatch::try_from_iter([(
                "id",
                Arc::new(Int64Array::from_iter_values(from..to)) as ArrayRef,
            )])
            .unwrap()
        };
        let mut first = FirstRows::default();
        assert!(first.push(batch(0, 40_000), 1 << 20).unwrap().is_none());
        let sampled = first.push(batch(40_000, 80_000), 1 << 20).unwrap().unwrap();
        assert_eq!(sampled.batches.len(), 2);
        assert_eq!(sampled.plain, ["id"]);
        assert!(first.finish(1 << 20).unwrap().is_none());
        assert!(first.push(batch(0, 10), 1 << 20).unwrap().is_none());
        assert_eq!(first.finish(1 << 20).unwrap().unwrap().batches.len(), 1);
        // large rows end the sample early: 1,000 rows of 40 kB
        let wide = StringArray::from_iter_values((0..1_000).map(|i| format!("{i:040000}")));
        let wide = RecordBatch::try_from_iter([("blob", Arc::new(wide) as ArrayRef)]).unwrap();
        assert!(first.push(wide, 1 << 20).unwrap().is_some());
    }

    #[test]
    fn codecs_and_levels_parse_and_bad_ones_name_the_setting() {
        assert_eq!(
            parse_compression(" ZSTD(7) ").unwrap(),
            Compression::ZSTD(ZstdLevel::try_new(7).unwrap())
        );
        assert_eq!(parse_compression("snappy").unwrap(), Compression::SNAPPY);
        assert_eq!(
            parse_compression("gzip(9)").unwrap(),
            Compression::GZIP(GzipLevel::try_new(9).unwrap())
        );
        for bad in ["brotli(99)", "zstd(23)", "gzip(-1)", "zstd()"] {
            let e = parse_compression(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
