//! The live files of a table's current snapshot, read from its manifest list and manifests.

use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, ManifestContentType, ManifestEntryRef, ManifestFile, ManifestList, Snapshot,
    TableMetadata,
};

use crate::error::{Result, ice};

/// The current snapshot's manifests (empty for a table without snapshots).
pub(crate) async fn manifests(io: &FileIO, metadata: &TableMetadata) -> Result<Vec<ManifestFile>> {
    match metadata.current_snapshot() {
        Some(snapshot) => snapshot_manifests(io, metadata, snapshot).await,
        None => Ok(Vec::new()),
    }
}

/// A snapshot's manifests, from its manifest list.
pub(crate) async fn snapshot_manifests(
    io: &FileIO,
    metadata: &TableMetadata,
    snapshot: &Snapshot,
) -> Result<Vec<ManifestFile>> {
    let bytes = io
        .new_input(snapshot.manifest_list())
        .map_err(ice("opening the manifest list"))?
        .read()
        .await
        .map_err(ice(format!(
            "reading manifest list {}",
            snapshot.manifest_list()
        )))?;
    let list = ManifestList::parse_with_version(&bytes, metadata.format_version()).map_err(ice(
        format!("parsing manifest list {}", snapshot.manifest_list()),
    ))?;
    Ok(list.consume_entries().into_iter().collect())
}

/// A manifest's entries.
pub(crate) async fn entries(io: &FileIO, manifest: &ManifestFile) -> Result<Vec<ManifestEntryRef>> {
    let loaded = manifest
        .load_manifest(io)
        .await
        .map_err(ice(format!("reading manifest {}", manifest.manifest_path)))?;
    Ok(loaded.entries().to_vec())
}

/// One live data file with where it is listed.
#[derive(Debug, Clone)]
pub(crate) struct LiveFile {
    /// Its manifest entry.
    pub entry: ManifestEntryRef,
    /// The partition spec its manifest was written with.
    pub spec_id: i32,
}

/// Every live data file of the current snapshot. Errors if the table has live delete files
/// (merge-on-read): rewriting data files without applying them would bring deleted rows back.
pub(crate) async fn live_data_files(
    io: &FileIO,
    metadata: &TableMetadata,
) -> Result<Vec<LiveFile>> {
    let mut out = Vec::new();
    for manifest in manifests(io, metadata).await? {
        let deletes = manifest.content == ManifestContentType::Deletes;
        for entry in entries(io, &manifest).await? {
            if !entry.is_alive() {
                continue;
            }
            if deletes || entry.content_type() != DataContentType::Data {
                return Err(crate::error::IcebergError::Config(format!(
                    "the table has delete files (e.g. {}): rows deleted merge-on-read by \
                     another engine; pipe rewrites data files copy-on-write and would bring \
                     them back. Compact the table (rewrite_data_files) first, or use \
                     mode = \"append\" / a full \"replace\"",
                    entry.file_path()
                )));
            }
            out.push(LiveFile {
                entry,
                spec_id: manifest.partition_spec_id,
            });
        }
    }
    Ok(out)
}
