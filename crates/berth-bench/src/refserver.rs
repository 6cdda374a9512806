//! Minimal reference servers, started by the benchmark as separate processes (this binary with
//! a first argument of `sink` or `files`), so that berth's figures can be set against the least
//! work any registry must do on this machine with this client, not only against Distribution:
//!
//! - `sink ADDR DIR`: answers a monolithic `POST ?digest=` by streaming the body, hashing it
//!   with SHA-256 in the receiving task, and writing it through a writer thread in aligned
//!   1 MiB pieces with `O_DIRECT` to a file in DIR that it fdatasyncs before answering 201
//!   with the digest; what a durable
//!   monolithic push needs and nothing else (no database, no rename, no directory fsync). A
//!   chunked push (`POST`, `PATCH`es, `PUT ?digest=`) gets the same per `PATCH`: the hash
//!   state is kept in memory between requests and each `PATCH` is fdatasynced before its 202,
//!   as a registry must before it acknowledges bytes, but nothing records the offset. With
//!   DIR `-` it only receives and hashes.
//! - `files ADDR FILE [CERT KEY]`: answers every GET with FILE, read in 1 MiB pieces (as berth
//!   reads blobs), over HTTP/1.1, or over TLS 1.3 with rustls (aws-lc-rs, as berth) when a
//!   certificate and key are given; the TLS cost of this machine with no registry around it.
//!
//! `GET /v2/` answers 200 on both, for the benchmark's readiness probe.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bytes::BytesMut;
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

/// Chunked uploads in progress: the hash so far, by upload number.
type Sessions = std::sync::Mutex<std::collections::HashMap<u64, Sha256>>;

async fn sink(addr: SocketAddr, dir: Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(d) = &dir {
        std::fs::create_dir_all(d)?;
    }
    let dir = Arc::new(dir);
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sessions = Arc::new(Sessions::default());
    accept_loop(addr, None, move |req| {
        let (dir, n, sessions) = (dir.clone(), n.clone(), sessions.clone());
        async move {
            let file_of = |id: u64| {
                dir.as_ref()
                    .as_ref()
                    .map(|d| d.join(format!("upload-{id}")))
            };
            let monolithic = req.method() == hyper::Method::POST
                && req.uri().query().is_some_and(|q| q.contains("digest="));
            match *req.method() {
                hyper::Method::GET => answer(StatusCode::OK, None),
                _ if monolithic => {
                    let id = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let file = file_of(id);
                    let mut sha = Sha256::new();
                    match receive(req.into_body(), &mut sha, file.as_deref()).await {
                        Ok(()) => finished(file, sha),
                        Err(e) => failed(e),
                    }
                }
                hyper::Method::POST => {
                    let id = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Some(f) = file_of(id)
                        && let Err(e) = std::fs::File::create(f)
                    {
                        return failed(e.into());
                    }
                    lock(&sessions).insert(id, Sha256::new());
                    session_answer(StatusCode::ACCEPTED, id)
                }
                hyper::Method::PATCH | hyper::Method::PUT => {
                    let put = req.method() == hyper::Method::PUT;
                    let id = req
                        .uri()
                        .path()
                        .rsplit('/')
                        .next()
                        .and_then(|s| s.parse::<u64>().ok());
                    let Some((id, mut sha)) =
                        id.and_then(|id| lock(&sessions).remove(&id).map(|sha| (id, sha)))
                    else {
                        return answer(StatusCode::NOT_FOUND, None);
                    };
                    let file = file_of(id);
                    if let Err(e) = receive(req.into_body(), &mut sha, file.as_deref()).await {
                        return failed(e);
                    }
                    if put {
                        return finished(file, sha);
                    }
                    lock(&sessions).insert(id, sha);
                    session_answer(StatusCode::ACCEPTED, id)
                }
                _ => answer(StatusCode::METHOD_NOT_ALLOWED, None),
            }
        }
    })
    .await;
    Ok(())
}

fn lock(s: &Sessions) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Sha256>> {
    s.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn failed(e: anyhow::Error) -> Response<Body> {
    eprintln!("sink: {e:#}");
    answer(StatusCode::INTERNAL_SERVER_ERROR, None)
}

fn session_answer(status: StatusCode, id: u64) -> Response<Body> {
    let mut r = answer(status, None);
    if let Ok(loc) = hyper::header::HeaderValue::from_str(&format!("/v2/sink/blobs/uploads/{id}")) {
        r.headers_mut().insert("location", loc);
    }
    r
}

/// Ends an upload: its file is removed, so repeated runs do not fill the disk, and the answer
/// is 201 with the digest.
fn finished(file: Option<PathBuf>, sha: Sha256) -> Response<Body> {
    if let Some(f) = file {
        let _ = std::fs::remove_file(f);
    }
    let digest = format!("sha256:{}", hex::encode(sha.finalize()));
    answer(StatusCode::CREATED, Some(digest))
}

/// Alignment of `O_DIRECT` writes (the page size covers every Linux filesystem here).
const DIRECT_ALIGN: usize = 4096;

/// An `IO_CHUNK` buffer whose bytes start on a `DIRECT_ALIGN` boundary, as `O_DIRECT` needs.
/// Moving it moves the `Vec`, not its bytes, so the alignment holds.
struct Aligned {
    v: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new() -> Aligned {
        let v = vec![0u8; IO_CHUNK + DIRECT_ALIGN];
        let start = v.as_ptr().align_offset(DIRECT_ALIGN);
        Aligned { v, start, len: 0 }
    }

    /// Copies as much of `b` as fits; returns how much.
    fn push(&mut self, b: &[u8]) -> usize {
        let n = b.len().min(IO_CHUNK - self.len);
        let at = self.start + self.len;
        self.v[at..at + n].copy_from_slice(&b[..n]);
        self.len += n;
        n
    }

    fn bytes(&self) -> &[u8] {
        &self.v[self.start..self.start + self.len]
    }
}

/// Receives a body into `sha` and, with a `file`, appends it there through a writer thread:
/// aligned 1 MiB pieces with `O_DIRECT` (the page cache where the filesystem refuses it, and
/// for an unaligned tail), two buffers taking turns, one fdatasync before this returns. The
/// fastest way to the disk found on the benchmark machine, so the reference is the least a
/// durable push costs, not a slower technique than berth's. An empty body touches no file.
async fn receive(
    mut body: Incoming,
    sha: &mut Sha256,
    file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let (tx, mut back, writer) = match file {
        Some(path) if !body.is_end_stream() => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(path)?;
            let mut direct = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok();
            let mut pos = f.metadata()?.len();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Aligned>(2);
            let (back_tx, back) = tokio::sync::mpsc::unbounded_channel::<Aligned>();
            let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                while let Some(buf) = rx.blocking_recv() {
                    let b = buf.bytes();
                    let aligned = b.len().is_multiple_of(DIRECT_ALIGN)
                        && pos.is_multiple_of(DIRECT_ALIGN as u64);
                    match direct
                        .as_ref()
                        .filter(|_| aligned)
                        .map(|d| d.write_all_at(b, pos))
                    {
                        Some(Ok(())) => {}
                        Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
                            direct = None;
                            f.write_all_at(b, pos)?;
                        }
                        Some(Err(e)) => return Err(e),
                        None => f.write_all_at(b, pos)?,
                    }
                    pos += b.len() as u64;
                    let _ = back_tx.send(buf);
                }
                f.sync_data()
            });
            (Some(tx), Some(back), Some(writer))
        }
        _ => (None, None, None),
    };
    let mut live = 0; // buffers allocated: at most two, one filling while one is written
    let mut pending: Option<Aligned> = None;
    let writer_failed = || anyhow::anyhow!("writer failed");
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        sha.update(&data);
        let (Some(tx), Some(back)) = (&tx, &mut back) else {
            continue;
        };
        let mut rest = &data[..];
        while !rest.is_empty() {
            let buf = match &mut pending {
                Some(b) => b,
                None => {
                    let mut b = match back.try_recv() {
                        Ok(b) => b,
                        Err(_) if live < 2 => {
                            live += 1;
                            Aligned::new()
                        }
                        Err(_) => back.recv().await.ok_or_else(writer_failed)?,
                    };
                    b.len = 0;
                    pending.insert(b)
                }
            };
            rest = &rest[buf.push(rest)..];
            if buf.len == IO_CHUNK
                && let Some(full) = pending.take()
            {
                tx.send(full).await.map_err(|_| writer_failed())?;
            }
        }
    }
    if let Some(tx) = tx {
        if let Some(last) = pending.take().filter(|b| b.len > 0) {
            tx.send(last).await.map_err(|_| writer_failed())?;
        }
        drop(tx);
    }
    if let Some(w) = writer {
        w.await??;
    }
    Ok(())
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
