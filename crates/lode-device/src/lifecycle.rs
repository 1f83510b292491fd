//! Lifecycle messages: when a device is created (through the management API or by dynamic
//! registration), deleted, enabled or disabled, the platform publishes `/{pk}/{dn}/thing/lifecycle` in the reference platform's format,
//! `{"action": "create" | "delete" | "enable" | "disable", "iotId", "productKey",
//! "deviceName", "deviceSecret" (create only), "messageCreateTime"}`. The rules engine
//! reads it as its lifecycle source and streams it to applications as
//! `$lode/{pk}/{dn}/lifecycle`. Devices cannot subscribe to it (it is no topic category
//! of theirs).

use bytes::Bytes;
use lode_broker::Broker;
use lode_mqtt::QoS;
use lode_registry::Device;
use serde_json::json;

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Delete,
    Enable,
    Disable,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Delete => "delete",
            Action::Enable => "enable",
            Action::Disable => "disable",
        }
    }
}

/// The lifecycle message of `device`.
pub fn message(action: Action, device: &Device, at_ms: i64) -> (String, Bytes) {
    let mut body = json!({
        "action": action.as_str(),
        "iotId": device.iot_id,
        "productKey": device.product_key,
        "deviceName": device.device_name,
        "messageCreateTime": at_ms,
    });
    if action == Action::Create {
        body["deviceSecret"] = json!(device.device_secret);
    }
    let topic = format!(
        "/{}/{}/thing/lifecycle",
        device.product_key, device.device_name
    );
    (topic, Bytes::from(body.to_string()))
}

/// Publishes the lifecycle message of `device`; a failure is logged, the change it
/// reports has already happened.
pub async fn announce(broker: &Broker, action: Action, device: &Device) {
    let (topic, payload) = message(action, device, chrono::Utc::now().timestamp_millis());
    if let Err(error) = broker
        .publish(&topic, payload, QoS::AtLeastOnce, false)
        .await
    {
        tracing::warn!(%error, topic, "lifecycle message not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device {
            iot_id: "id1".into(),
            product_key: "a1B".into(),
            device_name: "d1".into(),
            device_secret: "s3cret".into(),
            nickname: None,
            state: lode_registry::DeviceState::Inactive,
            activated_at: None,
            last_online_at: None,
            last_offline_at: None,
            last_ip: None,
            firmware_version: None,
            tags: Default::default(),
            dynamically_registered: false,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn create_carries_the_secret_and_the_others_do_not() {
        let (topic, payload) = message(Action::Create, &device(), 42);
        assert_eq!(topic, "/a1B/d1/thing/lifecycle");
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            v,
            json!({"action": "create", "iotId": "id1", "productKey": "a1B",
                "deviceName": "d1", "deviceSecret": "s3cret", "messageCreateTime": 42})
        );
        for (action, name) in [
            (Action::Delete, "delete"),
            (Action::Enable, "enable"),
            (Action::Disable, "disable"),
        ] {
            let (_, payload) = message(action, &device(), 1);
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(v["action"], name);
            assert!(v.get("deviceSecret").is_none());
        }
    }
}
