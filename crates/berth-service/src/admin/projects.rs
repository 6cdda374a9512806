//! Projects and their members.

use berth_core::admin::{MemberKey, NewMember, NewProject, ProjectChange};
use berth_meta::{MemberRow, ProjectDeletion, ProjectRow, RepoSummary};

use super::created_once;
use crate::access::Actor;
use crate::{Error, Registry, Result};

/// A member as stored: the kind (`user` or `group`), the name (a group's DN normalised) and
/// the role.
fn stored_member(key: MemberKey) -> (&'static str, String) {
    match key {
        MemberKey::User(u) => ("user", u),
        MemberKey::Group(g) => ("group", berth_auth::ldap::normalize_dn(&g)),
    }
}

/// What setting a member did.
#[derive(Debug, Clone)]
pub struct MemberSet {
    pub member: MemberRow,
    /// Whether the member is new to the project (rather than given another role).
    pub added: bool,
}

impl Registry {
    /// The projects the caller may read.
    pub async fn list_projects(&self, actor: &Actor) -> Result<Vec<ProjectRow>> {
        let all = self.meta.list_projects().await?;
        self.visible(actor, all, |p| p.name.as_str()).await
    }

    pub async fn create_project(&self, actor: &Actor, req: &NewProject) -> Result<ProjectRow> {
        self.require_admin(actor)?;
        let name = req.checked().map_err(Error::invalid)?;
        let p = created_once(
            self.meta
                .create_project(name.as_str(), req.public, None)
                .await,
            || format!("project {}", name.as_str()),
        )?;
        let detail = format!("public={}", p.public);
        self.audit
            .record(actor, "project.create", &p.name, true, &detail)
            .await;
        Ok(p)
    }

    /// A project the caller may read.
    pub async fn project(&self, actor: &Actor, name: &str) -> Result<ProjectRow> {
        self.readable_project(actor, name).await
    }

    pub async fn update_project(
        &self,
        actor: &Actor,
        name: &str,
        change: &ProjectChange,
    ) -> Result<ProjectRow> {
        let p = self.readable_project(actor, name).await?;
        self.require_project_admin(actor, &p).await?;
        if let Some(public) = change.public {
            self.meta.set_project_public(name, public).await?;
            self.audit
                .record(
                    actor,
                    "project.update",
                    name,
                    true,
                    &format!("public={public}"),
                )
                .await;
        }
        if let Some(sparse) = change.sparse_manifests {
            self.meta.set_project_sparse(name, sparse).await?;
            let shown = sparse.map_or("default".to_owned(), |b| b.to_string());
            let detail = format!("sparse_manifests={shown}");
            self.audit
                .record(actor, "project.update", name, true, &detail)
                .await;
        }
        self.project_or_404(name).await
    }

    /// Deletes a project whose repositories hold nothing; returns how many empty repositories
    /// went with it.
    pub async fn delete_project(&self, actor: &Actor, name: &str) -> Result<u64> {
        self.require_admin(actor)?;
        match self.meta.delete_project(name).await? {
            ProjectDeletion::NotFound => Err(Error::not_found(format!("project {name}"))),
            ProjectDeletion::HoldsRepositories(repos) => Err(Error::conflict(format!(
                "project {name} still holds repositories with content ({}); delete them first \
                 (DELETE /api/v1/repositories/<name>, or berth repo delete <name>)",
                repos.join(", ")
            ))),
            ProjectDeletion::Deleted { empty_repositories } => {
                let detail = format!("empty repositories removed: {empty_repositories}");
                self.audit
                    .record(actor, "project.delete", name, true, &detail)
                    .await;
                Ok(empty_repositories)
            }
        }
    }

    /// The repositories of a project the caller may read.
    pub async fn project_repositories(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<Vec<RepoSummary>> {
        let p = self.readable_project(actor, name).await?;
        Ok(self.meta.project_repositories(p.id).await?)
    }

    /// The members of a project the caller may read.
    pub async fn members(&self, actor: &Actor, project: &str) -> Result<Vec<MemberRow>> {
        let p = self.readable_project(actor, project).await?;
        Ok(self.meta.members(p.id).await?)
    }

    /// Adds a member to a project, or changes their role.
    pub async fn set_member(
        &self,
        actor: &Actor,
        project: &str,
        m: &NewMember,
    ) -> Result<MemberSet> {
        let p = self.readable_project(actor, project).await?;
        self.require_project_admin(actor, &p).await?;
        let (key, role) = m.checked().map_err(Error::invalid)?;
        let (kind, name) = stored_member(key);
        let added = self.meta.set_member(p.id, kind, &name, role).await?;
        // The resource starts with the project, so a prefix query on it finds member changes.
        let resource = format!("{project}/members/{kind}:{name}");
        let detail = format!("role {}", role.as_str());
        self.audit
            .record(actor, "member.set", &resource, true, &detail)
            .await;
        Ok(MemberSet {
            member: MemberRow {
                kind: kind.to_owned(),
                name,
                role,
            },
            added,
        })
    }

    /// Removes a member (`kind` is `user` or `group`) from a project.
    pub async fn remove_member(
        &self,
        actor: &Actor,
        project: &str,
        kind: &str,
        name: &str,
    ) -> Result<()> {
        let p = self.readable_project(actor, project).await?;
        self.require_project_admin(actor, &p).await?;
        let key = berth_core::admin::member_key(kind, name).map_err(Error::invalid)?;
        let (kind, name) = stored_member(key);
        if !self.meta.remove_member(p.id, kind, &name).await? {
            return Err(Error::not_found(format!("member {kind} {name}")));
        }
        let resource = format!("{project}/members/{kind}:{name}");
        self.audit
            .record(actor, "member.remove", &resource, true, "")
            .await;
        Ok(())
    }
}
