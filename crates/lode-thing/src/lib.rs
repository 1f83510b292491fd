//! The thing-model runtime: what happens to a device's Alink messages once the
//! broker has authorized them, and how the platform calls devices.
//!
//! # Uplinks
//!
//! [`ThingEngine`] is the broker's [`MessageHook`]: it takes every publish of a device on
//! the thing-model topics of its own identity ([`topic::classify`]) and hands it to one of
//! a few shard workers (a device always lands on the same shard, so its messages stay in
//! order). The message is still routed too, to the applications allowed to watch the
//! device's topics. A worker drains up to `batch_max` messages at a time and, for each:
//!
//! 1. decodes the Alink envelope, or runs the product's data parsing script over raw
//!    bytes (`thing/model/up_raw`);
//! 2. checks it against the product's *published* thing model (`lode-tsl`): invalid
//!    fields are dropped and named in the reply, valid fields of the same message are
//!    kept;
//! 3. collects property points and events for the history store, and a device-log
//!    entry for every message up and down.
//!
//! The batch is then written with one `append` (and one `append_log`); only when that is
//! durable are the `_reply` messages published and the devices' PUBACKs released (the
//! broker holds them until the hook's future resolves). A failed write closes the
//! devices' connections without an acknowledgement, so no accepted message is lost.
//!
//! # Downlinks
//!
//! [`ThingEngine::set_properties`] and [`ThingEngine::invoke_service`] validate the input
//! against the thing model, give the request a numeric id, record the call (pending) and
//! publish it. Async calls (and property set) finish when the device's `_reply` comes;
//! sync calls (services whose `callType` is `sync`) wait for the answer on
//! `/ext/rrpc/${id}/...` when the device advertised `ext=1`, or on the legacy
//! `rrpc/response/${id}` otherwise, up to a timeout; a reply after the timeout is logged
//! and leaves the call timed out. Products with the custom data format get their
//! downlinks through the script's `protocolToRawData` on `thing/model/down_raw`.
//!
//! [`ThingEngine::rrpc`] is a raw RRPC call: opaque bytes to a device on
//! `rrpc/request/${id}` or a custom topic `/ext/rrpc/${id}/${pk}/${dn}/user/...`, waiting
//! for the answer on `rrpc/response/${id}` or the same custom topic. The same hook
//! matches every RRPC answer, raw or Alink, and consumes it: answers are never routed
//! (a device subscribed to its RRPC topic would hear, and answer, its own answer).

pub mod alink;
mod error;
pub mod topic;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lode_broker::{Broker, Intercept, MessageHook, NotAccepted, Uplink, WeakBroker};
use lode_history::{
    CallStatus, DeviceKey, Direction, EventRecord, LogEntry, PropertyPoint, Record, ServiceCall,
    ThingStore,
};
use lode_mqtt::QoS;
use lode_registry::{DataFormat, DocumentKind, Product, ProductDocument, RegistryStore};
use lode_script::{Script, ScriptEngine};
use lode_tsl::{CallType, Tsl, ValueError};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use alink::{DeviceReply, EnvelopeError, Request};
pub use error::ThingError;
use topic::UplinkKind;

/// Told of validated uplink data (property values and events, with their thing-model
/// identifiers) after the batch holding it is durable.
///
/// Called on a shard worker: it must return at once (queue the records). The batch's
/// acknowledgements wait for the returned future, so a listener that hands the records
/// on durably (the rules engine's buffers) loses nothing in a crash.
pub trait RecordListener: Send + Sync + 'static {
    fn on_records(&self, records: &[Record]) -> lode_broker::BoxFuture<'static, ()>;
}

/// Settings of the thing-model runtime.
#[derive(Debug, Clone)]
pub struct ThingConfig {
    /// Workers handling uplinks; a device always goes to the same one.
    pub shards: usize,
    /// Most messages a worker handles and stores in one batch.
    pub batch_max: usize,
    /// Payload bytes kept in a device-log entry.
    pub log_payload_max: usize,
    /// How far ahead of the server clock a device's `time` may be.
    pub max_time_ahead: Duration,
    /// How long a product's published model is cached before it is read again
    /// (publishing through this engine refreshes it at once).
    pub model_ttl: Duration,
    /// Timeout of a sync service call when the caller gives none.
    pub sync_call_timeout: Duration,
}

impl Default for ThingConfig {
    fn default() -> Self {
        ThingConfig {
            shards: 2,
            batch_max: 512,
            log_payload_max: 2048,
            max_time_ahead: Duration::from_secs(24 * 3600),
            model_ttl: Duration::from_secs(30),
            sync_call_timeout: Duration::from_secs(5),
        }
    }
}

/// What the platform knows about a connected device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSession {
    /// The device takes sync calls on `/ext/rrpc/...` (clientId `ext=1`).
    pub ext_rrpc: bool,
}

/// Who is connected: the device sign-in layer answers.
pub trait Presence: Send + Sync + 'static {
    /// `None` when the device has no connection.
    fn session(&self, product_key: &str, device_name: &str) -> Option<DeviceSession>;
}

/// The outcome of a service call.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// A sync call: the device's answer.
    Sync {
        id: String,
        code: i64,
        data: Value,
        message: Option<String>,
    },
    /// An async call (or a property set): sent; the reply is recorded with the call.
    Async { id: String },
}

/// Direction of a script run on a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptDirection {
    /// `rawDataToProtocol` over bytes.
    Up,
    /// `protocolToRawData` over an Alink JSON message.
    Down,
}

/// Counters of the thing model, for `/metrics`.
#[derive(Debug, Default)]
pub struct ThingStats {
    pub messages: AtomicU64,
    pub properties_accepted: AtomicU64,
    pub properties_rejected: AtomicU64,
    pub events: AtomicU64,
    pub script_errors: AtomicU64,
    pub calls: AtomicU64,
    pub store_errors: AtomicU64,
}

impl ThingStats {
    /// Appends the counters in the Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (name, help, v) in [
            (
                "lode_thing_messages_total",
                "Thing-model uplinks handled.",
                &self.messages,
            ),
            (
                "lode_thing_properties_accepted_total",
                "Property values accepted and stored.",
                &self.properties_accepted,
            ),
            (
                "lode_thing_properties_rejected_total",
                "Property values refused by the thing model.",
                &self.properties_rejected,
            ),
            ("lode_thing_events_total", "Events stored.", &self.events),
            (
                "lode_thing_script_errors_total",
                "Data parsing script failures.",
                &self.script_errors,
            ),
            (
                "lode_thing_calls_total",
                "Property sets and service calls sent to devices.",
                &self.calls,
            ),
            (
                "lode_thing_store_errors_total",
                "Failed history writes.",
                &self.store_errors,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }
}

/// A product as the runtime uses it: its published thing model and script.
struct Model {
    product: Product,
    tsl: Arc<Tsl>,
    tsl_json: Value,
    script: Option<Script>,
}

/// The thing-model runtime. Cheap to clone.
#[derive(Clone)]
pub struct ThingEngine {
    inner: Arc<Inner>,
}

struct Inner {
    config: ThingConfig,
    registry: Arc<dyn RegistryStore>,
    store: Arc<dyn ThingStore>,
    scripts: ScriptEngine,
    /// Weak: the broker holds the runtime's hook.
    broker: OnceLock<WeakBroker>,
    presence: OnceLock<Arc<dyn Presence>>,
    listener: OnceLock<Arc<dyn RecordListener>>,
    models: RwLock<HashMap<String, (Instant, Arc<Model>)>>,
    shards: Vec<mpsc::UnboundedSender<Job>>,
    /// Sync calls waiting for their answer, by `"pk/dn"` and request id.
    waiters: Mutex<HashMap<(String, String), oneshot::Sender<DeviceReply>>>,
    /// Raw RRPC calls waiting for their answer, by `"pk/dn"` and RRPC id.
    raw_waiters: Mutex<HashMap<(String, String), oneshot::Sender<Bytes>>>,
    next_id: AtomicU64,
    stats: ThingStats,
    stop: CancellationToken,
    workers: TaskTracker,
}

/// An uplink handed to a shard worker.
struct Job {
    device: DeviceKey,
    topic: String,
    kind: Kind,
    payload: Bytes,
    received: i64,
    done: oneshot::Sender<Result<(), NotAccepted>>,
}

/// [`UplinkKind`] with owned names.
#[derive(Debug, Clone)]
enum Kind {
    PropertyPost,
    BatchPost,
    EventPost(String),
    PropertySetReply,
    ServiceReply,
    ExtRrpcReply,
    /// `rrpc/response/${id}`: a raw RRPC answer when a raw call waits for `id`, else an
    /// Alink sync-service answer.
    RrpcResponse(String),
    /// A custom-topic RRPC answer for request `id`.
    CustomRrpcReply(String),
    UpRaw,
    DownRawReply,
    DesiredGet,
    DesiredDelete,
    DeviceInfoUpdate,
    DeviceInfoDelete,
    TslGet,
    Ntp,
}

impl From<UplinkKind<'_>> for Kind {
    fn from(k: UplinkKind<'_>) -> Kind {
        match k {
            UplinkKind::PropertyPost => Kind::PropertyPost,
            UplinkKind::BatchPost => Kind::BatchPost,
            UplinkKind::EventPost(id) => Kind::EventPost(id.to_owned()),
            UplinkKind::PropertySetReply => Kind::PropertySetReply,
            UplinkKind::ServiceReply(_) => Kind::ServiceReply,
            UplinkKind::ExtRrpcReply { .. } => Kind::ExtRrpcReply,
            UplinkKind::ExtRrpcRawReply { .. } => Kind::DownRawReply,
            UplinkKind::RrpcResponse(id) => Kind::RrpcResponse(id.to_owned()),
            UplinkKind::CustomRrpcReply { rrpc_id } => Kind::CustomRrpcReply(rrpc_id.to_owned()),
            UplinkKind::UpRaw => Kind::UpRaw,
            UplinkKind::DownRawReply => Kind::DownRawReply,
            UplinkKind::DesiredGet => Kind::DesiredGet,
            UplinkKind::DesiredDelete => Kind::DesiredDelete,
            UplinkKind::DeviceInfoUpdate => Kind::DeviceInfoUpdate,
            UplinkKind::DeviceInfoDelete => Kind::DeviceInfoDelete,
            UplinkKind::TslGet => Kind::TslGet,
            UplinkKind::NtpRequest => Kind::Ntp,
        }
    }
}

/// What a batch of uplinks writes and sends once it is stored.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    log: Vec<LogEntry>,
    replies: Vec<(String, Bytes)>,
    done: Vec<oneshot::Sender<Result<(), NotAccepted>>>,
}

/// The answer to one uplink request.
struct Answer {
    code: u32,
    data: Value,
    message: String,
    /// Processing step that failed, for the device log.
    step: Option<&'static str>,
}

impl Answer {
    fn ok(data: Value) -> Answer {
        Answer {
            code: 200,
            data,
            message: "success".into(),
            step: None,
        }
    }

    fn fail(code: u32, step: &'static str, message: impl Into<String>) -> Answer {
        Answer {
            code,
            data: json!({}),
            message: message.into(),
            step: Some(step),
        }
    }
}

/// Alink codes the runtime answers with (section 6.3 of the Alink reference).
mod code {
    pub(crate) const BAD_PARAMS: u32 = 460;
    pub(crate) const SERVER_ERROR: u32 = 500;
    pub(crate) const PRODUCT_NOT_FOUND: u32 = 5005;
    pub(crate) const DEVICE_NOT_FOUND: u32 = 6100;
    pub(crate) const NO_METHOD: u32 = 6450;
    pub(crate) const UNKNOWN_METHOD: u32 = 6300;
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn device_ref(d: &DeviceKey) -> String {
    lode_alink::identity_key(&d.product_key, &d.device_name)
}

impl ThingEngine {
    /// Starts the runtime's workers (needs a Tokio runtime). Attach it to the broker
    /// with [`ThingEngine::attach`].
    pub fn start(
        registry: Arc<dyn RegistryStore>,
        store: Arc<dyn ThingStore>,
        scripts: ScriptEngine,
        config: ThingConfig,
    ) -> ThingEngine {
        let mut shards = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..config.shards.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            shards.push(tx);
            receivers.push(rx);
        }
        let inner = Arc::new(Inner {
            config,
            registry,
            store,
            scripts,
            broker: OnceLock::new(),
            presence: OnceLock::new(),
            listener: OnceLock::new(),
            models: RwLock::new(HashMap::new()),
            shards,
            waiters: Mutex::new(HashMap::new()),
            raw_waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(now_ms().max(0) as u64 * 1000),
            stats: ThingStats::default(),
            stop: CancellationToken::new(),
            workers: TaskTracker::new(),
        });
        for rx in receivers {
            inner.workers.spawn(shard_worker(inner.clone(), rx));
        }
        inner.workers.close();
        ThingEngine { inner }
    }

    /// Stops taking uplinks, finishes the ones already taken, and waits for the workers.
    /// Call it after the broker has shut down.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        self.inner.workers.wait().await;
    }

    /// Connects the runtime to the broker (as its message hook) and to the sign-in
    /// layer that knows who is online.
    pub fn attach(&self, broker: Broker, presence: Arc<dyn Presence>) {
        let _ = self.inner.presence.set(presence);
        if self.inner.broker.set(broker.downgrade()).is_ok() {
            broker.add_message_hook(Arc::new(Hook(self.inner.clone())));
        }
    }

    /// Installs the listener told of every validated property value and event once it
    /// is durable (the rules engine). Only one; a second call returns `false`.
    pub fn set_listener(&self, listener: Arc<dyn RecordListener>) -> bool {
        self.inner.listener.set(listener).is_ok()
    }

    /// The history store.
    pub fn store(&self) -> &Arc<dyn ThingStore> {
        &self.inner.store
    }

    /// The runtime's counters.
    pub fn stats(&self) -> &ThingStats {
        &self.inner.stats
    }

    // --- thing model and script of a product

    /// The draft and published thing model of a product.
    pub async fn tsl_document(&self, product_key: &str) -> Result<ProductDocument, ThingError> {
        self.document(product_key, DocumentKind::Tsl).await
    }

    /// The thing model in the reference JSON format: the published one, or the draft.
    /// A product that never had one has an empty model (only the implicit features).
    pub async fn tsl_json(&self, product_key: &str, draft: bool) -> Result<Value, ThingError> {
        let doc = self.tsl_document(product_key).await?;
        let text = if draft { doc.draft } else { doc.published };
        let tsl = match text {
            Some(t) => Tsl::from_json(&t).map_err(ThingError::InvalidTsl)?,
            None => empty_tsl(product_key),
        };
        Ok(tsl.to_json())
    }

    /// Validates and saves a draft thing model.
    pub async fn save_tsl_draft(
        &self,
        product_key: &str,
        tsl: &Value,
    ) -> Result<ProductDocument, ThingError> {
        let parsed = Tsl::from_value(tsl).map_err(ThingError::InvalidTsl)?;
        parsed.validate().map_err(ThingError::InvalidTsl)?;
        let mut json = parsed.to_json();
        if let Some(profile) = json.get_mut("profile").and_then(Value::as_object_mut) {
            profile.insert("productKey".into(), Value::String(product_key.to_owned()));
        }
        Ok(self
            .inner
            .registry
            .save_draft(product_key, DocumentKind::Tsl, &json.to_string())
            .await?)
    }

    /// Publishes the draft thing model: devices are checked against it from now on.
    pub async fn publish_tsl(&self, product_key: &str) -> Result<ProductDocument, ThingError> {
        self.publish(product_key, DocumentKind::Tsl).await
    }

    /// The draft and published data parsing script of a product.
    pub async fn script_document(&self, product_key: &str) -> Result<ProductDocument, ThingError> {
        self.document(product_key, DocumentKind::Script).await
    }

    /// Checks (size, syntax, the two functions) and saves a draft script.
    pub async fn save_script_draft(
        &self,
        product_key: &str,
        source: &str,
    ) -> Result<ProductDocument, ThingError> {
        self.inner.scripts.check(source).await?;
        Ok(self
            .inner
            .registry
            .save_draft(product_key, DocumentKind::Script, source)
            .await?)
    }

    /// Publishes the draft script: raw uplinks and downlinks go through it from now on.
    pub async fn publish_script(&self, product_key: &str) -> Result<ProductDocument, ThingError> {
        self.publish(product_key, DocumentKind::Script).await
    }

    /// Publishes a draft document and drops the cached model, so that the next message
    /// of the product uses the new version.
    async fn publish(
        &self,
        product_key: &str,
        kind: DocumentKind,
    ) -> Result<ProductDocument, ThingError> {
        let doc = self.inner.registry.publish_draft(product_key, kind).await?;
        self.inner.models.write().remove(product_key);
        Ok(doc)
    }

    /// Runs a script (the product's draft when `source` is `None`) on a sample, for
    /// debugging: `Up` takes bytes and returns the Alink JSON, `Down` takes Alink JSON
    /// and returns the bytes as a hex string.
    pub async fn test_script(
        &self,
        product_key: &str,
        source: Option<String>,
        direction: ScriptDirection,
        sample: &[u8],
    ) -> Result<Value, ThingError> {
        let source = match source {
            Some(s) => s,
            None => self
                .script_document(product_key)
                .await?
                .draft
                .ok_or_else(|| ThingError::NoScript(product_key.to_owned()))?,
        };
        let script = Script::new(format!("{product_key}#test"), source);
        match direction {
            ScriptDirection::Up => Ok(self.inner.scripts.raw_to_protocol(&script, sample).await?),
            ScriptDirection::Down => {
                let message: Value = serde_json::from_slice(sample)
                    .map_err(|e| ThingError::ScriptOutput(format!("sample is not JSON: {e}")))?;
                let bytes = self
                    .inner
                    .scripts
                    .protocol_to_raw(&script, &message)
                    .await?;
                Ok(json!({ "hex": hex(&bytes), "length": bytes.len() }))
            }
        }
    }

    async fn document(
        &self,
        product_key: &str,
        kind: DocumentKind,
    ) -> Result<ProductDocument, ThingError> {
        if self
            .inner
            .registry
            .get_product(product_key)
            .await?
            .is_none()
        {
            return Err(ThingError::ProductNotFound(product_key.to_owned()));
        }
        Ok(self
            .inner
            .registry
            .get_document(product_key, kind)
            .await?
            .unwrap_or(ProductDocument {
                product_key: product_key.to_owned(),
                kind,
                draft: None,
                draft_updated_at: None,
                published: None,
                version: 0,
                published_at: None,
            }))
    }

    // --- calls to devices

    /// Sets properties of a device (`thing.service.property.set`, async). Returns the
    /// request id; the device's reply is recorded with the call.
    pub async fn set_properties(
        &self,
        product_key: &str,
        device_name: &str,
        params: Value,
    ) -> Result<String, ThingError> {
        match self
            .invoke_service(product_key, device_name, "set", params, None)
            .await?
        {
            Invocation::Async { id } | Invocation::Sync { id, .. } => Ok(id),
        }
    }

    /// Calls a service of a device. The service's `callType` in the published thing
    /// model decides: sync waits for the answer (up to `timeout`, default 5 s, at most
    /// 60 s), async returns at once with the request id.
    pub async fn invoke_service(
        &self,
        product_key: &str,
        device_name: &str,
        service: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Invocation, ThingError> {
        let inner = &self.inner;
        let timeout = timeout.unwrap_or(inner.config.sync_call_timeout);
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&timeout) {
            return Err(ThingError::InvalidTimeout(timeout));
        }
        let model = inner
            .model(product_key)
            .await?
            .ok_or_else(|| ThingError::ProductNotFound(product_key.to_owned()))?;
        let device = DeviceKey::new(product_key, device_name);
        if inner
            .registry
            .get_device(product_key, device_name)
            .await?
            .is_none()
        {
            return Err(ThingError::DeviceNotFound(device_ref(&device)));
        }
        let sync = match service {
            "set" | "get" => false,
            _ => {
                let s = model
                    .tsl
                    .service(service)
                    .ok_or_else(|| ThingError::UnknownService(service.to_owned()))?;
                s.call_type == CallType::Sync
            }
        };
        model
            .tsl
            .check_service_input(service, &params)
            .map_err(ThingError::InvalidParams)?;
        let session = inner
            .presence
            .get()
            .and_then(|p| p.session(product_key, device_name))
            .ok_or_else(|| ThingError::DeviceOffline(device_ref(&device)))?;

        let id = inner.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let method = match service {
            "set" => "thing.service.property.set".to_owned(),
            "get" => "thing.service.property.get".to_owned(),
            s => format!("thing.service.{s}"),
        };
        let request = alink::request(&id, &method, params.clone());
        let raw = model.product.data_format == DataFormat::Custom;
        let payload: Bytes = if raw {
            let script = model
                .script
                .as_ref()
                .ok_or_else(|| ThingError::NoScript(product_key.to_owned()))?;
            inner
                .scripts
                .protocol_to_raw(script, &request)
                .await
                .inspect_err(|_| {
                    inner.stats.script_errors.fetch_add(1, Ordering::Relaxed);
                })?
                .into()
        } else {
            request.to_string().into()
        };
        let base = format!("/sys/{product_key}/{device_name}");
        let topic = match (sync, raw, session.ext_rrpc) {
            (false, true, _) => format!("{base}/thing/model/down_raw"),
            (false, false, _) if service == "set" => format!("{base}/thing/service/property/set"),
            (false, false, _) if service == "get" => format!("{base}/thing/service/property/get"),
            (false, false, _) => format!("{base}/thing/service/{service}"),
            (true, true, true) => format!("/ext/rrpc/{id}{base}/thing/model/down_raw"),
            (true, false, true) => format!("/ext/rrpc/{id}{base}/thing/service/{service}"),
            (true, _, false) => format!("{base}/rrpc/request/{id}"),
        };
        let started = now_ms();
        inner
            .store
            .record_call(ServiceCall {
                device: device.clone(),
                call_id: id.clone(),
                identifier: service.to_owned(),
                call_type: if sync { "sync" } else { "async" }.to_owned(),
                input: params,
                status: CallStatus::Pending,
                code: None,
                output: None,
                message: None,
                started_at: started,
                finished_at: None,
            })
            .await?;
        inner.stats.calls.fetch_add(1, Ordering::Relaxed);

        let waiter = sync.then(|| {
            let (tx, rx) = oneshot::channel();
            inner
                .waiters
                .lock()
                .insert((device_ref(&device), id.clone()), tx);
            rx
        });
        let sent = inner.send_down(&device, &topic, payload).await;
        if let Err(e) = sent {
            inner
                .waiters
                .lock()
                .remove(&(device_ref(&device), id.clone()));
            inner
                .store
                .finish_call(
                    &device,
                    &id,
                    CallStatus::Failed,
                    None,
                    None,
                    Some(e.to_string()),
                    now_ms(),
                )
                .await?;
            return Err(e);
        }
        let Some(rx) = waiter else {
            return Ok(Invocation::Async { id });
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(Invocation::Sync {
                id,
                code: reply.code,
                data: reply.data,
                message: reply.message,
            }),
            Ok(Err(_)) => Err(ThingError::ShuttingDown),
            Err(_) => {
                inner
                    .waiters
                    .lock()
                    .remove(&(device_ref(&device), id.clone()));
                inner
                    .store
                    .finish_call(
                        &device,
                        &id,
                        CallStatus::TimedOut,
                        None,
                        None,
                        Some(format!("no answer within {} ms", timeout.as_millis())),
                        now_ms(),
                    )
                    .await?;
                Err(ThingError::Timeout(timeout))
            }
        }
    }

    /// Sends `payload` to a device as an RRPC request and waits for its answer (up to
    /// `timeout`, default the sync-call timeout, 1 s to 60 s). Without `topic_suffix` the
    /// request goes to `/sys/${pk}/${dn}/rrpc/request/${id}` and the answer comes on
    /// `.../rrpc/response/${id}`; with a suffix `user/...` it goes to
    /// `/ext/rrpc/${id}/${pk}/${dn}/user/...` and the answer comes on the same topic.
    /// Payloads are opaque bytes both ways; answers are consumed, never routed.
    pub async fn rrpc(
        &self,
        product_key: &str,
        device_name: &str,
        topic_suffix: Option<&str>,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, ThingError> {
        let inner = &self.inner;
        let timeout = timeout.unwrap_or(inner.config.sync_call_timeout);
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&timeout) {
            return Err(ThingError::InvalidTimeout(timeout));
        }
        if let Some(suffix) = topic_suffix {
            let valid = suffix.strip_prefix("user/").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .split('/')
                        .all(|l| !l.is_empty() && !l.contains(['+', '#', '\0']))
            });
            if !valid {
                return Err(ThingError::InvalidTopic(format!(
                    "{suffix:?}: a custom RRPC topic is user/<level>[/<level>...]"
                )));
            }
        }
        let device = DeviceKey::new(product_key, device_name);
        if inner
            .registry
            .get_device(product_key, device_name)
            .await?
            .is_none()
        {
            return Err(ThingError::DeviceNotFound(device_ref(&device)));
        }
        if inner
            .presence
            .get()
            .and_then(|p| p.session(product_key, device_name))
            .is_none()
        {
            return Err(ThingError::DeviceOffline(device_ref(&device)));
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let topic = match topic_suffix {
            None => format!("/sys/{product_key}/{device_name}/rrpc/request/{id}"),
            Some(suffix) => format!("/ext/rrpc/{id}/{product_key}/{device_name}/{suffix}"),
        };
        let key = (device_ref(&device), id.clone());
        let (tx, rx) = oneshot::channel();
        inner.raw_waiters.lock().insert(key.clone(), tx);
        let broker = match inner.broker.get().and_then(WeakBroker::upgrade) {
            Some(b) => b,
            None => {
                inner.raw_waiters.lock().remove(&key);
                return Err(ThingError::ShuttingDown);
            }
        };
        let mut entry =
            inner.log_entry(&device, Direction::Down, &topic, &payload, 200, None, None);
        let sent = broker
            .publish(&topic, payload, QoS::AtMostOnce, false)
            .await
            .map_err(|e| ThingError::Publish(e.to_string()))
            .and_then(|reached| {
                if reached == 0 {
                    Err(ThingError::NotSubscribed(topic.clone()))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = &sent {
            entry.code = code::DEVICE_NOT_FOUND as i64;
            entry.step = Some("deliver".into());
            entry.message = Some(e.to_string());
        }
        if let Err(error) = inner.store.append_log(vec![entry]).await {
            tracing::warn!(%error, "device log entry not stored");
        }
        if let Err(e) = sent {
            inner.raw_waiters.lock().remove(&key);
            return Err(e);
        }
        inner.stats.calls.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(ThingError::ShuttingDown),
            Err(_) => {
                inner.raw_waiters.lock().remove(&key);
                Err(ThingError::Timeout(timeout))
            }
        }
    }

    /// Sets desired values of properties (read-write properties of the published model).
    /// `versions` optionally gives the expected current version per property. Returns
    /// the new version of each.
    pub async fn set_desired(
        &self,
        product_key: &str,
        device_name: &str,
        values: Map<String, Value>,
        versions: &HashMap<String, u64>,
    ) -> Result<Vec<(String, u64)>, ThingError> {
        let model = self
            .inner
            .model(product_key)
            .await?
            .ok_or_else(|| ThingError::ProductNotFound(product_key.to_owned()))?;
        let device = DeviceKey::new(product_key, device_name);
        if self
            .inner
            .registry
            .get_device(product_key, device_name)
            .await?
            .is_none()
        {
            return Err(ThingError::DeviceNotFound(device_ref(&device)));
        }
        let values = Value::Object(values);
        model
            .tsl
            .check_service_input("set", &values)
            .map_err(ThingError::InvalidParams)?;
        let mut out = Vec::new();
        if let Value::Object(values) = values {
            for (id, value) in values {
                let version = self
                    .inner
                    .store
                    .set_desired(&device, &id, value, versions.get(&id).copied(), now_ms())
                    .await?;
                out.push((id, version));
            }
        }
        Ok(out)
    }
}

fn empty_tsl(product_key: &str) -> Tsl {
    Tsl {
        product_key: Some(product_key.to_owned()),
        ..Tsl::default()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl Inner {
    /// The product's published model, cached; `None` when the product does not exist.
    async fn model(&self, product_key: &str) -> Result<Option<Arc<Model>>, ThingError> {
        if let Some((at, model)) = self.models.read().get(product_key)
            && at.elapsed() < self.config.model_ttl
        {
            return Ok(Some(model.clone()));
        }
        let Some(product) = self.registry.get_product(product_key).await? else {
            self.models.write().remove(product_key);
            return Ok(None);
        };
        let tsl = match self
            .registry
            .get_document(product_key, DocumentKind::Tsl)
            .await?
            .and_then(|d| d.published)
        {
            Some(text) => Tsl::from_json(&text).map_err(ThingError::InvalidTsl)?,
            None => empty_tsl(product_key),
        };
        let script = self
            .registry
            .get_document(product_key, DocumentKind::Script)
            .await?
            .and_then(|d| d.published.map(|src| (d.version, src)))
            .map(|(version, src)| Script::new(format!("{product_key}#{version}"), src));
        let model = Arc::new(Model {
            product,
            tsl_json: tsl.to_json(),
            tsl: Arc::new(tsl),
            script,
        });
        self.models
            .write()
            .insert(product_key.to_owned(), (Instant::now(), model.clone()));
        Ok(Some(model))
    }

    /// Publishes a downlink to a connected device and logs it.
    async fn send_down(
        &self,
        device: &DeviceKey,
        topic: &str,
        payload: Bytes,
    ) -> Result<(), ThingError> {
        let broker = self
            .broker
            .get()
            .and_then(WeakBroker::upgrade)
            .ok_or(ThingError::ShuttingDown)?;
        let entry = self.log_entry(device, Direction::Down, topic, &payload, 200, None, None);
        let reached = broker
            .publish(topic, payload, QoS::AtLeastOnce, false)
            .await
            .map_err(|e| ThingError::Publish(e.to_string()))?;
        let result = if reached == 0 {
            Err(ThingError::DeviceOffline(device_ref(device)))
        } else {
            Ok(())
        };
        let mut entry = entry;
        if let Err(e) = &result {
            entry.code = code::DEVICE_NOT_FOUND as i64;
            entry.step = Some("deliver".into());
            entry.message = Some(e.to_string());
        }
        if let Err(error) = self.store.append_log(vec![entry]).await {
            tracing::warn!(%error, "device log entry not stored");
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn log_entry(
        &self,
        device: &DeviceKey,
        direction: Direction,
        topic: &str,
        payload: &[u8],
        code: i64,
        step: Option<&str>,
        message: Option<String>,
    ) -> LogEntry {
        let keep = payload.len().min(self.config.log_payload_max);
        LogEntry {
            device: device.clone(),
            time: now_ms(),
            direction,
            topic: topic.to_owned(),
            payload: payload[..keep].to_vec(),
            payload_size: payload.len().min(u32::MAX as usize) as u32,
            code,
            step: step.map(str::to_owned),
            message,
            trace_id: self.next_id.fetch_add(1, Ordering::Relaxed).to_string(),
        }
    }

    /// Queues a reply to the device and its log entry.
    fn queue_reply(&self, batch: &mut Batch, device: &DeviceKey, topic: String, payload: Bytes) {
        batch
            .log
            .push(self.log_entry(device, Direction::Down, &topic, &payload, 200, None, None));
        batch.replies.push((topic, payload));
    }

    /// Handles one uplink into `batch`.
    async fn handle(&self, job: Job, batch: &mut Batch) {
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        let Job {
            device,
            topic,
            kind,
            payload,
            received,
            done,
        } = job;
        batch.done.push(done);
        // A raw RRPC answer goes to the call waiting for its id; on the legacy topic an
        // answer nobody waits for raw is an Alink sync-service answer (below).
        if let Kind::RrpcResponse(id) | Kind::CustomRrpcReply(id) = &kind {
            let waiter = self
                .raw_waiters
                .lock()
                .remove(&(device_ref(&device), id.clone()));
            let outcome = match waiter {
                Some(tx) => {
                    let _ = tx.send(payload.clone());
                    Some((200, None, None))
                }
                None if matches!(kind, Kind::CustomRrpcReply(_)) => Some((
                    code::BAD_PARAMS as i64,
                    Some("reply"),
                    Some(format!("reply to unknown or timed-out RRPC request {id}")),
                )),
                None => None,
            };
            if let Some((code, step, message)) = outcome {
                batch.log.push(self.log_entry(
                    &device,
                    Direction::Up,
                    &topic,
                    &payload,
                    code,
                    step,
                    message,
                ));
                return;
            }
        }
        match kind {
            Kind::PropertySetReply
            | Kind::ServiceReply
            | Kind::ExtRrpcReply
            | Kind::RrpcResponse(_) => {
                let (code, step, message) = match alink::parse_reply(&payload) {
                    Ok(reply) => self.finish(&device, reply).await,
                    Err(e) => (e.code() as i64, Some("parse"), Some(e.to_string())),
                };
                batch.log.push(self.log_entry(
                    &device,
                    Direction::Up,
                    &topic,
                    &payload,
                    code,
                    step,
                    message,
                ));
            }
            Kind::DownRawReply => {
                let (code, step, message) = match self.decode_raw(&device).await {
                    Err(answer) => (answer.code as i64, answer.step, Some(answer.message)),
                    Ok((_, script)) => {
                        match self.scripts.raw_to_protocol(&script, &payload).await {
                            Err(e) => {
                                self.stats.script_errors.fetch_add(1, Ordering::Relaxed);
                                (e.alink_code() as i64, Some("script"), Some(e.to_string()))
                            }
                            Ok(value) => match alink::reply_from_value(value) {
                                Ok(reply) => self.finish(&device, reply).await,
                                Err(e) => (e.code() as i64, Some("script"), Some(e.to_string())),
                            },
                        }
                    }
                };
                batch.log.push(self.log_entry(
                    &device,
                    Direction::Up,
                    &topic,
                    &payload,
                    code,
                    step,
                    message,
                ));
            }
            Kind::UpRaw => {
                self.handle_raw(device, topic, payload, received, batch)
                    .await
            }
            Kind::Ntp => {
                let send_time = serde_json::from_slice::<Value>(&payload)
                    .ok()
                    .and_then(|v| v.get("deviceSendTime").cloned())
                    .unwrap_or(Value::Null);
                let answer = json!({
                    "deviceSendTime": send_time,
                    "serverRecvTime": received.to_string(),
                    "serverSendTime": now_ms().to_string(),
                });
                batch.log.push(self.log_entry(
                    &device,
                    Direction::Up,
                    &topic,
                    &payload,
                    200,
                    None,
                    None,
                ));
                let reply_topic = format!(
                    "/ext/ntp/{}/{}/response",
                    device.product_key, device.device_name
                );
                self.queue_reply(batch, &device, reply_topic, answer.to_string().into());
            }
            kind => {
                let request = alink::parse_request(&payload);
                let (answer, ack, id) = match request {
                    Ok(req) => {
                        let ack = req.ack;
                        let id = req.id.clone();
                        (
                            self.request(&device, &kind, req, received, batch).await,
                            ack,
                            id,
                        )
                    }
                    Err(e) => (
                        Answer::fail(e.code(), "parse", e.to_string()),
                        true,
                        alink::id_hint(&payload),
                    ),
                };
                batch.log.push(self.log_entry(
                    &device,
                    Direction::Up,
                    &topic,
                    &payload,
                    answer.code as i64,
                    answer.step,
                    (answer.code != 200).then(|| answer.message.clone()),
                ));
                if ack {
                    let reply = alink::reply(&id, answer.code, answer.data, &answer.message);
                    self.queue_reply(
                        batch,
                        &device,
                        format!("{topic}_reply"),
                        reply.to_string().into(),
                    );
                }
            }
        }
    }

    /// The product's script for a raw message, or the answer to give without one.
    async fn decode_raw(&self, device: &DeviceKey) -> Result<(Arc<Model>, Script), Answer> {
        let model = match self.model(&device.product_key).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(Answer::fail(
                    code::PRODUCT_NOT_FOUND,
                    "product",
                    "product not found",
                ));
            }
            Err(e) => return Err(Answer::fail(code::SERVER_ERROR, "product", e.to_string())),
        };
        match model.script.clone() {
            Some(script) => Ok((model, script)),
            None => Err(Answer::fail(
                lode_script::CODE_SCRIPT_UNUSABLE,
                "script",
                "the product has no published data parsing script",
            )),
        }
    }

    /// `thing/model/up_raw`: the script makes Alink JSON of the bytes, which is handled
    /// by its `method` like a JSON uplink; the reply goes back through the script.
    async fn handle_raw(
        &self,
        device: DeviceKey,
        topic: String,
        payload: Bytes,
        received: i64,
        batch: &mut Batch,
    ) {
        let reply_topic = format!("{topic}_reply");
        let decoded = match self.decode_raw(&device).await {
            Err(answer) => Err((answer, None)),
            Ok((model, script)) => match self.scripts.raw_to_protocol(&script, &payload).await {
                Err(e) => {
                    self.stats.script_errors.fetch_add(1, Ordering::Relaxed);
                    Err((Answer::fail(e.alink_code(), "script", e.to_string()), None))
                }
                Ok(value) => match alink::request_from_value(value) {
                    Err(e) => Err((Answer::fail(e.code(), "script", e.to_string()), None)),
                    Ok(req) => Ok((model, script, req)),
                },
            },
        };
        let (answer, id, ack, script) = match decoded {
            Err((answer, script)) => (answer, String::new(), true, script),
            Ok((_, script, req)) => {
                let id = req.id.clone();
                let ack = req.ack;
                let kind = match req.method.as_deref() {
                    None => None,
                    Some("thing.event.property.post") => Some(Kind::PropertyPost),
                    Some("thing.event.property.batch.post") => Some(Kind::BatchPost),
                    Some(m) => m
                        .strip_prefix("thing.event.")
                        .and_then(|e| e.strip_suffix(".post"))
                        .filter(|e| !e.is_empty() && !e.contains('.'))
                        .map(|e| Kind::EventPost(e.to_owned())),
                };
                let answer = match (kind, req.method.is_some()) {
                    (Some(kind), _) => self.request(&device, &kind, req, received, batch).await,
                    (None, false) => Answer::fail(
                        code::NO_METHOD,
                        "script",
                        "the script's message has no method",
                    ),
                    (None, true) => Answer::fail(
                        code::UNKNOWN_METHOD,
                        "script",
                        "the script's method is not an uplink of the thing model",
                    ),
                };
                (answer, id, ack, Some(script))
            }
        };
        batch.log.push(self.log_entry(
            &device,
            Direction::Up,
            &topic,
            &payload,
            answer.code as i64,
            answer.step,
            (answer.code != 200).then(|| answer.message.clone()),
        ));
        if !ack {
            return;
        }
        let reply = alink::reply(&id, answer.code, answer.data, &answer.message);
        // The reply goes through the script; without one (or when it fails) the device
        // gets the Alink JSON, so that it still learns why.
        let bytes: Bytes = match &script {
            Some(script) => match self.scripts.protocol_to_raw(script, &reply).await {
                Ok(bytes) => bytes.into(),
                Err(e) => {
                    self.stats.script_errors.fetch_add(1, Ordering::Relaxed);
                    alink::reply(&id, e.alink_code(), json!({}), &e.to_string())
                        .to_string()
                        .into()
                }
            },
            None => reply.to_string().into(),
        };
        self.queue_reply(batch, &device, reply_topic, bytes);
    }

    /// A device's answer to a downlink: wakes the sync caller or finishes the call.
    async fn finish(
        &self,
        device: &DeviceKey,
        reply: DeviceReply,
    ) -> (i64, Option<&'static str>, Option<String>) {
        let status = if reply.code == 200 {
            CallStatus::Succeeded
        } else {
            CallStatus::Failed
        };
        let waiter = self
            .waiters
            .lock()
            .remove(&(device_ref(device), reply.id.clone()));
        match self.store.call(device, &reply.id).await {
            Ok(Some(call)) if call.status != CallStatus::Pending => {
                return (
                    reply.code,
                    Some("reply"),
                    Some(format!(
                        "late reply to request {}, which is {}",
                        reply.id,
                        call.status.as_str()
                    )),
                );
            }
            Ok(None) => {
                return (
                    reply.code,
                    Some("reply"),
                    Some(format!("reply to unknown request {}", reply.id)),
                );
            }
            Ok(Some(_)) => {}
            Err(e) => {
                return (
                    code::SERVER_ERROR as i64,
                    Some("store"),
                    Some(e.to_string()),
                );
            }
        }
        let finished = self
            .store
            .finish_call(
                device,
                &reply.id,
                status,
                Some(reply.code),
                Some(reply.data.clone()),
                reply.message.clone(),
                now_ms(),
            )
            .await;
        if let Some(tx) = waiter {
            let _ = tx.send(reply.clone());
        }
        match finished {
            Ok(_) => (reply.code, None, reply.message),
            Err(e) => (
                code::SERVER_ERROR as i64,
                Some("store"),
                Some(e.to_string()),
            ),
        }
    }

    /// Handles a request envelope by its kind.
    async fn request(
        &self,
        device: &DeviceKey,
        kind: &Kind,
        req: Request,
        received: i64,
        batch: &mut Batch,
    ) -> Answer {
        let model = match self.model(&device.product_key).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Answer::fail(code::PRODUCT_NOT_FOUND, "product", "product not found");
            }
            Err(e) => return Answer::fail(code::SERVER_ERROR, "product", e.to_string()),
        };
        match kind {
            Kind::PropertyPost => {
                let (stored, rejected) =
                    self.properties(&model.tsl, device, &req.params, received, batch);
                properties_answer(stored, rejected)
            }
            Kind::BatchPost => self.batch_post(&model.tsl, device, &req.params, received, batch),
            Kind::EventPost(event) => {
                self.event(&model.tsl, device, event, &req.params, received, batch)
            }
            Kind::DesiredGet => self.desired_get(device, &req.params).await,
            Kind::DesiredDelete => self.desired_delete(device, &req.params).await,
            Kind::DeviceInfoUpdate | Kind::DeviceInfoDelete => {
                self.device_info(device, matches!(kind, Kind::DeviceInfoUpdate), &req.params)
                    .await
            }
            Kind::TslGet => Answer::ok(model.tsl_json.clone()),
            _ => Answer::fail(code::UNKNOWN_METHOD, "method", "not a request topic"),
        }
    }

    /// Checks property values and queues the valid ones; returns how many were stored
    /// and the refused ones.
    fn properties(
        &self,
        tsl: &Tsl,
        device: &DeviceKey,
        params: &Value,
        received: i64,
        batch: &mut Batch,
    ) -> (usize, Vec<(String, ValueError)>) {
        let check = tsl.check_properties(params);
        if let Some(e) = check.payload {
            return (0, vec![(String::new(), e)]);
        }
        let mut rejected = check.rejected;
        let horizon = received + self.config.max_time_ahead.as_millis() as i64;
        let mut stored = 0;
        for (identifier, value, time) in check.accepted {
            let device_time = time.unwrap_or(received);
            if device_time > horizon || device_time < 0 {
                rejected.push((identifier, ValueError::InvalidTime));
                continue;
            }
            stored += 1;
            batch.records.push(Record::Property(PropertyPoint {
                device: device.clone(),
                identifier,
                value,
                device_time,
                server_time: received,
            }));
        }
        self.stats
            .properties_accepted
            .fetch_add(stored as u64, Ordering::Relaxed);
        self.stats
            .properties_rejected
            .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        (stored, rejected)
    }

    fn batch_post(
        &self,
        tsl: &Tsl,
        device: &DeviceKey,
        params: &Value,
        received: i64,
        batch: &mut Batch,
    ) -> Answer {
        let Some(obj) = params.as_object() else {
            return Answer::fail(code::BAD_PARAMS, "tsl", "params is not a JSON object");
        };
        let mut stored = 0;
        let mut rejected = Vec::new();
        if let Some(props) = obj.get("properties") {
            let Some(props) = props.as_object() else {
                return Answer::fail(code::BAD_PARAMS, "tsl", "properties is not an object");
            };
            for (id, points) in props {
                let points = match points {
                    Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                for point in points {
                    let (n, r) = self.properties(
                        tsl,
                        device,
                        &Value::Object(Map::from_iter([(id.clone(), point)])),
                        received,
                        batch,
                    );
                    stored += n;
                    rejected.extend(r);
                }
            }
        }
        if let Some(events) = obj.get("events").and_then(Value::as_object) {
            for (id, posts) in events {
                let posts = match posts {
                    Value::Array(a) => a.clone(),
                    other => vec![other.clone()],
                };
                for post in posts {
                    let answer = self.event(tsl, device, id, &post, received, batch);
                    if answer.code != 200 {
                        rejected
                            .push((id.clone(), ValueError::UnknownEvent(answer.message.clone())));
                    }
                }
            }
        }
        properties_answer(stored, rejected)
    }

    fn event(
        &self,
        tsl: &Tsl,
        device: &DeviceKey,
        event: &str,
        params: &Value,
        received: i64,
        batch: &mut Batch,
    ) -> Answer {
        let Some(def) = tsl.event(event) else {
            let e = ValueError::UnknownEvent(event.to_owned());
            return Answer::fail(e.code(), "tsl", e.to_string());
        };
        // `{"value": {...}, "time": ms}` (Python SDK, docs) or the output flat (C SDK 4).
        let wrapped = params.get("value").is_some_and(Value::is_object)
            && !def.output_data.iter().any(|p| p.identifier == "value");
        let (output, time) = if wrapped {
            (
                params.get("value").cloned().unwrap_or(Value::Null),
                params.get("time").and_then(time_ms),
            )
        } else {
            (params.clone(), None)
        };
        let device_time = time.unwrap_or(received);
        if device_time > received + self.config.max_time_ahead.as_millis() as i64 {
            let e = ValueError::InvalidTime;
            return Answer::fail(e.code(), "tsl", e.to_string());
        }
        let (output, rejected) = match tsl.check_event_output(event, &output) {
            Ok(()) => (output, Vec::new()),
            Err(rejected) => {
                // Keep the valid parameters of the event.
                let mut kept = output.as_object().cloned().unwrap_or_default();
                for (id, _) in &rejected {
                    kept.remove(id);
                }
                (Value::Object(kept), rejected)
            }
        };
        if !output.is_object() {
            let e = ValueError::NotAnObject;
            return Answer::fail(e.code(), "tsl", e.to_string());
        }
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        batch.records.push(Record::Event(EventRecord {
            device: device.clone(),
            identifier: event.to_owned(),
            event_type: def.event_type.as_str().to_owned(),
            output,
            device_time,
            server_time: received,
        }));
        properties_answer(1, rejected)
    }

    async fn desired_get(&self, device: &DeviceKey, params: &Value) -> Answer {
        let ids: Vec<String> = match params {
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => {
                return Answer::fail(
                    code::BAD_PARAMS,
                    "params",
                    "params must be an array of property identifiers",
                );
            }
        };
        match self.store.desired(device, &ids).await {
            Ok(values) => Answer::ok(Value::Object(
                values
                    .into_iter()
                    .map(|d| {
                        (
                            d.identifier,
                            json!({"value": d.value, "version": d.version}),
                        )
                    })
                    .collect(),
            )),
            Err(e) => Answer::fail(code::SERVER_ERROR, "store", e.to_string()),
        }
    }

    async fn desired_delete(&self, device: &DeviceKey, params: &Value) -> Answer {
        let Some(obj) = params.as_object() else {
            return Answer::fail(code::BAD_PARAMS, "params", "params must be an object");
        };
        for (id, spec) in obj {
            let version = spec.get("version").and_then(Value::as_u64);
            match self.store.delete_desired(device, id, version).await {
                Ok(()) | Err(lode_history::HistoryError::NotFound) => {}
                Err(lode_history::HistoryError::VersionConflict { current }) => {
                    return Answer::fail(
                        code::BAD_PARAMS,
                        "version",
                        format!("desired {id}: version conflict, current version is {current}"),
                    );
                }
                Err(e) => return Answer::fail(code::SERVER_ERROR, "store", e.to_string()),
            }
        }
        Answer::ok(json!({}))
    }

    async fn device_info(&self, device: &DeviceKey, update: bool, params: &Value) -> Answer {
        let Some(items) = params.as_array() else {
            return Answer::fail(code::BAD_PARAMS, "params", "params must be an array");
        };
        let result = if update {
            let mut tags = lode_registry::Tags::new();
            for item in items {
                match (
                    item.get("attrKey").and_then(Value::as_str),
                    item.get("attrValue"),
                ) {
                    (Some(k), Some(v)) => {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        tags.insert(k.to_owned(), v);
                    }
                    _ => {
                        return Answer::fail(
                            code::BAD_PARAMS,
                            "params",
                            "each item needs attrKey and attrValue",
                        );
                    }
                }
            }
            self.registry
                .set_device_tags(&device.product_key, &device.device_name, tags)
                .await
        } else {
            let keys = items
                .iter()
                .filter_map(|i| i.get("attrKey").and_then(Value::as_str).map(str::to_owned))
                .collect();
            self.registry
                .remove_device_tags(&device.product_key, &device.device_name, keys)
                .await
        };
        match result {
            Ok(_) => Answer::ok(json!({})),
            Err(lode_registry::RegistryError::DeviceNotFound(_)) => {
                Answer::fail(code::DEVICE_NOT_FOUND, "registry", "device not found")
            }
            Err(e @ lode_registry::RegistryError::Backend(_)) => {
                Answer::fail(code::SERVER_ERROR, "registry", e.to_string())
            }
            Err(e) => Answer::fail(code::BAD_PARAMS, "registry", e.to_string()),
        }
    }
}

/// `time` of a point: UTC ms as a number or a string of digits.
fn time_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The answer to a post of which `stored` values were kept and `rejected` refused.
fn properties_answer(stored: usize, rejected: Vec<(String, ValueError)>) -> Answer {
    let Some((first_id, first)) = rejected.first() else {
        return Answer::ok(json!({}));
    };
    let code = first.code();
    let message = if first_id.is_empty() {
        first.to_string()
    } else {
        format!("{first_id}: {first}")
    };
    let dropped: Vec<Value> = rejected
        .iter()
        .filter(|(id, _)| !id.is_empty())
        .map(|(id, e)| json!({"identifier": id, "code": e.code(), "message": e.to_string()}))
        .collect();
    Answer {
        code,
        data: json!({"stored": stored, "dropped": dropped}),
        message,
        step: Some("tsl"),
    }
}

/// Drains uplinks of one shard in batches.
async fn shard_worker(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::new();
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut jobs, inner.config.batch_max.max(1)) => n,
            _ = inner.stop.cancelled() => {
                rx.close();
                rx.recv_many(&mut jobs, inner.config.batch_max.max(1)).await
            }
        };
        if n == 0 {
            break;
        }
        let mut batch = Batch::default();
        for job in jobs.drain(..) {
            inner.handle(job, &mut batch).await;
        }
        commit(&inner, batch).await;
    }
}

/// Stores a batch, then sends its replies and releases its acknowledgements.
async fn commit(inner: &Inner, batch: Batch) {
    let Batch {
        records,
        log,
        replies,
        done,
    } = batch;
    let listener = inner.listener.get().filter(|_| !records.is_empty());
    let told = listener.map(|_| records.clone());
    let stored = if records.is_empty() {
        Ok(())
    } else {
        inner.store.append(records).await
    };
    if let Err(error) = stored {
        inner.stats.store_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%error, "thing-model history write failed");
        for tx in done {
            let _ = tx.send(Err(NotAccepted(error.to_string())));
        }
        return;
    }
    let handed = match (listener, told) {
        (Some(listener), Some(records)) => Some(listener.on_records(&records)),
        _ => None,
    };
    if !log.is_empty()
        && let Err(error) = inner.store.append_log(log).await
    {
        tracing::warn!(%error, "device log entries not stored");
    }
    if let Some(broker) = inner.broker.get().and_then(WeakBroker::upgrade) {
        for (topic, payload) in replies {
            if let Err(error) = broker
                .publish(&topic, payload, QoS::AtMostOnce, false)
                .await
            {
                tracing::warn!(%error, topic, "reply not published");
            }
        }
    }
    if let Some(handed) = handed {
        handed.await;
    }
    for tx in done {
        let _ = tx.send(Ok(()));
    }
}

/// The broker hook: takes thing-model uplinks of a device's own topics.
struct Hook(Arc<Inner>);

impl MessageHook for Hook {
    fn on_publish(&self, uplink: Uplink<'_>) -> Intercept {
        let Some(c) = topic::classify(uplink.topic) else {
            return Intercept::Route;
        };
        // Only the device itself, or the gateway it logged in through, speaks for its topics.
        let own = uplink
            .principal
            .speaks_for(&lode_alink::identity_key(c.product_key, c.device_name));
        if !own {
            return Intercept::Route;
        }
        let device = DeviceKey::new(c.product_key, c.device_name);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        device.hash(&mut h);
        let shard = (h.finish() % self.0.shards.len() as u64) as usize;
        let (tx, rx) = oneshot::channel();
        let job = Job {
            device,
            topic: uplink.topic.to_owned(),
            kind: c.kind.into(),
            payload: uplink.payload.clone(),
            received: now_ms(),
            done: tx,
        };
        if self.0.shards[shard].send(job).is_err() {
            return Intercept::Take(Box::pin(async {
                Err(NotAccepted("the thing model is shutting down".into()))
            }));
        }
        let done = Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(NotAccepted("the thing model stopped".into())))
        });
        // RRPC answers are consumed by the platform: routed back, they would reach the
        // device's own RRPC subscription and make it answer itself.
        let rrpc_answer = matches!(
            c.kind,
            UplinkKind::ExtRrpcReply { .. }
                | UplinkKind::ExtRrpcRawReply { .. }
                | UplinkKind::RrpcResponse(_)
                | UplinkKind::CustomRrpcReply { .. }
        );
        if rrpc_answer {
            Intercept::Take(done)
        } else {
            // Also routed: applications allowed to watch device topics see the raw message.
            Intercept::TakeAndRoute(done)
        }
    }
}
