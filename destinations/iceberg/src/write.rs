//! Data files: Parquet written through the iceberg crate's writer stack (rolling at the target
//! size, split by partition with a fanout writer, column stats collected for the manifests).
//! Every location handed out is recorded, so a failed run deletes exactly its own files.

use arrow_array::RecordBatch;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, DataFileFormat, PartitionKey, PartitionSpecRef, SchemaRef};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator, LocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::unpartitioned_writer::UnpartitionedWriter;
use pipe_framework::parquet_options::WriterSettings;

use crate::error::{Result, ice};

#[cfg(test)]
mod tests {
    #[test]
    fn partition_values_are_escaped_as_java_escapes_them() {
        assert_eq!(super::url_encode("c#d"), "c%23d");
        assert_eq!(super::url_encode("a b~"), "a+b%7E");
        assert_eq!(super::url_encode("2024-01-02"), "2024-01-02");
        assert_eq!(super::url_encode("x/y=z?%"), "x%2Fy%3Dz%3F%25");
        assert_eq!(super::url_encode("é"), "%C3%A9");
    }
}

/// Every file location this run handed out (data files, manifests, manifest lists).
#[derive(Debug, Clone, Default)]
pub(crate) struct WrittenFiles(pipe_framework::parquet_options::WrittenFiles);

impl WrittenFiles {
    pub(crate) fn record(&self, location: &str) {
        self.0.record(location);
    }

    /// Delete every recorded file that exists; returns how many were deleted.
    pub(crate) async fn delete_all(&self, io: &FileIO) -> usize {
        self.0
            .delete_all(|file| async move {
                io.exists(&file).await.unwrap_or(false) && io.delete(&file).await.is_ok()
            })
            .await
    }

    /// Forget every file: they became part of the table.
    pub(crate) fn forget_all(&self) {
        self.0.forget_all();
    }
}

/// The table's location generator, recording what it hands out.
#[derive(Debug, Clone)]
struct Recording {
    inner: DefaultLocationGenerator,
    written: WrittenFiles,
}

impl LocationGenerator for Recording {
    fn generate_location(&self, partition_key: Option<&PartitionKey>, file_name: &str) -> String {
        let location = match partition_key.and_then(escaped_partition_path) {
            // `<data>/<escaped partition path>/<file>`: the unpartitioned location of a file
            // named `<path>/<file>`.
            Some(path) => self
                .inner
                .generate_location(None, &format!("{path}/{file_name}")),
            None => self.inner.generate_location(partition_key, file_name),
        };
        self.written.record(&location);
        location
    }
}

/// `name=value/…` with every name and value escaped as Java's `PartitionSpec.partitionToPath`
/// does (`URLEncoder`: `c#d` → `c%23d`, `a b` → `a+b`), so no path holds `#`, `?`, `%` or `/`
/// from the data, which readers would take for URL syntax (pyiceberg cuts a path at `#`).
/// `None` for an unpartitioned key.
fn escaped_partition_path(key: &PartitionKey) -> Option<String> {
    let spec = key.spec();
    if spec.is_unpartitioned() {
        return None;
    }
    let types = spec.partition_type(key.schema()).ok()?;
    let segments: Vec<String> = spec
        .fields()
        .iter()
        .zip(types.fields())
        .zip(key.data().iter())
        .map(|((field, ty), value)| {
            let value = field.transform.to_human_string(&ty.field_type, value);
            format!("{}={}", url_encode(&field.name), url_encode(&value))
        })
        .collect();
    Some(segments.join("/"))
}

/// `application/x-www-form-urlencoded` as Java's `URLEncoder` writes it: `A-Z a-z 0-9 . - * _`
/// kept, space as `+`, every other byte of the UTF-8 as `%XX`.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

type Builder = DataFileWriterBuilder<ParquetWriterBuilder, Recording, DefaultFileNameGenerator>;

enum Inner {
    Unpartitioned(Box<UnpartitionedWriter<Builder>>),
    Partitioned {
        splitter: Box<RecordBatchPartitionSplitter>,
        writer: Box<FanoutWriter<Builder>>,
    },
}

/// Writes one run's (or one rewrite's) rows into new data files of the table.
pub(crate) struct DataWriter {
    inner: Inner,
}

impl std::fmt::Debug for DataWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let partitioned = matches!(self.inner, Inner::Partitioned { .. });
        f.debug_struct("DataWriter")
            .field("partitioned", &partitioned)
            .finish()
    }
}

/// Where and how a run's data files are written: opens [`DataWriter`]s.
#[derive(Debug, Clone)]
pub(crate) struct DataFiles {
    pub io: FileIO,
    /// The table's data directory.
    pub data_location: String,
    /// The table schema the files are written with.
    pub schema: SchemaRef,
    /// The partition spec rows are split by.
    pub spec: PartitionSpecRef,
    /// File names start with this (then the writer's name and a counter).
    pub prefix: String,
    pub options: WriterSettings,
    /// Records every location handed out.
    pub written: WrittenFiles,
}

impl DataFiles {
    /// A writer of files named `<prefix>-<name>-<n>.parquet`, writing the top-level columns
    /// in `plain` without dictionary encoding (`parquet_options::plain_columns`).
    pub(crate) fn open(&self, name: &str, plain: &[String]) -> Result<DataWriter> {
        let props = self.options.properties(plain);
        let parquet = ParquetWriterBuilder::new(props, self.schema.clone());
        let location = Recording {
            inner: DefaultLocationGenerator::with_data_location(self.data_location.clone()),
            written: self.written.clone(),
        };
        let names = DefaultFileNameGenerator::new(
            format!("{}-{name}", self.prefix),
            None,
            DataFileFormat::Parquet,
        );
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            usize::try_from(self.options.target_file_size).unwrap_or(usize::MAX),
            self.io.clone(),
            location,
            names,
        );
        let builder = DataFileWriterBuilder::new(rolling);
        let inner = if self.spec.is_unpartitioned() {
            Inner::Unpartitioned(Box::new(UnpartitionedWriter::new(builder)))
        } else {
            let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
                self.schema.clone(),
                self.spec.clone(),
            )
            .map_err(ice("setting up the partition splitter"))?;
            Inner::Partitioned {
                splitter: Box::new(splitter),
                writer: Box::new(FanoutWriter::new(builder)),
            }
        };
        Ok(DataWriter { inner })
    }
}

impl DataWriter {
    /// Write one batch (of the table's write schema).
    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match &mut self.inner {
            Inner::Unpartitioned(w) => w.write(batch).await.map_err(ice("writing a data file")),
            Inner::Partitioned { splitter, writer } => {
                let parts = splitter
                    .split(&batch)
                    .map_err(ice("computing partition values"))?;
                for (key, part) in parts {
                    writer
                        .write(key, part)
                        .await
                        .map_err(ice("writing a data file"))?;
                }
                Ok(())
            }
        }
    }

    /// Finish every open file and return them.
    pub(crate) async fn close(self) -> Result<Vec<DataFile>> {
        match self.inner {
            Inner::Unpartitioned(w) => (*w).close().await,
            Inner::Partitioned { writer, .. } => (*writer).close().await,
        }
        .map_err(ice("finishing data files"))
    }
}
