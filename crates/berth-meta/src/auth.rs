//! Identity and access data: users, projects' visibility and members, robot accounts, token
//! signing keys, the audit log, and the listings the admin API shows (tags, artifacts).
//!
//! Every write here bumps [`MetaStore::auth_version`], so this process's caches of who may do
//! what drop what they hold at once; other processes rely on their cache's time limit.

use berth_core::access::{Actions, Role};
use sqlx::{AssertSqlSafe, Row};

use crate::{MetaError, MetaStore, Result, now_ms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub password_hash: Option<String>,
    pub source: String,
    pub admin: bool,
    pub disabled: bool,
    pub ldap_groups: Vec<String>,
    pub created_at: i64,
    /// Last change of password, flags or groups.
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    pub id: i64,
    pub name: String,
    pub public: bool,
    pub created_at: i64,
    /// Whether the project accepts sparse manifests; `None`: the registry's default.
    pub sparse_manifests: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// `user` or `group`.
    pub kind: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotRow {
    pub id: i64,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub description: String,
    pub expires_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    /// (project name, actions)
    pub permissions: Vec<(String, Actions)>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RepoSummary {
    pub name: String,
    pub tag_count: i64,
    pub artifact_count: i64,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    /// `user`, `robot`, `anonymous`.
    pub actor_kind: String,
    pub action: String,
    pub resource: String,
    pub source: String,
    /// `success` or `failure`.
    pub result: String,
    pub detail: String,
    /// How many occurrences the row stands for: pulls are aggregated per caller, source,
    /// artifact and minute; every other event is one row.
    pub count: i64,
}

/// Filters of an audit query; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Matches resources that start with this (a repository matches its tags and digests).
    pub resource: Option<String>,
    pub result: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only events with a smaller id (paging backwards from the newest).
    pub before: Option<i64>,
    pub limit: u32,
}

/// Why a create did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("already exists")]
    Exists,
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<sqlx::Error> for CreateError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => CreateError::Exists,
            _ => CreateError::Meta(MetaError::Db(e)),
        }
    }
}

fn user_from_row(r: &sqlx::any::AnyRow) -> Result<UserRow> {
    let groups: String = r.get("ldap_groups");
    Ok(UserRow {
        id: r.get("id"),
        name: r.get("name"),
        password_hash: r.get("password_hash"),
        source: r.get("source"),
        admin: r.get::<i64, _>("admin") != 0,
        disabled: r.get::<i64, _>("disabled") != 0,
        ldap_groups: serde_json::from_str(&groups)
            .map_err(|e| MetaError::Corrupt(format!("ldap_groups of a user: {e}")))?,
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

fn project_from_row(r: &sqlx::any::AnyRow) -> ProjectRow {
    ProjectRow {
        id: r.get("id"),
        name: r.get("name"),
        public: r.get::<i64, _>("public") != 0,
        created_at: r.get("created_at"),
        sparse_manifests: r.get::<Option<i64>, _>("sparse_manifests").map(|v| v != 0),
    }
}

fn role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| MetaError::Corrupt(format!("role {s:?}")))
}

const USER_COLUMNS: &str =
    "id, name, password_hash, source, admin, disabled, ldap_groups, created_at, updated_at";

impl MetaStore {
    /// Changes whenever identity or access data is written by this process.
    pub fn auth_version(&self) -> u64 {
        self.auth_version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// After an identity write committed: this process's caches drop at once; other nodes'
    /// caches drop when the notification reaches them (and, should this process die before it
    /// is sent, after `auth.cache_ttl`).
    pub(crate) fn auth_changed(&self) {
        self.auth_version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.cache.has_peers() {
            let (cache, pool) = (self.cache.clone(), self.write.clone());
            tokio::spawn(async move {
                if let Err(e) = cache.notify(&pool, crate::cache::NOTE_AUTH).await {
                    tracing::warn!(error = %e, "could not tell other nodes of an identity change");
                }
            });
        }
    }

    // ---- users ----

    pub async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.read)
            .await?)
    }

    pub async fn create_user(
        &self,
        name: &str,
        password_hash: Option<&str>,
        source: &str,
        admin: bool,
    ) -> Result<UserRow, CreateError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO users (name, password_hash, source, admin, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING {USER_COLUMNS}"
        )))
        .bind(name)
        .bind(password_hash)
        .bind(source)
        .bind(admin as i64)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.auth_changed();
        Ok(user_from_row(&row)?)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn list_users(&self) -> Result<Vec<UserRow>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY name"
        )))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Sets the flags given; false if there is no such user.
    pub async fn update_user(
        &self,
        name: &str,
        admin: Option<bool>,
        disabled: Option<bool>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE users SET admin = coalesce($2, admin), disabled = coalesce($3, disabled),
                              updated_at = $4
             WHERE name = $1",
        )
        .bind(name)
        .bind(admin.map(i64::from))
        .bind(disabled.map(i64::from))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        self.auth_changed();
        Ok(n > 0)
    }

    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE users SET password_hash = $2, updated_at = $3 WHERE name = $1 AND source = 'local'",
        )
        .bind(name)
        .bind(password_hash)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        self.auth_changed();
        Ok(n > 0)
    }

    /// Deletes a user and their memberships.
    pub async fn delete_user(&self, name: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM members WHERE kind = 'user' AND name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.auth_changed();
        Ok(n > 0)
    }

    /// Records an LDAP login: creates the user row on first sight and stores the groups seen
    /// now. A local user of the same name is never taken over.
    pub async fn upsert_ldap_user(&self, name: &str, groups: &[String]) -> Result<Option<UserRow>> {
        if let Some(u) = self.user_by_name(name).await? {
            if u.source != "ldap" {
                return Ok(None);
            }
            if u.ldap_groups == groups {
                // Nothing changed: no write, and the caches of who may do what stay warm.
                return Ok(Some(u));
            }
        }
        let now = now_ms();
        let groups = serde_json::to_string(groups).expect("a list of strings serializes");
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO users (name, source, ldap_groups, created_at, updated_at)
             VALUES ($1, 'ldap', $2, $3, $3)
             ON CONFLICT (name) DO UPDATE SET ldap_groups = excluded.ldap_groups,
                 updated_at = excluded.updated_at WHERE users.source = 'ldap'
             RETURNING {USER_COLUMNS}"
        )))
        .bind(name)
        .bind(groups)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        self.auth_changed();
        row.as_ref().map(user_from_row).transpose()
    }

    // ---- projects ----

    pub async fn project(&self, name: &str) -> Result<Option<ProjectRow>> {
        let row = sqlx::query(
            "SELECT id, name, public, created_at, sparse_manifests FROM projects WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.as_ref().map(project_from_row))
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectRow>> {
        let rows = sqlx::query(
            "SELECT id, name, public, created_at, sparse_manifests FROM projects ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(project_from_row).collect())
    }

    /// Creates a project, optionally with a first member (the user whose push created it).
    pub async fn create_project(
        &self,
        name: &str,
        public: bool,
        admin_member: Option<&str>,
    ) -> Result<ProjectRow, CreateError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO projects (name, public, created_at) VALUES ($1, $2, $3)
             RETURNING id, name, public, created_at, sparse_manifests",
        )
        .bind(name)
        .bind(public as i64)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let project = project_from_row(&row);
        if let Some(user) = admin_member {
            sqlx::query(
                "INSERT INTO members (project_id, kind, name, role) VALUES ($1, 'user', $2, 'admin')",
            )
            .bind(project.id)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.auth_changed();
        Ok(project)
    }

    pub async fn set_project_public(&self, name: &str, public: bool) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE projects SET public = $2 WHERE name = $1")
            .bind(name)
            .bind(public as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        self.auth_changed();
        Ok(n > 0)
    }

    /// Sets whether a project accepts sparse manifests (`None`: the registry's default).
    pub async fn set_project_sparse(&self, name: &str, sparse: Option<bool>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE projects SET sparse_manifests = $2 WHERE name = $1")
            .bind(name)
            .bind(sparse.map(i64::from))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn project_repositories(&self, project_id: i64) -> Result<Vec<RepoSummary>> {
        Ok(sqlx::query_as(
            "SELECT r.name,
                    (SELECT count(*) FROM tags t WHERE t.repo_id = r.id) AS tag_count,
                    (SELECT count(*) FROM manifests m WHERE m.repo_id = r.id) AS artifact_count
             FROM repositories r WHERE r.project_id = $1 ORDER BY r.name",
        )
        .bind(project_id)
        .fetch_all(&self.read)
        .await?)
    }

    // ---- members ----

    pub async fn members(&self, project_id: i64) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query(
            "SELECT kind, name, role FROM members WHERE project_id = $1 ORDER BY kind DESC, name",
        )
        .bind(project_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    kind: r.get(0),
                    name: r.get(1),
                    role: role(r.get::<&str, _>(2))?,
                })
            })
            .collect()
    }

    /// Adds a member or changes its role; true if it was new.
    pub async fn set_member(
        &self,
        project_id: i64,
        kind: &str,
        name: &str,
        role: Role,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let existed: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM members WHERE project_id = $1 AND kind = $2 AND name = $3",
        )
        .bind(project_id)
        .bind(kind)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO members (project_id, kind, name, role) VALUES ($1, $2, $3, $4)
             ON CONFLICT (project_id, kind, name) DO UPDATE SET role = excluded.role",
        )
        .bind(project_id)
        .bind(kind)
        .bind(name)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.auth_changed();
        Ok(existed.is_none())
    }

    pub async fn remove_member(&self, project_id: i64, kind: &str, name: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n =
            sqlx::query("DELETE FROM members WHERE project_id = $1 AND kind = $2 AND name = $3")
                .bind(project_id)
                .bind(kind)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        self.auth_changed();
        Ok(n > 0)
    }

    /// The best role a user holds in a project, directly or through one of `groups`.
    pub async fn best_role(
        &self,
        project_id: i64,
        user: &str,
        groups: &[String],
    ) -> Result<Option<Role>> {
        let groups_json = serde_json::to_string(groups).expect("a list of strings serializes");
        let rows: Vec<String> = sqlx::query_scalar(self.dialect.pick(
            "SELECT role FROM members WHERE project_id = $1
               AND ((kind = 'user' AND name = $2)
                 OR (kind = 'group' AND name IN (SELECT value FROM json_each($3))))",
            "SELECT role FROM members WHERE project_id = $1
               AND ((kind = 'user' AND name = $2)
                 OR (kind = 'group' AND name IN (SELECT json_array_elements_text(CAST($3 AS json)))))",
        ))
        .bind(project_id)
        .bind(user)
        .bind(groups_json)
        .fetch_all(&self.read)
        .await?;
        let mut best = None;
        for r in rows {
            best = best.max(Some(role(&r)?));
        }
        Ok(best)
    }

    // ---- robots ----

    pub async fn create_robot(
        &self,
        name: &str,
        secret_hash: &[u8],
        description: &str,
        expires_at: Option<i64>,
        created_by: &str,
        permissions: &[(String, Actions)],
    ) -> Result<RobotRow, CreateError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO robots (name, secret_hash, description, expires_at, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(name)
        .bind(secret_hash)
        .bind(description)
        .bind(expires_at)
        .bind(created_by)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        for (project, actions) in permissions {
            sqlx::query(
                "INSERT INTO robot_permissions (robot_id, project, actions) VALUES ($1, $2, $3)
                 ON CONFLICT (robot_id, project) DO UPDATE SET actions = excluded.actions",
            )
            .bind(id)
            .bind(project)
            .bind(actions.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.auth_changed();
        Ok(RobotRow {
            id,
            name: name.to_owned(),
            secret_hash: secret_hash.to_vec(),
            description: description.to_owned(),
            expires_at,
            created_by: created_by.to_owned(),
            created_at: now,
            permissions: permissions.to_vec(),
        })
    }

    async fn robot_where(&self, clause: &str, bind: RobotKey<'_>) -> Result<Option<RobotRow>> {
        let sql = format!(
            "SELECT id, name, secret_hash, description, expires_at, created_by, created_at
             FROM robots WHERE {clause}"
        );
        let q = sqlx::query(AssertSqlSafe(sql));
        let q = match bind {
            RobotKey::Id(id) => q.bind(id),
            RobotKey::Name(n) => q.bind(n),
        };
        let Some(r) = q.fetch_optional(&self.read).await? else {
            return Ok(None);
        };
        let id: i64 = r.get(0);
        Ok(Some(RobotRow {
            id,
            name: r.get(1),
            secret_hash: r.get(2),
            description: r.get(3),
            expires_at: r.get(4),
            created_by: r.get(5),
            created_at: r.get(6),
            permissions: self.robot_permissions(id).await?,
        }))
    }

    async fn robot_permissions(&self, id: i64) -> Result<Vec<(String, Actions)>> {
        let rows = sqlx::query(
            "SELECT project, actions FROM robot_permissions WHERE robot_id = $1 ORDER BY project",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), Actions::parse_list(r.get::<&str, _>(1))))
            .collect())
    }

    pub async fn robot_by_name(&self, name: &str) -> Result<Option<RobotRow>> {
        self.robot_where("name = $1", RobotKey::Name(name)).await
    }

    pub async fn robot_by_id(&self, id: i64) -> Result<Option<RobotRow>> {
        self.robot_where("id = $1", RobotKey::Id(id)).await
    }

    pub async fn list_robots(&self) -> Result<Vec<RobotRow>> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM robots ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.robot_by_id(id).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub async fn delete_robot(&self, name: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM robots WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        self.auth_changed();
        Ok(n > 0)
    }

    // ---- token keys ----

    /// Signing keys, newest first.
    pub async fn token_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let rows =
            sqlx::query("SELECT kid, secret FROM token_keys ORDER BY created_at DESC, kid DESC")
                .fetch_all(&self.read)
                .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Adds a signing key, newer than every key there: its `created_at` is now, or one past
    /// the newest key's when that is not earlier (two keys made in one millisecond would
    /// otherwise be ordered by their random kid, and a rotation might not sign).
    pub async fn add_token_key(&self, kid: &str, secret: &[u8]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO token_keys (kid, secret, created_at) \
             SELECT $1, $2, CASE WHEN COALESCE(MAX(created_at), 0) >= $3 \
             THEN MAX(created_at) + 1 ELSE $3 END FROM token_keys",
        )
        .bind(kid)
        .bind(secret)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- audit ----

    /// Writes a batch of events in one transaction (their `id` is assigned here), many rows
    /// per statement: a pull storm produces thousands of events a second.
    pub async fn insert_audit(&self, events: &[AuditEvent]) -> Result<()> {
        const ROWS_PER_STATEMENT: usize = 100;
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO audit_events (at, actor, actor_kind, action, resource, source, result, detail, count) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                let params: Vec<String> = (1..=9).map(|k| format!("${}", i * 9 + k)).collect();
                sql.push_str(&format!("({})", params.join(",")));
            }
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind(e.at)
                    .bind(&e.actor)
                    .bind(&e.actor_kind)
                    .bind(&e.action)
                    .bind(&e.resource)
                    .bind(&e.source)
                    .bind(&e.result)
                    .bind(&e.detail)
                    .bind(e.count);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Events matching the filter, newest first.
    pub async fn query_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
        Ok(sqlx::query_as(
            "SELECT id, at, actor, actor_kind, action, resource, source, result, detail, count
             FROM audit_events
             WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2)
               AND ($3 IS NULL OR substr(resource, 1, length($3)) = $3)
               AND ($4 IS NULL OR result = $4) AND ($5 IS NULL OR at >= $5)
               AND ($6 IS NULL OR at < $6) AND ($7 IS NULL OR id < $7)
             ORDER BY id DESC LIMIT $8",
        )
        .bind(&f.actor)
        .bind(&f.action)
        .bind(&f.resource)
        .bind(&f.result)
        .bind(f.since)
        .bind(f.until)
        .bind(f.before)
        .bind(f.limit as i64)
        .fetch_all(&self.read)
        .await?)
    }

    /// Removes events older than `before`, at most `limit` of them; returns how many.
    pub async fn prune_audit(&self, before: i64, limit: u32) -> Result<u64> {
        self.write_batch(
            "DELETE FROM audit_events WHERE id IN
               (SELECT id FROM audit_events WHERE at < $1 ORDER BY id LIMIT $2)",
            before,
            limit,
        )
        .await
    }

    // ---- listings for the admin API ----
}

enum RobotKey<'a> {
    Id(i64),
    Name(&'a str),
}
