//! A local S3-compatible server for the object-store tests: moto's standalone server
//! (`moto_server`, installed into the test venv from tests/requirements.txt) on a free port,
//! holding one bucket; stopped when dropped. It speaks the S3 REST API over HTTP, including
//! the conditional `PUT` (`If-None-Match: *`) Delta commits rely on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test

use std::process::Command;

use super::python;
use super::server::Server;

/// The bucket every server holds.
pub const BUCKET: &str = "lake";

/// A running S3 server.
pub struct S3 {
    server: Server,
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
        let s3 = Self {
            server: Server::start(&server, |port| {
                vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ]
            }),
        };
        let endpoint = s3.server.endpoint();
        let made = Command::new(python())
            .args([
                "-c",
                "import boto3, os, sys; boto3.client('s3', endpoint_url=sys.argv[1]).create_bucket(Bucket=sys.argv[2])",
                &endpoint,
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
            ("AWS_ENDPOINT_URL", self.server.endpoint()),
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
                &self.server.endpoint(),
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
