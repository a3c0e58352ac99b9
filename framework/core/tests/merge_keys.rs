//! Merge keys: integer and encoded keys, NULL keys, last-occurrence-wins deduplication and
//! the rows a rewrite keeps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
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

/// Stage `batches`, then the deduplicated rows' `v`s and the merge.
fn staged(keys: Vec<usize>, batches: &[RecordBatch]) -> (StagedMerge, Vec<i32>) {
    let mut merge = StagedMerge::new(schema(), keys).unwrap();
    for b in batches {
        merge.write(b).unwrap();
    }
    let spooled = merge.finish().unwrap();
    let mut kept = Vec::new();
    for (n, b) in spooled.batches().unwrap().enumerate() {
        let d = merge.dedup(n, &b.unwrap()).unwrap();
        kept.extend(
            d.column(2)
                .as_primitive::<arrow_array::types::Int32Type>()
                .values(),
        );
    }
    (merge, kept)
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
    let kept = keys.without_incoming(&table).unwrap();
    assert_eq!(kept.column(0).as_primitive::<Int64Type>().values(), &[5, 7]);
    let mut matched = Matched::default();
    matched.extend(split.hits.iter().copied());
    matched.extend(keys.hits(&keys.key_columns(&table)).unwrap());
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
    let kept = keys.without_incoming(&table).unwrap();
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
