//! Tokens of the Docker token protocol: who asks (anonymous, a password login, a refresh
//! token), what they may have of what they asked for, and the signed token.

use std::net::SocketAddr;

use berth_auth::{IssuedToken, Principal};
use berth_core::access::Scope;

use crate::access::Actor;
use crate::{Error, Registry, Result};

/// Scopes one token request may name at most (each costs a permission lookup).
pub const MAX_SCOPES: usize = 64;

/// How a token request proves who it is.
#[derive(Debug)]
pub enum Grant<'a> {
    Anonymous,
    Password { user: &'a str, password: &'a str },
    Refresh { token: &'a str },
}

/// A token request.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    pub grant: Grant<'a>,
    pub scopes: Vec<Scope>,
    /// Whether to hand out a refresh token too (`offline_token`, `access_type=offline`).
    pub offline: bool,
    pub source: Option<SocketAddr>,
    /// The scopes as the client wrote them, for the audit log.
    pub asked: String,
}

impl Registry {
    /// Issues a token for what the caller may have of what they asked for. A login is
    /// recorded in the audit log once per check of its credentials (a CI job asking for a
    /// token per repository is one login), a failure every time but when throttled or shed.
    pub async fn issue_token(&self, req: TokenRequest<'_>) -> Result<IssuedToken> {
        if !self.auth.enabled() {
            // An open registry still answers, so clients configured for a token flow work.
            return Ok(self.auth.issue(&Principal::Anonymous, Vec::new(), false)?);
        }
        if req.scopes.len() > MAX_SCOPES {
            return Err(Error::invalid(format!(
                "a token request may name at most {MAX_SCOPES} scopes"
            )));
        }
        let anonymous = Actor::anonymous(req.source);
        let (principal, offline, checked) = match req.grant {
            Grant::Anonymous => (Principal::Anonymous, false, false),
            Grant::Password { user, password } => {
                match self.auth.login(user, password, anonymous.ip()).await {
                    Ok(l) => (l.principal, req.offline, l.checked),
                    Err(e) => {
                        if !matches!(
                            e,
                            berth_auth::AuthError::Throttled(_) | berth_auth::AuthError::Busy
                        ) {
                            self.audit
                                .record_login_failure(user, req.source, &e.to_string())
                                .await;
                        }
                        return Err(e.into());
                    }
                }
            }
            Grant::Refresh { token } => match self.auth.verify_refresh(token).await {
                Ok(p) => (p, false, false),
                Err(berth_auth::AuthError::Meta(e)) => return Err(e.into()),
                Err(_) => return Err(Error::LoginFailed),
            },
        };
        let access = self.auth.grant(&principal, &req.scopes).await?;
        let issued = self.auth.issue(&principal, access, offline)?;
        if checked {
            let actor = Actor {
                principal,
                token: None,
                source: req.source,
            };
            self.audit.record_login(&actor, &req.asked).await;
        }
        Ok(issued)
    }
}
