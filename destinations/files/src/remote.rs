//! Publishing on an object store, which has no rename and no directory to swap: once the log
//! entry exists (the commit point), each staged file is copied to its place (a server-side
//! copy) and its staged copy deleted, then a replace deletes the files it replaced. A reader
//! that lists the prefix while this happens can see part of the new files, and during a
//! replace old and new files together; pipe's `_pipe/log` is the exact record. A publication
//! cut short is finished by the next commit (or `pipe table vacuum`).

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use pipe_framework::{Error, Result};

use crate::location::{Location, join};
use crate::log::{DataFile, Entry, History, store_error};

fn staged(location: &Location, entry: &Entry, file: &DataFile) -> Result<Path> {
    join(
        &location.staging(&entry.staging)?,
        &format!("{}{}", file.path, location.staged_suffix()),
    )
}

async fn exists(store: &dyn ObjectStore, path: &Path) -> Result<bool> {
    match store.head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(store_error("checking a data file", e)),
    }
}

async fn delete(store: &dyn ObjectStore, path: &Path) -> Result<()> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_error("deleting a replaced file", e)),
    }
}

/// Publish `entry`'s files and delete `removed`: copies first, then the replaced files, then
/// the staged copies, so a staged file left behind means the publication is unfinished.
/// Idempotent: what is already done is skipped.
pub(crate) async fn publish(
    location: &Location,
    entry: &Entry,
    removed: &[DataFile],
) -> Result<()> {
    let store = location.store.as_ref();
    let mut staged_files = Vec::with_capacity(entry.added.len());
    for file in &entry.added {
        let (from, to) = (staged(location, entry, file)?, location.file(&file.path)?);
        if exists(store, &from).await? {
            match store.copy(&from, &to).await {
                Ok(()) => {}
                // another writer finishing this publication moved it meanwhile
                Err(object_store::Error::NotFound { .. }) if exists(store, &to).await? => {}
                Err(e) => return Err(store_error("publishing a data file", e)),
            }
            staged_files.push(from);
        } else if !exists(store, &to).await? {
            return Err(Error::external(format!(
                "commit {} names {}, which is neither staged nor published",
                entry.version, file.path
            )));
        }
    }
    let added: std::collections::HashSet<&str> =
        entry.added.iter().map(|f| f.path.as_str()).collect();
    for file in removed {
        if !added.contains(file.path.as_str()) {
            delete(store, &location.file(&file.path)?).await?;
        }
    }
    for from in staged_files {
        delete(store, &from).await?;
    }
    Ok(())
}

/// Finish the newest commit's publication if it was cut short.
pub(crate) async fn recover(location: &Location, history: &History) -> Result<()> {
    let Some(last) = history.last() else {
        return Ok(());
    };
    let store = location.store.as_ref();
    let mut unfinished = false;
    for file in &last.added {
        if exists(store, &staged(location, last, file)?).await? {
            unfinished = true;
            break;
        }
    }
    if !unfinished {
        return Ok(());
    }
    tracing::info!(
        version = last.version,
        "finishing a commit a killed run left"
    );
    let before = history.live(Some(last.version.saturating_sub(1)));
    let after = history.live(None);
    let removed: Vec<DataFile> = before
        .into_iter()
        .filter(|(path, _)| !after.contains_key(path))
        .map(|(_, f)| f)
        .collect();
    publish(location, last, &removed).await
}

/// Delete what runs that died before their commit staged: every staged file of a run whose
/// newest staged file is older than `older_than` (a live run keeps adding files). Their paths.
pub(crate) async fn vacuum(
    location: &Location,
    older_than: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>> {
    use futures::TryStreamExt;
    let prefix = location
        .root
        .clone()
        .join(crate::log::PIPE_DIR)
        .join("staging");
    let store = location.store.as_ref();
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| store_error("listing staged files", e))?;
    let run_of = |path: &Path| {
        path.prefix_match(&prefix)
            .and_then(|mut parts| parts.next())
            .map(|part| part.as_ref().to_string())
    };
    let mut newest: std::collections::HashMap<String, chrono::DateTime<chrono::Utc>> =
        std::collections::HashMap::new();
    for meta in &listed {
        if let Some(run) = run_of(&meta.location) {
            let t = newest.entry(run).or_insert(meta.last_modified);
            *t = (*t).max(meta.last_modified);
        }
    }
    let mut deleted = Vec::new();
    for meta in listed {
        let dead = run_of(&meta.location)
            .and_then(|run| newest.get(&run))
            .is_some_and(|t| *t < older_than);
        if dead {
            delete(store, &meta.location).await?;
            deleted.push(meta.location.to_string());
        }
    }
    Ok(deleted)
}
