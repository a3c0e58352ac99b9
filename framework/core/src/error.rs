//! The framework error: every failure carries a [`ErrorKind`] that tells the user whose move it
//! is, a message, optional context lines and the underlying cause.
//!
//! Connector crates define their own `thiserror` enums and convert them into [`Error`] at the
//! framework boundary (see docs/development.md). The CLI prints the chain, one cause per line.

use std::fmt;

/// Who has to act on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Fix your configuration or your data (bad TOML, malformed row, unknown column, ...).
    User,
    /// A service or the environment failed (unreachable host, permission denied, disk full).
    /// May be transient; see [`Error::is_retryable`].
    External,
    /// A bug in pipe or a connector: an invariant did not hold.
    Internal,
    /// The run was cancelled (Ctrl-C, SIGTERM, or another stage failed first).
    Cancelled,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::User => "user error",
            ErrorKind::External => "external error",
            ErrorKind::Internal => "internal error",
            ErrorKind::Cancelled => "cancelled",
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error type of every framework trait and of the runtime.
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    /// The commit may or may not have landed (see [`Error::commit_unknown`]).
    commit_unknown: bool,
    source: Option<BoxError>,
}

/// `Result` with the framework [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retryable: false,
            commit_unknown: false,
            source: None,
        }
    }

    /// A [`ErrorKind::User`] error.
    pub fn user(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::User, message)
    }

    /// An [`ErrorKind::External`] error.
    pub fn external(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::External, message)
    }

    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// A [`ErrorKind::Cancelled`] error.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cancelled, message)
    }

    /// Attach the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Mark an external error as worth retrying (connection reset, 5xx, commit conflict).
    #[must_use]
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// Mark an error of a commit whose outcome cannot be told: the destination may have
    /// taken it (a lost response, a crash of the catalog mid-commit). The run's files are
    /// kept, the run is reported as "commit outcome unknown", and it is never retried
    /// automatically: the next run reconciles with what the destination says.
    #[must_use]
    pub fn commit_unknown(mut self) -> Self {
        self.commit_unknown = true;
        self.retryable = false;
        self
    }

    /// Whether this error (or one it wraps) is a commit of unknown outcome.
    pub fn is_commit_unknown(&self) -> bool {
        self.commit_unknown
    }

    /// Wrap this error in an outer one with the same kind and a message saying what was
    /// being done, e.g. `reading pipelines/data/orders.csv`.
    #[must_use]
    pub fn context(self, message: impl Into<String>) -> Self {
        Self {
            kind: self.kind,
            message: message.into(),
            retryable: self.retryable,
            commit_unknown: self.commit_unknown,
            source: Some(Box::new(self)),
        }
    }

    /// Who has to act.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message of this level, without its causes.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The first cause of type `T` in the chain (this error's own source first), e.g. the
    /// [`crate::config::ConfigError`] locating a configuration mistake.
    pub fn find_source<T: std::error::Error + 'static>(&self) -> Option<&T> {
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(err) = next {
            if let Some(found) = err.downcast_ref::<T>() {
                return Some(found);
            }
            next = err.source();
        }
        None
    }

    /// This message followed by every cause, outermost first. Passwords in URLs are
    /// redacted ([`crate::secret::redact`]): this is what users, logs and the ledger see.
    pub fn chain(&self) -> Vec<String> {
        let mut out = vec![self.message.clone()];
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(err) = next {
            out.push(match err.downcast_ref::<Error>() {
                Some(inner) => inner.message.clone(),
                None => err.to_string(),
            });
            next = err.source();
        }
        let out: Vec<String> = out
            .into_iter()
            .map(|m| crate::secret::redact(&m).into_owned())
            .collect();
        // Libraries often wrap an error in one whose message repeats it: say it once (short
        // causes, "EOF" or "403", are kept: a longer message may contain them by chance).
        let mut said: Vec<String> = Vec::with_capacity(out.len());
        for message in out {
            let repeated = said.last().is_some_and(|m| {
                *m == message || (message.len() >= 16 && m.contains(message.as_str()))
            });
            if !repeated {
                said.push(message);
            }
        }
        said
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.chain().join(": "), self.kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::secret::redact(&self.message))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Adds [`ErrorKind`]-aware context to results whose error converts into [`Error`].
pub trait ResultExt<T> {
    /// On error, wrap it with `message` (computed lazily), keeping its kind.
    fn context_with<F, M>(self, message: F) -> Result<T>
    where
        F: FnOnce() -> M,
        M: Into<String>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context_with<F, M>(self, message: F) -> Result<T>
    where
        F: FnOnce() -> M,
        M: Into<String>,
    {
        self.map_err(|e| e.into().context(message()))
    }
}

/// Whether an external failure is worth another try, judged from its whole chain: I/O that
/// was cut or timed out, and the answers object stores and HTTP services give when they are
/// busy or briefly down (429, 500, 502, 503, 504, `SlowDown`). Missing objects, refused
/// credentials and bad requests are not. One classification for every connector (object
/// stores, HTTP sources, catalogs).
pub fn is_transient(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    const TRANSIENT: [&str; 14] = [
        "timed out",
        "timeout",
        "connection reset",
        "connection refused",
        "connection closed",
        "broken pipe",
        "temporarily unavailable",
        "too many requests",
        "service unavailable",
        "bad gateway",
        "gateway timeout",
        "internal server error",
        "slowdown",
        "try again",
    ];
    const STATUS: [&str; 5] = ["429", "500", "502", "503", "504"];
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::BrokenPipe
                    | K::TimedOut
                    | K::Interrupted
                    | K::UnexpectedEof
                    | K::WouldBlock
            )
        {
            return true;
        }
        let text = e.to_string().to_ascii_lowercase();
        if TRANSIENT.iter().any(|t| text.contains(t))
            || STATUS.iter().any(|code| {
                text.contains(&format!("status {code}"))
                    || text.contains(&format!("status: {code}"))
                    || text.contains(&format!("{code} "))
                        && (text.contains("http") || text.contains("response"))
            })
        {
            return true;
        }
        next = e.source();
    }
    false
}

impl From<arrow_schema::ArrowError> for Error {
    /// Arrow errors on the data path are almost always bad input (a value that does not
    /// parse or cast); the caller adds which file or column.
    fn from(e: arrow_schema::ArrowError) -> Self {
        use arrow_schema::ArrowError as A;
        let kind = match &e {
            A::IoError(..) | A::ExternalError(..) => ErrorKind::External,
            A::MemoryError(..) => ErrorKind::External,
            _ => ErrorKind::User,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidData => ErrorKind::User,
            _ => ErrorKind::External,
        };
        Error::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lists_every_cause_outermost_first() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Error::user("cannot open orders.csv")
            .with_source(io)
            .context("reading source");
        assert_eq!(
            err.chain(),
            vec!["reading source", "cannot open orders.csv", "no such file"]
        );
        assert_eq!(err.kind(), ErrorKind::User);
    }

    #[test]
    fn a_cause_its_wrapper_already_says_is_said_once() {
        let inner = std::io::Error::other("bucket lake does not exist");
        let wrapper =
            Error::external("Kernel error: bucket lake does not exist").with_source(inner);
        let err = Error::external("reading the Delta log").with_source(wrapper);
        assert_eq!(
            err.chain(),
            vec![
                "reading the Delta log",
                "Kernel error: bucket lake does not exist"
            ]
        );
    }

    #[test]
    fn transient_failures_are_told_from_final_ones() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert!(is_transient(&Error::external("reading").with_source(reset)));
        let busy = Error::external("Generic S3 error: HTTP status 503 Service Unavailable");
        assert!(is_transient(&busy));
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such object");
        assert!(!is_transient(&missing));
        assert!(!is_transient(&Error::external("access denied (403)")));
    }

    #[test]
    fn context_keeps_kind_and_retryability() {
        let r: Result<()> = Err(Error::external("connection reset").retryable());
        let err = r
            .context_with(|| "loading")
            .err()
            .map(|e| (e.kind(), e.is_retryable()));
        assert_eq!(err, Some((ErrorKind::External, true)));
    }
}
