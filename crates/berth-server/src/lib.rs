//! The HTTP layer of Berth: the router, the `/v2` API and its registry service, request
//! logging, and the listener (plain or TLS, header-read timeout, graceful shutdown).

mod admin;
mod api;
pub mod audit;
pub mod caller;
pub mod error;
mod listener;
pub mod pullthrough;
pub mod registry;
mod token_api;
mod v2;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use tracing::Instrument;

pub use listener::{ListenError, bind, serve};
pub use registry::Registry;

/// The whole HTTP surface of a node.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/v2", any(v2::dispatch))
        .route("/v2/", any(v2::dispatch))
        .route("/v2/{*path}", any(v2::dispatch))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/gc", post(api::start_gc))
        .route("/api/v1/scrub", post(api::start_scrub))
        .route("/api/v1/jobs", get(api::list_jobs))
        .route("/api/v1/jobs/{id}", get(api::get_job))
        .route("/api/v1/storage", get(api::storage))
        .route("/auth/token", get(token_api::token).post(token_api::token))
        .route("/api/v1/openapi.json", get(admin::openapi))
        .route("/api/v1/me", get(admin::me))
        .route(
            "/api/v1/projects",
            get(admin::list_projects).post(admin::create_project),
        )
        .route(
            "/api/v1/projects/{project}",
            get(admin::get_project)
                .patch(admin::update_project)
                .delete(admin::delete_project),
        )
        .route(
            "/api/v1/projects/{project}/members",
            get(admin::list_members)
                .put(admin::set_member)
                .delete(admin::remove_member),
        )
        .route(
            "/api/v1/projects/{project}/repositories",
            get(admin::project_repositories),
        )
        .route(
            "/api/v1/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route(
            "/api/v1/users/{user}",
            get(admin::get_user)
                .patch(admin::update_user)
                .delete(admin::delete_user),
        )
        .route("/api/v1/users/{user}/password", put(admin::set_password))
        .route(
            "/api/v1/robots",
            get(admin::list_robots).post(admin::create_robot),
        )
        .route("/api/v1/robots/{robot}", delete(admin::delete_robot))
        .route(
            "/api/v1/repositories/{*path}",
            get(admin::repository_get).delete(admin::repository_delete),
        )
        .route("/api/v1/audit", get(admin::query_audit))
        .route("/api/v1/search", get(admin::search))
        .route("/api/v1/token-keys", post(admin::rotate_token_key))
        .with_state(registry)
        .layer(middleware::from_fn(request_log))
}

/// The router of the Docker `registry-mirrors` listener: every `/v2/<repo>` request is served
/// as `/v2/<project>/<repo>` of the proxy project `project`.
pub fn mirror_router(registry: Arc<Registry>, project: &str) -> Router {
    router(registry).layer(axum::Extension(v2::MirrorOf(project.to_owned())))
}

async fn readyz(axum::extract::State(reg): axum::extract::State<Arc<Registry>>) -> Response {
    if let Err(e) = reg.meta.ping().await {
        tracing::warn!(error = %e, "readiness check failed: database");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response();
    }
    // Asking for the size of a blob that cannot exist: "not found" proves the store answers.
    let probe = berth_storage::BlobKey::from_upload(
        berth_core::Digest::sha256_of(b"berth readiness probe"),
        &berth_storage::UploadId::parse("00000000-0000-4000-8000-000000000000").unwrap_or_default(),
    );
    match reg.blobs.blob_size(&probe).await {
        Ok(_) => {}
        Err(e) if e.kind == berth_storage::StorageErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: blob store");
            return (StatusCode::SERVICE_UNAVAILABLE, "blob store unreachable").into_response();
        }
    }
    "ready".into_response()
}

/// Gives every request an id (the client's `X-Request-Id` if it sent a sane one), a span
/// carrying it, and one log line when the response head is ready.
async fn request_log(req: Request<Body>, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", id = %id, method = %method, path = %path);
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, ms, "request failed");
        } else {
            tracing::info!(status, ms, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
