//! `mode = "register"`: Parquet files written by pyarrow (with and without Iceberg field ids,
//! in Hive-style partition directories) added to an Iceberg table as they are, run after run
//! as new files land — read back by pyiceberg, which must see exactly the union of the files
//! at their own paths, through the name mapping pipe writes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use common::iceberg::{read, summary};
use common::{Project, py_in};
use serde_json::Value;

const PIPELINE: &str = r#"name = "register"
[source]
type = "file"
path = "landing"

[destination]
type = "iceberg"
catalog = { type = "sql", uri = "sqlite://cat/catalog.db", warehouse = "wh" }
table = "lake.events"
mode = "register"
partition_by = ["region"]
"#;

fn land(p: &Project, first: u32, count: u32, flags: &[&str]) -> Vec<String> {
    let (first, count) = (first.to_string(), count.to_string());
    let mut args = vec!["write", "landing", first.as_str(), count.as_str()];
    args.extend_from_slice(flags);
    let (ok, v) = py_in(p.path(), "files.py", &args);
    assert!(ok, "files.py {args:?}: {v}");
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

fn props(p: &Project) -> Value {
    let (ok, v) = py_in(
        p.path(),
        "files.py",
        &["props", "cat/catalog.db", "lake.events"],
    );
    assert!(ok, "files.py props: {v}");
    v
}

fn ids(v: &Value) -> BTreeSet<i64> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

fn expected_ids(files: std::ops::Range<i64>) -> BTreeSet<i64> {
    files
        .flat_map(|n| (0..10).map(move |r| n * 1000 + r))
        .collect()
}

/// (inode, size) of each file: registration must not copy or rewrite any.
fn inodes(files: &[String]) -> Vec<(u64, u64)> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).unwrap();
            (m.ino(), m.len())
        })
        .collect()
}

#[test]
fn files_are_registered_incrementally_as_they_land_and_read_back_by_pyiceberg() {
    let p = Project::new();
    p.write("register.toml", PIPELINE);
    // Run 1: 20 files, half written with Iceberg field ids.
    let mut landed = land(&p, 0, 10, &[]);
    landed.extend(land(&p, 10, 10, &["--ids"]));
    let before = inodes(&landed);
    let run = p.pipe(&["run", "register.toml", "--json"]).assert_ok();
    assert_eq!(run.json()["commit"]["rows_inserted"], 200, "{}", run.stdout);
    let v = read(&p, "lake.events");
    assert_eq!(v["count"], 200);
    assert_eq!(ids(&v), expected_ids(0..20));
    assert_eq!(summary(&v, "added-data-files"), "20");
    assert_eq!(summary(&v, "pipe.pipeline"), "register");

    // The table references the files where they are: no copy, no rewrite.
    let table = props(&p);
    let paths: BTreeSet<String> = table["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = landed.iter().map(|f| format!("file://{f}")).collect();
    assert_eq!(paths, want);
    assert_eq!(inodes(&landed), before);
    assert!(
        !p.path().join("wh/lake/events/data").exists(),
        "no data file may be written"
    );
    // The name mapping maps every column by name (for the files without ids).
    let mapping: Value = serde_json::from_str(
        table["properties"]["schema.name-mapping.default"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = mapping
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["names"][0].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "region", "amount", "day", "note"]);

    // Relocating the table must cover the registered files' place too.
    let wh = p.path().join("wh");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(&wh)
        .arg(p.path().join("dr"))
        .status()
        .unwrap();
    assert!(copied.success());
    p.pipe(&[
        "iceberg",
        "relocate",
        "sqlite://cat/catalog.db#lake.events",
        "--from",
        wh.to_str().unwrap(),
        "--to",
        p.path().join("dr").to_str().unwrap(),
    ])
    .assert_failed()
    .stderr_has("lists data file")
    .stderr_has("part-0000.parquet");

    // Nothing new: nothing committed.
    let again = p.pipe(&["run", "register.toml", "--json"]).assert_ok();
    assert_eq!(
        again.json()["commit"]["nothing_to_commit"],
        true,
        "{}",
        again.stdout
    );
    assert_eq!(
        read(&p, "lake.events")["snapshots"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Run 2: 20 more; run 3: 9 more and one with a new column (the table evolves).
    land(&p, 20, 20, &[]);
    p.pipe(&["run", "register.toml"]).assert_ok();
    land(&p, 40, 9, &["--ids"]);
    land(&p, 49, 1, &["--extra"]);
    p.pipe(&["run", "register.toml"]).assert_ok();
    let v = read(&p, "lake.events");
    assert_eq!(v["count"], 500);
    assert_eq!(ids(&v), expected_ids(0..50));
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 3);
    let score: Vec<&Value> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["score"].is_null())
        .collect();
    assert_eq!(score.len(), 10, "only the last file has scores");
    assert_eq!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == 49003)
            .unwrap()["score"],
        21
    );
    let row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == 1002)
        .unwrap();
    assert_eq!(row["region"], "us");
    assert_eq!(row["amount"], "3.0");
    assert_eq!(row["note"], "n1-2");
    assert!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == 1003)
            .unwrap()["note"]
            .is_null()
    );
    // Each file's partition came from its rows (and agrees with its directory).
    let parts = props(&p);
    assert_eq!(parts["files"].as_array().unwrap().len(), 50);
    let mapping = parts["properties"]["schema.name-mapping.default"]
        .as_str()
        .unwrap();
    assert!(mapping.contains("\"score\""), "{mapping}");

    // pipe merges into the registered table (reading files without field ids by name).
    p.write(
        "changes.csv",
        "id,region,amount,day,note\n1002,us,99.5,2024-01-02,changed\n77000,eu,1.0,2024-03-01,new\n",
    );
    p.write(
        "merge.toml",
        r#"name = "merge"
[source]
type = "file"
path = "changes.csv"
column_types = { id = "int64", amount = "float64", day = "date" }

[destination]
type = "iceberg"
catalog = { type = "sql", uri = "sqlite://cat/catalog.db", warehouse = "wh" }
table = "lake.events"
mode = "merge"
merge_keys = ["id"]
"#,
    );
    p.pipe(&["run", "merge.toml"]).assert_ok();
    let v = read(&p, "lake.events");
    assert_eq!(v["count"], 501);
    let rows = v["rows"].as_array().unwrap();
    let changed = rows.iter().find(|r| r["id"] == 1002).unwrap();
    assert_eq!(changed["amount"], "99.5");
    assert_eq!(changed["note"], "changed");
    let kept = rows.iter().find(|r| r["id"] == 1001).unwrap();
    assert_eq!(kept["note"], "n1-1");
    assert_eq!(kept["amount"], "1.5");
    // The registered files themselves are untouched by the merge.
    assert_eq!(inodes(&landed), before);

    // A registered file that disappeared is reported by `pipe table inspect`.
    let inspect = p
        .pipe(&["table", "inspect", "register.toml", "--json"])
        .assert_ok();
    assert_eq!(
        inspect.json()["properties"]["missing_files"],
        "0",
        "{}",
        inspect.stdout
    );
    std::fs::remove_file(&landed[3]).unwrap();
    let inspect = p
        .pipe(&["table", "inspect", "register.toml", "--json"])
        .assert_ok();
    let missing = inspect.json()["properties"]["missing_files"].clone();
    assert_eq!(
        missing,
        format!("1: file://{}", landed[3]),
        "{}",
        inspect.stdout
    );
}

#[test]
fn a_file_the_table_cannot_take_is_refused_by_name_and_nothing_is_committed() {
    let p = Project::new();
    p.write("register.toml", PIPELINE);
    land(&p, 0, 4, &[]);
    p.pipe(&["run", "register.toml"]).assert_ok();
    let before = read(&p, "lake.events");

    // A string `amount`.
    let bad = land(&p, 4, 1, &["--bad"]);
    land(&p, 5, 2, &[]);
    p.pipe(&["run", "register.toml"])
        .assert_failed()
        .stderr_has(&bad[0])
        .stderr_has("amount");
    let after = read(&p, "lake.events");
    assert_eq!(after["snapshots"], before["snapshots"]);
    std::fs::remove_file(&bad[0]).unwrap();

    // A file spanning two partitions (its rows say eu and us).
    std::fs::create_dir_all(p.path().join("landing/mixed")).unwrap();
    let mixed = p.path().join("landing/mixed/both.parquet");
    let script = format!(
        "import pyarrow as pa, pyarrow.parquet as pq, datetime\n\
         pq.write_table(pa.table({{'id': [1, 2], 'region': ['eu', 'us'], 'amount': [1.0, 2.0], \
         'day': [datetime.date(2024, 1, 1)] * 2, 'note': ['a', 'b']}}), '{}')",
        mixed.display()
    );
    let status = std::process::Command::new(common::python())
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    p.pipe(&["run", "register.toml"])
        .assert_failed()
        .stderr_has("both.parquet")
        .stderr_has("spans several partitions");
    assert_eq!(read(&p, "lake.events")["snapshots"], before["snapshots"]);
    std::fs::remove_file(&mixed).unwrap();

    // Not Parquet; a contract (which would need the rows): refused before anything is read.
    p.write("landing/region=eu/x.csv", "id\n1\n");
    p.pipe(&["run", "register.toml"])
        .assert_failed()
        .stderr_has("x.csv");
    std::fs::remove_file(p.path().join("landing/region=eu/x.csv")).unwrap();

    // A contract reads the new files' rows (only theirs) before they are registered: a
    // violation fails the run, a rule that would drop rows is refused (a registered file
    // cannot lose rows), and a contract they meet lets them in.
    let contract = |on_violation: &str, rule: &str| {
        format!(
            "{PIPELINE}\n[contract]\non_violation = \"{on_violation}\"\n\n\
             [[contract.columns]]\nname = \"amount\"\n{rule}\n"
        )
    };
    p.write("checked.toml", &contract("fail", "max = 5.0"));
    p.pipe(&["run", "checked.toml"])
        .assert_failed()
        .stderr_has("amount");
    p.write("checked.toml", &contract("drop", "max = 5.0"));
    p.pipe(&["run", "checked.toml"])
        .assert_failed()
        .stderr_has("cannot lose rows");
    assert_eq!(read(&p, "lake.events")["snapshots"], before["snapshots"]);
    p.write("checked.toml", &contract("fail", "min = 0.0"));
    let run = p.pipe(&["run", "checked.toml", "--json"]).assert_ok();
    let summary = run.json();
    assert_eq!(summary["commit"]["rows_inserted"], 20, "{summary}");
    assert_eq!(
        summary["rows_read"], 20,
        "only the two new files are read: {summary}"
    );
    assert_eq!(read(&p, "lake.events")["count"], 60);
    // Nothing is left to register.
    let again = p.pipe(&["run", "register.toml", "--json"]).assert_ok();
    assert_eq!(again.json()["commit"]["nothing_to_commit"], true);
}

#[test]
fn every_type_of_the_fixture_registers_and_reads_back_equal() {
    let p = Project::types_fixture();
    p.write(
        "types.toml",
        "name = \"reg_types\"\n[source]\ntype = \"file\"\npath = \"fx/types.parquet\"\n\
         [destination]\ntype = \"iceberg\"\n\
         catalog = { type = \"sql\", uri = \"sqlite://cat/catalog.db\", warehouse = \"wh\" }\n\
         table = \"t.types\"\nmode = \"register\"\n",
    );
    p.pipe(&["run", "types.toml"]).assert_ok();
    let (ok, v) = py_in(
        p.path(),
        "ice.py",
        &[
            "compare",
            "cat/catalog.db",
            "wh",
            "t.types",
            "fx/types.parquet",
        ],
    );
    assert!(ok, "pyiceberg reads the registered file differently: {v}");
    // The file is the table's only data file, as it was.
    let table = {
        let (ok, v) = py_in(
            p.path(),
            "files.py",
            &["props", "cat/catalog.db", "t.types"],
        );
        assert!(ok, "{v}");
        v
    };
    let file = std::fs::canonicalize(p.path().join("fx/types.parquet")).unwrap();
    assert_eq!(
        table["files"][0]["path"],
        format!("file://{}", file.display())
    );
}

#[test]
fn overlapping_register_runs_never_register_a_file_twice() {
    let p = Project::new();
    p.write("register.toml", PIPELINE);
    land(&p, 0, 20, &[]);
    // Two runs at once on the same new files (a new table, so their creates race too).
    let a = p.spawn(&["run", "register.toml"], &[]);
    let b = p.spawn(&["run", "register.toml"], &[]);
    let codes: Vec<Option<i32>> = [a, b]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code())
        .collect();
    assert!(codes.contains(&Some(0)), "{codes:?}");
    assert!(codes.iter().all(|c| matches!(c, Some(0 | 1))), "{codes:?}");
    // Whatever the loser did, one more run leaves every file registered exactly once.
    land(&p, 20, 5, &[]);
    p.pipe(&["run", "register.toml"]).assert_ok();
    let table = props(&p);
    let files: Vec<&str> = table["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = files.iter().copied().collect();
    assert_eq!(files.len(), 25, "{files:?}");
    assert_eq!(unique.len(), 25);
    let v = read(&p, "lake.events");
    assert_eq!(v["count"], 250);
    assert_eq!(ids(&v), expected_ids(0..25));
}
