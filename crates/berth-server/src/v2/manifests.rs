//! `GET`, `HEAD`, `PUT` and `DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use berth_core::{Reference, RepoName, TagName};
use berth_service::Error;
use futures_util::StreamExt;

use super::V2;
use super::http::{DIGEST_HEADER, body_stream, empty, header_str, method_not_allowed};
use crate::App;
use crate::error::{ApiResult, hv};

/// Tags pushed with a manifest at most (`?tag=` parameters); more get 414, as the spec allows.
const MAX_TAG_PARAMS: usize = 100;

pub(super) async fn handle(
    app: &App,
    req: V2,
    body: Body,
    name: RepoName,
    r: &str,
) -> ApiResult<Response> {
    let reference = match Reference::parse(r) {
        Ok(reference) => reference,
        // Only a push with a malformed reference is a malformed request; reading or deleting
        // one finds nothing.
        Err(e) if req.method == Method::PUT && r.contains(':') => {
            return Err(Error::DigestInvalid {
                value: r.to_owned(),
                reason: e.to_string(),
            }
            .into());
        }
        Err(e) if req.method == Method::PUT => {
            return Err(Error::TagInvalid {
                value: r.to_owned(),
                reason: e.to_string(),
            }
            .into());
        }
        Err(_) => {
            return Err(Error::ManifestUnknown {
                reference: r.to_owned(),
            }
            .into());
        }
    };
    match req.method {
        Method::GET | Method::HEAD => get(app, req, name, reference).await,
        Method::PUT => put(app, req, body, name, reference).await,
        Method::DELETE => {
            app.registry
                .delete_manifest(&req.caller, &name, &reference)
                .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        _ => Err(method_not_allowed()),
    }
}

/// Media types listed in the request's `Accept` headers, parameters stripped.
fn accept_list(headers: &axum::http::HeaderMap) -> Vec<String> {
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

async fn get(app: &App, req: V2, name: RepoName, reference: Reference) -> ApiResult<Response> {
    let head = req.is_head();
    let accept = accept_list(&req.headers);
    let row = app
        .registry
        .get_manifest(&req.caller, &name, &reference, &accept, !head)
        .await?;
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

/// The `tag` query parameters of a manifest push (`PUT .../manifests/<digest>?tag=a&tag=b`).
fn tag_params(query: Option<&str>) -> Result<Vec<TagName>, Error> {
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
        return Err(Error::TooManyTags {
            limit: MAX_TAG_PARAMS,
        });
    }
    tags.into_iter()
        .map(|t| {
            TagName::parse(t).map_err(|e| Error::TagInvalid {
                value: t.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The body of a manifest push, refused once it exceeds `limit` bytes.
async fn read_limited(body: Body, limit: u64, idle: std::time::Duration) -> Result<Vec<u8>, Error> {
    if http_body::Body::size_hint(&body).lower() > limit {
        return Err(Error::ManifestTooLarge { limit });
    }
    let mut stream = body_stream(body, idle);
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Error::manifest_invalid(format!("reading the manifest failed: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(Error::ManifestTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

async fn put(
    app: &App,
    req: V2,
    body: Body,
    name: RepoName,
    reference: Reference,
) -> ApiResult<Response> {
    let reg = &app.registry;
    let limit = reg.config.limits.manifest_max_size.as_u64();
    let content_type = header_str(&req.headers, header::CONTENT_TYPE).map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let extra_tags = tag_params(req.raw_query.as_deref())?;
    let payload = read_limited(body, limit, reg.config.server.body_idle_timeout.0).await?;
    let pushed = reg
        .put_manifest(
            &req.caller,
            &name,
            &reference,
            extra_tags,
            content_type.as_deref(),
            payload,
        )
        .await?;
    let mut resp = empty(StatusCode::CREATED);
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        hv(&format!(
            "{}/v2/{name}/manifests/{}",
            app.url_base(),
            pushed.digest
        )),
    );
    h.insert(DIGEST_HEADER, hv(&pushed.digest.to_string()));
    if let Some(s) = &pushed.subject {
        h.insert("oci-subject", hv(&s.to_string()));
    }
    // One OCI-Tag per tag the push set (the reference's own tag needs none).
    for t in &pushed.tags {
        h.append("oci-tag", hv(t.as_str()));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists_strip_parameters() {
        let mut h = axum::http::HeaderMap::new();
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
