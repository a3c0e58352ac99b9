//! Helpers of the Delta end-to-end tests: pipelines into a table directory, and python
//! `deltalake`'s view of a table (tests/interop/delta.py).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use serde_json::Value;

#[allow(unused_imports)] // each test binary uses its own part
pub use super::rows::{Row, csv, expect_rows, on_disk};
use super::{Project, py_in};

pub const TYPES: &str = r#"column_types = { amount = "decimal(10,2)", ts = "timestamptz" }"#;

/// A pipeline loading `csv` into the Delta table at `path`.
pub fn pipeline(p: &Project, name: &str, csv: &str, path: &str, dest: &str) -> String {
    let file = format!("{name}.toml");
    p.write(
        &file,
        &format!(
            "name = \"{name}\"\n[source]\ntype = \"file\"\npath = \"{csv}\"\n{TYPES}\n\
             [destination]\ntype = \"delta\"\npath = \"{path}\"\n{dest}\n"
        ),
    );
    file
}

/// python deltalake's view of the table at `path` (rows ordered by `id`), with `app`'s txn
/// version.
pub fn read_app(p: &Project, path: &str, app: &str) -> Value {
    let (ok, v) = py_in(
        p.path(),
        "delta.py",
        &["read", path, "--order", "id", "--app", app],
    );
    assert!(ok, "deltalake could not read {path}: {v}");
    v
}

/// python deltalake's view of the table at `path` (rows ordered by `id`).
pub fn read(p: &Project, path: &str) -> Value {
    let (ok, v) = py_in(p.path(), "delta.py", &["read", path, "--order", "id"]);
    assert!(ok, "deltalake could not read {path}: {v}");
    v
}

/// The table at `path` as of `version` (time travel with python deltalake).
pub fn read_version(p: &Project, path: &str, version: i64) -> Value {
    let v = version.to_string();
    let (ok, out) = py_in(
        p.path(),
        "delta.py",
        &["read", path, "--order", "id", "--version", &v],
    );
    assert!(ok, "deltalake could not read {path}@{version}: {out}");
    out
}

/// python deltalake itself writes `rows` into `path` with `mode` (`append`, `overwrite`,
/// `upsert` on `id`).
pub fn py_write(p: &Project, path: &str, mode: &str, rows: &[Row]) {
    let rows = Value::Array(rows.iter().map(Row::json).collect()).to_string();
    let (ok, v) = py_in(p.path(), "delta.py", &["write", path, mode, rows.as_str()]);
    assert!(ok, "deltalake could not {mode} into {path}: {v}");
}

/// The history entry of the newest commit.
pub fn last(v: &Value) -> &Value {
    v["history"].as_array().unwrap().last().unwrap()
}

/// The history's operations, oldest first.
pub fn operations(v: &Value) -> Vec<String> {
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["operation"].as_str().unwrap().to_string())
        .collect()
}

/// `pipe table <verb> delta:<path> <args> --json`, parsed.
pub fn table_json(p: &Project, verb: &str, path: &str, args: &[&str]) -> Value {
    table_json_env(p, verb, path, args, &[])
}

/// [`table_json`] with extra environment variables (object store credentials).
pub fn table_json_env(
    p: &Project,
    verb: &str,
    path: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let target = format!("delta:{path}");
    let mut all = vec!["table", verb, target.as_str()];
    all.extend_from_slice(args);
    all.push("--json");
    p.pipe_env(&all, env).assert_ok().json()
}

/// `pipe table vacuum delta:<path> --older-than 0s --no-enforce-retention --json` (with
/// `--dry-run` when `dry`), parsed: every unreferenced data file goes.
pub fn vacuum_now(p: &Project, path: &str, dry: bool, env: &[(&str, &str)]) -> Value {
    let mut args = vec!["--older-than", "0s", "--no-enforce-retention"];
    if dry {
        args.push("--dry-run");
    }
    table_json_env(p, "vacuum", path, &args, env)
}

/// Run the pipelines `files` at the same time (with `env`); each must succeed without a
/// panic.
pub fn run_concurrently(p: &Project, files: &[String], env: &[(&str, &str)]) {
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            p.command(&["run", f], env)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.status.success(), "{stderr}");
    }
}

/// The versions of a table's history, oldest first.
pub fn versions(v: &Value) -> Vec<i64> {
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_i64().unwrap())
        .collect()
}
