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
//!
//! The cache knows the registry it fills only through [`LocalStore`]: what is stored here
//! already, and storing what was fetched.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::config::Config;
use berth_core::{Digest, Digester, Reference, RepoName};
use berth_meta::{BlobRow, ManifestRow, MetaStore};
use berth_proxy::{Upstream, UpstreamError};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::{Error, Result};

/// What the cache needs of the registry it fills. The registry implements it; the cache knows
/// nothing else of it.
#[async_trait::async_trait]
pub trait LocalStore: Send + Sync + 'static {
    /// The stored manifest for `reference`, honouring `Accept`.
    async fn local_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        accept: &[String],
    ) -> Result<Arc<ManifestRow>>;
    /// The digest a tag points at here.
    async fn local_tag(&self, name: &RepoName, tag: &str) -> Result<Option<Digest>>;
    /// Stores a manifest fetched from upstream (its parts need not be here).
    async fn store_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        tag: Option<&str>,
        media_type: &str,
        payload: Vec<u8>,
    ) -> Result<()>;
    /// The blob as `name` sees it, if it holds it.
    async fn local_blob(&self, name: &RepoName, digest: &Digest) -> Result<Option<BlobRow>>;
    /// Links a blob that another repository of the project holds into `name`.
    async fn link_from_project(
        &self,
        name: &RepoName,
        digest: &Digest,
        project: &str,
    ) -> Result<bool>;
    /// Stores a blob fetched from upstream (hashed again on the way in).
    async fn store_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        size: u64,
        body: berth_storage::ByteStream,
    ) -> Result<()>;
}

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

/// The running blob fetches, by project and digest.
type Fetches = Mutex<HashMap<(String, Digest), Arc<Fetch>>>;

pub struct PullThrough {
    projects: HashMap<String, Arc<ProxyProject>>,
    namespaces: HashMap<String, String>,
    spool_dir: PathBuf,
    fetches: Arc<Fetches>,
    /// (repository, tag) → when the tag was last confirmed upstream, on this node.
    validated: Mutex<HashMap<(String, String), Instant>>,
    pub metrics: Arc<ProxyMetrics>,
}

fn upstream_error(project: &str, e: &UpstreamError) -> Error {
    let project = project.to_owned();
    match e {
        UpstreamError::NotFound => Error::ManifestUnknown {
            reference: format!("(not found upstream of proxy project {project})"),
        },
        UpstreamError::RateLimited { retry_after, .. } => Error::UpstreamRateLimited {
            project,
            message: e.to_string(),
            retry_after: *retry_after,
        },
        // Registries answer 401 for a repository that does not exist as for one the
        // credentials may not read (Docker Hub: "repository does not exist or may require
        // authorization"), so neither is a fault of the upstream.
        UpstreamError::Unauthorized(_) => Error::UpstreamUnauthorized {
            project,
            message: e.to_string(),
        },
        _ => Error::UpstreamFailed {
            project,
            message: e.to_string(),
        },
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
            fetches: Arc::default(),
            validated: Mutex::new(HashMap::new()),
            metrics: Arc::default(),
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
fn upstream_path(p: &ProxyProject, name: &RepoName) -> Result<String> {
    let rest = name
        .as_str()
        .strip_prefix(&format!("{}/", p.name))
        .ok_or_else(|| Error::NameUnknown {
            name: format!("{name} (the proxy project itself, not a repository in it)"),
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

impl PullThrough {
    /// A manifest GET/HEAD in a proxy project.
    pub async fn get_manifest(
        &self,
        store: &dyn LocalStore,
        p: &ProxyProject,
        name: &RepoName,
        reference: &Reference,
        accept: &[String],
    ) -> Result<Arc<ManifestRow>> {
        let px = self;
        let path = upstream_path(p, name)?;
        let up_accept = upstream_accept(accept);
        match reference {
            Reference::Digest(d) => {
                match store.local_manifest(name, reference, accept).await {
                    Ok(row) => {
                        px.metrics.manifest_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(row);
                    }
                    Err(Error::ManifestUnknown { .. } | Error::NameUnknown { .. }) => {}
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
                    return Err(Error::UpstreamFailed {
                        project: p.name.clone(),
                        message: format!("the upstream sent {} for {d}", m.digest),
                    });
                }
                store
                    .store_manifest(name, d, None, &m.media_type, m.bytes.to_vec())
                    .await?;
                store.local_manifest(name, reference, accept).await
            }
            Reference::Tag(t) => {
                let tag = t.as_str();
                let cached = store.local_tag(name, tag).await?;
                if cached.is_some() && px.fresh(name, tag, p.freshness) {
                    px.metrics.manifest_hits.fetch_add(1, Ordering::Relaxed);
                    return store.local_manifest(name, reference, accept).await;
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
                        Err(e) => return px.stale(store, p, name, reference, accept, &e).await,
                    },
                };
                if let (Some(c), Some(h)) = (&cached, head.as_ref().and_then(|h| h.digest.as_ref()))
                    && c == h
                {
                    px.mark_fresh(name, tag);
                    px.metrics.manifest_hits.fetch_add(1, Ordering::Relaxed);
                    return store.local_manifest(name, reference, accept).await;
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
                        return px.stale(store, p, name, reference, accept, &e).await;
                    }
                    Err(e) => {
                        px.metrics.error(&e);
                        return Err(upstream_error(&p.name, &e));
                    }
                };
                store
                    .store_manifest(name, &m.digest, Some(tag), &m.media_type, m.bytes.to_vec())
                    .await?;
                px.mark_fresh(name, tag);
                store.local_manifest(name, reference, accept).await
            }
        }
    }
}

fn tag_not_upstream(p: &ProxyProject, path: &str, tag: &str) -> Error {
    Error::ManifestUnknown {
        reference: format!(
            "{path}:{tag} (not known to the upstream of proxy project {})",
            p.name
        ),
    }
}

impl PullThrough {
    /// Serves the cached manifest of a tag the upstream could not confirm (stale-if-error).
    async fn stale(
        &self,
        store: &dyn LocalStore,
        p: &ProxyProject,
        name: &RepoName,
        reference: &Reference,
        accept: &[String],
        e: &UpstreamError,
    ) -> Result<Arc<ManifestRow>> {
        self.metrics.error(e);
        self.metrics.stale_served.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(project = %p.name, repo = %name, %reference, error = %e,
        "upstream unavailable; serving the cached manifest (stale-if-error)");
        store.local_manifest(name, reference, accept).await
    }
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

impl PullThrough {
    /// A blob GET/HEAD in a proxy project.
    pub async fn get_blob(
        &self,
        store: Arc<dyn LocalStore>,
        p: &Arc<ProxyProject>,
        name: &RepoName,
        digest: &Digest,
        head: bool,
    ) -> Result<ProxyBlob> {
        let px = self;
        if let Some(row) = store.local_blob(name, digest).await? {
            px.metrics.blob_hits.fetch_add(1, Ordering::Relaxed);
            if !head {
                px.metrics
                    .cache_served_bytes
                    .fetch_add(row.size, Ordering::Relaxed);
            }
            return Ok(ProxyBlob::Local(row));
        }
        // Another repository of the project may hold it: link it instead of fetching again.
        if store.link_from_project(name, digest, &p.name).await?
            && let Some(row) = store.local_blob(name, digest).await?
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
        let fetch = px.join_fetch(store, p, name, digest, path)?;
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
                    return Err(Error::UpstreamFailed {
                        project: p.name.clone(),
                        message: f.message,
                    });
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::Internal("the upstream fetch ended".into()));
            }
        };
        Ok(ProxyBlob::Streaming {
            size,
            body: spool_stream(fetch, rx),
        })
    }
}

fn blob_upstream_error(project: &str, digest: &Digest, e: &UpstreamError) -> Error {
    match e {
        UpstreamError::NotFound => Error::BlobUnknown {
            digest: digest.clone(),
        },
        other => upstream_error(project, other),
    }
}

impl PullThrough {
    /// The running fetch of `digest` for the project, or a new one.
    fn join_fetch(
        &self,
        store: Arc<dyn LocalStore>,
        p: &Arc<ProxyProject>,
        name: &RepoName,
        digest: &Digest,
        path: String,
    ) -> Result<Arc<Fetch>> {
        let key = (p.name.clone(), digest.clone());
        let mut fetches = self.fetches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = fetches.get(&key) {
            return Ok(f.clone());
        }
        std::fs::create_dir_all(&self.spool_dir).map_err(|e| {
            berth_storage::StorageError::io("creating the proxy spool directory", e)
        })?;
        let (tx, _) = watch::channel(FetchState::Starting);
        let fetch = Arc::new(Fetch {
            spool: self
                .spool_dir
                .join(uuid::Uuid::new_v4().simple().to_string()),
            state: tx,
        });
        fetches.insert(key.clone(), fetch.clone());
        drop(fetches);
        let (p, name, digest) = (p.clone(), name.clone(), digest.clone());
        let (fetches, metrics) = (self.fetches.clone(), self.metrics.clone());
        let task_fetch = fetch.clone();
        tokio::spawn(async move {
            let result = run_fetch(
                store.as_ref(),
                &metrics,
                &p,
                &name,
                &digest,
                &path,
                &task_fetch,
            )
            .await;
            if let Err(f) = &result {
                if !f.not_found {
                    tracing::warn!(project = %p.name, repo = %name, %digest, error = %f.message, "upstream blob fetch failed");
                }
                task_fetch.state.send_replace(FetchState::Failed(f.clone()));
            }
            fetches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        });
        Ok(fetch)
    }
}

async fn run_fetch(
    store: &dyn LocalStore,
    metrics: &ProxyMetrics,
    p: &ProxyProject,
    name: &RepoName,
    digest: &Digest,
    path: &str,
    fetch: &Fetch,
) -> std::result::Result<(), FetchFailure> {
    let resp = p.upstream.get_blob(path, digest).await.map_err(|e| {
        metrics.error(&e);
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
        metrics
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
    if let Err(e) = store.store_blob(name, digest, size, body).await {
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

impl PullThrough {
    /// Makes sure every proxy project exists with the configured visibility.
    pub async fn ensure_projects(
        &self,
        meta: &MetaStore,
    ) -> std::result::Result<(), berth_meta::MetaError> {
        for p in self.projects() {
            match meta.project(&p.name).await? {
                Some(row) if row.public == p.public => {}
                Some(_) => {
                    meta.set_project_public(&p.name, p.public).await?;
                }
                None => match meta.create_project(&p.name, p.public, None).await {
                    Ok(_) | Err(berth_meta::CreateError::Exists) => {}
                    Err(berth_meta::CreateError::Meta(e)) => return Err(e),
                },
            }
        }
        Ok(())
    }
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
