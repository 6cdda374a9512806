//! The HTTP layer of Berth: the router, the `/v2` API (`v2/`, a file per resource), the
//! admin API (`admin/`, a file per resource), the token endpoint, request logging, and the
//! listener (plain or TLS, connection limits, header-read timeout, graceful shutdown). The
//! rules live in berth-service; errors become responses in `error.rs` only.

mod admin;
pub mod caller;
pub mod connections;
pub mod error;
mod listener;
mod metrics;
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
pub use berth_service::Registry;
pub use listener::{ListenError, bind, serve};

/// What the HTTP layer of a node holds: the services, and what only HTTP needs.
pub struct App {
    pub registry: Arc<Registry>,
    /// The connections of this node's listeners (limits, idle clocks, counters).
    pub connections: Arc<connections::Connections>,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<berth_core::config::IpBlock>,
}

pub type AppState = Arc<App>;

impl App {
    pub fn new(registry: Arc<Registry>) -> AppState {
        let config = &registry.config;
        let trusted_proxies = config
            .server
            .trusted_proxies
            .iter()
            .filter_map(|p| berth_core::config::IpBlock::parse(p))
            .collect();
        let connections = connections::Connections::new(connections::ConnectionLimits::new(
            config,
            connections::open_files_limit(),
        ));
        Arc::new(App {
            registry,
            connections,
            trusted_proxies,
        })
    }

    /// The base of `Location` headers: empty (relative) unless an external URL is configured.
    pub fn url_base(&self) -> &str {
        self.registry
            .config
            .server
            .external_url
            .as_deref()
            .map(|u| u.trim_end_matches('/'))
            .unwrap_or("")
    }
}

/// The whole HTTP surface of a node over `registry` (a convenience for tests; a server keeps
/// its [`App`] for the listener's connection counters).
pub fn router(registry: Arc<Registry>) -> Router {
    app_router(App::new(registry))
}

/// The whole HTTP surface of a node.
pub fn app_router(app: AppState) -> Router {
    registry_api()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/gc", post(admin::jobs::start_gc))
        .route("/api/v1/scrub", post(admin::jobs::start_scrub))
        .route("/api/v1/vulndb", get(admin::jobs::vulndb_status))
        .route("/api/v1/vulndb/sync", post(admin::jobs::start_vulndb_sync))
        .route("/api/v1/jobs", get(admin::jobs::list))
        .route("/api/v1/jobs/{id}", get(admin::jobs::get))
        .route("/api/v1/storage", get(admin::jobs::storage))
        .route("/api/v1/openapi.json", get(admin::openapi))
        .route("/api/v1/me", get(admin::users::me))
        .route(
            "/api/v1/projects",
            get(admin::projects::list).post(admin::projects::create),
        )
        .route(
            "/api/v1/projects/{project}",
            get(admin::projects::get)
                .patch(admin::projects::update)
                .delete(admin::projects::delete),
        )
        .route(
            "/api/v1/projects/{project}/members",
            get(admin::projects::members)
                .put(admin::projects::set_member)
                .delete(admin::projects::remove_member),
        )
        .route(
            "/api/v1/projects/{project}/repositories",
            get(admin::projects::repositories),
        )
        .route(
            "/api/v1/users",
            get(admin::users::list).post(admin::users::create),
        )
        .route(
            "/api/v1/users/{user}",
            get(admin::users::get)
                .patch(admin::users::update)
                .delete(admin::users::delete),
        )
        .route(
            "/api/v1/users/{user}/password",
            put(admin::users::set_password),
        )
        .route(
            "/api/v1/robots",
            get(admin::robots::list).post(admin::robots::create),
        )
        .route("/api/v1/robots/{robot}", delete(admin::robots::delete))
        .route(
            "/api/v1/repositories/{*path}",
            get(admin::repositories::get)
                .post(admin::repositories::post)
                .delete(admin::repositories::delete),
        )
        .route("/api/v1/audit", get(admin::log::query))
        .route("/api/v1/search", get(admin::log::search))
        .route("/api/v1/token-keys", post(admin::log::rotate_token_key))
        .layer(middleware::from_fn_with_state(app.clone(), error::finish))
        .with_state(app)
        .layer(middleware::from_fn(request_log::request_log))
}

/// The registry API (`/v2`) and its token endpoint, which every listener serves.
fn registry_api() -> Router<AppState> {
    Router::new()
        .route("/v2", any(v2::dispatch))
        .route("/v2/", any(v2::dispatch))
        .route("/v2/{*path}", any(v2::dispatch))
        .route("/auth/token", get(token_api::token).post(token_api::token))
}

/// The router of the Docker `registry-mirrors` listener: every `/v2/<repo>` request is served
/// as `/v2/<project>/<repo>` of the proxy project `project`. It serves the registry API and
/// the token endpoint only: the admin API, metrics and probes stay on the main listener.
pub fn mirror_router(app: AppState, project: &str) -> Router {
    registry_api()
        .layer(middleware::from_fn_with_state(app.clone(), error::finish))
        .with_state(app)
        .layer(middleware::from_fn(request_log::request_log))
        .layer(axum::Extension(v2::MirrorOf(project.to_owned())))
}

async fn readyz(axum::extract::State(app): axum::extract::State<AppState>) -> Response {
    let reg = &app.registry;
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
