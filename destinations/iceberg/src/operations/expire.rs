//! `vacuum` on Iceberg: expire old snapshots, then delete the files only they referenced
//! (their manifest lists, manifests and data files no remaining snapshot still lists as
//! live); with `orphans`, also the files under the table that no metadata references at all.
//! Files are deleted only after the catalog took the new metadata, and never files younger
//! than the cut-off (another writer may be about to commit them).

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use iceberg::io::FileIO;
use iceberg::spec::{Snapshot, TableMetadata};
use pipe_framework::operations::{OperationReport, VacuumRequest};

use crate::catalog::{CommitTarget, Loaded};
use crate::commit::{MetadataChange, live, stage_metadata};
use crate::error::{IcebergError, Result, ice};

/// The snapshots `request` expires: older than its cut-off, not among the newest
/// `retain_last`, not the current one and not the head of any branch or tag.
fn expired(meta: &TableMetadata, request: &VacuumRequest) -> Result<Vec<i64>> {
    let cutoff = request.older_than.timestamp_millis();
    let mut newest: Vec<&std::sync::Arc<Snapshot>> = meta.snapshots().collect();
    newest.sort_by_key(|s| std::cmp::Reverse((s.sequence_number(), s.timestamp_ms())));
    let kept: HashSet<i64> = newest
        .iter()
        .take(request.retain_last.max(1))
        .map(|s| s.snapshot_id())
        .chain(meta.current_snapshot_id())
        .chain(referenced_snapshots(meta)?)
        .collect();
    Ok(newest
        .iter()
        .filter(|s| s.timestamp_ms() < cutoff && !kept.contains(&s.snapshot_id()))
        .map(|s| s.snapshot_id())
        .collect())
}

/// The snapshots branches and tags point at (read from the metadata's JSON form: the iceberg
/// crate does not list refs).
fn referenced_snapshots(meta: &TableMetadata) -> Result<Vec<i64>> {
    let json = serde_json::to_value(meta)
        .map_err(|e| IcebergError::Internal(format!("serializing table metadata: {e}")))?;
    Ok(json
        .get("refs")
        .and_then(serde_json::Value::as_object)
        .map(|refs| {
            refs.values()
                .filter_map(|r| r.get("snapshot-id").and_then(serde_json::Value::as_i64))
                .collect()
        })
        .unwrap_or_default())
}

/// Every file a set of snapshots references: manifest lists, manifests, live data files.
#[derive(Debug, Default)]
struct Referenced {
    lists: BTreeSet<String>,
    manifests: BTreeSet<String>,
    data: BTreeSet<String>,
}

async fn referenced(io: &FileIO, meta: &TableMetadata, ids: &[i64]) -> Result<Referenced> {
    let mut out = Referenced::default();
    for id in ids {
        let Some(snapshot) = meta.snapshot_by_id(*id) else {
            continue;
        };
        out.lists.insert(snapshot.manifest_list().to_string());
        for manifest in live::snapshot_manifests(io, meta, snapshot).await? {
            if out.manifests.insert(manifest.manifest_path.clone()) {
                for entry in live::entries(io, &manifest).await? {
                    if entry.is_alive() {
                        out.data.insert(entry.file_path().to_string());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Expire snapshots (and, with `request.orphans`, remove orphan files); commits through
/// `target`, retrying `retries` times on a lost race.
pub(super) async fn vacuum(
    target: &dyn CommitTarget,
    request: &VacuumRequest,
    retries: u32,
) -> Result<OperationReport> {
    let mut report = OperationReport {
        operation: "vacuum".into(),
        dry_run: request.dry_run,
        ..OperationReport::default()
    };
    let mut attempt = 0;
    let (table, gone) = loop {
        let base = load(target).await?;
        let ids = expired(&base.metadata, request)?;
        if ids.is_empty() {
            break (base, Vec::new());
        }
        let io = target.file_io();
        let all: Vec<i64> = base.metadata.snapshots().map(|s| s.snapshot_id()).collect();
        let kept_ids: Vec<i64> = all.iter().copied().filter(|id| !ids.contains(id)).collect();
        let kept = referenced(io, &base.metadata, &kept_ids).await?;
        let lost = referenced(io, &base.metadata, &ids).await?;
        let mut doomed: Vec<String> = lost.lists.difference(&kept.lists).cloned().collect();
        doomed.extend(lost.manifests.difference(&kept.manifests).cloned());
        doomed.extend(lost.data.difference(&kept.data).cloned());
        report.commits_removed = ids.len() as u64;
        if request.dry_run {
            break (base, doomed);
        }
        let change = stage_metadata(&base, &MetadataChange::ExpireSnapshots(ids))?;
        if let Some(table) = target.commit(&change).await? {
            report.commit_id = Some(table.location.clone());
            break (table, doomed);
        }
        attempt += 1;
        if attempt > retries {
            return Err(IcebergError::Conflict(format!(
                "gave up expiring snapshots after {attempt} attempts: other writers kept \
                 committing first"
            )));
        }
    };
    for path in gone {
        if !request.dry_run {
            delete(target.file_io(), &path).await?;
        }
        report.deleted.push(path);
    }
    if request.orphans {
        for path in orphans(target, &table, request).await? {
            if !request.dry_run {
                delete(target.file_io(), &path).await?;
            }
            report.deleted.push(path);
        }
    }
    report.detail.insert(
        "snapshots".into(),
        table.metadata.snapshots().count().to_string(),
    );
    Ok(report)
}

async fn load(target: &dyn CommitTarget) -> Result<Loaded> {
    target
        .load()
        .await?
        .ok_or_else(|| IcebergError::Config("the table does not exist".into()))
}

async fn delete(io: &FileIO, path: &str) -> Result<()> {
    if io.exists(path).await.unwrap_or(false) {
        io.delete(path)
            .await
            .map_err(ice(format!("deleting {path}")))?;
    }
    Ok(())
}

/// Files under the table's location that no metadata references and that are older than the
/// cut-off: listed from the directory (local tables) or the object store.
async fn orphans(
    target: &dyn CommitTarget,
    table: &Loaded,
    request: &VacuumRequest,
) -> Result<Vec<String>> {
    let io = target.file_io();
    let meta = &table.metadata;
    let all: Vec<i64> = meta.snapshots().map(|s| s.snapshot_id()).collect();
    let used = referenced(io, meta, &all).await?;
    let mut keep: HashSet<String> = used
        .lists
        .into_iter()
        .chain(used.manifests)
        .chain(used.data)
        .chain(std::iter::once(table.location.clone()))
        .chain(meta.metadata_log().iter().map(|m| m.metadata_file.clone()))
        .chain(meta.statistics_iter().map(|s| s.statistics_path.clone()))
        .map(|p| normal(&p))
        .collect();
    // Entries a manifest lists as deleted are still referenced by that (kept) manifest.
    keep.extend(deleted_entries(io, meta).await?);
    let mut out = Vec::new();
    if let Some(root) = local_path(meta.location()) {
        let cutoff = std::time::SystemTime::from(request.older_than);
        walk(&root, &mut |path, modified| {
            let text = path.display().to_string();
            if modified < cutoff && !keep.contains(&text) {
                out.push(format!("file://{text}"));
            }
        })?;
    } else {
        // Listed names are compared with referenced ones as text: a table whose files are
        // named under another scheme or bucket form (s3a:// vs s3://, abfss://c@account vs
        // abfss://c) would see its live files as orphans. Refuse instead, as Java's
        // prefix-mismatch check does.
        let root = root_of(meta.location());
        if let Some(other) = keep
            .iter()
            .find(|k| k.contains("://") && !k.starts_with(&root))
        {
            return Err(IcebergError::Config(format!(
                "removing orphan files compares file names, but the table at {} references \
                 {other}, named under another scheme or bucket: refused",
                meta.location()
            )));
        }
        let listed = crate::io::list(meta.location(), target.storage())
            .await
            .map_err(IcebergError::Config)?;
        for (location, modified) in listed {
            if modified < request.older_than && !keep.contains(&location) {
                out.push(location);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `scheme://authority/` of a location.
fn root_of(location: &str) -> String {
    match location.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
            format!("{scheme}://{authority}/")
        }
        None => String::new(),
    }
}

/// A location as the orphan scan compares it: a local path's plain path, else the URI.
fn normal(location: &str) -> String {
    local_path(location).map_or_else(|| location.to_string(), |p| p.display().to_string())
}

async fn deleted_entries(io: &FileIO, meta: &TableMetadata) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for snapshot in meta.snapshots() {
        for manifest in live::snapshot_manifests(io, meta, snapshot).await? {
            for entry in live::entries(io, &manifest).await? {
                out.push(normal(entry.file_path()));
            }
        }
    }
    Ok(out)
}

fn local_path(location: &str) -> Option<PathBuf> {
    match location.strip_prefix("file://") {
        Some(rest) => Some(PathBuf::from(rest)),
        None if !location.contains("://") => Some(PathBuf::from(location)),
        None => None,
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, std::time::SystemTime)) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(IcebergError::Config(format!(
                "listing {}: {e}",
                dir.display()
            )));
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(&path, f)?;
        } else if let Ok(modified) = meta.modified() {
            f(&path, modified);
        }
    }
    Ok(())
}
