//! The OCI Distribution API under `/v2/`. Routes are parsed from the right, because a
//! repository name may itself contain `manifests`, `blobs` or `tags` components
//! (`/v2/x/manifests/y/manifests/latest` is the manifest `latest` of repository
//! `x/manifests/y`). Each handler parses its request, calls the registry service once and
//! builds the response; the rules live in `registry.rs`.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::manifest::OCI_INDEX;
use berth_core::range::{RangeRequest, parse_content_range, parse_range};
use berth_core::{Algorithm, Digest, ErrorCode, OciError, Reference, RepoName, TagName};
use berth_storage::{ByteStream, UploadId};
use futures_util::StreamExt;

use crate::caller::{self, Caller};
use crate::error::{ApiError, ApiResult};
use crate::pullthrough;
use crate::registry::{Page, Registry, UploadState, range_value};
use berth_core::access::Action;

pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
const DIGEST_HEADER: &str = "docker-content-digest";
const UPLOAD_UUID_HEADER: &str = "docker-upload-uuid";

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

fn name(s: &str) -> ApiResult<RepoName> {
    RepoName::parse(s).map_err(|e| {
        ApiError::Oci(
            OciError::new(ErrorCode::NameInvalid, e.to_string())
                .with_detail(serde_json::json!({ "name": s })),
        )
    })
}

fn parse_route(path: &str) -> ApiResult<Route> {
    let not_found = || {
        ApiError::Oci(OciError::new(ErrorCode::Unsupported, "no such endpoint").with_status(404))
    };
    let rest = path.strip_prefix("/v2/").ok_or_else(not_found)?;
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
    let (prefix, last) = rest.rsplit_once('/').ok_or_else(not_found)?;
    let (prefix, kind) = prefix.rsplit_once('/').ok_or_else(not_found)?;
    match kind {
        "manifests" => Ok(Route::Manifest(name(prefix)?, last.to_owned())),
        "referrers" => Ok(Route::Referrers(name(prefix)?, last.to_owned())),
        "blobs" => Ok(Route::Blob(name(prefix)?, last.to_owned())),
        "uploads" => match prefix.rsplit_once('/') {
            Some((repo, "blobs")) => Ok(Route::Upload(name(repo)?, last.to_owned())),
            _ => Err(not_found()),
        },
        _ => Err(not_found()),
    }
}

fn digest(s: &str) -> ApiResult<Digest> {
    Digest::parse(s).map_err(|e| {
        ApiError::Oci(
            OciError::new(ErrorCode::DigestInvalid, e.to_string())
                .with_detail(serde_json::json!({ "digest": s })),
        )
    })
}

fn reference(s: &str) -> ApiResult<Reference> {
    Reference::parse(s).map_err(|e| {
        let code = if s.contains(':') {
            ErrorCode::DigestInvalid
        } else {
            ErrorCode::ManifestInvalid
        };
        ApiError::Oci(
            OciError::new(code, e.to_string()).with_detail(serde_json::json!({ "reference": s })),
        )
    })
}

/// Tags pushed with a manifest at most (`?tag=` parameters); more get 414, as the spec allows.
const MAX_TAG_PARAMS: usize = 100;

/// The `tag` query parameters of a manifest push (`PUT .../manifests/<digest>?tag=a&tag=b`).
fn tag_params(query: Option<&str>) -> ApiResult<Vec<TagName>> {
    let Some(q) = query else {
        return Ok(Vec::new());
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
    let tags: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.as_str())
        .collect();
    if tags.len() > MAX_TAG_PARAMS {
        return Err(ApiError::Oci(
            OciError::new(
                ErrorCode::TagInvalid,
                format!("at most {MAX_TAG_PARAMS} tag parameters are accepted in one push"),
            )
            .with_status(414),
        ));
    }
    tags.into_iter()
        .map(|t| {
            TagName::parse(t).map_err(|e| {
                ApiError::Oci(
                    OciError::new(ErrorCode::TagInvalid, e.to_string())
                        .with_detail(serde_json::json!({ "tag": t })),
                )
            })
        })
        .collect()
}

fn upload_id(s: &str) -> ApiResult<UploadId> {
    UploadId::parse(s).ok_or_else(|| {
        ApiError::oci(
            ErrorCode::BlobUploadUnknown,
            "blob upload unknown to registry",
        )
    })
}

fn unsupported_method() -> ApiError {
    ApiError::Oci(
        OciError::new(
            ErrorCode::Unsupported,
            "method not allowed on this endpoint",
        )
        .with_status(405),
    )
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    match header_str(headers, header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            ApiError::oci(
                ErrorCode::SizeInvalid,
                format!("Content-Length {v:?} is not a number"),
            )
        }),
    }
}

fn content_range(headers: &HeaderMap) -> ApiResult<Option<berth_core::range::ChunkRange>> {
    match header_str(headers, header::CONTENT_RANGE) {
        None => Ok(None),
        Some(v) => parse_content_range(v).map(Some).ok_or_else(|| {
            ApiError::Oci(OciError::new(
                ErrorCode::RangeInvalid,
                format!("Content-Range {v:?} is not <start>-<end>"),
            ))
        }),
    }
}

/// Media types listed in the request's `Accept` headers, parameters stripped.
fn accept_list(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|m| {
            m.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// The request body as a stream that fails when the client sends nothing for `idle`.
fn body_stream(body: Body, idle: Duration) -> ByteStream {
    let stream = body.into_data_stream();
    Box::pin(futures_util::stream::unfold(
        Some(stream),
        move |state| async move {
            let mut s = state?;
            match tokio::time::timeout(idle, s.next()).await {
                Ok(Some(Ok(b))) => Some((Ok(b), Some(s))),
                Ok(Some(Err(e))) => Some((Err(io::Error::other(e)), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(io::Error::new(io::ErrorKind::TimedOut, "request body idle")),
                    None,
                )),
            }
        },
    ))
}

/// Whether a request body is known to be empty (no bytes will follow the headers).
fn body_is_empty(body: &Body) -> bool {
    http_body::Body::size_hint(body).exact() == Some(0)
}

async fn read_limited(body: Body, limit: u64, idle: Duration) -> ApiResult<Vec<u8>> {
    let too_large = || {
        ApiError::Oci(
            OciError::new(
                ErrorCode::ManifestInvalid,
                format!("manifest is larger than the {limit}-byte limit"),
            )
            .with_status(413),
        )
    };
    if http_body::Body::size_hint(&body).lower() > limit {
        return Err(too_large());
    }
    let mut stream = body_stream(body, idle);
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::oci(
                ErrorCode::ManifestInvalid,
                format!("reading the manifest failed: {e}"),
            )
        })?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn upload_response(
    reg: &Registry,
    status: StatusCode,
    name: &RepoName,
    state: &UploadState,
) -> Response {
    let mut r = empty(status);
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        hv(&format!(
            "{}/v2/{name}/blobs/uploads/{}",
            reg.url_base(),
            state.id
        )),
    );
    h.insert(header::RANGE, hv(&range_value(state.offset)));
    h.insert(UPLOAD_UUID_HEADER, hv(&state.id.to_string()));
    r
}

fn blob_created(reg: &Registry, name: &RepoName, d: &Digest) -> Response {
    let mut r = empty(StatusCode::CREATED);
    r.headers_mut().insert(
        header::LOCATION,
        hv(&format!("{}/v2/{name}/blobs/{d}", reg.url_base())),
    );
    r.headers_mut().insert(DIGEST_HEADER, hv(&d.to_string()));
    r
}

/// `n` and `last` of a paginated listing; `n` is capped at the configured page size.
fn pagination(reg: &Registry, q: &HashMap<String, String>) -> ApiResult<(u32, Option<String>)> {
    let max = reg.config.limits.page_max_entries;
    let n = match q.get("n").map(String::as_str) {
        None | Some("") => max,
        Some(v) => v.parse::<u32>().map_err(|_| {
            ApiError::oci(
                ErrorCode::PaginationNumberInvalid,
                format!("n={v:?} is not a non-negative integer"),
            )
        })?,
    };
    Ok((n.min(max), q.get("last").cloned().filter(|l| !l.is_empty())))
}

fn json_response(body: serde_json::Value, content_type: &'static str) -> Response {
    let bytes = serde_json::to_vec(&body).expect("JSON values serialize");
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn with_next_link<T>(mut r: Response, page: &Page<T>, url: impl FnOnce() -> String) -> Response {
    if page.more {
        r.headers_mut()
            .insert(header::LINK, hv(&format!("<{}>; rel=\"next\"", url())));
    }
    r
}

/// Entry point for every `/v2/...` request.
pub async fn dispatch(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let mut resp = match handle(&reg, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    resp
}

/// The project a request is rewritten into: containerd's `?ns=` naming a proxy project's
/// upstream, or the Docker mirror listener's project.
#[derive(Clone)]
pub struct MirrorOf(pub String);

async fn handle(reg: &Arc<Registry>, req: Request) -> ApiResult<Response> {
    let query: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let ns_project = match req.extensions().get::<MirrorOf>() {
        Some(m) => Some(m.0.as_str()),
        None => query
            .get("ns")
            .and_then(|ns| reg.proxy.project_for_namespace(ns)),
    };
    let path = req.uri().path();
    let route = match (ns_project, path.strip_prefix("/v2/")) {
        (Some(project), Some(rest)) if !rest.is_empty() && rest != "_catalog" => {
            parse_route(&format!("/v2/{project}/{rest}"))?
        }
        _ => parse_route(path)?,
    };
    let method = req.method().clone();
    let uri_query = req.uri().query().map(str::to_owned);
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let idle = reg.config.server.body_idle_timeout.0;
    let head = method == Method::HEAD;
    let caller = caller::identify(
        reg,
        &headers,
        caller::peer(reg, &headers, &parts.extensions),
    )
    .await?;
    crate::request_log::record_caller(&parts.extensions, caller.principal.name());
    authorize(reg, &caller, &headers, &route, &method).await?;
    refuse_push_to_proxy(reg, &route, &method)?;

    match route {
        Route::Base => match method {
            Method::GET | Method::HEAD => {
                Ok(json_response(serde_json::json!({}), "application/json"))
            }
            _ => Err(unsupported_method()),
        },

        Route::Blob(name, d) => {
            let d = digest(&d)?;
            match method {
                Method::GET | Method::HEAD => match reg.proxy.project_of(&name) {
                    Some(p) => proxy_blob(reg, p, &name, &d, &headers, head).await,
                    None => get_blob(reg, &name, &d, &headers, head).await,
                },
                Method::DELETE => {
                    reg.delete_blob(&name, &d).await?;
                    reg.audit
                        .record(
                            &caller.actor(),
                            "delete",
                            &format!("{name}@{d}"),
                            true,
                            "blob",
                        )
                        .await;
                    Ok(empty(StatusCode::ACCEPTED))
                }
                _ => Err(unsupported_method()),
            }
        }

        Route::UploadStart(name) => {
            if method != Method::POST {
                return Err(unsupported_method());
            }
            if let Some(mount) = query.get("mount") {
                let d = digest(mount)?;
                let from = match query.get("from").filter(|f| !f.is_empty()) {
                    Some(f) => Some(self::name(f)?),
                    None => None,
                };
                // A source the caller cannot read is treated as not holding the blob: the
                // client gets an upload session and never learns whether it exists there.
                let readable = caller::Reads(reg, &caller);
                if reg.mount_blob(&name, &d, from.as_ref(), &readable).await? {
                    return Ok(blob_created(reg, &name, &d));
                }
            }
            if let Some(dg) = query.get("digest") {
                let d = digest(dg)?;
                let cl = content_length(&headers)?;
                reg.monolithic_upload(&name, &d, cl, body_stream(body, idle))
                    .await?;
                return Ok(blob_created(reg, &name, &d));
            }
            let algorithm = match query.get("digest-algorithm").map(String::as_str) {
                None | Some("") => Algorithm::Sha256,
                Some(a) => Algorithm::parse(a).ok_or_else(|| {
                    ApiError::oci(
                        ErrorCode::DigestInvalid,
                        format!("digest algorithm {a:?} is not supported"),
                    )
                })?,
            };
            let state = reg.start_upload(&name, algorithm).await?;
            Ok(upload_response(reg, StatusCode::ACCEPTED, &name, &state))
        }

        Route::Upload(name, id) => {
            let id = upload_id(&id)?;
            match method {
                Method::GET => {
                    let state = reg.upload_status(&name, &id).await?;
                    Ok(upload_response(reg, StatusCode::NO_CONTENT, &name, &state))
                }
                Method::PATCH => {
                    let range = content_range(&headers)?;
                    let cl = content_length(&headers)?;
                    let state = reg
                        .append_upload(&name, &id, range, cl, body_stream(body, idle))
                        .await?;
                    Ok(upload_response(reg, StatusCode::ACCEPTED, &name, &state))
                }
                Method::PUT => {
                    let d = query.get("digest").ok_or_else(|| {
                        ApiError::oci(
                            ErrorCode::DigestInvalid,
                            "the digest query parameter is required",
                        )
                    })?;
                    let d = digest(d)?;
                    let range = content_range(&headers)?;
                    let cl = content_length(&headers)?;
                    let body = (!body_is_empty(&body)).then(|| body_stream(body, idle));
                    reg.finish_upload(&name, &id, &d, range, cl, body).await?;
                    Ok(blob_created(reg, &name, &d))
                }
                Method::DELETE => {
                    reg.cancel_upload(&name, &id).await?;
                    Ok(empty(StatusCode::NO_CONTENT))
                }
                _ => Err(unsupported_method()),
            }
        }

        Route::Manifest(name, r) => {
            // A reference that cannot exist is simply not found when reading or deleting;
            // only a push with one is a malformed request.
            let r = match reference(&r) {
                Ok(r) => r,
                Err(e) if method == Method::PUT => return Err(e),
                Err(_) => {
                    return Err(ApiError::Oci(
                        OciError::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
                            .with_detail(serde_json::json!({ "reference": r })),
                    ));
                }
            };
            match method {
                Method::GET | Method::HEAD => {
                    let accept = accept_list(&headers);
                    let row = match reg.proxy.project_of(&name) {
                        Some(p) => pullthrough::get_manifest(reg, p, &name, &r, &accept).await?,
                        None => reg.get_manifest(&name, &r, &accept).await?,
                    };
                    if !head {
                        reg.audit
                            .record_pull(&caller.actor(), &resource_name(&name, &r));
                    }
                    let mut resp = Response::new(if head {
                        Body::empty()
                    } else {
                        Body::from(row.payload.clone())
                    });
                    let h = resp.headers_mut();
                    h.insert(header::CONTENT_TYPE, hv(&row.media_type));
                    h.insert(header::CONTENT_LENGTH, HeaderValue::from(row.payload.len()));
                    h.insert(DIGEST_HEADER, hv(&row.digest.to_string()));
                    h.insert(header::ETAG, hv(&format!("\"{}\"", row.digest)));
                    Ok(resp)
                }
                Method::PUT => {
                    let limit = reg.config.limits.manifest_max_size.as_u64();
                    let content_type = header_str(&headers, header::CONTENT_TYPE).map(|c| {
                        c.split(';')
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_ascii_lowercase()
                    });
                    let extra_tags = tag_params(uri_query.as_deref())?;
                    let payload = read_limited(body, limit, idle).await?;
                    let (d, subject) = reg
                        .put_manifest(
                            &name,
                            &r,
                            &extra_tags,
                            content_type.as_deref(),
                            payload,
                            Some(caller.principal.name()),
                        )
                        .await?;
                    let detail = if extra_tags.is_empty() {
                        format!("digest {d}")
                    } else {
                        let tags: Vec<&str> = extra_tags.iter().map(TagName::as_str).collect();
                        format!("digest {d}, tags {}", tags.join(" "))
                    };
                    reg.audit
                        .record(
                            &caller.actor(),
                            "push",
                            &resource_name(&name, &r),
                            true,
                            &detail,
                        )
                        .await;
                    let mut resp = empty(StatusCode::CREATED);
                    let h = resp.headers_mut();
                    h.insert(
                        header::LOCATION,
                        hv(&format!("{}/v2/{name}/manifests/{d}", reg.url_base())),
                    );
                    h.insert(DIGEST_HEADER, hv(&d.to_string()));
                    if let Some(s) = subject {
                        h.insert("oci-subject", hv(&s.to_string()));
                    }
                    // One OCI-Tag per tag the push set (the reference's own tag needs none).
                    for t in &extra_tags {
                        h.append("oci-tag", hv(t.as_str()));
                    }
                    Ok(resp)
                }
                Method::DELETE => {
                    reg.delete_manifest(&name, &r).await?;
                    reg.audit
                        .record(
                            &caller.actor(),
                            "delete",
                            &resource_name(&name, &r),
                            true,
                            "",
                        )
                        .await;
                    Ok(empty(StatusCode::ACCEPTED))
                }
                _ => Err(unsupported_method()),
            }
        }

        Route::Tags(name) => {
            if method != Method::GET && method != Method::HEAD {
                return Err(unsupported_method());
            }
            let (n, last) = pagination(reg, &query)?;
            let page = reg.tags(&name, last.as_deref(), n).await?;
            let resp = json_response(
                serde_json::json!({ "name": name.as_str(), "tags": page.items }),
                "application/json",
            );
            let base = reg.url_base();
            Ok(with_next_link(resp, &page, || {
                format!(
                    "{base}/v2/{name}/tags/list?n={n}&last={}",
                    page.items.last().map_or("", |s| s)
                )
            }))
        }

        Route::Catalog => {
            if method != Method::GET && method != Method::HEAD {
                return Err(unsupported_method());
            }
            let (n, last) = pagination(reg, &query)?;
            let page = reg
                .catalog(last.as_deref(), n, &caller::Reads(reg, &caller))
                .await?;
            let resp = json_response(
                serde_json::json!({ "repositories": page.items }),
                "application/json",
            );
            let base = reg.url_base();
            Ok(with_next_link(resp, &page, || {
                format!(
                    "{base}/v2/_catalog?n={n}&last={}",
                    page.items.last().map_or("", |s| s)
                )
            }))
        }

        Route::Referrers(name, d) => {
            if method != Method::GET && method != Method::HEAD {
                return Err(unsupported_method());
            }
            let d = digest(&d)?;
            let (n, last) = pagination(reg, &query)?;
            let artifact_type = query.get("artifactType").filter(|a| !a.is_empty());
            let page = reg
                .referrers(
                    &name,
                    &d,
                    artifact_type.map(String::as_str),
                    last.as_deref(),
                    n,
                )
                .await?;
            let manifests: Vec<serde_json::Value> = page
                .items
                .iter()
                .map(|r| {
                    let mut m = serde_json::json!({
                        "mediaType": r.media_type,
                        "digest": r.digest.to_string(),
                        "size": r.size,
                    });
                    if let Some(at) = &r.artifact_type {
                        m["artifactType"] = at.clone().into();
                    }
                    if let Some(a) = r
                        .annotations
                        .as_deref()
                        .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
                    {
                        m["annotations"] = a;
                    }
                    m
                })
                .collect();
            let body = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
            let mut resp = json_response(body, OCI_INDEX);
            if artifact_type.is_some() {
                resp.headers_mut().insert(
                    "oci-filters-applied",
                    HeaderValue::from_static("artifactType"),
                );
            }
            let base = reg.url_base();
            Ok(with_next_link(resp, &page, || {
                let mut url = format!("{base}/v2/{name}/referrers/{d}?n={n}");
                if let Some(at) = artifact_type {
                    url.push_str(&format!("&artifactType={}", urlencode(at)));
                }
                if let Some(l) = page.items.last() {
                    url.push_str(&format!("&last={}", l.digest));
                }
                url
            }))
        }
    }
}

/// `repo:tag` or `repo@digest`, as the audit log names an artifact.
fn resource_name(name: &RepoName, r: &Reference) -> String {
    match r {
        Reference::Tag(t) => format!("{name}:{}", t.as_str()),
        Reference::Digest(d) => format!("{name}@{d}"),
    }
}

/// Refuses a request the caller may not make; see `caller::require`.
async fn authorize(
    reg: &Registry,
    caller: &Caller,
    headers: &HeaderMap,
    route: &Route,
    method: &Method,
) -> ApiResult<()> {
    let read = *method == Method::GET || *method == Method::HEAD;
    let (repo, action) = match route {
        Route::Base => return caller::require_signed_in(reg, caller, headers),
        Route::Catalog => {
            if caller::may_list_catalog(reg, caller) {
                return Ok(());
            }
            let error = caller.token.as_ref().map(|_| "insufficient_scope");
            return Err(caller::challenge(
                reg,
                headers,
                Some("registry:catalog:*"),
                error,
                "authentication required",
            ));
        }
        Route::Tags(n) | Route::Referrers(n, _) => (n, Action::Pull),
        Route::Manifest(n, _) | Route::Blob(n, _) if read => (n, Action::Pull),
        Route::Manifest(n, _) if *method == Method::PUT => (n, Action::Push),
        Route::Manifest(n, _) | Route::Blob(n, _) if *method == Method::DELETE => {
            (n, Action::Delete)
        }
        // Other methods are refused as unsupported by the handler.
        Route::Manifest(..) | Route::Blob(..) => return Ok(()),
        Route::UploadStart(n) | Route::Upload(n, _) => (n, Action::Push),
    };
    caller::require(reg, caller, headers, repo, action).await
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Clients cannot push into a proxy project: its content comes from the upstream.
fn refuse_push_to_proxy(reg: &Registry, route: &Route, method: &Method) -> ApiResult<()> {
    let repo = match route {
        Route::UploadStart(n) | Route::Upload(n, _) => n,
        Route::Manifest(n, _) if *method == Method::PUT => n,
        _ => return Ok(()),
    };
    match reg.proxy.project_of(repo) {
        Some(p) => Err(ApiError::Oci(
            OciError::new(
                ErrorCode::Denied,
                format!(
                    "{} is a pull-through cache project; it is read-only to clients",
                    p.name
                ),
            )
            .with_status(403),
        )),
        None => Ok(()),
    }
}

async fn proxy_blob(
    reg: &Arc<Registry>,
    p: &Arc<pullthrough::ProxyProject>,
    name: &RepoName,
    d: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult<Response> {
    let (size, body) = match pullthrough::get_blob(reg, p, name, d, head).await? {
        pullthrough::ProxyBlob::Local(_) => return get_blob(reg, name, d, headers, head).await,
        pullthrough::ProxyBlob::Remote { size } => (size, Body::empty()),
        // A miss is answered whole (a Range is ignored, as HTTP allows).
        pullthrough::ProxyBlob::Streaming { size, body } => (size, Body::from_stream(body)),
    };
    let mut resp = Response::new(if head { Body::empty() } else { body });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(DIGEST_HEADER, hv(&d.to_string()));
    h.insert(header::ETAG, hv(&format!("\"{d}\"")));
    Ok(resp)
}

async fn get_blob(
    reg: &Registry,
    name: &RepoName,
    d: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult<Response> {
    let row = reg.stat_blob(name, d).await?;
    let size = row.size;
    let range = match header_str(headers, header::RANGE) {
        Some(v) => parse_range(v, size),
        None => RangeRequest::Full,
    };
    let (status, start, len) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::WithHeaders(
                OciError::new(
                    ErrorCode::RangeInvalid,
                    format!("range not satisfiable for a blob of {size} bytes"),
                ),
                vec![(header::CONTENT_RANGE, hv(&format!("bytes */{size}")))],
            ));
        }
    };
    // A whole-blob GET goes to the bucket directly when redirects are on (a ranged one is
    // served here, since not every client repeats its Range header after a redirect).
    if !head
        && status == StatusCode::OK
        && len > 0
        && let Some(url) = reg.blob_redirect(&row).await?
    {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        let h = resp.headers_mut();
        h.insert(header::LOCATION, hv(&url));
        h.insert(DIGEST_HEADER, hv(&d.to_string()));
        return Ok(resp);
    }
    let body = if head || len == 0 {
        Body::empty()
    } else {
        // The first piece is read before the head is sent, so a store that cannot read the
        // blob at all is answered 503 instead of a 200 whose body is cut at once.
        let mut stream = reg.read_blob(&row, start, len).await?;
        let first = match stream.next().await {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                return Err(berth_storage::StorageError::io(format!("reading blob {d}"), e).into());
            }
            None => bytes::Bytes::new(),
        };
        Body::from_stream(futures_util::stream::once(async move { Ok(first) }).chain(stream))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(DIGEST_HEADER, hv(&d.to_string()));
    h.insert(header::ETAG, hv(&format!("\"{d}\"")));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {start}-{}/{size}", start + len - 1)),
        );
    }
    Ok(resp)
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

    #[test]
    fn accept_lists_strip_parameters() {
        let mut h = HeaderMap::new();
        h.append(
            header::ACCEPT,
            hv("application/vnd.oci.image.manifest.v1+json; q=0.9, */*"),
        );
        h.append(header::ACCEPT, hv("Application/JSON"));
        assert_eq!(
            accept_list(&h),
            [
                "application/vnd.oci.image.manifest.v1+json",
                "*/*",
                "application/json"
            ]
        );
    }
}
