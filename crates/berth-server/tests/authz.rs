//! The authorization matrix, in-process (docs/auth.md): every kind of caller against a private
//! and a public project, for pull, push, delete, mount, tag list, catalog, the base endpoint
//! and the admin API, once with Basic credentials on `/v2/` and once with Bearer tokens from
//! `/auth/token`. The expected rights are the table [`MATRIX`], written from the contract, not
//! read from the code; a failure names its (pass, principal, project, operation).
//!
//! Then the token service on its own: scopes cut down to the role, tampered, expired and
//! foreign tokens, tokens of deleted robots and disabled users, refresh tokens, and the
//! challenge of `GET /v2/`.

#[allow(dead_code)]
mod common;

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header, request};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use berth_auth::secret::{new_secret, secret_hash};
use berth_core::access::{Actions, Role};
use berth_core::config::Config;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt;

use common::*;

/// A private project with an image `app:v1`.
const SECRET: &str = "secret";
/// A public project with an image `app:v1`.
const OPEN: &str = "open";
/// A private project some callers may push to: the target of mounts.
const SCRATCH: &str = "scratch";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Anonymous,
    /// A local user, not a registry admin (project roles come from the setup).
    User,
    Robot,
    /// A registry admin.
    Admin,
    /// A local user, member of every project as maintainer, then disabled.
    Disabled,
}

/// One principal and what it may do in each project, per docs/auth.md.
struct Row {
    who: &'static str,
    kind: Kind,
    secret: &'static str,
    open: &'static str,
    scratch: &'static str,
}

const fn row(
    who: &'static str,
    kind: Kind,
    secret: &'static str,
    open: &'static str,
    scratch: &'static str,
) -> Row {
    Row {
        who,
        kind,
        secret,
        open,
        scratch,
    }
}

const ALL: &str = "pull,push,delete";

/// Who may do what where. Users hold the role of their name in all three projects (`outsider`
/// in none); robots hold the permissions written in [`setup`]: `robot$full` pull/push/delete on
/// `secret` and `open` and pull/push on `scratch`, `robot$pull-only` pull on `secret` and
/// `open` and pull/push on `scratch`, `robot$elsewhere` everything on `scratch` only.
#[rustfmt::skip]
const MATRIX: &[Row] = &[
    //   principal          kind              secret (private)  open (public)  scratch (private)
    row("anonymous",        Kind::Anonymous,  "",               "pull",        ""),
    row("guest",            Kind::User,       "pull",           "pull",        "pull"),
    row("developer",        Kind::User,       "pull,push",      "pull,push",   "pull,push"),
    row("maintainer",       Kind::User,       ALL,              ALL,           ALL),
    row("project-admin",    Kind::User,       ALL,              ALL,           ALL),
    row("outsider",         Kind::User,       "",               "pull",        ""),
    row("robot$full",       Kind::Robot,      ALL,              ALL,           "pull,push"),
    row("robot$pull-only",  Kind::Robot,      "pull",           "pull",        "pull,push"),
    row("robot$elsewhere",  Kind::Robot,      "",               "pull",        ALL),
    row("admin",            Kind::Admin,      ALL,              ALL,           ALL),
    row("disabled",         Kind::Disabled,   "",               "",            ""),
];

impl Row {
    fn rights(&self, project: &str) -> &'static str {
        match project {
            SECRET => self.secret,
            OPEN => self.open,
            SCRATCH => self.scratch,
            _ => "",
        }
    }

    fn can(&self, project: &str, action: &str) -> bool {
        self.rights(project).split(',').any(|a| a == action)
    }

    fn signed_in(&self) -> bool {
        matches!(self.kind, Kind::User | Kind::Robot | Kind::Admin)
    }

    /// The name in a form usable inside a repository name or tag.
    fn slug(&self) -> String {
        self.who.replace('$', "-")
    }
}

fn matrix_row(who: &str) -> &'static Row {
    MATRIX
        .iter()
        .find(|r| r.who == who)
        .expect("a row of MATRIX")
}

// ---- setup ----

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A request builder with an `Authorization` header when `auth` is given.
fn rq(method: Method, uri: &str, auth: Option<&str>) -> request::Builder {
    let b = req(method, uri);
    match auth {
        Some(a) => b.header(header::AUTHORIZATION, a),
        None => b,
    }
}

struct World {
    app: App,
    /// `Authorization: Basic …` of every signed-in principal (and of the disabled user).
    basic: HashMap<&'static str, String>,
    passwords: HashMap<&'static str, String>,
    /// The image pushed as `<project>/app:v1`.
    images: HashMap<&'static str, Image>,
}

const USERS: &[(&str, bool)] = &[
    ("admin", true),
    ("guest", false),
    ("developer", false),
    ("maintainer", false),
    ("project-admin", false),
    ("outsider", false),
    ("disabled", false),
];

const MEMBERS: &[(&str, Role)] = &[
    ("guest", Role::Guest),
    ("developer", Role::Developer),
    ("maintainer", Role::Maintainer),
    ("project-admin", Role::Admin),
    ("disabled", Role::Maintainer),
];

const ROBOTS: &[(&str, &[(&str, &str)])] = &[
    (
        "robot$full",
        &[(SECRET, ALL), (OPEN, ALL), (SCRATCH, "pull,push")],
    ),
    (
        "robot$pull-only",
        &[(SECRET, "pull"), (OPEN, "pull"), (SCRATCH, "pull,push")],
    ),
    ("robot$elsewhere", &[(SCRATCH, ALL)]),
];

async fn setup() -> World {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut Config)) -> World {
    let app = App::with_config(|c| {
        c.auth.enabled = true;
        // The disabled user fails a login on every request of the matrix.
        c.auth.max_failures = 1_000_000;
        tweak(c);
    })
    .await;
    let reg = app.registry.clone();
    let meta = &reg.meta;
    let mut basic_h = HashMap::new();
    let mut passwords = HashMap::new();
    for &(name, admin) in USERS {
        let pw = format!("the password of {name}");
        let hash = reg.auth.hashing.hash(&pw).await.expect("argon2");
        meta.create_user(name, Some(&hash), "local", admin)
            .await
            .expect("user created");
        basic_h.insert(name, basic(name, &pw));
        passwords.insert(name, pw);
    }
    let mut ids = HashMap::new();
    for (p, public) in [(SECRET, false), (OPEN, true), (SCRATCH, false)] {
        let row = meta
            .create_project(p, public, None)
            .await
            .expect("project created");
        ids.insert(p, row.id);
    }
    for &(user, role) in MEMBERS {
        for p in [SECRET, OPEN, SCRATCH] {
            meta.set_member(ids[p], "user", user, role)
                .await
                .expect("member set");
        }
    }
    assert!(
        meta.update_user("disabled", None, Some(true))
            .await
            .unwrap()
    );
    for &(name, perms) in ROBOTS {
        let secret = new_secret().expect("a secret");
        let perms: Vec<(String, Actions)> = perms
            .iter()
            .map(|(p, a)| (p.to_string(), Actions::parse_list(a)))
            .collect();
        meta.create_robot(name, &secret_hash(&secret), "", None, "admin", &perms)
            .await
            .expect("robot created");
        basic_h.insert(name, basic(name, &secret));
        passwords.insert(name, secret);
    }
    let w = World {
        app,
        basic: basic_h,
        passwords,
        images: HashMap::from([
            (SECRET, Image::oci("the secret image")),
            (OPEN, Image::oci("the open image")),
        ]),
    };
    for p in [SECRET, OPEN] {
        let repo = format!("{p}/app");
        let image = w.images[p].clone();
        for blob in image.blobs() {
            let r = w
                .admin_call(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(blob)),
                    blob.to_vec(),
                )
                .await;
            r.assert_status(StatusCode::CREATED);
        }
        w.admin_put_tag(&repo, "v1", p).await;
    }
    w
}

impl World {
    fn basic(&self, who: &str) -> Option<&str> {
        self.basic.get(who).map(String::as_str)
    }

    async fn admin_call(&self, method: Method, uri: &str, body: impl Into<Body>) -> Resp {
        self.app
            .call(rq(method, uri, self.basic("admin")), body)
            .await
    }

    /// Tags the image of `project` as `repo:tag`, as the registry admin.
    async fn admin_put_tag(&self, repo: &str, tag: &str, project: &str) {
        let r = self
            .app
            .call(
                rq(
                    Method::PUT,
                    &format!("/v2/{repo}/manifests/{tag}"),
                    self.basic("admin"),
                )
                .header(header::CONTENT_TYPE, OCI_MANIFEST),
                self.images[project].manifest.clone(),
            )
            .await;
        r.assert_status(StatusCode::CREATED);
    }

    /// The status of `GET /v2/<repo>/manifests/<tag>` as the registry admin.
    async fn admin_tag_status(&self, repo: &str, tag: &str) -> StatusCode {
        self.admin_call(
            Method::GET,
            &format!("/v2/{repo}/manifests/{tag}"),
            Body::empty(),
        )
        .await
        .status
    }

    /// `GET /auth/token` with the given credentials and scopes.
    async fn token_request(&self, auth: Option<&str>, scopes: &[String]) -> Resp {
        let mut uri = "/auth/token?service=berth".to_owned();
        for s in scopes {
            uri.push_str("&scope=");
            uri.push_str(s);
        }
        self.app
            .call(rq(Method::GET, &uri, auth), Body::empty())
            .await
    }

    /// A token for `who` (anonymous without credentials), checking the answer's form and that
    /// its access list holds exactly what the matrix allows of what was asked.
    async fn token_for(&self, row: &Row, scopes: &[String]) -> Result<String, String> {
        let r = self.token_request(self.basic(row.who), scopes).await;
        if r.status != StatusCode::OK {
            return Err(format!(
                "GET /auth/token {scopes:?}: expected 200, got {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let body = r.json();
        let token = body["token"].as_str().unwrap_or_default().to_owned();
        if token.is_empty() || body["access_token"] != body["token"] {
            return Err(format!("token answer without token/access_token: {body}"));
        }
        if body["expires_in"].as_u64().unwrap_or(0) == 0 || !body["issued_at"].is_string() {
            return Err(format!("token answer without expires_in/issued_at: {body}"));
        }
        let claims = jwt(&token).1;
        let sub = if row.kind == Kind::Anonymous {
            ""
        } else {
            row.who
        };
        if claims["sub"] != sub || claims["aud"] != "berth" || claims["iss"] != "berth" {
            return Err(format!("token claims sub/aud/iss: {claims}"));
        }
        let want = expected_access(row, scopes);
        let got = claims.get("access").cloned().unwrap_or(json!([]));
        if got != want {
            return Err(format!(
                "token access for {scopes:?}: expected {want}, got {got}"
            ));
        }
        Ok(token)
    }
}

/// The access list a token should carry: each asked-for scope cut to what `row` may do.
fn expected_access(row: &Row, scopes: &[String]) -> Value {
    let mut out = Vec::new();
    for s in scopes {
        // Scopes that do not parse are ignored.
        let Some((kind, rest)) = s.split_once(':') else {
            continue;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            continue;
        };
        let granted: Vec<&str> = match kind {
            "repository" => {
                let project = name.split('/').next().unwrap_or_default();
                let asked: Vec<&str> = actions.split(',').collect();
                ["pull", "push", "delete"]
                    .into_iter()
                    .filter(|a| asked.contains(a) || asked.contains(&"*"))
                    .filter(|a| row.can(project, a))
                    .collect()
            }
            "registry" if name == "catalog" && row.signed_in() => vec!["*"],
            _ => Vec::new(),
        };
        if !granted.is_empty() {
            out.push(json!({ "type": kind, "name": name, "actions": granted }));
        }
    }
    Value::Array(out)
}

// ---- JWTs ----

/// Header, claims and signature of a JWT.
fn jwt(token: &str) -> (Value, Value, String) {
    let mut parts = token.split('.');
    let mut part = || {
        let p = parts.next().expect("three parts");
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(p).expect("base64url"))
            .expect("JSON")
    };
    let (h, c) = (part(), part());
    let sig = token.rsplit('.').next().unwrap().to_owned();
    (h, c, sig)
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// An HS256 JWT of `header` and `claims` signed with `key`.
fn sign(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(key, input.as_bytes()));
    format!("{input}.{sig}")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---- what a response should look like ----

struct Expected {
    status: StatusCode,
    /// The OCI error code of a refusal.
    code: Option<&'static str>,
    /// For a 401: the challenge's scope and error.
    challenge: Option<(Option<String>, Option<&'static str>)>,
}

impl Expected {
    fn allow(status: StatusCode) -> Expected {
        Expected {
            status,
            code: None,
            challenge: None,
        }
    }

    fn challenge(scope: Option<String>, error: Option<&'static str>) -> Expected {
        Expected {
            status: StatusCode::UNAUTHORIZED,
            code: Some("UNAUTHORIZED"),
            challenge: Some((scope, error)),
        }
    }

    fn denied() -> Expected {
        Expected {
            status: StatusCode::FORBIDDEN,
            code: Some("DENIED"),
            challenge: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Basic,
    Token,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Basic => "basic",
            Pass::Token => "token",
        }
    }
}

/// The refusal `row` gets for something it may not do; `scope` is what the challenge should
/// ask for (none for the base endpoint and the admin API).
fn denial(row: &Row, pass: Pass, scope: Option<String>) -> Expected {
    match (row.kind, pass, &scope) {
        // A failed login: the challenge names no scope.
        (Kind::Disabled, ..) => Expected::challenge(None, None),
        (_, Pass::Token, Some(_)) => Expected::challenge(scope, Some("insufficient_scope")),
        (Kind::Anonymous, ..) => Expected::challenge(scope, None),
        _ => Expected::denied(),
    }
}

fn body_text(r: &Resp) -> String {
    let s = String::from_utf8_lossy(&r.body);
    s.chars().take(300).collect()
}

fn check(r: &Resp, exp: &Expected) -> Result<(), String> {
    if r.status != exp.status {
        return Err(format!(
            "expected {}, got {}: {}",
            exp.status,
            r.status,
            body_text(r)
        ));
    }
    if let Some(code) = exp.code {
        let got = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned));
        if got.as_deref() != Some(code) {
            return Err(format!("expected error code {code}, got {}", body_text(r)));
        }
    }
    if let Some((scope, error)) = &exp.challenge {
        let Some(c) = r.header("www-authenticate") else {
            return Err("a 401 without WWW-Authenticate".into());
        };
        let realm_ok = c.starts_with("Bearer realm=\"")
            && c.split("realm=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .is_some_and(|realm| realm.ends_with("/auth/token"));
        let scope_ok = match scope {
            Some(s) => c.contains(&format!("scope=\"{s}\"")),
            None => !c.contains("scope="),
        };
        let error_ok = match error {
            Some(e) => c.contains(&format!("error=\"{e}\"")),
            None => !c.contains("error="),
        };
        if !(realm_ok && c.contains("service=\"berth\"") && scope_ok && error_ok) {
            return Err(format!(
                "challenge {c:?}; expected scope {scope:?} and error {error:?}"
            ));
        }
    }
    Ok(())
}

// ---- the matrix ----

#[derive(Clone, Copy, Debug)]
enum Op {
    /// `GET /v2/<p>/app/manifests/v1`
    Pull,
    /// `GET /v2/<p>/app/blobs/<layer>`
    PullBlob,
    /// `POST /v2/<p>/app/blobs/uploads/?digest=` with a new blob
    PushBlob,
    /// `PUT /v2/<p>/app/manifests/<new tag>`
    PushManifest,
    /// `DELETE /v2/<p>/app/manifests/<tag>` of a tag the admin just pushed
    Delete,
    /// `GET /v2/<p>/app/tags/list`
    Tags,
    /// `POST /v2/scratch/<new>/blobs/uploads/?mount=<layer of p/app>&from=<p>/app`
    Mount,
}

const REPO_OPS: [Op; 7] = [
    Op::Pull,
    Op::PullBlob,
    Op::PushBlob,
    Op::PushManifest,
    Op::Delete,
    Op::Tags,
    Op::Mount,
];

#[derive(Clone, Copy, Debug)]
enum GlobalOp {
    /// `GET /v2/`
    Base,
    /// `GET /v2/_catalog`
    Catalog,
    /// `GET /api/v1/users`
    AdminUsers,
    /// `GET /api/v1/audit`
    AdminAudit,
}

/// The `Authorization` header of one request of the matrix: Basic credentials, or a fresh
/// token for `scopes` (whose access list is checked on the way).
async fn auth_for(
    w: &World,
    pass: Pass,
    row: &Row,
    scopes: &[String],
) -> Result<Option<String>, String> {
    match pass {
        Pass::Basic => Ok(w.basic(row.who).map(str::to_owned)),
        Pass::Token => w.token_for(row, scopes).await.map(|t| Some(bearer(&t))),
    }
}

async fn repo_op(w: &World, pass: Pass, row: &Row, project: &str, op: Op) -> Result<(), String> {
    let repo = format!("{project}/app");
    let all_on = |r: &str| format!("repository:{r}:{ALL}");
    let image = &w.images[project];
    let tag = format!("{}-{}", row.slug(), pass.name());
    match op {
        Op::Pull => {
            let auth = auth_for(w, pass, row, &[all_on(&repo)]).await?;
            let r = w
                .app
                .call(
                    rq(
                        Method::GET,
                        &format!("/v2/{repo}/manifests/v1"),
                        auth.as_deref(),
                    )
                    .header(header::ACCEPT, OCI_MANIFEST),
                    Body::empty(),
                )
                .await;
            if row.can(project, "pull") {
                check(&r, &Expected::allow(StatusCode::OK))?;
                if r.header("docker-content-digest") != Some(image.digest().as_str()) {
                    return Err("pulled the wrong manifest".into());
                }
                Ok(())
            } else {
                check(
                    &r,
                    &denial(row, pass, Some(format!("repository:{repo}:pull"))),
                )
            }
        }
        Op::PullBlob => {
            let auth = auth_for(w, pass, row, &[all_on(&repo)]).await?;
            let layer = sha256(&image.layers[0]);
            let r = w
                .app
                .call(
                    rq(
                        Method::GET,
                        &format!("/v2/{repo}/blobs/{layer}"),
                        auth.as_deref(),
                    ),
                    Body::empty(),
                )
                .await;
            if row.can(project, "pull") {
                check(&r, &Expected::allow(StatusCode::OK))?;
                if r.body.as_ref() != image.layers[0].as_slice() {
                    return Err("the blob's bytes differ".into());
                }
                Ok(())
            } else {
                check(
                    &r,
                    &denial(row, pass, Some(format!("repository:{repo}:pull"))),
                )
            }
        }
        Op::PushBlob => {
            let auth = auth_for(w, pass, row, &[all_on(&repo)]).await?;
            let blob = data(&format!("blob {tag} {project}"), 500);
            let r = w
                .app
                .call(
                    rq(
                        Method::POST,
                        &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&blob)),
                        auth.as_deref(),
                    ),
                    blob,
                )
                .await;
            if row.can(project, "push") {
                check(&r, &Expected::allow(StatusCode::CREATED))
            } else {
                check(
                    &r,
                    &denial(row, pass, Some(format!("repository:{repo}:pull,push"))),
                )
            }
        }
        Op::PushManifest => {
            let auth = auth_for(w, pass, row, &[all_on(&repo)]).await?;
            let tag = format!("push-{tag}");
            let r = w
                .app
                .call(
                    rq(
                        Method::PUT,
                        &format!("/v2/{repo}/manifests/{tag}"),
                        auth.as_deref(),
                    )
                    .header(header::CONTENT_TYPE, OCI_MANIFEST),
                    image.manifest.clone(),
                )
                .await;
            let allowed = row.can(project, "push");
            if allowed {
                check(&r, &Expected::allow(StatusCode::CREATED))?;
            } else {
                check(
                    &r,
                    &denial(row, pass, Some(format!("repository:{repo}:pull,push"))),
                )?;
            }
            let after = w.admin_tag_status(&repo, &tag).await;
            let want = if allowed {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            if after != want {
                return Err(format!("afterwards the tag answers {after}, not {want}"));
            }
            Ok(())
        }
        Op::Delete => {
            let tag = format!("del-{tag}");
            w.admin_put_tag(&repo, &tag, project).await;
            let auth = auth_for(w, pass, row, &[all_on(&repo)]).await?;
            let r = w
                .app
                .call(
                    rq(
                        Method::DELETE,
                        &format!("/v2/{repo}/manifests/{tag}"),
                        auth.as_deref(),
                    ),
                    Body::empty(),
                )
                .await;
            let allowed = row.can(project, "delete");
            if allowed {
                check(&r, &Expected::allow(StatusCode::ACCEPTED))?;
            } else {
                check(
                    &r,
                    &denial(row, pass, Some(format!("repository:{repo}:delete"))),
                )?;
            }
            let after = w.admin_tag_status(&repo, &tag).await;
            let want = if allowed {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            if after != want {
                return Err(format!("afterwards the tag answers {after}, not {want}"));
            }
            if w.admin_tag_status(&repo, "v1").await != StatusCode::OK {
                return Err("deleting a tag took v1 with it".into());
            }
            Ok(())
        }
        Op::Tags => {
            let auth = auth_for(w, pass, row, &[all_on(&repo)]).await?;
            let r = w
                .app
                .call(
                    rq(
                        Method::GET,
                        &format!("/v2/{repo}/tags/list"),
                        auth.as_deref(),
                    ),
                    Body::empty(),
                )
                .await;
            if row.can(project, "pull") {
                check(&r, &Expected::allow(StatusCode::OK))?;
                let v = r.json();
                let has_v1 = v["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x == "v1"));
                if v["name"] != repo.as_str() || !has_v1 {
                    return Err(format!("tag list {v}"));
                }
                Ok(())
            } else {
                check(
                    &r,
                    &denial(row, pass, Some(format!("repository:{repo}:pull"))),
                )
            }
        }
        Op::Mount => {
            let target = format!("{SCRATCH}/m-{}-{project}-{}", row.slug(), pass.name());
            let layer = sha256(&image.layers[0]);
            let scopes = [all_on(&target), format!("repository:{repo}:pull")];
            let auth = auth_for(w, pass, row, &scopes).await?;
            let r = w
                .app
                .call(
                    rq(
                        Method::POST,
                        &format!("/v2/{target}/blobs/uploads/?mount={layer}&from={repo}"),
                        auth.as_deref(),
                    ),
                    Body::empty(),
                )
                .await;
            if !row.can(SCRATCH, "push") {
                return check(
                    &r,
                    &denial(row, pass, Some(format!("repository:{target}:pull,push"))),
                );
            }
            let readable = row.can(project, "pull");
            if readable {
                check(&r, &Expected::allow(StatusCode::CREATED))?;
                if r.header("docker-content-digest") != Some(layer.as_str()) {
                    return Err("a mount answer without the blob's digest".into());
                }
            } else {
                check(&r, &Expected::allow(StatusCode::ACCEPTED))?;
                if !r
                    .header("location")
                    .unwrap_or_default()
                    .contains("/blobs/uploads/")
                {
                    return Err("the fallback answer names no upload session".into());
                }
            }
            let head = w
                .admin_call(
                    Method::HEAD,
                    &format!("/v2/{target}/blobs/{layer}"),
                    Body::empty(),
                )
                .await;
            let want = if readable {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            if head.status != want {
                return Err(format!(
                    "afterwards the blob in the target answers {}, not {want}",
                    head.status
                ));
            }
            Ok(())
        }
    }
}

async fn global_op(w: &World, pass: Pass, row: &Row, op: GlobalOp) -> Result<(), String> {
    let scopes: Vec<String> = match op {
        GlobalOp::Catalog => vec!["registry:catalog:*".into()],
        _ => Vec::new(),
    };
    let auth = auth_for(w, pass, row, &scopes).await?;
    let uri = match op {
        GlobalOp::Base => "/v2/",
        GlobalOp::Catalog => "/v2/_catalog",
        GlobalOp::AdminUsers => "/api/v1/users",
        GlobalOp::AdminAudit => "/api/v1/audit",
    };
    let r = w
        .app
        .call(rq(Method::GET, uri, auth.as_deref()), Body::empty())
        .await;
    match op {
        GlobalOp::Base if row.signed_in() => check(&r, &Expected::allow(StatusCode::OK)),
        GlobalOp::Base => check(&r, &denial(row, pass, None)),
        GlobalOp::Catalog if row.signed_in() => {
            check(&r, &Expected::allow(StatusCode::OK))?;
            let all = w.app.registry.meta.list_repos(None, 100_000).await.unwrap();
            let want: Vec<String> = all
                .into_iter()
                .filter(|repo| row.can(repo.split('/').next().unwrap(), "pull"))
                .collect();
            let got: Vec<String> =
                serde_json::from_value(r.json()["repositories"].clone()).unwrap_or_default();
            if got != want {
                return Err(format!("catalog {got:?}, expected {want:?}"));
            }
            Ok(())
        }
        GlobalOp::Catalog => check(&r, &denial(row, pass, Some("registry:catalog:*".into()))),
        GlobalOp::AdminUsers | GlobalOp::AdminAudit if row.kind == Kind::Admin => {
            check(&r, &Expected::allow(StatusCode::OK))?;
            let v = r.json();
            let ok = match op {
                GlobalOp::AdminUsers => v.as_array().is_some_and(|u| {
                    u.len() == USERS.len() && u.iter().all(|u| u.get("password_hash").is_none())
                }),
                _ => v["events"].is_array(),
            };
            if !ok {
                return Err(format!("admin answer {}", body_text(&r)));
            }
            Ok(())
        }
        GlobalOp::AdminUsers | GlobalOp::AdminAudit => check(&r, &denial(row, pass, None)),
    }
}

async fn run_matrix(pass: Pass) {
    let w = setup().await;
    let mut failures = Vec::new();
    let mut cases = 0;
    for row in MATRIX {
        if pass == Pass::Token && row.kind == Kind::Disabled {
            // A disabled user gets no token at all.
            cases += 1;
            let scopes = [format!("repository:{SECRET}/app:pull")];
            let r = w.token_request(w.basic(row.who), &scopes).await;
            if let Err(e) = check(&r, &Expected::challenge(None, None)) {
                failures.push(format!("[token] {} / - / GET /auth/token: {e}", row.who));
            }
            continue;
        }
        for project in [SECRET, OPEN] {
            for op in REPO_OPS {
                cases += 1;
                if let Err(e) = repo_op(&w, pass, row, project, op).await {
                    failures.push(format!(
                        "[{}] {} / {project} / {op:?}: {e}",
                        pass.name(),
                        row.who
                    ));
                }
            }
        }
        for op in [
            GlobalOp::Base,
            GlobalOp::Catalog,
            GlobalOp::AdminUsers,
            GlobalOp::AdminAudit,
        ] {
            cases += 1;
            if let Err(e) = global_op(&w, pass, row, op).await {
                failures.push(format!("[{}] {} / - / {op:?}: {e}", pass.name(), row.who));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn matrix_with_basic_credentials() {
    run_matrix(Pass::Basic).await;
}

#[tokio::test]
async fn matrix_with_bearer_tokens() {
    run_matrix(Pass::Token).await;
}

// ---- the token service ----

/// `GET <uri>` with an `Authorization` header.
async fn get_as(w: &World, uri: &str, auth: &str) -> Resp {
    w.app
        .call(rq(Method::GET, uri, Some(auth)), Body::empty())
        .await
}

const PULL_SECRET: &str = "/v2/secret/app/manifests/v1";

async fn token_of(w: &World, who: &str, scopes: &[&str]) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    w.token_for(matrix_row(who), &scopes)
        .await
        .unwrap_or_else(|e| panic!("a token for {who}: {e}"))
}

#[track_caller]
fn assert_invalid_token(r: &Resp, what: &str) {
    if let Err(e) = check(r, &Expected::challenge(None, Some("invalid_token"))) {
        panic!("{what}: {e}");
    }
}

#[tokio::test]
async fn anonymous_base_request_gets_the_bearer_challenge() {
    let w = setup().await;
    let r = w.app.get("/v2/").await;
    r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let c = r.header("www-authenticate").expect("a challenge");
    assert!(c.starts_with("Bearer realm=\""), "{c}");
    assert!(c.contains("/auth/token\""), "{c}");
    assert!(c.contains("service=\"berth\""), "{c}");

    let r = w
        .app
        .call(
            req(Method::GET, "/v2/").header(header::HOST, "registry.example:5000"),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"http://registry.example:5000/auth/token\",service=\"berth\"")
    );
    let r = w.app.head("/v2/").await;
    r.assert_status(StatusCode::UNAUTHORIZED);

    // An anonymous token is still anonymous.
    let t = token_of(&w, "anonymous", &[]).await;
    let r = get_as(&w, "/v2/", &bearer(&t)).await;
    r.assert_status(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_carry_only_what_the_role_allows() {
    let w = setup().await;
    // A guest asking for pull and push gets pull.
    let scopes = vec![format!("repository:{SECRET}/app:pull,push")];
    let t = w.token_for(matrix_row("guest"), &scopes).await.unwrap();
    assert_eq!(
        jwt(&t).1["access"],
        json!([{ "type": "repository", "name": "secret/app", "actions": ["pull"] }])
    );
    get_as(&w, PULL_SECRET, &bearer(&t))
        .await
        .assert_status(StatusCode::OK);
    let r = w
        .app
        .call(
            rq(
                Method::POST,
                "/v2/secret/app/blobs/uploads/",
                Some(&bearer(&t)),
            ),
            Body::empty(),
        )
        .await;
    check(
        &r,
        &Expected::challenge(
            Some("repository:secret/app:pull,push".into()),
            Some("insufficient_scope"),
        ),
    )
    .unwrap();

    // Anonymous: pull on the public project, nothing on the private one; unknown scopes and
    // the catalog are left out.
    let t = token_of(
        &w,
        "anonymous",
        &[
            "repository:open/app:pull,push,delete",
            "repository:secret/app:pull",
            "registry:catalog:*",
            "nonsense",
        ],
    )
    .await;
    assert_eq!(
        jwt(&t).1["access"],
        json!([{ "type": "repository", "name": "open/app", "actions": ["pull"] }])
    );

    // A token names repositories: a maintainer's token for open/app does not open secret/app.
    let t = token_of(&w, "maintainer", &["repository:open/app:pull,push,delete"]).await;
    let r = get_as(&w, PULL_SECRET, &bearer(&t)).await;
    check(
        &r,
        &Expected::challenge(
            Some("repository:secret/app:pull".into()),
            Some("insufficient_scope"),
        ),
    )
    .unwrap();

    // Nor the catalog, which needs its own scope.
    let r = get_as(&w, "/v2/_catalog", &bearer(&t)).await;
    check(
        &r,
        &Expected::challenge(
            Some("registry:catalog:*".into()),
            Some("insufficient_scope"),
        ),
    )
    .unwrap();

    // Rights are re-checked on every request: a developer demoted to guest after the token
    // was issued can no longer push with it.
    let t = token_of(&w, "developer", &["repository:secret/app:pull,push"]).await;
    let push = |t: String| {
        w.app.call(
            rq(
                Method::POST,
                "/v2/secret/app/blobs/uploads/",
                Some(&bearer(&t)),
            ),
            Body::empty(),
        )
    };
    push(t.clone()).await.assert_status(StatusCode::ACCEPTED);
    let secret = w.app.registry.meta.project(SECRET).await.unwrap().unwrap();
    w.app
        .registry
        .meta
        .set_member(secret.id, "user", "developer", Role::Guest)
        .await
        .unwrap();
    check(
        &push(t.clone()).await,
        &Expected::challenge(
            Some("repository:secret/app:pull,push".into()),
            Some("insufficient_scope"),
        ),
    )
    .unwrap();
    get_as(&w, PULL_SECRET, &bearer(&t))
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn tampered_forged_and_expired_tokens_are_refused() {
    let w = setup().await;
    let t = token_of(&w, "developer", &["repository:secret/app:pull"]).await;
    get_as(&w, PULL_SECRET, &bearer(&t))
        .await
        .assert_status(StatusCode::OK);
    let (header_v, claims, sig) = jwt(&t);
    let parts: Vec<&str> = t.split('.').collect();

    // The expiry moved without signing again.
    let mut later = claims.clone();
    later["exp"] = json!(claims["exp"].as_u64().unwrap() + 86_400);
    let altered = format!("{}.{}.{}", parts[0], b64(&later), parts[2]);
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&altered)).await,
        "altered exp",
    );
    let mut past = claims.clone();
    past["exp"] = json!(now_secs() - 3600);
    let altered = format!("{}.{}.{}", parts[0], b64(&past), parts[2]);
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&altered)).await,
        "altered exp (past)",
    );

    // One character of the signature changed (the first: the last one may only carry
    // padding bits).
    let mut chars: Vec<char> = sig.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        chars.iter().collect::<String>()
    );
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&flipped)).await,
        "flipped signature",
    );
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer("not.a.jwt")).await,
        "garbage",
    );

    // Tokens signed with the registry's own key, claims chosen here.
    let kid = header_v["kid"].as_str().expect("a kid").to_owned();
    let keys = w.app.registry.meta.token_keys().await.unwrap();
    let key = keys
        .iter()
        .find(|(k, _)| *k == kid)
        .expect("the kid's key")
        .1
        .clone();
    let forged = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        edit(&mut c);
        bearer(&sign(&header_v, &c, &key))
    };
    // The control: the same claims signed here are accepted, so the refusals below are about
    // the claims.
    get_as(&w, PULL_SECRET, &forged(&|_| {}))
        .await
        .assert_status(StatusCode::OK);
    let now = now_secs();
    let cases: [ClaimEdit; 7] = [
        ("expired an hour ago", &|c| {
            c["iat"] = json!(now - 7200);
            c["nbf"] = json!(now - 7200);
            c["exp"] = json!(now - 3600);
        }),
        ("not valid for an hour", &|c| c["nbf"] = json!(now + 3600)),
        ("another issuer", &|c| c["iss"] = json!("someone-else")),
        ("another audience", &|c| c["aud"] = json!("other")),
        ("a subject that is not its principal", &|c| {
            c["sub"] = json!("admin")
        }),
        ("a principal that does not exist", &|c| {
            c["pk"] = json!("u:9999")
        }),
        ("a refresh token", &|c| c["typ"] = json!("refresh")),
    ];
    for (what, edit) in cases {
        assert_invalid_token(&get_as(&w, PULL_SECRET, &forged(edit)).await, what);
    }
    // Another key under the same kid; an unknown kid; no signature algorithm.
    let other_key = sign(&header_v, &claims, b"not the registry's key");
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&other_key)).await,
        "another key",
    );
    let mut h = header_v.clone();
    h["kid"] = json!("0000000000000000");
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&sign(&h, &claims, &key))).await,
        "unknown kid",
    );
    let mut h = header_v.clone();
    h["alg"] = json!("none");
    let none = format!("{}.{}.", b64(&h), parts[1]);
    assert_invalid_token(&get_as(&w, PULL_SECRET, &bearer(&none)).await, "alg none");
}

async fn send_to(router: &Router, req: Request<Body>) -> Resp {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: axum::body::to_bytes(body, usize::MAX).await.unwrap(),
    }
}

#[tokio::test]
async fn tokens_are_bound_to_their_service() {
    let w = setup().await;
    // A second node on the same database and keys, announcing another service.
    let mut config = (*w.app.registry.config).clone();
    config.auth.service = "other".into();
    let reg2 = std::sync::Arc::new(
        berth_server::Registry::new(
            w.app.registry.meta.clone(),
            w.app.registry.blobs.clone(),
            std::sync::Arc::new(config),
        )
        .await
        .unwrap(),
    );
    let other = berth_server::router(reg2);
    let get = |uri: &str, auth: &str| {
        rq(Method::GET, uri, Some(auth))
            .body(Body::empty())
            .unwrap()
    };

    let t = token_of(&w, "developer", &["repository:secret/app:pull"]).await;
    get_as(&w, PULL_SECRET, &bearer(&t))
        .await
        .assert_status(StatusCode::OK);
    let r = send_to(&other, get(PULL_SECRET, &bearer(&t))).await;
    r.assert_status(StatusCode::UNAUTHORIZED);
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("service=\"other\""),
        "{:?}",
        r.header("www-authenticate")
    );

    // The other node's token works there (same keys), and not here.
    let r = send_to(
        &other,
        get(
            "/auth/token?service=other&scope=repository:secret/app:pull",
            w.basic("developer").unwrap(),
        ),
    )
    .await;
    r.assert_status(StatusCode::OK);
    let t2 = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(jwt(&t2).1["aud"], "other");
    send_to(&other, get(PULL_SECRET, &bearer(&t2)))
        .await
        .assert_status(StatusCode::OK);
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&t2)).await,
        "a token for another service",
    );
}

#[tokio::test]
async fn a_deleted_robots_token_stops_working() {
    let w = setup().await;
    let t = token_of(&w, "robot$full", &["repository:secret/app:pull"]).await;
    get_as(&w, PULL_SECRET, &bearer(&t))
        .await
        .assert_status(StatusCode::OK);
    assert!(
        w.app
            .registry
            .meta
            .delete_robot("robot$full")
            .await
            .unwrap()
    );
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&t)).await,
        "deleted robot's token",
    );
    let basic = w.basic("robot$full").unwrap();
    check(
        &get_as(&w, PULL_SECRET, basic).await,
        &Expected::challenge(None, None),
    )
    .unwrap();
    let r = w
        .token_request(Some(basic), &["repository:secret/app:pull".into()])
        .await;
    r.assert_status(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_robot_is_refused() {
    let w = setup().await;
    let secret = new_secret().unwrap();
    w.app
        .registry
        .meta
        .create_robot(
            "robot$old",
            &secret_hash(&secret),
            "",
            Some(berth_meta::now_ms() - 1000),
            "admin",
            &[(SECRET.to_owned(), Actions::parse_list(ALL))],
        )
        .await
        .unwrap();
    let auth = basic("robot$old", &secret);
    check(
        &get_as(&w, PULL_SECRET, &auth).await,
        &Expected::challenge(None, None),
    )
    .unwrap();
    w.token_request(Some(&auth), &[])
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_user_disabled_after_issue_loses_their_token() {
    let w = setup().await;
    let t = token_of(&w, "developer", &["repository:secret/app:pull"]).await;
    get_as(&w, PULL_SECRET, &bearer(&t))
        .await
        .assert_status(StatusCode::OK);
    // Basic credentials verified before are cached; the cache must not outlive the account.
    let basic = w.basic("developer").unwrap().to_owned();
    get_as(&w, PULL_SECRET, &basic)
        .await
        .assert_status(StatusCode::OK);
    assert!(
        w.app
            .registry
            .meta
            .update_user("developer", None, Some(true))
            .await
            .unwrap()
    );
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&t)).await,
        "disabled user's token",
    );
    check(
        &get_as(&w, PULL_SECRET, &basic).await,
        &Expected::challenge(None, None),
    )
    .unwrap();
    w.token_request(Some(&basic), &[])
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn docker_login_checks_the_password() {
    let w = setup().await;
    w.token_request(w.basic("guest"), &[])
        .await
        .assert_status(StatusCode::OK);
    let r = w
        .token_request(Some(&basic("guest", "not the password")), &[])
        .await;
    check(&r, &Expected::challenge(None, None)).unwrap();
    w.token_request(Some(&basic("nobody", "whatever")), &[])
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
}

async fn post_form(w: &World, form: &[(&str, &str)]) -> Resp {
    let body = serde_urlencoded::to_string(form).unwrap();
    w.app
        .call(
            req(Method::POST, "/auth/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            body,
        )
        .await
}

#[tokio::test]
async fn refresh_tokens_renew_access_and_only_that() {
    let w = setup().await;
    let pw = w.passwords["developer"].clone();
    let r = post_form(
        &w,
        &[
            ("grant_type", "password"),
            ("username", "developer"),
            ("password", &pw),
            ("service", "berth"),
            ("client_id", "test"),
            ("access_type", "offline"),
            ("scope", "repository:secret/app:pull"),
        ],
    )
    .await;
    r.assert_status(StatusCode::OK);
    let v = r.json();
    let refresh = v["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    let access = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        jwt(&access).1["access"],
        json!([{ "type": "repository", "name": "secret/app", "actions": ["pull"] }])
    );

    // Without access_type=offline there is no refresh token; a wrong password is a 401.
    let r = post_form(
        &w,
        &[
            ("grant_type", "password"),
            ("username", "developer"),
            ("password", &pw),
            ("service", "berth"),
        ],
    )
    .await;
    r.assert_status(StatusCode::OK);
    assert!(r.json().get("refresh_token").is_none(), "{}", r.json());
    post_form(
        &w,
        &[
            ("grant_type", "password"),
            ("username", "developer"),
            ("password", "wrong password"),
            ("service", "berth"),
            ("access_type", "offline"),
        ],
    )
    .await
    .assert_status(StatusCode::UNAUTHORIZED);

    // The refresh grant: a new access token, cut to the role (developer: no delete), and the
    // same refresh token back.
    let r = post_form(
        &w,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "berth"),
            ("scope", "repository:secret/app:pull,push,delete"),
        ],
    )
    .await;
    r.assert_status(StatusCode::OK);
    let v = r.json();
    assert_eq!(v["refresh_token"], refresh.as_str());
    let renewed = v["token"].as_str().unwrap().to_owned();
    assert_eq!(
        jwt(&renewed).1["access"],
        json!([{ "type": "repository", "name": "secret/app", "actions": ["pull", "push"] }])
    );
    w.app
        .call(
            rq(
                Method::POST,
                "/v2/secret/app/blobs/uploads/",
                Some(&bearer(&renewed)),
            ),
            Body::empty(),
        )
        .await
        .assert_status(StatusCode::ACCEPTED);

    // A refresh token is not an access token, and the other way round.
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&refresh)).await,
        "a refresh token on /v2",
    );
    assert_invalid_token(
        &get_as(&w, "/api/v1/me", &bearer(&refresh)).await,
        "a refresh token on the admin API",
    );
    post_form(
        &w,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &access),
            ("service", "berth"),
        ],
    )
    .await
    .assert_status(StatusCode::UNAUTHORIZED);

    // GET with offline_token=true gives one too.
    let r = w
        .app
        .call(
            rq(
                Method::GET,
                "/auth/token?service=berth&offline_token=true",
                w.basic("developer"),
            ),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::OK);
    assert!(r.json()["refresh_token"].is_string(), "{}", r.json());

    // A disabled user's refresh token is refused.
    w.app
        .registry
        .meta
        .update_user("developer", None, Some(true))
        .await
        .unwrap();
    post_form(
        &w,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "berth"),
        ],
    )
    .await
    .assert_status(StatusCode::UNAUTHORIZED);
}

/// A named change to a token's claims.
type ClaimEdit<'a> = (&'a str, &'a dyn Fn(&mut Value));

/// SQLite gives a new row the id of a deleted last row: a robot deleted and created again
/// under the same name (how a leaked secret is replaced) must not accept the old tokens.
#[tokio::test]
async fn a_recreated_robot_does_not_inherit_old_tokens() {
    let w = setup().await;
    let meta = &w.app.registry.meta;
    let old = meta.robot_by_name("robot$full").await.unwrap().unwrap();
    let t = token_of(&w, "robot$full", &["repository:secret/app:pull"]).await;
    get_as(&w, PULL_SECRET, &bearer(&t))
        .await
        .assert_status(StatusCode::OK);
    // Delete every robot so the new row can get the old id, as the last row would.
    for r in meta.list_robots().await.unwrap() {
        meta.delete_robot(&r.name).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let new = meta
        .create_robot(
            "robot$full",
            &berth_auth::secret::secret_hash("a new secret"),
            "",
            None,
            "admin",
            &old.permissions,
        )
        .await
        .unwrap();
    // SQLite hands out the freed rowid again; PostgreSQL's identity never reuses one, where
    // the property holds by construction and the check below still runs.
    if meta.dialect() == berth_meta::Dialect::Sqlite {
        assert_eq!(new.id, old.id, "the premise: the id was reused");
    }
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&t)).await,
        "the old robot's token on the new robot",
    );
}

/// After a password change (say, following a leak), tokens issued before it stop working and
/// the old password no longer signs in; the new one does.
#[tokio::test]
async fn a_password_change_ends_earlier_tokens() {
    let w = setup().await;
    let t = token_of(&w, "developer", &["repository:secret/app:pull"]).await;
    get_as(&w, PULL_SECRET, &bearer(&t))
        .await
        .assert_status(StatusCode::OK);
    let old_basic = w.basic("developer").unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let reg = &w.app.registry;
    let hash = reg.auth.hashing.hash("a-brand-new-password").await.unwrap();
    assert!(reg.meta.set_password("developer", &hash).await.unwrap());
    assert_invalid_token(
        &get_as(&w, PULL_SECRET, &bearer(&t)).await,
        "a token issued before the password change",
    );
    w.token_request(Some(&old_basic), &[])
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    let new_basic = basic("developer", "a-brand-new-password");
    get_as(&w, PULL_SECRET, &new_basic)
        .await
        .assert_status(StatusCode::OK);
}

// ---- what a new user stumbled on (issue 15) ----

fn message(r: &Resp) -> String {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A refusal names its reason (the role lacking the action, a missing project) and says the
/// same about a private project the caller cannot see as about a missing one.
#[tokio::test]
async fn refusals_name_their_reason_without_revealing_private_projects() {
    let w = setup().await;
    // A guest pushing: the role lacks the action.
    let r = w
        .app
        .call(
            rq(
                Method::POST,
                "/v2/secret/app/blobs/uploads/",
                w.basic("guest"),
            ),
            Body::empty(),
        )
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "DENIED");
    let m = message(&r);
    assert!(m.contains("guest") && m.contains("push"), "{m}");

    // A developer deleting, with a token: the 401 says the role does not allow it, so the
    // client's second try with a new token is not a mystery.
    let t = token_of(&w, "developer", &["repository:secret/app:delete"]).await;
    let r = w
        .app
        .call(
            rq(
                Method::DELETE,
                "/v2/secret/app/manifests/v1",
                Some(&bearer(&t)),
            ),
            Body::empty(),
        )
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let m = message(&r);
    assert!(m.contains("developer") && m.contains("delete"), "{m}");

    // An outsider: a private project and a missing one read the same.
    let private = get_as(
        &w,
        "/v2/secret/app/manifests/v1",
        w.basic("outsider").unwrap(),
    )
    .await;
    let missing = get_as(
        &w,
        "/v2/nowhere/app/manifests/v1",
        w.basic("outsider").unwrap(),
    )
    .await;
    private.assert_error(StatusCode::FORBIDDEN, "DENIED");
    missing.assert_error(StatusCode::FORBIDDEN, "DENIED");
    let (mp, mm) = (message(&private), message(&missing));
    assert_eq!(
        mp.replace("secret", "X"),
        mm.replace("nowhere", "X"),
        "a private project reads differently from a missing one"
    );
    assert!(mm.contains("does not exist"), "{mm}");
    // A member sees the reason for a missing project plainly too.
    let r = w
        .app
        .call(
            rq(
                Method::POST,
                "/v2/nowhere/app/blobs/uploads/",
                w.basic("developer"),
            ),
            Body::empty(),
        )
        .await;
    r.assert_error(StatusCode::FORBIDDEN, "DENIED");
    assert!(message(&r).contains("does not exist"), "{}", message(&r));
}

/// `berth robot create ... --project nowhere:pull` said "needs the admin role in every project
/// it names"; a project that does not exist is named as such.
#[tokio::test]
async fn a_robot_for_a_missing_project_says_the_project_does_not_exist() {
    let w = setup().await;
    let body =
        json!({ "name": "ci", "permissions": [{ "project": "nowhere", "actions": ["pull"] }] });
    let r = w
        .admin_call(Method::POST, "/api/v1/robots", body.to_string())
        .await;
    assert!(r.status.is_client_error(), "{}", body_text(&r));
    let m = message(&r);
    assert!(m.contains("nowhere") && m.contains("does not exist"), "{m}");
}

async fn audit_events(w: &World, query: &str) -> Vec<Value> {
    w.app.registry.audit.flush().await;
    let r = w
        .admin_call(
            Method::GET,
            &format!("/api/v1/audit?{query}"),
            Body::empty(),
        )
        .await;
    r.assert_status(StatusCode::OK);
    r.json()["events"]
        .as_array()
        .cloned()
        .expect("an events array")
}

/// A client with a cached credential asking for tokens again and again is one login, not one
/// per token; pulls are aggregated per caller, artifact and time bucket.
#[tokio::test]
async fn the_audit_log_records_logins_once_and_aggregates_pulls() {
    let w = setup().await;
    for _ in 0..10 {
        w.token_request(w.basic("guest"), &["repository:secret/app:pull".into()])
            .await
            .assert_status(StatusCode::OK);
    }
    let logins = audit_events(&w, "actor=guest&action=login").await;
    assert_eq!(logins.len(), 1, "{logins:?}");

    for _ in 0..25 {
        get_as(&w, PULL_SECRET, w.basic("guest").unwrap())
            .await
            .assert_status(StatusCode::OK);
    }
    // Pull rows are written when their time bucket closes; a flush closes it.
    let pulls = audit_events(&w, "actor=guest&action=pull").await;
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    assert_eq!(pulls[0]["count"], 25, "{pulls:?}");
    assert_eq!(pulls[0]["resource"], "secret/app:v1", "{pulls:?}");
}
