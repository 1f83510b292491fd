//! Accept loops of the MQTT listeners and the per-connection transport setup (TLS, WebSocket)
//! before the stream is handed to the broker.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lode_broker::{Broker, ConnInfo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics as m;
use crate::ws;

/// How connections of one listener are set up before MQTT starts.
#[derive(Clone)]
pub(crate) enum Transport {
    Tcp,
    Tls(TlsAcceptor),
    Ws,
    Wss(TlsAcceptor),
}

impl Transport {
    /// The listener name given to the broker and used in metrics and logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls(_) => "tls",
            Transport::Ws => "ws",
            Transport::Wss(_) => "wss",
        }
    }
}

/// A bound MQTT listener.
pub(crate) struct MqttListener {
    pub(crate) listener: TcpListener,
    pub(crate) transport: Transport,
}

/// What every connection task shares.
pub(crate) struct ConnContext {
    pub(crate) broker: Broker,
    /// Caps open transport connections over all listeners.
    pub(crate) limiter: Arc<Semaphore>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) ws_max_message: usize,
    /// Tracks connection tasks, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the grace period is over: remaining connections are dropped.
    pub(crate) hard_stop: CancellationToken,
}

/// Accepts connections until `stop` is cancelled. Accept errors are logged and retried after a
/// short back-off; they never end the loop.
pub(crate) async fn accept_loop(
    listener: MqttListener,
    ctx: Arc<ConnContext>,
    stop: CancellationToken,
) {
    let name = listener.transport.name();
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
            Err(error) if is_per_connection(&error) => {
                tracing::debug!(listener = name, %error, "connection failed during accept");
                continue;
            }
            Err(error) => {
                metrics::counter!(m::ACCEPT_ERRORS, "listener" => name).increment(1);
                tracing::warn!(listener = name, %error, backoff = ?backoff, "accept failed, retrying");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Ok(permit) = ctx.limiter.clone().try_acquire_owned() else {
            metrics::counter!(m::CONNECTIONS_REFUSED, "listener" => name).increment(1);
            tracing::warn!(listener = name, %peer, "connection limit reached, closing new connection");
            drop(stream);
            continue;
        };
        metrics::counter!(m::CONNECTIONS_ACCEPTED, "listener" => name).increment(1);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(listener = name, %peer, %error, "failed to set TCP_NODELAY");
        }
        let transport = listener.transport.clone();
        let task_ctx = ctx.clone();
        ctx.tracker.spawn(async move {
            let hard_stop = task_ctx.hard_stop.clone();
            tokio::select! {
                _ = hard_stop.cancelled() => {
                    tracing::debug!(listener = name, %peer, "connection dropped at end of shutdown grace");
                }
                _ = handle(task_ctx.as_ref(), transport, stream, peer, permit) => {}
            }
        });
    }
    tracing::debug!(listener = name, "stopped accepting");
}

const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Errors of one connection that `accept` reports: retry at once.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Sets up the transport and lets the broker speak MQTT over it.
async fn handle(
    ctx: &ConnContext,
    transport: Transport,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _open = OpenGauge::new();
    let name = transport.name();
    let info = |client_cert| ConnInfo {
        peer,
        listener: name,
        client_cert,
    };
    // The TLS and WebSocket arms are boxed: their handshake state is large, and an
    // unboxed match would make every connection's task as big as the largest arm.
    match transport {
        Transport::Tcp => ctx.broker.serve_connection(stream, info(None)).await,
        Transport::Tls(acceptor) => {
            Box::pin(async move {
                let Some(tls) = handshake(ctx, name, peer, acceptor.accept(stream)).await else {
                    return;
                };
                let cert = crate::tls::client_cert(&tls);
                ctx.broker.serve_connection(tls, info(cert)).await;
            })
            .await
        }
        Transport::Ws => {
            Box::pin(async move {
                let Some(ws) = ws_handshake(ctx, name, peer, stream).await else {
                    return;
                };
                ctx.broker.serve_connection(ws, info(None)).await;
            })
            .await
        }
        Transport::Wss(acceptor) => {
            Box::pin(async move {
                let Some(tls) = handshake(ctx, name, peer, acceptor.accept(stream)).await else {
                    return;
                };
                let cert = crate::tls::client_cert(&tls);
                let Some(ws) = ws_handshake(ctx, name, peer, tls).await else {
                    return;
                };
                ctx.broker.serve_connection(ws, info(cert)).await;
            })
            .await
        }
    }
}

async fn ws_handshake<S>(
    ctx: &ConnContext,
    name: &'static str,
    peer: SocketAddr,
    stream: S,
) -> Option<ws::WsByteStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws = handshake(ctx, name, peer, ws::accept(stream, ctx.ws_max_message)).await?;
    Some(ws::WsByteStream::new(ws))
}

/// Runs a handshake under the handshake timeout; failures are counted and logged at debug.
async fn handshake<T, E: std::fmt::Display>(
    ctx: &ConnContext,
    name: &'static str,
    peer: SocketAddr,
    fut: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    let error = match tokio::time::timeout(ctx.handshake_timeout, fut).await {
        Ok(Ok(t)) => return Some(t),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    metrics::counter!(m::HANDSHAKE_ERRORS, "listener" => name).increment(1);
    tracing::debug!(listener = name, %peer, %error, "handshake failed");
    None
}

/// Keeps the open-connections gauge right, however the connection task ends.
struct OpenGauge;

impl OpenGauge {
    fn new() -> Self {
        metrics::gauge!(m::CONNECTIONS_OPEN).increment(1.0);
        OpenGauge
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics::gauge!(m::CONNECTIONS_OPEN).decrement(1.0);
    }
}
