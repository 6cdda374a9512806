//! The access model as pure rules: actions on a repository, project roles and what each grants,
//! and the `scope` grammar of the Docker token protocol
//! (`repository:team/app:pull,push`, `registry:catalog:*`).

use std::fmt;

/// One thing a caller may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

/// A set of [`Action`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const ALL: Actions = Actions(7);

    pub fn of(actions: &[Action]) -> Actions {
        Actions(actions.iter().fold(0, |acc, a| acc | a.bit()))
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// `pull,push` style, in a fixed order.
    pub fn to_list(self) -> Vec<&'static str> {
        self.iter().map(Action::as_str).collect()
    }

    /// Parses a comma-separated list; `*` means every action. Unknown names are ignored, as
    /// Distribution's token servers do, so a client asking for more than exists still gets
    /// what it may have.
    pub fn parse_list(s: &str) -> Actions {
        s.split(',').fold(Actions::NONE, |acc, a| match a.trim() {
            "*" => Actions::ALL,
            a => Action::parse(a).map_or(acc, |a| acc.union(Actions::of(&[a]))),
        })
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list().join(","))
    }
}

/// A member's role in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Guest,
    Developer,
    Maintainer,
    /// Project admin: everything in the project, including its members and robots.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Guest => "guest",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "guest" => Some(Role::Guest),
            "developer" => Some(Role::Developer),
            "maintainer" => Some(Role::Maintainer),
            "admin" | "project_admin" | "projectadmin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// What the role may do to the project's repositories.
    pub fn actions(self) -> Actions {
        match self {
            Role::Guest => Actions::of(&[Action::Pull]),
            Role::Developer => Actions::of(&[Action::Pull, Action::Push]),
            Role::Maintainer | Role::Admin => Actions::ALL,
        }
    }
}

/// What a caller may do in one project, from the facts about caller and project.
pub fn project_actions(
    registry_admin: bool,
    public: bool,
    best_role: Option<Role>,
    robot_grant: Actions,
) -> Actions {
    if registry_admin {
        return Actions::ALL;
    }
    let mut a = robot_grant;
    if public {
        a = a.union(Actions::PULL);
    }
    if let Some(r) = best_role {
        a = a.union(r.actions());
    }
    a
}

/// One requested or granted access in the token protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `repository`, `registry` (for `catalog`), or anything else a client sends.
    pub kind: String,
    pub name: String,
    /// The actions as written, for kinds other than `repository` (`*` for the catalog).
    pub raw_actions: Vec<String>,
}

impl Scope {
    /// Parses `type:name:actions`. The name may itself hold a `:` (a registry host with a port
    /// in some clients' scopes), so the type is split from the left and the actions from the
    /// right. A scope that does not parse is `None` and is ignored by the token service.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Scope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            raw_actions: actions
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The repository actions asked for (`repository` scopes only).
    pub fn actions(&self) -> Actions {
        Actions::parse_list(&self.raw_actions.join(","))
    }

    pub fn is_catalog(&self) -> bool {
        self.kind == "registry" && self.name == "catalog"
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.kind,
            self.name,
            self.raw_actions.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_from_both_ends() {
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(s.kind, "repository");
        assert_eq!(s.name, "team/app");
        assert_eq!(s.actions(), Actions::of(&[Action::Pull, Action::Push]));
        let s = Scope::parse("repository:localhost:5000/a:pull").unwrap();
        assert_eq!(s.name, "localhost:5000/a");
        let s = Scope::parse("registry:catalog:*").unwrap();
        assert!(s.is_catalog());
        assert_eq!(
            Scope::parse("repository:a:*").unwrap().actions(),
            Actions::ALL
        );
        assert!(Scope::parse("repository").is_none());
        assert!(Scope::parse("repository::pull").is_none());
        assert_eq!(
            Scope::parse("repository:a:pull,fly").unwrap().actions(),
            Actions::PULL
        );
    }

    #[test]
    fn roles_grant_in_order() {
        assert_eq!(Role::Guest.actions(), Actions::PULL);
        assert!(Role::Developer.actions().contains(Action::Push));
        assert!(!Role::Developer.actions().contains(Action::Delete));
        assert!(Role::Maintainer.actions().contains(Action::Delete));
        assert!(Role::Admin > Role::Maintainer && Role::Developer > Role::Guest);
        for r in ["guest", "developer", "maintainer", "admin"] {
            assert_eq!(Role::parse(r).unwrap().as_str(), r);
        }
    }

    #[test]
    fn project_actions_combine_sources() {
        assert_eq!(
            project_actions(true, false, None, Actions::NONE),
            Actions::ALL
        );
        assert_eq!(
            project_actions(false, true, None, Actions::NONE),
            Actions::PULL
        );
        assert!(project_actions(false, false, None, Actions::NONE).is_empty());
        assert_eq!(
            project_actions(false, true, Some(Role::Developer), Actions::NONE),
            Actions::of(&[Action::Pull, Action::Push])
        );
        assert_eq!(
            project_actions(false, false, None, Actions::of(&[Action::Push])),
            Actions::of(&[Action::Push])
        );
    }
}
