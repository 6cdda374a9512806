//! The harness of the in-process API tests: a registry on a fresh temporary directory and
//! database per test, driven through `tower::ServiceExt::oneshot` (no network), plus builders
//! for blobs, image manifests, indexes and artifacts whose digests are computed here, not by
//! the code under test.

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header, request};
use berth_core::config::Config;
use berth_meta::MetaStore;
use berth_server::Registry;
use berth_storage::FsBlobStore;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256, Sha512};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A registry with its own data directory and SQLite database.
pub struct App {
    router: Router,
    #[allow(dead_code)]
    pub registry: Arc<Registry>,
    _dir: tempfile::TempDir,
}

impl App {
    pub async fn new() -> App {
        App::with_config(|_| {}).await
    }

    /// A registry whose default configuration `tweak` adjusts first. Authentication is off
    /// (these tests are about the registry API) unless `tweak` turns it on.
    pub async fn with_config(tweak: impl FnOnce(&mut Config)) -> App {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let meta = MetaStore::open_for_tests(dir.path())
            .await
            .expect("the database opens");
        App::on(dir, meta, tweak).await
    }

    /// A registry over `meta` (PostgreSQL, say) with its blobs in `dir`, authentication off
    /// unless `tweak` turns it on.
    pub async fn on(
        dir: tempfile::TempDir,
        meta: MetaStore,
        tweak: impl FnOnce(&mut Config),
    ) -> App {
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.auth.enabled = false;
        tweak(&mut config);
        let blobs = FsBlobStore::open(dir.path()).expect("the blob store opens");
        let registry = Arc::new(
            Registry::new(meta, Arc::new(blobs), Arc::new(config))
                .await
                .expect("the registry starts"),
        );
        App {
            router: berth_server::router(registry.clone()),
            registry,
            _dir: dir,
        }
    }

    /// A registry configured by `toml` over the defaults (authentication off unless it says
    /// otherwise). A key the configuration does not know fails the test.
    #[allow(dead_code)]
    pub async fn with_toml(toml: &str) -> App {
        let mut value: toml::Value = toml::from_str(toml).expect("valid TOML");
        if let Some(t) = value.as_table_mut() {
            let auth = t
                .entry("auth")
                .or_insert_with(|| toml::Value::Table(Default::default()));
            if let Some(auth) = auth.as_table_mut() {
                auth.entry("enabled").or_insert(toml::Value::Boolean(false));
            }
        }
        let parsed: Config = value
            .try_into()
            .unwrap_or_else(|e| panic!("the configuration {toml:?} is refused: {e}"));
        App::with_config(|c| {
            let data_dir = c.data_dir.clone();
            *c = parsed;
            c.data_dir = data_dir;
        })
        .await
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        send(self.router.clone(), req).await
    }

    /// Sends a request on a task of its own, for requests that must overlap.
    pub fn spawn(&self, req: Request<Body>) -> JoinHandle<Resp> {
        tokio::spawn(send(self.router.clone(), req))
    }

    /// Sends `builder` with `body`. Like a real client, a POST, PUT or PATCH whose body has a
    /// known size carries `Content-Length` unless the test set one.
    pub async fn call(&self, builder: request::Builder, body: impl Into<Body>) -> Resp {
        let body = body.into();
        let mut req = builder.body(body).expect("a well-formed request");
        let sends_body = [Method::POST, Method::PUT, Method::PATCH].contains(req.method());
        if sends_body
            && !req.headers().contains_key(header::CONTENT_LENGTH)
            && let Some(n) = http_body::Body::size_hint(req.body()).exact()
        {
            req.headers_mut().insert(header::CONTENT_LENGTH, n.into());
        }
        self.send(req).await
    }

    pub async fn get(&self, uri: &str) -> Resp {
        self.call(req(Method::GET, uri), Body::empty()).await
    }

    pub async fn head(&self, uri: &str) -> Resp {
        self.call(req(Method::HEAD, uri), Body::empty()).await
    }

    pub async fn delete(&self, uri: &str) -> Resp {
        self.call(req(Method::DELETE, uri), Body::empty()).await
    }

    pub async fn get_accept(&self, uri: &str, accept: &str) -> Resp {
        self.call(
            req(Method::GET, uri).header(header::ACCEPT, accept),
            Body::empty(),
        )
        .await
    }

    /// `POST /v2/<repo>/blobs/uploads/`, asserting 202; returns the session's `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .call(
                req(Method::POST, &format!("/v2/{repo}/blobs/uploads/")),
                Body::empty(),
            )
            .await;
        r.assert_status(StatusCode::ACCEPTED);
        r.location()
    }

    /// Pushes a blob in one request (`POST ?digest=`), asserting 201; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self
            .call(
                req(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                ),
                data.to_vec(),
            )
            .await;
        r.assert_status(StatusCode::CREATED);
        d
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with `content_type`, whatever the outcome.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Resp {
        self.call(
            req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
                .header(header::CONTENT_TYPE, content_type),
            bytes.to_vec(),
        )
        .await
    }

    /// Pushes a manifest, asserting 201 and the digest the registry reports; returns it.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> String {
        let r = self
            .put_manifest(repo, reference, content_type, bytes)
            .await;
        r.assert_status(StatusCode::CREATED);
        let d = sha256(bytes);
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        d
    }

    /// Pushes an image's blobs and then its manifest under `reference`; returns its digest.
    pub async fn push_image(&self, repo: &str, reference: &str, image: &Image) -> String {
        for blob in image.blobs() {
            self.push_blob(repo, blob).await;
        }
        self.push_manifest(repo, reference, image.media_type, &image.manifest)
            .await
    }
}

async fn send(router: Router, req: Request<Body>) -> Resp {
    let resp = router.oneshot(req).await.expect("the router is infallible");
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("the response body is readable");
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub fn req(method: Method, uri: &str) -> request::Builder {
    Request::builder().method(method).uri(uri)
}

/// A URI with one more query parameter.
pub fn with_query(uri: &str, param: &str) -> String {
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{param}")
}

/// The path and query of a URL, so that an absolute `Location` or `Link` can be followed
/// in-process.
pub fn path_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

/// A response, its body read in full.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header value"))
    }

    #[track_caller]
    pub fn assert_status(&self, status: StatusCode) {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
    }

    #[track_caller]
    pub fn location(&self) -> String {
        self.header("location")
            .expect("a Location header")
            .to_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts an OCI error response (status, API version header, a JSON body with `code`
    /// first) and returns its first error.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) -> Value {
        self.assert_status(status);
        assert_eq!(
            self.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.starts_with("application/json"),
            "error Content-Type {ct:?}"
        );
        let err = self.json()["errors"][0].clone();
        assert_eq!(err["code"], code, "error body: {err}");
        assert!(err["message"].is_string(), "error without a message: {err}");
        err
    }

    /// The URL of `Link: <url>; rel="next"`, if the header is present.
    #[track_caller]
    pub fn next_link(&self) -> Option<String> {
        let link = self.header("link")?;
        let (url, rel) = link
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap_or_else(|| panic!("malformed Link header {link:?}"));
        assert_eq!(rel.trim(), "; rel=\"next\"", "Link header {link:?}");
        Some(url.to_owned())
    }

    /// The headers, minus the ones that legitimately differ between two responses.
    pub fn stable_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id"))
            .map(|(k, v)| (k.to_string(), v.to_str().expect("ASCII").to_owned()))
            .collect();
        h.sort();
        h
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// `len` bytes that look random and differ per `seed`.
pub fn data(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// A request body that stays open until the test closes it, and tells the test when the
/// server first reads from it (i.e. when the request is in flight inside the handler).
pub struct HeldBody {
    pub chunks: mpsc::Sender<Bytes>,
    pub reading: oneshot::Receiver<()>,
}

impl HeldBody {
    pub fn new() -> (HeldBody, Body) {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let (reading_tx, reading_rx) = oneshot::channel();
        let stream = futures_util::stream::unfold(
            (rx, Some(reading_tx)),
            |(mut rx, mut reading)| async move {
                if let Some(r) = reading.take() {
                    let _ = r.send(());
                }
                let chunk = rx.recv().await?;
                Some((Ok::<_, io::Error>(chunk), (rx, reading)))
            },
        );
        (
            HeldBody {
                chunks: tx,
                reading: reading_rx,
            },
            Body::from_stream(stream),
        )
    }
}

/// A body of unknown length, delivered in pieces of `piece` bytes.
pub fn streamed(data: &[u8], piece: usize) -> Body {
    let chunks: Vec<Result<Bytes, io::Error>> = data
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures_util::stream::iter(chunks))
}

pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(bytes), "size": bytes.len() })
}

/// An image manifest with its blobs, serialized once so its exact bytes are known.
#[derive(Clone)]
pub struct Image {
    pub media_type: &'static str,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
}

impl Image {
    /// An OCI image manifest with one layer; `seed` makes its digests unique.
    pub fn oci(seed: &str) -> Image {
        Image::build(OCI_MANIFEST, OCI_CONFIG, OCI_LAYER, seed, |_| {})
    }

    /// A Docker schema 2 image manifest with one layer.
    pub fn docker(seed: &str) -> Image {
        Image::build(DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER, seed, |_| {})
    }

    /// An OCI image manifest whose JSON `edit` adjusts before it is serialized.
    pub fn oci_with(seed: &str, edit: impl FnOnce(&mut Value)) -> Image {
        Image::build(OCI_MANIFEST, OCI_CONFIG, OCI_LAYER, seed, edit)
    }

    fn build(
        media_type: &'static str,
        config_type: &str,
        layer_type: &str,
        seed: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Image {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
            "config": { "Labels": { "seed": seed } },
        }))
        .expect("JSON");
        let layer = data(&format!("layer {seed}"), 3000);
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": descriptor(config_type, &config),
            "layers": [descriptor(layer_type, &layer)],
        });
        edit(&mut m);
        // Pretty-printed, so a registry that re-serialized would change the digest.
        let manifest = serde_json::to_vec_pretty(&m).expect("JSON");
        Image {
            media_type,
            config,
            layers: vec![layer],
            manifest,
        }
    }

    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    pub fn blobs(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.config.as_slice()).chain(self.layers.iter().map(Vec::as_slice))
    }

    /// This manifest as a descriptor, with a platform when given (`("linux", "amd64")`).
    pub fn descriptor(&self, platform: Option<(&str, &str)>) -> Value {
        let mut d = descriptor(self.media_type, &self.manifest);
        if let Some((os, arch)) = platform {
            d["platform"] = json!({ "os": os, "architecture": arch });
        }
        d
    }
}

/// An index (OCI or Docker list, by `media_type`) of the given child descriptors.
pub fn index(media_type: &str, children: &[Value]) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": children,
    }))
    .expect("JSON")
}

/// The empty JSON blob `{}` that artifacts use as their config (OCI image-spec guidance).
pub const EMPTY_BLOB: &[u8] = b"{}";

/// An OCI artifact manifest referring to `subject` (a descriptor), with an `artifactType`
/// and annotations. Its only blob is [`EMPTY_BLOB`].
pub fn artifact(subject: &Value, artifact_type: &str, annotations: Value) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(OCI_EMPTY, EMPTY_BLOB),
        "layers": [descriptor(OCI_EMPTY, EMPTY_BLOB)],
        "subject": subject,
        "annotations": annotations,
    }))
    .expect("JSON")
}
