//! A local S3-compatible server for the object-store tests: moto's standalone server
//! (`moto_server`, installed into the test venv from tests/requirements.txt) on a free port,
//! holding one bucket; stopped when dropped. It speaks the S3 REST API over HTTP, including
//! the conditional `PUT` (`If-None-Match: *`) Delta commits rely on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::python;

/// The bucket every server holds.
pub const BUCKET: &str = "lake";

/// A running S3 server.
pub struct S3 {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl S3 {
    /// Start a server with an empty bucket [`BUCKET`].
    pub fn start() -> Self {
        let server = python().with_file_name("moto_server");
        assert!(
            server.exists(),
            "{} is missing: the object-store tests run moto's S3 server from the test venv. \
             Install it with `make venv` (or `bash .ci/run`), which installs \
             tests/requirements.txt.",
            server.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .expect("moto_server starts");
        let mut s3 = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Ours must be the server listening (not one a parallel test started there).
            let exited = s3.child.try_wait().expect("moto_server's status");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "moto_server did not serve on port {port} ({exited:?}); its log:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let made = Command::new(python())
            .args([
                "-c",
                "import boto3, os, sys; boto3.client('s3', endpoint_url=sys.argv[1]).create_bucket(Bucket=sys.argv[2])",
                &s3.endpoint,
                BUCKET,
            ])
            .envs(s3.env())
            .output()
            .expect("python runs");
        assert!(
            made.status.success(),
            "creating bucket {BUCKET}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        s3
    }

    /// The environment a client of this server needs (the standard `AWS_*` variables).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "pipe-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "pipe-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Keys under `prefix` in the bucket, listed by python boto3.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new(python())
            .args([
                "-c",
                "import boto3, sys\n\
                 s3 = boto3.client('s3', endpoint_url=sys.argv[1])\n\
                 for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):\n\
                 \x20   for o in page.get('Contents', []): print(o['Key'])",
                &self.endpoint,
                BUCKET,
                prefix,
            ])
            .envs(self.env())
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "listing {prefix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
