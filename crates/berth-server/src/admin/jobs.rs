//! The operations part of the admin API, for registry admins: `/api/v1/gc`,
//! `/api/v1/scrub`, `/api/v1/jobs`, `/api/v1/storage` and `/api/v1/vulndb`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_jobs::{GcOptions, JobRequest, ScrubOptions, VulndbSyncOptions};

use super::Path;
use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiResult;

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name)
        .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

async fn queue(app: &AppState, caller: Caller, request: JobRequest) -> ApiResult<Response> {
    let id = app.registry.queue_job(&caller.0, request).await?;
    let body = serde_json::json!({ "job": id, "status": format!("/api/v1/jobs/{id}") });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST /api/v1/gc?dry_run&full`: queues a garbage collection run (or returns the one
/// already queued or running).
pub async fn start_gc(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let opts = GcOptions {
        dry_run: flag(&q, "dry_run"),
        full: flag(&q, "full"),
        grace_period: None,
    };
    queue(&app, caller, JobRequest::Gc(opts)).await
}

/// `POST /api/v1/scrub`: queues a scrub.
pub async fn start_scrub(State(app): State<AppState>, caller: Caller) -> ApiResult<Response> {
    queue(&app, caller, JobRequest::Scrub(ScrubOptions::default())).await
}

/// `POST /api/v1/vulndb/sync`: queues an import of `vulndb.sources` (409 when none are
/// configured: the job could only fail).
pub async fn start_vulndb_sync(State(app): State<AppState>, caller: Caller) -> ApiResult<Response> {
    app.registry.require_admin(&caller.0)?;
    if app.registry.config.vulndb.sources.is_empty() {
        return Err(berth_service::Error::conflict(
            "vulndb.sources is empty: nothing to sync (import files with `berth vulndb import`, \
             or configure sources)",
        )
        .into());
    }
    queue(
        &app,
        caller,
        JobRequest::VulndbSync(VulndbSyncOptions::default()),
    )
    .await
}

/// `GET /api/v1/vulndb`: the vulnerability database's published version, feeds and
/// ecosystems.
pub async fn vulndb_status(
    State(app): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Response> {
    let status = app.registry.vulndb_status(&actor).await?;
    Ok(Json(status).into_response())
}

/// `GET /api/v1/jobs?kind=gc&limit=20`: recent jobs, newest first, with their reports.
pub async fn list(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let jobs = app
        .registry
        .jobs(&actor, q.get("kind").map(String::as_str), limit)
        .await?;
    Ok(Json(serde_json::json!({ "jobs": jobs })).into_response())
}

pub async fn get(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    Ok(Json(app.registry.job(&actor, id).await?).into_response())
}

/// `GET /api/v1/storage`: referenced, shared and reclaimable bytes per repository and in total.
pub async fn storage(State(app): State<AppState>, Caller(actor): Caller) -> ApiResult<Response> {
    Ok(Json(app.registry.storage_usage(&actor).await?).into_response())
}
