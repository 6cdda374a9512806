//! A registry in-process (router, SQLite, filesystem store in a temp dir) with helpers to push
//! images through the real HTTP API and to run garbage collection on the same stores.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use berth_core::Digest;
use berth_core::config::Config;
use berth_jobs::{GcOptions, GcReport, ScrubReport};
use berth_meta::MetaStore;
use berth_server::Registry;
use berth_storage::FsBlobStore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub meta: MetaStore,
    pub blobs: Arc<FsBlobStore>,
    pub config: Arc<Config>,
    pub app: Router,
    /// Every node (the first is `meta` and `app`): its own MetaStore (connection pools,
    /// caches, committer) on the one database, its own services, the one blob directory.
    pub nodes: Vec<(MetaStore, Router)>,
    next: std::sync::atomic::AtomicUsize,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

/// A pushed image: its manifest digest and bytes, and its blobs (config first).
#[derive(Clone, Debug)]
pub struct Image {
    pub digest: Digest,
    pub manifest: Vec<u8>,
    pub blobs: Vec<Digest>,
}

/// A configuration for tests: grace periods as given, untagged manifests deleted at once.
pub fn test_config(grace: std::time::Duration) -> Config {
    let mut c = Config::default();
    c.gc.grace_period.0 = grace;
    c.gc.untagged_age.0 = std::time::Duration::ZERO;
    c.uploads.purge_after.0 = grace;
    c.gc.delete_rate = 0;
    c.auth.enabled = false;
    c
}

impl Env {
    pub async fn new(config: Config) -> Env {
        Env::cluster(config, 1).await
    }

    /// `n` nodes sharing one database and one blob directory, as `berth serve` processes
    /// share them: the SQLite file of the temporary directory, or with
    /// `TEST_METASTORE=postgres` one schema of the test PostgreSQL. Requests go to the nodes
    /// in turn.
    pub async fn cluster(config: Config, n: usize) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let postgres = match std::env::var("TEST_METASTORE").as_deref() {
            Ok("postgres") => {
                let url = std::env::var("TEST_POSTGRES_URL")
                    .expect("TEST_METASTORE=postgres needs TEST_POSTGRES_URL");
                Some(
                    MetaStore::test_postgres_options(&url)
                        .await
                        .expect("a schema of its own"),
                )
            }
            _ => None,
        };
        let blobs = Arc::new(FsBlobStore::open(dir.path()).expect("blob store"));
        let config = Arc::new(config);
        let mut nodes = Vec::new();
        for _ in 0..n.max(1) {
            let meta = match &postgres {
                Some(opts) => MetaStore::open_postgres(opts).await,
                None => MetaStore::open_sqlite(&dir.path().join("berth.db")).await,
            }
            .expect("database");
            let registry = Arc::new(
                Registry::new(meta.clone(), blobs.clone(), config.clone())
                    .await
                    .expect("registry"),
            );
            nodes.push((meta, berth_server::router(registry)));
        }
        Env {
            meta: nodes[0].0.clone(),
            app: nodes[0].1.clone(),
            dir,
            blobs,
            config,
            nodes,
            next: Default::default(),
        }
    }

    /// The node the next request goes to.
    fn node(&self) -> usize {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.nodes.len()
    }

    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.nodes[self.node()]
            .1
            .clone()
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec();
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let r = self
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                bytes.to_vec(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        d
    }

    /// PUTs a manifest; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.request(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[(header::CONTENT_TYPE.as_str(), media_type)],
            body.to_vec(),
        )
        .await
    }

    /// Pushes config and layers, then an image manifest (with an optional subject and
    /// artifactType), tagged when `tag` is given, else by digest.
    pub async fn push_image_with(
        &self,
        repo: &str,
        tag: Option<&str>,
        layers: &[&[u8]],
        subject: Option<&Image>,
        artifact_type: Option<&str>,
    ) -> Image {
        let config = format!("{{\"salt\":\"{}\"}}", uuid_like(layers));
        let config_digest = self.push_blob(repo, config.as_bytes()).await;
        let mut blobs = vec![config_digest.clone()];
        let mut layer_json = Vec::new();
        for l in layers {
            let d = self.push_blob(repo, l).await;
            layer_json.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": l.len()
            }));
            blobs.push(d);
        }
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
            "layers": layer_json,
        });
        if let Some(s) = subject {
            m["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": s.digest.to_string(), "size": s.manifest.len()});
        }
        if let Some(at) = artifact_type {
            m["artifactType"] = at.into();
        }
        let manifest = serde_json::to_vec(&m).expect("json");
        let digest = Digest::sha256_of(&manifest);
        let reference = tag.map(str::to_owned).unwrap_or_else(|| digest.to_string());
        let r = self
            .put_manifest(repo, &reference, OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        Image {
            digest,
            manifest,
            blobs,
        }
    }

    pub async fn push_image(&self, repo: &str, tag: Option<&str>, layers: &[&[u8]]) -> Image {
        self.push_image_with(repo, tag, layers, None, None).await
    }

    /// Pushes an index over already pushed images (each given a platform in order).
    pub async fn push_index(&self, repo: &str, tag: Option<&str>, children: &[&Image]) -> Image {
        let platforms = [
            ("amd64", "linux"),
            ("arm64", "linux"),
            ("s390x", "linux"),
            ("ppc64le", "linux"),
        ];
        let manifests: Vec<_> = children
            .iter()
            .zip(platforms.iter().cycle())
            .map(|(c, (arch, os))| {
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": c.digest.to_string(), "size": c.manifest.len(),
                                   "platform": {"architecture": arch, "os": os}})
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
            .expect("json");
        let digest = Digest::sha256_of(&body);
        let reference = tag.map(str::to_owned).unwrap_or_else(|| digest.to_string());
        let r = self.put_manifest(repo, &reference, OCI_INDEX, &body).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        Image {
            digest,
            manifest: body,
            blobs: vec![],
        }
    }

    pub async fn status(&self, method: Method, uri: &str) -> StatusCode {
        self.request(method, uri, &[], vec![]).await.status
    }

    /// Whether `repo` serves the manifest `reference`.
    pub async fn has_manifest(&self, repo: &str, reference: &str) -> bool {
        self.status(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .await
            == StatusCode::OK
    }

    /// Whether `repo` serves the blob (HEAD; this touches it, like a client would).
    pub async fn has_blob(&self, repo: &str, d: &Digest) -> bool {
        self.status(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"))
            .await
            == StatusCode::OK
    }

    pub async fn gc(&self) -> GcReport {
        self.gc_with(GcOptions::default()).await
    }

    pub async fn gc_with(&self, opts: GcOptions) -> GcReport {
        let node = self.node();
        let report = berth_jobs::run_gc(
            &self.nodes[node].0,
            self.blobs.as_ref(),
            &self.config,
            &opts,
            &CancellationToken::new(),
        )
        .await
        .expect("gc run");
        assert!(report.errors.is_empty(), "gc errors: {:?}", report.errors);
        report
    }

    pub async fn scrub(&self, grace: Option<std::time::Duration>) -> ScrubReport {
        berth_jobs::run_scrub(
            &self.meta,
            self.blobs.as_ref(),
            &self.config,
            grace,
            &CancellationToken::new(),
        )
        .await
        .expect("scrub run")
    }

    /// Files under blobs/ (every stored generation).
    pub fn blob_files(&self) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        walk(&self.dir.path().join("blobs"), &mut out);
        out
    }

    pub fn blob_path(&self, d: &Digest) -> Option<std::path::PathBuf> {
        let hex = d.hex();
        let dir = self
            .dir
            .path()
            .join("blobs")
            .join("sha256")
            .join(&hex[..2])
            .join(hex);
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .next()
    }
}

fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}

fn uuid_like(layers: &[&[u8]]) -> String {
    // Distinct configs for distinct layer sets, so images do not share configs by accident.
    let mut all = Vec::new();
    for l in layers {
        all.extend_from_slice(l);
    }
    Digest::sha256_of(&all).hex()[..16].to_owned()
}
