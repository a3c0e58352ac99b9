//! Requests: authentication (OAuth2 tokens refreshed), rate limit, retries with backoff and
//! jitter honouring `Retry-After`, and URLs with their secrets redacted for messages.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, LINK, RETRY_AFTER};
use reqwest::{Certificate, StatusCode};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use url::Url;

use crate::config::{Auth, HttpConfig, KeyLocation, Method};
use crate::error::HttpError;

/// The longest wait between retries (a `Retry-After` may ask for more, up to 5 minutes).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Bytes of an error response shown to the user.
const HEAD_BYTES: usize = 300;

/// A fetched page.
#[derive(Debug)]
pub(crate) struct Response {
    /// The URL answered (after redirects).
    pub url: Url,
    /// The `rel="next"` target of the `Link` header, if any.
    pub link_next: Option<String>,
    /// The body.
    pub body: Bytes,
}

struct Token {
    value: String,
    expires: Instant,
}

/// The HTTP client of one source.
pub(crate) struct Client {
    http: reqwest::Client,
    method: Method,
    auth: Option<Auth>,
    headers: HeaderMap,
    token: Mutex<Option<Token>>,
    next_slot: Option<(Duration, Mutex<Instant>)>,
    retries: u32,
    backoff: Duration,
    /// Query parameters whose values are secret (an API key in the query).
    secret_params: Vec<String>,
    /// Every configured secret value, replaced by `***` in messages.
    secrets: Vec<String>,
    /// Credentials and headers go only to this origin (the configured URL's).
    origin: Option<url::Origin>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

fn config_error(what: impl std::fmt::Display) -> HttpError {
    HttpError::Config(what.to_string())
}

impl Client {
    pub(crate) fn new(config: &HttpConfig) -> Result<Self, HttpError> {
        let mut builder = reqwest::Client::builder()
            // A redirect to another origin would carry the credentials there: refused (the
            // 3xx then fails the run, naming where it pointed).
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if same && attempt.previous().len() < 10 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(30)))
            .user_agent(concat!("pipe/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| config_error(format!("ca_file {}: {e}", path.display())))?;
            for cert in Certificate::from_pem_bundle(&pem)
                .map_err(|e| config_error(format!("ca_file {}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| config_error(e.without_url()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config_error(format!("headers: `{name}` is not a header name")))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| config_error(format!("headers: the value of `{name}` is invalid")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let secret_params = match &config.auth {
            Some(Auth::ApiKey {
                name,
                location: KeyLocation::Query,
                ..
            }) => vec![name.clone()],
            _ => Vec::new(),
        };
        let next_slot = match config.requests_per_second {
            Some(rate) if (0.001..=1_000_000.0).contains(&rate) => Some((
                Duration::from_secs_f64(1.0 / rate),
                Mutex::new(Instant::now()),
            )),
            Some(_) => {
                return Err(config_error(
                    "requests_per_second must be between 0.001 and 1000000",
                ));
            }
            None => None,
        };
        let mut secrets: Vec<String> = config
            .headers
            .values()
            .map(|v| v.expose().to_string())
            .collect();
        match &config.auth {
            Some(Auth::Bearer { token }) => secrets.push(token.expose().to_string()),
            Some(Auth::Basic { password, .. }) => secrets.push(password.expose().to_string()),
            Some(Auth::ApiKey { value, .. }) => secrets.push(value.expose().to_string()),
            Some(Auth::OAuth2 { client_secret, .. }) => {
                secrets.push(client_secret.expose().to_string());
            }
            None => {}
        }
        secrets.retain(|s| s.len() >= 4);
        let origin = Url::parse(&config.url.replace(['{', '}'], ""))
            .ok()
            .map(|u| u.origin());
        Ok(Self {
            secrets,
            origin,
            http,
            method: config.method,
            auth: config.auth.clone(),
            headers,
            token: Mutex::new(None),
            next_slot,
            retries: config.max_retries,
            backoff: Duration::from_millis(config.retry_backoff_ms),
            secret_params,
        })
    }

    fn method_name(&self) -> &'static str {
        match self.method {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }

    /// `url` for messages: secret query values and URL passwords replaced by `***`.
    pub(crate) fn display(&self, url: &Url) -> String {
        let mut shown = url.clone();
        if url.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if self.secret_params.iter().any(|s| *s == k) || secret_looking(&k) {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        self.redact(shown.as_str())
    }

    /// `text` with every configured secret and URL password replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = pipe_framework::secret::redact(text).into_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    async fn wait_for_slot(&self) {
        if let Some((interval, next)) = &self.next_slot {
            let at = {
                let mut next = next.lock().await;
                let at = (*next).max(Instant::now());
                *next = at + *interval;
                at
            };
            tokio::time::sleep_until(at.into()).await;
        }
    }

    async fn bearer_token(
        &self,
        url: &str,
        id: &str,
        secret: &str,
        scopes: &[String],
    ) -> Result<String, HttpError> {
        let mut token = self.token.lock().await;
        if let Some(t) = token.as_ref().filter(|t| t.expires > Instant::now()) {
            return Ok(t.value.clone());
        }
        let failed = |message: String| HttpError::Token {
            url: url.to_string(),
            message,
        };
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", id.to_string()),
            ("client_secret", secret.to_string()),
        ];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let response = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}: {}", head(&body))));
        }
        #[derive(serde::Deserialize)]
        struct Granted {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let granted: Granted = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("the answer holds no access_token ({e})")))?;
        // Refresh a little before the server would refuse it.
        let lifetime = Duration::from_secs(granted.expires_in.unwrap_or(3600));
        let expires =
            Instant::now() + lifetime.saturating_sub(Duration::from_secs(30).min(lifetime / 2));
        debug!(token_url = url, "OAuth2 token obtained");
        *token = Some(Token {
            value: granted.access_token.clone(),
            expires,
        });
        Ok(granted.access_token)
    }

    async fn request(
        &self,
        url: &Url,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::RequestBuilder, HttpError> {
        let mut url = url.clone();
        // A next-page URL on another host gets neither the credentials nor the headers.
        let trusted = self.origin.as_ref() == Some(&url.origin());
        let mut request_headers = if trusted {
            self.headers.clone()
        } else {
            HeaderMap::new()
        };
        let auth = if trusted { self.auth.as_ref() } else { None };
        match auth {
            None => {}
            Some(Auth::Bearer { token }) => {
                request_headers.insert(
                    AUTHORIZATION,
                    sensitive(&format!("Bearer {}", token.expose()))?,
                );
            }
            // reqwest encodes it and marks the header sensitive.
            Some(Auth::Basic { .. }) => {}
            Some(Auth::ApiKey {
                name,
                value,
                location,
            }) => match location {
                KeyLocation::Header => {
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        config_error(format!("auth: `{name}` is not a header name"))
                    })?;
                    request_headers.insert(name, sensitive(value.expose())?);
                }
                KeyLocation::Query => {
                    url.query_pairs_mut().append_pair(name, value.expose());
                }
            },
            Some(Auth::OAuth2 {
                token_url,
                client_id,
                client_secret,
                scopes,
            }) => {
                let token = self
                    .bearer_token(token_url, client_id, client_secret.expose(), scopes)
                    .await?;
                request_headers.insert(AUTHORIZATION, sensitive(&format!("Bearer {token}"))?);
            }
        }
        let builder = match self.method {
            Method::Get => self.http.get(url),
            Method::Post => {
                let builder = self.http.post(url);
                match body {
                    Some(body) => builder.json(body),
                    None => builder,
                }
            }
        };
        let builder = builder.headers(request_headers);
        Ok(match auth {
            Some(Auth::Basic { username, password }) => {
                builder.basic_auth(username, Some(password.expose()))
            }
            _ => builder,
        })
    }

    /// Fetch `url` (with the JSON `body` of a `post`), retrying what is transient; `cancel`
    /// stops the waits.
    pub(crate) async fn fetch(
        &self,
        url: &Url,
        body: Option<&serde_json::Value>,
        cancel: &CancellationToken,
    ) -> Result<Response, HttpError> {
        let method = self.method_name();
        let shown = || self.display(url);
        let mut refreshed = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.wait_for_slot().await;
            let request = self.request(url, body).await?;
            let sent = tokio::select! {
                sent = request.send() => sent,
                () = cancel.cancelled() => return Err(HttpError::Cancelled),
            };
            let failure = match sent {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        let final_url = response.url().clone();
                        let link_next = next_link(response.headers());
                        let body = tokio::select! {
                            body = response.bytes() => body,
                            () = cancel.cancelled() => return Err(HttpError::Cancelled),
                        };
                        match body {
                            Ok(body) => {
                                return Ok(Response {
                                    url: final_url,
                                    link_next,
                                    body,
                                });
                            }
                            Err(e) => (format!("reading the body: {}", e.without_url()), None),
                        }
                    } else if status == StatusCode::UNAUTHORIZED
                        && matches!(self.auth, Some(Auth::OAuth2 { .. }))
                        && !refreshed
                    {
                        // The token may have been revoked or expired early: get a new one once.
                        refreshed = true;
                        attempt -= 1;
                        *self.token.lock().await = None;
                        debug!(url = %shown(), "401: refreshing the OAuth2 token");
                        continue;
                    } else if status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::REQUEST_TIMEOUT
                        || status.is_server_error()
                    {
                        let wait = retry_after(response.headers());
                        let body = response.bytes().await.unwrap_or_default();
                        (
                            format!("HTTP {status}: {}", self.redact(&head(&body))),
                            wait,
                        )
                    } else {
                        let location = response
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|l| l.to_str().ok())
                            .map(|l| self.redact(l));
                        let body = response.bytes().await.unwrap_or_default();
                        let head = match location {
                            Some(to) if status.is_redirection() => format!(
                                "a redirect to another origin ({to}) is not followed: the \
                                 credentials would go along"
                            ),
                            _ => self.redact(&head(&body)),
                        };
                        return Err(HttpError::Refused {
                            method,
                            url: shown(),
                            status: status.to_string(),
                            head,
                        });
                    }
                }
                Err(e) if e.is_builder() => return Err(config_error(e.without_url())),
                Err(e) => (self.redact(&error_text(e)), None),
            };
            let (last, retry_after) = failure;
            if attempt > self.retries {
                return Err(HttpError::Exhausted {
                    method,
                    url: shown(),
                    last,
                    attempts: attempt,
                });
            }
            let wait = retry_after.unwrap_or_else(|| self.backoff_for(attempt));
            warn!(url = %shown(), attempt, wait_ms = wait.as_millis() as u64, error = %last, "retrying");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Err(HttpError::Cancelled),
            }
        }
    }

    /// Exponential backoff with ±50 % jitter.
    fn backoff_for(&self, attempt: u32) -> Duration {
        let base = self
            .backoff
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(MAX_BACKOFF);
        base.mul_f64(rand::random_range(0.5..1.5))
    }
}

/// Whether a query parameter's name says it holds a credential (`api_key`, `access_token`,
/// `client_secret`, `sig`, ...): its value is never shown, even when it was not configured
/// through `auth`.
fn secret_looking(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "signature",
        "credential",
        "auth",
    ]
    .iter()
    .any(|word| name.contains(word))
        || name == "sig"
}

fn sensitive(value: &str) -> Result<HeaderValue, HttpError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| config_error("auth: a credential holds characters a header cannot"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// The first bytes of a body, as text on one line.
pub(crate) fn head(body: &[u8]) -> String {
    let cut = &body[..body.len().min(HEAD_BYTES)];
    let text = String::from_utf8_lossy(cut).replace(['\n', '\r'], " ");
    if body.len() > HEAD_BYTES {
        format!("{text}…")
    } else {
        text
    }
}

/// `Retry-After` as seconds or an HTTP date, capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (target, params) = part.split_once(';')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                r#"<https://api/x?page=1>; rel="prev", <https://api/x?page=3>; rel="next""#,
            ),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://api/x?page=3"));
        h.insert(
            LINK,
            HeaderValue::from_static(r#"<https://api/x?page=1>; rel="prev""#),
        );
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn urls_in_messages_hide_credentials() {
        let config: HttpConfig = toml::from_str(
            "url = \"http://h/x\"\nauth = { type = \"api_key\", name = \"k\", value = \"v\", in = \"query\" }",
        )
        .expect("config");
        let client = Client::new(&config).expect("client");
        let url =
            Url::parse("http://u:pw@h/x?page=2&k=s1&access_token=s2&sig=s3&q=keep").expect("url");
        assert_eq!(
            client.display(&url),
            "http://u:***@h/x?page=2&k=***&access_token=***&sig=***&q=keep"
        );
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }
}
