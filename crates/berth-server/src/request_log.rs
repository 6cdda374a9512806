//! One log line per request, written when its response is sent (or abandoned): request id
//! (also sent back as `X-Request-Id`), method, path and query string (secrets removed), the
//! caller (user or robot name), status, bytes received and sent, and the duration in
//! milliseconds to two decimals. A 5xx line says "request failed" at error level and names its
//! cause (which `error.rs` attaches to the response).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{Extensions, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Query parameters whose values never reach the log.
const SECRET_KEYS: [&str; 5] = ["password", "token", "secret", "signature", "credential"];

/// Where the handler records who called, for the log line.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<String>>);

/// Records the caller's name for this request's log line (the first name recorded wins).
pub fn record_caller(ext: &Extensions, name: &str) {
    if let Some(slot) = ext.get::<CallerSlot>()
        && !name.is_empty()
    {
        let _ = slot.0.set(name.to_owned());
    }
}

/// Why a request failed, attached to a 5xx response for its log line.
#[derive(Clone)]
pub struct FailureCause(pub String);

/// A query string with the values of secret-looking parameters replaced.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _))
                if SECRET_KEYS
                    .iter()
                    .any(|s| k.to_ascii_lowercase().contains(s)) =>
            {
                format!("{k}=REDACTED")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn request_id(req: &Request<Body>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The middleware.
pub async fn request_log(mut req: Request<Body>, next: Next) -> Response {
    let id = request_id(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(redact_query).unwrap_or_default();
    let span = tracing::info_span!("request", id = %id, method = %method, path = %path);
    let start = Instant::now();
    let caller = CallerSlot::default();
    req.extensions_mut().insert(caller.clone());
    let bytes_in = Arc::new(AtomicU64::new(0));
    let req = req.map(|body| {
        Body::new(CountedIn {
            body,
            count: bytes_in.clone(),
        })
    });
    let resp = next.run(req).instrument(span.clone()).await;
    let (mut parts, body) = resp.into_parts();
    if let Ok(v) = HeaderValue::from_str(&id) {
        parts.headers.insert("x-request-id", v);
    }
    let line = Line {
        span,
        status: parts.status.as_u16(),
        query,
        caller: caller.0,
        cause: parts.extensions.get::<FailureCause>().map(|c| c.0.clone()),
        start,
        bytes_in,
        bytes_out: 0,
        body_error: None,
    };
    Response::from_parts(
        parts,
        Body::new(LoggedOut {
            body,
            line: Some(line),
        }),
    )
}

struct Line {
    span: tracing::Span,
    status: u16,
    query: String,
    caller: Arc<OnceLock<String>>,
    cause: Option<String>,
    start: Instant,
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
    /// Set when the response body failed after its head was sent (the client sees the
    /// connection cut).
    body_error: Option<String>,
}

impl Line {
    fn emit(self) {
        let ms = (self.start.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
        let caller = self.caller.get().map(String::as_str).unwrap_or("");
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let (status, bytes_out, query) = (self.status, self.bytes_out, self.query.as_str());
        self.span.in_scope(|| {
            if let Some(cause) = &self.body_error {
                tracing::error!(
                    status,
                    query,
                    caller,
                    bytes_in,
                    bytes_out,
                    ms,
                    cause = cause.as_str(),
                    "response failed after its head was sent; the connection was cut"
                );
            } else if status >= 500 {
                let cause = self.cause.as_deref().unwrap_or("");
                tracing::error!(
                    status,
                    query,
                    caller,
                    bytes_in,
                    bytes_out,
                    ms,
                    cause,
                    "request failed"
                );
            } else {
                tracing::info!(status, query, caller, bytes_in, bytes_out, ms, "request");
            }
        });
    }
}

/// A request body that counts the bytes the handler reads.
struct CountedIn {
    body: Body,
    count: Arc<AtomicU64>,
}

impl http_body::Body for CountedIn {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that counts the bytes sent and writes the log line when it ends (or is
/// dropped, when the client went away).
struct LoggedOut {
    body: Body,
    line: Option<Line>,
}

impl http_body::Body for LoggedOut {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(line)) = (frame.data_ref(), self.line.as_mut()) {
                    line.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(line) = self.line.take() {
                    line.emit();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut line) = self.line.take() {
                    line.body_error = Some(e.to_string());
                    line.emit();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for LoggedOut {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            line.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_queries() {
        assert_eq!(
            redact_query("service=berth&refresh_token=abc&scope=x"),
            "service=berth&refresh_token=REDACTED&scope=x"
        );
        assert_eq!(redact_query("n=5&last=a"), "n=5&last=a");
        assert_eq!(
            redact_query("X-Amz-Signature=ff&password=p"),
            "X-Amz-Signature=REDACTED&password=REDACTED"
        );
    }
}
