//! A test server process (an object store emulator) on a free local port, killed when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running server.
pub struct Server {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// Run `program` with `args(port)` for a free port and wait until it accepts connections.
    /// Its output goes to a log, shown if it does not start.
    pub fn start(program: &Path, args: impl FnOnce(u16) -> Vec<String>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let child = Command::new(program)
            .args(args(port))
            .stdout(log.reopen().expect("the log file"))
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", program.display()));
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Ours must be the process listening (not one a parallel test started there).
            let exited = server.child.try_wait().expect("the server's status");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{} did not serve on port {port} ({exited:?}); its log:\n{}",
                program.display(),
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
