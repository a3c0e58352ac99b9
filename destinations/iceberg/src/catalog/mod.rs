//! Catalogs behind one small interface, [`CommitTarget`]: load the table's current metadata,
//! create it, and apply a [`TableChange`] atomically. The snapshot producer
//! (`crate::commit`) is written against this trait only, and [`connect`] is the one place that
//! turns a `catalog` config into a catalog (SQL, REST, Nessie, Hive Metastore).

pub(crate) mod hive;
pub(crate) mod rest;
pub(crate) mod sql;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::TableMetadataRef;
use iceberg::{TableCreation, TableIdent};

use crate::commit::TableChange;
use crate::config::CatalogConfig;
use crate::error::{IcebergError, Result};
use crate::io::StorageOptions;

/// A table's metadata as the catalog points at it.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The metadata.
    pub metadata: TableMetadataRef,
    /// The metadata file the catalog points at.
    pub location: String,
}

/// Where a table that does not exist yet will be.
#[derive(Debug)]
pub(crate) enum NewLocation {
    /// Its location; the table is created when the run commits.
    At(String),
    /// The catalog cannot say without creating it: created now, empty (or another writer
    /// created it meanwhile).
    Created(Loaded),
}

/// What the commit path needs from a catalog.
#[async_trait]
pub(crate) trait CommitTarget: Send + Sync + Debug {
    /// The table's current metadata, or `None` if the table does not exist.
    async fn load(&self) -> Result<Option<Loaded>>;

    /// Where the table `creation` describes (its location unset) would be created.
    async fn new_location(&self, creation: TableCreation) -> Result<NewLocation>;

    /// Create the namespace (if missing) and the table.
    async fn create(&self, creation: TableCreation) -> Result<Loaded>;

    /// Register the table with an existing metadata file (`pipe iceberg relocate`), creating
    /// the namespace if missing. A table of that name that exists already is an error.
    async fn register(&self, metadata_location: &str) -> Result<Loaded>;

    /// Apply `change` if the table still meets its requirements (unchanged since
    /// `change.base`). `Ok(None)`: another writer committed first.
    async fn commit(&self, change: &TableChange) -> Result<Option<Loaded>>;

    /// Reads and writes the table's files.
    fn file_io(&self) -> &FileIO;

    /// The object-store options `file_io` was built with (listing files needs them).
    fn storage(&self) -> &StorageOptions;
}

/// The catalog `config` names, for `table`.
/// `storage`: object-store options for the table's files (`storage_options`).
pub(crate) async fn connect(
    config: &CatalogConfig,
    storage: &StorageOptions,
    table: TableIdent,
) -> Result<Arc<dyn CommitTarget>> {
    match config {
        CatalogConfig::Sql { .. } => Ok(Arc::new(
            sql::SqlTarget::connect(config, storage, table).await?,
        )),
        CatalogConfig::Rest(rest) => Ok(Arc::new(
            rest::RestTarget::connect(rest, false, storage, table).await?,
        )),
        CatalogConfig::Nessie(rest) => Ok(Arc::new(
            rest::RestTarget::connect(rest, true, storage, table).await?,
        )),
        CatalogConfig::Hive(hive) => Ok(Arc::new(
            hive::HiveTarget::connect(hive, storage, table).await?,
        )),
    }
}

/// The catalog, for messages (no password).
pub(crate) fn describe(config: &CatalogConfig) -> String {
    match config {
        CatalogConfig::Sql { uri, .. } => pipe_framework::secret::redact(uri.expose()).into_owned(),
        CatalogConfig::Rest(rest) | CatalogConfig::Nessie(rest) => {
            pipe_framework::secret::redact(&rest.uri).into_owned()
        }
        CatalogConfig::Hive(hive) => hive.uri.clone(),
    }
}

/// Whether the catalog does not exist yet (a SQLite file not created): then there is no table,
/// and read-only calls must not create it.
pub(crate) fn not_created(config: &CatalogConfig) -> bool {
    sql::sqlite_file(config).is_some_and(|path| !path.exists())
}

/// Check, changing nothing, that a catalog that does not exist yet could be created.
pub(crate) fn check_creatable(config: &CatalogConfig) -> pipe_framework::Result<()> {
    match sql::sqlite_file(config) {
        Some(path) if !path.exists() => {
            pipe_framework::probe::creatable(&path, "the Iceberg catalog")
        }
        _ => Ok(()),
    }
}

/// Check that `location` (a warehouse or table URI) is on a storage this build reads and
/// writes, and that the options suit it.
pub(crate) fn check_location(location: &str, storage: &StorageOptions) -> Result<()> {
    crate::io::check_location(location, storage)
        .map_err(|e| IcebergError::Config(format!("table storage: {e}")))
}
