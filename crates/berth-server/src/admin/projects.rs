//! `/api/v1/projects`, a project, its members and its repositories.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use berth_core::admin::{NewMember, NewProject, ProjectChange};
use berth_meta::{MemberRow, ProjectRow};
use serde_json::{Value, json};

use super::{Path, created, json_body, no_content, ok, rfc3339};
use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiResult;

pub(super) fn project_json(p: &ProjectRow) -> Value {
    json!({
        "name": p.name,
        "public": p.public,
        "created_at": rfc3339(p.created_at),
        "sparse_manifests": p.sparse_manifests,
    })
}

fn member_json(m: &MemberRow) -> Value {
    json!({ "kind": m.kind, "name": m.name, "role": m.role.as_str() })
}

pub async fn list(State(app): State<AppState>, Caller(actor): Caller) -> ApiResult<Response> {
    let projects = app.registry.list_projects(&actor).await?;
    Ok(ok(projects.iter().map(project_json).collect()))
}

pub async fn create(
    State(app): State<AppState>,
    Caller(actor): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let req: NewProject = json_body(&body)?;
    let p = app.registry.create_project(&actor, &req).await?;
    Ok(created(project_json(&p)))
}

pub async fn get(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let p = app.registry.project(&actor, &name).await?;
    Ok(ok(project_json(&p)))
}

pub async fn update(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let change: ProjectChange = json_body(&body)?;
    let p = app.registry.update_project(&actor, &name, &change).await?;
    Ok(ok(project_json(&p)))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    app.registry.delete_project(&actor, &name).await?;
    Ok(no_content())
}

pub async fn repositories(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let repos = app.registry.project_repositories(&actor, &name).await?;
    Ok(ok(repos
        .iter()
        .map(|r| json!({ "name": r.name, "tag_count": r.tag_count, "artifact_count": r.artifact_count }))
        .collect()))
}

pub async fn members(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let members = app.registry.members(&actor, &name).await?;
    Ok(ok(members.iter().map(member_json).collect()))
}

/// `PUT .../members`: 201 for a new member, 200 for a changed role.
pub async fn set_member(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let m: NewMember = json_body(&body)?;
    let set = app.registry.set_member(&actor, &name, &m).await?;
    let v = member_json(&set.member);
    Ok(if set.added { created(v) } else { ok(v) })
}

/// `DELETE .../members?kind=user&name=alice`.
pub async fn remove_member(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let arg = |k: &str| q.get(k).map_or("", String::as_str);
    app.registry
        .remove_member(&actor, &name, arg("kind"), arg("name"))
        .await?;
    Ok(no_content())
}
