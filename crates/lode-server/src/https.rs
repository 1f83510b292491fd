//! The HTTPS listener: the same router as the HTTP listener (health, metrics, management API,
//! device registration), served over TLS with the acceptor of the `mqtts` and `wss` listeners.
//!
//! Each connection gets the client address as axum's `ConnectInfo<SocketAddr>` request
//! extension, as `into_make_service_with_connect_info` does on the HTTP listener, so per-IP
//! quotas see the same addresses on both. On shutdown the listener stops accepting and every
//! open connection finishes its request in flight and closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::HttpBody;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics as m;

/// A bound HTTPS listener.
pub(crate) struct HttpsListener {
    pub(crate) listener: TcpListener,
    pub(crate) acceptor: TlsAcceptor,
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets open connections finish
/// their current request and waits for them.
pub(crate) async fn serve(
    listener: HttpsListener,
    app: Router,
    handshake_timeout: Duration,
    stop: CancellationToken,
) {
    let conns = TaskTracker::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            res = listener.listener.accept() => res,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => {
                backoff = MIN_BACKOFF;
                conn
            }
            Err(error) => {
                // Per-connection failures (reset before accept) and resource exhaustion alike:
                // log, wait a little, go on; the loop only ends on `stop`.
                metrics::counter!(m::ACCEPT_ERRORS, "listener" => NAME).increment(1);
                tracing::debug!(listener = NAME, %error, backoff = ?backoff, "accept failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(listener = NAME, %peer, %error, "failed to set TCP_NODELAY");
        }
        conns.spawn(connection(
            stream,
            peer,
            listener.acceptor.clone(),
            WithPeer {
                app: app.clone(),
                peer,
            },
            handshake_timeout,
            stop.clone(),
        ));
    }
    drop(listener);
    conns.close();
    conns.wait().await;
    tracing::debug!(listener = NAME, "stopped");
}

const NAME: &str = "https";
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One connection: TLS handshake (bounded by the handshake timeout), then HTTP/1.1 until the
/// client closes or `stop` asks for a graceful close.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: WithPeer,
    handshake_timeout: Duration,
    stop: CancellationToken,
) {
    let handshake = tokio::select! {
        _ = stop.cancelled() => return,
        res = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => res,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            metrics::counter!(m::HANDSHAKE_ERRORS, "listener" => NAME).increment(1);
            tracing::debug!(listener = NAME, %peer, %error, "handshake failed");
            return;
        }
        Err(_) => {
            metrics::counter!(m::HANDSHAKE_ERRORS, "listener" => NAME).increment(1);
            tracing::debug!(listener = NAME, %peer, "handshake timed out");
            return;
        }
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        res = conn.as_mut() => res,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(listener = NAME, %peer, %error, "connection ended with an error");
    }
}

/// The router with the client address of one connection added to every request.
#[derive(Clone)]
struct WithPeer {
    app: Router,
    peer: SocketAddr,
}

impl<B> tower::Service<Request<B>> for WithPeer
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as tower::Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <Router as tower::Service<Request<B>>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        self.app.call(req)
    }
}
