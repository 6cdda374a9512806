//! The one place errors become HTTP responses. Client mistakes carry an OCI error and are not
//! logged as errors; server faults are logged with the request's span (and so its request id)
//! and answered with a generic 500 body that leaks no internals.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{ErrorCode, OciError};
use berth_meta::MetaError;
use berth_storage::{StorageError, StorageErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
    #[error("blob store: {0}")]
    Storage(#[from] StorageError),
    /// A server fault outside the stores (hashing, key material): logged, answered 500.
    #[error("{0}")]
    Internal(String),
    /// A client error whose response needs extra headers (416 with the upload's `Range`).
    #[error("{0}")]
    WithHeaders(OciError, Vec<(header::HeaderName, HeaderValue)>),
}

pub type ApiResult<T> = Result<T, ApiError>;

/// For the auth service's faults. A refused login is not one of them: callers answer those
/// with a challenge (`caller::auth_error`), which needs the request.
impl From<berth_auth::AuthError> for ApiError {
    fn from(e: berth_auth::AuthError) -> Self {
        match e {
            berth_auth::AuthError::Meta(m) => ApiError::Meta(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<berth_auth::secret::SecretError> for ApiError {
    fn from(e: berth_auth::secret::SecretError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl ApiError {
    pub fn oci(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::Oci(OciError::new(code, message))
    }
}

fn oci_response(err: &OciError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(Body::from(err.to_json()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Oci(e) => {
                tracing::debug!(code = e.code.as_str(), message = %e.message, "client error");
                oci_response(&e)
            }
            ApiError::WithHeaders(e, headers) => {
                tracing::debug!(code = e.code.as_str(), message = %e.message, "client error");
                let mut resp = oci_response(&e);
                for (k, v) in headers {
                    resp.headers_mut().insert(k, v);
                }
                resp
            }
            ApiError::Storage(e) if e.kind == StorageErrorKind::Timeout => {
                tracing::warn!(error = %e, "blob store timed out");
                oci_response(
                    &OciError::new(
                        ErrorCode::Internal,
                        "the blob store did not answer in time; retry",
                    )
                    .with_status(503),
                )
            }
            other => {
                tracing::error!(error = %other, "request failed");
                oci_response(&OciError::new(
                    ErrorCode::Internal,
                    "internal server error; see the server log",
                ))
            }
        }
    }
}
