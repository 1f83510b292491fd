//! The thing model end to end: a real broker with device sign-in on a loopback port, the
//! runtime attached to it, and devices speaking Alink through the Rust device SDK.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lode_device::{DeviceAuth, DeviceAuthConfig};
use lode_history::{CallStatus, DeviceKey, EmbeddedHistory, HistoryConfig, Order, Query};
use lode_registry::{DataFormat, NewDevice, NewProduct, RegistryStore};
use lode_script::{EngineConfig, ScriptEngine};
use lode_sdk::{Credential, Device, DeviceConfig, Handlers, Response, Via};
use lode_testkit::{TestRegistry, device_broker, serve_tcp};
use lode_thing::{
    DeviceSession, Invocation, Presence, ScriptDirection, ThingConfig, ThingEngine, ThingError,
};
use serde_json::{Value, json};

const TSL: &str = r#"{
  "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
  "profile": {"productKey": "x"},
  "properties": [
    {"identifier": "Temp", "name": "Temperature", "accessMode": "r", "required": false,
     "dataType": {"type": "float", "specs": {"min": "-40", "max": "80", "step": "0.1", "unit": "°C"}}},
    {"identifier": "Switch", "name": "Switch", "accessMode": "rw", "required": false,
     "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}},
    {"identifier": "Label", "name": "Label", "accessMode": "rw", "required": false,
     "dataType": {"type": "text", "specs": {"length": "8"}}}
  ],
  "events": [
    {"identifier": "Alarm", "name": "Alarm", "type": "alert", "required": false,
     "method": "thing.event.Alarm.post",
     "outputData": [{"identifier": "Level", "name": "Level",
                     "dataType": {"type": "int", "specs": {"min": "1", "max": "5", "step": "1"}}}]}
  ],
  "services": [
    {"identifier": "Echo", "name": "Echo", "required": false, "callType": "sync",
     "method": "thing.service.Echo",
     "inputData": [{"identifier": "Msg", "name": "Msg", "dataType": {"type": "text", "specs": {"length": "64"}}}],
     "outputData": [{"identifier": "Msg", "name": "Msg", "dataType": {"type": "text", "specs": {"length": "64"}}}]},
    {"identifier": "Reboot", "name": "Reboot", "required": false, "callType": "async",
     "method": "thing.service.Reboot",
     "inputData": [{"identifier": "Delay", "name": "Delay", "dataType": {"type": "int", "specs": {"min": "0", "max": "60", "step": "1"}}}],
     "outputData": [{"identifier": "Ok", "name": "Ok", "dataType": {"type": "bool", "specs": {"0": "no", "1": "yes"}}}]}
  ]
}"#;

/// Classic reference-platform style script: byte 0 is the command (0x00 property post,
/// 0x01 reply), then an id, then Temp x10 as a big-endian i16.
const SCRIPT: &str = r#"
function rawDataToProtocol(bytes) {
    var u = new Uint8Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) { u[i] = bytes[i] & 0xff; }
    var cmd = u[0];
    var id = String(u[1]);
    if (cmd === 0x00) {
        var t = ((u[2] << 8) | u[3]);
        if (t & 0x8000) { t = t - 0x10000; }
        return {method: "thing.event.property.post", id: id, version: "1.0",
                params: {Temp: t / 10, Switch: u[4]}};
    }
    if (cmd === 0x01) {
        return {id: id, code: u[2] === 0 ? 200 : 400, data: {}};
    }
    throw new Error("unknown command " + cmd);
}
function protocolToRawData(json) {
    if (json.method === "thing.service.property.set") {
        return [0x02, Number(json.id) % 256, json.params.Switch];
    }
    // A reply to the device: 0x03, id, 1 on success.
    return [0x03, Number(json.id) % 256, json.code === 200 ? 1 : 0];
}
"#;

struct Online(Arc<DeviceAuth>);

impl Presence for Online {
    fn session(&self, pk: &str, dn: &str) -> Option<DeviceSession> {
        self.0
            .online(pk, dn)
            .map(|ext_rrpc| DeviceSession { ext_rrpc })
    }
}

struct Platform {
    addr: SocketAddr,
    registry: Arc<dyn RegistryStore>,
    engine: ThingEngine,
    account: String,
    _dir: tempfile::TempDir,
}

impl Platform {
    async fn start() -> Platform {
        let TestRegistry {
            registry,
            account,
            dir,
        } = TestRegistry::new().await;
        let (broker, auth) = device_broker(&registry, DeviceAuthConfig::default()).await;
        let history = EmbeddedHistory::open(dir.path().join("history"), &HistoryConfig::default())
            .expect("history");
        let scripts = ScriptEngine::new(EngineConfig::default()).expect("scripts");
        let engine = ThingEngine::start(
            registry.clone(),
            Arc::new(history),
            scripts,
            ThingConfig {
                sync_call_timeout: Duration::from_secs(2),
                ..ThingConfig::default()
            },
        );
        engine.attach(broker.clone(), Arc::new(Online(auth)));
        let addr = serve_tcp(broker).await;
        Platform {
            addr,
            registry,
            engine,
            account,
            _dir: dir,
        }
    }

    /// A product with `TSL` published, and one device; returns (pk, dn, secret).
    async fn product(&self, format: DataFormat) -> (String, String, String) {
        let mut new = NewProduct::new("lamp");
        new.data_format = format;
        let pk = self
            .registry
            .create_product(&self.account, new)
            .await
            .expect("product")
            .product_key;
        let tsl: Value = serde_json::from_str(TSL).expect("TSL JSON");
        self.engine
            .save_tsl_draft(&pk, &tsl)
            .await
            .expect("valid TSL");
        self.engine.publish_tsl(&pk).await.expect("published");
        let d = self
            .registry
            .create_device(&pk, NewDevice::new("dev1"))
            .await
            .expect("device");
        (pk, d.device_name, d.device_secret)
    }

    fn config(&self, pk: &str, dn: &str, secret: &str) -> DeviceConfig {
        DeviceConfig::new(
            self.addr.ip().to_string(),
            self.addr.port(),
            pk,
            dn,
            Credential::DeviceSecret(secret.to_owned()),
        )
    }
}

fn all_time(pk: &str, dn: &str) -> Query {
    let mut q = Query::new(DeviceKey::new(pk, dn), 0, i64::MAX);
    q.order = Order::OldestFirst;
    q
}

/// Waits until the sign-in layer reports the device online (the connect notice is async).
async fn online(p: &Platform, pk: &str, dn: &str) {
    for _ in 0..200 {
        match p
            .engine
            .set_properties(pk, dn, json!({"NoSuchProperty": 1}))
            .await
        {
            Err(ThingError::DeviceOffline(_)) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            _ => return,
        }
    }
    panic!("device never came online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_posts_are_validated_stored_and_answered() {
    let p = Platform::start().await;
    let (pk, dn, ds) = p.product(DataFormat::AlinkJson).await;
    let (device, _events) = Device::connect(p.config(&pk, &dn, &ds))
        .await
        .expect("signed in");

    let reply = device
        .post_properties(json!({"Temp": 21.5, "Switch": 1}))
        .await
        .expect("reply");
    assert_eq!(reply.code, 200, "{reply:?}");

    // One valid, three refused: the valid one is kept, the reply names the others.
    let reply = device
        .post_properties(json!({
            "Temp": {"value": 22.5, "time": 1_700_000_000_000i64},
            "Switch": 7,
            "Label": "far too long",
            "Nope": 1
        }))
        .await
        .expect("reply");
    assert_ne!(reply.code, 200);
    let dropped: Vec<&str> = reply.data["dropped"]
        .as_array()
        .expect("dropped list")
        .iter()
        .filter_map(|d| d["identifier"].as_str())
        .collect();
    assert_eq!(dropped.len(), 3, "{reply:?}");
    for id in ["Switch", "Label", "Nope"] {
        assert!(dropped.contains(&id), "{id} in {dropped:?}");
    }
    assert_eq!(reply.data["stored"], 1);

    let latest = p
        .engine
        .store()
        .latest(&DeviceKey::new(&pk, &dn))
        .await
        .expect("latest");
    let latest: HashMap<_, _> = latest
        .into_iter()
        .map(|l| (l.identifier.clone(), l))
        .collect();
    // The older point (device time 2023) went to history only.
    assert_eq!(latest["Temp"].value, json!(21.5));
    assert_eq!(latest["Switch"].value, json!(1));
    assert!(!latest.contains_key("Label"));

    let mut q = all_time(&pk, &dn);
    q.identifier = Some("Temp".into());
    let history = p.engine.store().property_history(q).await.expect("history");
    let values: Vec<(Value, i64)> = history
        .items
        .iter()
        .map(|h| (h.value.clone(), h.device_time))
        .collect();
    assert_eq!(values.len(), 2);
    assert_eq!(values[0], (json!(22.5), 1_700_000_000_000));
    assert_eq!(values[1].0, json!(21.5));

    // Not JSON at all: 460, and the device log says where it failed.
    let raw = device
        .request(lode_sdk::Request::property_post(json!("not an object")))
        .await
        .expect("reply");
    assert_eq!(raw.code, 460);
    let log = p
        .engine
        .store()
        .device_log(all_time(&pk, &dn))
        .await
        .expect("log");
    assert!(
        log.items
            .iter()
            .any(|e| e.code == 460 && e.step.as_deref() == Some("tsl")),
        "{:?}",
        log.items
    );
    assert!(
        log.items
            .iter()
            .any(|e| e.topic.ends_with("property/post_reply")),
        "replies are logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_desired_values_tags_and_the_model_itself() {
    let p = Platform::start().await;
    let (pk, dn, ds) = p.product(DataFormat::AlinkJson).await;
    let (device, _events) = Device::connect(p.config(&pk, &dn, &ds))
        .await
        .expect("signed in");

    let reply = device
        .post_event(
            "Alarm",
            json!({"value": {"Level": 3}, "time": 1_750_000_000_000i64}),
        )
        .await
        .expect("reply");
    assert_eq!(reply.code, 200, "{reply:?}");
    let reply = device
        .post_event("Alarm", json!({"value": {"Level": 9}}))
        .await
        .expect("reply");
    assert_ne!(reply.code, 200, "out of range");
    let reply = device
        .post_event("Nope", json!({"value": {}}))
        .await
        .expect("reply");
    assert_ne!(reply.code, 200, "unknown event");

    let events = p
        .engine
        .store()
        .event_history(all_time(&pk, &dn), None)
        .await
        .expect("events");
    assert_eq!(events.items[0].identifier, "Alarm");
    assert_eq!(events.items[0].event_type, "alert");
    assert_eq!(events.items[0].output, json!({"Level": 3}));
    assert_eq!(events.items[0].device_time, 1_750_000_000_000);

    // Desired values set by the platform, read and cleared by the device.
    let versions = p
        .engine
        .set_desired(
            &pk,
            &dn,
            json!({"Switch": 1})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            &HashMap::new(),
        )
        .await
        .expect("desired");
    assert_eq!(versions, vec![("Switch".to_owned(), 1)]);
    let err = p
        .engine
        .set_desired(
            &pk,
            &dn,
            json!({"Temp": 5}).as_object().cloned().unwrap_or_default(),
            &HashMap::new(),
        )
        .await
        .expect_err("read-only property");
    assert_eq!(err.code(), "InvalidParameter");
    let reply = device.get_desired(["Switch"]).await.expect("reply");
    assert_eq!(reply.data, json!({"Switch": {"value": 1, "version": 1}}));
    let reply = device
        .delete_desired(json!({"Switch": {}}))
        .await
        .expect("reply");
    assert_eq!(reply.code, 200);
    let reply = device.get_desired(["Switch"]).await.expect("reply");
    assert_eq!(reply.data, json!({}));

    // Device tags.
    let reply = device
        .update_device_info([("room", "lab1")])
        .await
        .expect("reply");
    assert_eq!(reply.code, 200);
    let d = p
        .registry
        .get_device(&pk, &dn)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(d.tags.get("room").map(String::as_str), Some("lab1"));

    // The published model, as the device fetches it.
    let reply = device.get_tsl().await.expect("reply");
    assert_eq!(reply.code, 200);
    assert_eq!(reply.data["profile"]["productKey"], json!(pk));
    let ids: Vec<&str> = reply.data["properties"]
        .as_array()
        .expect("properties")
        .iter()
        .filter_map(|p| p["identifier"].as_str())
        .collect();
    assert_eq!(ids, vec!["Temp", "Switch", "Label"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_set_and_async_service_replies_finish_their_calls() {
    let p = Platform::start().await;
    let (pk, dn, ds) = p.product(DataFormat::AlinkJson).await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let handlers = Handlers::new()
        .property_set(move |call| {
            let seen = seen_tx.clone();
            async move {
                let _ = seen.send(call.params.clone());
                Response::ok(json!({}))
            }
        })
        .service("Reboot", |call| async move {
            assert!(matches!(call.via, Via::Async));
            Response::ok(json!({"Ok": 1}))
        });
    let (_device, _events) = Device::connect_with(p.config(&pk, &dn, &ds), handlers)
        .await
        .expect("signed in");
    online(&p, &pk, &dn).await;

    let err = p
        .engine
        .set_properties(&pk, &dn, json!({"Temp": 3}))
        .await
        .expect_err("read-only");
    assert_eq!(err.code(), "InvalidParameter");

    let id = p
        .engine
        .set_properties(&pk, &dn, json!({"Switch": 0}))
        .await
        .expect("sent");
    let params = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
        .await
        .expect("device got the set")
        .expect("open");
    assert_eq!(params, json!({"Switch": 0}));
    let call = wait_finished(&p, &pk, &dn, &id).await;
    assert_eq!(call.status, CallStatus::Succeeded);
    assert_eq!(call.identifier, "set");

    let Invocation::Async { id } = p
        .engine
        .invoke_service(&pk, &dn, "Reboot", json!({"Delay": 5}), None)
        .await
        .expect("sent")
    else {
        panic!("Reboot is async");
    };
    let call = wait_finished(&p, &pk, &dn, &id).await;
    assert_eq!(call.status, CallStatus::Succeeded);
    assert_eq!(call.output, Some(json!({"Ok": 1})));
    assert_eq!(call.input, json!({"Delay": 5}));
    assert!(call.duration_ms().is_some());

    let err = p
        .engine
        .invoke_service(&pk, &dn, "Reboot", json!({"Delay": 500}), None)
        .await
        .expect_err("out of range");
    assert_eq!(err.code(), "InvalidParameter");
    let err = p
        .engine
        .invoke_service(&pk, &dn, "Nope", json!({}), None)
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), "ServiceNotFound");
}

async fn wait_finished(p: &Platform, pk: &str, dn: &str, id: &str) -> lode_history::ServiceCall {
    for _ in 0..300 {
        let call = p
            .engine
            .store()
            .call(&DeviceKey::new(pk, dn), id)
            .await
            .expect("store")
            .expect("recorded");
        if call.status != CallStatus::Pending {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("call {id} never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_calls_over_ext_rrpc_and_legacy_rrpc_and_their_timeout() {
    let p = Platform::start().await;
    let (pk, dn, ds) = p.product(DataFormat::AlinkJson).await;
    for ext in [true, false] {
        let handlers = Handlers::new().service("Echo", move |call| async move {
            let expected_rrpc = matches!(call.via, Via::Rrpc { .. });
            if expected_rrpc != ext {
                return Response::error(400, format!("came via {:?}", call.via));
            }
            if call.params["Msg"] == json!("slow") {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Response::ok(call.params)
        });
        let mut config = p.config(&pk, &dn, &ds);
        config.ext_rrpc = ext;
        let (device, _events) = Device::connect_with(config, handlers)
            .await
            .expect("signed in");
        // The previous connection's notice may still be in flight.
        tokio::time::sleep(Duration::from_millis(200)).await;
        online(&p, &pk, &dn).await;

        let out = p
            .engine
            .invoke_service(&pk, &dn, "Echo", json!({"Msg": "hi"}), None)
            .await
            .expect("answered");
        let Invocation::Sync { id, code, data, .. } = out else {
            panic!("Echo is sync");
        };
        assert_eq!((code, data), (200, json!({"Msg": "hi"})), "ext={ext}");
        let call = wait_finished(&p, &pk, &dn, &id).await;
        assert_eq!(
            (call.status, call.call_type.as_str()),
            (CallStatus::Succeeded, "sync")
        );

        // Too slow: a timeout error; the late answer leaves the call timed out.
        let err = p
            .engine
            .invoke_service(
                &pk,
                &dn,
                "Echo",
                json!({"Msg": "slow"}),
                Some(Duration::from_secs(1)),
            )
            .await
            .expect_err("times out");
        assert_eq!(err.code(), "Timeout");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let calls = p
            .engine
            .store()
            .call_history(all_time(&pk, &dn))
            .await
            .expect("calls");
        let last = calls.items.last().expect("recorded");
        assert_eq!(last.status, CallStatus::TimedOut, "ext={ext}");
        drop(device);
    }

    let err = p
        .engine
        .invoke_service(&pk, "ghost", "Echo", json!({}), None)
        .await
        .expect_err("no such device");
    assert_eq!(err.code(), "DeviceNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_an_offline_device_fail_at_once() {
    let p = Platform::start().await;
    let (pk, dn, _) = p.product(DataFormat::AlinkJson).await;
    let err = p
        .engine
        .invoke_service(&pk, &dn, "Echo", json!({"Msg": "x"}), None)
        .await
        .expect_err("offline");
    assert_eq!(err.code(), "DeviceOffline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_format_goes_through_the_script_both_ways() {
    let p = Platform::start().await;
    let (pk, dn, ds) = p.product(DataFormat::Custom).await;
    p.engine
        .save_script_draft(&pk, SCRIPT)
        .await
        .expect("script accepted");

    // Debugging the draft before publishing.
    let up = p
        .engine
        .test_script(&pk, None, ScriptDirection::Up, &[0x00, 7, 0x00, 0xd7, 1])
        .await
        .expect("runs");
    assert_eq!(up["params"], json!({"Temp": 21.5, "Switch": 1}));
    let err = p
        .engine
        .test_script(
            &pk,
            Some("function rawDataToProtocol(b) {\n  return {;\n}".into()),
            ScriptDirection::Up,
            &[1],
        )
        .await
        .expect_err("syntax error");
    assert_eq!(err.code(), "ScriptError");
    assert!(err.to_string().contains('2'), "names the line: {err}");

    let (device, _events) = Device::connect(p.config(&pk, &dn, &ds))
        .await
        .expect("signed in");
    // Not yet published: the device is told the script is missing.
    let reply = device
        .post_raw(vec![0x00, 1, 0x00, 0xd7, 1])
        .await
        .expect("reply");
    assert!(
        String::from_utf8_lossy(&reply).contains("26001"),
        "{reply:?}"
    );

    p.engine.publish_script(&pk).await.expect("published");
    let reply = device
        .post_raw(vec![0x00, 9, 0xff, 0x38, 0])
        .await
        .expect("reply");
    assert_eq!(&reply[..], &[0x03, 9, 1], "reply made by protocolToRawData");
    let latest = p
        .engine
        .store()
        .latest(&DeviceKey::new(&pk, &dn))
        .await
        .expect("latest");
    let temp = latest
        .iter()
        .find(|l| l.identifier == "Temp")
        .expect("stored");
    assert_eq!(temp.value.as_f64(), Some(-20.0));

    // A script failure is answered with its code.
    let reply = device.post_raw(vec![0x09]).await.expect("reply");
    assert!(
        String::from_utf8_lossy(&reply).contains("26002"),
        "{reply:?}"
    );

    // Downlink: the property set becomes bytes on down_raw.
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel();
    device.on_raw(move |call| {
        let tx = raw_tx.clone();
        async move {
            let _ = tx.send(call.payload.to_vec());
            // The device answers in its own format: 0x01, id, status 0.
            bytes::Bytes::from(vec![0x01, call.payload[1], 0])
        }
    });
    online(&p, &pk, &dn).await;
    let id = p
        .engine
        .set_properties(&pk, &dn, json!({"Switch": 1}))
        .await
        .expect("sent");
    let raw = tokio::time::timeout(Duration::from_secs(5), raw_rx.recv())
        .await
        .expect("device got bytes")
        .expect("open");
    let id_byte = (id.parse::<u64>().expect("numeric id") % 256) as u8;
    assert_eq!(raw, vec![0x02, id_byte, 1]);
    // The reply names the request by its low byte only, so it cannot finish the call;
    // it is still taken and logged.
    let log = p
        .engine
        .store()
        .device_log(all_time(&pk, &dn))
        .await
        .expect("log");
    assert!(log.items.iter().any(|e| e.topic.ends_with("down_raw")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_posts_and_posts_without_reply() {
    let p = Platform::start().await;
    let (pk, dn, ds) = p.product(DataFormat::AlinkJson).await;
    let (device, _events) = Device::connect(p.config(&pk, &dn, &ds))
        .await
        .expect("signed in");

    let reply = device
        .post_properties_batch(json!({
            "properties": {
                "Temp": [{"value": 1.5, "time": 1_760_000_000_000i64},
                         {"value": 2.5, "time": 1_760_000_001_000i64},
                         {"value": 500.0, "time": 1_760_000_002_000i64}],
                "Switch": [{"value": 0, "time": 1_760_000_000_000i64}]
            },
            "events": {
                "Alarm": [{"value": {"Level": 2}, "time": 1_760_000_000_500i64}]
            }
        }))
        .await
        .expect("reply");
    assert_ne!(reply.code, 200, "one point was out of range");
    assert_eq!(reply.data["stored"], 3, "{reply:?}");
    let mut q = all_time(&pk, &dn);
    q.identifier = Some("Temp".into());
    let temps: Vec<Value> = p
        .engine
        .store()
        .property_history(q)
        .await
        .expect("history")
        .items
        .into_iter()
        .map(|h| h.value)
        .collect();
    assert_eq!(temps, vec![json!(1.5), json!(2.5)]);
    let events = p
        .engine
        .store()
        .event_history(all_time(&pk, &dn), Some("alert".into()))
        .await
        .expect("events");
    assert_eq!(events.items.len(), 1);

    // sys.ack = 0: stored, no reply.
    device
        .send(lode_sdk::Request::property_post(json!({"Switch": 1})))
        .await
        .expect("sent");
    for _ in 0..200 {
        let latest = p
            .engine
            .store()
            .latest(&DeviceKey::new(&pk, &dn))
            .await
            .expect("latest");
        if latest
            .iter()
            .any(|l| l.identifier == "Switch" && l.value == json!(1))
        {
            let log = p
                .engine
                .store()
                .device_log(all_time(&pk, &dn))
                .await
                .expect("log");
            let replies = log
                .items
                .iter()
                .filter(|e| e.topic.ends_with("property/post_reply"))
                .count();
            assert_eq!(replies, 0, "no reply for sys.ack=0");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the post without reply was not stored");
}
