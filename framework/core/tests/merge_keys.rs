//! Merge keys: integer and encoded keys, NULL keys, last-occurrence-wins deduplication and
//! the rows a rewrite keeps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, SortOptions};
use futures::TryStreamExt;
use pipe_framework::cluster::{Remains, SortKey};
use pipe_framework::merge_keys::{KeyValue, Matched, StagedMerge};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("v", DataType::Int32, false),
    ]))
}

fn batch(ids: &[Option<i64>], regions: &[&str], v: &[i32]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(StringArray::from(regions.to_vec())),
        Arc::new(Int32Array::from(v.to_vec())),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

/// Stage `batches` (sorted as they come when `sorted`, by the key columns), then the merge
/// and the deduplicated rows' `v`s, in the order they come back.
async fn staged_as(
    keys: Vec<usize>,
    batches: &[RecordBatch],
    sorted: bool,
) -> (StagedMerge, Vec<i32>) {
    let columns: Vec<(usize, SortOptions)> =
        keys.iter().map(|&i| (i, SortOptions::default())).collect();
    let cluster = SortKey::new(&schema(), &columns).unwrap();
    let mut merge = StagedMerge::new(schema(), keys, sorted.then_some(&cluster)).unwrap();
    for b in batches {
        merge.write(b).unwrap();
    }
    let incoming = merge.finish().unwrap().await.unwrap();
    assert_eq!(incoming.sorted_by.is_some(), sorted);
    let mut kept = Vec::new();
    let batches: Vec<RecordBatch> = incoming.rows.try_collect().await.unwrap();
    for d in batches {
        kept.extend(
            d.column(2)
                .as_primitive::<arrow_array::types::Int32Type>()
                .values(),
        );
    }
    (merge, kept)
}

/// [`staged_as`], spooled in arrival order.
fn staged(keys: Vec<usize>, batches: &[RecordBatch]) -> (StagedMerge, Vec<i32>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(staged_as(keys, batches, false))
}

#[test]
fn an_integer_key_keeps_its_last_occurrence_and_null_matches_null() {
    let b0 = batch(
        &[Some(1), Some(2), None],
        &["eu", "us", "eu"],
        &[10, 20, 30],
    );
    let b1 = batch(
        &[Some(2), None, Some(3)],
        &["eu", "eu", "us"],
        &[21, 31, 40],
    );
    let (merge, kept) = staged(vec![0], &[b0, b1]);
    assert_eq!(kept, [10, 21, 31, 40]);
    let keys = merge.keys();
    assert_eq!(keys.len(), 4);
    assert!(format!("{keys:?}").contains("integer: true"));

    let table = batch(
        &[Some(5), Some(2), None, Some(1), Some(7)],
        &["x"; 5],
        &[1, 2, 3, 4, 5],
    );
    let split = keys.split(&keys.key_columns(&table)).unwrap();
    assert_eq!(
        split.keep.iter().collect::<Vec<_>>(),
        [true, false, false, false, true]
    );
    let kept = Remains::kept(table.clone(), split.keep.clone())
        .into_batch()
        .unwrap();
    assert_eq!(kept.column(0).as_primitive::<Int64Type>().values(), &[5, 7]);
    let mut matched = Matched::default();
    matched.extend(split.hits.iter().copied());
    matched.extend(split.hits.iter().copied());
    assert_eq!(matched.len(), 3, "ids 2, NULL and 1, each once");
    // NULL keys: bounds cannot exclude a file
    assert!(keys.may_match(Some(KeyValue::Int(100)), Some(KeyValue::Int(200))));
}

#[test]
fn a_two_column_key_is_matched_on_both_columns() {
    let b0 = batch(
        &[Some(1), Some(1), Some(2), Some(1)],
        &["eu", "us", "eu", "eu"],
        &[10, 20, 30, 11],
    );
    let (merge, kept) = staged(vec![0, 1], &[b0]);
    assert_eq!(kept, [20, 30, 11]);
    let keys = merge.keys();
    assert!(format!("{keys:?}").contains("integer: false"));
    let table = batch(
        &[Some(1), Some(1), Some(2), Some(2)],
        &["eu", "apac", "eu", "us"],
        &[1, 2, 3, 4],
    );
    let split = keys.split(&keys.key_columns(&table)).unwrap();
    let kept = Remains::kept(table.clone(), split.keep)
        .into_batch()
        .unwrap();
    assert_eq!(
        kept.column(2)
            .as_primitive::<arrow_array::types::Int32Type>()
            .values(),
        &[2, 4]
    );
    // first-key bounds prune: ids 1..=2 are incoming
    assert!(keys.may_match(Some(KeyValue::Int(2)), Some(KeyValue::Int(9))));
    assert!(!keys.may_match(Some(KeyValue::Int(3)), Some(KeyValue::Int(9))));
}

#[tokio::test]
async fn rows_sorted_as_they_are_staged_keep_the_last_of_each_key_in_key_order() {
    // duplicates inside a batch, across batches and of the NULL key
    let b0 = batch(
        &[Some(5), Some(2), None, Some(5)],
        &["a", "b", "c", "d"],
        &[50, 20, 90, 51],
    );
    let b1 = batch(
        &[Some(2), None, Some(7), Some(1)],
        &["e", "f", "g", "h"],
        &[21, 91, 70, 10],
    );
    let (merge, kept) = staged_as(vec![0], &[b0.clone(), b1.clone()], true).await;
    // NULLs first (the row format's default), then 1, 2, 5, 7: each key's last row
    assert_eq!(kept, [91, 10, 21, 51, 70]);
    assert_eq!(merge.keys().len(), 5);
    // the same rows spooled: the same rows kept, in arrival order
    let (_, spooled) = staged_as(vec![0], &[b0, b1], false).await;
    assert_eq!(spooled, [51, 21, 91, 70, 10]);
}

#[tokio::test]
async fn keys_that_come_once_are_handed_back_as_they_are() {
    let b0 = batch(&[Some(3), Some(1)], &["a", "b"], &[30, 10]);
    let b1 = batch(&[Some(2)], &["c"], &[20]);
    let (_, sorted) = staged_as(vec![0], &[b0.clone(), b1.clone()], true).await;
    assert_eq!(sorted, [10, 20, 30]);
    let (_, spooled) = staged_as(vec![0], &[b0, b1], false).await;
    assert_eq!(spooled, [30, 10, 20]);
}

#[tokio::test]
async fn a_cluster_key_on_other_columns_than_the_merge_keys_stages_in_arrival_order() {
    let cluster = SortKey::new(&schema(), &[(1, SortOptions::default())]).unwrap();
    let mut merge = StagedMerge::new(schema(), vec![0], Some(&cluster)).unwrap();
    merge
        .write(&batch(&[Some(1), Some(1)], &["b", "a"], &[1, 2]))
        .unwrap();
    let incoming = merge.finish().unwrap().await.unwrap();
    assert!(incoming.sorted_by.is_none());
    let batches: Vec<RecordBatch> = incoming.rows.try_collect().await.unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 1, "the last occurrence of key 1");
    assert!(merge.finish().is_err(), "a merge finishes once");
}
