//! The token endpoint of the Docker token protocol, `/auth/token`:
//! - `GET` with optional Basic credentials, `scope` (repeatable, each possibly holding several
//!   space-separated scopes), `service`, `account`, `offline_token=true`;
//! - `POST` with the OAuth2 form: `grant_type=password` (`username`, `password`) or
//!   `grant_type=refresh_token` (`refresh_token`), `scope` space-separated, `access_type=offline`.
//!
//! A request without a scope still checks the credentials (that is all `docker login` sends).
//! Anonymous requests get a token that grants pull on public projects only.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use berth_auth::{AuthError, Principal};
use berth_core::access::Scope;
use berth_core::{ErrorCode, OciError};

use crate::audit::Actor;
use crate::caller::{auth_error, basic_credentials, peer};
use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

/// Form bodies larger than this are refused.
const FORM_LIMIT: usize = 64 * 1024;

pub async fn token(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    match handle(&reg, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn pairs(s: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(s).unwrap_or_default()
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// Scopes one token request may name at most (each costs a permission lookup).
const MAX_SCOPES: usize = 64;

fn scopes(p: &[(String, String)]) -> ApiResult<Vec<Scope>> {
    let v: Vec<Scope> = p
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .filter_map(Scope::parse)
        .collect();
    if v.len() > MAX_SCOPES {
        return Err(ApiError::oci(
            ErrorCode::Invalid,
            format!("a token request may name at most {MAX_SCOPES} scopes"),
        ));
    }
    Ok(v)
}

async fn handle(reg: &Registry, req: Request) -> ApiResult<Response> {
    if !reg.auth.enabled() {
        // An open registry still answers, so clients configured for a token flow keep working.
        let issued = reg
            .auth
            .issue(&Principal::Anonymous, Vec::new(), false)
            .map_err(ApiError::from)?;
        return Ok(answer(&issued, None));
    }
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let peer = peer(reg, &headers, &parts.extensions);
    let ip = peer.map(|p| p.ip()).unwrap_or([0u8, 0, 0, 0].into());
    let mut params = pairs(parts.uri.query().unwrap_or(""));
    let (principal, offline, login_name) = if parts.method == Method::POST {
        let bytes = axum::body::to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|_| ApiError::oci(ErrorCode::Invalid, "the form is too large"))?;
        params.extend(pairs(&String::from_utf8_lossy(&bytes)));
        let offline = get(&params, "access_type") == Some("offline");
        match get(&params, "grant_type") {
            Some("password") => {
                let user = get(&params, "username").unwrap_or("").to_owned();
                let password = get(&params, "password").unwrap_or("");
                let (p, checked) = login(reg, &headers, &user, password, peer, ip).await?;
                (p, offline, checked.then_some(user))
            }
            Some("refresh_token") => {
                let t = get(&params, "refresh_token").unwrap_or("");
                let p = reg
                    .auth
                    .verify_refresh(t)
                    .await
                    .map_err(|e| denied(reg, &headers, e))?;
                (p, false, None)
            }
            other => {
                return Err(ApiError::oci(
                    ErrorCode::Invalid,
                    format!("unsupported grant_type {:?}", other.unwrap_or("")),
                ));
            }
        }
    } else if parts.method == Method::GET {
        let offline = get(&params, "offline_token") == Some("true");
        match basic_credentials(&headers) {
            Some((user, password)) => {
                let (p, checked) = login(reg, &headers, &user, &password, peer, ip).await?;
                (p, offline, checked.then_some(user))
            }
            None => (Principal::Anonymous, false, None),
        }
    } else {
        return Err(ApiError::Oci(
            OciError::new(ErrorCode::Unsupported, "use GET or POST").with_status(405),
        ));
    };
    crate::request_log::record_caller(&parts.extensions, principal.name());
    let mut requested = scopes(&params)?;
    if let Some(crate::v2::MirrorOf(project)) = parts.extensions.get::<crate::v2::MirrorOf>() {
        // On the Docker mirror listener, docker asks for `library/nginx` and its requests are
        // served as `<project>/library/nginx`: grant the name they are checked against.
        let prefix = format!("{project}/");
        for s in requested.iter_mut().filter(|s| s.kind == "repository") {
            if !s.name.starts_with(&prefix) {
                s.name = format!("{prefix}{}", s.name);
            }
        }
    }
    let access = reg
        .auth
        .grant(&principal, &requested)
        .await
        .map_err(ApiError::from)?;
    let issued = reg
        .auth
        .issue(&principal, access, offline)
        .map_err(ApiError::from)?;
    if let Some(name) = login_name {
        let detail = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        reg.audit
            .record(
                &Actor::new(&name, principal.kind(), peer),
                "login",
                "registry",
                true,
                &detail,
            )
            .await;
    }
    // A refresh grant hands back the refresh token it was given.
    let refresh = issued.refresh_token.clone().or_else(|| {
        (get(&params, "grant_type") == Some("refresh_token"))
            .then(|| get(&params, "refresh_token").unwrap_or("").to_owned())
    });
    Ok(answer(&issued, refresh))
}

/// Checks a token request's credentials. The answer says whether they were checked now: a
/// client asking again with credentials verified a moment ago is not a new login for the audit
/// log (a CI job asks for a token per repository and per scope).
async fn login(
    reg: &Registry,
    headers: &HeaderMap,
    user: &str,
    password: &str,
    peer: Option<std::net::SocketAddr>,
    ip: std::net::IpAddr,
) -> ApiResult<(Principal, bool)> {
    match reg.auth.login(user, password, ip).await {
        Ok(l) => Ok((l.principal, l.checked)),
        Err(e) => {
            if matches!(e, AuthError::Throttled(_) | AuthError::Busy) {
                return Err(auth_error(reg, headers, e));
            }
            reg.audit
                .record(
                    &Actor::new(user, "user", peer),
                    "login",
                    "registry",
                    false,
                    &e.to_string(),
                )
                .await;
            Err(auth_error(reg, headers, e))
        }
    }
}

fn denied(reg: &Registry, headers: &HeaderMap, e: AuthError) -> ApiError {
    match e {
        AuthError::Meta(m) => m.into(),
        _ => auth_error(reg, headers, AuthError::Invalid),
    }
}

fn answer(t: &berth_auth::IssuedToken, refresh: Option<String>) -> Response {
    let issued_at = chrono::DateTime::from_timestamp(t.issued_at as i64, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let mut body = serde_json::json!({
        "token": t.token,
        "access_token": t.token,
        "expires_in": t.expires_in,
        "issued_at": issued_at,
    });
    if let Some(r) = refresh.filter(|r| !r.is_empty()) {
        body["refresh_token"] = r.into();
    }
    let mut resp = Response::new(Body::from(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}
