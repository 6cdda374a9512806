//! The configuration tree. One TOML file, every key overridable by a `BERTH_` environment
//! variable (loaded by the binary), and defaults under which `berth serve` alone runs the
//! embedded mode in `./berth-data`. Unknown keys are refused by name.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way people write it: `"30s"`, `"24h"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?}: {e} (write e.g. \"30s\" or \"24h\")"
                ))
            })
    }
}

/// Sizes are written exactly (`4MiB`, `1025B`): bytesize's own form rounds (`1.0 KiB` for
/// 1025 bytes), and the effective configuration Berth prints must be the one that runs.
fn exact_size<S: Serializer>(size: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
    let n = size.as_u64();
    for (unit, name) in [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ] {
        if n >= unit && n.is_multiple_of(unit) {
            return s.serialize_str(&format!("{}{name}", n / unit));
        }
    }
    s.serialize_str(&format!("{n}B"))
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the embedded mode: blobs, upload staging and the SQLite database.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub registry: RegistryConfig,
    pub uploads: UploadsConfig,
    pub gc: GcConfig,
    pub scrub: ScrubConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub audit: AuditConfig,
    pub proxy: ProxyConfig,
    pub storage: StorageConfig,
    pub database: DatabaseConfig,
    pub jobs: JobsConfig,
    pub events: EventsConfig,
    pub scan: ScanConfig,
    pub vulndb: VulnDbConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./berth-data"),
            server: ServerConfig::default(),
            limits: LimitsConfig::default(),
            registry: RegistryConfig::default(),
            uploads: UploadsConfig::default(),
            gc: GcConfig::default(),
            scrub: ScrubConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            proxy: ProxyConfig::default(),
            storage: StorageConfig::default(),
            database: DatabaseConfig::default(),
            jobs: JobsConfig::default(),
            events: EventsConfig::default(),
            scan: ScanConfig::default(),
            vulndb: VulnDbConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// Upload sessions with no activity for this long are removed with their bytes by the
    /// next garbage collection run. A slow but live streamed upload keeps itself active.
    pub purge_after: HumanDuration,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            purge_after: HumanDuration(Duration::from_secs(24 * 3600)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UntaggedPolicy {
    /// Untagged manifests stay until deleted by digest.
    Keep,
    /// Untagged manifests are deleted `untagged_age` after they lost their last tag.
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Blobs uploaded, linked or touched (HEAD, GET, mount) less than this long ago are never
    /// collected, and a referrer pushed before its subject waits this long for it. Protects
    /// pushes in flight: a client that saw a blob exist may rely on it for this long.
    pub grace_period: HumanDuration,
    /// What happens to manifests that are neither tagged, nor listed by an index, nor
    /// referring to a live subject: "delete" (after `untagged_age`) or "keep".
    pub untagged: UntaggedPolicy,
    /// How long an untagged manifest is kept before it is deleted (with "delete").
    pub untagged_age: HumanDuration,
    /// When collection runs, as a cron expression (minute hour day month weekday, UTC).
    /// Empty disables the schedule; `berth gc` and the API still start runs.
    pub schedule: String,
    /// Most blob deletions per second against the blob store, so a run cannot starve pulls
    /// on slow disks or an S3 gateway. 0 means no limit.
    pub delete_rate: u32,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            grace_period: HumanDuration(Duration::from_secs(24 * 3600)),
            untagged: UntaggedPolicy::Delete,
            untagged_age: HumanDuration(Duration::from_secs(24 * 3600)),
            schedule: "*/10 * * * *".into(),
            delete_rate: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// When scrub runs (cron, UTC): it re-hashes every blob, reports corrupted and missing
    /// ones, and removes bytes the database does not know once they are older than the GC
    /// grace period. Empty disables the schedule.
    pub schedule: String,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            schedule: "0 4 * * 0".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// The URL clients reach the registry at (`https://registry.example.com`). When set,
    /// `Location` headers are absolute URLs under it; otherwise they are relative paths.
    pub external_url: Option<String>,
    /// PEM certificate chain for TLS. With `tls_key`, the listener speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// A client must send a request's complete headers within this time, counted from the
    /// moment its connection is accepted (or its previous response ended), or the connection is
    /// closed: HTTP/1 and HTTP/2 alike, and whether or not it sent a byte.
    pub header_read_timeout: HumanDuration,
    /// A keep-alive connection with no request for this long after its last response is closed.
    pub idle_timeout: HumanDuration,
    /// Connections open at once at most (fitted to the open-files limit, which Berth raises to
    /// its hard limit at start). At the cap the oldest idle connection is closed to make room;
    /// if none is idle, a new one is refused at once.
    pub max_connections: u32,
    /// Connections open at once from one client address (the TCP peer; IPv6 counts per /64)
    /// at most; more are refused at once. `trusted_proxies` are exempt.
    pub max_connections_per_address: u32,
    /// An upload body that sends nothing for this long is abandoned (its session stays and
    /// can be resumed). There is no total timeout on blob transfers.
    pub body_idle_timeout: HumanDuration,
    /// On SIGTERM, in-flight requests get this long to finish before connections are closed.
    pub shutdown_grace: HumanDuration,
    /// Load balancers and reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For`
    /// is believed: the client's address is then the last one in that header that is not a
    /// trusted proxy. It is what login throttling and the audit log see, so behind a proxy
    /// set it, or every client shares the proxy's address.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:5000".into(),
            external_url: None,
            tls_cert: None,
            tls_key: None,
            header_read_timeout: HumanDuration(Duration::from_secs(30)),
            idle_timeout: HumanDuration(Duration::from_secs(60)),
            max_connections: 10_000,
            max_connections_per_address: 512,
            body_idle_timeout: HumanDuration(Duration::from_secs(120)),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest manifest accepted on PUT (answered with 413 above it).
    #[serde(serialize_with = "exact_size")]
    pub manifest_max_size: ByteSize,
    /// Most entries one page of tags/list, _catalog or referrers returns; `n` above it is
    /// capped and the `Link` header points at the rest.
    pub page_max_entries: u32,
    /// Most blobs and child manifests one manifest may reference (a manifest is checked and
    /// stored in one transaction, which holds the database writer).
    pub manifest_max_references: u32,
    /// Memory that upload requests in flight may use for buffers, in all (each takes 1 MiB
    /// on the filesystem, two `storage.s3.part_size` on S3). Beyond it a new upload request
    /// waits a few seconds for room, then gets 429 with `Retry-After`.
    #[serde(serialize_with = "exact_size")]
    pub upload_buffer_memory: ByteSize,
    /// Repositories one project may hold at most.
    pub repositories_per_project: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            manifest_max_size: ByteSize::mib(4),
            page_max_entries: 10_000,
            manifest_max_references: 10_000,
            upload_buffer_memory: ByteSize::mib(512),
            repositories_per_project: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Whether blobs and manifests may be deleted through the API (405 UNSUPPORTED if not).
    pub delete_enabled: bool,
    /// Accept sparse manifests (distribution-spec): an index whose children, or a manifest
    /// whose layers, are not in the repository, as when one platform of a multi-arch image is
    /// mirrored under the index's digest. A pull of a missing part answers 404. A project's
    /// own setting (`sparse_manifests` in the admin API) overrides this.
    pub sparse_manifests: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            delete_enabled: true,
            sparse_manifests: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `berth_server=debug,info`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether callers must authenticate. `berth serve --no-auth` turns it off: anyone may
    /// push, pull and delete, and the admin API is open. For local experiments only.
    pub enabled: bool,
    /// The `service` of the token protocol: the audience of the tokens this registry issues.
    pub service: String,
    /// The token endpoint URL announced in `WWW-Authenticate`. Empty: `<external_url or the
    /// request's own host>/auth/token`.
    pub realm: String,
    /// How long an issued token is valid (at least 5 minutes: clients assume 60 s or more and
    /// some refresh only after `expires_in`).
    pub token_ttl: HumanDuration,
    /// How long a refresh token (asked for with `access_type=offline`) is valid.
    pub refresh_token_ttl: HumanDuration,
    /// A signed-in user (not a robot) who pushes to a project that does not exist creates it,
    /// private, as its project admin. Registry admins always may.
    pub auto_create_projects: bool,
    /// Password checks (argon2, about 19 MiB each) running at once at most.
    pub hash_concurrency: u32,
    /// Password checks waiting at most. Checks from addresses without failed logins go first;
    /// when the queue is full the longest-waiting check from an address with failures is
    /// refused with 429 (or the newcomer, if it comes from such an address), so a flood of
    /// guesses cannot delay a real login by more than this queue.
    pub hash_queue: u32,
    /// How long verified credentials and a caller's roles are cached. Changes made on this
    /// node apply at once; changes made by another process apply within this time.
    pub cache_ttl: HumanDuration,
    /// Failed logins from one (user, source address) within `failure_window` before that pair
    /// is refused with 429 until the window passes. A source address is throttled after four
    /// times as many failures over all user names. An IPv6 source counts by its /64 network.
    pub max_failures: u32,
    pub failure_window: HumanDuration,
    pub ldap: LdapConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            service: "berth".into(),
            realm: String::new(),
            token_ttl: HumanDuration(Duration::from_secs(15 * 60)),
            refresh_token_ttl: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
            auto_create_projects: false,
            hash_concurrency: 2,
            hash_queue: 16,
            cache_ttl: HumanDuration(Duration::from_secs(30)),
            max_failures: 5,
            failure_window: HumanDuration(Duration::from_secs(300)),
            ldap: LdapConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `ldap://host:389` or `ldaps://host:636`. Empty disables LDAP.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// PEM CA bundle to verify the LDAP server with (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// The service account that searches for users and groups.
    pub bind_dn: String,
    pub bind_password: String,
    /// Where users are searched, and the filter that finds one (`{username}` is replaced,
    /// escaped).
    pub user_base_dn: String,
    pub user_filter: String,
    /// Where groups are searched, and the filter that finds a user's groups (`{dn}` and
    /// `{username}` are replaced, escaped). Empty base: no groups.
    pub group_base_dn: String,
    pub group_filter: String,
    /// Members of this group (a DN) are registry admins.
    pub admin_group: String,
    /// A bind or search taking longer than this fails the login.
    pub timeout: HumanDuration,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: String::new(),
            starttls: false,
            ca_file: None,
            bind_dn: String::new(),
            bind_password: String::new(),
            user_base_dn: String::new(),
            user_filter: "(uid={username})".into(),
            group_base_dn: String::new(),
            group_filter: "(member={dn})".into(),
            admin_group: String::new(),
            timeout: HumanDuration(Duration::from_secs(5)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullAudit {
    /// Pull events go through the bounded, batched audit channel (dropped and counted when
    /// it is full).
    Batched,
    /// Pulls are not recorded.
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Whether manifest pulls are recorded: "batched" or "off".
    pub pulls: PullAudit,
    /// Pulls of one artifact by one caller from one address within this time are one row
    /// (with their count), written when the time is over.
    pub pull_bucket: HumanDuration,
    /// Events older than this are removed. 0 keeps everything.
    pub retention: HumanDuration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            pulls: PullAudit::Batched,
            pull_bucket: HumanDuration(Duration::from_secs(60)),
            retention: HumanDuration(Duration::from_secs(90 * 24 * 3600)),
        }
    }
}

/// Where metadata lives (`[database]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Empty: SQLite at `data_dir/berth.db` (the embedded mode). `postgres://user:password@
    /// host:5432/berth`: PostgreSQL, which several nodes can share.
    pub url: String,
    /// Connections this node opens at most (PostgreSQL).
    pub max_connections: u32,
    pub connect_timeout: HumanDuration,
    /// PostgreSQL's statement_timeout for every statement of this node.
    pub statement_timeout: HumanDuration,
    /// The connection that LISTENs for other nodes' cache invalidations; empty: `url`. Point
    /// it at PostgreSQL itself when `url` goes through PgBouncer in transaction mode.
    pub listen_url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: String::new(),
            max_connections: 16,
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            statement_timeout: HumanDuration(Duration::from_secs(30)),
            listen_url: String::new(),
        }
    }
}

impl DatabaseConfig {
    pub fn is_postgres(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

/// Whether `url` names a PostgreSQL server (the only database `database.url` may name).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The durable job queue (`[jobs]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// A running job whose node stops heartbeating (it died) is claimed again after this.
    pub lease: HumanDuration,
    /// How often an idle node looks for due schedules and queued jobs.
    pub poll_interval: HumanDuration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            lease: HumanDuration(Duration::from_secs(60)),
            poll_interval: HumanDuration(Duration::from_secs(5)),
        }
    }
}

/// The events outbox and its worker (`[events]`): every push, delete and tag change is
/// written as an event in its own transaction and handed on, in order, to each consumer
/// (webhooks and event-triggered replication).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// How often a node whose consumers are caught up looks for new events.
    pub poll_interval: HumanDuration,
    /// Events handed to a consumer at most at once.
    pub batch: u32,
    /// A node holds a consumer for this long past its last batch; when it dies, another node
    /// goes on after it.
    pub lease: HumanDuration,
    /// Events every consumer has passed are deleted once they are older than this.
    pub retention: HumanDuration,
}

/// The package inventory of an image (`berth-scan`): layers are read as streams, never
/// extracted, within these bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// A file read for its packages (a package database, a binary, a Java archive) is held in
    /// memory whole up to this size; a larger one is skipped and listed as skipped.
    #[serde(serialize_with = "exact_size")]
    pub max_file_size: ByteSize,
    /// A layer larger than this (as stored) is not read; the inventory lists it as skipped.
    #[serde(serialize_with = "exact_size")]
    pub max_layer_size: ByteSize,
    /// Bytes read from the archives nested in one Java archive at most (a zip bomb stops here).
    #[serde(serialize_with = "exact_size")]
    pub max_archive_size: ByteSize,
    /// Paths remembered across an image's layers (links, files that recorded packages) at
    /// most; past it the inventory fails.
    pub max_paths: u64,
    /// One inventory takes at most this long; past it, it fails.
    pub timeout: HumanDuration,
    /// Inventories read at once on a node at most; more wait their turn.
    pub concurrency: u32,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            max_file_size: ByteSize::mib(128),
            max_layer_size: ByteSize::gib(64),
            max_archive_size: ByteSize::mib(128),
            max_paths: 1_000_000,
            timeout: HumanDuration(Duration::from_secs(600)),
            concurrency: 1,
        }
    }
}

/// The vulnerability database (`berth vulndb import|sync|status`): where `sync` and the
/// schedule read from, and the bounds of an import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VulnDbConfig {
    /// What `berth vulndb sync` and the schedule import, in order: `https://` or `http://`
    /// URLs (osv.dev's `<Ecosystem>/all.zip` exports, the Debian tracker's JSON, Alpine secdb
    /// files, or the same on an internal mirror) and paths of files or directories (for sites
    /// with no network). Empty: nothing is synced (imports are by hand).
    pub sources: Vec<String>,
    /// Cron expression (UTC) of the scheduled sync; empty: none.
    pub schedule: String,
    /// A download larger than this fails (and nothing is imported).
    #[serde(serialize_with = "exact_size")]
    pub max_download_size: ByteSize,
    /// One download takes at most this long.
    pub download_timeout: HumanDuration,
    /// The largest single record (an OSV JSON file, a zip member uncompressed, an Alpine
    /// secdb file); a larger zip member is rejected and counted, the rest is imported.
    #[serde(serialize_with = "exact_size")]
    pub max_record_size: ByteSize,
    /// PEM file of CA certificates trusted for downloads (an internal mirror), beside the
    /// system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for VulnDbConfig {
    fn default() -> Self {
        VulnDbConfig {
            sources: Vec::new(),
            schedule: String::new(),
            max_download_size: ByteSize::gib(4),
            download_timeout: HumanDuration(Duration::from_secs(1800)),
            max_record_size: ByteSize::mib(32),
            ca_file: None,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            poll_interval: HumanDuration(Duration::from_secs(1)),
            batch: 100,
            lease: HumanDuration(Duration::from_secs(30)),
            retention: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Blobs under `data_dir/blobs`.
    Filesystem,
    /// Blobs in an S3-compatible bucket (`[storage.s3]`).
    S3,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where blob bytes live: "filesystem" or "s3".
    pub backend: StorageBackend,
    pub filesystem: FilesystemStorageConfig,
    pub s3: S3StorageConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Filesystem,
            filesystem: FilesystemStorageConfig::default(),
            s3: S3StorageConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemStorageConfig {
    /// Write large pieces of uploads with `O_DIRECT`, past the page cache (a filesystem that
    /// refuses it gets page-cache writes anyway). Off for NFS, where each direct write waits
    /// for the server.
    pub direct_writes: bool,
}

impl Default for FilesystemStorageConfig {
    fn default() -> Self {
        FilesystemStorageConfig {
            direct_writes: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3StorageConfig {
    pub bucket: String,
    pub region: String,
    /// A custom endpoint (MinIO, Ceph RGW, Garage): `https://s3.example.com:9000`. Empty: AWS.
    pub endpoint: String,
    /// Credentials; empty: the standard AWS environment (`AWS_ACCESS_KEY_ID`, ...).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most self-hosted servers need;
    /// false: virtual-host style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Every key starts with this (several registries can share a bucket).
    pub prefix: String,
    /// Size of the parts uploads are staged and assembled in (at least 5MiB, S3's minimum).
    #[serde(serialize_with = "exact_size")]
    pub part_size: ByteSize,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: bool,
    /// A PEM bundle of CA certificates to trust for the endpoint, beside the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A failed request (a 5xx, throttling, a lost connection) is retried at most this many
    /// times and for this long in all; then the client gets 503 with `Retry-After`.
    pub max_retries: u32,
    pub retry_timeout: HumanDuration,
    /// One request waits this long for the service's answer (its headers) at most; it also
    /// bounds the upload of one part.
    pub read_timeout: HumanDuration,
    /// Answer blob GETs with a redirect to a presigned URL of the object, so the bytes go from
    /// the bucket to the client directly.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    pub redirect_ttl: HumanDuration,
}

impl Default for S3StorageConfig {
    fn default() -> Self {
        S3StorageConfig {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: true,
            prefix: String::new(),
            part_size: ByteSize::mib(16),
            allow_http: false,
            ca_file: None,
            max_retries: 4,
            retry_timeout: HumanDuration(Duration::from_secs(30)),
            read_timeout: HumanDuration(Duration::from_secs(120)),
            redirect: false,
            redirect_ttl: HumanDuration(Duration::from_secs(15 * 60)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// A second listener for Docker's `registry-mirrors` (which names no upstream, so
    /// `/v2/library/nginx` there means `<mirror_project>/library/nginx`). Empty: none.
    pub mirror_listen: String,
    /// The proxy project the mirror listener serves.
    pub mirror_project: String,
    /// Proxy projects: pull-through caches of upstream registries.
    pub projects: Vec<ProxyProjectConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProjectConfig {
    /// The project's name in Berth: `<name>/library/nginx` pulls `library/nginx` upstream.
    pub name: String,
    /// The upstream registry's base URL, e.g. `https://registry-1.docker.io`.
    pub upstream: String,
    /// The registry host containerd names in `?ns=` when Berth is its mirror (`docker.io`);
    /// requests carrying it are served from this project. Empty: not a mirror target.
    pub namespace: String,
    /// Upstream credentials (empty: anonymous).
    pub username: String,
    pub password: String,
    /// PEM CA bundle for the upstream's TLS (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Anonymous callers may pull through this project.
    pub public: bool,
    /// A cached tag is served without asking upstream for this long; then it is revalidated
    /// with a HEAD (which Docker Hub does not count as a pull).
    pub tag_freshness: HumanDuration,
    /// One upstream request (headers, or a stall while streaming) may take this long.
    pub timeout: HumanDuration,
    /// Cached tags older than this (since they were cached or last changed upstream) are
    /// removed by garbage collection, which then collects what only they held; the next pull
    /// fetches them again. "0s" keeps the cache until an operator deletes from it.
    pub cache_max_age: HumanDuration,
}

impl Default for ProxyProjectConfig {
    fn default() -> Self {
        ProxyProjectConfig {
            name: String::new(),
            upstream: String::new(),
            namespace: String::new(),
            username: String::new(),
            password: String::new(),
            ca_file: None,
            public: false,
            tag_freshness: HumanDuration(Duration::from_secs(600)),
            timeout: HumanDuration(Duration::from_secs(30)),
            cache_max_age: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// An IP address or CIDR block (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpBlock {
    pub fn parse(s: &str) -> Option<IpBlock> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a.parse().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.trim().parse().ok()?, None),
        };
        let max = match addr {
            std::net::IpAddr::V4(_) => 32,
            std::net::IpAddr::V6(_) => 128,
        };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpBlock { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip.to_canonical()) {
            (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
                masked(u32::from(a) as u128, self.prefix, 32)
                    == masked(u32::from(b) as u128, self.prefix, 32)
            }
            (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => {
                masked(u128::from(a), self.prefix, 128) == masked(u128::from(b), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The client's address: the peer, or with trusted proxies in front, the address the
/// nearest untrusted hop is known by. `X-Forwarded-For` (values in order of appearance) is
/// walked from the right, as each proxy appends the address it received the request from:
/// the first hop that parses and is not a trusted proxy is the client. A hop that does not
/// parse (`1.2.3.4:5555`, `unknown`, garbage a client put there) ends the walk, and the client
/// is then the trusted hop that appended it: what lies left of it cannot be believed.
pub fn client_address(
    peer: std::net::IpAddr,
    forwarded_for: &[&str],
    trusted: &[IpBlock],
) -> std::net::IpAddr {
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|b| b.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for
        .iter()
        .rev()
        .flat_map(|v| v.rsplit(','))
        .map(str::trim)
    {
        let Ok(ip) = hop.parse::<std::net::IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

impl Config {
    /// Checks what serde cannot: values that must agree with each other or parse further.
    pub fn validate(&self) -> Result<(), String> {
        self.listen_addr()?;
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err("server.tls_cert and server.tls_key must be set together".into());
            }
            _ => {}
        }
        if let Some(url) = &self.server.external_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "server.external_url {url:?} must start with http:// or https://"
            ));
        }
        if self.limits.manifest_max_size.as_u64() < 1024 {
            return Err("limits.manifest_max_size must be at least 1KiB".into());
        }
        if self.limits.page_max_entries == 0 {
            return Err("limits.page_max_entries must be at least 1".into());
        }
        if self.limits.manifest_max_references == 0 {
            return Err("limits.manifest_max_references must be at least 1".into());
        }
        if self.limits.upload_buffer_memory.as_u64() < 1024 * 1024 {
            return Err("limits.upload_buffer_memory must be at least 1MiB".into());
        }
        if self.server.header_read_timeout.0.is_zero()
            || self.server.body_idle_timeout.0.is_zero()
            || self.server.idle_timeout.0.is_zero()
        {
            return Err("server timeouts must be greater than zero".into());
        }
        if self.server.max_connections == 0 || self.server.max_connections_per_address == 0 {
            return Err(
                "server.max_connections and server.max_connections_per_address must be at least 1"
                    .into(),
            );
        }
        if self.scan.concurrency == 0 || self.scan.max_paths == 0 || self.scan.timeout.0.is_zero() {
            return Err(
                "scan.concurrency, scan.max_paths and scan.timeout must be greater than zero"
                    .into(),
            );
        }
        if self.vulndb.max_record_size.as_u64() == 0 || self.vulndb.download_timeout.0.is_zero() {
            return Err(
                "vulndb.max_record_size and vulndb.download_timeout must be greater than zero"
                    .into(),
            );
        }
        if !self.vulndb.schedule.trim().is_empty() && self.vulndb.sources.is_empty() {
            return Err(
                "vulndb.schedule is set but vulndb.sources is empty: name what to sync".into(),
            );
        }
        if let Some(bad) = self.vulndb.sources.iter().find(|s| s.trim().is_empty()) {
            return Err(format!("vulndb.sources holds an empty entry ({bad:?})"));
        }
        if self.gc.grace_period.0 < self.uploads.purge_after.0 {
            return Err(format!(
                "gc.grace_period ({}) must not be shorter than uploads.purge_after ({}): a blob finished at the end \
                 of a long upload must outlive the session",
                self.gc.grace_period, self.uploads.purge_after
            ));
        }
        if self.storage.backend == StorageBackend::S3 {
            if self.storage.s3.bucket.is_empty() {
                return Err("storage.s3.bucket must be set when storage.backend = \"s3\"".into());
            }
            if self.storage.s3.part_size.as_u64() < 5 * 1024 * 1024 {
                return Err(
                    "storage.s3.part_size must be at least 5MiB (S3's minimum part)".into(),
                );
            }
            if self.storage.s3.read_timeout.0.is_zero() {
                return Err("storage.s3.read_timeout must be greater than zero".into());
            }
            let ttl = self.storage.s3.redirect_ttl.0;
            if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(7 * 24 * 3600) {
                return Err("storage.s3.redirect_ttl must be between 1s and 7days".into());
            }
        } else if self.storage.s3.redirect {
            return Err("storage.s3.redirect needs storage.backend = \"s3\"".into());
        }
        let db = &self.database;
        if db.is_postgres() {
            if !is_postgres_url(db.url.trim()) {
                return Err(
                    "database.url must be a postgres:// URL (or empty for SQLite in data_dir)"
                        .into(),
                );
            }
            if db.max_connections < 2 {
                return Err("database.max_connections must be at least 2".into());
            }
        }
        if self.jobs.lease.0 < Duration::from_secs(1) {
            return Err("jobs.lease must be at least 1s".into());
        }
        if self.jobs.poll_interval.0 < Duration::from_millis(100)
            || self.jobs.poll_interval.0 >= self.jobs.lease.0
        {
            return Err(
                "jobs.poll_interval must be at least 100ms and shorter than jobs.lease".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.proxy.projects {
            if p.name.is_empty() || p.name.contains('/') || p.name != p.name.to_lowercase() {
                return Err(format!(
                    "proxy.projects: {:?} is not a project name",
                    p.name
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("proxy.projects: {:?} is listed twice", p.name));
            }
            if !(p.upstream.starts_with("http://") || p.upstream.starts_with("https://")) {
                return Err(format!(
                    "proxy.projects {:?}: upstream {:?} must start with http:// or https://",
                    p.name, p.upstream
                ));
            }
        }
        if !self.proxy.mirror_listen.is_empty() {
            self.proxy
                .mirror_listen
                .parse::<SocketAddr>()
                .map_err(|e| format!("proxy.mirror_listen {:?}: {e}", self.proxy.mirror_listen))?;
            if !self
                .proxy
                .projects
                .iter()
                .any(|p| p.name == self.proxy.mirror_project)
            {
                return Err(format!(
                    "proxy.mirror_project {:?} must name one of proxy.projects",
                    self.proxy.mirror_project
                ));
            }
        }
        for p in &self.server.trusted_proxies {
            IpBlock::parse(p).ok_or_else(|| {
                format!("server.trusted_proxies: {p:?} is not an address or CIDR block")
            })?;
        }
        if self.auth.token_ttl.0 < Duration::from_secs(300) {
            return Err("auth.token_ttl must be at least 5m".into());
        }
        if self.auth.hash_concurrency == 0 || self.auth.max_failures == 0 {
            return Err("auth.hash_concurrency and auth.max_failures must be at least 1".into());
        }
        let ldap_url = &self.auth.ldap.url;
        if !(ldap_url.is_empty()
            || ldap_url.starts_with("ldap://")
            || ldap_url.starts_with("ldaps://"))
        {
            return Err(format!(
                "auth.ldap.url {:?} must start with ldap:// or ldaps://",
                self.auth.ldap.url
            ));
        }
        if !self.auth.ldap.url.is_empty() && self.auth.ldap.user_base_dn.is_empty() {
            return Err("auth.ldap.user_base_dn must be set when auth.ldap.url is".into());
        }
        if self.audit.pull_bucket.0 < Duration::from_secs(1) {
            return Err("audit.pull_bucket must be at least 1s".into());
        }
        if self.uploads.purge_after.0.is_zero() {
            return Err("uploads.purge_after must be greater than zero".into());
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.server.listen.parse().map_err(|e| {
            format!(
                "server.listen {:?} is not an address like 0.0.0.0:5000: {e}",
                self.server.listen
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let t = [
            IpBlock::parse("10.0.0.0/8").unwrap(),
            IpBlock::parse("::1").unwrap(),
        ];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_address(ip("1.2.3.4"), &["9.9.9.9"], &t),
            ip("1.2.3.4")
        );
        // Through a trusted proxy, the last untrusted hop is the client; a spoofed first
        // entry does not matter.
        assert_eq!(
            client_address(ip("10.0.0.5"), &["6.6.6.6, 5.5.5.5", "10.1.1.1"], &t),
            ip("5.5.5.5")
        );
        assert_eq!(client_address(ip("10.0.0.5"), &[], &t), ip("10.0.0.5"));
        assert_eq!(client_address(ip("::1"), &["7.7.7.7"], &t), ip("7.7.7.7"));
        assert!(IpBlock::parse("10.0.0.0/33").is_none());
        assert!(IpBlock::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(
            !IpBlock::parse("192.168.1.0/24")
                .unwrap()
                .contains(ip("192.168.2.1"))
        );
    }

    /// Review finding 5: a hop that does not parse must end the walk, never be skipped, or a
    /// client chooses its own address by putting it in front of garbage.
    #[test]
    fn forwarded_walk_stops_at_a_hop_that_does_not_parse() {
        let t = [IpBlock::parse("127.0.0.1").unwrap()];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let peer = ip("127.0.0.1");
        // The proxy appended 1.2.3.4:5555 (not a bare address): the client is the proxy.
        assert_eq!(
            client_address(peer, &["9.9.9.9, 1.2.3.4:5555"], &t),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_address(peer, &["9.9.9.9, unknown"], &t),
            ip("127.0.0.1")
        );
        // Through two trusted hops, the first hop that does not parse ends the walk at the
        // trusted hop that appended it.
        let t2 = [
            IpBlock::parse("10.0.0.0/8").unwrap(),
            IpBlock::parse("127.0.0.1").unwrap(),
        ];
        assert_eq!(
            client_address(peer, &["9.9.9.9, garbage, 10.0.0.7"], &t2),
            ip("10.0.0.7")
        );
        // The usual case still works: the rightmost untrusted address.
        assert_eq!(
            client_address(peer, &["9.9.9.9, 5.6.7.8"], &t),
            ip("5.6.7.8")
        );
        // An IPv6 hop in brackets or with a zone does not parse either.
        assert_eq!(
            client_address(peer, &["9.9.9.9, [::1]"], &t),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn defaults_validate() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen_addr().unwrap().port(), 5000);
        assert_eq!(c.limits.manifest_max_size.as_u64(), 4 * 1024 * 1024);
    }

    #[test]
    fn human_units_round_trip_through_json() {
        let c = Config::default();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"30s\""), "{json}");
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let d: HumanDuration = serde_json::from_str("\"1h 30m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(5400));
        assert!(serde_json::from_str::<HumanDuration>("\"soon\"").is_err());
    }

    /// Found by the `config` fuzz target: sizes were printed rounded ("1025 B" as "1.0 KiB"),
    /// so the effective configuration `berth config check` prints said something else than
    /// what runs. A printed configuration parses back to the same values.
    #[test]
    fn a_printed_configuration_parses_back_to_the_same() {
        let mut c = Config::default();
        c.limits.manifest_max_size = ByteSize::b(1025);
        c.limits.upload_buffer_memory = ByteSize::b(3 * 1024 * 1024 + 1);
        c.storage.s3.part_size = ByteSize::kib(5 * 1024 + 3);
        let text = toml::to_string_pretty(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = serde_json::from_str::<Config>(r#"{"server":{"lisen":"x"}}"#).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn half_tls_is_refused() {
        let mut c = Config::default();
        c.server.tls_cert = Some("/c.pem".into());
        assert!(c.validate().is_err());
    }
}
