//! Scale-out: `pipe backfill --workers` registers a backfill's windows as work units in a
//! PostgreSQL state store, and `pipe worker` processes claim and run them — into Iceberg (SQL
//! catalog on PostgreSQL) and Delta, read back by pyiceberg and deltalake. Every window is
//! committed exactly once, also while workers are `kill -9`ed and while the coordinating
//! PostgreSQL restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{PgObjects, Project, kill9, pg_url, psql, py_in, unique};
use serde_json::Value;

/// Where a job's table lives.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lake {
    Delta,
    /// Iceberg on the SQL catalog, its catalog tables in PostgreSQL.
    IcebergOnPostgres,
}

/// A backfill job: a PostgreSQL source table of `rows` rows (`id` 0..rows), a pipeline whose
/// state store is `store_url`, windows of `step` ids.
struct Job {
    p: Project,
    lake: Lake,
    name: String,
    file: String,
    source: String,
    catalog: String,
    rows: i64,
    step: i64,
    _pg: PgObjects,
}

impl Job {
    fn new(lake: Lake, rows: i64, step: i64, store_url: &str, lease_secs: u64) -> Self {
        let p = Project::new();
        let name = unique("wk");
        let source = format!("{name}_src");
        let mut pg = PgObjects::new();
        pg.create(
            &format!(
                "CREATE TABLE {source} (id bigint PRIMARY KEY, v text, amount numeric(12,2)); \
                 INSERT INTO {source} SELECT g, 'row ' || g || repeat('x', (g % 17)::int), \
                 (g % 1000) / 4.0 FROM generate_series(0, {}) g",
                rows - 1
            ),
            &format!("DROP TABLE IF EXISTS {source}"),
        );
        let catalog = unique("wkcat");
        let destination = match lake {
            Lake::Delta => "type = \"delta\"\npath = \"lake/t\"".to_string(),
            Lake::IcebergOnPostgres => format!(
                "type = \"iceberg\"\ncatalog = {{ type = \"sql\", uri = \"{}\", warehouse = \"wh\", \
                 name = \"{catalog}\" }}\ntable = \"ns.t\"",
                pg_url()
            ),
        };
        if lake == Lake::IcebergOnPostgres {
            pg.create(
                "SELECT 1",
                &format!(
                    "DELETE FROM iceberg_tables WHERE catalog_name = '{catalog}'; \
                     DELETE FROM iceberg_namespace_properties WHERE catalog_name = '{catalog}'"
                ),
            );
        }
        let file = format!("{name}.toml");
        p.write(
            &file,
            &format!(
                "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"{source}\"\n\
                 cursor = \"id\"\n[destination]\n{destination}\nmode = \"append\"\n\
                 [state]\nurl = \"{store_url}\"\nlease_secs = {lease_secs}\n",
                pg_url()
            ),
        );
        pg.create(
            "SELECT 1",
            &format!(
                "DELETE FROM pipe_units WHERE pipeline = '{name}'; \
                 DELETE FROM pipe_runs WHERE pipeline = '{name}'; \
                 DELETE FROM pipe_state WHERE pipeline = '{name}'"
            ),
        );
        Self {
            p,
            lake,
            name,
            file,
            source,
            catalog,
            rows,
            step,
            _pg: pg,
        }
    }

    fn windows(&self) -> i64 {
        (self.rows + self.step - 1) / self.step
    }

    fn range(&self) -> Vec<String> {
        let (to, step) = (self.rows.to_string(), self.step.to_string());
        ["--from", "0", "--to", &to, "--step", &step]
            .map(String::from)
            .to_vec()
    }

    /// `pipe backfill … --workers`: registers the units and starts none.
    fn register(&self) -> Value {
        let mut args = vec!["backfill".to_string(), self.file.clone()];
        args.extend(self.range());
        args.extend(["--workers".into(), "--json".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.p.pipe(&args).assert_ok().json()
    }

    /// A `pipe worker` process, its stderr in `worker-<n>.log`.
    fn worker(&self, n: usize) -> Child {
        let log = std::fs::File::create(self.p.path().join(format!("worker-{n}.log"))).unwrap();
        self.p
            .command(&["worker", &self.file, "--json"], &[])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn pipe worker")
    }

    fn logs(&self) -> String {
        (0..64)
            .filter_map(|n| {
                std::fs::read_to_string(self.p.path().join(format!("worker-{n}.log"))).ok()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn status(&self) -> Value {
        self.p
            .pipe(&["status", &self.file, "--json", "--runs", "1"])
            .assert_ok()
            .json()
    }

    /// The table as its independent reader sees it: (rows sorted by id, commits' run ids).
    fn read(&self) -> (Vec<Value>, Vec<String>) {
        let (ok, v) = match self.lake {
            Lake::Delta => py_in(
                self.p.path(),
                "delta.py",
                &["read", "lake/t", "--order", "id"],
            ),
            Lake::IcebergOnPostgres => {
                // The catalog row read by psql, the table by pyiceberg from its metadata.
                let location = psql(&format!(
                    "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = '{}' \
                     AND table_namespace = 'ns' AND table_name = 't'",
                    self.catalog
                ));
                let path = location.trim_start_matches("file://").to_string();
                py_in(self.p.path(), "ice.py", &["static", &path, "--order", "id"])
            }
        };
        assert!(ok, "reader failed: {v}");
        let runs = match self.lake {
            Lake::Delta => v["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|h| h["run_id"].as_str().map(str::to_string))
                .collect(),
            Lake::IcebergOnPostgres => v["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["summary"]["pipe.run-id"].as_str().map(str::to_string))
                .collect(),
        };
        (v["rows"].as_array().unwrap().clone(), runs)
    }

    /// Every row once, every window committed by exactly one commit, and the ledger agrees.
    fn assert_exact(&self) {
        let (rows, runs) = self.read();
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| {
                r["id"]
                    .as_str()
                    .map_or_else(|| r["id"].as_i64().unwrap(), |s| s.parse().unwrap())
            })
            .collect();
        assert_eq!(
            ids,
            (0..self.rows).collect::<Vec<_>>(),
            "rows are not exactly 0..{}",
            self.rows
        );
        let text: usize = rows.iter().map(|r| r["v"].as_str().unwrap().len()).sum();
        let want: usize = psql(&format!("SELECT sum(length(v)) FROM {}", self.source))
            .parse()
            .unwrap();
        assert_eq!(text, want);
        // One commit per window, each by a distinct run: no window was committed twice.
        let distinct: BTreeSet<&String> = runs.iter().collect();
        assert_eq!(runs.len() as i64, self.windows(), "commits: {runs:?}");
        assert_eq!(
            distinct.len(),
            runs.len(),
            "a run committed twice: {runs:?}"
        );
        // The table's state names those runs, one window each.
        let status = self.status();
        assert_eq!(status["state_from"], "destination", "{status}");
        assert_eq!(status["backfill_windows_done"], self.windows(), "{status}");
        let units = &status["units"];
        assert_eq!(units["done"], self.windows(), "{units}");
        assert_eq!(
            (units["pending"].as_i64(), units["failed"].as_i64()),
            (Some(0), Some(0))
        );
        let committed = psql(&format!(
            "SELECT count(*) || ' ' || count(DISTINCT window_start) FROM pipe_runs \
             WHERE pipeline = '{}' AND status = 'committed'",
            self.name
        ));
        let w = self.windows();
        assert_eq!(committed, format!("{w} {w}"), "the ledger's committed runs");
        let ledger: BTreeSet<String> = psql(&format!(
            "SELECT string_agg(run_id, ',') FROM pipe_runs WHERE pipeline = '{}' AND status = 'committed'",
            self.name
        ))
        .split(',')
        .map(str::to_string)
        .collect();
        assert_eq!(
            ledger,
            distinct.into_iter().cloned().collect::<BTreeSet<_>>()
        );
    }
}

/// Waits for `children`, asserting each exits 0; their JSON reports.
fn wait_all(job: &Job, children: Vec<Child>) -> Vec<Value> {
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "a worker failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                job.logs()
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect()
}

/// 100 windows, 4 workers, into Iceberg on a PostgreSQL SQL catalog and into Delta; `pipe
/// status` shows the units while they run.
#[test]
fn four_workers_commit_every_window_exactly_once() {
    for lake in [Lake::IcebergOnPostgres, Lake::Delta] {
        let job = Job::new(lake, 30_000, 300, &pg_url(), 30);
        let reg = job.register();
        assert_eq!(reg["registered"]["added"], 100, "{reg}");
        assert_eq!(reg["workers_started"], 0);
        assert_eq!(reg["units"]["pending"], 100);
        let workers: Vec<Child> = (0..4).map(|n| job.worker(n)).collect();
        let pids: BTreeSet<i64> = workers.iter().map(|c| i64::from(c.id())).collect();
        // Progress while it runs: some done, some running, on the workers' pids.
        let mut seen = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        while seen.is_none() && Instant::now() < deadline {
            let units = job.status()["units"].clone();
            let running = units["running_units"].as_array().unwrap();
            if units["done"].as_i64().unwrap() > 0 && !running.is_empty() {
                seen = Some(units);
            } else if units["done"] == 100 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let seen = seen.expect("pipe status never showed the units in progress");
        assert_eq!(seen["total"], 100, "{seen}");
        for u in seen["running_units"].as_array().unwrap() {
            assert!(
                pids.contains(&u["pid"].as_i64().unwrap()),
                "{u} not one of {pids:?}"
            );
        }
        let reports = wait_all(&job, workers);
        let committed: i64 = reports
            .iter()
            .map(|r| r["committed"].as_i64().unwrap())
            .sum();
        let busy = reports
            .iter()
            .filter(|r| r["committed"].as_i64().unwrap() > 0)
            .count();
        assert_eq!(committed, 100, "{reports:?}");
        assert!(busy >= 2, "the work was not shared: {reports:?}");
        job.assert_exact();
        // Registering the same plan again finds every window committed.
        let again = job.register();
        assert_eq!(again["registered"]["already_committed"], 100, "{again}");
    }
}

/// `kill -9` a random worker every ~second (at least 10 kills, each replaced at once) while 4
/// run: the killed workers' units are claimed again, and no window is committed twice.
#[test]
fn killed_workers_lose_nothing_and_double_nothing() {
    let job = Job::new(Lake::Delta, 24_000, 200, &pg_url(), 5);
    job.register();
    let mut workers: Vec<Child> = (0..4).map(|n| job.worker(n)).collect();
    let mut next = 4;
    let mut kills = 0;
    let mut rng = std::process::id() as usize;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        std::thread::sleep(Duration::from_millis(700 + (rng % 600) as u64));
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let done = job.status()["units"]["done"].as_i64().unwrap();
        if done >= job.windows() - 4 || Instant::now() > deadline {
            break;
        }
        let victim = (rng >> 33) % workers.len();
        if let Some(status) = workers[victim].try_wait().unwrap() {
            // It ended by itself: only the end of the job may do that, and only well.
            assert!(status.success(), "a worker failed:\n{}", job.logs());
        } else if kill9(&mut workers[victim]) {
            kills += 1;
        }
        workers[victim] = job.worker(next);
        next += 1;
    }
    assert!(
        kills >= 10,
        "only {kills} kills before the job finished; make the job bigger"
    );
    wait_all(&job, workers);
    // A last worker after every kill finds nothing left, or finishes what was.
    wait_all(&job, vec![job.worker(next)]);
    job.assert_exact();
    // The kills cost something: units were claimed again after their workers died.
    let reclaimed: i64 = psql(&format!(
        "SELECT count(*) FROM pipe_units WHERE pipeline = '{}' AND attempts > 1",
        job.name
    ))
    .parse()
    .unwrap();
    assert!(reclaimed > 0, "no unit was ever claimed again");
}

/// A private PostgreSQL cluster (the coordinator), which the test can restart.
struct PrivatePg {
    dir: PathBuf,
    port: u16,
}

impl PrivatePg {
    fn bin(tool: &str) -> PathBuf {
        let dirs = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin): `apt-get install postgresql`");
        let mut versions: Vec<PathBuf> = dirs.filter_map(|d| d.ok().map(|d| d.path())).collect();
        versions.sort();
        versions
            .pop()
            .expect("a PostgreSQL version")
            .join("bin")
            .join(tool)
    }

    /// `tool args…` as the `postgres` user when running as root (initdb refuses root).
    fn run(tool: &str, args: &[&str]) -> std::process::Output {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false);
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(Self::bin(tool));
            c
        } else {
            Command::new(Self::bin(tool))
        };
        cmd.args(args).output().unwrap()
    }

    fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("pipe-coordinator"));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status();
        let data = dir.join("data");
        let out = Self::run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self { dir, port };
        pg.ctl("start");
        pg
    }

    fn ctl(&self, verb: &str) {
        let data = self.dir.join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        let out = Self::run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                verb,
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Self::run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The coordinating PostgreSQL goes down for a few seconds mid-job: the workers wait for it
/// (bounded), then carry on; nothing is lost or doubled.
#[test]
fn workers_wait_out_a_coordinator_restart() {
    let coordinator = PrivatePg::start();
    let job = Job::new(Lake::Delta, 12_000, 300, &coordinator.url(), 15);
    job.register();
    let workers: Vec<Child> = (0..3).map(|n| job.worker(n)).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    let before = loop {
        let done = job.status()["units"]["done"].as_i64().unwrap();
        if done >= 5 {
            break done;
        }
        assert!(Instant::now() < deadline, "no progress: {}", job.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    // Down mid-job: the workers' calls wait (the pool reconnects; longer outages are retried
    // with backoff), in-flight runs go on, and every worker finishes the job afterwards.
    assert!(before < job.windows() - 10, "the job was nearly done");
    coordinator.ctl("stop");
    std::thread::sleep(Duration::from_secs(4));
    coordinator.ctl("start");
    wait_all(&job, workers);
    // The ledger lives in the coordinator: compare it there, not in the shared database.
    let (rows, runs) = job.read();
    assert_eq!(rows.len() as i64, job.rows);
    let distinct: BTreeSet<&String> = runs.iter().collect();
    assert_eq!(
        (runs.len() as i64, distinct.len() as i64),
        (job.windows(), job.windows())
    );
    let status = job.status();
    assert_eq!(status["units"]["done"], job.windows(), "{status}");
    assert_eq!(status["backfill_windows_done"], job.windows());
}

/// What cannot be split across processes is refused before anything is registered, and
/// `--workers N` runs N local workers itself (here on the embedded store).
#[test]
fn unsplittable_pipelines_are_refused_and_local_workers_run_the_job() {
    let p = Project::new();
    let base = format!(
        "[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"t\"\ncursor = \"id\"\n",
        pg_url()
    );
    let duck = p.write(
        "duck.toml",
        &format!("name = \"duck\"\n{base}[destination]\ntype = \"duckdb\"\npath = \"db.duckdb\"\ntable = \"t\"\n"),
    );
    let args = |f: &Path| {
        [
            "backfill",
            f.to_str().unwrap(),
            "--from",
            "0",
            "--to",
            "10",
            "--step",
            "5",
            "--workers",
        ]
        .map(String::from)
    };
    let a = args(&duck);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    p.pipe(&a)
        .assert_failed()
        .stderr_has("one process at a time can write")
        .stderr_has("--parallel");
    let replace = p.write(
        "replace.toml",
        &format!("name = \"replace\"\n{base}[destination]\ntype = \"delta\"\npath = \"lake/r\"\nmode = \"replace\"\n"),
    );
    let a = args(&replace);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    p.pipe(&a)
        .assert_failed()
        .stderr_has("mode = \"replace\"")
        .stderr_has("cannot be split");
    let files = p.write(
        "files.toml",
        "name = \"files\"\n[source]\ntype = \"file\"\npath = \"pipelines/data/orders.csv\"\n\
         [destination]\ntype = \"delta\"\npath = \"lake/f\"\n",
    );
    let a = args(&files);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    p.pipe(&a)
        .assert_failed()
        .stderr_has("cannot read a window of its cursor");
    assert!(
        !p.path().join("lake").exists(),
        "a refused job wrote a table"
    );

    // The embedded (SQLite) store, two local workers started by `--workers 2`.
    let mut pg = PgObjects::new();
    let t = unique("wk_local");
    pg.create(
        &format!("CREATE TABLE {t} (id bigint PRIMARY KEY, v text); INSERT INTO {t} SELECT g, 'v' || g FROM generate_series(0, 1999) g"),
        &format!("DROP TABLE IF EXISTS {t}"),
    );
    let f = p.write(
        "local.toml",
        &format!(
            "name = \"local\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntable = \"{t}\"\ncursor = \"id\"\n\
             [destination]\ntype = \"delta\"\npath = \"lake/local\"\n",
            pg_url()
        ),
    );
    let f = f.to_str().unwrap();
    let out = p
        .pipe(&[
            "backfill",
            f,
            "--from",
            "0",
            "--to",
            "2000",
            "--step",
            "100",
            "--workers",
            "2",
            "--json",
        ])
        .assert_ok()
        .json();
    assert_eq!(out["workers_started"], 2, "{out}");
    assert_eq!(out["units"]["done"], 20, "{out}");
    assert_eq!(out["units"]["rows"], 2000, "{out}");
    let (ok, v) = py_in(p.path(), "delta.py", &["read", "lake/local"]);
    assert!(ok, "{v}");
    assert_eq!(v["count"], 2000);
    let text = p.pipe(&["status", f]).assert_ok();
    text.stdout_has("work units: 20/20 done");
}

fn signal(child: &Child, sig: &str) {
    let sent = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {sig}");
}

/// A worker paused (SIGSTOP) in the middle of a unit past its lease: another worker takes the
/// unit and commits it; the paused one, resumed, must not commit the window a second time.
#[test]
fn a_worker_paused_past_its_lease_does_not_commit_its_unit_again() {
    let job = Job::new(Lake::Delta, 6_000, 300, &pg_url(), 2);
    job.register();
    let first = job.worker(0);
    let pid = i64::from(first.id());
    // Stop it while it holds a unit (retry if the stop landed between two units).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "never caught the worker in a unit"
        );
        signal(&first, "-STOP");
        let units = job.status()["units"].clone();
        let holds = units["running_units"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["pid"] == pid);
        if holds {
            break;
        }
        assert!(
            units["pending"].as_i64().unwrap() > 2,
            "the job ran out: {units}"
        );
        signal(&first, "-CONT");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past the 2 s lease, a second worker takes the unit and does the whole job.
    std::thread::sleep(Duration::from_millis(2500));
    let second = wait_all(&job, vec![job.worker(1)]);
    assert!(second[0]["committed"].as_i64().unwrap() > 0, "{second:?}");
    signal(&first, "-CONT");
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", job.logs());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = report["units"].as_array().unwrap().last().unwrap().clone();
    // Lost (its lease renewal found the unit taken), refused at commit (already committed),
    // or — if the stop came after its commit — committed, and then the second worker found
    // it committed: never two commits of one window (assert_exact counts them).
    let status = last["status"].as_str().unwrap();
    assert!(
        ["lost", "already committed", "committed"].contains(&status),
        "the paused worker's unit: {last}"
    );
    job.assert_exact();
}
