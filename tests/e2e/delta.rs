//! The Delta destination end to end: every write mode on unpartitioned and partitioned
//! tables, merges against a reference, `replace_where`, every type, schema evolution — each
//! read back by python `deltalake` (tests/interop/delta.py), the independent reader.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::delta::*;
use common::{Project, py_in};
use serde_json::Value;

fn modes_on(layout: &str) {
    let p = Project::new();
    let t = "lake/orders";
    let mut reference = BTreeMap::new();

    // append, twice: one WRITE commit per run, txn version = run sequence
    let first: Vec<Row> = (1..=6).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&first));
    let f = pipeline(
        &p,
        "dl_append",
        "a.csv",
        t,
        &format!("mode = \"append\"\n{layout}"),
    );
    p.pipe(&["run", &f]).assert_ok();
    reference.extend(first.iter().map(|r| (r.id, r.clone())));
    let v = read_app(&p, t, "dl_append");
    expect_rows(&v, &reference, "first append");
    assert_eq!(v["txn"], 1, "{}", v["txn"]);
    assert_eq!(last(&v)["pipeline"], "dl_append");
    assert_eq!(last(&v)["run_seq"], 1);
    let second: Vec<Row> = (7..=9).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&second));
    p.pipe(&["run", &f]).assert_ok();
    reference.extend(second.iter().map(|r| (r.id, r.clone())));
    let v = read_app(&p, t, "dl_append");
    expect_rows(&v, &reference, "second append");
    assert_eq!(v["txn"], 2);
    assert_eq!(operations(&v), ["CREATE TABLE", "WRITE"]);
    assert_eq!(last(&v)["parameters"]["mode"], "Append");
    assert_eq!(last(&v)["metrics"]["numOutputRows"], 3);

    // replace: the run's rows become the table
    let replaced: Vec<Row> = (20..=24).map(|i| Row::new(i, 1)).collect();
    p.write("r.csv", &csv(&replaced));
    let f = pipeline(
        &p,
        "dl_replace",
        "r.csv",
        t,
        &format!("mode = \"replace\"\n{layout}"),
    );
    let out = p.pipe(&["run", &f, "--json"]).assert_ok();
    assert_eq!(out.json()["commit"]["rows_deleted"], 9, "{}", out.stdout);
    reference = replaced.iter().map(|r| (r.id, r.clone())).collect();
    let v = read_app(&p, t, "dl_replace");
    expect_rows(&v, &reference, "replace");
    assert_eq!(last(&v)["operation"], "WRITE");
    assert_eq!(last(&v)["parameters"]["mode"], "Overwrite");
    assert_eq!(v["txn"], 1);

    // merge: five runs of inserts, updates and duplicate keys (the last occurrence wins)
    let f = pipeline(
        &p,
        "dl_merge",
        "m.csv",
        t,
        &format!("mode = \"merge\"\nmerge_keys = [\"id\"]\n{layout}"),
    );
    for run in 0..5u32 {
        let base = 20 + i64::from(run) * 3;
        let mut rows: Vec<Row> = (base..base + 6).map(|i| Row::new(i, 10 + run)).collect();
        rows.push(Row::new(base + 1, 50 + run)); // duplicate key: this one wins
        p.write("m.csv", &csv(&rows));
        let out = p.pipe(&["run", &f, "--json"]).assert_ok();
        let updated = rows
            .iter()
            .map(|r| r.id)
            .collect::<BTreeSet<_>>()
            .iter()
            .filter(|id| reference.contains_key(id))
            .count();
        assert_eq!(
            out.json()["commit"]["rows_updated"],
            updated,
            "{}",
            out.stdout
        );
        for r in rows {
            reference.insert(r.id, r);
        }
        let v = read_app(&p, t, "dl_merge");
        expect_rows(&v, &reference, &format!("merge run {run}"));
        assert_eq!(last(&v)["operation"], "MERGE");
        assert_eq!(v["txn"], i64::from(run) + 1);
    }
    // one commit per run: 2 appends, 1 replace, 5 merges
    let v = read(&p, t);
    assert_eq!(
        v["history"].as_array().unwrap().len(),
        8,
        "{}",
        v["history"]
    );
    assert_eq!(v["version"], 7);
}

#[test]
fn every_mode_on_an_unpartitioned_table() {
    modes_on("");
}

#[test]
fn every_mode_on_a_partitioned_table() {
    modes_on(r#"partition_by = ["region"]"#);
}

#[test]
fn replace_where_replaces_only_its_partition() {
    let p = Project::new();
    let t = "lake/t";
    let all: Vec<Row> = (1..=30).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&all));
    let f = pipeline(&p, "dl_rw_seed", "a.csv", t, "partition_by = [\"region\"]");
    p.pipe(&["run", &f]).assert_ok();
    let before = read(&p, t);
    let outside: BTreeSet<String> = files(&before)
        .into_iter()
        .filter(|f| !f.contains("region=eu"))
        .collect();

    // new rows for `eu` only: ids 100.. with region eu (id % 3 == 0)
    let eu: Vec<Row> = (100..=130)
        .map(|i| Row::new(i, 1))
        .filter(|r| r.region == "eu")
        .collect();
    p.write("eu.csv", &csv(&eu));
    let f = pipeline(
        &p,
        "dl_rw",
        "eu.csv",
        t,
        "mode = \"replace\"\nreplace_where = \"region = 'eu'\"",
    );
    let out = p.pipe(&["run", &f, "--json"]).assert_ok();
    assert_eq!(out.json()["commit"]["rows_deleted"], 10, "{}", out.stdout);
    let mut reference: BTreeMap<i64, Row> = all
        .iter()
        .filter(|r| r.region != "eu")
        .map(|r| (r.id, r.clone()))
        .collect();
    reference.extend(eu.iter().map(|r| (r.id, r.clone())));
    let v = read(&p, t);
    expect_rows(&v, &reference, "replace_where");
    assert_eq!(last(&v)["parameters"]["predicate"], "region = 'eu'");
    // the other partitions' files are untouched
    let after = files(&v);
    assert!(outside.is_subset(&after), "{outside:?} vs {after:?}");

    // a row outside the predicate is refused and nothing is committed
    p.write("eu.csv", &csv(&[Row::new(300, 2), Row::new(301, 2)])); // eu, us
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("does not match replace_where");
    assert_eq!(read(&p, t)["version"], v["version"]);
}

#[test]
fn replace_where_on_a_data_column_rewrites_the_files_it_cuts() {
    let p = Project::new();
    let t = "lake/t";
    let all: Vec<Row> = (1..=20).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&all));
    let f = pipeline(&p, "dl_rwd_seed", "a.csv", t, "");
    p.pipe(&["run", &f]).assert_ok();
    let new: Vec<Row> = (11..=25).map(|i| Row::new(i, 1)).collect();
    p.write("n.csv", &csv(&new));
    let f = pipeline(
        &p,
        "dl_rwd",
        "n.csv",
        t,
        "mode = \"replace\"\nreplace_where = \"id > 10\"",
    );
    let out = p.pipe(&["run", &f, "--json"]).assert_ok();
    assert_eq!(out.json()["commit"]["rows_deleted"], 10, "{}", out.stdout);
    let mut reference: BTreeMap<i64, Row> =
        all.iter().take(10).map(|r| (r.id, r.clone())).collect();
    reference.extend(new.iter().map(|r| (r.id, r.clone())));
    expect_rows(&read(&p, t), &reference, "replace_where on id");
}

fn files(v: &Value) -> BTreeSet<String> {
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_type_survives_append_merge_and_replace() {
    let p = Project::types_fixture();
    for (i, layout) in ["", "partition_by = [\"day\"]"].iter().enumerate() {
        let t = format!("lake/types{i}");
        for (run, mode) in ["append", "merge", "merge", "replace"].iter().enumerate() {
            let f = format!("types{i}_{run}.toml");
            let keys = if *mode == "merge" {
                "merge_keys = [\"id\"]"
            } else {
                ""
            };
            p.write(
                &f,
                &format!(
                    "name = \"dl_types{i}\"\n[source]\ntype = \"file\"\npath = \"fx/types.parquet\"\n\
                     [destination]\ntype = \"delta\"\npath = \"{t}\"\nmode = \"{mode}\"\n\
                     {keys}\n{layout}\n"
                ),
            );
            p.pipe(&["run", &f]).assert_ok();
            let (ok, v) = py_in(p.path(), "delta.py", &["compare", &t, "fx/types.parquet"]);
            assert!(ok, "{mode} (run {run}, layout {layout:?}): {v}");
        }
        let (_, v) = py_in(p.path(), "delta.py", &["compare", &t, "fx/types.parquet"]);
        let types = &v["types"];
        assert!(
            types["tstz"].as_str().unwrap().ends_with("(\"timestamp\")"),
            "{types}"
        );
        assert!(
            types["ts"].as_str().unwrap().contains("timestamp_ntz"),
            "{types}"
        );
        assert!(types["price"].as_str().unwrap().contains("38"), "{types}");
    }
}

#[test]
fn evolve_adds_columns_and_freeze_refuses_before_writing() {
    let p = Project::new();
    let t = "lake/t";
    p.write("a.csv", "id,name\n1,a\n2,b\n");
    let f = |name: &str, policy: &str| {
        let file = format!("{name}.toml");
        p.write(
            &file,
            &format!(
                "name = \"{name}\"\n[source]\ntype = \"file\"\npath = \"a.csv\"\n\
                 [metadata]\nschema_evolution = \"{policy}\"\n\
                 [destination]\ntype = \"delta\"\npath = \"{t}\"\n"
            ),
        );
        file
    };
    p.pipe(&["run", &f("dl_ev", "evolve")]).assert_ok();
    p.write("a.csv", "id,name,extra\n3,c,x\n");
    let frozen = f("dl_frozen", "freeze");
    let before = read(&p, t);
    let disk = on_disk(&p.path().join(t));
    p.pipe(&["run", &frozen])
        .assert_failed()
        .stderr_has("extra");
    assert_eq!(read(&p, t)["version"], before["version"]);
    assert_eq!(on_disk(&p.path().join(t)), disk, "freeze left files behind");

    p.pipe(&["run", &f("dl_ev", "evolve")]).assert_ok();
    let v = read(&p, t);
    let names: Vec<&str> = v["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "name", "extra"]);
    let extra: Vec<&Value> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["extra"])
        .collect();
    assert_eq!(extra, [&Value::Null, &Value::Null, &Value::from("x")]);
}

#[test]
fn the_example_orders_pipeline_merges_into_delta() {
    let p = Project::new();
    let f = "pipelines/orders_delta.toml";
    let first = p.pipe(&["run", f, "--json"]).assert_ok().json();
    assert_eq!(first["commit"]["rows_inserted"], 5000, "{first}");
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
        "delta.py",
        &[
            "read",
            ".pipe/lake/orders",
            "--order",
            "o_orderkey",
            "--app",
            "orders_delta",
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
    assert_eq!(keys.len(), 5200, "duplicate keys after the merge");
    assert_eq!(v["partition_columns"], serde_json::json!(["o_orderstatus"]));
    assert_eq!(v["txn"], 2);
    // `pipe inspect` on the pipeline shows the same table
    let info = p.pipe(&["inspect", f, "--json"]).assert_ok().json();
    assert_eq!(info["rows"], 5200, "{info}");
    assert_eq!(info["commits"].as_array().unwrap().len(), 2);
}

#[test]
fn a_merge_on_two_keys_in_another_order_than_the_columns_updates_in_place() {
    let p = Project::new();
    let t = "lake/t";
    let first: Vec<Row> = (1..=6).map(|i| Row::new(i, 0)).collect();
    p.write("a.csv", &csv(&first));
    // `region` comes after `id` in the table; the keys name it first
    let dest = "mode = \"merge\"\nmerge_keys = [\"region\", \"id\"]";
    let f = pipeline(&p, "dl_keys2", "a.csv", t, dest);
    p.pipe(&["run", &f]).assert_ok();
    let second: Vec<Row> = (4..=8).map(|i| Row::new(i, 1)).collect();
    p.write("a.csv", &csv(&second));
    let out = p.pipe(&["run", &f, "--json"]).assert_ok().json();
    assert_eq!(out["commit"]["rows_updated"], 3, "{out}");
    assert_eq!(out["commit"]["rows_inserted"], 2, "{out}");
    let mut reference: BTreeMap<i64, Row> = first.into_iter().map(|r| (r.id, r)).collect();
    reference.extend(second.into_iter().map(|r| (r.id, r)));
    expect_rows(&read(&p, t), &reference, "two-key merge");
}
