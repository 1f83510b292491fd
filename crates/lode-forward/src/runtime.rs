//! The running rules engine: inputs, evaluation, buffers and delivery workers.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use lode_broker::{Broker, Intercept, MessageHook, NotAccepted, Tap, Tapped, Uplink};
use lode_history::Record;
use lode_registry::RegistryStore;
use lode_rules::{Outcome, Source};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::action::{Action, DestinationConfig};
use crate::buffer::{Buffer, Buffers, ERROR_ACTION, Job, Target};
use crate::config::ForwardConfig;
use crate::deliver::{Failure, Http, republish};
use crate::stats::{RuleStats, TraceEntry};
use crate::template::{Meta, render};

/// Inputs the dispatcher takes at once.
const INPUT_BATCH: usize = 512;
/// Inserts a database destination commits at once.
const INSERT_BATCH: usize = 256;
/// Longest payload text kept in a trace entry.
const TRACE_PAYLOAD: usize = 4096;

/// Counters of the runtime as a whole.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) input_dropped: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) buffer_errors: AtomicU64,
    /// Messages published to the applications' stream (`$lode/...`).
    pub(crate) streamed: AtomicU64,
    /// Stream messages that waited for their account's rate.
    pub(crate) stream_throttled: AtomicU64,
    /// Stream messages dropped because the stream queues were full.
    pub(crate) stream_dropped: AtomicU64,
}

/// A rule as the runtime runs it.
pub(crate) struct LiveRule {
    pub(crate) id: String,
    pub(crate) account_id: String,
    pub(crate) enabled: bool,
    pub(crate) rule: lode_rules::Rule,
    pub(crate) actions: Vec<Action>,
    pub(crate) error_action: Option<Action>,
    pub(crate) stats: Arc<RuleStats>,
}

/// What the dispatcher receives.
pub(crate) enum Input {
    Tapped {
        topic: String,
        payload: Bytes,
        qos: u8,
        identity: Option<String>,
        peer: Option<SocketAddr>,
        platform: bool,
        at: i64,
    },
    Records(Vec<Record>, i64),
}

/// An input and, when a device's acknowledgement waits for it, who to tell once its
/// jobs are buffered.
pub(crate) struct Offer {
    input: Input,
    done: Option<oneshot::Sender<bool>>,
}

/// Which messages a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    /// As published by devices.
    Topic,
    /// Validated thing-model data.
    Thing,
    /// Device status.
    Status,
    /// Device lifecycle: created, deleted, enabled, disabled.
    Lifecycle,
}

impl Feed {
    pub(crate) fn of(source: &Source) -> Option<Feed> {
        match source {
            Source::Topic => Some(Feed::Topic),
            Source::PropertyPost { .. } | Source::Event { .. } => Some(Feed::Thing),
            Source::Status { .. } => Some(Feed::Status),
            Source::Lifecycle { .. } => Some(Feed::Lifecycle),
            _ => None,
        }
    }
}

/// One message ready for the rules.
struct Msg {
    feed: Feed,
    topic: String,
    payload: Bytes,
    json: Option<Value>,
    product_key: String,
    device_name: String,
    client_ip: Option<String>,
    id: String,
    at: i64,
    qos: u8,
}

/// A token bucket per account.
struct Bucket {
    tokens: f64,
    last: Instant,
}

pub(crate) struct Inner {
    pub(crate) config: ForwardConfig,
    pub(crate) registry: Arc<dyn RegistryStore>,
    broker: Broker,
    pub(crate) rules: RwLock<Arc<Vec<Arc<LiveRule>>>>,
    pub(crate) destinations: RwLock<HashMap<String, (String, DestinationConfig)>>,
    buffers: Buffers,
    input: mpsc::Sender<Offer>,
    stream: mpsc::UnboundedSender<crate::stream::Item>,
    pub(crate) counters: Arc<Counters>,
    accounts: Mutex<HashMap<String, Option<String>>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    http: Http,
    pub(crate) sinks: crate::sink::Sinks,
    next_id: AtomicU64,
    pub(crate) stop: CancellationToken,
    tasks: TaskTracker,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The evaluation context: wall clock and the thread's random numbers.
struct Ctx;

impl lode_rules::Context for Ctx {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
    fn uuid(&self) -> String {
        let b: [u8; 16] = rand::random();
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
    fn random(&self) -> f64 {
        rand::random::<f64>()
    }
}

impl Inner {
    pub(crate) fn start(
        config: ForwardConfig,
        registry: Arc<dyn RegistryStore>,
        broker: Broker,
        buffers: Buffers,
        http: Http,
    ) -> Arc<Inner> {
        let (tx, rx) = mpsc::channel(config.input_queue.max(1));
        let (stream_tx, stream_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(crate::stream::run(
            broker.clone(),
            config.stream_rate,
            config.stream_queue,
            counters.clone(),
            stream_rx,
            stop.clone(),
        ));
        let inner = Arc::new(Inner {
            config,
            registry,
            broker,
            rules: RwLock::new(Arc::new(Vec::new())),
            destinations: RwLock::new(HashMap::new()),
            buffers,
            input: tx,
            stream: stream_tx,
            counters,
            accounts: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            http,
            sinks: crate::sink::Sinks::default(),
            next_id: AtomicU64::new(u64::try_from(now_ms()).unwrap_or(0).saturating_mul(1000)),
            stop,
            tasks,
        });
        inner.tasks.spawn(dispatch(inner.clone(), rx));
        inner
    }

    /// Starts delivering what was buffered before the start; call it once the rules and
    /// destinations are loaded.
    pub(crate) fn resume(self: &Arc<Self>) {
        for buffer in self.buffers.all() {
            self.tasks.spawn(worker(self.clone(), buffer));
        }
    }

    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.buffers.flush();
    }

    /// Queues an input without waiting; a full queue drops it (counted).
    pub(crate) fn offer(&self, input: Input) {
        if self.stop.is_cancelled() {
            return;
        }
        if self.input.try_send(Offer { input, done: None }).is_err() {
            self.counters.input_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues an input and resolves `true` once the jobs it made are durably buffered
    /// (`false`: the runtime stopped first, or the buffer store failed). A full queue is
    /// waited for, not dropped: the caller holds a device's acknowledgement on it.
    pub(crate) fn hand_over(&self, input: Input) -> impl Future<Output = bool> + use<> {
        let (tx, rx) = oneshot::channel();
        let offer = Offer {
            input,
            done: Some(tx),
        };
        let queued = match self.input.try_send(offer) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(offer)) => Ok(Some((self.input.clone(), offer))),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        };
        async move {
            match queued {
                Err(()) => return false,
                Ok(Some((input, offer))) => {
                    if input.send(offer).await.is_err() {
                        return false;
                    }
                }
                Ok(None) => {}
            }
            rx.await.unwrap_or(false)
        }
    }

    /// Whether an enabled rule reading messages as published could match `topic`.
    fn reads_topic(&self, topic: &str) -> bool {
        self.rules.read().iter().any(|live| {
            live.enabled
                && Feed::of(&live.rule.source()) == Some(Feed::Topic)
                && live.rule.matches_topic(topic)
        })
    }

    /// Whether an enabled rule reads validated thing-model data.
    fn reads_thing_data(&self) -> bool {
        self.rules
            .read()
            .iter()
            .any(|live| live.enabled && Feed::of(&live.rule.source()) == Some(Feed::Thing))
    }

    /// Messages waiting in every buffer.
    pub(crate) fn buffered(&self) -> usize {
        self.buffers.all().iter().map(|b| b.len()).sum()
    }

    fn message_id(&self) -> String {
        self.next_id.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// The account owning product `pk`, cached.
    async fn account_of(&self, pk: &str) -> Option<String> {
        if let Some(a) = self.accounts.lock().get(pk) {
            return a.clone();
        }
        let account = match self.registry.get_product(pk).await {
            Ok(p) => p.map(|p| p.account_id),
            Err(error) => {
                tracing::warn!(%error, product_key = pk, "product lookup for rules failed");
                return None;
            }
        };
        self.accounts.lock().insert(pk.to_owned(), account.clone());
        account
    }

    /// Takes one message of `account` from its rate budget.
    fn admit(&self, account: &str) -> bool {
        let rate = f64::from(self.config.account_rate.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let b = buckets.entry(account.to_owned()).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Turns an input into the messages the rules read.
    fn messages(&self, input: Input) -> Vec<Msg> {
        match input {
            Input::Tapped {
                topic,
                payload,
                qos,
                identity,
                peer,
                platform,
                at,
            } => {
                let status = topic.strip_prefix("/as/mqtt/status/");
                let (feed, pk, dn) = match (platform, status, identity) {
                    (true, Some(rest), _) => match rest.split_once('/') {
                        Some((pk, dn)) => (Feed::Status, pk.to_owned(), dn.to_owned()),
                        None => return Vec::new(),
                    },
                    (true, None, _) => match lifecycle_device(&topic) {
                        Some((pk, dn)) => (Feed::Lifecycle, pk.to_owned(), dn.to_owned()),
                        None => return Vec::new(),
                    },
                    (false, _, Some(identity)) => match identity.split_once('/') {
                        Some((pk, dn)) => (Feed::Topic, pk.to_owned(), dn.to_owned()),
                        None => return Vec::new(),
                    },
                    // The platform's own messages (republished rows among them) and
                    // clients that are not devices do not feed rules.
                    _ => return Vec::new(),
                };
                let json = serde_json::from_slice(&payload).ok();
                vec![Msg {
                    feed,
                    topic,
                    payload,
                    json,
                    product_key: pk,
                    device_name: dn,
                    client_ip: peer.map(|p| p.ip().to_string()),
                    id: self.message_id(),
                    at,
                    qos,
                }]
            }
            Input::Records(records, at) => self.thing_messages(records, at),
        }
    }

    /// Validated thing-model data in the reference platform's forwarding format: one
    /// property post per device and batch, one message per event.
    fn thing_messages(&self, records: Vec<Record>, at: i64) -> Vec<Msg> {
        let mut posts: Vec<((String, String), Map<String, Value>)> = Vec::new();
        let mut out = Vec::new();
        for record in records {
            match record {
                Record::Property(p) => {
                    let key = (p.device.product_key, p.device.device_name);
                    let item = json!({"value": p.value, "time": p.device_time});
                    match posts.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, items)) => {
                            items.insert(p.identifier, item);
                        }
                        None => posts.push((key, Map::from_iter([(p.identifier, item)]))),
                    }
                }
                Record::Event(e) => {
                    let (pk, dn) = (e.device.product_key, e.device.device_name);
                    let body = json!({
                        "identifier": e.identifier, "name": e.identifier, "type": e.event_type,
                        "productKey": pk, "deviceName": dn, "value": e.output,
                        "time": e.device_time,
                    });
                    let topic = format!("/sys/{pk}/{dn}/thing/event/{}/post", e.identifier);
                    out.push(self.thing_msg(topic, body, pk, dn, at));
                }
            }
        }
        for ((pk, dn), items) in posts {
            let body = json!({
                "productKey": pk, "deviceName": dn, "gmtCreate": at, "items": items,
            });
            let topic = format!("/sys/{pk}/{dn}/thing/event/property/post");
            out.insert(0, self.thing_msg(topic, body, pk, dn, at));
        }
        out
    }

    fn thing_msg(&self, topic: String, body: Value, pk: String, dn: String, at: i64) -> Msg {
        Msg {
            feed: Feed::Thing,
            topic,
            payload: Bytes::from(body.to_string()),
            json: Some(body),
            product_key: pk,
            device_name: dn,
            client_ip: None,
            id: self.message_id(),
            at,
            qos: 1,
        }
    }

    /// Publishes the message to the applications' stream (server-side subscription):
    /// `$lode/${pk}/${dn}/thing/property` (validated property posts),
    /// `.../thing/event/${id}` (validated events), `.../status`, `.../user/...` (custom
    /// topics) and `.../thing/service/${id}_reply` (service replies), at QoS 1, so that a
    /// persistent application session keeps them until it acknowledges them.
    /// The stream is paced per account (`stream_rate`), in its own task.
    async fn stream(&self, msg: &Msg) {
        let Some(topic) = stream_topic(msg) else {
            return;
        };
        let Some(account) = self.account_of(&msg.product_key).await else {
            return;
        };
        let _ = self.stream.send(crate::stream::Item {
            account,
            topic,
            payload: msg.payload.clone(),
        });
    }

    /// Runs every rule of the message's account over it; returns the jobs to buffer.
    async fn evaluate(self: &Arc<Self>, msg: &Msg, jobs: &mut Vec<(Arc<Buffer>, Job)>) {
        let rules = self.rules.read().clone();
        if rules.is_empty() {
            return;
        }
        let Some(account) = self.account_of(&msg.product_key).await else {
            return;
        };
        let rmsg = lode_rules::Message {
            topic: &msg.topic,
            payload: &msg.payload,
            json: msg.json.as_ref(),
            product_key: &msg.product_key,
            device_name: &msg.device_name,
            client_ip: msg.client_ip.as_deref(),
            message_id: &msg.id,
            timestamp_ms: msg.at,
            qos: msg.qos,
        };
        let mut admitted = None;
        for live in rules.iter() {
            if !live.enabled
                || live.account_id != account
                || Feed::of(&live.rule.source()) != Some(msg.feed)
                || !live.rule.matches_topic(&msg.topic)
            {
                continue;
            }
            RuleStats::inc(&live.stats.matched);
            let ok = *admitted.get_or_insert_with(|| self.admit(&account));
            let tracing = live.stats.tracing();
            if !ok {
                RuleStats::inc(&live.stats.throttled);
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                if tracing {
                    live.stats.record(trace(msg, "throttled", None, None));
                }
                continue;
            }
            let outcome = if tracing {
                live.rule.evaluate(&rmsg, &Ctx)
            } else {
                live.rule.select(&rmsg, &Ctx).map(|row| match row {
                    Some(row) => Outcome::Row(row),
                    None => Outcome::Filtered {
                        reason: String::new(),
                    },
                })
            };
            match outcome {
                Ok(Outcome::Row(row)) => {
                    RuleStats::inc(&live.stats.passed);
                    if tracing {
                        live.stats.record(trace(
                            msg,
                            "row",
                            Some(Value::Object(row.clone())),
                            None,
                        ));
                    }
                    for (i, action) in live.actions.iter().enumerate() {
                        let index = u16::try_from(i).unwrap_or(ERROR_ACTION - 1);
                        let id = format!("{}-{}-{index}", msg.id, live.id);
                        let meta = Meta {
                            product_key: &msg.product_key,
                            device_name: &msg.device_name,
                            topic: &msg.topic,
                            message_id: &id,
                            timestamp_ms: msg.at,
                            rule_id: &live.id,
                        };
                        let job = Job {
                            target: target(action, &row, &meta),
                            id,
                            rule: live.id.clone(),
                            action: index,
                        };
                        jobs.push((self.buffer(job.target.buffer_name()), job));
                    }
                }
                Ok(Outcome::Filtered { reason }) => {
                    RuleStats::inc(&live.stats.filtered);
                    if tracing {
                        live.stats
                            .record(trace(msg, "filtered", None, Some(reason)));
                    }
                }
                Ok(Outcome::TopicMismatch) => {}
                Err(e) => {
                    live.stats.error(e.to_string());
                    if tracing {
                        live.stats
                            .record(trace(msg, "error", None, Some(e.to_string())));
                    }
                }
            }
        }
    }

    /// The buffer `name`, with its worker started when it is new.
    fn buffer(self: &Arc<Self>, name: &str) -> Arc<Buffer> {
        let (buffer, created) = self.buffers.get_or_create(name);
        if created {
            self.tasks.spawn(worker(self.clone(), buffer.clone()));
        }
        buffer
    }

    /// Buffers jobs durably and counts what the full policy dropped; `false` when the
    /// buffer store failed.
    async fn enqueue(self: &Arc<Self>, jobs: Vec<(Arc<Buffer>, Job)>) -> bool {
        if jobs.is_empty() {
            return true;
        }
        let n = jobs.len();
        match self.buffers.push(jobs).await {
            Ok(dropped) => {
                for job in dropped {
                    if let Some(s) = self.stats_of(&job)
                        && let Some(a) = s.action(job.action)
                    {
                        a.dropped();
                    }
                }
                true
            }
            Err(error) => {
                self.counters
                    .buffer_errors
                    .fetch_add(n as u64, Ordering::Relaxed);
                tracing::error!(%error, messages = n, "forwarded messages not buffered");
                false
            }
        }
    }

    fn stats_of(&self, job: &Job) -> Option<Arc<RuleStats>> {
        let rules = self.rules.read().clone();
        rules
            .iter()
            .find(|r| r.id == job.rule)
            .map(|r| r.stats.clone())
    }

    async fn deliver(&self, job: &Job) -> Result<(), Failure> {
        match &job.target {
            Target::Republish {
                topic,
                payload,
                qos,
            } => republish(&self.broker, topic, payload, *qos).await,
            Target::Webhook {
                destination,
                method,
                headers,
                body,
            } => match self.destination(destination)? {
                DestinationConfig::Http(http) => {
                    self.http.send(&http, job, method, headers, body).await
                }
                _ => Err(Failure::Permanent(format!(
                    "destination {destination} is not http"
                ))),
            },
            Target::Insert {
                destination,
                table,
                values,
                dedupe,
            } => {
                let config = self.destination(destination)?;
                let row = crate::sink::Row {
                    table,
                    values,
                    dedupe: *dedupe,
                };
                self.sinks.insert(destination, &config, &[row]).await
            }
            Target::Redis {
                destination,
                command,
                key,
                payload,
                fields,
            } => {
                let config = self.destination(destination)?;
                self.sinks
                    .redis(destination, &config, *command, key, payload, fields)
                    .await
            }
            Target::Amqp {
                destination,
                exchange,
                routing_key,
                payload,
            } => {
                let config = self.destination(destination)?;
                self.sinks
                    .amqp(
                        destination,
                        &config,
                        &job.id,
                        exchange,
                        routing_key,
                        payload,
                    )
                    .await
            }
            Target::Nats {
                destination,
                subject,
                payload,
            } => {
                let config = self.destination(destination)?;
                self.sinks
                    .nats(destination, &config, &job.id, subject, payload)
                    .await
            }
        }
    }

    /// Delivers consecutive inserts of one buffer in one transaction.
    async fn deliver_inserts(&self, batch: &[(u64, Job)]) -> Result<(), Failure> {
        let Some(Target::Insert { destination, .. }) = batch.first().map(|(_, j)| &j.target) else {
            return Ok(());
        };
        let config = self.destination(destination)?;
        let rows: Vec<crate::sink::Row<'_>> = batch
            .iter()
            .filter_map(|(_, j)| match &j.target {
                Target::Insert {
                    table,
                    values,
                    dedupe,
                    ..
                } => Some(crate::sink::Row {
                    table,
                    values,
                    dedupe: *dedupe,
                }),
                _ => None,
            })
            .collect();
        self.sinks.insert(destination, &config, &rows).await
    }

    fn destination(&self, id: &str) -> Result<DestinationConfig, Failure> {
        self.destinations
            .read()
            .get(id)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| Failure::Permanent(format!("destination {id} does not exist")))
    }

    /// A job that failed for good: counted, and handed to the rule's error action.
    async fn give_up(self: &Arc<Self>, job: &Job, error: &str) {
        let rules = self.rules.read().clone();
        let live = rules.iter().find(|r| r.id == job.rule);
        if let Some(s) = live.and_then(|r| r.stats.action(job.action)) {
            s.failed(error);
        }
        if job.action == ERROR_ACTION {
            return;
        }
        let Some(live) = live else { return };
        let Some(action) = &live.error_action else {
            return;
        };
        let report = json!({
            "messageId": job.id, "ruleId": job.rule, "action": job.action, "error": error,
            "payload": job.target.content(),
        });
        let Value::Object(row) = report else { return };
        let meta = Meta {
            product_key: "",
            device_name: "",
            topic: "",
            message_id: &job.id,
            timestamp_ms: now_ms(),
            rule_id: &job.rule,
        };
        let err_job = Job {
            id: format!("{}-error", job.id),
            rule: job.rule.clone(),
            action: ERROR_ACTION,
            target: target(action, &row, &meta),
        };
        let buffer = self.buffer(err_job.target.buffer_name());
        self.enqueue(vec![(buffer, err_job)]).await;
    }
}

fn trace(msg: &Msg, outcome: &str, row: Option<Value>, reason: Option<String>) -> TraceEntry {
    let payload = match std::str::from_utf8(&msg.payload) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&msg.payload)
        }
    };
    let mut cut = payload.len().min(TRACE_PAYLOAD);
    while !payload.is_char_boundary(cut) {
        cut -= 1;
    }
    TraceEntry {
        time: now_ms(),
        message_id: msg.id.clone(),
        topic: msg.topic.clone(),
        payload: payload[..cut].to_owned(),
        outcome: outcome.to_owned(),
        row,
        reason,
    }
}

/// Renders an action's target for one row.
pub(crate) fn target(action: &Action, row: &Map<String, Value>, meta: &Meta<'_>) -> Target {
    let row_json = || Value::Object(row.clone()).to_string();
    match action {
        Action::Republish {
            topic,
            qos,
            payload,
        } => Target::Republish {
            topic: render(topic, row, meta),
            payload: payload
                .as_deref()
                .map_or_else(row_json, |p| render(p, row, meta)),
            qos: *qos,
        },
        Action::Webhook {
            destination,
            method,
            headers,
            body,
        } => Target::Webhook {
            destination: destination.clone(),
            method: method.clone().unwrap_or_else(|| "POST".to_owned()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), render(v, row, meta)))
                .collect(),
            body: body
                .as_deref()
                .map_or_else(row_json, |b| render(b, row, meta)),
        },
        Action::Insert {
            destination,
            table,
            columns,
            message_id_column,
        } => {
            let mut values: Vec<(String, Value)> = columns
                .iter()
                .map(|(c, t)| (c.clone(), crate::template::value(t, row, meta)))
                .collect();
            if let Some(c) = message_id_column {
                values.push((c.clone(), Value::String(meta.message_id.to_owned())));
            }
            Target::Insert {
                destination: destination.clone(),
                table: table.clone(),
                values,
                dedupe: message_id_column.is_some(),
            }
        }
        Action::Amqp {
            destination,
            exchange,
            routing_key,
            payload,
        } => Target::Amqp {
            destination: destination.clone(),
            exchange: exchange.clone(),
            routing_key: render(routing_key, row, meta),
            payload: payload
                .as_deref()
                .map_or_else(row_json, |p| render(p, row, meta)),
        },
        Action::Nats {
            destination,
            subject,
            payload,
        } => Target::Nats {
            destination: destination.clone(),
            subject: render(subject, row, meta),
            payload: payload
                .as_deref()
                .map_or_else(row_json, |p| render(p, row, meta)),
        },
        Action::Redis {
            destination,
            command,
            key,
            payload,
        } => {
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let fields = match command {
                crate::action::RedisCommand::Xadd => row
                    .iter()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .chain([("messageId".to_owned(), meta.message_id.to_owned())])
                    .collect(),
                _ => Vec::new(),
            };
            Target::Redis {
                destination: destination.clone(),
                command: *command,
                key: render(key, row, meta),
                payload: payload
                    .as_deref()
                    .map_or_else(row_json, |p| render(p, row, meta)),
                fields,
            }
        }
    }
}

/// Evaluates inputs in batches and buffers the jobs of each batch with one write.
async fn dispatch(inner: Arc<Inner>, mut rx: mpsc::Receiver<Offer>) {
    let mut inputs = Vec::with_capacity(INPUT_BATCH);
    let mut waiting = Vec::new();
    loop {
        inputs.clear();
        let n = tokio::select! {
            n = rx.recv_many(&mut inputs, INPUT_BATCH) => n,
            () = inner.stop.cancelled() => 0,
        };
        if n == 0 {
            return;
        }
        inner
            .counters
            .received
            .fetch_add(n as u64, Ordering::Relaxed);
        let mut jobs = Vec::new();
        for offer in inputs.drain(..) {
            waiting.extend(offer.done);
            for msg in inner.messages(offer.input) {
                inner.evaluate(&msg, &mut jobs).await;
                inner.stream(&msg).await;
            }
        }
        let buffered = inner.enqueue(jobs).await;
        for done in waiting.drain(..) {
            let _ = done.send(buffered);
        }
    }
}

/// Delivers one buffer's jobs in order, retrying with backoff.
async fn worker(inner: Arc<Inner>, buffer: Arc<Buffer>) {
    let mut attempts: u32 = 0;
    let mut current = None;
    // After a batch failed for good, the next jobs go one by one to find the culprit.
    let mut single = 0usize;
    loop {
        let Some((seq, job)) = buffer.front() else {
            tokio::select! {
                () = buffer.wake.notified() => continue,
                () = inner.stop.cancelled() => return,
            }
        };
        if current != Some(seq) {
            current = Some(seq);
            attempts = 0;
        }
        let batch = if single == 0 && matches!(job.target, Target::Insert { .. }) {
            buffer.front_batch(INSERT_BATCH, |j| matches!(j.target, Target::Insert { .. }))
        } else {
            Vec::new()
        };
        if batch.len() > 1 {
            let result = tokio::select! {
                r = inner.deliver_inserts(&batch) => r,
                () = inner.stop.cancelled() => return,
            };
            match result {
                Ok(()) => {
                    for (seq, job) in &batch {
                        if let Some(s) = inner.stats_of(job)
                            && let Some(a) = s.action(job.action)
                        {
                            a.forwarded();
                        }
                        inner.buffers.remove(&buffer, *seq);
                    }
                    continue;
                }
                Err(Failure::Transient(e)) if attempts + 1 < inner.config.max_attempts => {
                    attempts += 1;
                    if let Some(s) = inner.stats_of(&job)
                        && let Some(a) = s.action(job.action)
                    {
                        a.retried(&e);
                    }
                    let wait = inner.config.backoff(attempts);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = inner.stop.cancelled() => return,
                    }
                    continue;
                }
                Err(_) => {
                    single = batch.len();
                    continue;
                }
            }
        }
        single = single.saturating_sub(1);
        let result = tokio::select! {
            r = inner.deliver(&job) => r,
            () = inner.stop.cancelled() => return,
        };
        match result {
            Ok(()) => {
                if let Some(s) = inner.stats_of(&job)
                    && let Some(a) = s.action(job.action)
                {
                    a.forwarded();
                }
                inner.buffers.remove(&buffer, seq);
            }
            Err(Failure::Transient(e)) if attempts + 1 < inner.config.max_attempts => {
                attempts += 1;
                if let Some(s) = inner.stats_of(&job)
                    && let Some(a) = s.action(job.action)
                {
                    a.retried(&e);
                }
                tracing::debug!(
                    buffer = buffer.name,
                    error = e,
                    attempts,
                    "delivery failed, retrying"
                );
                let wait = inner.config.backoff(attempts);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = inner.stop.cancelled() => return,
                }
            }
            Err(failure) => {
                inner.buffers.remove(&buffer, seq);
                inner.give_up(&job, failure.message()).await;
            }
        }
    }
}

/// The broker tap: copies the platform's own routed messages (device status, lifecycle)
/// into the input queue. Holds the runtime weakly: the runtime holds the broker, so a
/// strong reference would keep both alive for ever.
pub(crate) struct BrokerTap(pub(crate) std::sync::Weak<Inner>);

impl Tap for BrokerTap {
    fn on_message(&self, msg: Tapped<'_>) {
        if msg.client.is_some() {
            return;
        }
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        inner.offer(Input::Tapped {
            topic: msg.topic.to_owned(),
            payload: msg.payload.clone(),
            qos: msg.qos as u8,
            identity: msg.client.and_then(|c| c.identity).map(str::to_owned),
            peer: msg.client.map(|c| c.peer),
            platform: msg.client.is_none(),
            at: now_ms(),
        });
    }
}

/// The broker hook: hands each device publish to the rules. When an enabled rule may
/// match a QoS 1 or 2 message, the device's acknowledgement waits until the rows it made
/// are durably buffered, so a crash cannot lose a message its device saw acknowledged;
/// otherwise it is only queued. Holds the runtime weakly, as the tap.
pub(crate) struct BrokerHook(pub(crate) std::sync::Weak<Inner>);

impl MessageHook for BrokerHook {
    fn on_publish(&self, uplink: Uplink<'_>) -> Intercept {
        let Some(inner) = self.0.upgrade() else {
            return Intercept::Route;
        };
        let Some(identity) = publisher_identity(uplink.principal, uplink.topic) else {
            return Intercept::Route;
        };
        let input = Input::Tapped {
            topic: uplink.topic.to_owned(),
            payload: uplink.payload.clone(),
            qos: uplink.qos as u8,
            identity: Some(identity),
            peer: Some(uplink.peer),
            platform: false,
            at: now_ms(),
        };
        // QoS 0 has no acknowledgement to hold, and holding it would stall the device's
        // connection on every message.
        if inner.stop.is_cancelled()
            || uplink.qos == lode_mqtt::QoS::AtMostOnce
            || !inner.reads_topic(uplink.topic)
        {
            inner.offer(input);
            return Intercept::Route;
        }
        let handed = inner.hand_over(input);
        Intercept::TakeAndRoute(Box::pin(async move {
            if handed.await {
                Ok(())
            } else {
                Err(NotAccepted(
                    "the rules engine could not buffer the message".into(),
                ))
            }
        }))
    }
}

/// The device a publish is attributed to: the one its topic names
/// (`/sys/{pk}/{dn}/...`, `/{pk}/{dn}/...`) when the publisher speaks for it (itself, or
/// a gateway for its sub-device), else the publisher. `None` for clients that are not
/// devices.
fn publisher_identity(principal: &lode_broker::Principal, topic: &str) -> Option<String> {
    let levels = topic
        .strip_prefix('/')
        .map(|t| t.strip_prefix("sys/").unwrap_or(t));
    if let Some(mut parts) = levels.map(|t| t.splitn(3, '/'))
        && let (Some(pk), Some(dn)) = (parts.next(), parts.next())
    {
        let key = format!("{pk}/{dn}");
        if principal.speaks_for(&key) {
            return Some(key);
        }
    }
    principal.unique_key.clone()
}

/// The thing-model listener: copies validated data into the input queue. When an
/// enabled rule reads thing-model data, the batch's acknowledgements wait until its rows
/// are durably buffered.
pub(crate) struct ThingListener(pub(crate) Arc<Inner>);

impl lode_thing::RecordListener for ThingListener {
    fn on_records(&self, records: &[Record]) -> lode_broker::BoxFuture<'static, ()> {
        let input = Input::Records(records.to_vec(), now_ms());
        if !self.0.reads_thing_data() {
            self.0.offer(input);
            return Box::pin(async {});
        }
        let handed = self.0.hand_over(input);
        Box::pin(async move {
            if !handed.await {
                tracing::warn!("validated thing-model data not buffered for the rules");
            }
        })
    }
}

/// The device of a lifecycle message the platform published on `/{pk}/{dn}/thing/lifecycle`.
fn lifecycle_device(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix('/')?.strip_suffix("/thing/lifecycle")?;
    let (pk, dn) = rest.split_once('/')?;
    (!pk.is_empty() && !dn.is_empty() && !dn.contains('/')).then_some((pk, dn))
}

/// The applications' stream topic of a message, when it has one.
fn stream_topic(msg: &Msg) -> Option<String> {
    let (pk, dn) = (&msg.product_key, &msg.device_name);
    let base = format!("$lode/{pk}/{dn}");
    match msg.feed {
        Feed::Status => Some(format!("{base}/status")),
        Feed::Lifecycle => Some(format!("{base}/lifecycle")),
        Feed::Thing => {
            let rest = msg
                .topic
                .strip_prefix(&format!("/sys/{pk}/{dn}/thing/event/"))?;
            if rest == "property/post" {
                Some(format!("{base}/thing/property"))
            } else {
                let id = rest.strip_suffix("/post")?;
                Some(format!("{base}/thing/event/{id}"))
            }
        }
        Feed::Topic => {
            if let Some(rest) = msg.topic.strip_prefix(&format!("/{pk}/{dn}/user/")) {
                return Some(format!("{base}/user/{rest}"));
            }
            let service = msg
                .topic
                .strip_prefix(&format!("/sys/{pk}/{dn}/thing/service/"))?;
            (service.ends_with("_reply") && !service.contains('/'))
                .then(|| format!("{base}/thing/service/{service}"))
        }
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    fn msg(feed: Feed, topic: &str) -> Msg {
        Msg {
            feed,
            topic: topic.to_owned(),
            payload: Bytes::new(),
            json: None,
            product_key: "pk".into(),
            device_name: "dn".into(),
            client_ip: None,
            id: "1".into(),
            at: 0,
            qos: 0,
        }
    }

    #[test]
    fn stream_topics() {
        let cases = [
            (
                Feed::Thing,
                "/sys/pk/dn/thing/event/property/post",
                Some("$lode/pk/dn/thing/property"),
            ),
            (
                Feed::Thing,
                "/sys/pk/dn/thing/event/Alarm/post",
                Some("$lode/pk/dn/thing/event/Alarm"),
            ),
            (
                Feed::Status,
                "/as/mqtt/status/pk/dn",
                Some("$lode/pk/dn/status"),
            ),
            (
                Feed::Topic,
                "/pk/dn/user/update",
                Some("$lode/pk/dn/user/update"),
            ),
            (
                Feed::Topic,
                "/sys/pk/dn/thing/service/Echo_reply",
                Some("$lode/pk/dn/thing/service/Echo_reply"),
            ),
            // Raw thing-model uplinks come validated through the thing feed instead.
            (Feed::Topic, "/sys/pk/dn/thing/event/property/post", None),
            (
                Feed::Topic,
                "/sys/pk/dn/thing/service/property/set_reply",
                None,
            ),
            (Feed::Topic, "/other/dn/user/x", None),
        ];
        for (feed, topic, expected) in cases {
            assert_eq!(
                stream_topic(&msg(feed, topic)).as_deref(),
                expected,
                "{topic}"
            );
        }
    }
}
