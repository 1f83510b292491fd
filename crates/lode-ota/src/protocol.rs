//! The device side of OTA: the broker hook for OTA uplinks, the status listener, and the
//! downlink payloads (protocol section 7.4).
//!
//! Uplinks taken (only from a publisher that speaks for the `{pk}/{dn}` of the topic):
//! `/ota/device/inform/{pk}/{dn}` `{"id":1,"params":{"version":"1.0.0"[,"module":"mcu"]}}`,
//! `/ota/device/progress/{pk}/{dn}` `{"id":1,"params":{"step":"-4…100","desc":"..","module":".."}}`
//! and `/sys/{pk}/{dn}/thing/ota/firmware/get` `{"id":1,"params":{["module":"mcu"]}}`,
//! answered on `…/get_reply` with `{"id","code":200,"data":{…upgrade…}|{},"message":"success","version":"1.0"}`.
//! The push on `/ota/device/upgrade/{pk}/{dn}` is
//! `{"code":"1000","data":{"size","version","isDiff":0,"url","md5","sign","signMethod","module"[,"digestsign"]},"id":n,"message":"success"}`
//! with `sign` the lowercase hex digest named by `signMethod` (`Md5` or `SHA256`).

use bytes::Bytes;
use lode_broker::{Intercept, MessageHook, NotAccepted, Uplink};
use lode_device::StatusListener;
use lode_registry::FirmwareRecord;
use serde_json::{Value, json};

use crate::{Ota, SignMethod};

/// Which OTA uplink a topic is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OtaTopic<'a> {
    Inform(&'a str, &'a str),
    Progress(&'a str, &'a str),
    FirmwareGet(&'a str, &'a str),
}

pub(crate) fn classify(topic: &str) -> Option<OtaTopic<'_>> {
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        ["", "ota", "device", "inform", pk, dn] => Some(OtaTopic::Inform(pk, dn)),
        ["", "ota", "device", "progress", pk, dn] => Some(OtaTopic::Progress(pk, dn)),
        ["", "sys", pk, dn, "thing", "ota", "firmware", "get"] => {
            Some(OtaTopic::FirmwareGet(pk, dn))
        }
        _ => None,
    }
    .filter(|t| {
        let (OtaTopic::Inform(pk, dn) | OtaTopic::Progress(pk, dn) | OtaTopic::FirmwareGet(pk, dn)) =
            t;
        !pk.is_empty() && !dn.is_empty()
    })
}

/// The `data` of a push or a firmware/get reply.
pub(crate) fn upgrade_data(firmware: &FirmwareRecord, url: &str, method: SignMethod) -> Value {
    let sign = match method {
        SignMethod::Md5 => &firmware.md5,
        SignMethod::Sha256 => &firmware.sha256,
    };
    let mut data = json!({
        "size": firmware.size,
        "version": firmware.version,
        "isDiff": 0,
        "url": url,
        "md5": firmware.md5,
        "sign": sign.to_ascii_lowercase(),
        "signMethod": method.as_str(),
        "module": firmware.module,
    });
    if let (Some(sig), Some(obj)) = (&firmware.signature, data.as_object_mut()) {
        obj.insert("digestsign".into(), Value::String(sig.clone()));
    }
    data
}

/// The push on `/ota/device/upgrade/{pk}/{dn}`.
pub(crate) fn upgrade_message(id: u64, data: &Value) -> Bytes {
    let body = json!({"code": "1000", "data": data, "id": id, "message": "success"});
    Bytes::from(body.to_string())
}

/// A string or number as text (devices send `"step":"50"` or `50`).
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The broker hook for OTA uplinks.
pub(crate) struct Hook(pub(crate) Ota);

impl MessageHook for Hook {
    fn on_publish(&self, uplink: Uplink<'_>) -> Intercept {
        let Some(kind) = classify(uplink.topic) else {
            return Intercept::Route;
        };
        let (OtaTopic::Inform(pk, dn) | OtaTopic::Progress(pk, dn) | OtaTopic::FirmwareGet(pk, dn)) =
            kind;
        if !uplink.principal.speaks_for(&format!("{pk}/{dn}")) {
            return Intercept::Route;
        }
        let ota = self.0.clone();
        let (pk, dn) = (pk.to_owned(), dn.to_owned());
        let payload: Option<Value> = serde_json::from_slice(uplink.payload).ok();
        let Some(payload) = payload else {
            tracing::debug!(topic = uplink.topic, "OTA uplink is not JSON; ignored");
            return Intercept::Take(Box::pin(async { Ok(()) }));
        };
        let params = payload.get("params").cloned().unwrap_or(Value::Null);
        let module = text(params.get("module")).filter(|m| !m.is_empty());
        match kind {
            OtaTopic::Inform(..) => {
                let Some(version) = text(params.get("version")).filter(|v| !v.is_empty()) else {
                    return Intercept::Take(Box::pin(async { Ok(()) }));
                };
                let module = module.unwrap_or_else(|| "default".to_owned());
                Intercept::Take(Box::pin(async move {
                    ota.version_reported(&pk, &dn, &module, &version)
                        .await
                        .map_err(|e| NotAccepted(e.to_string()))
                }))
            }
            OtaTopic::Progress(..) => {
                let step = text(params.get("step")).and_then(|s| s.trim().parse::<i32>().ok());
                let desc = text(params.get("desc"));
                Intercept::Take(Box::pin(async move {
                    if let Some(step) = step {
                        ota.progress(&pk, &dn, module.as_deref(), step, desc).await;
                    }
                    Ok(())
                }))
            }
            OtaTopic::FirmwareGet(..) => {
                let id = payload.get("id").cloned().unwrap_or(Value::Null);
                Intercept::Take(Box::pin(async move {
                    let data = match ota.pending_for(&pk, &dn, module.as_deref()).await {
                        Some((firmware, method)) => {
                            upgrade_data(&firmware, &ota.download_url(&firmware.id), method)
                        }
                        None => json!({}),
                    };
                    let reply = json!({
                        "id": id, "code": 200, "data": data,
                        "message": "success", "version": "1.0",
                    });
                    if let Some(broker) = ota.broker() {
                        let topic = format!("/sys/{pk}/{dn}/thing/ota/firmware/get_reply");
                        if let Err(error) = broker
                            .publish(
                                &topic,
                                Bytes::from(reply.to_string()),
                                lode_mqtt::QoS::AtMostOnce,
                                false,
                            )
                            .await
                        {
                            tracing::warn!(%error, "OTA firmware/get reply failed");
                        }
                    }
                    Ok(())
                }))
            }
        }
    }
}

/// Hears devices coming online.
pub(crate) struct Status(pub(crate) Ota);

impl StatusListener for Status {
    fn on_status(&self, product_key: &str, device_name: &str, online: bool) {
        if !online {
            return;
        }
        let ota = self.0.clone();
        let (pk, dn) = (product_key.to_owned(), device_name.to_owned());
        tokio::spawn(async move { ota.device_online(&pk, &dn).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(
            classify("/ota/device/inform/p/d"),
            Some(OtaTopic::Inform("p", "d"))
        );
        assert_eq!(
            classify("/ota/device/progress/p/d"),
            Some(OtaTopic::Progress("p", "d"))
        );
        assert_eq!(
            classify("/sys/p/d/thing/ota/firmware/get"),
            Some(OtaTopic::FirmwareGet("p", "d"))
        );
        assert_eq!(classify("/sys/p/d/thing/ota/firmware/get_reply"), None);
        assert_eq!(classify("/ota/device/upgrade/p/d"), None);
        assert_eq!(classify("/ota/device/inform/p"), None);
        assert_eq!(classify("/ota/device/inform//d"), None);
    }

    #[test]
    fn push_payload() {
        let f = FirmwareRecord {
            id: "f1".into(),
            account_id: "a".into(),
            product_key: "p".into(),
            module: "default".into(),
            version: "2.0.0".into(),
            size: 10,
            md5: "AB".repeat(16),
            sha256: "cd".repeat(32),
            signature: None,
            sign_method: None,
            description: None,
            created_at: chrono::Utc::now(),
        };
        let v: Value = serde_json::from_slice(&upgrade_message(
            7,
            &upgrade_data(&f, "http://h/x", SignMethod::Md5),
        ))
        .unwrap();
        assert_eq!(v["code"], "1000");
        assert_eq!(v["id"], 7);
        assert_eq!(v["message"], "success");
        assert_eq!(v["data"]["size"], 10);
        assert_eq!(v["data"]["url"], "http://h/x");
        assert_eq!(v["data"]["sign"], "ab".repeat(16));
        assert_eq!(v["data"]["signMethod"], "Md5");
        assert_eq!(v["data"]["module"], "default");
        assert!(v["data"].get("digestsign").is_none());
        let v = upgrade_data(&f, "u", SignMethod::Sha256);
        assert_eq!(v["sign"], "cd".repeat(32));
        assert_eq!(v["signMethod"], "SHA256");
    }
}
