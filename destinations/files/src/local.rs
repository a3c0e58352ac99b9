//! Commits into a local directory. Beside the table directory `d` is a work directory
//! `.d.pipe/` holding `lock` (an exclusive `flock` for the whole commit, released by the
//! kernel if the process dies), each run's `staging/<run id>/` with its `staging/<run
//! id>.lock` (held while the run lives) and, during a replace, `next-<run id>/`.
//!
//! - **append**: the log entry is created (the commit point), then the run's files are
//!   renamed into place; a commit killed between the two is finished by the next commit
//!   (the entry names the files, the staging directory still holds them).
//! - **replace**: `next-<run id>/` is built from hard links of the log (and, with
//!   `replace_scope = "partitions"`, of the partitions kept), the run's files and the new
//!   entry, then swapped with the table directory in one `renameat2(RENAME_EXCHANGE)`: a
//!   reader sees the old directory or the new one, never a mix. Where the filesystem cannot
//!   exchange, two renames are used and a reader may briefly find no directory.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::Path as FsPath;

use nix::fcntl::{Flock, FlockArg};
use pipe_framework::{Error, Result};

use crate::commit::{Committed, Plan};
use crate::location::{LocalDirs, Location};
use crate::log::{Entry, History, PIPE_DIR};

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| {
        let kind = if e.kind() == ErrorKind::PermissionDenied {
            Error::user(what)
        } else {
            Error::external(what)
        };
        kind.with_source(e)
    }
}

/// An exclusive `flock` on a file, released when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct Lock(#[allow(dead_code)] Flock<File>);

fn open_lock_file(path: &FsPath) -> Result<File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))
}

/// Take the lock on `path` (created if missing), waiting for it; `Ok(None)` with
/// `wait = false` if it is held.
fn lock(path: &FsPath, wait: bool) -> Result<Option<Lock>> {
    flock(open_lock_file(path)?, path, wait)
}

fn flock(file: File, path: &FsPath, wait: bool) -> Result<Option<Lock>> {
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(file, arg) {
        Ok(lock) => Ok(Some(Lock(lock))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
        Err((_, errno)) => Err(Error::external(format!("locking {}", path.display()))
            .with_source(std::io::Error::from(errno))),
    }
}

/// Run `f` on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal("a filesystem task failed").with_source(e))?
}

/// The run's staging directory, locked for as long as the returned lock lives (a commit that
/// finds a staging directory whose lock it can take knows its run died and removes it).
pub(crate) async fn stage(dirs: &LocalDirs, run_id: &str) -> Result<Lock> {
    let staging = dirs.work.join("staging");
    let (dir, lock_file) = (staging.join(run_id), staging.join(format!("{run_id}.lock")));
    let (work, root) = (dirs.work.clone(), dirs.root.clone());
    blocking(move || {
        // under the commit lock: a commit removing dead runs' staging never sees this run
        // between its lock file and its lock
        let _commit = lock(&work.join("lock"), true)?;
        same_filesystem(&work, &root)?;
        let held = lock(&lock_file, false)?
            .ok_or_else(|| Error::internal(format!("run {} is staged twice", dir.display())))?;
        fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(held)
    })
    .await
}

/// Staged files are published by `rename` and a replace swaps directories: the work
/// directory must be on the table directory's filesystem (not so when the table directory
/// is a mount point).
fn same_filesystem(work: &FsPath, root: &FsPath) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let device = |p: &FsPath| fs::metadata(p).map(|m| m.dev()).ok();
    let table = root.ancestors().find_map(device);
    if table.is_some() && device(work) != table {
        return Err(Error::user(format!(
            "{} is on another filesystem than {} (a mount point?): files are published by \
             rename, so the table directory must be a directory inside a mount, not the mount \
             itself",
            root.display(),
            work.display()
        )));
    }
    Ok(())
}

/// Remove the staging directory of a run that ends without a commit.
pub(crate) async fn unstage(dirs: &LocalDirs, run_id: &str) {
    let staging = dirs.work.join("staging");
    let (dir, lock_file) = (staging.join(run_id), staging.join(format!("{run_id}.lock")));
    let _ = blocking(move || {
        remove_dir(&dir);
        let _ = fs::remove_file(&lock_file);
        Ok(())
    })
    .await;
}

fn remove_dir(dir: &FsPath) {
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove a directory");
    }
}

/// Wait for the commit lock; then put back a table directory a killed replace moved aside,
/// before anyone reads the log.
async fn commit_lock(dirs: &LocalDirs) -> Result<Option<Lock>> {
    let dirs = dirs.clone();
    blocking(move || {
        let held = lock(&dirs.work.join("lock"), true)?;
        restore_root(&dirs)?;
        Ok(held)
    })
    .await
}

/// Commit `plan` into the local directory `dirs`.
pub(crate) async fn commit(
    location: &Location,
    dirs: &LocalDirs,
    plan: &Plan,
) -> Result<Committed> {
    let _lock = commit_lock(dirs).await?;
    let history = location.log().read().await?;
    let (dirs2, history2) = (dirs.clone(), history.clone());
    blocking(move || recover(&dirs2, &history2)).await?;
    let (entry, removed) = plan.entry(&history)?;
    let dirs2 = dirs.clone();
    let entry2 = entry.clone();
    if entry.replaced.is_some() {
        blocking(move || replace(&dirs2, &entry2)).await?;
        Ok(Committed::new(entry, &removed, Ok(())))
    } else {
        fs::create_dir_all(&dirs.root).map_err(io(format!("creating {}", dirs.root.display())))?;
        if !location.log().create(&entry).await? {
            return Err(Error::internal(format!(
                "commit log entry {} of {} exists although this run holds the lock",
                entry.version, location.display
            )));
        }
        let published = blocking(move || move_into(&dirs2, &entry2, &dirs2.root)).await;
        Ok(Committed::new(entry, &removed, published))
    }
}

/// Move `entry`'s staged files into `target` (the table directory or the next one), then
/// remove the staging directory. A file already moved is skipped (a commit being finished).
fn move_into(dirs: &LocalDirs, entry: &Entry, target: &FsPath) -> Result<()> {
    let staging = dirs.work.join("staging").join(&entry.staging);
    for file in &entry.added {
        let (from, to) = (staging.join(&file.path), target.join(&file.path));
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound && to.exists() => {}
            Err(e) => return Err(io(format!("publishing {}", to.display()))(e)),
        }
    }
    remove_dir(&staging);
    Ok(())
}

/// Build `next-<run id>/` and swap it with the table directory.
fn replace(dirs: &LocalDirs, entry: &Entry) -> Result<()> {
    let next = dirs.work.join(format!("next-{}", entry.run_id));
    remove_dir(&next);
    let log_dir = next.join(PIPE_DIR).join("log");
    fs::create_dir_all(&log_dir).map_err(io(format!("creating {}", log_dir.display())))?;
    let kept_partitions = match &entry.replaced {
        Some(crate::log::Replaced::Partitions(parts)) => Some(parts.clone()),
        _ => None,
    };
    if dirs.root.is_dir() {
        link_tree(&dirs.root, &next, &dirs.root, &|relative: &str| {
            if relative.starts_with(&format!("{PIPE_DIR}/")) {
                return relative.starts_with(&format!("{PIPE_DIR}/log/"));
            }
            match &kept_partitions {
                // keep the files of partitions this run did not write
                Some(replaced) => !replaced
                    .iter()
                    .any(|p| p.is_empty() || relative.starts_with(&format!("{p}/"))),
                None => false,
            }
        })?;
    }
    move_into(dirs, entry, &next)?;
    let body = serde_json::to_vec_pretty(entry)
        .map_err(|e| Error::internal("encoding a commit log entry").with_source(e))?;
    let entry_file = log_dir.join(format!("{:020}.json", entry.version));
    fs::write(&entry_file, body).map_err(io(format!("writing {}", entry_file.display())))?;
    swap(&next, &dirs.root)?;
    remove_dir(&next);
    Ok(())
}

/// Hard-link every file under `dir` whose path relative to `root` `keep` accepts into the
/// same place under `to`.
fn link_tree(root: &FsPath, to: &FsPath, dir: &FsPath, keep: &dyn Fn(&str) -> bool) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
    for item in entries {
        let item = item.map_err(io(format!("listing {}", dir.display())))?;
        let path = item.path();
        let relative = path
            .strip_prefix(root)
            .map_err(|e| Error::internal("a path outside the table").with_source(e))?
            .to_string_lossy()
            .replace('\\', "/");
        let kind = item
            .file_type()
            .map_err(io(format!("reading {}", path.display())))?;
        if kind.is_dir() {
            link_tree(root, to, &path, keep)?;
        } else if keep(&relative) {
            let target = to.join(&relative);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
            }
            fs::hard_link(&path, &target).map_err(io(format!("linking {}", path.display())))?;
        }
    }
    Ok(())
}

/// Make `next` the table directory `root` in one step where the filesystem can; `next` then
/// holds the old directory (or nothing).
fn swap(next: &FsPath, root: &FsPath) -> Result<()> {
    if !root.exists() {
        return fs::rename(next, root).map_err(io(format!("publishing {}", root.display())));
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, next, AT_FDCWD, root, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => return Ok(()),
            Err(errno) => tracing::debug!(
                %errno,
                "this filesystem cannot exchange directories; replacing with two renames"
            ),
        }
    }
    let old = next.with_file_name(format!(
        "{}.old",
        next.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    fs::rename(root, &old).map_err(io(format!("moving {} aside", root.display())))?;
    fs::rename(next, root).map_err(io(format!("publishing {}", root.display())))?;
    remove_dir(&old);
    Ok(())
}

/// Under the commit lock, before the log is read: a replace killed between the two renames of
/// the fallback swap left the table directory moved aside; move it back.
fn restore_root(dirs: &LocalDirs) -> Result<()> {
    if dirs.root.exists() {
        return Ok(());
    }
    let Ok(items) = fs::read_dir(&dirs.work) else {
        return Ok(());
    };
    for item in items.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with("next-") && name.ends_with(".old") {
            tracing::warn!(dir = %item.path().display(), "restoring the table directory a killed replace moved aside");
            return fs::rename(item.path(), &dirs.root)
                .map_err(io(format!("restoring {}", dirs.root.display())));
        }
    }
    Ok(())
}

/// Under the commit lock: finish the last commit if it was killed while publishing, and
/// remove what dead runs left in the work directory.
pub(crate) fn recover(dirs: &LocalDirs, history: &History) -> Result<()> {
    if let Some(last) = history.last()
        && last.replaced.is_none()
        && dirs.work.join("staging").join(&last.staging).is_dir()
    {
        tracing::info!(
            version = last.version,
            "finishing a commit a killed run left"
        );
        move_into(dirs, last, &dirs.root)?;
    }
    let Ok(items) = fs::read_dir(&dirs.work) else {
        return Ok(());
    };
    for item in items.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with("next-") {
            remove_dir(&item.path());
        }
    }
    remove_dead_staging(&dirs.work.join("staging"))
}

/// Remove the staging directories (and lock files) of runs that no longer hold their lock.
fn remove_dead_staging(staging: &FsPath) -> Result<()> {
    let Ok(items) = fs::read_dir(staging) else {
        return Ok(());
    };
    let mut runs: Vec<String> = items
        .flatten()
        .map(|i| i.file_name().to_string_lossy().into_owned())
        .map(|n| n.strip_suffix(".lock").map(str::to_string).unwrap_or(n))
        .collect();
    runs.sort();
    runs.dedup();
    for run in runs {
        let (dir, lock_file) = (staging.join(&run), staging.join(format!("{run}.lock")));
        // a missing lock file: the run died before it locked (runs lock before they stage,
        // under the commit lock this function runs under)
        let dead = match OpenOptions::new().write(true).open(&lock_file) {
            Ok(file) => flock(file, &lock_file, false)?.is_some(),
            Err(e) if e.kind() == ErrorKind::NotFound => true,
            Err(e) => return Err(io(format!("opening {}", lock_file.display()))(e)),
        };
        if dead {
            if dir.exists() {
                tracing::info!(dir = %dir.display(), "removing files a killed run staged");
                remove_dir(&dir);
            }
            let _ = fs::remove_file(&lock_file);
        }
    }
    Ok(())
}

/// `pipe table vacuum`: under the commit lock, finish an interrupted publication and remove
/// what dead runs staged; the staging directories removed.
pub(crate) async fn vacuum(location: &Location, dirs: &LocalDirs) -> Result<Vec<String>> {
    let _lock = commit_lock(dirs).await?;
    let history = location.log().read().await?;
    let dirs = dirs.clone();
    blocking(move || {
        let staging = dirs.work.join("staging");
        let before: Vec<String> = list_dirs(&staging);
        recover(&dirs, &history)?;
        let after = list_dirs(&staging);
        Ok(before.into_iter().filter(|d| !after.contains(d)).collect())
    })
    .await
}

fn list_dirs(dir: &FsPath) -> Vec<String> {
    fs::read_dir(dir)
        .map(|items| {
            items
                .flatten()
                .filter(|i| i.file_type().is_ok_and(|t| t.is_dir()))
                .map(|i| i.path().display().to_string())
                .collect()
        })
        .unwrap_or_default()
}
