//! The Iceberg destination under stress: tables pyiceberg wrote, failures before the commit,
//! bad configuration, concurrent writers, a killed run with a cursor, a PostgreSQL catalog —
//! each read back by pyiceberg 0.12 (tests/interop/ice.py).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use common::iceberg::*;
use common::{PgObjects, Project, pg_url, psql, py_in, unique};
use serde_json::json;

#[test]
fn tables_written_by_pyiceberg_take_merges_from_pipe_and_vice_versa() {
    let p = Project::new();
    let rows = json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]);
    py_write(&p, "py.t", "append", &rows, &["--partition", "id"]);
    p.write("m.csv", "id,name\n2,B\n4,d\n");
    let merge = "mode = \"merge\"\nmerge_keys = [\"id\"]";
    let m = untyped_pipeline(&p, "ice_py", "m.csv", "py.t", merge);
    p.pipe(&["run", &m]).assert_ok();
    let v = read(&p, "py.t");
    assert_eq!(
        id_names(&v),
        vec![
            (1, "a".into()),
            (2, "B".into()),
            (3, "c".into()),
            (4, "d".into())
        ]
    );
    expect_totals(&v);

    // pyiceberg appends and upserts into a table pipe created
    p.write("a.csv", "id,name\n10,x\n11,y\n");
    let a = untyped_pipeline(&p, "ice_py2", "a.csv", "pipe.t", "");
    p.pipe(&["run", &a]).assert_ok();
    let more = json!([{"id": 11, "name": "Y"}, {"id": 12, "name": "z"}]);
    py_write(&p, "pipe.t", "upsert", &more, &[]);
    let v = read(&p, "pipe.t");
    assert_eq!(
        id_names(&v),
        vec![(10, "x".into()), (11, "Y".into()), (12, "z".into())]
    );
    // and pipe appends on top of pyiceberg's snapshot
    p.write("a.csv", "id,name\n13,w\n");
    p.pipe(&["run", &a]).assert_ok();
    let v = read(&p, "pipe.t");
    assert_eq!(v["count"], 4);
    expect_totals(&v);
}

#[test]
fn a_failure_before_commit_leaves_the_table_and_the_disk_as_they_were() {
    let p = Project::new();
    let rows: Vec<Row> = (1..=3).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&rows));
    let f = pipeline(
        &p,
        "ice_fail",
        "a.csv",
        "s.t",
        "partition_by = [\"region\"]\nrow_group_rows = 1000",
    );
    p.pipe(&["run", &f]).assert_ok();
    let before = read(&p, "s.t");
    let disk = on_disk(&p.path().join("wh"));
    // 30k good rows (data files get written), then a malformed amount
    let mut big: Vec<Row> = (100..30_100).map(|i| Row::new(i, 0)).collect();
    let mut text = csv(&big);
    text.push_str("99999,bad,not-a-number,eu,2024-03-01T10:00:00Z\n");
    big.clear();
    p.write("a.csv", &text);
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("not-a-number");
    assert_untouched(&p, "s.t", &before, &disk);
}

#[test]
fn bad_configuration_is_reported_before_anything_is_written() {
    let p = Project::new();
    p.write("a.csv", &csv(&[Row::new(1, 0)]));
    let cases = [
        ("s.t", "partition_by = [\"wobble(ts)\"]", "wobble(ts)"),
        ("notable", "", "namespace.table"),
        ("s.t", "partition_by = [\"day(nope)\"]", "nope"),
        (
            "s.t",
            "mode = \"merge\"\nmerge_keys = [\"missing\"]",
            "missing",
        ),
        ("s.t", "compression = \"brotli(99)\"", "compression"),
        ("s.t", "writers = 0", "writers"),
        ("s.t", "wobble = 1", "wobble"),
        (
            "s.t",
            "catalog = { type = \"sql\", uri = \"sqlite::memory:\" }",
            "in-memory",
        ),
    ];
    for (n, (table, dest, error)) in cases.iter().enumerate() {
        let dest = if dest.starts_with("catalog") {
            dest.to_string()
        } else {
            format!("{CATALOG}\n{dest}")
        };
        let file = format!("bad{n}.toml");
        p.write(
            &file,
            &format!(
                "name = \"ice_bad{n}\"\n[source]\ntype = \"file\"\npath = \"a.csv\"\n\
                 [destination]\ntype = \"iceberg\"\ntable = \"{table}\"\n{dest}\n"
            ),
        );
        p.pipe(&["run", &file]).assert_failed().stderr_has(error);
    }
    assert!(
        on_disk(&p.path().join("wh")).is_empty(),
        "a failed run wrote files"
    );

    // validate and inspect read; before the first run they create nothing
    std::fs::remove_dir_all(p.path().join("cat")).ok();
    let f = pipeline(&p, "ice_new", "a.csv", "s.t", "");
    p.pipe(&["validate", &f]).assert_ok();
    p.pipe(&["inspect", &f])
        .assert_ok()
        .stdout_has("does not exist yet");
    assert!(!p.path().join("cat/catalog.db").exists());
}

#[test]
fn concurrent_writers_both_commit_after_retrying_and_the_table_stays_consistent() {
    let p = Project::new();
    let dest = "mode = \"append\"\ncommit_retries = 20";
    p.write("seed.csv", &csv(&[Row::new(0, 0)]));
    let seed = pipeline(&p, "ice_conc_seed", "seed.csv", "s.t", dest);
    p.pipe(&["run", &seed]).assert_ok();
    let writers = 4;
    for w in 0..writers {
        let rows: Vec<Row> = (1 + w * 5000..=(w + 1) * 5000)
            .map(|i| Row::new(i, 0))
            .collect();
        p.write(&format!("w{w}.csv"), &csv(&rows));
    }
    let children: Vec<_> = (0..writers)
        .map(|w| {
            let f = pipeline(
                &p,
                &format!("ice_conc{w}"),
                &format!("w{w}.csv"),
                "s.t",
                dest,
            );
            p.spawn(&["run", &f], &[])
        })
        .collect();
    let mut committed = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        if out.status.success() {
            committed += 1;
        } else {
            assert!(stderr.contains("other writers kept committing"), "{stderr}");
        }
    }
    assert!(committed >= 1);
    let v = read(&p, "s.t");
    assert_eq!(
        v["count"].as_i64().unwrap(),
        1 + committed * 5000,
        "{}",
        v["count"]
    );
    let ids: BTreeSet<i64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len() as i64, 1 + committed * 5000, "duplicate rows");
    // the snapshot chain is linear: each snapshot's parent is the one before
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len() as i64, 1 + committed);
    for pair in snaps.windows(2) {
        assert_eq!(pair[1]["parent"], pair[0]["id"]);
    }
    expect_totals(&v);
}

#[test]
fn cursor_state_commits_in_the_snapshot_and_a_killed_run_never_double_loads() {
    let mut pg = PgObjects::new();
    let t = unique("ice_src");
    pg.create(
        &format!(
            "CREATE TABLE {t} AS SELECT g AS id, 'n' || g AS name FROM generate_series(1, 200000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let p = Project::new();
    p.write(
        "pg.toml",
        &format!(
            "name = \"ice_pg\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"{t}\"\n\
             cursor = \"id\"\nbatch_rows = 5000\n[destination]\ntype = \"iceberg\"\n{CATALOG}\n\
             table = \"s.pg\"\n",
            pg_url()
        ),
    );
    // killed at some point: before its commit nothing is visible, after it everything is
    let mut child = p
        .command(&["run", "pg.toml"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    common::kill9(&mut child);
    p.pipe(&["run", "pg.toml"]).assert_ok();
    psql(&format!(
        "INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(200001, 200010) g"
    ));
    let out = p.pipe(&["run", "pg.toml", "--json"]).assert_ok();
    assert_eq!(out.json()["commit"]["rows_inserted"], 10, "{}", out.stdout);
    p.pipe(&["run", "pg.toml"]).assert_ok();
    let v = read(&p, "s.pg");
    assert_eq!(v["count"], 200_010);
    let ids: BTreeSet<i64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 200_010, "rows were loaded twice");
    assert!(
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["summary"]
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with("pipe.state."))),
        "no pipe.state.* key in any snapshot summary"
    );
    assert_eq!(summary(&v, "pipe.pipeline"), "ice_pg");
    drop(pg);
}

#[test]
fn a_postgres_catalog_works_too() {
    let catalog = unique("pipe_cat");
    let p = Project::new();
    p.write("a.csv", &csv(&[Row::new(1, 0), Row::new(2, 0)]));
    p.write(
        "pgcat.toml",
        &format!(
            "name = \"ice_pgcat\"\n[source]\ntype = \"file\"\npath = \"a.csv\"\n{TYPES}\n\
             [destination]\ntype = \"iceberg\"\ncatalog = {{ type = \"sql\", uri = \"{}\", \
             warehouse = \"wh\", name = \"{catalog}\" }}\ntable = \"s.t\"\nmode = \"merge\"\nmerge_keys = [\"id\"]\n",
            pg_url()
        ),
    );
    p.pipe(&["run", "pgcat.toml"]).assert_ok();
    p.write("a.csv", &csv(&[Row::new(2, 5), Row::new(3, 0)]));
    p.pipe(&["run", "pgcat.toml"]).assert_ok();
    let location = psql(&format!(
        "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = '{catalog}' AND table_name = 't'"
    ));
    psql(&format!(
        "DELETE FROM iceberg_tables WHERE catalog_name = '{catalog}'"
    ));
    psql(&format!(
        "DELETE FROM iceberg_namespace_properties WHERE catalog_name = '{catalog}'"
    ));
    let (ok, v) = py_in(p.path(), "ice.py", &["static", &location]);
    assert!(ok, "{v}");
    let mut reference = BTreeMap::new();
    for r in [Row::new(1, 0), Row::new(2, 5), Row::new(3, 0)] {
        reference.insert(r.id, r);
    }
    expect_rows(&v, &reference, "postgres catalog");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 2);
}
