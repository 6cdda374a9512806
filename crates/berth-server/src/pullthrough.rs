//! The pull-through cache: proxy projects bound to upstream registries (docs/proxy.md).
//!
//! - Manifests by digest are cached forever; by tag they are served from the cache for the
//!   project's `tag_freshness`, then revalidated with a HEAD upstream. When the upstream is
//!   down or rate-limited, a cached tag is served anyway (stale-if-error).
//! - A blob miss is fetched once however many clients ask at the same time (single flight):
//!   the fetch writes a spool file while hashing, every waiting client streams from that file
//!   as it grows, and the last piece is published only after the digest verified, so no
//!   client ever completes a corrupt blob. The verified bytes are then stored like a pushed
//!   blob and the spool file goes away with its last reader.
//! - Upstream `Accept` lists are the client's plus every manifest type Berth stores, so an
//!   index is cached as an index and a client that cannot read indexes gets its platform's
//!   image from the cached index, as for pushed content.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::config::Config;
use berth_core::{Digest, Digester, ErrorCode, OciError, Reference, RepoName};
use berth_meta::{BlobRow, ManifestRow};
use berth_proxy::{Upstream, UpstreamError};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

/// Manifest types every upstream request accepts besides the client's.
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Spool reads and client chunks.
const CHUNK: usize = 1 << 20;

pub struct ProxyProject {
    pub name: String,
    pub namespace: String,
    pub freshness: Duration,
    pub public: bool,
    pub upstream: Upstream,
}

#[derive(Default)]
pub struct ProxyMetrics {
    pub manifest_hits: AtomicU64,
    pub manifest_misses: AtomicU64,
    pub blob_hits: AtomicU64,
    pub blob_misses: AtomicU64,
    pub upstream_bytes: AtomicU64,
    pub cache_served_bytes: AtomicU64,
    pub stale_served: AtomicU64,
    pub upstream_errors: Mutex<BTreeMap<String, u64>>,
}

impl ProxyMetrics {
    fn error(&self, e: &UpstreamError) {
        *self
            .upstream_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(e.label())
            .or_default() += 1;
    }
}

#[derive(Clone, Debug)]
enum FetchState {
    Starting,
    /// `published` bytes of `size` may be sent; the last piece waits for verification.
    Streaming {
        size: u64,
        published: u64,
    },
    Done {
        size: u64,
    },
    Failed(FetchFailure),
}

/// Why an upstream fetch failed: whether the upstream does not have the blob (a 404 to the
/// client), and what to say.
#[derive(Debug, Clone)]
struct FetchFailure {
    not_found: bool,
    message: String,
}

impl From<String> for FetchFailure {
    fn from(message: String) -> Self {
        FetchFailure {
            not_found: false,
            message,
        }
    }
}

/// One upstream blob download that any number of clients stream from.
struct Fetch {
    spool: PathBuf,
    state: watch::Sender<FetchState>,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        // The last reader is gone: nobody reads the spool file any more.
        let _ = std::fs::remove_file(&self.spool);
    }
}

pub struct PullThrough {
    projects: HashMap<String, Arc<ProxyProject>>,
    namespaces: HashMap<String, String>,
    spool_dir: PathBuf,
    fetches: Mutex<HashMap<(String, Digest), Arc<Fetch>>>,
    /// (repository, tag) → when the tag was last confirmed upstream, on this node.
    validated: Mutex<HashMap<(String, String), Instant>>,
    pub metrics: ProxyMetrics,
}

fn upstream_error(project: &str, e: &UpstreamError) -> ApiError {
    let msg = format!("pull-through cache {project}: {e}");
    match e {
        UpstreamError::NotFound => ApiError::oci(ErrorCode::ManifestUnknown, msg),
        UpstreamError::RateLimited { retry_after, .. } => {
            let err = OciError::new(ErrorCode::TooManyRequests, msg);
            match retry_after {
                Some(ra) => ApiError::WithHeaders(
                    err,
                    vec![(
                        axum::http::header::RETRY_AFTER,
                        axum::http::HeaderValue::from(ra.as_secs()),
                    )],
                ),
                None => ApiError::Oci(err),
            }
        }
        // Registries answer 401 for a repository that does not exist as for one the
        // credentials may not read (Docker Hub: "repository does not exist or may require
        // authorization"), so neither is a fault of the upstream.
        UpstreamError::Unauthorized(_) => ApiError::Oci(
            OciError::new(
                ErrorCode::NameUnknown,
                format!("{msg} (the repository may not exist upstream, or the proxy's credentials may not read it)"),
            )
            .with_status(404),
        ),
        _ => ApiError::Oci(OciError::new(ErrorCode::Internal, msg).with_status(502)),
    }
}

impl PullThrough {
    pub fn new(config: &Config) -> Result<PullThrough, String> {
        let mut projects = HashMap::new();
        let mut namespaces = HashMap::new();
        for p in &config.proxy.projects {
            let upstream = Upstream::new(p)?;
            if !p.namespace.is_empty() {
                namespaces.insert(p.namespace.clone(), p.name.clone());
            }
            projects.insert(
                p.name.clone(),
                Arc::new(ProxyProject {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    freshness: p.tag_freshness.0,
                    public: p.public,
                    upstream,
                }),
            );
        }
        // Spool files are only ever read by the fetch that wrote them: what a previous process
        // left behind (killed mid-fetch) is garbage.
        let spool_dir = config.data_dir.join("proxy-spool");
        if spool_dir.exists() {
            let _ = std::fs::remove_dir_all(&spool_dir);
        }
        Ok(PullThrough {
            projects,
            namespaces,
            spool_dir,
            fetches: Mutex::new(HashMap::new()),
            validated: Mutex::new(HashMap::new()),
            metrics: ProxyMetrics::default(),
        })
    }

    pub fn projects(&self) -> impl Iterator<Item = &Arc<ProxyProject>> {
        self.projects.values()
    }

    /// The proxy project a repository belongs to, if any.
    pub fn project_of(&self, repo: &RepoName) -> Option<&Arc<ProxyProject>> {
        if self.projects.is_empty() {
            return None;
        }
        self.projects.get(repo.project())
    }

    /// The proxy project serving containerd's `?ns=` value.
    pub fn project_for_namespace(&self, ns: &str) -> Option<&str> {
        self.namespaces.get(ns).map(String::as_str)
    }

    fn fresh(&self, repo: &RepoName, tag: &str, freshness: Duration) -> bool {
        self.validated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(repo.as_str().to_owned(), tag.to_owned()))
            .is_some_and(|t| t.elapsed() < freshness)
    }

    fn mark_fresh(&self, repo: &RepoName, tag: &str) {
        let mut v = self.validated.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() > 100_000 {
            v.clear();
        }
        v.insert((repo.as_str().to_owned(), tag.to_owned()), Instant::now());
    }
}

/// The repository path upstream: the name without its proxy project.
fn upstream_path(p: &ProxyProject, name: &RepoName) -> ApiResult<String> {
    let rest = name
        .as_str()
        .strip_prefix(&format!("{}/", p.name))
        .ok_or_else(|| {
            ApiError::oci(
                ErrorCode::NameUnknown,
                format!("{name} names the proxy project itself, not a repository in it"),
            )
        })?;
    Ok(p.upstream.upstream_repo(rest))
}

fn upstream_accept(client: &[String]) -> Vec<String> {
    let mut out: Vec<String> = client
        .iter()
        .filter(|a| a.as_str() != "*/*")
        .cloned()
        .collect();
    for t in MANIFEST_TYPES {
        if !out.iter().any(|a| a == t) {
            out.push(t.to_owned());
        }
    }
    out
}

async fn local_tag(reg: &Registry, name: &RepoName, tag: &str) -> ApiResult<Option<Digest>> {
    Ok(match reg.meta.repo_id(name).await? {
        Some(repo) => reg.meta.resolve_tag(repo, tag).await?,
        None => None,
    })
}

/// A manifest GET/HEAD in a proxy project.
pub async fn get_manifest(
    reg: &Registry,
    p: &ProxyProject,
    name: &RepoName,
    reference: &Reference,
    accept: &[String],
) -> ApiResult<Arc<ManifestRow>> {
    let px = &reg.proxy;
    let path = upstream_path(p, name)?;
    let up_accept = upstream_accept(accept);
    match reference {
        Reference::Digest(d) => {
            match reg.get_manifest(name, reference, accept).await {
                Ok(row) => {
                    px.metrics.manifest_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(row);
                }
                Err(ApiError::Oci(e))
                    if e.code == ErrorCode::ManifestUnknown || e.code == ErrorCode::NameUnknown => {
                }
                Err(e) => return Err(e),
            }
            px.metrics.manifest_misses.fetch_add(1, Ordering::Relaxed);
            let m = p
                .upstream
                .get_manifest(&path, reference, &up_accept)
                .await
                .map_err(|e| {
                    px.metrics.error(&e);
                    upstream_error(&p.name, &e)
                })?;
            if &m.digest != d {
                return Err(ApiError::oci(
                    ErrorCode::ManifestInvalid,
                    format!(
                        "pull-through cache {}: upstream sent {} for {d}",
                        p.name, m.digest
                    ),
                ));
            }
            reg.put_upstream_manifest(name, d, None, Some(&m.media_type), m.bytes.to_vec())
                .await?;
            reg.get_manifest(name, reference, accept).await
        }
        Reference::Tag(t) => {
            let tag = t.as_str();
            let cached = local_tag(reg, name, tag).await?;
            if cached.is_some() && px.fresh(name, tag, p.freshness) {
                px.metrics.manifest_hits.fetch_add(1, Ordering::Relaxed);
                return reg.get_manifest(name, reference, accept).await;
            }
            // Only a cached tag is revalidated with a HEAD (free on Docker Hub); a tag never
            // seen is fetched at once.
            let head = match &cached {
                None => None,
                Some(_) => match p.upstream.head_manifest(&path, reference, &up_accept).await {
                    Ok(h) => Some(h),
                    Err(UpstreamError::NotFound) => {
                        px.metrics.error(&UpstreamError::NotFound);
                        return Err(tag_not_upstream(p, &path, tag));
                    }
                    Err(e) => return stale(reg, p, name, reference, accept, &e).await,
                },
            };
            if let (Some(c), Some(h)) = (&cached, head.as_ref().and_then(|h| h.digest.as_ref()))
                && c == h
            {
                px.mark_fresh(name, tag);
                px.metrics.manifest_hits.fetch_add(1, Ordering::Relaxed);
                return reg.get_manifest(name, reference, accept).await;
            }
            px.metrics.manifest_misses.fetch_add(1, Ordering::Relaxed);
            // Fetch by the digest the HEAD named when there is one, so the tag and the bytes
            // cannot disagree if it moves in between.
            let fetch_ref = head
                .and_then(|h| h.digest)
                .map(Reference::Digest)
                .unwrap_or_else(|| reference.clone());
            let m = match p.upstream.get_manifest(&path, &fetch_ref, &up_accept).await {
                Ok(m) => m,
                Err(UpstreamError::NotFound) if cached.is_none() => {
                    px.metrics.error(&UpstreamError::NotFound);
                    return Err(tag_not_upstream(p, &path, tag));
                }
                Err(e) if cached.is_some() => {
                    return stale(reg, p, name, reference, accept, &e).await;
                }
                Err(e) => {
                    px.metrics.error(&e);
                    return Err(upstream_error(&p.name, &e));
                }
            };
            reg.put_upstream_manifest(
                name,
                &m.digest,
                Some(tag),
                Some(&m.media_type),
                m.bytes.to_vec(),
            )
            .await?;
            px.mark_fresh(name, tag);
            reg.get_manifest(name, reference, accept).await
        }
    }
}

fn tag_not_upstream(p: &ProxyProject, path: &str, tag: &str) -> ApiError {
    ApiError::Oci(
        OciError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "{path}:{tag} is not known to the upstream of proxy project {}",
                p.name
            ),
        )
        .with_detail(serde_json::json!({ "reference": tag })),
    )
}

/// Serves the cached manifest of a tag the upstream could not confirm (stale-if-error).
async fn stale(
    reg: &Registry,
    p: &ProxyProject,
    name: &RepoName,
    reference: &Reference,
    accept: &[String],
    e: &UpstreamError,
) -> ApiResult<Arc<ManifestRow>> {
    reg.proxy.metrics.error(e);
    reg.proxy
        .metrics
        .stale_served
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(project = %p.name, repo = %name, %reference, error = %e,
        "upstream unavailable; serving the cached manifest (stale-if-error)");
    reg.get_manifest(name, reference, accept).await
}

/// A blob in a proxy project, as the blob handler serves it.
pub enum ProxyBlob {
    /// Stored here (maybe just linked from another repository of the project).
    Local(BlobRow),
    /// Only its size is known (a HEAD miss answered by the upstream).
    Remote { size: u64 },
    /// Being fetched: the size and the bytes as they verify.
    Streaming {
        size: u64,
        body: berth_storage::ByteStream,
    },
}

/// A blob GET/HEAD in a proxy project.
pub async fn get_blob(
    reg: &Arc<Registry>,
    p: &Arc<ProxyProject>,
    name: &RepoName,
    digest: &Digest,
    head: bool,
) -> ApiResult<ProxyBlob> {
    let px = &reg.proxy;
    match reg.stat_blob(name, digest).await {
        Ok(row) => {
            px.metrics.blob_hits.fetch_add(1, Ordering::Relaxed);
            if !head {
                px.metrics
                    .cache_served_bytes
                    .fetch_add(row.size, Ordering::Relaxed);
            }
            return Ok(ProxyBlob::Local(row));
        }
        Err(ApiError::Oci(e)) if e.code == ErrorCode::BlobUnknown => {}
        Err(e) => return Err(e),
    }
    // Another repository of the project may hold it: link it instead of fetching again.
    let prefix = format!("{}/", p.name);
    if reg
        .meta
        .repos_with_blob(digest)
        .await?
        .iter()
        .any(|r| r.starts_with(&prefix))
        && reg.meta.link_blob(name, digest).await?
        && let Ok(row) = reg.stat_blob(name, digest).await
    {
        px.metrics.blob_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(ProxyBlob::Local(row));
    }
    px.metrics.blob_misses.fetch_add(1, Ordering::Relaxed);
    let path = upstream_path(p, name)?;
    if head {
        let size = p.upstream.head_blob(&path, digest).await.map_err(|e| {
            px.metrics.error(&e);
            blob_upstream_error(&p.name, digest, &e)
        })?;
        return Ok(ProxyBlob::Remote { size });
    }
    let fetch = join_fetch(reg, p, name, digest, path)?;
    let mut rx = fetch.state.subscribe();
    let size = loop {
        let state = rx.borrow_and_update().clone();
        match state {
            FetchState::Starting => {}
            FetchState::Streaming { size, .. } | FetchState::Done { size } => break size,
            FetchState::Failed(f) if f.not_found => {
                return Err(blob_upstream_error(
                    &p.name,
                    digest,
                    &UpstreamError::NotFound,
                ));
            }
            FetchState::Failed(f) => {
                return Err(ApiError::Oci(
                    OciError::new(ErrorCode::BlobUnknown, f.message).with_status(502),
                ));
            }
        }
        if rx.changed().await.is_err() {
            return Err(ApiError::oci(
                ErrorCode::Internal,
                "the upstream fetch ended",
            ));
        }
    };
    Ok(ProxyBlob::Streaming {
        size,
        body: spool_stream(fetch, rx),
    })
}

fn blob_upstream_error(project: &str, digest: &Digest, e: &UpstreamError) -> ApiError {
    match e {
        UpstreamError::NotFound => ApiError::Oci(
            OciError::new(
                ErrorCode::BlobUnknown,
                "blob unknown to registry and its upstream",
            )
            .with_detail(serde_json::json!({ "digest": digest.to_string() })),
        ),
        other => upstream_error(project, other),
    }
}

/// The running fetch of `digest` for the project, or a new one.
fn join_fetch(
    reg: &Arc<Registry>,
    p: &Arc<ProxyProject>,
    name: &RepoName,
    digest: &Digest,
    path: String,
) -> ApiResult<Arc<Fetch>> {
    let key = (p.name.clone(), digest.clone());
    let mut fetches = reg.proxy.fetches.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = fetches.get(&key) {
        return Ok(f.clone());
    }
    std::fs::create_dir_all(&reg.proxy.spool_dir)
        .map_err(|e| berth_storage::StorageError::io("creating the proxy spool directory", e))?;
    let (tx, _) = watch::channel(FetchState::Starting);
    let fetch = Arc::new(Fetch {
        spool: reg
            .proxy
            .spool_dir
            .join(uuid::Uuid::new_v4().simple().to_string()),
        state: tx,
    });
    fetches.insert(key.clone(), fetch.clone());
    drop(fetches);
    let (reg, p, name, digest) = (reg.clone(), p.clone(), name.clone(), digest.clone());
    let task_fetch = fetch.clone();
    tokio::spawn(async move {
        let result = run_fetch(&reg, &p, &name, &digest, &path, &task_fetch).await;
        if let Err(f) = &result {
            if !f.not_found {
                tracing::warn!(project = %p.name, repo = %name, %digest, error = %f.message, "upstream blob fetch failed");
            }
            task_fetch.state.send_replace(FetchState::Failed(f.clone()));
        }
        reg.proxy
            .fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    });
    Ok(fetch)
}

async fn run_fetch(
    reg: &Registry,
    p: &ProxyProject,
    name: &RepoName,
    digest: &Digest,
    path: &str,
    fetch: &Fetch,
) -> Result<(), FetchFailure> {
    let px = &reg.proxy;
    let resp = p.upstream.get_blob(path, digest).await.map_err(|e| {
        px.metrics.error(&e);
        FetchFailure {
            not_found: matches!(e, UpstreamError::NotFound),
            message: format!("pull-through cache {}: {e}", p.name),
        }
    })?;
    let size = resp.content_length().ok_or_else(|| {
        format!(
            "pull-through cache {}: upstream sent no Content-Length",
            p.name
        )
    })?;
    let mut file = tokio::fs::File::create(&fetch.spool)
        .await
        .map_err(|e| format!("spool file: {e}"))?;
    fetch
        .state
        .send_replace(FetchState::Streaming { size, published: 0 });
    let mut hasher = Digester::new(digest.algorithm());
    let mut written = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes =
            chunk.map_err(|e| format!("pull-through cache {}: upstream stream: {e}", p.name))?;
        if written + chunk.len() as u64 > size {
            return Err(format!(
                "pull-through cache {}: upstream sent more than {size} bytes",
                p.name
            )
            .into());
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("spool file: {e}"))?;
        hasher.update(&chunk);
        // Publish what was written before this piece: the last piece waits for the digest.
        let published = written;
        written += chunk.len() as u64;
        px.metrics
            .upstream_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        fetch
            .state
            .send_replace(FetchState::Streaming { size, published });
    }
    file.flush().await.map_err(|e| format!("spool file: {e}"))?;
    drop(file);
    if written != size {
        return Err(format!(
            "pull-through cache {}: upstream stream ended at {written} of {size} bytes",
            p.name
        )
        .into());
    }
    let actual = hasher.finish();
    if &actual != digest {
        return Err(format!(
            "pull-through cache {}: upstream bytes hash to {actual}, not {digest}; not cached",
            p.name
        )
        .into());
    }
    fetch.state.send_replace(FetchState::Done { size });
    // Store it like a pushed blob (hashed again on the way in: the store trusts nobody).
    let f = tokio::fs::File::open(&fetch.spool)
        .await
        .map_err(|e| format!("spool file: {e}"))?;
    let body: berth_storage::ByteStream =
        Box::pin(tokio_util::io::ReaderStream::with_capacity(f, CHUNK));
    if let Err(e) = reg.monolithic_upload(name, digest, Some(size), body).await {
        tracing::warn!(repo = %name, %digest, error = %e, "caching an upstream blob failed");
    }
    Ok(())
}

/// Streams the spool file to one client as the fetch publishes it.
fn spool_stream(fetch: Arc<Fetch>, rx: watch::Receiver<FetchState>) -> berth_storage::ByteStream {
    struct S {
        fetch: Arc<Fetch>,
        rx: watch::Receiver<FetchState>,
        file: Option<tokio::fs::File>,
        offset: u64,
    }
    let state = S {
        fetch,
        rx,
        file: None,
        offset: 0,
    };
    Box::pin(futures_util::stream::unfold(Some(state), |st| async move {
        let mut st = st?;
        loop {
            let (avail, done) = match st.rx.borrow_and_update().clone() {
                FetchState::Starting => (0, false),
                FetchState::Streaming { published, .. } => (published, false),
                FetchState::Done { size } => (size, true),
                FetchState::Failed(f) => {
                    return Some((Err(std::io::Error::other(f.message)), None));
                }
            };
            if st.offset < avail {
                if st.file.is_none() {
                    match tokio::fs::File::open(&st.fetch.spool).await {
                        Ok(f) => st.file = Some(f),
                        Err(e) => return Some((Err(e), None)),
                    }
                }
                let file = st.file.as_mut()?;
                let want = (avail - st.offset).min(CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                let r = async {
                    file.seek(std::io::SeekFrom::Start(st.offset)).await?;
                    file.read_exact(&mut buf).await?;
                    Ok::<_, std::io::Error>(())
                }
                .await;
                if let Err(e) = r {
                    return Some((Err(e), None));
                }
                st.offset += want as u64;
                return Some((Ok(Bytes::from(buf)), Some(st)));
            }
            if done {
                return None;
            }
            if st.rx.changed().await.is_err() {
                return Some((Err(std::io::Error::other("the upstream fetch ended")), None));
            }
        }
    }))
}

/// Makes sure every proxy project exists with the configured visibility.
pub async fn ensure_projects(reg: &Registry) -> Result<(), berth_meta::MetaError> {
    for p in reg.proxy.projects() {
        match reg.meta.project(&p.name).await? {
            Some(row) if row.public == p.public => {}
            Some(_) => {
                reg.meta.set_project_public(&p.name, p.public).await?;
            }
            None => match reg.meta.create_project(&p.name, p.public, None).await {
                Ok(_) | Err(berth_meta::CreateError::Exists) => {}
                Err(berth_meta::CreateError::Meta(e)) => return Err(e),
            },
        }
    }
    Ok(())
}

/// Prometheus lines for the cache.
pub fn metrics_text(m: &ProxyMetrics) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP berth_proxy_hits_total Pull-through requests served from the cache.\n# TYPE berth_proxy_hits_total counter\nberth_proxy_hits_total{{kind=\"manifest\"}} {}\nberth_proxy_hits_total{{kind=\"blob\"}} {}",
        l(&m.manifest_hits),
        l(&m.blob_hits)
    );
    let _ = writeln!(
        out,
        "# HELP berth_proxy_misses_total Pull-through requests that went upstream.\n# TYPE berth_proxy_misses_total counter\nberth_proxy_misses_total{{kind=\"manifest\"}} {}\nberth_proxy_misses_total{{kind=\"blob\"}} {}",
        l(&m.manifest_misses),
        l(&m.blob_misses)
    );
    for (name, help, v) in [
        (
            "berth_proxy_upstream_bytes_total",
            "Blob bytes fetched from upstreams.",
            l(&m.upstream_bytes),
        ),
        (
            "berth_proxy_cache_served_bytes_total",
            "Blob bytes served from the cache.",
            l(&m.cache_served_bytes),
        ),
        (
            "berth_proxy_stale_served_total",
            "Cached manifests served because the upstream failed.",
            l(&m.stale_served),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP berth_proxy_upstream_errors_total Failed upstream requests by status.\n# TYPE berth_proxy_upstream_errors_total counter"
    );
    for (status, n) in m
        .upstream_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        let _ = writeln!(
            out,
            "berth_proxy_upstream_errors_total{{status=\"{status}\"}} {n}"
        );
    }
    out
}
