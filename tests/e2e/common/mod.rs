//! Helpers shared by the end-to-end tests: a temp project with the repo's pipelines, the
//! `pipe` binary, and the independent Python readers (python `duckdb`, `pyarrow`).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub mod azure;
pub mod catalog;
pub mod delta;
pub mod dest;
pub mod hms;
pub mod iceberg;
pub mod rows;
pub mod s3;
pub mod server;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with the readers. `.ci/run` (and `make venv`) create it.
pub fn python() -> PathBuf {
    let path = std::env::var_os("PIPE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/pipe-venv/bin/python"));
    let ok = Command::new(&path)
        .args(["-c", "import duckdb, pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import duckdb and pyarrow: these tests read results back with them. \
         Create the venv with `make venv` (or run `bash .ci/run`), or point PIPE_PYTHON at a \
         python that has them.",
        path.display()
    );
    path
}

/// Run `tests/interop/<script>` with `args`; returns (success, parsed JSON stdout).
pub fn py(script: &str, args: &[&str]) -> (bool, Value) {
    py_in(&root(), script, args)
}

/// Like [`py`], with `cwd` as the working directory (relative paths in `args`).
pub fn py_in(cwd: &Path, script: &str, args: &[&str]) -> (bool, Value) {
    py_env(cwd, script, args, &[])
}

/// Owned environment pairs (a test server's `env()`) as the `&str` pairs the helpers take.
pub fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Like [`py_in`], with extra environment variables (object store credentials).
pub fn py_env(cwd: &Path, script: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, Value) {
    let out = Command::new(python())
        .current_dir(cwd)
        .arg(root().join("tests/interop").join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Shown with the test's failure, next to the caller's message.
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "{script} exited with {}; its stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{script} printed no JSON.\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), value)
}

/// The `<size> <name>` lines a listing script printed, as (name, size); fails the test if the
/// script failed.
pub fn sized_listing(out: &Output, what: &str) -> Vec<(String, u64)> {
    assert!(
        out.status.success(),
        "listing {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(size, name)| (name.to_string(), size.parse().expect("a size")))
        .collect()
}

/// Rows of `sql` on the DuckDB file `db`, read by python duckdb, as strings.
pub fn query(db: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    let (ok, v) = py("query.py", &[db.to_str().expect("utf-8 path"), sql]);
    assert!(ok, "query failed: {sql}");
    serde_json::from_value(v).expect("rows")
}

/// One `pipe` invocation's outcome.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        let run = Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !run.stderr.contains("panicked"),
            "pipe panicked:\n{}",
            run.stderr
        );
        run
    }

    /// The `--json` summary.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Assert stderr contains `needle` (showing stderr otherwise).
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Assert stdout contains `needle` (showing stdout otherwise).
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    pub fn assert_ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "pipe failed:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn assert_failed(self) -> Self {
        assert_eq!(
            self.code,
            Some(1),
            "pipe should fail:\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A temp directory holding a copy of the repo's `pipelines/`, used as the working directory.
pub struct Project {
    /// REST catalogs started for it (stopped before its directory goes).
    catalogs: std::cell::RefCell<std::collections::HashMap<catalog::Flavour, catalog::RestCatalog>>,
    /// Its S3 server (moto), started on first use.
    s3: std::cell::OnceCell<s3::S3>,
    /// Its Azure Blob Storage emulator (Azurite), started on first use.
    azure: std::cell::OnceCell<azure::Azurite>,
    dir: tempfile::TempDir,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

impl Project {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&root().join("pipelines"), &dir.path().join("pipelines"));
        Self {
            catalogs: Default::default(),
            s3: Default::default(),
            azure: Default::default(),
            dir,
        }
    }

    /// Use the project's REST catalog of `flavour`, started on first use.
    pub fn rest<R>(
        &self,
        flavour: catalog::Flavour,
        f: impl FnOnce(&mut catalog::RestCatalog) -> R,
    ) -> R {
        let mut catalogs = self.catalogs.borrow_mut();
        let cat = catalogs
            .entry(flavour)
            .or_insert_with(|| catalog::RestCatalog::start(self, flavour));
        f(cat)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The project's S3 server, started on first use.
    pub fn s3(&self) -> &s3::S3 {
        self.s3.get_or_init(s3::S3::start)
    }

    /// The project's Azure Blob Storage emulator, started on first use.
    pub fn azure(&self) -> &azure::Azurite {
        self.azure.get_or_init(azure::Azurite::start)
    }

    /// The project's own database in the shared Hive Metastore (named after its directory).
    pub fn hive_db(&self) -> String {
        let name: String = self
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        format!("p_{}", name.to_ascii_lowercase())
    }

    /// The default DuckDB file of `pipelines/orders.toml`.
    pub fn db(&self) -> PathBuf {
        self.path().join(".pipe/pipe.duckdb")
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).expect("read")
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipe"));
        cmd.current_dir(self.path())
            .args(args)
            .env_remove("ORDERS_FILE")
            .env_remove("PIPE_DUCKDB");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `pipe args` started in the background, stdout and stderr captured.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pipe")
    }

    /// A named pipe (FIFO) at `rel` in the project.
    pub fn mkfifo(&self, rel: &str) -> PathBuf {
        let path = self.path().join(rel);
        let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(made.success(), "mkfifo {}", path.display());
        path
    }

    pub fn pipe(&self, args: &[&str]) -> Run {
        self.pipe_env(args, &[])
    }

    pub fn pipe_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Run::from(self.command(args, env).output().expect("pipe runs"))
    }

    /// A project with make_types_fixture.py's files (every type of the type test, written by
    /// pyarrow) under `fx/`.
    pub fn types_fixture() -> Self {
        let p = Self::new();
        let out = Command::new(python())
            .current_dir(p.path())
            .arg(root().join("tests/interop/make_types_fixture.py"))
            .arg("fx")
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    }

    /// check_orders.py against the default DuckDB table `sales.orders`.
    pub fn check_orders(&self, args: &[&str]) -> (bool, Value) {
        let db = self.db();
        let mut all = vec![db.to_str().expect("utf-8"), "sales.orders"];
        all.extend_from_slice(args);
        py_in(self.path(), "check_orders.py", &all)
    }
}

/// The test database: `PIPE_PG_URL`, default the machine's PostgreSQL (trust auth).
pub fn pg_url() -> String {
    std::env::var("PIPE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Run SQL with `psql` (the independent client); panics with the error, or with how to start
/// PostgreSQL if it is not there.
pub fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            pg_url().as_str(),
            "-X",
            "-At",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGTZ", "UTC")
        .output()
        .expect("psql is installed (Debian package postgresql-client)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Connection refused") && !stderr.contains("No such file"),
        "PostgreSQL is not reachable at {}: start it with `bash tests/pg/setup.sh` \
         (or `pg_ctlcluster --skip-systemctl-redirect 15 main start`).\n{stderr}",
        pg_url()
    );
    assert!(out.status.success(), "psql failed on `{sql}`:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A name no other test (or test run) uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Objects a test created in PostgreSQL, dropped when the test ends (pass or fail).
pub struct PgObjects {
    drops: Vec<String>,
}

impl PgObjects {
    pub fn new() -> Self {
        Self { drops: Vec::new() }
    }

    /// Run `create`; run `drop` when the test ends.
    pub fn create(&mut self, create: &str, drop: &str) {
        self.drops.push(drop.to_string());
        psql(create);
    }
}

impl Drop for PgObjects {
    fn drop(&mut self) {
        for sql in self.drops.iter().rev() {
            let _ = Command::new("psql")
                .args([pg_url().as_str(), "-X", "-q", "-c", sql])
                .output();
        }
    }
}

/// Kill `child` with SIGKILL if it is still running, and reap it: whether it was running.
pub fn kill9(child: &mut Child) -> bool {
    let running = child.try_wait().expect("try_wait").is_none();
    if running {
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
    }
    let _ = child.wait();
    running
}
