//! Errors of the Iceberg destination.

use pipe_framework::Error;

/// What can go wrong loading into Iceberg.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    /// The configuration or the source schema cannot be used (bad partition spec, type
    /// without an Iceberg equivalent, unknown merge key, ...).
    #[error("{0}")]
    Config(String),
    /// The iceberg library failed (reading or writing metadata, manifests or data files).
    #[error("{what}: {source}")]
    Iceberg {
        /// What we were doing.
        what: String,
        /// The library's error (boxed: it is large).
        #[source]
        source: Box<iceberg::Error>,
    },
    /// The catalog database failed.
    #[error("{what}: {source}")]
    Catalog {
        /// What we were doing.
        what: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Another writer committed first and this run's change can no longer be applied.
    #[error("{0}")]
    Conflict(String),
    /// The catalog update failed in a way that leaves its outcome unknown: the run's files
    /// are kept, since the table may now reference them.
    #[error(
        "{what}: {source}; the commit may or may not have happened: inspect the table (pipe inspect) before running again"
    )]
    CommitUnknown {
        /// What we were doing.
        what: String,
        /// The driver's or the HTTP client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A REST catalog answered with an error, or could not be reached (`status` is `None`).
    #[error("{what}: {message}")]
    Rest {
        /// What we were doing.
        what: String,
        /// The HTTP status, if the catalog answered.
        status: Option<u16>,
        /// The catalog's error (`type: message` from the spec's error body), or the network
        /// failure; never a credential.
        message: String,
    },
    /// A Hive Metastore refused a call (`reached`) or could not be reached.
    #[error("{what}: {message}")]
    Metastore {
        /// What we were doing, and which metastore.
        what: String,
        /// The metastore's exception or the transport's error.
        message: String,
        /// Whether the metastore answered.
        reached: bool,
    },
    /// Reading or writing data failed.
    #[error("{what}: {source}")]
    Data {
        /// What we were doing.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A bug: an invariant of this crate did not hold.
    #[error("internal: {0}")]
    Internal(String),
    /// An error from the framework (schema evolution policy, quarantine spool).
    #[error(transparent)]
    Framework(Error),
}

/// `Result` of this crate.
pub(crate) type Result<T, E = IcebergError> = std::result::Result<T, E>;

/// Attach what we were doing to a library error.
pub(crate) fn ice(what: impl Into<String>) -> impl FnOnce(iceberg::Error) -> IcebergError {
    let what = what.into();
    move |source| IcebergError::Iceberg {
        what,
        source: Box::new(source),
    }
}

/// Attach what we were doing to a catalog database error.
pub(crate) fn db(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> IcebergError {
    let what = what.into();
    move |source| IcebergError::Catalog { what, source }
}

/// Attach what we were doing to a data error.
pub(crate) fn data<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> IcebergError {
    let what = what.into();
    move |source| IcebergError::Data {
        what,
        source: Box::new(source),
    }
}

impl From<IcebergError> for Error {
    fn from(e: IcebergError) -> Self {
        match e {
            IcebergError::Framework(inner) => inner,
            IcebergError::Config(m) => Error::user(m),
            IcebergError::Conflict(m) => Error::external(m).retryable(),
            IcebergError::Internal(m) => Error::internal(m),
            IcebergError::Iceberg { what, source } => {
                let kind = match source.kind() {
                    iceberg::ErrorKind::DataInvalid | iceberg::ErrorKind::FeatureUnsupported => {
                        pipe_framework::ErrorKind::User
                    }
                    _ => pipe_framework::ErrorKind::External,
                };
                let transient = kind == pipe_framework::ErrorKind::External
                    && pipe_framework::is_transient(source.as_ref());
                let err = Error::new(kind, what).with_source(*source);
                if transient { err.retryable() } else { err }
            }
            IcebergError::Catalog { what, source } => {
                let transient = pipe_framework::is_transient(&source);
                let err = Error::external(what).with_source(source);
                if transient { err.retryable() } else { err }
            }
            e @ IcebergError::CommitUnknown { .. } => {
                Error::external(e.to_string()).commit_unknown()
            }
            IcebergError::Rest {
                what,
                status,
                message,
            } => {
                let text = format!("{what}: {message}");
                match status {
                    Some(400..=499) if !matches!(status, Some(408 | 409 | 429)) => {
                        Error::user(text)
                    }
                    _ => Error::external(text).retryable(),
                }
            }
            IcebergError::Metastore {
                what,
                message,
                reached,
            } => {
                let err = Error::external(format!("{what}: {message}"));
                if reached { err } else { err.retryable() }
            }
            IcebergError::Data { what, source } => {
                let transient = pipe_framework::is_transient(source.as_ref());
                let err = Error::external(what).with_source(source);
                if transient { err.retryable() } else { err }
            }
        }
    }
}

impl From<Error> for IcebergError {
    fn from(e: Error) -> Self {
        IcebergError::Framework(e)
    }
}
