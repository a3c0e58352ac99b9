//! `pipe table …` on Iceberg and DuckDB (Delta's are in delta_ops.rs): history with the same
//! columns everywhere, time-travel inspect, vacuum (expiring snapshots and deleting only their
//! files, orphans), optimize (compaction with identical rows, racing an append), restore —
//! each checked with pyiceberg / python duckdb and the files on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::BTreeSet;

use common::iceberg::{CATALOG, files, read};
use common::rows::{Row, csv, on_disk};
use common::{Project, py_in};
use serde_json::Value;

const TABLE: &str = "ns.t";

/// A pipeline appending `a.csv` to the Iceberg table (one data file per run).
fn appender(p: &Project) -> String {
    p.write(
        "app.toml",
        &format!(
            "name = \"app\"\n[source]\ntype = \"file\"\npath = \"a.csv\"\n\
             column_types = {{ amount = \"decimal(10,2)\", ts = \"timestamptz\" }}\n\
             [destination]\ntype = \"iceberg\"\n{CATALOG}\ntable = \"{TABLE}\"\nwriters = 1\n"
        ),
    );
    "app.toml".to_string()
}

fn append(p: &Project, f: &str, ids: std::ops::Range<i64>) {
    let rows: Vec<Row> = ids.map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&rows));
    p.pipe(&["run", f]).assert_ok();
}

fn table_json(p: &Project, args: &[&str]) -> Value {
    let mut all = vec!["table"];
    all.extend_from_slice(args);
    all.push("--json");
    p.pipe(&all).assert_ok().json()
}

fn snapshot_ids(v: &Value) -> Vec<i64> {
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect()
}

fn read_at(p: &Project, snapshot: i64) -> Value {
    let (ok, v) = py_in(
        p.path(),
        "ice.py",
        &[
            "read",
            "cat/catalog.db",
            "wh",
            TABLE,
            "--order",
            "id",
            "--snapshot",
            &snapshot.to_string(),
        ],
    );
    assert!(ok, "pyiceberg could not read snapshot {snapshot}: {v}");
    v
}

#[test]
fn iceberg_history_inspect_and_vacuum_keep_what_remaining_snapshots_need() {
    let p = Project::new();
    let f = appender(&p);
    for run in 0..4 {
        append(&p, &f, run * 10..run * 10 + 10);
    }
    let v = read(&p, TABLE);
    let snaps = snapshot_ids(&v);
    assert_eq!(snaps.len(), 4);

    // history: newest first, the same typed columns as every destination
    let h = table_json(&p, &["history", &f]);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 4);
    assert_eq!(h[0]["rows"], 40, "{h:?}");
    assert_eq!(h[3]["rows"], 10);
    assert_eq!(h[0]["pipeline"], "app");
    assert!(h[0]["run_id"].is_string());
    assert_eq!(h[0]["current"], true);

    // time travel: inspect at the second snapshot agrees with pyiceberg reading it
    let at = snaps[1].to_string();
    let info = table_json(&p, &["inspect", &f, "--at", &at]);
    assert_eq!(info["rows"], 20, "{info}");
    assert_eq!(info["commits"].as_array().unwrap().len(), 2);
    assert_eq!(read_at(&p, snaps[1])["count"], 20);
    let target = format!("iceberg:sqlite://cat/catalog.db#{TABLE}");
    let same = table_json(&p, &["inspect", &target, "--at", &at]);
    assert_eq!(same["rows"], 20, "located by catalog and name: {same}");

    // vacuum, dry: lists the expired snapshots' own files, deletes nothing
    let disk = on_disk(&p.path().join("wh"));
    let dry = table_json(
        &p,
        &[
            "vacuum",
            &f,
            "--older-than",
            "0s",
            "--retain-last",
            "2",
            "--dry-run",
        ],
    );
    assert_eq!(dry["commits_removed"], 2, "{dry}");
    assert_eq!(
        on_disk(&p.path().join("wh")),
        disk,
        "a dry run deletes nothing"
    );
    // data files stay: every appended file is still live in the newest snapshot
    let doomed: Vec<&str> = dry["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(doomed.iter().all(|d| d.contains("/snap-")), "{doomed:?}");
    // appends carry earlier manifests over: only the two expired manifest lists are theirs
    assert_eq!(doomed.len(), 2, "{doomed:?}");

    let done = table_json(
        &p,
        &["vacuum", &f, "--older-than", "0s", "--retain-last", "2"],
    );
    assert_eq!(done["deleted"], dry["deleted"]);
    let after = read(&p, TABLE);
    assert_eq!(snapshot_ids(&after), snaps[2..].to_vec());
    assert_eq!(
        after["checksum"], v["checksum"],
        "the current rows are untouched"
    );
    assert_eq!(
        read_at(&p, snaps[2])["count"],
        30,
        "a kept snapshot still reads"
    );
    for d in doomed {
        assert!(
            !std::path::Path::new(d.trim_start_matches("file://")).exists(),
            "{d}"
        );
    }
}

#[test]
fn iceberg_vacuum_deletes_replaced_files_and_old_orphans_only() {
    let p = Project::new();
    let f = appender(&p);
    append(&p, &f, 0..10);
    append(&p, &f, 10..20);
    // replace: the two appended files leave the current snapshot
    p.write(
        "rep.toml",
        &p.read(&f)
            .replace("name = \"app\"", "name = \"rep\"")
            .replace("writers = 1", "writers = 1\nmode = \"replace\""),
    );
    append(&p, "rep.toml", 100..105);
    let live = files(&read(&p, TABLE));
    // orphans: an old junk file under data/, and a young one
    let data = p.path().join("wh/ns/t/data");
    std::fs::write(data.join("junk-old.parquet"), b"x").unwrap();
    std::fs::write(data.join("junk-new.parquet"), b"x").unwrap();
    let old = data.join("junk-old.parquet");
    assert!(
        std::process::Command::new("touch")
            .args(["-d", "2 days ago"])
            .arg(&old)
            .status()
            .unwrap()
            .success()
    );
    let done = table_json(
        &p,
        &[
            "vacuum",
            &f,
            "--older-than",
            "0s",
            "--orphans",
            "--retain-last",
            "1",
        ],
    );
    let deleted: BTreeSet<String> = done["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert!(
        deleted.iter().any(|d| d.ends_with("junk-old.parquet")),
        "{deleted:?}"
    );
    assert!(
        deleted.iter().any(|d| d.ends_with("junk-new.parquet")),
        "0s makes it old too"
    );
    let after = read(&p, TABLE);
    assert_eq!(after["count"], 5);
    assert_eq!(files(&after), live, "live files are kept");
    let parquet: Vec<String> = on_disk(&p.path().join("wh"))
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert_eq!(
        parquet.len(),
        live.len(),
        "only live data files are left: {parquet:?}"
    );

    // an orphan younger than the cut-off stays
    std::fs::write(data.join("junk-young.parquet"), b"x").unwrap();
    let kept = table_json(&p, &["vacuum", &f, "--older-than", "1h", "--orphans"]);
    assert_eq!(kept["deleted"].as_array().unwrap().len(), 0, "{kept}");
    assert!(data.join("junk-young.parquet").exists());
}

#[test]
fn iceberg_optimize_compacts_with_identical_rows_and_races_an_append_safely() {
    let p = Project::new();
    let f = appender(&p);
    for run in 0..12 {
        append(&p, &f, run * 5..run * 5 + 5);
    }
    let before = read(&p, TABLE);
    assert_eq!(files(&before).len(), 12);
    let dry = table_json(&p, &["optimize", &f, "--dry-run"]);
    assert_eq!(dry["files_removed"], 12, "{dry}");
    assert_eq!(
        files(&read(&p, TABLE)).len(),
        12,
        "a dry run changes nothing"
    );

    let o = table_json(&p, &["optimize", &f]);
    assert_eq!(o["files_removed"], 12, "{o}");
    assert_eq!(o["files_added"], 1);
    let after = read(&p, TABLE);
    assert_eq!(after["checksum"], before["checksum"]);
    assert_eq!(files(&after).len(), 1);
    let h = table_json(&p, &["history", &f, "--limit", "1"]);
    assert_eq!(h[0]["operation"], "replace", "{h}");
    assert_eq!(h[0]["rows"], 60);

    // a compaction and appends at the same time: neither loses the other's rows
    for run in 12..24 {
        append(&p, &f, run * 5..run * 5 + 5);
    }
    let mut optimize = p
        .command(&["table", "optimize", &f, "--json"], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for run in 24..28 {
        append(&p, &f, run * 5..run * 5 + 5);
    }
    let out = optimize.wait().unwrap();
    assert!(out.success());
    let v = read(&p, TABLE);
    let ids: Vec<i64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..140).collect::<Vec<_>>(), "every row once");
}

#[test]
fn iceberg_restore_points_main_back_and_the_table_goes_on_from_there() {
    let p = Project::new();
    let f = appender(&p);
    append(&p, &f, 0..10);
    append(&p, &f, 10..20);
    append(&p, &f, 20..30);
    let snaps = snapshot_ids(&read(&p, TABLE));
    let r = table_json(&p, &["restore", &f, "--to", &snaps[0].to_string()]);
    assert_eq!(r["commit_id"], snaps[0].to_string(), "{r}");
    let v = read(&p, TABLE);
    assert_eq!(v["count"], 10);
    assert_eq!(v["current"], snaps[0]);
    append(&p, &f, 100..105);
    assert_eq!(read(&p, TABLE)["count"], 15);
    p.pipe(&["table", "restore", &f, "--to", "12345"])
        .assert_failed()
        .stderr_has("no commit `12345`");
}

#[test]
fn duckdb_history_is_the_run_ledger_and_inspect_reads_the_catalog() {
    let p = Project::new();
    p.pipe(&["run", "pipelines/orders.toml"]).assert_ok();
    let update = p
        .path()
        .join("pipelines/data/orders_update.csv")
        .display()
        .to_string();
    p.pipe_env(
        &["run", "pipelines/orders.toml"],
        &[("ORDERS_FILE", update.as_str())],
    )
    .assert_ok();
    let h = table_json(&p, &["history", "pipelines/orders.toml"]);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0]["rows"], 5200);
    assert_eq!(h[1]["rows"], 5000);
    assert_eq!(h[0]["operation"], "merge");
    assert_eq!(h[0]["summary"]["rows_updated"], "300");
    let target = "duckdb:.pipe/pipe.duckdb#sales.orders";
    let info = table_json(&p, &["inspect", target]);
    assert_eq!(info["rows"], 5200, "{info}");
    assert_eq!(info["columns"].as_array().unwrap().len(), 10);
    p.pipe(&["table", "inspect", target, "--at", "x"])
        .assert_failed()
        .stderr_has("keeps no earlier versions");
    p.pipe(&["table", "vacuum", target])
        .assert_failed()
        .stderr_has("no `vacuum` operation");
}
