//! One-line loads (`pipe load SOURCE DESTINATION`), starter files (`pipe init`) and named
//! connections (`connections.toml`, `connection = "…"`, `pipe connections list|test`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use common::{PgObjects, Project, pg_url, py_in, query, unique};
use serde_json::Value;

fn orders_table(pg: &mut PgObjects) -> String {
    let t = unique("load_orders");
    pg.create(
        &format!(
            "CREATE TABLE {t} AS SELECT g AS id, (g % 5)::text AS region, g * 1.25 AS amount \
             FROM generate_series(1, 1000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    t
}

fn count(p: &Project, reader_args: &[&str]) -> usize {
    let (ok, v) = py_in(p.path(), "filesdest.py", reader_args);
    assert!(ok, "{v}");
    v.as_array().unwrap().len()
}

/// How a case counts the rows its destination holds (with an independent reader).
type RowCount = Box<dyn Fn(&Project) -> usize>;

/// Keys of a run summary that must agree between `pipe load` and `pipe run` of its file.
fn summary(v: &Value) -> Value {
    serde_json::json!({
        "rows_read": v["rows_read"],
        "inserted": v["commit"]["rows_inserted"],
        "deleted": v["commit"]["rows_deleted"],
        "status": v["status"],
    })
}

#[test]
fn each_pair_loads_and_the_saved_file_reruns_identically() {
    let mut pg = PgObjects::new();
    let t = orders_table(&mut pg);
    let p = Project::new();
    let pg_src = format!("{}?table=public.{t}", pg_url());
    let cases: Vec<(String, String, RowCount)> = vec![
        (
            pg_src.clone(),
            "parquet://out/pq?partition_by=region".into(),
            Box::new(|p: &Project| count(p, &["read", "pyarrow", "out/pq", "parquet"])),
        ),
        (
            pg_src.clone(),
            "csv://out/csv".into(),
            Box::new(|p: &Project| count(p, &["read", "duckdb", "out/csv", "csv"])),
        ),
        (
            pg_src.clone(),
            "duckdb://out/db.duckdb?table=main.orders".into(),
            Box::new(|p: &Project| {
                let rows = query(
                    &p.path().join("out/db.duckdb"),
                    "SELECT count(*) FROM main.orders",
                );
                rows[0][0].as_deref().unwrap().parse().unwrap()
            }),
        ),
        (
            "pipelines/data/orders.csv".into(),
            "delta://out/delta".into(),
            Box::new(|p: &Project| {
                let (ok, v) = py_in(p.path(), "delta.py", &["read", "out/delta"]);
                assert!(ok, "{v}");
                v["count"].as_u64().unwrap() as usize
            }),
        ),
        (
            "pipelines/data/orders.csv".into(),
            "iceberg+sqlite://out/cat.db?warehouse=out/wh&table=ns.orders".into(),
            Box::new(|p: &Project| {
                let (ok, v) = py_in(
                    p.path(),
                    "ice.py",
                    &["read", "out/cat.db", "out/wh", "ns.orders"],
                );
                assert!(ok, "{v}");
                v["count"].as_u64().unwrap() as usize
            }),
        ),
    ];
    for (i, (src, dst, rows)) in cases.iter().enumerate() {
        let saved = format!("saved_{i}.toml");
        let first = p
            .pipe(&[
                "load", src, dst, "--mode", "replace", "--save", &saved, "--json",
            ])
            .assert_ok()
            .json();
        let n = rows(&p);
        assert!(n > 0, "{dst}: rows landed");
        assert_eq!(
            first["commit"]["rows_inserted"].as_u64().unwrap() as usize,
            n,
            "{dst}"
        );
        let again = p.pipe(&["run", &saved, "--json"]).assert_ok().json();
        let mut expect = summary(&first);
        expect["deleted"] = Value::from(n);
        assert_eq!(
            summary(&again),
            expect,
            "{dst}: the saved file reruns the same load"
        );
        assert_eq!(rows(&p), n, "{dst}: a replace of the same rows");
    }
}

#[test]
fn the_printed_pipeline_is_the_one_a_user_would_write() {
    let p = Project::new();
    let out = p
        .pipe(&[
            "load",
            "postgres://etl@db:5432/sales?table=public.orders&sslmode=disable",
            "duckdb://wh.duckdb",
            "--mode",
            "merge",
            "--merge-keys",
            "id, region",
            "--cursor",
            "updated_at",
            "--print",
        ])
        .assert_ok();
    let text = out.stdout.clone();
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    let expected: toml::Table = toml::from_str(
        "name = \"orders\"\n\
         [source]\ntype = \"postgres\"\nurl = \"postgres://etl@db:5432/sales?sslmode=disable\"\n\
         table = \"public.orders\"\ncursor = \"updated_at\"\n\
         [destination]\ntype = \"duckdb\"\npath = \"wh.duckdb\"\ntable = \"main.orders\"\n\
         mode = \"merge\"\nmerge_keys = [\"id\", \"region\"]\n",
    )
    .unwrap();
    assert_eq!(parsed, expected, "{text}");
    // a password is never printed or saved: it becomes an environment reference
    let shown = p
        .pipe(&[
            "load",
            "postgres://etl:hunter2@db/s?table=t",
            "duckdb://w.duckdb",
            "--print",
        ])
        .assert_ok();
    assert!(
        !shown.stdout.contains("hunter2") && shown.stdout.contains("etl:${PGPASSWORD}@db"),
        "{}",
        shown.stdout
    );
    shown.stderr_has("set PGPASSWORD");
    // `pipe init` writes the same pipeline with a guide in comments
    p.pipe(&[
        "init",
        "pipelines/data/orders.csv",
        "parquet://out/o",
        "-o",
        "new.toml",
    ])
    .assert_ok();
    let init = p.read("new.toml");
    assert!(init.contains("# A data contract"), "{init}");
    p.pipe(&["validate", "new.toml"]).assert_ok();
    p.pipe(&[
        "init",
        "pipelines/data/orders.csv",
        "parquet://out/o",
        "-o",
        "new.toml",
    ])
    .assert_failed()
    .stderr_has("--force");
}

#[test]
fn bad_uris_say_what_is_wrong_and_what_is_supported() {
    let p = Project::new();
    for (src, dst, needles) in [
        (
            "mysql://x/y",
            "parquet://o",
            vec![
                "source `mysql://x/y`",
                "unknown scheme `mysql://`",
                "postgres://USER@HOST",
            ],
        ),
        (
            "postgres://db/x",
            "parquet://o",
            vec!["add ?table=SCHEMA.TABLE"],
        ),
        (
            "in.csv",
            "parket://o",
            vec![
                "destination `parket://o`",
                "unknown scheme",
                "parquet://DIR",
            ],
        ),
        (
            "in.csv",
            "duckdb://x.duckdb?tabel=a",
            vec!["unknown parameter `tabel`", "takes: table"],
        ),
        (
            "in.csv",
            "warehouse:public.t",
            vec!["unknown connection `warehouse`"],
        ),
        (
            "postgres://u:hunter2@db/x",
            "mysql://o",
            vec!["postgres://u:***@db/x"],
        ),
    ] {
        let run = p.pipe(&["load", src, dst]).assert_failed();
        for needle in needles {
            run.stderr_has(needle);
        }
        let stderr = run.stderr.clone();
        assert!(
            !stderr.contains("hunter2"),
            "a password is never printed: {stderr}"
        );
    }
}

#[test]
fn named_connections_run_list_and_test_with_secrets_masked() {
    let mut pg = PgObjects::new();
    let t = orders_table(&mut pg);
    let p = Project::new();
    p.write(
        "connections.toml",
        "[connections.warehouse]\ntype = \"postgres\"\nurl = \"${TEST_PG_URL}\"\n\n\
         [connections.down]\ntype = \"postgres\"\n\
         url = \"postgres://etl:s3cretpw@127.0.0.1:1/none\"\nconnect_timeout_secs = 2\n\n\
         [connections.lake]\ntype = \"files\"\npath = \"out/lake\"\n",
    );
    let env = [("TEST_PG_URL", pg_url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p.write(
        "c.toml",
        &format!(
            "name = \"c\"\n[source]\nconnection = \"warehouse\"\ntable = \"public.{t}\"\n\
             [destination]\nconnection = \"lake\"\n"
        ),
    );
    let v = p
        .pipe_env(&["run", "c.toml", "--json"], &env)
        .assert_ok()
        .json();
    assert_eq!(v["commit"]["rows_inserted"], 1000, "{v}");
    // the same connections from a one-line load
    p.pipe_env(
        &[
            "load",
            &format!("warehouse:public.{t}"),
            "parquet://out/one",
        ],
        &env,
    )
    .assert_ok();
    assert_eq!(count(&p, &["read", "duckdb", "out/one", "parquet"]), 1000);

    let list = p.pipe_env(&["connections", "list"], &env).assert_ok();
    let text = list.stdout.clone();
    assert!(text.contains("warehouse  (postgres"), "{text}");
    assert!(!text.contains("s3cretpw"), "secrets masked: {text}");

    p.pipe_env(&["connections", "test", "warehouse"], &env)
        .assert_ok()
        .stdout_has("warehouse: reachable");
    p.pipe_env(&["connections", "test", "lake"], &env)
        .assert_ok()
        .stdout_has("lake: reachable");
    let down = p
        .pipe_env(&["connections", "test", "down"], &env)
        .assert_failed();
    down.stdout_has("down: unreachable");
    let all = format!("{}{}", down.stdout, down.stderr);
    assert!(!all.contains("s3cretpw"), "the password is masked: {all}");

    p.write(
        "bad.toml",
        "name = \"bad\"\n[source]\nconnection = \"wharehouse\"\ntable = \"t\"\n[destination]\ntype = \"null\"\n",
    );
    p.pipe_env(&["run", "bad.toml"], &env)
        .assert_failed()
        .stderr_has("bad.toml:3:")
        .stderr_has("unknown connection `wharehouse`; known: down, lake, warehouse");
}
