//! A merge's incoming rows, staged while their keys are indexed (memory holds the keys and a
//! bounded sort buffer, not the rows), then handed back deduplicated: the last occurrence of
//! a key wins.
//!
//! - Clustered by the merge keys' own columns (the default for merges): the rows go into an
//!   [`ExternalSort`] as they arrive, so sorting runs while the source still reads, and equal
//!   keys end up next to each other in arrival order (the sort is stable): the last of each
//!   is kept. The rows are read and written once instead of spooled, read back and sorted.
//! - Otherwise: spooled to a local Arrow IPC file in arrival order and read back, each row
//!   kept if the index says it is its key's last occurrence.
//!
//! Both skip deduplication when every key came once.

use std::future::Future;
use std::sync::Arc;

use arrow_array::{BooleanArray, RecordBatch};
use arrow_buffer::BooleanBufferBuilder;
use arrow_row::{Row, Rows};
use arrow_schema::SchemaRef;
use arrow_select::filter::filter_record_batch;
use futures::{StreamExt, TryStreamExt};

use super::{KeyIndex, data};
use crate::cluster::{BatchStream, ExternalSort, Incoming, SORT_MEMORY, SortKey};
use crate::error::{Error, Result};
use crate::spool::BatchSpool;

/// A merge's incoming rows while they arrive, and their keys.
#[derive(Debug)]
pub struct StagedMerge {
    /// Shared once the merge finishes staging (rewrites read files on tasks of their own).
    keys: Arc<KeyIndex>,
    /// Where the rows go; taken by [`StagedMerge::finish`].
    staging: Option<Staging>,
    /// Rows staged.
    rows: u64,
}

#[derive(Debug)]
enum Staging {
    /// In arrival order, in a temporary file.
    Spool(Box<BatchSpool>),
    /// Sorted by the sorter's key (on the merge keys' columns) as they come.
    Sorted(ExternalSort),
}

impl StagedMerge {
    /// Stage rows of `schema` keyed on the columns at `key_columns`. `cluster`: the key the
    /// merge's output is clustered by; when it is on the merge keys' columns, the rows are
    /// sorted by it as they come, and handed back in its order.
    pub fn new(
        schema: SchemaRef,
        key_columns: Vec<usize>,
        cluster: Option<&Arc<SortKey>>,
    ) -> Result<Self> {
        let keys = KeyIndex::new(&schema, key_columns)?;
        let (keys, staging) = match cluster {
            Some(key) if same_columns(key.columns(), &keys.columns) => {
                let sort = ExternalSort::new(schema, Arc::clone(key), SORT_MEMORY);
                (keys.without_positions(), Staging::Sorted(sort))
            }
            _ => (
                keys,
                Staging::Spool(Box::new(BatchSpool::new(schema, "merge")?)),
            ),
        };
        Ok(Self {
            keys: Arc::new(keys),
            staging: Some(staging),
            rows: 0,
        })
    }

    /// The incoming keys.
    pub fn keys(&self) -> &KeyIndex {
        &self.keys
    }

    /// The incoming keys, to share with tasks once staging finished.
    pub fn shared_keys(&self) -> Arc<KeyIndex> {
        Arc::clone(&self.keys)
    }

    fn keys_mut(&mut self) -> Result<&mut KeyIndex> {
        Arc::get_mut(&mut self.keys)
            .ok_or_else(|| Error::internal("merge keys changed while they were shared"))
    }

    /// Stage one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let Some(staging) = &mut self.staging else {
            return Err(Error::internal("merge rows after the merge finished"));
        };
        Arc::get_mut(&mut self.keys)
            .ok_or_else(|| Error::internal("merge keys changed while they were shared"))?
            .add(batch)?;
        self.rows += batch.num_rows() as u64;
        match staging {
            Staging::Spool(spool) => spool.write(batch),
            Staging::Sorted(sorter) => sorter.push(batch.clone()),
        }
    }

    /// Every row is staged: seal the keys (they can be shared from now on) and return the
    /// work that hands back the incoming rows, deduplicated (in the cluster key's order if
    /// they were staged sorted). That work sorts what is still held in memory: run it on a
    /// task of its own ([`crate::parallel::spawn`]) while the table's files are scanned.
    pub fn finish(&mut self) -> Result<impl Future<Output = Result<Incoming>> + Send + use<>> {
        let staging = self
            .staging
            .take()
            .ok_or_else(|| Error::internal("the merge finished twice"))?;
        self.keys_mut()?.seal();
        let repeated = self.rows > self.keys.len() as u64;
        let keys = Arc::clone(&self.keys);
        Ok(async move {
            match staging {
                Staging::Spool(spool) => {
                    let spooled = spool.finish()?;
                    let batches = spooled.batches()?;
                    let rows = futures::stream::iter(batches.enumerate())
                        .map(move |(n, batch)| {
                            // the spool file lives as long as its reader
                            let _file = &spooled;
                            let batch = batch?;
                            if repeated {
                                keys.dedup(n, &batch)
                            } else {
                                Ok(batch)
                            }
                        })
                        .boxed();
                    Ok::<_, Error>(Incoming {
                        rows,
                        sorted_by: None,
                    })
                }
                Staging::Sorted(sorter) => {
                    let key = Arc::clone(sorter.key());
                    let sorted = sorter.finish().await?;
                    let rows = if repeated {
                        last_of_each_key(sorted, Arc::clone(&key))
                    } else {
                        sorted
                    };
                    Ok(Incoming {
                        rows,
                        sorted_by: Some(key),
                    })
                }
            }
        })
    }
}

/// Whether two lists of columns hold the same columns (keys equal on one are equal on the
/// other, whatever the order and directions).
fn same_columns(a: &[usize], b: &[usize]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// `sorted` (equal keys next to each other, in arrival order) with only the last row of each
/// key. Holds one batch back, to see whether the next one starts with the same key.
fn last_of_each_key(sorted: BatchStream<'static>, key: Arc<SortKey>) -> BatchStream<'static> {
    struct State {
        rows: BatchStream<'static>,
        key: Arc<SortKey>,
        held: Option<(RecordBatch, Rows)>,
        done: bool,
    }
    let state = State {
        rows: sorted,
        key,
        held: None,
        done: false,
    };
    futures::stream::try_unfold(state, |mut s| async move {
        while !s.done {
            let next = match s.rows.try_next().await? {
                Some(batch) if batch.num_rows() == 0 => continue,
                Some(batch) => {
                    let rows = s.key.rows(&batch)?;
                    Some((batch, rows))
                }
                None => None,
            };
            s.done = next.is_none();
            let Some((batch, rows)) = std::mem::replace(&mut s.held, next) else {
                continue;
            };
            let following = s.held.as_ref().map(|(_, r)| r.row(0));
            let kept = last_rows(&batch, &rows, following)?;
            return Ok(Some((kept, s)));
        }
        Ok::<_, Error>(None)
    })
    .boxed()
}

/// The rows of `batch` (keys `rows`, at least one) whose key the next row's does not repeat;
/// `following`: the key of the row after the batch, if any.
fn last_rows(batch: &RecordBatch, rows: &Rows, following: Option<Row<'_>>) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let mut keep = BooleanBufferBuilder::new(n);
    for i in 1..n {
        keep.append(rows.row(i - 1) != rows.row(i));
    }
    keep.append(following.is_none_or(|f| f != rows.row(n - 1)));
    filter_record_batch(batch, &BooleanArray::new(keep.finish(), None))
        .map_err(data("deduplicating merge rows"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use arrow_array::{Int32Array, Int64Array};
    use arrow_schema::{DataType, Field, Schema, SortOptions};

    use super::*;

    #[tokio::test]
    async fn the_last_row_of_a_key_is_found_across_batches() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int32, false),
        ]));
        let batch = |k: &[i64], v: &[i32]| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(k.to_vec())),
                    Arc::new(Int32Array::from(v.to_vec())),
                ],
            )
            .unwrap()
        };
        // key 2 spans the first two batches, key 3 the last three (one of them empty)
        let batches = vec![
            batch(&[1, 2, 2], &[10, 20, 21]),
            batch(&[2, 3], &[22, 30]),
            batch(&[], &[]),
            batch(&[3], &[31]),
            batch(&[3, 4], &[32, 40]),
        ];
        let key = SortKey::new(&schema, &[(0, SortOptions::default())]).unwrap();
        let sorted = futures::stream::iter(batches.into_iter().map(Ok)).boxed();
        let out: Vec<RecordBatch> = last_of_each_key(sorted, key).try_collect().await.unwrap();
        let values: Vec<i32> = out
            .iter()
            .flat_map(|b| {
                let v = b.column(1).as_any().downcast_ref::<Int32Array>().unwrap();
                v.values().to_vec()
            })
            .collect();
        assert_eq!(values, [10, 22, 32, 40]);
    }
}
