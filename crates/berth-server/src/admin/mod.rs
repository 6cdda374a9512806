//! The admin REST API under `/api/v1`, one file per resource: `projects.rs` (and members),
//! `users.rs`, `robots.rs`, `repositories.rs` (tags and artifacts), `log.rs` (audit log,
//! search, token signing keys) and `jobs.rs` (GC, scrub, storage). Each handler parses its
//! request, calls one method of the services (berth-service), which check who may and record
//! what changed in the audit log, and renders the answer as JSON.
//!
//! The document of record is `src/openapi.json`, served at
//! `/api/v1/openapi.json`; a test checks that every route in `lib.rs` is in it. No response
//! contains a password or secret except the robot secret in the answer that creates it.

pub mod jobs;
pub mod log;
pub mod projects;
pub mod repositories;
pub mod robots;
pub mod users;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_service::Error;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

pub const OPENAPI: &str = include_str!("../openapi.json");

/// A path parameter; one that is not valid (not UTF-8, say) is a 400 with the error body,
/// like every other refusal of this API, not axum's plain-text rejection.
pub struct Path<T>(pub T);

impl<T, St> axum::extract::FromRequestParts<St> for Path<T>
where
    T: DeserializeOwned + Send,
    St: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &St,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| Error::invalid(format!("invalid path: {}", e.body_text())).into())
    }
}

/// A JSON request body of type `T` (unknown fields refused).
fn json_body<T: DeserializeOwned>(b: &Bytes) -> Result<T, Error> {
    berth_core::admin::parse_body(b).map_err(Error::invalid)
}

fn ok(v: Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn created(v: Value) -> Response {
    let mut r = ok(v);
    *r.status_mut() = StatusCode::CREATED;
    r
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    let mut r = Response::new(Body::from(OPENAPI));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
