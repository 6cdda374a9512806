//! The admin API's request bodies (`/api/v1`): every body type through `admin::parse_body`,
//! then the checks the handlers apply, and the nesting limit (`json::depth`).
//!
//! Input: a request body (any bytes). It is also given, read lossily as a string, to the name
//! and password rules.
#![no_main]

use berth_core::RepoName;
use berth_core::access::{Action, Actions, Role};
use berth_core::admin::{
    self, MAX_ROBOT_DAYS, MemberKey, NewMember, NewProject, NewRobot, NewUser, PasswordChange,
    ProjectChange, ROBOT_PREFIX, UserChange, parse_body,
};
use berth_core::json;
use libfuzzer_sys::fuzz_target;

fn check_member(m: &NewMember) {
    let Ok((key, role)) = m.checked() else {
        return;
    };
    assert_eq!(Role::parse(role.as_str()), Some(role));
    match key {
        MemberKey::User(name) => {
            assert_eq!(m.kind, "user");
            assert_eq!(name, m.name);
            assert!(admin::check_user_name(&name).is_ok());
        }
        MemberKey::Group(dn) => {
            assert_eq!(m.kind, "group");
            assert_eq!(dn, m.name.trim());
            assert!(!dn.is_empty() && dn.len() <= 1024);
        }
    }
}

fn check_user(u: &NewUser) {
    if u.check().is_ok() {
        assert!(!u.name.is_empty() && u.name.len() <= 64);
        assert!(!u.name.starts_with(ROBOT_PREFIX));
        assert!(u.password.chars().count() >= 8 && u.password.len() <= 1024);
    }
}

fn check_robot(r: NewRobot) {
    let asked: Vec<(String, Vec<String>)> = r
        .permissions
        .iter()
        .map(|p| (p.project.clone(), p.actions.clone()))
        .collect();
    let given_name = r.name.clone();
    let Ok(spec) = r.checked() else {
        return;
    };
    let bare = spec
        .name
        .strip_prefix(ROBOT_PREFIX)
        .expect("robot name without prefix");
    assert!(!bare.is_empty() && bare.len() <= 64);
    assert_eq!(admin::robot_name(&spec.name).as_ref(), Ok(&spec.name));
    assert_eq!(admin::robot_name(&given_name).as_ref(), Ok(&spec.name));
    assert!(spec.description.len() <= 1024);
    if let Some(d) = spec.expires_in_days {
        assert!((1..=MAX_ROBOT_DAYS).contains(&d));
    }
    assert!(!spec.permissions.is_empty());
    for (i, (project, actions)) in spec.permissions.iter().enumerate() {
        assert!(admin::check_project_name(project).is_ok());
        assert!(!actions.is_empty());
        assert!(
            spec.permissions[..i].iter().all(|(q, _)| q != project),
            "{project} listed twice"
        );
        // The grant is the union of every action asked for that project.
        let union = asked
            .iter()
            .filter(|(q, _)| q == project)
            .flat_map(|(_, a)| a)
            .fold(Actions::NONE, |acc, a| {
                acc.union(Actions::of(&[
                    Action::parse(a).expect("unknown action accepted")
                ]))
            });
        assert_eq!(*actions, union);
    }
    assert!(
        asked
            .iter()
            .all(|(q, _)| spec.permissions.iter().any(|(p, _)| p == q))
    );
}

fuzz_target!(|data: &[u8]| {
    let depth = json::depth(data);
    assert!(depth <= data.len());
    assert_eq!(json::check_depth(data).is_ok(), depth <= json::MAX_DEPTH);
    // A body that nests too deeply is refused before serde sees it.
    if depth > json::MAX_DEPTH {
        let err = parse_body::<UserChange>(data).unwrap_err();
        assert!(err.contains("nested"), "{err}");
    }

    if let Ok(p) = parse_body::<NewProject>(data) {
        if admin::check_project_name(&p.name).is_ok() {
            let r = RepoName::parse(&p.name).expect("a project name is a repository name");
            assert_eq!(r.project(), p.name);
        }
        let _ = p.public;
    }
    if let Ok(c) = parse_body::<ProjectChange>(data) {
        let _ = (c.public, c.sparse_manifests);
    }
    if let Ok(m) = parse_body::<NewMember>(data) {
        check_member(&m);
    }
    if let Ok(u) = parse_body::<NewUser>(data) {
        check_user(&u);
    }
    if let Ok(c) = parse_body::<UserChange>(data) {
        let _ = (c.admin, c.disabled);
    }
    if let Ok(c) = parse_body::<PasswordChange>(data) {
        let _ = admin::check_password(&c.password);
        let _ = c.old_password.as_deref().map(admin::check_password);
    }
    if let Ok(r) = parse_body::<NewRobot>(data) {
        check_robot(r);
    }

    // The same rules on the raw text, as a path parameter would carry it.
    let s = String::from_utf8_lossy(data);
    let _ = admin::check_user_name(&s);
    let _ = admin::check_password(&s);
    let _ = admin::check_project_name(&s);
    if let Ok(name) = admin::robot_name(&s) {
        assert_eq!(admin::robot_name(&name), Ok(name.clone()));
    }
    for kind in ["user", "group"] {
        let _ = admin::member_key(kind, &s);
    }
});
