//! # pipe-destination-delta
//!
//! `type = "delta"`: loads into a Delta Lake table (local directory or object store) through
//! delta-rs. Each run is one version of the log: `append` adds files, `replace` removes every
//! live file (or, with `replace_where`, only the rows matching a predicate) and adds the run's,
//! `merge` is a copy-on-write upsert that rewrites only the files holding incoming keys. Every
//! commit carries an application transaction (`txn`: app id = pipeline, version = run
//! sequence) and the pipeline's state in `commitInfo`, so state commits with the data. Table
//! operations (history, vacuum, optimize, restore, inspect) are in [`ops`].

mod commit;
mod config;
mod error;
mod merge;
pub mod ops;
mod predicate;
mod read;
mod schema;
mod sink;
mod stats;
mod store;
mod table;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::DataType;
use arrow_schema::{SchemaRef, SortOptions};
use async_trait::async_trait;
use delta_kernel::table_properties::{DataSkippingNumIndexedCols, TableProperties};
use pipe_framework::cluster::{self, ExternalSort, SortKey};
use pipe_framework::evolution::{SchemaChange, TypeRules, fill_null_types, plan_evolution};
use pipe_framework::operations::{
    OperationReport, OptimizeRequest, RestoreTarget, TableOperations, VacuumRequest,
};
use pipe_framework::parquet_options::WriterSettings;
use pipe_framework::{
    BuildContext, CommitInfo, Destination, DestinationFactory, Error, PrepareRequest, Result,
    RunContext, Sink, State, TableInfo, WriteMode, WriteSpec,
};

pub use config::{DeltaConfig, MaintenanceConfig};
pub use error::DeltaError;
pub use sink::DeltaSink;
pub use table::Location;

use commit::Target;
use merge::MergeState;
use ops::Maintenance;
use predicate::Predicate;
use sink::SinkParts;
use stats::StatsSpec;
use store::{RecordingStore, Written};
use write::ParallelWriter;

/// Columns with statistics when the table does not say (Delta's default).
const DEFAULT_INDEXED_COLUMNS: u64 = 32;

/// Registers as `type = "delta"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeltaFactory;

impl DestinationFactory for DeltaFactory {
    type Config = DeltaConfig;

    fn description(&self) -> &'static str {
        "Delta Lake table (local or object store); one version per run"
    }

    fn modes(&self) -> &'static [WriteMode] {
        &WriteMode::ALL
    }

    fn build(&self, config: DeltaConfig, _ctx: &BuildContext) -> Result<Arc<dyn Destination>> {
        Ok(Arc::new(DeltaDestination::new(config)?))
    }

    /// `location` is the table's path or URL (`/data/lake/orders`, `s3://lake/orders`);
    /// credentials come from the environment.
    fn locate(&self, location: &str) -> Result<Arc<dyn Destination>> {
        let config: DeltaConfig =
            serde_json::from_value(serde_json::json!({ "path": location }))
                .map_err(|e| Error::internal(format!("default Delta settings: {e}")))?;
        Ok(Arc::new(DeltaDestination::new(config)?))
    }
}

/// A Delta table as a destination.
#[derive(Debug)]
pub struct DeltaDestination {
    config: DeltaConfig,
    location: Location,
    options: WriterSettings,
}

impl DeltaDestination {
    /// Validate `config`; opens nothing.
    pub fn new(config: DeltaConfig) -> Result<Self> {
        let options: HashMap<String, String> = config
            .storage_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let location = Location::new(&config.path, options)?;
        let options = WriterSettings::resolve(
            config.target_file_size_mb,
            config.row_group_rows,
            config.writers,
            &config.compression,
        )?;
        Ok(Self {
            config,
            location,
            options,
        })
    }

    /// The key a run's rows are sorted by before they are written (`None`: written as they
    /// come): the partition columns, then `cluster_by`, else a merge's keys
    /// ([`cluster::resolve`]).
    fn cluster_key(
        &self,
        arrow: &SchemaRef,
        partition_columns: &[String],
        write: &WriteSpec,
    ) -> error::Result<Option<Arc<SortKey>>> {
        let names = cluster::resolve(
            self.config.cluster_by.as_deref(),
            write.mode,
            &write.merge_keys,
            &[],
        );
        if names.is_empty() {
            return Ok(None);
        }
        let mut key: Vec<(usize, SortOptions)> = Vec::new();
        for name in partition_columns.iter().chain(&names) {
            let i = pipe_framework::columns::find(arrow, name).ok_or_else(|| {
                DeltaError::Config(format!("cluster_by column `{name}` is not in the table"))
            })?;
            if !key.iter().any(|(k, _)| *k == i) {
                key.push((i, SortOptions::default()));
            }
        }
        Ok(Some(SortKey::new(arrow, &key)?))
    }

    async fn prepare_sink(&self, req: PrepareRequest) -> error::Result<DeltaSink> {
        let mode = req.write.mode;
        if self.config.replace_where.is_some() && mode != WriteMode::Replace {
            return Err(DeltaError::Config(format!(
                "replace_where only applies to mode = \"replace\" (this pipeline's mode is \
                 \"{mode}\")"
            )));
        }
        let (target, arrow, partition_columns, seq, stats) = match self.location.open().await? {
            None => self.plan_new(&schema::storable_schema(&req.source_schema)?, mode)?,
            Some(table) => self.plan_existing(table, &req).await?,
        };
        let merge_keys = if mode == WriteMode::Merge {
            if req.write.merge_keys.is_empty() {
                return Err(DeltaError::Config(
                    "mode = \"merge\" needs merge_keys".into(),
                ));
            }
            schema::resolve(&req.source_schema, &req.write.merge_keys, "merge key")?;
            schema::resolve(&arrow, &req.write.merge_keys, "merge key")?
        } else {
            Vec::new()
        };
        let replace_where = match &self.config.replace_where {
            Some(sql) => Some(Predicate::parse(sql, &arrow)?),
            None => None,
        };
        let handle = match &target {
            Target::New { table, .. } | Target::Existing { table, .. } => table.log_store(),
        };
        let written = Written::default();
        let store: deltalake::logstore::ObjectStoreRef = Arc::new(RecordingStore::new(
            handle.object_store(None),
            written.clone(),
        ));
        let cluster = self.cluster_key(&arrow, &partition_columns, &req.write)?;
        let segment = cluster
            .as_ref()
            .map(|_| cluster::segment_bytes(self.options.target_file_size));
        let writer =
            ParallelWriter::new(store.clone(), arrow.clone(), stats, &self.options, segment);
        let merge = if mode == WriteMode::Merge {
            Some(MergeState::new(
                arrow.clone(),
                merge_keys.clone(),
                cluster.clone(),
            )?)
        } else {
            None
        };
        let sorter = match (&merge, cluster) {
            (None, Some(key)) => Some(ExternalSort::new(arrow.clone(), key, cluster::SORT_MEMORY)),
            _ => None,
        };
        let parts = SinkParts {
            schema: arrow.clone(),
            partition_columns,
            store,
            written,
            mode,
            merge,
            replace_where,
            merge_keys: merge_keys
                .iter()
                .map(|&i| arrow.field(i).name().clone())
                .collect(),
            seq,
            retries: self.config.commit_retries,
            location: self.location.clone(),
            maintenance: Maintenance {
                location: self.location.clone(),
                config: self.config.maintenance.clone(),
                target_size: self.options.target_file_size,
            },
        };
        Ok(DeltaSink::new(parts, target, writer, sorter))
    }

    /// No table yet: the first commit creates it with the source's schema.
    fn plan_new(&self, source: &arrow_schema::Schema, mode: WriteMode) -> error::Result<Planned> {
        let kernel = schema::to_kernel(source)?;
        let arrow = schema::to_arrow(&kernel)?;
        let partition_columns =
            schema::resolve(&arrow, &self.config.partition_by, "partition column")?
                .into_iter()
                .map(|i| {
                    let field = arrow.field(i);
                    if matches!(
                        field.data_type(),
                        DataType::Struct(_) | DataType::List(_) | DataType::Map(_, _)
                    ) {
                        return Err(DeltaError::Config(format!(
                            "partition column `{}` is nested ({}); partition by a primitive column",
                            field.name(),
                            field.data_type()
                        )));
                    }
                    Ok(field.name().clone())
                })
                .collect::<error::Result<Vec<_>>>()?;
        if partition_columns.len() == arrow.fields().len() {
            return Err(DeltaError::Config(
                "partition_by names every column: a Delta table needs at least one data column"
                    .into(),
            ));
        }
        let append_only = self
            .config
            .properties
            .get("delta.appendOnly")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        refuse_append_only(append_only, mode)?;
        self.location.create_local_dir()?;
        let target = Target::New {
            table: Box::new(self.location.handle()?),
            schema: kernel,
            partition_columns: partition_columns.clone(),
            properties: self.config.properties.clone().into_iter().collect(),
        };
        let stats = stats_spec(
            &TableProperties::from(self.config.properties.iter()),
            &partition_columns,
        );
        Ok((target, arrow, partition_columns, 1, stats))
    }

    /// An existing table: evolve its schema under the policy, continue its run sequence.
    async fn plan_existing(
        &self,
        table: deltalake::DeltaTable,
        req: &PrepareRequest,
    ) -> error::Result<Planned> {
        let snapshot = table
            .snapshot()
            .map_err(error::delta("reading the table state"))?;
        if let Some(mode) = snapshot
            .metadata()
            .configuration()
            .get("delta.columnMapping.mode")
            .filter(|m| !m.eq_ignore_ascii_case("none"))
        {
            return Err(DeltaError::Config(format!(
                "the table uses column mapping (delta.columnMapping.mode = {mode}), which this \
                 release cannot write; nothing was written"
            )));
        }
        let current = schema::to_arrow(snapshot.schema().as_ref())?;
        let source = schema::storable_schema(&fill_null_types(&req.source_schema, &current))?;
        let source = &source;
        let same = |a: &DataType, b: &DataType| schema::same_delta_type(a, b);
        let rules = TypeRules {
            same_type: &same,
            case_insensitive_names: true,
        };
        let plan = plan_evolution(&current, source, req.evolution, rules)?;
        if let Some(SchemaChange::WidenColumn { name, from, to }) = plan
            .changes
            .iter()
            .find(|c| matches!(c, SchemaChange::WidenColumn { .. }))
        {
            return Err(DeltaError::Config(format!(
                "column `{name}` is {from} in the table but the source has {to}: Delta tables \
                 cannot widen a column's type (no typeWidening support); nothing was written"
            )));
        }
        let evolved = if plan.changes.is_empty() {
            None
        } else {
            Some(schema::to_kernel(&plan.target)?)
        };
        let arrow = match &evolved {
            Some(k) => schema::to_arrow(k)?,
            None => current,
        };
        let properties = snapshot.snapshot().table_properties();
        refuse_append_only(properties.append_only == Some(true), req.write.mode)?;
        let partition_columns = snapshot.metadata().partition_columns().to_vec();
        let stats = stats_spec(properties, &partition_columns);
        let committed = table::committed_seq(&table, &req.ctx.pipeline)
            .await?
            .unwrap_or(0);
        let seq = committed + 1;
        let target = Target::Existing {
            table: Box::new(table),
            evolved,
        };
        Ok((target, arrow, partition_columns, seq, stats))
    }
}

/// What planning a run decides: where it commits, the table's Arrow schema, partition
/// columns, the run's sequence number and which columns get statistics.
type Planned = (Target, arrow_schema::SchemaRef, Vec<String>, i64, StatsSpec);

/// Which columns get statistics, as the table's properties say.
fn stats_spec(properties: &TableProperties, partition_columns: &[String]) -> StatsSpec {
    StatsSpec {
        indexed: properties.data_skipping_num_indexed_cols.unwrap_or(
            DataSkippingNumIndexedCols::NumColumns(DEFAULT_INDEXED_COLUMNS),
        ),
        columns: properties
            .data_skipping_stats_columns
            .as_ref()
            .map(|names| names.iter().map(ToString::to_string).collect()),
        partition_columns: partition_columns.to_vec(),
    }
}

fn refuse_append_only(append_only: bool, mode: WriteMode) -> error::Result<()> {
    if append_only && mode != WriteMode::Append {
        return Err(DeltaError::Config(format!(
            "the table is append-only (delta.appendOnly = true): mode = \"{mode}\" would remove \
             files; nothing was written"
        )));
    }
    Ok(())
}

#[async_trait]
impl Destination for DeltaDestination {
    fn describe(&self) -> String {
        format!("delta {}", self.config.path)
    }

    async fn check(&self) -> Result<()> {
        if let Some(dir) = self.location.local_dir()
            && !dir.exists()
        {
            // The first run creates the directory.
            return pipe_framework::probe::creatable(&dir.join("_delta_log"), "the Delta table");
        }
        self.location.open().await?;
        Ok(())
    }

    async fn committed_state(&self, ctx: &RunContext) -> Result<Option<State>> {
        Ok(Some(match self.location.open().await? {
            Some(table) => table::committed_state(&table, &ctx.pipeline).await?.0,
            None => State::new(),
        }))
    }

    fn operations(&self) -> Option<&dyn TableOperations> {
        Some(self)
    }

    async fn prepare(&self, request: PrepareRequest) -> Result<Box<dyn Sink>> {
        let sink = self.prepare_sink(request).await.map_err(Error::from)?;
        Ok(Box::new(sink))
    }
}

#[async_trait]
impl TableOperations for DeltaDestination {
    async fn history(&self, limit: Option<usize>) -> Result<Vec<CommitInfo>> {
        Ok(ops::history(&self.location, limit).await?)
    }

    async fn inspect(&self, at: Option<&str>) -> Result<Option<TableInfo>> {
        let version = at
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| Error::user(format!("`{v}` is not a Delta version")))
            })
            .transpose()?;
        Ok(ops::inspect(&self.location, version).await?)
    }

    async fn optimize(&self, request: &OptimizeRequest) -> Result<OperationReport> {
        let target = request
            .target_file_size
            .or(Some(self.options.target_file_size));
        Ok(ops::optimize(&self.location, &request.order_by, target, request.dry_run).await?)
    }

    async fn vacuum(&self, request: &VacuumRequest) -> Result<OperationReport> {
        let retain = (chrono::Utc::now() - request.older_than).max(chrono::Duration::zero());
        Ok(ops::vacuum(
            &self.location,
            retain,
            request.dry_run,
            request.enforce_retention,
        )
        .await?)
    }

    async fn restore(&self, to: &RestoreTarget) -> Result<OperationReport> {
        Ok(ops::restore(&self.location, to).await?)
    }
}
