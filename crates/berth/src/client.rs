//! `berth user|project|robot|audit …`: the admin CLI, a small client of a running server's
//! admin API (`/api/v1`, see docs/auth.md).
//!
//! Every request carries Basic credentials: `--user` (or `BERTH_USER`) and the password in
//! `BERTH_PASSWORD`. New passwords (`user create`, `user passwd`) are read from standard input
//! with `--password-stdin`, so they never appear in a command line or the environment.
//! Answers are printed as tables or lines; `--json` prints the server's JSON instead. An error
//! answer (OCI error JSON) becomes `<status> <code>: <message>` and a non-zero exit.

use std::fmt::Write as _;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use berth_core::access::Role;
use clap::{Args, Subcommand, ValueEnum};
use hyper::body::{Body as _, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_BODY: usize = 64 << 20;
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

// ---- the command line ----

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Manage users (registry admin): list, create, change passwords, disable, delete.
    User {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: UserCommand,
    },
    /// Manage projects (the first path component of repository names) and their members.
    Project {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: ProjectCommand,
    },
    /// Show and delete repositories (deleting needs the delete right in the project).
    Repo {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: RepoCommand,
    },
    /// Manage robot accounts: CI credentials limited to some projects and actions.
    Robot {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        cmd: RobotCommand,
    },
    /// Show the audit log (registry admin), newest first: one line per event.
    Audit(AuditArgs),
}

/// How to reach and sign in to the server. The password is read from BERTH_PASSWORD.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// Base URL of the server (http:// or https://).
    #[arg(
        long,
        env = "BERTH_URL",
        default_value = "http://127.0.0.1:5000",
        global = true
    )]
    url: String,
    /// User to sign in as; the password comes from the BERTH_PASSWORD environment variable.
    #[arg(long, env = "BERTH_USER", default_value = "admin", global = true)]
    user: String,
    /// PEM file of the CA certificate(s) to trust for https:// (default: the system bundle,
    /// /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, value_name = "FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Print the server's JSON answers instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// List users.
    List,
    /// Create a local user; the password is read from standard input (--password-stdin).
    Create {
        /// The user name (1-64 of A-Z a-z 0-9 . _ @ -).
        name: String,
        /// Make the user a registry admin.
        #[arg(long)]
        admin: bool,
        /// Read the new user's password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (read from standard input with --password-stdin). A user who is
    /// not a registry admin may change their own: BERTH_PASSWORD is sent as the old password.
    Passwd {
        /// The user whose password changes.
        name: String,
        /// Read the new password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: their logins and tokens stop working at once.
    Disable {
        /// The user to disable.
        name: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The user to enable.
        name: String,
    },
    /// Delete a user.
    Delete {
        /// The user to delete.
        name: String,
    },
    /// Show one user.
    Show {
        /// The user to show.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Show a repository's tags.
    Show {
        /// The repository, e.g. team/app.
        name: String,
    },
    /// Delete a repository with everything in it: tags, manifests, blob links and uploads in
    /// progress. Blobs nothing else uses are freed by the next garbage collection.
    Delete {
        /// The repository, e.g. team/app.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// List the projects you may see.
    List,
    /// Create a project (registry admin). Projects are private unless --public.
    Create {
        /// The project name (lower-case letters, digits and . _ - between them).
        name: String,
        /// Anyone, even anonymous, may pull from a public project.
        #[arg(long)]
        public: bool,
    },
    /// Show a project and its repositories.
    Show {
        /// The project to show.
        name: String,
    },
    /// Make a project public (true) or private (false).
    SetPublic {
        /// The project to change.
        name: String,
        /// true: anyone may pull; false: members only.
        #[arg(action = clap::ArgAction::Set, value_name = "true|false")]
        public: bool,
    },
    /// Delete a project (registry admin) whose repositories hold nothing; empty repositories go
    /// with it.
    Delete {
        /// The project to delete.
        name: String,
    },
    /// List a project's members and their roles.
    Members {
        /// The project.
        name: String,
    },
    /// Add a member to a project, or change their role.
    Member {
        /// The project.
        name: String,
        /// user: a user name; group: an LDAP group DN.
        #[arg(value_enum)]
        kind: MemberKind,
        /// The user name or group DN.
        member: String,
        /// guest: pull; developer: pull, push; maintainer: also delete; admin: also manage
        /// members and robots.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Remove a member from a project.
    RemoveMember {
        /// The project.
        name: String,
        /// user or group.
        #[arg(value_enum)]
        kind: MemberKind,
        /// The user name or group DN.
        member: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKind {
    User,
    Group,
}

impl MemberKind {
    fn as_str(self) -> &'static str {
        match self {
            MemberKind::User => "user",
            MemberKind::Group => "group",
        }
    }
}

/// A role as the command line takes it: the registry's own roles, by name.
fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "a role is guest, developer, maintainer or admin".to_owned())
}

#[derive(Subcommand, Debug)]
pub enum RobotCommand {
    /// List the robot accounts you administer.
    List,
    /// Create a robot account and print its secret (shown only this once).
    Create {
        /// The robot's name (1-64 of a-z 0-9 . _ -); it signs in as robot$NAME.
        name: String,
        /// A permission PROJECT:ACTIONS, e.g. team:pull,push (actions: pull, push, delete).
        /// Repeat for more projects.
        #[arg(
            long = "project",
            value_name = "PROJECT:ACTIONS",
            required = true,
            value_parser = parse_permission
        )]
        projects: Vec<Permission>,
        /// The robot stops working after this many days (default: never).
        #[arg(long, value_name = "N")]
        expires_in_days: Option<u32>,
        /// What the robot is for.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Delete a robot account: its secret and tokens stop working at once.
    Delete {
        /// NAME or robot$NAME.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    conn: Connection,
    /// Only events of this actor (a user name, robot$name or anonymous).
    #[arg(long)]
    actor: Option<String>,
    /// Only this action: push, pull, delete, login, project.create, member.set, user.create,
    /// robot.create, ...
    #[arg(long)]
    action: Option<String>,
    /// Only events on this resource (a repository, project, user or robot).
    #[arg(long)]
    resource: Option<String>,
    /// Only successes or only failures.
    #[arg(long, value_parser = ["success", "failure"])]
    result: Option<String>,
    /// Events at or after this time: RFC 3339 (2025-01-31T12:00:00Z) or an age (1h, 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Events before this time: RFC 3339 or an age (1h, 7d).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// At most this many events (1-1000; the server's default is 100).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Events older than the event with this id (the next page, as printed at the end).
    #[arg(long, value_name = "ID")]
    before: Option<i64>,
}

/// One robot permission: a project and the actions allowed in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    project: String,
    actions: Vec<String>,
}

/// Parses `team:pull,push`.
fn parse_permission(s: &str) -> Result<Permission, String> {
    let (project, actions) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not PROJECT:ACTIONS (e.g. team:pull,push)"))?;
    let project = project.trim();
    if project.is_empty() {
        return Err(format!("{s:?} names no project (PROJECT:ACTIONS)"));
    }
    let mut list: Vec<String> = Vec::new();
    for a in actions.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if !["pull", "push", "delete"].contains(&a) {
            return Err(format!("unknown action {a:?} (pull, push, delete)"));
        }
        if !list.iter().any(|x| x == a) {
            list.push(a.to_owned());
        }
    }
    if list.is_empty() {
        return Err(format!(
            "{s:?} names no actions (pull, push, delete; e.g. {project}:pull)"
        ));
    }
    Ok(Permission {
        project: project.to_owned(),
        actions: list,
    })
}

// ---- running a command ----

pub fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(dispatch(cmd))
}

async fn dispatch(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::User { conn, cmd } => {
            // Read a new password before anything touches the network.
            let new_password = match &cmd {
                UserCommand::Create { password_stdin, .. }
                | UserCommand::Passwd { password_stdin, .. } => {
                    Some(read_new_password(*password_stdin)?)
                }
                _ => None,
            };
            let client = Client::new(&conn)?;
            user(&client, cmd, new_password).await
        }
        AdminCommand::Project { conn, cmd } => project(&Client::new(&conn)?, cmd).await,
        AdminCommand::Repo { conn, cmd } => repo(&Client::new(&conn)?, cmd).await,
        AdminCommand::Robot { conn, cmd } => robot(&Client::new(&conn)?, cmd).await,
        AdminCommand::Audit(args) => audit(&Client::new(&args.conn)?, &args).await,
    }
}

fn read_new_password(from_stdin: bool) -> anyhow::Result<String> {
    if !from_stdin {
        bail!(
            "give the new password on standard input with --password-stdin \
             (e.g. `berth user create alice --password-stdin < pw.txt`)"
        );
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("new password (echoed): ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the new password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("--password-stdin: standard input holds no password");
    }
    Ok(password)
}

async fn user(c: &Client, cmd: UserCommand, new_password: Option<String>) -> anyhow::Result<()> {
    match cmd {
        UserCommand::List => {
            let v = c.get("/api/v1/users").await?;
            c.show(&v, || {
                let rows = items(&v)
                    .iter()
                    .map(|u| {
                        vec![
                            text(u, "name"),
                            yes_no(u, "admin"),
                            yes_no(u, "disabled"),
                            text(u, "source"),
                            text(u, "created_at"),
                        ]
                    })
                    .collect();
                table(
                    &["NAME", "ADMIN", "DISABLED", "SOURCE", "CREATED"],
                    rows,
                    "no users",
                )
            })?;
        }
        UserCommand::Create { name, admin, .. } => {
            let body = json!({ "name": name, "password": new_password, "admin": admin });
            let v = c.send(Method::POST, "/api/v1/users", Some(body)).await?;
            c.show(&v, || {
                let what = if admin { "registry admin" } else { "user" };
                format!("created {what} {name}\n")
            })?;
        }
        UserCommand::Passwd { name, .. } => {
            let mut body = json!({ "password": new_password });
            if name == c.user {
                // Needed when a user who is not a registry admin changes their own password.
                body["old_password"] = c.password.clone().into();
            }
            let path = format!("/api/v1/users/{}/password", pct(&name));
            let v = c.send(Method::PUT, &path, Some(body)).await?;
            c.show(&v, || format!("changed the password of {name}\n"))?;
        }
        UserCommand::Disable { name } => set_disabled(c, &name, true).await?,
        UserCommand::Enable { name } => set_disabled(c, &name, false).await?,
        UserCommand::Delete { name } => {
            let path = format!("/api/v1/users/{}", pct(&name));
            let v = c.send(Method::DELETE, &path, None).await?;
            c.show(&v, || format!("deleted user {name}\n"))?;
        }
        UserCommand::Show { name } => {
            let v = c.get(&format!("/api/v1/users/{}", pct(&name))).await?;
            c.show(&v, || {
                let groups = v["groups"]
                    .as_array()
                    .map(|g| g.iter().map(|x| text(x, "")).collect::<Vec<_>>().join("; "))
                    .unwrap_or_default();
                fields(&[
                    ("name", text(&v, "name")),
                    ("admin", yes_no(&v, "admin")),
                    ("disabled", yes_no(&v, "disabled")),
                    ("source", text(&v, "source")),
                    ("ldap groups", groups),
                    ("created", text(&v, "created_at")),
                ])
            })?;
        }
    }
    Ok(())
}

async fn set_disabled(c: &Client, name: &str, disabled: bool) -> anyhow::Result<()> {
    let path = format!("/api/v1/users/{}", pct(name));
    let v = c
        .send(Method::PATCH, &path, Some(json!({ "disabled": disabled })))
        .await?;
    c.show(&v, || {
        let what = if disabled { "disabled" } else { "enabled" };
        format!("{what} user {name}\n")
    })?;
    Ok(())
}

async fn repo(c: &Client, cmd: RepoCommand) -> anyhow::Result<()> {
    // Repository names keep their slashes in the path.
    let base = |name: &str| {
        let parts: Vec<String> = name.split('/').map(pct).collect();
        format!("/api/v1/repositories/{}", parts.join("/"))
    };
    match cmd {
        RepoCommand::Show { name } => {
            let v = c.get(&format!("{}/tags", base(&name))).await?;
            c.show(&v, || {
                let rows = items(&v)
                    .iter()
                    .map(|t| vec![text(t, "name"), text(t, "digest"), text(t, "updated_at")])
                    .collect();
                table(&["TAG", "DIGEST", "UPDATED"], rows, "no tags")
            })?;
        }
        RepoCommand::Delete { name } => {
            let v = c.send(Method::DELETE, &base(&name), None).await?;
            c.show(&v, || {
                format!(
                    "deleted repository {name}: {} manifests, {} tags, {} blob links, {} uploads\n",
                    text(&v, "manifests"),
                    text(&v, "tags"),
                    text(&v, "blob_links"),
                    text(&v, "uploads")
                )
            })?;
        }
    }
    Ok(())
}

async fn project(c: &Client, cmd: ProjectCommand) -> anyhow::Result<()> {
    let base = |name: &str| format!("/api/v1/projects/{}", pct(name));
    match cmd {
        ProjectCommand::List => {
            let v = c.get("/api/v1/projects").await?;
            c.show(&v, || {
                let rows = items(&v)
                    .iter()
                    .map(|p| vec![text(p, "name"), visibility(p), text(p, "created_at")])
                    .collect();
                table(&["NAME", "VISIBILITY", "CREATED"], rows, "no projects")
            })?;
        }
        ProjectCommand::Create { name, public } => {
            let body = json!({ "name": name, "public": public });
            let v = c.send(Method::POST, "/api/v1/projects", Some(body)).await?;
            c.show(&v, || {
                format!("created project {name} ({})\n", visibility(&v))
            })?;
        }
        ProjectCommand::Show { name } => {
            let mut v = c.get(&base(&name)).await?;
            let repos = c.get(&format!("{}/repositories", base(&name))).await?;
            let mut out = fields(&[
                ("name", text(&v, "name")),
                ("visibility", visibility(&v)),
                ("created", text(&v, "created_at")),
            ]);
            out.push('\n');
            let rows = items(&repos)
                .iter()
                .map(|r| {
                    vec![
                        text(r, "name"),
                        text(r, "tag_count"),
                        text(r, "artifact_count"),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["REPOSITORY", "TAGS", "ARTIFACTS"],
                rows,
                "no repositories",
            ));
            v["repositories"] = repos;
            c.show(&v, || out)?;
        }
        ProjectCommand::SetPublic { name, public } => {
            let body = json!({ "public": public });
            let v = c.send(Method::PATCH, &base(&name), Some(body)).await?;
            c.show(&v, || format!("project {name} is now {}\n", visibility(&v)))?;
        }
        ProjectCommand::Delete { name } => {
            let v = c.send(Method::DELETE, &base(&name), None).await?;
            c.show(&v, || format!("deleted project {name}\n"))?;
        }
        ProjectCommand::Members { name } => {
            let v = c.get(&format!("{}/members", base(&name))).await?;
            c.show(&v, || {
                let rows = items(&v)
                    .iter()
                    .map(|m| vec![text(m, "kind"), text(m, "role"), text(m, "name")])
                    .collect();
                table(&["KIND", "ROLE", "NAME"], rows, "no members")
            })?;
        }
        ProjectCommand::Member {
            name,
            kind,
            member,
            role,
        } => {
            let body = json!({ "kind": kind.as_str(), "name": member, "role": role.as_str() });
            let path = format!("{}/members", base(&name));
            let v = c.send(Method::PUT, &path, Some(body)).await?;
            c.show(&v, || {
                format!(
                    "{} {} is {} in {name}\n",
                    kind.as_str(),
                    text(&v, "name"),
                    role.as_str()
                )
            })?;
        }
        ProjectCommand::RemoveMember { name, kind, member } => {
            let path = format!(
                "{}/members?kind={}&name={}",
                base(&name),
                kind.as_str(),
                pct(&member)
            );
            let v = c.send(Method::DELETE, &path, None).await?;
            c.show(&v, || {
                format!("removed {} {member} from {name}\n", kind.as_str())
            })?;
        }
    }
    Ok(())
}

fn permissions_text(v: &Value) -> String {
    items(&v["permissions"])
        .iter()
        .map(|p| {
            let actions: Vec<String> = items(&p["actions"]).iter().map(|a| text(a, "")).collect();
            format!("{}:{}", text(p, "project"), actions.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn robot(c: &Client, cmd: RobotCommand) -> anyhow::Result<()> {
    match cmd {
        RobotCommand::List => {
            let v = c.get("/api/v1/robots").await?;
            c.show(&v, || {
                let rows = items(&v)
                    .iter()
                    .map(|r| {
                        vec![
                            text(r, "name"),
                            permissions_text(r),
                            or_never(text(r, "expires_at")),
                            text(r, "created_by"),
                            text(r, "description"),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME",
                        "PERMISSIONS",
                        "EXPIRES",
                        "CREATED BY",
                        "DESCRIPTION",
                    ],
                    rows,
                    "no robots",
                )
            })?;
        }
        RobotCommand::Create {
            name,
            projects,
            expires_in_days,
            description,
        } => {
            let mut body = json!({
                "name": name,
                "permissions": projects.iter()
                    .map(|p| json!({ "project": p.project, "actions": p.actions }))
                    .collect::<Vec<_>>(),
            });
            if let Some(d) = expires_in_days {
                body["expires_in_days"] = d.into();
            }
            if let Some(d) = description {
                body["description"] = d.into();
            }
            let v = c.send(Method::POST, "/api/v1/robots", Some(body)).await?;
            c.show(&v, || {
                format!(
                    "created robot account {}\n  permissions: {}\n  expires:     {}\n\n\
                     secret (shown only now; store it safely, e.g. as a CI secret):\n{}\n",
                    text(&v, "name"),
                    permissions_text(&v),
                    or_never(text(&v, "expires_at")),
                    text(&v, "secret"),
                )
            })?;
        }
        RobotCommand::Delete { name } => {
            let path = format!("/api/v1/robots/{}", pct(&name));
            let v = c.send(Method::DELETE, &path, None).await?;
            let full = if name.starts_with("robot$") {
                name
            } else {
                format!("robot${name}")
            };
            c.show(&v, || format!("deleted robot account {full}\n"))?;
        }
    }
    Ok(())
}

/// An audit `--since`/`--until`: an age (`1h`, `7d`) becomes the RFC 3339 time that long ago;
/// anything else goes to the server as it is (which checks it is RFC 3339).
fn audit_time(s: &str, now: SystemTime) -> String {
    match humantime::parse_duration(s.trim()) {
        Ok(age) => now
            .checked_sub(age)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_else(|| s.to_owned()),
        Err(_) => s.to_owned(),
    }
}

fn audit_query(args: &AuditArgs, now: SystemTime) -> String {
    let params = [
        ("actor", args.actor.clone()),
        ("action", args.action.clone()),
        ("resource", args.resource.clone()),
        ("result", args.result.clone()),
        ("since", args.since.as_deref().map(|t| audit_time(t, now))),
        ("until", args.until.as_deref().map(|t| audit_time(t, now))),
        ("limit", args.limit.map(|l| l.to_string())),
        ("before", args.before.map(|b| b.to_string())),
    ];
    let mut q = String::from("/api/v1/audit");
    let mut sep = '?';
    for (k, v) in params {
        if let Some(v) = v {
            let _ = write!(q, "{sep}{k}={}", pct(&v));
            sep = '&';
        }
    }
    q
}

async fn audit(c: &Client, args: &AuditArgs) -> anyhow::Result<()> {
    let v = c.get(&audit_query(args, SystemTime::now())).await?;
    c.show(&v, || {
        let rows = items(&v["events"])
            .iter()
            .map(|e| {
                vec![
                    text(e, "time"),
                    text(e, "actor"),
                    text(e, "action"),
                    text(e, "resource"),
                    text(e, "result"),
                    text(e, "source"),
                    text(e, "detail"),
                ]
            })
            .collect();
        table(
            &[
                "TIME", "ACTOR", "ACTION", "RESOURCE", "RESULT", "SOURCE", "DETAIL",
            ],
            rows,
            "no events",
        )
    })?;
    if !c.json
        && let Some(next) = v["next"].as_i64()
    {
        eprintln!("more events: add --before {next}");
    }
    Ok(())
}

// ---- output ----

/// Writes to standard output; a closed pipe (`berth audit | head`) is not an error.
fn print_out(s: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("writing to standard output: {e}"))
        }
        _ => Ok(()),
    }
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A field of an object (or the value itself with `key` empty) as display text.
fn text(v: &Value, key: &str) -> String {
    let x = if key.is_empty() { v } else { &v[key] };
    match x {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn yes_no(v: &Value, key: &str) -> String {
    if v[key].as_bool().unwrap_or(false) {
        "yes".into()
    } else {
        "no".into()
    }
}

fn visibility(p: &Value) -> String {
    if p["public"].as_bool().unwrap_or(false) {
        "public".into()
    } else {
        "private".into()
    }
}

fn or_never(s: String) -> String {
    if s.is_empty() { "never".into() } else { s }
}

/// Left-aligned columns separated by two spaces; the last column is not padded. An empty
/// list prints `empty` instead.
fn table(header: &[&str], rows: Vec<Vec<String>>, empty: &str) -> String {
    if rows.is_empty() {
        return format!("{empty}\n");
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head = header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
    for row in std::iter::once(&head).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines, values aligned; empty values are left out.
fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        let _ = writeln!(out, "{:<w$} {v}", format!("{k}:"), w = w);
    }
    out
}

/// Percent-encodes everything but the unreserved characters (a path segment or query value).
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ---- HTTP ----

/// The parts of `--url` a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    https: bool,
    /// Host name or IP address, without IPv6 brackets (what to connect to and verify).
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: String,
    /// A path prefix without its trailing slash (`""` for none).
    prefix: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let url = url.trim();
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if url.contains("://") {
        bail!("{url}: only http:// and https:// URLs are supported");
    } else {
        bail!("{url:?} is not a URL; write it with its scheme, e.g. http://{url}");
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        bail!("{url}: put no credentials in the URL; use --user and BERTH_PASSWORD");
    }
    if path.contains(['?', '#']) {
        bail!("{url}: the URL must not carry a query or fragment");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("{url}: unclosed [ in the host"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| anyhow!("{url}: junk after the IPv6 address"))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        bail!("{url}: no host");
    }
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| anyhow!("{url}: {p:?} is not a port"))?,
    };
    Ok(Target {
        https,
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        prefix: path.trim_end_matches('/').to_owned(),
    })
}

struct Client {
    url: String,
    target: Target,
    tls: Option<TlsConnector>,
    user: String,
    password: String,
    authorization: String,
    json: bool,
}

impl Client {
    fn new(conn: &Connection) -> anyhow::Result<Client> {
        let target = parse_url(&conn.url)?;
        let password = match std::env::var("BERTH_PASSWORD") {
            Ok(p) if !p.is_empty() => p,
            _ => bail!(
                "set BERTH_PASSWORD to the password of {:?} (the user to sign in as; change it \
                 with --user or BERTH_USER)",
                conn.user
            ),
        };
        let tls = if target.https {
            Some(tls_connector(conn.ca_file.as_deref())?)
        } else {
            None
        };
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", conn.user))
        );
        Ok(Client {
            url: conn.url.trim().trim_end_matches('/').to_owned(),
            target,
            tls,
            user: conn.user.clone(),
            password,
            authorization,
            json: conn.json,
        })
    }

    /// Prints `v` as JSON with `--json`, else what `human` renders. Nothing for a 204.
    fn show(&self, v: &Value, human: impl FnOnce() -> String) -> anyhow::Result<()> {
        if self.json {
            if v.is_null() {
                return Ok(());
            }
            let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
            s.push('\n');
            print_out(&s)
        } else {
            print_out(&human())
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, None).await
    }

    /// Sends one request and returns its JSON answer (`null` for an empty body); an error
    /// status becomes `<status> <code>: <message>`.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let uri = format!("{}{path}", self.target.prefix);
        let what = format!("{method} {}{path}", self.url);
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::HOST, &self.target.authority)
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("berth-cli/", env!("CARGO_PKG_VERSION")),
            );
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                b.to_string()
            }
            None => String::new(),
        };
        let req = req.body(body).context("building the request")?;
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(req))
            .await
            .map_err(|_| anyhow!("{what}: no answer within {REQUEST_TIMEOUT:?}"))??;
        if !status.is_success() {
            return Err(anyhow!(error_text(status, &bytes)));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{what}: the answer is not JSON (is {} a Berth server?)",
                self.url
            )
        })
    }

    async fn exchange(&self, req: Request<String>) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let t = &self.target;
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", self.url))?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                anyhow!(
                    "cannot connect to {}: connection refused (is `berth serve` running \
                         there? set --url or BERTH_URL)",
                    self.url
                )
            } else {
                anyhow!("cannot connect to {}: {e}", self.url)
            }
        })?;
        let _ = tcp.set_nodelay(true);
        let resp = match &self.tls {
            None => round_trip(tcp, req, &self.url).await?,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|_| anyhow!("{:?} is not a valid TLS server name", t.host))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.url))?;
                round_trip(stream, req, &self.url).await?
            }
        };
        let status = resp.status();
        let mut incoming = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = next_frame(&mut incoming).await {
            let frame = frame.context("reading the answer")?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > MAX_BODY {
                    bail!("the answer is larger than {MAX_BODY} bytes");
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok((status, buf))
    }
}

async fn round_trip<S>(io: S, req: Request<String>, url: &str) -> anyhow::Result<Response<Incoming>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| {
        if e.is_parse() && url.starts_with("http://") {
            anyhow!("{url}: the answer is not HTTP ({e}); does the server speak https://?")
        } else {
            anyhow!("{url}: {e}")
        }
    })
}

async fn next_frame(
    body: &mut Incoming,
) -> Option<Result<hyper::body::Frame<hyper::body::Bytes>, hyper::Error>> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await
}

/// `401 UNAUTHORIZED: authentication failed` from an OCI error body; the start of any other.
fn error_text(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let e = v["errors"].as_array()?.first()?.clone();
            Some((text(&e, "code"), text(&e, "message")))
        });
    let mut s = match parsed {
        Some((code, message)) => format!("{} {code}: {message}", status.as_u16()),
        None => {
            let raw = String::from_utf8_lossy(&body[..body.len().min(300)]);
            let raw = raw.trim();
            let reason = status.canonical_reason().unwrap_or("error");
            if raw.is_empty() {
                format!("{} {reason}", status.as_u16())
            } else {
                format!("{} {reason}: {raw}", status.as_u16())
            }
        }
    };
    if status == StatusCode::UNAUTHORIZED {
        s.push_str(" (check --user/BERTH_USER and BERTH_PASSWORD)");
    }
    s
}

fn tls_connector(ca_file: Option<&Path>) -> anyhow::Result<TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).with_context(|| {
        if ca_file.is_some() {
            format!("reading --ca-file {}", path.display())
        } else {
            format!(
                "reading the system CA bundle {} (give --ca-file instead)",
                path.display()
            )
        }
    })?;
    for cert in certs {
        let cert = cert.with_context(|| format!("parsing a certificate in {}", path.display()))?;
        // A system bundle may hold certificates rustls cannot use; skip those.
        if let Err(e) = roots.add(cert)
            && ca_file.is_some()
        {
            bail!("{}: {e}", path.display());
        }
    }
    if roots.is_empty() {
        bail!("{} holds no usable CA certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn permissions_parse() {
        assert_eq!(
            parse_permission("team:pull,push").unwrap(),
            Permission {
                project: "team".into(),
                actions: vec!["pull".into(), "push".into()]
            }
        );
        assert_eq!(
            parse_permission("a.b: pull , delete,pull").unwrap().actions,
            vec!["pull".to_owned(), "delete".to_owned()]
        );
        for bad in ["team", "team:", ":pull", "team:pull,sing", "team:,"] {
            assert!(parse_permission(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn urls_parse() {
        let t = parse_url("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            t,
            Target {
                https: false,
                host: "127.0.0.1".into(),
                port: 5000,
                authority: "127.0.0.1:5000".into(),
                prefix: String::new(),
            }
        );
        let t = parse_url("https://registry.example.com/").unwrap();
        assert!(t.https);
        assert_eq!((t.host.as_str(), t.port), ("registry.example.com", 443));
        assert_eq!(t.prefix, "");
        let t = parse_url("http://[::1]:8080/berth/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.authority, "[::1]:8080");
        assert_eq!(t.prefix, "/berth");
        assert_eq!(parse_url("http://host").unwrap().port, 80);
        for bad in [
            "127.0.0.1:5000",
            "ftp://host",
            "http://",
            "http://host:x",
            "http://host:0",
            "http://u:p@host",
            "http://[::1",
            "http://host/?a=b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn errors_render() {
        let body = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"project x not found"}]}"#;
        assert_eq!(
            error_text(StatusCode::NOT_FOUND, body),
            "404 NAME_UNKNOWN: project x not found"
        );
        assert_eq!(error_text(StatusCode::BAD_GATEWAY, b""), "502 Bad Gateway");
        assert!(error_text(StatusCode::UNAUTHORIZED, b"{}").contains("BERTH_PASSWORD"));
    }

    #[test]
    fn paths_and_queries_are_encoded() {
        assert_eq!(pct("robot$ci"), "robot%24ci");
        assert_eq!(pct("cn=dev,ou=g"), "cn%3Ddev%2Cou%3Dg");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(7200);
        assert_eq!(audit_time("1h", now), "1970-01-01T01:00:00Z");
        assert_eq!(
            audit_time("2025-01-01T00:00:00Z", now),
            "2025-01-01T00:00:00Z"
        );
    }

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: AdminCommand,
    }

    #[test]
    fn command_line_parses() {
        Cli::command_for_test();
        let cli = Cli::try_parse_from([
            "berth",
            "robot",
            "create",
            "ci",
            "--project",
            "team:pull,push",
            "--project",
            "other:pull",
            "--url",
            "http://h:1",
            "--expires-in-days",
            "9",
        ])
        .unwrap();
        match cli.cmd {
            AdminCommand::Robot {
                conn,
                cmd:
                    RobotCommand::Create {
                        projects,
                        expires_in_days,
                        ..
                    },
            } => {
                assert_eq!(conn.url, "http://h:1");
                assert_eq!(projects.len(), 2);
                assert_eq!(expires_in_days, Some(9));
            }
            _ => panic!("wrong command"),
        }
        let cli = Cli::try_parse_from(["berth", "project", "set-public", "team", "false"]).unwrap();
        assert!(matches!(
            cli.cmd,
            AdminCommand::Project {
                cmd: ProjectCommand::SetPublic { public: false, .. },
                ..
            }
        ));
        assert!(Cli::try_parse_from(["berth", "robot", "create", "ci"]).is_err());
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
