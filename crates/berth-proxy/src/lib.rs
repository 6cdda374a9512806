//! The upstream side of the pull-through cache: a client for another registry's Distribution
//! API that does what real clients do. It answers a 401 with the bearer token dance
//! (realm/service/scope, with Basic credentials when configured) and caches tokens until
//! they expire, so a pull storm does not log in once per request (harbor#23750). It retries
//! connection errors and 5xx with backoff, never retries a 429 and passes its `Retry-After`
//! and message on, and bounds every request with a timeout. Docker Hub's official-image rule
//! (`nginx` is `library/nginx`) is applied here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::config::ProxyProjectConfig;
use berth_core::{Digest, Reference};
use bytes::Bytes;
use reqwest::{Method, StatusCode, header};

/// Attempts per upstream request for connection errors and 5xx.
const ATTEMPTS: u32 = 3;
/// First backoff; doubled per attempt.
const BACKOFF: Duration = Duration::from_millis(250);
/// Token lifetime assumed when the token server does not say (the spec's default is 60 s).
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
/// Manifests larger than this are refused from upstreams too.
const MANIFEST_LIMIT: usize = 4 << 20;

/// Why an upstream request failed. `NotFound` and `RateLimited` are answers; the others mean
/// the upstream could not be asked, and a cached copy may be served instead.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("not found upstream")]
    NotFound,
    #[error("the upstream registry is rate-limiting requests (429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("the upstream registry refused the credentials: {0}")]
    Unauthorized(String),
    #[error("the upstream registry answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the upstream registry is unreachable: {0}")]
    Unreachable(String),
    #[error("the upstream registry sent something invalid: {0}")]
    Invalid(String),
}

impl UpstreamError {
    /// A label for metrics: the status, or the kind of failure.
    pub fn label(&self) -> String {
        match self {
            UpstreamError::NotFound => "404".into(),
            UpstreamError::RateLimited { .. } => "429".into(),
            UpstreamError::Unauthorized(_) => "401".into(),
            UpstreamError::Status { status, .. } => status.to_string(),
            UpstreamError::Unreachable(_) => "unreachable".into(),
            UpstreamError::Invalid(_) => "invalid".into(),
        }
    }
}

pub type Result<T, E = UpstreamError> = std::result::Result<T, E>;

/// What a manifest HEAD told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
}

/// A manifest fetched and checked.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// One upstream registry.
pub struct Upstream {
    base: String,
    docker_hub: bool,
    creds: Option<(String, String)>,
    http: reqwest::Client,
    /// scope → (token, valid until)
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

fn unreachable(e: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(e.to_string())
}

/// The message of an OCI error body, or the body's start.
fn reason(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return "(no reason given)".into();
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|i| format!("{} {}", i.code, i.message).trim().to_owned())
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned(),
    }
}

/// Passes a success on; a 404 is `NotFound`, any other status an error with the body's reason.
async fn successful(resp: reqwest::Response) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    if status == StatusCode::NOT_FOUND {
        return Err(UpstreamError::NotFound);
    }
    let body = resp.bytes().await.unwrap_or_default();
    Err(UpstreamError::Status {
        status: status.as_u16(),
        message: reason(&body),
    })
}

fn retry_after(h: &header::HeaderMap) -> Option<Duration> {
    h.get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",...` challenge.
fn parse_challenge(v: &str) -> Option<(String, HashMap<String, String>)> {
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (val, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        params.insert(k.trim().to_ascii_lowercase(), val.to_owned());
        rest = tail.trim_start_matches([',', ' ']);
    }
    Some((scheme.to_ascii_lowercase(), params))
}

fn is_docker_hub(url: &str) -> bool {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    matches!(
        host,
        "docker.io" | "registry-1.docker.io" | "index.docker.io" | "registry.hub.docker.com"
    )
}

impl Upstream {
    pub fn new(cfg: &ProxyProjectConfig) -> Result<Upstream, String> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(cfg.timeout.0.min(Duration::from_secs(10)))
            .read_timeout(cfg.timeout.0)
            .user_agent(concat!(
                "berth/",
                env!("CARGO_PKG_VERSION"),
                " (pull-through cache)"
            ));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("proxy {}: ca_file {}: {e}", cfg.name, path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("proxy {}: ca_file {}: {e}", cfg.name, path.display()))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| format!("proxy {}: HTTP client: {e}", cfg.name))?;
        Ok(Upstream {
            base: cfg.upstream.trim_end_matches('/').to_owned(),
            docker_hub: is_docker_hub(&cfg.upstream),
            creds: (!cfg.username.is_empty()).then(|| (cfg.username.clone(), cfg.password.clone())),
            http,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The upstream's name for a repository path inside the proxy project.
    pub fn upstream_repo(&self, path: &str) -> String {
        if self.docker_hub && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        }
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        t.get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(tok, _)| tok.clone())
    }

    async fn fetch_token(&self, params: &HashMap<String, String>, scope: &str) -> Result<String> {
        let realm = params
            .get("realm")
            .ok_or_else(|| UpstreamError::Invalid("a Bearer challenge without realm".into()))?;
        let mut q: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = params.get("service") {
            q.push(("service", s));
        }
        let mut req = self.http.get(realm).query(&q);
        if let Some((u, p)) = &self.creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let h = resp.headers().clone();
        let body = resp.bytes().await.map_err(unreachable)?;
        match status {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(UpstreamError::RateLimited {
                    retry_after: retry_after(&h),
                    message: reason(&body),
                });
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(UpstreamError::Unauthorized(reason(&body)));
            }
            s => {
                return Err(UpstreamError::Status {
                    status: s.as_u16(),
                    message: format!("token endpoint: {}", reason(&body)),
                });
            }
        }
        #[derive(serde::Deserialize)]
        struct T {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let t: T = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Invalid(format!("token response: {e}")))?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| UpstreamError::Invalid("token response without a token".into()))?;
        let ttl = t
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_TTL);
        // Renew a little early so a token never expires between check and use.
        let until = Instant::now()
            + ttl
                .saturating_sub(Duration::from_secs(10))
                .max(Duration::from_secs(5));
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.to_owned(), (token.clone(), until));
        Ok(token)
    }

    /// Sends one request with authentication and retries. Returns the response of any status
    /// other than 401 (after one authentication round), 429 and 5xx (after the retries).
    async fn send(
        &self,
        method: Method,
        url: &str,
        repo: &str,
        accept: &[String],
    ) -> Result<reqwest::Response> {
        let scope = format!("repository:{repo}:pull");
        let mut attempt = 0;
        let mut authenticated_once = false;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), url);
            for a in accept {
                req = req.header(header::ACCEPT, a);
            }
            if let Some(t) = self.cached_token(&scope) {
                req = req.bearer_auth(t);
            } else if authenticated_once && let Some((u, p)) = &self.creds {
                req = req.basic_auth(u, Some(p));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(error = %e, url, attempt, "upstream request failed; retrying");
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
                    continue;
                }
                Err(e) => return Err(unreachable(e)),
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !authenticated_once {
                authenticated_once = true;
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                match challenge {
                    Some((scheme, params)) if scheme == "bearer" => {
                        self.tokens
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&scope);
                        self.fetch_token(&params, &scope).await?;
                    }
                    Some((scheme, _)) if scheme == "basic" && self.creds.is_some() => {}
                    _ => {
                        let body = resp.bytes().await.unwrap_or_default();
                        return Err(UpstreamError::Unauthorized(reason(&body)));
                    }
                }
                attempt -= 1;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let body = resp.bytes().await.unwrap_or_default();
                return Err(UpstreamError::Unauthorized(reason(&body)));
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let ra = retry_after(resp.headers());
                let body = resp.bytes().await.unwrap_or_default();
                return Err(UpstreamError::RateLimited {
                    retry_after: ra,
                    message: reason(&body),
                });
            }
            if status.is_server_error() {
                if attempt < ATTEMPTS {
                    tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
                    continue;
                }
                let body = resp.bytes().await.unwrap_or_default();
                return Err(UpstreamError::Status {
                    status: status.as_u16(),
                    message: reason(&body),
                });
            }
            return Ok(resp);
        }
    }

    fn manifest_url(&self, repo: &str, reference: &Reference) -> String {
        format!("{}/v2/{repo}/manifests/{reference}", self.base)
    }

    /// Asks for a manifest's digest without downloading it (Docker Hub does not count a HEAD
    /// as a pull).
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        accept: &[String],
    ) -> Result<ManifestHead> {
        let resp = self
            .send(
                Method::HEAD,
                &self.manifest_url(repo, reference),
                repo,
                accept,
            )
            .await?;
        let resp = successful(resp).await?;
        let h = resp.headers();
        Ok(ManifestHead {
            digest: h
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Digest::parse(v).ok()),
            media_type: h
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_owned()),
        })
    }

    /// Downloads a manifest and checks its digest (against the reference when it is one,
    /// else against `Docker-Content-Digest` when the upstream sends it).
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        accept: &[String],
    ) -> Result<FetchedManifest> {
        let resp = self
            .send(
                Method::GET,
                &self.manifest_url(repo, reference),
                repo,
                accept,
            )
            .await?;
        let resp = successful(resp).await?;
        if resp
            .content_length()
            .is_some_and(|n| n > MANIFEST_LIMIT as u64)
        {
            return Err(UpstreamError::Invalid("manifest larger than 4 MiB".into()));
        }
        let media_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let claimed = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if bytes.len() > MANIFEST_LIMIT {
            return Err(UpstreamError::Invalid("manifest larger than 4 MiB".into()));
        }
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => claimed,
        };
        let digest = match expected {
            Some(e) => {
                let actual = Digest::of(e.algorithm(), &bytes);
                if actual != e {
                    return Err(UpstreamError::Invalid(format!(
                        "manifest digest {actual} is not the {e} announced"
                    )));
                }
                e
            }
            None => Digest::of(berth_core::Algorithm::Sha256, &bytes),
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    fn blob_url(&self, repo: &str, digest: &Digest) -> String {
        format!("{}/v2/{repo}/blobs/{digest}", self.base)
    }

    /// The size of a blob upstream.
    pub async fn head_blob(&self, repo: &str, digest: &Digest) -> Result<u64> {
        let resp = self
            .send(Method::HEAD, &self.blob_url(repo, digest), repo, &[])
            .await?;
        successful(resp)
            .await?
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| UpstreamError::Invalid("blob HEAD without Content-Length".into()))
    }

    /// Starts a blob download; the caller streams the body (`bytes_stream`). Redirects (to a
    /// CDN, as Docker Hub answers) are followed without the credentials.
    pub async fn get_blob(&self, repo: &str, digest: &Digest) -> Result<reqwest::Response> {
        let resp = self
            .send(Method::GET, &self.blob_url(repo, digest), repo, &[])
            .await?;
        successful(resp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/nginx:pull");
        let (s, p) = parse_challenge(r#"Basic realm="x""#).unwrap();
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "x"));
        let (_, p) = parse_challenge("Bearer realm=http://a/t,service=s").unwrap();
        assert_eq!(
            (p["realm"].as_str(), p["service"].as_str()),
            ("http://a/t", "s")
        );
    }

    #[test]
    fn docker_hub_official_images_get_library() {
        let mut cfg = ProxyProjectConfig {
            name: "hub".into(),
            upstream: "https://registry-1.docker.io".into(),
            ..Default::default()
        };
        let up = Upstream::new(&cfg).unwrap();
        assert_eq!(up.upstream_repo("nginx"), "library/nginx");
        assert_eq!(up.upstream_repo("bitnami/nginx"), "bitnami/nginx");
        cfg.upstream = "https://ghcr.io".into();
        assert_eq!(Upstream::new(&cfg).unwrap().upstream_repo("nginx"), "nginx");
    }

    #[test]
    fn reasons_come_from_oci_errors() {
        assert_eq!(
            reason(br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#),
            "TOOMANYREQUESTS slow down"
        );
        assert_eq!(reason(b"plain text"), "plain text");
    }
}
