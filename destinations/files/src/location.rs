//! Where a file table lives: a local directory (with a work directory beside it for staging
//! and the commit lock) or a prefix of an object store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use pipe_framework::{Error, Result};
use url::Url;

use crate::log::{Log, PIPE_DIR};

/// A local table's directories.
#[derive(Debug, Clone)]
pub(crate) struct LocalDirs {
    /// The table directory (absolute).
    pub(crate) root: PathBuf,
    /// The work directory beside it (`.<name>.pipe/`): the commit lock, each run's staging
    /// directory and lock, and the next version of the directory during a replace.
    pub(crate) work: PathBuf,
}

/// A file table's location.
#[derive(Debug, Clone)]
pub(crate) struct Location {
    /// The store the files are in (local: the filesystem).
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The table directory's path in the store.
    pub(crate) root: Path,
    /// `Some` for a local directory.
    pub(crate) local: Option<LocalDirs>,
    /// The location as the user wrote it (redacted).
    pub(crate) display: String,
}

impl Location {
    /// Resolve `path` (a local path or an object store URL); creates nothing.
    pub(crate) fn new(path: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let display = pipe_framework::secret::redact(path).into_owned();
        let url = Url::parse(path).ok().filter(|u| u.scheme().len() > 1);
        match url {
            Some(url) if url.scheme() != "file" => {
                let store = pipe_framework::store::for_url(&url, options)
                    .map_err(|e| Error::user(format!("files destination {display}: {e}")))?;
                let root = Path::from(pipe_framework::store::object_path(&url));
                Ok(Self {
                    store,
                    root,
                    local: None,
                    display,
                })
            }
            url => {
                let path = match url {
                    Some(u) => u.to_file_path().map_err(|()| {
                        Error::user(format!("files destination {display}: not a local path"))
                    })?,
                    None => PathBuf::from(path),
                };
                Self::local(path, display)
            }
        }
    }

    fn local(path: PathBuf, display: String) -> Result<Self> {
        // symlinks resolved: a replace swaps the directory itself, and one directory reached
        // by two paths must have one work directory (one lock)
        let absolute = std::path::absolute(&path)
            .map_err(|e| Error::user(format!("files destination {display}: {e}")))?;
        let root = std::fs::canonicalize(&absolute).unwrap_or(absolute);
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::user(format!(
                    "files destination {display}: the path must name a directory below the \
                     filesystem root"
                ))
            })?;
        let work = root.with_file_name(format!(".{name}.pipe"));
        let store_root = Path::from_absolute_path(&root)
            .map_err(|e| Error::user(format!("files destination {display}: {e}")).with_source(e))?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new()),
            root: store_root,
            local: Some(LocalDirs { root, work }),
            display,
        })
    }

    /// The commit log.
    pub(crate) fn log(&self) -> Log {
        Log {
            store: Arc::clone(&self.store),
            root: self.root.clone(),
        }
    }

    /// Where run `run_id` stages its files.
    pub(crate) fn staging(&self, run_id: &str) -> Result<Path> {
        match &self.local {
            Some(dirs) => Path::from_absolute_path(dirs.work.join("staging").join(run_id))
                .map_err(|e| Error::internal("the staging directory").with_source(e)),
            None => Ok(self
                .root
                .clone()
                .join(PIPE_DIR)
                .join("staging")
                .join(run_id)),
        }
    }

    /// What staged file names end with: object stores stage under the table prefix, so a
    /// reader globbing `**/*.parquet` must not match a staged file.
    pub(crate) fn staged_suffix(&self) -> &'static str {
        if self.local.is_some() { "" } else { ".staged" }
    }

    /// A file of the table, by its path relative to the table directory.
    pub(crate) fn file(&self, relative: &str) -> Result<Path> {
        join(&self.root, relative)
    }
}

/// `relative` (`/`-separated, segments already escaped) under `base`, taken as written: a
/// partition directory's `%XX` escapes are part of its name.
pub(crate) fn join(base: &Path, relative: &str) -> Result<Path> {
    Path::parse(format!("{base}/{relative}"))
        .map_err(|e| Error::internal(format!("data file path {relative}")).with_source(e))
}
