//! `path` → the list of files to read: local files, directories and globs, or object-store URLs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::FileError;
use crate::remote::RemoteFile;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A local file, read with `std::fs`.
    Local(PathBuf),
    /// An object in a store, read with ranged GETs.
    Remote(RemoteFile),
}

/// One file to read.
#[derive(Debug, Clone)]
pub(crate) struct FileRef {
    /// How the user would name it (path or URL), for messages.
    pub display: String,
    /// Where its bytes are.
    pub location: Location,
    /// Size in bytes.
    pub size: u64,
    /// A regular file or an object: it can be read more than once and seeked. False for
    /// pipes and devices, which can be read once, front to back.
    pub rereadable: bool,
}

impl FileRef {
    /// The file's absolute URI, as a table format records it: `file:///abs/path` for a
    /// local file, else its object-store URL.
    pub(crate) fn uri(&self) -> Result<String, FileError> {
        match &self.location {
            Location::Local(path) => {
                let abs = std::fs::canonicalize(path).map_err(|source| FileError::Io {
                    file: self.display.clone(),
                    source,
                })?;
                Ok(format!("file://{}", abs.display()))
            }
            Location::Remote(_) => Ok(self.display.clone()),
        }
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Regular files, and also FIFOs and devices (`/dev/stdin`, a named pipe fed by another
/// process): anything that exists and is not a directory.
fn is_data_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| !m.is_dir())
}

fn hidden(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// Every file `path` names, in lexicographic order.
pub(crate) async fn resolve(path: &str) -> Result<Vec<FileRef>, FileError> {
    match Url::parse(path) {
        Ok(url) if url.scheme().len() > 1 => resolve_url(path, url).await,
        _ => {
            let path = path.to_string();
            tokio::task::spawn_blocking(move || resolve_local(&path))
                .await
                .map_err(|e| FileError::Config(format!("listing files: {e}")))?
        }
    }
}

fn resolve_local(path: &str) -> Result<Vec<FileRef>, FileError> {
    let mut files: Vec<PathBuf> = Vec::new();
    if has_glob(path) {
        let entries = glob::glob(path)
            .map_err(|e| FileError::Config(format!("invalid glob `{path}`: {e}")))?;
        for entry in entries {
            let p = entry.map_err(|e| FileError::Io {
                file: e.path().display().to_string(),
                source: std::io::Error::new(e.error().kind(), e.error().to_string()),
            })?;
            if is_data_file(&p) {
                files.push(p);
            }
        }
    } else {
        let p = Path::new(path);
        if p.is_dir() {
            walk(p, &mut files)?;
        } else if is_data_file(p) {
            files.push(p.to_path_buf());
        } else {
            return Err(FileError::NotFound(path.to_string()));
        }
    }
    if files.is_empty() {
        return Err(FileError::NoMatch(path.to_string()));
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).map_err(|source| FileError::Io {
                file: p.display().to_string(),
                source,
            })?;
            Ok(FileRef {
                display: p.display().to_string(),
                location: Location::Local(p),
                size: meta.len(),
                rereadable: meta.is_file(),
            })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), FileError> {
    let io = |source| FileError::Io {
        file: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if hidden(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_data_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The store for a URL, configured from the environment, and the object path inside it.
fn store_for(url: &Url) -> Result<(Arc<dyn ObjectStore>, String), FileError> {
    let store = pipe_framework::store::for_url(url, &Default::default()).map_err(|e| match e {
        pipe_framework::store::StoreError::Build { source, .. } => FileError::Store {
            url: url.to_string(),
            source,
        },
        other => FileError::Config(other.to_string()),
    })?;
    Ok((store, pipe_framework::store::object_path(url)))
}

async fn resolve_url(original: &str, url: Url) -> Result<Vec<FileRef>, FileError> {
    let (store, path) = store_for(&url)?;
    let store_err = |source| FileError::Store {
        url: original.to_string(),
        source,
    };
    let base = pipe_framework::secret::redact(&format!("{}://{}", url.scheme(), url.authority()))
        .into_owned();
    let display = |p: &ObjectPath| format!("{base}/{p}");
    let mut metas = Vec::new();
    if has_glob(&path) {
        let prefix: Vec<&str> = path.split('/').take_while(|seg| !has_glob(seg)).collect();
        let prefix = ObjectPath::from(prefix.join("/"));
        let pattern = glob::Pattern::new(&path)
            .map_err(|e| FileError::Config(format!("invalid glob `{original}`: {e}")))?;
        let listed: Vec<_> = store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_err)?;
        // Like a shell (and like local globs): `*` does not cross `/`, and hidden or
        // underscore-prefixed names below the listed prefix (`_SUCCESS`, `_temporary/`,
        // `.staging/`) are skipped.
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        metas.extend(listed.into_iter().filter(|m| {
            let location = m.location.as_ref();
            let below = location.strip_prefix(prefix.as_ref()).unwrap_or(location);
            pattern.matches_with(location, options) && !below.split('/').any(hidden)
        }));
    } else {
        let object = ObjectPath::from(path.as_str());
        match store.head(&object).await {
            Ok(meta) => metas.push(meta),
            Err(object_store::Error::NotFound { .. }) => {
                let listed: Vec<_> = store
                    .list(Some(&object))
                    .try_collect()
                    .await
                    .map_err(store_err)?;
                metas.extend(listed.into_iter().filter(|m| {
                    m.location
                        .as_ref()
                        .strip_prefix(object.as_ref())
                        .is_some_and(|rest| !rest.split('/').any(hidden))
                }));
                if metas.is_empty() {
                    return Err(FileError::NotFound(original.to_string()));
                }
            }
            Err(e) => return Err(store_err(e)),
        }
    }
    if metas.is_empty() {
        return Err(FileError::NoMatch(original.to_string()));
    }
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    let handle = tokio::runtime::Handle::current();
    Ok(metas
        .into_iter()
        .map(|m| FileRef {
            display: display(&m.location),
            size: m.size,
            rereadable: true,
            location: Location::Remote(RemoteFile::new(
                store.clone(),
                m.location,
                m.size,
                handle.clone(),
            )),
        })
        .collect())
}
