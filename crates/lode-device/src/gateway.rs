//! Sub-device sessions over a gateway's connection.
//!
//! A device of a gateway product gets a [`GatewaySessions`] in its principal: the
//! sub-devices of its topology (loaded at CONNECT, kept current by
//! [`DeviceAuth::topology_changed`]) and those it logged in
//! ([`DeviceAuth::login_sub_device`]). A logged-in sub-device:
//!
//! - is in the connection's [`Proxied`] set, so hooks accept its uplinks from the gateway
//!   (`Principal::speaks_for`);
//! - lends its own [`DevicePermissions`] to the gateway's publishes and subscriptions;
//! - has its server-side subscriptions added to the gateway's session (its downlinks reach
//!   the gateway's connection), removed at logout;
//! - is online ([`DeviceAuth::online`]), with the registry state, lifecycle log, status
//!   message and status listeners following its login, its logout and the gateway's
//!   connection (a gateway that disconnects takes its sub-devices offline).
//!
//! A gateway's publish on the topics of a sub-device of its topology that has no session
//! is authorized, so that the platform can answer it on `/ext/error` (the gateway service
//! takes such messages and never routes them); a publish for any other device is refused.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use lode_alink::{DeviceIdentity, DevicePermissions};
use lode_broker::{Principal, Proxied};
use lode_mqtt::QoS;
use lode_registry::{DeviceState, NodeType, RegistryError};
use parking_lot::RwLock;

use crate::{Client, DeviceAuth, Lifecycle, client};

/// The sub-devices of one gateway connection.
#[derive(Debug, Default)]
pub(crate) struct GatewaySessions {
    /// Keys of the logged-in sub-devices, shared with the principal.
    proxied: Arc<Proxied>,
    /// Logged-in sub-devices by key.
    sessions: RwLock<HashMap<String, SubSession>>,
    /// Keys of the sub-devices in the gateway's topology.
    topology: RwLock<HashSet<String>>,
}

#[derive(Debug)]
struct SubSession {
    identity: DeviceIdentity,
    permissions: DevicePermissions,
    serial: u64,
    /// Server-side subscriptions added to the gateway's session.
    filters: Vec<String>,
}

/// Whose topic a topic or filter is.
#[derive(Debug, PartialEq, Eq)]
enum Owner<'a> {
    Device(&'a str, &'a str),
    Product(&'a str),
}

/// The device (or, for broadcasts, the product) a device topic belongs to, from its shape
/// (the rule table of `lode_alink`'s ACL).
fn owner(topic: &str) -> Option<Owner<'_>> {
    let levels: Vec<&str> = topic.split('/').collect();
    let device = |i: usize| Some(Owner::Device(levels.get(i)?, levels.get(i + 1)?));
    match levels.as_slice() {
        ["", "sys", ..] => device(2),
        ["", "shadow", "update" | "get", ..] => device(3),
        ["", "ota", "device", _, ..] => device(4),
        ["", "ext", "session" | "ntp" | "error", ..] => device(3),
        ["", "ext", "rrpc", _, "sys", ..] => device(5),
        ["", "ext", "rrpc", _, _, _, "user", ..] => device(4),
        ["", "broadcast", pk, ..] => Some(Owner::Product(pk)),
        ["", _, _, "user", ..] => device(1),
        _ => None,
    }
}

/// The `(productKey, deviceName)` a device topic belongs to, from its shape (`None` for
/// broadcasts and topics that are no device's).
pub fn topic_device(topic: &str) -> Option<(&str, &str)> {
    match owner(topic)? {
        Owner::Device(pk, dn) => Some((pk, dn)),
        Owner::Product(_) => None,
    }
}

impl GatewaySessions {
    pub(crate) fn new(topology: HashSet<String>) -> GatewaySessions {
        GatewaySessions {
            topology: RwLock::new(topology),
            ..GatewaySessions::default()
        }
    }

    pub(crate) fn proxied(&self) -> Arc<Proxied> {
        self.proxied.clone()
    }

    /// Whether the gateway may publish `topic` for one of its sub-devices.
    pub(crate) fn can_publish(&self, topic: &str) -> bool {
        let Some(Owner::Device(pk, dn)) = owner(topic) else {
            return false;
        };
        let key = lode_alink::identity_key(pk, dn);
        if let Some(session) = self.sessions.read().get(&key) {
            return session.permissions.can_publish(topic);
        }
        // No session: authorized only to be answered on /ext/error.
        self.topology.read().contains(&key)
            && DevicePermissions::new(pk, dn, &[]).is_ok_and(|p| p.can_publish(topic))
    }

    /// Whether the gateway may subscribe to `filter` for one of its logged-in sub-devices.
    pub(crate) fn can_subscribe(&self, filter: &str) -> bool {
        let sessions = self.sessions.read();
        match owner(filter) {
            Some(Owner::Device(pk, dn)) => sessions
                .get(&lode_alink::identity_key(pk, dn))
                .is_some_and(|s| s.permissions.can_subscribe(filter)),
            Some(Owner::Product(pk)) => sessions
                .values()
                .any(|s| s.identity.product_key == pk && s.permissions.can_subscribe(filter)),
            None => false,
        }
    }

    fn take_all(&self) -> Vec<SubSession> {
        let mut sessions = self.sessions.write();
        for key in sessions.keys() {
            self.proxied.remove(key);
        }
        sessions.drain().map(|(_, s)| s).collect()
    }
}

/// Why a sub-device login is refused.
#[derive(Debug, thiserror::Error)]
pub enum SubDeviceError {
    /// The connection is not a gateway's.
    #[error("the connection is not a gateway's")]
    NotAGateway,
    /// No such device.
    #[error("device {0} not found")]
    NotFound(String),
    /// The device is disabled.
    #[error("device {0} is disabled")]
    Disabled(String),
    /// The device's product is not a sub-device product.
    #[error("device {0} is not a sub-device")]
    NotSubDevice(String),
    /// The sub-device is not in this gateway's topology.
    #[error("sub-device {0} is not in the gateway's topology")]
    NotInTopology(String),
    /// The product key or device name cannot form topics.
    #[error("invalid device identity {0}")]
    InvalidIdentity(String),
    /// The registry failed.
    #[error("registry unavailable: {0}")]
    Backend(#[from] RegistryError),
}

impl DeviceAuth {
    /// Logs a sub-device in over the connection of `gateway` (whose peer is `peer`), once
    /// its signature was checked: it must exist, be enabled, be of a sub-device product and
    /// be in the gateway's topology. With `server_subscribe` (`_ss=1` in its clientId) its
    /// system downlinks are subscribed on the gateway's session. Logging in again is
    /// harmless.
    pub async fn login_sub_device(
        &self,
        gateway: &Principal,
        peer: SocketAddr,
        identity: &DeviceIdentity,
        server_subscribe: bool,
        ext_rrpc: bool,
    ) -> Result<(), SubDeviceError> {
        let Some(Client::Device {
            identity: gw,
            gateway: Some(sessions),
            ..
        }) = client(gateway)
        else {
            return Err(SubDeviceError::NotAGateway);
        };
        let key = identity.key();
        let product = self
            .registry
            .get_product(&identity.product_key)
            .await?
            .ok_or_else(|| SubDeviceError::NotFound(key.clone()))?;
        if product.node_type != NodeType::SubDevice {
            return Err(SubDeviceError::NotSubDevice(key));
        }
        let device = self
            .registry
            .get_device(&identity.product_key, &identity.device_name)
            .await?
            .ok_or_else(|| SubDeviceError::NotFound(key.clone()))?;
        if device.state == DeviceState::Disabled {
            return Err(SubDeviceError::Disabled(key));
        }
        let link = self
            .registry
            .topology()
            .get_gateway((&identity.product_key, &identity.device_name))
            .await?;
        let attached = link.is_some_and(|l| {
            l.gateway_product_key == gw.product_key && l.gateway_device_name == gw.device_name
        });
        if !attached {
            sessions.topology.write().remove(&key);
            return Err(SubDeviceError::NotInTopology(key));
        }
        sessions.topology.write().insert(key.clone());
        let principal = self
            .principal_with(identity.clone(), Vec::new(), false, None)
            .await
            .map_err(|_| SubDeviceError::InvalidIdentity(key.clone()))?;
        let Some(Client::Device { permissions, .. }) = client(&principal) else {
            return Err(SubDeviceError::InvalidIdentity(key));
        };
        let filters = if server_subscribe {
            lode_alink::auto_subscriptions(&identity.product_key, &identity.device_name)
        } else {
            Vec::new()
        };
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let previous = sessions.sessions.write().insert(
            key.clone(),
            SubSession {
                identity: identity.clone(),
                permissions: permissions.clone(),
                serial,
                filters: filters.clone(),
            },
        );
        sessions.proxied.insert(key.clone());
        if let Some(broker) = self.broker() {
            if let Some(previous) = &previous {
                let stale: Vec<String> = previous
                    .filters
                    .iter()
                    .filter(|f| !filters.contains(f))
                    .cloned()
                    .collect();
                broker.unsubscribe_identity(&gw.key(), &stale);
            }
            let subs: Vec<(String, QoS)> =
                filters.into_iter().map(|f| (f, QoS::AtLeastOnce)).collect();
            broker.subscribe_identity(&gw.key(), &subs);
        }
        self.online.lock().insert(key, (serial, ext_rrpc));
        if previous.is_none() {
            let _ = self.lifecycle.send(Lifecycle {
                identity: identity.clone(),
                online: true,
                at: chrono::Utc::now(),
                ip: Some(peer.ip().to_string()),
                reason: None,
            });
        }
        Ok(())
    }

    /// Logs a sub-device out of the connection of `gateway`. Returns whether it was
    /// logged in there.
    pub fn logout_sub_device(
        &self,
        gateway: &Principal,
        product_key: &str,
        device_name: &str,
        reason: &str,
    ) -> bool {
        let Some(Client::Device {
            identity: gw,
            gateway: Some(sessions),
            ..
        }) = client(gateway)
        else {
            return false;
        };
        self.end_sub_session(&gw.key(), sessions, product_key, device_name, reason)
    }

    /// Tells the connected gateway `gateway_product_key/gateway_device_name` (if it is
    /// connected) that a sub-device joined (`attached`) or left its topology; a sub-device
    /// that left is logged out.
    pub fn topology_changed(
        &self,
        gateway_product_key: &str,
        gateway_device_name: &str,
        sub_product_key: &str,
        sub_device_name: &str,
        attached: bool,
    ) {
        let gw_key = lode_alink::identity_key(gateway_product_key, gateway_device_name);
        let Some(sessions) = self.gateways.lock().get(&gw_key).map(|(_, s)| s.clone()) else {
            return;
        };
        let key = lode_alink::identity_key(sub_product_key, sub_device_name);
        if attached {
            sessions.topology.write().insert(key);
        } else {
            sessions.topology.write().remove(&key);
            self.end_sub_session(
                &gw_key,
                &sessions,
                sub_product_key,
                sub_device_name,
                "removed from the gateway's topology",
            );
        }
    }

    /// Ends the session of sub-device `product_key/device_name` on whichever gateway holds
    /// it (the device was disabled, deleted or given a new secret). Returns whether it was
    /// logged in.
    pub fn end_sub_device(&self, product_key: &str, device_name: &str, reason: &str) -> bool {
        let key = lode_alink::identity_key(product_key, device_name);
        let holder = self
            .gateways
            .lock()
            .iter()
            .find(|(_, (_, sessions))| sessions.proxied.contains(&key))
            .map(|(gateway, (_, sessions))| (gateway.clone(), sessions.clone()));
        holder.is_some_and(|(gateway, sessions)| {
            self.end_sub_session(&gateway, &sessions, product_key, device_name, reason)
        })
    }

    /// The sub-devices logged in over the connection of `gateway`, as `"pk/dn"` keys.
    pub fn logged_in_sub_devices(&self, gateway: &Principal) -> Vec<String> {
        match client(gateway) {
            Some(Client::Device {
                gateway: Some(sessions),
                ..
            }) => sessions.proxied.keys(),
            _ => Vec::new(),
        }
    }

    fn end_sub_session(
        &self,
        gateway_key: &str,
        sessions: &GatewaySessions,
        product_key: &str,
        device_name: &str,
        reason: &str,
    ) -> bool {
        let key = lode_alink::identity_key(product_key, device_name);
        let Some(session) = sessions.sessions.write().remove(&key) else {
            return false;
        };
        sessions.proxied.remove(&key);
        if let Some(broker) = self.broker() {
            broker.unsubscribe_identity(gateway_key, &session.filters);
        }
        self.sub_offline(session, reason);
        true
    }

    /// A sub-device session ended: offline, unless a newer session took its place.
    fn sub_offline(&self, session: SubSession, reason: &str) {
        let key = session.identity.key();
        let current = {
            let mut online = self.online.lock();
            let current = online.get(&key).is_some_and(|&(s, _)| s == session.serial);
            if current {
                online.remove(&key);
            }
            current
        };
        if current {
            let _ = self.lifecycle.send(Lifecycle {
                identity: session.identity,
                online: false,
                at: chrono::Utc::now(),
                ip: None,
                reason: Some(reason.to_owned()),
            });
        }
    }

    /// The gateway's connection ended: all its sub-devices go offline.
    pub(crate) fn gateway_gone(&self, sessions: &GatewaySessions) {
        for session in sessions.take_all() {
            self.sub_offline(session, "gateway offline");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        let d = |pk, dn| Some(Owner::Device(pk, dn));
        assert_eq!(owner("/sys/pk/dn/thing/event/property/post"), d("pk", "dn"));
        assert_eq!(owner("/shadow/update/pk/dn"), d("pk", "dn"));
        assert_eq!(owner("/ota/device/inform/pk/dn"), d("pk", "dn"));
        assert_eq!(owner("/ext/session/pk/dn/combine/login"), d("pk", "dn"));
        assert_eq!(owner("/ext/ntp/pk/dn/request"), d("pk", "dn"));
        assert_eq!(
            owner("/ext/rrpc/12/sys/pk/dn/thing/service/x"),
            d("pk", "dn")
        );
        assert_eq!(owner("/ext/rrpc/12/pk/dn/user/get"), d("pk", "dn"));
        assert_eq!(owner("/pk/dn/user/update"), d("pk", "dn"));
        assert_eq!(owner("/broadcast/pk/x"), Some(Owner::Product("pk")));
        assert_eq!(owner("/sys/pk"), None);
        assert_eq!(owner("other/topic"), None);
    }

    fn session(pk: &str, dn: &str, serial: u64) -> SubSession {
        SubSession {
            identity: DeviceIdentity::new(pk, dn).expect("identity"),
            permissions: DevicePermissions::new(pk, dn, &[]).expect("permissions"),
            serial,
            filters: Vec::new(),
        }
    }

    #[test]
    fn permissions_follow_sessions_and_topology() {
        let g = GatewaySessions::new(["a1SubPK0001/sub01".to_owned()].into_iter().collect());
        let post = "/sys/a1SubPK0001/sub01/thing/event/property/post";
        // In the topology without a session: authorized, to be answered on /ext/error.
        assert!(g.can_publish(post));
        assert!(!g.can_subscribe("/sys/a1SubPK0001/sub01/thing/service/+"));
        // Not in the topology: refused.
        assert!(!g.can_publish("/sys/a1SubPK0001/other1/thing/event/property/post"));
        g.sessions.write().insert(
            "a1SubPK0001/sub01".to_owned(),
            session("a1SubPK0001", "sub01", 1),
        );
        assert!(g.can_publish(post));
        assert!(!g.can_publish("/shadow/get/a1SubPK0001/sub01"));
        assert!(g.can_subscribe("/sys/a1SubPK0001/sub01/thing/service/+"));
        assert!(g.can_subscribe("/broadcast/a1SubPK0001/#"));
        assert!(!g.can_subscribe("/broadcast/a1OtherPK01/#"));
        assert!(!g.can_subscribe("/sys/a1SubPK0001/+/thing/service/+"));
        assert_eq!(g.take_all().len(), 1);
        assert!(!g.can_subscribe("/sys/a1SubPK0001/sub01/thing/service/+"));
    }
}
