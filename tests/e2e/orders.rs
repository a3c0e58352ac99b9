//! The README's main job, end to end: `pipe run pipelines/orders.toml` into DuckDB, read back
//! by python duckdb and compared row by row (and by checksum) with the CSV files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use common::Project;

#[test]
fn orders_pipeline_loads_reruns_merges_and_replaces_exactly() {
    let p = Project::new();

    // First run: every CSV row, exactly.
    let s = p
        .pipe(&["run", "pipelines/orders.toml", "--json"])
        .assert_ok()
        .json();
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["rows_read"], 5000);
    assert_eq!(s["commit"]["rows_inserted"], 5000);
    assert_eq!(s["stages"][0]["rows_rejected"], 0);
    let (ok, first) = p.check_orders(&["--load", "pipelines/data/orders.csv"]);
    assert!(ok, "{first}");
    assert_eq!(first["rows"], 5000);
    assert_eq!(first["checksum"], first["expected_checksum"]);
    assert_eq!(first["ledger_runs"], 1);

    // Rerun of the same file: nothing changes.
    let s = p
        .pipe(&["run", "pipelines/orders.toml", "--json"])
        .assert_ok()
        .json();
    assert_eq!(s["commit"]["rows_inserted"], 0);
    assert_eq!(s["commit"]["rows_updated"], 0);
    assert_eq!(s["commit"]["rows_unchanged"], 5000);
    let (ok, again) = p.check_orders(&["--load", "pipelines/data/orders.csv"]);
    assert!(ok, "{again}");
    assert_eq!(again["checksum"], first["checksum"]);
    assert_eq!(again["ledger_runs"], 2);

    // The update file: 300 keys updated, 200 inserted; the result equals a Python upsert.
    let s = p
        .pipe_env(
            &["run", "pipelines/orders.toml", "--json"],
            &[("ORDERS_FILE", "pipelines/data/orders_update.csv")],
        )
        .assert_ok()
        .json();
    assert_eq!(s["commit"]["rows_inserted"], 200);
    assert_eq!(s["commit"]["rows_updated"], 300);
    let (ok, merged) = p.check_orders(&[
        "--load",
        "pipelines/data/orders.csv",
        "--merge",
        "pipelines/data/orders_update.csv",
    ]);
    assert!(ok, "{merged}");
    assert_eq!(merged["rows"], 5200);

    // Replace: only the new file's rows remain.
    let replace = p
        .read("pipelines/orders.toml")
        .replace("mode = \"merge\"", "mode = \"replace\"")
        .replace("merge_keys = [\"o_orderkey\"]", "");
    p.write("pipelines/orders_replace.toml", &replace);
    let s = p
        .pipe_env(
            &["run", "pipelines/orders_replace.toml", "--json"],
            &[("ORDERS_FILE", "pipelines/data/orders_update.csv")],
        )
        .assert_ok()
        .json();
    assert_eq!(s["commit"]["rows_deleted"], 5200);
    assert_eq!(s["commit"]["rows_inserted"], 500);
    let (ok, replaced) = p.check_orders(&["--replace", "pipelines/data/orders_update.csv"]);
    assert!(ok, "{replaced}");
    assert_eq!(replaced["rows"], 500);
}

#[test]
fn duplicate_keys_within_one_merge_run_last_one_wins() {
    let p = Project::new();
    let csv = p.read("pipelines/data/orders.csv");
    let mut lines: Vec<&str> = csv.lines().take(4).collect();
    // Key 2 again, with another status and price: this later row must win.
    let changed = lines[2].replacen(",O,", ",F,", 1);
    lines.push(&changed);
    p.write("dup.csv", &(lines.join("\n") + "\n"));
    let toml = p
        .read("pipelines/orders.toml")
        .replace("on_violation = \"fail\"", "on_violation = \"warn\"");
    p.write("pipelines/dup.toml", &toml);
    let s = p
        .pipe_env(
            &["run", "pipelines/dup.toml", "--json"],
            &[("ORDERS_FILE", "dup.csv")],
        )
        .assert_ok()
        .json();
    assert_eq!(s["commit"]["rows_inserted"], 3);
    let rows = common::query(
        &p.db(),
        "SELECT o_orderkey, o_orderstatus FROM sales.orders ORDER BY 1",
    );
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1], vec![Some("2".into()), Some("F".into())]);
}
