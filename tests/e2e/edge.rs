//! Edge-case data through every destination, read back by each one's independent reader
//! (type extremes in every mode are a conformance case, in conformance.rs): exact Delta statistics, bit-exact merges of -0.0/NaN/±inf,
//! CSV quoting and NULL, empty inputs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use common::dest::Dest;
use common::{Project, py_in};
use serde_json::Value;

const PARQUET: &str = "type = \"file\"\npath = \"fx/extremes.parquet\"";

/// python deltalake's filtered reads at every column's exact minimum and maximum find the
/// rows: the statistics pipe writes are exact bounds (decimal(38,10) digit for digit,
/// timestamps to the microsecond, long strings cut to valid bounds) or absent (NaN columns,
/// dates before year 1).
#[test]
fn delta_statistics_are_exact_bounds_for_every_type() {
    let (p, _) = common::dest::extremes();
    let f = Dest::Delta.pipeline(&p, "stats", PARQUET, "stats", "append", "");
    p.pipe(&["run", &f]).assert_ok();
    let (ok, failures) = py_in(p.path(), "edge.py", &["delta-filters", "lake/stats"]);
    assert!(ok, "{failures}");
    assert_eq!(
        failures,
        Value::Array(vec![]),
        "filters skipped matching rows"
    );
    // The decimal bound is written digit for digit.
    let log = p.read("lake/stats/_delta_log/00000000000000000000.json");
    assert!(
        log.contains(r#"\"dec38\":9999999999999999999999999999.9999999999"#),
        "{log}"
    );
    assert!(log.contains(r#"\"dec38\":-9999999999999999999999999999.9999999999"#));
}

/// The reported case: a new Delta table from decimal(38,10) at its maximum, in `replace`
/// mode, commits and stays readable by deltalake and by pipe's next runs.
#[test]
fn a_delta_table_of_maximal_decimals_commits_and_stays_readable() {
    let p = Project::new();
    let script = "import decimal, pyarrow as pa, pyarrow.parquet as pq\n\
        t = pa.table({'id': pa.array([1], pa.int64()), \
        'c_dec': pa.array([decimal.Decimal('9999999999999999999999999999.9999999999')], pa.decimal128(38, 10)), \
        'flag': pa.array([True])})\n\
        pq.write_table(t, 'max.parquet')\n";
    let out = std::process::Command::new(common::python())
        .current_dir(p.path())
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = "type = \"file\"\npath = \"max.parquet\"";
    let f = Dest::Delta.pipeline(&p, "maxdec", source, "maxdec", "replace", "");
    let run = p.pipe(&["run", &f, "--json"]).assert_ok();
    assert_eq!(run.json()["status"], "succeeded");
    let f2 = Dest::Delta.pipeline(&p, "maxdec2", source, "maxdec", "append", "");
    p.pipe(&["run", &f2]).assert_ok();
    p.pipe(&["run", &f]).assert_ok();
    let (ok, v) = py_in(
        p.path(),
        "delta.py",
        &["read", "lake/maxdec", "--order", "id"],
    );
    assert!(ok, "{v}");
    assert_eq!(v["count"], 1);
    assert_eq!(
        v["rows"][0]["c_dec"],
        "9999999999999999999999999999.9999999999"
    );
}

/// After a merge the stored row equals the incoming one bit for bit: 0.0 → -0.0 and back,
/// NaN stays NaN, ±inf, on every destination.
#[test]
fn merges_store_sign_only_and_special_float_changes_exactly() {
    for dest in Dest::ALL.into_iter().filter(|d| d.merges()) {
        let p = Project::new();
        let source = "type = \"file\"\npath = \"f.csv\"\ncolumn_types = { x = \"float64\" }";
        let f = dest.pipeline(
            &p,
            "signs",
            source,
            "signs",
            "merge",
            "merge_keys = [\"id\"]",
        );
        p.write("f.csv", "id,x\n1,0.0\n2,-0.0\n3,1.0\n4,NaN\n5,-inf\n");
        p.pipe(&["run", &f]).assert_ok();
        p.write("f.csv", "id,x\n1,-0.0\n2,0.0\n3,inf\n4,NaN\n5,-inf\n");
        let run = p.pipe(&["run", &f, "--json"]).assert_ok().json();
        let xs: Vec<Value> = dest
            .rows(&p, "signs")
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["x"].clone())
            .collect();
        assert_eq!(
            xs,
            ["-0.0", "0.0", "inf", "nan", "-inf"].map(Value::from),
            "{}",
            dest.name()
        );
        if dest == Dest::DuckDb {
            assert_eq!(run["commit"]["rows_updated"], 3, "{run}");
            assert_eq!(run["commit"]["rows_unchanged"], 2, "{run}");
        }
    }
}

/// Only an unquoted field equal to a null marker is NULL; quoted, it is text.
#[test]
fn quoted_empty_strings_and_quoted_null_markers_stay_text() {
    for dest in Dest::ALL {
        let p = Project::new();
        p.write("q.csv", "id,s\n1,\"\"\n2,\n3,\"NA\"\n4,NA\n5,x\n");
        let plain = "type = \"file\"\npath = \"q.csv\"";
        let f = dest.pipeline(&p, "q", plain, "q", "replace", "");
        p.pipe(&["run", &f]).assert_ok();
        let got: Vec<Value> = dest
            .rows(&p, "q")
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["s"].clone())
            .collect();
        assert_eq!(
            got,
            vec![
                Value::from(""),
                Value::Null,
                Value::from("NA"),
                Value::from("NA"),
                Value::from("x")
            ],
            "{}",
            dest.name()
        );
        let na = format!("{plain}\ncsv = {{ null_values = [\"NA\"] }}");
        let f = dest.pipeline(&p, "qna", &na, "q", "replace", "");
        p.pipe(&["run", &f]).assert_ok();
        let got: Vec<Value> = dest
            .rows(&p, "q")
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["s"].clone())
            .collect();
        assert_eq!(
            got,
            vec![
                Value::from(""),
                Value::from(""),
                Value::from("NA"),
                Value::Null,
                Value::from("x")
            ],
            "{}",
            dest.name()
        );
    }
}

/// A quote that never closes is an error naming the line it opens on; nothing is committed.
#[test]
fn an_unterminated_quote_fails_at_its_line() {
    let p = Project::new();
    p.write("u.csv", "id,v\n1,a\n2,\"b\n3,c\n");
    let f = Dest::DuckDb.pipeline(
        &p,
        "u",
        "type = \"file\"\npath = \"u.csv\"",
        "u",
        "append",
        "",
    );
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("u.csv:3: unterminated quote");
    assert!(!p.path().join("db/pipe.duckdb").exists() || Dest::DuckDb.commits(&p, "u") == 0);
    p.write("w.csv", "id,v,w\n1,a,b\n2,\"b,c\n3,d,e\"\n");
    let f = Dest::DuckDb.pipeline(&p, "w", "type = \"file\"\npath = \"w.csv\"\ncolumns = [{ name = \"id\", type = \"int64\" }, { name = \"v\", type = \"string\" }, { name = \"w\", type = \"string\" }]", "w", "append", "");
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("w.csv:3: expected 3 fields, got 2")
        .stderr_has("unterminated quote?");
}

/// A 0-byte CSV is an error naming the file; a `replace` that would empty the table is
/// refused unless `allow_empty = true`; an append of no rows adds no commit but is recorded.
#[test]
fn empty_inputs_never_wipe_or_pad_a_table() {
    for dest in Dest::ALL {
        let p = Project::new();
        let source = "type = \"file\"\npath = \"e.csv\"";
        p.write("e.csv", "id,v\n1,a\n2,b\n");
        let replace = dest.pipeline(&p, "er", source, "e", "replace", "");
        p.pipe(&["run", &replace]).assert_ok();
        let before = dest.rows(&p, "e");
        let commits = dest.commits(&p, "e");

        p.write("e.csv", "");
        p.pipe(&["run", &replace])
            .assert_failed()
            .stderr_has("e.csv: the file is empty: it has no header line");
        p.write("e.csv", "id,v\n");
        p.pipe(&["run", &replace])
            .assert_failed()
            .stderr_has("allow_empty = true");
        assert_eq!(dest.rows(&p, "e"), before, "{}", dest.name());
        assert_eq!(dest.commits(&p, "e"), commits, "{}", dest.name());

        let append = dest.pipeline(&p, "ea", source, "e", "append", "");
        let run = p.pipe(&["run", &append, "--json"]).assert_ok().json();
        assert_eq!(run["commit"]["nothing_to_commit"], true, "{run}");
        assert_eq!(
            dest.commits(&p, "e"),
            commits,
            "{}: no empty commit",
            dest.name()
        );
        let status = p.pipe(&["status", &append, "--json"]).assert_ok().json();
        assert_eq!(status["runs"][0]["status"], "committed", "{status}");

        let allowed = dest.pipeline(&p, "ez", source, "e", "replace", "allow_empty = true");
        p.pipe(&["run", &allowed]).assert_ok();
        assert_eq!(dest.rows(&p, "e"), Value::Array(vec![]), "{}", dest.name());
    }
}

/// CSV text with a UTC offset is read as an instant (timestamptz), as the docs say.
#[test]
fn offset_timestamps_in_csv_are_inferred_as_instants() {
    let p = Project::new();
    p.write(
        "t.csv",
        "id,at\n1,2024-01-01 00:00:07+00\n2,2024-01-01T02:00:00+02:00\n",
    );
    let f = Dest::DuckDb.pipeline(
        &p,
        "t",
        "type = \"file\"\npath = \"t.csv\"",
        "t",
        "replace",
        "",
    );
    p.pipe(&["run", &f]).assert_ok();
    let rows = common::query(
        &p.path().join("db/pipe.duckdb"),
        "SELECT typeof(\"at\"), epoch_us(\"at\") FROM main.t ORDER BY id",
    );
    assert_eq!(rows[0][0].as_deref(), Some("TIMESTAMP WITH TIME ZONE"));
    assert_eq!(rows[0][1].as_deref(), Some("1704067207000000"));
    assert_eq!(rows[1][1].as_deref(), Some("1704067200000000"));
}

/// Schema drift names what brought it: the file, and the column and types.
#[test]
fn schema_drift_errors_name_the_file() {
    let p = Project::new();
    p.write("a.csv", "id,v\n1,a\n");
    let source = "type = \"file\"\npath = \"a.csv\"";
    let f = Dest::DuckDb.pipeline(&p, "d", source, "d", "append", "");
    p.pipe(&["run", &f]).assert_ok();
    p.write("a.csv", "id,v,extra\n2,b,c\n");
    p.write(
        "d.toml",
        &p.read("d.toml").replace(
            "[destination]",
            "[metadata]\nschema_evolution = \"freeze\"\n[destination]",
        ),
    );
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has("file a.csv")
        .stderr_has("column `extra`");
}

/// The null destination inserts nothing: it reports the rows it discarded.
#[test]
fn the_null_destination_reports_discarded_rows() {
    let p = Project::new();
    p.write(
        "n.toml",
        "name = \"n\"\n[source]\ntype = \"file\"\npath = \"pipelines/data/orders.csv\"\n\
         [destination]\ntype = \"null\"\n",
    );
    let v = p.pipe(&["run", "n.toml", "--json"]).assert_ok().json();
    assert_eq!(v["rows_written"], 0, "{v}");
    assert_eq!(v["commit"]["rows_inserted"], 0, "{v}");
    assert_eq!(v["commit"]["rows_discarded"], 5000, "{v}");
}

/// Numbers and switches come from the environment when a value is one `${…}`; one that does
/// not parse is an error at the reference.
#[test]
fn numbers_and_booleans_from_the_environment() {
    let p = Project::new();
    p.write("x.csv", "id\n1\n2\n3\n");
    p.write(
        "env.toml",
        "name = \"env\"\n[source]\ntype = \"file\"\npath = \"x.csv\"\n\
         batch_rows = \"${BATCH:-2}\"\ncsv = { header = \"${HEADER}\" }\n\
         [destination]\ntype = \"null\"\n[runtime]\nchannel_capacity = \"${CAP:-${CAP2:-3}}\"\n",
    );
    let v = p
        .pipe_env(&["run", "env.toml", "--json"], &[("HEADER", "true")])
        .assert_ok()
        .json();
    assert_eq!(v["rows_read"], 3, "{v}");
    p.pipe_env(&["run", "env.toml"], &[("HEADER", "yes")])
        .assert_failed()
        .stderr_has("env.toml:6:")
        .stderr_has("`source.csv.header`");
    p.pipe_env(&["run", "env.toml"], &[("HEADER", "true"), ("BATCH", "0")])
        .assert_failed()
        .stderr_has("env.toml:5:")
        .stderr_has("must be between 1 and 1048576");
}

/// Postgres values at the edges — BC dates and timestamps, the last microsecond of year 9999,
/// times of day — load exactly into every destination (Delta, which has no time type, reads
/// without it); a `24:00:00` is refused naming the table and the column.
#[test]
fn postgres_bc_and_extreme_values_load_exactly_or_name_table_and_column() {
    use common::{PgObjects, pg_url, psql, unique};
    let mut pg = PgObjects::new();
    let t = unique("pipe_edges");
    pg.create(
        &format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, t time, ts timestamp, tstz timestamptz, d date); \
             INSERT INTO {t} VALUES \
             (1, '00:00', '0044-03-15 12:00:00 BC', '4713-01-01 00:00:00+00 BC', '4713-01-01 BC'), \
             (2, '23:59:59.999999', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00', '9999-12-31'), \
             (3, NULL, '0001-01-01 00:00:00', '1969-12-31 23:59:59.999999+00', '0001-01-01')"
        ),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let micros = |col: &str| -> Vec<i64> {
        psql(&format!(
            "SELECT (extract(epoch FROM {col}) * 1000000)::bigint FROM {t} ORDER BY id"
        ))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
    };
    let days: Vec<i64> = psql(&format!(
        "SELECT d - date '1970-01-01' FROM {t} ORDER BY id"
    ))
    .lines()
    .map(|l| l.parse().unwrap())
    .collect();
    let (ts, tstz) = (micros("ts"), micros("tstz"));
    for dest in Dest::ALL {
        let p = Project::new();
        let columns = if dest == Dest::Delta {
            "columns = [\"id\", \"ts\", \"tstz\", \"d\"]"
        } else {
            ""
        };
        let source = format!(
            "type = \"postgres\"\nurl = \"{}\"\ntable = \"{t}\"\n{columns}",
            pg_url()
        );
        let f = dest.pipeline(&p, "pgedge", &source, "pgedge", "replace", "");
        p.pipe(&["run", &f]).assert_ok();
        let rows = dest.rows(&p, "pgedge");
        let col = |name: &str| -> Vec<i64> {
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| r[name].as_i64().unwrap())
                .collect()
        };
        assert_eq!(col("ts"), ts, "{}", dest.name());
        assert_eq!(col("tstz"), tstz, "{}", dest.name());
        assert_eq!(col("d"), days, "{}", dest.name());
    }
    psql(&format!("UPDATE {t} SET t = '24:00:00' WHERE id = 3"));
    let p = Project::new();
    let source = format!(
        "type = \"postgres\"\nurl = \"{}\"\ntable = \"{t}\"",
        pg_url()
    );
    let f = Dest::DuckDb.pipeline(&p, "pg24", &source, "pg24", "replace", "");
    p.pipe(&["run", &f])
        .assert_failed()
        .stderr_has(&format!("reading postgres table {t}"))
        .stderr_has("column `t`: the time 24:00:00 has no Arrow equivalent");
}
