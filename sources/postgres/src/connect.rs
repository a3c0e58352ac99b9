//! Connecting: options from the URL (TLS through `sslmode`, `sslrootcert`, ... parameters),
//! a password-free name for messages, and a connect timeout.

use std::str::FromStr;
use std::time::Duration;

use pipe_framework::Secret;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::error::PgError;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    options: PgConnectOptions,
    /// `user@host:port/db`, for messages.
    target: String,
    password: Option<String>,
    timeout: Duration,
}

/// The password part of a `postgres://user:password@host/db` URL, percent-decoded or not.
fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = &rest[..rest.find('@')?];
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_string())
}

impl Endpoint {
    pub(crate) fn parse(url: &Secret, timeout_secs: u64) -> Result<Self, PgError> {
        let password = password_of(url.expose());
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(|e| {
                let mut msg = e.to_string();
                if let Some(pw) = &password {
                    msg = msg.replace(pw.as_str(), "***");
                }
                PgError::Config(format!("`url` is not a valid PostgreSQL URL: {msg}"))
            })?
            .application_name("pipe")
            .disable_statement_logging();
        let target = format!(
            "{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );
        Ok(Self {
            options,
            target,
            password,
            timeout: Duration::from_secs(timeout_secs.max(1)),
        })
    }

    /// `user@host:port/db`.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Wrap a driver error for `what`, naming the target and never the password.
    pub(crate) fn err(&self, what: &str, e: sqlx::Error) -> PgError {
        PgError::server(what, &self.target, self.password.as_deref(), e)
    }

    /// Open a connection (UTC session time zone, ISO intervals for text casts).
    pub(crate) async fn connect(&self) -> Result<PgConnection, PgError> {
        let connecting = PgConnection::connect_with(&self.options);
        let mut conn = match tokio::time::timeout(self.timeout, connecting).await {
            Ok(result) => result.map_err(|e| self.err("connecting", e))?,
            Err(_) => {
                return Err(PgError::Server {
                    what: "connecting".into(),
                    target: self.target.clone(),
                    message: format!("no answer within {} s", self.timeout.as_secs()),
                    code: None,
                    io: true,
                });
            }
        };
        conn.execute(
            "SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3",
        )
        .await
        .map_err(|e| self.err("configuring the session", e))?;
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_found_for_scrubbing_and_never_in_the_target() {
        let url = Secret::new("postgres://etl:s3cr%40t@db.example:5433/sales?sslmode=require");
        let e = Endpoint::parse(&url, 5).expect("parses");
        assert_eq!(e.target(), "etl@db.example:5433/sales");
        assert_eq!(password_of(url.expose()).as_deref(), Some("s3cr%40t"));
        assert_eq!(password_of("postgres://etl@db/sales"), None);
    }
}
