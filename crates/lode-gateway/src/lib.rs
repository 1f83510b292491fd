//! Gateways and sub-devices (Alink reference sections 5.3 and 7.2).
//!
//! A gateway (a device of a `Gateway` product) manages the sub-devices of its topology and
//! speaks for those it logged in, over its own connection. [`Gateways`] is the broker's
//! [`MessageHook`] for the gateway's own topics (topics use the **gateway's** `pk/dn`):
//!
//! | topic (up) | what the platform does | reply `data` |
//! |---|---|---|
//! | `/sys/G/thing/topo/add` | checks each sub-device's signature with its DeviceSecret, attaches them | `[{productKey, deviceName}]` |
//! | `/sys/G/thing/topo/delete` | detaches them (logging them out) | `[{productKey, deviceName}]` |
//! | `/sys/G/thing/topo/get` | lists the topology | `[{productKey, deviceName}]` |
//! | `/sys/G/thing/sub/register` | returns the secrets of pre-registered sub-devices | `[{iotId, productKey, deviceName, deviceSecret}]` |
//! | `/sys/G/thing/proxy/provisioning/product_register` | dynamic registration by product secret | `{successes, failures}` |
//! | `/sys/G/thing/list/found` | acknowledges sub-devices the gateway discovered | `{}` |
//! | `/ext/session/G/combine/login`, `batch_login` | checks the sub-device signature, opens its session | `{productKey, deviceName}` / list |
//! | `/ext/session/G/combine/logout`, `batch_logout` | ends the session | `{productKey, deviceName}` / list |
//!
//! Every reply goes to the request topic + `_reply` as `{id, code, data, message, version}`.
//! A message the gateway sends on the topics of a sub-device of its topology that has no
//! session is taken and answered on `/ext/error/G` with code 520. Sessions themselves
//! (permissions, downlinks, presence) live in `lode_device` ([`DeviceAuth::login_sub_device`]).
//!
//! The management API changes topology through [`Gateways::add_topology`] and
//! [`Gateways::remove_topology`], which tell a connected gateway on `thing/topo/change`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lode_alink::{ClientId, DeviceIdentity, SignMethod};
use lode_broker::{Broker, Intercept, MessageHook, Principal, Uplink, WeakBroker};
use lode_device::{DeviceAuth, SubDeviceError, lifecycle};
use lode_mqtt::QoS;
use lode_registry::{
    DeviceState, NewDevice, NodeType, RegistryError, RegistryStore, SUB_DEVICES_PER_GATEWAY,
    TopologyLink,
};
use serde_json::{Value, json};

/// Device-facing result codes of gateway requests.
///
/// 200, 460, 6100, 6204 and 520 are the platform's documented codes; the platform's
/// topology and sub-device codes (63xx/64xx) are not documented where we could read them,
/// so the failures without a documented code use the closest general one.
pub mod code {
    /// Success.
    pub const OK: i64 = 200;
    /// Processing failed (storage unavailable).
    pub const ERROR: i64 = 400;
    /// Malformed request, bad signature, wrong node type, over a limit.
    pub const INVALID: i64 = 460;
    /// No such device.
    pub const DEVICE_NOT_FOUND: i64 = 6100;
    /// The device is disabled.
    pub const DEVICE_DISABLED: i64 = 6204;
    /// No active session: a sub-device message before its login.
    pub const NO_SESSION: i64 = 520;
}

/// Values of `status` in `thing/topo/change` (the platform's documented meanings:
/// 0 created, 1 deleted).
pub mod change {
    /// Sub-devices joined the topology.
    pub const ADDED: u8 = 0;
    /// Sub-devices left the topology.
    pub const REMOVED: u8 = 1;
}

/// A failure of a management call ([`Gateways::add_topology`] and friends).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The device does not exist or belongs to another account.
    #[error("device {0} not found")]
    DeviceNotFound(String),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Failure of one sub-device within a device request: a code and a message.
#[derive(Debug)]
struct Refusal(i64, String);

impl From<RegistryError> for Refusal {
    fn from(e: RegistryError) -> Self {
        let code = match &e {
            RegistryError::DeviceNotFound(_) => code::DEVICE_NOT_FOUND,
            RegistryError::DeviceDisabled(_) => code::DEVICE_DISABLED,
            RegistryError::Backend(_) | RegistryError::Corrupt(_) => code::ERROR,
            _ => code::INVALID,
        };
        Refusal(code, e.to_string())
    }
}

impl From<SubDeviceError> for Refusal {
    fn from(e: SubDeviceError) -> Self {
        let code = match &e {
            SubDeviceError::NotFound(_) => code::DEVICE_NOT_FOUND,
            SubDeviceError::Disabled(_) => code::DEVICE_DISABLED,
            SubDeviceError::Backend(_) => code::ERROR,
            _ => code::INVALID,
        };
        Refusal(code, e.to_string())
    }
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal(code::INVALID, message.into())
}

/// The gateway service: the broker hook for gateway topics and the topology operations of
/// the management API. Cheap to clone.
#[derive(Clone)]
pub struct Gateways(Arc<Inner>);

struct Inner {
    registry: Arc<dyn RegistryStore>,
    auth: Arc<DeviceAuth>,
    broker: WeakBroker,
    limit: u64,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Gateways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateways")
            .field("limit", &self.0.limit)
            .finish_non_exhaustive()
    }
}

/// What a gateway request names: the gateway topic's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    TopoAdd,
    TopoDelete,
    TopoGet,
    SubRegister,
    ProductRegister,
    ListFound,
    Login,
    Logout,
    BatchLogin,
    BatchLogout,
}

/// The request a topic carries and the device it belongs to.
fn classify(topic: &str) -> Option<(Request, &str, &str)> {
    let levels: Vec<&str> = topic.split('/').collect();
    let (pk, dn, rest) = match levels.as_slice() {
        ["", "sys", pk, dn, rest @ ..] => (*pk, *dn, rest),
        ["", "ext", "session", pk, dn, rest @ ..] => (*pk, *dn, rest),
        _ => return None,
    };
    let sys = levels.get(1) == Some(&"sys");
    let request = match (sys, rest) {
        (true, ["thing", "topo", "add"]) => Request::TopoAdd,
        (true, ["thing", "topo", "delete"]) => Request::TopoDelete,
        (true, ["thing", "topo", "get"]) => Request::TopoGet,
        (true, ["thing", "sub", "register"]) => Request::SubRegister,
        (true, ["thing", "proxy", "provisioning", "product_register"]) => Request::ProductRegister,
        (true, ["thing", "list", "found"]) => Request::ListFound,
        (false, ["combine", "login"]) => Request::Login,
        (false, ["combine", "logout"]) => Request::Logout,
        (false, ["combine", "batch_login"]) => Request::BatchLogin,
        (false, ["combine", "batch_logout"]) => Request::BatchLogout,
        _ => return None,
    };
    Some((request, pk, dn))
}

/// A request as it arrived, owned, for the handling task.
struct Job {
    principal: Principal,
    peer: SocketAddr,
    topic: String,
    gateway: DeviceIdentity,
    id: Value,
    params: Value,
}

impl Gateways {
    /// The service over `registry`, with sessions kept by `auth`, and its hook added to
    /// `broker`. Topology additions are refused past `limit` sub-devices per gateway
    /// ([`SUB_DEVICES_PER_GATEWAY`] on the platform).
    pub fn start(
        registry: Arc<dyn RegistryStore>,
        auth: Arc<DeviceAuth>,
        broker: &Broker,
        limit: u64,
    ) -> Gateways {
        let gateways = Gateways(Arc::new(Inner {
            registry,
            auth,
            broker: broker.downgrade(),
            limit,
            next_id: AtomicU64::new(1),
        }));
        broker.add_message_hook(Arc::new(gateways.clone()));
        gateways
    }

    /// The platform's limit, for [`Gateways::start`].
    pub const DEFAULT_LIMIT: u64 = SUB_DEVICES_PER_GATEWAY;

    /// Checks that the device exists and its product belongs to `account_id`.
    async fn owned(&self, account_id: &str, pk: &str, dn: &str) -> Result<(), GatewayError> {
        let missing = || GatewayError::DeviceNotFound(lode_alink::identity_key(pk, dn));
        let product = self.0.registry.get_product(pk).await?.ok_or_else(missing)?;
        if product.account_id != account_id {
            return Err(missing());
        }
        self.0
            .registry
            .get_device(pk, dn)
            .await?
            .ok_or_else(missing)?;
        Ok(())
    }

    /// Ends a sub-device's session on its gateway, if it has one (the management API
    /// disabled or deleted it, or gave it a new secret). Returns whether it had one.
    pub fn end_sub_device(&self, product_key: &str, device_name: &str, reason: &str) -> bool {
        self.0.auth.end_sub_device(product_key, device_name, reason)
    }

    /// The sub-devices of a gateway of `account_id`.
    pub async fn topology(
        &self,
        account_id: &str,
        gateway: (&str, &str),
    ) -> Result<Vec<TopologyLink>, GatewayError> {
        self.owned(account_id, gateway.0, gateway.1).await?;
        Ok(self.0.registry.topology().list_sub_devices(gateway).await?)
    }

    /// The gateway a sub-device of `account_id` belongs to, if any.
    pub async fn gateway_of(
        &self,
        account_id: &str,
        sub_device: (&str, &str),
    ) -> Result<Option<TopologyLink>, GatewayError> {
        self.owned(account_id, sub_device.0, sub_device.1).await?;
        Ok(self.0.registry.topology().get_gateway(sub_device).await?)
    }

    /// Attaches sub-devices of `account_id` to its gateway (no signatures: the account
    /// owns both), then tells the gateway on `thing/topo/change` (status 0).
    pub async fn add_topology(
        &self,
        account_id: &str,
        gateway: (&str, &str),
        sub_devices: &[(String, String)],
    ) -> Result<Vec<TopologyLink>, GatewayError> {
        self.owned(account_id, gateway.0, gateway.1).await?;
        for (pk, dn) in sub_devices {
            self.owned(account_id, pk, dn).await?;
        }
        let links = self
            .0
            .registry
            .topology()
            .add_sub_devices(gateway, sub_devices, self.0.limit)
            .await?;
        for l in &links {
            self.0.auth.topology_changed(
                gateway.0,
                gateway.1,
                &l.product_key,
                &l.device_name,
                true,
            );
        }
        self.notify_change(gateway, change::ADDED, &links).await;
        Ok(links)
    }

    /// Detaches sub-devices from a gateway of `account_id` (their sessions end), then tells
    /// the gateway on `thing/topo/change` (status 1). Returns the links removed.
    pub async fn remove_topology(
        &self,
        account_id: &str,
        gateway: (&str, &str),
        sub_devices: &[(String, String)],
    ) -> Result<Vec<TopologyLink>, GatewayError> {
        self.owned(account_id, gateway.0, gateway.1).await?;
        let links = self
            .0
            .registry
            .topology()
            .remove_sub_devices(gateway, sub_devices)
            .await?;
        for l in &links {
            self.0.auth.topology_changed(
                gateway.0,
                gateway.1,
                &l.product_key,
                &l.device_name,
                false,
            );
        }
        if !links.is_empty() {
            self.notify_change(gateway, change::REMOVED, &links).await;
        }
        Ok(links)
    }

    async fn notify_change(&self, gateway: (&str, &str), status: u8, links: &[TopologyLink]) {
        let Some(broker) = self.0.broker.upgrade() else {
            return;
        };
        let body = json!({
            "id": self.0.next_id.fetch_add(1, Ordering::Relaxed).to_string(),
            "version": "1.0",
            "method": "thing.topo.change",
            "params": {"status": status, "subList": pairs(links)},
        });
        let topic = format!("/sys/{}/{}/thing/topo/change", gateway.0, gateway.1);
        if let Err(error) = broker
            .publish(
                &topic,
                Bytes::from(body.to_string()),
                QoS::AtLeastOnce,
                false,
            )
            .await
        {
            tracing::warn!(%error, "topology change not published");
        }
    }

    async fn handle(self, request: Request, job: Job) {
        let reply_topic = format!("{}_reply", job.topic);
        let outcome = if !matches!(
            self.0.registry.get_product(&job.gateway.product_key).await,
            Ok(Some(ref p)) if p.node_type == NodeType::Gateway
        ) {
            Err(invalid("the device is not a gateway"))
        } else {
            match request {
                Request::TopoAdd => self.topo_add(&job).await,
                Request::TopoDelete => self.topo_delete(&job).await,
                Request::TopoGet => self.topo_get(&job).await,
                Request::SubRegister => self.sub_register(&job).await,
                Request::ProductRegister => self.product_register(&job).await,
                Request::ListFound => self.list_found(&job),
                Request::Login => self.login(&job, &job.params).await,
                Request::Logout => self.logout(&job, &job.params),
                Request::BatchLogin => self.batch_login(&job).await,
                Request::BatchLogout => self.batch_logout(&job),
            }
        };
        let body = match outcome {
            Ok(data) => json!({
                "id": job.id, "code": code::OK, "data": data,
                "message": "success", "version": "1.0",
            }),
            Err(Refusal(code, message)) => json!({
                "id": job.id, "code": code, "data": {},
                "message": message, "version": "1.0",
            }),
        };
        self.send(&reply_topic, body).await;
    }

    async fn send(&self, topic: &str, body: Value) {
        let Some(broker) = self.0.broker.upgrade() else {
            return;
        };
        if let Err(error) = broker
            .publish(
                topic,
                Bytes::from(body.to_string()),
                QoS::AtLeastOnce,
                false,
            )
            .await
        {
            tracing::warn!(%error, topic, "gateway reply not published");
        }
    }

    fn gateway_pair<'a>(&self, job: &'a Job) -> (&'a str, &'a str) {
        (&job.gateway.product_key, &job.gateway.device_name)
    }

    async fn topo_add(&self, job: &Job) -> Result<Value, Refusal> {
        let items = array(&job.params)?;
        let mut subs = Vec::with_capacity(items.len());
        for item in items {
            let identity = identity_of(item)?;
            let device = self
                .0
                .registry
                .get_device(&identity.product_key, &identity.device_name)
                .await?
                .ok_or_else(|| {
                    Refusal(
                        code::DEVICE_NOT_FOUND,
                        format!("device {} not found", identity.key()),
                    )
                })?;
            verify_sub_sign(item, &identity, &device.device_secret, "signmethod")?;
            subs.push((identity.product_key, identity.device_name));
        }
        let gateway = self.gateway_pair(job);
        let links = self
            .0
            .registry
            .topology()
            .add_sub_devices(gateway, &subs, self.0.limit)
            .await?;
        for l in &links {
            self.0.auth.topology_changed(
                gateway.0,
                gateway.1,
                &l.product_key,
                &l.device_name,
                true,
            );
        }
        Ok(pairs(&links))
    }

    async fn topo_delete(&self, job: &Job) -> Result<Value, Refusal> {
        let subs = array(&job.params)?
            .iter()
            .map(|i| identity_of(i).map(|d| (d.product_key, d.device_name)))
            .collect::<Result<Vec<_>, _>>()?;
        let gateway = self.gateway_pair(job);
        let links = self
            .0
            .registry
            .topology()
            .remove_sub_devices(gateway, &subs)
            .await?;
        for l in &links {
            self.0.auth.topology_changed(
                gateway.0,
                gateway.1,
                &l.product_key,
                &l.device_name,
                false,
            );
        }
        Ok(pairs(&links))
    }

    async fn topo_get(&self, job: &Job) -> Result<Value, Refusal> {
        let links = self
            .0
            .registry
            .topology()
            .list_sub_devices(self.gateway_pair(job))
            .await?;
        Ok(pairs(&links))
    }

    /// The sub-device product `pk`, which must belong to the gateway's account and allow
    /// dynamic registration.
    async fn registrable(&self, job: &Job, pk: &str) -> Result<lode_registry::Product, Refusal> {
        let gateway = self
            .0
            .registry
            .get_product(&job.gateway.product_key)
            .await?
            .ok_or_else(|| invalid("gateway product not found"))?;
        let product = self
            .0
            .registry
            .get_product(pk)
            .await?
            .filter(|p| p.account_id == gateway.account_id)
            .ok_or_else(|| Refusal(code::DEVICE_NOT_FOUND, format!("product {pk} not found")))?;
        if product.node_type != NodeType::SubDevice {
            return Err(invalid(format!("product {pk} is not a sub-device product")));
        }
        if !product.dynamic_registration {
            return Err(invalid(format!(
                "product {pk} does not allow dynamic registration"
            )));
        }
        Ok(product)
    }

    async fn sub_register(&self, job: &Job) -> Result<Value, Refusal> {
        let mut out = Vec::new();
        for item in array(&job.params)? {
            let identity = identity_of(item)?;
            self.registrable(job, &identity.product_key).await?;
            let device = self
                .0
                .registry
                .get_device(&identity.product_key, &identity.device_name)
                .await?
                .ok_or_else(|| {
                    Refusal(
                        code::DEVICE_NOT_FOUND,
                        format!("device {} not found", identity.key()),
                    )
                })?;
            if device.state == DeviceState::Disabled {
                return Err(Refusal(
                    code::DEVICE_DISABLED,
                    format!("device {} is disabled", identity.key()),
                ));
            }
            out.push(json!({
                "iotId": device.iot_id,
                "productKey": device.product_key,
                "deviceName": device.device_name,
                "deviceSecret": device.device_secret,
            }));
        }
        Ok(Value::Array(out))
    }

    async fn product_register(&self, job: &Job) -> Result<Value, Refusal> {
        let proxieds = job
            .params
            .get("proxieds")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("params.proxieds must be an array"))?;
        let mut successes = Vec::new();
        let mut failures = Vec::new();
        for item in proxieds {
            let identity = identity_of(item)?;
            match self.register_one(job, item, &identity).await {
                Ok(secret) => successes.push(json!({
                    "productKey": identity.product_key,
                    "deviceName": identity.device_name,
                    "deviceSecret": secret,
                })),
                Err(Refusal(code, message)) => failures.push(json!({
                    "productKey": identity.product_key,
                    "deviceName": identity.device_name,
                    "code": code,
                    "message": message,
                })),
            }
        }
        Ok(json!({"successes": successes, "failures": failures}))
    }

    async fn register_one(
        &self,
        job: &Job,
        item: &Value,
        identity: &DeviceIdentity,
    ) -> Result<String, Refusal> {
        let product = self.registrable(job, &identity.product_key).await?;
        let random = text(item, "random")?;
        let sign = text(item, "sign")?;
        let method = match item.get("signMethod").and_then(Value::as_str) {
            Some(m) => m
                .parse::<SignMethod>()
                .map_err(|e| invalid(e.to_string()))?,
            None => SignMethod::REGISTER_DEFAULT,
        };
        let content =
            lode_alink::register_sign_content(&identity.device_name, &identity.product_key, random);
        if !lode_alink::verify_signature(method, &product.product_secret, &content, sign) {
            return Err(invalid("signature check failed"));
        }
        let registry = &self.0.registry;
        let existing = registry
            .get_device(&identity.product_key, &identity.device_name)
            .await?;
        let device = match existing {
            Some(d) => d,
            None => {
                let new = NewDevice {
                    dynamically_registered: true,
                    ..NewDevice::new(identity.device_name.clone())
                };
                match registry.create_device(&identity.product_key, new).await {
                    Ok(d) => {
                        if let Some(broker) = self.0.broker.upgrade() {
                            lifecycle::announce(&broker, lifecycle::Action::Create, &d).await;
                        }
                        d
                    }
                    Err(RegistryError::DeviceAlreadyExists { .. }) => registry
                        .get_device(&identity.product_key, &identity.device_name)
                        .await?
                        .ok_or_else(|| invalid("device vanished"))?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if device.state == DeviceState::Disabled {
            return Err(Refusal(
                code::DEVICE_DISABLED,
                format!("device {} is disabled", identity.key()),
            ));
        }
        Ok(device.device_secret)
    }

    fn list_found(&self, job: &Job) -> Result<Value, Refusal> {
        let found = array(&job.params)?
            .iter()
            .map(identity_of)
            .collect::<Result<Vec<_>, _>>()?;
        for d in &found {
            tracing::info!(
                gateway = job.gateway.key(),
                sub_device = d.key(),
                "gateway reports a sub-device it found"
            );
        }
        Ok(json!({}))
    }

    /// One login: `params` is `{productKey, deviceName, clientId, timestamp, signMethod,
    /// sign}` (`signMethod` may come from `default_method`, as in `batch_login`).
    async fn login_one(
        &self,
        job: &Job,
        params: &Value,
        default_method: Option<&str>,
    ) -> Result<DeviceIdentity, Refusal> {
        let identity = identity_of(params)?;
        let device = self
            .0
            .registry
            .get_device(&identity.product_key, &identity.device_name)
            .await?
            .ok_or_else(|| {
                Refusal(
                    code::DEVICE_NOT_FOUND,
                    format!("device {} not found", identity.key()),
                )
            })?;
        let method = params
            .get("signMethod")
            .or_else(|| params.get("signmethod"))
            .and_then(Value::as_str)
            .or(default_method);
        verify_sign(params, &identity, &device.device_secret, method)?;
        let client_id = ClientId::parse(text(params, "clientId")?).unwrap_or_default();
        let server_subscribe =
            client_id.server_subscribe || !job.principal.auto_subscriptions.is_empty();
        self.0
            .auth
            .login_sub_device(
                &job.principal,
                job.peer,
                &identity,
                server_subscribe,
                client_id.ext_rrpc(),
            )
            .await?;
        Ok(identity)
    }

    async fn login(&self, job: &Job, params: &Value) -> Result<Value, Refusal> {
        let identity = self.login_one(job, params, None).await?;
        Ok(pair(&identity.product_key, &identity.device_name))
    }

    async fn batch_login(&self, job: &Job) -> Result<Value, Refusal> {
        let method = job.params.get("signMethod").and_then(Value::as_str);
        let list = job
            .params
            .get("deviceList")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("params.deviceList must be an array"))?;
        let mut out = Vec::with_capacity(list.len());
        for item in list {
            let identity = self.login_one(job, item, method).await?;
            out.push(pair(&identity.product_key, &identity.device_name));
        }
        Ok(Value::Array(out))
    }

    fn logout(&self, job: &Job, params: &Value) -> Result<Value, Refusal> {
        let identity = identity_of(params)?;
        self.0.auth.logout_sub_device(
            &job.principal,
            &identity.product_key,
            &identity.device_name,
            "logged out by its gateway",
        );
        Ok(pair(&identity.product_key, &identity.device_name))
    }

    fn batch_logout(&self, job: &Job) -> Result<Value, Refusal> {
        array(&job.params)?
            .iter()
            .map(|item| self.logout(job, item))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }

    /// A gateway message for a sub-device of its topology without a session.
    async fn no_session(self, gateway: DeviceIdentity, topic: String, payload: Bytes, sub: String) {
        let id = serde_json::from_slice::<Value>(&payload)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(Value::Null);
        let (pk, dn) = sub.split_once('/').unwrap_or((sub.as_str(), ""));
        let body = json!({
            "id": id,
            "code": code::NO_SESSION,
            "data": {"productKey": pk, "deviceName": dn, "topic": topic},
            "message": "no active session for the sub-device: log it in first",
        });
        let error_topic = format!("/ext/error/{}/{}", gateway.product_key, gateway.device_name);
        self.send(&error_topic, body).await;
    }
}

impl MessageHook for Gateways {
    fn on_publish(&self, uplink: Uplink<'_>) -> Intercept {
        let Some(own) = uplink.principal.unique_key.as_deref() else {
            return Intercept::Route;
        };
        if let Some((request, pk, dn)) = classify(uplink.topic)
            && lode_alink::identity_key(pk, dn) == own
        {
            let Ok(gateway) = DeviceIdentity::new(pk, dn) else {
                return Intercept::Route;
            };
            let envelope = serde_json::from_slice::<Value>(uplink.payload).ok();
            let id = envelope
                .as_ref()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(Value::Null);
            let params = envelope
                .and_then(|mut v| v.get_mut("params").map(Value::take))
                .map(|p| match p {
                    // One SDK sends `"{}"` as a string.
                    Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                    other => other,
                })
                .unwrap_or(Value::Null);
            let job = Job {
                principal: uplink.principal.clone(),
                peer: uplink.peer,
                topic: uplink.topic.to_owned(),
                gateway,
                id,
                params,
            };
            let this = self.clone();
            return Intercept::Take(Box::pin(async move {
                this.handle(request, job).await;
                Ok(())
            }));
        }
        if uplink.principal.proxied.is_some()
            && let Some((pk, dn)) = lode_device::topic_device(uplink.topic)
        {
            let sub = lode_alink::identity_key(pk, dn);
            if sub != own && !uplink.principal.speaks_for(&sub) {
                let Ok(gateway) = DeviceIdentity::from_username(&own_username(own)) else {
                    return Intercept::Route;
                };
                let this = self.clone();
                let (topic, payload) = (uplink.topic.to_owned(), uplink.payload.clone());
                return Intercept::Take(Box::pin(async move {
                    this.no_session(gateway, topic, payload, sub).await;
                    Ok(())
                }));
            }
        }
        Intercept::Route
    }
}

/// `"pk/dn"` as an Alink username `dn&pk`.
fn own_username(key: &str) -> String {
    let (pk, dn) = key.split_once('/').unwrap_or((key, ""));
    format!("{dn}&{pk}")
}

fn pair(pk: &str, dn: &str) -> Value {
    json!({"productKey": pk, "deviceName": dn})
}

fn pairs(links: &[TopologyLink]) -> Value {
    Value::Array(
        links
            .iter()
            .map(|l| pair(&l.product_key, &l.device_name))
            .collect(),
    )
}

fn array(params: &Value) -> Result<&Vec<Value>, Refusal> {
    params
        .as_array()
        .ok_or_else(|| invalid("params must be an array"))
}

fn text<'a>(item: &'a Value, field: &str) -> Result<&'a str, Refusal> {
    item.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{field} is missing")))
}

fn identity_of(item: &Value) -> Result<DeviceIdentity, Refusal> {
    let pk = text(item, "productKey")?;
    let dn = text(item, "deviceName")?;
    DeviceIdentity::new(pk, dn).map_err(|e| invalid(e.to_string()))
}

/// The topology signature: `sign_field` names the method field (`signmethod` in
/// `topo/add`).
fn verify_sub_sign(
    item: &Value,
    identity: &DeviceIdentity,
    secret: &str,
    sign_field: &str,
) -> Result<(), Refusal> {
    let method = item.get(sign_field).and_then(Value::as_str);
    verify_sign(item, identity, secret, method)
}

/// Checks `sign`: HMAC with the sub-device's secret of
/// `clientId{clientId}deviceName{dn}productKey{pk}timestamp{ts}`, the clientId exactly as
/// sent (section 7.2). Without a method, `hmacsha256`.
fn verify_sign(
    item: &Value,
    identity: &DeviceIdentity,
    secret: &str,
    method: Option<&str>,
) -> Result<(), Refusal> {
    let method = match method {
        Some(m) => m
            .parse::<SignMethod>()
            .map_err(|e| invalid(e.to_string()))?,
        None => SignMethod::HmacSha256,
    };
    let client_id = text(item, "clientId")?;
    let timestamp = match item.get("timestamp") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(invalid("timestamp is missing")),
    };
    let sign = text(item, "sign")?;
    let content = lode_alink::mqtt_sign_content(
        client_id,
        &identity.device_name,
        &identity.product_key,
        Some(&timestamp),
    );
    if lode_alink::verify_signature(method, secret, &content, sign) {
        Ok(())
    } else {
        Err(invalid(format!(
            "signature check failed for {}",
            identity.key()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(
            classify("/sys/pk/dn/thing/topo/add"),
            Some((Request::TopoAdd, "pk", "dn"))
        );
        assert_eq!(
            classify("/sys/pk/dn/thing/proxy/provisioning/product_register"),
            Some((Request::ProductRegister, "pk", "dn"))
        );
        assert_eq!(
            classify("/ext/session/pk/dn/combine/batch_login"),
            Some((Request::BatchLogin, "pk", "dn"))
        );
        assert_eq!(classify("/sys/pk/dn/thing/topo/add_reply"), None);
        assert_eq!(classify("/ext/session/pk/dn/thing/topo/add"), None);
        assert_eq!(classify("/sys/pk/dn/combine/login"), None);
    }

    #[test]
    fn signatures() {
        let identity = DeviceIdentity::new("a1SubPK0001", "sub01").expect("identity");
        let client_id = "a1SubPK0001.sub01|lan=Python,_v=2.2.1,_ss=1|";
        let content = format!(
            "clientId{client_id}deviceNamesub01productKeya1SubPK0001timestamp1795827151035"
        );
        let sign = lode_alink::sign(SignMethod::HmacSha256, "secret", &content);
        let item = json!({
            "productKey": "a1SubPK0001", "deviceName": "sub01", "clientId": client_id,
            "timestamp": "1795827151035", "sign": sign,
        });
        assert!(verify_sign(&item, &identity, "secret", Some("hmacSha256")).is_ok());
        assert!(verify_sign(&item, &identity, "secret", None).is_ok());
        let err = verify_sign(&item, &identity, "other", None).expect_err("wrong secret");
        assert_eq!(err.0, code::INVALID);
        let err = verify_sign(&item, &identity, "secret", Some("hmacmd5")).expect_err("method");
        assert_eq!(err.0, code::INVALID);
    }
}
