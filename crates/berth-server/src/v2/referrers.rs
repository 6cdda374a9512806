//! `GET /v2/<name>/referrers/<digest>`: the manifests whose subject is the digest, as an
//! image index, optionally filtered by `artifactType`.

use axum::http::HeaderValue;
use axum::response::Response;
use berth_core::RepoName;
use berth_core::manifest::OCI_INDEX;

use super::V2;
use super::http::{digest, json_response, method_not_allowed, pagination, with_next_link};
use crate::App;
use crate::error::ApiResult;

pub(super) async fn list(app: &App, req: V2, name: RepoName, d: &str) -> ApiResult<Response> {
    if !req.is_read() {
        return Err(method_not_allowed());
    }
    let d = digest(d)?;
    let (n, last) = pagination(app, &req.query)?;
    let artifact_type = req.query.get("artifactType").filter(|a| !a.is_empty());
    let page = app
        .registry
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
    let body =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut resp = json_response(body, OCI_INDEX);
    if artifact_type.is_some() {
        resp.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    let base = app.url_base();
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
