//! MQTT broker core: sessions, routing, QoS flows, retained messages and wills.
//!
//! The broker is transport-agnostic: listeners hand it any byte stream through
//! [`Broker::serve_connection`], and it speaks MQTT 3.1.1 and 5.0 over it.

mod auth;
mod config;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

pub use auth::{AllowAnonymous, AuthHook, ConnectRequest, DenyAll, Principal};
pub use config::BrokerConfig;

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
    inner: Arc<()>,
}

impl Broker {
    /// Opens the broker over `store`, restoring sessions, queues and retained messages.
    pub async fn open(
        config: BrokerConfig,
        store: Arc<dyn lode_store::BrokerStore>,
        auth: Arc<dyn AuthHook>,
    ) -> Result<Broker, BrokerError> {
        let _ = (config, store, auth);
        unimplemented!()
    }

    /// Speaks MQTT over `stream` until the connection ends.
    pub async fn serve_connection<S>(&self, stream: S, info: ConnInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _ = (stream, info, &self.inner);
        unimplemented!()
    }

    /// Graceful shutdown: tells 5.0 clients (reason 0x8B), closes every connection,
    /// and waits until every state change is durable.
    pub async fn shutdown(&self) {
        unimplemented!()
    }

    /// Number of connected clients.
    pub fn connected_clients(&self) -> usize {
        unimplemented!()
    }
}
