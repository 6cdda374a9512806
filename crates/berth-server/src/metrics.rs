//! `/metrics`: Prometheus text, open like `/healthz` so that a scraper needs no account (it
//! shows totals, no names): jobs, the last GC run, connections, the audit writer, storage
//! and the pull-through cache.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiResult;

/// `GET /metrics`: Prometheus text. GC and scrub figures come from the jobs table, so runs
/// started by `berth gc` in another process are included.
pub async fn metrics(State(app): State<AppState>) -> ApiResult<Response> {
    let status = app.registry.status().await?;
    let mut out = String::new();
    let jobs = &status.jobs;
    let _ = writeln!(
        out,
        "# HELP berth_jobs Recent jobs by kind and state (last 200).\n# TYPE berth_jobs gauge"
    );
    let mut counts: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for j in jobs {
        let state = serde_json::to_value(j.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *counts.entry((j.kind.clone(), state)).or_default() += 1;
    }
    for ((kind, state), n) in counts {
        let _ = writeln!(out, "berth_jobs{{kind=\"{kind}\",state=\"{state}\"}} {n}");
    }
    if let Some(r) = &status.last_gc {
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
    let usage = &status.storage;
    let c = &app.connections.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP berth_connections_open Connections open now.\n# TYPE berth_connections_open gauge\n\
         berth_connections_open {}",
        app.connections.open()
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
            app.registry
                .audit
                .written
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "berth_audit_dropped_total",
            "Pull audit events dropped because the audit channel was full.",
            app.registry
                .audit
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
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
    out.push_str(&berth_service::pullthrough::metrics_text(
        &app.registry.proxy.metrics,
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
