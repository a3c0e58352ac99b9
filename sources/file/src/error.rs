//! Errors of the file source, converted into the framework error at the boundary.

use pipe_framework::{Error, ErrorKind};

/// What can go wrong reading files.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The configured path names nothing.
    #[error("no such file or directory: {0}")]
    NotFound(String),
    /// A glob or directory matched no files.
    #[error("no files match `{0}`")]
    NoMatch(String),
    /// The format could not be told from the file name.
    #[error(
        "cannot tell the format of {0} from its extension; set `format` (csv, ndjson, parquet, ipc)"
    )]
    UnknownFormat(String),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// A file's content does not decode, at a known line.
    #[error("{file}:{line}: {message}")]
    DecodeAt {
        /// The file.
        file: String,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A file's content does not decode.
    #[error("{file}: {message}")]
    Decode {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Reading failed below the decoder (disk, network).
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The object store refused or failed.
    #[error("{url}: {source}")]
    Store {
        /// The location.
        url: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
}

impl From<FileError> for Error {
    fn from(e: FileError) -> Self {
        let kind = match &e {
            FileError::NotFound(_)
            | FileError::NoMatch(_)
            | FileError::UnknownFormat(_)
            | FileError::Config(_)
            | FileError::DecodeAt { .. }
            | FileError::Decode { .. } => ErrorKind::User,
            FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::User
            }
            FileError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            } => ErrorKind::User,
            FileError::Io { .. } | FileError::Store { .. } => ErrorKind::External,
        };
        // Keep the cause (the io or object-store error) for the chain, and let the runner
        // retry what is transient (a cut connection, a busy store).
        let retryable = kind == ErrorKind::External && pipe_framework::is_transient(&e);
        let message = e.to_string();
        let err = Error::new(kind, message).with_source(e);
        if retryable { err.retryable() } else { err }
    }
}
