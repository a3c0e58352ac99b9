//! The exec source with the Python example (examples/exec-source/source.py, pyarrow): 1M
//! rows into DuckDB read back by python duckdb, state carried across runs, a crash's stderr
//! in the error with nothing committed, and Ctrl-C killing the program.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Project, python, query, root};

fn pipeline(p: &Project, name: &str, config: &str, incremental: bool) -> String {
    let file = format!("{name}.toml");
    p.write(
        &file,
        &format!(
            "name = \"{name}\"\n\n[source]\ntype = \"exec\"\ncommand = [\"{}\", \"{}\"]\n\
             incremental = {incremental}\nconfig = {{ {config} }}\n\n[destination]\n\
             type = \"duckdb\"\npath = \"exec.duckdb\"\ntable = \"raw.{name}\"\nmode = \"append\"\n",
            python().display(),
            root().join("examples/exec-source/source.py").display()
        ),
    );
    file
}

/// (count, sum of id, sum of amount, distinct labels) of `table`.
fn totals(p: &Project, table: &str) -> Vec<Option<String>> {
    query(
        &p.path().join("exec.duckdb"),
        &format!("SELECT count(*), sum(id), sum(amount), count(DISTINCT label) FROM {table}"),
    )
    .remove(0)
}

fn expect_ids(p: &Project, table: &str, last: i64) {
    let s = |v: i64| Some(v.to_string());
    let amount = (last * (last + 1) / 2) as f64 * 0.5;
    assert_eq!(
        totals(p, table),
        vec![
            s(last),
            s(last * (last + 1) / 2),
            Some(format!("{amount:.1}")),
            s(last)
        ]
    );
}

fn table_exists(p: &Project, table: &str) -> bool {
    let db = p.path().join("exec.duckdb");
    if !db.exists() {
        return false;
    }
    let name = table.split_once('.').expect("schema.table").1;
    query(
        &db,
        &format!("SELECT count(*) FROM information_schema.tables WHERE table_name = '{name}'"),
    )[0][0]
        .as_deref()
        == Some("1")
}

#[test]
fn a_python_program_loads_a_million_rows_and_carries_its_state() {
    let p = Project::new();
    let file = pipeline(&p, "million", "rows = 1000000, batch_rows = 65536", false);
    let run = p.pipe(&["run", &file, "--json"]).assert_ok();
    assert_eq!(run.json()["rows_written"], 1_000_000);
    expect_ids(&p, "raw.million", 1_000_000);
    let rows = query(
        &p.path().join("exec.duckdb"),
        "SELECT id, amount, label FROM raw.million WHERE id IN (1, 999999) ORDER BY id",
    );
    assert_eq!(
        rows,
        vec![
            vec![Some("1".into()), Some("0.5".into()), Some("row-1".into())],
            vec![
                Some("999999".into()),
                Some("499999.5".into()),
                Some("row-999999".into())
            ],
        ]
    );

    // Incremental: each run continues after the id the last one committed.
    let file = pipeline(&p, "inc", "rows = 1000, batch_rows = 300", true);
    for run in 1..=3 {
        p.pipe(&["run", &file]).assert_ok();
        expect_ids(&p, "raw.inc", 1000 * run);
    }
    // A run that crashes commits neither rows nor state: the next one continues at 3001.
    let crash = pipeline(
        &p,
        "inc",
        "rows = 1000, batch_rows = 300, fail_after = 2",
        true,
    );
    let run = p.pipe(&["run", &crash]).assert_failed();
    run.stderr_has("boom: the upstream API went away after 2 batches")
        .stderr_has("exit code 3");
    expect_ids(&p, "raw.inc", 3000);
    let file = pipeline(&p, "inc", "rows = 1000, batch_rows = 300", true);
    p.pipe(&["run", &file]).assert_ok();
    expect_ids(&p, "raw.inc", 4000);
}

#[test]
fn a_crash_before_the_stream_names_the_program_and_commits_nothing() {
    let p = Project::new();
    p.write("bad.py", "import sys\nprint('cannot reach the API: connection refused', file=sys.stderr)\nsys.exit(2)\n");
    p.write(
        "bad.toml",
        &format!(
            "name = \"bad\"\n[source]\ntype = \"exec\"\ncommand = [\"{}\", \"bad.py\"]\n\n\
             [destination]\ntype = \"duckdb\"\npath = \"exec.duckdb\"\ntable = \"raw.bad\"\n",
            python().display()
        ),
    );
    p.pipe(&["run", "bad.toml"])
        .assert_failed()
        .stderr_has("did not start an Arrow IPC stream")
        .stderr_has("cannot reach the API: connection refused")
        .stderr_has("exit code 2");
    assert!(!table_exists(&p, "raw.bad"));
    // A program that is not there.
    p.write(
        "missing.toml",
        &p.read("bad.toml")
            .replace(&python().display().to_string(), "/no/such/program"),
    );
    p.pipe(&["run", "missing.toml"])
        .assert_failed()
        .stderr_has("cannot start the exec source `/no/such/program bad.py`");
}

fn alive(pid: i32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn ctrl_c_kills_the_program_and_commits_nothing() {
    let p = Project::new();
    let pid_file = p.path().join("child.pid");
    let file = pipeline(
        &p,
        "hang",
        &format!(
            "rows = 100000, batch_rows = 1000, hang_after = 3, pid_file = \"{}\"",
            pid_file.display()
        ),
        false,
    );
    let mut child = p.spawn(&["run", &file], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the program did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid));
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = child.wait().expect("pipe exits");
    assert!(!status.success(), "an interrupted run fails");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the program {pid} outlived the run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!table_exists(&p, "raw.hang"), "nothing committed");
}
