//! A custom source, written the way a user writes one: a typed config, a [`Source`] and a
//! [`SourceFactory`], depending on `pipe-framework` only.
//!
//! `type = "sequence"` produces `rows` rows `(id, square, label)` starting at `start`, in
//! batches of `batch_rows`. Real sources (an internal API, a queue) have the same shape.

use std::sync::Arc;

use pipe_framework::deps::arrow_array::{Int64Array, RecordBatch, StringArray};
use pipe_framework::deps::arrow_schema::{DataType, Field, Schema, SchemaRef};
use pipe_framework::deps::async_trait::async_trait;
use pipe_framework::{
    BatchSender, BuildContext, Error, Result, RunContext, Source, SourceFactory, SourceReport,
};
use serde::Deserialize;

/// The `[source]` table of `type = "sequence"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceConfig {
    /// How many rows to produce.
    pub rows: u64,
    /// The first id (default 1).
    #[serde(default = "one")]
    pub start: i64,
    /// Rows per batch (default 10000).
    #[serde(default = "batch")]
    pub batch_rows: u64,
}

fn one() -> i64 {
    1
}

fn batch() -> u64 {
    10_000
}

/// The source.
#[derive(Debug)]
pub struct SequenceSource {
    config: SequenceConfig,
    schema: SchemaRef,
}

#[async_trait]
impl Source for SequenceSource {
    async fn schema(&self) -> Result<SchemaRef> {
        Ok(self.schema.clone())
    }

    async fn read(&self, ctx: &RunContext, out: BatchSender) -> Result<SourceReport> {
        let mut next = self.config.start;
        let end = self.config.start + self.config.rows as i64;
        let mut report = SourceReport::default();
        while next < end && !ctx.cancel.is_cancelled() {
            let upto = (next + self.config.batch_rows as i64).min(end);
            let ids: Vec<i64> = (next..upto).collect();
            let squares = ids
                .iter()
                .map(|i| {
                    i.checked_mul(*i)
                        .ok_or_else(|| Error::user(format!("{i}² overflows")))
                })
                .collect::<Result<Vec<_>>>()?;
            let labels: Vec<String> = ids.iter().map(|i| format!("row-{i}")).collect();
            let batch = RecordBatch::try_new(
                self.schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(Int64Array::from(squares)),
                    Arc::new(StringArray::from(labels)),
                ],
            )?;
            out.send(batch).await?;
            report.parts += 1;
            next = upto;
        }
        Ok(report)
    }
}

impl SequenceSource {
    /// The source for `config`.
    pub fn new(config: SequenceConfig) -> Result<Self> {
        if config.batch_rows == 0 {
            return Err(Error::user("`batch_rows` must be at least 1"));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("square", DataType::Int64, false),
            Field::new("label", DataType::Utf8, false),
        ]));
        Ok(Self { config, schema })
    }
}

/// Registers as `type = "sequence"`.
#[derive(Debug, Clone, Copy)]
pub struct SequenceFactory;

impl SourceFactory for SequenceFactory {
    type Config = SequenceConfig;

    fn description(&self) -> &'static str {
        "example custom source: a sequence of integers and their squares"
    }

    fn build(&self, config: SequenceConfig, _ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(SequenceSource::new(config)?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use pipe_framework::conformance::check_source;

    use super::*;

    /// The framework's source conformance check: schema, every batch, cancellation.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_sequence_conforms() {
        let config = SequenceConfig {
            rows: 100_000,
            start: 1,
            batch_rows: 1000,
        };
        let source: Arc<dyn Source> = Arc::new(SequenceSource::new(config).unwrap());
        let seen = check_source(source, || RunContext::new("test"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((seen.rows, seen.batches), (100_000, 100));
    }
}
