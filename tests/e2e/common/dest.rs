//! One description per table destination, so a test case runs against every one: the
//! `[destination]` keys, and how its independent reader sees the table.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use serde_json::Value;

use super::catalog::Flavour;
use super::{Project, py_in};

/// A destination under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    DuckDb,
    Delta,
    /// Iceberg on the SQL catalog (SQLite).
    Iceberg,
    /// Iceberg through a REST catalog.
    IcebergRest(Flavour),
    /// Iceberg on the shared real Hive Metastore, local warehouse.
    IcebergHive,
    /// Iceberg on the SQL catalog (SQLite) with its warehouse in S3 (moto).
    IcebergS3,
    /// Iceberg on the SQL catalog (SQLite) with its warehouse in Azure Blob Storage (Azurite).
    IcebergAzure,
    /// Parquet files in a local directory (`type = "files"`), read by pyarrow.
    Files,
}

impl Dest {
    pub const ALL: [Dest; 10] = [
        Dest::DuckDb,
        Dest::Delta,
        Dest::Iceberg,
        Dest::IcebergRest(Flavour::Pipe),
        Dest::IcebergRest(Flavour::PipePostgres),
        Dest::IcebergRest(Flavour::Lakana),
        Dest::IcebergHive,
        Dest::IcebergS3,
        Dest::IcebergAzure,
        Dest::Files,
    ];

    /// The Iceberg flavours.
    pub const ICEBERG: [Dest; 7] = [
        Dest::Iceberg,
        Dest::IcebergRest(Flavour::Pipe),
        Dest::IcebergRest(Flavour::PipePostgres),
        Dest::IcebergRest(Flavour::Lakana),
        Dest::IcebergHive,
        Dest::IcebergS3,
        Dest::IcebergAzure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dest::DuckDb => "duckdb",
            Dest::Delta => "delta",
            Dest::Iceberg => "iceberg",
            Dest::IcebergRest(Flavour::Pipe) => "iceberg-rest (pipe serve catalog, SQLite)",
            Dest::IcebergRest(Flavour::PipePostgres) => {
                "iceberg-rest (pipe serve catalog, PostgreSQL)"
            }
            Dest::IcebergRest(Flavour::Lakana) => "iceberg-rest (lakana-server)",
            Dest::IcebergHive => "iceberg-hive (Hive Metastore 2.3.9, local warehouse)",
            Dest::IcebergS3 => "iceberg-s3 (SQL catalog, warehouse in S3 on moto)",
            Dest::IcebergAzure => "iceberg-azure (SQL catalog, warehouse in Azure on Azurite)",
            Dest::Files => "files (Parquet in a local directory)",
        }
    }

    /// Whether it has `mode = "merge"` (files do not: the cases that merge skip it).
    pub fn merges(self) -> bool {
        self != Dest::Files
    }

    /// The namespace-qualified Iceberg table name.
    fn qualified(self, p: &Project, table: &str) -> String {
        match self {
            Dest::IcebergRest(f) => p.rest(f, |c| format!("{}.{table}", c.namespace)),
            Dest::IcebergHive => format!("{}.{table}", p.hive_db()),
            _ => format!("ns.{table}"),
        }
    }

    /// The `[destination]` keys (without `mode`) for table `table`.
    pub fn toml(self, p: &Project, table: &str) -> String {
        match self {
            Dest::IcebergRest(f) => format!(
                "type = \"iceberg\"\ncatalog = {}\ntable = \"{}\"",
                p.rest(f, |c| c.toml()),
                self.qualified(p, table)
            ),
            Dest::DuckDb => {
                format!("type = \"duckdb\"\npath = \"db/pipe.duckdb\"\ntable = \"main.{table}\"")
            }
            Dest::Delta => format!("type = \"delta\"\npath = \"lake/{table}\""),
            Dest::Files => format!("type = \"files\"\npath = \"files/{table}\""),
            Dest::Iceberg => format!(
                "type = \"iceberg\"\ncatalog = {{ type = \"sql\", uri = \"sqlite://cat/catalog.db\", \
                 warehouse = \"wh\" }}\ntable = \"ns.{table}\""
            ),
            Dest::IcebergHive => format!(
                "type = \"iceberg\"\ncatalog = {{ type = \"hive\", uri = \"{}\", warehouse = \"wh\" }}\n\
                 table = \"{}\"",
                super::hms::uri(),
                self.qualified(p, table)
            ),
            Dest::IcebergS3 => format!(
                "type = \"iceberg\"\ncatalog = {{ type = \"sql\", uri = \"sqlite://cat/catalog.db\", \
                 warehouse = \"s3://{}/wh\" }}\ntable = \"ns.{table}\"\n{}",
                super::s3::BUCKET,
                p.s3().storage_toml()
            ),
            Dest::IcebergAzure => format!(
                "type = \"iceberg\"\ncatalog = {{ type = \"sql\", uri = \"sqlite://cat/catalog.db\", \
                 warehouse = \"abfss://{}/wh\" }}\ntable = \"ns.{table}\"\n{}",
                super::azure::CONTAINER,
                p.azure().storage_toml()
            ),
        }
    }

    /// The destination keys partitioning a new table by `column` (`None`: the destination has
    /// no partitioning).
    pub fn partition_by(self, column: &str) -> Option<String> {
        match self {
            Dest::DuckDb => None,
            Dest::Delta
            | Dest::Iceberg
            | Dest::IcebergRest(_)
            | Dest::IcebergHive
            | Dest::IcebergS3
            | Dest::IcebergAzure
            | Dest::Files => Some(format!("partition_by = [\"{column}\"]")),
        }
    }

    /// The reader arguments of tests/interop/edge.py for `table`.
    pub fn reader(self, p: &Project, table: &str) -> Vec<String> {
        match self {
            Dest::IcebergRest(f) => vec![
                "iceberg".into(),
                p.rest(f, |c| c.reader()),
                "wh".into(),
                self.qualified(p, table),
            ],
            Dest::DuckDb => vec![
                "duckdb".into(),
                "db/pipe.duckdb".into(),
                format!("main.{table}"),
            ],
            Dest::Delta => vec!["delta".into(), format!("lake/{table}")],
            Dest::Files => vec!["files".into(), format!("files/{table}")],
            Dest::Iceberg => vec![
                "iceberg".into(),
                "cat/catalog.db".into(),
                "wh".into(),
                format!("ns.{table}"),
            ],
            Dest::IcebergHive => vec![
                "iceberg".into(),
                serde_json::json!({"type": "hive", "uri": super::hms::uri()}).to_string(),
                "wh".into(),
                self.qualified(p, table),
            ],
            Dest::IcebergS3 | Dest::IcebergAzure => {
                let (mut props, warehouse) = if self == Dest::IcebergS3 {
                    let w = format!("s3://{}/wh", super::s3::BUCKET);
                    (p.s3().pyiceberg_props(), w)
                } else {
                    let w = format!("abfss://{}/wh", super::azure::CONTAINER);
                    (p.azure().pyiceberg_props(), w)
                };
                props.insert("type".into(), "sql".into());
                props.insert(
                    "uri".into(),
                    format!("sqlite:///{}", p.path().join("cat/catalog.db").display()).into(),
                );
                props.insert("warehouse".into(), warehouse.into());
                vec![
                    "iceberg".into(),
                    Value::Object(props).to_string(),
                    "wh".into(),
                    format!("ns.{table}"),
                ]
            }
        }
    }

    /// Objects the destination keeps outside the project directory (an object-store
    /// warehouse's keys), with their sizes.
    pub fn objects(self, p: &Project) -> Vec<(String, u64)> {
        match self {
            Dest::IcebergS3 => p.s3().sizes("wh/"),
            Dest::IcebergAzure => p.azure().sizes("wh/"),
            _ => Vec::new(),
        }
    }

    /// The table's rows as the destination's independent reader returns them (edge.py's
    /// canonical form: sorted by id, temporal values as integers, floats by repr).
    pub fn rows(self, p: &Project, table: &str) -> Value {
        let mut args = vec!["read".to_string()];
        args.extend(self.reader(p, table));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, v) = py_in(p.path(), "edge.py", &args);
        assert!(ok, "{} reader failed on {table}: {v}", self.name());
        v
    }

    /// The table's live data files as its own library lists them, with `column`'s minimum and
    /// maximum read from each file (`None`: the destination has no data files).
    pub fn files(self, p: &Project, table: &str, column: &str) -> Option<Vec<Value>> {
        if self == Dest::DuckDb {
            return None;
        }
        let mut args = vec!["files".to_string(), column.to_string()];
        args.extend(self.reader(p, table));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, v) = py_in(p.path(), "edge.py", &args);
        assert!(ok, "{} file listing failed on {table}: {v}", self.name());
        Some(v.as_array().unwrap().clone())
    }

    /// How many commits the table has: DuckDB ledger rows, Delta versions, Iceberg snapshots
    /// (each read independently).
    pub fn commits(self, p: &Project, table: &str) -> usize {
        match self {
            Dest::DuckDb => {
                let rows = super::query(
                    &p.path().join("db/pipe.duckdb"),
                    &format!("SELECT count(*) FROM _pipe.runs WHERE table_name = 'main.{table}'"),
                );
                rows[0][0].as_deref().unwrap().parse().unwrap()
            }
            Dest::Delta => {
                let (ok, v) = py_in(p.path(), "delta.py", &["read", &format!("lake/{table}")]);
                assert!(ok, "{v}");
                v["history"].as_array().unwrap().len()
            }
            Dest::Files => std::fs::read_dir(p.path().join(format!("files/{table}/_pipe/log")))
                .map(|d| d.count())
                .unwrap_or(0),
            Dest::Iceberg
            | Dest::IcebergRest(_)
            | Dest::IcebergHive
            | Dest::IcebergS3
            | Dest::IcebergAzure => {
                let reader = self.reader(p, table);
                let (ok, v) = py_in(p.path(), "ice.py", &["read", &reader[1], "wh", &reader[3]]);
                assert!(ok, "{v}");
                v["snapshots"].as_array().unwrap().len()
            }
        }
    }

    /// A pipeline `name` loading `source` (a `[source]` body) into `table` with `mode` and
    /// extra destination keys; returns its file name.
    pub fn pipeline(
        self,
        p: &Project,
        name: &str,
        source: &str,
        table: &str,
        mode: &str,
        extra: &str,
    ) -> String {
        let file = format!("{name}.toml");
        p.write(
            &file,
            &format!(
                "name = \"{name}\"\n[source]\n{source}\n[destination]\n{}\nmode = \"{mode}\"\n{extra}\n",
                self.toml(p, table)
            ),
        );
        file
    }
}

/// The type-extremes fixture (tests/interop/edge.py `make`): `fx/extremes.parquet` in a new
/// project, and the rows every reader must return for it.
pub fn extremes() -> (Project, Value) {
    let p = Project::new();
    let (ok, v) = py_in(p.path(), "edge.py", &["make", "fx"]);
    assert!(ok, "{v}");
    let expected: Value = serde_json::from_str(&p.read("fx/expected.json")).unwrap();
    (p, expected)
}
