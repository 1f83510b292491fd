//! Devices without a connection: Alink over HTTP and CoAP (protocol reference sections 9
//! and 10).
//!
//! Such a device signs in with one request (`/auth`), gets a token from the transport, and
//! sends each later message on its own. This module gives the transports what the MQTT
//! sign-in gives the broker: the signature check against the registry
//! ([`DeviceAuth::transient_sign_in`]), the device's [`Principal`] with its topic
//! permissions for every later message ([`DeviceAuth::transient_device`], which refuses a
//! device disabled or deleted since), and its presence: a transient device is online from
//! its first message until `window` after its last one ([`DeviceAuth::transient_seen`]),
//! recorded by the same lifecycle worker as MQTT connections, so the registry state and the
//! `/as/mqtt/status/...` messages follow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Weak;
use std::time::{Duration, Instant};

use lode_alink::{DeviceIdentity, SignMethod};
use lode_broker::Principal;
use lode_registry::{AuthType as ProductAuth, DeviceState, NodeType, RegistryError};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::{DeviceAuth, Lifecycle};

/// How often expired presences are turned offline.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// A signed-in device of a connectionless transport.
#[derive(Debug, Clone)]
pub struct TransientDevice {
    /// The device's principal: its identity (`unique_key` `"pk/dn"`) and topic permissions.
    pub principal: Principal,
    /// The registry's id of the device; a device deleted and created again gets a new one.
    pub iot_id: String,
    /// The device's secret (the symmetric-key CoAP mode derives its session key from it).
    pub device_secret: String,
}

/// Why a transient sign-in or a later message of the device is refused.
#[derive(Debug, thiserror::Error)]
pub enum TransientError {
    /// No such product or device.
    #[error("unknown device")]
    UnknownDevice,
    /// The device is disabled.
    #[error("device disabled")]
    Disabled,
    /// The signature does not match the device secret.
    #[error("signature mismatch")]
    BadSignature,
    /// The product signs its devices in with X.509 certificates, which these transports
    /// do not carry.
    #[error("the product requires X.509 certificates")]
    CertificateRequired,
    /// The product's devices are sub-devices, which talk only through their gateway.
    #[error("a sub-device connects only through its gateway")]
    SubDevice,
    /// The product key or device name cannot form topics.
    #[error("invalid device identity")]
    InvalidIdentity,
    /// The registry failed.
    #[error("registry unavailable: {0}")]
    Backend(#[from] RegistryError),
}

/// Deadlines of the devices online without a connection.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    deadlines: Mutex<HashMap<String, (DeviceIdentity, Instant)>>,
}

impl Presence {
    /// Forgets a device without an offline event (it connected over MQTT).
    pub(crate) fn forget(&self, key: &str) {
        self.deadlines.lock().remove(key);
    }

    /// Removes and returns the devices whose deadline passed at `now`.
    fn expired(&self, now: Instant) -> Vec<DeviceIdentity> {
        let mut gone = Vec::new();
        self.deadlines.lock().retain(|_, (identity, deadline)| {
            if *deadline <= now {
                gone.push(identity.clone());
                false
            } else {
                true
            }
        });
        gone
    }
}

/// Turns transient devices offline when their window ends; stops with the hook.
pub(crate) async fn sweep(
    presence: Weak<Presence>,
    lifecycle: mpsc::WeakUnboundedSender<Lifecycle>,
) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let (Some(presence), Some(lifecycle)) = (presence.upgrade(), lifecycle.upgrade()) else {
            return;
        };
        for identity in presence.expired(Instant::now()) {
            let _ = lifecycle.send(Lifecycle {
                identity,
                online: false,
                at: chrono::Utc::now(),
                ip: None,
                reason: Some("no message within the online window".to_owned()),
            });
        }
    }
}

impl DeviceAuth {
    /// Verifies the `/auth` request of an HTTP or CoAP device: the device exists and is
    /// enabled, and `sign` is `method`'s HMAC of `content` with its secret (hex in either
    /// case). `content` is the transport's sign content, e.g.
    /// `clientId…deviceName…productKey…[timestamp…]`.
    pub async fn transient_sign_in(
        &self,
        product_key: &str,
        device_name: &str,
        method: SignMethod,
        content: &str,
        sign: &str,
    ) -> Result<TransientDevice, TransientError> {
        let device = self.transient_device(product_key, device_name).await?;
        if !lode_alink::verify_signature(method, &device.device_secret, content, sign) {
            return Err(TransientError::BadSignature);
        }
        Ok(device)
    }

    /// The device as it is now, for a message carrying a token issued earlier: refused when
    /// it was deleted or disabled since.
    pub async fn transient_device(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<TransientDevice, TransientError> {
        let product = self
            .registry
            .get_product(product_key)
            .await?
            .ok_or(TransientError::UnknownDevice)?;
        if product.auth_type == ProductAuth::X509 {
            return Err(TransientError::CertificateRequired);
        }
        if product.node_type == NodeType::SubDevice {
            return Err(TransientError::SubDevice);
        }
        let device = self
            .registry
            .get_device(product_key, device_name)
            .await?
            .ok_or(TransientError::UnknownDevice)?;
        if device.state == DeviceState::Disabled {
            return Err(TransientError::Disabled);
        }
        let identity = DeviceIdentity {
            product_key: product_key.to_owned(),
            device_name: device_name.to_owned(),
        };
        let principal = self
            .principal_with(identity, Vec::new(), false, None)
            .await?;
        Ok(TransientDevice {
            principal,
            iot_id: device.iot_id,
            device_secret: device.device_secret,
        })
    }

    /// Records a message of a transient device from `peer`: the device turns online (if it
    /// was not) and stays so until `window` after this call. A device connected over MQTT is
    /// left to its connection.
    pub fn transient_seen(&self, principal: &Principal, peer: SocketAddr, window: Duration) {
        let Some(crate::Client::Device { identity, .. }) = crate::client(principal) else {
            return;
        };
        let key = identity.key();
        if self.online.lock().contains_key(&key) {
            return;
        }
        let deadline = Instant::now() + window;
        let fresh = self
            .transient
            .deadlines
            .lock()
            .insert(key, (identity.clone(), deadline))
            .is_none();
        if fresh {
            let _ = self.lifecycle.send(Lifecycle {
                identity: identity.clone(),
                online: true,
                at: chrono::Utc::now(),
                ip: Some(peer.ip().to_string()),
                reason: None,
            });
        }
    }

    /// Whether a transient device is online now.
    pub fn transient_online(&self, product_key: &str, device_name: &str) -> bool {
        self.transient
            .deadlines
            .lock()
            .contains_key(&lode_alink::identity_key(product_key, device_name))
    }
}
