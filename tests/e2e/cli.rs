//! The `pipe` command itself: list, validate, exit codes, interruption.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::Project;

#[test]
fn list_shows_sources_destinations_modes_and_stages() {
    let p = Project::new();
    let r = p.pipe(&["list", "--json"]).assert_ok();
    let v = r.json();
    let names: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    assert!(names.contains(&("source", "file")));
    assert!(names.contains(&("destination", "duckdb")));
    assert!(names.contains(&("stage", "contract")));
    assert!(names.contains(&("service", "catalog")));
    let duck = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "duckdb")
        .unwrap();
    assert_eq!(
        duck["modes"],
        serde_json::json!(["append", "replace", "merge"])
    );
}

#[test]
fn validate_checks_everything_without_moving_data() {
    let p = Project::new();
    let v = p
        .pipe(&["validate", "pipelines/orders.toml", "--json"])
        .assert_ok()
        .json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["mode"], "merge");
    assert_eq!(v["columns"].as_array().unwrap().len(), 10);
    assert_eq!(
        v["columns"][3],
        serde_json::json!(["o_totalprice", "Decimal128(15, 2)"])
    );
    assert!(!p.db().exists(), "validate must not create the database");
    assert!(
        !p.path().join(".pipe").exists(),
        "validate must not create .pipe/"
    );

    // A contract naming a column the data lacks is caught by validate.
    let bad = p
        .read("pipelines/orders.toml")
        .replace("name = \"o_custkey\"", "name = \"o_cust\"");
    p.write("pipelines/bad_contract.toml", &bad);
    let r = p
        .pipe(&["validate", "pipelines/bad_contract.toml"])
        .assert_failed();
    r.stderr_has("pipelines/bad_contract.toml:")
        .stderr_has("column `o_cust` is not in the data");

    // Merge without keys is rejected at load time, pointing at the table.
    let no_keys = p
        .read("pipelines/orders.toml")
        .replace("merge_keys = [\"o_orderkey\"]", "");
    p.write("pipelines/no_keys.toml", &no_keys);
    let r = p
        .pipe(&["validate", "pipelines/no_keys.toml"])
        .assert_failed();
    r.stderr_has("mode = \"merge\" needs `merge_keys`");
}

#[test]
fn human_summary_reports_rows_bytes_and_rate() {
    let p = Project::new();
    let r = p.pipe(&["run", "pipelines/orders.toml"]).assert_ok();
    r.stdout_has("orders: committed");
    r.stdout_has("rows read 5,000, written 5,000, rejected 0");
    r.stdout_has("rows/s");
    r.stdout_has("inserted 5,000, updated 0, unchanged 0, deleted 0");
}

/// Ctrl-C while the source waits for more data: the run stops, exits 130, commits nothing.
#[cfg(unix)]
#[test]
fn interrupt_mid_run_commits_nothing() {
    let p = Project::new();
    let fifo = p.mkfifo("stream.csv");
    let toml = r#"
name = "live"
[source]
type = "file"
path = "stream.csv"
format = "csv"
batch_rows = 10
columns = [{ name = "id", type = "int64" }, { name = "v", type = "string" }]
[destination]
type = "duckdb"
path = "live.duckdb"
table = "t"
"#;
    p.write("live.toml", toml);
    let mut child = p.spawn(&["run", "live.toml", "--json"], &[]);
    // Feed 100 rows, keep the pipe open: the reader blocks waiting for more.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writeln!(writer, "id,v").unwrap();
    for i in 0..100 {
        writeln!(writer, "{i},row {i}").unwrap();
    }
    writer.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let out = loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break child.wait_with_output().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "pipe did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(writer);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(s["status"], "cancelled");
    assert!(s["rows_read"].as_u64().unwrap() >= 100, "{s}");
    // The table was created inside the run's transaction: rolled back, so it does not exist.
    let tables = common::query(
        &p.path().join("live.duckdb"),
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 't'",
    );
    assert_eq!(tables[0][0].as_deref(), Some("0"));
}

/// A pipe can be read only once: inference would eat the data, so an explicit schema is
/// required, and the error says so before anything is read.
#[cfg(unix)]
#[test]
fn a_pipe_without_an_explicit_schema_is_refused() {
    let p = Project::new();
    p.mkfifo("stream.csv");
    let toml = "name = \"live\"\n[source]\ntype = \"file\"\npath = \"stream.csv\"\n\
                [destination]\ntype = \"duckdb\"\npath = \"live.duckdb\"\ntable = \"t\"\n";
    p.write("live.toml", toml);
    let r = p.pipe(&["run", "live.toml"]).assert_failed();
    r.stderr_has("stream.csv is a pipe or device: it can be read only once");
}
