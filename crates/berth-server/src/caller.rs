//! Who is calling and whether they may: reads the `Authorization` header (Basic or Bearer),
//! asks the auth service, and turns a refusal into the answer clients expect (a 401 with a
//! Bearer challenge naming the scope to ask for, a 403 for a signed-in caller without the
//! right, a 429 while throttled).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, header};
use berth_auth::{AuthError, Principal, TokenAccess, token_grants, token_grants_catalog};
use berth_core::access::Action;
use berth_core::{ErrorCode, OciError, RepoName};

use crate::audit::Actor;
use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The access list of the Bearer token used, if one was.
    pub token: Option<Vec<TokenAccess>>,
    pub peer: Option<SocketAddr>,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::new(self.principal.name(), self.principal.kind(), self.peer)
    }

    pub fn ip(&self) -> IpAddr {
        self.peer
            .map(|p| p.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

/// The client's address: the connection's peer, or behind a trusted proxy the address it
/// forwarded (`server.trusted_proxies`).
pub fn peer(
    reg: &Registry,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
) -> Option<SocketAddr> {
    let peer = ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)?;
    if reg.trusted_proxies.is_empty() {
        return Some(peer);
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let ip = berth_core::config::client_address(peer.ip(), &forwarded, &reg.trusted_proxies);
    Some(SocketAddr::new(
        ip,
        if ip == peer.ip() { peer.port() } else { 0 },
    ))
}

/// The `WWW-Authenticate` realm: the configured one, else this server's token endpoint as the
/// client addressed it.
pub fn realm(reg: &Registry, headers: &HeaderMap) -> String {
    if !reg.auth.config.realm.is_empty() {
        return reg.auth.config.realm.clone();
    }
    let base = match reg.config.server.external_url.as_deref() {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let scheme = if reg.config.server.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    !h.is_empty()
                        && h.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
                })
                .unwrap_or("localhost");
            format!("{scheme}://{host}")
        }
    };
    format!("{base}/auth/token")
}

/// A 401 with the Bearer challenge for `scope` (`None`: no scope, as for `/v2/`).
pub fn challenge(
    reg: &Registry,
    headers: &HeaderMap,
    scope: Option<&str>,
    error: Option<&str>,
    message: &str,
) -> ApiError {
    let mut v = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        realm(reg, headers),
        reg.auth.config.service
    );
    if let Some(s) = scope {
        v.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        v.push_str(&format!(",error=\"{e}\""));
    }
    let hv = HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    ApiError::WithHeaders(
        OciError::new(ErrorCode::Unauthorized, message),
        vec![(header::WWW_AUTHENTICATE, hv)],
    )
}

pub fn throttled(wait: std::time::Duration) -> ApiError {
    let secs = wait.as_secs().max(1);
    ApiError::WithHeaders(
        OciError::new(
            ErrorCode::TooManyRequests,
            format!("too many failed logins; try again in {secs} s"),
        ),
        vec![(header::RETRY_AFTER, HeaderValue::from(secs))],
    )
}

/// The answer to a login shed from a full password-check queue (`auth.hash_queue`).
pub fn auth_busy() -> ApiError {
    ApiError::WithHeaders(
        OciError::new(
            ErrorCode::TooManyRequests,
            "too many logins are being checked at once; try again in a moment",
        ),
        vec![(header::RETRY_AFTER, HeaderValue::from(1))],
    )
}

/// Basic credentials of a request, if it carries them.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    berth_core::credentials::basic(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    berth_core::credentials::bearer(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// Works out the caller. Wrong credentials are refused here (401, or 429 while throttled);
/// a request without credentials is anonymous.
pub async fn identify(
    reg: &Registry,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> ApiResult<Caller> {
    let mut caller = Caller {
        principal: Principal::Anonymous,
        token: None,
        peer,
    };
    if !reg.auth.enabled() {
        return Ok(caller);
    }
    if let Some(t) = bearer(headers) {
        return match reg.auth.verify_token(t).await {
            Ok((p, claims)) => {
                caller.principal = p;
                caller.token = Some(claims.access);
                Ok(caller)
            }
            Err(AuthError::Meta(e)) => Err(e.into()),
            Err(_) => Err(challenge(
                reg,
                headers,
                None,
                Some("invalid_token"),
                "the token is invalid, expired, or its account no longer exists",
            )),
        };
    }
    if let Some((user, password)) = basic_credentials(headers) {
        return match reg.auth.authenticate(&user, &password, caller.ip()).await {
            Ok(p) => {
                caller.principal = p;
                Ok(caller)
            }
            Err(e) => {
                // A throttled attempt is not recorded one by one: a flood of them would only
                // fill the log (the failures that led to it are there).
                if !matches!(e, AuthError::Throttled(_)) {
                    let actor = Actor::new(&user, "user", peer);
                    reg.audit
                        .record(&actor, "login", "registry", false, &e.to_string())
                        .await;
                }
                Err(auth_error(reg, headers, e))
            }
        };
    }
    Ok(caller)
}

/// The answer to a failed login.
pub fn auth_error(reg: &Registry, headers: &HeaderMap, e: AuthError) -> ApiError {
    match e {
        AuthError::Throttled(wait) => throttled(wait),
        AuthError::Busy => auth_busy(),
        AuthError::Unavailable(_) => challenge(
            reg,
            headers,
            None,
            None,
            "the login could not be checked: the identity provider is unavailable",
        ),
        e @ (AuthError::Meta(_) | AuthError::Internal(_)) => e.into(),
        AuthError::Invalid => challenge(reg, headers, None, None, "authentication failed"),
    }
}

/// Whether the caller may do `action` on `repo`: the principal's current rights and, with a
/// token, also the token's access list.
pub async fn may(
    reg: &Registry,
    caller: &Caller,
    repo: &RepoName,
    action: Action,
) -> ApiResult<bool> {
    if !reg.auth.enabled() {
        return Ok(true);
    }
    if let Some(access) = &caller.token
        && !token_grants(access, repo.as_str(), action)
    {
        return Ok(false);
    }
    reg.auth
        .allowed(&caller.principal, repo, action)
        .await
        .map_err(ApiError::from)
}

/// Whether the caller may read `repo` by its own rights, whatever its token lists (used for
/// mounts and the catalog, where the token names other repositories).
pub async fn may_read_any(reg: &Registry, caller: &Caller, repo: &str) -> bool {
    if !reg.auth.enabled() {
        return true;
    }
    match RepoName::parse(repo) {
        Ok(r) => reg
            .auth
            .allowed(&caller.principal, &r, Action::Pull)
            .await
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The caller's own read rights as a [`crate::registry::ReadCheck`].
pub struct Reads<'a>(pub &'a Registry, pub &'a Caller);

#[async_trait::async_trait]
impl crate::registry::ReadCheck for Reads<'_> {
    async fn may_read(&self, repo: &str) -> bool {
        may_read_any(self.0, self.1, repo).await
    }
}

/// Refuses the request unless the caller may do `action` on `repo`. A push to a missing
/// project that the caller may create creates it (private; a user becomes its admin).
pub async fn require(
    reg: &Registry,
    caller: &Caller,
    headers: &HeaderMap,
    repo: &RepoName,
    action: Action,
) -> ApiResult<()> {
    if may(reg, caller, repo, action).await? {
        // A known repository's project exists (a cached lookup); only a push into a new
        // repository may need to create its project.
        if action == Action::Push && reg.auth.enabled() && reg.meta.repo_id(repo).await?.is_none() {
            ensure_project(reg, caller, repo.project()).await?;
        }
        return Ok(());
    }
    if action != Action::Pull {
        reg.audit
            .record(
                &caller.actor(),
                action.as_str(),
                repo.as_str(),
                false,
                "denied",
            )
            .await;
    }
    let scope_actions = match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
    };
    let scope = format!("repository:{repo}:{scope_actions}");
    let reason = if caller.principal.is_anonymous() {
        Some("authentication required".to_owned())
    } else {
        refusal_reason(reg, caller, repo, action).await?
    };
    if caller.principal.is_anonymous() && caller.token.is_none() {
        return Err(challenge(
            reg,
            headers,
            Some(&scope),
            None,
            "authentication required",
        ));
    }
    if caller.token.is_some() {
        // A token caller asks the token endpoint again for what the challenge names; the
        // message says whether that can help.
        let message = match reason {
            None => format!(
                "the token does not grant {} on {repo}; ask the token endpoint for the scope {scope}",
                action.as_str()
            ),
            Some(r) => r,
        };
        return Err(challenge(
            reg,
            headers,
            Some(&scope),
            Some("insufficient_scope"),
            &message,
        ));
    }
    let message = reason.unwrap_or_else(|| format!("requested access to {repo} is denied"));
    Err(ApiError::Oci(
        OciError::new(ErrorCode::Denied, message)
            .with_detail(serde_json::json!({ "scope": scope }))
            .with_status(403),
    ))
}

/// Why a signed-in caller may not do `action` on `repo`, in words that reveal nothing about a
/// project the caller cannot see: a private project of which the caller is no member reads
/// exactly as a missing one. `None` when the caller's own rights allow it (a token that lacks
/// the scope).
async fn refusal_reason(
    reg: &Registry,
    caller: &Caller,
    repo: &RepoName,
    action: Action,
) -> ApiResult<Option<String>> {
    let project = repo.project();
    let actions = reg
        .auth
        .project_actions(&caller.principal, project)
        .await
        .map_err(ApiError::from)?;
    if actions.contains(action) {
        return Ok(None);
    }
    if !actions.contains(Action::Pull) {
        return Ok(Some(format!(
            "project {project} does not exist or is not visible to you"
        )));
    }
    if reg.proxy.project_of(repo).is_some() {
        return Ok(Some(format!(
            "{project} is a pull-through cache project; it is read-only to clients"
        )));
    }
    let who = match &caller.principal {
        Principal::User { name, groups, .. } => {
            let role = match reg.meta.project(project).await? {
                Some(p) => reg.meta.best_role(p.id, name, groups).await?,
                None => None,
            };
            match role {
                Some(r) => format!("your role in project {project} ({})", r.as_str()),
                None => {
                    format!("you are not a member of project {project}; as a public project it")
                }
            }
        }
        Principal::Robot { name, .. } => {
            format!("{name}'s permissions in project {project} ({actions})")
        }
        Principal::Anonymous => "anonymous access".to_owned(),
    };
    Ok(Some(format!(
        "{who} does not allow {} on {repo}",
        action.as_str()
    )))
}

/// Requires a signed-in caller (any principal but anonymous).
pub fn require_signed_in(reg: &Registry, caller: &Caller, headers: &HeaderMap) -> ApiResult<()> {
    if reg.auth.enabled() && caller.principal.is_anonymous() {
        return Err(challenge(
            reg,
            headers,
            None,
            None,
            "authentication required",
        ));
    }
    Ok(())
}

/// Whether a catalog request is allowed: any signed-in caller, but with a token only if the
/// token carries the catalog scope.
pub fn may_list_catalog(reg: &Registry, caller: &Caller) -> bool {
    !reg.auth.enabled()
        || (!caller.principal.is_anonymous()
            && caller
                .token
                .as_ref()
                .is_none_or(|t| token_grants_catalog(t)))
}

async fn ensure_project(reg: &Registry, caller: &Caller, project: &str) -> ApiResult<()> {
    if reg.meta.project(project).await?.is_some() {
        return Ok(());
    }
    let member = match &caller.principal {
        Principal::User {
            name, admin: false, ..
        } => Some(name.as_str()),
        _ => None,
    };
    match reg.meta.create_project(project, false, member).await {
        Ok(_) => {
            reg.audit
                .record(
                    &caller.actor(),
                    "project.create",
                    project,
                    true,
                    "created by a push",
                )
                .await;
            Ok(())
        }
        Err(berth_meta::CreateError::Exists) => Ok(()),
        Err(berth_meta::CreateError::Meta(e)) => Err(e.into()),
    }
}

impl axum::extract::FromRequestParts<std::sync::Arc<Registry>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        reg: &std::sync::Arc<Registry>,
    ) -> Result<Self, Self::Rejection> {
        let caller = identify(
            reg,
            &parts.headers,
            peer(reg, &parts.headers, &parts.extensions),
        )
        .await?;
        crate::request_log::record_caller(&parts.extensions, caller.principal.name());
        Ok(caller)
    }
}

/// Requires a registry admin (401 for anonymous callers, 403 for others).
pub fn require_admin(reg: &Registry, caller: &Caller, headers: &HeaderMap) -> ApiResult<()> {
    if !reg.auth.enabled() || caller.principal.is_admin() {
        return Ok(());
    }
    require_signed_in(reg, caller, headers)?;
    Err(forbidden("this needs a registry admin"))
}

pub fn forbidden(message: &str) -> ApiError {
    ApiError::Oci(OciError::new(ErrorCode::Denied, message).with_status(403))
}
