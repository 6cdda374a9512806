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
    /// A client must send a request's headers within this time, or the connection is closed.
    pub header_read_timeout: HumanDuration,
    /// An upload body that sends nothing for this long is abandoned (its session stays and
    /// can be resumed). There is no total timeout on blob transfers.
    pub body_idle_timeout: HumanDuration,
    /// On SIGTERM, in-flight requests get this long to finish before connections are closed.
    pub shutdown_grace: HumanDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:5000".into(),
            external_url: None,
            tls_cert: None,
            tls_key: None,
            header_read_timeout: HumanDuration(Duration::from_secs(30)),
            body_idle_timeout: HumanDuration(Duration::from_secs(120)),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest manifest accepted on PUT (answered with 413 above it).
    pub manifest_max_size: ByteSize,
    /// Most entries one page of tags/list, _catalog or referrers returns; `n` above it is
    /// capped and the `Link` header points at the rest.
    pub page_max_entries: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            manifest_max_size: ByteSize::mib(4),
            page_max_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Whether blobs and manifests may be deleted through the API (405 UNSUPPORTED if not).
    pub delete_enabled: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            delete_enabled: true,
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
        if self.server.header_read_timeout.0.is_zero() || self.server.body_idle_timeout.0.is_zero()
        {
            return Err("server timeouts must be greater than zero".into());
        }
        if self.gc.grace_period.0 < self.uploads.purge_after.0 {
            return Err(format!(
                "gc.grace_period ({}) must not be shorter than uploads.purge_after ({}): a blob finished at the end \
                 of a long upload must outlive the session",
                self.gc.grace_period, self.uploads.purge_after
            ));
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
