//! Remote configuration: one JSON configuration file per product, sent to devices.
//!
//! A product's configuration is versioned in the registry ([`lode_registry::ConfigStore`]):
//! every save is a new version and the newest is current. [`DevConfig`] checks what is
//! saved (JSON only, at most [`DevConfigSettings::max_bytes`], 64 KB by default), and
//! speaks the Alink side (section 7.1 of the Alink reference, `thing/config/*`):
//!
//! - a device asks with `/sys/${pk}/${dn}/thing/config/get`; the platform answers on
//!   `thing/config/get_reply` with the current file's descriptor in `data`:
//!   `{"configId","configSize","sign","signMethod":"Sha256","url","getType":"file"}`;
//! - [`DevConfig::push`] sends the same descriptor in `params` of a `thing.config.push`
//!   request on `thing/config/push` to the product's online devices (or a chosen list),
//!   and reports per device whether it was offline, got no reply in time, or answered on
//!   `thing/config/push_reply` (with its code);
//! - the file itself is downloaded over HTTP ([`http::router`]) at a URL signed with an
//!   HMAC-SHA256 and valid for [`DevConfigSettings::url_ttl`]; `sign` is the lowercase hex
//!   SHA-256 of the file, which the device checks after the download.
//!
//! Config topics are taken by the platform ([`hook`]) and never routed.

mod hook;
pub mod http;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use lode_broker::{Broker, WeakBroker};
use lode_device::DeviceAuth;
use lode_mqtt::QoS;
use lode_registry::{
    ConfigVersion, DeviceFilter, DeviceState, PageRequest, RegistryError, RegistryStore,
};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// Why a remote-configuration operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DevConfigError {
    #[error("the configuration is not valid JSON: {0}")]
    NotJson(String),
    #[error("the configuration is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("product {0} has no configuration")]
    NoConfig(String),
    #[error("version {version} of the configuration of product {product_key} not found")]
    VersionNotFound { product_key: String, version: i64 },
    #[error("{0} devices in one push is over the limit of {1}")]
    TooManyDevices(usize, usize),
    #[error("the platform is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl DevConfigError {
    /// A stable, API-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            DevConfigError::NotJson(_) => "InvalidConfig",
            DevConfigError::TooLarge { .. } => "ConfigTooLarge",
            DevConfigError::NoConfig(_) => "ConfigNotFound",
            DevConfigError::VersionNotFound { .. } => "ConfigNotFound",
            DevConfigError::TooManyDevices(..) => "InvalidParameter",
            DevConfigError::ShuttingDown => "ServiceUnavailable",
            DevConfigError::Registry(e) => e.code(),
        }
    }
}

/// Settings of the remote-configuration runtime.
#[derive(Clone)]
pub struct DevConfigSettings {
    /// Largest configuration file, in bytes (the platform's limit is 64 KB).
    pub max_bytes: usize,
    /// How long a download URL stays valid.
    pub url_ttl: Duration,
    /// Base of download URLs, without a trailing `/` (`http://host:port`): where devices
    /// reach this server's HTTP listener.
    pub base_url: String,
    /// Most devices named in one push.
    pub push_devices_max: usize,
    /// Key of the download URLs' signatures; random unless derived from a server secret
    /// ([`DevConfigSettings::with_url_secret`]), which keeps URLs valid across restarts.
    pub url_key: [u8; 32],
}

impl std::fmt::Debug for DevConfigSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevConfigSettings")
            .field("max_bytes", &self.max_bytes)
            .field("url_ttl", &self.url_ttl)
            .field("base_url", &self.base_url)
            .field("push_devices_max", &self.push_devices_max)
            .finish_non_exhaustive()
    }
}

impl DevConfigSettings {
    /// The platform's limit on a configuration file.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// Defaults with download URLs under `base_url`.
    pub fn new(base_url: impl Into<String>) -> DevConfigSettings {
        DevConfigSettings {
            max_bytes: Self::MAX_BYTES,
            url_ttl: Duration::from_secs(3600),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            push_devices_max: 1000,
            url_key: rand::random(),
        }
    }

    /// Signs download URLs with a key derived from `secret` (the server's persistent key),
    /// so a URL handed out before a restart still downloads after it.
    pub fn with_url_secret(mut self, secret: &[u8]) -> DevConfigSettings {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        mac.update(b"lodestone config download url");
        self.url_key = mac.finalize().into_bytes().into();
        self
    }
}

/// The outcome of a push for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushResult {
    pub device_name: String,
    /// `acknowledged` (the device answered `push_reply`, see `code`), `noReply` (sent, no
    /// answer within the wait), `offline` (not connected, or not subscribed to the push
    /// topic), `notFound` (no such device).
    pub status: &'static str,
    /// The device's answer code, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

/// What a push sent, and each device's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    pub config_id: String,
    pub version: i64,
    pub results: Vec<PushResult>,
}

/// The remote-configuration runtime. Cheap to clone.
#[derive(Clone)]
pub struct DevConfig {
    inner: Arc<Inner>,
}

struct Inner {
    settings: DevConfigSettings,
    registry: Arc<dyn RegistryStore>,
    devices: Arc<DeviceAuth>,
    /// Weak: the broker holds this runtime's hook.
    broker: OnceLock<WeakBroker>,
    /// Key of download URL signatures, new at each start (URLs are short-lived).
    /// Pushes waiting for `push_reply`, by `"pk/dn"` and request id.
    acks: Mutex<HashMap<(String, String), oneshot::Sender<i64>>>,
    next_id: AtomicU64,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn url_mac(key: &[u8; 32], config_id: &str, expires: u64) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
    mac.update(config_id.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    mac
}

/// The hex HMAC-SHA256 of a download URL's configuration id and expiry.
fn url_signature(key: &[u8; 32], config_id: &str, expires: u64) -> String {
    hex::encode(url_mac(key, config_id, expires).finalize().into_bytes())
}

/// Whether `signature` signs `config_id` and `expires` with `key`, and `expires` (Unix
/// seconds) is not before `now`.
fn url_valid(key: &[u8; 32], config_id: &str, expires: u64, signature: &str, now: u64) -> bool {
    if expires < now {
        return false;
    }
    let Ok(sig) = hex::decode(signature) else {
        return false;
    };
    url_mac(key, config_id, expires).verify_slice(&sig).is_ok()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl DevConfig {
    /// The runtime over `registry`, knowing who is online from `devices`. Attach it to
    /// the broker with [`DevConfig::attach`].
    pub fn new(
        registry: Arc<dyn RegistryStore>,
        devices: Arc<DeviceAuth>,
        settings: DevConfigSettings,
    ) -> DevConfig {
        DevConfig {
            inner: Arc::new(Inner {
                settings,
                registry,
                devices,
                broker: OnceLock::new(),
                acks: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(unix_secs().saturating_mul(1000)),
            }),
        }
    }

    /// Installs the hook answering `thing/config/get` and taking `thing/config/push_reply`.
    pub fn attach(&self, broker: Broker) {
        if self.inner.broker.set(broker.downgrade()).is_ok() {
            broker.add_message_hook(Arc::new(hook::ConfigHook(self.clone())));
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &DevConfigSettings {
        &self.inner.settings
    }

    /// Checks `content` (JSON, within the size limit) and saves it as the product's new
    /// current version.
    pub async fn save(
        &self,
        product_key: &str,
        content: &str,
    ) -> Result<ConfigVersion, DevConfigError> {
        let limit = self.inner.settings.max_bytes;
        if content.len() > limit {
            return Err(DevConfigError::TooLarge {
                size: content.len(),
                limit,
            });
        }
        serde_json::from_str::<Value>(content)
            .map_err(|e| DevConfigError::NotJson(e.to_string()))?;
        let sha = sha256_hex(content.as_bytes());
        Ok(self
            .inner
            .registry
            .configs()
            .save_config(product_key, content, &sha, limit as u64)
            .await?)
    }

    /// The product's current configuration.
    pub async fn current(&self, product_key: &str) -> Result<ConfigVersion, DevConfigError> {
        self.inner
            .registry
            .configs()
            .current_config(product_key)
            .await?
            .ok_or_else(|| DevConfigError::NoConfig(product_key.to_owned()))
    }

    /// One version of the product's configuration.
    pub async fn version(
        &self,
        product_key: &str,
        version: i64,
    ) -> Result<ConfigVersion, DevConfigError> {
        self.inner
            .registry
            .configs()
            .get_config_version(product_key, version)
            .await?
            .ok_or_else(|| DevConfigError::VersionNotFound {
                product_key: product_key.to_owned(),
                version,
            })
    }

    /// Every version of the product's configuration, newest first.
    pub async fn versions(&self, product_key: &str) -> Result<Vec<ConfigVersion>, DevConfigError> {
        Ok(self
            .inner
            .registry
            .configs()
            .list_config_versions(product_key)
            .await?)
    }

    /// The Alink descriptor of a version: what `get_reply` carries in `data` and a push in
    /// `params`, with a download URL valid from now for the configured time.
    pub fn descriptor(&self, config: &ConfigVersion) -> Value {
        json!({
            "configId": config.config_id,
            "configSize": config.size,
            "sign": config.sha256,
            "signMethod": "Sha256",
            "url": self.download_url(&config.config_id),
            "getType": "file",
        })
    }

    /// A signed download URL of a configuration version.
    pub fn download_url(&self, config_id: &str) -> String {
        let expires = unix_secs() + self.inner.settings.url_ttl.as_secs();
        format!(
            "{}{}/{config_id}?expires={expires}&signature={}",
            self.inner.settings.base_url,
            http::DOWNLOAD_PREFIX,
            self.url_signature(config_id, expires)
        )
    }

    fn url_signature(&self, config_id: &str, expires: u64) -> String {
        url_signature(&self.inner.settings.url_key, config_id, expires)
    }

    /// Whether a download URL's `expires` and `signature` are valid now.
    pub(crate) fn check_url(&self, config_id: &str, expires: u64, signature: &str) -> bool {
        url_valid(
            &self.inner.settings.url_key,
            config_id,
            expires,
            signature,
            unix_secs(),
        )
    }

    /// A configuration version by its `configId`.
    pub(crate) async fn by_id(
        &self,
        config_id: &str,
    ) -> Result<Option<ConfigVersion>, DevConfigError> {
        Ok(self
            .inner
            .registry
            .configs()
            .get_config_by_id(config_id)
            .await?)
    }

    fn broker(&self) -> Result<Broker, DevConfigError> {
        self.inner
            .broker
            .get()
            .and_then(WeakBroker::upgrade)
            .ok_or(DevConfigError::ShuttingDown)
    }

    /// The product's devices that are online now, by name.
    async fn online_devices(&self, product_key: &str) -> Result<Vec<String>, DevConfigError> {
        let mut names = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .inner
                .registry
                .list_devices(
                    product_key,
                    DeviceFilter {
                        state: Some(DeviceState::Online),
                        ..DeviceFilter::default()
                    },
                    PageRequest::After {
                        cursor,
                        page_size: 200,
                    },
                )
                .await?;
            names.extend(page.items.into_iter().map(|d| d.device_name));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(names)
    }

    /// Pushes the product's current configuration on `thing/config/push` to `devices`
    /// (all the product's online devices with `None`), then waits up to `wait` for their
    /// `push_reply`. Offline devices are not queued for later: they fetch the
    /// configuration with `thing/config/get` when they want it.
    pub async fn push(
        &self,
        product_key: &str,
        devices: Option<Vec<String>>,
        wait: Duration,
    ) -> Result<PushReport, DevConfigError> {
        let max = self.inner.settings.push_devices_max;
        if let Some(list) = &devices
            && list.len() > max
        {
            return Err(DevConfigError::TooManyDevices(list.len(), max));
        }
        if self
            .inner
            .registry
            .get_product(product_key)
            .await?
            .is_none()
        {
            return Err(RegistryError::ProductNotFound(product_key.to_owned()).into());
        }
        let config = self.current(product_key).await?;
        let broker = self.broker()?;
        // Listed names may not exist; names from the registry's listing do.
        let (targets, listed) = match devices {
            Some(list) => (list, true),
            None => (self.online_devices(product_key).await?, false),
        };
        let mut results = Vec::with_capacity(targets.len());
        let mut waiting = Vec::new();
        for name in targets {
            let status = if listed
                && self
                    .inner
                    .registry
                    .get_device(product_key, &name)
                    .await?
                    .is_none()
            {
                "notFound"
            } else if self.inner.devices.online(product_key, &name).is_none() {
                "offline"
            } else {
                let id = self
                    .inner
                    .next_id
                    .fetch_add(1, Ordering::Relaxed)
                    .to_string();
                let key = (lode_alink::identity_key(product_key, &name), id.clone());
                let (tx, rx) = oneshot::channel();
                self.inner.acks.lock().insert(key.clone(), tx);
                let request = json!({
                    "id": id,
                    "version": "1.0",
                    "params": self.descriptor(&config),
                    "method": "thing.config.push",
                });
                let topic = format!("/sys/{product_key}/{name}/thing/config/push");
                let reached = broker
                    .publish(
                        &topic,
                        Bytes::from(request.to_string()),
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await;
                match reached {
                    Ok(n) if n > 0 => {
                        waiting.push((results.len(), key, rx));
                        "noReply"
                    }
                    Ok(_) => {
                        self.inner.acks.lock().remove(&key);
                        "offline"
                    }
                    Err(error) => {
                        self.inner.acks.lock().remove(&key);
                        tracing::warn!(%error, %topic, "configuration push not sent");
                        "offline"
                    }
                }
            };
            results.push(PushResult {
                device_name: name,
                status,
                code: None,
            });
        }
        let deadline = tokio::time::Instant::now() + wait;
        for (index, key, rx) in waiting {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(code)) => {
                    results[index].status = "acknowledged";
                    results[index].code = Some(code);
                }
                Ok(Err(_)) | Err(_) => {
                    self.inner.acks.lock().remove(&key);
                }
            }
        }
        Ok(PushReport {
            config_id: config.config_id,
            version: config.version,
            results,
        })
    }

    /// A device's `push_reply`: completes the push waiting for it, if any.
    pub(crate) fn acknowledge(&self, identity: &str, id: &str, code: i64) {
        if let Some(tx) = self
            .inner
            .acks
            .lock()
            .remove(&(identity.to_owned(), id.to_owned()))
        {
            let _ = tx.send(code);
        }
    }

    /// Answers a device's `thing/config/get` with request id `id`.
    pub(crate) async fn answer_get(&self, product_key: &str, device_name: &str, id: Value) {
        let reply = match self.current(product_key).await {
            Ok(config) => json!({
                "id": id,
                "code": 200,
                "data": self.descriptor(&config),
                "message": "success",
                "version": "1.0",
            }),
            Err(e) => {
                let code = match e {
                    DevConfigError::NoConfig(_) => hook::CODE_NO_CONFIG,
                    _ => hook::CODE_SERVER_ERROR,
                };
                json!({
                    "id": id,
                    "code": code,
                    "data": {},
                    "message": e.to_string(),
                    "version": "1.0",
                })
            }
        };
        let topic = format!("/sys/{product_key}/{device_name}/thing/config/get_reply");
        let sent = match self.broker() {
            Ok(broker) => broker
                .publish(
                    &topic,
                    Bytes::from(reply.to_string()),
                    QoS::AtLeastOnce,
                    false,
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = sent {
            tracing::warn!(%error, %topic, "configuration reply not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_url_signatures() {
        let key = [7u8; 32];
        let sig = url_signature(&key, "c1", 1_000);
        assert!(url_valid(&key, "c1", 1_000, &sig, 999));
        assert!(url_valid(&key, "c1", 1_000, &sig, 1_000));
        assert!(!url_valid(&key, "c1", 1_000, &sig, 1_001), "expired");
        assert!(
            !url_valid(&key, "c2", 1_000, &sig, 999),
            "another configuration"
        );
        assert!(!url_valid(&key, "c1", 2_000, &sig, 999), "another expiry");
        assert!(
            !url_valid(&[8u8; 32], "c1", 1_000, &sig, 999),
            "another key"
        );
        assert!(!url_valid(&key, "c1", 1_000, "zz", 999), "not hex");
        assert!(!url_valid(&key, "c1", 1_000, &sig[..10], 999), "truncated");
    }

    #[test]
    fn a_url_key_from_the_server_secret_survives_a_restart() {
        let before = DevConfigSettings::new("http://h").with_url_secret(b"server secret");
        let after = DevConfigSettings::new("http://h").with_url_secret(b"server secret");
        let other = DevConfigSettings::new("http://h").with_url_secret(b"another secret");
        assert_eq!(before.url_key, after.url_key);
        assert_ne!(before.url_key, other.url_key);
        let sig = url_signature(&before.url_key, "c1", 2_000);
        assert!(url_valid(&after.url_key, "c1", 2_000, &sig, 1_000));
        assert!(!url_valid(&other.url_key, "c1", 2_000, &sig, 1_000));
        assert!(
            !format!("{before:?}").contains("url_key"),
            "the key stays out of logs"
        );
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"{}"),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
