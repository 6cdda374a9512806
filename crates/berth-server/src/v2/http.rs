//! What the `/v2` handlers share: reading headers, parameters and bodies, and building the
//! common responses.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use berth_core::range::{ChunkRange, parse_content_range};
use berth_core::{Digest, RepoName};
use berth_service::{Error, Page};
use berth_storage::ByteStream;
use futures_util::StreamExt;

use crate::App;
use crate::error::{ApiError, hv};

pub const DIGEST_HEADER: &str = "docker-content-digest";

pub fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this endpoint")
}

pub fn digest(s: &str) -> Result<Digest, Error> {
    Digest::parse(s).map_err(|e| Error::DigestInvalid {
        value: s.to_owned(),
        reason: e.to_string(),
    })
}

pub fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    match header_str(headers, header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| Error::SizeInvalid {
            reason: format!("Content-Length {v:?} is not a number"),
        }),
    }
}

pub fn content_range(headers: &HeaderMap) -> Result<Option<ChunkRange>, Error> {
    match header_str(headers, header::CONTENT_RANGE) {
        None => Ok(None),
        Some(v) => parse_content_range(v)
            .map(Some)
            .ok_or_else(|| Error::ContentRangeInvalid {
                value: v.to_owned(),
            }),
    }
}

/// The request body as a stream that fails when the client sends nothing for `idle`.
pub fn body_stream(body: Body, idle: Duration) -> ByteStream {
    let stream = body.into_data_stream();
    Box::pin(futures_util::stream::unfold(
        Some(stream),
        move |state| async move {
            let mut s = state?;
            match tokio::time::timeout(idle, s.next()).await {
                Ok(Some(Ok(b))) => Some((Ok(b), Some(s))),
                Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(io::Error::new(io::ErrorKind::TimedOut, "request body idle")),
                    None,
                )),
            }
        },
    ))
}

/// Whether a request body is known to be empty (no bytes will follow the headers).
pub fn body_is_empty(body: &Body) -> bool {
    http_body::Body::size_hint(body).exact() == Some(0)
}

pub fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// A `201 Created` for a blob now in the repository.
pub fn blob_created(app: &App, name: &RepoName, d: &Digest) -> Response {
    let mut r = empty(StatusCode::CREATED);
    r.headers_mut().insert(
        header::LOCATION,
        hv(&format!("{}/v2/{name}/blobs/{d}", app.url_base())),
    );
    r.headers_mut().insert(DIGEST_HEADER, hv(&d.to_string()));
    r
}

/// `n` and `last` of a paginated listing; `n` is capped at the configured page size.
pub fn pagination(app: &App, q: &HashMap<String, String>) -> Result<(u32, Option<String>), Error> {
    let max = app.registry.config.limits.page_max_entries;
    let n = match q.get("n").map(String::as_str) {
        None | Some("") => max,
        Some(v) => v.parse::<u32>().map_err(|_| Error::PaginationInvalid {
            value: v.to_owned(),
        })?,
    };
    Ok((n.min(max), q.get("last").cloned().filter(|l| !l.is_empty())))
}

pub fn json_response(body: serde_json::Value, content_type: &'static str) -> Response {
    let bytes = serde_json::to_vec(&body).expect("JSON values serialize");
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Adds the `Link` to the next page when there is one.
pub fn with_next_link<T>(
    mut r: Response,
    page: &Page<T>,
    url: impl FnOnce() -> String,
) -> Response {
    if page.more {
        r.headers_mut()
            .insert(header::LINK, hv(&format!("<{}>; rel=\"next\"", url())));
    }
    r
}
