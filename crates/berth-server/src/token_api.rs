//! The token endpoint of the Docker token protocol, `/auth/token`:
//! - `GET` with optional Basic credentials, `scope` (repeatable, each possibly holding several
//!   space-separated scopes), `service`, `account`, `offline_token=true`;
//! - `POST` with the OAuth2 form: `grant_type=password` (`username`, `password`) or
//!   `grant_type=refresh_token` (`refresh_token`), `scope` space-separated, `access_type=offline`.
//!
//! A request without a scope still checks the credentials (that is all `docker login` sends).
//! Anonymous requests get a token that grants pull on public projects only.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use berth_core::access::Scope;
use berth_service::Error;
use berth_service::tokens::{Grant, TokenRequest};

use crate::caller::{basic_credentials, peer};
use crate::error::{ApiError, ApiResult};
use crate::{App, AppState};

/// Form bodies larger than this are refused.
const FORM_LIMIT: usize = 64 * 1024;

pub async fn token(State(app): State<AppState>, req: Request) -> Response {
    match handle(&app, req).await {
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

/// The `scope` parameters, each possibly holding several space-separated scopes.
fn scopes(p: &[(String, String)]) -> Vec<Scope> {
    p.iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' '))
        .filter_map(Scope::parse)
        .collect()
}

async fn handle(app: &App, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let source = peer(app, &parts.headers, &parts.extensions);
    let mut params = pairs(parts.uri.query().unwrap_or(""));
    let basic = basic_credentials(&parts.headers);
    let offline;
    if parts.method == Method::POST {
        let bytes = axum::body::to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|_| Error::invalid("the form is too large"))?;
        params.extend(pairs(&String::from_utf8_lossy(&bytes)));
        offline = get(&params, "access_type") == Some("offline");
    } else if parts.method == Method::GET {
        offline = get(&params, "offline_token") == Some("true");
    } else {
        return Err(ApiError::MethodNotAllowed("use GET or POST"));
    }
    let grant = if parts.method == Method::POST {
        match get(&params, "grant_type") {
            Some("password") => Grant::Password {
                user: get(&params, "username").unwrap_or(""),
                password: get(&params, "password").unwrap_or(""),
            },
            Some("refresh_token") => Grant::Refresh {
                token: get(&params, "refresh_token").unwrap_or(""),
            },
            other => {
                return Err(Error::invalid(format!(
                    "unsupported grant_type {:?}",
                    other.unwrap_or("")
                ))
                .into());
            }
        }
    } else {
        match &basic {
            Some((user, password)) => Grant::Password { user, password },
            None => Grant::Anonymous,
        }
    };
    let caller = match &grant {
        Grant::Password { user, .. } => user.to_string(),
        _ => String::new(),
    };
    let mut requested = scopes(&params);
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
    let asked = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let refresh_given = match &grant {
        Grant::Refresh { token } => Some(token.to_string()),
        _ => None,
    };
    let issued = app
        .registry
        .issue_token(TokenRequest {
            grant,
            scopes: requested,
            offline,
            source,
            asked,
        })
        .await?;
    crate::request_log::record_caller(&parts.extensions, &caller);
    // A refresh grant hands back the refresh token it was given.
    let refresh = issued.refresh_token.clone().or(refresh_given);
    Ok(answer(&issued, refresh))
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
