//! Who the caller is and what they may do: local users (argon2), LDAP users, robot accounts,
//! the token service of the Docker token protocol, and the permission checks every request
//! goes through.
//!
//! Costs on the hot path are bounded: a Bearer token is an HMAC check plus two cache lookups
//! (the principal's current state and its actions on the project), Basic credentials are
//! checked with argon2 at most once per `cache_ttl` per credential pair, behind a concurrency
//! limit. Caches are dropped whenever this process writes identity data
//! ([`MetaStore::auth_version`]) and expire after `cache_ttl` for writes by other processes.

pub mod ldap;
pub mod secret;
pub mod throttle;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::RepoName;
use berth_core::access::{Action, Actions, Scope, project_actions};
use berth_core::config::AuthConfig;
use berth_meta::{MetaError, MetaStore, UserRow};
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use crate::ldap::{LdapAuth, LdapError};
use crate::secret::{PasswordHashing, Standing, secret_matches};
use crate::throttle::FailureThrottle;
use crate::token::{Access, Claims, ISSUER, KeyRing, TokenError, now_secs};

pub use token::Access as TokenAccess;

/// Robot account names start with this.
pub use berth_core::admin::ROBOT_PREFIX;
/// Longest user or robot name accepted at login.
pub const MAX_NAME: usize = 256;
/// Longest password accepted at login (argon2 hashes whatever it is given).
const MAX_PASSWORD: usize = 4096;
/// LDAP logins running at once at most (each opens a connection and binds).
const LDAP_CONCURRENCY: usize = 8;
/// Entries a cache holds at most before it starts over.
const CACHE_MAX: usize = 50_000;

/// A signed-in caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    User {
        id: i64,
        /// When the account was last changed (created, password, flags, groups): with the id it
        /// names this account in this state, so a password change, a disable or a demotion
        /// ends every token issued before it, and a deleted row's id reused by SQLite names
        /// nobody's old tokens.
        since: i64,
        name: String,
        admin: bool,
        groups: Vec<String>,
    },
    Robot {
        id: i64,
        since: i64,
        name: String,
        permissions: Vec<(String, Actions)>,
    },
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "",
            Principal::User { name, .. } | Principal::Robot { name, .. } => name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User { .. } => "user",
            Principal::Robot { .. } => "robot",
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::User { admin: true, .. })
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Principal::Anonymous)
    }

    /// The key tokens carry to name this principal (`u:<id>:<changed>`, `r:<id>:<created>`,
    /// empty): a deleted account's tokens never pass for a new account that got its id, and a
    /// user's tokens end when the account changes.
    pub fn key(&self) -> String {
        match self {
            Principal::Anonymous => String::new(),
            Principal::User { id, since, .. } => format!("u:{id}:{since}"),
            Principal::Robot { id, since, .. } => format!("r:{id}:{since}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong name or password, disabled, expired, deleted: all look the same to the caller.
    #[error("authentication failed")]
    Invalid,
    /// Too many failures for this name and address.
    #[error("too many failed logins; try again in {} s", .0.as_secs())]
    Throttled(Duration),
    /// The LDAP directory could not be asked.
    #[error("{0}")]
    Unavailable(String),
    /// Too many password checks are waiting; this one was shed (retry shortly).
    #[error("too many logins are being checked at once; try again in a moment")]
    Busy,
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Internal(String),
}

impl From<secret::SecretError> for AuthError {
    fn from(e: secret::SecretError) -> Self {
        match e {
            secret::SecretError::Busy => AuthError::Busy,
            other => AuthError::Internal(other.to_string()),
        }
    }
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid(_) => AuthError::Invalid,
            TokenError::Meta(m) => AuthError::Meta(m),
            TokenError::Secret(s) => AuthError::Internal(s.to_string()),
        }
    }
}

/// What [`Auth::bootstrap_admin`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminBootstrap {
    /// The first admin was created; with the generated password when none was given.
    Created { generated: Option<String> },
    /// Users exist already; `given_differs` when a password was given that is not the
    /// admin's (it was ignored).
    Exists { given_differs: bool },
}

/// A token as issued to a client.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: u64,
    pub refresh_token: Option<String>,
}

struct Cached<T> {
    value: T,
    version: u64,
    at: Instant,
}

/// A small map whose entries die with the auth version or after the TTL.
struct TtlCache<K, V> {
    map: Mutex<HashMap<K, Cached<V>>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        TtlCache {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, k: &K, version: u64, ttl: Duration) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(k)
            .filter(|c| c.version == version && c.at.elapsed() < ttl)
            .map(|c| c.value.clone())
    }

    fn put(&self, k: K, v: V, version: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(
            k,
            Cached {
                value: v,
                version,
                at: Instant::now(),
            },
        );
    }

    fn remove(&self, k: &K) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(k);
    }
}

/// The identity and permission service of one node.
pub struct Auth {
    pub meta: MetaStore,
    pub config: AuthConfig,
    pub hashing: PasswordHashing,
    keys: KeyRing,
    ldap: Option<LdapAuth>,
    throttle: FailureThrottle,
    ldap_permits: tokio::sync::Semaphore,
    /// SHA-256 of (name, password) → principal key; dropped by any identity write (a changed
    /// password must stop working at once).
    credentials: TtlCache<[u8; 32], String>,
    principals: TtlCache<String, Option<Principal>>,
    actions: TtlCache<(String, String), Actions>,
    /// Checks of credentials in progress: concurrent logins with the same name and password
    /// share one check (a CI job pushing layers in parallel logs in a dozen times at once).
    checks: Mutex<HashMap<[u8; 32], Arc<OnceCell<Checked>>>>,
}

/// The outcome of one credential check, shared by every login that waited for it.
#[derive(Debug, Clone)]
enum Checked {
    /// The principal's key.
    Valid(String),
    Invalid,
    Throttled(Duration),
    Busy,
    Unavailable(String),
    Failed(String),
}

impl Checked {
    fn of(r: &Result<Principal, AuthError>) -> Checked {
        match r {
            Ok(p) => Checked::Valid(p.key()),
            Err(AuthError::Invalid) => Checked::Invalid,
            Err(AuthError::Throttled(d)) => Checked::Throttled(*d),
            Err(AuthError::Busy) => Checked::Busy,
            Err(AuthError::Unavailable(m)) => Checked::Unavailable(m.clone()),
            Err(e) => Checked::Failed(e.to_string()),
        }
    }
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Login {
    pub principal: Principal,
    /// Whether this request's credentials were checked now (a login worth recording), rather
    /// than found in the cache or checked by a concurrent request.
    pub checked: bool,
}

fn credential_key(name: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0u8]);
    h.update(password.as_bytes());
    h.finalize().into()
}

impl Auth {
    pub async fn new(meta: MetaStore, config: AuthConfig) -> Result<Auth, AuthError> {
        let keys = KeyRing::load(meta.clone()).await?;
        let ldap = LdapAuth::new(&config.ldap).map_err(AuthError::Internal)?;
        Ok(Auth {
            hashing: PasswordHashing::new(
                config.hash_concurrency as usize,
                config.hash_queue as usize,
            ),
            throttle: FailureThrottle::new(config.max_failures, config.failure_window.0),
            keys,
            ldap,
            ldap_permits: tokio::sync::Semaphore::new(LDAP_CONCURRENCY),
            meta,
            config,
            credentials: TtlCache::new(),
            principals: TtlCache::new(),
            actions: TtlCache::new(),
            checks: Mutex::new(HashMap::new()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn ttl(&self) -> Duration {
        self.config.cache_ttl.0
    }

    /// Creates the first admin, `admin`, when there are no users, with `password` or a
    /// generated one. When users exist and `password` is given, says whether it differs from
    /// the admin's (it is then ignored: the variable only seeds an empty registry).
    pub async fn bootstrap_admin(
        &self,
        password: Option<&str>,
    ) -> Result<AdminBootstrap, AuthError> {
        let given = password.filter(|p| !p.is_empty());
        if self.meta.count_users().await? > 0 {
            let Some(given) = given else {
                return Ok(AdminBootstrap::Exists {
                    given_differs: false,
                });
            };
            let differs = match self.meta.user_by_name("admin").await? {
                Some(u) => match &u.password_hash {
                    Some(h) => !self.hashing.verify(given, h, Standing::Clean).await?,
                    None => true,
                },
                None => true,
            };
            return Ok(AdminBootstrap::Exists {
                given_differs: differs,
            });
        }
        let (password, generated) = match given {
            Some(p) => (p.to_owned(), false),
            None => (
                secret::new_secret().map_err(|e| AuthError::Internal(e.to_string()))?,
                true,
            ),
        };
        let hash = self
            .hashing
            .hash(&password)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        match self
            .meta
            .create_user("admin", Some(&hash), "local", true)
            .await
        {
            Ok(_) => Ok(AdminBootstrap::Created {
                generated: generated.then_some(password),
            }),
            // Another node starting at the same time created it first: this password was
            // never stored, so it must not be shown.
            Err(berth_meta::CreateError::Exists) => Ok(AdminBootstrap::Exists {
                given_differs: false,
            }),
            Err(berth_meta::CreateError::Meta(e)) => Err(e.into()),
        }
    }

    // ---- who is calling ----

    fn user_principal(&self, u: &UserRow) -> Principal {
        let ldap_admin = u.source == "ldap"
            && self
                .ldap
                .as_ref()
                .is_some_and(|l| l.is_admin(&u.ldap_groups));
        Principal::User {
            id: u.id,
            since: u.updated_at,
            name: u.name.clone(),
            admin: u.admin || ldap_admin,
            groups: u.ldap_groups.clone(),
        }
    }

    /// The current state of the principal a token or cached credential names; `None` when it
    /// no longer exists or may no longer sign in (deleted, disabled, expired).
    pub async fn resolve(&self, key: &str) -> Result<Option<Principal>, AuthError> {
        if key.is_empty() {
            return Ok(Some(Principal::Anonymous));
        }
        let version = self.meta.auth_version();
        if let Some(p) = self.principals.get(&key.to_owned(), version, self.ttl()) {
            return Ok(p);
        }
        let mut parts = key.splitn(3, ':');
        let (kind, id, since) = (
            parts.next().unwrap_or(""),
            parts.next().and_then(|i| i.parse::<i64>().ok()),
            parts.next().and_then(|c| c.parse::<i64>().ok()),
        );
        let p = match (kind, id, since) {
            ("u", Some(id), Some(since)) => self
                .meta
                .user_by_id(id)
                .await?
                .filter(|u| !u.disabled && u.updated_at == since)
                .map(|u| self.user_principal(&u)),
            ("r", Some(id), Some(since)) => {
                let now = berth_meta::now_ms();
                self.meta
                    .robot_by_id(id)
                    .await?
                    .filter(|r| r.created_at == since && r.expires_at.is_none_or(|e| e > now))
                    .map(|r| Principal::Robot {
                        id: r.id,
                        since: r.created_at,
                        name: r.name,
                        permissions: r.permissions,
                    })
            }
            _ => None,
        };
        self.principals.put(key.to_owned(), p.clone(), version);
        Ok(p)
    }

    /// Checks a name and password (local user, robot or LDAP user), throttled per (name,
    /// source address).
    pub async fn authenticate(
        &self,
        name: &str,
        password: &str,
        source: IpAddr,
    ) -> Result<Principal, AuthError> {
        self.login(name, password, source)
            .await
            .map(|l| l.principal)
    }

    /// [`Auth::authenticate`], saying whether the credentials were checked by this call.
    ///
    /// Credentials verified a moment ago are exact (a hash of name and password), so they pass
    /// without touching the throttle or the argon2 queue: a fleet logging in with one robot
    /// from one address never queues behind its own attempts. Concurrent logins with the same
    /// credentials share one check, so only distinct guesses count against the throttle, and
    /// only failures count at all (and checks the password queue shed, against the address).
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        source: IpAddr,
    ) -> Result<Login, AuthError> {
        if name.is_empty() || name.len() > MAX_NAME || password.len() > MAX_PASSWORD {
            // Not a name anyone has: refused before it costs a hash, a throttle entry or an
            // audit row of attacker-chosen size.
            return Err(AuthError::Invalid);
        }
        let ck = credential_key(name, password);
        let version = self.meta.auth_version();
        if let Some(key) = self.credentials.get(&ck, version, self.ttl())
            && let Some(p) = self.resolve(&key).await?
        {
            return Ok(Login {
                principal: p,
                checked: false,
            });
        }
        let waiting = ForgetCheck {
            checks: &self.checks,
            key: ck,
            check: {
                let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
                checks.entry(ck).or_default().clone()
            },
        };
        let mut ran = false;
        let outcome = waiting
            .check
            .get_or_init(|| {
                ran = true;
                async { Checked::of(&self.check(name, password, source).await) }
            })
            .await
            .clone();
        drop(waiting);
        let principal = match outcome {
            Checked::Valid(key) => self.resolve(&key).await?.ok_or(AuthError::Invalid)?,
            Checked::Invalid => return Err(AuthError::Invalid),
            Checked::Throttled(d) => return Err(AuthError::Throttled(d)),
            Checked::Busy => return Err(AuthError::Busy),
            Checked::Unavailable(m) => return Err(AuthError::Unavailable(m)),
            Checked::Failed(m) => return Err(AuthError::Internal(m)),
        };
        Ok(Login {
            principal,
            checked: ran,
        })
    }

    /// One check of credentials against the throttle and the stores.
    async fn check(
        &self,
        name: &str,
        password: &str,
        source: IpAddr,
    ) -> Result<Principal, AuthError> {
        // The attempt counts against its (name, address) while it runs, so parallel distinct
        // guesses cannot all pass the check before any of them is recorded.
        if let Some(wait) = self.throttle.begin(name, source) {
            return Err(AuthError::Throttled(wait));
        }
        // An address that failed or was shed lately waits behind those that did not: a flood
        // of guesses turns its own addresses suspect, not the real users'.
        let standing = if self.throttle.is_suspect(source) {
            Standing::Suspect
        } else {
            Standing::Clean
        };
        let result = self.verify(name, password, standing).await;
        match &result {
            Ok(_) => self.throttle.succeeded(name, source),
            Err(AuthError::Invalid) => self.throttle.failed_attempt(source),
            // A check the password queue shed counts against the address, not the pair (the
            // queue's doing must not lock an account): a flood that only ever gets shed still
            // reaches the address limit, and is then refused before the queue.
            Err(AuthError::Busy) => self.throttle.shed(name, source),
            // A directory or a database that could not take the check takes the attempt back.
            Err(_) => self.throttle.release(name, source),
        }
        result
    }

    /// The credential check behind [`Auth::authenticate`]; a success fills the credential
    /// cache. `standing` places a password check in the argon2 queue.
    async fn verify(
        &self,
        name: &str,
        password: &str,
        standing: Standing,
    ) -> Result<Principal, AuthError> {
        let ck = credential_key(name, password);
        let version = self.meta.auth_version();
        self.credentials.remove(&ck);
        let p = self.check_password(name, password, standing).await?;
        // Quoting the version read before the check: a password changed meanwhile makes this
        // entry stale at once.
        self.credentials.put(ck, p.key(), version);
        Ok(p)
    }

    async fn check_password(
        &self,
        name: &str,
        password: &str,
        standing: Standing,
    ) -> Result<Principal, AuthError> {
        if name.starts_with(ROBOT_PREFIX) {
            // Robot secrets are compared by a fast hash, known robot or not: no timing tells.
            let Some(r) = self.meta.robot_by_name(name).await? else {
                return Err(AuthError::Invalid);
            };
            if !secret_matches(password, &r.secret_hash) {
                return Err(AuthError::Invalid);
            }
            return self
                .resolve(&format!("r:{}:{}", r.id, r.created_at))
                .await?
                .ok_or(AuthError::Invalid);
        }
        let user = self.meta.user_by_name(name).await?;
        match user {
            Some(u) if u.source == "local" => {
                let ok = match &u.password_hash {
                    Some(h) => self.hashing.verify(password, h, standing).await?,
                    None => {
                        self.hashing.verify_nothing(password, standing).await?;
                        false
                    }
                };
                if !ok || u.disabled {
                    return Err(AuthError::Invalid);
                }
                Ok(self.user_principal(&u))
            }
            _ => {
                let Some(ldap) = &self.ldap else {
                    // No such user: spend what a wrong password costs, so that a name's
                    // existence cannot be told from the time the answer takes.
                    self.hashing.verify_nothing(password, standing).await?;
                    return Err(AuthError::Invalid);
                };
                let Ok(_permit) = self.ldap_permits.try_acquire() else {
                    return Err(AuthError::Unavailable(
                        "too many LDAP logins at once".into(),
                    ));
                };
                let login = match ldap.authenticate(name, password).await {
                    Ok(l) => l,
                    Err(LdapError::Invalid) => return Err(AuthError::Invalid),
                    Err(LdapError::Unavailable(e)) => {
                        tracing::warn!(error = %e, user = name, "LDAP login could not be checked");
                        return Err(AuthError::Unavailable(e));
                    }
                };
                let Some(u) = self.meta.upsert_ldap_user(name, &login.groups).await? else {
                    return Err(AuthError::Invalid);
                };
                if u.disabled {
                    return Err(AuthError::Invalid);
                }
                Ok(self.user_principal(&u))
            }
        }
    }

    /// The principal a Bearer access token stands for, re-checked against its current state.
    pub async fn verify_token(&self, token: &str) -> Result<(Principal, Claims), AuthError> {
        let claims = self.keys.verify(token, &self.config.service).await?;
        if claims.typ.is_some() {
            return Err(AuthError::Invalid);
        }
        let p = self.resolve(&claims.pk).await?.ok_or(AuthError::Invalid)?;
        if p.name() != claims.sub {
            return Err(AuthError::Invalid);
        }
        Ok((p, claims))
    }

    /// The principal of a refresh token.
    pub async fn verify_refresh(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.keys.verify(token, &self.config.service).await?;
        if claims.typ.as_deref() != Some("refresh") || claims.pk.is_empty() {
            return Err(AuthError::Invalid);
        }
        let p = self.resolve(&claims.pk).await?.ok_or(AuthError::Invalid)?;
        if p.name() != claims.sub {
            return Err(AuthError::Invalid);
        }
        Ok(p)
    }

    // ---- what the caller may do ----

    /// Whether the caller may create the (missing) project by pushing to it.
    pub fn may_create_project(&self, p: &Principal) -> bool {
        p.is_admin() || (self.config.auto_create_projects && matches!(p, Principal::User { .. }))
    }

    /// What the caller may do in `project` now. A missing project grants everything to whom
    /// may create it (their push creates it) and nothing to anyone else.
    pub async fn project_actions(
        &self,
        p: &Principal,
        project: &str,
    ) -> Result<Actions, AuthError> {
        if !self.enabled() || p.is_admin() {
            return Ok(Actions::ALL);
        }
        let version = self.meta.auth_version();
        let key = (p.key(), project.to_owned());
        if let Some(a) = self.actions.get(&key, version, self.ttl()) {
            return Ok(a);
        }
        let a = match self.meta.project(project).await? {
            None if self.may_create_project(p) => Actions::ALL,
            None => Actions::NONE,
            Some(proj) => {
                let (role, robot) = match p {
                    Principal::Anonymous => (None, Actions::NONE),
                    Principal::User { name, groups, .. } => (
                        self.meta.best_role(proj.id, name, groups).await?,
                        Actions::NONE,
                    ),
                    Principal::Robot { permissions, .. } => (
                        None,
                        permissions
                            .iter()
                            .filter(|(pr, _)| pr == project)
                            .fold(Actions::NONE, |acc, (_, a)| acc.union(*a)),
                    ),
                };
                project_actions(false, proj.public, role, robot)
            }
        };
        self.actions.put(key, a, version);
        Ok(a)
    }

    /// Whether the caller may do `action` on repository `repo`.
    pub async fn allowed(
        &self,
        p: &Principal,
        repo: &RepoName,
        action: Action,
    ) -> Result<bool, AuthError> {
        Ok(self
            .project_actions(p, repo.project())
            .await?
            .contains(action))
    }

    /// The access a token may carry for the requested scopes: what was asked, cut down to
    /// what the caller may do now. Scopes that do not parse or name nothing grantable are left
    /// out.
    pub async fn grant(&self, p: &Principal, scopes: &[Scope]) -> Result<Vec<Access>, AuthError> {
        let mut out: Vec<Access> = Vec::new();
        for s in scopes {
            let actions: Vec<String> = if s.kind == "repository" {
                let Ok(repo) = RepoName::parse(&s.name) else {
                    continue;
                };
                let may = self.project_actions(p, repo.project()).await?;
                s.actions()
                    .intersect(may)
                    .to_list()
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            } else if s.is_catalog() && !p.is_anonymous() {
                vec!["*".to_owned()]
            } else {
                Vec::new()
            };
            if actions.is_empty() {
                continue;
            }
            match out
                .iter_mut()
                .find(|a| a.kind == s.kind && a.name == s.name)
            {
                Some(a) => {
                    for x in actions {
                        if !a.actions.contains(&x) {
                            a.actions.push(x);
                        }
                    }
                }
                None => out.push(Access {
                    kind: s.kind.clone(),
                    name: s.name.clone(),
                    actions,
                }),
            }
        }
        Ok(out)
    }

    /// Signs an access token (and a refresh token when asked for one).
    pub fn issue(
        &self,
        p: &Principal,
        access: Vec<Access>,
        with_refresh: bool,
    ) -> Result<IssuedToken, AuthError> {
        let now = now_secs();
        let ttl = self.config.token_ttl.0.as_secs();
        let base = Claims {
            iss: ISSUER.into(),
            sub: p.name().to_owned(),
            aud: self.config.service.clone(),
            exp: now + ttl,
            // A little in the past, for clocks of other nodes running behind.
            nbf: now.saturating_sub(10),
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
            pk: p.key(),
            typ: None,
        };
        let token = self.keys.sign(&base)?;
        let refresh_token = if with_refresh && !p.is_anonymous() {
            let r = Claims {
                exp: now + self.config.refresh_token_ttl.0.as_secs(),
                access: Vec::new(),
                jti: uuid::Uuid::new_v4().simple().to_string(),
                typ: Some("refresh".into()),
                ..base
            };
            Some(self.keys.sign(&r)?)
        } else {
            None
        };
        Ok(IssuedToken {
            token,
            expires_in: ttl,
            issued_at: now,
            refresh_token,
        })
    }

    /// Adds a signing key; see [`KeyRing::rotate`].
    pub async fn rotate_key(&self) -> Result<String, AuthError> {
        Ok(self.keys.rotate().await?)
    }
}

/// Forgets a finished (or abandoned) credential check when its last waiter is done, so the
/// map holds only checks in progress.
struct ForgetCheck<'a> {
    checks: &'a Mutex<HashMap<[u8; 32], Arc<OnceCell<Checked>>>>,
    key: [u8; 32],
    check: Arc<OnceCell<Checked>>,
}

impl Drop for ForgetCheck<'_> {
    fn drop(&mut self) {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = checks.get(&self.key)
            && Arc::ptr_eq(c, &self.check)
            // The map's reference and this one: nobody else waits for it.
            && Arc::strong_count(&self.check) <= 2
        {
            checks.remove(&self.key);
        }
    }
}

/// Whether a token's access list grants `action` on `repo`.
pub fn token_grants(access: &[Access], repo: &str, action: Action) -> bool {
    access.iter().any(|a| {
        a.kind == "repository"
            && a.name == repo
            && a.actions.iter().any(|x| x == "*" || x == action.as_str())
    })
}

/// Whether a token's access list grants the catalog.
pub fn token_grants_catalog(access: &[Access]) -> bool {
    access
        .iter()
        .any(|a| a.kind == "registry" && a.name == "catalog" && !a.actions.is_empty())
}
