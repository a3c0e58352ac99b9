//! # pipe-destination-files
//!
//! `type = "files"`: loads into a directory of Parquet, CSV or NDJSON files (local or object
//! store), optionally Hive-partitioned. `append` adds files with unique names; `replace`
//! replaces every file (or, with `replace_scope = "partitions"`, the partitions the run
//! wrote). A commit log under `_pipe/log/` records each run's files and the pipeline's
//! state, so incremental runs and exactly-once work as for the table formats. Publication
//! and what a reader can observe are described in [`local`] and [`remote`]; `merge` needs a
//! table format (Delta, Iceberg, DuckDB).

mod commit;
mod config;
mod encode;
mod local;
mod location;
mod log;
mod ops;
mod partition;
mod remote;
mod sink;
mod write;

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use pipe_framework::evolution::{TypeRules, fill_null_types, plan_evolution};
use pipe_framework::parquet_options::WriterSettings;
use pipe_framework::{
    BuildContext, Destination, DestinationFactory, Error, PrepareRequest, Result, RunContext, Sink,
    State, WriteMode,
};

pub use config::{CsvOptions, FilesConfig, Format, ReplaceScope};
pub use sink::FilesSink;

use commit::Plan;
use encode::{Encoding, TextCompression};
use location::Location;
use partition::Splitter;
use write::{Setup, Writers};

/// Registers as `type = "files"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FilesFactory;

impl DestinationFactory for FilesFactory {
    type Config = FilesConfig;

    fn description(&self) -> &'static str {
        "Parquet, CSV or NDJSON files (local or object store), Hive-partitioned; one commit per run"
    }

    fn modes(&self) -> &'static [WriteMode] {
        &[WriteMode::Append, WriteMode::Replace]
    }

    fn mode_hint(&self, mode: WriteMode) -> Option<&'static str> {
        (mode == WriteMode::Merge).then_some(
            "plain files cannot update rows in place; load into a table format (type = \
             \"delta\", \"iceberg\" or \"duckdb\") to merge",
        )
    }

    fn build(&self, config: FilesConfig, _ctx: &BuildContext) -> Result<Arc<dyn Destination>> {
        Ok(Arc::new(FilesDestination::new(config)?))
    }

    /// `location` is the directory's path or URL; credentials come from the environment.
    fn locate(&self, location: &str) -> Result<Arc<dyn Destination>> {
        let config: FilesConfig =
            serde_json::from_value(serde_json::json!({ "path": location }))
                .map_err(|e| Error::internal(format!("default file destination settings: {e}")))?;
        Ok(Arc::new(FilesDestination::new(config)?))
    }
}

/// A directory of data files as a destination.
#[derive(Debug)]
pub struct FilesDestination {
    config: FilesConfig,
    location: Location,
    settings: WriterSettings,
    text_compression: TextCompression,
}

impl FilesDestination {
    /// Validate `config`; opens nothing.
    pub fn new(config: FilesConfig) -> Result<Self> {
        let location = Location::new(&config.path, &config.storage_options)?;
        let (parquet_compression, text_compression) = match config.format {
            Format::Parquet => (
                config.compression.as_deref().unwrap_or("zstd"),
                TextCompression::None,
            ),
            Format::Csv | Format::Ndjson => (
                "none",
                TextCompression::parse(config.compression.as_deref())?,
            ),
        };
        let settings = WriterSettings::resolve(
            config.target_file_size_mb,
            config.row_group_rows,
            config.writers,
            parquet_compression,
        )?;
        // publication copies each file server-side; S3's CopyObject takes at most 5 GiB
        if location.local.is_none() && config.target_file_size_mb > 4096 {
            return Err(Error::user(format!(
                "target_file_size_mb = {}: on an object store files are published by a \
                 server-side copy, which S3 limits to 5 GiB; use at most 4096",
                config.target_file_size_mb
            )));
        }
        if config.format == Format::Csv && !config.csv.delimiter.is_ascii() {
            return Err(Error::user("csv.delimiter must be one ASCII character"));
        }
        Ok(Self {
            config,
            location,
            settings,
            text_compression,
        })
    }

    fn encoding(&self) -> Encoding {
        match self.config.format {
            Format::Parquet => Encoding::Parquet(Box::new(self.settings.properties(&[]))),
            Format::Csv => Encoding::Csv(self.config.csv.clone(), self.text_compression),
            Format::Ndjson => Encoding::Ndjson(self.text_compression),
        }
    }

    /// The table's schema for this run, its partition columns and its format.
    fn plan_schema(
        &self,
        req: &PrepareRequest,
        history: &log::History,
    ) -> Result<(SchemaRef, Vec<String>)> {
        let Some(last) = history.last() else {
            return Ok((
                storable(&req.source_schema),
                self.config.partition_by.clone(),
            ));
        };
        let whole_replace = req.write.mode == WriteMode::Replace
            && self.config.replace_scope == ReplaceScope::Table;
        if last.format != self.config.format.as_str() && !whole_replace {
            return Err(Error::user(format!(
                "{} holds {} files, but this pipeline writes {}; a replace of the whole \
                 directory may change the format",
                self.location.display,
                last.format,
                self.config.format.as_str()
            )));
        }
        if last.partition_by != self.config.partition_by {
            tracing::warn!(
                kept = ?last.partition_by,
                configured = ?self.config.partition_by,
                "the directory is partitioned as its first run chose; partition_by is ignored"
            );
        }
        let table = &last.schema;
        let source = fill_null_types(&req.source_schema, table);
        let same = |a: &DataType, b: &DataType| a == b;
        let rules = TypeRules {
            same_type: &same,
            case_insensitive_names: false,
        };
        let plan = plan_evolution(table, &source, req.evolution, rules)?;
        Ok((plan.target, last.partition_by.clone()))
    }

    async fn prepare_sink(&self, req: PrepareRequest) -> Result<FilesSink> {
        let history = self.location.log().read().await?;
        let (schema, partition_by) = self.plan_schema(&req, &history)?;
        encode::check_schema(self.config.format, &schema)?;
        let partitions = partition::resolve(&schema, &partition_by)?;
        if !partitions.is_empty() && partitions.len() == schema.fields().len() {
            return Err(Error::user(
                "every column is a partition column: the files would hold nothing",
            ));
        }
        let splitter = Splitter::new(&schema, &partitions);
        let file_schema = Arc::new(splitter.file_schema(&schema)?);
        let run_id = req.ctx.run_id.clone();
        let staged = match &self.location.local {
            Some(dirs) => Some(local::stage(dirs, &run_id).await?),
            None => None,
        };
        let staging = self.location.staging(&run_id)?;
        let setup = Setup {
            store: Arc::clone(&self.location.store),
            staging: staging.clone(),
            file_schema,
            splitter,
            encoding: self.encoding(),
            settings: self.settings.clone(),
            max_open_files: self.config.max_open_files,
            stem: format!("part-{}", run_id.replace('-', "")),
            staged_suffix: self.location.staged_suffix(),
        };
        let plan = Plan {
            ctx: req.ctx.clone(),
            mode: req.write.mode,
            scope: self.config.replace_scope,
            format: self.config.format.as_str().to_string(),
            schema: schema.clone(),
            partition_by,
            added: Vec::new(),
            changes: State::new(),
        };
        Ok(FilesSink {
            location: self.location.clone(),
            schema,
            writers: Writers::new(setup),
            plan,
            staging,
            _staged: staged,
            retries: self.config.commit_retries,
        })
    }
}

/// `schema` with columns of type `Null` (a column that was always empty) stored as strings.
fn storable(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Null => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Utf8)
                .with_nullable(true),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[async_trait]
impl Destination for FilesDestination {
    fn describe(&self) -> String {
        format!(
            "files {} ({})",
            self.location.display,
            self.config.format.as_str()
        )
    }

    async fn check(&self) -> Result<()> {
        match &self.location.local {
            Some(dirs) if dirs.root.exists() => {
                if !dirs.root.is_dir() {
                    return Err(Error::user(format!(
                        "{} exists and is not a directory",
                        dirs.root.display()
                    )));
                }
                pipe_framework::probe::creatable(&dirs.work.join("lock"), "work directory")
            }
            Some(dirs) => pipe_framework::probe::creatable(&dirs.root, "directory"),
            None => self.location.log().read().await.map(drop),
        }
    }

    async fn committed_state(&self, ctx: &RunContext) -> Result<Option<State>> {
        let history = self.location.log().read().await?;
        Ok(Some(
            history
                .last_of(&ctx.pipeline)
                .map(|e| e.state.clone())
                .unwrap_or_default(),
        ))
    }

    async fn prepare(&self, req: PrepareRequest) -> Result<Box<dyn Sink>> {
        Ok(Box::new(self.prepare_sink(req).await?))
    }

    fn operations(&self) -> Option<&dyn pipe_framework::operations::TableOperations> {
        Some(self)
    }
}
