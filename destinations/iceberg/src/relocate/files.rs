//! The relocation's reads, writes and checks at the new place.

use std::collections::HashMap;

use futures::{StreamExt, stream};
use iceberg::io::FileIO;

use super::avro;
use super::metadata::{self, Prefixes};
use crate::error::{IcebergError, ice};

/// Files checked at the same time.
const PARALLEL: usize = 32;

pub(super) async fn rewrite_manifest(
    io: &FileIO,
    prefixes: &Prefixes,
    manifest: &str,
) -> crate::error::Result<avro::RewrittenManifest> {
    let bytes = read(io, manifest, "manifest").await?;
    avro::rewrite_manifest(&bytes, manifest, &|path| {
        prefixes.map(path).ok_or_else(|| {
            IcebergError::Config(format!(
                "manifest {manifest} lists data file {path}, which is not under --from {}: \
                 the copy would still read it from its old place (choose a prefix that holds \
                 every file of the table)",
                prefixes.from
            ))
        })
    })
}

/// Check that every file exists at the new place with its recorded size; returns how many
/// files and bytes were checked.
pub(super) async fn check_files(
    io: &FileIO,
    files: &HashMap<String, u64>,
    statistics: &[metadata::Statistics],
) -> crate::error::Result<(usize, u64)> {
    let all: Vec<(String, Option<u64>)> = files
        .iter()
        .map(|(p, s)| (p.clone(), Some(*s)))
        .chain(statistics.iter().map(|s| (s.path.clone(), s.size)))
        .collect();
    let total = all.len();
    let bytes = all.iter().filter_map(|(_, s)| *s).sum();
    let mut problems: Vec<String> = stream::iter(all)
        .map(|(path, expected)| {
            let io = io.clone();
            async move {
                match (size_of(&io, &path).await, expected) {
                    (None, _) => Some(format!("{path} (missing)")),
                    (Some(found), Some(want)) if found != want => {
                        Some(format!("{path} ({found} bytes, the manifest says {want})"))
                    }
                    _ => None,
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    if problems.is_empty() {
        return Ok((total, bytes));
    }
    problems.sort();
    let count = problems.len();
    problems.truncate(10);
    Err(IcebergError::Config(format!(
        "{count} of the {total} files the table references are not at the new place as \
         recorded (is the copy complete?); nothing was written: {}",
        problems.join(", ")
    )))
}

/// The size of `path`, `None` if it does not exist (or cannot be read).
pub(super) async fn size_of(io: &FileIO, path: &str) -> Option<u64> {
    let input = io.new_input(path).ok()?;
    input.metadata().await.ok().map(|m| m.size)
}

pub(super) async fn read(
    io: &FileIO,
    path: &str,
    what: &str,
) -> crate::error::Result<bytes::Bytes> {
    let input = io
        .new_input(path)
        .map_err(ice(format!("opening {what} {path}")))?;
    input.read().await.map_err(|e| {
        IcebergError::Config(format!(
            "cannot read {what} {path} at the new place (is the copy complete?): {e}"
        ))
    })
}

pub(super) async fn write(io: &FileIO, path: &str, bytes: Vec<u8>) -> crate::error::Result<()> {
    io.new_output(path)
        .map_err(ice(format!("opening {path}")))?
        .write(bytes.into())
        .await
        .map_err(ice(format!("writing {path}")))
}
