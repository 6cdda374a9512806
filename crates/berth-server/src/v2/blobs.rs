//! `GET`, `HEAD` and `DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use berth_core::RepoName;
use berth_service::{BlobRead, BlobSource};

use super::V2;
use super::http::{DIGEST_HEADER, digest, empty, header_str, method_not_allowed};
use crate::App;
use crate::error::{ApiResult, hv};

pub(super) async fn handle(app: &App, req: V2, name: RepoName, d: &str) -> ApiResult<Response> {
    let d = digest(d)?;
    let reg = &app.registry;
    match req.method {
        Method::GET | Method::HEAD => {
            let range = header_str(&req.headers, header::RANGE);
            let read = reg.read_blob(&name, &d, range, req.is_head()).await?;
            let (size, range, body, source) = match read {
                BlobRead::Redirect { url } => {
                    let mut resp = Response::new(Body::empty());
                    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                    let h = resp.headers_mut();
                    h.insert(header::LOCATION, hv(&url));
                    h.insert(DIGEST_HEADER, hv(&d.to_string()));
                    return Ok(resp);
                }
                BlobRead::Bytes {
                    size,
                    range,
                    body,
                    source,
                } => (size, range, body, source),
            };
            let len = range.map_or(size, |(_, len)| len);
            let mut resp = Response::new(body.map_or_else(Body::empty, Body::from_stream));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            h.insert(DIGEST_HEADER, hv(&d.to_string()));
            h.insert(header::ETAG, hv(&format!("\"{d}\"")));
            if let BlobSource::Stored = source {
                h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=31536000"),
                );
            }
            if let Some((start, len)) = range {
                h.insert(
                    header::CONTENT_RANGE,
                    hv(&format!("bytes {start}-{}/{size}", start + len - 1)),
                );
                *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            }
            Ok(resp)
        }
        Method::DELETE => {
            reg.delete_blob(&req.caller, &name, &d).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        _ => Err(method_not_allowed()),
    }
}
