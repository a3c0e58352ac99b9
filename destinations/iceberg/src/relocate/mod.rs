//! `pipe iceberg relocate`: make a block-for-block copy of an Iceberg table readable at its new
//! place by rewriting only its metadata. Every snapshot's manifest list and manifests are
//! rewritten with their paths under the new prefix (as generic Avro: nothing but paths and
//! lengths changes), the metadata JSON likewise, and the result is registered in a catalog or
//! printed. No data file is opened: each referenced file is checked to exist at the new place
//! with the size its manifest records before anything is written.
//!
//! Incremental by construction: a relocated manifest's name is derived from the source
//! manifest's and the two prefixes (`<name>.relocated-<hash>.avro`), and manifests are
//! immutable, so a rerun reuses every relocated manifest that exists (they are written only
//! after their files were checked) and rewrites only new ones; snapshots the relocated table
//! already has keep their manifest lists. The relocated table keeps the source's uuid and
//! records `pipe.relocated-from`/`-to`/`-source-metadata`, which a rerun checks.

mod avro;
mod files;
mod metadata;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};
use iceberg::spec::TableMetadata;
use pipe_framework::Result;
use serde::Serialize;
use serde_json::Value;

use self::avro::Referenced;
use self::files::{check_files, read, rewrite_manifest, size_of, write};
use self::metadata::Prefixes;
use crate::catalog::{self, CommitTarget, Loaded};
use crate::commit::TableChange;
use crate::error::IcebergError;
use crate::io::StorageOptions;

/// Manifests and manifest lists read or written at the same time.
const PARALLEL: usize = 16;

/// What to relocate, and where to.
#[derive(Debug, Clone)]
pub struct RelocateRequest {
    /// The source table: a metadata file (`…/metadata/00003-….metadata.json`, at the old or
    /// the new place), or `<catalog uri>#<namespace.table>` (its current metadata file is
    /// read at the new place).
    pub source: String,
    /// The old prefix (`s3://prod/warehouse`, `/data/warehouse`).
    pub from: String,
    /// Where the copy is (`s3://dr/warehouse`).
    pub to: String,
    /// `<catalog uri>#<namespace.table>` to register the relocated table as (or, if it is an
    /// earlier relocation of the same table, to commit the new snapshots to). `None`: the
    /// metadata file is written and its location printed.
    pub register_as: Option<String>,
    /// Object-store settings, as a destination's `storage_options`.
    pub storage_options: BTreeMap<String, String>,
    /// Check and report; write nothing.
    pub dry_run: bool,
}

/// What a relocation did.
#[derive(Debug, Clone, Serialize)]
pub struct RelocateReport {
    /// The source metadata file read (at the new place).
    pub source_metadata: String,
    /// The relocated table's metadata file (`None` on a dry run or when nothing changed).
    pub metadata_location: Option<String>,
    /// Snapshots in the relocated table.
    pub snapshots: usize,
    /// Snapshots relocated by this run (the rest the relocated table already had).
    pub new_snapshots: usize,
    /// Manifests rewritten by this run.
    pub manifests_rewritten: usize,
    /// Relocated manifests of an earlier run reused.
    pub manifests_reused: usize,
    /// Manifest lists written.
    pub manifest_lists_written: usize,
    /// Data, delete and statistics files checked at the new place.
    pub files_checked: usize,
    /// Their bytes, as the manifests record them.
    pub bytes_checked: u64,
    /// `registered`, `committed`, `unchanged`, `written` (no catalog) or `dry-run`.
    pub outcome: String,
}

/// Relocate `request.source` (see the module docs).
pub async fn relocate(request: &RelocateRequest) -> Result<RelocateReport> {
    Ok(run(request).await?)
}

/// A snapshot whose manifest list is written by this run.
struct NewList {
    snapshot_id: i64,
    /// Its source manifest list, at the new place.
    source: String,
    target: String,
    manifests: Vec<String>,
}

async fn run(request: &RelocateRequest) -> crate::error::Result<RelocateReport> {
    let prefixes = Prefixes::new(&request.from, &request.to)?;
    let storage = StorageOptions(request.storage_options.clone());
    let io = crate::io::file_io(&storage);
    let tag = format!(
        "relocated-{:08x}",
        xxhash_rust::xxh3::xxh3_64(format!("{}\0{}", prefixes.from, prefixes.to).as_bytes()) as u32
    );

    let source_location = source_metadata(&request.source, &prefixes, &storage).await?;
    let bytes = read(&io, &source_location, "the source metadata").await?;
    let mut json: Value = serde_json::from_slice(&bytes).map_err(|e| {
        IcebergError::Config(format!(
            "{source_location} is not Iceberg table metadata: {e}"
        ))
    })?;
    let source: TableMetadata = serde_json::from_value(json.clone()).map_err(|e| {
        IcebergError::Config(format!(
            "{source_location} is not Iceberg table metadata: {e}"
        ))
    })?;
    // Refuses a --from that matches nothing before any work.
    metadata::new_location(source.location(), &prefixes)?;

    let target = match &request.register_as {
        Some(locator) => Some(target(locator, &storage).await?),
        None => None,
    };
    let base = match &target {
        Some(t) => t.load().await?,
        None => None,
    };
    if let Some(base) = &base {
        check_relocation_of(base, &source, &prefixes, &tag, request)?;
    }

    // Manifest lists: kept for snapshots the relocated table has, written for the others.
    let mut lists: HashMap<i64, String> = HashMap::new();
    let mut to_list = Vec::new();
    for snapshot in source.snapshots() {
        let id = snapshot.snapshot_id();
        if let Some(kept) = base.as_ref().and_then(|b| b.metadata.snapshot_by_id(id)) {
            lists.insert(id, kept.manifest_list().to_string());
        } else {
            let list = prefixes.require(snapshot.manifest_list(), "manifest list")?;
            lists.insert(id, relocated_name(&list, &tag));
            to_list.push((id, list));
        }
    }
    let new_lists: Vec<NewList> = stream::iter(to_list)
        .map(|(snapshot_id, list)| {
            let io = io.clone();
            let target = lists[&snapshot_id].clone();
            async move {
                let bytes = read(&io, &list, "manifest list").await?;
                let manifests = avro::manifest_paths(&bytes, &list)?;
                Ok::<_, IcebergError>(NewList {
                    snapshot_id,
                    source: list,
                    target,
                    manifests,
                })
            }
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;

    // Manifests: reused when an earlier run relocated them, else rewritten.
    let mut wanted: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for list in &new_lists {
        for manifest in &list.manifests {
            if seen.insert(manifest.clone()) {
                wanted.push(manifest.clone());
            }
        }
    }
    let found: Vec<(String, Option<u64>)> = stream::iter(wanted)
        .map(|manifest| {
            let io = io.clone();
            let prefixes = prefixes.clone();
            let tag = tag.clone();
            async move {
                let moved = prefixes.require(&manifest, "manifest")?;
                let size = size_of(&io, &relocated_name(&moved, &tag)).await;
                Ok::<_, IcebergError>((manifest, size))
            }
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    let mut relocated: HashMap<String, (String, u64)> = HashMap::new();
    let mut to_rewrite = Vec::new();
    for (manifest, size) in found {
        let moved = prefixes.require(&manifest, "manifest")?;
        let name = relocated_name(&moved, &tag);
        match size {
            Some(size) => {
                relocated.insert(manifest, (name, size));
            }
            None => to_rewrite.push((manifest, moved, name)),
        }
    }
    let reused = relocated.len();

    // Check every file the new manifests reference (and the statistics files) before
    // writing anything.
    let mut files: HashMap<String, u64> = HashMap::new();
    let referenced: Vec<Vec<Referenced>> =
        stream::iter(to_rewrite.iter().cloned())
            .map(|(_, moved, _)| {
                let io = io.clone();
                let prefixes = prefixes.clone();
                async move {
                    Ok::<_, IcebergError>(rewrite_manifest(&io, &prefixes, &moved).await?.files)
                }
            })
            .buffered(PARALLEL)
            .try_collect()
            .await?;
    for file in referenced.into_iter().flatten() {
        files.insert(file.path, file.size);
    }
    // Every new path is known by now: the metadata is relocated once, its statistics files
    // checked with the rest.
    let statistics = metadata::relocate(&mut json, &prefixes, &lists, &source_location)?;
    let checked = check_files(&io, &files, &statistics).await?;

    let mut report = RelocateReport {
        source_metadata: source_location.clone(),
        metadata_location: None,
        snapshots: source.snapshots().len(),
        new_snapshots: new_lists.len(),
        manifests_rewritten: to_rewrite.len(),
        manifests_reused: reused,
        manifest_lists_written: new_lists.len(),
        files_checked: checked.0,
        bytes_checked: checked.1,
        outcome: "dry-run".into(),
    };
    if request.dry_run {
        return Ok(report);
    }

    // Write: manifests, then manifest lists, then the metadata.
    let written: Vec<(String, String, u64)> = stream::iter(to_rewrite)
        .map(|(manifest, moved, name)| {
            let io = io.clone();
            let prefixes = prefixes.clone();
            async move {
                let rewritten = rewrite_manifest(&io, &prefixes, &moved).await?;
                let length = rewritten.bytes.len() as u64;
                write(&io, &name, rewritten.bytes).await?;
                Ok::<_, IcebergError>((manifest, name, length))
            }
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    for (manifest, name, length) in written {
        relocated.insert(manifest, (name, length));
    }
    let relocated = &relocated;
    stream::iter(&new_lists)
        .map(|list| {
            let io = io.clone();
            async move {
                let bytes = read(&io, &list.source, "manifest list").await?;
                let out = avro::rewrite_manifest_list(&bytes, &list.source, relocated)?;
                write(&io, &list.target, out).await?;
                tracing::debug!(snapshot = list.snapshot_id, list = %list.target, "manifest list relocated");
                Ok::<_, IcebergError>(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    let staged: TableMetadata = serde_json::from_value(json.clone())
        .map_err(|e| IcebergError::Internal(format!("the relocated metadata: {e}")))?;

    let metadata_bytes = serde_json::to_vec(&json)
        .map_err(|e| IcebergError::Internal(format!("writing the relocated metadata: {e}")))?;
    match (target, base) {
        (None, _) => {
            let file = metadata_file(&staged, &source_location);
            write(&io, &file, metadata_bytes).await?;
            report.metadata_location = Some(file);
            report.outcome = "written".into();
        }
        (Some(target), None) => {
            // The file stays if the registration fails: a catalog that did not answer may
            // have registered it (a rerun writes another).
            let file = metadata_file(&staged, &source_location);
            write(&io, &file, metadata_bytes).await?;
            report.metadata_location = Some(target.register(&file).await?.location);
            report.outcome = "registered".into();
        }
        (Some(target), Some(base)) => {
            let unchanged = new_lists.is_empty()
                && base.metadata.snapshots().len() == staged.snapshots().len()
                && base.metadata.properties().get(metadata::SOURCE)
                    == staged.properties().get(metadata::SOURCE);
            if unchanged {
                report.metadata_location = Some(base.location.clone());
                report.outcome = "unchanged".into();
                return Ok(report);
            }
            let base_json = serde_json::to_value(base.metadata.as_ref())
                .map_err(|e| IcebergError::Internal(format!("the relocated table: {e}")))?;
            let (updates, requirements) =
                metadata::updates(&base.metadata, &base_json, &staged, &json)?;
            let change = TableChange {
                base: base.clone(),
                staged,
                updates,
                requirements,
            };
            let Some(committed) = target.commit(&change).await? else {
                return Err(IcebergError::Conflict(format!(
                    "{} changed while it was being relocated onto: run again",
                    request.register_as.as_deref().unwrap_or_default()
                )));
            };
            report.metadata_location = Some(committed.location);
            report.outcome = "committed".into();
        }
    }
    Ok(report)
}

/// The source's metadata file, at the new place.
async fn source_metadata(
    source: &str,
    prefixes: &Prefixes,
    storage: &StorageOptions,
) -> crate::error::Result<String> {
    let location = if source.contains('#') && !source.ends_with(".json") {
        let config = crate::locator_config(source)?;
        let table = crate::table::table_ident(&config.table)?;
        if catalog::not_created(&config.catalog) {
            return Err(IcebergError::Config(format!(
                "there is no Iceberg catalog at {}",
                catalog::describe(&config.catalog)
            )));
        }
        let catalog = catalog::connect(&config.catalog, storage, table).await?;
        match catalog.load().await? {
            Some(loaded) => loaded.location,
            None => {
                return Err(IcebergError::Config(format!(
                    "there is no Iceberg table {source}"
                )));
            }
        }
    } else {
        source.to_string()
    };
    Ok(prefixes.map(&location).unwrap_or(location))
}

/// The catalog table to register as.
async fn target(
    locator: &str,
    storage: &StorageOptions,
) -> crate::error::Result<Arc<dyn CommitTarget>> {
    let mut config = crate::locator_config(locator)?;
    // Registering a table is a catalog write: its namespace is created if missing.
    match &mut config.catalog {
        crate::CatalogConfig::Rest(rest) | crate::CatalogConfig::Nessie(rest) => {
            rest.create_namespace = true;
        }
        crate::CatalogConfig::Hive(hive) => hive.create_namespace = true,
        crate::CatalogConfig::Sql { .. } => {}
    }
    let table = crate::table::table_ident(&config.table)?;
    catalog::connect(&config.catalog, storage, table).await
}

/// An existing target must be an earlier relocation of the same table with the same
/// prefixes, and hold no snapshot of its own.
fn check_relocation_of(
    base: &Loaded,
    source: &TableMetadata,
    prefixes: &Prefixes,
    tag: &str,
    request: &RelocateRequest,
) -> crate::error::Result<()> {
    let name = request.register_as.as_deref().unwrap_or_default();
    let props = base.metadata.properties();
    let same = base.metadata.uuid() == source.uuid()
        && props.get(metadata::FROM) == Some(&prefixes.from)
        && props.get(metadata::TO) == Some(&prefixes.to);
    if base.metadata.uuid() == source.uuid() && props.get(metadata::FROM).is_none() {
        return Err(IcebergError::Config(format!(
            "table {name} is the source table or a copy of it (same uuid {}), not a \
             relocation: a copied catalog still points at the old place; register the \
             relocation under another name, or drop that entry first",
            source.uuid()
        )));
    }
    if !same {
        return Err(IcebergError::Config(format!(
            "table {name} already exists and is not a relocation of {} from {} to {} \
             (table uuid {} vs the source's {}): choose another --register-as, or drop it",
            source.location(),
            prefixes.from,
            prefixes.to,
            base.metadata.uuid(),
            source.uuid()
        )));
    }
    // Relocated manifest lists carry the tag; another writer's commit does not.
    if let Some(own) = base
        .metadata
        .snapshots()
        .find(|s| !s.manifest_list().contains(&format!(".{tag}.avro")))
    {
        return Err(IcebergError::Config(format!(
            "table {name} has snapshot {} that the source does not have: it was written to \
             after its relocation, and relocating again would lose that commit",
            own.snapshot_id()
        )));
    }
    Ok(())
}

/// `…/name.avro` → `…/name.<tag>.avro`.
fn relocated_name(path: &str, tag: &str) -> String {
    match path.strip_suffix(".avro") {
        Some(stem) => format!("{stem}.{tag}.avro"),
        None => format!("{path}.{tag}.avro"),
    }
}

/// `<location>/metadata/<version>-<uuid>.metadata.json`, the version following the source
/// file's.
fn metadata_file(metadata: &TableMetadata, source: &str) -> String {
    let name = source.rsplit('/').next().unwrap_or_default();
    let version: u64 = name
        .split_once('-')
        .and_then(|(v, _)| v.parse().ok())
        .unwrap_or(0);
    format!(
        "{}/metadata/{:05}-{}.metadata.json",
        metadata.location().trim_end_matches('/'),
        version,
        uuid::Uuid::now_v7()
    )
}
