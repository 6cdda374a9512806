//! The listener: plain HTTP or TLS (rustls), HTTP/1.1 and HTTP/2, connection limits and idle
//! timeouts (see `connections.rs`), and graceful shutdown (stop accepting, let in-flight
//! requests finish within the configured grace, then close). There is deliberately no total
//! request timeout: a multi-gigabyte layer may take as long as it takes while bytes keep
//! flowing (a stalled body is caught by `server.body_idle_timeout`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use berth_core::config::Config;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connections::{Closing, Connection, Connections};

/// A TLS handshake must finish within this time.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// After a connection is told to close (idle, evicted, shutdown with nothing in flight), it
/// gets this long to do so before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// One log line about failing accepts at most this often.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot read TLS {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

fn load_tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, ListenError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| ListenError::TlsFile {
            what: "certificate",
            path: cert.display().to_string(),
            source: io::Error::other(e),
        })?;
    if certs.is_empty() {
        return Err(ListenError::Tls(format!(
            "{} holds no PEM certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ListenError::TlsFile {
        what: "key",
        path: key.display().to_string(),
        source: io::Error::other(e),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ListenError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ListenError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Binds the configured address. Separate from [`serve`] so callers can learn the port.
pub async fn bind(config: &Config) -> Result<TcpListener, ListenError> {
    let addr = config.listen_addr().map_err(ListenError::Config)?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })
}

/// Logs failing accepts without flooding: the first at once, then one line per
/// [`ACCEPT_ERROR_LOG_INTERVAL`] saying how many more failed.
struct AcceptErrors {
    last_logged: Option<tokio::time::Instant>,
    since: u64,
}

impl AcceptErrors {
    fn record(&mut self, e: &io::Error) {
        self.since += 1;
        if self
            .last_logged
            .is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL)
        {
            tracing::warn!(
                error = %e,
                failures = self.since,
                "accept failed (out of file descriptors? see server.max_connections)"
            );
            self.last_logged = Some(tokio::time::Instant::now());
            self.since = 0;
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains. Every connection is
/// admitted by `connections` first (which all listeners of the process share).
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    app: Router,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ListenError> {
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(c), Some(k)) => Some(load_tls(c, k)?),
        _ => None,
    };
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout.0)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(60)));
    let builder = Arc::new(builder);
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);

    let local = listener.local_addr().ok();
    tracing::info!(
        addr = ?local,
        tls = tls.is_some(),
        max_connections = connections.limits.total,
        max_connections_per_address = connections.limits.per_address,
        "listening"
    );
    let mut accept_errors = AcceptErrors {
        last_logged: None,
        since: 0,
    };
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    connections.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    accept_errors.record(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admitted = match connections.admit(peer.ip()) {
            Ok(a) => a,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let connection = admitted.connection.clone();
        let service = PeerService {
            app: app.clone(),
            peer,
            connection: connection.clone(),
        };
        let connections = connections.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let _admitted = admitted;
            let closing = async {
                tokio::select! {
                    why = connection.closing(&connections.limits) => {
                        if why == Closing::Idle {
                            connections.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(why)
                    }
                    () = stop.cancelled() => None,
                }
            };
            let result = match tls {
                None => serve_conn(&builder, stream, service, closing, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            serve_conn(&builder, tls_stream, service, closing, peer).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tasks.close();
    tracing::info!(
        connections = tasks.len(),
        "shutting down: draining in-flight requests"
    );
    stop.cancel();
    let grace = config.server.shutdown_grace.0;
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(grace = ?grace, "connections still open after the shutdown grace; closing them");
    }
    Ok(())
}

/// Serves one connection until it ends, or until `closing` says it must go: then it is shut
/// down gracefully (in-flight requests finish; HTTP/2 gets a GOAWAY) and dropped after
/// [`CLOSE_GRACE`] if it is idle, or when its last request is done.
async fn serve_conn<S>(
    builder: &Builder<TokioExecutor>,
    stream: S,
    service: PeerService,
    closing: impl Future<Output = Option<Closing>>,
    peer: SocketAddr,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = service.connection.clone();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::pin!(closing);
    let why = tokio::select! {
        result = conn.as_mut() => return result,
        why = &mut closing => why,
    };
    match why {
        Some(Closing::Idle) => tracing::debug!(%peer, "closing an idle connection"),
        Some(Closing::Evicted) => {
            tracing::debug!(%peer, "closing an idle connection to make room (server.max_connections)")
        }
        None => {}
    }
    conn.as_mut().graceful_shutdown();
    if connection.is_idle() {
        // Nothing in flight: there is nothing to wait for but the close itself.
        let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
        return Ok(());
    }
    conn.await
}

/// The router of one connection: records the peer's address in every request's extensions (as
/// axum's `ConnectInfo`), for the audit log and login throttling, and keeps the connection's
/// idle clock (a request counts until its response body is sent).
#[derive(Clone)]
struct PeerService {
    app: Router,
    peer: SocketAddr,
    connection: Arc<Connection>,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for PeerService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        use tower::Service;
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let guard = self.connection.request_started();
        let future = self.app.clone().call(req);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| {
                Body::new(Guarded {
                    body,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that keeps its request counted as in flight until it is sent (dropped).
struct Guarded {
    body: Body,
    _guard: crate::connections::RequestGuard,
}

impl http_body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
