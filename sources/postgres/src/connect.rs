//! Connecting: options from the URL (TLS through `sslmode`, `sslrootcert`, ... parameters),
//! a password-free name for messages, and a connect timeout.

use std::str::FromStr;
use std::time::Duration;

use pipe_framework::Secret;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::error::PgError;

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Endpoint {
    options: PgConnectOptions,
    /// `user@host:port/db`, for messages.
    target: String,
    /// The password as written in the URL and percent-decoded: scrubbed from driver messages.
    passwords: Vec<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the options or the password: PgConnectOptions' Debug prints the password.
        f.debug_struct("Endpoint")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The password of a `postgres://user:password@host/db` URL, as written and percent-decoded.
/// The userinfo ends at the last `@` before the host, so a raw `@` in a password is kept.
fn passwords_of(url: &str) -> Vec<String> {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else {
        return Vec::new();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let Some((_, raw)) = userinfo.split_once(':') else {
        return Vec::new();
    };
    if raw.is_empty() {
        return Vec::new();
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    let mut all = vec![raw.to_string()];
    if decoded != raw {
        all.push(decoded);
    }
    all
}

impl Endpoint {
    pub(crate) fn parse(url: &Secret, timeout_secs: u64) -> Result<Self, PgError> {
        let scheme = url
            .expose()
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
            return Err(PgError::Config(format!(
                "`url` must be a PostgreSQL URL (`postgres://` or `postgresql://`), not `{}://…`",
                scheme.unwrap_or_default()
            )));
        }
        let passwords = passwords_of(url.expose());
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(|e| {
                let msg = crate::error::scrub(&e.to_string(), &passwords);
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
            passwords,
            timeout: Duration::from_secs(timeout_secs.max(1)),
        })
    }

    /// `user@host:port/db`.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Wrap a driver error for `what`, naming the target and never the password.
    pub(crate) fn err(&self, what: &str, e: sqlx::Error) -> PgError {
        PgError::server(what, &self.target, &self.passwords, e)
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
    fn the_password_is_found_for_scrubbing_and_never_in_the_target_or_debug() {
        let url = Secret::new("postgres://etl:s3cr%40t@db.example:5433/sales?sslmode=require");
        let e = Endpoint::parse(&url, 5).expect("parses");
        assert_eq!(e.target(), "etl@db.example:5433/sales");
        assert_eq!(passwords_of(url.expose()), vec!["s3cr%40t", "s3cr@t"]);
        assert!(!format!("{e:?}").contains("s3cr"));
        assert_eq!(
            passwords_of("postgres://etl@db/sales"),
            Vec::<String>::new()
        );
        assert_eq!(passwords_of("postgres://etl:p@ss@db/sales"), vec!["p@ss"]);
    }

    #[test]
    fn other_databases_urls_are_refused() {
        for url in ["mysql://u:pw@h/db", "sqlite://x.db", "db.example:5432"] {
            let err = Endpoint::parse(&Secret::new(url), 5).expect_err(url);
            assert!(
                err.to_string().contains("must be a PostgreSQL URL"),
                "{err}"
            );
            assert!(!err.to_string().contains("pw"), "{err}");
        }
        assert!(Endpoint::parse(&Secret::new("postgresql://u@h/db"), 5).is_ok());
    }
}
