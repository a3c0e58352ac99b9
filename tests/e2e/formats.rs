//! Every file format loads exact values — NULLs, unicode, decimal(38,10), timestamps with and
//! without time zone, dates, booleans, nested lists and structs — from files written by an
//! independent writer (pyarrow) and read back from DuckDB by python duckdb.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use common::{Project, py};

const CSV_COLUMNS: &str = r#"columns = [
  { name = "id", type = "int64", nullable = false },
  { name = "i32", type = "int32" },
  { name = "flag", type = "bool" },
  { name = "price", type = "decimal(38,10)" },
  { name = "name", type = "string" },
  { name = "day", type = "date" },
  { name = "ts", type = "timestamp" },
  { name = "tstz", type = "timestamptz" },
]"#;

const NDJSON_TYPES: &str = r#"column_types = { i32 = "int32", price = "decimal(38,10)", day = "date", ts = "timestamp", tstz = "timestamptz" }"#;

fn pipeline(name: &str, path: &str, extra: &str, table: &str) -> String {
    format!(
        "name = \"{name}\"\n[source]\ntype = \"file\"\npath = \"{path}\"\n{extra}\n\
         [destination]\ntype = \"duckdb\"\npath = \"out.duckdb\"\ntable = \"{table}\"\n"
    )
}

fn load_and_check(p: &Project, name: &str, path: &str, extra: &str, flat: bool) {
    let table = format!("fmt.{name}");
    p.write(
        &format!("{name}.toml"),
        &pipeline(name, path, extra, &table),
    );
    let s = p
        .pipe(&["run", &format!("{name}.toml"), "--json"])
        .assert_ok()
        .json();
    assert_eq!(s["rows_read"], 4, "{name}");
    let db = p.path().join("out.duckdb");
    let expected = p.path().join("fx/expected.json");
    let mut args = vec![
        db.to_str().unwrap(),
        table.as_str(),
        expected.to_str().unwrap(),
    ];
    if flat {
        args.push("--flat");
    }
    let (ok, report) = py("check_types.py", &args);
    assert!(ok, "{name}: {report}");
    assert_eq!(report["rows"], 4);
}

#[test]
fn parquet_loads_exact_values() {
    let p = Project::types_fixture();
    load_and_check(&p, "parquet", "fx/types.parquet", "batch_rows = 3", false);
}

#[test]
fn arrow_ipc_file_and_stream_load_exact_values() {
    let p = Project::types_fixture();
    load_and_check(&p, "ipc_file", "fx/types.arrow", "", false);
    load_and_check(
        &p,
        "ipc_stream",
        "fx/types.arrows",
        "format = \"ipc\"",
        false,
    );
}

#[test]
fn ndjson_loads_exact_values_including_nested() {
    let p = Project::types_fixture();
    load_and_check(&p, "ndjson", "fx/types.ndjson", NDJSON_TYPES, false);
}

#[test]
fn csv_loads_exact_values_with_explicit_schema_and_null_strings() {
    let p = Project::types_fixture();
    let extra = format!("{CSV_COLUMNS}\n[source.csv]\nnull_values = [\"NULL\"]");
    load_and_check(&p, "csv", "fx/types.csv", &extra, true);
}

#[test]
fn gzip_csv_through_a_file_url_loads_the_same_values() {
    let p = Project::types_fixture();
    let raw = std::fs::read(p.path().join("fx/types.csv")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    std::fs::write(p.path().join("fx/types.csv.gz"), gz.finish().unwrap()).unwrap();
    let url = format!("file://{}/fx/types.csv.gz", p.path().display());
    let extra = format!("{CSV_COLUMNS}\n[source.csv]\nnull_values = [\"NULL\"]");
    load_and_check(&p, "csv_gz_url", &url, &extra, true);
}

#[test]
fn directories_and_globs_read_every_file_in_order() {
    let p = Project::new();
    let csv = p.read("pipelines/data/orders.csv");
    let lines: Vec<&str> = csv.lines().collect();
    let (header, rows) = (lines[0], &lines[1..]);
    for (i, chunk) in rows.chunks(1000).enumerate() {
        p.write(
            &format!("parts/part-{i}.csv"),
            &(format!("{header}\n{}\n", chunk.join("\n"))),
        );
    }
    p.write("parts/_SUCCESS", "");
    p.write("parts/.hidden.csv", "not,a,csv\n");
    for path in ["parts", "parts/part-*.csv"] {
        let s = p
            .pipe_env(
                &["run", "pipelines/orders.toml", "--json"],
                &[("ORDERS_FILE", path)],
            )
            .assert_ok()
            .json();
        assert_eq!(s["rows_read"], 5000, "{path}");
        assert!(s["bytes_read"].as_u64().unwrap() > 600_000);
    }
    let (ok, report) = p.check_orders(&["--load", "pipelines/data/orders.csv"]);
    assert!(ok, "{report}");
}

#[test]
fn parquet_dataset_over_a_file_url_with_a_glob() {
    let p = Project::types_fixture();
    for i in 0..3 {
        std::fs::copy(
            p.path().join("fx/types.parquet"),
            p.path().join(format!("fx/many-{i}.parquet")),
        )
        .unwrap();
    }
    // Neither a subdirectory nor an underscore-prefixed file matches `*` (as in a shell).
    std::fs::create_dir_all(p.path().join("fx/old")).unwrap();
    std::fs::copy(
        p.path().join("fx/types.parquet"),
        p.path().join("fx/old/many-9.parquet"),
    )
    .unwrap();
    std::fs::copy(
        p.path().join("fx/types.parquet"),
        p.path().join("fx/_many-tmp.parquet"),
    )
    .unwrap();
    let url = format!("file://{}/fx/*many-*.parquet", p.path().display());
    p.write("many.toml", &pipeline("many", &url, "", "fmt.many"));
    let s = p.pipe(&["run", "many.toml", "--json"]).assert_ok().json();
    assert_eq!(s["rows_read"], 12);
    let rows = common::query(
        &p.path().join("out.duckdb"),
        "SELECT count(*), count(DISTINCT id), sum(price) FROM fmt.many",
    );
    assert_eq!(
        rows[0],
        vec![
            Some("12".into()),
            Some("4".into()),
            Some("3703703670370370367037037034.0370370364".into())
        ]
    );
}

#[test]
fn gzip_and_plain_csv_files_mix_in_one_directory() {
    let p = Project::new();
    let csv = p.read("pipelines/data/orders.csv");
    let lines: Vec<&str> = csv.lines().collect();
    let (header, rows) = (lines[0], &lines[1..]);
    p.write(
        "mixed/a.csv",
        &format!("{header}\n{}\n", rows[..2500].join("\n")),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut gz,
        format!("{header}\n{}\n", rows[2500..].join("\n")).as_bytes(),
    )
    .unwrap();
    std::fs::write(p.path().join("mixed/b.csv.gz"), gz.finish().unwrap()).unwrap();
    let s = p
        .pipe_env(
            &["run", "pipelines/orders.toml", "--json"],
            &[("ORDERS_FILE", "mixed")],
        )
        .assert_ok()
        .json();
    assert_eq!(s["rows_read"], 5000);
    let (ok, report) = p.check_orders(&["--load", "pipelines/data/orders.csv"]);
    assert!(ok, "{report}");
}

#[test]
fn a_later_parquet_file_with_another_schema_is_an_error_naming_it() {
    let p = Project::types_fixture();
    let out = std::process::Command::new(common::python())
        .current_dir(p.path())
        .args([
            "-c",
            "import pyarrow as pa, pyarrow.parquet as pq; \
             t = pq.read_table('fx/types.parquet'); \
             pq.write_table(t.append_column('extra', pa.array([1, 2, 3, 4])), 'fx/z-extra.parquet'); \
             pq.write_table(t.set_column(1, 'i32', t['i32'].cast(pa.float64())), 'fx/z-float.parquet')",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, message) in [
        (
            "z-extra",
            "z-extra/b.parquet: column(s) extra that the first file does not have",
        ),
        (
            "z-float",
            "z-float/b.parquet: column `i32` is Float64 here but Int32 in the first file",
        ),
    ] {
        std::fs::create_dir_all(p.path().join(file)).unwrap();
        std::fs::copy(
            p.path().join("fx/types.parquet"),
            p.path().join(format!("{file}/a.parquet")),
        )
        .unwrap();
        std::fs::copy(
            p.path().join(format!("fx/{file}.parquet")),
            p.path().join(format!("{file}/b.parquet")),
        )
        .unwrap();
        p.write(
            &format!("{file}.toml"),
            &pipeline(file, file, "", &format!("fmt.{file}")),
        );
        p.pipe(&["run", &format!("{file}.toml")])
            .assert_failed()
            .stderr_has(message);
    }
}
