//! The HTTP layer of Berth: the router, the `/v2` API and its registry service, request
//! logging, and the listener (plain or TLS, header-read timeout, graceful shutdown).

mod admin;
mod api;
pub mod audit;
pub mod caller;
pub mod connections;
pub mod error;
mod listener;
pub mod pullthrough;
pub mod registry;
pub mod request_log;
mod token_api;
mod v2;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};

pub use berth_auth::AdminBootstrap;
pub use berth_core::admin::check_password as check_password_rules;
pub use listener::{ListenError, bind, serve};
pub use registry::Registry;

/// The whole HTTP surface of a node.
pub fn router(registry: Arc<Registry>) -> Router {
    registry_api()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/gc", post(api::start_gc))
        .route("/api/v1/scrub", post(api::start_scrub))
        .route("/api/v1/jobs", get(api::list_jobs))
        .route("/api/v1/jobs/{id}", get(api::get_job))
        .route("/api/v1/storage", get(api::storage))
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
        .layer(middleware::from_fn(request_log::request_log))
}

/// The registry API (`/v2`) and its token endpoint, which every listener serves.
fn registry_api() -> Router<Arc<Registry>> {
    Router::new()
        .route("/v2", any(v2::dispatch))
        .route("/v2/", any(v2::dispatch))
        .route("/v2/{*path}", any(v2::dispatch))
        .route("/auth/token", get(token_api::token).post(token_api::token))
}

/// The router of the Docker `registry-mirrors` listener: every `/v2/<repo>` request is served
/// as `/v2/<project>/<repo>` of the proxy project `project`. It serves the registry API and
/// the token endpoint only: the admin API, metrics and probes stay on the main listener.
pub fn mirror_router(registry: Arc<Registry>, project: &str) -> Router {
    registry_api()
        .with_state(registry)
        .layer(middleware::from_fn(request_log::request_log))
        .layer(axum::Extension(v2::MirrorOf(project.to_owned())))
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
