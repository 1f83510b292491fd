//! Downlink handlers: async closures or trait objects, kept in one table.
//!
//! Each call runs in a task of its own, so a slow handler never holds up the connection;
//! its answer goes back through the connection task.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::alink::{Call, PROPERTY_SET, Response, Via};

/// A boxed, sendable future, as handler trait objects return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Answers Alink calls (property set, services).
pub trait CallHandler: Send + Sync + 'static {
    /// Handles one call; the SDK sends the response.
    fn call(&self, call: Call) -> BoxFuture<Response>;
}

/// A binary downlink: `thing/model/down_raw` or a custom-topic RRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCall {
    /// The topic it arrived on.
    pub topic: String,
    /// The payload, as sent.
    pub payload: Bytes,
    /// How it arrived: [`Via::Async`] (`down_raw`) or [`Via::Rrpc`].
    pub via: Via,
}

/// Answers binary downlinks with binary payloads.
pub trait RawHandler: Send + Sync + 'static {
    /// Handles one downlink; the SDK sends the returned bytes as the answer.
    fn call(&self, call: RawCall) -> BoxFuture<Bytes>;
}

struct FnCall<F>(F);

impl<F, Fut> CallHandler for FnCall<F>
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn call(&self, call: Call) -> BoxFuture<Response> {
        Box::pin((self.0)(call))
    }
}

struct FnRaw<F>(F);

impl<F, Fut> RawHandler for FnRaw<F>
where
    F: Fn(RawCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Bytes> + Send + 'static,
{
    fn call(&self, call: RawCall) -> BoxFuture<Bytes> {
        Box::pin((self.0)(call))
    }
}

/// Wraps an async closure as a [`CallHandler`].
pub(crate) fn call_fn<F, Fut>(f: F) -> Arc<dyn CallHandler>
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    Arc::new(FnCall(f))
}

/// Wraps an async closure as a [`RawHandler`].
pub(crate) fn raw_fn<F, Fut>(f: F) -> Arc<dyn RawHandler>
where
    F: Fn(RawCall) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Bytes> + Send + 'static,
{
    Arc::new(FnRaw(f))
}

/// The handlers a device starts with, passed to [`crate::Device::connect_with`] so that no
/// downlink queued for the device arrives before its handler. More can be added later on
/// the [`crate::Device`].
///
/// A call without a handler is answered with code 460 ("service not supported"); a raw
/// downlink without one is delivered as [`crate::Event::Message`].
#[derive(Clone, Default)]
pub struct Handlers {
    pub(crate) calls: HashMap<String, Arc<dyn CallHandler>>,
    pub(crate) raw: Option<Arc<dyn RawHandler>>,
    pub(crate) rrpc: HashMap<String, Arc<dyn RawHandler>>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("calls", &self.calls.keys().collect::<Vec<_>>())
            .field("raw", &self.raw.is_some())
            .field("rrpc", &self.rrpc.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Handles property sets (`thing/service/property/set`); `call.params` holds the
    /// properties to set. The answer goes to `..._reply` at QoS 1.
    pub fn property_set<F, Fut>(self, f: F) -> Handlers
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        self.call_handler(PROPERTY_SET, call_fn(f))
    }

    /// Handles the service `identifier`, however it arrives (async, `/ext/rrpc`, legacy rrpc).
    pub fn service<F, Fut>(self, identifier: &str, f: F) -> Handlers
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        self.call_handler(identifier, call_fn(f))
    }

    /// Handles `identifier` (`property/set` for property sets) with a trait object.
    pub fn call_handler(mut self, identifier: &str, handler: Arc<dyn CallHandler>) -> Handlers {
        self.calls.insert(identifier.to_owned(), handler);
        self
    }

    /// Handles `thing/model/down_raw` (async and `/ext/rrpc`); the answer goes to
    /// `down_raw_reply` or the RRPC topic.
    pub fn raw<F, Fut>(self, f: F) -> Handlers
    where
        F: Fn(RawCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Bytes> + Send + 'static,
    {
        self.raw_handler(raw_fn(f))
    }

    /// Handles `thing/model/down_raw` with a trait object.
    pub fn raw_handler(mut self, handler: Arc<dyn RawHandler>) -> Handlers {
        self.raw = Some(handler);
        self
    }

    /// Handles custom-topic RRPC on `/ext/rrpc/+/${pk}/${dn}/<suffix>`, `suffix` starting with
    /// `user/`; the SDK subscribes to it when connecting.
    pub fn rrpc<F, Fut>(self, suffix: &str, f: F) -> Handlers
    where
        F: Fn(RawCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Bytes> + Send + 'static,
    {
        self.rrpc_handler(suffix, raw_fn(f))
    }

    /// Custom-topic RRPC with a trait object.
    pub fn rrpc_handler(mut self, suffix: &str, handler: Arc<dyn RawHandler>) -> Handlers {
        self.rrpc.insert(suffix.to_owned(), handler);
        self
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Fixed;

    impl CallHandler for Fixed {
        fn call(&self, _call: Call) -> BoxFuture<Response> {
            Box::pin(async { Response::error(100_001, "busy") })
        }
    }

    fn call(identifier: &str) -> Call {
        Call {
            id: "1".into(),
            identifier: identifier.into(),
            method: None,
            params: json!({"x": 1}),
            via: Via::Async,
        }
    }

    #[tokio::test]
    async fn closures_and_trait_objects_both_answer() {
        let h = Handlers::new()
            .property_set(|c: Call| async move { Response::ok(c.params) })
            .service("Busy", |_c| async { Response::ok(json!({})) })
            .call_handler("Busy", Arc::new(Fixed))
            .raw(|c: RawCall| async move { c.payload })
            .rrpc("user/get", |_c| async { Bytes::from_static(b"pong") });
        let set = h.calls.get(PROPERTY_SET).expect("set");
        assert_eq!(
            set.call(call(PROPERTY_SET)).await,
            Response::ok(json!({"x": 1}))
        );
        let busy = h.calls.get("Busy").expect("busy");
        assert_eq!(busy.call(call("Busy")).await.code, 100_001);
        let raw = h.raw.as_ref().expect("raw");
        let echoed = raw
            .call(RawCall {
                topic: "t".into(),
                payload: Bytes::from_static(b"\x01\x02"),
                via: Via::Async,
            })
            .await;
        assert_eq!(&echoed[..], b"\x01\x02");
        assert!(h.rrpc.contains_key("user/get"));
        let dbg = format!("{h:?}");
        assert!(dbg.contains("Busy") && dbg.contains("user/get"), "{dbg}");
    }
}
