//! The broker hook of remote configuration: `thing/config/get` and `thing/config/push_reply`
//! of a device's own topics are taken by the platform, never routed.

use lode_broker::{Intercept, MessageHook, Uplink};
use serde_json::Value;

use crate::DevConfig;

/// Answer code of `get_reply` when the product has no configuration (our choice: the
/// reference's code for this case is not documented).
pub(crate) const CODE_NO_CONFIG: i64 = 404;
/// Answer code of `get_reply` when the platform failed.
pub(crate) const CODE_SERVER_ERROR: i64 = 500;

/// What a configuration uplink is.
#[derive(Debug, PartialEq, Eq)]
enum ConfigUplink<'a> {
    Get {
        product_key: &'a str,
        device_name: &'a str,
    },
    PushReply {
        product_key: &'a str,
        device_name: &'a str,
    },
}

fn classify(topic: &str) -> Option<ConfigUplink<'_>> {
    let rest = topic.strip_prefix("/sys/")?;
    let (product_key, rest) = rest.split_once('/')?;
    let (device_name, path) = rest.split_once('/')?;
    if product_key.is_empty() || device_name.is_empty() {
        return None;
    }
    match path {
        "thing/config/get" => Some(ConfigUplink::Get {
            product_key,
            device_name,
        }),
        "thing/config/push_reply" => Some(ConfigUplink::PushReply {
            product_key,
            device_name,
        }),
        _ => None,
    }
}

/// The request id of an Alink message (`"id"`: a string of digits, or a number), and the
/// answer code of a reply.
fn id_and_code(payload: &[u8]) -> (Value, Option<i64>) {
    match serde_json::from_slice::<Value>(payload) {
        Ok(v) => {
            let id = v.get("id").cloned().unwrap_or(Value::Null);
            let code = v.get("code").and_then(|c| match c {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            });
            (id, code)
        }
        Err(_) => (Value::Null, None),
    }
}

fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Takes configuration uplinks of a device's own identity.
pub(crate) struct ConfigHook(pub(crate) DevConfig);

impl MessageHook for ConfigHook {
    fn on_publish(&self, uplink: Uplink<'_>) -> Intercept {
        let Some(kind) = classify(uplink.topic) else {
            return Intercept::Route;
        };
        let (ConfigUplink::Get {
            product_key,
            device_name,
        }
        | ConfigUplink::PushReply {
            product_key,
            device_name,
        }) = kind;
        let identity = lode_alink::identity_key(product_key, device_name);
        if !uplink.principal.speaks_for(&identity) {
            return Intercept::Route;
        }
        let (id, code) = id_and_code(uplink.payload);
        match kind {
            ConfigUplink::Get { .. } => {
                let runtime = self.0.clone();
                let (pk, dn) = (product_key.to_owned(), device_name.to_owned());
                // Answered after the acknowledgement: the reply does not hold the device.
                tokio::spawn(async move { runtime.answer_get(&pk, &dn, id).await });
            }
            ConfigUplink::PushReply { .. } => match id_text(&id) {
                Some(id) => self.0.acknowledge(&identity, &id, code.unwrap_or(200)),
                None => tracing::debug!(%identity, "configuration push_reply without an id"),
            },
        }
        Intercept::Take(Box::pin(async { Ok(()) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_topics() {
        assert_eq!(
            classify("/sys/pk/dn/thing/config/get"),
            Some(ConfigUplink::Get {
                product_key: "pk",
                device_name: "dn"
            })
        );
        assert_eq!(
            classify("/sys/pk/dn/thing/config/push_reply"),
            Some(ConfigUplink::PushReply {
                product_key: "pk",
                device_name: "dn"
            })
        );
        for t in [
            "/sys/pk/dn/thing/config/get_reply",
            "/sys/pk/dn/thing/config/push",
            "/sys/pk//thing/config/get",
            "/pk/dn/user/thing/config/get",
            "/sys/pk/dn/thing/event/property/post",
        ] {
            assert_eq!(classify(t), None, "{t}");
        }
    }

    #[test]
    fn ids_and_codes() {
        assert_eq!(
            id_and_code(br#"{"id":"12","code":200,"data":{}}"#),
            (Value::from("12"), Some(200))
        );
        assert_eq!(id_and_code(br#"{"id":7}"#), (Value::from(7), None));
        assert_eq!(id_and_code(b"not json"), (Value::Null, None));
        assert_eq!(id_text(&Value::from(7)), Some("7".to_owned()));
        assert_eq!(id_text(&Value::Null), None);
    }
}
