//! A test server process (an object store emulator) on a free local port, killed when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running server.
pub struct Server {
    child: Child,
    log: tempfile::NamedTempFile,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// Run `program` with `args(port)` for a free port and wait until it accepts connections.
    /// Its output goes to a log, shown if it does not start.
    pub fn start(program: &Path, args: impl FnOnce(u16) -> Vec<String>) -> Self {
        Self::start_in(program, Path::new("."), &[], args)
    }

    /// Like [`Server::start`], in directory `cwd` with extra environment variables.
    pub fn start_in(
        program: &Path,
        cwd: &Path,
        env: &[(&str, &str)],
        args: impl FnOnce(u16) -> Vec<String>,
    ) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let child = Command::new(program)
            .current_dir(cwd)
            .envs(env.iter().copied())
            .args(args(port))
            .stdout(log.reopen().expect("the log file"))
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", program.display()));
        let mut server = Self { child, log, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Ours must be the process listening (not one a parallel test started there).
            let exited = server.child.try_wait().expect("the server's status");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{} did not serve on port {port} ({exited:?}); its log:\n{}",
                program.display(),
                server.log()
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

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Stop it at once (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
