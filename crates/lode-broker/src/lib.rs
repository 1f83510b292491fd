//! MQTT broker core: sessions, routing, QoS flows, retained messages and wills.
//!
//! The broker is transport-agnostic: listeners hand it any byte stream through
//! [`Broker::serve_connection`], and it speaks MQTT 3.1.1 and 5.0 over it.
//! Every change that must survive a crash goes through the store's group commit
//! before the client is told it happened.

mod auth;
mod config;
mod connection;
mod intercept;
mod message;
mod session;
mod state;
mod stats;
mod trie;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

pub use auth::{
    AllowAnonymous, AuthHook, BoxFuture, CloseReason, ConnectRequest, DenyAll, DenySubscribe,
    InvalidTopicFilter, Principal, Proxied,
};
pub use config::BrokerConfig;
pub use intercept::{Intercept, MessageHook, NotAccepted, Tap, TapClient, Tapped, Uplink};
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

/// Why [`Broker::publish`] did not publish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    #[error(transparent)]
    Store(#[from] lode_store::StoreError),
}

/// Why [`Broker::publish_as`] did not take a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishAsError {
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    #[error("not authorized to publish to {0:?}")]
    NotAuthorized(String),
    #[error(transparent)]
    NotAccepted(#[from] NotAccepted),
    #[error(transparent)]
    Store(#[from] lode_store::StoreError),
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

/// A reference to a broker that does not keep it alive: for the hooks the broker itself
/// holds (device sign-in, the thing model), so that dropping the last `Broker` frees it,
/// its hooks and their stores.
#[derive(Clone)]
pub struct WeakBroker(std::sync::Weak<Inner>);

impl WeakBroker {
    /// The broker, while it exists.
    pub fn upgrade(&self) -> Option<Broker> {
        self.0.upgrade().map(|inner| Broker { inner })
    }
}

impl Broker {
    /// A reference that does not keep the broker alive.
    pub fn downgrade(&self) -> WeakBroker {
        WeakBroker(Arc::downgrade(&self.inner))
    }

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

    /// Publishes a message from the platform itself (no client), as if a client had
    /// published it: retained handling, routing, durable queueing for persistent
    /// sessions. Returns once the message is durable where it has to be, with the
    /// number of sessions it reached.
    pub async fn publish(
        &self,
        topic: &str,
        payload: bytes::Bytes,
        qos: lode_mqtt::QoS,
        retain: bool,
    ) -> Result<usize, PublishError> {
        if !lode_mqtt::topic::valid_topic_name(topic)
            || topic.len() > self.inner.config.max_topic_len
            || topic.split('/').count() > self.inner.config.max_topic_levels
        {
            return Err(PublishError::InvalidTopic(topic.to_owned()));
        }
        let qos = qos.min(self.inner.config.maximum_qos);
        let msg = std::sync::Arc::new(state::message(
            bytes::Bytes::copy_from_slice(topic.as_bytes()),
            payload,
            qos,
            retain,
            lode_mqtt::PublishProperties::default(),
            0,
        ));
        let mut ops = Vec::new();
        if retain {
            ops.push(self.inner.retain(&msg, topic));
        }
        let (matched, _) = self.inner.route(&msg, topic, &mut ops, None);
        self.inner.tap(&msg, topic, None);
        if !ops.is_empty() {
            self.inner.submit(ops).await?;
        }
        Ok(matched)
    }

    /// How many subscribers a message on `topic` would reach now (a session once, a
    /// shared group once), without publishing it.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.inner.subscriber_count(topic)
    }

    /// Adds a tap that sees a copy of every routed message ([`Tap`]).
    pub fn add_tap(&self, tap: std::sync::Arc<dyn Tap>) {
        let mut taps = self.inner.taps.write();
        *taps = taps.iter().cloned().chain([tap]).collect();
    }

    /// Adds a hook that may take client publishes for the platform ([`MessageHook`]).
    /// Every hook sees every authorized publish, in the order they were added; the
    /// message is routed unless one of them answers [`Intercept::Take`], and the client's
    /// acknowledgement waits for the futures of all that took part.
    pub fn add_message_hook(&self, hook: std::sync::Arc<dyn MessageHook>) {
        let mut hooks = self.inner.message_hooks.write();
        *hooks = hooks.iter().cloned().chain([hook]).collect();
    }

    /// Publishes for a signed-in client of another transport (CoAP, HTTP) exactly as if
    /// it had sent an MQTT PUBLISH: the same topic checks and permissions, the same
    /// message hook, the same routing. Resolves once the message is accepted (durable
    /// where it has to be), with the number of sessions it reached.
    pub async fn publish_as(
        &self,
        principal: &Principal,
        client_id: &str,
        peer: SocketAddr,
        topic: &str,
        payload: bytes::Bytes,
        qos: lode_mqtt::QoS,
    ) -> Result<usize, PublishAsError> {
        let inner = &self.inner;
        if topic.is_empty()
            || !lode_mqtt::topic::valid_topic_name(topic)
            || topic.len() > inner.config.max_topic_len
            || topic.split('/').count() > inner.config.max_topic_levels
        {
            return Err(PublishAsError::InvalidTopic(topic.to_owned()));
        }
        if !inner.auth.authorize_publish(principal, topic) {
            stats::inc(&inner.stats.publish_unauthorized);
            return Err(PublishAsError::NotAuthorized(topic.to_owned()));
        }
        stats::inc(&inner.stats.publish_received);
        let qos = qos.min(inner.config.maximum_qos);
        let mut accepted = None;
        {
            let uplink = Uplink {
                principal,
                client_id,
                peer,
                topic,
                payload: &payload,
                qos,
            };
            match inner.intercept(uplink) {
                Intercept::Route => {}
                Intercept::Take(fut) => {
                    stats::inc(&inner.stats.publish_taken);
                    fut.await?;
                    return Ok(0);
                }
                Intercept::TakeAndRoute(fut) => {
                    stats::inc(&inner.stats.publish_taken);
                    accepted = Some(fut);
                }
            }
        }
        let msg = std::sync::Arc::new(state::message(
            bytes::Bytes::copy_from_slice(topic.as_bytes()),
            payload,
            qos,
            false,
            lode_mqtt::PublishProperties::default(),
            0,
        ));
        let mut ops = Vec::new();
        let (matched, _) = inner.route(&msg, topic, &mut ops, None);
        inner.tap(
            &msg,
            topic,
            Some(TapClient {
                client_id,
                identity: principal.unique_key.as_deref(),
                peer,
            }),
        );
        if !ops.is_empty() {
            inner.submit(ops).await?;
        }
        if let Some(fut) = accepted {
            fut.await?;
        }
        Ok(matched)
    }

    /// Ends the connection holding the unique identity `key`
    /// ([`Principal::unique_key`]) with `reason`. Returns whether one was connected.
    pub fn disconnect_identity(&self, key: &str, reason: lode_mqtt::ReasonCode) -> bool {
        self.inner.kick_unique(key, reason)
    }

    /// Adds server-side subscriptions to the session of the connected identity `key`,
    /// as those of [`Principal::auto_subscriptions`] (no local, no retained messages):
    /// a gateway receives the downlinks of the sub-devices it logged in. Returns whether
    /// the identity is connected.
    pub fn subscribe_identity(&self, key: &str, subs: &[(String, lode_mqtt::QoS)]) -> bool {
        self.inner.subscribe_identity(key, subs)
    }

    /// Removes subscriptions of the connected identity `key`. Returns whether it is
    /// connected.
    pub fn unsubscribe_identity(&self, key: &str, filters: &[String]) -> bool {
        self.inner.unsubscribe_identity(key, filters)
    }

    /// Ends the connection of `client_id` with `reason`. Returns whether one was connected.
    pub fn disconnect_client(&self, client_id: &str, reason: lode_mqtt::ReasonCode) -> bool {
        self.inner.kick_client(client_id, reason)
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
