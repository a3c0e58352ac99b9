//! Parquet (row group by row group) and Arrow IPC (file or stream), local or remote.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use arrow_array::RecordBatch;
use arrow_ipc::reader::{FileReader, StreamReader};
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::ChunkReader;

use crate::error::FileError;
use crate::location::{FileRef, Location};

const IPC_MAGIC: &[u8; 6] = b"ARROW1";

fn decode(file: &FileRef, e: impl std::fmt::Display) -> FileError {
    FileError::Decode {
        file: file.display.clone(),
        message: e.to_string(),
    }
}

/// A Parquet error: I/O below the decoder (disk, network) is external; the rest is the file.
fn parquet_err(file: &FileRef, e: parquet::errors::ParquetError) -> FileError {
    match e {
        parquet::errors::ParquetError::External(source) => io(file, std::io::Error::other(source)),
        other => decode(file, other),
    }
}

/// An Arrow IPC error: I/O is external; the rest is the file.
fn arrow_err(file: &FileRef, e: arrow_schema::ArrowError) -> FileError {
    match e {
        arrow_schema::ArrowError::IoError(_, source) => io(file, source),
        arrow_schema::ArrowError::ExternalError(source) => io(file, std::io::Error::other(source)),
        other => decode(file, other),
    }
}

fn io(file: &FileRef, source: std::io::Error) -> FileError {
    FileError::Io {
        file: file.display.clone(),
        source,
    }
}

/// The Arrow schema stored in a Parquet or IPC file.
pub(crate) fn schema(file: &FileRef, parquet: bool) -> Result<SchemaRef, FileError> {
    let mut schema = None;
    let mut capture = |s: SchemaRef| {
        schema = Some(s);
        false
    };
    if parquet {
        read_parquet(file, 1, true, &mut |b| capture(b.schema()))?;
    } else {
        read_ipc(file, true, &mut |b| capture(b.schema()))?;
    }
    schema.ok_or_else(|| decode(file, "the file has no schema"))
}

/// Stream every batch of a Parquet file. With `schema_only`, emits one empty batch carrying
/// the schema and reads no data.
pub(crate) fn read_parquet(
    file: &FileRef,
    batch_rows: usize,
    schema_only: bool,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), FileError> {
    match &file.location {
        Location::Local(path) => {
            let f = File::open(path).map_err(|e| io(file, e))?;
            parquet_from(f, file, batch_rows, schema_only, emit)
        }
        Location::Remote(remote) => {
            parquet_from(remote.clone(), file, batch_rows, schema_only, emit)
        }
    }
}

fn parquet_from<R: ChunkReader + 'static>(
    reader: R,
    file: &FileRef,
    batch_rows: usize,
    schema_only: bool,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), FileError> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(reader).map_err(|e| parquet_err(file, e))?;
    if schema_only {
        emit(RecordBatch::new_empty(builder.schema().clone()));
        return Ok(());
    }
    let batches = builder
        .with_batch_size(batch_rows.max(1))
        .build()
        .map_err(|e| parquet_err(file, e))?;
    for batch in batches {
        if !emit(batch.map_err(|e| arrow_err(file, e))?) {
            break;
        }
    }
    Ok(())
}

/// Stream every batch of an Arrow IPC file or stream (told apart by the file magic).
pub(crate) fn read_ipc(
    file: &FileRef,
    schema_only: bool,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), FileError> {
    match &file.location {
        Location::Local(path) => {
            let f = File::open(path).map_err(|e| io(file, e))?;
            ipc_from(
                BufReader::with_capacity(1 << 20, f),
                file,
                schema_only,
                emit,
            )
        }
        Location::Remote(remote) => ipc_from(remote.reader(0), file, schema_only, emit),
    }
}

fn ipc_from<R: Read + Seek>(
    mut reader: R,
    file: &FileRef,
    schema_only: bool,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), FileError> {
    let mut magic = [0u8; 6];
    let is_file = file.size >= 12 && reader.read_exact(&mut magic).is_ok() && &magic == IPC_MAGIC;
    reader.seek(SeekFrom::Start(0)).map_err(|e| io(file, e))?;
    let mut pump =
        |schema: SchemaRef,
         batches: &mut dyn Iterator<Item = Result<RecordBatch, arrow_schema::ArrowError>>|
         -> Result<(), FileError> {
            if schema_only {
                emit(RecordBatch::new_empty(schema));
                return Ok(());
            }
            for batch in batches {
                if !emit(batch.map_err(|e| arrow_err(file, e))?) {
                    break;
                }
            }
            Ok(())
        };
    if is_file {
        let mut r = FileReader::try_new(reader, None).map_err(|e| arrow_err(file, e))?;
        let schema = r.schema();
        pump(schema, &mut r)
    } else {
        let mut r = StreamReader::try_new(reader, None).map_err(|e| arrow_err(file, e))?;
        let schema = r.schema();
        pump(schema, &mut r)
    }
}
