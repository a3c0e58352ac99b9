//! The file destination (`type = "files"`): Postgres → partitioned Parquet, CSV and NDJSON
//! read back by pyarrow and DuckDB; every type of the type-extremes fixture; a replace that a
//! polling reader never sees half done; `kill -9` then a rerun; an incremental cursor over
//! three runs; an S3 prefix (moto); merge refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::dest::extremes;
use common::{PgObjects, Project, kill9, pg_url, psql, py_in, python, root, unique};
use serde_json::Value;

fn read(p: &Project, reader: &str, dir: &str, format: &str) -> Value {
    let (ok, v) = py_in(p.path(), "filesdest.py", &["read", reader, dir, format]);
    assert!(ok, "{reader} could not read {dir} ({format}): {v}");
    v
}

fn data_files(p: &Project, dir: &str) -> Vec<String> {
    let (ok, v) = py_in(p.path(), "filesdest.py", &["files", dir]);
    assert!(ok, "{v}");
    serde_json::from_value(v).unwrap()
}

fn pipeline(p: &Project, name: &str, source: &str, destination: &str) -> String {
    let file = format!("{name}.toml");
    p.write(
        &file,
        &format!("name = \"{name}\"\n[source]\n{source}\n[destination]\ntype = \"files\"\n{destination}\n"),
    );
    file
}

/// A Postgres table of edge values: quoting, NULL against empty, unicode, extremes.
fn edge_table(pg: &mut PgObjects) -> String {
    let t = unique("files_edge");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, region text, name text, n bigint, \
             amount numeric(12,2), day date);
             INSERT INTO {t} VALUES
               (1, 'eu', 'plain', 9223372036854775807, 1.50, '2024-01-01'),
               (2, 'eu', '', -9223372036854775808, -0.01, '1970-01-01'),
               (3, 'us', NULL, 0, NULL, NULL),
               (4, 'us', 'a,\"b\"\nc', 42, 99999.99, '2999-12-31'),
               (5, 'apac', 'Zürich 🦆', NULL, 0.00, '2000-02-29'),
               (6, 'a/b=c', ' ', 7, 1.00, '2024-06-30');"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    t
}

/// The rows `psql` returns for the edge table, in edge.py's canonical form, less `columns`
/// the format cannot type (read back as text or numbers).
fn expected_edge(t: &str) -> Vec<Value> {
    let out = psql(&format!(
        "SELECT json_agg(json_build_object('id', id, 'region', region, 'name', name, 'n', n) \
         ORDER BY id) FROM {t}"
    ));
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

fn project(rows: &Value, keep: &[&str]) -> Vec<Value> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            for k in keep {
                let mut v = r[*k].clone();
                // DuckDB types a JSON column holding INT64_MIN as HUGEINT, which reaches the
                // canonical form as exact decimal text: the same value
                if let Some(n) = v.as_str().and_then(|t| t.parse::<i64>().ok()) {
                    v = Value::from(n);
                }
                o.insert((*k).to_string(), v);
            }
            Value::Object(o)
        })
        .collect()
}

#[test]
fn postgres_to_partitioned_parquet_csv_and_ndjson_read_back_by_pyarrow_and_duckdb() {
    let mut pg = PgObjects::new();
    let t = edge_table(&mut pg);
    let expected = expected_edge(&t);
    let p = Project::new();
    for format in ["parquet", "csv", "ndjson"] {
        let dir = format!("out/{format}");
        let f = pipeline(
            &p,
            &format!("edge_{format}"),
            &format!(
                "type = \"postgres\"\nurl = \"{}\"\ntable = \"{t}\"",
                pg_url()
            ),
            &format!("path = \"{dir}\"\nformat = \"{format}\"\npartition_by = [\"region\"]"),
        );
        let v = p.pipe(&["run", &f, "--json"]).assert_ok().json();
        assert_eq!(v["commit"]["rows_inserted"], 6, "{format}: {v}");
        let files = data_files(&p, &dir);
        assert!(
            files.iter().any(|f| f.starts_with("region=a%2Fb%3Dc/")),
            "{format}: Hive-escaped partition directory: {files:?}"
        );
        for reader in ["pyarrow", "duckdb"] {
            let rows = read(&p, reader, &dir, format);
            let got = project(&rows, &["id", "region", "name", "n"]);
            assert_eq!(got, expected, "{format} read by {reader}");
            if format == "parquet" {
                let amounts: Vec<Option<String>> = rows
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["amount"].as_str().map(str::to_string))
                    .collect();
                assert_eq!(
                    amounts,
                    [
                        Some("1.5"),
                        Some("-0.01"),
                        None,
                        Some("99999.99"),
                        Some("0"),
                        Some("1")
                    ]
                    .map(|a| a.map(str::to_string)),
                    "decimals exact through {reader}"
                );
            }
        }
    }
}

#[test]
fn every_type_of_the_fixture_round_trips_as_parquet() {
    let (p, expected) = extremes();
    let f = pipeline(
        &p,
        "fx",
        "type = \"file\"\npath = \"fx/extremes.parquet\"",
        "path = \"out/fx\"",
    );
    p.pipe(&["run", &f]).assert_ok();
    for reader in ["pyarrow", "duckdb"] {
        assert_eq!(read(&p, reader, "out/fx", "parquet"), expected, "{reader}");
    }
    // a replace of the same rows leaves exactly them
    let r = p
        .read(&f)
        .replace("path = \"out/fx\"", "path = \"out/fx\"\nmode = \"replace\"");
    p.write(&f, &r);
    p.pipe(&["run", &f]).assert_ok();
    assert_eq!(read(&p, "pyarrow", "out/fx", "parquet"), expected);
}

fn numbers(p: &Project, from: i64, to: i64) {
    let mut text = String::from("id,region,payload\n");
    for i in from..to {
        text.push_str(&format!(
            "{i},{},{}\n",
            ["eu", "us", "apac"][(i % 3) as usize],
            "x".repeat(40)
        ));
    }
    p.write("in.csv", &text);
}

/// A poller walking the directory while a replace runs sees the old files or the new ones,
/// never both: one `readdir` of an unpartitioned directory, one `os.fwalk` of a partitioned
/// one (each directory opened relative to its parent).
#[test]
fn a_replace_is_never_seen_half_done() {
    for (layout, keys, walk) in [
        ("flat", "", "listdir"),
        ("partitioned", "partition_by = [\"region\"]", "fwalk"),
    ] {
        let p = Project::new();
        let source = "type = \"file\"\npath = \"in.csv\"";
        let dest =
            format!("path = \"out/t\"\ntarget_file_size_mb = 1\nrow_group_rows = 4096\n{keys}");
        let append = pipeline(&p, "a", source, &dest);
        numbers(&p, 0, 20_000);
        p.pipe(&["run", &append]).assert_ok();
        numbers(&p, 20_000, 40_000);
        p.pipe(&["run", &append]).assert_ok();
        let replace = pipeline(&p, "r", source, &format!("{dest}\nmode = \"replace\""));
        numbers(&p, 100_000, 400_000);
        let poller = Command::new(python())
            .current_dir(p.path())
            .arg(root().join("tests/interop/filesdest.py"))
            .args(["poll", "out/t", "120", walk])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        p.pipe(&["run", &replace]).assert_ok();
        std::thread::sleep(Duration::from_millis(300));
        p.write("out/stop-poll", "");
        let out = poller.wait_with_output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let seen: Vec<Vec<String>> = serde_json::from_value(v["observations"].clone()).unwrap();
        assert!(
            v["walks"].as_u64().unwrap() > 10,
            "{layout}: the poller ran: {v}"
        );
        // the first walk saw the two appends; the last the replace alone
        let (old, new) = (seen[0].clone(), seen[seen.len() - 1].clone());
        assert_eq!(old.len(), 2, "{layout}: two appends: {v}");
        assert_eq!(new.len(), 1, "{layout}: one replace: {v}");
        assert!(!old.contains(&new[0]), "{layout}: {v}");
        // in between, only what a deletion of the old version shows: parts of the old set
        for observed in &seen {
            let all_old = observed.iter().all(|s| old.contains(s));
            let all_new = observed.iter().all(|s| new.contains(s));
            assert!(
                all_old || all_new,
                "{layout}: a walk saw old and new files: {v}"
            );
        }
        let rows = read(&p, "duckdb", "out/t", "parquet");
        assert_eq!(rows.as_array().unwrap().len(), 300_000, "{layout}");
        std::fs::remove_file(p.path().join("out/stop-poll")).unwrap();
    }
}

#[test]
fn kill_9_during_runs_then_a_rerun_loads_every_row_once_without_stray_files() {
    let mut pg = PgObjects::new();
    let t = unique("files_kill");
    pg.create(
        &format!(
            "CREATE TABLE {t} AS SELECT g AS id, md5(g::text) AS payload, (g % 7) AS bucket \
             FROM generate_series(1, 400000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let p = Project::new();
    let f = pipeline(
        &p,
        "k",
        &format!(
            "type = \"postgres\"\nurl = \"{}\"\ntable = \"{t}\"\ncursor = \"id\"",
            pg_url()
        ),
        "path = \"out/k\"\npartition_by = [\"bucket\"]\ntarget_file_size_mb = 1\nrow_group_rows = 8192",
    );
    for delay_ms in [150_u64, 400, 700, 1_000, 1_500] {
        let mut child = p.spawn(&["run", &f, "--no-progress"], &[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill9(&mut child);
    }
    p.pipe(&["run", &f]).assert_ok();
    // a second run finds nothing new
    let v = p.pipe(&["run", &f, "--json"]).assert_ok().json();
    assert_eq!(v["rows_read"], 0, "{v}");
    let rows = read(&p, "duckdb", "out/k", "parquet");
    let ids: Vec<i64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 400_000, "every row once");
    assert!(
        ids.windows(2).all(|w| w[0] + 1 == w[1]),
        "no duplicate, no gap"
    );
    // nothing staged is left once a commit ran, and every visible file is in the log
    let staging = p.path().join("out/.k.pipe/staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staged leftovers: {left:?}");
    let inspect = p
        .pipe(&["table", "inspect", &f, "--json"])
        .assert_ok()
        .json();
    assert_eq!(
        inspect["files"].as_u64().unwrap() as usize,
        data_files(&p, "out/k").len(),
        "{inspect}"
    );
    assert_eq!(inspect["rows"], 400_000);
}

#[test]
fn an_incremental_cursor_loads_only_new_rows_over_three_runs() {
    let mut pg = PgObjects::new();
    let t = unique("files_inc");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, updated_at timestamptz NOT NULL, v text);
             INSERT INTO {t} SELECT g, '2024-01-01'::timestamptz + g * interval '1 minute', 'a'
             FROM generate_series(1, 100) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let p = Project::new();
    let f = pipeline(
        &p,
        "inc",
        &format!(
            "type = \"postgres\"\nurl = \"{}\"\ntable = \"{t}\"\ncursor = \"updated_at\"",
            pg_url()
        ),
        "path = \"out/inc\"\nformat = \"ndjson\"\ncompression = \"gzip\"",
    );
    let mut loaded = Vec::new();
    for (from, to) in [(0, 0), (101, 150), (151, 175)] {
        if from > 0 {
            psql(&format!(
                "INSERT INTO {t} SELECT g, '2024-01-01'::timestamptz + g * interval '1 minute', \
                 'b' FROM generate_series({from}, {to}) g"
            ));
        }
        let v = p.pipe(&["run", &f, "--json"]).assert_ok().json();
        loaded.push(v["commit"]["rows_inserted"].as_u64().unwrap());
    }
    assert_eq!(loaded, [100, 50, 25]);
    for reader in ["pyarrow", "duckdb"] {
        let rows = read(&p, reader, "out/inc", "ndjson");
        let ids: Vec<i64> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, (1..=175).collect::<Vec<_>>(), "{reader}");
    }
    let history = p
        .pipe(&["table", "history", &f, "--json"])
        .assert_ok()
        .json();
    let commits = history.as_array().unwrap();
    assert_eq!(commits.len(), 3, "{history}");
    assert!(
        commits[0]["summary"]["pipe.state.cursor.updated_at"]
            .as_str()
            .unwrap()
            .contains("2024-01-01"),
        "the cursor is committed with the files: {history}"
    );
}

#[test]
fn an_s3_prefix_takes_appends_and_replaces_with_nothing_staged_left() {
    let p = Project::new();
    let s3 = p.s3();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let f = pipeline(
        &p,
        "s3",
        "type = \"file\"\npath = \"in.csv\"",
        &format!(
            "path = \"s3://{}/files/t\"\npartition_by = [\"region\"]",
            common::s3::BUCKET
        ),
    );
    numbers(&p, 0, 300);
    p.pipe_env(&["run", &f], &env).assert_ok();
    numbers(&p, 300, 600);
    p.pipe_env(&["run", &f], &env).assert_ok();
    let read_s3 = || {
        let (ok, v) = common::py_env(
            p.path(),
            "filesdest.py",
            &[
                "read",
                "pyarrow",
                &format!("s3://{}/files/t", common::s3::BUCKET),
                "parquet",
                env[0].1,
            ],
            &env,
        );
        assert!(ok, "{v}");
        v.as_array().unwrap().len()
    };
    assert_eq!(read_s3(), 600);
    let r = p
        .read(&f)
        .replace("type = \"files\"", "type = \"files\"\nmode = \"replace\"");
    p.write(&f, &r);
    numbers(&p, 1_000, 1_100);
    let v = p.pipe_env(&["run", &f, "--json"], &env).assert_ok().json();
    assert_eq!(v["commit"]["rows_deleted"], 600, "{v}");
    assert_eq!(read_s3(), 100);
    let keys = s3.keys("files/t/");
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("staging") || k.ends_with(".staged")),
        "{keys:?}"
    );
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(".parquet")).count(),
        3,
        "{keys:?}"
    );
}

#[test]
fn merge_is_refused_with_where_to_go_instead() {
    let p = Project::new();
    let f = pipeline(
        &p,
        "m",
        "type = \"file\"\npath = \"in.csv\"",
        "path = \"out/m\"\nmode = \"merge\"\nmerge_keys = [\"id\"]",
    );
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("does not support mode `merge`")
        .stderr_has("type = \"delta\"");
    assert!(!p.path().join("out/m").exists());
}
