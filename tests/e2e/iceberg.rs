//! The Iceberg destination end to end: every write mode on unpartitioned and partitioned
//! tables, merges against a reference, every type, schema evolution — each read back by
//! pyiceberg 0.12's SqlCatalog (tests/interop/ice.py), the independent reader.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::iceberg::*;
use common::{Project, py_in};
use serde_json::Value;

fn modes_on(layout: &str) {
    let p = Project::new();
    let t = "sales.orders";
    let mut reference = BTreeMap::new();

    // append, twice
    let first: Vec<Row> = (1..=6).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&first));
    let f = pipeline(
        &p,
        "ice_append",
        "a.csv",
        t,
        &format!("mode = \"append\"\n{layout}"),
    );
    p.pipe(&["run", &f]).assert_ok();
    reference.extend(first.iter().map(|r| (r.id, r.clone())));
    let v = read(&p, t);
    expect_rows(&v, &reference, "first append");
    assert_eq!(operation(&v), "append");
    assert_eq!(summary(&v, "pipe.pipeline"), "ice_append");
    assert!(!summary(&v, "pipe.run-id").is_empty());
    expect_totals(&v);
    let second: Vec<Row> = (7..=9).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&second));
    p.pipe(&["run", &f]).assert_ok();
    reference.extend(second.iter().map(|r| (r.id, r.clone())));
    let v = read(&p, t);
    expect_rows(&v, &reference, "second append");
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 2);
    expect_totals(&v);

    // replace: the run's rows become the table
    let replaced: Vec<Row> = (20..=24).map(|i| Row::new(i, 1)).collect();
    p.write("r.csv", &csv(&replaced));
    let f = pipeline(
        &p,
        "ice_replace",
        "r.csv",
        t,
        &format!("mode = \"replace\"\n{layout}"),
    );
    let out = p.pipe(&["run", &f, "--json"]).assert_ok();
    assert_eq!(out.json()["commit"]["rows_deleted"], 9, "{}", out.stdout);
    reference = replaced.iter().map(|r| (r.id, r.clone())).collect();
    let v = read(&p, t);
    expect_rows(&v, &reference, "replace");
    assert_eq!(operation(&v), "overwrite");
    assert_eq!(summary(&v, "deleted-records"), "9");
    expect_totals(&v);

    // merge: five runs of inserts, updates and duplicate keys (the last occurrence wins)
    let f = pipeline(
        &p,
        "ice_merge",
        "m.csv",
        t,
        &format!("mode = \"merge\"\nmerge_keys = [\"id\"]\n{layout}"),
    );
    for run in 0..5u32 {
        let base = 20 + i64::from(run) * 3;
        let mut rows: Vec<Row> = (base..base + 6).map(|i| Row::new(i, 10 + run)).collect();
        rows.push(Row::new(base + 1, 50 + run)); // duplicate key: this one wins
        p.write("m.csv", &csv(&rows));
        p.pipe(&["run", &f]).assert_ok();
        for r in rows {
            reference.insert(r.id, r);
        }
        let v = read(&p, t);
        expect_rows(&v, &reference, &format!("merge run {run}"));
        assert_eq!(operation(&v), "overwrite");
        expect_totals(&v);
    }
}

#[test]
fn every_mode_on_an_unpartitioned_table() {
    modes_on("");
}

#[test]
fn every_mode_on_a_table_partitioned_by_identity_and_day() {
    modes_on(r#"partition_by = ["region", "day(ts)"]"#);
}

#[test]
fn every_mode_on_a_bucketed_table_with_a_sort_order() {
    modes_on(
        r#"partition_by = ["bucket(4, id)", "truncate(2, name)"]
sort_order = ["id desc"]"#,
    );
}

#[test]
fn partition_spec_and_sort_order_are_what_pyiceberg_sees() {
    let p = Project::new();
    p.write("a.csv", &csv(&[Row::new(1, 0), Row::new(2, 0)]));
    let f = pipeline(
        &p,
        "ice_spec",
        "a.csv",
        "s.t",
        "partition_by = [\"region\", \"month(ts)\", \"bucket[8](id)\"]\nsort_order = [\"name desc nulls last\"]",
    );
    p.pipe(&["run", &f]).assert_ok();
    let v = read(&p, "s.t");
    let spec = v["spec"].as_str().unwrap();
    assert!(
        spec.contains("region") && spec.contains("month") && spec.contains("bucket[8]"),
        "{spec}"
    );
    let order = v["sort_order"].as_str().unwrap();
    assert!(
        order.contains("DESC") && order.contains("NULLS LAST"),
        "{order}"
    );
    assert_eq!(v["count"], 2);
    // one directory per partition value
    assert!(
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("region=us")),
        "{v}"
    );
}

#[test]
fn replace_partitions_only_touches_the_partitions_written() {
    let p = Project::new();
    let all: Vec<Row> = (1..=9).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&all));
    let layout = "partition_by = [\"region\"]";
    let f = pipeline(
        &p,
        "ice_rp_a",
        "a.csv",
        "s.t",
        &format!("mode = \"append\"\n{layout}"),
    );
    p.pipe(&["run", &f]).assert_ok();
    // new rows for region `eu` only (ids ≡ 0 mod 3)
    let eu: Vec<Row> = [30, 33].iter().map(|&i| Row::new(i, 1)).collect();
    assert!(eu.iter().all(|r| r.region == "eu"));
    p.write("eu.csv", &csv(&eu));
    let f = pipeline(
        &p,
        "ice_rp",
        "eu.csv",
        "s.t",
        &format!("mode = \"replace\"\nreplace_partitions = true\n{layout}"),
    );
    p.pipe(&["run", &f]).assert_ok();
    let mut reference: BTreeMap<i64, Row> = all
        .into_iter()
        .filter(|r| r.region != "eu")
        .map(|r| (r.id, r))
        .collect();
    reference.extend(eu.into_iter().map(|r| (r.id, r)));
    let v = read(&p, "s.t");
    expect_rows(&v, &reference, "replace_partitions");
    assert_eq!(summary(&v, "replace-partitions"), "true");
    expect_totals(&v);
}

#[test]
fn merge_rewrites_only_the_files_holding_incoming_keys() {
    let p = Project::new();
    let f = pipeline(&p, "ice_files", "a.csv", "s.t", "mode = \"append\"");
    let mut reference = BTreeMap::new();
    let mut files_of_run = Vec::new();
    for run in 0..3i64 {
        let rows: Vec<Row> = (run * 100 + 1..=run * 100 + 100)
            .map(|i| Row::new(i, 0))
            .collect();
        p.write("a.csv", &csv(&rows));
        let before: BTreeSet<String> = if run == 0 {
            BTreeSet::new()
        } else {
            files(&read(&p, "s.t"))
        };
        p.pipe(&["run", &f]).assert_ok();
        let after = files(&read(&p, "s.t"));
        files_of_run.push(after.difference(&before).cloned().collect::<BTreeSet<_>>());
        reference.extend(rows.into_iter().map(|r| (r.id, r)));
    }
    let changes = vec![Row::new(150, 7), Row::new(160, 7), Row::new(999, 7)];
    p.write("m.csv", &csv(&changes));
    let m = pipeline(
        &p,
        "ice_files_m",
        "m.csv",
        "s.t",
        "mode = \"merge\"\nmerge_keys = [\"id\"]",
    );
    let out = p.pipe(&["run", &m, "--json"]).assert_ok();
    let summary_json = out.json();
    assert_eq!(summary_json["commit"]["rows_updated"], 2, "{}", out.stdout);
    assert_eq!(summary_json["commit"]["rows_inserted"], 1, "{}", out.stdout);
    reference.extend(changes.into_iter().map(|r| (r.id, r)));
    let v = read(&p, "s.t");
    expect_rows(&v, &reference, "merge");
    let now = files(&v);
    assert!(
        files_of_run[0].is_subset(&now),
        "run 1's file was rewritten"
    );
    assert!(
        files_of_run[2].is_subset(&now),
        "run 3's file was rewritten"
    );
    assert!(
        files_of_run[1].is_disjoint(&now),
        "run 2's file was not rewritten"
    );
    assert_eq!(summary(&v, "deleted-data-files"), "1");

    // pipe inspect agrees with pyiceberg
    let info = p.pipe(&["inspect", &m, "--json"]).assert_ok().json();
    assert_eq!(info["rows"], v["count"]);
    assert_eq!(info["files"].as_u64().unwrap() as usize, now.len());
    let commits = info["commits"].as_array().unwrap();
    assert_eq!(commits.len(), v["snapshots"].as_array().unwrap().len());
    assert_eq!(commits.last().unwrap()["id"], v["current"].to_string());
    assert_eq!(commits.last().unwrap()["operation"], "overwrite");
    assert!(commits.last().unwrap()["current"].as_bool().unwrap());
    let named_ids = |cols: &Value| -> Vec<(String, i64)> {
        cols.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().into(),
                    c["id"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let (columns, expected) = (named_ids(&info["columns"]), named_ids(&v["schema"]));
    assert_eq!(columns, expected);
    p.pipe(&["inspect", &m])
        .assert_ok()
        .stdout_has("overwrite")
        .stdout_has("ice_files_m");
}

#[test]
fn every_type_of_the_skeleton_round_trips_through_pyiceberg() {
    let p = Project::types_fixture();
    // every mode, unpartitioned and partitioned by a date: the table equals the file
    let layouts = [
        ("t.types", ""),
        ("t.types_p", "partition_by = [\"day\", \"bucket(2, id)\"]"),
    ];
    let modes = [
        ("append", ""),
        ("merge", "merge_keys = [\"id\"]"),
        ("merge", "merge_keys = [\"id\"]"),
        ("replace", ""),
    ];
    for (table, layout) in layouts {
        for (n, (mode, keys)) in modes.iter().enumerate() {
            let name = format!("ice_types_{}_{n}", table.replace('.', "_"));
            p.write(
                "types.toml",
                &format!(
                    "name = \"{name}\"\n[source]\ntype = \"file\"\npath = \"fx/types.parquet\"\n\
                     [destination]\ntype = \"iceberg\"\n{CATALOG}\ntable = \"{table}\"\n\
                     mode = \"{mode}\"\n{keys}\n{layout}\n"
                ),
            );
            p.pipe(&["run", "types.toml"]).assert_ok();
            let (ok, v) = py_in(
                p.path(),
                "ice.py",
                &["compare", "cat/catalog.db", "wh", table, "fx/types.parquet"],
            );
            assert!(ok, "{table} after {mode} #{n}: {v}");
            assert_eq!(v["types"]["tstz"], "timestamptz", "{v}");
            assert_eq!(v["types"]["ts"], "timestamp", "{v}");
            assert_eq!(v["types"]["price"], "decimal(38, 10)", "{v}");
            assert_eq!(v["types"]["id"], "long", "{v}");
            assert_eq!(v["types"]["i32"], "int", "{v}");
            assert_eq!(v["types"]["day"], "date", "{v}");
        }
    }
}

#[test]
fn new_columns_evolve_with_new_field_ids_and_freeze_rejects_them() {
    let p = Project::new();
    p.write("a.csv", "id,name\n1,a\n2,b\n");
    let f = untyped_pipeline(&p, "ice_evo", "a.csv", "s.evo", "");
    let f = f.as_str();
    p.pipe(&["run", f]).assert_ok();
    let before = read(&p, "s.evo");
    let max_id = before["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .max()
        .unwrap();
    p.write("a.csv", "id,name,score\n3,c,1.5\n");
    p.pipe(&["run", f]).assert_ok();
    let v = read(&p, "s.evo");
    let score = v["schema"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "score")
        .unwrap()
        .clone();
    assert!(score["id"].as_i64().unwrap() > max_id, "{v}");
    assert_eq!(score["type"], "double");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["score"], Value::Null);
    assert_eq!(rows[2]["score"], "1.5");
    assert!(v["schema_id"].as_i64().unwrap() > before["schema_id"].as_i64().unwrap());

    // freeze: a new column is rejected and nothing is committed
    p.write("a.csv", "id,name,score,extra\n4,d,2.5,x\n");
    let frozen = format!("{}\n[metadata]\nschema_evolution = \"freeze\"\n", p.read(f));
    p.write(f, &frozen);
    let disk = on_disk(&p.path().join("wh"));
    p.pipe(&["run", f]).assert_failed().stderr_has("extra");
    assert_untouched(&p, "s.evo", &v, &disk);
}

#[test]
fn the_example_orders_pipeline_merges_into_iceberg() {
    let p = Project::new();
    let f = "pipelines/orders_iceberg.toml";
    let first = p.pipe(&["run", f, "--json"]).assert_ok().json();
    assert_eq!(first["commit"]["rows_inserted"], 5000, "{first}");
    let again = p.pipe(&["run", f, "--json"]).assert_ok().json();
    assert_eq!(again["commit"]["rows_updated"], 5000, "{again}");
    let update = p
        .pipe_env(
            &["run", f, "--json"],
            &[("ORDERS_FILE", "pipelines/data/orders_update.csv")],
        )
        .assert_ok()
        .json();
    assert_eq!(update["commit"]["rows_inserted"], 200, "{update}");
    assert_eq!(update["commit"]["rows_updated"], 300, "{update}");
    let (ok, v) = py_in(
        p.path(),
        "ice.py",
        &[
            "read",
            ".pipe/catalog.db",
            ".pipe/warehouse",
            "sales.orders",
            "--order",
            "o_orderkey",
        ],
    );
    assert!(ok, "{v}");
    assert_eq!(v["count"], 5200);
    let keys: BTreeSet<i64> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["o_orderkey"].as_i64().unwrap())
        .collect();
    assert_eq!(keys.len(), 5200, "duplicate keys after merges");
    assert!(v["spec"].as_str().unwrap().contains("month"));
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 3);
    expect_totals(&v);
}
