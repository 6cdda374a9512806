//! Users: who is signed in, local accounts and their passwords.

use berth_auth::Principal;
use berth_core::admin::{NewUser, Password, PasswordChange, UserChange};
use berth_meta::UserRow;

use super::created_once;
use crate::access::Actor;
use crate::{Error, Registry, Result};

/// The signed-in caller, as `GET /api/v1/me` shows them.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    /// `user`, `robot` or `anonymous`.
    pub kind: &'static str,
    pub admin: bool,
    /// A user's groups (from LDAP); none for a robot.
    pub groups: Option<Vec<String>>,
}

impl Registry {
    /// Who the caller is.
    pub fn whoami(&self, actor: &Actor) -> Result<Identity> {
        self.require_signed_in(actor)?;
        let p = &actor.principal;
        Ok(Identity {
            name: p.name().to_owned(),
            kind: p.kind(),
            admin: p.is_admin() || !self.auth.enabled(),
            groups: match p {
                Principal::User { groups, .. } => Some(groups.clone()),
                _ => None,
            },
        })
    }

    pub async fn list_users(&self, actor: &Actor) -> Result<Vec<UserRow>> {
        self.require_admin(actor)?;
        Ok(self.meta.list_users().await?)
    }

    /// Creates a local user.
    pub async fn create_user(&self, actor: &Actor, u: &NewUser) -> Result<UserRow> {
        self.require_admin(actor)?;
        let (name, password) = u.checked().map_err(Error::invalid)?;
        let hash = self.auth.hashing.hash(password.expose()).await?;
        let row = created_once(
            self.meta
                .create_user(name.as_str(), Some(&hash), "local", u.admin)
                .await,
            || format!("user {}", name.as_str()),
        )?;
        let detail = format!("admin={}", u.admin);
        self.audit
            .record(actor, "user.create", name.as_str(), true, &detail)
            .await;
        Ok(row)
    }

    /// A user: the caller themselves, or anyone for a registry admin.
    pub async fn user(&self, actor: &Actor, name: &str) -> Result<UserRow> {
        if !Self::is_self(actor, name) {
            self.require_admin(actor)?;
        }
        self.user_or_404(name).await
    }

    async fn user_or_404(&self, name: &str) -> Result<UserRow> {
        self.meta
            .user_by_name(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("user {name}")))
    }

    /// Makes a user an admin or not, disabled or not. An admin cannot demote or disable
    /// themselves (the registry would be left without one).
    pub async fn update_user(&self, actor: &Actor, name: &str, c: &UserChange) -> Result<UserRow> {
        self.require_admin(actor)?;
        if Self::is_self(actor, name) && (c.admin == Some(false) || c.disabled == Some(true)) {
            return Err(Error::conflict(
                "an admin cannot demote or disable themselves",
            ));
        }
        if !self.meta.update_user(name, c.admin, c.disabled).await? {
            return Err(Error::not_found(format!("user {name}")));
        }
        let detail = [
            c.admin.map(|a| format!("admin={a}")),
            c.disabled.map(|d| format!("disabled={d}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        self.audit
            .record(actor, "user.update", name, true, &detail)
            .await;
        self.user_or_404(name).await
    }

    pub async fn delete_user(&self, actor: &Actor, name: &str) -> Result<()> {
        self.require_admin(actor)?;
        if Self::is_self(actor, name) {
            return Err(Error::conflict("an admin cannot delete themselves"));
        }
        if !self.meta.delete_user(name).await? {
            return Err(Error::not_found(format!("user {name}")));
        }
        self.audit
            .record(actor, "user.delete", name, true, "")
            .await;
        Ok(())
    }

    /// Sets a local user's password: a registry admin for anyone, a user for themselves with
    /// their current password.
    pub async fn set_password(&self, actor: &Actor, name: &str, c: &PasswordChange) -> Result<()> {
        self.require_signed_in(actor)?;
        let admin = actor.principal.is_admin() || !self.auth.enabled();
        let user = self.meta.user_by_name(name).await?;
        if !admin {
            if !Self::is_self(actor, name) {
                return Err(Error::forbidden(
                    "only a registry admin may set another user's password",
                ));
            }
            // Checked like a login (throttled per user and address), so a stolen token cannot
            // be used to guess the password.
            let old = c.old_password.as_deref().unwrap_or("");
            match self.auth.authenticate(name, old, actor.ip()).await {
                Ok(_) => {}
                Err(
                    e @ (berth_auth::AuthError::Throttled(_)
                    | berth_auth::AuthError::Busy
                    | berth_auth::AuthError::Meta(_)),
                ) => return Err(e.into()),
                Err(_) => return Err(Error::forbidden("old_password does not match")),
            }
        }
        let user = user.ok_or_else(|| Error::not_found(format!("user {name}")))?;
        if user.source != "local" {
            return Err(Error::conflict(
                "this user signs in through LDAP; its password lives there",
            ));
        }
        let password = Password::parse(&c.password).map_err(Error::invalid)?;
        let hash = self.auth.hashing.hash(password.expose()).await?;
        self.meta.set_password(name, &hash).await?;
        self.audit
            .record(actor, "user.password", name, true, "")
            .await;
        Ok(())
    }
}
