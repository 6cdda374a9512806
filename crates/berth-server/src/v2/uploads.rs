//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (a session, a mount, or a whole blob in one
//! request) and `GET`, `PATCH`, `PUT`, `DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use berth_core::{Algorithm, RepoName};
use berth_service::access::Reads;
use berth_service::{Error, UploadState};
use berth_storage::UploadId;

use super::V2;
use super::http::{
    blob_created, body_is_empty, body_stream, content_length, content_range, digest, empty,
    method_not_allowed,
};
use crate::App;
use crate::error::{ApiResult, hv, range_value};

const UPLOAD_UUID_HEADER: &str = "docker-upload-uuid";

fn upload_response(
    app: &App,
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
            app.url_base(),
            state.id
        )),
    );
    h.insert(header::RANGE, hv(&range_value(state.offset)));
    h.insert(UPLOAD_UUID_HEADER, hv(&state.id.to_string()));
    r
}

/// `POST /v2/<name>/blobs/uploads/`: `?mount=<digest>&from=<repo>` links a blob the caller
/// may read elsewhere, `?digest=<digest>` takes the whole blob in this request, and otherwise
/// a session opens (`?digest-algorithm=` choosing its hash).
pub(super) async fn start(app: &App, req: V2, body: Body, name: RepoName) -> ApiResult<Response> {
    if req.method != Method::POST {
        return Err(method_not_allowed());
    }
    let reg = &app.registry;
    if let Some(mount) = req.query.get("mount") {
        let d = digest(mount)?;
        let from = match req.query.get("from").filter(|f| !f.is_empty()) {
            Some(f) => Some(super::name(f)?),
            None => None,
        };
        // A source the caller cannot read is treated as not holding the blob: the client
        // gets an upload session and never learns whether it exists there.
        let readable = Reads(reg, &req.caller);
        if reg.mount_blob(&name, &d, from.as_ref(), &readable).await? {
            return Ok(blob_created(app, &name, &d));
        }
    }
    if let Some(dg) = req.query.get("digest") {
        let d = digest(dg)?;
        let cl = content_length(&req.headers)?;
        let idle = reg.config.server.body_idle_timeout.0;
        reg.monolithic_upload(&name, &d, cl, body_stream(body, idle))
            .await?;
        return Ok(blob_created(app, &name, &d));
    }
    let algorithm = match req.query.get("digest-algorithm").map(String::as_str) {
        None | Some("") => Algorithm::Sha256,
        Some(a) => Algorithm::parse(a).ok_or_else(|| Error::AlgorithmUnsupported(a.to_owned()))?,
    };
    let state = reg.start_upload(&name, algorithm).await?;
    Ok(upload_response(app, StatusCode::ACCEPTED, &name, &state))
}

/// A session: its state (`GET`), a chunk (`PATCH`), completion (`PUT ?digest=`), cancel
/// (`DELETE`).
pub(super) async fn handle(
    app: &App,
    req: V2,
    body: Body,
    name: RepoName,
    id: &str,
) -> ApiResult<Response> {
    let id = UploadId::parse(id).ok_or(Error::UploadUnknown)?;
    let reg = &app.registry;
    let idle = reg.config.server.body_idle_timeout.0;
    match req.method {
        Method::GET => {
            let state = reg.upload_status(&name, &id).await?;
            Ok(upload_response(app, StatusCode::NO_CONTENT, &name, &state))
        }
        Method::PATCH => {
            let range = content_range(&req.headers)?;
            let cl = content_length(&req.headers)?;
            let state = reg
                .append_upload(&name, &id, range, cl, body_stream(body, idle))
                .await?;
            Ok(upload_response(app, StatusCode::ACCEPTED, &name, &state))
        }
        Method::PUT => {
            let d = req.query.get("digest").ok_or(Error::DigestRequired)?;
            let d = digest(d)?;
            let range = content_range(&req.headers)?;
            let cl = content_length(&req.headers)?;
            let body = (!body_is_empty(&body)).then(|| body_stream(body, idle));
            reg.finish_upload(&name, &id, &d, range, cl, body).await?;
            Ok(blob_created(app, &name, &d))
        }
        Method::DELETE => {
            reg.cancel_upload(&name, &id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(method_not_allowed()),
    }
}
