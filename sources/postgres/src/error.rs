//! Errors of the Postgres source. None of them carries the password: the connection is named
//! `user@host:port/db`, and every message from the driver is scrubbed of it.

use pipe_framework::{Error, ErrorKind};

/// What can go wrong reading from PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// A statement or the connection failed.
    #[error("{what} ({target}): {message}")]
    Server {
        /// What we were doing.
        what: String,
        /// `user@host:port/db`.
        target: String,
        /// The driver's message, without the password.
        message: String,
        /// The SQLSTATE, if the server sent one.
        code: Option<String>,
        /// Whether it was I/O (unreachable, reset, timeout) rather than a server answer.
        io: bool,
    },
    /// A column type without an Arrow mapping.
    #[error(
        "column `{column}` has type {pg_type}, which pipe cannot map to Arrow; set \
         `unsupported_types = \"text\"` to read it as text, or leave it out with `columns`"
    )]
    Unsupported {
        /// The column.
        column: String,
        /// Its PostgreSQL type.
        pg_type: String,
    },
    /// A value that the COPY stream holds but the Arrow type cannot.
    #[error("column `{column}`: {message}")]
    Value {
        /// The column.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// The COPY stream is not what the protocol says.
    #[error("malformed binary COPY stream: {0}")]
    Protocol(String),
}

/// `message` with every one of `secrets` replaced by `***`.
pub(crate) fn scrub(message: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(message.to_string(), |m, s| m.replace(s.as_str(), "***"))
}

impl PgError {
    /// Wrap a driver error, scrubbing the password (in every form) from its text.
    pub(crate) fn server(what: &str, target: &str, passwords: &[String], e: sqlx::Error) -> Self {
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned());
        // TLS failures are configuration (certificates, sslmode) more often than not.
        let io = matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut);
        let message = scrub(&e.to_string(), passwords);
        PgError::Server {
            what: what.to_string(),
            target: target.to_string(),
            message,
            code,
            io,
        }
    }
}

impl From<PgError> for Error {
    fn from(e: PgError) -> Self {
        let (kind, retryable) = match &e {
            PgError::Config(_) | PgError::Unsupported { .. } | PgError::Value { .. } => {
                (ErrorKind::User, false)
            }
            PgError::Protocol(_) => (ErrorKind::Internal, false),
            PgError::Server { code, io, .. } => match code.as_deref() {
                // Authentication, authorization, missing objects, bad SQL: fix the config.
                Some(c)
                    if c.starts_with("28")
                        || c.starts_with("42")
                        || c.starts_with("3D")
                        || c.starts_with("22") =>
                {
                    (ErrorKind::User, false)
                }
                // Connection exceptions, too many connections, server shutting down or starting,
                // serialization failures: worth another try. (57014, a statement timeout,
                // would only time out again.)
                Some(c)
                    if c.starts_with("08")
                        || c.starts_with("53")
                        || matches!(c, "57P01" | "57P02" | "57P03") =>
                {
                    (ErrorKind::External, true)
                }
                Some(c) if c.starts_with("40") => (ErrorKind::External, true),
                _ if *io => (ErrorKind::External, true),
                _ => (ErrorKind::External, false),
            },
        };
        let err = Error::new(kind, e.to_string());
        if retryable { err.retryable() } else { err }
    }
}
