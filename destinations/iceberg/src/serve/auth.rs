//! Who may call the catalog server: a fixed bearer token, and tokens issued by
//! `/v1/oauth/tokens` for OAuth2 client credentials, each valid for a fixed time.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use pipe_framework::Secret;
use rand::RngCore;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;

/// The server's credentials and the tokens it has issued.
#[derive(Debug)]
pub(crate) struct ServerAuth {
    token: Option<Secret>,
    client: Option<(String, Secret)>,
    ttl: Duration,
    issued: Mutex<HashMap<String, Instant>>,
}

impl ServerAuth {
    pub(crate) fn new(
        token: Option<Secret>,
        client: Option<(String, Secret)>,
        ttl: Duration,
    ) -> Self {
        Self {
            token,
            client,
            ttl,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// Whether calls must carry a token.
    pub(crate) fn required(&self) -> bool {
        self.token.is_some() || self.client.is_some()
    }

    fn accepts(&self, bearer: &str) -> bool {
        if self
            .token
            .as_ref()
            .is_some_and(|t| same_secret(t.expose(), bearer))
        {
            return true;
        }
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        issued.retain(|_, expires| *expires > now);
        issued.contains_key(bearer)
    }

    fn issue(&self) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let mut token = String::with_capacity(64);
        for b in bytes {
            let _ = write!(token, "{b:02x}");
        }
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        // (a lifetime past what the clock holds: a century)
        let expires = Instant::now()
            .checked_add(self.ttl)
            .or_else(|| Instant::now().checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or_else(Instant::now);
        issued.insert(token.clone(), expires);
        token
    }
}

/// `a == b` in a time that does not tell how much of a secret matched.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuse calls without a valid bearer token (when the server has credentials).
pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.auth.required() {
        let bearer = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        if !bearer.is_some_and(|b| state.auth.accepts(b.trim())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// The form of an OAuth2 client-credentials token request.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenRequest {
    grant_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: Option<Secret>,
}

/// `POST /v1/oauth/tokens`: client credentials for a bearer token (RFC 6749 §4.4).
pub(crate) async fn tokens(
    State(state): State<Arc<AppState>>,
    Form(form): Form<TokenRequest>,
) -> Response {
    let refuse = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            Json(serde_json::json!({ "error": error, "error_description": description })),
        )
            .into_response()
    };
    if form.grant_type != "client_credentials" {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    let Some((id, secret)) = &state.auth.client else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this server issues no tokens (start it with --client)",
        );
    };
    let given = form.client_secret.as_ref().map(Secret::expose);
    let matches = form.client_id == *id && given.is_some_and(|g| same_secret(g, secret.expose()));
    if !matches {
        tracing::info!("refused a token request: wrong client credentials");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    }
    let token = state.auth.issue();
    Json(serde_json::json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": state.auth.ttl.as_secs(),
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "x"));
    }

    #[test]
    fn issued_tokens_are_accepted_until_they_expire() {
        let auth = ServerAuth::new(None, None, Duration::from_secs(3600));
        let token = auth.issue();
        assert!(auth.accepts(&token));
        assert!(!auth.accepts("other"));
        let expired = ServerAuth::new(None, None, Duration::ZERO);
        assert!(!expired.accepts(&expired.issue()));
        // a lifetime the clock cannot hold still issues a token
        let long = ServerAuth::new(None, None, Duration::MAX);
        assert!(long.accepts(&long.issue()));
    }
}
