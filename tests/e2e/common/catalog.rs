//! Iceberg REST catalogs for a test project: `pipe serve catalog` over SQLite or PostgreSQL,
//! and `lakana-server` (an independent implementation from PyPI), each on a free port and
//! stopped with the project.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::server::Server;
use super::{Project, psql, py_in, unique};

/// The token every test catalog wants.
pub const TOKEN: &str = "pipe-test-token";

/// Which REST catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// `pipe serve catalog` over a SQLite file in the project.
    Pipe,
    /// `pipe serve catalog` over the test PostgreSQL (its own catalog name).
    PipePostgres,
    /// lakana-server 0.20.0 (tables only under bronze/silver/gold; prefix = environment).
    Lakana,
}

/// A running REST catalog.
pub struct RestCatalog {
    server: Server,
    /// The token calls carry.
    pub token: String,
    /// The prefix clients must use (`None`: the catalog's /v1/config says).
    pub prefix: Option<String>,
    /// The namespace tables go in.
    pub namespace: &'static str,
    /// The catalog name rows are keyed by (PostgreSQL flavour), dropped with it.
    pg_name: Option<String>,
    /// `pipe serve catalog`'s arguments but `--listen`, to restart it.
    args: Vec<String>,
}

/// The `pipe` binary under test.
pub fn pipe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pipe"))
}

/// The Python of lakana-server (`make venv` installs it apart from the readers: its
/// dependencies pin an older botocore than moto's).
pub fn lakana_python() -> PathBuf {
    let path = std::env::var_os("PIPE_LAKANA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/pipe-lakana/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: lakana-server (the independent REST catalog) is installed by `make venv` \
         (or `bash .ci/run`), or point PIPE_LAKANA_PYTHON at a python that has lakana-server 0.20.0",
        path.display()
    );
    path
}

impl RestCatalog {
    /// Start `flavour` for project `p` (its files under the project directory).
    pub fn start(p: &Project, flavour: Flavour) -> Self {
        Self::start_with(p, flavour, &[])
    }

    /// Start `pipe serve catalog` with extra options (`--prefix`, `--client`, ...); the
    /// PostgreSQL flavour with `flavour = PipePostgres`.
    pub fn start_with(p: &Project, flavour: Flavour, extra: &[&str]) -> Self {
        match flavour {
            Flavour::Pipe | Flavour::PipePostgres => {
                let (catalog, pg_name) = if flavour == Flavour::Pipe {
                    ("sqlite://cat/catalog.db".to_string(), None)
                } else {
                    (super::pg_url(), Some(unique("rest")))
                };
                let mut args = vec![
                    "serve".to_string(),
                    "catalog".into(),
                    "--catalog".into(),
                    catalog,
                    "--warehouse".into(),
                    "wh".into(),
                    "--token".into(),
                    TOKEN.into(),
                ];
                if let Some(name) = &pg_name {
                    args.extend(["--name".into(), name.clone()]);
                }
                args.extend(extra.iter().map(|s| s.to_string()));
                let prefix = extra
                    .iter()
                    .position(|a| *a == "--prefix")
                    .map(|i| extra[i + 1].to_string());
                Self {
                    server: serve(p, &args),
                    token: TOKEN.into(),
                    prefix,
                    namespace: "ns",
                    pg_name,
                    args,
                }
            }
            Flavour::Lakana => {
                let dir = p.path().join("lakana");
                std::fs::create_dir_all(&dir).unwrap();
                let script = super::root().join("tests/interop/lakana.py");
                let dir_arg = dir.display().to_string();
                let server = Server::start_in(&lakana_python(), p.path(), &[], |port| {
                    vec![script.display().to_string(), dir_arg, port.to_string()]
                });
                let token = std::fs::read_to_string(dir.join("token"))
                    .expect("lakana.py writes the token before serving");
                Self {
                    server,
                    token: token.trim().to_string(),
                    prefix: Some("dev".into()),
                    namespace: "bronze",
                    pg_name: None,
                    args: Vec::new(),
                }
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        self.server.endpoint()
    }

    /// The `catalog = { ... }` value of a pipeline (creating missing namespaces where the
    /// catalog allows it).
    pub fn toml(&self) -> String {
        let prefix = self
            .prefix
            .as_ref()
            .map(|p| format!(", prefix = \"{p}\""))
            .unwrap_or_default();
        let create = if self.namespace == "ns" {
            ", create_namespace = true"
        } else {
            ""
        };
        format!(
            "{{ type = \"rest\", uri = \"{}\", token = \"{}\"{prefix}{create} }}",
            self.uri(),
            self.token
        )
    }

    /// pyiceberg RestCatalog properties, as the JSON the readers (ice.py, edge.py) take in
    /// place of a SQLite file.
    pub fn reader(&self) -> String {
        let mut props = json!({ "uri": self.uri(), "token": self.token });
        if let Some(p) = &self.prefix {
            props["prefix"] = Value::String(p.clone());
        }
        props.to_string()
    }

    /// The catalog's name in PostgreSQL (the PostgreSQL flavour).
    pub fn pg_name(&self) -> &str {
        self.pg_name
            .as_deref()
            .expect("a PostgreSQL-backed catalog")
    }

    /// Start `pipe serve catalog` again, on a new port, over the same database.
    pub fn restart(&mut self, p: &Project) {
        self.server.kill();
        self.server = serve(p, &self.args);
    }

    /// Stop the server now (kill -9).
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Where the catalog's files are, for messages.
    pub fn describe(&self, p: &Path) -> String {
        format!("{} in {}", self.uri(), p.display())
    }
}

/// `pipe serve catalog args --listen <free port>` in the project.
fn serve(p: &Project, args: &[String]) -> Server {
    Server::start_in(&pipe_bin(), p.path(), &[], |port| {
        let mut a = args.to_vec();
        a.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
        a
    })
}

impl Drop for RestCatalog {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let _ = std::panic::catch_unwind(|| {
                psql(&format!(
                    "DELETE FROM iceberg_tables WHERE catalog_name = '{name}'; \
                     DELETE FROM iceberg_namespace_properties WHERE catalog_name = '{name}'"
                ))
            });
        }
    }
}

/// The CSV source of [`pipeline`]: `in.csv` with an int64 `id`.
pub const CSV_SOURCE: &str =
    "type = \"file\"\npath = \"in.csv\"\ncolumn_types = { id = \"int64\" }";

/// Pipeline `name` loading `in.csv` into `table` through `catalog` with `mode`.
pub fn pipeline(p: &Project, name: &str, catalog: &str, table: &str, mode: &str) -> String {
    let file = format!("{name}.toml");
    let keys = if mode == "merge" {
        "merge_keys = [\"id\"]\n"
    } else {
        ""
    };
    p.write(
        &file,
        &format!(
            "name = \"{name}\"\n[source]\n{CSV_SOURCE}\n[destination]\ntype = \"iceberg\"\n\
             catalog = {catalog}\ntable = \"{table}\"\nmode = \"{mode}\"\n{keys}"
        ),
    );
    file
}

/// One raw HTTP call through rest.py: `{"status", "body"}`.
pub fn http(p: &Project, args: &[&str]) -> Value {
    let (ok, v) = py_in(p.path(), "rest.py", &[&["http"], args].concat());
    assert!(ok, "{v}");
    v
}
