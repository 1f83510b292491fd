//! Authentication and authorization hooks, called at CONNECT, PUBLISH and SUBSCRIBE,
//! and told when a connection starts and ends.
//!
//! Authentication is asynchronous (it may look the client up in a registry);
//! authorization is synchronous and must be cheap: it runs for every PUBLISH and
//! SUBSCRIBE, from what the hook put into the [`Principal`] at CONNECT.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use lode_mqtt::{QoS, ReasonCode, topic};

/// A boxed future, so that [`AuthHook`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
#[derive(Clone, Default)]
pub struct Principal {
    /// Name used in logs and metrics (a device identity, an application, or "anonymous").
    pub name: String,
    /// An identity that may hold one connection at a time, whatever client id it uses
    /// (a device): a new connection with the same key ends the old one (0x8E).
    pub unique_key: Option<String>,
    /// Subscriptions the broker makes for the connection at CONNECT, without a
    /// SUBSCRIBE from the client (server-side subscription). They never deliver the
    /// client's own messages back to it (no local), and send no retained messages.
    pub auto_subscriptions: Vec<(String, QoS)>,
    /// Messages delivered to the connection right after CONNACK, without a
    /// subscription (QoS 0): `(topic, payload)`.
    pub greetings: Vec<(String, Bytes)>,
    /// The hook's own data about the client, for its authorization calls.
    pub ext: Option<Arc<dyn Any + Send + Sync>>,
    /// Identities the connection speaks for besides its own: the sub-devices a gateway
    /// has logged in. Shared with the hook, which adds and removes them.
    pub proxied: Option<Arc<Proxied>>,
}

/// Identity keys (`"pk/dn"`) a connection speaks for besides its own.
#[derive(Debug, Default)]
pub struct Proxied(parking_lot::RwLock<std::collections::HashSet<String>>);

impl Proxied {
    /// Adds `key`; returns whether it was new.
    pub fn insert(&self, key: String) -> bool {
        self.0.write().insert(key)
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&self, key: &str) -> bool {
        self.0.write().remove(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.read().contains(key)
    }

    pub fn len(&self) -> usize {
        self.0.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.read().is_empty()
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> Vec<String> {
        self.0.read().iter().cloned().collect()
    }
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("unique_key", &self.unique_key)
            .field("auto_subscriptions", &self.auto_subscriptions.len())
            .field("greetings", &self.greetings.len())
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// Whether the connection speaks for the identity `key` (`"pk/dn"`): its own, or a
    /// sub-device it logged in.
    pub fn speaks_for(&self, key: &str) -> bool {
        self.unique_key.as_deref() == Some(key)
            || self.proxied.as_ref().is_some_and(|p| p.contains(key))
    }

    /// A principal known only by its name.
    pub fn named(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            ..Principal::default()
        }
    }
}

/// Why a connection ended, as told to [`AuthHook::disconnected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT.
    Client,
    /// The broker ended the connection with this reason code.
    Server(ReasonCode),
    /// The network connection closed or failed.
    Transport,
}

/// Pluggable authentication and authorization.
pub trait AuthHook: Send + Sync + 'static {
    /// Accepts or refuses a connection. The error is the CONNACK reason code.
    fn authenticate<'a>(
        &'a self,
        req: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, ReasonCode>>;
    /// Whether `principal` may publish to `topic`.
    fn authorize_publish(&self, principal: &Principal, topic: &str) -> bool;
    /// Whether `principal` may subscribe to `filter` (shared-subscription prefix removed).
    fn authorize_subscribe(&self, principal: &Principal, filter: &str) -> bool;
    /// The SUBACK reason code refusing `filter` to `principal`, or `None` to allow it.
    /// By default 0x87 Not authorized when [`AuthHook::authorize_subscribe`] says no
    /// (3.1.1 clients see every refusal as 0x80).
    fn check_subscribe(&self, principal: &Principal, filter: &str) -> Option<ReasonCode> {
        (!self.authorize_subscribe(principal, filter)).then_some(ReasonCode::NotAuthorized)
    }
    /// Called once the connection is accepted (after CONNACK).
    fn connected(&self, _principal: &Principal, _client_id: &str, _peer: SocketAddr) {}
    /// Called once when an accepted connection has ended.
    fn disconnected(&self, _principal: &Principal, _client_id: &str, _reason: CloseReason) {}
}

/// Development mode: every client is accepted and may do anything.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAnonymous;

impl AuthHook for AllowAnonymous {
    fn authenticate<'a>(
        &'a self,
        req: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, ReasonCode>> {
        let name = req.username.unwrap_or("anonymous").to_owned();
        Box::pin(async move { Ok(Principal::named(name)) })
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
    fn authenticate<'a>(
        &'a self,
        _: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, ReasonCode>> {
        Box::pin(async { Err(ReasonCode::NotAuthorized) })
    }

    fn authorize_publish(&self, _: &Principal, _: &str) -> bool {
        false
    }

    fn authorize_subscribe(&self, _: &Principal, _: &str) -> bool {
        false
    }
}

/// A configured topic filter that is not a valid MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid topic filter: {0:?}")]
pub struct InvalidTopicFilter(pub String);

/// Refuses subscriptions to configured topic filters, whatever the wrapped hook
/// allows; everything else is decided by the wrapped hook.
///
/// A SUBSCRIBE filter is refused (SUBACK 0x80 for 3.1.1, 0x87 Not authorized for
/// 5.0) when a denied filter matches it read literally, as a topic name: denying
/// `private/#` refuses `private/a`, `private/+` and `private/#`, and denying
/// `test/nosubscribe` refuses exactly that filter. This judges the filter a client
/// asks for, not the messages it would receive: a client that subscribes to `#` is
/// not refused by a `private/#` entry. The `$share/{group}/` prefix is removed before
/// the check.
///
/// 5.0 clients get 0x87 Not authorized unless [`DenySubscribe::with_reason`] picks
/// another failure code, such as 0x80 Unspecified error to not reveal why.
pub struct DenySubscribe {
    inner: Arc<dyn AuthHook>,
    filters: Vec<String>,
    reason: ReasonCode,
}

impl DenySubscribe {
    /// Wraps `inner`, refusing subscriptions that `filters` match.
    pub fn new<I, F>(inner: Arc<dyn AuthHook>, filters: I) -> Result<Self, InvalidTopicFilter>
    where
        I: IntoIterator<Item = F>,
        F: Into<String>,
    {
        let filters = filters
            .into_iter()
            .map(Into::into)
            .map(|f: String| {
                if topic::valid_topic_filter(&f) {
                    Ok(f)
                } else {
                    Err(InvalidTopicFilter(f))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DenySubscribe {
            inner,
            filters,
            reason: ReasonCode::NotAuthorized,
        })
    }

    /// Refuses with `reason` instead of 0x87. A code that is not a failure (below
    /// 0x80) is replaced by 0x80 Unspecified error, so a denied filter is never granted.
    pub fn with_reason(mut self, reason: ReasonCode) -> Self {
        self.reason = if reason.is_error() {
            reason
        } else {
            ReasonCode::UnspecifiedError
        };
        self
    }

    /// Whether a denied filter matches `filter`.
    pub fn denies(&self, filter: &str) -> bool {
        self.filters.iter().any(|d| topic::matches(d, filter))
    }
}

impl std::fmt::Debug for DenySubscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenySubscribe")
            .field("filters", &self.filters)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl AuthHook for DenySubscribe {
    fn authenticate<'a>(
        &'a self,
        req: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, ReasonCode>> {
        self.inner.authenticate(req)
    }

    fn connected(&self, principal: &Principal, client_id: &str, peer: SocketAddr) {
        self.inner.connected(principal, client_id, peer);
    }

    fn disconnected(&self, principal: &Principal, client_id: &str, reason: CloseReason) {
        self.inner.disconnected(principal, client_id, reason);
    }

    fn authorize_publish(&self, principal: &Principal, topic: &str) -> bool {
        self.inner.authorize_publish(principal, topic)
    }

    fn authorize_subscribe(&self, principal: &Principal, filter: &str) -> bool {
        !self.denies(filter) && self.inner.authorize_subscribe(principal, filter)
    }

    fn check_subscribe(&self, principal: &Principal, filter: &str) -> Option<ReasonCode> {
        if self.denies(filter) {
            Some(self.reason)
        } else {
            self.inner.check_subscribe(principal, filter)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(filters: &[&str]) -> DenySubscribe {
        DenySubscribe::new(Arc::new(AllowAnonymous), filters.iter().copied()).expect("valid")
    }

    #[test]
    fn exact_filter_is_refused_others_allowed() {
        let h = hook(&["test/nosubscribe"]);
        let p = Principal::default();
        assert!(!h.authorize_subscribe(&p, "test/nosubscribe"));
        assert!(h.authorize_subscribe(&p, "test/other"));
        assert!(h.authorize_subscribe(&p, "test/+"));
        assert!(h.authorize_subscribe(&p, "#"));
        assert!(h.authorize_publish(&p, "test/nosubscribe"));
    }

    #[test]
    fn wildcard_entry_covers_narrower_filters() {
        let h = hook(&["private/#"]);
        for f in [
            "private",
            "private/a",
            "private/+",
            "private/#",
            "private/a/b",
        ] {
            assert!(h.denies(f), "{f}");
        }
        for f in ["public/a", "+/a", "#"] {
            assert!(!h.denies(f), "{f}");
        }
    }

    #[test]
    fn invalid_filter_is_an_error() {
        let err = DenySubscribe::new(Arc::new(AllowAnonymous), ["a/#/b"]).unwrap_err();
        assert_eq!(err, InvalidTopicFilter("a/#/b".into()));
    }

    #[test]
    fn reason_code_is_configurable_and_always_a_failure() {
        let p = Principal::default();
        let h = hook(&["x"]);
        assert_eq!(h.check_subscribe(&p, "x"), Some(ReasonCode::NotAuthorized));
        assert_eq!(h.check_subscribe(&p, "y"), None);
        let h = hook(&["x"]).with_reason(ReasonCode::UnspecifiedError);
        assert_eq!(
            h.check_subscribe(&p, "x"),
            Some(ReasonCode::UnspecifiedError)
        );
        let h = hook(&["x"]).with_reason(ReasonCode::Success);
        assert_eq!(
            h.check_subscribe(&p, "x"),
            Some(ReasonCode::UnspecifiedError)
        );
    }

    #[test]
    fn wrapped_hook_still_decides() {
        let h = DenySubscribe::new(Arc::new(DenyAll), ["x"]).expect("valid");
        assert!(!h.authorize_subscribe(&Principal::default(), "y"));
    }
}
