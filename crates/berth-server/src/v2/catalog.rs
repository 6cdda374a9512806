//! `GET /v2/_catalog`: the repositories the caller may read.

use axum::response::Response;
use berth_service::access::Reads;

use super::V2;
use super::http::{json_response, method_not_allowed, pagination, with_next_link};
use crate::App;
use crate::error::ApiResult;

pub(super) async fn list(app: &App, req: V2) -> ApiResult<Response> {
    if !req.is_read() {
        return Err(method_not_allowed());
    }
    let (n, last) = pagination(app, &req.query)?;
    let reg = &app.registry;
    let page = reg
        .catalog(last.as_deref(), n, &Reads(reg, &req.caller))
        .await?;
    let resp = json_response(
        serde_json::json!({ "repositories": page.items }),
        "application/json",
    );
    let base = app.url_base();
    Ok(with_next_link(resp, &page, || {
        format!(
            "{base}/v2/_catalog?n={n}&last={}",
            page.items.last().map_or("", |s| s)
        )
    }))
}
