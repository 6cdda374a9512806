//! The listener: plain HTTP or TLS (rustls), HTTP/1.1 and HTTP/2, a header-read timeout
//! against slow clients, and graceful shutdown (stop accepting, let in-flight requests
//! finish within the configured grace, then close). There is deliberately no total request
//! timeout: a multi-gigabyte layer may take as long as it takes while bytes keep flowing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use berth_core::config::Config;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A TLS handshake must finish within this time.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

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

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    app: Router,
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
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, tls = tls.is_some(), "listening");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let service = PeerService {
            app: app.clone(),
            peer,
        };
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => serve_conn(&builder, watcher, stream, service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(tls_stream)) => {
                            serve_conn(&builder, watcher, tls_stream, service).await
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
    tracing::info!(
        connections = graceful.count(),
        "shutting down: draining in-flight requests"
    );
    let grace = config.server.shutdown_grace.0;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?grace, "connections still open after the shutdown grace; closing them");
    }
    Ok(())
}

async fn serve_conn<S>(
    builder: &Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    stream: S,
    service: PeerService,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    watcher.watch(conn.into_owned()).await
}

/// The router of one connection, which records the peer's address in every request's
/// extensions (as axum's `ConnectInfo`), for the audit log and login throttling.
#[derive(Clone)]
struct PeerService {
    app: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for PeerService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        use tower::Service;
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        self.app.clone().call(req)
    }
}
