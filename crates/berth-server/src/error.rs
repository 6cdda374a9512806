//! The one place errors become HTTP responses: every [`berth_service::Error`] gets its status,
//! its code and, where a client needs them, its headers here. Both APIs answer with the same
//! body, `{"errors":[{"code","message","detail"}]}`: the registry API with the codes of the
//! distribution-spec (and Distribution's `UNKNOWN`, `UNAVAILABLE` and
//! `PAGINATION_NUMBER_INVALID`), the admin API with those and its own `INVALID`, `NOT_FOUND`
//! and `CONFLICT`.
//!
//! Client mistakes are not logged as errors; server faults are logged with the request's span
//! (and so its request id) and answered with a generic body that leaks no internals. Two
//! headers depend on the request rather than the error (the `WWW-Authenticate` realm is the
//! host the client addressed, a `Location` starts with the external URL); the error leaves a
//! note on the response ([`Challenge`], [`UploadAt`]) and [`finish`] writes them.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_meta::{DbCondition, MetaError};
use berth_service::Error;
use berth_storage::{StorageError, StorageErrorKind};
use serde_json::{Value, json};

use crate::AppState;
use crate::request_log::FailureCause;

/// The codes a response can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    // The distribution-spec's table.
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    // Distribution's, which clients know.
    Unknown,
    Unavailable,
    PaginationNumberInvalid,
    // The admin API's.
    Invalid,
    NotFound,
    Conflict,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::TagInvalid => "TAG_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unknown => "UNKNOWN",
            Code::Unavailable => "UNAVAILABLE",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::Invalid => "INVALID",
            Code::NotFound => "NOT_FOUND",
            Code::Conflict => "CONFLICT",
        }
    }
}

/// What a handler can fail with: a service error, or one of the refusals that exist only in
/// HTTP (no such endpoint, a method the endpoint does not take).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] Error),
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("{0}")]
    MethodNotAllowed(&'static str),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> Self {
        ApiError::Service(e.into())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError::Service(e.into())
    }
}

/// A 401 to be completed with the `WWW-Authenticate` challenge of the request's host.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub scope: Option<String>,
    /// `invalid_token` or `insufficient_scope`.
    pub error: Option<&'static str>,
}

/// An answer about an upload session, to be completed with its `Location`.
#[derive(Debug, Clone)]
pub struct UploadAt(pub String);

/// An error as the client sees it.
struct Answer {
    status: u16,
    code: Code,
    message: String,
    detail: Option<Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    challenge: Option<Challenge>,
    upload: Option<String>,
}

impl Answer {
    fn new(status: u16, code: Code, message: impl Into<String>) -> Answer {
        Answer {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            challenge: None,
            upload: None,
        }
    }

    fn detail(mut self, detail: Value) -> Answer {
        self.detail = Some(detail);
        self
    }

    fn header(mut self, name: HeaderName, value: impl Into<HeaderValue>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    fn challenge(mut self, scope: Option<String>, error: Option<&'static str>) -> Answer {
        self.challenge = Some(Challenge { scope, error });
        self
    }

    fn retry_after(self, wait: Duration) -> Answer {
        self.header(header::RETRY_AFTER, wait.as_secs().max(1))
    }

    fn into_response(self) -> Response {
        let mut resp = body(self.status, self.code, &self.message, self.detail.as_ref());
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        if let Some(c) = self.challenge {
            resp.extensions_mut().insert(c);
        }
        if let Some(u) = self.upload {
            resp.extensions_mut().insert(UploadAt(u));
        }
        resp
    }
}

/// The error body.
fn body(status: u16, code: Code, message: &str, detail: Option<&Value>) -> Response {
    let mut item = json!({ "code": code.as_str(), "message": message });
    if let Some(d) = detail {
        item["detail"] = d.clone();
    }
    let mut resp = Response::new(Body::from(json!({ "errors": [item] }).to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// How long a client is asked to wait before retrying when a store is unavailable and did not
/// say.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The answer to a client's error; `None` for a fault of the server or its stores.
fn client_answer(e: &Error) -> Option<Answer> {
    let msg = e.to_string();
    Some(match e {
        Error::NameInvalid { value, .. } => {
            Answer::new(400, Code::NameInvalid, msg).detail(json!({ "name": value }))
        }
        Error::NameUnknown { name } => {
            Answer::new(404, Code::NameUnknown, msg).detail(json!({ "name": name }))
        }
        Error::DigestInvalid { value, .. } => {
            Answer::new(400, Code::DigestInvalid, msg).detail(json!({ "digest": value }))
        }
        Error::DigestRequired => Answer::new(400, Code::DigestInvalid, msg),
        Error::TagInvalid { value, .. } => {
            Answer::new(400, Code::TagInvalid, msg).detail(json!({ "tag": value }))
        }
        // The spec allows 414 for a push naming more tags than the registry takes.
        Error::TooManyTags { .. } => Answer::new(414, Code::TagInvalid, msg),
        Error::PaginationInvalid { .. } => Answer::new(400, Code::PaginationNumberInvalid, msg),
        Error::BlobUnknown { digest } => {
            Answer::new(404, Code::BlobUnknown, msg).detail(json!({ "digest": digest.to_string() }))
        }
        Error::UploadUnknown => Answer::new(404, Code::BlobUploadUnknown, msg),
        Error::UploadOutOfOrder {
            repository,
            upload,
            offset,
            ..
        } => {
            let mut a = Answer::new(416, Code::BlobUploadInvalid, msg)
                .header(header::RANGE, hv(&range_value(*offset)));
            a.upload = Some(format!("/v2/{repository}/blobs/uploads/{upload}"));
            a
        }
        Error::DigestMismatch { expected, actual } => Answer::new(400, Code::DigestInvalid, msg)
            .detail(json!({ "digest": expected.to_string(), "actual": actual.to_string() })),
        Error::SizeInvalid { .. } => Answer::new(400, Code::SizeInvalid, msg),
        Error::UploadBodyFailed { .. } => Answer::new(400, Code::BlobUploadInvalid, msg),
        Error::ContentRangeInvalid { .. } => Answer::new(416, Code::BlobUploadInvalid, msg),
        Error::RangeUnsatisfiable { size } => Answer::new(416, Code::BlobUploadInvalid, msg)
            .header(header::CONTENT_RANGE, hv(&format!("bytes */{size}"))),
        Error::UploadMemoryExhausted => {
            Answer::new(429, Code::TooManyRequests, msg).retry_after(Duration::from_secs(1))
        }
        Error::AlgorithmUnsupported(_) => Answer::new(400, Code::DigestInvalid, msg),
        Error::ManifestInvalid { .. } => Answer::new(400, Code::ManifestInvalid, msg),
        Error::ManifestTooLarge { .. } => Answer::new(413, Code::ManifestInvalid, msg),
        Error::ManifestUnknown { reference } => {
            Answer::new(404, Code::ManifestUnknown, msg).detail(json!({ "reference": reference }))
        }
        Error::ManifestBlobUnknown { digest, .. } => {
            Answer::new(400, Code::ManifestBlobUnknown, msg)
                .detail(json!({ "digest": digest.to_string() }))
        }
        Error::ManifestChildUnknown { digest, .. } => Answer::new(400, Code::ManifestUnknown, msg)
            .detail(json!({ "digest": digest.to_string() })),
        // The spec lists 202, 400, 404 and 405 for a manifest delete: a refusal the client
        // must not retry is 400.
        Error::ListedBy { digest, indexes } => Answer::new(400, Code::Denied, msg)
            .detail(json!({ "digest": digest.to_string(), "indexes": indexes })),
        Error::NoPlatformImage { reference } => {
            Answer::new(404, Code::ManifestUnknown, msg).detail(json!({ "reference": reference }))
        }
        Error::DeletesDisabled => Answer::new(405, Code::Unsupported, msg),
        Error::ReadOnlyProxy { .. } => Answer::new(403, Code::Denied, msg),
        Error::AuthenticationRequired { scope } => {
            Answer::new(401, Code::Unauthorized, msg).challenge(scope.clone(), None)
        }
        Error::InsufficientScope { scope, .. } => Answer::new(401, Code::Unauthorized, msg)
            .challenge(Some(scope.clone()), Some("insufficient_scope")),
        Error::Denied { scope, .. } => {
            let a = Answer::new(403, Code::Denied, msg);
            match scope {
                Some(s) => a.detail(json!({ "scope": s })),
                None => a,
            }
        }
        Error::LoginFailed | Error::LoginUnavailable => {
            Answer::new(401, Code::Unauthorized, msg).challenge(None, None)
        }
        Error::TokenInvalid => {
            Answer::new(401, Code::Unauthorized, msg).challenge(None, Some("invalid_token"))
        }
        Error::Throttled { retry_after } => {
            Answer::new(429, Code::TooManyRequests, msg).retry_after(*retry_after)
        }
        Error::LoginsBusy => {
            Answer::new(429, Code::TooManyRequests, msg).retry_after(Duration::from_secs(1))
        }
        Error::UpstreamRateLimited { retry_after, .. } => {
            let a = Answer::new(429, Code::TooManyRequests, msg);
            match retry_after {
                Some(w) => a.retry_after(*w),
                None => a,
            }
        }
        // Registries answer 401 for a repository that does not exist as for one the
        // credentials may not read, so neither is a fault of the upstream.
        Error::UpstreamUnauthorized { .. } => Answer::new(404, Code::NameUnknown, msg),
        Error::UpstreamFailed { .. } => Answer::new(502, Code::Unknown, msg),
        Error::Invalid { .. } => Answer::new(400, Code::Invalid, msg),
        Error::NotFound { .. } => Answer::new(404, Code::NotFound, msg),
        Error::Conflict { .. } => Answer::new(409, Code::Conflict, msg),
        Error::ScanFailed { .. } => Answer::new(422, Code::Invalid, msg),
        Error::Meta(MetaError::RepositoryLimit { .. }) => Answer::new(403, Code::Denied, msg),
        Error::Meta(_) | Error::Storage(_) | Error::Internal(_) => return None,
    })
}

/// The answer to a fault of the server or its stores: the cause the client can act on (out
/// of space; unavailable, retry) or a generic 500, logged with the request's span.
fn server_fault(e: &Error) -> Answer {
    let unavailable = |status, message: String| Answer::new(status, Code::Unavailable, message);
    match e {
        Error::Storage(s) => match s.kind {
            StorageErrorKind::Full => {
                tracing::error!(error = %s, "the blob store is out of space");
                unavailable(
                    507,
                    "the blob store is out of space; free space (delete images and run garbage \
                     collection) and retry"
                        .into(),
                )
            }
            StorageErrorKind::Timeout => {
                tracing::warn!(error = %s, "blob store timed out");
                unavailable(503, "the blob store did not answer in time; retry".into())
                    .retry_after(RETRY_AFTER)
            }
            StorageErrorKind::Unavailable => {
                tracing::warn!(error = %s, "blob store unavailable");
                unavailable(503, "the blob store is unavailable; retry".into())
                    .retry_after(RETRY_AFTER)
            }
            StorageErrorKind::Io | StorageErrorKind::Unauthorized => {
                tracing::error!(error = %s, "blob store failed");
                unavailable(
                    503,
                    format!(
                        "the blob store failed (I/O error: {}); retry later",
                        s.source
                    ),
                )
                .retry_after(RETRY_AFTER)
            }
            StorageErrorKind::NotFound => internal(e),
        },
        Error::Meta(m) => match m.condition() {
            DbCondition::Full => {
                tracing::error!(error = %m, "the database is out of space");
                unavailable(
                    507,
                    "the metadata database is out of space; free space and retry".into(),
                )
            }
            DbCondition::Unavailable => {
                tracing::warn!(error = %m, "database unavailable");
                unavailable(503, "the metadata database is unavailable; retry".into())
                    .retry_after(RETRY_AFTER)
            }
            DbCondition::Other => internal(e),
        },
        other => internal(other),
    }
}

fn internal(e: &Error) -> Answer {
    tracing::error!(error = %e, "request failed");
    Answer::new(
        500,
        Code::Unknown,
        "internal server error; see the server log",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = match self {
            ApiError::Service(e) => e,
            ApiError::NoSuchEndpoint => {
                return Answer::new(404, Code::Unsupported, "no such endpoint").into_response();
            }
            ApiError::MethodNotAllowed(hint) => {
                return Answer::new(405, Code::Unsupported, hint).into_response();
            }
        };
        match client_answer(&e) {
            Some(a) => {
                if a.status >= 500 {
                    tracing::warn!(code = a.code.as_str(), message = %a.message, "request failed");
                    let mut resp = a.into_response();
                    resp.extensions_mut().insert(FailureCause(e.to_string()));
                    resp
                } else {
                    tracing::debug!(code = a.code.as_str(), message = %a.message, "client error");
                    a.into_response()
                }
            }
            None => {
                let mut resp = server_fault(&e).into_response();
                resp.extensions_mut().insert(FailureCause(e.to_string()));
                resp
            }
        }
    }
}

pub fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Range` header of an upload at `offset`: bytes `0-(offset-1)` are stored. With nothing
/// stored it is `0-0`, as Distribution answers; clients read the end only after a write.
pub fn range_value(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// The `WWW-Authenticate` realm: the configured one, else this server's token endpoint as the
/// client addressed it.
pub fn realm(app: &crate::App, headers: &HeaderMap) -> String {
    let auth = &app.registry.auth.config;
    if !auth.realm.is_empty() {
        return auth.realm.clone();
    }
    let config = &app.registry.config;
    let base = match config.server.external_url.as_deref() {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let scheme = if config.server.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    !h.is_empty()
                        && h.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
                })
                .unwrap_or("localhost");
            format!("{scheme}://{host}")
        }
    };
    format!("{base}/auth/token")
}

/// The middleware that completes error answers with what depends on the request: the Bearer
/// challenge of a 401 and the `Location` of an upload refused mid-way.
pub async fn finish(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers().clone();
    let mut resp = next.run(req).await;
    if let Some(c) = resp.extensions_mut().remove::<Challenge>() {
        let mut v = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            realm(&app, &headers),
            app.registry.auth.config.service
        );
        if let Some(s) = &c.scope {
            v.push_str(&format!(",scope=\"{s}\""));
        }
        if let Some(e) = c.error {
            v.push_str(&format!(",error=\"{e}\""));
        }
        let value =
            HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    if let Some(UploadAt(path)) = resp.extensions_mut().remove::<UploadAt>() {
        let location = format!("{}{path}", app.url_base());
        resp.headers_mut().insert(header::LOCATION, hv(&location));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_have_the_spec_shape() {
        let d = berth_core::Digest::sha256_of(b"x");
        let resp = ApiError::from(Error::BlobUnknown { digest: d.clone() }).into_response();
        assert_eq!(resp.status(), 404);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["detail"]["digest"], d.to_string());
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(&d.to_string())
        );
        let resp = ApiError::from(Error::ManifestTooLarge { limit: 10 }).into_response();
        assert_eq!(resp.status(), 413);
    }

    #[tokio::test]
    async fn server_faults_leak_nothing() {
        let resp = ApiError::from(Error::Internal("secret path /x".into())).into_response();
        assert_eq!(resp.status(), 500);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret"));
    }
}
