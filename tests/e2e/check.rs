//! `pipe check` for CI and `pipe contract export`: validation with file:line:column errors,
//! change classification against an older contract (a file or a git ref), sample runs, and
//! the exported JSON Schema checked by python `jsonschema`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::BTreeSet;

use common::{Project, py_in};
use serde_json::{Value, json};

const CONTRACT: &str = r#"version = "1.0.0"
owner = "shop-data"
on_violation = "fail"
primary_key = ["id"]

[[columns]]
name = "name"
type = "string"
required = true
max_length = 20

[[columns]]
name = "price"
type = "decimal(10,2)"
min = 0

[[columns]]
name = "status"
allowed = ["new", "shipped", "done"]

[[columns]]
name = "code"
pattern = '^[A-Z]{2}-\d{3}$'

[[rules]]
name = "order_value"
expression = "qty * price <= 5000"
"#;

const DATA: &str = "id,name,price,qty,status,code\n\
1,alpha,10.00,1,new,AB-001\n\
2,beta,20.50,2,lost,AB-002\n\
3,gamma,-5.00,3,new,AB-003\n\
4,delta,30.00,4,done,ab-004\n";

#[test]
fn a_valid_contract_passes_and_lists_its_rules() {
    let p = Project::new();
    p.write("contracts/shop.toml", CONTRACT);
    let r = p.pipe(&["check", "contracts/shop.toml"]).assert_ok();
    r.stdout_has("contracts/shop.toml: valid contract 1.0.0, owner shop-data, 9 rules");
    for rule in [
        "primary_key",
        "name.type",
        "name.required",
        "name.max_length",
        "price.min",
        "status.allowed",
        "code.pattern",
        "order_value",
    ] {
        r.stdout_has(rule);
    }
    let v = p
        .pipe(&["check", "contracts/shop.toml", "--format", "json"])
        .assert_ok()
        .json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["rules"].as_array().unwrap().len(), 9);
    // The README's pipeline passes too (its contract is inline).
    p.pipe(&["check", "pipelines/orders.toml"]).assert_ok();
}

/// Malformed contracts: every error names file, line and column (and the key).
#[test]
fn malformed_contracts_point_at_file_line_and_column() {
    let p = Project::new();
    let cases: &[(&str, &str, &str)] = &[
        // An unknown rule.
        (
            "[[columns]]\nname = \"a\"\nuniq = true\n",
            "bad.toml:3:1",
            "unknown field `uniq`",
        ),
        // A bad regular expression.
        (
            "[[columns]]\nname = \"a\"\npattern = \"([a-z\"\n",
            "bad.toml:3:11",
            "not a valid regular expression",
        ),
        // min above max.
        (
            "[[columns]]\nname = \"a\"\nmin = 10\nmax = 1\n",
            "bad.toml:3:7",
            "min 10 is above max 1",
        ),
        (
            "min_rows = 5\nmax_rows = 2\n",
            "bad.toml:1:12",
            "min_rows 5 is above max_rows 2",
        ),
        (
            "[[columns]]\nname = \"a\"\nmin_length = 5\nmax_length = 2\n",
            "bad.toml:3:14",
            "min_length 5 is above max_length 2",
        ),
        // Unknown type, action, override, expression syntax, version.
        (
            "[[columns]]\nname = \"a\"\ntype = \"int128\"\n",
            "bad.toml:3:8",
            "unknown type `int128`",
        ),
        (
            "on_violation = \"explode\"\n",
            "bad.toml:1:16",
            "unknown variant `explode`",
        ),
        (
            "[[columns]]\nname = \"a\"\nrequired = true\n\n[overrides]\n\"a.unique\" = \"warn\"\n",
            "bad.toml:6:1",
            "no rule named `a.unique`",
        ),
        (
            "[[rules]]\nname = \"r\"\nexpression = \"a >\"\n",
            "bad.toml:3:14",
            "rules.r.expression",
        ),
        ("version = \"one\"\n", "bad.toml:1:11", "semantic version"),
        (
            "[[columns]]\nname = \"a\"\nallowed = []\n",
            "bad.toml:3:11",
            "allows nothing",
        ),
        (
            "[[columns]]\nname = \"a\"\nprecision = 50\n",
            "bad.toml:3:13",
            "precision is 1 to 38",
        ),
        (
            "[[columns]]\nname = \"a\"\n\n[[columns]]\nname = \"A\"\n",
            "bad.toml:5:8",
            "declared twice",
        ),
        (
            "[[columns]]\nname = \"a\"\njson_schema = \"missing.json\"\n",
            "bad.toml:3:15",
            "cannot read JSON Schema",
        ),
    ];
    for (text, at, message) in cases {
        p.write("bad.toml", text);
        let r = p.pipe(&["check", "bad.toml"]).assert_failed();
        r.stderr_has(at).stderr_has(message);
    }

    // A pipeline's [contract] with `path` holds nothing else; a git ref is not an option.
    p.write("c.toml", "[[columns]]\nname = \"a\"\n");
    p.write(
        "p.toml",
        "name = \"p\"\n[source]\ntype = \"file\"\npath = \"x.csv\"\n\
         [contract]\npath = \"c.toml\"\non_violation = \"warn\"\n[destination]\ntype = \"null\"\n",
    );
    p.pipe(&["check", "p.toml"])
        .assert_failed()
        .stderr_has("p.toml:6:8")
        .stderr_has("with `path`, the whole contract lives in that file");
    p.pipe(&["check", "c.toml", "--against=--output=x:y"])
        .assert_failed()
        .stderr_has("is not a git revision");

    // A column the data lacks: found against a sample (or at run time), pointing at the rule.
    p.write("data.csv", DATA);
    p.write(
        "contracts/shop.toml",
        &CONTRACT.replace("name = \"status\"", "name = \"state\""),
    );
    let r = p
        .pipe(&["check", "contracts/shop.toml", "--sample", "data.csv"])
        .assert_failed();
    r.stderr_has("contracts/shop.toml:19:11")
        .stderr_has("column `state` is not in the data");

    // GitHub annotations and JSON carry the position too.
    p.write(
        "bad.toml",
        "[[columns]]\nname = \"a\"\npattern = \"([a-z\"\n",
    );
    let r = p
        .pipe(&["check", "bad.toml", "--format", "github"])
        .assert_failed();
    r.stdout_has("::error file=bad.toml,line=3,col=11,title=invalid contract::`columns.a.pattern`: not a valid regular expression");
    let r = p
        .pipe(&["check", "bad.toml", "--format", "json"])
        .assert_failed();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(
        (v["error"]["line"].as_u64(), v["error"]["column"].as_u64()),
        (Some(3), Some(11))
    );
    assert_eq!(v["error"]["key"], "columns.a.pattern");
}

/// (case, the old contract, the new one, the expected (code, severity) pairs).
type DiffPair = (
    &'static str,
    String,
    String,
    Vec<(&'static str, &'static str)>,
);

/// (case, the new contract, the expected (code, severity) pairs).
type DiffCase = (&'static str, String, Vec<(&'static str, &'static str)>);

/// `--against`: each change classified; exit 1 exactly when one is breaking.
#[test]
fn against_classifies_each_change() {
    let p = Project::new();
    let base = "version = \"1.0.0\"\nprimary_key = [\"id\"]\n\n[[columns]]\nname = \"id\"\ntype = \"int32\"\n\n[[columns]]\nname = \"status\"\nallowed = [\"new\", \"done\"]\nmax_length = 10\n\n[[columns]]\nname = \"price\"\nmin = 0\nmax = 100\n\n[[columns]]\nname = \"note\"\n";
    let b = "Breaking";
    let n = "NonBreaking";
    let cases: Vec<DiffCase> = vec![
        ("identical", base.into(), vec![]),
        (
            "column removed",
            base.replace("\n[[columns]]\nname = \"note\"\n", ""),
            vec![("column_removed", b)],
        ),
        (
            "optional column added",
            format!("{base}\n[[columns]]\nname = \"extra\"\n"),
            vec![("column_added", n)],
        ),
        (
            "required column added",
            format!("{base}\n[[columns]]\nname = \"extra\"\nrequired = true\n"),
            vec![("column_added", n), ("required_added", b)],
        ),
        (
            "rules on a column the contract did not list",
            format!("{base}\n[[columns]]\nname = \"extra\"\nmin = 0\nunique = true\n"),
            vec![("column_added", n), ("min_added", b), ("unique_added", b)],
        ),
        (
            "actions looser",
            base.replace("version", "on_violation = \"warn\"\nversion"),
            vec![("action_looser", n)],
        ),
        (
            "type widened",
            base.replace("\"int32\"", "\"int64\""),
            vec![("type_widened", n)],
        ),
        (
            "type narrowed",
            base.replace("\"int32\"", "\"int16\""),
            vec![("type_narrowed", b)],
        ),
        (
            "type changed",
            base.replace("\"int32\"", "\"string\""),
            vec![("type_changed", b)],
        ),
        (
            "required added",
            base.replace("name = \"note\"", "name = \"note\"\nrequired = true"),
            vec![("required_added", b)],
        ),
        (
            "allowed values shrunk",
            base.replace("[\"new\", \"done\"]", "[\"new\"]"),
            vec![("allowed_values_removed", b)],
        ),
        (
            "allowed values grown",
            base.replace("[\"new\", \"done\"]", "[\"new\", \"done\", \"lost\"]"),
            vec![("allowed_values_added", n)],
        ),
        (
            "key changed",
            base.replace("[\"id\"]", "[\"id\", \"status\"]"),
            vec![("primary_key_changed", b)],
        ),
        (
            "key removed",
            base.replace("primary_key = [\"id\"]\n", ""),
            vec![("primary_key_removed", n)],
        ),
        (
            "min raised",
            base.replace("min = 0", "min = 10"),
            vec![("min_raised", b)],
        ),
        (
            "max raised",
            base.replace("max = 100", "max = 200"),
            vec![("max_raised", n)],
        ),
        (
            "max_length lowered",
            base.replace("max_length = 10", "max_length = 5"),
            vec![("max_length_lowered", b)],
        ),
        (
            "pattern added",
            base.replace("name = \"note\"", "name = \"note\"\npattern = \"^x\""),
            vec![("pattern_added", b)],
        ),
        (
            "rule added",
            format!("{base}\n[[rules]]\nname = \"r\"\nexpression = \"price > 1\"\n"),
            vec![("rule_added", b)],
        ),
        (
            "min_rows added",
            base.replace("version", "min_rows = 1\nversion"),
            vec![("min_rows_added", b)],
        ),
        (
            "breaking with a major bump",
            base.replace("\"1.0.0\"", "\"2.0.0\"")
                .replace("[\"new\", \"done\"]", "[\"new\"]"),
            vec![("allowed_values_removed", b)],
        ),
        (
            "two changes",
            base.replace("\"int32\"", "\"int64\"")
                .replace("min = 0", "min = 10"),
            vec![("type_widened", n), ("min_raised", b)],
        ),
    ];
    assert!(cases.len() >= 10);
    for (case, new, expected) in cases {
        let major_bump = case.contains("major bump");
        assert_changes(&p, case, base, &new, &expected, !major_bump);
    }

    // Pairs that need their own old version.
    let pk = "primary_key = [\"a\", \"b\"]\n";
    let col = |body: &str| format!("[[columns]]\nname = \"p\"\n{body}\n");
    let rule = |sql: &str| format!("[[rules]]\nname = \"r\"\nexpression = \"{sql}\"\n");
    let pairs: Vec<DiffPair> = vec![
        (
            "scale up at one precision",
            col("precision = 5\nscale = 0"),
            col("precision = 5\nscale = 2"),
            vec![("precision_tightened", b)],
        ),
        (
            "scale down",
            col("precision = 5\nscale = 2"),
            col("precision = 5\nscale = 0"),
            vec![("precision_tightened", b)],
        ),
        (
            "precision up",
            col("precision = 5\nscale = 2"),
            col("precision = 7\nscale = 2"),
            vec![("precision_loosened", n)],
        ),
        (
            "key reordered",
            pk.into(),
            pk.replace("\"a\", \"b\"", "\"b\", \"a\""),
            vec![],
        ),
        (
            "expression reformatted",
            rule("a > 1 AND b < 2"),
            rule("a>1   AND   b<2"),
            vec![],
        ),
        (
            "expression changed",
            rule("a > 1"),
            rule("a > 2"),
            vec![("rule_changed", b)],
        ),
        (
            "allowed date-like text",
            col("allowed = [\"2024-01-01\"]"),
            col("allowed = [\"2024-01-01 00:00:00\"]"),
            vec![("allowed_values_removed", b), ("allowed_values_added", n)],
        ),
        (
            "allowed 1 and 1.0",
            col("allowed = [1, 2]"),
            col("allowed = [1.0, 2]"),
            vec![],
        ),
        (
            "override made stricter",
            format!(
                "{}\n[overrides]\n\"p.required\" = \"warn\"\n",
                col("required = true")
            ),
            col("required = true"),
            vec![("action_stricter", b)],
        ),
    ];
    for (case, old, new, expected) in pairs {
        assert_changes(&p, case, &old, &new, &expected, false);
    }
}

/// `pipe check new --against old --format json` reports exactly `expected` (code, severity)
/// and exits 1 exactly when one is breaking; `version_notice`: a breaking change also brings
/// the `version_not_bumped` reminder.
fn assert_changes(
    p: &Project,
    case: &str,
    old: &str,
    new: &str,
    expected: &[(&str, &str)],
    version_notice: bool,
) {
    p.write("old.toml", old);
    p.write("new.toml", new);
    let r = p.pipe(&[
        "check",
        "new.toml",
        "--against",
        "old.toml",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{case}: {r:?}"));
    let mut got: BTreeSet<(String, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["code"].as_str().unwrap().to_string(), sev(&c["severity"])))
        .collect();
    let breaking = expected.iter().filter(|(_, s)| *s == "Breaking").count();
    if breaking > 0 && version_notice {
        let notice = ("version_not_bumped".to_string(), "NonBreaking".to_string());
        assert!(got.remove(&notice), "{case}: {v}");
    }
    let want: BTreeSet<(String, String)> = expected
        .iter()
        .map(|(c, s)| (c.to_string(), s.to_string()))
        .collect();
    assert_eq!(got, want, "{case}");
    assert_eq!(r.code, Some(i32::from(breaking > 0)), "{case}: exit code");
    assert_eq!(v["breaking"], breaking, "{case}");
}

fn sev(v: &Value) -> String {
    match v.as_str().unwrap() {
        "breaking" => "Breaking".into(),
        _ => "NonBreaking".into(),
    }
}

/// `--against REF:PATH` reads the old version from git; `--format github` annotates the PR.
#[test]
fn against_a_git_ref_annotates_for_github() {
    let p = Project::new();
    p.write("contracts/shop.toml", CONTRACT);
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(p.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    git(&["add", "contracts/shop.toml"]);
    git(&["commit", "-q", "-m", "v1"]);
    let changed = CONTRACT
        .replace(
            "allowed = [\"new\", \"shipped\", \"done\"]",
            "allowed = [\"new\", \"shipped\"]",
        )
        .replace("max_length = 20", "max_length = 40");
    p.write("contracts/shop.toml", &changed);
    let r = p
        .pipe(&[
            "check",
            "contracts/shop.toml",
            "--against",
            "HEAD:contracts/shop.toml",
            "--format",
            "github",
        ])
        .assert_failed();
    r.stdout_has("::error file=contracts/shop.toml,line=19,col=11,title=breaking change allowed_values_removed::`status` no longer allows \"done\"");
    r.stdout_has("::notice file=contracts/shop.toml,line=10,col=14,title=non-breaking change max_length_raised::");
    r.stdout_has("title=non-breaking change version_not_bumped::");
    // Nothing changed against the working tree's own version.
    git(&["commit", "-qam", "v2"]);
    p.pipe(&[
        "check",
        "contracts/shop.toml",
        "--against",
        "HEAD:contracts/shop.toml",
    ])
    .assert_ok()
    .stdout_has("0 breaking, 0 non-breaking");
    let r = p
        .pipe(&[
            "check",
            "contracts/shop.toml",
            "--against",
            "HEAD:contracts/nope.toml",
        ])
        .assert_failed();
    r.stderr_has("git show HEAD:contracts/nope.toml failed");

    // A pipeline's contract file and a JSON Schema are read as they are at the ref too: an
    // edit to either shows, although the pipeline file itself did not change.
    p.write(
        "pipelines/shop.toml",
        "name = \"shop\"\n[source]\ntype = \"file\"\npath = \"data.csv\"\n\
         [contract]\npath = \"../contracts/j.toml\"\n[destination]\ntype = \"null\"\n",
    );
    p.write(
        "contracts/j.toml",
        "[[columns]]\nname = \"payload\"\njson_schema = \"p.json\"\n",
    );
    p.write("contracts/p.json", r#"{"type": "object"}"#);
    git(&["add", "."]);
    git(&["commit", "-qm", "v3"]);
    p.write(
        "contracts/p.json",
        r#"{"type": "object", "required": ["sku"]}"#,
    );
    p.write(
        "contracts/j.toml",
        "[[columns]]\nname = \"payload\"\njson_schema = \"p.json\"\nrequired = true\n",
    );
    let v = p
        .pipe(&[
            "check",
            "pipelines/shop.toml",
            "--against",
            "HEAD:pipelines/shop.toml",
            "--format",
            "json",
        ])
        .assert_failed()
        .json();
    let codes: BTreeSet<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        BTreeSet::from(["json_schema_changed", "required_added"]),
        "{v}"
    );
}

/// `--sample`: every rule reported; exit 1 when a real run over the sample would fail.
#[test]
fn sample_runs_report_every_rule() {
    let p = Project::new();
    p.write("data.csv", DATA);
    let pipeline = "name = \"shop\"\n[source]\ntype = \"file\"\npath = \"data.csv\"\n\
                    column_types = { price = \"decimal(10,2)\" }\n[contract]\npath = \"contracts/shop.toml\"\n\
                    [destination]\ntype = \"null\"\n";
    p.write("shop.toml", pipeline);
    p.write("contracts/shop.toml", CONTRACT);
    let r = p
        .pipe(&["check", "shop.toml", "--sample", "data.csv"])
        .assert_failed();
    r.stdout_has("sample data.csv: 4 rows, 3 violating");
    r.stdout_has("a run over this sample would fail: price.min, status.allowed, code.pattern");
    r.stdout_has("row 3: `price` = -5.00 is below the minimum 0");
    let v = p
        .pipe(&[
            "check",
            "shop.toml",
            "--sample",
            "data.csv",
            "--format",
            "json",
        ])
        .json();
    assert_eq!(v["ok"], false);
    let failed: Vec<(String, u64)> = v["sample"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_string(),
                r["rows_failed"].as_u64().unwrap(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        failed,
        vec![
            ("price.min".into(), 1),
            ("status.allowed".into(), 1),
            ("code.pattern".into(), 1)
        ]
    );
    // Under warn a run would pass: exit 0, violations still reported (as warnings for GitHub).
    p.write(
        "contracts/shop.toml",
        &CONTRACT.replace("on_violation = \"fail\"", "on_violation = \"warn\""),
    );
    let r = p
        .pipe(&[
            "check",
            "shop.toml",
            "--sample",
            "data.csv",
            "--format",
            "github",
        ])
        .assert_ok();
    r.stdout_has("::warning file=");
    r.stdout_has("title=contract rule price.min::1 of 4 sample rows failed; row 3: `price` = -5.00 is below the minimum 0");
}

/// The exported JSON Schema is a valid draft 2020-12 schema for python `jsonschema`, and it
/// accepts good rows and rejects bad ones like the contract does.
#[test]
fn exported_json_schema_is_valid_for_python_jsonschema() {
    let p = Project::new();
    p.write("contracts/shop.toml", CONTRACT);
    p.pipe(&[
        "contract",
        "export",
        "contracts/shop.toml",
        "-o",
        "shop.schema.json",
    ])
    .assert_ok();
    let schema: Value = serde_json::from_str(&p.read("shop.schema.json")).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["x-pipe-version"], "1.0.0");
    assert_eq!(schema["x-pipe-primary-key"], json!(["id"]));
    let docs = json!([
        {"id": 1, "name": "alpha", "price": 10.0, "status": "new", "code": "AB-001"},
        {"id": 2, "name": "beta", "status": null, "code": null},
        {"id": 3, "name": null},
        {"id": 4, "name": "gamma", "price": -5.0},
        {"id": 5, "name": "delta", "status": "lost"},
        {"id": 6, "name": "epsilon", "code": "ab-004"},
        {"id": 7, "name": "a name that is much too long"},
        {"name": "no key"},
    ]);
    p.write("docs.json", &docs.to_string());
    let (ok, v) = py_in(
        p.path(),
        "json_schema_check.py",
        &["shop.schema.json", "docs.json"],
    );
    assert!(ok, "{v}");
    assert_eq!(v["schema_ok"], true, "{v}");
    assert_eq!(v["draft"], "Draft202012Validator");
    assert_eq!(
        v["accepted"],
        json!([true, true, false, false, false, false, false, false]),
        "{v}"
    );
    // stdout by default, and from a pipeline file.
    let r = p
        .pipe(&["contract", "export", "pipelines/orders.toml"])
        .assert_ok();
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["x-pipe-primary-key"], json!(["o_orderkey"]));
}
