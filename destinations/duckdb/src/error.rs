//! Errors of the DuckDB destination.

use pipe_framework::{Error, ErrorKind};

/// What can go wrong loading into DuckDB.
#[derive(Debug, thiserror::Error)]
pub enum DuckError {
    /// The source schema cannot be stored (type without a DuckDB equivalent, bad key).
    #[error("{0}")]
    Schema(String),
    /// A SQL statement failed.
    #[error("{what}: {source}")]
    Sql {
        /// What we were doing.
        what: String,
        /// DuckDB's error.
        #[source]
        source: duckdb::Error,
    },
    /// The database file cannot be opened (locked by another process, not writable, ...).
    #[error("cannot open DuckDB database {path}: {message}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The worker thread is gone.
    #[error("the DuckDB worker stopped: {0}")]
    Worker(String),
    /// An error from the framework (schema evolution policy).
    #[error(transparent)]
    Framework(Error),
}

/// `Result` of this crate.
pub(crate) type Result<T, E = DuckError> = std::result::Result<T, E>;

pub(crate) fn sql_err(what: &str, source: duckdb::Error) -> DuckError {
    DuckError::Sql {
        what: what.to_string(),
        source,
    }
}

impl From<DuckError> for Error {
    fn from(e: DuckError) -> Self {
        match e {
            DuckError::Framework(inner) => inner,
            DuckError::Schema(m) => Error::user(m),
            DuckError::Sql { what, source } => {
                let text = source.to_string();
                // Constraint and conversion failures come from the data; the rest from DuckDB.
                let kind = if text.contains("Constraint Error") || text.contains("Conversion Error")
                {
                    ErrorKind::User
                } else {
                    ErrorKind::External
                };
                // Another transaction or process got there first: trying again can succeed.
                let transient = text.contains("Transaction conflict")
                    || text.contains("Could not set lock")
                    || text.contains("Conflicting lock");
                let err = Error::new(kind, what).with_source(source);
                if transient { err.retryable() } else { err }
            }
            DuckError::Open { ref message, .. } if message.contains("lock") => {
                Error::external(e.to_string()).retryable()
            }
            DuckError::Open { .. } => Error::external(e.to_string()),
            DuckError::Worker(_) => Error::internal(e.to_string()),
        }
    }
}
