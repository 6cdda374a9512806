//! The OCI Distribution API under `/v2/`: the route of a path, who may take it, and one line
//! per route to the handler in the file of its resource (`blobs.rs`, `uploads.rs`,
//! `manifests.rs`, `tags.rs`, `referrers.rs`, `catalog.rs`). A handler parses its request,
//! calls one method of the registry service (berth-service) and builds the response.
//!
//! Routes are parsed from the right, because a repository name may itself contain
//! `manifests`, `blobs` or `tags` components (`/v2/x/manifests/y/manifests/latest` is the
//! manifest `latest` of repository `x/manifests/y`).

mod blobs;
mod catalog;
mod http;
mod manifests;
mod referrers;
mod tags;
mod uploads;

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use berth_core::RepoName;
use berth_core::access::Action;
use berth_service::{Actor, Error};

use crate::error::{ApiError, ApiResult};
use crate::{App, AppState};

pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";

/// A parsed `/v2/...` path.
#[derive(Debug, PartialEq)]
enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, String),
    Blob(RepoName, String),
    UploadStart(RepoName),
    Upload(RepoName, String),
    Referrers(RepoName, String),
}

/// One `/v2` request but its body, parsed as far as every handler needs it. (The body is
/// passed on its own: it is not `Sync`, and the rest is borrowed across awaits.)
struct V2 {
    method: Method,
    headers: HeaderMap,
    query: HashMap<String, String>,
    raw_query: Option<String>,
    caller: Actor,
}

impl V2 {
    fn is_read(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }

    fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }
}

fn name(s: &str) -> Result<RepoName, Error> {
    RepoName::parse(s).map_err(|e| Error::NameInvalid {
        value: s.to_owned(),
        reason: e.to_string(),
    })
}

fn parse_route(path: &str) -> ApiResult<Route> {
    let rest = path.strip_prefix("/v2/").ok_or(ApiError::NoSuchEndpoint)?;
    if rest.is_empty() {
        return Ok(Route::Base);
    }
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags(name(repo)?));
    }
    if let Some(repo) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Ok(Route::UploadStart(name(repo)?));
    }
    let (prefix, last) = rest.rsplit_once('/').ok_or(ApiError::NoSuchEndpoint)?;
    let (prefix, kind) = prefix.rsplit_once('/').ok_or(ApiError::NoSuchEndpoint)?;
    match kind {
        "manifests" => Ok(Route::Manifest(name(prefix)?, last.to_owned())),
        "referrers" => Ok(Route::Referrers(name(prefix)?, last.to_owned())),
        "blobs" => Ok(Route::Blob(name(prefix)?, last.to_owned())),
        "uploads" => match prefix.rsplit_once('/') {
            Some((repo, "blobs")) => Ok(Route::Upload(name(repo)?, last.to_owned())),
            _ => Err(ApiError::NoSuchEndpoint),
        },
        _ => Err(ApiError::NoSuchEndpoint),
    }
}

/// The project a request is rewritten into: containerd's `?ns=` naming a proxy project's
/// upstream, or the Docker mirror listener's project.
#[derive(Clone)]
pub struct MirrorOf(pub String);

/// Entry point for every `/v2/...` request.
pub async fn dispatch(State(app): State<AppState>, req: Request) -> Response {
    let mut resp = match handle(&app, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    resp
}

async fn handle(app: &App, req: Request) -> ApiResult<Response> {
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let ns_project = match req.extensions().get::<MirrorOf>() {
        Some(m) => Some(m.0.as_str()),
        None => query
            .get("ns")
            .and_then(|ns| app.registry.proxy.project_for_namespace(ns)),
    };
    let path = req.uri().path();
    let route = match (ns_project, path.strip_prefix("/v2/")) {
        (Some(project), Some(rest)) if !rest.is_empty() && rest != "_catalog" => {
            parse_route(&format!("/v2/{project}/{rest}"))?
        }
        _ => parse_route(path)?,
    };
    let raw_query = req.uri().query().map(str::to_owned);
    let (parts, body) = req.into_parts();
    let caller = crate::caller::identify(app, &parts.headers, &parts.extensions).await?;
    let req = V2 {
        method: parts.method,
        headers: parts.headers,
        query,
        raw_query,
        caller,
    };
    authorize(app, &route, &req).await?;
    match route {
        Route::Base => base(&req),
        Route::Blob(name, digest) => blobs::handle(app, req, name, &digest).await,
        Route::UploadStart(name) => uploads::start(app, req, body, name).await,
        Route::Upload(name, id) => uploads::handle(app, req, body, name, &id).await,
        Route::Manifest(name, r) => manifests::handle(app, req, body, name, &r).await,
        Route::Tags(name) => tags::list(app, req, name).await,
        Route::Catalog => catalog::list(app, req).await,
        Route::Referrers(name, digest) => referrers::list(app, req, name, &digest).await,
    }
}

/// `GET /v2/`: the API version check, which also tells a client whether it is signed in.
fn base(req: &V2) -> ApiResult<Response> {
    if !req.is_read() {
        return Err(http::method_not_allowed());
    }
    Ok(http::json_response(
        serde_json::json!({}),
        "application/json",
    ))
}

/// Refuses a request the caller may not make (see the service's `require`), and a write into
/// a proxy project.
async fn authorize(app: &App, route: &Route, req: &V2) -> ApiResult<()> {
    let reg = &app.registry;
    let read = req.is_read();
    let (repo, action) = match route {
        Route::Base => return Ok(reg.require_signed_in(&req.caller)?),
        Route::Catalog => return Ok(reg.require_catalog(&req.caller)?),
        Route::Tags(n) | Route::Referrers(n, _) => (n, Action::Pull),
        Route::Manifest(n, _) | Route::Blob(n, _) if read => (n, Action::Pull),
        Route::Manifest(n, _) if req.method == Method::PUT => (n, Action::Push),
        Route::Manifest(n, _) | Route::Blob(n, _) if req.method == Method::DELETE => {
            (n, Action::Delete)
        }
        // Other methods are refused as unsupported by the handler.
        Route::Manifest(..) | Route::Blob(..) => return Ok(()),
        Route::UploadStart(n) | Route::Upload(n, _) => (n, Action::Push),
    };
    reg.require(&req.caller, repo, action).await?;
    if action == Action::Push {
        reg.refuse_push_to_proxy(repo)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn routes_parse_from_the_right() {
        assert_eq!(parse_route("/v2/").unwrap(), Route::Base);
        assert_eq!(parse_route("/v2/_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            parse_route("/v2/a/b/tags/list").unwrap(),
            Route::Tags(r("a/b"))
        );
        assert_eq!(
            parse_route("/v2/x/manifests/y/manifests/latest").unwrap(),
            Route::Manifest(r("x/manifests/y"), "latest".into())
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/").unwrap(),
            Route::UploadStart(r("a"))
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads").unwrap(),
            Route::UploadStart(r("a"))
        );
        assert_eq!(
            parse_route("/v2/a/blobs/uploads/xyz").unwrap(),
            Route::Upload(r("a"), "xyz".into())
        );
        assert_eq!(
            parse_route("/v2/blobs/blobs/sha256:abc").unwrap(),
            Route::Blob(r("blobs"), "sha256:abc".into())
        );
        assert_eq!(
            parse_route("/v2/a/referrers/sha256:abc").unwrap(),
            Route::Referrers(r("a"), "sha256:abc".into())
        );
        assert_eq!(
            parse_route("/v2/tags/list/tags/list").unwrap(),
            Route::Tags(r("tags/list"))
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in [
            "/v2/../etc/manifests/x",
            "/v2/A/manifests/x",
            "/v2/a%2f..%2fb/blobs/sha256:x",
            "/v2/a",
            "/v2/a/unknown/x",
            "/v2//manifests/x",
        ] {
            assert!(parse_route(p).is_err(), "{p} accepted");
        }
    }
}
