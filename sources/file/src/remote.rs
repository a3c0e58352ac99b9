//! A blocking, seekable view of an object-store object: ranged GETs with read-ahead.
//!
//! The decoders (arrow-csv, arrow-json, arrow-ipc, parquet) are synchronous and run on a
//! blocking thread; this adapter lets them read remote objects the way they read local files,
//! holding at most one read-ahead chunk in memory.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::file::reader::{ChunkReader, Length};

/// Read-ahead per GET for sequential reads.
const CHUNK_BYTES: u64 = 8 * 1024 * 1024;

/// One remote object. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RemoteFile {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for RemoteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemoteFile({}/{}, {} bytes)",
            self.store, self.path, self.size
        )
    }
}

impl RemoteFile {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
        size: u64,
        handle: tokio::runtime::Handle,
    ) -> Self {
        Self {
            store,
            path,
            size,
            handle,
        }
    }

    /// Fetch a byte range. Must be called from a blocking thread, never from async code.
    fn fetch(&self, range: Range<u64>) -> io::Result<Bytes> {
        self.handle
            .block_on(self.store.get_range(&self.path, range))
            .map_err(io::Error::other)
    }

    /// A sequential reader starting at `start`.
    pub(crate) fn reader(&self, start: u64) -> RemoteReader {
        RemoteReader {
            file: self.clone(),
            pos: start,
            buf: Bytes::new(),
            buf_start: 0,
        }
    }
}

/// `Read + Seek` over a [`RemoteFile`].
#[derive(Debug)]
pub(crate) struct RemoteReader {
    file: RemoteFile,
    pos: u64,
    buf: Bytes,
    buf_start: u64,
}

impl Read for RemoteReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.file.size || out.is_empty() {
            return Ok(0);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos >= buf_end {
            let end = (self.pos + CHUNK_BYTES).min(self.file.size);
            self.buf = self.file.fetch(self.pos..end)?;
            self.buf_start = self.pos;
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let offset = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - offset);
        out[..n].copy_from_slice(&self.buf[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RemoteReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.file.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the object",
            )
        })?;
        Ok(self.pos)
    }
}

impl Length for RemoteFile {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for RemoteFile {
    type T = RemoteReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.reader(start))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let bytes = self.fetch(start..start + length as u64)?;
        if bytes.len() != length {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "expected {length} bytes at offset {start}, got {}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }
}
