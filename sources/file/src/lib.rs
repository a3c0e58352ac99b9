//! # pipe-source-file
//!
//! `type = "file"`: CSV, NDJSON, Parquet and Arrow IPC files from local disk or object
//! storage (S3, GCS, Azure, HTTP, `file://`), streamed as Arrow batches with bounded memory:
//! CSV/NDJSON through a buffered reader, Parquet row group by row group, IPC batch by batch.

mod columnar;
mod config;
mod csv;
mod error;
mod json;
mod location;
mod remote;
mod source;

use std::sync::Arc;

use pipe_framework::{BuildContext, Result, Source, SourceFactory};

pub use config::{ColumnSpec, Compression, CsvOptions, FileSourceConfig, Format};
pub use error::FileError;
pub use source::FileSource;

/// Registers as `type = "file"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileSourceFactory;

impl SourceFactory for FileSourceFactory {
    type Config = FileSourceConfig;

    fn description(&self) -> &'static str {
        "CSV, NDJSON, Parquet and Arrow IPC files; local paths, globs, directories, s3/gs/az/http URLs"
    }

    fn build(&self, config: FileSourceConfig, _ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(FileSource::new(config)?))
    }

    /// The pipeline's own options (column types, CSV dialect, batch size) with the sample as
    /// `path`; format and compression come from the sample's extension.
    fn sample(&self, own: Option<&toml::Table>, sample: &std::path::Path) -> Option<toml::Table> {
        let mut source = own.cloned().unwrap_or_default();
        source.remove("format");
        source.remove("compression");
        source.insert("type".into(), "file".into());
        source.insert("path".into(), sample.to_string_lossy().into_owned().into());
        Some(source)
    }
}
