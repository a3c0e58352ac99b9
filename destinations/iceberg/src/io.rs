//! The storage every table's files go through: local paths (`file://` or a plain path) with
//! iceberg's own local storage, and object stores (`s3://`, `gs://`, `az://`, `abfss://`)
//! with `object_store`, one client per bucket, configured from the environment and the
//! destination's `storage_options`. Metadata, manifests, data files and the clean-up of a failed
//! run all use it, whatever the catalog.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::io::{
    FileIO, FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, LocalFsStorage,
    OutputFile, Storage, StorageConfig, StorageFactory,
};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use url::Url;

/// Object store options (`storage_options`), kept out of `Debug` output: they may hold keys.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct StorageOptions(pub BTreeMap<String, String>);

impl fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The storage factory behind [`file_io`] (for catalogs that build their own `FileIO`).
pub(crate) fn factory(options: &StorageOptions) -> Arc<dyn StorageFactory> {
    Arc::new(PipeStorageFactory {
        options: options.clone(),
    })
}

/// A [`FileIO`] for local and object-store locations.
pub(crate) fn file_io(options: &StorageOptions) -> FileIO {
    FileIOBuilder::new(factory(options)).build()
}

/// Check, opening no connection, that `location` is on a supported storage and the options
/// suit it.
pub(crate) fn check_location(location: &str, options: &StorageOptions) -> Result<(), String> {
    match remote(location)? {
        None => Ok(()),
        Some(r) => pipe_framework::store::for_url(&r.root, &options.0)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// An object-store location split as `scheme://authority/key`: the store is found by
/// `scheme://authority` (a URL), the key is taken as written — never URL-decoded, and `#` or
/// `?` in it (other writers do not always escape partition values) are part of the key.
struct Remote<'a> {
    /// `scheme://authority`, parsed.
    root: Url,
    /// The object key.
    key: &'a str,
}

/// `Some` for an object-store location, `None` for a local one.
fn remote(location: &str) -> Result<Option<Remote<'_>>, String> {
    let Some((scheme, rest)) = location.split_once("://") else {
        return Ok(None);
    };
    if scheme == "file" {
        return Ok(None);
    }
    let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
    let root = Url::parse(&format!("{scheme}://{authority}"))
        .map_err(|e| format!("`{location}` does not start with a valid scheme://bucket: {e}"))?;
    Ok(Some(Remote {
        root,
        key: key.trim_start_matches('/'),
    }))
}

fn object_key(location: &str, key: &str) -> iceberg::Result<Path> {
    Path::parse(key).map_err(|e| {
        iceberg::Error::new(
            iceberg::ErrorKind::DataInvalid,
            format!("`{location}` is not a valid object key"),
        )
        .with_source(e)
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PipeStorageFactory {
    options: StorageOptions,
}

#[typetag::serde(name = "pipe-object-store")]
impl StorageFactory for PipeStorageFactory {
    /// The FileIO's own properties are the catalog's (a SQL catalog passes its uri and pool
    /// settings): storage settings come from `storage_options` only.
    fn build(&self, _catalog_props: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(PipeStorage {
            options: Arc::new(self.options.clone()),
            stores: Arc::default(),
        }))
    }
}

/// Local files and object stores behind iceberg's `Storage`.
#[derive(Clone)]
struct PipeStorage {
    options: Arc<StorageOptions>,
    /// One client per `scheme://authority`.
    stores: Arc<Mutex<HashMap<String, Arc<dyn ObjectStore>>>>,
}

/// Option names and buckets only: object_store's own `Debug` of some stores prints keys.
impl fmt::Debug for PipeStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stores: Vec<String> = self
            .stores
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("PipeStorage")
            .field("options", &self.options)
            .field("stores", &stores)
            .finish()
    }
}

impl Serialize for PipeStorage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.options.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PipeStorage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self {
            options: Arc::new(StorageOptions::deserialize(d)?),
            stores: Arc::default(),
        })
    }
}

/// Where a path lives.
enum Place {
    Local,
    Remote(Arc<dyn ObjectStore>, Path),
}

/// A store's failure (a missing object included: a table whose files vanished, or a missing
/// bucket, is a problem of the store, not of the user's input).
fn error(what: String) -> impl FnOnce(object_store::Error) -> iceberg::Error {
    move |e| iceberg::Error::new(iceberg::ErrorKind::Unexpected, what).with_source(e)
}

impl PipeStorage {
    fn place(&self, path: &str) -> iceberg::Result<Place> {
        let Some(r) =
            remote(path).map_err(|e| iceberg::Error::new(iceberg::ErrorKind::DataInvalid, e))?
        else {
            return Ok(Place::Local);
        };
        let key = r.root.as_str().trim_end_matches('/').to_string();
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| iceberg::Error::new(iceberg::ErrorKind::Unexpected, "poisoned lock"))?;
        let store = match stores.get(&key) {
            Some(store) => store.clone(),
            None => {
                let store =
                    pipe_framework::store::for_url(&r.root, &self.options.0).map_err(|e| {
                        iceberg::Error::new(iceberg::ErrorKind::DataInvalid, e.to_string())
                    })?;
                stores.insert(key, store.clone());
                store
            }
        };
        Ok(Place::Remote(store, object_key(path, r.key)?))
    }
}

#[async_trait]
#[typetag::serde(name = "pipe-object-store")]
impl Storage for PipeStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.exists(path).await,
            Place::Remote(store, p) => match store.head(&p).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(error(format!("checking {path}"))(e)),
            },
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.metadata(path).await,
            Place::Remote(store, p) => {
                let meta = store
                    .head(&p)
                    .await
                    .map_err(error(format!("reading {path}")))?;
                Ok(FileMetadata { size: meta.size })
            }
        }
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.read(path).await,
            Place::Remote(store, p) => {
                let what = format!("reading {path}");
                let got = store.get(&p).await.map_err(error(what.clone()))?;
                got.bytes().await.map_err(error(what))
            }
        }
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.reader(path).await,
            Place::Remote(store, p) => Ok(Box::new(RemoteRead {
                store,
                path: p,
                display: path.to_string(),
            })),
        }
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.write(path, bs).await,
            Place::Remote(store, p) => store
                .put(&p, bs.into())
                .await
                .map(|_| ())
                .map_err(error(format!("writing {path}"))),
        }
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.writer(path).await,
            Place::Remote(store, p) => Ok(Box::new(RemoteWrite {
                // Parts of 10 MiB, at most 2 uploading at once: bounded memory per open file
                // (~30 MiB), multipart for big files.
                writer: Some(BufWriter::with_capacity(store, p, 10 << 20).with_max_concurrency(2)),
                display: path.to_string(),
            })),
        }
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.delete(path).await,
            Place::Remote(store, p) => match store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(error(format!("deleting {path}"))(e)),
            },
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        match self.place(path)? {
            Place::Local => LocalFsStorage.delete_prefix(path).await,
            Place::Remote(store, p) => {
                let what = format!("deleting everything under {path}");
                let listed = store.list(Some(&p)).map_ok(|m| m.location).boxed();
                store
                    .delete_stream(listed)
                    .try_collect::<Vec<_>>()
                    .await
                    .map(|_| ())
                    .map_err(error(what))
            }
        }
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

/// Ranged reads of one object.
struct RemoteRead {
    store: Arc<dyn ObjectStore>,
    path: Path,
    display: String,
}

#[async_trait]
impl FileRead for RemoteRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store
            .get_range(&self.path, range)
            .await
            .map_err(error(format!("reading {}", self.display)))
    }
}

/// A streaming upload: buffered, then a single PUT or a multipart upload.
struct RemoteWrite {
    writer: Option<BufWriter>,
    display: String,
}

#[async_trait]
impl FileWrite for RemoteWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        let writer = self.writer.as_mut().ok_or_else(|| {
            iceberg::Error::new(iceberg::ErrorKind::Unexpected, "write after close")
        })?;
        writer
            .put(bs)
            .await
            .map_err(error(format!("writing {}", self.display)))
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| iceberg::Error::new(iceberg::ErrorKind::Unexpected, "closed twice"))?;
        tokio::io::AsyncWriteExt::shutdown(&mut writer)
            .await
            .map_err(|e| {
                iceberg::Error::new(
                    iceberg::ErrorKind::Unexpected,
                    format!("finishing {}", self.display),
                )
                .with_source(e)
            })
    }
}

/// Every object under the object-store `location` with its last-modified time (for orphan
/// removal), as full locations (`s3://bucket/key`), named like the location.
pub(crate) async fn list(
    location: &str,
    options: &StorageOptions,
) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, String> {
    let Some(r) = remote(location)? else {
        return Err(format!("{location} is not on an object store"));
    };
    let store = pipe_framework::store::for_url(&r.root, &options.0).map_err(|e| e.to_string())?;
    let prefix = Path::parse(r.key).map_err(|e| e.to_string())?;
    let base = format!("{}/", r.root.as_str().trim_end_matches('/'));
    store
        .list(Some(&prefix))
        .map_ok(|m| (format!("{base}{}", m.location), m.last_modified))
        .try_collect()
        .await
        .map_err(|e| format!("listing {location}: {e}"))
}
