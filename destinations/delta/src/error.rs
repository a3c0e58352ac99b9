//! Errors of the Delta destination.

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::TransactionError;
use pipe_framework::Error;

/// What can go wrong loading into Delta.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The configuration or the source schema cannot be used (bad path, type without a Delta
    /// equivalent, unknown merge key, invalid predicate, ...).
    #[error("{0}")]
    Config(String),
    /// delta-rs failed (reading the log, writing data files, committing).
    #[error("{what}: {source}")]
    Delta {
        /// What we were doing.
        what: String,
        /// The library's error (boxed: it is large).
        #[source]
        source: Box<DeltaTableError>,
    },
    /// Another writer committed first and this run's change can no longer be applied.
    #[error("{0}")]
    Conflict(String),
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
    /// An error from the framework (schema evolution policy, spool).
    #[error(transparent)]
    Framework(Error),
}

/// `Result` of this crate.
pub(crate) type Result<T, E = DeltaError> = std::result::Result<T, E>;

/// Attach what we were doing to a delta-rs error; lost commit races become
/// [`DeltaError::Conflict`].
pub(crate) fn delta(what: impl Into<String>) -> impl FnOnce(DeltaTableError) -> DeltaError {
    let what = what.into();
    move |source| match &source {
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(c),
        } => DeltaError::Conflict(format!(
            "{what}: another writer changed the table first: {c}; nothing of this run was \
             committed"
        )),
        DeltaTableError::Transaction {
            source: TransactionError::MaxCommitAttempts(n),
        } => DeltaError::Conflict(format!(
            "{what}: the commit lost the race with other writers {n} times; nothing of this run \
             was committed"
        )),
        DeltaTableError::Transaction {
            source: TransactionError::VersionAlreadyExists(v),
        } => DeltaError::Conflict(format!(
            "{what}: another writer committed version {v} first; nothing of this run was \
             committed"
        )),
        DeltaTableError::GenericError { source }
            if source.to_string().contains("already exists") =>
        {
            DeltaError::Conflict(format!(
                "{what}: another run created the table first ({source}); nothing of this run was \
                 committed"
            ))
        }
        DeltaTableError::Transaction {
            source: TransactionError::DeltaTableAppendOnly,
        } => DeltaError::Config(format!(
            "{what}: the table is append-only (delta.appendOnly = true): only mode = \"append\" \
             can write to it"
        )),
        _ => DeltaError::Delta {
            what,
            source: Box::new(source),
        },
    }
}

/// Attach what we were doing to a data error.
pub(crate) fn data<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> DeltaError {
    let what = what.into();
    move |source| DeltaError::Data {
        what,
        source: Box::new(source),
    }
}

impl From<DeltaError> for Error {
    fn from(e: DeltaError) -> Self {
        match e {
            DeltaError::Framework(inner) => inner,
            DeltaError::Config(m) => Error::user(m),
            DeltaError::Conflict(m) => Error::external(m).retryable(),
            DeltaError::Internal(m) => Error::internal(m),
            DeltaError::Delta { what, source } => {
                let kind = match source.as_ref() {
                    DeltaTableError::SchemaMismatch { .. }
                    | DeltaTableError::InvalidPartitionFilter { .. }
                    | DeltaTableError::InvalidTableLocation(_)
                    | DeltaTableError::NotATable(_)
                    | DeltaTableError::MissingFeature { .. } => pipe_framework::ErrorKind::User,
                    _ => pipe_framework::ErrorKind::External,
                };
                let transient = kind == pipe_framework::ErrorKind::External
                    && pipe_framework::is_transient(source.as_ref());
                let err = Error::new(kind, what).with_source(*source);
                if transient { err.retryable() } else { err }
            }
            DeltaError::Data { what, source } => {
                let transient = pipe_framework::is_transient(source.as_ref());
                let err = Error::external(what).with_source(source);
                if transient { err.retryable() } else { err }
            }
        }
    }
}

impl From<Error> for DeltaError {
    fn from(e: Error) -> Self {
        DeltaError::Framework(e)
    }
}
