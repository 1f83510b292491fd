//! Gateways and sub-devices end to end: a server on loopback, a gateway signed in over MQTT
//! (raw packets), its sub-devices' topology, sessions and traffic over its connection, and
//! the signed API.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lode_mqtt::{Packet, ProtocolVersion, PubResp, Publish, QoS};
use lode_server::client::ApiClient;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, call, device_connect, ok, start_signed};

const KEY_ID: &str = "LTAItestadmin0009";
const KEY_SECRET: &str = "test-admin-secret-gateways-0123456";
const V3: ProtocolVersion = ProtocolVersion::V311;

const TSL: &str = r#"{
  "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
  "profile": {"productKey": "any"},
  "properties": [
    {"identifier": "temperature", "name": "Temperature", "accessMode": "rw", "required": false,
     "dataType": {"type": "float", "specs": {"min": "-40", "max": "120", "step": "0.1"}}}
  ],
  "events": [],
  "services": []
}"#;

async fn start() -> (TestServer, ApiClient) {
    start_signed(KEY_ID, KEY_SECRET).await
}

/// A product of `node_type` with devices; their secrets in order.
async fn product(api: &ApiClient, node_type: &str, names: &[&str]) -> (String, Vec<String>) {
    let p = ok(call(
        api,
        "POST",
        "/api/v1/products",
        Some(json!({"name": format!("{node_type}product"), "nodeType": node_type})),
    )
    .await);
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    let mut secrets = Vec::new();
    for name in names {
        let d = ok(call(
            api,
            "POST",
            &format!("/api/v1/products/{pk}/devices"),
            Some(json!({"deviceName": name})),
        )
        .await);
        secrets.push(d["deviceSecret"].as_str().expect("secret").to_owned());
    }
    (pk, secrets)
}

async fn online(api: &ApiClient, pk: &str, dn: &str) -> bool {
    let s = ok(call(
        api,
        "GET",
        &format!("/api/v1/products/{pk}/devices/{dn}/status"),
        None,
    )
    .await);
    s["online"] == json!(true)
}

/// Waits until the registry says the device is `want` (online or not).
async fn wait_status(api: &ApiClient, pk: &str, dn: &str, want: bool) {
    for _ in 0..250 {
        if online(api, pk, dn).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{pk}/{dn} never became online={want}");
}

async fn latest_temperature(api: &ApiClient, pk: &str, dn: &str) -> Value {
    let latest = ok(call(
        api,
        "GET",
        &format!("/api/v1/products/{pk}/devices/{dn}/properties"),
        None,
    )
    .await);
    latest["items"][0]["value"].clone()
}

fn sign(secret: &str, content: &str) -> String {
    lode_alink::sign(lode_alink::SignMethod::HmacSha256, secret, content)
}

/// A `topo/add` item for a sub-device signed with `secret`.
fn topo_item(pk: &str, dn: &str, secret: &str) -> Value {
    let client_id = format!("{pk}.{dn}");
    let ts = "1795827151035";
    let content = format!("clientId{client_id}deviceName{dn}productKey{pk}timestamp{ts}");
    json!({"productKey": pk, "deviceName": dn, "clientId": client_id, "timestamp": ts,
           "signmethod": "hmacSha256", "sign": sign(secret, &content)})
}

/// A login item (as `combine/login` params or a `batch_login` list entry).
fn login_item(pk: &str, dn: &str, secret: &str) -> Value {
    let client_id = format!("{pk}.{dn}|lan=Python,_v=2.2.1,_ss=1|");
    let ts = "1795827151035";
    let content = format!("clientId{client_id}deviceName{dn}productKey{pk}timestamp{ts}");
    json!({"productKey": pk, "deviceName": dn, "clientId": client_id, "timestamp": ts,
           "signMethod": "hmacSha256", "cleanSession": "true", "sign": sign(secret, &content)})
}

fn request(id: u32, params: Value) -> String {
    json!({"id": id.to_string(), "version": "1.0", "params": params}).to_string()
}

/// A device's MQTT 3.1.1 connection with `_ss=1`.
struct Device {
    tcp: TcpStream,
    buf: BytesMut,
    next_id: u16,
}

impl Device {
    /// Connects; the CONNACK's code.
    async fn try_connect(
        server: &TestServer,
        pk: &str,
        dn: &str,
        secret: &str,
    ) -> (Device, lode_mqtt::ReasonCode) {
        let mut d = Device {
            tcp: TcpStream::connect(server.mqtt).await.expect("tcp"),
            buf: BytesMut::new(),
            next_id: 1,
        };
        d.send(device_connect(pk, dn, secret)).await;
        match d.recv().await {
            Some(Packet::ConnAck(ack)) => (d, ack.code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn connect(server: &TestServer, pk: &str, dn: &str, secret: &str) -> Device {
        let (d, code) = Device::try_connect(server, pk, dn, secret).await;
        assert_eq!(code, lode_mqtt::ReasonCode::Success);
        d
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        lode_mqtt::encode(&packet, V3, &mut out);
        self.tcp.write_all(&out).await.expect("write");
    }

    async fn recv_within(&mut self, within: Duration) -> Option<Packet> {
        tokio::time::timeout(within, async {
            loop {
                if let Some(d) = lode_mqtt::decode(&mut self.buf, V3, u32::MAX).expect("valid") {
                    return d.packet;
                }
                let n = self.tcp.read_buf(&mut self.buf).await.expect("read");
                assert!(n > 0, "connection closed");
            }
        })
        .await
        .ok()
    }

    async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(Duration::from_secs(10)).await
    }

    async fn publish(&mut self, topic: &str, payload: impl Into<Bytes>) {
        let id = self.next_id;
        self.next_id += 1;
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            packet_id: Some(id),
            payload: payload.into(),
            properties: Default::default(),
        }))
        .await;
    }

    /// The next PUBLISH on exactly `topic` (others are skipped), acknowledged, as JSON.
    async fn expect(&mut self, topic: &str) -> Value {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => {
                    if let Some(id) = p.packet_id {
                        self.send(Packet::PubAck(PubResp::new(
                            id,
                            lode_mqtt::ReasonCode::Success,
                        )))
                        .await;
                    }
                    if p.topic.as_ref() == topic.as_bytes() {
                        return serde_json::from_slice(&p.payload).expect("JSON");
                    }
                }
                Some(_) => {}
                None => panic!("nothing on {topic}"),
            }
        }
    }

    /// Asserts no PUBLISH arrives for a while (acknowledgements are fine).
    async fn expect_no_publish(&mut self) {
        while let Some(p) = self.recv_within(Duration::from_millis(500)).await {
            if let Packet::Publish(p) = p {
                panic!(
                    "unexpected publish on {}",
                    String::from_utf8_lossy(&p.topic)
                );
            }
        }
    }

    /// Sends a request on `topic` and returns its `_reply`.
    async fn ask(&mut self, topic: &str, id: u32, params: Value) -> Value {
        self.publish(topic, request(id, params)).await;
        let reply = self.expect(&format!("{topic}_reply")).await;
        assert_eq!(reply["id"], json!(id.to_string()), "{reply}");
        reply
    }

    async fn close(mut self) {
        self.send(Packet::Disconnect(Default::default())).await;
        let _ = self.tcp.shutdown().await;
    }
}

#[tokio::test]
async fn sub_devices_live_through_their_gateway() {
    let (server, api) = start().await;
    let (gpk, gsecrets) = product(&api, "Gateway", &["gate0001"]).await;
    let (spk, ssecrets) = product(&api, "SubDevice", &["sens0001", "sens0002", "sens0003"]).await;
    ok(call(
        &api,
        "PUT",
        &format!("/api/v1/products/{spk}/thing-model"),
        Some(serde_json::from_str(TSL).expect("TSL")),
    )
    .await);
    ok(call(
        &api,
        "POST",
        &format!("/api/v1/products/{spk}/thing-model/publish"),
        None,
    )
    .await);
    let gw = "gate0001";
    let s = |dn: &str| format!("/sys/{spk}/{dn}");
    let g = format!("/sys/{gpk}/{gw}");
    let session = format!("/ext/session/{gpk}/{gw}");

    // A sub-device never connects by itself.
    let (_, code) = Device::try_connect(&server, &spk, "sens0001", &ssecrets[0]).await;
    assert_eq!(code, lode_mqtt::ReasonCode::NotAuthorized);

    let mut gate = Device::connect(&server, &gpk, gw, &gsecrets[0]).await;

    // topo/add: a wrong signature is refused and adds nothing.
    let reply = gate
        .ask(
            &format!("{g}/thing/topo/add"),
            1,
            json!([topo_item(&spk, "sens0001", &ssecrets[1])]),
        )
        .await;
    assert_eq!(reply["code"], 460, "{reply}");
    let topo = ok(call(
        &api,
        "GET",
        &format!("/api/v1/products/{gpk}/devices/{gw}/topology"),
        None,
    )
    .await);
    assert_eq!(topo["items"], json!([]));
    // Good signatures: both join.
    let reply = gate
        .ask(
            &format!("{g}/thing/topo/add"),
            2,
            json!([
                topo_item(&spk, "sens0001", &ssecrets[0]),
                topo_item(&spk, "sens0002", &ssecrets[1])
            ]),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["data"].as_array().map(Vec::len), Some(2));
    let reply = gate.ask(&format!("{g}/thing/topo/get"), 3, json!({})).await;
    assert_eq!(reply["data"][1]["deviceName"], "sens0002");
    let of = ok(call(
        &api,
        "GET",
        &format!("/api/v1/products/{spk}/devices/sens0001/gateway"),
        None,
    )
    .await);
    assert_eq!(of["gatewayDeviceName"], gw);

    // A sub-device message before its login: /ext/error, code 520, nothing stored.
    let post = |id: u32, t: f64| {
        json!({"id": id.to_string(), "version": "1.0", "params": {"temperature": t},
               "method": "thing.event.property.post"})
        .to_string()
    };
    gate.publish(
        &format!("{}/thing/event/property/post", s("sens0001")),
        post(4, 20.5),
    )
    .await;
    let error = gate.expect(&format!("/ext/error/{gpk}/{gw}")).await;
    assert_eq!(error["code"], 520, "{error}");
    assert_eq!(error["id"], "4");
    assert_eq!(
        latest_temperature(&api, &spk, "sens0001").await,
        Value::Null
    );

    // A device outside the topology: refused, no answer, nothing stored.
    gate.publish(
        &format!("{}/thing/event/property/post", s("sens0003")),
        post(5, 21.0),
    )
    .await;
    gate.expect_no_publish().await;
    assert_eq!(
        latest_temperature(&api, &spk, "sens0003").await,
        Value::Null
    );

    // Login with a wrong signature: refused, still offline.
    let reply = gate
        .ask(
            &format!("{session}/combine/login"),
            6,
            login_item(&spk, "sens0001", &ssecrets[1]),
        )
        .await;
    assert_eq!(reply["code"], 460, "{reply}");
    assert!(!online(&api, &spk, "sens0001").await);
    // A good login: online, its post is stored under it and answered on its own topic.
    let reply = gate
        .ask(
            &format!("{session}/combine/login"),
            7,
            login_item(&spk, "sens0001", &ssecrets[0]),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    wait_status(&api, &spk, "sens0001", true).await;
    let post_topic = format!("{}/thing/event/property/post", s("sens0001"));
    let reply = gate.ask(&post_topic, 8, json!({"temperature": 22.5})).await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(
        latest_temperature(&api, &spk, "sens0001").await,
        json!(22.5)
    );

    // A property set from the API reaches the gateway's connection.
    ok(call(
        &api,
        "POST",
        &format!("/api/v1/products/{spk}/devices/sens0001/properties/set"),
        Some(json!({"items": {"temperature": 30.0}})),
    )
    .await);
    let set = gate
        .expect(&format!("{}/thing/service/property/set", s("sens0001")))
        .await;
    assert_eq!(set["params"]["temperature"], 30.0);

    // Its shadow, over the gateway's connection: reported, then set from the API and pushed.
    gate.publish(
        &format!("/shadow/update/{spk}/sens0001"),
        json!({"method": "update", "state": {"reported": {"mode": "eco"}}, "version": 1})
            .to_string(),
    )
    .await;
    let reply = gate.expect(&format!("/shadow/get/{spk}/sens0001")).await;
    assert_eq!(reply["payload"]["status"], "success", "{reply}");
    ok(call(
        &api,
        "PUT",
        &format!("/api/v1/products/{spk}/devices/sens0001/shadow/desired"),
        Some(json!({"desired": {"mode": "boost"}})),
    )
    .await);
    let control = gate.expect(&format!("/shadow/get/{spk}/sens0001")).await;
    assert_eq!(control["method"], "control", "{control}");
    assert_eq!(control["payload"]["state"]["desired"]["mode"], "boost");

    // Batch login and logout.
    let reply = gate
        .ask(
            &format!("{session}/combine/batch_login"),
            9,
            json!({"signMethod": "hmacSha256",
                   "deviceList": [login_item(&spk, "sens0002", &ssecrets[1])]}),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    wait_status(&api, &spk, "sens0002", true).await;
    let reply = gate
        .ask(
            &format!("{session}/combine/batch_logout"),
            10,
            json!([{"productKey": spk, "deviceName": "sens0002"}]),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    wait_status(&api, &spk, "sens0002", false).await;
    // After logout its messages are answered on /ext/error again.
    gate.publish(
        &format!("{}/thing/event/property/post", s("sens0002")),
        post(11, 1.0),
    )
    .await;
    assert_eq!(
        gate.expect(&format!("/ext/error/{gpk}/{gw}")).await["code"],
        520
    );

    // The gateway goes away: its sub-devices go offline with it.
    gate.close().await;
    wait_status(&api, &spk, "sens0001", false).await;

    // Back, it logs in again and its sub-device's traffic flows.
    let mut gate = Device::connect(&server, &gpk, gw, &gsecrets[0]).await;
    gate.publish(&post_topic, post(12, 23.0)).await;
    assert_eq!(
        gate.expect(&format!("/ext/error/{gpk}/{gw}")).await["code"],
        520
    );
    let reply = gate
        .ask(
            &format!("{session}/combine/login"),
            13,
            login_item(&spk, "sens0001", &ssecrets[0]),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    wait_status(&api, &spk, "sens0001", true).await;
    let reply = gate
        .ask(&post_topic, 14, json!({"temperature": 24.5}))
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(
        latest_temperature(&api, &spk, "sens0001").await,
        json!(24.5)
    );

    // Disabled through the API: its session ends at once, as a device's connection does;
    // enabled again, it logs in again.
    let device = format!("/api/v1/products/{spk}/devices/sens0001");
    call(&api, "POST", &format!("{device}:disable"), None).await;
    wait_status(&api, &spk, "sens0001", false).await;
    gate.publish(&post_topic, post(15, 25.0)).await;
    assert_eq!(
        gate.expect(&format!("/ext/error/{gpk}/{gw}")).await["code"],
        520
    );
    call(&api, "POST", &format!("{device}:enable"), None).await;
    let reply = gate
        .ask(
            &format!("{session}/combine/login"),
            16,
            login_item(&spk, "sens0001", &ssecrets[0]),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    wait_status(&api, &spk, "sens0001", true).await;

    // Removed through the API: the gateway is told, the sub-device's session ends.
    let removed = ok(call(
        &api,
        "POST",
        &format!("/api/v1/products/{gpk}/devices/{gw}/topology/delete"),
        Some(json!({"subDevices": [{"productKey": spk, "deviceName": "sens0001"}]})),
    )
    .await);
    assert_eq!(removed["items"][0]["deviceName"], "sens0001");
    let change = gate.expect(&format!("{g}/thing/topo/change")).await;
    assert_eq!(change["params"]["status"], 1, "{change}");
    assert_eq!(change["params"]["subList"][0]["deviceName"], "sens0001");
    wait_status(&api, &spk, "sens0001", false).await;
    // No longer in the topology: refused without an answer.
    gate.publish(&post_topic, post(15, 25.0)).await;
    gate.expect_no_publish().await;
    // Added back through the API (no signature): the gateway is told.
    ok(call(
        &api,
        "POST",
        &format!("/api/v1/products/{gpk}/devices/{gw}/topology"),
        Some(json!({"subDevices": [{"productKey": spk, "deviceName": "sens0001"}]})),
    )
    .await);
    let change = gate.expect(&format!("{g}/thing/topo/change")).await;
    assert_eq!(change["params"]["status"], 0, "{change}");
    // The device removes it itself with topo/delete.
    let reply = gate
        .ask(
            &format!("{g}/thing/topo/delete"),
            16,
            json!([{"productKey": spk, "deviceName": "sens0001"}]),
        )
        .await;
    assert_eq!(reply["data"][0]["deviceName"], "sens0001", "{reply}");
    gate.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn sub_devices_register_through_their_gateway() {
    let (server, api) = start().await;
    let (gpk, gsecrets) = product(&api, "Gateway", &["gate0001"]).await;
    let p = ok(call(
        &api,
        "POST",
        "/api/v1/products",
        Some(json!({"name": "dynsub", "nodeType": "SubDevice", "dynamicRegistration": true})),
    )
    .await);
    let spk = p["productKey"].as_str().expect("pk").to_owned();
    let ps = p["productSecret"].as_str().expect("ps").to_owned();
    let pre = ok(call(
        &api,
        "POST",
        &format!("/api/v1/products/{spk}/devices"),
        Some(json!({"deviceName": "pre00001"})),
    )
    .await);
    let mut gate = Device::connect(&server, &gpk, "gate0001", &gsecrets[0]).await;
    let g = format!("/sys/{gpk}/gate0001");

    // Pre-registered: the secret comes back.
    let reply = gate
        .ask(
            &format!("{g}/thing/sub/register"),
            1,
            json!([{"productKey": spk, "deviceName": "pre00001"}]),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["data"][0]["deviceSecret"], pre["deviceSecret"]);
    let reply = gate
        .ask(
            &format!("{g}/thing/sub/register"),
            2,
            json!([{"productKey": spk, "deviceName": "missing1"}]),
        )
        .await;
    assert_eq!(reply["code"], 6100, "{reply}");

    // Without pre-registration, by product secret: created; a bad signature fails alone.
    let item = |dn: &str, secret: &str| {
        let content = lode_alink::register_sign_content(dn, &spk, "r4nd0m");
        json!({"productKey": spk, "deviceName": dn, "random": "r4nd0m",
               "signMethod": "hmacSha256", "sign": sign(secret, &content)})
    };
    let reply = gate
        .ask(
            &format!("{g}/thing/proxy/provisioning/product_register"),
            3,
            json!({"proxieds": [item("new00001", &ps), item("new00002", "wrong")]}),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["data"]["successes"][0]["deviceName"], "new00001");
    assert_eq!(reply["data"]["failures"][0]["deviceName"], "new00002");
    let created = ok(call(
        &api,
        "GET",
        &format!("/api/v1/products/{spk}/devices/new00001"),
        None,
    )
    .await);
    assert_eq!(
        created["deviceSecret"],
        reply["data"]["successes"][0]["deviceSecret"]
    );
    assert_eq!(
        call(
            &api,
            "GET",
            &format!("/api/v1/products/{spk}/devices/new00002"),
            None
        )
        .await
        .status,
        404
    );
    let reply = gate
        .ask(
            &format!("{g}/thing/list/found"),
            4,
            json!([{"productKey": spk, "deviceName": "new00003"}]),
        )
        .await;
    assert_eq!(reply["code"], 200, "{reply}");
    gate.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_gateway_holds_at_most_1500_sub_devices() {
    let (server, api) = start().await;
    let (gpk, _) = product(&api, "Gateway", &["gate0001"]).await;
    let (spk, _) = product(&api, "SubDevice", &[]).await;
    let names: Vec<String> = (0..1501).map(|i| format!("sub{i:05}")).collect();
    let job = ok(call(
        &api,
        "POST",
        &format!("/api/v1/products/{spk}/devices:batch"),
        Some(json!({"deviceNames": names})),
    )
    .await);
    let job_path = format!("/api/v1/jobs/{}", job["jobId"].as_str().expect("job id"));
    for _ in 0..500 {
        let job = ok(call(&api, "GET", &job_path, None).await);
        if job["succeeded"] == json!(1501) {
            break;
        }
        assert_eq!(job["failed"], 0, "{job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = format!("/api/v1/products/{gpk}/devices/gate0001/topology");
    for chunk in names[..1500].chunks(200) {
        let subs: Vec<Value> = chunk
            .iter()
            .map(|dn| json!({"productKey": spk, "deviceName": dn}))
            .collect();
        ok(call(&api, "POST", &path, Some(json!({"subDevices": subs}))).await);
    }
    let over = call(
        &api,
        "POST",
        &path,
        Some(json!({"subDevices": [{"productKey": spk, "deviceName": names[1500]}]})),
    )
    .await;
    assert_eq!(
        (over.status, over.body["code"].as_str()),
        (400, Some("QuotaExceeded.SubDevicesPerGateway")),
        "{}",
        over.body
    );
    let topo = ok(call(&api, "GET", &path, None).await);
    assert_eq!(topo["items"].as_array().map(Vec::len), Some(1500));
    server.shutdown().await;
}
