//! Serving connections, plain or TLS, with limits no client can get past:
//! at most `--web.max-connections` open at once (the rest are closed as
//! soon as they are accepted), a deadline for each request's headers that
//! also ends idle kept-alive connections (`--web.read-header-timeout`), the
//! same deadline for a TLS handshake, and HTTP/1.1 only.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::self_metrics::Refusal;

use super::HttpMetrics;
use crate::backoff::Backoff;

/// How long open connections may take to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);

/// Waits after a failed accept (out of file descriptors, say), so the loop
/// does not spin while the condition lasts.
const ACCEPT_RETRY: Backoff = Backoff {
    min: Duration::from_millis(10),
    max: Duration::from_secs(1),
    jitter: 0.0,
};

/// What the server allows a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Most connections open at once; 0 for no limit.
    pub max_connections: usize,
    /// Time for a request's headers (and for the next request on a
    /// kept-alive connection, and for a TLS handshake).
    pub read_header_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 512,
            read_header_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets open
/// connections finish for a few seconds.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServeLimits,
    metrics: HttpMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(match limits.max_connections {
        0 => Semaphore::MAX_PERMITS,
        n => n,
    }));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut accept_failures = 0;
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    accept_failures = 0;
                    conn
                }
                Err(e) => {
                    accept_failures += 1;
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY.delay(accept_failures)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Small answers (/-/ready, a 503) go out at once, not after an ACK.
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Closed at once: a flood of connections costs a descriptor
            // for microseconds, and what is already open keeps working.
            drop(tcp);
            metrics.refused(Refusal::MaxConnections);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _open = metrics.connection_opened(permit);
            // HTTP/1.1 only: Prometheus scrapes with it, and an HTTP/2
            // server would be one more protocol to harden.
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.read_header_timeout);
            let served = match acceptor {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        limits.read_header_timeout,
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(_)) => return metrics.refused(Refusal::TlsHandshakeFailed),
                        Err(_) => return metrics.refused(Refusal::TlsHandshakeTimeout),
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                if header_timed_out(&e) {
                    metrics.refused(Refusal::HeaderTimeout);
                }
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        info!("open connections did not finish in time; closing them");
    }
    Ok(())
}

/// Whether hyper closed the connection because headers did not arrive in
/// time (a slow or stalled client, or an idle kept-alive connection).
fn header_timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        cause = c.source();
    }
    false
}
