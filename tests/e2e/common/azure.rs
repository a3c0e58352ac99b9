//! A local Azure Blob Storage for the object-store tests: Azurite, Microsoft's emulator
//! (`make node-tools` installs it; `PIPE_AZURITE` names its `azurite-blob`), in memory on a
//! free port, holding one container; stopped when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::python;

/// The container every emulator holds.
pub const CONTAINER: &str = "lake";

/// Azurite's well-known development account key (public, in Azure's documentation).
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running emulator.
pub struct Azurite {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Azurite {
    /// Start an emulator with an empty container [`CONTAINER`].
    pub fn start() -> Self {
        let server = std::env::var_os("PIPE_AZURITE").map_or_else(
            || PathBuf::from("/var/tmp/pipe-node/node_modules/.bin/azurite-blob"),
            PathBuf::from,
        );
        assert!(
            server.exists(),
            "{} is missing: the az:// tests run Azurite, Azure Blob Storage's emulator. \
             Install it with `make node-tools` (or `bash .ci/run`), or point PIPE_AZURITE at \
             an azurite-blob.",
            server.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let child = Command::new(&server)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args([
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ])
            .stdout(log.reopen().expect("the log file"))
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .expect("azurite-blob starts");
        let mut azurite = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let exited = azurite.child.try_wait().expect("azurite's status");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "azurite-blob did not serve on port {port} ({exited:?}); its log:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let connection = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};\
             BlobEndpoint={}/devstoreaccount1;",
            azurite.endpoint
        );
        let made = Command::new(python())
            .args([
                "-c",
                "import sys; from azure.storage.blob import BlobServiceClient; \
                 BlobServiceClient.from_connection_string(sys.argv[1]).create_container(sys.argv[2])",
                &connection,
                CONTAINER,
            ])
            .output()
            .expect("python runs");
        assert!(
            made.status.success(),
            "creating container {CONTAINER}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        azurite
    }

    /// The environment a client of this emulator needs (object_store's emulator variables).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint.clone()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
