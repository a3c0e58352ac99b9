//! Bad input gets a clear error naming what and where, the destination is untouched, and
//! nothing panics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use common::Project;

/// A project whose `sales.orders` already holds the 5000 rows of orders.csv.
fn loaded() -> Project {
    let p = Project::new();
    p.pipe(&["run", "pipelines/orders.toml"]).assert_ok();
    p
}

fn assert_untouched(p: &Project) {
    let (ok, report) = p.check_orders(&["--load", "pipelines/data/orders.csv"]);
    assert!(ok, "the table changed: {report}");
    assert_eq!(report["rows"], 5000);
    assert_eq!(report["ledger_runs"], 1, "a failed run left a ledger row");
}

/// orders.csv's header and its first `n` rows with keys moved past 10000 (new rows).
fn new_rows(p: &Project, n: usize) -> Vec<String> {
    let csv = p.read("pipelines/data/orders.csv");
    csv.lines()
        .skip(1)
        .take(n)
        .map(|l| {
            let (key, rest) = l.split_once(',').unwrap();
            format!("{},{rest}", key.parse::<u64>().unwrap() + 10_000)
        })
        .collect()
}

fn header(p: &Project) -> String {
    p.read("pipelines/data/orders.csv")
        .lines()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn malformed_csv_row_names_file_and_line_and_commits_nothing() {
    let p = loaded();
    let mut rows = new_rows(&p, 10);
    rows[5] = "10006,1,O,1.00,1996-01-02".to_string(); // too few fields: line 7 of the file
    p.write("bad.csv", &format!("{}\n{}\n", header(&p), rows.join("\n")));
    let r = p
        .pipe_env(
            &["run", "pipelines/orders.toml"],
            &[("ORDERS_FILE", "bad.csv")],
        )
        .assert_failed();
    r.stderr_has("bad.csv:7: expected 10 fields, got 5");
    r.stdout_has("FAILED, nothing committed");
    assert_untouched(&p);
}

#[test]
fn unparseable_value_names_line_and_column() {
    let p = loaded();
    // Past the 1000 inference rows, so the column is inferred as an integer first.
    let mut rows = new_rows(&p, 1500);
    let parts: Vec<&str> = rows[1200].splitn(3, ',').collect();
    rows[1200] = format!("{},abc,{}", parts[0], parts[2]);
    p.write("bad.csv", &format!("{}\n{}\n", header(&p), rows.join("\n")));
    let r = p
        .pipe_env(
            &["run", "pipelines/orders.toml"],
            &[("ORDERS_FILE", "bad.csv")],
        )
        .assert_failed();
    r.stderr_has("bad.csv:1202: column `o_custkey`: cannot parse \"abc\" as Int64");
    assert_untouched(&p);
}

#[test]
fn a_column_whose_type_changed_is_rejected_before_writing() {
    let p = loaded();
    let rows: Vec<String> = new_rows(&p, 5)
        .into_iter()
        .map(|r| {
            let parts: Vec<&str> = r.splitn(3, ',').collect();
            format!("{},cust-{},{}", parts[0], parts[1], parts[2])
        })
        .collect();
    p.write(
        "text.csv",
        &format!("{}\n{}\n", header(&p), rows.join("\n")),
    );
    let r = p
        .pipe_env(
            &["run", "pipelines/orders.toml"],
            &[("ORDERS_FILE", "text.csv")],
        )
        .assert_failed();
    r.stderr_has("column `o_custkey` has type Int64 in the table but Utf8 in the source");
    assert_untouched(&p);
}

#[test]
fn missing_file_is_a_clear_error() {
    let p = Project::new();
    let r = p
        .pipe_env(
            &["run", "pipelines/orders.toml"],
            &[("ORDERS_FILE", "pipelines/data/nope.csv")],
        )
        .assert_failed();
    r.stderr_has("no such file or directory: pipelines/data/nope.csv");
    assert!(
        !p.db().exists(),
        "the source is opened before the database: nothing was created"
    );
}

#[test]
fn unknown_toml_key_shows_line_column_and_key() {
    let p = Project::new();
    p.write(
        "bad.toml",
        "name = \"x\"\n\n[source]\ntype = \"file\"\npath = \"a.csv\"\n[source.csv]\ndelimter = \";\"\n\n[destination]\ntype = \"duckdb\"\ntable = \"t\"\n",
    );
    let r = p.pipe(&["run", "bad.toml"]).assert_failed();
    r.stderr_has("bad.toml:7:1: `source.csv.delimter`: unknown field `delimter`, expected one of");
    r.stderr_has("7 | delimter = \";\"");

    p.write(
        "top.toml",
        "name = \"x\"\nschedul = 1\n[source]\ntype = \"file\"\n",
    );
    let r = p.pipe(&["validate", "top.toml"]).assert_failed();
    r.stderr_has("top.toml:2:1: `schedul`: unknown key `schedul` (did you mean `schedule`?)");
}

#[test]
fn unknown_source_type_lists_the_supported_ones() {
    let p = Project::new();
    p.write(
        "ftp.toml",
        "name = \"x\"\n[source]\ntype = \"ftp\"\n[destination]\ntype = \"duckdb\"\ntable = \"t\"\n",
    );
    let r = p.pipe(&["run", "ftp.toml"]).assert_failed();
    r.stderr_has("ftp.toml:3:8: `source.type`: unknown source type `ftp`; supported: exec, file, http, postgres");
}

#[test]
fn missing_environment_variable_is_named() {
    let p = Project::new();
    p.write(
        "env.toml",
        "name = \"x\"\n[source]\ntype = \"file\"\npath = \"${MISSING_VAR}/a.csv\"\n[destination]\ntype = \"duckdb\"\ntable = \"t\"\n",
    );
    let r = p.pipe(&["run", "env.toml"]).assert_failed();
    r.stderr_has("env.toml:4:8: environment variable `MISSING_VAR` is not set");
}

#[test]
fn a_bad_row_in_the_third_of_five_files_commits_nothing() {
    let p = loaded();
    let rows = new_rows(&p, 5000);
    for (i, chunk) in rows.chunks(1000).enumerate() {
        let mut chunk = chunk.to_vec();
        if i == 2 {
            chunk[700] = "broken".into();
        }
        p.write(
            &format!("batch/{i}.csv"),
            &format!("{}\n{}\n", header(&p), chunk.join("\n")),
        );
    }
    let toml = p
        .read("pipelines/orders.toml")
        .replace("[source]", "[source]\nbatch_rows = 100");
    p.write("pipelines/small_batches.toml", &toml);
    let r = p
        .pipe_env(
            &["run", "pipelines/small_batches.toml", "--json"],
            &[("ORDERS_FILE", "batch")],
        )
        .assert_failed();
    let s = r.json();
    assert_eq!(s["status"], "failed");
    // Two whole files went through every stage into the uncommitted transaction first.
    assert!(s["rows_read"].as_u64().unwrap() >= 2000, "{s}");
    r.stderr_has("batch/2.csv:702: expected 10 fields, got 1");
    assert_untouched(&p);
}

#[test]
fn contract_violation_fails_the_run_and_names_rule_and_values() {
    let p = loaded();
    let mut rows = new_rows(&p, 20);
    rows[15] = rows[3].clone(); // duplicate key 10004
    p.write("dup.csv", &format!("{}\n{}\n", header(&p), rows.join("\n")));
    let r = p
        .pipe_env(
            &["run", "pipelines/orders.toml"],
            &[("ORDERS_FILE", "dup.csv")],
        )
        .assert_failed();
    r.stderr_has("contract rule `primary_key` failed on 1 row(s)");
    r.stderr_has("row 16: key (o_orderkey=10004) appears earlier in the run");
    assert_untouched(&p);

    let drop = p
        .read("pipelines/orders.toml")
        .replace("on_violation = \"fail\"", "on_violation = \"drop\"");
    p.write("pipelines/drop.toml", &drop);
    let s = p
        .pipe_env(
            &["run", "pipelines/drop.toml", "--json"],
            &[("ORDERS_FILE", "dup.csv")],
        )
        .assert_ok()
        .json();
    assert_eq!(s["rows_rejected"], 1);
    assert_eq!(s["commit"]["rows_inserted"], 19);
}

#[test]
fn freeze_rejects_a_new_column_before_writing_and_evolve_adds_it() {
    let p = loaded();
    let rows: Vec<String> = new_rows(&p, 5)
        .into_iter()
        .map(|r| format!("{r},gift"))
        .collect();
    p.write(
        "wide.csv",
        &format!("{},o_note\n{}\n", header(&p), rows.join("\n")),
    );
    let frozen = p.read("pipelines/orders.toml").replace(
        "schema_evolution = \"evolve\"",
        "schema_evolution = \"freeze\"",
    );
    p.write("pipelines/frozen.toml", &frozen);
    let r = p
        .pipe_env(
            &["run", "pipelines/frozen.toml"],
            &[("ORDERS_FILE", "wide.csv")],
        )
        .assert_failed();
    r.stderr_has("schema_evolution = \"freeze\": the source has column `o_note`");
    let cols = common::query(
        &p.db(),
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders'",
    );
    assert_eq!(cols[0][0].as_deref(), Some("10"));

    p.pipe_env(
        &["run", "pipelines/orders.toml"],
        &[("ORDERS_FILE", "wide.csv")],
    )
    .assert_ok();
    let rows = common::query(
        &p.db(),
        "SELECT count(*), count(o_note), min(o_note) FROM sales.orders",
    );
    assert_eq!(
        rows[0],
        vec![Some("5005".into()), Some("5".into()), Some("gift".into())]
    );
}

#[test]
fn a_merge_key_the_source_lacks_is_rejected_before_writing() {
    let p = loaded();
    let rows: Vec<String> = new_rows(&p, 3)
        .into_iter()
        .map(|r| r.split_once(',').unwrap().1.to_string())
        .collect();
    let header = header(&p);
    let header = header.split_once(',').unwrap().1;
    p.write("keyless.csv", &format!("{header}\n{}\n", rows.join("\n")));
    let no_contract = p
        .read("pipelines/orders.toml")
        .replace("primary_key = [\"o_orderkey\"]", "");
    p.write("pipelines/keyless.toml", &no_contract);
    let r = p
        .pipe_env(
            &["run", "pipelines/keyless.toml"],
            &[("ORDERS_FILE", "keyless.csv")],
        )
        .assert_failed();
    r.stderr_has("merge key `o_orderkey` is not a column of the source");
    assert_untouched(&p);
}

#[test]
fn an_unknown_duckdb_setting_is_named() {
    let p = Project::new();
    let toml = p.read("pipelines/orders.toml").replace(
        "table = \"sales.orders\"",
        "table = \"sales.orders\"\nsettings = { no_such_setting = \"1\" }",
    );
    p.write("pipelines/settings.toml", &toml);
    p.pipe(&["run", "pipelines/settings.toml"])
        .assert_failed()
        .stderr_has("options were not recognized: no_such_setting");
    assert!(!p.db().exists(), "nothing was created");
}
