//! # pipe-destination-iceberg
//!
//! `type = "iceberg"`: loads into an Apache Iceberg (format 2) table held by a catalog (the
//! SQL catalog, SQLite or PostgreSQL). Each run is one snapshot: `append` a fast append,
//! `replace` an overwrite removing every live file (or, with `replace_partitions`, only the
//! partitions written), `merge` a copy-on-write overwrite rewriting only the data files that
//! hold incoming keys. The run's state (`pipe.pipeline`, `pipe.run-id`, `pipe.state.*`) is
//! in the snapshot summary, so it commits with the data.

mod catalog;
mod commit;
mod config;
mod error;
mod inspect;
mod io;
mod layout;
mod merge;
mod operations;
mod parallel;
mod register;
mod relocate;
mod schema;
mod serve;
mod sink;
mod table;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use pipe_framework::{
    BuildContext, Destination, DestinationFactory, Error, PrepareRequest, Result, RunContext, Sink,
    State, WriteMode,
};

pub use config::{CatalogConfig, IcebergConfig};
pub use error::IcebergError;
pub use relocate::{RelocateReport, RelocateRequest, relocate};
pub use serve::CatalogService;
pub use sink::IcebergSink;

use catalog::CommitTarget;
use merge::MergeState;
use pipe_framework::cluster::{self, ExternalSort};
use pipe_framework::parquet_options::WriterSettings;
use sink::{SinkOptions, Writing};
use write::{DataFiles, WrittenFiles};

/// Registers as `type = "iceberg"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct IcebergFactory;

impl DestinationFactory for IcebergFactory {
    type Config = IcebergConfig;

    fn description(&self) -> &'static str {
        "Apache Iceberg table (SQL, REST or Nessie catalog); one snapshot per run"
    }

    fn modes(&self) -> &'static [WriteMode] {
        &WriteMode::EVERY
    }

    fn build(&self, config: IcebergConfig, _ctx: &BuildContext) -> Result<Arc<dyn Destination>> {
        Ok(Arc::new(IcebergDestination::new(config)?))
    }

    /// `location` is `<catalog uri>#<namespace.table>`: a SQL catalog
    /// (`sqlite://.pipe/catalog.db#sales.orders`, with the catalog's default name `pipe`) or a
    /// REST catalog (`http://127.0.0.1:8181#sales.orders`, its token from
    /// `PIPE_CATALOG_TOKEN` if set) or a Hive Metastore (`thrift://host:9083#db.orders`).
    /// Object-store credentials come from the environment.
    /// A connection names the database or catalog; the check needs some table name.
    fn probe(&self, keys: &[&str]) -> Vec<(&'static str, &'static str)> {
        if keys.contains(&"table") {
            Vec::new()
        } else {
            vec![("table", "pipe_probe.connection_test")]
        }
    }

    fn locate(&self, location: &str) -> Result<Arc<dyn Destination>> {
        Ok(Arc::new(IcebergDestination::new(locator_config(
            location,
        )?)?))
    }
}

/// The settings of `<catalog uri>#<namespace.table>` (see [`IcebergFactory::locate`]).
pub(crate) fn locator_config(location: &str) -> Result<IcebergConfig> {
    let Some((uri, table)) = location.rsplit_once('#') else {
        return Err(Error::user(format!(
            "`{location}`: give an Iceberg table as <catalog uri>#<namespace.table>"
        )));
    };
    let catalog = if uri.starts_with("http://") || uri.starts_with("https://") {
        let mut rest = serde_json::json!({ "type": "rest", "uri": uri });
        if let Ok(token) = std::env::var("PIPE_CATALOG_TOKEN") {
            rest["token"] = serde_json::Value::String(token);
        }
        rest
    } else if uri.starts_with("thrift://") {
        serde_json::json!({ "type": "hive", "uri": uri })
    } else {
        serde_json::json!({ "type": "sql", "uri": uri })
    };
    let config: IcebergConfig = serde_json::from_value(serde_json::json!({
        "catalog": catalog,
        "table": table,
    }))
    .map_err(|e| Error::internal(format!("default Iceberg settings: {e}")))?;
    Ok(config)
}

/// An Iceberg table as a destination.
#[derive(Debug)]
pub struct IcebergDestination {
    config: IcebergConfig,
    table: iceberg::TableIdent,
    options: WriterSettings,
    /// The catalog, connected once per destination (reconcile, prepare and commit share it).
    target: tokio::sync::OnceCell<Arc<dyn CommitTarget>>,
}

impl IcebergDestination {
    /// Validate `config`; opens nothing.
    pub fn new(config: IcebergConfig) -> Result<Self> {
        let table = table::table_ident(&config.table)?;
        for entry in &config.partition_by {
            layout::parse_partition(entry)?;
        }
        let options = WriterSettings::resolve(
            config.target_file_size_mb,
            config.row_group_rows,
            config.writers,
            &config.compression,
        )?;
        Ok(Self {
            config,
            table,
            options,
            target: tokio::sync::OnceCell::new(),
        })
    }

    /// The table as the catalog has it; `None` when the catalog or the table does not exist.
    async fn load_existing(&self) -> Result<Option<catalog::Loaded>> {
        if self.catalog_missing() {
            return Ok(None);
        }
        Ok(self.connect().await?.load().await?)
    }

    async fn connect(&self) -> std::result::Result<Arc<dyn CommitTarget>, IcebergError> {
        self.target
            .get_or_try_init(|| async {
                catalog::connect(
                    &self.config.catalog,
                    &self.storage_options(),
                    self.table.clone(),
                )
                .await
            })
            .await
            .cloned()
    }

    /// `storage_options` with their values exposed, for the object store.
    fn storage_options(&self) -> io::StorageOptions {
        io::StorageOptions(
            self.config
                .storage_options
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
        )
    }

    /// Whether the catalog is a SQLite file that does not exist yet: then there is no table,
    /// and read-only calls (check, state, inspect) must not create the file.
    fn catalog_missing(&self) -> bool {
        catalog::not_created(&self.config.catalog)
    }

    async fn prepare_sink(
        &self,
        request: PrepareRequest,
    ) -> std::result::Result<IcebergSink, IcebergError> {
        let target = self.connect().await?;
        let planned = table::plan(
            target.as_ref(),
            &self.config,
            &request.source_schema,
            request.evolution,
        )
        .await?;
        let schema = planned.schema();
        let write_schema = Arc::new(schema::write_schema(&schema)?);
        let metadata = planned.metadata();
        let spec = metadata.default_partition_spec().clone();
        if request.write.mode == WriteMode::Replace
            && self.config.replace_partitions
            && spec.is_unpartitioned()
        {
            return Err(IcebergError::Config(format!(
                "replace_partitions = true needs a partitioned table, but {} is unpartitioned",
                self.config.table
            )));
        }
        let key_field_ids = if request.write.mode == WriteMode::Merge {
            if request.write.merge_keys.is_empty() {
                return Err(IcebergError::Config(
                    "mode = \"merge\" needs merge_keys".into(),
                ));
            }
            for key in &request.write.merge_keys {
                if pipe_framework::columns::find(&request.source_schema, key).is_none() {
                    return Err(IcebergError::Config(format!(
                        "merge key `{key}` is not a column of the source: every row's key would \
                         be NULL"
                    )));
                }
            }
            schema::resolve_columns(&schema, &request.write.merge_keys, "merge key")?
        } else {
            Vec::new()
        };
        let data_location = metadata
            .properties()
            .get("write.data.path")
            .cloned()
            .unwrap_or_else(|| format!("{}/data", metadata.location()));
        let written = WrittenFiles::default();
        let files = DataFiles {
            io: target.file_io().clone(),
            data_location,
            schema: Arc::new(schema.clone()),
            spec,
            prefix: format!("{}-{}", request.ctx.run_id, uuid::Uuid::now_v7().simple()),
            options: self.options.clone(),
            written: written.clone(),
        };
        let cluster = layout::cluster_key(
            metadata,
            &write_schema,
            self.config.cluster_by.as_deref(),
            &request.write,
        )?;
        let segment = cluster
            .as_ref()
            .map(|_| cluster::segment_bytes(self.options.target_file_size));
        let writer = parallel::ParallelWriter::new(files, self.options.writers, segment);
        let merge = if request.write.mode == WriteMode::Merge {
            let columns = key_field_ids
                .iter()
                .filter_map(|id| schema.as_struct().fields().iter().position(|f| f.id == *id))
                .collect();
            Some(MergeState::new(
                write_schema.clone(),
                columns,
                cluster.clone(),
            )?)
        } else {
            None
        };
        let sorter = match (&merge, cluster) {
            _ if request.write.mode == WriteMode::Register => None,
            (None, Some(key)) => Some(ExternalSort::new(
                write_schema.clone(),
                key,
                cluster::SORT_MEMORY,
            )),
            _ => None,
        };
        let options = SinkOptions {
            mode: request.write.mode,
            replace_partitions: self.config.replace_partitions,
            retries: self.config.commit_retries,
            key_field_ids,
            replan: (request.write.mode == WriteMode::Register).then(|| sink::Replan {
                config: self.config.clone(),
                policy: request.evolution,
            }),
        };
        Ok(IcebergSink::new(
            target,
            planned,
            write_schema,
            Writing {
                writer,
                merge,
                sorter,
            },
            written,
            options,
        ))
    }
}

#[async_trait]
impl Destination for IcebergDestination {
    fn describe(&self) -> String {
        format!(
            "iceberg {} {}",
            catalog::describe(&self.config.catalog),
            self.config.table
        )
    }

    async fn check(&self) -> Result<()> {
        if self.catalog_missing() {
            return catalog::check_creatable(&self.config.catalog);
        }
        let target = self.connect().await?;
        target.load().await?;
        Ok(())
    }

    async fn committed_state(&self, ctx: &RunContext) -> Result<Option<State>> {
        if self.catalog_missing() {
            return Ok(Some(State::new()));
        }
        let target = self.connect().await?;
        Ok(Some(match target.load().await? {
            Some(table) => table::committed_state(&table.metadata, &ctx.pipeline),
            None => State::new(),
        }))
    }

    fn operations(&self) -> Option<&dyn pipe_framework::TableOperations> {
        Some(self)
    }

    async fn prepare(&self, request: PrepareRequest) -> Result<Box<dyn Sink>> {
        let sink = self.prepare_sink(request).await.map_err(Error::from)?;
        Ok(Box::new(sink))
    }
}
