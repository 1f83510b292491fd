//! The device handle, its event stream and its subscriptions.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::alink::{PROPERTY_SET, Reply, Request, Topics, request_payload};
use crate::config::DeviceConfig;
use crate::error::SdkError;
use crate::handler::{CallHandler, Handlers, RawCall, call_fn, raw_fn};
use crate::message::{Message, QoS};
use crate::shared::Shared;
use crate::task::{self, Command};
use crate::transport;

/// What the connection reports besides replies and handled calls.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A message no subscription or handler took: shadow, OTA, broadcasts, unmatched
    /// replies, raw downlinks without a handler…
    Message(Message),
    /// The connection was lost because of this error (closed by the server, keep alive
    /// unanswered, protocol error…). Every pending request fails with [`SdkError::Closed`].
    /// Without [`DeviceConfig::reconnect`] this is the last event; with it, reconnection
    /// starts and [`Event::Reconnected`] follows when it succeeds.
    ConnectionLost(SdkError),
    /// The connection is back after a loss ([`DeviceConfig::reconnect`]): signed in again,
    /// subscriptions restored. Requests made while it was down failed with [`SdkError::Closed`].
    Reconnected,
    /// The connection ended through [`Device::disconnect`] or because every handle was dropped.
    Disconnected,
}

/// The event stream of one connection. It ends after [`Event::Disconnected`], or after
/// [`Event::ConnectionLost`] when reconnection is off. Events queue without bound until read; drop the stream to
/// discard them.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The next event; `None` once the connection has ended and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

/// Messages matching one subscription filter. Dropping it stops the routing (the server
/// subscription stays until [`Subscription::unsubscribe`] or the end of the session).
#[derive(Debug)]
pub struct Subscription {
    filter: String,
    route: u64,
    rx: mpsc::UnboundedReceiver<Message>,
    device: Device,
}

impl Subscription {
    /// The full filter.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The next message; `None` once the connection has ended.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Stops the routing and unsubscribes on the server.
    pub async fn unsubscribe(self) -> Result<(), SdkError> {
        self.device.unsubscribe(&self.filter).await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.device.inner.shared.remove_route(self.route);
    }
}

struct Inner {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
}

/// A connected device: a cheap, clonable handle to the connection task.
///
/// The connection ends with [`Device::disconnect`], when the server or the network ends
/// it, or when the last handle is dropped (a handler that captures a handle keeps it
/// open: call `disconnect` then).
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("topics", &self.inner.shared.topics)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Device {
    /// Signs in with no handlers (calls are answered 460 until handlers are added).
    pub async fn connect(config: DeviceConfig) -> Result<(Device, Events), SdkError> {
        Device::connect_with(config, Handlers::new()).await
    }

    /// Signs in (TCP or TLS, CONNECT, CONNACK), starts the connection task with these
    /// handlers, and subscribes to what the server does not subscribe on the device's
    /// behalf: the batch-post reply, custom RRPC topics of `handlers`, and without
    /// `_ss=1` every system downlink the SDK handles.
    pub async fn connect_with(
        config: DeviceConfig,
        handlers: Handlers,
    ) -> Result<(Device, Events), SdkError> {
        let (stream, rbuf) = transport::dial(&config).await?;
        let topics = Topics::new(&config.product_key, &config.device_name);
        let mut filters = topics.extra_subscriptions();
        if !config.server_subscriptions {
            filters.extend(topics.system_subscriptions(config.ext_rrpc));
        }
        filters.extend(handlers.rrpc.keys().map(|s| topics.custom_rrpc_filter(s)));
        let shared = Arc::new(Shared::new(topics, config.reply_timeout, handlers));
        let (commands, events) = task::spawn(stream, rbuf, shared.clone(), &config);
        let device = Device {
            inner: Arc::new(Inner { shared, commands }),
        };
        let subscribed = timeout(
            config.connect_timeout,
            device.subscribe_filters(filters, QoS::AtLeastOnce),
        )
        .await
        .unwrap_or(Err(SdkError::Timeout("SUBACK")));
        if let Err(e) = subscribed {
            // The setup failed; the connection is closed either way.
            let _ = device.disconnect().await;
            return Err(e);
        }
        Ok((device, events))
    }

    /// A system topic of this device: `/sys/${pk}/${dn}/<suffix>`.
    pub fn sys_topic(&self, suffix: &str) -> String {
        self.inner.shared.topics.sys(suffix)
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.commands.is_closed()
    }

    async fn command(&self, command: Command) -> Result<(), SdkError> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| SdkError::Closed)
    }

    /// Publishes; returns once written (QoS 0) or acknowledged (QoS 1).
    async fn publish_full(&self, topic: String, payload: Bytes, qos: QoS) -> Result<(), SdkError> {
        let (done, rx) = oneshot::channel();
        self.command(Command::Publish {
            topic,
            payload,
            qos,
            echo_guard: false,
            done: Some(done),
        })
        .await?;
        rx.await.map_err(|_| SdkError::Closed)?
    }

    /// Sends an Alink request and waits for its `_reply` (matched by the generated `id` on
    /// `<topic>_reply`) for the request's timeout or [`DeviceConfig::reply_timeout`].
    /// A non-200 code is a [`Reply`] too, not an error.
    pub async fn request(&self, request: Request) -> Result<Reply, SdkError> {
        let shared = &self.inner.shared;
        let id = shared.next_id();
        let topic = shared.topics.sys(&request.suffix);
        let (tx, rx) = oneshot::channel();
        let _pending = shared.expect_reply(id.clone(), format!("{topic}_reply"), tx);
        let payload = request_payload(&id, &request.method, &request.params, true);
        let wait = request.timeout.unwrap_or(shared.reply_timeout);
        timeout(wait, async {
            self.publish_full(topic, Bytes::from(payload), request.qos)
                .await?;
            rx.await.map_err(|_| SdkError::Closed)
        })
        .await
        .map_err(|_| SdkError::Timeout("the reply"))?
    }

    /// Sends an Alink request with `"sys":{"ack":0}`: the server sends no reply.
    pub async fn send(&self, request: Request) -> Result<(), SdkError> {
        let shared = &self.inner.shared;
        let id = shared.next_id();
        let topic = shared.topics.sys(&request.suffix);
        let payload = request_payload(&id, &request.method, &request.params, false);
        let wait = request.timeout.unwrap_or(shared.reply_timeout);
        timeout(
            wait,
            self.publish_full(topic, Bytes::from(payload), request.qos),
        )
        .await
        .map_err(|_| SdkError::Timeout("PUBACK"))?
    }

    /// Posts properties (`{"Temp":23.5}` or `{"Temp":{"value":23.5,"time":ms}}`), QoS 1.
    pub async fn post_properties(&self, params: Value) -> Result<Reply, SdkError> {
        self.request(Request::property_post(params)).await
    }

    /// Posts properties and events in one batch, QoS 1.
    pub async fn post_properties_batch(&self, params: Value) -> Result<Reply, SdkError> {
        self.request(Request::property_batch_post(params)).await
    }

    /// Posts the event `identifier` with its output `params`.
    pub async fn post_event(&self, identifier: &str, params: Value) -> Result<Reply, SdkError> {
        self.request(Request::event_post(identifier, params)).await
    }

    /// Asks for the desired values of these properties.
    pub async fn get_desired<I, S>(&self, identifiers: I) -> Result<Reply, SdkError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.request(Request::desired_get(identifiers)).await
    }

    /// Deletes desired values (`{"LightSwitch":{}}`).
    pub async fn delete_desired(&self, params: Value) -> Result<Reply, SdkError> {
        self.request(Request::desired_delete(params)).await
    }

    /// Sets device tags (`attrKey` → `attrValue`).
    pub async fn update_device_info<I, K, V>(&self, attributes: I) -> Result<Reply, SdkError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.request(Request::device_info_update(attributes)).await
    }

    /// Deletes device tags.
    pub async fn delete_device_info<I, K>(&self, keys: I) -> Result<Reply, SdkError>
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.request(Request::device_info_delete(keys)).await
    }

    /// Fetches the product's thing model (`thing/dsltemplate/get`); the TSL is in `data`.
    pub async fn get_tsl(&self) -> Result<Reply, SdkError> {
        self.request(Request::tsl_get()).await
    }

    /// Sends binary data on `thing/model/up_raw` and returns the binary `up_raw_reply`.
    ///
    /// Raw replies carry no id: they are handed to raw uplinks in the order those were
    /// sent, so a reply arriving after its uplink timed out goes to the next one waiting.
    pub async fn post_raw(&self, payload: impl Into<Bytes>) -> Result<Bytes, SdkError> {
        let shared = &self.inner.shared;
        let (tx, rx) = oneshot::channel();
        let topic = shared.topics.sys("thing/model/up_raw");
        let payload = payload.into();
        timeout(shared.reply_timeout, async {
            {
                let _order = shared.raw_order.lock().await;
                shared.expect_raw_reply(tx);
                self.publish_full(topic, payload, QoS::AtMostOnce).await?;
            }
            rx.await.map_err(|_| SdkError::Closed)
        })
        .await
        .map_err(|_| SdkError::Timeout("the raw reply"))?
    }

    /// Publishes on a topic: a full topic when it starts with `/`, else relative to
    /// `/${pk}/${dn}/` (`"user/update"`). Returns once written (QoS 0) or acknowledged (QoS 1).
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<(), SdkError> {
        let topic = self.inner.shared.topics.full(topic);
        timeout(
            self.inner.shared.reply_timeout,
            self.publish_full(topic, payload.into(), qos),
        )
        .await
        .map_err(|_| SdkError::Timeout("PUBACK"))?
    }

    async fn subscribe_filters(&self, filters: Vec<String>, qos: QoS) -> Result<(), SdkError> {
        if filters.is_empty() {
            return Ok(());
        }
        let (done, rx) = oneshot::channel();
        self.command(Command::Subscribe { filters, qos, done })
            .await?;
        rx.await.map_err(|_| SdkError::Closed)?
    }

    /// Subscribes to a filter (full when it starts with `/`, else relative to
    /// `/${pk}/${dn}/`); matching messages go to the returned stream instead of the events.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<Subscription, SdkError> {
        let filter = self.inner.shared.topics.full(filter);
        let (route, rx) = self.inner.shared.add_route(filter.clone());
        let subscription = Subscription {
            filter: filter.clone(),
            route,
            rx,
            device: self.clone(),
        };
        timeout(
            self.inner.shared.reply_timeout,
            self.subscribe_filters(vec![filter], qos),
        )
        .await
        .map_err(|_| SdkError::Timeout("SUBACK"))??;
        Ok(subscription)
    }

    /// Unsubscribes a filter on the server (full or relative, as for [`Device::subscribe`]).
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), SdkError> {
        let filters = vec![self.inner.shared.topics.full(filter)];
        let (done, rx) = oneshot::channel();
        timeout(self.inner.shared.reply_timeout, async {
            self.command(Command::Unsubscribe { filters, done }).await?;
            rx.await.map_err(|_| SdkError::Closed)?
        })
        .await
        .map_err(|_| SdkError::Timeout("UNSUBACK"))?
    }

    /// Sets the property-set handler.
    pub fn on_property_set<F, Fut>(&self, f: F)
    where
        F: Fn(crate::Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::Response> + Send + 'static,
    {
        self.on_call(PROPERTY_SET, call_fn(f));
    }

    /// Sets the handler of the service `identifier`.
    pub fn on_service<F, Fut>(&self, identifier: &str, f: F)
    where
        F: Fn(crate::Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = crate::Response> + Send + 'static,
    {
        self.on_call(identifier, call_fn(f));
    }

    /// Sets the handler of `identifier` (`property/set` for property sets), a trait object.
    pub fn on_call(&self, identifier: &str, handler: Arc<dyn CallHandler>) {
        self.inner
            .shared
            .handlers_mut()
            .calls
            .insert(identifier.to_owned(), handler);
    }

    /// Sets the `thing/model/down_raw` handler.
    pub fn on_raw<F, Fut>(&self, f: F)
    where
        F: Fn(RawCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Bytes> + Send + 'static,
    {
        self.inner.shared.handlers_mut().raw = Some(raw_fn(f));
    }

    /// Serves custom-topic RRPC on `/ext/rrpc/+/${pk}/${dn}/<suffix>` (`suffix` starting with
    /// `user/`): sets the handler, then subscribes.
    pub async fn serve_rrpc<F, Fut>(&self, suffix: &str, f: F) -> Result<(), SdkError>
    where
        F: Fn(RawCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Bytes> + Send + 'static,
    {
        self.inner
            .shared
            .handlers_mut()
            .rrpc
            .insert(suffix.to_owned(), raw_fn(f));
        let filter = self.inner.shared.topics.custom_rrpc_filter(suffix);
        timeout(
            self.inner.shared.reply_timeout,
            self.subscribe_filters(vec![filter], QoS::AtMostOnce),
        )
        .await
        .map_err(|_| SdkError::Timeout("SUBACK"))?
    }

    /// Sends DISCONNECT after everything already queued and closes the connection; the
    /// events end with [`Event::Disconnected`].
    pub async fn disconnect(&self) -> Result<(), SdkError> {
        let (done, rx) = oneshot::channel();
        self.command(Command::Disconnect { done }).await?;
        rx.await.map_err(|_| SdkError::Closed)
    }
}
