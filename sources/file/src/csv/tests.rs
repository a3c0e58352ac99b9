//! The CSV reader end to end on text: values, NULLs and quoting, errors with their lines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::*;

fn dialect(opts: CsvOptions) -> Dialect {
    Dialect::new(&opts, false).expect("dialect")
}

fn two(a: DataType, b: DataType) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", a, true),
        Field::new("b", b, true),
    ]))
}

fn read(d: &Dialect, text: &str, schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    let mut out = Vec::new();
    d.read(text.as_bytes(), schema, 2, "x.csv", true, &mut |b| {
        out.push(b);
        true
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

fn strings(batches: &[RecordBatch], column: usize) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column(column).as_string::<i32>();
            (0..c.len())
                .map(|i| c.is_valid(i).then(|| c.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn only_unquoted_null_markers_are_null() {
    let schema = two(DataType::Utf8, DataType::Utf8);
    let d = dialect(CsvOptions::default());
    let batches = read(&d, "a,b\n1,\"\"\n2,\n3,x\n", &schema).unwrap();
    assert_eq!(
        strings(&batches, 1),
        vec![Some(String::new()), None, Some("x".into())]
    );
    let d = dialect(CsvOptions {
        null_values: vec!["NA".into()],
        ..CsvOptions::default()
    });
    let batches = read(&d, "a,b\n1,\"NA\"\n2,NA\n3,\n", &schema).unwrap();
    assert_eq!(
        strings(&batches, 1),
        vec![Some("NA".into()), None, Some(String::new())]
    );
}

#[test]
fn value_errors_name_the_physical_line_and_column() {
    let d = dialect(CsvOptions::default());
    let schema = two(DataType::Int64, DataType::Int64);
    assert_eq!(
        read(&d, "a,b\n1,2\n3,4\n5,x\n", &schema).unwrap_err(),
        "x.csv:4: column `b`: cannot parse \"x\" as Int64"
    );
    // A quoted field spanning lines moves later records down.
    let text_schema = two(DataType::Utf8, DataType::Int64);
    assert_eq!(
        read(&d, "a,b\n\"x\ny\",1\nz,q\n", &text_schema).unwrap_err(),
        "x.csv:4: column `b`: cannot parse \"q\" as Int64"
    );
    // A quoted empty string is text, which an integer column cannot hold.
    assert_eq!(
        read(&d, "a,b\n1,\"\"\n", &schema).unwrap_err(),
        "x.csv:2: column `b`: cannot parse \"\" as Int64"
    );
    let headless = dialect(CsvOptions {
        header: false,
        ..CsvOptions::default()
    });
    assert_eq!(
        read(&headless, "1,2\nz,4\n", &schema).unwrap_err(),
        "x.csv:2: column `a`: cannot parse \"z\" as Int64"
    );
}

#[test]
fn field_counts_and_unterminated_quotes_name_their_lines() {
    let d = dialect(CsvOptions::default());
    let schema = two(DataType::Int64, DataType::Utf8);
    assert_eq!(
        read(&d, "a,b\n1,2\n3,4\n5,6\n7\n", &schema).unwrap_err(),
        "x.csv:5: expected 2 fields, got 1"
    );
    let err = read(&d, "a,b\n1,a\n2,\"b\n3,c\n", &schema).unwrap_err();
    assert!(err.starts_with("x.csv:3: unterminated quote"), "{err}");
}

#[test]
fn invalid_utf8_names_line_and_column() {
    let mut text = b"a,b\n1,2\n3,".to_vec();
    text.extend_from_slice(&[0xff, 0xfe, b'\n']);
    let schema = two(DataType::Int64, DataType::Utf8);
    let d = dialect(CsvOptions::default());
    let err = d
        .read(&text[..], &schema, 10, "x.csv", true, &mut |_| true)
        .unwrap_err();
    assert_eq!(err.to_string(), "x.csv:3: column `b`: invalid UTF-8");
}

#[test]
fn decimals_are_exact_and_extra_digits_refused() {
    let d = dialect(CsvOptions::default());
    let schema = two(DataType::Int64, DataType::Decimal128(38, 10));
    let batches = read(
        &d,
        "a,b\n1,9999999999999999999999999999.9999999999\n2,-0.0000000001\n",
        &schema,
    )
    .unwrap();
    let b = batches[0]
        .column(1)
        .as_primitive::<arrow_array::types::Decimal128Type>();
    assert_eq!(
        b.value(0),
        99_999_999_999_999_999_999_999_999_999_999_999_999
    );
    assert_eq!(b.value(1), -1);
    let schema = two(DataType::Int64, DataType::Decimal128(10, 2));
    let err = read(&d, "a,b\n1,1.005\n", &schema).unwrap_err();
    assert!(
        err.starts_with("x.csv:2: column `b`: cannot read \"1.005\""),
        "{err}"
    );
}

#[test]
fn empty_files_and_missing_headers_are_errors_naming_the_file() {
    let d = dialect(CsvOptions::default());
    let err = d.infer("".as_bytes(), 10, "empty.csv").unwrap_err();
    assert_eq!(
        err.to_string(),
        "empty.csv: the file is empty: it has no header line (csv.header = true)"
    );
    let schema = two(DataType::Int64, DataType::Int64);
    assert!(
        read(&d, "", &schema)
            .unwrap_err()
            .starts_with("x.csv: the file is empty")
    );
    // A header and no rows is a valid empty file.
    assert!(read(&d, "a,b\n", &schema).unwrap().is_empty());
}

#[test]
fn later_files_must_have_the_same_header() {
    let d = dialect(CsvOptions::default());
    let schema = two(DataType::Int64, DataType::Int64);
    let err = read(&d, "b,a\n1,2\n", &schema).unwrap_err();
    assert!(
        err.starts_with("x.csv:1: the header names columns b, a"),
        "{err}"
    );
}

#[test]
fn inference_reads_types_and_offsets_as_instants() {
    let d = dialect(CsvOptions::default());
    let schema = d
        .infer(
            "id,at,note,flag\n1,2024-01-01 00:00:07+00,\"\",true\n2,2024-01-02T00:00:00Z,x,\n"
                .as_bytes(),
            10,
            "x.csv",
        )
        .unwrap();
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            DataType::Int64,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Utf8,
            DataType::Boolean,
        ]
    );
    let err = d
        .infer("a,b\n1,2\n3\n".as_bytes(), 10, "x.csv")
        .unwrap_err();
    assert_eq!(err.to_string(), "x.csv:3: expected 2 fields, got 1");
}

#[test]
fn integers_read_back() {
    let d = dialect(CsvOptions::default());
    let schema = two(DataType::Int64, DataType::Int64);
    let batches = read(&d, "a,b\n1,2\n3,\n", &schema).unwrap();
    let a = batches[0].column(1).as_primitive::<Int64Type>();
    assert_eq!((a.value(0), a.is_null(1)), (2, true));
}
