//! Object stores from URLs: one place that turns `s3://bucket/…`, `gs://…`, `az://…` /
//! `abfss://…`, `http(s)://…` and `file://…` into an [`ObjectStore`], configured from the
//! standard environment variables and per-connector options.
//!
//! Options may use Iceberg's FileIO names (`s3.endpoint`, `s3.region`, `s3.access-key-id`,
//! `s3.secret-access-key`, `s3.session-token`, `s3.path-style-access`, `adls.account-name`,
//! `adls.account-key`, `gcs.service-account` …) or object_store's own keys (`aws_endpoint`,
//! `AWS_REGION`, `google_service_account`, `azure_storage_account_name`, …). Unknown keys are
//! an error naming the key, so a typo never silently falls back to the environment.
//!
//! Calls are bounded: a connection must open within 5 s and a failing request is retried at
//! most 3 times within 20 s, so an unreachable endpoint fails in bounded time instead of
//! object_store's default three minutes of retries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use url::Url;

/// Why a store could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL's scheme names no supported store.
    #[error(
        "unsupported URL scheme `{0}://`; use a local path or s3://, gs://, az://, abfss://, \
         file://, http(s)://"
    )]
    Scheme(String),
    /// An option key or value the store does not know.
    #[error("storage option `{key}`: {message}")]
    Option {
        /// The key as given.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// object_store refused the configuration (e.g. a bucket missing from the URL).
    #[error("{url}: {source}")]
    Build {
        /// The URL, redacted.
        url: String,
        /// object_store's error.
        #[source]
        source: object_store::Error,
    },
}

/// Iceberg FileIO property names → object_store's keys.
fn iceberg_alias(key: &str) -> Option<&'static str> {
    Some(match key {
        "s3.endpoint" => "aws_endpoint",
        "s3.region" | "client.region" => "aws_region",
        "s3.access-key-id" => "aws_access_key_id",
        "s3.secret-access-key" => "aws_secret_access_key",
        "s3.session-token" => "aws_session_token",
        "adls.account-name" => "azure_storage_account_name",
        "adls.account-key" => "azure_storage_account_key",
        "adls.sas-token" => "azure_storage_sas_key",
        "gcs.service-account" | "gcs.credentials-json" => "google_service_account_key",
        "gcs.oauth2.token" => "google_bearer_token",
        _ => return None,
    })
}

fn bad(key: &str, message: impl Into<String>) -> StoreError {
    StoreError::Option {
        key: key.to_string(),
        message: message.into(),
    }
}

/// Client settings every store gets: bounded connects and retries.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
}

fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
        ..RetryConfig::default()
    }
}

/// Parse every option as a key of one store's configuration (Iceberg's names translated) and
/// hand it to `set`.
fn each_option<K: std::str::FromStr>(
    options: &BTreeMap<String, String>,
    what: &str,
    mut set: impl FnMut(K, &str),
) -> Result<(), StoreError> {
    for (key, value) in options {
        let name = iceberg_alias(key).unwrap_or(key);
        let parsed = name
            .to_ascii_lowercase()
            .parse::<K>()
            .map_err(|_| bad(key, format!("not {what} setting")))?;
        set(parsed, value);
    }
    Ok(())
}

/// The store holding `url` (only its scheme and authority matter: one store per bucket).
pub fn for_url(
    url: &Url,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let build_err = |source| StoreError::Build {
        url: crate::secret::redact(&format!("{}://{}", url.scheme(), url.authority())).into_owned(),
        source,
    };
    let root = format!("{}://{}", url.scheme(), url.authority());
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env()
                .with_url(root)
                .with_client_options(client_options())
                .with_retry(retry());
            let mut rest = options.clone();
            if let Some(value) = rest.remove("s3.path-style-access") {
                let path_style = value
                    .parse::<bool>()
                    .map_err(|_| bad("s3.path-style-access", "not true/false"))?;
                b = b.with_virtual_hosted_style_request(!path_style);
            }
            each_option(&rest, "an S3", |key: AmazonS3ConfigKey, value| {
                b = std::mem::take(&mut b).with_config(key, value);
            })?;
            // A plain-HTTP endpoint (a local S3 server) needs HTTP allowed.
            if b.get_config_value(&AmazonS3ConfigKey::Endpoint)
                .is_some_and(|e| e.starts_with("http://"))
            {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build().map_err(build_err)?)
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(root)
                .with_client_options(client_options())
                .with_retry(retry());
            each_option(
                options,
                "a Google Cloud Storage",
                |key: GoogleConfigKey, value| {
                    b = std::mem::take(&mut b).with_config(key, value);
                },
            )?;
            Arc::new(b.build().map_err(build_err)?)
        }
        "az" | "azure" | "abfs" | "abfss" | "adl" => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(root)
                .with_client_options(client_options())
                .with_retry(retry());
            each_option(options, "an Azure storage", |key: AzureConfigKey, value| {
                b = std::mem::take(&mut b).with_config(key, value);
            })?;
            Arc::new(b.build().map_err(build_err)?)
        }
        "http" | "https" => Arc::new(
            object_store::http::HttpBuilder::new()
                .with_url(root)
                .with_client_options(client_options())
                .with_retry(retry())
                .build()
                .map_err(build_err)?,
        ),
        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
        other => return Err(StoreError::Scheme(other.to_string())),
    };
    Ok(store)
}

/// The object path `url` names inside its store (percent-decoded, no leading `/`; the bucket
/// or container is the URL's authority).
pub fn object_path(url: &Url) -> String {
    percent_encoding::percent_decode_str(url.path().trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn iceberg_and_object_store_names_are_accepted() -> Result<(), StoreError> {
        let url = Url::parse("s3://bucket/warehouse").map_err(|e| bad("url", e.to_string()))?;
        for_url(
            &url,
            &opts(&[
                ("s3.endpoint", "http://127.0.0.1:9"),
                ("s3.region", "eu-west-1"),
                ("s3.access-key-id", "k"),
                ("s3.secret-access-key", "s"),
                ("s3.path-style-access", "true"),
                ("AWS_SESSION_TOKEN", "t"),
            ]),
        )?;
        Ok(())
    }

    #[test]
    fn an_unknown_option_is_named() {
        let url = Url::parse("s3://bucket/w").ok();
        let err = url
            .map(|u| for_url(&u, &opts(&[("s3.endpiont", "x")])))
            .and_then(Result::err)
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("storage option `s3.endpiont`: not an S3 setting")
        );
    }

    #[test]
    fn object_paths_are_decoded_and_relative() {
        let path = |u: &str| Url::parse(u).map(|u| object_path(&u)).ok();
        assert_eq!(
            path("s3://b/w/a%20b.parquet").as_deref(),
            Some("w/a b.parquet")
        );
        assert_eq!(path("az://container/w/x").as_deref(), Some("w/x"));
        assert_eq!(
            path("abfss://c@acct.dfs.core.windows.net/w/x").as_deref(),
            Some("w/x")
        );
    }
}
