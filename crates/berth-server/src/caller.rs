//! Who is calling: the client's address (behind trusted proxies, the one they forwarded) and
//! the credentials of the `Authorization` header (Basic or Bearer), turned into the service's
//! [`Actor`]. Wrong credentials are refused here; a request without any is anonymous.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, header};
use berth_service::Actor;

use crate::error::ApiError;
use crate::{App, AppState};

/// The caller of a request, as an extractor.
pub struct Caller(pub Actor);

/// The client's address: the connection's peer, or behind a trusted proxy the address it
/// forwarded (`server.trusted_proxies`).
pub fn peer(app: &App, headers: &HeaderMap, ext: &Extensions) -> Option<SocketAddr> {
    let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)?;
    if app.trusted_proxies.is_empty() {
        return Some(peer);
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let ip = berth_core::config::client_address(peer.ip(), &forwarded, &app.trusted_proxies);
    Some(SocketAddr::new(
        ip,
        if ip == peer.ip() { peer.port() } else { 0 },
    ))
}

/// Basic credentials of a request, if it carries them.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    berth_core::credentials::basic(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    berth_core::credentials::bearer(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// Works out the caller of a request and notes their name for its log line.
pub async fn identify(app: &App, headers: &HeaderMap, ext: &Extensions) -> Result<Actor, ApiError> {
    let source = peer(app, headers, ext);
    let actor = if let Some(t) = bearer(headers) {
        app.registry.actor_from_token(t, source).await?
    } else if let Some((user, password)) = basic_credentials(headers) {
        app.registry
            .actor_from_password(&user, &password, source)
            .await?
    } else {
        Actor::anonymous(source)
    };
    crate::request_log::record_caller(ext, actor.principal.name());
    Ok(actor)
}

impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        identify(app, &parts.headers, &parts.extensions)
            .await
            .map(Caller)
    }
}
