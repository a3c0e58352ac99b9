//! The program: spawned in a process group of its own, its input written, its standard error
//! logged and its tail kept, killed (the whole group) when the run stops early.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow_ipc::reader::StreamReader;
use arrow_schema::SchemaRef;
use pipe_framework::{Error, Result};
use tracing::{debug, info};

use crate::config::ExecConfig;

/// The last lines the program wrote to its standard error.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String, keep: usize) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == keep {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, for an error message.
    pub(crate) fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.is_empty() {
            "(nothing on standard error)".to_string()
        } else {
            lines.iter().cloned().collect::<Vec<_>>().join("\n")
        }
    }
}

/// The program's standard output, counting what is read.
pub(crate) struct Counted {
    inner: ChildStdout,
    bytes: Arc<AtomicU64>,
}

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A started program whose stream is being read.
pub(crate) struct Running {
    /// What it is, for messages (`python3 source.py`).
    pub name: String,
    child: Child,
    /// The stream (schema already read).
    pub reader: Option<StreamReader<BufReader<Counted>>>,
    /// Bytes read from the program's standard output.
    pub bytes: Arc<AtomicU64>,
    pub tail: Tail,
    stderr: Option<JoinHandle<()>>,
    /// Where the program writes its new state.
    pub state_out: PathBuf,
    _state_dir: tempfile::TempDir,
    exited: bool,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

/// Kill the process group `pid` leads.
pub(crate) fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH (the group is gone) is what we want anyway.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn failed(name: &str, what: impl std::fmt::Display, tail: &Tail) -> Error {
    Error::user(format!(
        "the exec source `{name}` {what}; its standard error ended with:\n{}",
        tail.text()
    ))
}

impl Running {
    /// Start the program with `input` on its standard input (the stream is not read yet).
    pub(crate) fn spawn(config: &ExecConfig, input: &serde_json::Value) -> Result<Self> {
        let name = config.command.join(" ");
        let (program, args) = config
            .command
            .split_first()
            .ok_or_else(|| Error::user("`command` is empty: name the program to run"))?;
        let state_dir = tempfile::Builder::new()
            .prefix("pipe-exec-")
            .tempdir()
            .map_err(|e| Error::external(format!("creating a temporary directory: {e}")))?;
        let state_out = state_dir.path().join("state.json");
        let mut command = Command::new(program);
        command
            .args(args)
            .env("PIPE_STATE_OUT", &state_out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C reaches pipe, which kills the whole group.
            .process_group(0);
        for (key, value) in &config.env {
            command.env(key, value.expose());
        }
        if let Some(cwd) = &config.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|e| {
            let cwd = config.cwd.as_deref().unwrap_or(Path::new("."));
            Error::user(format!(
                "cannot start the exec source `{name}` (in {}): {e}",
                cwd.display()
            ))
        })?;
        info!(command = %name, pid = child.id(), "exec source started");
        let tail = Tail::default();
        let stderr = child.stderr.take().map(|err| {
            let tail = tail.clone();
            let keep = config.stderr_lines;
            let name = name.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    debug!(source = %name, "{line}");
                    tail.push(line, keep);
                }
            })
        });
        let mut running = Self {
            name,
            reader: None,
            bytes: Arc::new(AtomicU64::new(0)),
            tail,
            stderr,
            state_out,
            _state_dir: state_dir,
            exited: false,
            child,
        };
        running.write_input(input)?;
        Ok(running)
    }

    /// Read the stream's schema message (blocks until the program writes it or ends).
    pub(crate) fn read_schema(&mut self) -> Result<SchemaRef> {
        let stdout = self
            .child
            .stdout
            .take()
            .ok_or_else(|| Error::internal("the program's standard output is not a pipe"))?;
        let counted = Counted {
            inner: stdout,
            bytes: self.bytes.clone(),
        };
        match StreamReader::try_new(BufReader::with_capacity(1 << 20, counted), None) {
            Ok(reader) => {
                let schema = reader.schema();
                self.reader = Some(reader);
                Ok(schema)
            }
            Err(e) => {
                let status = self.wait_briefly();
                Err(self.failure(format!(
                    "did not start an Arrow IPC stream ({e}){}",
                    exit_text(status)
                )))
            }
        }
    }

    /// Write the input from a thread: a program may write its stream before it reads it.
    fn write_input(&mut self, input: &serde_json::Value) -> Result<()> {
        let Some(mut stdin) = self.child.stdin.take() else {
            return Ok(());
        };
        let text = serde_json::to_vec(input)
            .map_err(|e| Error::internal(format!("encoding the program's input: {e}")))?;
        // A program that does not read its input (and exits or closes it) is fine.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&text);
        });
        Ok(())
    }

    /// An error saying what went wrong, with the program's standard error.
    pub(crate) fn failure(&mut self, what: impl std::fmt::Display) -> Error {
        if self.exited {
            self.join_stderr();
        }
        failed(&self.name, what, &self.tail)
    }

    /// Wait for the standard-error reader, which ends when every process holding the pipe
    /// has ended: after 2 s, whatever the program left running is killed with its group.
    fn join_stderr(&mut self) {
        let Some(thread) = self.stderr.take() else {
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if !thread.is_finished() {
            kill_group(self.child.id());
        }
        let _ = thread.join();
    }

    /// Kill the program's group (a broken stream: it may be blocked writing) and reap it.
    pub(crate) fn kill(&mut self) -> Option<ExitStatus> {
        if !self.exited {
            kill_group(self.child.id());
        }
        self.wait().ok()
    }

    fn wait_briefly(&mut self) -> Option<ExitStatus> {
        for _ in 0..50 {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = true;
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// Wait for the program to exit after its stream ended.
    pub(crate) fn wait(&mut self) -> Result<ExitStatus> {
        let status = self
            .child
            .wait()
            .map_err(|e| Error::external(format!("waiting for `{}`: {e}", self.name)))?;
        self.exited = true;
        self.join_stderr();
        Ok(status)
    }

    /// The process group id (the program's pid).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `, exit code 3` / `, killed by signal 9`, or nothing while it runs.
pub(crate) fn exit_text(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => String::new(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!(", exit code {code}"),
            (None, Some(signal)) => format!(", killed by signal {signal}"),
            _ => String::new(),
        },
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.exited {
            kill_group(self.child.id());
            let _ = self.child.wait();
        }
    }
}
