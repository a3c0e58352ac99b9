//! The file [`Source`]: resolve files, settle one schema, stream every file in order.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use pipe_framework::evolution::{Aligner, is_lossless_widening};
use pipe_framework::types::parse_type;
use pipe_framework::{BatchSender, Error, ExistingFile, Result, RunContext, Source, SourceReport};
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
    /// `compression` from the config; otherwise each file's extension decides.
    compression: Option<Compression>,
    dialect: Option<Dialect>,
    /// Columns whose type the user declared (`columns`/`column_types`): later Parquet/IPC
    /// files are cast to them as asked; other columns must match the first file losslessly.
    declared: Vec<String>,
    /// `columns` was given: Parquet/IPC columns are selected by name, others ignored.
    selects: bool,
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
    let (guessed, _) = Format::from_name(&first.display);
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
    if let Some(once) = files.iter().find(|f| !f.rereadable) {
        let columnar = matches!(format, Format::Parquet | Format::Ipc);
        if columnar || config.columns.is_none() {
            return Err(FileError::Config(format!(
                "{} is a pipe or device: it can be read only once, front to back, so it must be \
                 CSV or NDJSON with an explicit `columns` schema (no inference)",
                once.display
            ))
            .into());
        }
    }
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
                    open_stream(first, config.compression)?,
                    config.infer_rows,
                    &first.display,
                )?
            }
            Format::Ndjson => json::infer(
                open_stream(first, config.compression)?,
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
    let declared = match &config.columns {
        Some(columns) => columns.iter().map(|c| c.name.clone()).collect(),
        None => config.column_types.keys().cloned().collect(),
    };
    Ok(Plan {
        files,
        format,
        compression: config.compression,
        dialect,
        declared,
        selects: config.columns.is_some(),
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

/// A buffered, decompressed byte stream of a CSV/NDJSON file; compression from `configured`
/// or else the file's extension.
fn open_stream(
    file: &FileRef,
    configured: Option<Compression>,
) -> Result<Box<dyn BufRead + Send>, FileError> {
    let compression = configured.unwrap_or_else(|| Format::from_name(&file.display).1);
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
        check_columns(&native, plan, file)?;
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
            // Files of an inferred schema must share the first file's header.
            let check_header = !plan.selects;
            dialect.read(
                stream,
                &plan.schema,
                batch_rows,
                &file.display,
                check_header,
                &mut emit,
            )?;
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

/// Each Parquet/IPC file must have exactly the planned columns, each of the planned type or one
/// that widens to it losslessly (unless the user declared the column's type: then it is cast
/// as asked, and a value that does not convert is an error).
fn check_columns(native: &Schema, plan: &Plan, file: &FileRef) -> Result<(), FileError> {
    let fail = |message: String| FileError::Decode {
        file: file.display.clone(),
        message,
    };
    let names = |fields: Vec<&str>| fields.join(", ");
    let missing: Vec<&str> = plan
        .schema
        .fields()
        .iter()
        .filter(|f| native.field_with_name(f.name()).is_err())
        .map(|f| f.name().as_str())
        .collect();
    if !missing.is_empty() {
        return Err(fail(format!(
            "missing column(s) {} that the first file has",
            names(missing)
        )));
    }
    let extra: Vec<&str> = native
        .fields()
        .iter()
        .filter(|f| plan.schema.field_with_name(f.name()).is_err())
        .map(|f| f.name().as_str())
        .collect();
    if !extra.is_empty() && !plan.selects {
        return Err(fail(format!(
            "column(s) {} that the first file does not have; read files of one schema, or \
             declare `columns`",
            names(extra)
        )));
    }
    for planned in plan.schema.fields() {
        let Ok(actual) = native.field_with_name(planned.name()) else {
            continue;
        };
        let (from, to) = (actual.data_type(), planned.data_type());
        if !plan.declared.contains(planned.name()) && !is_lossless_widening(from, to) {
            return Err(fail(format!(
                "column `{}` is {from} here but {to} in the first file",
                planned.name()
            )));
        }
    }
    Ok(())
}

#[async_trait]
impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file {}", pipe_framework::secret::redact(&self.config.path))
    }

    async fn schema(&self) -> Result<SchemaRef> {
        Ok(self.plan().await?.schema.clone())
    }

    /// Parquet files only (what table formats reference); `columns`/`column_types` would
    /// change the rows, which a registered file cannot.
    async fn existing_files(&self) -> Result<Option<Vec<ExistingFile>>> {
        let plan = self.plan().await?;
        if plan.format != Format::Parquet {
            return Err(FileError::Config(format!(
                "mode = \"register\" adds Parquet files to a table; {} is {}",
                plan.files[0].display,
                plan.format.as_str()
            ))
            .into());
        }
        if self.config.columns.is_some() || !self.config.column_types.is_empty() {
            return Err(FileError::Config(
                "mode = \"register\" adds files as they are, so `columns` and `column_types` \
                 (which convert rows) cannot apply; remove them"
                    .into(),
            )
            .into());
        }
        plan.files
            .iter()
            .map(|f| {
                Ok(ExistingFile {
                    location: f.uri()?,
                    size: f.size,
                    format: "parquet".into(),
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    async fn read(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        let plan = self.plan().await?;
        let files = plan.files.clone();
        read_files(plan, files, self.config.batch_rows, ctx, out).await
    }

    async fn read_files(
        &self,
        ctx: &RunContext,
        wanted: &[ExistingFile],
        out: BatchSender,
    ) -> Result<SourceReport> {
        let plan = self.plan().await?;
        let wanted: std::collections::HashSet<&str> =
            wanted.iter().map(|f| f.location.as_str()).collect();
        let mut files = Vec::new();
        for file in &plan.files {
            if wanted.contains(file.uri()?.as_str()) {
                files.push(file.clone());
            }
        }
        read_files(plan, files, self.config.batch_rows, ctx, out).await
    }
}

/// Read `files` (of `plan`) in order into `out`, on a blocking thread.
async fn read_files(
    plan: Arc<Plan>,
    files: Vec<FileRef>,
    batch_rows: usize,
    ctx: &RunContext,
    out: BatchSender,
) -> Result<SourceReport> {
    let cancel = ctx.cancel.clone();
    tokio::task::spawn_blocking(move || {
        let mut report = SourceReport::default();
        for file in &files {
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
