//! The admin REST API under `/api/v1`: projects and their members, users, robot accounts,
//! repositories' tags and artifacts, and the audit log. The document of record is
//! `openapi.json` beside this file, served at `/api/v1/openapi.json`; a test checks that every
//! route here is in it. Every change is written to the audit log; no response or event ever
//! contains a password or secret except the robot secret in the answer that creates it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_auth::{Principal, ROBOT_PREFIX, secret};
use berth_core::access::{Action, Actions, Role};
use berth_core::admin::{
    self, MemberKey, NewMember, NewProject, NewRobot, NewUser, PasswordChange, ProjectChange,
    UserChange,
};
use berth_core::{Digest, ErrorCode, OciError, Reference, RepoName, TagName};
use berth_meta::{AuditFilter, CreateError, ProjectDeletion, ProjectRow, now_ms};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::caller::{Caller, forbidden, require, require_admin, require_signed_in};
use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

pub const OPENAPI: &str = include_str!("openapi.json");

type S = State<Arc<Registry>>;

/// A path parameter; one that is not valid (not UTF-8, say) is a 400 with the OCI error body,
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
            .map_err(|e| invalid(format!("invalid path: {}", e.body_text())))
    }
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::oci(ErrorCode::Invalid, msg)
}

fn not_found(what: &str) -> ApiError {
    ApiError::oci(ErrorCode::NotFound, format!("{what} not found"))
}

fn conflict(msg: impl Into<String>) -> ApiError {
    ApiError::oci(ErrorCode::Conflict, msg)
}

/// A create's result, with "already exists" answered as 409.
fn created_once<T>(r: Result<T, CreateError>, what: impl FnOnce() -> String) -> ApiResult<T> {
    match r {
        Ok(v) => Ok(v),
        Err(CreateError::Exists) => Err(conflict(format!("{} exists", what()))),
        Err(CreateError::Meta(e)) => Err(e.into()),
    }
}

fn json_body<T: DeserializeOwned>(b: &Bytes) -> ApiResult<T> {
    admin::parse_body(b).map_err(invalid)
}

fn ok(v: Value) -> Response {
    let mut r = Response::new(axum::body::Body::from(v.to_string()));
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

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn parse_time(s: &str) -> ApiResult<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| invalid(format!("{s:?} is not an RFC 3339 time: {e}")))
}

fn project_name(s: &str) -> ApiResult<()> {
    admin::check_project_name(s).map_err(invalid)
}

fn check_password(p: &str) -> ApiResult<()> {
    admin::check_password(p).map_err(invalid)
}

async fn audit(reg: &Registry, caller: &Caller, action: &str, resource: &str, detail: &str) {
    reg.audit
        .record(&caller.actor(), action, resource, true, detail)
        .await;
}

async fn project_or_404(reg: &Registry, name: &str) -> ApiResult<ProjectRow> {
    reg.meta
        .project(name)
        .await?
        .ok_or_else(|| not_found(&format!("project {name}")))
}

async fn actions_in(reg: &Registry, caller: &Caller, project: &str) -> ApiResult<Actions> {
    Ok(reg.auth.project_actions(&caller.principal, project).await?)
}

/// A project the caller may read; a project they may not see answers 404, as a missing one.
async fn readable_project(reg: &Registry, caller: &Caller, name: &str) -> ApiResult<ProjectRow> {
    let p = project_or_404(reg, name).await?;
    if !actions_in(reg, caller, name).await?.contains(Action::Pull) {
        return Err(not_found(&format!("project {name}")));
    }
    Ok(p)
}

/// Whether the caller administers the project (registry admin or project admin).
async fn is_project_admin(reg: &Registry, caller: &Caller, p: &ProjectRow) -> ApiResult<bool> {
    if !reg.auth.enabled() || caller.principal.is_admin() {
        return Ok(true);
    }
    Ok(match &caller.principal {
        Principal::User { name, groups, .. } => {
            reg.meta.best_role(p.id, name, groups).await? == Some(Role::Admin)
        }
        _ => false,
    })
}

async fn require_project_admin(
    reg: &Registry,
    caller: &Caller,
    headers: &HeaderMap,
    p: &ProjectRow,
) -> ApiResult<()> {
    require_signed_in(reg, caller, headers)?;
    if is_project_admin(reg, caller, p).await? {
        Ok(())
    } else {
        Err(forbidden("this needs the project's admin role"))
    }
}

// ---- identity ----

pub async fn me(State(reg): S, caller: Caller, headers: HeaderMap) -> ApiResult<Response> {
    require_signed_in(&reg, &caller, &headers)?;
    let p = &caller.principal;
    let mut v =
        json!({ "name": p.name(), "kind": p.kind(), "admin": p.is_admin() || !reg.auth.enabled() });
    if let Principal::User { groups, .. } = p {
        v["groups"] = json!(groups);
    }
    Ok(ok(v))
}

pub async fn openapi() -> Response {
    let mut r = Response::new(axum::body::Body::from(OPENAPI));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

// ---- projects ----

fn project_json(p: &ProjectRow) -> Value {
    json!({
        "name": p.name,
        "public": p.public,
        "created_at": rfc3339(p.created_at),
        "sparse_manifests": p.sparse_manifests,
    })
}

pub async fn list_projects(State(reg): S, caller: Caller) -> ApiResult<Response> {
    let mut out = Vec::new();
    for p in reg.meta.list_projects().await? {
        if actions_in(&reg, &caller, &p.name)
            .await?
            .contains(Action::Pull)
        {
            out.push(project_json(&p));
        }
    }
    Ok(ok(Value::Array(out)))
}

pub async fn create_project(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    let req: NewProject = json_body(&body)?;
    project_name(&req.name)?;
    let p = created_once(
        reg.meta.create_project(&req.name, req.public, None).await,
        || format!("project {}", req.name),
    )?;
    let detail = format!("public={}", p.public);
    audit(&reg, &caller, "project.create", &p.name, &detail).await;
    Ok(created(project_json(&p)))
}

pub async fn get_project(
    State(reg): S,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let p = readable_project(&reg, &caller, &name).await?;
    Ok(ok(project_json(&p)))
}

pub async fn update_project(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let p = readable_project(&reg, &caller, &name).await?;
    require_project_admin(&reg, &caller, &headers, &p).await?;
    let change: ProjectChange = json_body(&body)?;
    if let Some(public) = change.public {
        reg.meta.set_project_public(&name, public).await?;
        audit(
            &reg,
            &caller,
            "project.update",
            &name,
            &format!("public={public}"),
        )
        .await;
    }
    if let Some(sparse) = change.sparse_manifests {
        reg.meta.set_project_sparse(&name, sparse).await?;
        let shown = sparse.map_or("default".to_owned(), |b| b.to_string());
        audit(
            &reg,
            &caller,
            "project.update",
            &name,
            &format!("sparse_manifests={shown}"),
        )
        .await;
    }
    let p = project_or_404(&reg, &name).await?;
    Ok(ok(project_json(&p)))
}

pub async fn delete_project(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    match reg.meta.delete_project(&name).await? {
        ProjectDeletion::NotFound => Err(not_found(&format!("project {name}"))),
        ProjectDeletion::HoldsRepositories(repos) => Err(conflict(format!(
            "project {name} still holds repositories with content ({}); delete them first \
             (DELETE /api/v1/repositories/<name>, or berth repo delete <name>)",
            repos.join(", ")
        ))),
        ProjectDeletion::Deleted { empty_repositories } => {
            audit(
                &reg,
                &caller,
                "project.delete",
                &name,
                &format!("empty repositories removed: {empty_repositories}"),
            )
            .await;
            Ok(no_content())
        }
    }
}

pub async fn project_repositories(
    State(reg): S,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let p = readable_project(&reg, &caller, &name).await?;
    let repos = reg.meta.project_repositories(p.id).await?;
    Ok(ok(Value::Array(
        repos
            .iter()
            .map(|r| json!({ "name": r.name, "tag_count": r.tag_count, "artifact_count": r.artifact_count }))
            .collect(),
    )))
}

// ---- members ----

pub async fn list_members(
    State(reg): S,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let p = readable_project(&reg, &caller, &name).await?;
    let members = reg.meta.members(p.id).await?;
    Ok(ok(Value::Array(
        members
            .iter()
            .map(|m| json!({ "kind": m.kind, "name": m.name, "role": m.role.as_str() }))
            .collect(),
    )))
}

fn member_key(kind: &str, name: &str) -> ApiResult<(String, String)> {
    match admin::member_key(kind, name).map_err(invalid)? {
        MemberKey::User(u) => Ok(("user".into(), u)),
        MemberKey::Group(g) => Ok(("group".into(), berth_auth::ldap::normalize_dn(&g))),
    }
}

pub async fn set_member(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let p = readable_project(&reg, &caller, &name).await?;
    require_project_admin(&reg, &caller, &headers, &p).await?;
    let m: NewMember = json_body(&body)?;
    let (key, role) = m.checked().map_err(invalid)?;
    let (kind, member) = match key {
        MemberKey::User(u) => ("user".to_owned(), u),
        MemberKey::Group(g) => ("group".to_owned(), berth_auth::ldap::normalize_dn(&g)),
    };
    let new = reg.meta.set_member(p.id, &kind, &member, role).await?;
    // The resource starts with the project, so a prefix query on it finds member changes.
    let resource = format!("{name}/members/{kind}:{member}");
    audit(
        &reg,
        &caller,
        "member.set",
        &resource,
        &format!("role {}", role.as_str()),
    )
    .await;
    let v = json!({ "kind": kind, "name": member, "role": role.as_str() });
    Ok(if new { created(v) } else { ok(v) })
}

pub async fn remove_member(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let p = readable_project(&reg, &caller, &name).await?;
    require_project_admin(&reg, &caller, &headers, &p).await?;
    let (kind, member) = member_key(
        q.get("kind").map_or("", String::as_str),
        q.get("name").map_or("", String::as_str),
    )?;
    if !reg.meta.remove_member(p.id, &kind, &member).await? {
        return Err(not_found(&format!("member {kind} {member}")));
    }
    let resource = format!("{name}/members/{kind}:{member}");
    audit(&reg, &caller, "member.remove", &resource, "").await;
    Ok(no_content())
}

// ---- users ----

fn user_json(u: &berth_meta::UserRow) -> Value {
    json!({
        "name": u.name, "admin": u.admin, "disabled": u.disabled, "source": u.source,
        "groups": u.ldap_groups, "created_at": rfc3339(u.created_at),
    })
}

pub async fn list_users(State(reg): S, caller: Caller, headers: HeaderMap) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    let users = reg.meta.list_users().await?;
    Ok(ok(Value::Array(users.iter().map(user_json).collect())))
}

pub async fn create_user(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    let u: NewUser = json_body(&body)?;
    u.check().map_err(invalid)?;
    let hash = reg.auth.hashing.hash(&u.password).await?;
    let row = created_once(
        reg.meta
            .create_user(&u.name, Some(&hash), "local", u.admin)
            .await,
        || format!("user {}", u.name),
    )?;
    let detail = format!("admin={}", u.admin);
    audit(&reg, &caller, "user.create", &u.name, &detail).await;
    Ok(created(user_json(&row)))
}

fn is_self(caller: &Caller, name: &str) -> bool {
    matches!(&caller.principal, Principal::User { name: n, .. } if n == name)
}

pub async fn get_user(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    if !is_self(&caller, &name) {
        require_admin(&reg, &caller, &headers)?;
    }
    let u = reg
        .meta
        .user_by_name(&name)
        .await?
        .ok_or_else(|| not_found(&format!("user {name}")))?;
    Ok(ok(user_json(&u)))
}

pub async fn update_user(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    let c: UserChange = json_body(&body)?;
    if is_self(&caller, &name) && (c.admin == Some(false) || c.disabled == Some(true)) {
        return Err(conflict("an admin cannot demote or disable themselves"));
    }
    if !reg.meta.update_user(&name, c.admin, c.disabled).await? {
        return Err(not_found(&format!("user {name}")));
    }
    let detail = format!(
        "{}{}",
        c.admin.map(|a| format!("admin={a} ")).unwrap_or_default(),
        c.disabled
            .map(|d| format!("disabled={d}"))
            .unwrap_or_default()
    );
    audit(&reg, &caller, "user.update", &name, detail.trim()).await;
    let u = reg
        .meta
        .user_by_name(&name)
        .await?
        .ok_or_else(|| not_found(&format!("user {name}")))?;
    Ok(ok(user_json(&u)))
}

pub async fn delete_user(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    if is_self(&caller, &name) {
        return Err(conflict("an admin cannot delete themselves"));
    }
    if !reg.meta.delete_user(&name).await? {
        return Err(not_found(&format!("user {name}")));
    }
    audit(&reg, &caller, "user.delete", &name, "").await;
    Ok(no_content())
}

pub async fn set_password(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    require_signed_in(&reg, &caller, &headers)?;
    let c: PasswordChange = json_body(&body)?;
    let admin = caller.principal.is_admin() || !reg.auth.enabled();
    let user = reg.meta.user_by_name(&name).await?;
    if !admin {
        if !is_self(&caller, &name) {
            return Err(forbidden(
                "only a registry admin may set another user's password",
            ));
        }
        // Checked like a login (throttled per user and address), so a stolen token cannot be
        // used to guess the password.
        let old = c.old_password.as_deref().unwrap_or("");
        match reg.auth.authenticate(&name, old, caller.ip()).await {
            Ok(_) => {}
            Err(berth_auth::AuthError::Throttled(wait)) => {
                return Err(crate::caller::throttled(wait));
            }
            Err(berth_auth::AuthError::Meta(e)) => return Err(e.into()),
            Err(_) => return Err(forbidden("old_password does not match")),
        }
    }
    let user = user.ok_or_else(|| not_found(&format!("user {name}")))?;
    if user.source != "local" {
        return Err(conflict(
            "this user signs in through LDAP; its password lives there",
        ));
    }
    check_password(&c.password)?;
    let hash = reg.auth.hashing.hash(&c.password).await?;
    reg.meta.set_password(&name, &hash).await?;
    audit(&reg, &caller, "user.password", &name, "").await;
    Ok(no_content())
}

// ---- robots ----

fn robot_json(r: &berth_meta::RobotRow) -> Value {
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

/// Whether the caller administers every project in `projects`.
async fn administers_all(reg: &Registry, caller: &Caller, projects: &[&str]) -> ApiResult<bool> {
    Ok(robot_projects_refusal(reg, caller, projects)
        .await?
        .is_none())
}

/// Why the caller may not manage a robot with rights in `projects`, if they may not: a project
/// that does not exist (named as such to a registry admin; to others only as one they do not
/// administer, so private projects stay unseen), or one the caller does not administer.
async fn robot_projects_refusal(
    reg: &Registry,
    caller: &Caller,
    projects: &[&str],
) -> ApiResult<Option<ApiError>> {
    let admin = caller.principal.is_admin() || !reg.auth.enabled();
    if projects.is_empty() {
        return Ok(Some(invalid("a robot needs at least one permission")));
    }
    for p in projects {
        // Even a registry admin names existing projects only: a robot's rights must not wait
        // for whoever creates that project later.
        match reg.meta.project(p).await? {
            None if admin => return Ok(Some(invalid(format!("project {p} does not exist")))),
            Some(row) if admin || is_project_admin(reg, caller, &row).await? => {}
            _ => {
                return Ok(Some(forbidden(&format!(
                    "project {p} does not exist or you are not its admin; a robot's projects \
                     must all be yours to administer"
                ))));
            }
        }
    }
    Ok(None)
}

pub async fn list_robots(State(reg): S, caller: Caller, headers: HeaderMap) -> ApiResult<Response> {
    require_signed_in(&reg, &caller, &headers)?;
    let mut out = Vec::new();
    for r in reg.meta.list_robots().await? {
        let projects: Vec<&str> = r.permissions.iter().map(|(p, _)| p.as_str()).collect();
        if administers_all(&reg, &caller, &projects).await? {
            out.push(robot_json(&r));
        }
    }
    Ok(ok(Value::Array(out)))
}

pub async fn create_robot(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    require_signed_in(&reg, &caller, &headers)?;
    if matches!(caller.principal, Principal::Robot { .. }) {
        return Err(forbidden("robots cannot create robots"));
    }
    let r: NewRobot = json_body(&body)?;
    let spec = r.checked().map_err(invalid)?;
    let perms = spec.permissions;
    let projects: Vec<&str> = perms.iter().map(|(p, _)| p.as_str()).collect();
    if let Some(refusal) = robot_projects_refusal(&reg, &caller, &projects).await? {
        return Err(refusal);
    }
    let full = spec.name;
    let secret = secret::new_secret()?;
    let expires_at = spec
        .expires_in_days
        .map(|d| now_ms() + i64::from(d) * 86_400_000);
    let row = created_once(
        reg.meta
            .create_robot(
                &full,
                &secret::secret_hash(&secret),
                &spec.description,
                expires_at,
                caller.principal.name(),
                &perms,
            )
            .await,
        || format!("robot {full}"),
    )?;
    let detail = perms
        .iter()
        .map(|(p, a)| format!("{p}:{a}"))
        .collect::<Vec<_>>()
        .join(" ");
    audit(&reg, &caller, "robot.create", &full, &detail).await;
    let mut v = robot_json(&row);
    v["secret"] = secret.into();
    Ok(created(v))
}

pub async fn delete_robot(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    require_signed_in(&reg, &caller, &headers)?;
    let full = if name.starts_with(ROBOT_PREFIX) {
        name.clone()
    } else {
        format!("{ROBOT_PREFIX}{name}")
    };
    let Some(r) = reg.meta.robot_by_name(&full).await? else {
        return Err(not_found(&format!("robot {full}")));
    };
    let projects: Vec<&str> = r.permissions.iter().map(|(p, _)| p.as_str()).collect();
    if !administers_all(&reg, &caller, &projects).await? {
        return Err(forbidden(
            "deleting this robot needs the admin role in all its projects",
        ));
    }
    reg.meta.delete_robot(&full).await?;
    audit(&reg, &caller, "robot.delete", &full, "").await;
    Ok(no_content())
}

// ---- repositories: /api/v1/repositories/<repo>/{tags,tags/<t>,artifacts,artifacts/<d>} ----

enum RepoRoute {
    Repository(RepoName),
    Tags(RepoName),
    Tag(RepoName, String),
    Artifacts(RepoName),
    Artifact(RepoName, String),
}

fn repo_route(path: &str) -> ApiResult<RepoRoute> {
    let name = |s: &str| {
        RepoName::parse(s).map_err(|e| invalid(format!("{s:?} is not a repository name: {e}")))
    };
    if let Some(repo) = path.strip_suffix("/tags") {
        return Ok(RepoRoute::Tags(name(repo)?));
    }
    if let Some(repo) = path.strip_suffix("/artifacts") {
        return Ok(RepoRoute::Artifacts(name(repo)?));
    }
    if let Some((prefix, last)) = path.rsplit_once('/')
        && let Some((repo, kind)) = prefix.rsplit_once('/')
    {
        match kind {
            "tags" => return Ok(RepoRoute::Tag(name(repo)?, last.to_owned())),
            "artifacts" => return Ok(RepoRoute::Artifact(name(repo)?, last.to_owned())),
            _ => {}
        }
    }
    Ok(RepoRoute::Repository(name(path)?))
}

async fn repo_id_for(
    reg: &Registry,
    caller: &Caller,
    headers: &HeaderMap,
    repo: &RepoName,
    action: Action,
) -> ApiResult<i64> {
    require(reg, caller, headers, repo, action).await?;
    reg.meta
        .repo_id(repo)
        .await?
        .ok_or_else(|| not_found(&format!("repository {repo}")))
}

fn artifact_json(a: &berth_meta::ArtifactRow) -> Value {
    json!({
        "digest": a.digest.to_string(),
        "media_type": a.media_type,
        "artifact_type": a.artifact_type,
        "size": a.size,
        "tags": a.tags,
        "created_at": rfc3339(a.created_at),
        "pushed_by": a.pushed_by,
    })
}

pub async fn repository_get(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    match repo_route(&path)? {
        RepoRoute::Tags(repo) => {
            let id = repo_id_for(&reg, &caller, &headers, &repo, Action::Pull).await?;
            let tags = reg.meta.tag_rows(id).await?;
            Ok(ok(Value::Array(
                tags.iter()
                    .map(|t| json!({ "name": t.name, "digest": t.digest.to_string(), "updated_at": rfc3339(t.updated_at) }))
                    .collect(),
            )))
        }
        RepoRoute::Artifacts(repo) => {
            let id = repo_id_for(&reg, &caller, &headers, &repo, Action::Pull).await?;
            let list = reg.meta.artifacts(id, None).await?;
            Ok(ok(Value::Array(list.iter().map(artifact_json).collect())))
        }
        RepoRoute::Artifact(repo, d) => {
            let d = Digest::parse(&d).map_err(|e| invalid(e.to_string()))?;
            let id = repo_id_for(&reg, &caller, &headers, &repo, Action::Pull).await?;
            let a = reg
                .meta
                .artifacts(id, Some(&d))
                .await?
                .pop()
                .ok_or_else(|| not_found(&format!("artifact {d}")))?;
            let mut v = artifact_json(&a);
            if let Some(m) = reg.meta.get_manifest(id, &d).await? {
                v["manifest"] = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            }
            Ok(ok(v))
        }
        RepoRoute::Repository(repo) => {
            repo_id_for(&reg, &caller, &headers, &repo, Action::Pull).await?;
            let project = project_or_404(&reg, repo.project()).await?;
            let summary = reg
                .meta
                .project_repositories(project.id)
                .await?
                .into_iter()
                .find(|r| r.name == repo.as_str())
                .ok_or_else(|| not_found(&format!("repository {repo}")))?;
            Ok(ok(json!({
                "name": summary.name,
                "tag_count": summary.tag_count,
                "artifact_count": summary.artifact_count,
            })))
        }
        RepoRoute::Tag(..) => Err(ApiError::Oci(
            OciError::new(
                ErrorCode::Unsupported,
                "use GET .../tags or DELETE .../tags/<tag>",
            )
            .with_status(405),
        )),
    }
}

pub async fn repository_delete(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    let (repo, reference) = match repo_route(&path)? {
        RepoRoute::Repository(repo) => {
            repo_id_for(&reg, &caller, &headers, &repo, Action::Delete).await?;
            let report = reg
                .delete_repository(&repo)
                .await?
                .ok_or_else(|| not_found(&format!("repository {repo}")))?;
            let detail = format!(
                "manifests={} tags={} blob_links={} uploads={}",
                report.manifests,
                report.tags,
                report.blobs,
                report.uploads.len()
            );
            audit(&reg, &caller, "repository.delete", repo.as_str(), &detail).await;
            return Ok(ok(json!({
                "repository": repo.as_str(),
                "manifests": report.manifests,
                "tags": report.tags,
                "blob_links": report.blobs,
                "uploads": report.uploads.len(),
            })));
        }
        RepoRoute::Tag(repo, t) => {
            let t = TagName::parse(&t).map_err(|e| invalid(e.to_string()))?;
            (repo, Reference::Tag(t))
        }
        RepoRoute::Artifact(repo, d) => {
            let d = Digest::parse(&d).map_err(|e| invalid(e.to_string()))?;
            (repo, Reference::Digest(d))
        }
        _ => {
            return Err(ApiError::Oci(
                OciError::new(ErrorCode::Unsupported, "DELETE a tag or an artifact")
                    .with_status(405),
            ));
        }
    };
    repo_id_for(&reg, &caller, &headers, &repo, Action::Delete).await?;
    reg.delete_manifest(&repo, &reference).await?;
    let resource = match &reference {
        Reference::Tag(t) => format!("{repo}:{}", t.as_str()),
        Reference::Digest(d) => format!("{repo}@{d}"),
    };
    audit(&reg, &caller, "delete", &resource, "admin API").await;
    Ok(no_content())
}

// ---- audit ----

pub async fn query_audit(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    let s = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let limit = match s("limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .map_err(|_| invalid("limit must be a number"))?
            .clamp(1, 1000),
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
                    .map_err(|_| invalid("before must be an event id"))
            })
            .transpose()?,
        limit,
    };
    let events = reg.meta.query_audit(&filter).await?;
    let next = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(ok(json!({
        "events": events.iter().map(|e| json!({
            "id": e.id, "time": rfc3339(e.at), "actor": e.actor, "actor_kind": e.actor_kind,
            "action": e.action, "resource": e.resource, "source": e.source,
            "result": e.result, "detail": e.detail, "count": e.count,
        })).collect::<Vec<_>>(),
        "next": next,
    })))
}

/// `POST /api/v1/token-keys`: adds a token signing key (rotation). Tokens signed by older
/// keys stay valid until they expire; every node picks the new key up.
pub async fn rotate_token_key(
    State(reg): S,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    require_admin(&reg, &caller, &headers)?;
    let kid = reg.auth.rotate_key().await?;
    audit(&reg, &caller, "token_key.rotate", &kid, "").await;
    Ok(created(json!({ "kid": kid })))
}

/// `GET /api/v1/search?q=…`: projects and repositories whose name contains `q`, among those
/// the caller may read (at most 100 of each).
pub async fn search(
    State(reg): S,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    const MAX: usize = 100;
    let needle = q.get("q").map(|s| s.to_lowercase()).unwrap_or_default();
    let mut projects = Vec::new();
    for p in reg.meta.list_projects().await? {
        if projects.len() < MAX
            && p.name.contains(&needle)
            && actions_in(&reg, &caller, &p.name)
                .await?
                .contains(Action::Pull)
        {
            projects.push(project_json(&p));
        }
    }
    let mut repositories = Vec::new();
    let mut last: Option<String> = None;
    'scan: loop {
        let names = reg.meta.list_repos(last.as_deref(), 1000).await?;
        let done = names.len() < 1000;
        last = names.last().cloned();
        for n in names {
            if n.contains(&needle) && crate::caller::may_read_any(&reg, &caller, &n).await {
                repositories.push(n);
                if repositories.len() >= MAX {
                    break 'scan;
                }
            }
        }
        if done {
            break;
        }
    }
    Ok(ok(
        json!({ "projects": projects, "repositories": repositories }),
    ))
}
