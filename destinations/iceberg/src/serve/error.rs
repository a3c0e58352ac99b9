//! The REST catalog's errors, as the spec writes them: `{"error": {"message", "type", "code"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iceberg_catalog_rest::ErrorModel;

use crate::catalog::rest::client::ErrorBody;
use crate::error::IcebergError;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 400: the request cannot be read or makes no sense.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    /// 401: no valid token.
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "NotAuthorizedException",
            "a valid bearer token is required",
        )
    }

    /// 404 for a namespace.
    pub(crate) fn no_namespace(ns: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchNamespaceException",
            format!("namespace does not exist: {ns}"),
        )
    }

    /// 404 for a table.
    pub(crate) fn no_table(table: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            format!("table does not exist: {table}"),
        )
    }

    /// 409: a requirement of a commit does not hold.
    pub(crate) fn commit_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CommitFailedException", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self.message, "request failed");
        } else {
            tracing::info!(status = self.status.as_u16(), error = %self.message, "request refused");
        }
        let body = ErrorBody {
            error: ErrorModel {
                message: self.message,
                r#type: self.kind.to_string(),
                code: self.status.as_u16(),
                stack: None,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<iceberg::Error> for ApiError {
    fn from(e: iceberg::Error) -> Self {
        use iceberg::ErrorKind as K;
        let message = e.to_string();
        let (status, kind) = match e.kind() {
            K::NamespaceNotFound => (StatusCode::NOT_FOUND, "NoSuchNamespaceException"),
            K::TableNotFound => (StatusCode::NOT_FOUND, "NoSuchTableException"),
            K::NamespaceAlreadyExists | K::TableAlreadyExists => {
                (StatusCode::CONFLICT, "AlreadyExistsException")
            }
            K::CatalogCommitConflicts => (StatusCode::CONFLICT, "CommitFailedException"),
            K::DataInvalid | K::PreconditionFailed => {
                (StatusCode::BAD_REQUEST, "BadRequestException")
            }
            K::FeatureUnsupported => (StatusCode::NOT_ACCEPTABLE, "UnsupportedOperationException"),
            _ if message.contains("is not empty") => {
                (StatusCode::CONFLICT, "NamespaceNotEmptyException")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
        };
        Self::new(status, kind, message)
    }
}

impl From<IcebergError> for ApiError {
    fn from(e: IcebergError) -> Self {
        match e {
            IcebergError::Iceberg { what, source } => {
                let mut api = ApiError::from(*source);
                api.message = format!("{what}: {}", api.message);
                api
            }
            IcebergError::Config(m) => ApiError::bad_request(m),
            IcebergError::Conflict(m) => ApiError::commit_failed(m),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                pipe_framework::secret::redact(&other.to_string()).into_owned(),
            ),
        }
    }
}
