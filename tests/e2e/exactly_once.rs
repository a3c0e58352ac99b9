//! Exactly-once under crashes, leases, backfills, schedules and retries — with the real
//! PostgreSQL, DuckDB and the SQLite state store, read back independently (python duckdb and
//! sqlite3, psql).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{PgObjects, Project, kill9, pg_url, psql, py, unique};
use serde_json::Value;

/// A small seeded generator (xorshift): the same kill points on every run of the test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn ledger(p: &Project, pipeline: &str) -> Value {
    let db = p.path().join(".pipe/state.db");
    let (ok, v) = py("ledger.py", &[db.to_str().unwrap(), pipeline]);
    assert!(ok, "{v}");
    v
}

fn duck(p: &Project, sql: &str) -> Vec<Vec<Option<String>>> {
    common::query(&p.path().join("out.duckdb"), sql)
}

fn pg_pipeline(name: &str, source: &str, table: &str, dest: &str) -> String {
    format!(
        "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n{source}\n\
         [destination]\ntype = \"duckdb\"\npath = \"out.duckdb\"\ntable = \"{table}\"\n{dest}\n",
        pg_url()
    )
}

#[test]
fn sigkill_at_random_points_then_rerun_loads_every_row_exactly_once() {
    let p = Project::new();
    let mut pg = PgObjects::new();
    let t = unique("pipe_crash");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, v text); \
             INSERT INTO {t} SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let source = format!("table = \"{t}\"\ncursor = \"id\"\nbatch_rows = 200");
    p.write(
        "crash.toml",
        &pg_pipeline("crash", &source, "dst.crash", "mode = \"append\""),
    );

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // Kill points are drawn from [0, window) ms; the window adapts to how long runs take here,
    // so the kills land inside runs (start-up, reading, writing, committing) on any machine.
    let (mut kills, mut attempts, mut next_id, mut window_ms) = (0, 0, 20_001, 1500u64);
    while kills < 10 {
        attempts += 1;
        assert!(
            attempts < 80,
            "could not kill 10 runs in flight ({kills} in {attempts})"
        );
        // New rows arrive between runs.
        psql(&format!(
            "INSERT INTO {t} SELECT g, md5(g::text) FROM generate_series({next_id}, {}) g",
            next_id + 4999
        ));
        next_id += 5000;
        let mut child = p.spawn(&["run", "crash.toml", "--no-progress"], &[]);
        std::thread::sleep(Duration::from_millis(rng.below(window_ms)));
        if kill9(&mut child) {
            kills += 1;
        } else {
            window_ms = (window_ms * 7 / 10).max(20);
        }
    }
    let s = p.pipe(&["run", "crash.toml", "--json"]).assert_ok().json();
    assert_eq!(s["status"], "succeeded");

    let want = psql(&format!(
        "SELECT count(*), sum(id), count(DISTINCT v) FROM {t}"
    ));
    let got = duck(
        &p,
        "SELECT count(*), sum(id), count(DISTINCT v), count(DISTINCT id) FROM dst.crash",
    );
    let got: Vec<String> = got[0].iter().map(|v| v.clone().unwrap()).collect();
    let want: Vec<&str> = want.split('|').collect();
    println!(
        "crash test: {kills} SIGKILLs in {attempts} attempts; postgres rows {}, duckdb rows {} \
         (distinct ids {})",
        want[0], got[0], got[3]
    );
    assert_eq!(&got[..3], &want[..], "duckdb must equal postgres exactly");
    assert_eq!(got[0], got[3], "no duplicated ids");
    let runs = ledger(&p, "crash")["runs"].as_array().unwrap().clone();
    let abandoned = runs.iter().filter(|r| r["status"] == "abandoned").count();
    assert!(
        abandoned >= 1,
        "killed runs are marked abandoned in the ledger: {runs:?}"
    );
}

#[test]
fn a_second_run_of_the_same_pipeline_is_refused_while_the_first_holds_the_lease() {
    let p = Project::new();
    let query = "query = \"SELECT g AS id, 'lease' AS marker FROM generate_series(1, 1000) g, pg_sleep(2)\"";
    p.write("slow.toml", &pg_pipeline("slow", query, "dst.slow", ""));
    let first = p.spawn(&["run", "slow.toml", "--no-progress"], &[]);
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first run never took the lease"
        );
        if p.path().join(".pipe/state.db").exists() && ledger(&p, "slow")["lease"].is_object() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = p.pipe(&["run", "slow.toml"]).assert_failed();
    second.stderr_has("pipeline `slow` is already running");
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = duck(&p, "SELECT count(*), count(DISTINCT id) FROM dst.slow");
    assert_eq!(rows[0], vec![Some("1000".into()), Some("1000".into())]);
    let l = ledger(&p, "slow");
    assert_eq!(
        l["runs"].as_array().unwrap().len(),
        1,
        "the refused run never started: {l}"
    );
    assert!(l["lease"].is_null(), "the lease is released at the end");
}

#[test]
fn a_backfill_killed_midway_resumes_and_commits_each_window_once() {
    let p = Project::new();
    let mut pg = PgObjects::new();
    let t = unique("pipe_days");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, day date, v text); \
             INSERT INTO {t} SELECT g, date '2024-01-01' + (g % 30), 'v' || g FROM generate_series(1, 30000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let source = format!("table = \"{t}\"\ncursor = \"day\"\nbatch_rows = 50");
    p.write(
        "days.toml",
        &pg_pipeline("days", &source, "dst.days", "mode = \"append\""),
    );
    let args = [
        "backfill",
        "days.toml",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-31",
        "--step",
        "1d",
    ];

    let mut child = p.spawn(&args, &[]);
    let started = Instant::now();
    let state_db = p.path().join(".pipe/state.db");
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the backfill does not progress"
        );
        if state_db.exists() {
            let state = ledger(&p, "days")["state"].clone();
            let done = state.as_object().map_or(0, |s| {
                s.keys().filter(|k| k.starts_with("backfill.")).count()
            });
            if done >= 5 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        kill9(&mut child),
        "the backfill finished before it could be killed"
    );
    // The destination is the truth; the store's mirror may lag it by the window whose commit
    // the kill interrupted right after.
    let status = p
        .pipe(&["status", "days.toml", "--json"])
        .assert_ok()
        .json();
    assert_eq!(status["state_from"], "destination");
    let before = status["backfill_windows_done"].as_u64().unwrap() as usize;
    let mirrored = ledger(&p, "days")["state"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("backfill."))
        .count();
    assert!(
        (5..30).contains(&before),
        "killed midway: {before} windows done"
    );
    assert!(
        mirrored == before || mirrored + 1 == before,
        "{mirrored} vs {before}"
    );

    let s = p
        .pipe(&[&args[..], &["--json"]].concat())
        .assert_ok()
        .json();
    assert_eq!(s["windows"], 30);
    assert_eq!(s["already_done"], before, "{s}");
    assert_eq!(s["committed"], 30 - before);

    let rows = duck(&p, "SELECT count(*), count(DISTINCT id) FROM dst.days");
    assert_eq!(
        rows[0],
        vec![Some("30000".into()), Some("30000".into())],
        "each row once"
    );
    let windows = duck(
        &p,
        "SELECT count(*), count(DISTINCT key) FROM _pipe.state WHERE key LIKE 'backfill.%'",
    );
    assert_eq!(
        windows[0],
        vec![Some("30".into()), Some("30".into())],
        "each window committed once"
    );
    let status = p
        .pipe(&["status", "days.toml", "--json"])
        .assert_ok()
        .json();
    assert_eq!(status["backfill_windows_done"], 30);
    assert_eq!(status["state_from"], "destination");
}

#[test]
fn the_scheduler_fires_never_overlaps_and_stops_cleanly_on_sigterm() {
    let p = Project::new();
    let query = "query = \"SELECT g AS id, clock_timestamp() AS at, 'tick' AS marker FROM generate_series(1, 10) g, pg_sleep(1.2)\"";
    let toml = pg_pipeline("tick", query, "dst.tick", "mode = \"append\"")
        + "[schedule]\ncron = \"* * * * * *\"\n";
    p.write("sched/tick.toml", &toml);
    p.write(
        "sched/other.toml",
        &pg_pipeline("not_scheduled", query, "dst.other", ""),
    );
    let mut child = p.spawn(&["schedule", "sched", "--grace-secs", "10"], &[]);
    std::thread::sleep(Duration::from_millis(7000));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the scheduler did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let runs = ledger(&p, "tick")["runs"].as_array().unwrap().clone();
    assert!(runs.len() >= 2, "runs fired: {runs:?}");
    assert!(
        runs.iter().all(|r| r["status"] == "committed"),
        "all finished cleanly: {runs:?}"
    );
    for pair in runs.windows(2) {
        assert!(
            pair[1]["started_at"].as_str() >= pair[0]["ended_at"].as_str(),
            "runs overlap: {pair:?}"
        );
    }
    let rows = duck(&p, "SELECT count(*) FROM dst.tick");
    assert_eq!(rows[0][0], Some((10 * runs.len()).to_string()));
    assert!(
        ledger(&p, "not_scheduled")["runs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_transient_failure_is_retried_and_a_user_error_is_not() {
    let p = Project::new();
    let marker = unique("retry_marker");
    let query = format!(
        "query = \"SELECT g AS id, '{marker}' AS m FROM generate_series(1, 100) g, pg_sleep(1)\""
    );
    let toml = pg_pipeline("retry", &query, "dst.retry", "")
        + "[runtime]\nretries = 2\nretry_backoff_ms = 100\n";
    p.write("retry.toml", &toml);
    let child = p.spawn(&["run", "retry.toml", "--json"], &[]);
    // Terminate the reading backend once, mid-read: an administrator command, SQLSTATE 57P01.
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the read never started"
        );
        let killed = psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'pipe' AND query LIKE 'COPY%{marker}%'"
        ));
        if killed == "1" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = ledger(&p, "retry")["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["status"], "failed", "{runs:?}");
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("reading (COPY)"),
        "{runs:?}"
    );
    assert_eq!(runs[1]["status"], "committed");
    let rows = duck(&p, "SELECT count(*) FROM dst.retry");
    assert_eq!(rows[0][0].as_deref(), Some("100"));

    p.write(
        "missing.toml",
        &pg_pipeline("missing", "table = \"no_such_table_at_all\"", "dst.m", ""),
    );
    p.pipe(&["run", "missing.toml"]).assert_failed();
    let runs = ledger(&p, "missing")["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1, "a user error is not retried: {runs:?}");
}

#[test]
fn lookback_catches_rows_that_commit_late_below_the_cursor() {
    let p = Project::new();
    let mut pg = PgObjects::new();
    let t = unique("pipe_late");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL); \
             INSERT INTO {t} VALUES (1, 'a', '2024-01-01 10:00:00+00'), (2, 'b', '2024-01-01 11:00:00+00')"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let base = format!("table = \"{t}\"\ncursor = \"updated_at\"");
    let merge = "mode = \"merge\"\nmerge_keys = [\"id\"]";
    p.write(
        "late.toml",
        &pg_pipeline(
            "late",
            &format!("{base}\nlookback = \"1 hour\""),
            "dst.late",
            merge,
        ),
    );
    p.pipe(&["run", "late.toml"]).assert_ok();
    // A row whose transaction started before the last run but committed after it.
    psql(&format!(
        "INSERT INTO {t} VALUES (3, 'late', '2024-01-01 10:30:00+00')"
    ));
    let s = p.pipe(&["run", "late.toml", "--json"]).assert_ok().json();
    assert_eq!(s["commit"]["rows_inserted"], 1, "{s}");
    let rows = duck(&p, "SELECT count(*), count(DISTINCT id) FROM dst.late");
    assert_eq!(rows[0], vec![Some("3".into()), Some("3".into())]);

    // Without merge, re-reading would duplicate rows: refused before anything runs.
    p.write(
        "late_append.toml",
        &pg_pipeline(
            "late2",
            &format!("{base}\nlookback = \"1 hour\""),
            "dst.late2",
            "",
        ),
    );
    p.pipe(&["run", "late_append.toml"])
        .assert_failed()
        .stderr_has("`lookback` re-reads rows that were already loaded");
    p.write(
        "replace.toml",
        &pg_pipeline("late3", &base, "dst.late3", "mode = \"replace\""),
    );
    p.pipe(&["run", "replace.toml"])
        .assert_failed()
        .stderr_has("would replace the table with only the new rows");
}
