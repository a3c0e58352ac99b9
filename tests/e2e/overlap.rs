//! Exactly-once when runs overlap: two runs of one pipeline on separate state stores,
//! parallel backfills killed and resumed, the lease, table names that respell or collide with
//! pipe's own — on DuckDB, Delta and Iceberg, read back by each one's independent reader.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use common::dest::Dest;
use common::{PgObjects, Project, kill9, pg_url, psql, unique};
use serde_json::Value;

fn pg_source(table: &str, extra: &str) -> String {
    format!(
        "type = \"postgres\"\nurl = \"{}\"\ntable = \"{table}\"\n{extra}",
        pg_url()
    )
}

/// `(rows, distinct ids)` of the destination table, from its independent reader.
fn counts(dest: Dest, p: &Project, table: &str) -> (usize, usize) {
    let rows = dest.rows(p, table);
    let rows = rows.as_array().unwrap();
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    (n, ids.len())
}

/// Parallel backfill windows commit into every destination, each window once, its state
/// merged with its siblings' — also after a `kill -9` and a resume.
#[test]
fn parallel_backfills_commit_every_window_once_on_every_destination() {
    let mut pg = PgObjects::new();
    let t = unique("pipe_pbf");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, day date, v text); \
             INSERT INTO {t} SELECT g, date '2024-01-01' + (g % 24), repeat('v', g % 40) || g \
             FROM generate_series(1, 12000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let args = |file: &str| -> Vec<String> {
        [
            "backfill",
            file,
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-25",
            "--step",
            "1d",
            "--parallel",
            "4",
            "--json",
        ]
        .map(String::from)
        .to_vec()
    };
    // 3 rounds in CI; PIPE_STRESS_ROUNDS=20 for the release check (kill points vary by round).
    let rounds: u64 = std::env::var("PIPE_STRESS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for dest in Dest::ALL {
        for round in 0..rounds {
            let p = Project::new();
            let source = pg_source(&t, "cursor = \"day\"\nbatch_rows = 100");
            let f = dest.pipeline(&p, "pbf", &source, "pbf", "append", "");
            let a = args(&f);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            if round > 0 {
                // Kill the backfill partway, then resume it.
                let mut child = p.spawn(&a, &[]);
                std::thread::sleep(Duration::from_millis(150 + 250 * (round % 6)));
                kill9(&mut child);
            }
            let out = p.pipe(&a).assert_ok().json();
            assert_eq!(out["windows"], 24, "{out}");
            let status = p.pipe(&["status", &f, "--json"]).assert_ok().json();
            assert_eq!(
                status["backfill_windows_done"],
                24,
                "{} {status}",
                dest.name()
            );
            assert_eq!(status["state_from"], "destination");
            assert_eq!(
                counts(dest, &p, "pbf"),
                (12000, 12000),
                "{} round {round}",
                dest.name()
            );
            // Every column reads back (DuckDB once corrupted its string segments here).
            let rows = dest.rows(&p, "pbf");
            let lengths: usize = rows
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["v"].as_str().unwrap().len())
                .sum();
            let want: usize = psql(&format!("SELECT sum(length(v)) FROM {t}"))
                .parse()
                .unwrap();
            assert_eq!(lengths, want, "{}", dest.name());
            // A rerun finds every window done and loads nothing.
            let again = p.pipe(&a).assert_ok().json();
            assert_eq!(again["already_done"], 24, "{again}");
            assert_eq!(counts(dest, &p, "pbf").0, 12000);
        }
    }
}

/// Two runs of one incremental pipeline at once, on separate state stores (two hosts): the
/// lease cannot see both, so the destination's commit must — one commits, the other finds the
/// cursor moved and loads only what is left. Every row lands once.
#[test]
fn overlapping_runs_on_separate_state_stores_load_every_row_once() {
    let mut pg = PgObjects::new();
    let t = unique("pipe_ovl");
    let slow = format!("{t}_slow");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text); \
             INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 3000) g; \
             CREATE FUNCTION {slow}(i int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
             IF i = 1500 THEN PERFORM pg_sleep(1.5); END IF; RETURN i; END $$"
        ),
        &format!("DROP TABLE IF EXISTS {t}; DROP FUNCTION IF EXISTS {slow}(int)"),
    );
    for dest in Dest::ALL {
        let p = Project::new();
        let source = format!(
            "type = \"postgres\"\nurl = \"{}\"\nquery = \"SELECT {slow}(id) AS id, v FROM {t}\"\n\
             cursor = \"id\"",
            pg_url()
        );
        let f = dest.pipeline(&p, "ovl", &source, "ovl", "append", "");
        p.write(
            &f,
            &format!(
                "{}\n[state]\npath = \"${{STATE}}\"\n[runtime]\nretry_backoff_ms = 200\n",
                p.read(&f)
            ),
        );
        let a = p.spawn(&["run", &f, "--json"], &[("STATE", "a/state.db")]);
        std::thread::sleep(Duration::from_millis(300));
        let b = p.spawn(&["run", &f, "--json"], &[("STATE", "b/state.db")]);
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let ok = outs.iter().filter(|o| o.status.success()).count();
        for o in &outs {
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
        assert!(ok >= 1, "{}: no run committed", dest.name());
        assert_eq!(counts(dest, &p, "ovl"), (3000, 3000), "{}", dest.name());
        // Later rows still load exactly once, from either store.
        psql(&format!(
            "INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(3001, 3100) g"
        ));
        p.pipe_env(&["run", &f], &[("STATE", "a/state.db")])
            .assert_ok();
        p.pipe_env(&["run", &f], &[("STATE", "b/state.db")])
            .assert_ok();
        assert_eq!(counts(dest, &p, "ovl"), (3100, 3100), "{}", dest.name());
        psql(&format!("DELETE FROM {t} WHERE id > 3000"));
    }
}

/// A pipeline without a `[state]` section holds its lease for 60 s: a second run waiting two
/// seconds behind a paused first one is still refused.
#[test]
fn the_default_lease_outlives_a_paused_run() {
    let p = Project::new();
    p.write(
        "slow.toml",
        "name = \"slow\"\n[source]\ntype = \"file\"\npath = \"fifo.csv\"\n\
         columns = [{ name = \"id\", type = \"int64\" }]\n[destination]\ntype = \"null\"\n",
    );
    p.mkfifo("fifo.csv");
    let mut first = p.spawn(&["run", "slow.toml"], &[]);
    // The first run holds the lease while it waits for the FIFO's writer.
    let started = Instant::now();
    let db = p.path().join(".pipe/state.db");
    while !db.exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // Paused (a long GC, SIGSTOP): it cannot renew its lease.
    let pid = first.id().to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let second = p.pipe(&["run", "slow.toml"]);
    std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap();
    assert_eq!(second.code, Some(1), "{second:?}");
    second.stderr_has("already running");
    kill9(&mut first);
}

/// Respelling the DuckDB table's case keeps its cursor (DuckDB names are case-insensitive),
/// and pipe's own tables cannot be a destination.
#[test]
fn duckdb_table_names_are_case_insensitive_and_pipe_tables_are_refused() {
    let mut pg = PgObjects::new();
    let t = unique("pipe_case");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v text); \
             INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(1, 1000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let p = Project::new();
    let source = pg_source(&t, "cursor = \"id\"");
    let f = Dest::DuckDb.pipeline(&p, "case", &source, "orders", "append", "");
    p.pipe(&["run", &f]).assert_ok();
    p.write(&f, &p.read(&f).replace("main.orders", "MAIN.Orders"));
    let v = p.pipe(&["run", &f, "--json"]).assert_ok().json();
    assert_eq!(v["rows_read"], 0, "{v}");
    assert_eq!(counts(Dest::DuckDb, &p, "orders"), (1000, 1000));

    for table in ["_pipe.state", "_PIPE.runs", "__pipe_stage"] {
        p.write(
            &f,
            &p.read(&f)
                .replace("MAIN.Orders", table)
                .replace("main.orders", table),
        );
        p.pipe(&["run", &f])
            .assert_failed()
            .stderr_has("one of pipe's own tables");
        p.write(&f, &p.read(&f).replace(table, "MAIN.Orders"));
    }
}

/// Rows whose cursor is NULL are counted on every incremental run and reported.
#[test]
fn rows_with_a_null_cursor_are_reported() {
    let mut pg = PgObjects::new();
    let t = unique("pipe_nullc");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, at timestamptz); \
             INSERT INTO {t} SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE now() END \
             FROM generate_series(1, 100) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let p = Project::new();
    let source = pg_source(&t, "cursor = \"at\"\ninitial_value = \"2000-01-01\"");
    let f = Dest::DuckDb.pipeline(&p, "nullc", &source, "nullc", "append", "");
    let v = p.pipe(&["run", &f, "--json"]).assert_ok().json();
    assert_eq!(v["rows_read"], 90, "{v}");
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("10 rows have a NULL `at`"), "{v}");
    p.write(
        &f,
        &p.read(&f)
            .replace("initial_value", "null_cursor = \"error\"\ninitial_value"),
    );
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("10 rows have a NULL `at`");
}

fn rss(p: &Project, args: &[&str], env: &[(&str, &str)], timeout_secs: u32) -> Value {
    let mut all = vec![
        timeout_secs.to_string(),
        env!("CARGO_BIN_EXE_pipe").to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut cmd = std::process::Command::new(common::python());
    cmd.current_dir(p.path())
        .arg(common::root().join("tests/interop/rss.py"))
        .args(&all);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!("rss.py: {}", String::from_utf8_lossy(&out.stderr));
    })
}

/// Hostile values end in a clear, located error within bounded time and memory, before
/// anything is read or committed.
#[test]
fn hostile_config_is_refused_quickly_with_its_place() {
    let p = Project::new();
    p.write("x.csv", "id\n1\n");
    let base = "name = \"h\"\n[source]\ntype = \"file\"\npath = \"x.csv\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{base}batch_rows = 9223372036854775807\n[destination]\ntype = \"null\"\n"),
            "`source.batch_rows`: must be between 1 and 1048576",
        ),
        (
            format!(
                "{base}[destination]\ntype = \"null\"\n[runtime]\nchannel_capacity = 9223372036854775807\n"
            ),
            "`runtime.channel_capacity`: must be between 1 and 1024",
        ),
        (
            format!(
                "{base}[destination]\ntype = \"null\"\n[state]\nlease_secs = 10000000000000000\n"
            ),
            "`state.lease_secs`: must be between 1 and 86400",
        ),
        (
            format!("{base}[contract]\npath = \"/dev/zero\"\n[destination]\ntype = \"null\"\n"),
            "not a regular file",
        ),
        (
            format!("{base}[destination]\ntype = \"null\"\n[schedule]\ncron = \"0 0 0 30 2 *\"\n"),
            "never fires",
        ),
        (
            "name = \"h\"\n[source]\ntype = \"postgres\"\nurl = \"mysql://u:hunter2@h/db\"\n\
             table = \"t\"\n[destination]\ntype = \"null\"\n"
                .to_string(),
            "must be a PostgreSQL URL",
        ),
        (
            format!(
                "{base}[contract]\n[[contract.rules]]\nname = \"big\"\n\
                 expression = \"length(repeat(CAST(id AS VARCHAR), 2000000000)) > 0\"\n\
                 [destination]\ntype = \"null\"\n"
            ),
            "would build strings of up to 2000000000 characters",
        ),
    ];
    for (text, message) in cases {
        p.write("h.toml", &text);
        let r = rss(&p, &["run", "h.toml"], &[], 30);
        assert_eq!(r["code"], 1, "{text}\n{r}");
        let stderr = r["stderr"].as_str().unwrap();
        assert!(
            stderr.contains(message),
            "{text}\nwant {message:?}\n{stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(r["max_rss_mb"].as_f64().unwrap() < 300.0, "{r}");
    }
}

/// A CSV record past `csv.max_record_mb` (a huge field, a file without a line end) is an
/// error naming the file and line, in bounded memory.
#[test]
fn a_huge_csv_record_is_an_error_naming_its_line() {
    let p = Project::new();
    let mut text = String::from("id,v\n1,a\n2,");
    text.push_str(&"x".repeat(3 * 1024 * 1024));
    text.push('\n');
    p.write("big.csv", &text);
    p.write(
        "big.toml",
        "name = \"big\"\n[source]\ntype = \"file\"\npath = \"big.csv\"\ncsv = { max_record_mb = 1 }\n\
         [destination]\ntype = \"null\"\n",
    );
    let r = rss(&p, &["run", "big.toml"], &[], 60);
    assert_eq!(r["code"], 1, "{r}");
    let stderr = r["stderr"].as_str().unwrap();
    assert!(
        stderr.contains("big.csv:3: a record longer than 1 MiB"),
        "{stderr}"
    );
    assert!(r["max_rss_mb"].as_f64().unwrap() < 200.0, "{r}");
}

/// Credentials in URLs and inline secrets never show: not in errors, not in the ledger
/// (`pipe status`), not in the TOML snippet of a configuration error.
#[test]
fn credentials_never_show_in_errors_status_or_snippets() {
    let p = Project::new();
    p.write(
        "leak.toml",
        "name = \"leak\"\n[source]\ntype = \"file\"\npath = \"http://etl:hunter2@127.0.0.1:9/x.csv\"\n\
         [destination]\ntype = \"null\"\n",
    );
    let run = p.pipe(&["run", "leak.toml"]).assert_failed();
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    assert!(run.stderr.contains("etl:***@127.0.0.1"), "{}", run.stderr);
    let status = p.pipe(&["status", "leak.toml", "--json"]).assert_ok();
    assert!(!status.stdout.contains("hunter2"), "{}", status.stdout);

    p.write(
        "snip.toml",
        "name = \"snip\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://etl:hunter2@db/x\"\n\
         table = 5\n[destination]\ntype = \"null\"\n",
    );
    let r = p.pipe(&["run", "snip.toml"]).assert_failed();
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    p.write(
        "snip2.toml",
        "name = \"snip\"\n[source]\ntype = \"file\"\npath = \"x.csv\"\n[destination]\n\
         type = \"delta\"\npath = \"lake/t\"\nstorage_options = { aws_secret_access_key = \"hunter2\", x = }\n",
    );
    let r = p.pipe(&["run", "snip2.toml"]).assert_failed();
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    assert!(r.stderr.contains("*******"), "{}", r.stderr);
}

/// `pipe validate` reaches the state store and reports one it cannot.
#[test]
fn validate_checks_the_state_store() {
    let p = Project::new();
    p.write(
        "v.toml",
        "name = \"v\"\n[source]\ntype = \"file\"\npath = \"pipelines/data/orders.csv\"\n\
         [destination]\ntype = \"null\"\n[state]\nurl = \"postgres://nobody@127.0.0.1:1/none\"\n",
    );
    p.pipe(&["validate", "v.toml"])
        .assert_failed()
        .stderr_has("state store");
}

/// 300,000 rows sharing the top cursor value (a bulk insert with `DEFAULT now()`): the
/// committed state stays a few hundred bytes in every destination's metadata, the next run
/// skips them, later rows load once, and new rows at exactly that value are refused in append
/// mode (pipe cannot tell which are new) but loaded by a merge.
#[test]
fn many_tied_cursor_values_keep_state_and_metadata_small() {
    let mut pg = PgObjects::new();
    let t = unique("pipe_ties");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, at timestamptz); \
             INSERT INTO {t} SELECT g, '2024-05-01 12:00:00+00' FROM generate_series(1, 300000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    for dest in Dest::ALL {
        let p = Project::new();
        let source = pg_source(&t, "cursor = \"at\"");
        let f = dest.pipeline(&p, "ties", &source, "ties", "append", "");
        p.pipe(&["run", &f]).assert_ok();
        let status = p.pipe(&["status", &f, "--json"]).assert_ok().json();
        let state = status["state"]["cursor.at"].as_str().unwrap().to_string();
        assert!(
            state.len() < 300,
            "{}: state of {} bytes",
            dest.name(),
            state.len()
        );
        let metadata = largest_metadata(dest, &p);
        assert!(
            metadata < 64 * 1024,
            "{}: {metadata} bytes of metadata",
            dest.name()
        );

        let idle = p.pipe(&["run", &f, "--json"]).assert_ok().json();
        assert_eq!(idle["rows_read"], 0, "{idle}");
        psql(&format!(
            "INSERT INTO {t} SELECT g, '2024-05-01 12:00:01+00' FROM generate_series(300001, 300010) g"
        ));
        p.pipe(&["run", &f]).assert_ok();
        assert_eq!(
            counts(dest, &p, "ties"),
            (300010, 300010),
            "{}",
            dest.name()
        );
        psql(&format!("DELETE FROM {t} WHERE id > 300000"));
    }
    // New rows at exactly the tied value, after a run committed the digest of the old ones.
    let p = Project::new();
    let source = pg_source(&t, "cursor = \"at\"");
    let f = Dest::DuckDb.pipeline(&p, "ties2", &source, "ties2", "append", "");
    p.pipe(&["run", &f]).assert_ok();
    psql(&format!(
        "INSERT INTO {t} SELECT g, '2024-05-01 12:00:00+00' FROM generate_series(300001, 300005) g"
    ));
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("changed since the last run");
    assert_eq!(counts(Dest::DuckDb, &p, "ties2").0, 300000);
    let m = Dest::DuckDb.pipeline(
        &p,
        "ties2",
        &source,
        "ties2",
        "merge",
        "merge_keys = [\"id\"]",
    );
    let v = p.pipe(&["run", &m, "--json"]).assert_ok().json();
    assert_eq!(v["commit"]["rows_inserted"], 5, "{v}");
    assert_eq!(counts(Dest::DuckDb, &p, "ties2"), (300005, 300005));
}

/// The largest metadata file the destination keeps per commit: Iceberg `metadata.json`,
/// Delta commit files, DuckDB's committed state values.
fn largest_metadata(dest: Dest, p: &Project) -> u64 {
    let biggest = |dir: &std::path::Path, suffix: &str| {
        common::rows::on_disk(dir)
            .iter()
            .filter(|f| f.ends_with(suffix))
            .map(|f| std::fs::metadata(f).unwrap().len())
            .max()
            .unwrap_or(0)
    };
    match dest {
        Dest::Iceberg | Dest::IcebergHive => biggest(&p.path().join("wh"), ".metadata.json"),
        Dest::IcebergS3 | Dest::IcebergAzure => dest
            .objects(p)
            .into_iter()
            .filter(|(k, _)| k.ends_with(".metadata.json"))
            .map(|(_, size)| size)
            .max()
            .unwrap_or(0),
        // wh/ (pipe serve catalog) or lakana/storage/
        Dest::IcebergRest(_) => biggest(p.path(), ".metadata.json"),
        Dest::Delta => biggest(&p.path().join("lake/ties/_delta_log"), ".json"),
        Dest::Files => biggest(&p.path().join("files/ties/_pipe/log"), ".json"),
        Dest::DuckDb => {
            let rows = common::query(
                &p.path().join("db/pipe.duckdb"),
                "SELECT max(length(value)) FROM _pipe.state",
            );
            rows[0][0].as_deref().unwrap().parse().unwrap()
        }
    }
}
