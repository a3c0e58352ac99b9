#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, Int64Array, LargeStringArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, SortOptions};
use futures::{StreamExt, TryStreamExt};

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
    ]))
}

fn batch(keys: &[Option<i64>]) -> RecordBatch {
    let values: Vec<Option<String>> = keys.iter().map(|k| k.map(|k| format!("v{k}"))).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(keys.to_vec())),
            Arc::new(StringArray::from(values)),
        ],
    )
    .unwrap()
}

fn key() -> Arc<SortKey> {
    SortKey::new(&schema(), &[(0, SortOptions::default())]).unwrap()
}

async fn keys_of(stream: BatchStream<'_>) -> Vec<Option<i64>> {
    let batches: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    let mut out = Vec::new();
    for b in batches {
        let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let v = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            // the value travelled with its key
            assert_eq!(v.is_null(i), k.is_null(i));
            if k.is_valid(i) {
                assert_eq!(v.value(i), format!("v{}", k.value(i)));
            }
            out.push(k.is_valid(i).then(|| k.value(i)));
        }
    }
    out
}

/// A deterministic shuffle of `0..n` with some NULLs.
fn shuffled(n: i64) -> Vec<Option<i64>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v: Vec<Option<i64>> = (0..n).map(Some).collect();
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v.extend([None, None]);
    v
}

#[tokio::test]
async fn an_external_sort_spills_runs_and_merges_them_in_order() {
    let input = shuffled(50_000);
    // a budget of a few batches: many spilled runs
    let mut sorter = ExternalSort::new(schema(), key(), 200_000);
    for chunk in input.chunks(3000) {
        sorter.push(batch(chunk)).unwrap();
    }
    assert!(sorter.spilled_runs() > 3, "{}", sorter.spilled_runs());
    assert_eq!(sorter.rows(), 50_002);
    let got = keys_of(sorter.finish().await.unwrap()).await;
    let mut want = input.clone();
    want.sort();
    assert!(got == want, "NULLs first, then every key once, in order");
}

#[tokio::test]
async fn more_runs_than_the_fan_in_are_merged_in_levels() {
    let input = shuffled(40_000);
    // every push spills: 100 runs, more than FAN_IN
    let mut sorter = ExternalSort::new(schema(), key(), 1);
    for chunk in input.chunks(401) {
        sorter.push(batch(chunk)).unwrap();
    }
    assert!(sorter.spilled_runs() > FAN_IN);
    let got = keys_of(sorter.finish().await.unwrap()).await;
    let mut want = input.clone();
    want.sort();
    assert!(got == want, "{} rows, {} expected", got.len(), want.len());
}

#[test]
fn a_slice_counts_its_own_bytes() {
    let b = batch(&(0..10_000).map(Some).collect::<Vec<_>>());
    let slice = b.slice(0, 100);
    assert!(
        batch_bytes(&slice) * 50 < batch_bytes(&b),
        "{}",
        batch_bytes(&slice)
    );
}

#[tokio::test]
async fn rows_that_fit_are_sorted_without_spilling() {
    let mut sorter = ExternalSort::new(schema(), key(), SORT_MEMORY);
    sorter.push(batch(&[Some(3), None, Some(1)])).unwrap();
    sorter.push(batch(&[Some(2)])).unwrap();
    assert_eq!(sorter.spilled_runs(), 0);
    let got = keys_of(sorter.finish().await.unwrap()).await;
    assert_eq!(got, [None, Some(1), Some(2), Some(3)]);
}

#[tokio::test]
async fn a_merge_copies_slices_where_inputs_do_not_interleave() {
    let old: Vec<Option<i64>> = (0..20_000).map(|i| Some(i * 2)).collect();
    let new = [Some(-1), Some(7), Some(9), Some(50_001)];
    let streams: Vec<BatchStream<'static>> = vec![
        futures::stream::iter(old.chunks(4096).map(|c| Ok(batch(c))).collect::<Vec<_>>()).boxed(),
        futures::stream::iter(vec![Ok(batch(&new))]).boxed(),
    ];
    let mut merge = SortedMerge::new(key(), streams).await.unwrap();
    let first = merge.next().await.unwrap().unwrap();
    assert_eq!(first.num_rows(), BATCH_ROWS);
    let mut got = keys_of(futures::stream::iter([Ok(first)]).boxed()).await;
    got.extend(keys_of(merge.into_stream()).await);
    let mut want: Vec<Option<i64>> = old.iter().copied().chain(new).collect();
    want.sort();
    assert!(got == want, "{} rows, {} expected", got.len(), want.len());
}

#[test]
fn extents_find_sorted_disjoint_files_and_chain_them_in_order() {
    let k = key();
    let extent = |keys: &[Option<i64>]| {
        let mut e = Extent::new();
        for chunk in keys.chunks(2) {
            e.add(&k.rows(&batch(chunk)).unwrap());
        }
        e
    };
    let files = vec![
        ("c", extent(&[Some(20), Some(21), Some(29)])),
        ("a", extent(&[Some(1), Some(5), Some(9)])),
        ("unsorted", extent(&[Some(40), Some(35), Some(41)])),
        ("overlaps-a", extent(&[Some(4), Some(6)])),
        ("b", extent(&[Some(9), Some(10)])), // starts where a ends: still in order
        ("empty", Extent::new()),
    ];
    assert!(!files[2].1.is_sorted());
    let (ordered, mut rest) = chain(files);
    assert_eq!(ordered, ["a", "b", "c"]);
    rest.sort();
    assert_eq!(rest, ["empty", "overlaps-a", "unsorted"]);
}

#[test]
fn cluster_by_defaults_to_merge_keys_then_the_sort_order() {
    let keys = ["id".to_string()];
    let order = ["day".to_string()];
    assert_eq!(resolve(None, WriteMode::Merge, &keys, &order), ["id"]);
    assert_eq!(resolve(None, WriteMode::Append, &keys, &order), ["day"]);
    assert!(resolve(Some(&[]), WriteMode::Merge, &keys, &order).is_empty());
    assert_eq!(
        resolve(Some(&["x".to_string()]), WriteMode::Merge, &keys, &order),
        ["x"]
    );
    assert_eq!(segment_bytes(512 << 20), MAX_SEGMENT_BYTES);
    assert_eq!(segment_bytes(8 << 20), 8 << 20);
}

#[tokio::test]
async fn a_merge_of_finely_interleaved_inputs_keeps_every_row_in_order() {
    // runs of 1, 2, 3, … rows alternate between the inputs (what a uniform merge sees)
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut k, mut run) = (0i64, 1);
    while k < 30_000 {
        for _ in 0..run {
            a.push(Some(k));
            k += 1;
        }
        for _ in 0..(run % 7 + 1) {
            b.push(Some(k));
            k += 1;
        }
        run = run % 40 + 1;
    }
    let stream = |keys: &[Option<i64>], chunk: usize| -> BatchStream<'static> {
        let batches: Vec<_> = keys.chunks(chunk).map(|c| Ok(batch(c))).collect();
        futures::stream::iter(batches).boxed()
    };
    let merge = SortedMerge::new(key(), vec![stream(&a, 5000), stream(&b, 777)])
        .await
        .unwrap();
    let got = keys_of(merge.into_stream()).await;
    let want: Vec<Option<i64>> = (0..k).map(Some).collect();
    assert!(got == want, "{} rows, {} expected", got.len(), want.len());
}

#[tokio::test]
async fn merge_output_streams_chained_files_and_sorts_the_rest_with_the_incoming_rows() {
    let files: Vec<(Vec<Option<i64>>, Extent)> = [
        (0..100).map(|i| Some(i * 3)).collect::<Vec<_>>(), // sorted, 0..297
        (100..200).map(|i| Some(i * 3)).collect(),         // sorted, 300..597
        (0..50).rev().map(|i| Some(i * 3 + 1)).collect(),  // unsorted
    ]
    .into_iter()
    .map(|keys| {
        let mut e = Extent::new();
        e.add(&key().rows(&batch(&keys)).unwrap());
        (keys, e)
    })
    .collect();
    // what remains of a file: its rows but the ones whose key is a multiple of 10, in
    // batches of 7 rows with those marked to go
    let remainder = |keys: Vec<Option<i64>>| async move {
        let batches: Vec<Result<Remains>> = keys
            .chunks(7)
            .map(|c| {
                let keep = c.iter().map(|k| k.unwrap() % 10 != 0).collect();
                Ok(Remains::kept(batch(c), keep))
            })
            .collect();
        Ok::<_, Error>(futures::stream::iter(batches).boxed())
    };
    let incoming_keys: Vec<Option<i64>> = (0..60).map(|i| Some(i * 10)).rev().collect();
    let incoming = Incoming {
        rows: futures::stream::iter(vec![Ok(batch(&incoming_keys))]).boxed(),
        sorted_by: None,
    };
    let out = merge_output(Some(&key()), &schema(), files, remainder, incoming)
        .await
        .unwrap();
    let got = keys_of(out).await;
    let mut want: Vec<Option<i64>> = (0..200)
        .map(|i| i * 3)
        .chain((0..50).map(|i| i * 3 + 1))
        .filter(|k| k % 10 != 0)
        .chain((0..60).map(|i| i * 10))
        .map(Some)
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn merge_output_takes_incoming_rows_sorted_by_its_key_as_they_come() {
    let sorted_key = key();
    let file: Vec<Option<i64>> = (0..100).map(|i| Some(i * 2)).collect();
    let mut extent = Extent::new();
    extent.add(&sorted_key.rows(&batch(&file)).unwrap());
    let remainder = |keys: Vec<Option<i64>>| async move {
        let stream: RemainsStream<'static> =
            futures::stream::iter(vec![Ok(Remains::all(batch(&keys)))]).boxed();
        Ok::<_, Error>(stream)
    };
    let incoming_keys: Vec<Option<i64>> = (0..50).map(|i| Some(i * 4 + 1)).collect();
    let incoming = Incoming {
        rows: futures::stream::iter(vec![Ok(batch(&incoming_keys))]).boxed(),
        sorted_by: Some(Arc::clone(&sorted_key)),
    };
    let out = merge_output(
        Some(&sorted_key),
        &schema(),
        vec![(file.clone(), extent)],
        remainder,
        incoming,
    )
    .await
    .unwrap();
    let mut want: Vec<Option<i64>> = file.into_iter().chain(incoming_keys).collect();
    want.sort();
    assert_eq!(keys_of(out).await, want);
}

/// Rows whose keys are all equal, numbered in the order they are pushed.
fn numbered(from: i64, n: i64) -> RecordBatch {
    let values: Vec<String> = (from..from + n).map(|i| format!("{i:08}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(vec![Some(7); n as usize])),
            Arc::new(StringArray::from(values)),
        ],
    )
    .unwrap()
}

#[tokio::test]
async fn an_external_sort_keeps_equal_keys_in_the_order_they_were_pushed() {
    // runs spilled (a tiny budget), more of them than the fan-in, and rows still held
    let mut sorter = ExternalSort::new(schema(), key(), 1);
    let mut pushed = 0;
    for n in (0..FAN_IN as i64 + 10).map(|i| i % 5 + 1) {
        sorter.push(numbered(pushed, n)).unwrap();
        pushed += n;
    }
    let mut held = ExternalSort::new(schema(), key(), SORT_MEMORY);
    held.push(numbered(0, 3)).unwrap();
    for (sorter, rows) in [(sorter, pushed), (held, 3)] {
        let batches: Vec<RecordBatch> = sorter.finish().await.unwrap().try_collect().await.unwrap();
        let mut values = Vec::new();
        for b in &batches {
            let v = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            values.extend((0..v.len()).map(|i| v.value(i).to_string()));
        }
        let want: Vec<String> = (0..rows).map(|i| format!("{i:08}")).collect();
        assert!(
            values == want,
            "{} rows, first {:?}",
            values.len(),
            values.first()
        );
    }
}

#[tokio::test]
async fn a_merge_of_equal_keys_takes_the_earlier_input_first() {
    let stream = |from: i64, n: i64, chunk: usize| -> BatchStream<'static> {
        let b = numbered(from, n);
        let batches: Vec<_> = (0..b.num_rows())
            .step_by(chunk)
            .map(|at| Ok(b.slice(at, chunk.min(b.num_rows() - at))))
            .collect();
        futures::stream::iter(batches).boxed()
    };
    // the earlier input's batches end in the middle of the equal keys
    let merge = SortedMerge::new(key(), vec![stream(0, 10, 3), stream(10, 10, 4)])
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = merge.into_stream().try_collect().await.unwrap();
    let mut values = Vec::new();
    for b in &batches {
        let v = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        values.extend((0..v.len()).map(|i| v.value(i).to_string()));
    }
    let want: Vec<String> = (0..20).map(|i| format!("{i:08}")).collect();
    assert_eq!(values, want);
}

#[test]
fn fixed_width_keys_sort_like_their_rows() {
    // negative, positive and NULL integers: the u128 order must be the row format's
    let k = key();
    let a = k
        .rows(&batch(&[Some(5), None, Some(-3), Some(i64::MIN)]))
        .unwrap();
    let b = k
        .rows(&batch(&[Some(i64::MAX), Some(0), Some(-3)]))
        .unwrap();
    let order = super::sort::fixed_width_order(&[a, b]).unwrap();
    assert_eq!(
        order,
        [(0, 1), (0, 3), (0, 2), (1, 2), (1, 1), (0, 0), (1, 0)]
    );
}

#[tokio::test]
async fn a_merge_passes_over_the_rows_its_inputs_drop() {
    // Three sorted inputs over 0..30_000 (each key in one or two inputs), in batches of
    // different sizes, some rows marked to go: whole batches, runs across batch edges, and
    // single rows; the output must be the rows that stay, sorted, equal keys by input.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut inputs: Vec<Vec<(i64, bool)>> = vec![Vec::new(); 3];
    let mut gone = 0;
    for k in 0..30_000 {
        for input in &mut inputs {
            if next(3) == 0 {
                // runs of dropped rows: whole stretches near multiples of 5000
                let stays = !(k % 5000 < 900 || next(10) == 0);
                gone += usize::from(!stays);
                input.push((k, stays));
            }
        }
    }
    let streams: Vec<RemainsStream<'static>> = inputs
        .iter()
        .zip([1000, 333, 8192])
        .map(|(rows, chunk)| {
            let batches: Vec<Result<Remains>> = rows
                .chunks(chunk)
                .map(|c| {
                    let keys: Vec<Option<i64>> = c.iter().map(|r| Some(r.0)).collect();
                    Ok(Remains::kept(batch(&keys), c.iter().map(|r| r.1).collect()))
                })
                .collect();
            futures::stream::iter(batches).boxed()
        })
        .collect();
    let merge = SortedMerge::of_remains(key(), streams).await.unwrap();
    let batches: Vec<RecordBatch> = merge.into_stream().try_collect().await.unwrap();
    assert!(batches.iter().all(|b| b.num_rows() <= BATCH_ROWS));
    // every row's value came with its key
    for b in &batches {
        let (k, v) = (
            b.column(0).as_primitive::<Int64Type>(),
            b.column(1).as_string::<i32>(),
        );
        assert!((0..b.num_rows()).all(|i| v.value(i) == format!("v{}", k.value(i))));
    }
    let got = keys_of(futures::stream::iter(batches.into_iter().map(Ok)).boxed()).await;
    let mut want: Vec<Option<i64>> = inputs
        .iter()
        .flatten()
        .filter(|r| r.1)
        .map(|r| Some(r.0))
        .collect();
    want.sort();
    assert!(gone > 3000, "{gone}");
    assert!(got == want, "{} rows, {} expected", got.len(), want.len());
}

#[tokio::test]
async fn a_merge_of_inputs_that_drop_every_row_is_empty() {
    let gone =
        |keys: &[Option<i64>]| Ok(Remains::kept(batch(keys), vec![false; keys.len()].into()));
    let streams: Vec<RemainsStream<'static>> = vec![
        futures::stream::iter(vec![gone(&[Some(1), Some(2)]), gone(&[Some(3)])]).boxed(),
        futures::stream::iter(vec![gone(&[Some(0)])]).boxed(),
    ];
    let merge = SortedMerge::of_remains(key(), streams).await.unwrap();
    assert!(keys_of(merge.into_stream()).await.is_empty());
}

#[tokio::test]
async fn inputs_whose_columns_differ_in_type_are_an_error_not_a_panic() {
    let large = Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::LargeUtf8, true),
    ]);
    let other = RecordBatch::try_new(
        Arc::new(large),
        vec![
            Arc::new(Int64Array::from(vec![2, 4])),
            Arc::new(LargeStringArray::from(vec!["v2", "v4"])),
        ],
    )
    .unwrap();
    let streams: Vec<BatchStream<'static>> = vec![
        futures::stream::iter(vec![Ok(batch(&[Some(1), Some(3)]))]).boxed(),
        futures::stream::iter(vec![Ok(other)]).boxed(),
    ];
    let merge = SortedMerge::new(key(), streams).await.unwrap();
    let got: Result<Vec<RecordBatch>> = merge.into_stream().try_collect().await;
    let e = got.unwrap_err().to_string();
    assert!(e.contains("different data types"), "{e}");
}

#[tokio::test]
async fn kept_rows_follow_the_scan_mask_across_batches_and_catch_a_changed_file() {
    let keep: BooleanBuffer = [true, false, true, true, false].into_iter().collect();
    let read = || {
        let batches = vec![
            Ok(batch(&[Some(1), Some(2)])),
            Ok(batch(&[Some(3), Some(4), Some(5)])),
        ];
        futures::stream::iter(batches).boxed()
    };
    let remains: Vec<Remains> = kept_rows("f.parquet", read(), keep.clone())
        .try_collect()
        .await
        .unwrap();
    let kept: Vec<usize> = remains.iter().map(Remains::num_rows).collect();
    assert_eq!(kept, [1, 2]);
    let rows =
        keys_of(futures::stream::iter(remains.into_iter().map(Remains::into_batch)).boxed()).await;
    assert_eq!(rows, [Some(1), Some(3), Some(4)]);
    // the file returned fewer or more rows than its scan saw
    for mask in [
        keep.slice(0, 4),
        keep.slice(0, 5).iter().chain([true]).collect(),
    ] {
        let got: Result<Vec<Remains>> = kept_rows("f.parquet", read(), mask).try_collect().await;
        let e = got.unwrap_err().to_string();
        assert!(e.contains("f.parquet returned different rows"), "{e}");
    }
}
