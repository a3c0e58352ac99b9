//! A Hive Metastore as a [`CommitTarget`], with Iceberg's Hive commit protocol (what Java's
//! `HiveTableOperations` does): write the new metadata file; take an exclusive table lock
//! (polling while it waits, bounded by `lock_timeout_secs`, heartbeating while held); re-read
//! the table and check it still points at the base metadata; `alter_table` with the new
//! `metadata_location` and the old one as `previous_metadata_location`; unlock — on success,
//! on error and when the run is cancelled.
//!
//! Tables are registered as Hive `EXTERNAL_TABLE`s with `table_type=ICEBERG`, which is how
//! Java, pyiceberg, Spark and Trino find them. Hive has one level of namespace (databases).

mod client;
mod lock;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::{TableMetadata, TableMetadataBuilder};
use iceberg::{MetadataLocation, TableCreation, TableIdent};

use self::client::{METADATA_LOCATION, Metastore};
use super::{CommitTarget, Loaded, NewLocation};
use crate::commit::TableChange;
use crate::config::HiveCatalogConfig;
use crate::error::{IcebergError, Result, ice};
use crate::io::StorageOptions;

/// One table of a Hive Metastore.
#[derive(Debug)]
pub(crate) struct HiveTarget {
    metastore: Metastore,
    db: String,
    name: String,
    /// `<warehouse>` as an absolute URI, if configured.
    warehouse: Option<String>,
    create_namespace: bool,
    lock_timeout: Duration,
    /// The database's location, once known to exist (created if allowed).
    database: tokio::sync::OnceCell<Option<String>>,
    file_io: FileIO,
    storage: StorageOptions,
}

/// `file:/x` and `file:///x` alike as `file:///x` (the metastore writes the short form).
fn normal_uri(location: &str) -> String {
    let trimmed = location.trim_end_matches('/');
    match trimmed.strip_prefix("file:") {
        Some(rest) if !rest.starts_with("//") => format!("file://{rest}"),
        _ => trimmed.to_string(),
    }
}

impl HiveTarget {
    /// A client for the metastore (connecting on the first call); checks the namespace is one
    /// level, as Hive's databases are.
    pub(crate) async fn connect(
        config: &HiveCatalogConfig,
        storage: &StorageOptions,
        table: TableIdent,
    ) -> Result<Self> {
        let [db] = table.namespace().as_ref().as_slice() else {
            return Err(IcebergError::Config(format!(
                "table `{}`: a Hive Metastore has one level of namespace (database.table)",
                table
            )));
        };
        let warehouse = match &config.warehouse {
            Some(w) => {
                let uri = super::sql::warehouse_uri(w)?;
                super::check_location(&uri, storage)?;
                Some(uri)
            }
            None => None,
        };
        Ok(Self {
            metastore: Metastore::new(&config.uri, Duration::from_secs(config.timeout_secs))
                .await?,
            db: db.clone(),
            name: table.name().to_string(),
            warehouse,
            create_namespace: config.create_namespace,
            lock_timeout: Duration::from_secs(config.lock_timeout_secs),
            database: tokio::sync::OnceCell::new(),
            file_io: crate::io::file_io(storage),
            storage: storage.clone(),
        })
    }

    fn qualified(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }

    /// The database exists (created if allowed); its location.
    async fn database(&self) -> Result<Option<String>> {
        self.database
            .get_or_try_init(|| async {
                if let Some(db) = self.metastore.database(&self.db).await? {
                    return Ok(db.location_uri.map(|l| normal_uri(&l)));
                }
                if !self.create_namespace {
                    return Err(IcebergError::Config(format!(
                        "database `{}` does not exist in the Hive Metastore {}: create it, or \
                         set create_namespace = true in the catalog settings",
                        self.db, self.metastore.uri
                    )));
                }
                let location = self
                    .warehouse
                    .as_ref()
                    .map(|w| format!("{w}/{}.db", self.db));
                self.metastore.create_database(&self.db, location).await?;
                tracing::info!(database = %self.db, "database created");
                Ok(self
                    .metastore
                    .database(&self.db)
                    .await?
                    .and_then(|db| db.location_uri.map(|l| normal_uri(&l))))
            })
            .await
            .cloned()
    }

    /// Where a new table goes: `<database location>/<table>` (as Java and pyiceberg place
    /// it), else `<warehouse>/<db>.db/<table>`.
    async fn table_location(&self) -> Result<String> {
        match (self.database().await?, &self.warehouse) {
            (Some(db), _) => Ok(format!("{db}/{}", self.name)),
            (None, Some(w)) => Ok(format!("{w}/{}.db/{}", self.db, self.name)),
            (None, None) => Err(IcebergError::Config(format!(
                "database `{}` has no location in the Hive Metastore: set the catalog's \
                 `warehouse`",
                self.db
            ))),
        }
    }

    async fn read(&self, metadata_location: &str) -> Result<Loaded> {
        let metadata = TableMetadata::read_from(&self.file_io, metadata_location)
            .await
            .map_err(ice(format!("reading {metadata_location}")))?;
        Ok(Loaded {
            metadata: Arc::new(metadata),
            location: metadata_location.to_string(),
        })
    }

    /// Point the table at `next` if it still points at `base`, under the lock.
    async fn swap(
        &self,
        held: &lock::HeldLock,
        base: &str,
        next: &str,
        staged: &TableMetadata,
    ) -> Outcome {
        let current = match self.metastore.table(&self.db, &self.name).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Outcome::Failed(IcebergError::Conflict(format!(
                    "table {} was dropped from the Hive Metastore during the run",
                    self.qualified()
                )));
            }
            Err(e) => return Outcome::Failed(e),
        };
        if client::parameter(&current, METADATA_LOCATION) != Some(base) {
            return Outcome::Moved;
        }
        if let Err(e) = held.ensure_active().await {
            return Outcome::Failed(e);
        }
        let table = match client::iceberg_table(
            Some(current),
            &self.db,
            &self.name,
            staged.location(),
            staged.current_schema(),
            next,
            Some(base),
        ) {
            Ok(t) => t,
            Err(e) => return Outcome::Failed(e),
        };
        let error = match self
            .metastore
            .alter_table(&self.db, &self.name, table)
            .await
        {
            Ok(()) => return Outcome::Committed,
            Err(Ok(refused)) => Ok(refused),
            Err(Err(no_answer)) => Err(no_answer),
        };
        // As Java's checkCommitStatus: an error does not prove the change was not applied.
        let now = self.metastore.table(&self.db, &self.name).await;
        let pointer = now
            .as_ref()
            .ok()
            .and_then(|t| t.as_ref())
            .and_then(|t| client::parameter(t, METADATA_LOCATION));
        match (pointer, error) {
            (Some(p), _) if p == next => Outcome::Committed,
            // Refused, and the table unchanged: a plain failure.
            (Some(p), Ok(refused)) if p == base => Outcome::Failed(refused),
            (_, error) => Outcome::Unknown(IcebergError::CommitUnknown {
                what: format!(
                    "committing to table {} (Hive Metastore {})",
                    self.qualified(),
                    self.metastore.uri
                ),
                source: match error {
                    Ok(refused) => Box::new(refused) as Box<dyn std::error::Error + Send + Sync>,
                    Err(no_answer) => Box::new(no_answer),
                },
            }),
        }
    }
}

/// How a swap under the lock ended.
enum Outcome {
    /// The table points at the new metadata.
    Committed,
    /// Another writer committed first: restage.
    Moved,
    /// Not applied.
    Failed(IcebergError),
    /// Maybe applied: keep every file.
    Unknown(IcebergError),
}

#[async_trait]
impl CommitTarget for HiveTarget {
    async fn load(&self) -> Result<Option<Loaded>> {
        let Some(table) = self.metastore.table(&self.db, &self.name).await? else {
            return Ok(None);
        };
        if !client::is_iceberg(&table) {
            return Err(IcebergError::Config(format!(
                "table {} exists in the Hive Metastore {} but is not an Iceberg table \
                 (table_type = {}); pipe will not write to it",
                self.qualified(),
                self.metastore.uri,
                client::parameter(&table, client::TABLE_TYPE).unwrap_or("unset")
            )));
        }
        let location = client::parameter(&table, METADATA_LOCATION).ok_or_else(|| {
            IcebergError::Config(format!(
                "Iceberg table {} has no metadata_location in the Hive Metastore",
                self.qualified()
            ))
        })?;
        Ok(Some(self.read(location).await?))
    }

    async fn new_location(&self, _creation: TableCreation) -> Result<NewLocation> {
        Ok(NewLocation::At(self.table_location().await?))
    }

    async fn create(&self, mut creation: TableCreation) -> Result<Loaded> {
        let location = match creation.location.take() {
            Some(l) => l,
            None => self.table_location().await?,
        };
        creation.location = Some(location.clone());
        let metadata = TableMetadataBuilder::from_table_creation(creation)
            .and_then(|b| b.build())
            .map_err(ice(format!(
                "building the metadata of {}",
                self.qualified()
            )))?
            .metadata;
        let file = MetadataLocation::new_with_metadata(&location, &metadata);
        metadata
            .write_to(&self.file_io, &file)
            .await
            .map_err(ice("writing the new table's metadata"))?;
        let file = file.to_string();
        let table = client::iceberg_table(
            None,
            &self.db,
            &self.name,
            &location,
            metadata.current_schema(),
            &file,
            None,
        )?;
        match self.metastore.create_table(table).await {
            Ok(true) => {
                tracing::info!(table = %self.qualified(), "table created");
                Ok(Loaded {
                    metadata: Arc::new(metadata),
                    location: file,
                })
            }
            // Another writer's first run created it meanwhile: commit on top of theirs.
            Ok(false) => {
                let _ = self.file_io.delete(&file).await;
                self.load().await?.ok_or_else(|| {
                    IcebergError::Conflict(format!(
                        "table {} was created and dropped meanwhile",
                        self.qualified()
                    ))
                })
            }
            // No answer: the table may exist now, pointing at our file.
            Err(e @ IcebergError::Metastore { reached: false, .. }) => {
                match self.metastore.table(&self.db, &self.name).await {
                    Ok(Some(t))
                        if client::parameter(&t, METADATA_LOCATION) == Some(file.as_str()) =>
                    {
                        tracing::info!(table = %self.qualified(), "table created");
                        Ok(Loaded {
                            metadata: Arc::new(metadata),
                            location: file,
                        })
                    }
                    Ok(Some(_)) => {
                        let _ = self.file_io.delete(&file).await;
                        self.load().await?.ok_or_else(|| {
                            IcebergError::Conflict(format!(
                                "table {} was created and dropped meanwhile",
                                self.qualified()
                            ))
                        })
                    }
                    // Still unknown: keep the file (it may yet be registered).
                    _ => Err(IcebergError::CommitUnknown {
                        what: format!("creating table {}", self.qualified()),
                        source: Box::new(e),
                    }),
                }
            }
            Err(e) => {
                let _ = self.file_io.delete(&file).await;
                Err(e)
            }
        }
    }

    async fn register(&self, metadata_location: &str) -> Result<Loaded> {
        self.database().await?;
        let loaded = self.read(metadata_location).await?;
        let metadata = &loaded.metadata;
        let table = client::iceberg_table(
            None,
            &self.db,
            &self.name,
            metadata.location(),
            metadata.current_schema(),
            metadata_location,
            None,
        )?;
        if self.metastore.create_table(table).await? {
            tracing::info!(table = %self.qualified(), "table registered");
            Ok(loaded)
        } else {
            Err(IcebergError::Config(format!(
                "table {} already exists",
                self.qualified()
            )))
        }
    }

    async fn commit(&self, change: &TableChange) -> Result<Option<Loaded>> {
        let base = change.base.location.as_str();
        let next = MetadataLocation::from_str(base)
            .map_err(ice("parsing the current metadata location"))?
            .with_next_version()
            .with_new_metadata(&change.staged);
        change
            .staged
            .write_to(&self.file_io, &next)
            .await
            .map_err(ice("writing the new table metadata"))?;
        let next = next.to_string();
        let held =
            match lock::acquire(&self.metastore, &self.db, &self.name, self.lock_timeout).await {
                Ok(held) => held,
                Err(e) => {
                    let _ = self.file_io.delete(&next).await;
                    return Err(e);
                }
            };
        match self.swap(&held, base, &next, &change.staged).await {
            Outcome::Committed => {
                held.release().await;
                Ok(Some(Loaded {
                    metadata: Arc::new(change.staged.clone()),
                    location: next,
                }))
            }
            Outcome::Moved => {
                held.release().await;
                let _ = self.file_io.delete(&next).await;
                Ok(None)
            }
            Outcome::Failed(e) => {
                held.release().await;
                let _ = self.file_io.delete(&next).await;
                Err(e)
            }
            // The lock stays until the metastore expires it: a late alter_table of ours must
            // not land on top of another writer's commit.
            Outcome::Unknown(e) => {
                held.abandon();
                Err(e)
            }
        }
    }

    fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    fn storage(&self) -> &StorageOptions {
        &self.storage
    }
}
