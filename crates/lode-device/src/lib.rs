//! Device sign-in, topic permissions and lifecycle: the broker's [`AuthHook`] for
//! devices that speak Alibaba's Alink protocol over MQTT.
//!
//! At CONNECT a device is known by its username `${deviceName}&${productKey}`; the
//! clientId options say how it signs in (section 3 of the Alink reference):
//!
//! | clientId `authType` | password | outcome |
//! |---|---|---|
//! | none | HMAC of the sign content with the DeviceSecret | a device session |
//! | `register` | HMAC-SHA256 with the ProductSecret | `/ext/register` carries the DeviceSecret, then the device leaves |
//! | `regnwl` | HMAC-SHA256 with the ProductSecret | `/ext/regnwl` carries a token (the device is created if new) |
//! | `connwl` | the token from `regnwl` | a device session |
//!
//! A device session may publish and subscribe only within its own topics
//! ([`lode_alink::DevicePermissions`]); with `_ss=1` in its clientId the broker
//! subscribes it to its system downlinks itself. One device holds one connection:
//! a new sign-in ends the old one, whatever its clientId. Keep alive must be within
//! the configured range (30–1200 s by default) and a device may connect at most
//! `connects_per_minute` times a minute.
//!
//! ## X.509 client certificates
//!
//! On a TLS listener with client authentication, a connection may carry a client
//! certificate verified against the configured client CA. Its subject names the device:
//! `CN=${deviceName}` and `OU=${productKey}`, exactly one of each ([`certificate_identity`]
//! has the full rule). Then:
//!
//! - the username may be absent; when present it must be that device's
//!   `${deviceName}&${productKey}`, otherwise the sign-in is refused (0x86);
//! - a device of a product whose auth type is X.509 signs in with the certificate alone:
//!   no password is needed or checked (the clientId options still apply, and the keep
//!   alive range and connect rate limits too). Dynamic registration and token logins are
//!   refused for such products (0x87);
//! - a product with the X.509 auth type refuses every sign-in without a certificate
//!   naming the device (0x87, not authorized);
//! - for a product with per-device secrets, the certificate does not replace the
//!   secret: the password is checked as usual.
//!
//! A certificate whose subject names no device is not a device credential; the
//! connection signs in as if it had none.
//!
//! Clients whose username is not a device identity are applications. An application that
//! signs in with an AccessKey (`authMode=aksign` in the username, see the `subscriber` module) may
//! subscribe to the device stream of its account's products and nothing else; any other
//! application is accepted with full access only when `allow_applications` is set (the
//! development mode), refused otherwise.
//!
//! Online/offline transitions are recorded in the registry (state, time, address,
//! lifecycle log) by one worker, in order, and published as status messages on
//! `/as/mqtt/status/${productKey}/${deviceName}` for server-side consumers.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lode_alink::{ClientId, DeviceIdentity, DevicePermissions, LoginKind, Permission};
use lode_broker::{
    AuthHook, BoxFuture, Broker, CloseReason, ConnectRequest, Principal, WeakBroker,
};
use lode_mqtt::{QoS, ReasonCode};
use lode_registry::{
    AuthType as ProductAuth, DeviceState, NewDevice, NodeType, Product, RegistryError,
    RegistryStore, TopicPermission,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;

mod cert;
mod gateway;
pub mod lifecycle;
mod subscriber;
mod transient;

pub use cert::{CertificateIdentityError, certificate_identity};
pub use gateway::{SubDeviceError, topic_device};
pub use transient::{TransientDevice, TransientError};

/// Settings of device sign-in.
#[derive(Debug, Clone)]
pub struct DeviceAuthConfig {
    /// Keep alive accepted from devices, in seconds, inclusive.
    pub keep_alive: (u16, u16),
    /// Most sign-ins of one device in any minute.
    pub connects_per_minute: usize,
    /// Accept clients that are not devices (applications, tools) with full access.
    pub allow_applications: bool,
    /// Most tokens (`regnwl`) a device identity may hold at once.
    pub tokens_per_device: usize,
}

impl Default for DeviceAuthConfig {
    fn default() -> Self {
        DeviceAuthConfig {
            keep_alive: (30, 1200),
            connects_per_minute: 5,
            allow_applications: false,
            tokens_per_device: 5,
        }
    }
}

/// What the hook knows about a signed-in client, kept in its [`Principal`].
#[derive(Debug)]
enum Client {
    Device {
        identity: DeviceIdentity,
        permissions: DevicePermissions,
        /// Tells this connection from a later one of the same device.
        serial: u64,
        ext_rrpc: bool,
        /// The sub-devices of a gateway's connection; `None` for other devices.
        gateway: Option<Arc<gateway::GatewaySessions>>,
    },
    /// A registration session: it may receive its greeting and nothing else.
    Registration,
    Application,
    /// An application signed in with an AccessKey: it may subscribe to the device stream
    /// of these products and nothing else ([`subscriber`]).
    Subscriber {
        products: std::collections::HashSet<String>,
    },
}

/// A lifecycle change, recorded in order by the worker.
#[derive(Debug)]
struct Lifecycle {
    identity: DeviceIdentity,
    online: bool,
    at: chrono::DateTime<chrono::Utc>,
    ip: Option<String>,
    reason: Option<String>,
}

/// The device [`AuthHook`].
pub struct DeviceAuth {
    registry: Arc<dyn RegistryStore>,
    config: DeviceAuthConfig,
    recent_connects: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// Tokens issued by `regnwl`: `"pk/dn"` → `(clientId, token)`, oldest first.
    tokens: Mutex<HashMap<String, VecDeque<(String, String)>>>,
    lifecycle: mpsc::UnboundedSender<Lifecycle>,
    broker: Arc<OnceLock<WeakBroker>>,
    /// Connected devices: `"pk/dn"` → the connection's serial and whether it takes
    /// sync calls on `/ext/rrpc`.
    online: Mutex<HashMap<String, (u64, bool)>>,
    serial: AtomicU64,
    /// Connected gateways: `"pk/dn"` → the connection's serial and its sub-devices.
    gateways: Mutex<HashMap<String, (u64, Arc<gateway::GatewaySessions>)>>,
    /// Devices online without a connection (HTTP, CoAP), until their deadline.
    transient: Arc<transient::Presence>,
    /// Told of every status change, once it is recorded.
    listeners: Listeners,
}

/// Told when a device comes online or goes offline ([`DeviceAuth::add_status_listener`]).
pub trait StatusListener: Send + Sync + 'static {
    /// Called in the order of the changes, after the registry recorded the new state and
    /// the status message was published. Must return at once (hand the work to a task).
    fn on_status(&self, product_key: &str, device_name: &str, online: bool);
}

type Listeners = Arc<parking_lot::RwLock<Vec<Arc<dyn StatusListener>>>>;

impl std::fmt::Debug for DeviceAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DeviceAuth {
    /// Starts the hook and its lifecycle worker (needs a Tokio runtime).
    pub fn start(registry: Arc<dyn RegistryStore>, config: DeviceAuthConfig) -> Arc<DeviceAuth> {
        let (tx, rx) = mpsc::unbounded_channel();
        let broker = Arc::new(OnceLock::new());
        let transient = Arc::new(transient::Presence::default());
        let listeners = Listeners::default();
        tokio::spawn(transient::sweep(Arc::downgrade(&transient), tx.downgrade()));
        tokio::spawn(record_lifecycle(
            registry.clone(),
            broker.clone(),
            listeners.clone(),
            rx,
        ));
        Arc::new(DeviceAuth {
            registry,
            config,
            recent_connects: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            lifecycle: tx,
            broker,
            online: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
            gateways: Mutex::new(HashMap::new()),
            transient,
            listeners,
        })
    }

    /// Adds a listener told of every device status change ([`StatusListener`]).
    pub fn add_status_listener(&self, listener: Arc<dyn StatusListener>) {
        self.listeners.write().push(listener);
    }

    /// Gives the hook the broker it serves, for status messages.
    pub fn attach_broker(&self, broker: Broker) {
        let _ = self.broker.set(broker.downgrade());
    }

    /// Whether the device is connected, and whether that connection takes sync calls on
    /// `/ext/rrpc` (clientId `ext=1`). `None` when it is not connected.
    pub fn online(&self, product_key: &str, device_name: &str) -> Option<bool> {
        self.online
            .lock()
            .get(&lode_alink::identity_key(product_key, device_name))
            .map(|&(_, ext)| ext)
    }

    fn broker(&self) -> Option<Broker> {
        self.broker.get().and_then(WeakBroker::upgrade)
    }

    /// Whether another sign-in of `key` now stays within the per-minute limit.
    fn admit(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut recent = self.recent_connects.lock();
        if recent.len() > 100_000 {
            recent.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now - *t < Duration::from_secs(60))
            });
        }
        let times = recent.entry(key.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now - *t >= Duration::from_secs(60))
        {
            times.pop_front();
        }
        if times.len() >= self.config.connects_per_minute {
            return false;
        }
        times.push_back(now);
        true
    }

    async fn sign_in(&self, req: &ConnectRequest<'_>) -> Result<Principal, ReasonCode> {
        let certified = req
            .client_cert
            .and_then(|der| match certificate_identity(der) {
                Ok(identity) => Some(identity),
                Err(error) => {
                    tracing::debug!(%error, "client certificate names no device");
                    None
                }
            });
        let from_username = req.username.map(DeviceIdentity::from_username);
        let identity = match (certified.clone(), from_username) {
            (Some(cert), None) => cert,
            (Some(cert), Some(Ok(named))) if named == cert => cert,
            (Some(cert), Some(_)) => {
                tracing::debug!(
                    device = cert.key(),
                    username = req.username,
                    "username does not match the client certificate"
                );
                return Err(ReasonCode::BadUserNameOrPassword);
            }
            (None, Some(Ok(named))) => named,
            (None, Some(Err(_)) | None) => return self.application(req).await,
        };
        let client_id = ClientId::parse(req.client_id).map_err(|error| {
            tracing::debug!(%error, client_id = req.client_id, "bad device client id");
            ReasonCode::ClientIdentifierNotValid
        })?;
        let key = identity.key();
        let login = client_id.login_kind();
        if matches!(login, LoginKind::DeviceSecret | LoginKind::Token) {
            let (lo, hi) = self.config.keep_alive;
            if req.keep_alive < lo || req.keep_alive > hi {
                tracing::debug!(
                    device = key,
                    keep_alive = req.keep_alive,
                    "keep alive out of range"
                );
                return Err(ReasonCode::ImplementationSpecificError);
            }
        }
        if !self.admit(&key) {
            tracing::debug!(device = key, "too many connects in a minute");
            return Err(ReasonCode::ConnectionRateExceeded);
        }
        let product = self
            .registry
            .get_product(&identity.product_key)
            .await
            .map_err(backend)?
            .ok_or(ReasonCode::BadUserNameOrPassword)?;
        if product.node_type == NodeType::SubDevice {
            tracing::debug!(
                device = key,
                "a sub-device connects only through its gateway"
            );
            return Err(ReasonCode::NotAuthorized);
        }
        if product.auth_type == ProductAuth::X509 {
            if certified.is_none() {
                tracing::debug!(device = key, "X.509 product: sign-in without a certificate");
                return Err(ReasonCode::NotAuthorized);
            }
            if login != LoginKind::DeviceSecret {
                return Err(ReasonCode::NotAuthorized);
            }
            self.device(&identity).await?;
            return self.device_principal(identity, &client_id, &product).await;
        }
        let password = std::str::from_utf8(req.password.unwrap_or_default())
            .map_err(|_| ReasonCode::BadUserNameOrPassword)?;
        match login {
            LoginKind::DeviceSecret => {
                let device = self.device(&identity).await?;
                let content = lode_alink::mqtt_sign_content(
                    &client_id.prefix,
                    &identity.device_name,
                    &identity.product_key,
                    client_id.timestamp.as_deref(),
                );
                if !lode_alink::verify_signature(
                    client_id.effective_sign_method(),
                    &device.device_secret,
                    &content,
                    password,
                ) {
                    return Err(ReasonCode::BadUserNameOrPassword);
                }
                self.device_principal(identity, &client_id, &product).await
            }
            LoginKind::Token => {
                self.device(&identity).await?;
                let valid = self.tokens.lock().get(&key).is_some_and(|tokens| {
                    tokens.iter().any(|(_, token)| {
                        lode_alink::verify_hex(token.as_bytes(), &hex(password.as_bytes()))
                    })
                });
                if !valid {
                    return Err(ReasonCode::BadUserNameOrPassword);
                }
                self.device_principal(identity, &client_id, &product).await
            }
            LoginKind::Register | LoginKind::RegisterNoWhitelist => {
                self.register(identity, &client_id, &product, password, login)
                    .await
            }
        }
    }

    async fn application(&self, req: &ConnectRequest<'_>) -> Result<Principal, ReasonCode> {
        if let Some(sign_in) = req.username.and_then(subscriber::parse) {
            let sign_in = sign_in.map_err(|reason| {
                tracing::debug!(reason, "bad application sign-in");
                ReasonCode::BadUserNameOrPassword
            })?;
            let password = req.password.unwrap_or_default();
            let now = chrono::Utc::now().timestamp_millis();
            let products =
                subscriber::verify(self.registry.as_ref(), &sign_in, password, now).await?;
            return Ok(Principal {
                name: format!("application {}", sign_in.access_key_id),
                ext: Some(Arc::new(Client::Subscriber { products })),
                ..Principal::default()
            });
        }
        if !self.config.allow_applications {
            return Err(ReasonCode::NotAuthorized);
        }
        Ok(Principal {
            name: req.username.unwrap_or("application").to_owned(),
            ext: Some(Arc::new(Client::Application)),
            ..Principal::default()
        })
    }

    /// The registered device, refusing unknown and disabled ones.
    async fn device(&self, identity: &DeviceIdentity) -> Result<lode_registry::Device, ReasonCode> {
        let device = self
            .registry
            .get_device(&identity.product_key, &identity.device_name)
            .await
            .map_err(backend)?
            .ok_or(ReasonCode::BadUserNameOrPassword)?;
        if device.state == DeviceState::Disabled {
            return Err(ReasonCode::NotAuthorized);
        }
        Ok(device)
    }

    async fn device_principal(
        &self,
        identity: DeviceIdentity,
        client_id: &ClientId,
        product: &Product,
    ) -> Result<Principal, ReasonCode> {
        let auto_subscriptions = if client_id.server_subscribe {
            lode_alink::auto_subscriptions(&identity.product_key, &identity.device_name)
                .into_iter()
                .map(|filter| (filter, QoS::AtLeastOnce))
                .collect()
        } else {
            Vec::new()
        };
        let gateway = if product.node_type == NodeType::Gateway {
            let links = self
                .registry
                .topology()
                .list_sub_devices((&identity.product_key, &identity.device_name))
                .await
                .map_err(backend)?;
            Some(Arc::new(gateway::GatewaySessions::new(
                links
                    .into_iter()
                    .map(|l| lode_alink::identity_key(&l.product_key, &l.device_name))
                    .collect(),
            )))
        } else {
            None
        };
        self.principal_with(identity, auto_subscriptions, client_id.ext_rrpc(), gateway)
            .await
            .map_err(|error| match error {
                TransientError::Backend(error) => backend(error),
                _ => ReasonCode::BadUserNameOrPassword,
            })
    }

    /// A device's principal: its topic permissions, the given server-side subscriptions and,
    /// for a gateway, its sub-device sessions.
    async fn principal_with(
        &self,
        identity: DeviceIdentity,
        auto_subscriptions: Vec<(String, QoS)>,
        ext_rrpc: bool,
        gateway: Option<Arc<gateway::GatewaySessions>>,
    ) -> Result<Principal, TransientError> {
        let categories = self
            .registry
            .list_topic_categories(&identity.product_key)
            .await?;
        let categories: Vec<lode_alink::TopicCategory> = categories
            .iter()
            .filter_map(|c| {
                lode_alink::TopicCategory::new(&c.template, permission(c.permission)).ok()
            })
            .collect();
        let permissions =
            DevicePermissions::new(&identity.product_key, &identity.device_name, &categories)
                .map_err(|_| TransientError::InvalidIdentity)?;
        Ok(Principal {
            name: identity.key(),
            unique_key: Some(identity.key()),
            auto_subscriptions,
            greetings: Vec::new(),
            ext: Some(Arc::new(Client::Device {
                identity,
                permissions,
                serial: self.serial.fetch_add(1, Ordering::Relaxed),
                ext_rrpc,
                gateway: gateway.clone(),
            })),
            proxied: gateway.map(|g| g.proxied()),
        })
    }

    /// Dynamic registration over MQTT (`register` and `regnwl`).
    async fn register(
        &self,
        identity: DeviceIdentity,
        client_id: &ClientId,
        product: &Product,
        password: &str,
        login: LoginKind,
    ) -> Result<Principal, ReasonCode> {
        if !product.dynamic_registration {
            return Err(ReasonCode::NotAuthorized);
        }
        let random = client_id
            .random
            .as_deref()
            .ok_or(ReasonCode::BadUserNameOrPassword)?;
        let content =
            lode_alink::register_sign_content(&identity.device_name, &identity.product_key, random);
        let method = client_id
            .sign_method
            .unwrap_or(lode_alink::SignMethod::REGISTER_DEFAULT);
        if !lode_alink::verify_signature(method, &product.product_secret, &content, password) {
            return Err(ReasonCode::BadUserNameOrPassword);
        }
        let key = identity.key();
        let greeting = if login == LoginKind::Register {
            // Pre-registered devices only, and only once.
            let device = self.device(&identity).await?;
            if device.dynamically_registered || device.activated_at.is_some() {
                return Err(ReasonCode::NotAuthorized);
            }
            match self
                .registry
                .mark_dynamically_registered(&identity.product_key, &identity.device_name)
                .await
            {
                Ok(_) => {}
                Err(RegistryError::DeviceAlreadyRegistered(_)) => {
                    return Err(ReasonCode::NotAuthorized);
                }
                Err(error) => return Err(backend(error)),
            }
            let body = serde_json::json!({
                "productKey": identity.product_key,
                "deviceName": identity.device_name,
                "deviceSecret": device.device_secret,
            });
            ("/ext/register".to_owned(), Bytes::from(body.to_string()))
        } else {
            match self
                .registry
                .get_device(&identity.product_key, &identity.device_name)
                .await
                .map_err(backend)?
            {
                Some(d) if d.state == DeviceState::Disabled => {
                    return Err(ReasonCode::NotAuthorized);
                }
                Some(_) => {}
                None => {
                    let new = NewDevice {
                        dynamically_registered: true,
                        ..NewDevice::new(identity.device_name.clone())
                    };
                    match self
                        .registry
                        .create_device(&identity.product_key, new)
                        .await
                    {
                        Ok(device) => {
                            if let Some(broker) = self.broker() {
                                lifecycle::announce(&broker, lifecycle::Action::Create, &device)
                                    .await;
                            }
                        }
                        Err(RegistryError::DeviceAlreadyExists { .. }) => {}
                        Err(error) => return Err(backend(error)),
                    }
                }
            }
            let token = hex(&rand::random::<[u8; 16]>());
            let login_client_id = format!(
                "{}.{}_{}",
                identity.product_key,
                identity.device_name,
                &token[..8]
            );
            {
                let mut tokens = self.tokens.lock();
                let list = tokens.entry(key).or_default();
                list.push_back((login_client_id.clone(), token.clone()));
                while list.len() > self.config.tokens_per_device {
                    list.pop_front();
                }
            }
            let body = serde_json::json!({
                "clientId": login_client_id,
                "productKey": identity.product_key,
                "deviceName": identity.device_name,
                "deviceToken": token,
            });
            ("/ext/regnwl".to_owned(), Bytes::from(body.to_string()))
        };
        Ok(Principal {
            name: format!("register:{}", identity.key()),
            unique_key: None,
            auto_subscriptions: Vec::new(),
            greetings: vec![greeting],
            ext: Some(Arc::new(Client::Registration)),
            proxied: None,
        })
    }
}

impl AuthHook for DeviceAuth {
    fn authenticate<'a>(
        &'a self,
        req: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, ReasonCode>> {
        Box::pin(self.sign_in(req))
    }

    fn authorize_publish(&self, principal: &Principal, topic: &str) -> bool {
        match client(principal) {
            Some(Client::Device {
                permissions,
                gateway,
                ..
            }) => {
                permissions.can_publish(topic)
                    || gateway.as_ref().is_some_and(|g| g.can_publish(topic))
            }
            Some(Client::Application) => true,
            _ => false,
        }
    }

    fn authorize_subscribe(&self, principal: &Principal, filter: &str) -> bool {
        match client(principal) {
            Some(Client::Device {
                permissions,
                gateway,
                ..
            }) => {
                permissions.can_subscribe(filter)
                    || gateway.as_ref().is_some_and(|g| g.can_subscribe(filter))
            }
            Some(Client::Subscriber { products }) => subscriber::may_subscribe(products, filter),
            Some(Client::Application) => true,
            _ => false,
        }
    }

    fn connected(&self, principal: &Principal, _client_id: &str, peer: SocketAddr) {
        if let Some(Client::Device {
            identity,
            serial,
            ext_rrpc,
            gateway,
            ..
        }) = client(principal)
        {
            self.transient.forget(&identity.key());
            if let Some(sessions) = gateway {
                self.gateways
                    .lock()
                    .insert(identity.key(), (*serial, sessions.clone()));
            }
            self.online
                .lock()
                .insert(identity.key(), (*serial, *ext_rrpc));
            let _ = self.lifecycle.send(Lifecycle {
                identity: identity.clone(),
                online: true,
                at: chrono::Utc::now(),
                ip: Some(peer.ip().to_string()),
                reason: None,
            });
        }
    }

    fn disconnected(&self, principal: &Principal, _client_id: &str, reason: CloseReason) {
        if let Some(Client::Device {
            identity,
            serial,
            gateway,
            ..
        }) = client(principal)
        {
            if let Some(sessions) = gateway {
                {
                    let mut gateways = self.gateways.lock();
                    let key = identity.key();
                    if gateways.get(&key).is_some_and(|(s, _)| s == serial) {
                        gateways.remove(&key);
                    }
                }
                self.gateway_gone(sessions);
            }
            {
                let mut online = self.online.lock();
                let key = identity.key();
                if online.get(&key).is_some_and(|&(s, _)| s == *serial) {
                    online.remove(&key);
                }
            }
            let reason = match reason {
                CloseReason::Client => "client disconnected".to_owned(),
                CloseReason::Transport => "connection lost".to_owned(),
                CloseReason::Server(code) => format!("closed by the server: {code:?}"),
            };
            let _ = self.lifecycle.send(Lifecycle {
                identity: identity.clone(),
                online: false,
                at: chrono::Utc::now(),
                ip: None,
                reason: Some(reason),
            });
        }
    }
}

/// Records lifecycle changes in arrival order and publishes status messages.
async fn record_lifecycle(
    registry: Arc<dyn RegistryStore>,
    broker: Arc<OnceLock<WeakBroker>>,
    listeners: Listeners,
    mut rx: mpsc::UnboundedReceiver<Lifecycle>,
) {
    while let Some(event) = rx.recv().await {
        let id = &event.identity;
        let state = if event.online {
            DeviceState::Online
        } else {
            DeviceState::Offline
        };
        let result = registry
            .set_device_state(
                &id.product_key,
                &id.device_name,
                state,
                event.at,
                event.ip.as_deref(),
                event.reason.as_deref(),
            )
            .await;
        if let Err(error) = result {
            tracing::debug!(%error, device = id.key(), "device state not recorded");
        }
        if let Some(broker) = broker.get().and_then(WeakBroker::upgrade) {
            let status = serde_json::json!({
                "status": if event.online { "online" } else { "offline" },
                "productKey": id.product_key,
                "deviceName": id.device_name,
                "time": event.at.to_rfc3339(),
                "lastTime": event.at.timestamp_millis(),
                "clientIp": event.ip,
                "reason": event.reason,
            });
            let topic = format!("/as/mqtt/status/{}/{}", id.product_key, id.device_name);
            let payload = Bytes::from(status.to_string());
            if let Err(error) = broker
                .publish(&topic, payload, QoS::AtLeastOnce, false)
                .await
            {
                tracing::warn!(%error, "device status message not published");
            }
        }
        let listeners = listeners.read().clone();
        for listener in listeners {
            listener.on_status(&id.product_key, &id.device_name, event.online);
        }
    }
}

fn client(principal: &Principal) -> Option<&Client> {
    principal.ext.as_ref()?.downcast_ref::<Client>()
}

fn permission(p: TopicPermission) -> Permission {
    match p {
        TopicPermission::Pub => Permission::Pub,
        TopicPermission::Sub => Permission::Sub,
        TopicPermission::PubSub => Permission::PubSub,
    }
}

pub(crate) fn backend(error: RegistryError) -> ReasonCode {
    tracing::warn!(%error, "registry unavailable at sign-in");
    ReasonCode::ServerUnavailable
}

fn hex(bytes: &[u8]) -> String {
    lode_alink::hex_lower(bytes)
}
