//! Remote configuration, RRPC and broadcast end to end: a server on loopback, devices
//! signed in over MQTT (raw packets), the signed API and the `lodestone` CLI.

use std::process::Command;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lode_mqtt::{Packet, ProtocolVersion, PubResp, Publish, QoS};
use lode_server::client::{ApiClient, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, call, device_connect, get, ok, start_signed};

const KEY_ID: &str = "LTAItestadmin0007";
const KEY_SECRET: &str = "test-admin-secret-devconfig-0123456";
const V3: ProtocolVersion = ProtocolVersion::V311;

async fn start() -> (TestServer, ApiClient) {
    start_signed(KEY_ID, KEY_SECRET).await
}

#[track_caller]
fn refused(r: &Response, status: u16, code: &str) {
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (status, Some(code)),
        "{}",
        r.body
    );
}

/// A product with devices; their secrets by name.
async fn product(api: &ApiClient, names: &[&str]) -> (String, Vec<String>) {
    let p = ok(call(
        api,
        "POST",
        "/api/v1/products",
        Some(json!({"name": "cfgproduct"})),
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

/// Waits until the registry says the device is online.
async fn wait_online(api: &ApiClient, pk: &str, dn: &str) {
    for _ in 0..200 {
        let s = ok(call(
            api,
            "GET",
            &format!("/api/v1/products/{pk}/devices/{dn}/status"),
            None,
        )
        .await);
        if s["online"] == json!(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{pk}/{dn} never came online");
}

/// A device's MQTT 3.1.1 connection with `_ss=1`.
struct Device {
    tcp: TcpStream,
    buf: BytesMut,
    next_id: u16,
}

impl Device {
    async fn connect(server: &TestServer, pk: &str, dn: &str, secret: &str) -> Device {
        let mut d = Device {
            tcp: TcpStream::connect(server.mqtt).await.expect("tcp"),
            buf: BytesMut::new(),
            next_id: 1,
        };
        d.send(device_connect(pk, dn, secret)).await;
        match d.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, lode_mqtt::ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        d
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        lode_mqtt::encode(&packet, V3, &mut out);
        self.tcp.write_all(&out).await.expect("write");
    }

    /// The next packet within 10 s (`None` on timeout).
    async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(Duration::from_secs(10)).await
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

    async fn subscribe(&mut self, filter: &str) {
        self.send(Packet::Subscribe(lode_mqtt::Subscribe {
            packet_id: 900,
            filters: vec![(
                filter.to_owned(),
                lode_mqtt::SubscriptionOptions {
                    qos: QoS::AtMostOnce,
                    ..Default::default()
                },
            )],
            subscription_identifier: None,
            user_properties: Vec::new(),
        }))
        .await;
        loop {
            match self.recv().await {
                Some(Packet::SubAck(ack)) => {
                    assert!(ack.codes.iter().all(|c| (*c as u8) < 0x80), "{ack:?}");
                    return;
                }
                Some(_) => {}
                None => panic!("no SUBACK"),
            }
        }
    }

    /// The next PUBLISH on a topic starting with `prefix`, acknowledged.
    async fn expect(&mut self, prefix: &str) -> (String, Bytes) {
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
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if topic.starts_with(prefix) {
                        return (topic, p.payload);
                    }
                }
                Some(_) => {}
                None => panic!("nothing on {prefix}"),
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
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// Sends a signed PUT with a raw (not JSON) body; status and JSON answer.
async fn put_raw(server: &TestServer, path: &str, body: &[u8]) -> (u16, Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let headers = lode_api::signing::signature_headers(
        lode_api::signing::Credentials {
            access_key_id: KEY_ID,
            secret: KEY_SECRET,
        },
        "PUT",
        path,
        "",
        body,
        now,
        &format!("raw-{now}"),
    );
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        server.http,
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    let mut tcp = TcpStream::connect(server.http).await.expect("tcp");
    tcp.write_all(req.as_bytes()).await.expect("write");
    tcp.write_all(body).await.expect("write");
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    let status = text[9..12].parse().expect("status");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Runs the CLI with `--json`; its output as JSON, or its error text.
async fn cli(server: &TestServer, args: &[&str]) -> Result<Value, String> {
    let http = server.http;
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_lodestone"))
            .args(&args)
            .arg("--json")
            .env("LODESTONE_URL", format!("http://{http}"))
            .env("LODESTONE_ACCESS_KEY_ID", KEY_ID)
            .env("LODESTONE_ACCESS_KEY_SECRET", KEY_SECRET)
            .env("HOME", "/nonexistent")
            .output()
            .expect("the CLI runs");
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .expect("CLI task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_get_download_push_and_refusals() {
    let (server, api) = start().await;
    let (pk, secrets) = product(&api, &["cfg1", "cfg2"]).await;
    let base = format!("/api/v1/products/{pk}/config");

    // No configuration yet.
    refused(&call(&api, "GET", &base, None).await, 404, "ConfigNotFound");
    // Refusals: not JSON, over 64 KB.
    let (status, body) = put_raw(&server, &base, b"{not json").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("InvalidConfig")),
        "{body}"
    );
    let big = json!({"blob": "x".repeat(64 * 1024)});
    refused(
        &call(&api, "PUT", &base, Some(big)).await,
        413,
        "ConfigTooLarge",
    );

    // Two versions through the CLI; the newest is current.
    let files = tempfile::tempdir().expect("tempdir");
    let file = files.path().join("config.json");
    std::fs::write(&file, r#"{"mode":"eco","interval":30}"#).expect("write");
    let path = file.to_str().expect("utf-8");
    let v1 = cli(&server, &["config", "put", &pk, "--file", path])
        .await
        .expect("put");
    assert_eq!(v1["version"], 1);
    std::fs::write(&file, r#"{"mode":"turbo","interval":5}"#).expect("write");
    let v2 = cli(&server, &["config", "put", &pk, "--file", path])
        .await
        .expect("put");
    assert_eq!(v2["version"], 2);
    std::fs::write(&file, "{broken").expect("write");
    let err = cli(&server, &["config", "put", &pk, "--file", path])
        .await
        .expect_err("refused");
    assert!(err.contains("not valid JSON"), "{err}");
    let versions = cli(&server, &["config", "versions", &pk])
        .await
        .expect("versions");
    let listed: Vec<i64> = versions["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["version"].as_i64().expect("version"))
        .collect();
    assert_eq!(listed, [2, 1]);
    let old = cli(&server, &["config", "get", &pk, "--config-version", "1"])
        .await
        .expect("get");
    assert_eq!(old["content"], json!({"mode":"eco","interval":30}));

    // A device asks for the configuration and downloads it.
    let mut d1 = Device::connect(&server, &pk, "cfg1", &secrets[0]).await;
    let request = json!({"id": "42", "version": "1.0",
        "params": {"configScope": "product", "getType": "file"}, "method": "thing.config.get"});
    d1.publish(
        &format!("/sys/{pk}/cfg1/thing/config/get"),
        request.to_string(),
    )
    .await;
    let (_, reply) = d1
        .expect(&format!("/sys/{pk}/cfg1/thing/config/get_reply"))
        .await;
    let reply = json_of(&reply);
    assert_eq!(
        (reply["id"].as_str(), reply["code"].as_i64()),
        (Some("42"), Some(200)),
        "{reply}"
    );
    assert_eq!(reply["message"], "success");
    let data = &reply["data"];
    assert_eq!(
        (data["getType"].as_str(), data["signMethod"].as_str()),
        (Some("file"), Some("Sha256"))
    );
    assert_eq!(data["configId"], v2["configId"]);
    let url = data["url"].as_str().expect("url");
    let path = url
        .strip_prefix(&format!("http://{}", server.http))
        .expect("URL on this server");
    let (status, file_body) = get(server.http, path).await;
    assert_eq!(status, 200);
    assert_eq!(
        file_body.len() as u64,
        data["configSize"].as_u64().expect("size")
    );
    assert_eq!(
        lode_devconfig::sha256_hex(file_body.as_bytes()),
        data["sign"].as_str().expect("sign")
    );
    assert_eq!(
        json_of(file_body.as_bytes()),
        json!({"mode":"turbo","interval":5})
    );
    // A tampered or missing signature is refused.
    let tampered = path.replace("signature=", "signature=00");
    assert_eq!(get(server.http, &tampered).await.0, 403);
    assert_eq!(
        get(server.http, path.split('?').next().expect("path"))
            .await
            .0,
        403
    );

    // Push to listed devices: the online one answers, the other is offline.
    let push = tokio::spawn({
        let api = api.clone();
        let pk = pk.clone();
        async move {
            call(
                &api,
                "POST",
                &format!("/api/v1/products/{pk}/config/push"),
                Some(json!({"deviceNames": ["cfg1", "cfg2", "ghost"], "waitMs": 5000})),
            )
            .await
        }
    });
    let (_, pushed) = d1
        .expect(&format!("/sys/{pk}/cfg1/thing/config/push"))
        .await;
    let pushed = json_of(&pushed);
    assert_eq!(pushed["method"], "thing.config.push");
    assert_eq!(pushed["params"]["configId"], v2["configId"]);
    assert_eq!(pushed["params"]["sign"], data["sign"]);
    let id = pushed["id"].as_str().expect("id");
    d1.publish(
        &format!("/sys/{pk}/cfg1/thing/config/push_reply"),
        json!({"id": id, "code": 200, "data": {}}).to_string(),
    )
    .await;
    let report = ok(push.await.expect("push task"));
    let results = report["results"].as_array().expect("results");
    assert_eq!(
        results[0],
        json!({"deviceName": "cfg1", "status": "acknowledged", "code": 200})
    );
    assert_eq!(
        results[1],
        json!({"deviceName": "cfg2", "status": "offline"})
    );
    assert_eq!(
        results[2],
        json!({"deviceName": "ghost", "status": "notFound"})
    );

    // Push to every online device, through the CLI, with no answer: noReply.
    let mut d2 = Device::connect(&server, &pk, "cfg2", &secrets[1]).await;
    wait_online(&api, &pk, "cfg1").await;
    wait_online(&api, &pk, "cfg2").await;
    let all = cli(&server, &["config", "push", &pk, "--wait-ms", "300"])
        .await
        .expect("push");
    let mut statuses: Vec<(String, String)> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| {
            (
                r["deviceName"].as_str().unwrap_or("").to_owned(),
                r["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("cfg1".into(), "noReply".into()),
            ("cfg2".into(), "noReply".into())
        ]
    );
    d1.expect(&format!("/sys/{pk}/cfg1/thing/config/push"))
        .await;
    d2.expect(&format!("/sys/{pk}/cfg2/thing/config/push"))
        .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrpc_system_custom_timeout_offline() {
    let (server, api) = start().await;
    let (pk, secrets) = product(&api, &["rpc1", "rpc2"]).await;
    let mut d = Device::connect(&server, &pk, "rpc1", &secrets[0]).await;
    d.subscribe(&format!("/ext/rrpc/+/{pk}/rpc1/user/get"))
        .await;

    // System RRPC: the device answers on rrpc/response/{id}.
    let call_sys = tokio::spawn({
        let api = api.clone();
        let pk = pk.clone();
        async move {
            call(
                &api,
                "POST",
                "/api/v1/rrpc",
                Some(json!({"productKey": pk, "deviceName": "rpc1", "payloadText": "ping"})),
            )
            .await
        }
    });
    let (topic, payload) = d.expect(&format!("/sys/{pk}/rpc1/rrpc/request/")).await;
    assert_eq!(&payload[..], b"ping");
    let id = topic.rsplit('/').next().expect("id").to_owned();
    d.publish(&format!("/sys/{pk}/rpc1/rrpc/response/{id}"), "pong")
        .await;
    let answer = ok(call_sys.await.expect("task"));
    assert_eq!(answer["payloadText"], "pong");

    // Custom-topic RRPC through the CLI: request and answer on the same topic; the
    // answer is consumed, so the device (subscribed to that topic) never hears it.
    let call_custom = tokio::spawn({
        let pk = pk.clone();
        let http = server.http;
        async move {
            let server_http = http;
            let out = tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_lodestone"))
                    .args([
                        "rrpc",
                        &pk,
                        "rpc1",
                        "--message",
                        "hello",
                        "--topic",
                        "user/get",
                        "--json",
                    ])
                    .env("LODESTONE_URL", format!("http://{server_http}"))
                    .env("LODESTONE_ACCESS_KEY_ID", KEY_ID)
                    .env("LODESTONE_ACCESS_KEY_SECRET", KEY_SECRET)
                    .env("HOME", "/nonexistent")
                    .output()
                    .expect("CLI runs")
            })
            .await
            .expect("task");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).expect("JSON")
        }
    });
    let (topic, payload) = d.expect("/ext/rrpc/").await;
    assert!(topic.ends_with(&format!("/{pk}/rpc1/user/get")), "{topic}");
    assert_eq!(&payload[..], b"hello");
    d.publish(&topic, "world").await;
    let answer = call_custom.await.expect("task");
    assert_eq!(answer["payloadText"], "world");
    d.expect_no_publish().await;

    // No answer: Timeout; offline device: DeviceOffline; bad topic: InvalidParameter.
    let timed_out = call(
        &api,
        "POST",
        "/api/v1/rrpc",
        Some(
            json!({"productKey": pk, "deviceName": "rpc1", "payloadText": "x", "timeoutMs": 1000}),
        ),
    )
    .await;
    refused(&timed_out, 504, "Timeout");
    d.expect(&format!("/sys/{pk}/rpc1/rrpc/request/")).await;
    let offline = call(
        &api,
        "POST",
        "/api/v1/rrpc",
        Some(json!({"productKey": pk, "deviceName": "rpc2", "payloadText": "x"})),
    )
    .await;
    refused(&offline, 409, "DeviceOffline");
    let bad = call(
        &api,
        "POST",
        "/api/v1/rrpc",
        Some(json!({"productKey": pk, "deviceName": "rpc1", "payloadText": "x", "topic": "sys/x"})),
    )
    .await;
    refused(&bad, 400, "InvalidParameter");
    let unheard = call(&api, "POST", "/api/v1/rrpc",
        Some(json!({"productKey": pk, "deviceName": "rpc1", "payloadText": "x", "topic": "user/update"}))).await;
    refused(&unheard, 409, "DeviceNotSubscribed");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_and_topic_broadcast_with_rate_limit() {
    let (server, api) = start().await;
    let (pk, secrets) = product(&api, &["bcast1", "bcast2", "bcast3"]).await;
    let mut d1 = Device::connect(&server, &pk, "bcast1", &secrets[0]).await;
    let mut d2 = Device::connect(&server, &pk, "bcast2", &secrets[1]).await;
    wait_online(&api, &pk, "bcast1").await;
    wait_online(&api, &pk, "bcast2").await;

    let sent = cli(&server, &["broadcast", &pk, "--message", "all hands"])
        .await
        .expect("broadcast");
    assert_eq!(
        (sent["devices"].as_u64(), sent["delivered"].as_u64()),
        (Some(2), Some(2)),
        "{sent}"
    );
    let mid = sent["messageId"].as_str().expect("messageId");
    for (d, dn) in [(&mut d1, "bcast1"), (&mut d2, "bcast2")] {
        let (topic, payload) = d
            .expect(&format!("/sys/{pk}/{dn}/broadcast/request/"))
            .await;
        assert_eq!(topic, format!("/sys/{pk}/{dn}/broadcast/request/{mid}"));
        assert_eq!(&payload[..], b"all hands");
    }

    // One broadcast per second per account.
    let again = call(
        &api,
        "POST",
        &format!("/api/v1/products/{pk}/broadcast"),
        Some(json!({"topicSuffix": "news", "payloadText": "x"})),
    )
    .await;
    refused(&again, 429, "Throttling");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A topic broadcast reaches the devices subscribed to it.
    d1.subscribe(&format!("/broadcast/{pk}/news")).await;
    let topic = ok(call(
        &api,
        "POST",
        &format!("/api/v1/products/{pk}/broadcast"),
        Some(json!({"topicSuffix": "news", "payloadText": "extra"})),
    )
    .await);
    assert_eq!(topic["delivered"], 1);
    let (_, payload) = d1.expect(&format!("/broadcast/{pk}/news")).await;
    assert_eq!(&payload[..], b"extra");
    server.shutdown().await;
}
