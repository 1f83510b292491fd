//! Authentication and authorization hooks, called at CONNECT, PUBLISH and SUBSCRIBE.

use std::net::SocketAddr;

use lode_mqtt::ReasonCode;

/// What the broker knows about a connecting client when it asks the hook.
#[derive(Debug, Clone)]
pub struct ConnectRequest<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub peer: SocketAddr,
    /// DER of the client certificate when the transport is TLS with client authentication.
    pub client_cert: Option<&'a [u8]>,
    pub keep_alive: u16,
}

/// The identity a hook attaches to an accepted connection; later calls receive it back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// Name used in logs and metrics (a device identity, an application, or "anonymous").
    pub name: String,
}

/// Pluggable authentication and authorization.
pub trait AuthHook: Send + Sync + 'static {
    /// Accepts or refuses a connection. The error is the CONNACK reason code.
    fn authenticate(&self, req: &ConnectRequest<'_>) -> Result<Principal, ReasonCode>;
    /// Whether `principal` may publish to `topic`.
    fn authorize_publish(&self, principal: &Principal, topic: &str) -> bool;
    /// Whether `principal` may subscribe to `filter` (shared-subscription prefix removed).
    fn authorize_subscribe(&self, principal: &Principal, filter: &str) -> bool;
}

/// Development mode: every client is accepted and may do anything.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAnonymous;

impl AuthHook for AllowAnonymous {
    fn authenticate(&self, req: &ConnectRequest<'_>) -> Result<Principal, ReasonCode> {
        Ok(Principal {
            name: req.username.unwrap_or("anonymous").to_owned(),
        })
    }

    fn authorize_publish(&self, _: &Principal, _: &str) -> bool {
        true
    }

    fn authorize_subscribe(&self, _: &Principal, _: &str) -> bool {
        true
    }
}

/// Refuses every connection: what `lodestone serve` runs when neither device
/// authentication nor anonymous mode is configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct DenyAll;

impl AuthHook for DenyAll {
    fn authenticate(&self, _: &ConnectRequest<'_>) -> Result<Principal, ReasonCode> {
        Err(ReasonCode::NotAuthorized)
    }

    fn authorize_publish(&self, _: &Principal, _: &str) -> bool {
        false
    }

    fn authorize_subscribe(&self, _: &Principal, _: &str) -> bool {
        false
    }
}
