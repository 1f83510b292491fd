//! Device access without a connection: Alink over HTTP (protocol reference section 10) and
//! CoAP (section 9), for devices that wake, send and sleep.
//!
//! [`Edge`] is the part both transports share:
//!
//! - **Sign-in**: [`Edge::sign_in`] checks the `/auth` signature through
//!   [`lode_device::DeviceAuth::transient_sign_in`] (the same registry, the same HMAC rules
//!   as MQTT) and issues a token valid for [`EdgeConfig::token_ttl`] (48 h by default).
//!   `/auth` is rate limited per source address.
//! - **Tokens** ([`token`]) are self-contained and MAC'd with the server's [`TokenKey`]: a
//!   restart with the same key keeps them valid. Each use re-reads the device (cached for
//!   [`EdgeConfig::device_cache`], 1 s by default): a disabled, deleted or re-created device,
//!   or one whose secret was reset, is refused at once.
//! - **Messages**: [`Edge::publish`] enters [`lode_broker::Broker::publish_as`], the path of
//!   an MQTT PUBLISH: the device's topic permissions, the thing model, routing. A device may
//!   send at most [`EdgeConfig::publish_per_second`] messages a second (30, the platform's
//!   QoS 0 limit), over all transports together.
//! - **Presence**: each sign-in and message keeps the device online for
//!   [`EdgeConfig::online_window`] (registry state and `/as/mqtt/status/...` messages).
//!
//! The transports: [`http::router`] (`POST /auth`, `POST /topic/${topic}`) for the HTTP
//! listener, [`coap::CoapServer`] for the UDP listeners (plain on 5683, the symmetric-key
//! encrypted payload mode on 5682), and [`dtls::DtlsServer`] for CoAP over DTLS 1.2 (5684,
//! PSK and certificate).
//!
//! [`EdgeStats`] counts what happens, rendered for `/metrics`.

pub mod coap;
pub mod dtls;
mod feed;
pub mod http;
mod limit;
mod stats;
pub mod token;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lode_alink::SignMethod;
use lode_broker::{Broker, PublishAsError};
use lode_coap::Code;
use lode_device::{DeviceAuth, TransientDevice, TransientError};
use parking_lot::Mutex;

/// The CoAP codec, for clients of the CoAP listeners (tests, tools).
pub use lode_coap;
pub use stats::EdgeStats;
pub use token::{Channel, Claims, TokenKey};

use limit::Buckets;

/// Settings of device access without a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// How long a token is valid. Default 48 h.
    pub token_ttl: Duration,
    /// How long a device stays online after its last sign-in or message. Default 5 min.
    pub online_window: Duration,
    /// How long a device read from the registry is trusted for its tokens. Default 1 s.
    pub device_cache: Duration,
    /// Messages a device may send a second, over HTTP and CoAP together. Default 30.
    pub publish_per_second: u32,
    /// `/auth` requests one source address may make a minute. Default 60.
    pub auth_per_minute: u32,
    /// Largest CoAP request body (after Block1 reassembly). Default 1024 bytes.
    pub coap_max_body: usize,
    /// Largest HTTP message body. Default 256 KB, the MQTT limit.
    pub http_max_body: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            token_ttl: Duration::from_secs(48 * 3600),
            online_window: Duration::from_secs(300),
            device_cache: Duration::from_secs(1),
            publish_per_second: 30,
            auth_per_minute: 60,
            coap_max_body: lode_coap::block::DEFAULT_MAX_BODY,
            http_max_body: 256 * 1024,
        }
    }
}

/// Why a sign-in or a message is refused.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// Too many `/auth` requests from one address.
    #[error("too many sign-ins from {0}")]
    AuthRateLimited(IpAddr),
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The sign-in was refused (unknown or disabled device, wrong signature).
    #[error("sign-in refused: {0}")]
    SignIn(TransientError),
    /// No token.
    #[error("no token")]
    TokenMissing,
    /// The token expired.
    #[error("token expired")]
    TokenExpired,
    /// Not a token of this server, for this transport, or tampered with.
    #[error("invalid token")]
    TokenInvalid,
    /// The token's device was disabled, deleted, re-created or got a new secret.
    #[error("token revoked: {0}")]
    TokenRevoked(TransientError),
    /// The device sends faster than its limit.
    #[error("too many messages from {0}")]
    RateLimited(String),
    /// The topic is not a valid topic name.
    #[error("invalid topic {0:?}")]
    InvalidTopic(String),
    /// The device may not publish there.
    #[error("not authorized to publish to {0:?}")]
    NotAuthorized(String),
    /// The platform could not take the message.
    #[error("message not accepted: {0}")]
    NotAccepted(String),
}

impl EdgeError {
    /// The code of the HTTP response envelope (protocol reference section 10).
    pub fn http_code(&self) -> u32 {
        match self {
            EdgeError::BadRequest(_) | EdgeError::InvalidTopic(_) => 10001,
            EdgeError::SignIn(TransientError::Backend(_))
            | EdgeError::TokenRevoked(TransientError::Backend(_)) => 10000,
            EdgeError::SignIn(_) => 20000,
            EdgeError::TokenExpired => 20001,
            EdgeError::TokenMissing => 20002,
            EdgeError::TokenInvalid | EdgeError::TokenRevoked(_) => 20003,
            EdgeError::NotAuthorized(_) | EdgeError::NotAccepted(_) => 30001,
            EdgeError::AuthRateLimited(_) | EdgeError::RateLimited(_) => 40000,
        }
    }

    /// The CoAP response code.
    pub fn coap_code(&self) -> Code {
        match self {
            EdgeError::BadRequest(_) | EdgeError::InvalidTopic(_) => Code::BAD_REQUEST,
            EdgeError::SignIn(TransientError::Backend(_))
            | EdgeError::TokenRevoked(TransientError::Backend(_))
            | EdgeError::NotAccepted(_) => Code::INTERNAL_SERVER_ERROR,
            EdgeError::SignIn(_)
            | EdgeError::TokenMissing
            | EdgeError::TokenExpired
            | EdgeError::TokenInvalid
            | EdgeError::TokenRevoked(_) => Code::UNAUTHORIZED,
            EdgeError::NotAuthorized(_) => Code::FORBIDDEN,
            EdgeError::AuthRateLimited(_) | EdgeError::RateLimited(_) => Code::SERVICE_UNAVAILABLE,
        }
    }
}

/// An `/auth` request, already parsed by its transport.
#[derive(Debug, Clone)]
pub struct SignIn<'a> {
    /// `productKey`.
    pub product_key: &'a str,
    /// `deviceName`.
    pub device_name: &'a str,
    /// The HMAC method.
    pub method: SignMethod,
    /// The signed content, as the transport defines it.
    pub content: &'a str,
    /// The presented signature (hex, either case).
    pub sign: &'a str,
}

/// A successful sign-in.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token to present with each message.
    pub token: String,
    /// The device.
    pub device: TransientDevice,
    /// The `random` of the encrypted CoAP mode.
    pub random: Option<String>,
}

/// A device known by a valid token.
#[derive(Debug, Clone)]
pub struct Session {
    /// What the token says.
    pub claims: Claims,
    /// The device as the registry has it now.
    pub device: TransientDevice,
}

/// The shared part of HTTP and CoAP device access. Cheap to clone.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    auth: Arc<DeviceAuth>,
    broker: Broker,
    key: TokenKey,
    config: EdgeConfig,
    devices: Mutex<HashMap<String, (TransientDevice, Instant)>>,
    publish_limit: Buckets<String>,
    auth_limit: Buckets<IpAddr>,
    message_ids: AtomicU64,
    stats: EdgeStats,
}

/// Devices remembered before stale entries are dropped.
const DEVICE_CACHE_PRUNE_AT: usize = 100_000;

impl Edge {
    /// Device access through `auth` (sign-in, presence) and `broker` (messages), with tokens
    /// signed by `key`.
    pub fn new(auth: Arc<DeviceAuth>, broker: Broker, key: TokenKey, config: EdgeConfig) -> Edge {
        let per_second = f64::from(config.publish_per_second.max(1));
        let auth_burst = f64::from(config.auth_per_minute.max(1));
        let first_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            << 20;
        Edge {
            inner: Arc::new(Inner {
                auth,
                broker,
                key,
                publish_limit: Buckets::new(per_second, per_second),
                auth_limit: Buckets::new(auth_burst / 60.0, auth_burst),
                config,
                devices: Mutex::new(HashMap::new()),
                message_ids: AtomicU64::new(first_id),
                stats: EdgeStats::default(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &EdgeConfig {
        &self.inner.config
    }

    /// The counters.
    pub fn stats(&self) -> &EdgeStats {
        &self.inner.stats
    }

    /// Signs a device in from `peer` and issues a token for `channel`.
    pub async fn sign_in(
        &self,
        channel: Channel,
        req: &SignIn<'_>,
        random: Option<String>,
        peer: SocketAddr,
    ) -> Result<Grant, EdgeError> {
        let inner = &self.inner;
        if !inner.auth_limit.take(&peer.ip(), Instant::now()) {
            inner.stats.auth_failed(channel);
            return Err(EdgeError::AuthRateLimited(peer.ip()));
        }
        let device = match inner
            .auth
            .transient_sign_in(
                req.product_key,
                req.device_name,
                req.method,
                req.content,
                req.sign,
            )
            .await
        {
            Ok(device) => device,
            Err(error) => {
                inner.stats.auth_failed(channel);
                tracing::debug!(%error, device = %req.device_name, channel = channel.name(), "sign-in refused");
                return Err(EdgeError::SignIn(error));
            }
        };
        let claims = Claims {
            channel,
            expires: unix_now().saturating_add(inner.config.token_ttl.as_secs()),
            product_key: req.product_key.to_owned(),
            device_name: req.device_name.to_owned(),
            random: random.clone(),
        };
        let token = token::issue(&inner.key, &claims, &device.iot_id, &device.device_secret);
        inner.stats.auth_ok(channel);
        inner
            .auth
            .transient_seen(&device.principal, peer, inner.config.online_window);
        inner.devices.lock().insert(
            lode_alink::identity_key(req.product_key, req.device_name),
            (device.clone(), Instant::now()),
        );
        Ok(Grant {
            token,
            device,
            random,
        })
    }

    /// The device a token stands for, on `channel`, as the registry has it now.
    pub async fn session(&self, token: &str, channel: Channel) -> Result<Session, EdgeError> {
        if token.is_empty() {
            return Err(EdgeError::TokenMissing);
        }
        let read = token::parse(token).ok_or(EdgeError::TokenInvalid)?;
        if read.claims.channel != channel {
            return Err(EdgeError::TokenInvalid);
        }
        if read.claims.expires <= unix_now() {
            return Err(EdgeError::TokenExpired);
        }
        let device = self
            .device(&read.claims.product_key, &read.claims.device_name)
            .await?;
        if !read.verify(&self.inner.key, &device.iot_id, &device.device_secret) {
            return Err(EdgeError::TokenInvalid);
        }
        Ok(Session {
            claims: read.claims,
            device,
        })
    }

    async fn device(&self, pk: &str, dn: &str) -> Result<TransientDevice, EdgeError> {
        let key = lode_alink::identity_key(pk, dn);
        let ttl = self.inner.config.device_cache;
        let now = Instant::now();
        if let Some((device, at)) = self.inner.devices.lock().get(&key)
            && now.saturating_duration_since(*at) < ttl
        {
            return Ok(device.clone());
        }
        match self.inner.auth.transient_device(pk, dn).await {
            Ok(device) => {
                let mut devices = self.inner.devices.lock();
                if devices.len() >= DEVICE_CACHE_PRUNE_AT {
                    devices.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
                }
                devices.insert(key, (device.clone(), now));
                Ok(device)
            }
            Err(error) => {
                self.inner.devices.lock().remove(&key);
                Err(EdgeError::TokenRevoked(error))
            }
        }
    }

    /// The broker the devices publish through.
    pub(crate) fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// Whether the session's device may subscribe to `filter` (its own downlinks).
    pub(crate) fn may_subscribe(&self, session: &Session, filter: &str) -> bool {
        lode_broker::AuthHook::authorize_subscribe(
            self.inner.auth.as_ref(),
            &session.device.principal,
            filter,
        )
    }

    /// Publishes `payload` on `topic` for the session's device, as an MQTT QoS 0 PUBLISH
    /// would be; returns the message id of the reply envelope.
    pub async fn publish(
        &self,
        session: &Session,
        topic: &str,
        payload: Bytes,
        peer: SocketAddr,
    ) -> Result<u64, EdgeError> {
        let inner = &self.inner;
        let channel = session.claims.channel;
        let key =
            lode_alink::identity_key(&session.claims.product_key, &session.claims.device_name);
        if !inner.publish_limit.take(&key, Instant::now()) {
            inner.stats.rate_limited(channel);
            return Err(EdgeError::RateLimited(key));
        }
        let client_id = format!(
            "{}.{}",
            session.claims.product_key, session.claims.device_name
        );
        let principal = &session.device.principal;
        let result = inner
            .broker
            .publish_as(
                principal,
                &client_id,
                peer,
                topic,
                payload,
                lode_mqtt::QoS::AtMostOnce,
            )
            .await;
        match result {
            Ok(_) => {
                inner.stats.published(channel);
                inner
                    .auth
                    .transient_seen(principal, peer, inner.config.online_window);
                Ok(inner.message_ids.fetch_add(1, Ordering::Relaxed))
            }
            Err(error) => {
                inner.stats.publish_refused(channel);
                Err(match error {
                    PublishAsError::InvalidTopic(t) => EdgeError::InvalidTopic(t),
                    PublishAsError::NotAuthorized(t) => EdgeError::NotAuthorized(t),
                    other => EdgeError::NotAccepted(other.to_string()),
                })
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
