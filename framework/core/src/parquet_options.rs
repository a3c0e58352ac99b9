//! Settings shared by the destinations that write Parquet data files, and the tracker of the
//! files a run wrote (so a failed run deletes exactly its own).

use std::future::Future;
use std::sync::{Arc, Mutex};

use parquet::basic::{Compression, GzipLevel, ZstdLevel};

use crate::error::{Error, Result};

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
    use super::*;

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
