//! Delta table operations and guarantees end to end: time travel, restore, optimize, vacuum
//! and maintenance; exactly-once state in the log; concurrent writers; bad input leaving the
//! log and the disk untouched; interop with python `deltalake` writing the same table.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use common::delta::*;
use common::{PgObjects, Project, pg_url, psql, unique};
use serde_json::Value;

fn ids(v: &Value) -> Vec<i64> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// Three appends of 10 rows each, one file per run: versions 0, 1, 2.
fn three_versions(p: &Project, t: &str) -> String {
    let mut file = String::new();
    for run in 0..3 {
        let rows: Vec<Row> = (run * 10 + 1..=run * 10 + 10)
            .map(|i| Row::new(i, 0))
            .collect();
        p.write("a.csv", &csv(&rows));
        file = pipeline(p, "dl_ops", "a.csv", t, "writers = 1");
        p.pipe(&["run", &file]).assert_ok();
    }
    file
}

#[test]
fn time_travel_restore_optimize_and_vacuum() {
    let p = Project::new();
    let t = "lake/t";
    three_versions(&p, t);
    let abs = p.path().join(t);
    let path = abs.to_str().unwrap();

    // time travel: version 0 has the first run's rows, by pipe and by deltalake
    let v0 = table_json(&p, "inspect", path, &["--at", "0"]);
    assert_eq!(v0["rows"], 10, "{v0}");
    assert_eq!(v0["files"], 1);
    assert_eq!(ids(&read_version(&p, t, 0)), (1..=10).collect::<Vec<_>>());
    let now = table_json(&p, "inspect", path, &[]);
    assert_eq!(now["rows"], 30);
    assert_eq!(now["commits"].as_array().unwrap().len(), 3);

    // restore brings version 1's rows back, as a new version
    let r = table_json(&p, "restore", path, &["--to", "1"]);
    assert_eq!(r["commit_id"], "3", "{r}");
    let v = read(&p, t);
    assert_eq!(ids(&v), (1..=20).collect::<Vec<_>>());
    assert_eq!(last(&v)["operation"], "RESTORE");

    // optimize: fewer files, the same rows
    let before = read(&p, t);
    assert_eq!(before["files"].as_array().unwrap().len(), 2);
    let o = table_json(&p, "optimize", path, &[]);
    assert_eq!(o["files_removed"], 2, "{o}");
    assert_eq!(o["files_added"], 1);
    let after = read(&p, t);
    assert_eq!(after["files"].as_array().unwrap().len(), 1);
    assert_eq!(after["checksum"], before["checksum"]);
    assert_eq!(last(&after)["operation"], "OPTIMIZE");

    // vacuum: the retention is enforced, young files are kept, old unreferenced ones go
    let target = format!("delta:{path}");
    p.pipe(&["table", "vacuum", &target, "--older-than", "0s"])
        .assert_failed()
        .stderr_has("retention");
    let kept = table_json(
        &p,
        "vacuum",
        path,
        &["--older-than", "1h", "--no-enforce-retention"],
    );
    assert_eq!(kept["deleted"].as_array().unwrap().len(), 0, "{kept}");
    let dry = vacuum_now(&p, path, true, &[]);
    // the three appended files are no longer referenced (restore removed one, optimize two)
    assert_eq!(dry["deleted"].as_array().unwrap().len(), 3, "{dry}");
    let disk_before = parquet_files(&p, t);
    assert_eq!(disk_before.len(), 4);
    let done = vacuum_now(&p, path, false, &[]);
    assert_eq!(done["deleted"], dry["deleted"]);
    let live: BTreeSet<String> = read(&p, t)["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(parquet_files(&p, t), live, "only the live file is left");
    assert_eq!(read(&p, t)["checksum"], before["checksum"]);

    // history lists every commit with the operation
    let h = table_json(&p, "history", path, &[]);
    let ops: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops[..5],
        ["VACUUM END", "VACUUM START", "OPTIMIZE", "RESTORE", "WRITE"]
    );
}

fn parquet_files(p: &Project, t: &str) -> BTreeSet<String> {
    on_disk(&p.path().join(t))
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .map(|f| f.rsplit('/').next().unwrap().to_string())
        .collect()
}

#[test]
fn maintenance_optimizes_every_n_runs() {
    let p = Project::new();
    let t = "lake/t";
    let f = pipeline(
        &p,
        "dl_maint",
        "a.csv",
        t,
        "writers = 1\n[destination.maintenance]\noptimize_every_runs = 2",
    );
    for run in 0..2 {
        p.write("a.csv", &csv(&[Row::new(run, 0), Row::new(run + 10, 0)]));
        p.pipe(&["run", &f]).assert_ok();
    }
    let v = read(&p, t);
    assert_eq!(operations(&v), ["CREATE TABLE", "WRITE", "OPTIMIZE"]);
    assert_eq!(v["files"].as_array().unwrap().len(), 1);
    assert_eq!(v["count"], 4);
}

#[test]
fn cursor_state_commits_with_the_data_and_committed_windows_are_never_rerun() {
    let mut pg = PgObjects::new();
    let t = unique("dl_src");
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
            "name = \"dl_pg\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"{t}\"\n\
             cursor = \"id\"\nbatch_rows = 5000\n[destination]\ntype = \"delta\"\n\
             path = \"lake/pg\"\n",
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
    let v = read_app(&p, "lake/pg", "dl_pg");
    assert_eq!(v["count"], 200_010);
    assert_eq!(
        ids(&v).into_iter().collect::<BTreeSet<_>>().len(),
        200_010,
        "loaded twice"
    );
    let head = last(&v);
    let cursor: Value = serde_json::from_str(head["state"]["cursor.id"].as_str().unwrap()).unwrap();
    assert_eq!(cursor["value"], "200010", "{head}");
    assert_eq!(v["txn"], head["run_seq"]);

    // a backfill: each window is one commit; running it again commits nothing
    let before = read(&p, "lake/pg")["version"].clone();
    let args = [
        "backfill", "pg.toml", "--from", "1", "--to", "30001", "--step", "10000",
    ];
    p.pipe(&args).assert_ok();
    let v = read(&p, "lake/pg");
    let windows = v["version"].as_i64().unwrap() - before.as_i64().unwrap();
    assert_eq!(windows, 3, "one commit per window");
    p.pipe(&args).assert_ok();
    assert_eq!(
        read(&p, "lake/pg")["version"],
        v["version"],
        "a committed window ran again"
    );
    drop(pg);
}

#[test]
fn concurrent_writers_commit_after_retrying_and_the_log_stays_linear() {
    let p = Project::new();
    let t = "lake/t";
    p.write("seed.csv", &csv(&[Row::new(0, 0)]));
    let seed = pipeline(&p, "dl_seed", "seed.csv", t, "");
    p.pipe(&["run", &seed]).assert_ok();
    let writers = 4;
    for w in 0..writers {
        let rows: Vec<Row> = (1 + w * 5000..=(w + 1) * 5000)
            .map(|i| Row::new(i, 0))
            .collect();
        p.write(&format!("w{w}.csv"), &csv(&rows));
    }
    // four pipelines, plus a second project running the same pipeline name: its txn races
    let files: Vec<String> = (0..writers)
        .map(|w| pipeline(&p, &format!("dl_conc{w}"), &format!("w{w}.csv"), t, ""))
        .collect();
    run_concurrently(&p, &files, &[]);
    let v = read(&p, t);
    assert_eq!(v["count"], 1 + writers * 5000);
    assert_eq!(
        ids(&v).into_iter().collect::<BTreeSet<_>>().len() as i64,
        1 + writers * 5000
    );
    assert_eq!(
        versions(&v),
        (0..=writers).collect::<Vec<_>>(),
        "the log is linear"
    );
    let pipelines: BTreeSet<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["pipeline"].as_str().unwrap())
        .collect();
    assert_eq!(pipelines.len() as i64, 1 + writers);
}

#[test]
fn the_same_pipeline_from_two_places_never_reuses_a_run_sequence() {
    let a = Project::new();
    let b = Project::new();
    let table = a.path().join("lake/t");
    let t = table.to_str().unwrap();
    for (i, p) in [&a, &b].iter().enumerate() {
        let rows: Vec<Row> = (i as i64 * 1000 + 1..=i as i64 * 1000 + 1000)
            .map(|n| Row::new(n, 0))
            .collect();
        p.write("a.csv", &csv(&rows));
        pipeline(p, "dl_twice", "a.csv", t, "");
    }
    a.pipe(&["run", "dl_twice.toml"]).assert_ok();
    let children: Vec<_> = [&a, &b]
        .iter()
        .map(|p| p.spawn(&["run", "dl_twice.toml"], &[]))
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v = read_app(&a, t, "dl_twice");
    assert_eq!(v["count"], 3000);
    let seqs: Vec<i64> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["run_seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "each run has its own sequence number");
    assert_eq!(v["txn"], 3);
}

#[test]
fn bad_input_leaves_the_log_and_the_disk_untouched() {
    let p = Project::new();
    let t = "lake/t";
    let rows: Vec<Row> = (1..=3).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&rows));
    let f = pipeline(&p, "dl_bad", "a.csv", t, "");
    p.pipe(&["run", &f]).assert_ok();
    let before = read(&p, t);
    let disk = on_disk(&p.path().join(t));

    // a malformed row after 30k good ones: files were written, then deleted
    let big: Vec<Row> = (100..30_100).map(|i| Row::new(i, 0)).collect();
    let mut text = csv(&big);
    text.push_str("oops,x,not-a-number,eu,2024-03-01T10:00:00Z\n");
    p.write("a.csv", &text);
    p.pipe(&["run", &f]).assert_failed();
    assert_eq!(read(&p, t)["checksum"], before["checksum"]);
    assert_eq!(on_disk(&p.path().join(t)), disk, "files were left behind");

    // an invalid predicate, a predicate on a missing column, replace_where outside replace
    p.write("a.csv", &csv(&rows));
    for (dest, needle) in [
        (
            "mode = \"replace\"\nreplace_where = \"region = \"",
            "replace_where",
        ),
        ("mode = \"replace\"\nreplace_where = \"nope = 1\"", "nope"),
        (
            "replace_where = \"id > 1\"",
            "only applies to mode = \"replace\"",
        ),
        ("mode = \"merge\"\nmerge_keys = [\"nope\"]", "nope"),
        ("compression = \"brotli(99)\"", "compression"),
    ] {
        let f = pipeline(&p, "dl_badcfg", "a.csv", t, dest);
        p.pipe(&["run", &f]).assert_failed().stderr_has(needle);
    }
    // a type the table cannot take under freeze
    p.write(
        "b.csv",
        "id,name,amount,region,ts\nx,y,1.00,eu,2024-03-01T10:00:00Z\n",
    );
    p.write(
        "frozen.toml",
        &format!(
            "name = \"dl_frozen\"\n[source]\ntype = \"file\"\npath = \"b.csv\"\n{TYPES}\n\
             [metadata]\nschema_evolution = \"freeze\"\n[destination]\ntype = \"delta\"\n\
             path = \"{t}\"\n"
        ),
    );
    p.pipe(&["run", "frozen.toml"])
        .assert_failed()
        .stderr_has("id");
    assert_eq!(read(&p, t)["checksum"], before["checksum"]);
    assert_eq!(read(&p, t)["version"], before["version"]);
    assert_eq!(on_disk(&p.path().join(t)), disk, "files were left behind");

    // a path that cannot be a directory
    p.write("file", "x");
    let f = pipeline(&p, "dl_nowrite", "a.csv", "file/t", "");
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("cannot create the table directory");
    // not a table
    let nothing = format!("delta:{}", p.path().join("nothing").display());
    p.pipe(&["table", "history", &nothing])
        .assert_failed()
        .stderr_has("no Delta table");
}

#[test]
fn tables_written_by_python_deltalake_take_merges_from_pipe_and_vice_versa() {
    let p = Project::new();
    let t = "lake/py";
    let mut reference = BTreeMap::new();
    let first: Vec<Row> = (1..=5).map(|i| Row::new(i, 0)).collect();
    py_write(&p, t, "append", &first);
    reference.extend(first.iter().map(|r| (r.id, r.clone())));
    let rows: Vec<Row> = (4..=8).map(|i| Row::new(i, 1)).collect();
    p.write("m.csv", &csv(&rows));
    let f = pipeline(
        &p,
        "dl_interop",
        "m.csv",
        t,
        "mode = \"merge\"\nmerge_keys = [\"id\"]",
    );
    p.pipe(&["run", &f]).assert_ok();
    reference.extend(rows.iter().map(|r| (r.id, r.clone())));
    expect_rows(
        &read(&p, t),
        &reference,
        "pipe merge into a deltalake table",
    );

    let up: Vec<Row> = (7..=10).map(|i| Row::new(i, 2)).collect();
    py_write(&p, t, "upsert", &up);
    reference.extend(up.iter().map(|r| (r.id, r.clone())));
    let more: Vec<Row> = (11..=12).map(|i| Row::new(i, 3)).collect();
    p.write("m.csv", &csv(&more));
    p.pipe(&["run", &f]).assert_ok();
    reference.extend(more.iter().map(|r| (r.id, r.clone())));
    let v = read_app(&p, t, "dl_interop");
    expect_rows(&v, &reference, "after a deltalake upsert and a pipe merge");
    assert_eq!(v["txn"], 2);
}
