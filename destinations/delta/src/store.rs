//! The object store the run's data files go through: it records every path written, so a
//! failed or aborted run deletes exactly its own files (delta-rs' writers name files with a
//! random id the caller never sees until they are all closed).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Paths this run wrote, relative to the table root.
#[derive(Debug, Clone, Default)]
pub(crate) struct Written(pipe_framework::parquet_options::WrittenFiles);

impl Written {
    fn record(&self, path: &Path) {
        self.0.record(path.as_ref());
    }

    /// Delete every recorded file (those that exist); returns how many were deleted.
    pub(crate) async fn delete_all(&self, store: &dyn ObjectStore) -> usize {
        self.0
            .delete_all(|path| async move { store.delete(&Path::from(path)).await.is_ok() })
            .await
    }

    /// Forget every path: they became part of the table.
    pub(crate) fn forget_all(&self) {
        self.0.forget_all();
    }
}

/// Delegates to the table's store, recording the paths of every write.
#[derive(Debug)]
pub(crate) struct RecordingStore {
    inner: Arc<dyn ObjectStore>,
    written: Written,
}

impl RecordingStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, written: Written) -> Self {
        Self { inner, written }
    }
}

impl fmt::Display for RecordingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for RecordingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.written.record(location);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.written.record(location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.written.record(to);
        self.inner.copy_opts(from, to, options).await
    }
}
