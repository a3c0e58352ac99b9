//! The Iceberg destination end to end: every write mode on unpartitioned and partitioned
//! tables, merges against a reference, schema evolution, interop with tables pyiceberg wrote,
//! concurrent writers, failures and exactly-once — each read back by pyiceberg 0.12's
//! SqlCatalog (tests/interop/ice.py), the independent reader.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;

use common::{PgObjects, Project, pg_url, psql, py_in, unique};
use serde_json::{Value, json};

const CATALOG: &str =
    r#"catalog = { type = "sql", uri = "sqlite://cat/catalog.db", warehouse = "wh" }"#;
const TYPES: &str = r#"column_types = { amount = "decimal(10,2)", ts = "timestamptz" }"#;

/// A pipeline loading `csv` into Iceberg table `table`.
fn pipeline(p: &Project, name: &str, csv: &str, table: &str, dest: &str) -> String {
    let file = format!("{name}.toml");
    p.write(
        &file,
        &format!(
            "name = \"{name}\"\n[source]\ntype = \"file\"\npath = \"{csv}\"\n{TYPES}\n\
             [destination]\ntype = \"iceberg\"\n{CATALOG}\ntable = \"{table}\"\n{dest}\n"
        ),
    );
    file
}

fn read(p: &Project, table: &str) -> Value {
    let (ok, v) = py_in(
        p.path(),
        "ice.py",
        &["read", "cat/catalog.db", "wh", table, "--order", "id"],
    );
    assert!(ok, "pyiceberg could not read {table}: {v}");
    v
}

/// One order row of the test CSVs.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i64,
    name: String,
    amount: String,
    region: &'static str,
    day: u32,
}

impl Row {
    fn new(id: i64, version: u32) -> Self {
        let regions = ["eu", "us", "apac"];
        Self {
            id,
            name: format!("n{id}v{version}"),
            amount: format!("{}.{:02}", id * 3 + i64::from(version), version % 100),
            region: regions[usize::try_from(id).unwrap() % 3],
            day: 1 + u32::try_from(id).unwrap() % 5,
        }
    }

    fn csv(&self) -> String {
        format!(
            "{},{},{},{},2024-03-0{}T10:00:00Z\n",
            self.id, self.name, self.amount, self.region, self.day
        )
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "amount": self.amount, "region": self.region,
            "ts": format!("2024-03-0{}T10:00:00+00:00", self.day),
        })
    }
}

fn csv(rows: &[Row]) -> String {
    let mut s = String::from("id,name,amount,region,ts\n");
    for r in rows {
        s.push_str(&r.csv());
    }
    s
}

fn expect_rows(v: &Value, reference: &BTreeMap<i64, Row>, what: &str) {
    let want: Vec<Value> = reference.values().map(Row::json).collect();
    assert_eq!(v["rows"], Value::Array(want), "{what}: rows differ");
}

fn summary<'a>(v: &'a Value, key: &str) -> &'a str {
    let current = v["current"].as_i64().unwrap();
    let snap = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"].as_i64() == Some(current))
        .unwrap();
    snap["summary"][key].as_str().unwrap_or("")
}

fn operation(v: &Value) -> String {
    let current = v["current"].as_i64().unwrap();
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"].as_i64() == Some(current))
        .unwrap()["operation"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Check the current snapshot's totals agree with what pyiceberg reads.
fn expect_totals(v: &Value) {
    assert_eq!(summary(v, "total-records"), v["count"].to_string(), "{v}");
    assert_eq!(
        summary(v, "total-data-files"),
        v["files"].as_array().unwrap().len().to_string()
    );
}

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

fn files(v: &Value) -> BTreeSet<String> {
    v.get("files")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|f| f.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The table and the warehouse are exactly as `before` and `disk` recorded them.
fn assert_untouched(p: &Project, table: &str, before: &Value, disk: &BTreeSet<String>) {
    let after = read(p, table);
    assert_eq!(after["snapshots"], before["snapshots"]);
    assert_eq!(after["checksum"], before["checksum"]);
    assert_eq!(
        &on_disk(&p.path().join("wh")),
        disk,
        "files were left behind"
    );
}

/// Every file under the warehouse.
fn on_disk(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(on_disk(&e.path()));
            } else {
                out.insert(e.path().display().to_string());
            }
        }
    }
    out
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
    let f = p.write(
        "evo.toml",
        &format!(
            "name = \"ice_evo\"\n[source]\ntype = \"file\"\npath = \"a.csv\"\n\
             [destination]\ntype = \"iceberg\"\n{CATALOG}\ntable = \"s.evo\"\n"
        ),
    );
    let f = f.to_str().unwrap();
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
    let frozen = format!(
        "{}\n[metadata]\nschema_evolution = \"freeze\"\n",
        std::fs::read_to_string(f).unwrap()
    );
    p.write("evo.toml", &frozen);
    let disk = on_disk(&p.path().join("wh"));
    p.pipe(&["run", f]).assert_failed().stderr_has("extra");
    assert_untouched(&p, "s.evo", &v, &disk);
}

#[test]
fn tables_written_by_pyiceberg_take_merges_from_pipe_and_vice_versa() {
    let p = Project::new();
    let rows = json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]);
    let (ok, v) = py_in(
        p.path(),
        "ice.py",
        &[
            "write",
            "cat/catalog.db",
            "wh",
            "py.t",
            "append",
            &rows.to_string(),
            "--partition",
            "id",
        ],
    );
    assert!(ok, "{v}");
    p.write("m.csv", "id,name\n2,B\n4,d\n");
    p.write(
        "m.toml",
        &format!(
            "name = \"ice_py\"\n[source]\ntype = \"file\"\npath = \"m.csv\"\n\
             [destination]\ntype = \"iceberg\"\n{CATALOG}\ntable = \"py.t\"\nmode = \"merge\"\nmerge_keys = [\"id\"]\n"
        ),
    );
    p.pipe(&["run", "m.toml"]).assert_ok();
    let v = read(&p, "py.t");
    let names: Vec<(i64, String)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
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
    p.write(
        "a.toml",
        &format!(
            "name = \"ice_py2\"\n[source]\ntype = \"file\"\npath = \"a.csv\"\n\
             [destination]\ntype = \"iceberg\"\n{CATALOG}\ntable = \"pipe.t\"\n"
        ),
    );
    p.pipe(&["run", "a.toml"]).assert_ok();
    let more = json!([{"id": 11, "name": "Y"}, {"id": 12, "name": "z"}]);
    let (ok, v) = py_in(
        p.path(),
        "ice.py",
        &[
            "write",
            "cat/catalog.db",
            "wh",
            "pipe.t",
            "upsert",
            &more.to_string(),
        ],
    );
    assert!(ok, "{v}");
    let v = read(&p, "pipe.t");
    let names: Vec<String> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["x", "Y", "z"]);
    // and pipe appends on top of pyiceberg's snapshot
    p.write("a.csv", "id,name\n13,w\n");
    p.pipe(&["run", "a.toml"]).assert_ok();
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
            p.command(&["run", &f], &[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
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
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
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
