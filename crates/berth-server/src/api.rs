//! The operations part of the admin API under `/api/v1` (jobs, garbage collection, scrub,
//! storage accounting), for registry admins only, and `/metrics`, which is open like
//! `/healthz` so that a Prometheus scraper needs no account (it shows totals, no names).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};

use crate::admin::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{ErrorCode, OciError};

use berth_jobs::{GcOptions, JobReport, JobRequest, ScrubOptions};

use crate::caller::{Caller, require_admin};
use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name)
        .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
}

async fn queue(reg: &Registry, request: JobRequest) -> ApiResult<Response> {
    let id = reg
        .meta
        .enqueue_job(request.kind().as_str(), &request.payload(), false)
        .await?;
    reg.jobs_wake.notify_one();
    let body = serde_json::json!({ "job": id, "status": format!("/api/v1/jobs/{id}") });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST /api/v1/gc?dry_run&full`: queues a garbage collection run (or returns the one
/// already queued or running).
pub async fn start_gc(
    State(reg): State<Arc<Registry>>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    let opts = GcOptions {
        dry_run: flag(&q, "dry_run"),
        full: flag(&q, "full"),
        grace_period: None,
    };
    queue(&reg, JobRequest::Gc(opts)).await
}

/// `POST /api/v1/scrub`: queues a scrub.
pub async fn start_scrub(
    State(reg): State<Arc<Registry>>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    queue(&reg, JobRequest::Scrub(ScrubOptions::default())).await
}

/// `GET /api/v1/jobs?kind=gc&limit=20`: recent jobs, newest first, with their reports.
pub async fn list_jobs(
    State(reg): State<Arc<Registry>>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(20u32)
        .min(500);
    let jobs = reg
        .meta
        .list_jobs(q.get("kind").map(String::as_str), limit)
        .await?;
    Ok(Json(serde_json::json!({ "jobs": jobs })).into_response())
}

pub async fn get_job(
    State(reg): State<Arc<Registry>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    match reg.meta.get_job(id).await? {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(ApiError::Oci(
            OciError::new(ErrorCode::NameUnknown, format!("no job {id}")).with_status(404),
        )),
    }
}

/// `GET /api/v1/storage`: referenced, shared and reclaimable bytes per repository and in total.
pub async fn storage(
    State(reg): State<Arc<Registry>>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    Ok(Json(reg.meta.storage_usage().await?).into_response())
}

/// `GET /metrics`: Prometheus text. GC and scrub figures come from the jobs table, so runs
/// started by `berth gc` in another process are included.
pub async fn metrics(State(reg): State<Arc<Registry>>) -> ApiResult<Response> {
    let mut out = String::new();
    let jobs = reg.meta.list_jobs(None, 200).await?;
    let _ = writeln!(
        out,
        "# HELP berth_jobs Recent jobs by kind and state (last 200).\n# TYPE berth_jobs gauge"
    );
    let mut counts: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for j in &jobs {
        let state = serde_json::to_value(j.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *counts.entry((j.kind.clone(), state)).or_default() += 1;
    }
    for ((kind, state), n) in counts {
        let _ = writeln!(out, "berth_jobs{{kind=\"{kind}\",state=\"{state}\"}} {n}");
    }
    // The newest report of a real (not dry) run.
    let last_gc =
        jobs.iter().find_map(
            |j| match JobReport::from_stored(&j.kind, j.result.as_ref()) {
                Some(JobReport::Gc(r)) if !r.dry_run => Some(r),
                _ => None,
            },
        );
    if let Some(r) = last_gc {
        let finished = u64::try_from(r.finished_at).unwrap_or(0);
        let duration = u64::try_from(r.finished_at.saturating_sub(r.started_at)).unwrap_or(0);
        for (name, help, value) in [
            (
                "berth_gc_last_run_finished_seconds",
                "When the last GC run finished (epoch seconds).",
                finished / 1000,
            ),
            (
                "berth_gc_last_run_duration_milliseconds",
                "Duration of the last GC run.",
                duration,
            ),
            (
                "berth_gc_last_run_bytes_freed",
                "Bytes the last GC run freed.",
                r.bytes_freed,
            ),
            (
                "berth_gc_last_run_deleted_blobs",
                "Blobs the last GC run deleted.",
                r.deleted_blobs,
            ),
            (
                "berth_gc_last_run_deleted_manifests",
                "Manifests the last GC run deleted.",
                r.deleted_manifests,
            ),
            (
                "berth_gc_last_run_purged_uploads",
                "Idle uploads the last GC run purged.",
                r.purged_uploads,
            ),
            (
                "berth_gc_last_run_errors",
                "Errors in the last GC run.",
                r.errors.len() as u64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }
    let usage = reg.meta.storage_usage().await?;
    let c = &reg.connections.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP berth_connections_open Connections open now.\n# TYPE berth_connections_open gauge\n\
         berth_connections_open {}",
        reg.connections.open()
    );
    let _ = writeln!(
        out,
        "# HELP berth_connections_total Connections by what became of them at the door and \
         after (server.max_connections, server.max_connections_per_address, the idle timeouts).\n\
         # TYPE berth_connections_total counter"
    );
    for (outcome, value) in [
        ("accepted", load(&c.accepted)),
        ("refused_per_address", load(&c.refused_per_address)),
        ("refused_total", load(&c.refused_total)),
        ("evicted", load(&c.evicted)),
        ("closed_idle", load(&c.closed_idle)),
    ] {
        let _ = writeln!(
            out,
            "berth_connections_total{{outcome=\"{outcome}\"}} {value}"
        );
    }
    for (name, help, value) in [
        (
            "berth_accept_errors_total",
            "Failed accept() calls (out of file descriptors, most likely).",
            load(&c.accept_errors),
        ),
        (
            "berth_audit_events_written_total",
            "Audit events written by this process.",
            reg.audit.written.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "berth_audit_dropped_total",
            "Pull audit events dropped because the audit channel was full.",
            reg.audit.dropped.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    for (name, help, value) in [
        (
            "berth_storage_stored_bytes",
            "Bytes of all live blobs, each stored once.",
            usage.stored_bytes,
        ),
        (
            "berth_storage_referenced_bytes",
            "Bytes of blobs that manifests reference.",
            usage.referenced_bytes,
        ),
        (
            "berth_storage_reclaimable_bytes",
            "Bytes of blobs no manifest references.",
            usage.reclaimable_bytes,
        ),
        ("berth_storage_blobs", "Live blobs.", usage.blob_count),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    out.push_str(&crate::pullthrough::metrics_text(&reg.proxy.metrics));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
