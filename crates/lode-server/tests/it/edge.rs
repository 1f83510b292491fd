//! HTTP and CoAP device access end to end: a device signs in with its secret over HTTP, plain
//! CoAP or encrypted-payload CoAP and posts a property that the thing model stores, exactly as
//! over MQTT; refusals carry the reference's codes. Also with `curl` and libcoap's
//! `coap-client` when they are installed.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use lode_edge::lode_coap::alink::SessionKey;
use lode_edge::lode_coap::block::BlockOpt;
use lode_edge::lode_coap::{
    Code, Message, MessageType, Token, content_format, decode, encode, opt,
};
use lode_history::DeviceKey;
use lode_registry::{NewDevice, NewProduct, RegistryStore};
use lode_server::{Server, ServerConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

const TSL: &str = r#"{
  "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
  "profile": {"productKey": "any"},
  "properties": [
    {"identifier": "temperature", "name": "Temperature", "accessMode": "r", "required": false,
     "dataType": {"type": "float", "specs": {"min": "-40", "max": "120", "step": "0.1"}}}
  ],
  "events": [],
  "services": []
}"#;

/// A running server with one product (TSL published) and its devices.
pub(crate) struct Platform {
    pub(crate) http: SocketAddr,
    coap: SocketAddr,
    coap_psk: SocketAddr,
    pub(crate) coap_dtls: SocketAddr,
    registry: std::sync::Arc<dyn RegistryStore>,
    thing: lode_thing::ThingEngine,
    broker: lode_broker::Broker,
    pub(crate) pk: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Platform {
    pub(crate) async fn start(config: ServerConfig) -> Platform {
        let server = Server::bind(config).await.expect("bind");
        let registry = server.registry().clone();
        let thing = server.thing().clone();
        let broker = server.broker().clone();
        let account = &registry.list_accounts().await.expect("accounts")[0];
        let product = registry
            .create_product(&account.id, NewProduct::new("sensors"))
            .await
            .expect("product");
        let tsl: Value = serde_json::from_str(TSL).expect("TSL");
        thing
            .save_tsl_draft(&product.product_key, &tsl)
            .await
            .expect("draft");
        thing
            .publish_tsl(&product.product_key)
            .await
            .expect("published");
        let pk = product.product_key;
        let (http, coap, coap_psk, coap_dtls) = (
            server.http_addr(),
            server.coap_addr(),
            server.coap_psk_addr(),
            server.coap_dtls_addr(),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        for _ in 0..200 {
            if crate::support::get(http, "/readyz").await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Platform {
            http,
            coap,
            coap_psk,
            coap_dtls,
            registry,
            thing,
            broker,
            pk,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub(crate) async fn device(&self, name: &str) -> String {
        self.registry
            .create_device(&self.pk, NewDevice::new(name.to_owned()))
            .await
            .expect("device")
            .device_secret
    }

    pub(crate) async fn temperature(&self, dn: &str) -> Option<Value> {
        let latest = self
            .thing
            .store()
            .latest(&DeviceKey::new(&self.pk, dn))
            .await
            .expect("latest");
        latest
            .into_iter()
            .find(|p| p.identifier == "temperature")
            .map(|p| p.value)
    }

    /// Waits until the device's stored temperature is `want`.
    pub(crate) async fn expect_temperature(&self, dn: &str, want: f64) {
        for _ in 0..200 {
            if self.temperature(dn).await == Some(json!(want)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "temperature of {dn} is {:?}, expected {want}",
            self.temperature(dn).await
        );
    }

    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("shutdown in time")
                .expect("no panic")
                .expect("run ok");
        }
    }
}

pub(crate) fn config() -> ServerConfig {
    let mut config = ServerConfig::local_ephemeral();
    config.allow_anonymous = false;
    config
}

pub(crate) fn property_post(value: f64) -> Vec<u8> {
    json!({"id": "1", "version": "1.0", "params": {"temperature": value},
           "method": "thing.event.property.post"})
    .to_string()
    .into_bytes()
}

/// `POST path` over HTTP/1.1 with extra headers; the JSON answer.
async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Value {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body: {text}"))
}

fn http_auth_body(pk: &str, dn: &str, secret: &str, method: lode_alink::SignMethod) -> Vec<u8> {
    let cid = format!("{pk}.{dn}");
    let ts = "1700000000000";
    let sign = lode_alink::sign(
        method,
        secret,
        &format!("clientId{cid}deviceName{dn}productKey{pk}timestamp{ts}"),
    );
    json!({"version": "default", "clientId": cid, "signmethod": method.to_string(),
           "sign": sign.to_uppercase(), "productKey": pk, "deviceName": dn, "timestamp": ts})
    .to_string()
    .into_bytes()
}

async fn http_token(p: &Platform, dn: &str, secret: &str) -> String {
    let answer = post(
        p.http,
        "/auth",
        &[("Content-Type", "application/json")],
        &http_auth_body(&p.pk, dn, secret, lode_alink::SignMethod::HmacSha1),
    )
    .await;
    assert_eq!(answer["code"], 0, "{answer}");
    assert_eq!(answer["message"], "success");
    answer["info"]["token"].as_str().expect("token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_device_posts_a_property_and_refusals_have_reference_codes() {
    let p = Platform::start(config()).await;
    let secret = p.device("http-dev-1").await;
    let token = http_token(&p, "http-dev-1", &secret).await;
    let topic = format!("/topic/sys/{}/http-dev-1/thing/event/property/post", p.pk);
    let ok = post(
        p.http,
        &topic,
        &[("password", &token)],
        &property_post(21.5),
    )
    .await;
    assert_eq!(ok["code"], 0, "{ok}");
    assert!(ok["info"]["messageId"].as_u64().is_some(), "{ok}");
    p.expect_temperature("http-dev-1", 21.5).await;

    // Sign-in refusals.
    let mut wrong = http_auth_body(
        &p.pk,
        "http-dev-1",
        "wrong-secret",
        lode_alink::SignMethod::HmacMd5,
    );
    assert_eq!(post(p.http, "/auth", &[], &wrong).await["code"], 20000);
    wrong = br#"{"productKey":"x"}"#.to_vec();
    assert_eq!(post(p.http, "/auth", &[], &wrong).await["code"], 10001);
    let unknown = http_auth_body(
        &p.pk,
        "nobody-here",
        &secret,
        lode_alink::SignMethod::HmacSha256,
    );
    assert_eq!(post(p.http, "/auth", &[], &unknown).await["code"], 20000);

    // Publish refusals.
    let body = property_post(1.0);
    assert_eq!(post(p.http, &topic, &[], &body).await["code"], 20002);
    assert_eq!(
        post(p.http, &topic, &[("password", "junk")], &body).await["code"],
        20003
    );
    let other = format!("/topic/sys/{}/someone-else/thing/event/property/post", p.pk);
    assert_eq!(
        post(p.http, &other, &[("password", &token)], &body).await["code"],
        30001
    );

    // Per-device rate: 30 a second. 60 at once: about half are refused.
    let custom = format!("/topic/{}/http-dev-1/user/update", p.pk);
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (http, custom, token) = (p.http, custom.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            post(http, &custom, &[("password", &token)], b"x").await["code"].clone()
        }));
    }
    let mut limited = 0;
    for t in tasks {
        if t.await.expect("task") == 40000 {
            limited += 1;
        }
    }
    assert!((20..=40).contains(&limited), "{limited} of 60 refused");

    // Disabling the device revokes its token at once (within the 1 s device cache).
    p.registry
        .set_device_enabled(&p.pk, "http-dev-1", false, None)
        .await
        .expect("disable");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post(p.http, &topic, &[("password", &token)], &body).await["code"],
        20003
    );

    // The device was online (transient), the metrics count the messages.
    let (status, metrics) = crate::support::get(p.http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("lode_edge_messages_total{transport=\"http\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains("lode_edge_messages_total{transport=\"http\"} 0\n"));
    let device = p
        .registry
        .get_device(&p.pk, "http-dev-1")
        .await
        .expect("get")
        .expect("exists");
    assert!(device.last_online_at.is_some(), "recorded online");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_auth_is_rate_limited_per_address() {
    let p = Platform::start(config()).await;
    let secret = p.device("http-dev-2").await;
    let body = http_auth_body(
        &p.pk,
        "http-dev-2",
        &secret,
        lode_alink::SignMethod::HmacSha256,
    );
    let mut codes = Vec::new();
    for _ in 0..65 {
        codes.push(
            post(p.http, "/auth", &[], &body).await["code"]
                .as_i64()
                .unwrap_or(-1),
        );
    }
    assert!(codes[..60].iter().all(|c| *c == 0), "{codes:?}");
    assert!(codes[60..].iter().all(|c| *c == 40000), "{codes:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_key_is_kept_in_the_data_directory_and_a_new_secret_revokes_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config();
    c.storage = lode_server::config::StorageKind::Embedded;
    c.data_dir = dir.path().to_owned();
    let p = Platform::start(c).await;
    let key_file = dir.path().join("edge-token.key");
    let key = std::fs::read(&key_file).expect("token key written");
    assert_eq!(key.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "owner-only key file");
    }
    let secret = p.device("http-dev-3").await;
    let token = http_token(&p, "http-dev-3", &secret).await;
    let topic = format!("/topic/sys/{}/http-dev-3/thing/event/property/post", p.pk);
    let ok = post(
        p.http,
        &topic,
        &[("password", &token)],
        &property_post(30.0),
    )
    .await;
    assert_eq!(ok["code"], 0, "{ok}");
    p.expect_temperature("http-dev-3", 30.0).await;
    // A new secret revokes the old tokens.
    p.registry
        .reset_device_secret(&p.pk, "http-dev-3")
        .await
        .expect("reset");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = post(
        p.http,
        &topic,
        &[("password", &token)],
        &property_post(31.0),
    )
    .await;
    assert_eq!(refused["code"], 20003, "{refused}");
    p.shutdown().await;
    assert_eq!(
        std::fs::read(&key_file).expect("kept"),
        key,
        "the key is not rewritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_signs_in_and_posts_a_property() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not installed; skipped");
        return;
    }
    let p = Platform::start(config()).await;
    let secret = p.device("curl-dev-1").await;
    let (pk, dn) = (p.pk.clone(), "curl-dev-1");
    // The C SDK 4 shape: HMAC-SHA256, upper-case hex, no timestamp.
    let cid = format!("{pk}.{dn}");
    let sign = lode_alink::sign(
        lode_alink::SignMethod::HmacSha256,
        &secret,
        &format!("clientId{cid}deviceName{dn}productKey{pk}"),
    )
    .to_uppercase();
    let auth = json!({"clientId": cid, "signmethod": "hmacsha256", "deviceName": dn,
                      "productKey": pk, "sign": sign})
    .to_string();
    let http = p.http;
    let curl = move |args: Vec<String>| -> Value {
        let out = Command::new("curl")
            .arg("-sS")
            .args(&args)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let args = vec![
        "-X".to_owned(),
        "POST".to_owned(),
        "-H".to_owned(),
        "Content-Type: application/json".to_owned(),
        "--data".to_owned(),
        auth,
        format!("http://{http}/auth"),
    ];
    let c = curl;
    let answer = tokio::task::spawn_blocking(move || c(args))
        .await
        .expect("curl");
    assert_eq!(answer["code"], 0, "{answer}");
    let token = answer["info"]["token"].as_str().expect("token").to_owned();
    let args = vec![
        "-X".to_owned(),
        "POST".to_owned(),
        "-H".to_owned(),
        format!("password: {token}"),
        "-H".to_owned(),
        "Content-Type: application/octet-stream".to_owned(),
        "--data-binary".to_owned(),
        String::from_utf8(property_post(19.5)).expect("utf-8"),
        format!("http://{http}/topic/sys/{pk}/{dn}/thing/event/property/post"),
    ];
    let answer = tokio::task::spawn_blocking(move || curl(args))
        .await
        .expect("curl");
    assert_eq!(answer["code"], 0, "{answer}");
    p.expect_temperature(dn, 19.5).await;
    // And through the management API's view of the device.
    p.shutdown().await;
}

/// A CoAP client over a real UDP socket, with our codec.
struct CoapClient {
    socket: UdpSocket,
    server: SocketAddr,
    mid: u16,
}

impl CoapClient {
    async fn new(server: SocketAddr) -> CoapClient {
        CoapClient {
            socket: UdpSocket::bind("127.0.0.1:0").await.expect("bind"),
            server,
            mid: 0x1000,
        }
    }

    fn request(&mut self, code: Code, path: &str) -> Message {
        self.mid = self.mid.wrapping_add(1);
        let mut m = Message::new(MessageType::Confirmable, code, self.mid);
        m.token = Token::new(&self.mid.to_be_bytes()).expect("token");
        m.set_uri_path(path).expect("path");
        m
    }

    async fn send_raw(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).await.expect("send");
    }

    async fn recv_raw(&self, within: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        match tokio::time::timeout(within, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    async fn exchange(&self, m: &Message) -> Message {
        self.send_raw(&encode(m)).await;
        let raw = self
            .recv_raw(Duration::from_secs(5))
            .await
            .expect("an answer");
        decode(&raw).expect("valid answer")
    }
}

pub(crate) fn coap_auth(pk: &str, dn: &str, secret: &str, seq: Option<u32>) -> Vec<u8> {
    let cid = format!("{pk}&{dn}");
    let seq_text = seq.map(|s| s.to_string());
    let content = lode_edge::lode_coap::alink::sign_content(&cid, dn, pk, seq_text.as_deref());
    let sign = lode_alink::sign(lode_alink::SignMethod::HmacMd5, secret, &content);
    let mut body = json!({"productKey": pk, "deviceName": dn, "clientId": cid, "sign": sign});
    if let Some(s) = seq_text {
        body["seq"] = json!(s);
    }
    body.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_device_signs_in_and_posts_over_udp() {
    let p = Platform::start(config()).await;
    let secret = p.device("coap-dev-1").await;
    let mut c = CoapClient::new(p.coap).await;

    let mut auth = c.request(Code::POST, "/auth");
    auth.set_content_format(content_format::JSON);
    auth.payload = coap_auth(&p.pk, "coap-dev-1", &secret, None);
    let resp = c.exchange(&auth).await;
    assert_eq!(resp.code, Code::CONTENT);
    assert_eq!(resp.message_type, MessageType::Acknowledgement);
    assert_eq!(resp.message_id, auth.message_id);
    assert_eq!(resp.token, auth.token);
    let body: Value = serde_json::from_slice(&resp.payload).expect("JSON");
    let token = body["token"].as_str().expect("token").to_owned();

    let topic = format!("/topic/sys/{}/coap-dev-1/thing/event/property/post", p.pk);
    let mut post = c.request(Code::POST, &topic);
    post.add_option(opt::ALINK_AUTH_TOKEN, token.clone().into_bytes())
        .expect("option");
    post.payload = property_post(22.5);
    let resp = c.exchange(&post).await;
    assert_eq!(resp.code, Code::CHANGED);
    p.expect_temperature("coap-dev-1", 22.5).await;

    // A retransmission is answered from the cache, not handled again.
    let replay = c.exchange(&post).await;
    assert_eq!(encode(&replay), encode(&resp));

    // The token in option 61 works too.
    let mut post61 = c.request(Code::POST, &topic);
    post61
        .add_option(opt::ALINK_AUTH_TOKEN_61, token.clone().into_bytes())
        .expect("option");
    post61.payload = property_post(23.5);
    assert_eq!(c.exchange(&post61).await.code, Code::CHANGED);
    p.expect_temperature("coap-dev-1", 23.5).await;

    // Missing or wrong token: 4.01; another device's topic: 4.03.
    let mut bare = c.request(Code::POST, &topic);
    bare.payload = property_post(1.0);
    assert_eq!(c.exchange(&bare).await.code, Code::UNAUTHORIZED);
    let mut forged = c.request(Code::POST, &topic);
    forged
        .add_option(
            opt::ALINK_AUTH_TOKEN,
            b"1c.1.YQ.Yg..AAAAAAAAAAAAAAAAAAAAAA".to_vec(),
        )
        .expect("option");
    assert_eq!(c.exchange(&forged).await.code, Code::UNAUTHORIZED);
    let other = format!("/topic/sys/{}/not-mine/thing/event/property/post", p.pk);
    let mut foreign = c.request(Code::POST, &other);
    foreign
        .add_option(opt::ALINK_AUTH_TOKEN, token.clone().into_bytes())
        .expect("option");
    assert_eq!(c.exchange(&foreign).await.code, Code::FORBIDDEN);

    // An HTTP token is not a CoAP token.
    let http = http_token(&p, "coap-dev-1", &secret).await;
    let mut cross = c.request(Code::POST, &topic);
    cross
        .add_option(opt::ALINK_AUTH_TOKEN, http.into_bytes())
        .expect("option");
    assert_eq!(c.exchange(&cross).await.code, Code::UNAUTHORIZED);

    // Unknown critical option: 4.02.
    let mut odd = c.request(Code::POST, &topic);
    odd.add_option(2051, b"x".to_vec()).expect("option");
    assert_eq!(c.exchange(&odd).await.code, Code::BAD_OPTION);

    // Bigger than 1 KB in one datagram: 4.13 with Size1.
    let mut big = c.request(Code::POST, &topic);
    big.add_option(opt::ALINK_AUTH_TOKEN, token.clone().into_bytes())
        .expect("option");
    big.payload = vec![b' '; 1500];
    let resp = c.exchange(&big).await;
    assert_eq!(resp.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(resp.size1(), Ok(Some(1024)));

    // Block1: a body in two 512-byte blocks.
    let mut body = property_post(24.5);
    body.resize(700, b' ');
    for (num, chunk) in body.chunks(512).enumerate() {
        let more = (num + 1) * 512 < body.len();
        let mut b = c.request(Code::POST, &topic);
        b.add_option(opt::ALINK_AUTH_TOKEN, token.clone().into_bytes())
            .expect("option");
        b.set_block1(BlockOpt::new(num as u32, more, 5).expect("block"));
        b.payload = chunk.to_vec();
        let resp = c.exchange(&b).await;
        let want = if more { Code::CONTINUE } else { Code::CHANGED };
        assert_eq!(resp.code, want);
        assert_eq!(
            resp.block1().ok().flatten().map(|b| b.num()),
            Some(num as u32)
        );
    }
    p.expect_temperature("coap-dev-1", 24.5).await;

    // Discovery.
    let wk = c.request(Code::GET, "/.well-known/core");
    let resp = c.exchange(&wk).await;
    assert_eq!(resp.code, Code::CONTENT);
    assert!(String::from_utf8_lossy(&resp.payload).contains("</auth>"));

    // A ping gets RST; a malformed CON gets RST; garbage is dropped and counted.
    c.send_raw(&[0x40, 0x00, 0x12, 0x34]).await;
    let rst = decode(&c.recv_raw(Duration::from_secs(5)).await.expect("rst")).expect("valid");
    assert_eq!(
        (rst.message_type, rst.message_id),
        (MessageType::Reset, 0x1234)
    );
    c.send_raw(&[0x48, 0x02, 0x43, 0x21, 0x01]).await;
    let rst = decode(&c.recv_raw(Duration::from_secs(5)).await.expect("rst")).expect("valid");
    assert_eq!(
        (rst.message_type, rst.message_id),
        (MessageType::Reset, 0x4321)
    );
    c.send_raw(b"\xff").await;
    assert!(c.recv_raw(Duration::from_millis(200)).await.is_none());
    let (_, metrics) = crate::support::get(p.http, "/metrics").await;
    assert!(
        !metrics.contains("lode_coap_malformed_total 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("lode_coap_replays_total 0\n"),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_payload_mode_end_to_end() {
    let p = Platform::start(config()).await;
    let secret = p.device("psk-dev-1").await;
    let mut c = CoapClient::new(p.coap_psk).await;

    // Without seq the encrypted port refuses the sign-in.
    let mut plain = c.request(Code::POST, "/auth");
    plain.payload = coap_auth(&p.pk, "psk-dev-1", &secret, None);
    assert_eq!(c.exchange(&plain).await.code, Code::BAD_REQUEST);

    let mut auth = c.request(Code::POST, "/auth");
    auth.set_content_format(content_format::JSON);
    auth.payload = coap_auth(&p.pk, "psk-dev-1", &secret, Some(4321));
    let resp = c.exchange(&auth).await;
    assert_eq!(resp.code, Code::CONTENT);
    let grant: Value = serde_json::from_slice(&resp.payload).expect("JSON");
    let token = grant["token"].as_str().expect("token").to_owned();
    let random = grant["random"].as_str().expect("random").to_owned();
    let mut seq = u32::try_from(grant["seqOffset"].as_u64().expect("seqOffset")).expect("u32");
    let key = SessionKey::derive(&secret, &random);

    let topic = format!("/topic/sys/{}/psk-dev-1/thing/event/property/post", p.pk);
    let encrypted = |c: &mut CoapClient, seq: u32, value: f64| {
        let mut m = c.request(Code::POST, &topic);
        m.add_option(opt::ALINK_AUTH_TOKEN, token.clone().into_bytes())
            .expect("option");
        m.add_option(opt::ALINK_SEQ, key.encrypt_seq(seq))
            .expect("option");
        m.payload = key.encrypt(&property_post(value));
        m
    };
    let first = encrypted(&mut c, seq, 25.5);
    assert_eq!(c.exchange(&first).await.code, Code::CHANGED);
    p.expect_temperature("psk-dev-1", 25.5).await;
    seq += 1;
    let second = encrypted(&mut c, seq, 26.5);
    assert_eq!(c.exchange(&second).await.code, Code::CHANGED);
    p.expect_temperature("psk-dev-1", 26.5).await;

    // The same seq in a new message (a replay by someone else) is dropped unanswered.
    let replayed = encrypted(&mut c, seq, 99.0);
    c.send_raw(&encode(&replayed)).await;
    assert!(c.recv_raw(Duration::from_millis(300)).await.is_none());
    // A late one within the window is still taken, once.
    let late = encrypted(&mut c, seq + 5, 27.5);
    assert_eq!(c.exchange(&late).await.code, Code::CHANGED);
    let reordered = encrypted(&mut c, seq + 2, 28.5);
    assert_eq!(c.exchange(&reordered).await.code, Code::CHANGED);
    p.expect_temperature("psk-dev-1", 28.5).await;
    // Plaintext where ciphertext is due: the seq does not decrypt, dropped.
    let mut clear = c.request(Code::POST, &topic);
    clear
        .add_option(opt::ALINK_AUTH_TOKEN, token.clone().into_bytes())
        .expect("option");
    clear
        .add_option(opt::ALINK_SEQ, b"9999".to_vec())
        .expect("option");
    clear.payload = property_post(1.0);
    c.send_raw(&encode(&clear)).await;
    assert!(c.recv_raw(Duration::from_millis(300)).await.is_none());
    assert_eq!(p.temperature("psk-dev-1").await, Some(json!(28.5)));
    let (_, metrics) = crate::support::get(p.http, "/metrics").await;
    assert!(
        metrics.contains("lode_coap_seq_refused_total 2\n"),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_client_signs_in_and_posts_a_property() {
    let Some(client) = ["coap-client", "coap-client-notls", "coap-client-openssl"]
        .into_iter()
        .find(|c| Command::new(c).arg("-h").output().is_ok())
    else {
        eprintln!("coap-client (libcoap3-bin) not installed; skipped");
        return;
    };
    let p = Platform::start(config()).await;
    let secret = p.device("libcoap-dev").await;
    let (pk, dn, coap) = (p.pk.clone(), "libcoap-dev", p.coap);
    let auth = String::from_utf8(coap_auth(&pk, dn, &secret, None)).expect("utf-8");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(client)
            .args(["-m", "post", "-t", "50", "-B", "5", "-e", &auth])
            .arg(format!("coap://{coap}/auth"))
            .output()
            .expect("coap-client runs")
    })
    .await
    .expect("task");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json_start = text.find('{').unwrap_or_else(|| {
        panic!(
            "no JSON in {text:?} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let grant: Value = serde_json::from_str(text[json_start..].trim()).expect("JSON");
    let token = grant["token"].as_str().expect("token").to_owned();
    let body = String::from_utf8(property_post(18.5)).expect("utf-8");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(client)
            .args(["-m", "post", "-t", "50", "-B", "5", "-O"])
            .arg(format!("2088,{token}"))
            .args(["-e", &body])
            .arg(format!(
                "coap://{coap}/topic/sys/{pk}/{dn}/thing/event/property/post"
            ))
            .output()
            .expect("coap-client runs")
    })
    .await
    .expect("task");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.expect_temperature(dn, 18.5).await;
    p.shutdown().await;
}

#[test]
fn coap_listeners_and_edge_settings_resolve_from_file_env_and_flags() {
    use lode_server::cli::ServeArgs;
    use lode_server::config::{self, Env, file::FileConfig};
    let file = FileConfig::parse(
        "[listeners]\ncoap = \"127.0.0.1:6001\"\ncoap_psk = \"127.0.0.1:6002\"\n\
         [edge]\ntoken_ttl = \"2h\"\nonline_window = \"30s\"\nauth_per_minute = 10\n",
    )
    .expect("parses");
    let c = config::resolve(&file, &Env::new(), &ServeArgs::default()).expect("valid");
    assert_eq!(c.listeners.coap, "127.0.0.1:6001".parse().expect("addr"));
    assert_eq!(
        c.listeners.coap_psk,
        "127.0.0.1:6002".parse().expect("addr")
    );
    assert_eq!(c.edge.token_ttl, Duration::from_secs(7200));
    assert_eq!(c.edge.online_window, Duration::from_secs(30));
    assert_eq!(c.edge.auth_per_minute, 10);

    let env: Env = [(
        "LODESTONE_COAP_ADDR".to_owned(),
        "127.0.0.1:7001".to_owned(),
    )]
    .into_iter()
    .collect();
    let flags = ServeArgs {
        coap_psk_addr: Some("127.0.0.1:8002".parse().expect("addr")),
        ..ServeArgs::default()
    };
    let c = config::resolve(&file, &env, &flags).expect("valid");
    assert_eq!(c.listeners.coap, "127.0.0.1:7001".parse().expect("addr"));
    assert_eq!(
        c.listeners.coap_psk,
        "127.0.0.1:8002".parse().expect("addr")
    );

    let defaults =
        config::resolve(&FileConfig::default(), &Env::new(), &ServeArgs::default()).expect("valid");
    assert_eq!(
        defaults.listeners.coap,
        "0.0.0.0:5683".parse().expect("addr")
    );
    assert_eq!(
        defaults.listeners.coap_psk,
        "0.0.0.0:5682".parse().expect("addr")
    );
    assert_eq!(defaults.edge.token_ttl, Duration::from_secs(48 * 3600));

    let bad =
        FileConfig::parse("[edge]\ntoken_ttl = \"1s\"\nauth_per_minute = 0\n").expect("parses");
    let err = config::resolve(&bad, &Env::new(), &ServeArgs::default()).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("edge.token_ttl") && text.contains("edge.auth_per_minute"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_observe_delivers_downlinks() {
    let p = Platform::start(config()).await;
    let secret = p.device("observer-1").await;
    let mut c = CoapClient::new(p.coap).await;
    let mut auth = c.request(Code::POST, "/auth");
    auth.payload = coap_auth(&p.pk, "observer-1", &secret, None);
    let resp = c.exchange(&auth).await;
    let token: Value = serde_json::from_slice(&resp.payload).expect("JSON");
    let token = token["token"].as_str().expect("token").to_owned();

    let downlink = format!("/sys/{}/observer-1/thing/service/property/set", p.pk);
    // Another device's downlinks are not for this one.
    let mut foreign = c.request(
        Code::GET,
        &format!("/topic/sys/{}/other-dev/thing/service/property/set", p.pk),
    );
    foreign.set_observe(0);
    foreign
        .add_option(opt::ALINK_AUTH_TOKEN, token.clone().into_bytes())
        .expect("option");
    assert_eq!(c.exchange(&foreign).await.code, Code::FORBIDDEN);

    let mut observe = c.request(Code::GET, &format!("/topic{downlink}"));
    observe.set_observe(0);
    observe
        .add_option(opt::ALINK_AUTH_TOKEN, token.clone().into_bytes())
        .expect("option");
    let registered = c.exchange(&observe).await;
    assert_eq!(registered.code, Code::CONTENT);
    let first = registered
        .observe()
        .expect("valid")
        .expect("Observe option");

    // The platform publishes to the device; the session subscribes asynchronously, so the
    // publish is repeated until the first notification arrives.
    let payload = br#"{"id":"7","version":"1.0","params":{"temperature":5},"method":"thing.service.property.set"}"#;
    let mut note = None;
    for _ in 0..50 {
        p.broker
            .publish(
                &downlink,
                bytes::Bytes::from_static(payload),
                lode_mqtt::QoS::AtMostOnce,
                false,
            )
            .await
            .expect("publish");
        if let Some(raw) = c.recv_raw(Duration::from_millis(100)).await {
            note = Some(decode(&raw).expect("valid"));
            break;
        }
    }
    let note = note.expect("a notification");
    assert_eq!(note.code, Code::CONTENT);
    assert_eq!(note.message_type, MessageType::NonConfirmable);
    assert_eq!(note.token, observe.token);
    assert!(note.observe().expect("valid").expect("Observe") > first);
    assert_eq!(note.payload, payload.to_vec());
    while c.recv_raw(Duration::from_millis(200)).await.is_some() {}

    // Deregistered: nothing more.
    let mut stop = c.request(Code::GET, &format!("/topic{downlink}"));
    stop.token = observe.token;
    stop.set_observe(1);
    stop.add_option(opt::ALINK_AUTH_TOKEN, token.into_bytes())
        .expect("option");
    assert_eq!(c.exchange(&stop).await.code, Code::CONTENT);
    p.broker
        .publish(
            &downlink,
            bytes::Bytes::from_static(payload),
            lode_mqtt::QoS::AtMostOnce,
            false,
        )
        .await
        .expect("publish");
    assert!(c.recv_raw(Duration::from_millis(300)).await.is_none());

    // Registered again; a RST to a notification ends the observation.
    let mut again = c.request(Code::GET, &format!("/topic{downlink}"));
    again.set_observe(0);
    again
        .add_option(
            opt::ALINK_AUTH_TOKEN,
            observe
                .alink_token()
                .expect("ok")
                .expect("token")
                .as_bytes()
                .to_vec(),
        )
        .expect("option");
    assert_eq!(c.exchange(&again).await.code, Code::CONTENT);
    let mut note = None;
    for _ in 0..50 {
        p.broker
            .publish(
                &downlink,
                bytes::Bytes::from_static(payload),
                lode_mqtt::QoS::AtMostOnce,
                false,
            )
            .await
            .expect("publish");
        if let Some(raw) = c.recv_raw(Duration::from_millis(100)).await {
            note = Some(decode(&raw).expect("valid"));
            break;
        }
    }
    let note = note.expect("a notification");
    assert_eq!(note.token, again.token);
    while c.recv_raw(Duration::from_millis(200)).await.is_some() {}
    c.send_raw(&encode(&Message::empty(
        MessageType::Reset,
        note.message_id,
    )))
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.broker
        .publish(
            &downlink,
            bytes::Bytes::from_static(payload),
            lode_mqtt::QoS::AtMostOnce,
            false,
        )
        .await
        .expect("publish");
    assert!(c.recv_raw(Duration::from_millis(300)).await.is_none());
    p.shutdown().await;
}
