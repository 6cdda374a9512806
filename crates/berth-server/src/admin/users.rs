//! `/api/v1/me` and `/api/v1/users`: who is signed in, local accounts, passwords.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use berth_core::admin::{NewUser, PasswordChange, UserChange};
use berth_meta::UserRow;
use serde_json::{Value, json};

use super::{Path, created, json_body, no_content, ok, rfc3339};
use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiResult;

fn user_json(u: &UserRow) -> Value {
    json!({
        "name": u.name, "admin": u.admin, "disabled": u.disabled, "source": u.source,
        "groups": u.ldap_groups, "created_at": rfc3339(u.created_at),
    })
}

pub async fn me(State(app): State<AppState>, Caller(actor): Caller) -> ApiResult<Response> {
    let me = app.registry.whoami(&actor)?;
    let mut v = json!({ "name": me.name, "kind": me.kind, "admin": me.admin });
    if let Some(groups) = me.groups {
        v["groups"] = json!(groups);
    }
    Ok(ok(v))
}

pub async fn list(State(app): State<AppState>, Caller(actor): Caller) -> ApiResult<Response> {
    let users = app.registry.list_users(&actor).await?;
    Ok(ok(users.iter().map(user_json).collect()))
}

pub async fn create(
    State(app): State<AppState>,
    Caller(actor): Caller,
    body: Bytes,
) -> ApiResult<Response> {
    let u: NewUser = json_body(&body)?;
    let row = app.registry.create_user(&actor, &u).await?;
    Ok(created(user_json(&row)))
}

pub async fn get(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let u = app.registry.user(&actor, &name).await?;
    Ok(ok(user_json(&u)))
}

pub async fn update(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let c: UserChange = json_body(&body)?;
    let u = app.registry.update_user(&actor, &name, &c).await?;
    Ok(ok(user_json(&u)))
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    app.registry.delete_user(&actor, &name).await?;
    Ok(no_content())
}

pub async fn set_password(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let c: PasswordChange = json_body(&body)?;
    app.registry.set_password(&actor, &name, &c).await?;
    Ok(no_content())
}
