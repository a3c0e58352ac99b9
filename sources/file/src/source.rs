//! The file [`Source`]: resolve files, settle one schema, stream every file in order.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use pipe_framework::evolution::Aligner;
use pipe_framework::types::parse_type;
use pipe_framework::{BatchSender, Error, Result, RunContext, Source, SourceReport};
use tokio::sync::OnceCell;
use tracing::{debug, info};

use crate::columnar;
use crate::config::{Compression, FileSourceConfig, Format};
use crate::csv::Dialect;
use crate::error::FileError;
use crate::json;
use crate::location::{FileRef, Location, resolve};

/// Reads files; see [`FileSourceConfig`].
#[derive(Debug)]
pub struct FileSource {
    config: FileSourceConfig,
    plan: OnceCell<Arc<Plan>>,
}

/// Files, their format and the schema, settled once per run.
#[derive(Debug)]
struct Plan {
    files: Vec<FileRef>,
    format: Format,
    compression: Compression,
    dialect: Option<Dialect>,
    schema: SchemaRef,
}

impl FileSource {
    /// A source for `config`; nothing is opened until [`Source::schema`].
    pub fn new(config: FileSourceConfig) -> Result<Self> {
        if config.batch_rows == 0 {
            return Err(FileError::Config("`batch_rows` must be at least 1".into()).into());
        }
        if config.columns.is_some() && !config.column_types.is_empty() {
            return Err(FileError::Config(
                "give either `columns` (the whole schema) or `column_types` (overrides), not both"
                    .into(),
            )
            .into());
        }
        Ok(Self {
            config,
            plan: OnceCell::new(),
        })
    }

    async fn plan(&self) -> Result<Arc<Plan>> {
        self.plan
            .get_or_try_init(|| async {
                let files = resolve(&self.config.path).await?;
                let config = self.config.clone();
                tokio::task::spawn_blocking(move || make_plan(&config, files).map(Arc::new))
                    .await
                    .map_err(|e| Error::internal(format!("schema task failed: {e}")))?
            })
            .await
            .cloned()
    }
}

fn make_plan(config: &FileSourceConfig, files: Vec<FileRef>) -> Result<Plan> {
    let first = &files[0];
    let (guessed, guessed_compression) = Format::from_name(&first.display);
    let format = config
        .format
        .or(guessed)
        .ok_or_else(|| FileError::UnknownFormat(first.display.clone()))?;
    if config.format.is_none()
        && let Some(other) = files
            .iter()
            .find(|f| Format::from_name(&f.display).0 != Some(format))
    {
        return Err(FileError::Config(format!(
            "{} is not {} like {}; set `format` or narrow `path`",
            other.display,
            format.as_str(),
            first.display
        ))
        .into());
    }
    let compression = config.compression.unwrap_or(guessed_compression);
    let dialect = match format {
        Format::Csv => {
            let tsv = first.display.to_ascii_lowercase().contains(".tsv");
            Some(Dialect::new(&config.csv, tsv)?)
        }
        _ => None,
    };
    let schema = if let Some(columns) = &config.columns {
        let fields = columns
            .iter()
            .map(|c| {
                let dt = parse_type(&c.data_type)
                    .map_err(|e| e.context(format!("`columns`: column `{}`", c.name)))?;
                Ok(Field::new(&c.name, dt, c.nullable))
            })
            .collect::<Result<Vec<_>>>()?;
        Arc::new(Schema::new(fields))
    } else {
        let inferred = match format {
            Format::Csv => {
                let dialect = dialect
                    .as_ref()
                    .ok_or_else(|| Error::internal("csv dialect"))?;
                dialect.infer(
                    open_stream(first, compression)?,
                    config.infer_rows,
                    &first.display,
                )?
            }
            Format::Ndjson => json::infer(
                open_stream(first, compression)?,
                config.infer_rows,
                &first.display,
            )?,
            Format::Parquet => columnar::schema(first, true)?.as_ref().clone(),
            Format::Ipc => columnar::schema(first, false)?.as_ref().clone(),
        };
        Arc::new(override_types(inferred, config)?)
    };
    info!(
        files = files.len(),
        format = format.as_str(),
        columns = schema.fields().len(),
        "file source planned"
    );
    Ok(Plan {
        files,
        format,
        compression,
        dialect,
        schema,
    })
}

fn override_types(schema: Schema, config: &FileSourceConfig) -> Result<Schema> {
    for name in config.column_types.keys() {
        if schema.field_with_name(name).is_err() {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(FileError::Config(format!(
                "`column_types` names `{name}`, which the data does not have; columns: {}",
                names.join(", ")
            ))
            .into());
        }
    }
    let fields = schema
        .fields()
        .iter()
        .map(|f| match config.column_types.get(f.name()) {
            Some(t) => parse_type(t)
                .map(|dt| f.as_ref().clone().with_data_type(dt))
                .map_err(|e| e.context(format!("`column_types.{}`", f.name()))),
            None => Ok(f.as_ref().clone()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Schema::new(fields))
}

/// A buffered, decompressed byte stream of a CSV/NDJSON file.
fn open_stream(
    file: &FileRef,
    compression: Compression,
) -> Result<Box<dyn BufRead + Send>, FileError> {
    const BUF: usize = 1 << 20;
    let raw: Box<dyn Read + Send> = match &file.location {
        Location::Local(path) => Box::new(File::open(path).map_err(|source| FileError::Io {
            file: file.display.clone(),
            source,
        })?),
        Location::Remote(remote) => Box::new(remote.reader(0)),
    };
    Ok(match compression {
        Compression::None => Box::new(BufReader::with_capacity(BUF, raw)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUF,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(BUF, raw)),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            BUF,
            zstd::Decoder::new(raw).map_err(|source| FileError::Io {
                file: file.display.clone(),
                source,
            })?,
        )),
    })
}

/// Read one file, sending batches of `plan.schema`; returns false if the run stopped.
fn read_file(plan: &Plan, file: &FileRef, batch_rows: usize, out: &BatchSender) -> Result<bool> {
    let columnar = matches!(plan.format, Format::Parquet | Format::Ipc);
    let aligner = if columnar {
        let native = columnar::schema(file, plan.format == Format::Parquet)?;
        check_columns(&native, &plan.schema, file)?;
        Some(
            Aligner::new(&native, plan.schema.clone())
                .map_err(|e| e.context(file.display.clone()))?,
        )
    } else {
        None
    };
    let mut failed: Option<Error> = None;
    let mut emit = |batch: RecordBatch| -> bool {
        let aligned = match &aligner {
            Some(a) => a.align(batch).map_err(|e| e.context(file.display.clone())),
            None => Ok(batch),
        };
        match aligned.and_then(|b| out.blocking_send(b)) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    };
    match plan.format {
        Format::Csv => {
            let dialect = plan
                .dialect
                .as_ref()
                .ok_or_else(|| Error::internal("csv dialect"))?;
            let stream = open_stream(file, plan.compression)?;
            dialect.read(stream, &plan.schema, batch_rows, &file.display, &mut emit)?;
        }
        Format::Ndjson => {
            let stream = open_stream(file, plan.compression)?;
            json::read(stream, &plan.schema, batch_rows, &file.display, &mut emit)?;
        }
        Format::Parquet => columnar::read_parquet(file, batch_rows, false, &mut emit)?,
        Format::Ipc => columnar::read_ipc(file, false, &mut emit)?,
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(!out.is_closed()),
    }
}

/// Every column of the planned schema must be in each file, and nothing more.
fn check_columns(native: &Schema, planned: &Schema, file: &FileRef) -> Result<(), FileError> {
    let missing: Vec<&str> = planned
        .fields()
        .iter()
        .filter(|f| native.field_with_name(f.name()).is_err())
        .map(|f| f.name().as_str())
        .collect();
    if !missing.is_empty() {
        return Err(FileError::Decode {
            file: file.display.clone(),
            message: format!(
                "missing column(s) {} that the first file has",
                missing.join(", ")
            ),
        });
    }
    Ok(())
}

#[async_trait]
impl Source for FileSource {
    async fn schema(&self) -> Result<SchemaRef> {
        Ok(self.plan().await?.schema.clone())
    }

    async fn read(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        let plan = self.plan().await?;
        let batch_rows = self.config.batch_rows;
        let cancel = ctx.cancel.clone();
        tokio::task::spawn_blocking(move || {
            let mut report = SourceReport::default();
            for file in &plan.files {
                if cancel.is_cancelled() {
                    return Err(Error::cancelled("the run was cancelled"));
                }
                debug!(file = %file.display, bytes = file.size, "reading file");
                let more = read_file(&plan, file, batch_rows, &out)?;
                report.bytes_read += file.size;
                report.parts += 1;
                if !more {
                    return Err(Error::cancelled("the downstream stage stopped"));
                }
            }
            Ok(report)
        })
        .await
        .map_err(|e| Error::internal(format!("file reader thread failed: {e}")))?
    }
}
