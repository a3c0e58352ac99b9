//! The contract stage on in-memory batches: masks, actions, keys across batches, whole-row
//! JSON Schema, run-level rules and located errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use pipe_framework::{RunContext, Stage};
use pipe_quality::{Action, Contract, ContractStage, RuleKind};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new("doc", DataType::Utf8, true),
    ]))
}

fn batch(ids: &[Option<i64>], names: &[Option<&str>]) -> RecordBatch {
    let n = ids.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(StringArray::from(names.to_vec())),
        Arc::new(Date32Array::from(vec![Some(19_800); n])),
        Arc::new(StringArray::from(vec![Some("{\"a\": 1}"); n])),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn contract(dir: &tempfile::TempDir, text: &str) -> Contract {
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    Contract::load(&path).unwrap()
}

fn ids(b: &RecordBatch) -> Vec<i64> {
    b.column(0).as_primitive::<Int64Type>().values().to_vec()
}

async fn stage(c: Contract) -> ContractStage {
    let mut s = ContractStage::new(c);
    s.bind(&schema(), &RunContext::new("t")).unwrap();
    s
}

#[tokio::test]
async fn dropped_rows_never_claim_a_key() {
    let dir = tempfile::tempdir().unwrap();
    // Row 2 breaks `name.required` (dropped) before its key is checked: its id 7 stays free,
    // so row 3's id 7 is the first and passes.
    let c = contract(
        &dir,
        "on_violation = \"drop\"\nprimary_key = [\"id\"]\n[[columns]]\nname = \"name\"\nrequired = true\n",
    );
    let mut s = stage(c).await;
    let out = s
        .process(batch(&[Some(1), Some(7)], &[Some("a"), None]))
        .await
        .unwrap();
    assert_eq!(ids(&out.pass.unwrap()), vec![1]);
    let out = s
        .process(batch(
            &[Some(7), Some(1), None],
            &[Some("b"), Some("c"), Some("d")],
        ))
        .await
        .unwrap();
    assert_eq!(
        ids(&out.pass.unwrap()),
        vec![7],
        "1 repeats; NULL breaks the key"
    );
    let report = s.finish().await.unwrap();
    assert_eq!(
        (report.rows_in, report.rows_out, report.rows_rejected),
        (5, 2, 3)
    );
    let rules = report.detail["rules"].as_array().unwrap();
    assert_eq!(rules[0]["rule"], "primary_key");
    assert_eq!(rules[0]["rows_failed"], 2);
    assert_eq!(rules[1]["rule"], "name.required");
    assert_eq!(rules[1]["rows_failed"], 1);
}

#[tokio::test]
async fn quarantine_batches_name_the_first_rule_and_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let c = contract(
        &dir,
        "on_violation = \"quarantine\"\n[[columns]]\nname = \"name\"\nmin_length = 2\npattern = \"^[a-z]+$\"\n",
    );
    let mut s = stage(c).await;
    assert!(s.quarantine().is_some());
    let out = s
        .process(batch(
            &[Some(1), Some(2), Some(3)],
            &[Some("ok"), Some("X"), Some("y")],
        ))
        .await
        .unwrap();
    assert_eq!(ids(&out.pass.unwrap()), vec![1]);
    let q = out.quarantine.unwrap();
    let rule = q.column_by_name("_pipe_rule").unwrap().as_string::<i32>();
    let reason = q.column_by_name("_pipe_reason").unwrap().as_string::<i32>();
    assert_eq!(rule.value(0), "name.min_length");
    assert_eq!(
        reason.value(0),
        "`name` = X is shorter than 2 characters (also broke: name.pattern)"
    );
    assert_eq!(rule.value(1), "name.min_length");
    assert_eq!(
        q.column_by_name("_pipe_run_id")
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .len(),
        36
    );
}

#[tokio::test]
async fn whole_row_json_schema_reports_the_pointer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("row.json"),
        r#"{"type": "object", "properties": {"id": {"type": "integer", "maximum": 5}}}"#,
    )
    .unwrap();
    let c = contract(
        &dir,
        "on_violation = \"quarantine\"\njson_schema = \"row.json\"\n",
    );
    let mut s = stage(c).await;
    let out = s
        .process(batch(&[Some(1), Some(9)], &[Some("a"), Some("b")]))
        .await
        .unwrap();
    let q = out.quarantine.unwrap();
    let reason = q.column_by_name("_pipe_reason").unwrap().as_string::<i32>();
    assert!(
        reason
            .value(0)
            .starts_with("the row at /id: 9 is greater than the maximum of 5"),
        "{}",
        reason.value(0)
    );
}

#[tokio::test]
async fn overrides_and_warn_let_rows_through() {
    let dir = tempfile::tempdir().unwrap();
    let c = contract(
        &dir,
        "on_violation = \"fail\"\n[[columns]]\nname = \"id\"\nmax = 5\n\n[overrides]\n\"id.max\" = \"warn\"\n",
    );
    assert_eq!(c.rules()[0].action, Action::Warn);
    let mut s = stage(c).await;
    let out = s
        .process(batch(&[Some(1), Some(9)], &[Some("a"), Some("b")]))
        .await
        .unwrap();
    assert_eq!(ids(&out.pass.unwrap()), vec![1, 9]);
    let report = s.finish().await.unwrap();
    assert_eq!(report.detail["rules"][0]["rows_failed"], 1);
    assert_eq!(
        report.detail["rules"][0]["samples"][0],
        "row 2: `id` = 9 is above the maximum 5"
    );
}

#[tokio::test]
async fn expression_rules_fail_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let c = contract(
        &dir,
        "[[rules]]\nname = \"ids_small\"\nexpression = \"id < 5\"\n",
    );
    let mut s = stage(c).await;
    s.process(batch(&[Some(1)], &[Some("a")])).await.unwrap();
    let e = s
        .process(batch(
            &[Some(2), Some(8), None],
            &[Some("a"), Some("b"), None],
        ))
        .await
        .unwrap_err();
    let m = e.message();
    assert!(
        m.contains(
            "c.toml:2:8: `ids_small`: contract rule `ids_small` failed on 1 row(s) of this batch"
        ),
        "{m}"
    );
    assert!(
        m.contains("First: row 3: `id < 5` is false for (id=8)"),
        "{m}"
    );
}

#[tokio::test]
async fn a_row_one_key_rule_leaves_out_claims_no_key_of_another() {
    let dir = tempfile::tempdir().unwrap();
    // Row 2 repeats name `a` (dropped by name.unique) before it could claim id 2 for the
    // primary key: row 3, id 2 with a new name, is kept.
    let c = contract(
        &dir,
        "on_violation = \"quarantine\"\nprimary_key = [\"id\"]\n[[columns]]\nname = \"name\"\nunique = true\non_violation = \"drop\"\n",
    );
    let mut s = stage(c).await;
    let out = s
        .process(batch(
            &[Some(1), Some(2), Some(2), Some(1)],
            &[Some("a"), Some("a"), Some("b"), Some("c")],
        ))
        .await
        .unwrap();
    assert_eq!(ids(&out.pass.unwrap()), vec![1, 2]);
    let q = out.quarantine.unwrap();
    assert_eq!(ids(&q), vec![1], "the last row repeats id 1");
    let report = s.finish().await.unwrap();
    assert_eq!((report.rows_rejected, report.rows_quarantined), (2, 1));
}

#[tokio::test]
async fn run_level_rules_judge_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let c = contract(
        &dir,
        "min_rows = 3\nmax_rows = 4\nfreshness = { column = \"day\", max_age = \"1d\" }\n",
    );
    assert!(c.rules().iter().all(|r| r.kind.is_table_level()));
    assert!(matches!(c.rules()[2].kind, RuleKind::Freshness(_)));
    let mut s = stage(c).await;
    s.process(batch(&[Some(1), Some(2)], &[None, None]))
        .await
        .unwrap();
    let e = s.finish().await.unwrap_err();
    let m = e.message();
    assert!(
        m.contains("c.toml:1:12") && m.contains("the run has 2 rows, fewer than 3"),
        "{m}"
    );
}

#[tokio::test]
async fn unknown_columns_and_wrong_types_point_at_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let c = contract(
        &dir,
        "version = \"1.0.0\"\n\n[[columns]]\nname = \"nope\"\nrequired = true\n",
    );
    let mut s = ContractStage::new(c);
    let e = s.bind(&schema(), &RunContext::new("t")).unwrap_err();
    assert!(e.message().contains("c.toml:4:8: `nope.required`: column `nope` is not in the data; columns: id, name, day, doc"), "{}", e.message());

    let c = contract(&dir, "[[columns]]\nname = \"name\"\nmin = 3\n");
    let e = ContractStage::new(c)
        .bind(&schema(), &RunContext::new("t"))
        .unwrap_err();
    assert!(
        e.message().contains("c.toml:3:7")
            && e.message()
                .contains("3 cannot be compared with `name` (string)"),
        "{}",
        e.message()
    );

    let c = contract(&dir, "[[columns]]\nname = \"id\"\ntype = \"int32\"\n");
    let e = ContractStage::new(c)
        .bind(&schema(), &RunContext::new("t"))
        .unwrap_err();
    assert!(
        e.message().contains("c.toml:3:8")
            && e.message().contains("`id` is int64 in the data, not int32"),
        "{}",
        e.message()
    );

    // Date bounds as a TOML date and as text.
    let c = contract(
        &dir,
        "[[columns]]\nname = \"day\"\nmin = 2024-01-01\nmax = \"2030-01-01\"\n",
    );
    let mut s = stage(c).await;
    let out = s.process(batch(&[Some(1)], &[Some("a")])).await.unwrap();
    assert!(out.pass.is_some(), "2024-03-17 is inside the bounds");
}

#[tokio::test]
async fn row_counts_and_freshness_judge_the_rows_that_load() {
    let dir = tempfile::tempdir().unwrap();
    let c = contract(
        &dir,
        "on_violation = \"drop\"\nmin_rows = 2\n[[columns]]\nname = \"name\"\nrequired = true\n",
    );
    let mut s = stage(c).await;
    s.process(batch(
        &[Some(1), Some(2), Some(3)],
        &[Some("a"), None, None],
    ))
    .await
    .unwrap();
    let e = s.finish().await.unwrap_err();
    assert!(
        e.message().contains("the run has 1 rows, fewer than 2"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn audit_passes_every_row_but_counts_like_a_real_run() {
    let dir = tempfile::tempdir().unwrap();
    // Row 1 is dropped by `name.required`, so its id 1 stays free for row 2, as in a real run.
    let text = "primary_key = [\"id\"]\nmin_rows = 2\n[[columns]]\nname = \"name\"\nrequired = true\non_violation = \"drop\"\n";
    let mut s = ContractStage::audit(contract(&dir, text));
    s.bind(&schema(), &RunContext::new("t")).unwrap();
    let out = s
        .process(batch(&[Some(1), Some(1)], &[None, Some("b")]))
        .await
        .unwrap();
    assert_eq!(out.pass.unwrap().num_rows(), 2, "audit holds nothing back");
    let report = s.finish().await.unwrap();
    let rules = report.detail["rules"].as_array().unwrap();
    assert_eq!(rules[0]["rule"], "primary_key");
    assert_eq!(
        (
            rules[0]["rows_checked"].as_u64(),
            rules[0]["rows_failed"].as_u64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(rules[2]["rule"], "min_rows");
    assert_eq!(rules[2]["violation"], "the run has 1 rows, fewer than 2");
}

#[tokio::test]
async fn precision_reads_every_decimal_width() {
    use arrow_array::{Decimal64Array, Decimal256Array};
    use arrow_buffer::i256;
    let dir = tempfile::tempdir().unwrap();
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("d64", DataType::Decimal64(10, 2), true),
        Field::new("d256", DataType::Decimal256(60, 0), true),
    ]));
    let d64 = Decimal64Array::from(vec![Some(12_345), Some(150), None])
        .with_precision_and_scale(10, 2)
        .unwrap();
    let big = i256::from_i128(10_i128.pow(30)).wrapping_mul(i256::from_i128(10_i128.pow(10)));
    let d256 = Decimal256Array::from(vec![Some(i256::from_i128(7)), Some(big), None])
        .with_precision_and_scale(60, 0)
        .unwrap();
    let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(d64), Arc::new(d256)]).unwrap();
    let text = "on_violation = \"warn\"\n[[columns]]\nname = \"d64\"\nprecision = 4\nscale = 2\n\n[[columns]]\nname = \"d256\"\nprecision = 38\n";
    let mut s = ContractStage::new(contract(&dir, text));
    s.bind(&schema, &RunContext::new("t")).unwrap();
    s.process(b).await.unwrap();
    let report = s.finish().await.unwrap();
    let rules = report.detail["rules"].as_array().unwrap();
    // 123.45 has 5 digits (decimal(4,2) holds up to 99.99); 1.50 fits.
    assert_eq!(rules[0]["rows_failed"], 1, "{}", rules[0]);
    assert_eq!(
        rules[0]["samples"][0],
        "row 1: `d64` = 123.45 does not fit decimal(4,2)"
    );
    // 10^40 has 41 digits: beyond any precision up to 38, never silently NULL.
    assert_eq!(rules[1]["rows_failed"], 1, "{}", rules[1]);
}
