//! The one place errors become HTTP responses. Client mistakes carry an OCI error and are not
//! logged as errors; server faults are logged with the request's span (and so its request id)
//! and answered with a generic 500 body that leaks no internals.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{ErrorCode, OciError};
use berth_meta::{DbCondition, MetaError};
use berth_storage::{StorageError, StorageErrorKind};

use crate::request_log::FailureCause;

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
            berth_auth::AuthError::Busy => crate::caller::auth_busy(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<berth_auth::secret::SecretError> for ApiError {
    fn from(e: berth_auth::secret::SecretError) -> Self {
        match e {
            berth_auth::secret::SecretError::Busy => crate::caller::auth_busy(),
            other => ApiError::Internal(other.to_string()),
        }
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

/// The answer to a fault that is the server's own: the details are in the log only.
fn internal_error() -> Response {
    oci_response(&OciError::new(
        ErrorCode::Internal,
        "internal server error; see the server log",
    ))
}

/// How long a client is asked to wait before retrying when a store is unavailable and did not
/// say.
const RETRY_AFTER_SECS: u64 = 2;

fn unavailable(status: u16, message: String, retry: bool) -> Response {
    let mut resp =
        oci_response(&OciError::new(ErrorCode::Unavailable, message).with_status(status));
    if retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}

/// A server-side failure: logged with the request's span, answered with the cause the client
/// can act on (out of space, unavailable: retry) or a generic 500, and the cause attached for
/// the request's log line.
fn server_fault(e: &ApiError) -> Response {
    let mut resp = match e {
        ApiError::Storage(s) => match s.kind {
            StorageErrorKind::Full => {
                tracing::error!(error = %s, "the blob store is out of space");
                unavailable(
                    507,
                    "the blob store is out of space; free space (delete images and run garbage \
                     collection) and retry"
                        .into(),
                    false,
                )
            }
            StorageErrorKind::Timeout => {
                tracing::warn!(error = %s, "blob store timed out");
                unavailable(
                    503,
                    "the blob store did not answer in time; retry".into(),
                    true,
                )
            }
            StorageErrorKind::Unavailable => {
                tracing::warn!(error = %s, "blob store unavailable");
                unavailable(503, "the blob store is unavailable; retry".into(), true)
            }
            StorageErrorKind::Io | StorageErrorKind::Unauthorized => {
                tracing::error!(error = %s, "blob store failed");
                unavailable(
                    503,
                    format!(
                        "the blob store failed (I/O error: {}); retry later",
                        s.source
                    ),
                    true,
                )
            }
            StorageErrorKind::NotFound => {
                tracing::error!(error = %s, "request failed");
                internal_error()
            }
        },
        ApiError::Meta(m) => match m.condition() {
            DbCondition::Full => {
                tracing::error!(error = %m, "the database is out of space");
                unavailable(
                    507,
                    "the metadata database is out of space; free space and retry".into(),
                    false,
                )
            }
            DbCondition::Unavailable => {
                tracing::warn!(error = %m, "database unavailable");
                unavailable(
                    503,
                    "the metadata database is unavailable; retry".into(),
                    true,
                )
            }
            DbCondition::Other => {
                tracing::error!(error = %m, "request failed");
                internal_error()
            }
        },
        other => {
            tracing::error!(error = %other, "request failed");
            internal_error()
        }
    };
    resp.extensions_mut().insert(FailureCause(e.to_string()));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Oci(e) => {
                let mut resp = oci_response(&e);
                if e.status() >= 500 {
                    tracing::warn!(code = e.code.as_str(), message = %e.message, "request failed");
                    resp.extensions_mut()
                        .insert(FailureCause(e.message.clone()));
                } else {
                    tracing::debug!(code = e.code.as_str(), message = %e.message, "client error");
                }
                resp
            }
            ApiError::WithHeaders(e, headers) => {
                tracing::debug!(code = e.code.as_str(), message = %e.message, "client error");
                let mut resp = oci_response(&e);
                for (k, v) in headers {
                    resp.headers_mut().insert(k, v);
                }
                resp
            }
            ApiError::Meta(e @ MetaError::RepositoryLimit { .. }) => {
                oci_response(&OciError::new(ErrorCode::Denied, e.to_string()).with_status(403))
            }
            other => server_fault(&other),
        }
    }
}
