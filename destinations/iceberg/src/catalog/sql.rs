//! The SQL catalog (SQLite or PostgreSQL), in the layout pyiceberg's `SqlCatalog` and
//! Java's `JdbcCatalog` use: load and create through iceberg-catalog-sql, commit by writing the
//! new metadata file and swapping the table's pointer with a compare-and-swap `UPDATE`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use iceberg::io::{FileIO, LocalFsStorageFactory};
use iceberg::{Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation, TableIdent};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use super::{CommitTarget, Loaded};
use crate::commit::TableChange;
use crate::config::CatalogConfig;
use crate::error::{IcebergError, Result, db, ice};

/// The SQL catalog (SQLite or PostgreSQL), in the layout pyiceberg and Java's JDBC catalog use.
#[derive(Debug)]
pub(crate) struct SqlTarget {
    catalog: SqlCatalog,
    pool: AnyPool,
    name: String,
    postgres: bool,
    table: TableIdent,
    file_io: FileIO,
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
    let CatalogConfig::Sql { uri, .. } = config;
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
    pub(crate) async fn connect(config: &CatalogConfig, table: TableIdent) -> Result<Self> {
        let CatalogConfig::Sql {
            uri,
            warehouse,
            name,
        } = config;
        let uri = uri.expose();
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
        let file_io = super::file_io(&warehouse)?;
        let style = if postgres {
            SqlBindStyle::DollarNumeric
        } else {
            SqlBindStyle::QMark
        };
        let props = HashMap::from([
            ("uri".to_string(), uri.clone()),
            ("warehouse".to_string(), warehouse),
            ("sql_bind_style".to_string(), style.to_string()),
            ("pool.max-connections".to_string(), "2".to_string()),
        ]);
        let catalog = SqlCatalogBuilder::default()
            .with_storage_factory(Arc::new(LocalFsStorageFactory))
            .load(name.clone(), props)
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
            name: name.clone(),
            postgres,
            table,
            file_io,
        })
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

#[async_trait]
impl CommitTarget for SqlTarget {
    async fn load(&self) -> Result<Option<Loaded>> {
        match self.catalog.load_table(&self.table).await {
            Ok(table) => Ok(Some(Loaded {
                metadata: table.metadata_ref(),
                location: table
                    .metadata_location_result()
                    .map_err(ice("reading the table's metadata location"))?
                    .to_string(),
            })),
            Err(e) if e.kind() == ErrorKind::TableNotFound => Ok(None),
            Err(e) => Err(ice(format!("loading table {}", self.table))(e)),
        }
    }

    async fn create(&self, creation: TableCreation) -> Result<Loaded> {
        let ns: &NamespaceIdent = self.table.namespace();
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
        let table = match self.catalog.create_table(ns, creation).await {
            Ok(table) => table,
            // Another writer's first run may have created it meanwhile (the catalog says so,
            // or its insert lost the race): then commit on top of theirs.
            Err(e) => {
                return match self.load().await {
                    Ok(Some(existing)) => Ok(existing),
                    _ => Err(ice(format!("creating table {}", self.table))(e)),
                };
            }
        };
        tracing::info!(table = %self.table, "table created");
        Ok(Loaded {
            metadata: table.metadata_ref(),
            location: table
                .metadata_location_result()
                .map_err(ice("reading the new table's metadata location"))?
                .to_string(),
        })
    }

    /// The change's requirements all follow from an unchanged metadata file (same table, same
    /// current snapshot, schema and spec), so the swap only happens if the catalog still points
    /// at the base's.
    async fn commit(&self, change: &TableChange) -> Result<Option<Loaded>> {
        let (base, staged) = (&change.base, &change.staged);
        tracing::debug!(
            table = %self.table,
            updates = ?change.updates.iter().map(action).collect::<Vec<_>>(),
            requirements = ?change.requirements.iter().map(action).collect::<Vec<_>>(),
            "committing by swapping the metadata pointer"
        );
        let next = iceberg::MetadataLocation::from_str(&base.location)
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
        let namespace = self.table.namespace().join(".");
        let updated = sqlx::query(&sql)
            .bind(next.as_str())
            .bind(base.location.as_str())
            .bind(self.name.as_str())
            .bind(namespace.as_str())
            .bind(self.table.name())
            .bind(base.location.as_str())
            .execute(&self.pool)
            .await;
        let updated = match updated {
            Ok(r) => r.rows_affected(),
            // The outcome is unknown: every file stays (the table may reference them now).
            Err(source) => {
                return Err(IcebergError::CommitUnknown {
                    what: format!("committing to table {}", self.table),
                    source,
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

    fn file_io(&self) -> &FileIO {
        &self.file_io
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
