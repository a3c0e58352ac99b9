//! A local Azure Blob Storage for the object-store tests: Azurite, Microsoft's emulator
//! (`make node-tools` installs it; `PIPE_AZURITE` names its `azurite-blob`), in memory on a
//! free port, holding one container; stopped when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::path::PathBuf;
use std::process::Command;

use super::python;
use super::server::Server;

/// The container every emulator holds.
pub const CONTAINER: &str = "lake";

/// Azurite's well-known development account key (public, in Azure's documentation).
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running emulator.
pub struct Azurite {
    server: Server,
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
        let azurite = Self {
            server: Server::start(&server, |port| {
                let mut args: Vec<String> = vec!["--blobHost".into(), "127.0.0.1".into()];
                args.extend(["--blobPort".into(), port.to_string()]);
                args.extend(
                    [
                        "--inMemoryPersistence",
                        "--disableTelemetry",
                        "--skipApiVersionCheck",
                    ]
                    .map(String::from),
                );
                args
            }),
        };
        let connection = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};\
             BlobEndpoint={}/devstoreaccount1;",
            azurite.server.endpoint()
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
            ("AZURITE_BLOB_STORAGE_URL", self.server.endpoint()),
        ]
    }

    /// The `storage_options` of an Iceberg destination on this emulator (Iceberg's `adls.*`
    /// names, the emulator's account, its endpoint).
    pub fn storage_toml(&self) -> String {
        format!(
            "storage_options = {{ \"adls.account-name\" = \"devstoreaccount1\", \
             \"adls.account-key\" = \"{KEY}\", \
             \"azure_storage_endpoint\" = \"{}/devstoreaccount1\", \"allow_http\" = \"true\" }}",
            self.server.endpoint()
        )
    }

    /// The same as pyiceberg catalog properties (its pyarrow file IO: fsspec's would need
    /// adlfs).
    pub fn pyiceberg_props(&self) -> serde_json::Map<String, serde_json::Value> {
        let authority = format!("127.0.0.1:{}", self.server.port);
        let mut props = serde_json::Map::new();
        for (k, v) in [
            (
                "py-io-impl",
                "pyiceberg.io.pyarrow.PyArrowFileIO".to_string(),
            ),
            ("adls.account-name", "devstoreaccount1".into()),
            ("adls.account-key", KEY.into()),
            ("adls.blob-storage-authority", authority.clone()),
            ("adls.dfs-storage-authority", authority),
            ("adls.blob-storage-scheme", "http".into()),
            ("adls.dfs-storage-scheme", "http".into()),
        ] {
            props.insert(k.into(), v.into());
        }
        props
    }

    /// Blobs under `prefix` in [`CONTAINER`] with their sizes, listed by python's Azure SDK.
    pub fn sizes(&self, prefix: &str) -> Vec<(String, u64)> {
        let connection = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};\
             BlobEndpoint={}/devstoreaccount1;",
            self.server.endpoint()
        );
        let out = Command::new(python())
            .args([
                "-c",
                "import sys; from azure.storage.blob import BlobServiceClient\n\
                 c = BlobServiceClient.from_connection_string(sys.argv[1]).get_container_client(sys.argv[2])\n\
                 for b in c.list_blobs(name_starts_with=sys.argv[3]): print(b.size, b.name)",
                &connection,
                CONTAINER,
                prefix,
            ])
            .output()
            .expect("python runs");
        super::sized_listing(&out, prefix)
    }
}
