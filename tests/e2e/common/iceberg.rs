//! Helpers of the Iceberg end-to-end tests: pipelines into a SQLite-catalog table, order
//! rows with a reference to compare against, and pyiceberg's view of a table
//! (tests/interop/ice.py).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::collections::BTreeSet;

use serde_json::Value;

#[allow(unused_imports)] // each test binary uses its own part
pub use super::rows::{Row, csv, expect_rows, on_disk};
use super::{Project, py_in};

pub const CATALOG: &str =
    r#"catalog = { type = "sql", uri = "sqlite://cat/catalog.db", warehouse = "wh" }"#;
pub const TYPES: &str = r#"column_types = { amount = "decimal(10,2)", ts = "timestamptz" }"#;

/// A pipeline loading `csv` into Iceberg table `table`.
pub fn pipeline(p: &Project, name: &str, csv: &str, table: &str, dest: &str) -> String {
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

/// A pipeline loading `csv` (inferred types) into Iceberg table `table`.
pub fn untyped_pipeline(p: &Project, name: &str, csv: &str, table: &str, dest: &str) -> String {
    let file = format!("{name}.toml");
    p.write(
        &file,
        &format!(
            "name = \"{name}\"\n[source]\ntype = \"file\"\npath = \"{csv}\"\n\
             [destination]\ntype = \"iceberg\"\n{CATALOG}\ntable = \"{table}\"\n{dest}\n"
        ),
    );
    file
}

/// `(id, name)` of every row pyiceberg read.
pub fn id_names(v: &Value) -> Vec<(i64, String)> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["name"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// pyiceberg itself writes `rows` into `table` (created if missing) with `mode`
/// (`append`, `overwrite`, `upsert` on `id`).
pub fn py_write(p: &Project, table: &str, mode: &str, rows: &Value, extra: &[&str]) {
    py_write_in(p, "cat/catalog.db", table, mode, rows, extra);
}

/// [`py_write`] into `catalog` (as [`read_in`] takes it).
pub fn py_write_in(
    p: &Project,
    catalog: &str,
    table: &str,
    mode: &str,
    rows: &Value,
    extra: &[&str],
) {
    let rows = rows.to_string();
    let mut args = vec!["write", catalog, "wh", table, mode, rows.as_str()];
    args.extend_from_slice(extra);
    let (ok, v) = py_in(p.path(), "ice.py", &args);
    assert!(ok, "pyiceberg could not {mode} into {table}: {v}");
}

/// pyiceberg's view of `table` in the SQL catalog `cat/catalog.db`.
pub fn read(p: &Project, table: &str) -> Value {
    read_in(p, "cat/catalog.db", table)
}

/// pyiceberg's view of `table` in `catalog`: a SQLite file (warehouse `wh`) or a REST
/// catalog's RestCatalog properties as JSON (tests/e2e/common/catalog.rs).
pub fn read_in(p: &Project, catalog: &str, table: &str) -> Value {
    let (ok, v) = py_in(
        p.path(),
        "ice.py",
        &["read", catalog, "wh", table, "--order", "id"],
    );
    assert!(ok, "pyiceberg could not read {table}: {v}");
    v
}

pub fn summary<'a>(v: &'a Value, key: &str) -> &'a str {
    let current = v["current"].as_i64().unwrap();
    let snap = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"].as_i64() == Some(current))
        .unwrap();
    snap["summary"][key].as_str().unwrap_or("")
}

pub fn operation(v: &Value) -> String {
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
pub fn expect_totals(v: &Value) {
    assert_eq!(summary(v, "total-records"), v["count"].to_string(), "{v}");
    assert_eq!(
        summary(v, "total-data-files"),
        v["files"].as_array().unwrap().len().to_string()
    );
}

pub fn files(v: &Value) -> BTreeSet<String> {
    v.get("files")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|f| f.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The table and the warehouse are exactly as `before` and `disk` recorded them.
pub fn assert_untouched(p: &Project, table: &str, before: &Value, disk: &BTreeSet<String>) {
    let after = read(p, table);
    assert_eq!(after["snapshots"], before["snapshots"]);
    assert_eq!(after["checksum"], before["checksum"]);
    assert_eq!(
        &on_disk(&p.path().join("wh")),
        disk,
        "files were left behind"
    );
}
