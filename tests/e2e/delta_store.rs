//! The Delta destination on an object store: `s3://` tables on a local S3 server (moto's, see
//! common/s3.rs) — appends, merges, concurrent commits through S3's conditional PUT, table operations
//! and bad locations — read back by python `deltalake` over the same S3 API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::azure::{Azurite, CONTAINER};
use common::delta::*;
use common::s3::{BUCKET, S3};
use common::{Project, env_refs, py_env};
use serde_json::Value;

/// python deltalake's view of the S3 table at `url` (rows ordered by `id`).
fn read_s3(p: &Project, s3: &S3, url: &str) -> Value {
    let env = s3.env();
    let (ok, v) = py_env(
        p.path(),
        "delta.py",
        &["read", url, "--order", "id"],
        &env_refs(&env),
    );
    assert!(ok, "deltalake could not read {url}: {v}");
    v
}

#[test]
fn s3_tables_take_appends_merges_and_table_operations_and_python_reads_them() {
    let s3 = S3::start();
    let env = s3.env();
    let env = env_refs(&env);
    let p = Project::new();
    let url = format!("s3://{BUCKET}/warehouse/orders");
    let mut reference = BTreeMap::new();

    let first: Vec<Row> = (1..=6).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&first));
    let f = pipeline(
        &p,
        "s3_append",
        "a.csv",
        &url,
        "mode = \"append\"\npartition_by = [\"region\"]",
    );
    p.pipe_env(&["run", &f], &env).assert_ok();
    reference.extend(first.iter().map(|r| (r.id, r.clone())));
    expect_rows(&read_s3(&p, &s3, &url), &reference, "append");

    let f = pipeline(
        &p,
        "s3_merge",
        "m.csv",
        &url,
        "mode = \"merge\"\nmerge_keys = [\"id\"]\npartition_by = [\"region\"]",
    );
    for run in 0..2u32 {
        let base = 4 + i64::from(run) * 3;
        let rows: Vec<Row> = (base..base + 5).map(|i| Row::new(i, 10 + run)).collect();
        p.write("m.csv", &csv(&rows));
        p.pipe_env(&["run", &f], &env).assert_ok();
        reference.extend(rows.iter().map(|r| (r.id, r.clone())));
        let v = read_s3(&p, &s3, &url);
        expect_rows(&v, &reference, &format!("merge run {run}"));
        assert_eq!(last(&v)["operation"], "MERGE");
        assert_eq!(last(&v)["run_seq"], i64::from(run) + 1);
    }

    // table operations on the S3 URL
    let history = table_json_env(&p, "history", &url, &[], &env);
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    let at0 = table_json_env(&p, "inspect", &url, &["--at", "0"], &env);
    assert_eq!(at0["rows"], 6, "{at0}");
    let before: BTreeSet<String> = s3.keys("warehouse/orders/").into_iter().collect();
    table_json_env(&p, "optimize", &url, &[], &env);
    let v = read_s3(&p, &s3, &url);
    expect_rows(&v, &reference, "after optimize");
    assert_eq!(last(&v)["operation"], "OPTIMIZE");
    // vacuum lists the bucket: a dry run names the files the merges and optimize replaced
    // and deletes nothing; the real one deletes exactly those
    let dry = vacuum_now(&p, &url, true, &env);
    let listed: BTreeSet<String> = dry["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(!listed.is_empty(), "{dry}");
    let after: BTreeSet<String> = s3.keys("warehouse/orders/").into_iter().collect();
    assert!(before.is_subset(&after), "a dry run deletes nothing: {dry}");
    let done = vacuum_now(&p, &url, false, &env);
    assert_eq!(done["deleted"], dry["deleted"], "{done}");
    let left: BTreeSet<String> = s3.keys("warehouse/orders/").into_iter().collect();
    let live: BTreeSet<String> = read_s3(&p, &s3, &url)["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f.as_str()
                .unwrap()
                .trim_start_matches("s3://lake/")
                .to_string()
        })
        .collect();
    let parquet = |keys: &BTreeSet<String>| keys.iter().filter(|k| k.ends_with(".parquet")).count();
    assert_eq!(parquet(&left), parquet(&after) - listed.len(), "{left:?}");
    assert!(live.iter().all(|f| left.contains(f)), "{live:?} / {left:?}");
    expect_rows(&read_s3(&p, &s3, &url), &reference, "after vacuum");
}

#[test]
fn concurrent_writers_on_s3_commit_through_conditional_puts_and_the_log_stays_linear() {
    let s3 = S3::start();
    let env = s3.env();
    let env = env_refs(&env);
    let p = Project::new();
    let url = format!("s3://{BUCKET}/t");
    p.write("seed.csv", &csv(&[Row::new(0, 0)]));
    let seed = pipeline(&p, "s3_seed", "seed.csv", &url, "");
    p.pipe_env(&["run", &seed], &env).assert_ok();
    let writers = 3;
    for w in 0..writers {
        let rows: Vec<Row> = (1 + w * 1000..=(w + 1) * 1000)
            .map(|i| Row::new(i, 0))
            .collect();
        p.write(&format!("w{w}.csv"), &csv(&rows));
    }
    let files: Vec<String> = (0..writers)
        .map(|w| pipeline(&p, &format!("s3_conc{w}"), &format!("w{w}.csv"), &url, ""))
        .collect();
    run_concurrently(&p, &files, &env);
    let v = read_s3(&p, &s3, &url);
    assert_eq!(v["count"], 1 + writers * 1000);
    assert_eq!(
        versions(&v),
        (0..=writers).collect::<Vec<_>>(),
        "linear log"
    );
}

#[test]
fn a_missing_bucket_or_an_unreachable_store_is_a_clear_error() {
    let s3 = S3::start();
    let env = s3.env();
    let p = Project::new();
    p.write("a.csv", &csv(&[Row::new(1, 0)]));

    let f = pipeline(&p, "s3_nobucket", "a.csv", "s3://no-such-bucket/t", "");
    p.pipe_env(&["run", &f], &env_refs(&env))
        .assert_failed()
        .stderr_has("no-such-bucket");
    assert!(s3.keys("").is_empty(), "nothing written anywhere");

    // a closed port: the endpoint is named, and the run gives up instead of hanging
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let mut env = env_refs(&env);
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let f = pipeline(&p, "s3_down", "a.csv", &format!("s3://{BUCKET}/t"), "");
    let started = std::time::Instant::now();
    p.pipe_env(&["run", &f], &env)
        .assert_failed()
        .stderr_has(&format!("{BUCKET}/t"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn azure_tables_take_appends_and_merges_and_python_reads_them() {
    let azurite = Azurite::start();
    let env = azurite.env();
    let env = env_refs(&env);
    let p = Project::new();
    let url = format!("az://{CONTAINER}/warehouse/orders");
    let mut reference = BTreeMap::new();
    let first: Vec<Row> = (1..=6).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&first));
    let f = pipeline(
        &p,
        "az_append",
        "a.csv",
        &url,
        "partition_by = [\"region\"]",
    );
    p.pipe_env(&["run", &f], &env).assert_ok();
    reference.extend(first.iter().map(|r| (r.id, r.clone())));

    let changed: Vec<Row> = (4..=9).map(|i| Row::new(i, 1)).collect();
    p.write("m.csv", &csv(&changed));
    let f = pipeline(
        &p,
        "az_merge",
        "m.csv",
        &url,
        "mode = \"merge\"\nmerge_keys = [\"id\"]\npartition_by = [\"region\"]",
    );
    p.pipe_env(&["run", &f], &env).assert_ok();
    // the same run again: a new run, the same rows, nothing changes but the version
    p.pipe_env(&["run", &f], &env).assert_ok();
    reference.extend(changed.iter().map(|r| (r.id, r.clone())));

    let (ok, v) = py_env(p.path(), "delta.py", &["read", &url, "--order", "id"], &env);
    assert!(ok, "deltalake could not read {url}: {v}");
    expect_rows(&v, &reference, "append then two merges");
    assert_eq!(versions(&v), [0, 1, 2]);
    assert_eq!(last(&v)["operation"], "MERGE");
    let history = table_json_env(&p, "history", &url, &[], &env);
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
}

/// At `-vv`, with credentials in `storage_options`, no key id or secret reaches the logs.
#[test]
fn debug_logs_never_print_object_store_credentials() {
    let s3 = S3::start();
    let env: Vec<(&'static str, String)> = s3
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS_KEY_ID") && !k.starts_with("AWS_SECRET"))
        .collect();
    let env = env_refs(&env);
    let p = Project::new();
    let url = format!("s3://{BUCKET}/warehouse/secret");
    p.write("a.csv", &csv(&[Row::new(1, 0)]));
    let f = pipeline(
        &p,
        "s3_secret",
        "a.csv",
        &url,
        "mode = \"append\"\nstorage_options = { aws_access_key_id = \"AKIAPIPEKEYID0001\", \
         aws_secret_access_key = \"pipe-secret-value-0001\" }",
    );
    let run = p.pipe_env(&["-vv", "run", &f], &env).assert_ok();
    for secret in ["AKIAPIPEKEYID0001", "pipe-secret-value-0001"] {
        assert!(
            !run.stderr.contains(secret),
            "{secret} in the logs:\n{}",
            run.stderr
        );
        assert!(!run.stdout.contains(secret));
    }
    assert!(
        run.stderr.contains("DEBUG"),
        "-vv logs at debug level:\n{}",
        run.stderr
    );
}
