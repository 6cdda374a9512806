//! `/api/v1/repositories/<repository>[/tags[/<tag>]|/artifacts[/<digest>]]`: a repository's
//! summary, tags and artifacts; deleting a tag, an artifact, or the repository.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use berth_core::{Digest, Reference, RepoName, TagName};
use berth_meta::ArtifactRow;
use berth_service::Error;
use serde_json::{Value, json};

use super::{Path, no_content, ok, rfc3339};
use crate::AppState;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};

enum RepoRoute {
    Repository(RepoName),
    Tags(RepoName),
    Tag(RepoName, String),
    Artifacts(RepoName),
    Artifact(RepoName, String),
    /// `.../artifacts/<digest>/inventory`
    Inventory(RepoName, String),
    /// `.../artifacts/<digest>/sbom`
    Sbom(RepoName, String),
    /// `.../artifacts/<digest>/vulnerabilities`
    Vulnerabilities(RepoName, String),
}

fn repo_route(path: &str) -> Result<RepoRoute, Error> {
    let name = |s: &str| {
        RepoName::parse(s)
            .map_err(|e| Error::invalid(format!("{s:?} is not a repository name: {e}")))
    };
    if let Some(repo) = path.strip_suffix("/tags") {
        return Ok(RepoRoute::Tags(name(repo)?));
    }
    if let Some(repo) = path.strip_suffix("/artifacts") {
        return Ok(RepoRoute::Artifacts(name(repo)?));
    }
    for (suffix, route) in [
        (
            "/inventory",
            RepoRoute::Inventory as fn(RepoName, String) -> RepoRoute,
        ),
        ("/sbom", RepoRoute::Sbom),
        ("/vulnerabilities", RepoRoute::Vulnerabilities),
    ] {
        if let Some(rest) = path.strip_suffix(suffix)
            && let Some((repo, d)) = rest.rsplit_once("/artifacts/")
            && !d.contains('/')
        {
            return Ok(route(name(repo)?, d.to_owned()));
        }
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

/// `?format=spdx` (the default) or `cyclonedx`.
fn sbom_format(v: Option<&str>) -> Result<berth_service::scan::SbomFormat, Error> {
    use berth_service::scan::SbomFormat;
    match v {
        None | Some("spdx") => Ok(SbomFormat::Spdx),
        Some("cyclonedx") => Ok(SbomFormat::CycloneDx),
        Some(other) => Err(Error::invalid(format!(
            "format {other:?}: use spdx or cyclonedx"
        ))),
    }
}

fn digest(s: &str) -> Result<Digest, Error> {
    Digest::parse(s).map_err(|e| Error::invalid(e.to_string()))
}

fn artifact_json(a: &ArtifactRow) -> Value {
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

pub async fn get(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let reg = &app.registry;
    match repo_route(&path)? {
        RepoRoute::Inventory(repo, d) => {
            let inventory = reg.inventory(&actor, &repo, &digest(&d)?).await?;
            Ok(ok(
                serde_json::to_value(inventory).map_err(|e| Error::Internal(e.to_string()))?
            ))
        }
        RepoRoute::Vulnerabilities(repo, d) => {
            let found = reg.vulnerabilities(&actor, &repo, &digest(&d)?).await?;
            Ok(ok(
                serde_json::to_value(found).map_err(|e| Error::Internal(e.to_string()))?
            ))
        }
        RepoRoute::Sbom(repo, d) => {
            let format = sbom_format(query.get("format").map(String::as_str))?;
            let (media_type, document) = reg.sbom(&actor, &repo, &digest(&d)?, format).await?;
            let mut r = ok(document);
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(media_type),
            );
            Ok(r)
        }
        RepoRoute::Tags(repo) => {
            let tags = reg.tag_rows(&actor, &repo).await?;
            Ok(ok(tags
                .iter()
                .map(|t| json!({ "name": t.name, "digest": t.digest.to_string(), "updated_at": rfc3339(t.updated_at) }))
                .collect()))
        }
        RepoRoute::Artifacts(repo) => {
            let list = reg.artifacts(&actor, &repo).await?;
            Ok(ok(list.iter().map(artifact_json).collect()))
        }
        RepoRoute::Artifact(repo, d) => {
            let found = reg.artifact(&actor, &repo, &digest(&d)?).await?;
            let mut v = artifact_json(&found.artifact);
            if let Some(m) = found.manifest {
                v["manifest"] = m;
            }
            Ok(ok(v))
        }
        RepoRoute::Repository(repo) => {
            let s = reg.repository_summary(&actor, &repo).await?;
            Ok(ok(json!({
                "name": s.name,
                "tag_count": s.tag_count,
                "artifact_count": s.artifact_count,
            })))
        }
        RepoRoute::Tag(..) => Err(ApiError::MethodNotAllowed(
            "use GET .../tags or DELETE .../tags/<tag>",
        )),
    }
}

pub async fn delete(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    let reg = &app.registry;
    let (repo, reference) = match repo_route(&path)? {
        RepoRoute::Repository(repo) => {
            let report = reg.delete_repository(&actor, &repo).await?;
            return Ok(ok(json!({
                "repository": repo.as_str(),
                "manifests": report.manifests,
                "tags": report.tags,
                "blob_links": report.blobs,
                "uploads": report.uploads.len(),
            })));
        }
        RepoRoute::Tag(repo, t) => {
            let t = TagName::parse(&t).map_err(|e| Error::invalid(e.to_string()))?;
            (repo, Reference::Tag(t))
        }
        RepoRoute::Artifact(repo, d) => (repo, Reference::Digest(digest(&d)?)),
        RepoRoute::Tags(_)
        | RepoRoute::Artifacts(_)
        | RepoRoute::Inventory(..)
        | RepoRoute::Vulnerabilities(..)
        | RepoRoute::Sbom(..) => {
            return Err(ApiError::MethodNotAllowed("DELETE a tag or an artifact"));
        }
    };
    reg.delete_reference(&actor, &repo, &reference).await?;
    Ok(no_content())
}

/// `POST .../artifacts/<digest>/sbom?format=`: the SBOM pushed beside the image as a referrer.
pub async fn post(
    State(app): State<AppState>,
    Caller(actor): Caller,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let RepoRoute::Sbom(repo, d) = repo_route(&path)? else {
        // As the router answers a method no route has (these forms take no POST).
        return Ok(axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response());
    };
    let format = sbom_format(query.get("format").map(String::as_str))?;
    let referrer = app
        .registry
        .push_sbom(&actor, &repo, &digest(&d)?, format)
        .await?;
    Ok(super::created(json!({
        "digest": referrer.to_string(),
        "artifact_type": format.media_type(),
        "subject": d,
    })))
}
