//! Data contracts end to end: every rule kind with each action (fail, quarantine, drop, warn)
//! loading into DuckDB, read back by python duckdb. Good rows must land exactly, quarantined
//! rows carry their rule and reason, and a failed run leaves the DuckDB file byte-for-byte
//! as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Project, query};
use serde_json::Value;

/// Ten rows; the comments of [`CASES`] say which rows break which rule.
const ITEMS: &str = r#"rownum,id,name,price,qty,status,created,updated_at,payload,code
1,1,alpha,10.00,1,new,2024-01-05,2024-01-05T10:00:00Z,"{""sku"":""A1"",""n"":1}",AB-001
2,2,beta,20.50,2,shipped,2024-02-10,2024-02-10T10:00:00Z,"{""sku"":5,""n"":2}",AB-002
3,3,gamma,-5.00,,new,2024-03-01,2024-03-01T10:00:00Z,"{""sku"":""C3"",""n"":3}",AB-003
4,4,delta,99999.99,4,done,2024-03-15,2024-03-15T10:00:00Z,"{""sku"":""D4"",""n"":4}",ab-004
5,5,ab,30.00,5,new,2024-04-01,2024-04-01T10:00:00Z,"{""sku"":""E5"",""n"":5}",AB-005
6,,zeta,40.00,6,shipped,2024-04-15,2024-04-15T10:00:00Z,"{""sku"":""F6"",""n"":""x""}",AB-006
7,7,eta,50.00,7,done,2025-01-01,2025-01-01T10:00:00Z,"{""sku"":""G7"",""n"":7}",AB-007
8,8,extraordinary,60.00,,new,2024-05-01,2024-05-01T10:00:00Z,"{""sku"":""H8"",""n"":8}",AB-008
9,9,iota,70.00,9,lost,2024-05-15,2024-05-15T10:00:00Z,"{""sku"":""I9"",""n"":9}",AB-002
10,2,kappa,80.00,10,new,2024-06-01,2024-06-01T10:00:00Z,"{""sku"":""J0"",""n"":10}",AB-010
"#;

const PAYLOAD_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["sku", "n"],
  "properties": { "sku": { "type": "string" }, "n": { "type": "integer" } }
}"#;

/// (case, contract body after `on_violation`, rule name, rows breaking it, text every
/// reason of the rule contains).
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [u32],
    &'static str,
);

const CASES: &[Case] = &[
    (
        "required",
        "[[columns]]\nname = \"qty\"\nrequired = true",
        "qty.required",
        &[3, 8],
        "`qty` is NULL",
    ),
    (
        "unique",
        "[[columns]]\nname = \"code\"\nunique = true",
        "code.unique",
        &[9],
        "appears earlier in the run",
    ),
    (
        "primary_key",
        "primary_key = [\"id\"]",
        "primary_key",
        &[6, 10],
        "key (id=",
    ),
    (
        "min",
        "[[columns]]\nname = \"price\"\nmin = 0",
        "price.min",
        &[3],
        "below the minimum 0",
    ),
    (
        "max",
        "[[columns]]\nname = \"created\"\nmax = 2024-06-30",
        "created.max",
        &[7],
        "above the maximum 2024-06-30",
    ),
    (
        "min_length",
        "[[columns]]\nname = \"name\"\nmin_length = 3",
        "name.min_length",
        &[5],
        "shorter than 3",
    ),
    (
        "max_length",
        "[[columns]]\nname = \"name\"\nmax_length = 8",
        "name.max_length",
        &[8],
        "longer than 8",
    ),
    (
        "pattern",
        "[[columns]]\nname = \"code\"\npattern = '^[A-Z]{2}-\\d{3}$'",
        "code.pattern",
        &[4],
        "does not match",
    ),
    (
        "allowed",
        "[[columns]]\nname = \"status\"\nallowed = [\"new\", \"shipped\", \"done\"]",
        "status.allowed",
        &[9],
        "is not one of",
    ),
    (
        "precision",
        "[[columns]]\nname = \"price\"\nprecision = 6\nscale = 2",
        "price.precision",
        &[4],
        "does not fit decimal(6,2)",
    ),
    (
        "json_schema",
        "[[columns]]\nname = \"payload\"\njson_schema = \"payload.schema.json\"",
        "payload.json_schema",
        &[2, 6],
        "at /",
    ),
    (
        "expression",
        "[[rules]]\nname = \"order_value\"\nexpression = \"qty * price <= 5000\"",
        "order_value",
        &[4],
        "is false for",
    ),
];

/// A project with `data/items.csv` and the payload schema.
fn project() -> Project {
    let p = Project::new();
    p.write("data/items.csv", ITEMS);
    p.write("contracts/payload.schema.json", PAYLOAD_SCHEMA);
    p
}

/// A pipeline loading `data` into `db` (append) under a contract in `contracts/`.
fn pipeline(p: &Project, name: &str, data: &str, db: &Path, contract: &str) -> String {
    let contract_file = format!("contracts/{name}.toml");
    p.write(&contract_file, contract);
    let file = format!("{name}.toml");
    p.write(
        &file,
        &format!(
            "name = \"{name}\"\n\n[source]\ntype = \"file\"\npath = \"{data}\"\n\
             column_types = {{ price = \"decimal(10,2)\", updated_at = \"timestamptz\" }}\n\n\
             [contract]\npath = \"{contract_file}\"\n\n\
             [destination]\ntype = \"duckdb\"\npath = \"{}\"\ntable = \"shop.items\"\nmode = \"append\"\n",
            db.display()
        ),
    );
    file
}

/// Every file under `dir`, by name, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        out.insert(path.clone(), std::fs::read(&path).expect("read"));
    }
    out
}

/// The CSV rows (all columns but `updated_at`) as python duckdb renders them, by rownum.
fn expected_rows(rows: &[u32]) -> Vec<Vec<Option<String>>> {
    let all: Vec<Vec<Option<String>>> = ITEMS
        .lines()
        .skip(1)
        .map(split_csv)
        .map(|f| {
            let mut f: Vec<Option<String>> = f
                .into_iter()
                .map(|v| (!v.is_empty()).then_some(v))
                .collect();
            f.remove(7); // updated_at
            f
        })
        .collect();
    all.into_iter()
        .filter(|r| rows.contains(&r[0].as_deref().unwrap().parse::<u32>().unwrap()))
        .collect()
}

/// Split one line of [`ITEMS`] (quoted fields with doubled quotes).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let (mut cur, mut quoted, mut chars) = (String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

const COLUMNS: &str = "rownum, id, name, price, qty, status, created, payload, code";

fn table_rows(db: &Path, table: &str) -> Vec<Vec<Option<String>>> {
    query(
        db,
        &format!("SELECT {COLUMNS} FROM {table} ORDER BY rownum"),
    )
}

fn has_table(db: &Path, table: &str) -> bool {
    let rows = query(
        db,
        &format!("SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'"),
    );
    rows[0][0].as_deref() == Some("1")
}

fn all_rows() -> Vec<u32> {
    (1..=10).collect()
}

fn good_rows(bad: &[u32]) -> Vec<u32> {
    all_rows()
        .into_iter()
        .filter(|r| !bad.contains(r))
        .collect()
}

/// The run summary's report of contract rule `rule`.
fn rule_report<'a>(summary: &'a Value, rule: &str) -> &'a Value {
    summary["stages"][0]["detail"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .unwrap_or_else(|| panic!("no report of rule {rule}: {summary}"))
}

/// One rule kind through all four actions.
fn rule_case(case: &str) {
    let (_, body, rule, bad, reason) = CASES.iter().find(|c| c.0 == case).copied().expect("case");
    let p = project();
    let contract =
        |action: &str| format!("version = \"1.0.0\"\non_violation = \"{action}\"\n{body}\n");
    let out = p.path().join("out");

    // fail: a first run (warn) loads the rows; the failing run leaves the file as it was.
    let dir = out.join("fail");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("t.duckdb");
    let warn_first = pipeline(&p, "baseline", "data/items.csv", &db, &contract("warn"));
    p.pipe(&["run", &warn_first]).assert_ok();
    let before = snapshot(&dir);
    let failing = pipeline(&p, "failing", "data/items.csv", &db, &contract("fail"));
    let r = p.pipe(&["run", &failing]).assert_failed();
    r.stderr_has(&format!("contract rule `{rule}` failed"));
    r.stderr_has(&format!("row {}: ", bad[0]));
    r.stderr_has(reason);
    assert_eq!(
        snapshot(&dir),
        before,
        "{case}: a failed run changed the DuckDB files"
    );
    assert_eq!(table_rows(&db, "shop.items"), expected_rows(&all_rows()));

    // quarantine: good rows in the table, bad ones in the quarantine with rule and reason.
    let db = out.join("quarantine.duckdb");
    let file = pipeline(
        &p,
        "quarantining",
        "data/items.csv",
        &db,
        &contract("quarantine"),
    );
    let s = p.pipe(&["run", &file, "--json"]).assert_ok().json();
    assert_eq!(s["rows_quarantined"], bad.len(), "{case}: {s}");
    assert_eq!(s["commit"]["rows_quarantined"], bad.len(), "{case}: {s}");
    assert_eq!(
        table_rows(&db, "shop.items"),
        expected_rows(&good_rows(bad)),
        "{case}"
    );
    assert_eq!(
        table_rows(&db, "shop.items_quarantine"),
        expected_rows(bad),
        "{case}"
    );
    let meta = query(
        &db,
        "SELECT rownum, _pipe_rule, _pipe_reason, _pipe_run_id, _pipe_loaded_at IS NOT NULL \
         FROM shop.items_quarantine ORDER BY rownum",
    );
    for row in &meta {
        assert_eq!(row[1].as_deref(), Some(rule), "{case}: {row:?}");
        assert!(
            row[2].as_deref().unwrap().contains(reason),
            "{case}: {row:?}"
        );
        assert_eq!(row[3].as_deref(), s["run_id"].as_str(), "{case}: {row:?}");
        assert_eq!(row[4].as_deref(), Some("True"));
    }
    let report = rule_report(&s, rule);
    assert_eq!(report["rows_checked"], 10);
    assert_eq!(report["rows_failed"], bad.len());

    // drop: good rows only; nothing quarantined.
    let db = out.join("drop.duckdb");
    let file = pipeline(&p, "dropping", "data/items.csv", &db, &contract("drop"));
    let s = p.pipe(&["run", &file, "--json"]).assert_ok().json();
    assert_eq!(s["rows_rejected"], bad.len());
    assert_eq!(s["rows_quarantined"], 0);
    assert_eq!(
        table_rows(&db, "shop.items"),
        expected_rows(&good_rows(bad)),
        "{case}"
    );
    assert!(!has_table(&db, "items_quarantine"));

    // warn: every row loads; the report counts the violations.
    let db = out.join("warn.duckdb");
    let file = pipeline(&p, "warning", "data/items.csv", &db, &contract("warn"));
    let r = p.pipe(&["run", &file]).assert_ok();
    r.stdout_has(rule);
    let s = p.pipe(&["run", &file, "--json"]).assert_ok().json();
    let report = rule_report(&s, rule);
    assert_eq!(report["rows_failed"], bad.len(), "{case}: {report}");
    assert_eq!(s["rows_rejected"], 0);
    let mut twice = expected_rows(&all_rows());
    twice.extend(expected_rows(&all_rows()));
    twice.sort_by_key(|r| r[0].as_deref().unwrap().parse::<u32>().unwrap());
    assert_eq!(
        table_rows(&db, "shop.items"),
        twice,
        "{case}: two warn runs append twice"
    );
}

#[test]
fn required_rule_under_each_action() {
    rule_case("required");
}

#[test]
fn unique_rule_under_each_action() {
    rule_case("unique");
}

#[test]
fn primary_key_rule_under_each_action() {
    rule_case("primary_key");
}

#[test]
fn min_rule_under_each_action() {
    rule_case("min");
}

#[test]
fn max_rule_under_each_action() {
    rule_case("max");
}

#[test]
fn min_length_rule_under_each_action() {
    rule_case("min_length");
}

#[test]
fn max_length_rule_under_each_action() {
    rule_case("max_length");
}

#[test]
fn pattern_rule_under_each_action() {
    rule_case("pattern");
}

#[test]
fn allowed_rule_under_each_action() {
    rule_case("allowed");
}

#[test]
fn precision_rule_under_each_action() {
    rule_case("precision");
}

#[test]
fn json_schema_reasons_carry_the_json_pointer() {
    rule_case("json_schema");
    let p = project();
    let db = p.path().join("q.duckdb");
    let body = CASES.iter().find(|c| c.0 == "json_schema").unwrap().1;
    let file = pipeline(
        &p,
        "q",
        "data/items.csv",
        &db,
        &format!("on_violation = \"quarantine\"\n{body}\n"),
    );
    p.pipe(&["run", &file]).assert_ok();
    let reasons = query(
        &db,
        "SELECT rownum, _pipe_reason FROM shop.items_quarantine ORDER BY rownum",
    );
    assert!(
        reasons[0][1]
            .as_deref()
            .unwrap()
            .contains("`payload` at /sku:"),
        "{reasons:?}"
    );
    assert!(
        reasons[1][1]
            .as_deref()
            .unwrap()
            .contains("`payload` at /n:"),
        "{reasons:?}"
    );
}

#[test]
fn expression_rule_under_each_action() {
    rule_case("expression");
}

/// Row counts, freshness and types are judged once per run: they fail the run (or warn);
/// under `quarantine` or `drop` they still fail it, as there is no row to set aside.
#[test]
fn table_level_rules_fail_or_warn() {
    let p = project();
    let cases: &[(&str, &str, &str)] = &[
        (
            "min_rows",
            "min_rows = 20",
            "the run has 10 rows, fewer than 20",
        ),
        (
            "max_rows",
            "max_rows = 5",
            "the run has 10 rows, more than 5",
        ),
        (
            "freshness",
            "freshness = { column = \"updated_at\", max_age = \"1d\" }",
            "older than 1d",
        ),
        (
            "type",
            "[[columns]]\nname = \"qty\"\ntype = \"string\"",
            "`qty` is int64 in the data, not string",
        ),
    ];
    for (i, (rule, body, message)) in cases.iter().enumerate() {
        let dir = p.path().join(format!("out{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.duckdb");
        let base = pipeline(&p, &format!("base{i}"), "data/items.csv", &db, "");
        p.pipe(&["run", &base]).assert_ok();
        let before = snapshot(&dir);
        for action in ["fail", "quarantine", "drop"] {
            let file = pipeline(
                &p,
                &format!("t{i}{action}"),
                "data/items.csv",
                &db,
                &format!("on_violation = \"{action}\"\n{body}\n"),
            );
            let r = p.pipe(&["run", &file]).assert_failed();
            r.stderr_has(message);
            r.stderr_has(&format!("contracts/t{i}{action}.toml:"));
            assert_eq!(
                snapshot(&dir),
                before,
                "{rule} under {action} changed the table"
            );
        }
        let file = pipeline(
            &p,
            &format!("t{i}warn"),
            "data/items.csv",
            &db,
            &format!("on_violation = \"warn\"\n{body}\n"),
        );
        let s = p.pipe(&["run", &file, "--json"]).assert_ok().json();
        let rules = s["stages"][0]["detail"]["rules"]
            .as_array()
            .unwrap()
            .clone();
        let report: &Value = rules
            .iter()
            .find(|r| r["rule"].as_str().unwrap().ends_with(rule))
            .unwrap();
        assert!(
            report["violation"].as_str().unwrap().contains(message),
            "{report}"
        );
        assert_eq!(
            query(&db, "SELECT count(*) FROM shop.items")[0][0].as_deref(),
            Some("20")
        );
    }
}

/// `max_violation_ratio` fails a run past the threshold even when every rule quarantines.
#[test]
fn violation_ratio_threshold() {
    let p = project();
    let dir = p.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("t.duckdb");
    let body = "[[columns]]\nname = \"qty\"\nrequired = true";
    let strict = pipeline(
        &p,
        "strict",
        "data/items.csv",
        &db,
        &format!("on_violation = \"quarantine\"\nmax_violation_ratio = 0.1\n{body}\n"),
    );
    let r = p.pipe(&["run", &strict]).assert_failed();
    r.stderr_has("2 of 10 rows (20.00 %) broke the contract, more than max_violation_ratio 0.1");
    assert!(
        !db.exists() || !has_table(&db, "items"),
        "nothing may be committed"
    );
    let loose = pipeline(
        &p,
        "loose",
        "data/items.csv",
        &db,
        &format!("on_violation = \"quarantine\"\nmax_violation_ratio = 0.25\n{body}\n"),
    );
    let s = p.pipe(&["run", &loose, "--json"]).assert_ok().json();
    assert_eq!(s["rows_quarantined"], 2);
}

/// A key repeated in another batch of the same file and in another file is caught: the run
/// remembers keys across batches and files.
#[test]
fn uniqueness_across_batches_and_files() {
    let p = project();
    let header = ITEMS.lines().next().unwrap();
    let rows: Vec<&str> = ITEMS.lines().skip(1).collect();
    // Rows 1-5 in a.csv (id 1..5), rows 6-9 in b.csv plus a row with a.csv's id 3 again.
    p.write(
        "parts/a.csv",
        &format!("{header}\n{}\n", rows[..5].join("\n")),
    );
    let again = rows[2].replacen("3,3,", "11,3,", 1);
    p.write(
        "parts/b.csv",
        &format!("{header}\n{}\n{again}\n", rows[6..9].join("\n")),
    );
    let body = "[[columns]]\nname = \"id\"\nunique = true";
    let db = p.path().join("u.duckdb");
    // Two rows per batch: the repeat is batches and a file away from the original.
    let file = pipeline(
        &p,
        "uniq",
        "parts/*.csv",
        &db,
        &format!("on_violation = \"fail\"\n{body}\n"),
    );
    let toml = p
        .read(&file)
        .replace("[contract]", "batch_rows = 2\n\n[contract]");
    p.write(&file, &toml);
    let r = p.pipe(&["run", &file]).assert_failed();
    r.stderr_has("contract rule `id.unique` failed on 1 row(s)");
    r.stderr_has("row 9: key (id=3) appears earlier in the run");
    assert!(!db.exists() || !has_table(&db, "items"));

    let q = p.read(&file).replace(
        "path = \"contracts/uniq.toml\"",
        "path = \"contracts/uniq_q.toml\"",
    );
    p.write(
        "contracts/uniq_q.toml",
        &format!("on_violation = \"quarantine\"\n{body}\n"),
    );
    p.write("uniq_q.toml", &q);
    let s = p.pipe(&["run", "uniq_q.toml", "--json"]).assert_ok().json();
    assert_eq!(s["rows_quarantined"], 1);
    let quarantined = query(
        &db,
        "SELECT rownum, id, _pipe_rule FROM shop.items_quarantine",
    );
    assert_eq!(
        quarantined,
        vec![vec![
            Some("11".into()),
            Some("3".into()),
            Some("id.unique".into())
        ]]
    );
    let kept = query(
        &db,
        "SELECT string_agg(rownum::VARCHAR, ',' ORDER BY rownum) FROM shop.items",
    );
    assert_eq!(kept[0][0].as_deref(), Some("1,2,3,4,5,7,8,9"));
}

/// Setup mistakes about the quarantine are caught before data moves, by `pipe validate` too.
#[test]
fn a_quarantine_into_the_destination_table_is_refused_up_front() {
    let p = project();
    let db = p.path().join("v.duckdb");
    let body = "on_violation = \"quarantine\"\nquarantine_table = \"items\"\n[[columns]]\nname = \"qty\"\nrequired = true\n";
    let file = pipeline(&p, "self", "data/items.csv", &db, body);
    p.pipe(&["validate", &file])
        .assert_failed()
        .stderr_has("the quarantine table cannot be the destination table");
    p.pipe(&["run", &file])
        .assert_failed()
        .stderr_has("the quarantine table cannot be the destination table");
    assert!(
        !db.exists() || !has_table(&db, "items"),
        "nothing may be committed"
    );
    // A bare name lands beside the destination table.
    let body = body.replace("\"items\"", "\"rejects\"");
    let file = pipeline(&p, "bare", "data/items.csv", &db, &body);
    p.pipe(&["run", &file]).assert_ok();
    let rows = query(
        &db,
        "SELECT rownum, _pipe_rule FROM shop.rejects ORDER BY rownum",
    );
    assert_eq!(rows.len(), 2);
}
