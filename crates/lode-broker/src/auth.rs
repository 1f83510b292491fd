//! Authentication and authorization hooks, called at CONNECT, PUBLISH and SUBSCRIBE.

use std::net::SocketAddr;
use std::sync::Arc;

use lode_mqtt::{ReasonCode, topic};

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
pub struct DenySubscribe {
    inner: Arc<dyn AuthHook>,
    filters: Vec<String>,
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
        Ok(DenySubscribe { inner, filters })
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
            .finish_non_exhaustive()
    }
}

impl AuthHook for DenySubscribe {
    fn authenticate(&self, req: &ConnectRequest<'_>) -> Result<Principal, ReasonCode> {
        self.inner.authenticate(req)
    }

    fn authorize_publish(&self, principal: &Principal, topic: &str) -> bool {
        self.inner.authorize_publish(principal, topic)
    }

    fn authorize_subscribe(&self, principal: &Principal, filter: &str) -> bool {
        !self.denies(filter) && self.inner.authorize_subscribe(principal, filter)
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
    fn wrapped_hook_still_decides() {
        let h = DenySubscribe::new(Arc::new(DenyAll), ["x"]).expect("valid");
        assert!(!h.authorize_subscribe(&Principal::default(), "y"));
    }
}
