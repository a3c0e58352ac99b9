//! The custom binary knows the custom source and every stock connector, and its rows land.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::process::Command;

#[test]
fn custom_source_runs_through_the_stock_pipeline_into_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("seq.duckdb");
    let toml = concat!(env!("CARGO_MANIFEST_DIR"), "/sequence.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_pipe-custom"))
        .args(["run", toml, "--json"])
        .current_dir(dir.path())
        .env("PIPE_DUCKDB", &db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["rows_read"], 25000);
    assert_eq!(s["commit"]["rows_inserted"], 25000);

    // Read back with python duckdb: sum of squares 1..=25000 = n(n+1)(2n+1)/6.
    let python =
        std::env::var("PIPE_PYTHON").unwrap_or_else(|_| "/var/tmp/pipe-venv/bin/python".into());
    let check = Command::new(python)
        .args(["-c", "import duckdb,sys; c=duckdb.connect(sys.argv[1], read_only=True); \
                print(c.execute('select count(*), sum(square), max(label) from examples.sequence').fetchone())"])
        .arg(&db)
        .output()
        .expect("python with duckdb (make venv)");
    let got = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        got.trim(),
        "(25000, 5208645837500, 'row-9999')",
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let list = Command::new(env!("CARGO_BIN_EXE_pipe-custom"))
        .args(["list"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains("sequence") && listing.contains("file") && listing.contains("duckdb"),
        "{listing}"
    );
}
