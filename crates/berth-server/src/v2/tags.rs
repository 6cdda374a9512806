//! `GET /v2/<name>/tags/list`.

use axum::response::Response;
use berth_core::RepoName;

use super::V2;
use super::http::{json_response, method_not_allowed, pagination, with_next_link};
use crate::App;
use crate::error::ApiResult;

pub(super) async fn list(app: &App, req: V2, name: RepoName) -> ApiResult<Response> {
    if !req.is_read() {
        return Err(method_not_allowed());
    }
    let (n, last) = pagination(app, &req.query)?;
    let page = app.registry.tags(&name, last.as_deref(), n).await?;
    let resp = json_response(
        serde_json::json!({ "name": name.as_str(), "tags": page.items }),
        "application/json",
    );
    let base = app.url_base();
    Ok(with_next_link(resp, &page, || {
        format!(
            "{base}/v2/{name}/tags/list?n={n}&last={}",
            page.items.last().map_or("", |s| s)
        )
    }))
}
