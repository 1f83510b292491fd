//! Publishes the platform takes for itself instead of routing them.
//!
//! A [`MessageHook`] sees every authorized PUBLISH before routing. It either lets
//! the broker route the message as usual, or takes it: then the message reaches no
//! subscriber, and the client's acknowledgement (PUBACK, PUBREC) waits until the
//! hook's future says the platform has accepted it. It may also let the broker route
//! the message as usual besides. Several hooks may be installed: each sees every
//! message, so a hook answers [`Intercept::Route`] for what is not its business; the
//! acknowledgement waits for all of them. A QoS 0 message that was taken
//! holds the connection's reading the same way, so a device cannot outrun the
//! platform's handling of its messages.

use std::net::SocketAddr;

use bytes::Bytes;
use lode_mqtt::QoS;

use crate::{BoxFuture, Principal};

/// A client's publish, as the hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct Uplink<'a> {
    pub principal: &'a Principal,
    pub client_id: &'a str,
    pub peer: SocketAddr,
    pub topic: &'a str,
    pub payload: &'a Bytes,
    pub qos: QoS,
}

/// Why the platform could not accept a message it took.
#[derive(Debug, Clone, thiserror::Error)]
#[error("message not accepted: {0}")]
pub struct NotAccepted(pub String);

/// What the broker does with a publish.
pub enum Intercept {
    /// Route it to subscribers.
    Route,
    /// The platform took it: no routing. The acknowledgement is sent once the future
    /// resolves `Ok`; on `Err` the connection is closed (0x83) without one, so the
    /// client sends the message again.
    Take(BoxFuture<'static, Result<(), NotAccepted>>),
    /// The platform took it, and it is also routed to the subscribers allowed to see it
    /// (applications watching device traffic). The acknowledgement waits for both.
    TakeAndRoute(BoxFuture<'static, Result<(), NotAccepted>>),
}

impl std::fmt::Debug for Intercept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Intercept::Route => f.write_str("Route"),
            Intercept::Take(_) => f.write_str("Take"),
            Intercept::TakeAndRoute(_) => f.write_str("TakeAndRoute"),
        }
    }
}

/// Sees each authorized publish of a client before the broker routes it.
pub trait MessageHook: Send + Sync + 'static {
    fn on_publish(&self, uplink: Uplink<'_>) -> Intercept;
}

/// A routed message, as a [`Tap`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Tapped<'a> {
    pub topic: &'a str,
    pub payload: &'a Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// The publishing client; `None` for the platform's own messages
    /// ([`crate::Broker::publish`], wills).
    pub client: Option<TapClient<'a>>,
}

/// Who published a tapped message.
#[derive(Debug, Clone, Copy)]
pub struct TapClient<'a> {
    pub client_id: &'a str,
    /// [`Principal::unique_key`] of the publisher (`"pk/dn"` for a device).
    pub identity: Option<&'a str>,
    pub peer: SocketAddr,
}

/// Sees a copy of every message the broker routes (after authorization and the
/// [`MessageHook`]; messages the hook takes without routing are not tapped).
///
/// Called on the publisher's task: it must return at once and never wait (hand the
/// message to a bounded queue and count what does not fit).
pub trait Tap: Send + Sync + 'static {
    fn on_message(&self, msg: Tapped<'_>);
}
