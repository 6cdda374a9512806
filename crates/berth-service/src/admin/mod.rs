//! The rules behind the admin API: projects and their members (`projects.rs`), users
//! (`users.rs`), robots (`robots.rs`), a repository's tags and artifacts (`repositories.rs`),
//! the audit log, search and token signing keys (`log.rs`). Each operation checks who may
//! and records what it changed in the audit log.

mod log;
mod projects;
mod repositories;
mod robots;
mod users;

use berth_core::access::{Action, Actions, Role};
use berth_meta::{CreateError, ProjectRow};

use crate::access::Actor;
use crate::{Error, Registry, Result};

pub use log::{AuditPage, SearchResult};
pub use projects::MemberSet;
pub use repositories::ArtifactDetail;
pub use robots::CreatedRobot;
pub use users::Identity;

/// A create's result, with "already exists" as a conflict.
fn created_once<T>(
    r: std::result::Result<T, CreateError>,
    what: impl FnOnce() -> String,
) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(CreateError::Exists) => Err(Error::conflict(format!("{} exists", what()))),
        Err(CreateError::Meta(e)) => Err(e.into()),
    }
}

impl Registry {
    async fn project_or_404(&self, name: &str) -> Result<ProjectRow> {
        self.meta
            .project(name)
            .await?
            .ok_or_else(|| Error::not_found(format!("project {name}")))
    }

    /// What the caller may do in a project.
    pub async fn actions_in(&self, actor: &Actor, project: &str) -> Result<Actions> {
        Ok(self.auth.project_actions(&actor.principal, project).await?)
    }

    /// A project the caller may read; one they may not see is "not found", as a missing one.
    async fn readable_project(&self, actor: &Actor, name: &str) -> Result<ProjectRow> {
        let p = self.project_or_404(name).await?;
        if !self.actions_in(actor, name).await?.contains(Action::Pull) {
            return Err(Error::not_found(format!("project {name}")));
        }
        Ok(p)
    }

    /// The items whose project (`project_of`) the caller may read: the one permission filter
    /// of every listing.
    pub async fn visible<T>(
        &self,
        actor: &Actor,
        items: impl IntoIterator<Item = T>,
        project_of: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for item in items {
            if self
                .actions_in(actor, project_of(&item))
                .await?
                .contains(Action::Pull)
            {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// Whether the caller administers the project (registry admin or project admin).
    async fn is_project_admin(&self, actor: &Actor, p: &ProjectRow) -> Result<bool> {
        if !self.auth.enabled() || actor.principal.is_admin() {
            return Ok(true);
        }
        Ok(match &actor.principal {
            berth_auth::Principal::User { name, groups, .. } => {
                self.meta.best_role(p.id, name, groups).await? == Some(Role::Admin)
            }
            _ => false,
        })
    }

    async fn require_project_admin(&self, actor: &Actor, p: &ProjectRow) -> Result<()> {
        self.require_signed_in(actor)?;
        if self.is_project_admin(actor, p).await? {
            Ok(())
        } else {
            Err(Error::forbidden("this needs the project's admin role"))
        }
    }

    /// Whether the caller is the signed-in user `name`.
    fn is_self(actor: &Actor, name: &str) -> bool {
        matches!(&actor.principal, berth_auth::Principal::User { name: n, .. } if n == name)
    }
}
