//! A small HTTP/1.1 client on hyper's connection API: one keep-alive connection per worker
//! (as wrk and real registry clients use them), plain TCP or TLS (rustls, trusting only the
//! benchmark's own certificate), bodies streamed from shared `Bytes` without copies, and
//! response bodies read frame by frame (counted, optionally hashed).
//!
//! Every request runs under a timeout, so no loop of the benchmark can hang.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// A request body: a list of shared buffers, sent in order, with an exact length; at once, or
/// one buffer per interval ([`ReqBody::paced`]).
#[derive(Default)]
pub struct ReqBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
    pace: Option<Pace>,
}

/// A slow sender: one buffer every `every`, the first at once.
struct Pace {
    every: Duration,
    next: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ReqBody {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self {
            chunks,
            remaining,
            pace: None,
        }
    }

    /// A body that sends one of `chunks` every `every` (the first at once): a slow client.
    pub fn paced(chunks: impl IntoIterator<Item = Bytes>, every: Duration) -> Self {
        Self {
            pace: Some(Pace { every, next: None }),
            ..Self::from_chunks(chunks)
        }
    }

    pub fn full(b: Bytes) -> Self {
        Self::from_chunks([b])
    }

    pub fn len(&self) -> u64 {
        self.remaining
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(pace) = &mut this.pace
            && !this.chunks.is_empty()
        {
            if let Some(next) = &mut pace.next
                && next.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            pace.next = Some(Box::pin(tokio::time::sleep(pace.every)));
        }
        Poll::Ready(this.chunks.pop_front().map(|b| {
            this.remaining -= b.len() as u64;
            Ok(Frame::data(b))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Where a connection goes: a loopback address, and TLS settings when it speaks HTTPS.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<TlsConnector>,
    host: HeaderValue,
}

impl Endpoint {
    pub fn plain(addr: SocketAddr) -> Arc<Self> {
        assert!(
            addr.ip().is_loopback(),
            "the benchmark only talks to loopback"
        );
        Arc::new(Self {
            addr,
            tls: None,
            host: HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header"),
        })
    }

    /// An HTTPS endpoint that trusts exactly the PEM certificate(s) in `ca`.
    pub fn tls(addr: SocketAddr, ca: &Path) -> anyhow::Result<Arc<Self>> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        assert!(
            addr.ip().is_loopback(),
            "the benchmark only talks to loopback"
        );
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(cert.context("parsing the certificate")?)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            addr,
            tls: Some(TlsConnector::from(Arc::new(cfg))),
            host: HeaderValue::from_str(&addr.to_string())?,
        }))
    }
}

/// A TCP connection to `addr`, from `source` when given (any 127.x.y.z works on Linux without
/// configuration: the benchmark uses many to play many client hosts).
pub async fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    match source {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            assert!(ip.is_loopback(), "the benchmark only talks from loopback");
            let sock = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.bind(SocketAddr::new(ip, 0))?;
            sock.connect(addr).await
        }
    }
}

/// A response whose body was read whole (small responses only).
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A short description for error reports.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        format!("HTTP {}: {}", self.status, body.trim())
    }
}

/// What reading a streamed body produced.
pub struct Streamed {
    pub status: u16,
    pub bytes: u64,
    /// `sha256:<hex>` of the body, when hashing was asked for.
    pub digest: Option<String>,
}

/// One keep-alive connection, re-dialled when the server closes it.
pub struct Conn {
    ep: Arc<Endpoint>,
    sender: Option<SendRequest<ReqBody>>,
    pub timeout: Duration,
    /// Connections opened (the first one included).
    pub dials: u64,
    /// The local address connections are made from (default: the system's choice).
    source: Option<IpAddr>,
    /// Headers sent with every request (credentials).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Conn {
    pub fn new(ep: Arc<Endpoint>) -> Self {
        Self {
            ep,
            sender: None,
            timeout: Duration::from_secs(60),
            dials: 0,
            source: None,
            headers: Vec::new(),
        }
    }

    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Connections from this loopback address.
    pub fn with_source(mut self, ip: IpAddr) -> Self {
        self.source = Some(ip);
        self
    }

    /// A header sent with every request (e.g. `authorization`).
    pub fn with_header(mut self, name: &'static str, value: &str) -> anyhow::Result<Self> {
        self.headers
            .push((HeaderName::from_static(name), HeaderValue::from_str(value)?));
        Ok(self)
    }

    async fn dial(&mut self) -> anyhow::Result<()> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            connect_from(self.ep.addr, self.source),
        )
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", self.ep.addr))?
        .with_context(|| format!("connecting to {}", self.ep.addr))?;
        tcp.set_nodelay(true)?;
        self.dials += 1;
        let sender = match &self.ep.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .context("HTTP handshake")?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
            Some(tls) => {
                let name = ServerName::from(self.ep.addr.ip());
                let stream = tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp))
                    .await
                    .map_err(|_| anyhow!("TLS handshake timed out"))?
                    .context("TLS handshake")?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .context("HTTP handshake")?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
        };
        self.sender = Some(sender);
        Ok(())
    }

    async fn ready_sender(&mut self) -> anyhow::Result<&mut SendRequest<ReqBody>> {
        let usable = match &mut self.sender {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !usable {
            self.sender = None;
            self.dial().await?;
        }
        Ok(self.sender.as_mut().expect("dialled"))
    }

    /// Sends a request and returns the response head with its unread body. `path` is an
    /// origin-form path (`/v2/...`) or an absolute URL of this endpoint.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> anyhow::Result<Response<Incoming>> {
        let path = origin_form(path);
        let idempotent = matches!(method, Method::GET | Method::HEAD);
        let mut attempt = 0;
        let mut body = Some(body);
        loop {
            attempt += 1;
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, self.ep.host.clone());
            let b = body.take().unwrap_or_default();
            if method != Method::GET && method != Method::HEAD {
                builder = builder.header(hyper::header::CONTENT_LENGTH, b.len());
            }
            for (k, v) in &self.headers {
                builder = builder.header(k, v);
            }
            for (k, v) in headers {
                builder = builder.header(HeaderName::from_bytes(k.as_bytes())?, *v);
            }
            let req = builder.body(b)?;
            let sender = self.ready_sender().await?;
            match sender.send_request(req).await {
                Ok(resp) => return Ok(resp),
                // A keep-alive connection the server closed between two requests: dial again
                // and repeat a request that has no body to lose.
                Err(e) if idempotent && attempt == 1 => {
                    self.sender = None;
                    body = Some(ReqBody::empty());
                    let _ = e;
                }
                Err(e) => {
                    self.sender = None;
                    return Err(anyhow!("{method} {path}: {e}"));
                }
            }
        }
    }

    /// A request whose response body is read whole (at most `limit` bytes kept).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> anyhow::Result<Resp> {
        let timeout = self.timeout;
        let what = format!("{method} {}", origin_form(path));
        let fut = async {
            let resp = self.send(method, path, headers, body).await?;
            let (parts, mut incoming) = resp.into_parts();
            let mut buf = Vec::new();
            while let Some(frame) = next_frame(&mut incoming).await {
                let frame = frame.context("reading the response body")?;
                if let Ok(data) = frame.into_data()
                    && buf.len() < 64 << 20
                {
                    buf.extend_from_slice(&data);
                }
            }
            Ok::<_, anyhow::Error>(Resp {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: Bytes::from(buf),
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r.with_context(|| what.clone()),
            Err(_) => {
                self.sender = None;
                bail!("{what}: no answer within {timeout:?}")
            }
        }
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Resp> {
        self.request(Method::GET, path, headers, ReqBody::empty())
            .await
    }

    /// A GET whose body is streamed: counted, and hashed with SHA-256 when `hash` is set.
    pub async fn get_streamed(&mut self, path: &str, hash: bool) -> anyhow::Result<Streamed> {
        let timeout = self.timeout;
        let what = format!("GET {}", origin_form(path));
        let fut = async {
            let resp = self.send(Method::GET, path, &[], ReqBody::empty()).await?;
            let status = resp.status().as_u16();
            let mut incoming = resp.into_body();
            let mut hasher = hash.then(Sha256::new);
            let mut bytes = 0u64;
            while let Some(frame) = next_frame(&mut incoming).await {
                let frame = frame.context("reading the response body")?;
                if let Ok(data) = frame.into_data() {
                    bytes += data.len() as u64;
                    if let Some(h) = hasher.as_mut() {
                        h.update(&data);
                    }
                }
            }
            Ok::<_, anyhow::Error>(Streamed {
                status,
                bytes,
                digest: hasher.map(|h| format!("sha256:{}", hex::encode(h.finalize()))),
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r.with_context(|| what.clone()),
            Err(_) => {
                self.sender = None;
                bail!("{what}: not finished within {timeout:?}")
            }
        }
    }
}

/// One keep-alive connection to each node of a registry, taken in turn: each request goes to
/// the node after the previous request's, as a load balancer spreading requests round-robin
/// sends them. With one node it is one [`Conn`].
pub struct RoundRobin {
    conns: Vec<Conn>,
    next: usize,
}

impl RoundRobin {
    /// The first request goes to node `first` (modulo the count), so that workers starting
    /// together start on different nodes.
    pub fn new(nodes: &[Arc<Endpoint>], first: usize, timeout: Duration) -> Self {
        assert!(!nodes.is_empty(), "a registry has at least one node");
        Self {
            conns: nodes
                .iter()
                .map(|ep| Conn::new(ep.clone()).with_timeout(timeout))
                .collect(),
            next: first % nodes.len(),
        }
    }

    /// The connection to the node whose turn it is.
    pub fn turn(&mut self) -> &mut Conn {
        let i = self.next;
        self.next = (i + 1) % self.conns.len();
        &mut self.conns[i]
    }

    /// The connection to node `i` (modulo the count), out of turn.
    pub fn node(&mut self, i: usize) -> &mut Conn {
        let n = self.conns.len();
        &mut self.conns[i % n]
    }
}

async fn next_frame(body: &mut Incoming) -> Option<Result<Frame<Bytes>, hyper::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

/// `http://127.0.0.1:5000/v2/x?y` -> `/v2/x?y`; an origin-form path is returned as is.
pub fn origin_form(location: &str) -> &str {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = location.strip_prefix(scheme) {
            return rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    location
}

/// The target of a `Link: <url>; rel="next"` header, in origin form.
pub fn next_link(resp: &Resp) -> Option<String> {
    resp.headers
        .get_all(hyper::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|l| l.contains("rel=\"next\"") || l.contains("rel=next"))
        .and_then(|l| {
            let start = l.find('<')? + 1;
            let end = l[start..].find('>')? + start;
            Some(origin_form(&l[start..end]).to_owned())
        })
}

/// Appends `key=value` to a URL that may already carry a query.
pub fn with_query(url: &str, kv: &str) -> String {
    if url.contains('?') {
        format!("{url}&{kv}")
    } else {
        format!("{url}?{kv}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_become_origin_form() {
        assert_eq!(origin_form("http://127.0.0.1:5/v2/a?b=c"), "/v2/a?b=c");
        assert_eq!(origin_form("https://127.0.0.1:5"), "/");
        assert_eq!(origin_form("/v2/x"), "/v2/x");
        assert_eq!(
            with_query("/u?_state=x", "digest=d"),
            "/u?_state=x&digest=d"
        );
        assert_eq!(with_query("/u", "digest=d"), "/u?digest=d");
    }
}
