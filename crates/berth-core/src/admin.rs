//! The request bodies of the admin API (`/api/v1`) and the rules their fields follow, as pure
//! functions: the server parses every body here, so these are what the fuzzer drives. A body
//! is refused with a message naming the field and the rule, never with a panic.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::access::{Action, Actions, Role};
use crate::name::RepoName;

/// Robot account names start with this.
pub const ROBOT_PREFIX: &str = "robot$";
/// Longest lifetime a robot may be given, in days (100 years).
pub const MAX_ROBOT_DAYS: u32 = 36_500;

/// A body that is not valid JSON, too deeply nested, or not of the expected shape.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    crate::json::check_depth(bytes)?;
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON body: {e}"))
}

/// A project name: one component of a repository name (lower-case letters, digits and
/// separators between them).
pub fn check_project_name(s: &str) -> Result<(), String> {
    match RepoName::parse(s) {
        Ok(r) if !r.as_str().contains('/') => Ok(()),
        _ => Err(format!(
            "{s:?} is not a project name (lower-case letters, digits and . _ - between them)"
        )),
    }
}

/// A local user's name: 1-64 of A-Z a-z 0-9 . _ @ -, not starting like a robot's.
pub fn check_user_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with(ROBOT_PREFIX)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a user name (1-64 of A-Z a-z 0-9 . _ @ -)"
        ))
    }
}

/// The rules every local password follows, a user's and the first admin's alike.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err("a password needs 8 to 1024 characters".into());
    }
    Ok(())
}

/// A robot's name with the `robot$` prefix, from the name given (with or without it).
pub fn robot_name(given: &str) -> Result<String, String> {
    let bare = given.strip_prefix(ROBOT_PREFIX).unwrap_or(given);
    if bare.is_empty()
        || bare.len() > 64
        || !bare
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(format!(
            "{bare:?} is not a robot name (1-64 of a-z 0-9 . _ -)"
        ));
    }
    Ok(format!("{ROBOT_PREFIX}{bare}"))
}

/// A project name that follows the rules ([`check_project_name`]); `parse` is the only way to
/// get one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    pub fn parse(s: &str) -> Result<ProjectName, String> {
        check_project_name(s)?;
        Ok(ProjectName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A local user's name that follows the rules ([`check_user_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub fn parse(s: &str) -> Result<UserName, String> {
        check_user_name(s)?;
        Ok(UserName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password that follows the rules ([`check_password`]); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn parse(s: &str) -> Result<Password, String> {
        check_password(s)?;
        Ok(Password(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(********)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    pub name: String,
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectChange {
    pub public: Option<bool>,
    /// true or false, or null for the registry's default (`registry.sparse_manifests`).
    #[serde(default, deserialize_with = "present")]
    pub sparse_manifests: Option<Option<bool>>,
}

/// A field that may be absent (None), null (Some(None)) or a value.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub kind: String,
    pub name: String,
    pub role: String,
}

/// A member as stored: `user` with a user name, or `group` with an LDAP group DN (trimmed;
/// the caller normalizes DNs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKey {
    User(String),
    Group(String),
}

impl NewMember {
    pub fn checked(&self) -> Result<(MemberKey, Role), String> {
        let role =
            Role::parse(&self.role).ok_or("role must be guest, developer, maintainer or admin")?;
        Ok((member_key(&self.kind, &self.name)?, role))
    }
}

/// The member a (kind, name) pair names.
pub fn member_key(kind: &str, name: &str) -> Result<MemberKey, String> {
    match kind {
        "user" => {
            check_user_name(name)?;
            Ok(MemberKey::User(name.to_owned()))
        }
        "group" if !name.trim().is_empty() && name.len() <= 1024 => {
            Ok(MemberKey::Group(name.trim().to_owned()))
        }
        _ => Err(
            "kind must be \"user\" or \"group\" (an LDAP group DN of at most 1024 bytes)".into(),
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub admin: bool,
}

impl NewUser {
    pub fn check(&self) -> Result<(), String> {
        check_user_name(&self.name)?;
        check_password(&self.password)
    }

    /// The user's name and password, checked.
    pub fn checked(&self) -> Result<(UserName, Password), String> {
        Ok((
            UserName::parse(&self.name)?,
            Password::parse(&self.password)?,
        ))
    }
}

impl NewProject {
    pub fn checked(&self) -> Result<ProjectName, String> {
        ProjectName::parse(&self.name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub admin: Option<bool>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub password: String,
    pub old_password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobotPermission {
    pub project: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRobot {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub expires_in_days: Option<u32>,
    pub permissions: Vec<RobotPermission>,
}

/// A robot to create, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotSpec {
    /// With the `robot$` prefix.
    pub name: String,
    pub description: String,
    pub expires_in_days: Option<u32>,
    /// Project and actions, each project once.
    pub permissions: Vec<(String, Actions)>,
}

impl NewRobot {
    pub fn checked(self) -> Result<RobotSpec, String> {
        let name = robot_name(&self.name)?;
        if self.description.len() > 1024 {
            return Err("a robot's description has at most 1024 bytes".into());
        }
        if let Some(d) = self.expires_in_days
            && (d == 0 || d > MAX_ROBOT_DAYS)
        {
            return Err(format!(
                "expires_in_days must be between 1 and {MAX_ROBOT_DAYS} (or absent: never)"
            ));
        }
        if self.permissions.is_empty() {
            return Err("a robot needs at least one permission".into());
        }
        let mut permissions: Vec<(String, Actions)> = Vec::new();
        for p in &self.permissions {
            check_project_name(&p.project)?;
            let mut a = Actions::NONE;
            for x in &p.actions {
                let act = Action::parse(x)
                    .ok_or_else(|| format!("unknown action {x:?} (pull, push, delete)"))?;
                a = a.union(Actions::of(&[act]));
            }
            if a.is_empty() {
                return Err(format!("no actions for project {}", p.project));
            }
            match permissions.iter_mut().find(|(q, _)| q == &p.project) {
                Some((_, existing)) => *existing = existing.union(a),
                None => permissions.push((p.project.clone(), a)),
            }
        }
        Ok(RobotSpec {
            name,
            description: self.description,
            expires_in_days: self.expires_in_days,
            permissions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn robots_are_checked() {
        let r: NewRobot = parse_body(
            br#"{"name":"ci","permissions":[{"project":"team","actions":["pull","push"]},
                {"project":"team","actions":["delete"]}]}"#,
        )
        .unwrap();
        let spec = r.checked().unwrap();
        assert_eq!(spec.name, "robot$ci");
        assert_eq!(spec.permissions.len(), 1, "one entry per project");
        let huge: NewRobot = parse_body(
            br#"{"name":"ci","expires_in_days":4294967295,"permissions":[{"project":"t","actions":["pull"]}]}"#,
        )
        .unwrap();
        assert!(huge.checked().unwrap_err().contains("expires_in_days"));
        let bad: NewRobot =
            parse_body(br#"{"name":"CI!","permissions":[{"project":"t","actions":["pull"]}]}"#)
                .unwrap();
        assert!(bad.checked().is_err());
        assert!(parse_body::<NewRobot>(br#"{"name":"ci","permissions":[],"x":1}"#).is_err());
    }

    #[test]
    fn newtypes_hold_only_checked_values() {
        assert!(ProjectName::parse("team").is_ok());
        assert!(ProjectName::parse("Team").is_err());
        assert!(UserName::parse("alice").is_ok());
        assert!(UserName::parse("robot$x").is_err());
        let p = Password::parse("a long password").unwrap();
        assert_eq!(p.expose(), "a long password");
        assert!(!format!("{p:?}").contains("long"));
        assert!(Password::parse("short").is_err());
    }

    #[test]
    fn names_and_passwords() {
        assert!(check_user_name("alice@example.com").is_ok());
        assert!(check_user_name("robot$x").is_err());
        assert!(check_user_name("").is_err());
        assert!(check_project_name("team").is_ok());
        assert!(check_project_name("team/app").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
        assert_eq!(
            member_key("user", "bob").unwrap(),
            MemberKey::User("bob".into())
        );
        assert!(member_key("role", "x").is_err());
        let c: ProjectChange = parse_body(br#"{"sparse_manifests":null}"#).unwrap();
        assert_eq!(c.sparse_manifests, Some(None));
        let c: ProjectChange = parse_body(br#"{}"#).unwrap();
        assert_eq!(c.sparse_manifests, None);
    }

    proptest! {
        #[test]
        fn bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(r) = parse_body::<NewRobot>(&bytes) {
                let _ = r.checked();
            }
            if let Ok(m) = parse_body::<NewMember>(&bytes) {
                let _ = m.checked();
            }
            let _ = parse_body::<NewUser>(&bytes).map(|u| u.check());
        }
    }
}
