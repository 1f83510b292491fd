//! MQTT broker core: sessions, routing, QoS flows, retained messages and wills.
//!
//! The broker is transport-agnostic: listeners hand it any byte stream through
//! [`Broker::serve_connection`], and it speaks MQTT 3.1.1 and 5.0 over it.
//! Every change that must survive a crash goes through the store's group commit
//! before the client is told it happened.

mod auth;
mod config;
mod connection;
mod message;
mod session;
mod state;
mod stats;
mod trie;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

pub use auth::{
    AllowAnonymous, AuthHook, ConnectRequest, DenyAll, DenySubscribe, InvalidTopicFilter, Principal,
};
pub use config::BrokerConfig;
pub use stats::Stats;

use state::Inner;

/// What a listener knows about a new transport connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The listener's name (`"tcp"`, `"tls"`, `"ws"`, `"wss"`), for metrics.
    pub listener: &'static str,
    /// DER of the verified client certificate, when TLS client authentication is on.
    pub client_cert: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error(transparent)]
    Store(#[from] lode_store::StoreError),
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
}

/// A running broker. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// Opens the broker over `store`, restoring sessions, queues and retained messages.
    pub async fn open(
        config: BrokerConfig,
        store: Arc<dyn lode_store::BrokerStore>,
        auth: Arc<dyn AuthHook>,
    ) -> Result<Broker, BrokerError> {
        Ok(Broker {
            inner: Inner::open(config, store, auth).await?,
        })
    }

    /// Speaks MQTT over `stream` until the connection ends.
    pub async fn serve_connection<S>(&self, stream: S, info: ConnInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let inner = self.inner.clone();
        // Boxed: listeners keep one small pointer per connection, whatever the transport.
        let conn = Box::pin(connection::serve(inner, stream, info));
        self.inner.tracker.track_future(conn).await;
    }

    /// Graceful shutdown: tells 5.0 clients (reason 0x8B), closes every connection,
    /// and waits until every state change is durable.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner
            .kick_all(lode_mqtt::ReasonCode::ServerShuttingDown);
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        if let Err(error) = self.inner.flush().await {
            tracing::error!(%error, "failed to persist broker state at shutdown");
        }
    }

    /// Number of connected clients.
    pub fn connected_clients(&self) -> usize {
        self.inner.connected()
    }

    /// The broker's counters and gauges.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }
}
