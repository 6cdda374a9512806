//! `/api/v1/robots`: robot accounts of the projects the caller administers.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use berth_core::admin::NewRobot;
use berth_meta::RobotRow;
use serde_json::{Value, json};

use super::{Path, created, json_body, no_content, ok, rfc3339};
use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiResult;

fn robot_json(r: &RobotRow) -> Value {
    json!({
        "name": r.name,
        "description": r.description,
        "expires_at": r.expires_at.map(rfc3339),
        "created_by": r.created_by,
        "created_at": rfc3339(r.created_at),
        "permissions": r.permissions.iter()
            .map(|(p, a)| json!({ "project": p, "actions": a.to_list() }))
            .collect::<Vec<_>>(),
    })
}

pub async fn list(State(app): State<AppState>, Caller(actor): Caller) -> ApiResult<Response> {
    let robots = app.registry.list_robots(&actor).await?;
    Ok(ok(robots.iter().map(robot_json).collect()))
}

/// `POST /api/v1/robots`: the answer carries the secret, the only time it is shown.
pub async fn create(
    State(app): State<AppState>,
    Caller(actor): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let r: NewRobot = json_body(&body)?;
    let made = app.registry.create_robot(&actor, r).await?;
    let mut v = robot_json(&made.robot);
    v["secret"] = made.secret.into();
    Ok(created(v))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    app.registry.delete_robot(&actor, &name).await?;
    Ok(no_content())
}
