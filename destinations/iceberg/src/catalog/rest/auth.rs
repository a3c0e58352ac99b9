//! How calls to a REST catalog authenticate: no auth, a fixed bearer token, or OAuth2 client
//! credentials exchanged for a token that is renewed before it expires (and once more when the
//! catalog answers 401). Tokens and credentials are [`Secret`]s: never logged or shown.

use std::time::{Duration, Instant};

use pipe_framework::Secret;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::RestCatalogConfig;
use crate::error::{IcebergError, Result};

/// A token is renewed this long before the catalog said it expires.
const EARLY: Duration = Duration::from_secs(30);

/// An OAuth2 token endpoint's answer (RFC 6749 §5.1).
#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A token and when to renew it.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    token: Secret,
    renew_at: Option<Instant>,
}

/// The credential of a catalog connection.
#[derive(Debug)]
pub(crate) enum Auth {
    /// No `Authorization` header.
    None,
    /// A fixed bearer token.
    Token(Secret),
    /// OAuth2 client credentials and the token they got.
    Client {
        id: Secret,
        secret: Secret,
        endpoint: String,
        scope: String,
        held: Mutex<Option<Held>>,
    },
}

impl Auth {
    /// The auth `config` asks for; `base` is the catalog's URL (for the default endpoint).
    pub(crate) fn new(config: &RestCatalogConfig, base: &str) -> Result<Self> {
        match (&config.token, &config.credential) {
            (Some(_), Some(_)) => Err(IcebergError::Config(
                "the catalog has both `token` and `credential`: give one".into(),
            )),
            (Some(token), None) => {
                if reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .is_err()
                {
                    return Err(IcebergError::Config(
                        "catalog `token` holds characters an HTTP header cannot carry (a line \
                         break?)"
                            .into(),
                    ));
                }
                Ok(Auth::Token(token.clone()))
            }
            (None, Some(credential)) => {
                let (id, secret) = credential.expose().split_once(':').ok_or_else(|| {
                    IcebergError::Config(
                        "catalog `credential` must be `client_id:client_secret`".into(),
                    )
                })?;
                Ok(Auth::Client {
                    id: Secret::new(id),
                    secret: Secret::new(secret),
                    endpoint: config
                        .oauth2_server_uri
                        .clone()
                        .unwrap_or_else(|| format!("{base}/v1/oauth/tokens")),
                    scope: config.scope.clone().unwrap_or_else(|| "catalog".into()),
                    held: Mutex::new(None),
                })
            }
            (None, None) => Ok(Auth::None),
        }
    }

    /// Whether a 401 may be cured by fetching a new token.
    pub(crate) fn renewable(&self) -> bool {
        matches!(self, Auth::Client { .. })
    }

    /// Drop the held token (the catalog refused it).
    pub(crate) async fn forget(&self) {
        if let Auth::Client { held, .. } = self {
            *held.lock().await = None;
        }
    }

    /// The bearer token to send, fetching or renewing it if needed. A refused credential is
    /// reported as an HTTP error of the token endpoint's status.
    pub(crate) async fn bearer(
        &self,
        http: &reqwest::Client,
    ) -> std::result::Result<Option<Secret>, reqwest::Error> {
        match self {
            Auth::None => Ok(None),
            Auth::Token(t) => Ok(Some(t.clone())),
            Auth::Client {
                id,
                secret,
                endpoint,
                scope,
                held,
            } => {
                let mut held = held.lock().await;
                if let Some(h) = held.as_ref()
                    && h.renew_at.is_none_or(|at| Instant::now() < at)
                {
                    return Ok(Some(h.token.clone()));
                }
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", id.expose()),
                    ("client_secret", secret.expose()),
                    ("scope", scope.as_str()),
                ];
                let asked = Instant::now();
                let response: TokenResponse = http
                    .post(endpoint)
                    .form(&form)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                // Renew early, but never sooner than half the token's life (a lifetime past
                // what the clock can hold is never renewed).
                let renew_at = response.expires_in.and_then(|secs| {
                    let life = Duration::from_secs(secs);
                    asked.checked_add(life.saturating_sub(EARLY).max(life / 2))
                });
                tracing::debug!(
                    expires_in = ?response.expires_in,
                    "fetched an OAuth2 token for the REST catalog"
                );
                let token = Secret::new(response.access_token.expose().trim());
                *held = Some(Held {
                    token: token.clone(),
                    renew_at,
                });
                Ok(Some(token))
            }
        }
    }
}
