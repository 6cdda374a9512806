//! `/api/v1/audit` (the audit log), `/api/v1/search`, `/api/v1/token-keys`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use berth_meta::AuditFilter;
use berth_service::Error;
use serde_json::json;

use super::projects::project_json;
use super::{created, ok, rfc3339};
use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiResult;

fn parse_time(s: &str) -> Result<i64, Error> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| Error::invalid(format!("{s:?} is not an RFC 3339 time: {e}")))
}

/// `GET /api/v1/audit?actor=&action=&resource=&result=&since=&until=&before=&limit=`.
pub async fn query(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let s = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let limit = match s("limit") {
        None => 0,
        Some(l) => l
            .parse::<u32>()
            .map_err(|_| Error::invalid("limit must be a number"))?
            .max(1),
    };
    let filter = AuditFilter {
        actor: s("actor"),
        action: s("action"),
        resource: s("resource"),
        result: s("result"),
        since: s("since").map(|t| parse_time(&t)).transpose()?,
        until: s("until").map(|t| parse_time(&t)).transpose()?,
        before: s("before")
            .map(|b| {
                b.parse::<i64>()
                    .map_err(|_| Error::invalid("before must be an event id"))
            })
            .transpose()?,
        limit,
    };
    let page = app.registry.audit_log(&actor, filter).await?;
    Ok(ok(json!({
        "events": page.events.iter().map(|e| json!({
            "id": e.id, "time": rfc3339(e.at), "actor": e.actor, "actor_kind": e.actor_kind,
            "action": e.action, "resource": e.resource, "source": e.source,
            "result": e.result, "detail": e.detail, "count": e.count,
        })).collect::<Vec<_>>(),
        "next": page.next,
    })))
}

/// `POST /api/v1/token-keys`: adds a token signing key (rotation).
pub async fn rotate_token_key(
    State(app): State<AppState>,
    Caller(actor): Caller,
) -> ApiResult<Response> {
    let kid = app.registry.rotate_token_key(&actor).await?;
    Ok(created(json!({ "kid": kid })))
}

/// `GET /api/v1/search?q=…`: projects and repositories whose name contains `q`, among those
/// the caller may read.
pub async fn search(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let needle = q.get("q").map_or("", String::as_str);
    let found = app.registry.search(&actor, needle).await?;
    Ok(ok(json!({
        "projects": found.projects.iter().map(project_json).collect::<Vec<_>>(),
        "repositories": found.repositories,
    })))
}
