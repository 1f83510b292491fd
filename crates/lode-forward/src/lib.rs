//! The rules-engine runtime: evaluates the rules of each account over device messages
//! and forwards their rows to destinations, reliably and without slowing devices down.
//!
//! # Inputs
//!
//! - Every message the broker routes, through a [`lode_broker::Tap`] installed by
//!   [`Forwarder::start`]: device uplinks on any topic, the device status messages
//!   (`/as/mqtt/status/{pk}/{dn}`) and the lifecycle messages the management API
//!   publishes when a device is created, deleted, enabled or disabled
//!   (`/{pk}/{dn}/thing/lifecycle`). Other messages of the platform itself (republished
//!   rows among them, so rules cannot loop) and of clients that are not devices do not
//!   feed rules.
//! - Validated thing-model data, through a [`lode_thing::RecordListener`]
//!   ([`Forwarder::thing_listener`]), after the thing model has stored it: property posts
//!   (`FROM "/sys/+/+/thing/event/property/post"`) and events, in the reference
//!   platform's forwarding format ([`lode_rules::Source`]).
//!
//! Both only copy the message into a bounded queue (`input_queue`); when it is full the
//! message is counted in `inputDropped` and not evaluated, so a busy rules engine never
//! holds a device's connection.
//!
//! # Rules and actions
//!
//! A rule ([`RuleSpec`]) belongs to an account and sees only messages of that account's
//! products. For each message whose topic matches its FROM clause (counted `matched`),
//! within the account's rate (`account_rate` messages per second, the rest counted
//! `throttled`), the rule is evaluated; a row (`passed`) becomes one job per action,
//! rendered with `${…}` templates ([`Action`]).
//!
//! # Delivery
//!
//! Jobs wait in a durable buffer per destination (republished rows share one buffer),
//! written with one fsync per batch of messages, read back after a restart. One worker
//! per buffer delivers in order; a failure is retried with exponential backoff up to
//! `max_attempts`, then the job goes to the rule's error action with the error. Every
//! job carries a stable message id (`x-lode-message-id` for webhooks): delivery is
//! at least once, and receivers drop duplicates by that id. A full buffer follows
//! [`FullPolicy`]. A slow or dead destination holds only its own buffer.

mod action;
mod buffer;
mod config;
mod deliver;
mod error;
mod runtime;
mod sink;
mod stats;
mod stream;
mod template;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lode_broker::Broker;
use lode_registry::{DestinationRecord, NewDestination, NewRule, RegistryStore, RuleRecord};
use serde::{Deserialize, Serialize};

pub use action::{Action, DestinationConfig, HttpDestination, RedisCommand, UrlDestination};
pub use config::{ForwardConfig, FullPolicy};
pub use deliver::{MESSAGE_ID_HEADER, RULE_ID_HEADER};
pub use error::ForwardError;
pub use stats::{ActionCounters, RuleCounters, TraceEntry};

use runtime::{BrokerHook, BrokerTap, Feed, Inner, LiveRule, ThingListener};
use stats::RuleStats;

/// A rule as callers write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    /// `SELECT … FROM '<topic filter>' [WHERE …]` (see `lode-rules`).
    pub sql: String,
    #[serde(default)]
    pub enabled: bool,
    /// Up to `actions_per_rule` actions.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// Receives messages that failed after retries, as `{messageId, ruleId, action,
    /// error, payload}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_action: Option<Action>,
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    pub id: String,
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// Creation time, ms since the Unix epoch.
    pub created_at: i64,
    /// Last change, ms since the Unix epoch.
    pub updated_at: i64,
}

/// A destination as callers write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationSpec {
    pub name: String,
    /// `http`.
    pub kind: String,
    /// Settings and credentials of the kind ([`HttpDestination`] for `http`).
    pub config: serde_json::Value,
}

/// A stored destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationView {
    pub id: String,
    #[serde(flatten)]
    pub spec: DestinationSpec,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What testing a rule against a sample message gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// `row`, `filtered` or `topicMismatch`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<serde_json::Value>,
    /// Why the WHERE clause was not true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A rule's trace: the messages recorded so far and how many it still waits for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Trace {
    pub remaining: u32,
    pub entries: Vec<TraceEntry>,
}

/// Counters of the runtime as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeCounters {
    /// Messages that reached the rules.
    pub received: u64,
    /// Messages dropped because the input queue was full.
    pub input_dropped: u64,
    /// Rule evaluations skipped because an account was over its rate.
    pub throttled: u64,
    /// Jobs lost because the buffer store failed.
    pub buffer_errors: u64,
    /// Jobs waiting in every buffer now.
    pub buffered: u64,
    /// Messages published to the applications' stream (`$lode/...`).
    pub streamed: u64,
    /// Stream messages that waited because their account was over its stream rate.
    pub stream_throttled: u64,
    /// Stream messages dropped because the stream queues were full.
    pub stream_dropped: u64,
}

impl RuntimeCounters {
    /// Appends the counters in the Prometheus text format (`lode_rules_*`).
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let rows: [(&str, &str, &str, u64); 8] = [
            (
                "lode_rules_received_total",
                "counter",
                "Messages that reached the rules.",
                self.received,
            ),
            (
                "lode_rules_input_dropped_total",
                "counter",
                "Messages dropped because the rules' input queue was full.",
                self.input_dropped,
            ),
            (
                "lode_rules_throttled_total",
                "counter",
                "Rule evaluations skipped because an account was over its rate.",
                self.throttled,
            ),
            (
                "lode_rules_buffer_errors_total",
                "counter",
                "Rows lost because the buffer store failed.",
                self.buffer_errors,
            ),
            (
                "lode_rules_buffered",
                "gauge",
                "Rows waiting in the destination buffers.",
                self.buffered,
            ),
            (
                "lode_stream_messages_total",
                "counter",
                "Messages published to the applications' stream.",
                self.streamed,
            ),
            (
                "lode_stream_throttled_total",
                "counter",
                "Stream messages that waited for their account's rate.",
                self.stream_throttled,
            ),
            (
                "lode_stream_dropped_total",
                "counter",
                "Stream messages dropped because the stream queues were full.",
                self.stream_dropped,
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

/// The running rules engine. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

impl Forwarder {
    /// Opens the buffers, loads every rule and destination, starts delivering what was
    /// buffered, and taps the broker.
    pub async fn start(
        config: ForwardConfig,
        registry: Arc<dyn RegistryStore>,
        broker: Broker,
    ) -> Result<Forwarder, ForwardError> {
        let dir = config.dir.clone();
        let (capacity, policy) = (config.buffer_capacity, config.full_policy);
        let buffers =
            tokio::task::spawn_blocking(move || buffer::Buffers::open(&dir, capacity, policy))
                .await
                .map_err(|e| ForwardError::Buffer(e.to_string()))??;
        let http = deliver::Http::new().map_err(|e| ForwardError::Buffer(e.to_string()))?;
        let destinations = registry.rules().list_destinations(None).await?;
        let rules = registry.rules().list_rules(None).await?;
        let inner = Inner::start(config, registry, broker.clone(), buffers, http);
        {
            let mut map = inner.destinations.write();
            for d in destinations {
                match parse_destination(&d) {
                    Ok(config) => {
                        map.insert(d.id.clone(), (d.account_id.clone(), config));
                    }
                    Err(error) => tracing::warn!(%error, id = d.id, "destination not loaded"),
                }
            }
        }
        let fw = Forwarder { inner };
        let mut live = Vec::new();
        for r in rules {
            match fw.live(&r) {
                Ok(l) => live.push(Arc::new(l)),
                Err(error) => tracing::warn!(%error, id = r.id, "rule not loaded"),
            }
        }
        *fw.inner.rules.write() = Arc::new(live);
        fw.inner.resume();
        broker.add_tap(Arc::new(BrokerTap(Arc::downgrade(&fw.inner))));
        broker.add_message_hook(Arc::new(BrokerHook(Arc::downgrade(&fw.inner))));
        Ok(fw)
    }

    /// The listener to install on the thing-model runtime
    /// ([`lode_thing::ThingEngine::set_listener`]).
    pub fn thing_listener(&self) -> Arc<dyn lode_thing::RecordListener> {
        Arc::new(ThingListener(self.inner.clone()))
    }

    /// Stops evaluating and delivering (what is buffered stays for the next start).
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    /// Counters of the runtime as a whole.
    pub fn counters(&self) -> RuntimeCounters {
        let c = &self.inner.counters;
        RuntimeCounters {
            received: c.received.load(Ordering::Relaxed),
            input_dropped: c.input_dropped.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            buffer_errors: c.buffer_errors.load(Ordering::Relaxed),
            buffered: self.inner.buffered() as u64,
            streamed: c.streamed.load(Ordering::Relaxed),
            stream_throttled: c.stream_throttled.load(Ordering::Relaxed),
            stream_dropped: c.stream_dropped.load(Ordering::Relaxed),
        }
    }

    // --- rules

    /// Checks a rule: SQL, source, actions and their destinations (of `account`).
    fn check(&self, account: &str, spec: &RuleSpec) -> Result<lode_rules::Rule, ForwardError> {
        let rule = lode_rules::Rule::parse(&spec.sql)?;
        if Feed::of(&rule.source()).is_none() {
            return Err(ForwardError::UnsupportedSource(format!(
                "{:?} is not fed to rules yet",
                rule.topic_filter()
            )));
        }
        let limit = self.inner.config.actions_per_rule;
        if spec.actions.len() > limit {
            return Err(ForwardError::TooManyActions {
                len: spec.actions.len(),
                limit,
            });
        }
        let all = spec
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| (i.to_string(), a))
            .chain(spec.error_action.iter().map(|a| ("error".to_owned(), a)));
        for (index, action) in all {
            action.validate(&index)?;
            if let Some((id, kinds)) = action.destination() {
                let kind = match self.inner.destinations.read().get(id) {
                    Some((a, config)) if a == account => config.kind(),
                    _ => {
                        return Err(ForwardError::InvalidAction {
                            index,
                            reason: format!("destination {id} does not exist"),
                        });
                    }
                };
                if !kinds.contains(&kind) {
                    return Err(ForwardError::InvalidAction {
                        index,
                        reason: format!("destination {id} is {kind}, not {}", kinds.join(" or ")),
                    });
                }
            }
        }
        Ok(rule)
    }

    fn live(&self, r: &RuleRecord) -> Result<LiveRule, ForwardError> {
        let view = view(r)?;
        let rule = lode_rules::Rule::parse(&view.spec.sql)?;
        let n = view.spec.actions.len();
        let old = self
            .inner
            .rules
            .read()
            .iter()
            .find(|l| l.id == r.id)
            .map(|l| l.stats.clone())
            .filter(|s| s.actions.len() == n);
        Ok(LiveRule {
            id: r.id.clone(),
            account_id: r.account_id.clone(),
            enabled: r.enabled,
            rule,
            actions: view.spec.actions,
            error_action: view.spec.error_action,
            stats: old
                .unwrap_or_else(|| Arc::new(RuleStats::new(n, self.inner.config.trace_capacity))),
        })
    }

    /// Puts a stored rule into the running set (replacing its old version).
    fn install(&self, r: &RuleRecord) -> Result<(), ForwardError> {
        let live = Arc::new(self.live(r)?);
        let mut rules = self.inner.rules.write();
        let mut next: Vec<Arc<LiveRule>> = rules.iter().filter(|l| l.id != r.id).cloned().collect();
        next.push(live);
        *rules = Arc::new(next);
        Ok(())
    }

    async fn owned_rule(&self, account: &str, id: &str) -> Result<RuleRecord, ForwardError> {
        match self.inner.registry.rules().get_rule(id).await? {
            Some(r) if r.account_id == account => Ok(r),
            _ => Err(ForwardError::RuleNotFound(id.to_owned())),
        }
    }

    /// Creates a rule of `account`; it runs at once when `enabled`.
    pub async fn create_rule(
        &self,
        account: &str,
        spec: RuleSpec,
    ) -> Result<RuleView, ForwardError> {
        self.check(account, &spec)?;
        let limit = self.inner.config.rules_per_account;
        let r = self
            .inner
            .registry
            .rules()
            .create_rule(account, new_rule(&spec)?, limit)
            .await?;
        self.install(&r)?;
        view(&r)
    }

    /// Replaces a rule; the running version changes at once.
    pub async fn update_rule(
        &self,
        account: &str,
        id: &str,
        spec: RuleSpec,
    ) -> Result<RuleView, ForwardError> {
        self.owned_rule(account, id).await?;
        self.check(account, &spec)?;
        let r = self
            .inner
            .registry
            .rules()
            .update_rule(id, new_rule(&spec)?)
            .await?;
        self.install(&r)?;
        view(&r)
    }

    /// Enables or disables a rule, without a restart.
    pub async fn set_enabled(
        &self,
        account: &str,
        id: &str,
        enabled: bool,
    ) -> Result<RuleView, ForwardError> {
        self.owned_rule(account, id).await?;
        let r = self
            .inner
            .registry
            .rules()
            .set_rule_enabled(id, enabled)
            .await?;
        self.install(&r)?;
        view(&r)
    }

    pub async fn get_rule(&self, account: &str, id: &str) -> Result<RuleView, ForwardError> {
        view(&self.owned_rule(account, id).await?)
    }

    pub async fn list_rules(&self, account: &str) -> Result<Vec<RuleView>, ForwardError> {
        let rules = self
            .inner
            .registry
            .rules()
            .list_rules(Some(account))
            .await?;
        rules.iter().map(view).collect()
    }

    /// Deletes a rule; jobs it already buffered are still delivered.
    pub async fn delete_rule(&self, account: &str, id: &str) -> Result<(), ForwardError> {
        self.owned_rule(account, id).await?;
        self.inner.registry.rules().delete_rule(id).await?;
        let mut rules = self.inner.rules.write();
        let next: Vec<Arc<LiveRule>> = rules.iter().filter(|l| l.id != id).cloned().collect();
        *rules = Arc::new(next);
        Ok(())
    }

    /// Counters of one rule and its actions.
    pub async fn rule_counters(
        &self,
        account: &str,
        id: &str,
    ) -> Result<RuleCounters, ForwardError> {
        self.owned_rule(account, id).await?;
        Ok(self
            .live_stats(id)
            .map(|s| s.snapshot())
            .unwrap_or_default())
    }

    fn live_stats(&self, id: &str) -> Option<Arc<RuleStats>> {
        self.inner
            .rules
            .read()
            .iter()
            .find(|l| l.id == id)
            .map(|l| l.stats.clone())
    }

    /// Traces the next `n` messages that match the rule's FROM clause (clearing the
    /// previous trace; at most `trace_capacity`).
    pub async fn start_trace(&self, account: &str, id: &str, n: u32) -> Result<(), ForwardError> {
        self.owned_rule(account, id).await?;
        if let Some(s) = self.live_stats(id) {
            s.start_trace(n);
        }
        Ok(())
    }

    /// The rule's trace so far.
    pub async fn trace(&self, account: &str, id: &str) -> Result<Trace, ForwardError> {
        self.owned_rule(account, id).await?;
        let (entries, remaining) = self.live_stats(id).map(|s| s.trace()).unwrap_or_default();
        Ok(Trace { remaining, entries })
    }

    // --- destinations

    async fn owned_destination(
        &self,
        account: &str,
        id: &str,
    ) -> Result<DestinationRecord, ForwardError> {
        match self.inner.registry.rules().get_destination(id).await? {
            Some(d) if d.account_id == account => Ok(d),
            _ => Err(ForwardError::DestinationNotFound(id.to_owned())),
        }
    }

    /// Checks a destination's settings and that its host answers.
    async fn check_destination(spec: &DestinationSpec) -> Result<DestinationConfig, ForwardError> {
        let config = DestinationConfig::parse(&spec.kind, &spec.config)?;
        if let Some((host, port)) = config.probe_address() {
            let probe = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await;
            match probe {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(ForwardError::DestinationCheckFailed(format!(
                        "cannot connect to {host}:{port}: {e}"
                    )));
                }
                Err(_) => {
                    return Err(ForwardError::DestinationCheckFailed(format!(
                        "no answer from {host}:{port} within 5 s"
                    )));
                }
            }
        }
        sink::Sinks::connect(&config)
            .await
            .map_err(|f| ForwardError::DestinationCheckFailed(f.message().to_owned()))?;
        Ok(config)
    }

    /// Creates a destination of `account` after checking it.
    pub async fn create_destination(
        &self,
        account: &str,
        spec: DestinationSpec,
    ) -> Result<DestinationView, ForwardError> {
        let config = Self::check_destination(&spec).await?;
        let d = self
            .inner
            .registry
            .rules()
            .create_destination(account, new_destination(&spec))
            .await?;
        self.inner
            .destinations
            .write()
            .insert(d.id.clone(), (account.to_owned(), config));
        destination_view(&d)
    }

    /// Replaces a destination after checking it; buffered jobs use the new settings.
    pub async fn update_destination(
        &self,
        account: &str,
        id: &str,
        spec: DestinationSpec,
    ) -> Result<DestinationView, ForwardError> {
        self.owned_destination(account, id).await?;
        let config = Self::check_destination(&spec).await?;
        let d = self
            .inner
            .registry
            .rules()
            .update_destination(id, new_destination(&spec))
            .await?;
        self.inner.sinks.forget(id);
        self.inner
            .destinations
            .write()
            .insert(d.id.clone(), (account.to_owned(), config));
        destination_view(&d)
    }

    pub async fn get_destination(
        &self,
        account: &str,
        id: &str,
    ) -> Result<DestinationView, ForwardError> {
        destination_view(&self.owned_destination(account, id).await?)
    }

    pub async fn list_destinations(
        &self,
        account: &str,
    ) -> Result<Vec<DestinationView>, ForwardError> {
        let list = self
            .inner
            .registry
            .rules()
            .list_destinations(Some(account))
            .await?;
        list.iter().map(destination_view).collect()
    }

    /// Deletes a destination; jobs still buffered for it go to their error actions.
    pub async fn delete_destination(&self, account: &str, id: &str) -> Result<(), ForwardError> {
        self.owned_destination(account, id).await?;
        self.inner.registry.rules().delete_destination(id).await?;
        self.inner.destinations.write().remove(id);
        self.inner.sinks.forget(id);
        Ok(())
    }
}

/// Tests a rule against a sample message without storing or enabling it.
pub fn test_rule(
    sql: &str,
    topic: &str,
    payload: &[u8],
    product_key: &str,
    device_name: &str,
) -> Result<TestResult, ForwardError> {
    let rule = lode_rules::Rule::parse(sql)?;
    let json: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let msg = lode_rules::Message {
        topic,
        payload,
        json: json.as_ref(),
        product_key,
        device_name,
        client_ip: None,
        message_id: "test",
        timestamp_ms: runtime::now_ms(),
        qos: 0,
    };
    let outcome = rule
        .evaluate(&msg, &TestCtx)
        .map_err(|e| ForwardError::InvalidAction {
            index: "sql".into(),
            reason: e.to_string(),
        })?;
    Ok(match outcome {
        lode_rules::Outcome::Row(row) => TestResult {
            outcome: "row".into(),
            row: Some(serde_json::Value::Object(row)),
            reason: None,
        },
        lode_rules::Outcome::Filtered { reason } => TestResult {
            outcome: "filtered".into(),
            row: None,
            reason: Some(reason),
        },
        lode_rules::Outcome::TopicMismatch => TestResult {
            outcome: "topicMismatch".into(),
            row: None,
            reason: Some(format!(
                "the topic does not match {:?}",
                rule.topic_filter()
            )),
        },
    })
}

struct TestCtx;

impl lode_rules::Context for TestCtx {
    fn now_ms(&self) -> i64 {
        runtime::now_ms()
    }
    fn uuid(&self) -> String {
        "00000000-0000-4000-8000-000000000000".into()
    }
    fn random(&self) -> f64 {
        0.5
    }
}

fn new_rule(spec: &RuleSpec) -> Result<NewRule, ForwardError> {
    Ok(NewRule {
        name: spec.name.clone(),
        sql: spec.sql.clone(),
        enabled: spec.enabled,
        actions: to_json(&spec.actions)?,
        error_action: spec.error_action.as_ref().map(to_json).transpose()?,
    })
}

fn to_json<T: Serialize>(v: &T) -> Result<String, ForwardError> {
    serde_json::to_string(v).map_err(|e| ForwardError::Buffer(e.to_string()))
}

fn view(r: &RuleRecord) -> Result<RuleView, ForwardError> {
    let corrupt = |e: serde_json::Error| {
        ForwardError::Registry(lode_registry::RegistryError::Corrupt(format!(
            "rule {}: {e}",
            r.id
        )))
    };
    Ok(RuleView {
        id: r.id.clone(),
        spec: RuleSpec {
            name: r.name.clone(),
            sql: r.sql.clone(),
            enabled: r.enabled,
            actions: serde_json::from_str(&r.actions).map_err(corrupt)?,
            error_action: r
                .error_action
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(corrupt)?,
        },
        created_at: r.created_at.timestamp_millis(),
        updated_at: r.updated_at.timestamp_millis(),
    })
}

fn new_destination(spec: &DestinationSpec) -> NewDestination {
    NewDestination {
        name: spec.name.clone(),
        kind: spec.kind.clone(),
        config: spec.config.to_string(),
    }
}

fn parse_destination(d: &DestinationRecord) -> Result<DestinationConfig, ForwardError> {
    let config: serde_json::Value = serde_json::from_str(&d.config)
        .map_err(|e| ForwardError::InvalidDestination(e.to_string()))?;
    DestinationConfig::parse(&d.kind, &config)
}

fn destination_view(d: &DestinationRecord) -> Result<DestinationView, ForwardError> {
    let config = serde_json::from_str(&d.config).map_err(|e| {
        ForwardError::Registry(lode_registry::RegistryError::Corrupt(format!(
            "destination {}: {e}",
            d.id
        )))
    })?;
    Ok(DestinationView {
        id: d.id.clone(),
        spec: DestinationSpec {
            name: d.name.clone(),
            kind: d.kind.clone(),
            config,
        },
        created_at: d.created_at.timestamp_millis(),
        updated_at: d.updated_at.timestamp_millis(),
    })
}
