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
    /// The access key clients use.
    key: String,
    /// Its secret.
    secret: String,
}

/// Makes the bucket; with auth on, also an IAM user allowed everything on S3, and prints its
/// access key as JSON.
const SETUP: &str = "import boto3, json, sys
endpoint, bucket, auth = sys.argv[1], sys.argv[2], sys.argv[3] == 'auth'
boto3.client('s3', endpoint_url=endpoint).create_bucket(Bucket=bucket)
key = {'id': 'pipe-test', 'secret': 'pipe-test-secret'}
if auth:
    iam = boto3.client('iam', endpoint_url=endpoint, region_name='us-east-1')
    iam.create_user(UserName='pipe')
    iam.put_user_policy(UserName='pipe', PolicyName='s3', PolicyDocument=json.dumps({
        'Version': '2012-10-17',
        'Statement': [{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}]}))
    made = iam.create_access_key(UserName='pipe')['AccessKey']
    key = {'id': made['AccessKeyId'], 'secret': made['SecretAccessKey']}
print(json.dumps(key))";

impl S3 {
    /// Start a server with an empty bucket [`BUCKET`], accepting any credentials.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Like [`S3::start`], but checking credentials and signatures as AWS does (moto's IAM
    /// authentication): only [`S3::env`]'s key is let in.
    pub fn start_authenticated() -> Self {
        Self::launch(true)
    }

    fn launch(auth: bool) -> Self {
        let server = python().with_file_name("moto_server");
        assert!(
            server.exists(),
            "{} is missing: the object-store tests run moto's S3 server from the test venv. \
             Install it with `make venv` (or `bash .ci/run`), which installs \
             tests/requirements.txt.",
            server.display()
        );
        // With auth, the first 4 calls (the setup's) go unchecked, every later one is checked.
        let env: &[(&str, &str)] = if auth {
            &[("INITIAL_NO_AUTH_ACTION_COUNT", "4")]
        } else {
            &[]
        };
        let mut s3 = Self {
            server: Server::start_in(&server, std::path::Path::new("."), env, |port| {
                vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ]
            }),
            key: "pipe-test".into(),
            secret: "pipe-test-secret".into(),
        };
        let made = Command::new(python())
            .args([
                "-c",
                SETUP,
                &s3.server.endpoint(),
                BUCKET,
                if auth { "auth" } else { "open" },
            ])
            .envs(s3.env())
            .output()
            .expect("python runs");
        assert!(
            made.status.success(),
            "creating bucket {BUCKET}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let key: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
        s3.key = key["id"].as_str().unwrap().to_string();
        s3.secret = key["secret"].as_str().unwrap().to_string();
        s3
    }

    /// The environment a client of this server needs (the standard `AWS_*` variables).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.server.endpoint()),
            ("AWS_ACCESS_KEY_ID", self.key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The `storage_options` of an Iceberg destination on this server (Iceberg FileIO names).
    pub fn storage_toml(&self) -> String {
        format!(
            "storage_options = {{ \"s3.endpoint\" = \"{}\", \"s3.access-key-id\" = \"{}\", \
             \"s3.secret-access-key\" = \"{}\", \"s3.region\" = \"us-east-1\" }}",
            self.server.endpoint(),
            self.key,
            self.secret
        )
    }

    /// The same settings as pyiceberg catalog properties.
    pub fn pyiceberg_props(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut props = serde_json::Map::new();
        for (k, v) in [
            ("s3.endpoint", self.server.endpoint()),
            ("s3.access-key-id", self.key.clone()),
            ("s3.secret-access-key", self.secret.clone()),
            ("s3.region", "us-east-1".into()),
        ] {
            props.insert(k.into(), v.into());
        }
        props
    }

    /// Keys under `prefix` in the bucket, listed by python boto3.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.sizes(prefix).into_iter().map(|(k, _)| k).collect()
    }

    /// Keys under `prefix` with their sizes in bytes, listed by python boto3.
    pub fn sizes(&self, prefix: &str) -> Vec<(String, u64)> {
        let out = Command::new(python())
            .args([
                "-c",
                "import boto3, sys\n\
                 s3 = boto3.client('s3', endpoint_url=sys.argv[1])\n\
                 for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):\n\
                 \x20   for o in page.get('Contents', []): print(o['Size'], o['Key'])",
                &self.server.endpoint(),
                BUCKET,
                prefix,
            ])
            .envs(self.env())
            .output()
            .expect("python runs");
        super::sized_listing(&out, prefix)
    }
}
