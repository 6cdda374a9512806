//! Minimal reference servers, started by the benchmark as separate processes (this binary with
//! a first argument of `sink` or `files`), so that berth's figures can be set against the least
//! work any registry must do on this machine with this client, not only against Distribution:
//!
//! - `sink ADDR DIR`: answers any request with a body by streaming it, hashing it with SHA-256
//!   in the receiving task, and writing it through a writer thread in 1 MiB pieces to a file
//!   in DIR that it fdatasyncs before answering 201 with the digest; what a durable monolithic
//!   push needs and nothing else (no database, no rename, no directory fsync). With DIR `-`
//!   it only receives and hashes.
//! - `files ADDR FILE [CERT KEY]`: answers every GET with FILE, read in 1 MiB pieces (as berth
//!   reads blobs), over HTTP/1.1, or over TLS 1.3 with rustls (aws-lc-rs, as berth) when a
//!   certificate and key are given; the TLS cost of this machine with no registry around it.
//!
//! `GET /v2/` answers 200 on both, for the benchmark's readiness probe.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

const IO_CHUNK: usize = 1 << 20;

/// Runs a reference server if `args` (without the program name) ask for one.
pub fn main_if_asked(args: &[String]) -> Option<ExitCode> {
    let kind = args.first()?.as_str();
    if kind != "sink" && kind != "files" {
        return None;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .ok()?;
    let result = runtime.block_on(async {
        let addr: SocketAddr = args
            .get(1)
            .context("usage: sink ADDR DIR | files ADDR FILE [CERT KEY]")?
            .parse()?;
        match kind {
            "sink" => {
                let dir = args.get(2).context("sink ADDR DIR")?;
                let dir = (dir != "-").then(|| PathBuf::from(dir));
                sink(addr, dir).await
            }
            _ => {
                let file = PathBuf::from(args.get(2).context("files ADDR FILE")?);
                let tls = match (args.get(3), args.get(4)) {
                    (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
                    _ => None,
                };
                files(addr, file, tls).await
            }
        }
    });
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench {kind}: {e:#}");
            ExitCode::FAILURE
        }
    })
}

type Body = http_body_util_lite::Body;

/// A response body: empty, or a stream of frames from a channel.
mod http_body_util_lite {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::Frame;

    pub enum Body {
        Empty,
        Stream(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
    }

    impl http_body::Body for Body {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.get_mut() {
                Body::Empty => Poll::Ready(None),
                Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
            }
        }

        fn is_end_stream(&self) -> bool {
            matches!(self, Body::Empty)
        }
    }
}

fn answer(status: StatusCode, digest: Option<String>) -> Response<Body> {
    let mut r = Response::new(Body::Empty);
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-length",
        hyper::header::HeaderValue::from_static("0"),
    );
    if let Some(d) = digest.and_then(|d| hyper::header::HeaderValue::from_str(&d).ok()) {
        r.headers_mut().insert("docker-content-digest", d);
    }
    r
}

async fn accept_loop<F, Fut>(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("binding {addr}: {e}");
            std::process::exit(1);
        }
    };
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        serve_conn(stream, handler).await;
                    }
                }
                None => serve_conn(tcp, handler).await,
            }
        });
    }
}

async fn serve_conn<S, F, Fut>(io: S, handler: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let svc = service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn sink(addr: SocketAddr, dir: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(d) = &dir {
        std::fs::create_dir_all(d)?;
    }
    let dir = Arc::new(dir);
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    accept_loop(addr, None, move |req| {
        let (dir, n) = (dir.clone(), n.clone());
        async move {
            if req.method() == hyper::Method::GET {
                return answer(StatusCode::OK, None);
            }
            let file = dir.as_ref().as_ref().map(|d| {
                d.join(format!(
                    "upload-{}",
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ))
            });
            match receive(req.into_body(), file).await {
                Ok(digest) => answer(StatusCode::CREATED, Some(digest)),
                Err(e) => {
                    eprintln!("sink: {e:#}");
                    answer(StatusCode::INTERNAL_SERVER_ERROR, None)
                }
            }
        }
    })
    .await;
    Ok(())
}

/// Receives a body: SHA-256 here, the bytes to a writer thread in 1 MiB pieces (as berth's
/// filesystem store does), fdatasync at the end; the file is removed afterwards so repeated
/// runs do not fill the disk.
async fn receive(mut body: Incoming, file: Option<PathBuf>) -> anyhow::Result<String> {
    let mut sha = Sha256::new();
    let (tx, writer) = match &file {
        Some(path) => {
            let mut f = std::fs::File::create(path)?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                while let Some(b) = rx.blocking_recv() {
                    f.write_all(&b)?;
                }
                f.sync_data()
            });
            (Some(tx), Some(writer))
        }
        None => (None, None),
    };
    let mut pending = BytesMut::with_capacity(IO_CHUNK);
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        sha.update(&data);
        if let Some(tx) = &tx {
            pending.extend_from_slice(&data);
            if pending.len() >= IO_CHUNK {
                tx.send(pending.split().freeze())
                    .await
                    .map_err(|_| anyhow::anyhow!("writer failed"))?;
                pending.reserve(IO_CHUNK);
            }
        }
    }
    if let Some(tx) = tx {
        if !pending.is_empty() {
            tx.send(pending.split().freeze())
                .await
                .map_err(|_| anyhow::anyhow!("writer failed"))?;
        }
        drop(tx);
    }
    if let Some(w) = writer {
        w.await??;
    }
    if let Some(path) = file {
        let _ = std::fs::remove_file(path);
    }
    Ok(format!("sha256:{}", hex::encode(sha.finalize())))
}

async fn files(
    addr: SocketAddr,
    file: PathBuf,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    let len = std::fs::metadata(&file)
        .with_context(|| format!("{}", file.display()))?
        .len();
    let file = Arc::new(file);
    accept_loop(addr, tls, move |req| {
        let file = file.clone();
        async move {
            if req.uri().path() == "/v2/" {
                return answer(StatusCode::OK, None);
            }
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut f = match std::fs::File::open(&*file) {
                    Ok(f) => f,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                loop {
                    let mut buf = BytesMut::zeroed(IO_CHUNK);
                    match f.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            buf.truncate(n);
                            if tx.blocking_send(Ok(buf.freeze())).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
            });
            let mut r = Response::new(Body::Stream(rx));
            r.headers_mut()
                .insert("content-length", hyper::header::HeaderValue::from(len));
            r
        }
    })
    .await;
    Ok(())
}

fn tls_acceptor(cert: &str, key: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert)?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
