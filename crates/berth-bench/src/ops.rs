//! Registry operations over the plain Distribution HTTP API, each checking its answer.

use anyhow::{Context, bail, ensure};
use hyper::Method;

use crate::data::Blob;
use crate::http::{Conn, ReqBody, Resp, with_query};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCTET: &str = "application/octet-stream";

fn expect(resp: &Resp, status: u16, what: &str) -> anyhow::Result<()> {
    if resp.status != status {
        bail!("{what}: expected {status}, got {}", resp.describe());
    }
    Ok(())
}

fn location(resp: &Resp, what: &str) -> anyhow::Result<String> {
    resp.header("location")
        .map(str::to_owned)
        .with_context(|| format!("{what}: no Location header"))
}

/// How a registry takes a blob in one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monolithic {
    /// `POST /blobs/uploads/?digest=` with the body (one request).
    Post,
    /// `POST /blobs/uploads/` then `PUT <location>?digest=` with the body (two requests):
    /// registries that answer the single POST with 202 instead of 201 (Distribution 2.8).
    PostThenPut,
}

impl Monolithic {
    pub fn describe(self) -> &'static str {
        match self {
            Monolithic::Post => "POST ?digest=",
            Monolithic::PostThenPut => "POST, then PUT ?digest= with the body",
        }
    }
}

/// Finds out whether the registry completes an upload in a single `POST ?digest=`.
pub async fn probe_monolithic(
    conn: &mut Conn,
    repo: &str,
    blob: &Blob,
) -> anyhow::Result<Monolithic> {
    let url = format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest);
    let r = conn
        .request(Method::POST, &url, &[("content-type", OCTET)], blob.body())
        .await?;
    match r.status {
        201 => Ok(Monolithic::Post),
        202 => {
            let loc = location(&r, "POST")?;
            let put = with_query(&loc, &format!("digest={}", blob.digest));
            let r = conn
                .request(Method::PUT, &put, &[("content-type", OCTET)], blob.body())
                .await?;
            expect(&r, 201, "PUT ?digest=")?;
            Ok(Monolithic::PostThenPut)
        }
        _ => bail!("POST ?digest=: {}", r.describe()),
    }
}

pub async fn push_monolithic(
    conn: &mut Conn,
    mode: Monolithic,
    repo: &str,
    blob: &Blob,
) -> anyhow::Result<()> {
    match mode {
        Monolithic::Post => {
            let url = format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest);
            let r = conn
                .request(Method::POST, &url, &[("content-type", OCTET)], blob.body())
                .await?;
            expect(&r, 201, "POST ?digest=")?;
            if let Some(d) = r.header("docker-content-digest") {
                ensure!(
                    d == blob.digest,
                    "POST ?digest= answered digest {d}, pushed {}",
                    blob.digest
                );
            }
        }
        Monolithic::PostThenPut => {
            let r = conn
                .request(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/"),
                    &[],
                    ReqBody::empty(),
                )
                .await?;
            expect(&r, 202, "POST upload")?;
            let put = with_query(&location(&r, "POST")?, &format!("digest={}", blob.digest));
            let r = conn
                .request(Method::PUT, &put, &[("content-type", OCTET)], blob.body())
                .await?;
            expect(&r, 201, "PUT ?digest=")?;
        }
    }
    Ok(())
}

/// POST, PATCHes of `chunk` bytes with `Content-Range`, then `PUT ?digest=`.
pub async fn push_chunked(
    conn: &mut Conn,
    repo: &str,
    blob: &Blob,
    chunk: u64,
) -> anyhow::Result<()> {
    let mut loc = start_upload(conn, repo).await?;
    let mut start = 0;
    while start < blob.len() {
        let end = (start + chunk).min(blob.len());
        let range = format!("{start}-{}", end - 1);
        let r = conn
            .request(
                Method::PATCH,
                &loc,
                &[("content-type", OCTET), ("content-range", &range)],
                blob.body_range(start, end),
            )
            .await?;
        expect(&r, 202, "PATCH")?;
        loc = location(&r, "PATCH")?;
        start = end;
    }
    let put = with_query(&loc, &format!("digest={}", blob.digest));
    let r = conn
        .request(Method::PUT, &put, &[], ReqBody::empty())
        .await?;
    expect(&r, 201, "PUT ?digest=")
}

/// Pulls a blob, checks its size, and (with `verify`) its digest while reading.
pub async fn pull_blob(
    conn: &mut Conn,
    path: &str,
    len: u64,
    digest: &str,
    verify: bool,
) -> anyhow::Result<u64> {
    let s = conn.get_streamed(path, verify).await?;
    ensure!(s.status == 200, "GET {path}: HTTP {}", s.status);
    ensure!(
        s.bytes == len,
        "GET {path}: {} bytes, expected {len}",
        s.bytes
    );
    if let Some(d) = s.digest {
        ensure!(
            d == digest,
            "GET {path}: content hashes to {d}, expected {digest}"
        );
    }
    Ok(s.bytes)
}

/// An OCI image manifest with one config and `layers`; `salt` makes it unique.
pub fn manifest(config: &Blob, layers: &[&Blob], salt: &str) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": l.digest,
                "size": l.len(),
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest,
            "size": config.len(),
        },
        "layers": layers,
        "annotations": { "org.example.bench": salt },
    }))
    .expect("JSON values serialize")
}

pub async fn put_manifest(
    conn: &mut Conn,
    repo: &str,
    reference: &str,
    body: &bytes::Bytes,
) -> anyhow::Result<()> {
    let r = conn
        .request(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", OCI_MANIFEST)],
            ReqBody::full(body.clone()),
        )
        .await?;
    expect(&r, 201, "PUT manifest")
}

pub async fn get_manifest(conn: &mut Conn, path: &str, expect_len: usize) -> anyhow::Result<()> {
    let r = conn.get(path, &[("accept", OCI_MANIFEST)]).await?;
    expect(&r, 200, "GET manifest")?;
    ensure!(
        r.body.len() == expect_len,
        "GET {path}: {} bytes, expected {expect_len}",
        r.body.len()
    );
    Ok(())
}

pub async fn delete(conn: &mut Conn, path: &str) -> anyhow::Result<()> {
    let r = conn
        .request(Method::DELETE, path, &[], ReqBody::empty())
        .await?;
    expect(&r, 202, "DELETE")
}

/// Pushes `bytes` in one `POST ?digest=`; returns its digest.
pub async fn push_bytes(
    conn: &mut Conn,
    repo: &str,
    bytes: &bytes::Bytes,
) -> anyhow::Result<String> {
    let digest = crate::data::sha256_hex(bytes);
    let url = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
    let r = conn
        .request(
            Method::POST,
            &url,
            &[("content-type", OCTET)],
            ReqBody::full(bytes.clone()),
        )
        .await?;
    expect(&r, 201, "POST ?digest=")?;
    Ok(digest)
}

/// Pushes the file at `path` (`len` bytes, digest `digest`) as a chunked upload: `POST`, then
/// `PATCH`es of `chunk` bytes read from the file one at a time, then `PUT ?digest=`, so that
/// a blob of any size costs one chunk of memory.
pub async fn push_file(
    conn: &mut Conn,
    repo: &str,
    path: &std::path::Path,
    digest: &str,
    len: u64,
    chunk: u64,
) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut loc = start_upload(conn, repo).await?;
    let mut start = 0;
    while start < len {
        let end = (start + chunk).min(len);
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact(&mut buf)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let range = format!("{start}-{}", end - 1);
        let r = conn
            .request(
                Method::PATCH,
                &loc,
                &[("content-type", OCTET), ("content-range", &range)],
                ReqBody::full(bytes::Bytes::from(buf)),
            )
            .await?;
        expect(&r, 202, "PATCH")?;
        loc = location(&r, "PATCH")?;
        start = end;
    }
    let put = with_query(&loc, &format!("digest={digest}"));
    let r = conn
        .request(Method::PUT, &put, &[], ReqBody::empty())
        .await?;
    expect(&r, 201, "PUT ?digest=")
}

/// `POST /v2/<repo>/blobs/uploads/`, expecting 202: the session's location.
async fn start_upload(conn: &mut Conn, repo: &str) -> anyhow::Result<String> {
    let r = conn
        .request(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            ReqBody::empty(),
        )
        .await?;
    expect(&r, 202, "POST upload")?;
    location(&r, "POST")
}
