//! Who is calling and whether they may: an [`Actor`] is the caller of one request (its
//! principal, the access list of the token it used, its address), built from the credentials
//! the HTTP layer found; the checks here answer with the error that says why not, in words
//! that reveal nothing about a private project to whoever cannot see it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use berth_auth::{Principal, TokenAccess, token_grants, token_grants_catalog};
use berth_core::RepoName;
use berth_core::access::Action;

use crate::{Error, ReadCheck, Registry, Result};

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Actor {
    pub principal: Principal,
    /// The access list of the Bearer token used, if one was.
    pub token: Option<Vec<TokenAccess>>,
    /// The client's address (behind trusted proxies, the one they forwarded).
    pub source: Option<SocketAddr>,
}

impl Actor {
    /// An anonymous caller from `source`.
    pub fn anonymous(source: Option<SocketAddr>) -> Actor {
        Actor {
            principal: Principal::Anonymous,
            token: None,
            source,
        }
    }

    /// The registry itself (jobs, the proxy cache filling itself), for the audit log.
    pub fn system() -> Actor {
        Actor::anonymous(None)
    }

    pub fn ip(&self) -> IpAddr {
        self.source
            .map(|p| p.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    pub fn is_anonymous(&self) -> bool {
        self.principal.is_anonymous()
    }
}

/// The scope a token needs for `action` on `repo`, as a Bearer challenge names it.
pub fn scope_for(repo: &RepoName, action: Action) -> String {
    let actions = match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
    };
    format!("repository:{repo}:{actions}")
}

impl Registry {
    /// The caller of a request that carried `Authorization: Bearer <token>`.
    pub async fn actor_from_token(&self, token: &str, source: Option<SocketAddr>) -> Result<Actor> {
        if !self.auth.enabled() {
            return Ok(Actor::anonymous(source));
        }
        match self.auth.verify_token(token).await {
            Ok((principal, claims)) => Ok(Actor {
                principal,
                token: Some(claims.access),
                source,
            }),
            Err(berth_auth::AuthError::Meta(e)) => Err(e.into()),
            Err(_) => Err(Error::TokenInvalid),
        }
    }

    /// The caller of a request that carried Basic credentials (a login: throttled, and a
    /// failure recorded in the audit log).
    pub async fn actor_from_password(
        &self,
        user: &str,
        password: &str,
        source: Option<SocketAddr>,
    ) -> Result<Actor> {
        if !self.auth.enabled() {
            return Ok(Actor::anonymous(source));
        }
        let anonymous = Actor::anonymous(source);
        match self.auth.authenticate(user, password, anonymous.ip()).await {
            Ok(principal) => Ok(Actor {
                principal,
                token: None,
                source,
            }),
            Err(e) => {
                // A throttled or shed attempt is not recorded one by one: a flood of them
                // would only fill the log (the failures that led to it are there).
                if !matches!(
                    e,
                    berth_auth::AuthError::Throttled(_) | berth_auth::AuthError::Busy
                ) {
                    self.audit
                        .record_login_failure(user, source, &e.to_string())
                        .await;
                }
                Err(e.into())
            }
        }
    }

    /// Whether the caller may do `action` on `repo`: the principal's current rights and, with a
    /// token, also the token's access list.
    pub async fn may(&self, actor: &Actor, repo: &RepoName, action: Action) -> Result<bool> {
        if !self.auth.enabled() {
            return Ok(true);
        }
        if let Some(access) = &actor.token
            && !token_grants(access, repo.as_str(), action)
        {
            return Ok(false);
        }
        Ok(self.auth.allowed(&actor.principal, repo, action).await?)
    }

    /// Whether the caller may read `repo` by its own rights, whatever its token lists (used for
    /// mounts and the catalog, where the token names other repositories).
    pub async fn may_read_any(&self, actor: &Actor, repo: &str) -> bool {
        if !self.auth.enabled() {
            return true;
        }
        match RepoName::parse(repo) {
            Ok(r) => self
                .auth
                .allowed(&actor.principal, &r, Action::Pull)
                .await
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Refuses the request unless the caller may do `action` on `repo`. A push to a missing
    /// project that the caller may create creates it (private; a user becomes its admin).
    pub async fn require(&self, actor: &Actor, repo: &RepoName, action: Action) -> Result<()> {
        if self.may(actor, repo, action).await? {
            // A known repository's project exists (a cached lookup); only a push into a new
            // repository may need to create its project.
            if action == Action::Push
                && self.auth.enabled()
                && self.meta.repo_id(repo).await?.is_none()
            {
                self.ensure_project(actor, repo.project()).await?;
            }
            return Ok(());
        }
        if action != Action::Pull {
            self.audit
                .record(actor, action.as_str(), repo.as_str(), false, "denied")
                .await;
        }
        let scope = scope_for(repo, action);
        if actor.is_anonymous() && actor.token.is_none() {
            return Err(Error::AuthenticationRequired { scope: Some(scope) });
        }
        let reason = if actor.is_anonymous() {
            Some("authentication required".to_owned())
        } else {
            self.refusal_reason(actor, repo, action).await?
        };
        if actor.token.is_some() {
            // A token caller asks the token endpoint again for what the challenge names; the
            // message says whether that can help.
            let reason = reason.unwrap_or_else(|| {
                format!(
                    "the token does not grant {} on {repo}; ask the token endpoint for the scope {scope}",
                    action.as_str()
                )
            });
            return Err(Error::InsufficientScope { scope, reason });
        }
        Err(Error::Denied {
            reason: reason.unwrap_or_else(|| format!("requested access to {repo} is denied")),
            scope: Some(scope),
        })
    }

    /// Why a signed-in caller may not do `action` on `repo`: the same words for a private
    /// project the caller cannot see as for a missing one. None when the caller's own rights
    /// allow it (only the token lacks the scope).
    async fn refusal_reason(
        &self,
        actor: &Actor,
        repo: &RepoName,
        action: Action,
    ) -> Result<Option<String>> {
        let project = repo.project();
        let actions = self.auth.project_actions(&actor.principal, project).await?;
        if actions.contains(action) {
            return Ok(None);
        }
        if !actions.contains(Action::Pull) {
            return Ok(Some(format!(
                "project {project} does not exist or is not visible to you"
            )));
        }
        if self.proxy.project_of(repo).is_some() {
            return Ok(Some(format!(
                "{project} is a pull-through cache project; it is read-only to clients"
            )));
        }
        let who = match &actor.principal {
            Principal::User { name, groups, .. } => {
                let role = match self.meta.project(project).await? {
                    Some(p) => self.meta.best_role(p.id, name, groups).await?,
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
    pub fn require_signed_in(&self, actor: &Actor) -> Result<()> {
        if self.auth.enabled() && actor.is_anonymous() {
            return Err(Error::AuthenticationRequired { scope: None });
        }
        Ok(())
    }

    /// Requires a registry admin.
    pub fn require_admin(&self, actor: &Actor) -> Result<()> {
        if !self.auth.enabled() || actor.principal.is_admin() {
            return Ok(());
        }
        self.require_signed_in(actor)?;
        Err(Error::forbidden("this needs a registry admin"))
    }

    /// Whether a catalog request is allowed: any signed-in caller, but with a token only if
    /// the token carries the catalog scope.
    pub fn may_list_catalog(&self, actor: &Actor) -> bool {
        !self.auth.enabled()
            || (!actor.is_anonymous()
                && actor.token.as_ref().is_none_or(|t| token_grants_catalog(t)))
    }

    /// Refuses a catalog request the caller may not make.
    pub fn require_catalog(&self, actor: &Actor) -> Result<()> {
        if self.may_list_catalog(actor) {
            return Ok(());
        }
        let scope = "registry:catalog:*".to_owned();
        Err(match actor.token {
            Some(_) => Error::InsufficientScope {
                scope,
                reason: "authentication required".into(),
            },
            None => Error::AuthenticationRequired { scope: Some(scope) },
        })
    }

    async fn ensure_project(&self, actor: &Actor, project: &str) -> Result<()> {
        if self.meta.project(project).await?.is_some() {
            return Ok(());
        }
        let member = match &actor.principal {
            Principal::User {
                name, admin: false, ..
            } => Some(name.as_str()),
            _ => None,
        };
        match self.meta.create_project(project, false, member).await {
            Ok(_) => {
                self.audit
                    .record(actor, "project.create", project, true, "created by a push")
                    .await;
                Ok(())
            }
            Err(berth_meta::CreateError::Exists) => Ok(()),
            Err(berth_meta::CreateError::Meta(e)) => Err(e.into()),
        }
    }
}

/// The caller's own read rights as a [`ReadCheck`].
pub struct Reads<'a>(pub &'a Registry, pub &'a Actor);

#[async_trait::async_trait]
impl ReadCheck for Reads<'_> {
    async fn may_read(&self, repo: &str) -> bool {
        self.0.may_read_any(self.1, repo).await
    }
}
