//! The SQL catalog (SQLite or PostgreSQL), in the layout pyiceberg's `SqlCatalog` and
//! Java's `JdbcCatalog` use: load and create through iceberg-catalog-sql, commit by writing the
//! new metadata file and swapping the table's pointer with a compare-and-swap `UPDATE`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use super::{CommitTarget, Loaded, NewLocation};
use crate::commit::TableChange;
use crate::config::CatalogConfig;
use crate::error::{IcebergError, Result, db, ice};
use crate::io::StorageOptions;

/// A SQL catalog database (SQLite or PostgreSQL), in the layout pyiceberg and Java's JDBC
/// catalog use: shared by every table of a run, and by `pipe serve catalog`.
#[derive(Debug)]
pub(crate) struct SqlCatalogDb {
    /// iceberg-catalog-sql over the database: namespaces, create, load, drop, rename.
    pub catalog: SqlCatalog,
    pool: AnyPool,
    name: String,
    postgres: bool,
    warehouse: String,
    file_io: FileIO,
    storage: StorageOptions,
}

/// One table of a SQL catalog.
#[derive(Debug)]
pub(crate) struct SqlTarget {
    db: SqlCatalogDb,
    table: TableIdent,
}

/// `sqlite://relative/path.db` with its directory created and `mode=rwc`, so the file is
/// created on first use.
fn sqlite_uri(uri: &str) -> Result<String> {
    let rest = uri
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path.contains(":memory:") {
        return Err(IcebergError::Config(format!(
            "catalog uri `{uri}`: an in-memory SQLite catalog would vanish with the run; \
             give a file, e.g. sqlite://.pipe/catalog.db"
        )));
    }
    if let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            IcebergError::Config(format!(
                "cannot create the catalog directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let query = if query.contains("mode=") {
        query.to_string()
    } else if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// The file of a SQLite catalog (`None` for other databases).
pub(crate) fn sqlite_file(config: &CatalogConfig) -> Option<std::path::PathBuf> {
    let CatalogConfig::Sql { uri, .. } = config else {
        return None;
    };
    let rest = uri.expose().strip_prefix("sqlite:")?;
    let rest = rest.trim_start_matches("//");
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    Some(std::path::PathBuf::from(path))
}

/// The warehouse as an absolute `file://` URI: metadata records absolute paths, so any
/// reader, from any directory, finds the files.
pub(crate) fn warehouse_uri(warehouse: &str) -> Result<String> {
    if warehouse.contains("://") {
        return Ok(warehouse.trim_end_matches('/').to_string());
    }
    // Absolute without touching the disk: the directories are created with the first file
    // written under them (reading a table must not create a warehouse).
    let path = Path::new(warehouse);
    let abs = std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map_err(|e| {
            IcebergError::Config(format!("cannot resolve the warehouse {warehouse}: {e}"))
        })?;
    Ok(format!("file://{}", abs.display()))
}

impl SqlTarget {
    /// Connect to the catalog database (creating its tables if missing).
    pub(crate) async fn connect(
        config: &CatalogConfig,
        storage: &StorageOptions,
        table: TableIdent,
    ) -> Result<Self> {
        let CatalogConfig::Sql {
            uri,
            warehouse,
            name,
        } = config
        else {
            return Err(IcebergError::Internal("not a SQL catalog".into()));
        };
        Ok(Self {
            db: SqlCatalogDb::connect(uri.expose(), warehouse, name, storage).await?,
            table,
        })
    }
}

impl SqlCatalogDb {
    /// Connect to the catalog database at `uri` (creating its tables if missing); new tables
    /// go under `warehouse`; rows are keyed by the catalog's `name`; `storage` configures the
    /// object store of an `s3://`, `gs://` or `az://` warehouse.
    pub(crate) async fn connect(
        uri: &str,
        warehouse: &str,
        name: &str,
        storage: &StorageOptions,
    ) -> Result<Self> {
        let postgres = uri.starts_with("postgres://") || uri.starts_with("postgresql://");
        let uri = if uri.starts_with("sqlite:") {
            sqlite_uri(uri)?
        } else if postgres {
            uri.to_string()
        } else {
            return Err(IcebergError::Config(format!(
                "catalog uri `{}`: expected sqlite://path or postgres://user@host/db",
                pipe_framework::secret::redact(uri)
            )));
        };
        let warehouse = warehouse_uri(warehouse)?;
        super::check_location(&warehouse, storage)?;
        let file_io = crate::io::file_io(storage);
        let style = if postgres {
            SqlBindStyle::DollarNumeric
        } else {
            SqlBindStyle::QMark
        };
        let props = HashMap::from([
            ("uri".to_string(), uri.clone()),
            ("warehouse".to_string(), warehouse.clone()),
            ("sql_bind_style".to_string(), style.to_string()),
            ("pool.max-connections".to_string(), "2".to_string()),
        ]);
        let catalog = SqlCatalogBuilder::default()
            .with_storage_factory(crate::io::factory(storage))
            .load(name.to_string(), props)
            .await
            .map_err(ice(format!(
                "connecting to the SQL catalog {}",
                pipe_framework::secret::redact(&uri)
            )))?;
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&uri)
            .await
            .map_err(db(format!(
                "connecting to the SQL catalog {}",
                pipe_framework::secret::redact(&uri)
            )))?;
        Ok(Self {
            catalog,
            pool,
            name: name.to_string(),
            postgres,
            warehouse,
            file_io,
            storage: storage.clone(),
        })
    }

    /// The warehouse, as a URI (`file:///abs/warehouse`).
    pub(crate) fn warehouse(&self) -> &str {
        &self.warehouse
    }

    /// Where a new table goes: `<warehouse>/<namespace path>/<table>`.
    pub(crate) fn default_location(&self, table: &TableIdent) -> String {
        format!(
            "{}/{}/{}",
            self.warehouse,
            table.namespace().join("/"),
            table.name()
        )
    }

    /// Remove these properties of a namespace (iceberg-catalog-sql only adds and updates).
    pub(crate) async fn remove_namespace_properties(
        &self,
        ns: &NamespaceIdent,
        keys: &[String],
    ) -> Result<()> {
        let sql = self.sql(
            "DELETE FROM iceberg_namespace_properties WHERE catalog_name = ? AND namespace = ? \
             AND property_key = ?",
        );
        let namespace = ns.join(".");
        for key in keys {
            sqlx::query(&sql)
                .bind(self.name.as_str())
                .bind(namespace.as_str())
                .bind(key.as_str())
                .execute(&self.pool)
                .await
                .map_err(db(format!(
                    "removing property {key} of namespace {namespace}"
                )))?;
        }
        Ok(())
    }

    fn sql(&self, text: &str) -> String {
        if !self.postgres {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len() + 8);
        let mut n = 0;
        for c in text.chars() {
            if c == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl SqlCatalogDb {
    /// The table's metadata, `None` if it does not exist.
    pub(crate) async fn load(&self, table: &TableIdent) -> Result<Option<Loaded>> {
        match self.catalog.load_table(table).await {
            Ok(found) => Ok(Some(Loaded {
                metadata: found.metadata_ref(),
                location: found
                    .metadata_location_result()
                    .map_err(ice("reading the table's metadata location"))?
                    .to_string(),
            })),
            Err(e) if e.kind() == ErrorKind::TableNotFound => Ok(None),
            Err(e) => Err(ice(format!("loading table {table}"))(e)),
        }
    }

    /// Create namespace `ns` if it is missing (another writer may create it meanwhile).
    async fn ensure_namespace(&self, ns: &NamespaceIdent) -> Result<()> {
        let exists = self
            .catalog
            .namespace_exists(ns)
            .await
            .map_err(ice(format!("looking up namespace {}", ns.join("."))))?;
        if !exists {
            match self.catalog.create_namespace(ns, HashMap::new()).await {
                Ok(_) => tracing::info!(namespace = %ns.join("."), "namespace created"),
                // Another writer may have created it meanwhile.
                Err(e) => {
                    if !self.catalog.namespace_exists(ns).await.unwrap_or(false) {
                        return Err(ice(format!("creating namespace {}", ns.join(".")))(e));
                    }
                }
            }
        }
        Ok(())
    }

    /// Register `table` with the metadata file at `metadata_location`.
    pub(crate) async fn register(
        &self,
        table: &TableIdent,
        metadata_location: &str,
    ) -> Result<Loaded> {
        self.ensure_namespace(table.namespace()).await?;
        if self.load(table).await?.is_some() {
            return Err(IcebergError::Config(format!(
                "table {table} already exists"
            )));
        }
        let registered = self
            .catalog
            .register_table(table, metadata_location.to_string())
            .await
            .map_err(ice(format!("registering table {table}")))?;
        tracing::info!(%table, metadata = metadata_location, "table registered");
        Ok(Loaded {
            metadata: registered.metadata_ref(),
            location: metadata_location.to_string(),
        })
    }

    /// Create the namespace (if missing) and the table; an existing table is loaded.
    pub(crate) async fn create(
        &self,
        table: &TableIdent,
        creation: TableCreation,
    ) -> Result<Loaded> {
        self.ensure_namespace(table.namespace()).await?;
        let ns: &NamespaceIdent = table.namespace();
        let created = match self.catalog.create_table(ns, creation).await {
            Ok(created) => created,
            // Another writer's first run may have created it meanwhile (the catalog says so,
            // or its insert lost the race): then commit on top of theirs.
            Err(e) => {
                return match self.load(table).await {
                    Ok(Some(existing)) => Ok(existing),
                    _ => Err(ice(format!("creating table {table}"))(e)),
                };
            }
        };
        tracing::info!(%table, "table created");
        Ok(Loaded {
            metadata: created.metadata_ref(),
            location: created
                .metadata_location_result()
                .map_err(ice("reading the new table's metadata location"))?
                .to_string(),
        })
    }

    /// The change's requirements all follow from an unchanged metadata file (same table, same
    /// current snapshot, schema and spec), so the swap only happens if the catalog still points
    /// at the base's.
    pub(crate) async fn commit(
        &self,
        table: &TableIdent,
        change: &TableChange,
    ) -> Result<Option<Loaded>> {
        tracing::debug!(
            %table,
            updates = ?change.updates.iter().map(action).collect::<Vec<_>>(),
            requirements = ?change.requirements.iter().map(action).collect::<Vec<_>>(),
            "committing by swapping the metadata pointer"
        );
        self.swap(table, &change.base.location, &change.staged)
            .await
    }

    /// Write `staged` as the table's next metadata file and point the catalog at it if it
    /// still points at `base_location`. `Ok(None)`: it does not (the file is deleted).
    pub(crate) async fn swap(
        &self,
        table: &TableIdent,
        base_location: &str,
        staged: &TableMetadata,
    ) -> Result<Option<Loaded>> {
        let next = iceberg::MetadataLocation::from_str(base_location)
            .map_err(ice("parsing the current metadata location"))?
            .with_next_version()
            .with_new_metadata(staged);
        staged
            .write_to(&self.file_io, &next)
            .await
            .map_err(ice("writing the new table metadata"))?;
        let next = next.to_string();
        let sql = self.sql(
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
             AND metadata_location = ?",
        );
        let namespace = table.namespace().join(".");
        let updated = sqlx::query(&sql)
            .bind(next.as_str())
            .bind(base_location)
            .bind(self.name.as_str())
            .bind(namespace.as_str())
            .bind(table.name())
            .bind(base_location)
            .execute(&self.pool)
            .await;
        let updated = match updated {
            Ok(r) => r.rows_affected(),
            // The statement never ran: no connection to be had, or SQLite busy or locked
            // (which it answers before changing anything).
            Err(source) if never_ran(&source) => {
                let _ = self.file_io.delete(&next).await;
                return Err(db(format!("committing to table {table}"))(source));
            }
            // The outcome is unknown: every file stays (the table may reference them now).
            Err(source) => {
                return Err(IcebergError::CommitUnknown {
                    what: format!("committing to table {table}"),
                    source: Box::new(source),
                });
            }
        };
        if updated == 0 {
            let _ = self.file_io.delete(&next).await;
            return Ok(None);
        }
        Ok(Some(Loaded {
            metadata: Arc::new(staged.clone()),
            location: next,
        }))
    }
}

#[async_trait]
impl CommitTarget for SqlTarget {
    async fn load(&self) -> Result<Option<Loaded>> {
        self.db.load(&self.table).await
    }

    async fn new_location(&self, _creation: TableCreation) -> Result<NewLocation> {
        Ok(NewLocation::At(self.db.default_location(&self.table)))
    }

    async fn create(&self, creation: TableCreation) -> Result<Loaded> {
        self.db.create(&self.table, creation).await
    }

    async fn register(&self, metadata_location: &str) -> Result<Loaded> {
        self.db.register(&self.table, metadata_location).await
    }

    async fn commit(&self, change: &TableChange) -> Result<Option<Loaded>> {
        self.db.commit(&self.table, change).await
    }

    fn file_io(&self) -> &FileIO {
        &self.db.file_io
    }

    fn storage(&self) -> &StorageOptions {
        &self.db.storage
    }
}

/// Whether the catalog database refused `e` before running the statement.
fn never_ran(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        // SQLITE_BUSY (5), SQLITE_LOCKED (6) and their extended codes
        sqlx::Error::Database(d) => {
            d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && d.code()
                    .and_then(|c| c.parse::<i64>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 5 | 6))
        }
        _ => false,
    }
}

/// The spec name of an update or requirement (`add-snapshot`, `assert-ref-snapshot-id`).
fn action<T: serde::Serialize>(item: &T) -> String {
    serde_json::to_value(item)
        .ok()
        .and_then(|v| {
            v.get("action")
                .or_else(|| v.get("type"))
                .and_then(|a| a.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default()
}
