//! The shadow runtime: device requests over MQTT, the API's operations, pushes of the
//! desired state.
//!
//! * [`ShadowService::hook`] is the broker's [`MessageHook`] for
//!   `/shadow/update/${pk}/${dn}`: a request of a device (or of the gateway it is logged in
//!   through, [`lode_broker::Principal::speaks_for`]) is applied and stored before its
//!   acknowledgement leaves, and answered on `/shadow/get/${pk}/${dn}`. Over the rate limit
//!   (20 per device per second by default) the device gets an error reply (429).
//! * [`ShadowService::get`], [`ShadowService::update_desired`] and
//!   [`ShadowService::delete`] serve the management API. A desired change is pushed at once
//!   (`control`) to a connected device; [`ShadowService::status_listener`] pushes the
//!   difference between desired and reported to a device when it comes online.
//!
//! Concurrency: requests of one device run one at a time (a lock per shard of devices),
//! and every write is a compare-and-set on the stored version, which stays the final
//! arbiter when several processes share the registry: a lost compare-and-set is read again
//! and re-applied, so no update overwrites another.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lode_broker::{Broker, Intercept, MessageHook, Uplink};
use lode_device::{DeviceAuth, StatusListener};
use lode_mqtt::QoS;
use lode_registry::{RegistryError, RegistryStore, ShadowWrite};
use parking_lot::Mutex;
use serde_json::Value;

use crate::document::{
    DesiredUpdate, DeviceOp, DeviceRequest, Document, Limits, ShadowError, reply_error, reply_ok,
};

/// Settings of the shadow runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowConfig {
    pub limits: Limits,
    /// Requests a device may send per second; more are answered with 429.
    pub requests_per_second: u32,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            limits: Limits::default(),
            requests_per_second: 20,
        }
    }
}

/// A failure of an API operation.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is refused by the shadow's rules (bad desired state, a limit, a
    /// version conflict); [`ShadowError::code`] says which.
    #[error(transparent)]
    Shadow(#[from] ShadowError),
    /// The registry refused or failed (`DeviceNotFound`, a storage error).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// How often a write that lost a compare-and-set is read again and retried.
const CAS_ATTEMPTS: usize = 5;

/// Shards of the per-device lock.
const LOCK_SHARDS: usize = 1024;

/// Rate-table size above which entries of past seconds are dropped.
const RATE_TABLE_PRUNE: usize = 10_000;

/// The shadow runtime; cheap to clone.
#[derive(Clone)]
pub struct ShadowService {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<dyn RegistryStore>,
    broker: Broker,
    devices: Arc<DeviceAuth>,
    config: ShadowConfig,
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Per device: the second of its current window and the requests in it.
    rate: Mutex<HashMap<String, (u64, u32)>>,
    runtime: tokio::runtime::Handle,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `pk` and `dn` of `/shadow/update/${pk}/${dn}`.
fn update_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("/shadow/update/")?;
    let (pk, dn) = rest.split_once('/')?;
    (!pk.is_empty() && !dn.is_empty() && !dn.contains('/')).then_some((pk, dn))
}

/// The topic of the device's replies and pushes.
pub fn get_topic(product_key: &str, device_name: &str) -> String {
    format!("/shadow/get/{product_key}/{device_name}")
}

impl ShadowService {
    /// The runtime over `registry`, answering through `broker`; `devices` says who is
    /// online. Must be called within a Tokio runtime.
    pub fn new(
        registry: Arc<dyn RegistryStore>,
        broker: Broker,
        devices: Arc<DeviceAuth>,
        config: ShadowConfig,
    ) -> ShadowService {
        ShadowService {
            inner: Arc::new(Inner {
                registry,
                broker,
                devices,
                config,
                locks: (0..LOCK_SHARDS)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                rate: Mutex::new(HashMap::new()),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> ShadowConfig {
        self.inner.config
    }

    /// The broker hook taking `/shadow/update/${pk}/${dn}`.
    pub fn hook(&self) -> Arc<dyn MessageHook> {
        Arc::new(Hook(self.clone()))
    }

    /// The listener that pushes pending desired state to devices coming online.
    pub fn status_listener(&self) -> Arc<dyn StatusListener> {
        Arc::new(Listener(self.clone()))
    }

    /// The device's shadow (version 0 and empty when it has none).
    pub async fn get(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<Document, ServiceError> {
        self.inner.load(product_key, device_name).await
    }

    /// Sets desired state from the API (`desired`: an object, a `null` value removing
    /// that attribute, or `"null"` clearing all of it). With `version`, it must be greater
    /// than the shadow's (else `VersionConflict`). A connected device gets the difference
    /// at once.
    pub async fn update_desired(
        &self,
        product_key: &str,
        device_name: &str,
        desired: &Value,
        version: Option<u64>,
    ) -> Result<Document, ServiceError> {
        let limits = self.inner.config.limits;
        let update = DesiredUpdate::from_value(desired, &limits)?;
        let doc = {
            let _turn = self.inner.lock(product_key, device_name).await;
            self.inner
                .write(product_key, device_name, |doc| {
                    doc.apply_desired(&update, version, now_s(), &limits)
                })
                .await?
        };
        if self
            .inner
            .devices
            .online(product_key, device_name)
            .is_some()
        {
            self.inner
                .push_control(product_key, device_name, &doc)
                .await;
        }
        Ok(doc)
    }

    /// Deletes the device's shadow; `false` when it had none.
    pub async fn delete(&self, product_key: &str, device_name: &str) -> Result<bool, ServiceError> {
        let _turn = self.inner.lock(product_key, device_name).await;
        Ok(self
            .inner
            .registry
            .shadows()
            .delete_shadow(product_key, device_name)
            .await?)
    }

    /// Handles one device request and publishes the reply.
    async fn device_request(&self, product_key: &str, device_name: &str, payload: &[u8]) {
        let inner = &self.inner;
        let now = now_s();
        let reply = if !inner.admit(product_key, device_name, now) {
            let token = DeviceRequest::parse(payload, &inner.config.limits)
                .ok()
                .and_then(|r| r.client_token);
            reply_error(
                &ShadowError::Throttled(inner.config.requests_per_second),
                None,
                token.as_deref(),
                now,
            )
        } else {
            match DeviceRequest::parse(payload, &inner.config.limits) {
                Err((e, token)) => reply_error(&e, None, token.as_deref(), now),
                Ok(request) => inner.answer(product_key, device_name, request, now).await,
            }
        };
        inner
            .publish(&get_topic(product_key, device_name), reply.to_string())
            .await;
    }
}

impl Inner {
    async fn lock(&self, product_key: &str, device_name: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        (product_key, device_name).hash(&mut h);
        let shard = usize::try_from(h.finish() % LOCK_SHARDS as u64).unwrap_or(0);
        self.locks[shard].lock().await
    }

    /// Counts a request of the device in the current second; `false` over the limit.
    fn admit(&self, product_key: &str, device_name: &str, now: u64) -> bool {
        let key = format!("{product_key}/{device_name}");
        let mut rate = self.rate.lock();
        if rate.len() > RATE_TABLE_PRUNE {
            rate.retain(|_, (second, _)| *second == now);
        }
        let entry = rate.entry(key).or_insert((now, 0));
        if entry.0 != now {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.config.requests_per_second
    }

    async fn load(&self, product_key: &str, device_name: &str) -> Result<Document, ServiceError> {
        let record = self
            .registry
            .shadows()
            .get_shadow(product_key, device_name)
            .await?;
        Ok(match record {
            None => Document::default(),
            Some(r) => Document {
                version: r.version,
                ..Document::from_json(&r.document)?
            },
        })
    }

    /// Reads the shadow, applies `change`, stores the result with a compare-and-set; a
    /// lost compare-and-set (another process wrote) is read and applied again.
    async fn write(
        &self,
        product_key: &str,
        device_name: &str,
        change: impl Fn(&Document) -> Result<Document, ShadowError>,
    ) -> Result<Document, ServiceError> {
        for _ in 0..CAS_ATTEMPTS {
            let doc = self.load(product_key, device_name).await?;
            let next = change(&doc)?;
            let written = self
                .registry
                .shadows()
                .put_shadow(
                    product_key,
                    device_name,
                    doc.version,
                    &next.to_json().to_string(),
                    next.version,
                )
                .await?;
            if let ShadowWrite::Written(_) = written {
                return Ok(next);
            }
        }
        Err(ShadowError::Internal("the shadow kept changing; try again".into()).into())
    }

    /// The reply to a parsed device request.
    async fn answer(
        &self,
        product_key: &str,
        device_name: &str,
        request: DeviceRequest,
        now: u64,
    ) -> Value {
        let token = request.client_token.as_deref();
        let _turn = self.lock(product_key, device_name).await;
        let result = match &request.op {
            DeviceOp::Get => self.load(product_key, device_name).await,
            op => {
                let limits = self.config.limits;
                self.write(product_key, device_name, |doc| doc.apply(op, now, &limits))
                    .await
            }
        };
        match result {
            Ok(doc) if request.op == DeviceOp::Get => doc.get_reply(token, now),
            Ok(doc) => reply_ok(doc.version, token, now),
            Err(ServiceError::Shadow(e)) => {
                let version = match &e {
                    ShadowError::VersionConflict { current } => Some(*current),
                    _ => None,
                };
                reply_error(&e, version, token, now)
            }
            Err(ServiceError::Registry(e)) => {
                tracing::warn!(product_key, device_name, error = %e, "shadow request failed");
                reply_error(&ShadowError::Internal(e.to_string()), None, token, now)
            }
        }
    }

    async fn publish(&self, topic: &str, payload: String) {
        if let Err(error) = self
            .broker
            .publish(topic, Bytes::from(payload), QoS::AtLeastOnce, false)
            .await
        {
            tracing::warn!(topic, %error, "shadow message not published");
        }
    }

    /// Pushes the difference between desired and reported, if any.
    async fn push_control(&self, product_key: &str, device_name: &str, doc: &Document) {
        if let Some(control) = doc.control(now_s()) {
            self.publish(&get_topic(product_key, device_name), control.to_string())
                .await;
        }
    }
}

/// The broker hook of [`ShadowService::hook`].
struct Hook(ShadowService);

impl MessageHook for Hook {
    fn on_publish(&self, uplink: Uplink<'_>) -> Intercept {
        let Some((pk, dn)) = update_topic(uplink.topic) else {
            return Intercept::Route;
        };
        if !uplink.principal.speaks_for(&format!("{pk}/{dn}")) {
            return Intercept::Route;
        }
        let service = self.0.clone();
        let (pk, dn, payload) = (pk.to_owned(), dn.to_owned(), uplink.payload.clone());
        Intercept::Take(Box::pin(async move {
            service.device_request(&pk, &dn, &payload).await;
            Ok(())
        }))
    }
}

/// The status listener of [`ShadowService::status_listener`].
struct Listener(ShadowService);

impl StatusListener for Listener {
    fn on_status(&self, product_key: &str, device_name: &str, online: bool) {
        if !online {
            return;
        }
        let inner = self.0.inner.clone();
        let (pk, dn) = (product_key.to_owned(), device_name.to_owned());
        self.0.inner.runtime.spawn(async move {
            match inner.load(&pk, &dn).await {
                Ok(doc) => inner.push_control(&pk, &dn, &doc).await,
                Err(error) => {
                    tracing::warn!(product_key = pk, device_name = dn, %error, "shadow not read at sign-in");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_update_topics_of_one_device_are_taken() {
        assert_eq!(update_topic("/shadow/update/pk/dn"), Some(("pk", "dn")));
        assert_eq!(update_topic("/shadow/update/pk/dn/x"), None);
        assert_eq!(update_topic("/shadow/update/pk"), None);
        assert_eq!(update_topic("/shadow/update//dn"), None);
        assert_eq!(update_topic("/shadow/get/pk/dn"), None);
        assert_eq!(get_topic("pk", "dn"), "/shadow/get/pk/dn");
    }
}
