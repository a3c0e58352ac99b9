//! Errors of the HTTP source, converted into the framework error at the boundary. URLs in
//! them are already redacted ([`crate::client::Client::display`]).

use pipe_framework::{Error, ErrorKind};

/// What can go wrong reading an API.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// The server refused the request for good (a 4xx other than 429).
    #[error("{method} {url}: HTTP {status}: {head}")]
    Refused {
        /// `GET` or `POST`.
        method: &'static str,
        /// The URL, secrets redacted.
        url: String,
        /// The status code and reason.
        status: String,
        /// The first bytes of the response body.
        head: String,
    },
    /// The server kept failing (429, 5xx, timeouts) through every retry.
    #[error("{method} {url}: {last} (after {attempts} attempts)")]
    Exhausted {
        /// `GET` or `POST`.
        method: &'static str,
        /// The URL, secrets redacted.
        url: String,
        /// The last failure.
        last: String,
        /// Requests made.
        attempts: u32,
    },
    /// A page's body does not hold the records as configured.
    #[error("page {page} ({url}): {message}")]
    Page {
        /// 1-based page number.
        page: u64,
        /// The URL, secrets redacted.
        url: String,
        /// What is wrong, with the byte offset.
        message: String,
    },
    /// The OAuth2 token endpoint did not give a token.
    #[error("OAuth2 token from {url}: {message}")]
    Token {
        /// The token URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The run was cancelled while waiting.
    #[error("the run was cancelled")]
    Cancelled,
}

impl From<HttpError> for Error {
    fn from(e: HttpError) -> Self {
        let kind = match &e {
            HttpError::Config(_) | HttpError::Refused { .. } | HttpError::Page { .. } => {
                ErrorKind::User
            }
            HttpError::Token { .. } => ErrorKind::User,
            HttpError::Exhausted { .. } => ErrorKind::External,
            HttpError::Cancelled => ErrorKind::Cancelled,
        };
        Error::new(kind, e.to_string())
    }
}
