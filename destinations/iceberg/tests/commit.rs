//! The commit path against a real SQLite catalog, with races made deterministic: two runs
//! prepared on the same table state commit one after the other, so the second must restage
//! on the first's snapshot (or fail clearly). Read back with pyiceberg.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use pipe_destination_iceberg::{IcebergConfig, IcebergDestination};
use pipe_framework::{
    CommitRequest, Destination, PrepareRequest, RunContext, SchemaEvolution, Sink, State,
    WriteMode, WriteSpec,
};
use serde_json::{Value, json};

fn destination(dir: &Path) -> IcebergDestination {
    let config: IcebergConfig = serde_json::from_value(json!({
        "catalog": {
            "type": "sql",
            "uri": format!("sqlite://{}/catalog.db", dir.display()),
            "warehouse": format!("{}/wh", dir.display()),
        },
        "table": "s.t",
        // small row groups: data files reach the disk while the run writes
        "row_group_rows": 1000,
    }))
    .unwrap();
    IcebergDestination::new(config).unwrap()
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn batch(sink: &dyn Sink, ids: &[i64], tag: &str) -> RecordBatch {
    let names: Vec<String> = ids.iter().map(|i| format!("{tag}{i}")).collect();
    let source = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap();
    // what the runtime's aligner does: the sink's schema, same columns
    RecordBatch::try_new(sink.schema(), source.columns().to_vec()).unwrap()
}

async fn prepare(d: &IcebergDestination, pipeline: &str, mode: WriteMode) -> Box<dyn Sink> {
    let merge_keys = if mode == WriteMode::Merge {
        vec!["id".to_string()]
    } else {
        Vec::new()
    };
    d.prepare(PrepareRequest {
        ctx: RunContext::new(pipeline),
        source_schema: schema(),
        write: WriteSpec {
            mode,
            merge_keys,
            allow_empty: false,
        },
        evolution: SchemaEvolution::Evolve,
    })
    .await
    .unwrap()
}

async fn commit(sink: Box<dyn Sink>, pipeline: &str) -> pipe_framework::Result<String> {
    let state = State::from([("cursor.id".to_string(), "42".to_string())]);
    sink.commit(CommitRequest {
        ctx: RunContext::new(pipeline),
        rows_read: 0,
        state,
        quarantine: None,
    })
    .await
    .map(|r| r.commit_id.unwrap())
}

/// A destination whose table holds `ids` (named `s<id>`), committed by pipeline `seed`.
async fn seeded(dir: &Path, ids: &[i64]) -> IcebergDestination {
    let d = destination(dir);
    let mut seed = prepare(&d, "seed", WriteMode::Append).await;
    let b = batch(seed.as_ref(), ids, "s");
    seed.write(b).await.unwrap();
    commit(seed, "seed").await.unwrap();
    d
}

fn python() -> PathBuf {
    std::env::var_os("PIPE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/pipe-venv/bin/python"))
}

/// pyiceberg's view of the table.
fn read(dir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/ice.py");
    let out = Command::new(python())
        .arg(script)
        .args(["read", "catalog.db", "wh", "s.t", "--order", "id"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; create the venv with `make venv`",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "pyiceberg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(v: &Value) -> Vec<(i64, String)> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn files_on_disk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        files_on_disk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_lost_the_race_restages_on_the_winner() {
    let dir = tempfile::tempdir().unwrap();
    let d = seeded(dir.path(), &[1]).await;

    let mut a = prepare(&d, "a", WriteMode::Append).await;
    let mut b = prepare(&d, "b", WriteMode::Append).await;
    let batch_a = batch(a.as_ref(), &[2, 3], "a");
    a.write(batch_a).await.unwrap();
    let batch_b = batch(b.as_ref(), &[4], "b");
    b.write(batch_b).await.unwrap();
    let first = commit(a, "a").await.unwrap();
    let second = commit(b, "b").await.unwrap();
    let v = read(dir.path());
    assert_eq!(
        ids(&v),
        vec![
            (1, "s1".into()),
            (2, "a2".into()),
            (3, "a3".into()),
            (4, "b4".into())
        ]
    );
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 3);
    assert_eq!(snaps[2]["id"].as_i64().unwrap().to_string(), second);
    assert_eq!(snaps[2]["parent"].as_i64().unwrap().to_string(), first);
    assert_eq!(snaps[2]["summary"]["total-records"], "4");
    assert_eq!(snaps[2]["summary"]["pipe.state.cursor.id"], "42");
    // the committed state is read back from the snapshot summary
    let state = d
        .committed_state(&RunContext::new("b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.get("cursor.id").map(String::as_str), Some("42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_whose_files_another_merge_rewrote_fails_clearly_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = seeded(dir.path(), &[1, 2, 3]).await;
    let before = files_on_disk(&dir.path().join("wh"));

    let mut a = prepare(&d, "a", WriteMode::Merge).await;
    let mut b = prepare(&d, "b", WriteMode::Merge).await;
    let batch_a = batch(a.as_ref(), &[2], "a");
    a.write(batch_a).await.unwrap();
    let batch_b = batch(b.as_ref(), &[2, 9], "b");
    b.write(batch_b).await.unwrap();
    commit(a, "a").await.unwrap();
    let after_a = files_on_disk(&dir.path().join("wh"));
    let err = commit(b, "b").await.unwrap_err();
    assert!(
        err.to_string().contains("another writer"),
        "unexpected error: {err}"
    );
    assert!(err.is_retryable());
    let v = read(dir.path());
    assert_eq!(
        ids(&v),
        vec![(1, "s1".into()), (2, "a2".into()), (3, "s3".into())]
    );
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 2);
    assert!(after_a > before);
    assert_eq!(
        files_on_disk(&dir.path().join("wh")),
        after_a,
        "the failed merge left files behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_restages_when_the_concurrent_commit_cannot_hold_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = seeded(dir.path(), &[1, 2, 3]).await;

    let mut m = prepare(&d, "m", WriteMode::Merge).await;
    let mut a = prepare(&d, "a", WriteMode::Append).await;
    let batch_m = batch(m.as_ref(), &[3, 4], "m");
    m.write(batch_m).await.unwrap();
    let batch_a = batch(a.as_ref(), &[100, 101], "a");
    a.write(batch_a).await.unwrap();
    commit(a, "a").await.unwrap();
    commit(m, "m").await.unwrap();
    let v = read(dir.path());
    assert_eq!(
        ids(&v),
        vec![
            (1, "s1".into()),
            (2, "s2".into()),
            (3, "m3".into()),
            (4, "m4".into()),
            (100, "a100".into()),
            (101, "a101".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_run_deletes_its_files_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = seeded(dir.path(), &[1]).await;
    let before = files_on_disk(&dir.path().join("wh"));
    let mut a = prepare(&d, "a", WriteMode::Replace).await;
    for chunk in 0..20 {
        let ids: Vec<i64> = (chunk * 1000..chunk * 1000 + 1000).collect();
        let b = batch(a.as_ref(), &ids, "a");
        a.write(b).await.unwrap();
    }
    a.abort().await.unwrap();
    assert_eq!(files_on_disk(&dir.path().join("wh")), before);
    assert_eq!(ids(&read(dir.path())), vec![(1, "s1".into())]);
}
