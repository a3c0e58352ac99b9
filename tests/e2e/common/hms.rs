//! The real Hive Metastore the tests share: Hive 2.3.9 with embedded Derby, started on first
//! use by `tests/hms/start-hms.sh` (Java 17; the jars come from PyPI's pyspark sdist) on a
//! free loopback port, and reused by every later test until `tests/hms/stop-test-hms.sh`
//! (which `make test` runs at the end). Tests keep apart by using databases of their own.
//! `PIPE_HMS_URI=thrift://host:port` points the tests at a metastore started elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::root;

/// The state directory of the shared metastore.
fn dir() -> PathBuf {
    std::env::var_os("PIPE_HMS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/pipe-test-hms"))
}

fn serving(port: &str) -> bool {
    port.trim()
        .parse::<u16>()
        .is_ok_and(|p| TcpStream::connect(("127.0.0.1", p)).is_ok())
}

/// One starter at a time across the test processes: a file created exclusively, removed when
/// dropped (one older than the longest start, left by a killed test, is taken over).
struct StarterLock(PathBuf);

impl StarterLock {
    fn take(path: PathBuf) -> Self {
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Self(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(180));
                    if stale {
                        let _ = std::fs::remove_file(&path);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
    }
}

impl Drop for StarterLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `thrift://127.0.0.1:<port>` of the shared metastore, started if it is not running.
pub fn uri() -> String {
    if let Ok(uri) = std::env::var("PIPE_HMS_URI") {
        return uri;
    }
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let _starter = StarterLock::take(dir.join(".lock"));
    let port_file = dir.join("port");
    if let Ok(port) = std::fs::read_to_string(&port_file)
        && serving(&port)
    {
        return format!("thrift://127.0.0.1:{}", port.trim());
    }
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let out = Command::new("bash")
        .arg(root().join("tests/hms/start-hms.sh"))
        .arg(&state)
        .arg(port.to_string())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the test Hive Metastore did not start. It needs Java 17 (`javac`, Debian package \
         openjdk-17-jdk-headless) and the Hive jars tests/hms/fetch-jars.sh downloads from PyPI \
         (`make hms-jars`; `bash .ci/run` does both). Or point PIPE_HMS_URI at a running \
         metastore. Output:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::write(dir.join("pid"), pid).unwrap();
    std::fs::write(&port_file, port.to_string()).unwrap();
    format!("thrift://127.0.0.1:{port}")
}
