//! The Postgres source against the machine's PostgreSQL: every type read back exactly as
//! `psql` returns it, parallel reads that are one snapshot under concurrent writes,
//! incremental runs, and one clear error per kind of bad connection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use common::{PgObjects, Project, pg_url, psql, py, unique};

fn pipeline(name: &str, source: &str, db: &str, table: &str, extra_dest: &str) -> String {
    format!(
        "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n{source}\n\
         [destination]\ntype = \"duckdb\"\npath = \"{db}\"\ntable = \"{table}\"\n{extra_dest}\n",
        pg_url()
    )
}

fn check_pg(p: &Project, pg_table: &str, duck_table: &str, key: &str) -> serde_json::Value {
    let db = p.path().join("pg.duckdb");
    let (ok, report) = py(
        "check_pg.py",
        &[pg_table, db.to_str().unwrap(), duck_table, "--key", key],
    );
    assert!(ok, "{report}");
    report
}

const TYPES: &str = "
  id int PRIMARY KEY, i2 smallint, i4 int, i8 bigint, f4 real, f8 double precision,
  n numeric(38,10), n2 numeric(15,2), nu numeric, t text, vc varchar(20), ch char(5), b bool,
  d date, tm time, ts timestamp, tstz timestamptz, iv interval, u uuid, by bytea,
  j json, jb jsonb, ai int[], at text[], mood {MOOD}, dom {DOM}";

const ROWS: &str = "
 (1, -32768, -2147483648, -9223372036854775808, 'NaN', 'Infinity',
  9999999999999999999999999999.9999999999, 123.45, 'NaN',
  'Zürich 🦆 ünïcödé', 'varchar', 'ab', true, '1970-01-01', '00:00:00', '1970-01-01 00:00:00',
  '1970-01-01 00:00:00+00', '1 year 2 mons 3 days 04:05:06.789',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', '{\"a\": [1, 2.50]}', '{\"b\": null}',
  '{1,NULL,3}', '{}', 'happy', 42),
 (2, 32767, 2147483647, 9223372036854775807, '-Infinity', -1.5e300, -0.0000000001, -99999.99,
  3.14159265358979323846264338327950288419716939937510, '', 'x', 'abcde', false, '9999-12-31',
  '23:59:59.999999', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:08.000001+00',
  '-1 days -00:00:01', '00000000-0000-0000-0000-000000000000', '\\x', '[]', '[]', '{}',
  '{\"\",NULL,\"ü\"}', 'sad', -1),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, 0, 1.1, 0.1, 0, 0, -0.000000000000000000001, 'line\nbreak\ttab', '', '     ', true,
  '2000-01-01', '12:00:00', '2000-01-01 00:00:00.5', '1999-12-31 23:59:59.999999+00', '0',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '\\xdeadbeef', 'null', '{\"k\": \"ü\"}',
  '{-1}', '{\"a,b\",\"\\\"q\\\"\"}', 'ok', 0)";

#[test]
fn every_type_loads_exactly_as_psql_returns_it() {
    let p = Project::new();
    let mut pg = PgObjects::new();
    let (table, mood, dom) = (
        unique("pipe_types"),
        unique("pipe_mood"),
        unique("pipe_dom"),
    );
    pg.create(
        &format!("CREATE TYPE {mood} AS ENUM ('sad', 'ok', 'happy')"),
        &format!("DROP TYPE IF EXISTS {mood}"),
    );
    pg.create(
        &format!("CREATE DOMAIN {dom} AS int CHECK (VALUE > -10)"),
        &format!("DROP DOMAIN IF EXISTS {dom}"),
    );
    let columns = TYPES.replace("{MOOD}", &mood).replace("{DOM}", &dom);
    pg.create(
        &format!("CREATE TABLE {table} ({columns}); INSERT INTO {table} VALUES {ROWS}"),
        &format!("DROP TABLE IF EXISTS {table}"),
    );
    let source = format!("table = \"public.{table}\"\nbatch_rows = 3");
    p.write(
        "types.toml",
        &pipeline("pg_types", &source, "pg.duckdb", "src.types", ""),
    );
    let s = p.pipe(&["run", "types.toml", "--json"]).assert_ok().json();
    assert_eq!(s["rows_read"], 4);
    let report = check_pg(&p, &format!("public.{table}"), "src.types", "id");
    assert_eq!(report["rows"], 4);
    // The types DuckDB got: decimals exact, time zones kept, UUID native, enum as text.
    let types = common::query(
        &p.path().join("pg.duckdb"),
        "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) \
         FROM information_schema.columns WHERE table_name = 'types'",
    );
    let types = types[0][0].clone().unwrap();
    for expected in [
        "n DECIMAL(38,10)",
        "n2 DECIMAL(15,2)",
        "nu VARCHAR",
        "tstz TIMESTAMP WITH TIME ZONE",
        "iv INTERVAL",
        "u UUID",
        "ai INTEGER[]",
        "mood VARCHAR",
        "dom INTEGER",
    ] {
        assert!(types.contains(expected), "{expected} not in {types}");
    }
}

#[test]
fn unsupported_types_are_named_or_read_as_text_and_numeric_is_never_rounded() {
    let p = Project::new();
    let mut pg = PgObjects::new();
    let table = unique("pipe_geo");
    pg.create(
        &format!(
            "CREATE TABLE {table} (id int, pt point, amount numeric); \
             INSERT INTO {table} VALUES (1, '(1,2)', 1.25), (2, NULL, 0.125)"
        ),
        &format!("DROP TABLE IF EXISTS {table}"),
    );
    let base = format!("table = \"{table}\"");
    p.write(
        "err.toml",
        &pipeline("geo", &base, "pg.duckdb", "src.geo", ""),
    );
    p.pipe(&["run", "err.toml"])
        .assert_failed()
        .stderr_has("column `pt` has type point, which pipe cannot map to Arrow");

    let text = format!("{base}\nunsupported_types = \"text\"");
    p.write(
        "text.toml",
        &pipeline("geo", &text, "pg.duckdb", "src.geo", ""),
    );
    p.pipe(&["run", "text.toml"]).assert_ok();
    let rows = common::query(
        &p.path().join("pg.duckdb"),
        "SELECT pt, amount FROM src.geo ORDER BY id",
    );
    assert_eq!(rows[0], vec![Some("(1,2)".into()), Some("1.25".into())]);
    assert_eq!(rows[1], vec![None, Some("0.125".into())]);

    // An unconstrained numeric read as decimal(10,2): 0.125 would be rounded, so it fails.
    let rounded = format!("{text}\nunconstrained_numeric = \"decimal(10,2)\"");
    p.write(
        "round.toml",
        &pipeline("geo2", &rounded, "pg.duckdb", "src.geo2", ""),
    );
    p.pipe(&["run", "round.toml"])
        .assert_failed()
        .stderr_has("column `amount`: 0.125 has more than 2 decimal places; it would be rounded");
}

#[test]
fn bad_connections_give_one_clear_error_without_the_password() {
    let p = Project::new();
    let mut pg = PgObjects::new();
    let (table, noaccess) = (unique("pipe_secret"), unique("pipe_noaccess"));
    pg.create(
        &format!("CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1)"),
        &format!("DROP TABLE IF EXISTS {table}"),
    );
    pg.create(
        &format!("CREATE ROLE {noaccess} LOGIN; REVOKE ALL ON {table} FROM {noaccess}"),
        &format!("DROP ROLE IF EXISTS {noaccess}"),
    );
    // pipe_pw_test needs a password (tests/pg/setup.sh adds the pg_hba.conf rule).
    psql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pipe_pw_test') THEN \
         CREATE ROLE pipe_pw_test LOGIN PASSWORD 'right-pw'; END IF; END $$",
    );
    let secret = "Sup3r-Secret-pw";
    let cases = [
        (
            format!("postgres://postgres:{secret}@127.0.0.1:1/test"),
            table.clone(),
            "connecting (postgres@127.0.0.1:1/test)".to_string(),
        ),
        (
            format!("postgres://pipe_pw_test:{secret}@127.0.0.1:5432/test"),
            table.clone(),
            "password authentication failed for user \"pipe_pw_test\"".to_string(),
        ),
        (
            format!("postgres://postgres:{secret}@127.0.0.1:5432/test"),
            "no_such_table_here".to_string(),
            "relation \"no_such_table_here\" does not exist".to_string(),
        ),
        (
            format!("postgres://{noaccess}:{secret}@127.0.0.1:5432/test"),
            table.clone(),
            format!("permission denied for table {table}"),
        ),
    ];
    for (i, (url, table, expected)) in cases.iter().enumerate() {
        let toml = format!(
            "name = \"bad{i}\"\n[source]\ntype = \"postgres\"\nurl = \"${{PG_BAD_URL}}\"\n\
             table = \"{table}\"\nconnect_timeout_secs = 5\n\
             [destination]\ntype = \"duckdb\"\npath = \"bad.duckdb\"\ntable = \"t\"\n"
        );
        p.write(&format!("bad{i}.toml"), &toml);
        let r = p
            .pipe_env(&["run", &format!("bad{i}.toml")], &[("PG_BAD_URL", url)])
            .assert_failed();
        r.stderr_has(expected);
        assert!(
            !r.stderr.contains(secret),
            "the password leaked:\n{}",
            r.stderr
        );
        assert_eq!(r.stderr.matches("error:").count(), 1, "{}", r.stderr);
    }
}

/// `(id, balance, version)` rows of the loaded table, read by python duckdb.
fn loaded_accounts(p: &Project, table: &str) -> Vec<(i64, i64, i64)> {
    common::query(
        &p.path().join("pg.duckdb"),
        &format!("SELECT id, balance, version FROM {table} ORDER BY id"),
    )
    .into_iter()
    .map(|r| {
        let n = |i: usize| r[i].as_deref().unwrap().parse::<i64>().unwrap();
        (n(0), n(1), n(2))
    })
    .collect()
}

#[test]
fn a_parallel_read_is_one_consistent_snapshot_under_concurrent_writes() {
    let p = Project::new();
    let mut pg = PgObjects::new();
    let (acct, log, seq) = (
        unique("pipe_acct"),
        unique("pipe_acct_log"),
        unique("pipe_acct_seq"),
    );
    pg.create(
        &format!("CREATE SEQUENCE {seq}"),
        &format!("DROP SEQUENCE IF EXISTS {seq}"),
    );
    pg.create(
        &format!("CREATE TABLE {log} (seq bigint, id int, delta bigint)"),
        &format!("DROP TABLE IF EXISTS {log}"),
    );
    pg.create(
        &format!(
            "CREATE TABLE {acct} (id int PRIMARY KEY, balance bigint, version bigint, pad text); \
             INSERT INTO {acct} SELECT g, 1000, 0, repeat('x', 40) FROM generate_series(1, 100000) g"
        ),
        &format!("DROP TABLE IF EXISTS {acct}"),
    );
    // One writer, one transfer per transaction (so sequence order = commit order): moves x
    // from a to b, stamps both rows with the transaction's number and logs the deltas.
    let transfer = format!(
        "WITH s AS (SELECT nextval('{seq}') AS v, 1 + (random() * 99999)::int AS a, \
         1 + (random() * 99999)::int AS b, 1 + (random() * 100)::int AS x), \
         u AS (UPDATE {acct} t SET balance = balance + CASE WHEN t.id = s.a THEN -s.x ELSE s.x END, \
         version = s.v FROM s WHERE t.id IN (s.a, s.b) AND s.a <> s.b \
         RETURNING s.v, t.id, CASE WHEN t.id = s.a THEN -s.x ELSE s.x END AS delta) \
         INSERT INTO {log} SELECT * FROM u;\n"
    );
    let script = p.write("transfers.sql", &transfer.repeat(200_000));
    let mut writer = std::process::Command::new("psql")
        .args([
            pg_url().as_str(),
            "-X",
            "-q",
            "-f",
            script.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while psql(&format!("SELECT count(*) FROM {log}"))
        .parse::<u64>()
        .unwrap()
        < 400
    {
        assert!(
            started.elapsed().as_secs() < 30,
            "the writer does not progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let source = format!("table = \"{acct}\"\nparallelism = 4\nbatch_rows = 2000");
    p.write(
        "par.toml",
        &pipeline("par", &source, "pg.duckdb", "src.acct", ""),
    );
    let s = p.pipe(&["run", "par.toml", "--json"]);
    let _ = writer.kill();
    let _ = writer.wait();
    let s = s.assert_ok().json();
    assert_eq!(s["rows_read"], 100_000);

    let loaded = loaded_accounts(&p, "src.acct");
    let k = loaded.iter().map(|r| r.2).max().unwrap();
    let last: i64 = psql(&format!("SELECT max(seq) FROM {log}"))
        .parse()
        .unwrap();
    assert!(
        k > 0 && last > k,
        "writes happened before ({k}) and during/after ({last}) the read"
    );
    // The table as of transaction k, rebuilt from the log.
    let expected: Vec<(i64, i64, i64)> = psql(&format!(
        "SELECT a.id, 1000 + COALESCE(sum(l.delta), 0), COALESCE(max(l.seq), 0) \
         FROM {acct} a LEFT JOIN {log} l ON l.id = a.id AND l.seq <= {k} GROUP BY a.id ORDER BY a.id"
    ))
    .lines()
    .map(|l| {
        let v: Vec<i64> = l.split('|').map(|x| x.parse().unwrap()).collect();
        (v[0], v[1], v[2])
    })
    .collect();
    assert_eq!(loaded.len(), expected.len());
    let diff: Vec<_> = loaded
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a != b)
        .take(5)
        .collect();
    assert!(
        diff.is_empty(),
        "not the snapshot at transaction {k}: {diff:?}"
    );
    assert_eq!(
        loaded.iter().map(|r| r.1).sum::<i64>(),
        100_000 * 1000,
        "money was created"
    );
}

#[test]
fn incremental_runs_load_exactly_the_new_and_changed_rows() {
    let p = Project::new();
    let mut pg = PgObjects::new();
    let ev = unique("pipe_events");
    pg.create(
        &format!(
            "CREATE TABLE {ev} (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL); \
             INSERT INTO {ev} SELECT g, 'v' || g, '2024-01-01'::timestamptz + g * interval '1 second' \
             FROM generate_series(1, 100) g; \
             INSERT INTO {ev} SELECT g, 'tie' || g, '2024-01-01 00:10:00+00' FROM generate_series(101, 105) g"
        ),
        &format!("DROP TABLE IF EXISTS {ev}"),
    );
    let source = format!("table = \"{ev}\"\ncursor = \"updated_at\"");
    let merge = "mode = \"merge\"\nmerge_keys = [\"id\"]\n[contract]\n[[contract.columns]]\nname = \"v\"\nrequired = true";
    p.write(
        "inc.toml",
        &pipeline("inc", &source, "pg.duckdb", "src.events", merge),
    );
    let append = pipeline("inc_append", &source, "pg.duckdb", "src.events_append", "");
    p.write("inc_append.toml", &append);
    let run = |file: &str| p.pipe(&["run", file, "--json"]);

    let s = run("inc.toml").assert_ok().json();
    assert_eq!(s["rows_read"], 105);
    assert_eq!(run("inc_append.toml").assert_ok().json()["rows_read"], 105);

    // Late rows at exactly the old high-water mark, newer rows, and updates.
    psql(&format!(
        "INSERT INTO {ev} SELECT g, 'late' || g, '2024-01-01 00:10:00+00' FROM generate_series(106, 110) g; \
         INSERT INTO {ev} SELECT g, 'new' || g, '2024-01-01 00:10:01+00' FROM generate_series(111, 115) g; \
         UPDATE {ev} SET v = 'changed', updated_at = '2024-01-01 00:10:02+00' WHERE id <= 3"
    ));
    let s = run("inc.toml").assert_ok().json();
    assert_eq!(s["rows_read"], 13, "5 late ties + 5 new + 3 updated: {s}");
    assert_eq!(s["commit"]["rows_updated"], 3);
    check_pg(&p, &format!("public.{ev}"), "src.events", "id");
    let s = run("inc_append.toml").assert_ok().json();
    assert_eq!(s["rows_read"], 13);
    let n = common::query(
        &p.path().join("pg.duckdb"),
        "SELECT count(*), count(DISTINCT (id, v)) FROM src.events_append",
    );
    assert_eq!(
        n[0],
        vec![Some("118".into()), Some("118".into())],
        "105 + 13, no duplicates"
    );

    // A failed run (a contract violation) does not advance the cursor.
    psql(&format!(
        "INSERT INTO {ev} VALUES (116, 'a', '2024-01-01 00:20:00+00'), (117, NULL, '2024-01-01 00:20:01+00')"
    ));
    run("inc.toml").assert_failed().stderr_has("`v.required`");
    psql(&format!("UPDATE {ev} SET v = 'fixed' WHERE id = 117"));
    let s = run("inc.toml").assert_ok().json();
    assert_eq!(s["rows_read"], 2, "both rows of the failed run, once: {s}");
    check_pg(&p, &format!("public.{ev}"), "src.events", "id");

    // Nothing new: nothing read, nothing changed.
    let s = run("inc.toml").assert_ok().json();
    assert_eq!(s["rows_read"], 0);
    check_pg(&p, &format!("public.{ev}"), "src.events", "id");
}

#[test]
fn a_table_without_an_integer_key_is_split_on_ctid_pages() {
    let p = Project::new();
    let mut pg = PgObjects::new();
    let t = unique("pipe_heap");
    pg.create(
        &format!(
            "CREATE TABLE {t} (code text, n int); \
             INSERT INTO {t} SELECT md5(g::text), g FROM generate_series(1, 20000) g"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let source = format!("table = \"{t}\"\nparallelism = 3");
    p.write(
        "heap.toml",
        &pipeline("heap", &source, "pg.duckdb", "src.heap", ""),
    );
    let s = p.pipe(&["run", "heap.toml", "--json"]).assert_ok().json();
    assert_eq!(s["rows_read"], 20000);
    let got = common::query(
        &p.path().join("pg.duckdb"),
        "SELECT count(*), count(DISTINCT n), sum(n), min(code) FROM src.heap",
    );
    let want = psql(&format!(
        "SELECT count(*), count(DISTINCT n), sum(n), min(code) FROM {t}"
    ));
    let want: Vec<Option<String>> = want.split('|').map(|v| Some(v.to_string())).collect();
    assert_eq!(got[0], want);
}
