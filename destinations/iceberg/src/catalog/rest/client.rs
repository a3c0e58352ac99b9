//! HTTP to an Iceberg REST catalog: one shared `reqwest` client, the spec's `/v1/config`
//! handshake, the auth header on every call, and the spec's error body turned into an error
//! that names what failed and never a credential.

use std::collections::HashMap;
use std::time::Duration;

use iceberg::{NamespaceIdent, TableIdent};
use iceberg_catalog_rest::ErrorModel;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::auth::Auth;
use crate::config::RestCatalogConfig;
use crate::error::{IcebergError, Result};

/// Characters escaped in one path segment (a namespace or table name).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'\\')
    .add(b'^');

/// The spec's error body, `{"error": {"message", "type", "code"}}` (iceberg-catalog-rest's
/// `ErrorResponse` keeps its field private).
#[derive(Debug, serde::Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    /// The error.
    pub error: ErrorModel,
}

/// `GET /v1/config`'s answer.
#[derive(Debug, Default, Deserialize)]
struct ConfigResponse {
    #[serde(default)]
    defaults: HashMap<String, String>,
    #[serde(default)]
    overrides: HashMap<String, String>,
}

/// An answer that is not a success: the status and the catalog's explanation.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// `type: message`, or the start of the body.
    pub message: String,
}

/// What one call came back with.
#[derive(Debug)]
pub(crate) enum Answer<T> {
    /// A success, its body parsed.
    Ok(T),
    /// The catalog said no.
    Refused(Refusal),
}

/// A call that got no answer.
#[derive(Debug)]
pub(crate) struct Failed {
    /// What went wrong.
    pub error: reqwest::Error,
    /// Whether the request may have reached the catalog (false: the token could not be
    /// fetched, or no connection was made).
    pub sent: bool,
}

/// A connected REST catalog: base URL, the resolved prefix, auth and extra headers.
pub(crate) struct RestClient {
    http: reqwest::Client,
    base: String,
    prefix: Option<String>,
    auth: Auth,
    headers: HeaderMap,
    /// The catalog's merged configuration (defaults, then the client's, then overrides).
    pub properties: HashMap<String, String>,
}

impl std::fmt::Debug for RestClient {
    /// The catalog and the names of its settings only: the values may hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.properties.keys().collect();
        keys.sort();
        f.debug_struct("RestClient")
            .field("catalog", &self.describe())
            .field("prefix", &self.prefix)
            .field("properties", &keys)
            .finish_non_exhaustive()
    }
}

/// The base URL without a trailing slash or `/v1`, for messages and calls.
fn base_url(uri: &str) -> String {
    uri.trim_end_matches('/')
        .trim_end_matches("/v1")
        .trim_end_matches('/')
        .to_string()
}

/// One path segment, escaped.
pub(crate) fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// A namespace as one path segment (levels joined by the unit separator, as the spec says).
pub(crate) fn namespace_segment(ns: &NamespaceIdent) -> String {
    segment(&ns.join("\u{1f}"))
}

impl RestClient {
    /// Connect: build the HTTP client, fetch a token if `config` has a credential, and read
    /// `/v1/config`. `nessie_branch`: the Nessie flavour's branch, which makes the prefix.
    pub(crate) async fn connect(
        config: &RestCatalogConfig,
        nessie_branch: Option<&str>,
    ) -> Result<Self> {
        let base = base_url(&config.uri);
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(IcebergError::Config(format!(
                "catalog uri `{}`: expected http://host:port or https://host:port",
                pipe_framework::secret::redact(&base)
            )));
        }
        let http = reqwest::Client::builder()
            // A redirected commit POST would come back as a GET of the table and read as a
            // success: a catalog that redirects is refused instead.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(15)))
            .build()
            .map_err(|e| IcebergError::Internal(format!("building the HTTP client: {e}")))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                IcebergError::Config(format!("catalog header `{name}`: not a valid header name"))
            })?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                IcebergError::Config(format!("catalog header `{name}`: not a valid value"))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let auth = Auth::new(config, &base)?;
        let mut client = Self {
            http,
            base,
            prefix: None,
            auth,
            headers,
            properties: HashMap::new(),
        };
        let mut query = Vec::new();
        if let Some(w) = &config.warehouse {
            query.push(("warehouse", w.as_str()));
        }
        let answer: Answer<ConfigResponse> = client
            .call(Method::GET, "/v1/config", &query, None::<&()>)
            .await
            .map_err(|e| client.unreachable(e))?;
        let response = match answer {
            Answer::Ok(r) => r,
            Answer::Refused(r) => return Err(client.refused("reading the catalog's /v1/config", r)),
        };
        // The spec's order: the server's defaults, then the client's own settings, then the
        // server's overrides.
        let mut properties = response.defaults;
        if let Some(w) = &config.warehouse {
            properties.insert("warehouse".into(), w.clone());
        }
        if let Some(p) = &config.prefix {
            properties.insert("prefix".into(), p.clone());
        }
        properties.extend(response.overrides);
        client.prefix = match nessie_branch {
            // Nessie: the branch is the prefix, with the warehouse after a `|`.
            Some(branch) => Some(match &config.warehouse {
                Some(w) => format!("{branch}|{w}"),
                None => branch.to_string(),
            }),
            None => properties.get("prefix").cloned().filter(|p| !p.is_empty()),
        };
        client.properties = properties;
        Ok(client)
    }

    /// The catalog, for messages.
    pub(crate) fn describe(&self) -> String {
        pipe_framework::secret::redact(&self.base).into_owned()
    }

    /// The prefix every call after `/v1/config` is made under (if any).
    pub(crate) fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// `/v1/{prefix}/...` for `rest` (which starts with `/`).
    pub(crate) fn path(&self, rest: &str) -> String {
        match &self.prefix {
            // verbatim but escaped part by part: `catalogs/abc` stays two segments
            Some(p) => format!(
                "/v1/{}{rest}",
                p.split('/').map(segment).collect::<Vec<_>>().join("/")
            ),
            None => format!("/v1{rest}"),
        }
    }

    /// The path of a table.
    pub(crate) fn table_path(&self, table: &TableIdent) -> String {
        self.path(&format!(
            "/namespaces/{}/tables/{}",
            namespace_segment(table.namespace()),
            segment(table.name())
        ))
    }

    /// One call: `Ok(Answer::Refused)` when the catalog answered with an error status,
    /// `Err` when it could not be reached or its answer could not be read. A `401` with an
    /// OAuth2 credential renews the token and tries once more.
    pub(crate) async fn call<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> std::result::Result<Answer<T>, Failed> {
        let unsent = |error| Failed { error, sent: false };
        let mut renewed = false;
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .headers(self.headers.clone())
                .header("X-Iceberg-Access-Delegation", "vended-credentials")
                .query(query);
            if let Some(token) = self.auth.bearer(&self.http).await.map_err(unsent)? {
                // (a token that is no header value was refused when the settings were read;
                // one a token endpoint sent is sent without it, and the catalog says 401)
                if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                {
                    value.set_sensitive(true);
                    request = request.header(reqwest::header::AUTHORIZATION, value);
                }
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            tracing::debug!(%method, path, "REST catalog call");
            let response = request.send().await.map_err(|error| Failed {
                sent: !(error.is_connect() || error.is_builder()),
                error,
            })?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !renewed && self.auth.renewable() {
                self.auth.forget().await;
                renewed = true;
                continue;
            }
            if status.is_success() {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|error| Failed { error, sent: true })?;
                // A `204 No Content` (or an empty body) reads as `null`.
                let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
                return match serde_json::from_slice(text) {
                    Ok(v) => Ok(Answer::Ok(v)),
                    Err(e) => Ok(Answer::Refused(Refusal {
                        status,
                        message: format!("the catalog's answer could not be read: {e}"),
                    })),
                };
            }
            let bytes = response.bytes().await.unwrap_or_default();
            return Ok(Answer::Refused(refusal(status, &bytes)));
        }
    }

    /// The error for a refused call.
    pub(crate) fn refused(&self, what: &str, r: Refusal) -> IcebergError {
        let hint = match r.status {
            StatusCode::UNAUTHORIZED => {
                "; the catalog wants a valid `token` or `credential` in the catalog settings"
            }
            StatusCode::FORBIDDEN => "; the token or credential lacks the permission",
            _ => "",
        };
        IcebergError::Rest {
            what: format!("{what} (REST catalog {})", self.describe()),
            status: Some(r.status.as_u16()),
            message: format!("HTTP {}: {}{hint}", r.status.as_u16(), r.message),
        }
    }

    /// The error for a call that got no answer.
    pub(crate) fn unreachable(&self, f: Failed) -> IcebergError {
        let e = f.error;
        // Only the OAuth2 token request turns a status into an error.
        let (what, hint) = match e.status() {
            Some(s) if s.is_client_error() => (
                "fetching an OAuth2 token for the REST catalog",
                "; the token endpoint refused the `credential` (client_id:client_secret)",
            ),
            Some(_) => ("fetching an OAuth2 token for the REST catalog", ""),
            None => ("calling the REST catalog", ""),
        };
        IcebergError::Rest {
            what: format!("{what} {}", self.describe()),
            status: e.status().map(|s| s.as_u16()),
            message: format!("{}{hint}", describe_http_error(&e)),
        }
    }
}

/// A network error in words, with its causes, never with a credential.
pub(crate) fn describe_http_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    pipe_framework::secret::redact(&text).into_owned()
}

/// The spec's error body (`{"error": {"message", "type", "code"}}`), or the start of any other.
fn refusal(status: StatusCode, body: &[u8]) -> Refusal {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        let e = parsed.error;
        return Refusal {
            status,
            message: format!("{}: {}", e.r#type, e.message),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(300).collect();
    Refusal {
        status,
        message: if text.trim().is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text.trim().to_string()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_one_escaped_segment() {
        let ns = NamespaceIdent::from_strs(["a", "b c"]).expect("ns");
        assert_eq!(namespace_segment(&ns), "a%1Fb%20c");
        assert_eq!(segment("main|wh"), "main%7Cwh");
        assert_eq!(base_url("http://h:1/v1/"), "http://h:1");
    }

    #[test]
    fn the_spec_error_body_is_read() {
        let body = br#"{"error":{"message":"Table does not exist: ns.t","type":"NoSuchTableException","code":404}}"#;
        let r = refusal(StatusCode::NOT_FOUND, body);
        assert_eq!(
            r.message,
            "NoSuchTableException: Table does not exist: ns.t"
        );
        let r = refusal(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(r.message, "Bad Gateway");
    }
}
