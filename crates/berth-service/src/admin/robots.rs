//! Robot accounts: created by the admins of the projects they get rights in.

use berth_auth::{Principal, ROBOT_PREFIX, secret};
use berth_core::admin::NewRobot;
use berth_meta::{RobotRow, now_ms};

use super::created_once;
use crate::access::Actor;
use crate::{Error, Registry, Result};

/// A robot just created, with its secret: the only time the secret is shown.
#[derive(Debug)]
pub struct CreatedRobot {
    pub robot: RobotRow,
    pub secret: String,
}

fn projects_of(r: &RobotRow) -> Vec<&str> {
    r.permissions.iter().map(|(p, _)| p.as_str()).collect()
}

impl Registry {
    /// Why the caller may not manage a robot with rights in `projects`, if they may not: a
    /// project that does not exist (named as such to a registry admin; to others only as one
    /// they do not administer, so private projects stay unseen), or one the caller does not
    /// administer.
    async fn robot_projects_refusal(
        &self,
        actor: &Actor,
        projects: &[&str],
    ) -> Result<Option<Error>> {
        let admin = actor.principal.is_admin() || !self.auth.enabled();
        if projects.is_empty() {
            return Ok(Some(Error::invalid(
                "a robot needs at least one permission",
            )));
        }
        for p in projects {
            // Even a registry admin names existing projects only: a robot's rights must not
            // wait for whoever creates that project later.
            match self.meta.project(p).await? {
                None if admin => {
                    return Ok(Some(Error::invalid(format!("project {p} does not exist"))));
                }
                Some(row) if admin || self.is_project_admin(actor, &row).await? => {}
                _ => {
                    return Ok(Some(Error::forbidden(format!(
                        "project {p} does not exist or you are not its admin; a robot's \
                         projects must all be yours to administer"
                    ))));
                }
            }
        }
        Ok(None)
    }

    /// Whether the caller administers every project a robot has rights in.
    async fn manages_robot(&self, actor: &Actor, r: &RobotRow) -> Result<bool> {
        Ok(self
            .robot_projects_refusal(actor, &projects_of(r))
            .await?
            .is_none())
    }

    /// The robots the caller manages.
    pub async fn list_robots(&self, actor: &Actor) -> Result<Vec<RobotRow>> {
        self.require_signed_in(actor)?;
        let mut out = Vec::new();
        for r in self.meta.list_robots().await? {
            if self.manages_robot(actor, &r).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Creates a robot with rights in projects the caller administers.
    pub async fn create_robot(&self, actor: &Actor, r: NewRobot) -> Result<CreatedRobot> {
        self.require_signed_in(actor)?;
        if matches!(actor.principal, Principal::Robot { .. }) {
            return Err(Error::forbidden("robots cannot create robots"));
        }
        let spec = r.checked().map_err(Error::invalid)?;
        let perms = spec.permissions;
        let projects: Vec<&str> = perms.iter().map(|(p, _)| p.as_str()).collect();
        if let Some(refusal) = self.robot_projects_refusal(actor, &projects).await? {
            return Err(refusal);
        }
        let name = spec.name;
        let secret = secret::new_secret()?;
        let expires_at = spec
            .expires_in_days
            .map(|d| now_ms() + i64::from(d) * 86_400_000);
        let robot = created_once(
            self.meta
                .create_robot(
                    &name,
                    &secret::secret_hash(&secret),
                    &spec.description,
                    expires_at,
                    actor.principal.name(),
                    &perms,
                )
                .await,
            || format!("robot {name}"),
        )?;
        let detail = perms
            .iter()
            .map(|(p, a)| format!("{p}:{a}"))
            .collect::<Vec<_>>()
            .join(" ");
        self.audit
            .record(actor, "robot.create", &name, true, &detail)
            .await;
        Ok(CreatedRobot { robot, secret })
    }

    /// Deletes a robot (named with or without its `robot$` prefix); needs the admin role in
    /// all its projects.
    pub async fn delete_robot(&self, actor: &Actor, name: &str) -> Result<()> {
        self.require_signed_in(actor)?;
        let full = if name.starts_with(ROBOT_PREFIX) {
            name.to_owned()
        } else {
            format!("{ROBOT_PREFIX}{name}")
        };
        let Some(r) = self.meta.robot_by_name(&full).await? else {
            return Err(Error::not_found(format!("robot {full}")));
        };
        if !self.manages_robot(actor, &r).await? {
            return Err(Error::forbidden(
                "deleting this robot needs the admin role in all its projects",
            ));
        }
        self.meta.delete_robot(&full).await?;
        self.audit
            .record(actor, "robot.delete", &full, true, "")
            .await;
        Ok(())
    }
}
