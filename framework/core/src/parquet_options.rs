//! Settings shared by the destinations that write Parquet data files.

use parquet::basic::{Compression, GzipLevel, ZstdLevel};

use crate::error::{Error, Result};

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
