//! `mode = "register"`: the source's existing files handed to the sink instead of rows.

use std::sync::Arc;

use tracing::info;

use super::{Collected, Parts, abort, cancellable, stream};
use crate::channel::BatchSender;
use crate::context::RunContext;
use crate::destination::Sink;
use crate::error::{Error, Result};
use crate::source::SourceReport;
use crate::summary::RunProgress;

/// `mode = "register"`: hand the source's files to the sink, which stages the ones the table
/// does not reference yet. No row is read — unless stages (a contract) check them: then the
/// new files' rows go through the stages into the sink, which drops them, and a stage that
/// rejected any row fails the run (a registered file cannot lose rows).
pub(super) async fn register(
    parts: Parts,
    ctx: &RunContext,
    progress: &Arc<RunProgress>,
    capacity: usize,
    collected: &mut Collected,
) -> Result<Box<dyn Sink>> {
    let Parts {
        source,
        source_schema,
        stages,
        aligner,
        mut sink,
    } = parts;
    let staged = async {
        let files = cancellable(ctx, source.existing_files())
            .await?
            .ok_or_else(|| {
                Error::user(format!(
                    "mode = \"register\" needs a source that lists existing files (the file \
                     source over Parquet), not {}",
                    source.describe()
                ))
            })?;
        let listed = files.len() as u64;
        let registration = cancellable(ctx, sink.register(files)).await?;
        Ok((listed, registration))
    }
    .await;
    let (listed, registration) = match staged {
        Ok(staged) => staged,
        Err(e) => {
            abort(sink).await;
            return Err(e);
        }
    };
    info!(
        stage = "load",
        files = listed,
        new = registration.files.len(),
        rows = registration.rows,
        "files staged for registration"
    );
    if stages.is_empty() || registration.files.is_empty() {
        let rows = usize::try_from(registration.rows).unwrap_or(usize::MAX);
        progress.add_read(rows);
        progress.add_written(rows);
        collected.source.parts = listed;
        return Ok(sink);
    }
    let checked = Parts {
        source: Arc::new(OnlyFiles {
            inner: source,
            files: registration.files,
        }),
        source_schema,
        stages,
        aligner,
        sink,
    };
    let sink = stream(checked, ctx, progress, capacity, collected).await?;
    if let Some(stage) = collected.stages.iter().find(|s| s.rows_rejected > 0) {
        abort(sink).await;
        return Err(Error::user(format!(
            "the {} stage rejected {} rows of the files to register; a registered file \
             cannot lose rows, so nothing was committed (fix the files, or use \
             on_violation = \"fail\" or \"warn\" with mode = \"register\")",
            stage.stage, stage.rows_rejected
        )));
    }
    Ok(sink)
}

/// A source reduced to some of its files (a register run's new files).
#[derive(Debug)]
struct OnlyFiles {
    inner: Arc<dyn crate::source::Source>,
    files: Vec<crate::source::ExistingFile>,
}

#[async_trait::async_trait]
impl crate::source::Source for OnlyFiles {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn schema(&self) -> Result<arrow_schema::SchemaRef> {
        self.inner.schema().await
    }

    async fn read(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        self.inner.read_files(ctx, &self.files, out).await
    }
}
