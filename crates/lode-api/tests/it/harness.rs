//! Test harness: the API on a loopback port, a signed HTTP/1.1 client and a
//! packet-level MQTT client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use lode_api::{ApiConfig, ApiState, signing};
use lode_broker::{AllowAnonymous, AuthHook, Broker, BrokerConfig};
use lode_device::{DeviceAuth, DeviceAuthConfig};
use lode_mqtt::{
    Connect, ConnectProperties, Packet, ProtocolVersion, QoS, Subscribe, SubscriptionOptions,
};
use lode_registry::{RegistryLimits, RegistryStore, SqliteRegistry};
use lode_thing::{DeviceSession, Presence, ThingConfig, ThingEngine};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) struct Api {
    pub(crate) addr: SocketAddr,
    pub(crate) mqtt_addr: SocketAddr,
    pub(crate) broker: Broker,
    pub(crate) registry: Arc<dyn RegistryStore>,
    pub(crate) key: Key,
    _dir: tempfile::TempDir,
}

/// An access key and its account.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) account_id: String,
    pub(crate) id: String,
    pub(crate) secret: String,
}

pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts an API error with `status` and `code`, and a request id that
    /// matches the response header.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, code: &str) {
        let body = self.json();
        assert_eq!(
            (self.status, body["code"].as_str().unwrap_or("")),
            (status, code),
            "unexpected error {body}"
        );
        assert!(body["message"].is_string());
        let rid = body["requestId"].as_str().expect("requestId");
        assert_eq!(Some(rid), self.header("x-lode-request-id"));
    }

    #[track_caller]
    pub(crate) fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "body {}",
            String::from_utf8_lossy(&self.body)
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

static NONCE: AtomicU64 = AtomicU64::new(0);

pub(crate) fn nonce() -> String {
    format!(
        "n{}-{}",
        NONCE.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

pub(crate) fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).expect("clock after 1970")
}

impl Api {
    pub(crate) async fn start() -> Api {
        Self::start_with(ApiConfig::default(), Arc::new(AllowAnonymous)).await
    }

    pub(crate) async fn start_with(config: ApiConfig, auth: Arc<dyn AuthHook>) -> Api {
        Self::boot(config, Some(auth)).await
    }

    /// The API with the thing-model runtime, devices signing in with their secrets
    /// (and applications accepted, for subscribers); no throttling, since the
    /// tests poll.
    pub(crate) async fn start_thing() -> Api {
        let unlimited = lode_api::Qps {
            per_account: 0,
            per_ip: 0,
        };
        let config = ApiConfig {
            throttle: lode_api::ThrottleConfig {
                other: unlimited,
                rrpc: unlimited,
                ..lode_api::ThrottleConfig::default()
            },
            ..ApiConfig::default()
        };
        Self::boot(config, None).await
    }

    /// Starts everything; without `auth`, devices sign in through `DeviceAuth` and
    /// the thing-model runtime is attached.
    async fn boot(config: ApiConfig, auth: Option<Arc<dyn AuthHook>>) -> Api {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry: Arc<dyn RegistryStore> = Arc::new(
            SqliteRegistry::open(dir.path().join("registry.db"), RegistryLimits::default())
                .await
                .expect("registry opens"),
        );
        let devices = match auth {
            Some(_) => None,
            None => Some(DeviceAuth::start(
                registry.clone(),
                DeviceAuthConfig {
                    allow_applications: true,
                    connects_per_minute: 100,
                    ..DeviceAuthConfig::default()
                },
            )),
        };
        let hook: Arc<dyn AuthHook> = match (auth, &devices) {
            (Some(auth), _) => auth,
            (None, Some(d)) => d.clone(),
            (None, None) => Arc::new(AllowAnonymous),
        };
        let broker = Broker::open(
            BrokerConfig::default(),
            Arc::new(lode_store::MemoryStore::new()),
            hook,
        )
        .await
        .expect("broker opens");
        let mut state = ApiState::new(registry.clone(), broker.clone(), config);
        if let Some(devices) = devices {
            devices.attach_broker(broker.clone());
            let history = lode_history::EmbeddedHistory::open(
                dir.path().join("history"),
                &lode_history::HistoryConfig::default(),
            )
            .expect("history opens");
            let scripts = lode_script::ScriptEngine::new(lode_script::EngineConfig::default())
                .expect("script engine");
            let engine = ThingEngine::start(
                registry.clone(),
                Arc::new(history),
                scripts,
                ThingConfig::default(),
            );
            engine.attach(broker.clone(), Arc::new(Online(devices)));
            state = state.with_thing(engine);
        }

        let mqtt_addr = lode_testkit::serve_tcp(broker.clone()).await;

        let app = lode_api::router(state);
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = http.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(
                http,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });

        let key = new_account(registry.as_ref(), "first").await;
        Api {
            addr,
            mqtt_addr,
            broker,
            registry,
            key,
            _dir: dir,
        }
    }

    /// A signed call with the default key; `path` may carry a query.
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call_as(&self.key, method, path, body).await
    }

    pub(crate) async fn call_as(
        &self,
        key: &Key,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let headers = sign(key, method, path, &bytes, now_ms(), &nonce());
        http(self.addr, method, path, &headers, &bytes).await
    }

    /// A call with a bearer token.
    pub(crate) async fn call_bearer(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let headers = vec![("authorization".to_owned(), format!("Bearer {token}"))];
        http(self.addr, method, path, &headers, &bytes).await
    }

    /// A product of the default account; returns its JSON.
    pub(crate) async fn product(&self, name: &str, dynamic: bool) -> Value {
        self.call(
            "POST",
            "/api/v1/products",
            Some(serde_json::json!({"name": name, "dynamicRegistration": dynamic})),
        )
        .await
        .ok(201)
    }
}

/// Who is online, as the device sign-in layer knows it.
struct Online(Arc<DeviceAuth>);

impl Presence for Online {
    fn session(&self, product_key: &str, device_name: &str) -> Option<DeviceSession> {
        self.0
            .online(product_key, device_name)
            .map(|ext_rrpc| DeviceSession { ext_rrpc })
    }
}

/// A new account with one access key.
pub(crate) async fn new_account(registry: &dyn RegistryStore, name: &str) -> Key {
    let account = registry.create_account(name).await.expect("account");
    let key = registry
        .create_access_key(&account.id)
        .await
        .expect("access key");
    Key {
        account_id: account.id,
        id: key.id,
        secret: key.secret,
    }
}

/// The signature headers of a request.
pub(crate) fn sign(
    key: &Key,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    ts: u64,
    nonce: &str,
) -> Vec<(String, String)> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let credentials = signing::Credentials {
        access_key_id: &key.id,
        secret: &key.secret,
    };
    signing::signature_headers(credentials, method, path, query, body, ts, nonce)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// One HTTP/1.1 request over a new connection.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Resp {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await.expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("response within 20 s")
        .expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// A packet-level MQTT 3.1.1 client.
pub(crate) struct Mqtt {
    stream: TcpStream,
    buf: BytesMut,
}

const V3: ProtocolVersion = ProtocolVersion::V311;

impl Mqtt {
    pub(crate) async fn connect(addr: SocketAddr, client_id: &str, username: Option<&str>) -> Mqtt {
        Self::connect_with(addr, client_id, username, None).await
    }

    /// Signs in as device `pk/dn` with its secret (HMAC-SHA256), with
    /// server-side subscription (`_ss=1`) and sync calls on `/ext/rrpc` (`ext=1`).
    pub(crate) async fn connect_device(addr: SocketAddr, pk: &str, dn: &str, secret: &str) -> Mqtt {
        let client_id = format!("{dn}|securemode=3,signmethod=hmacsha256,_ss=1,ext=1|");
        let content = format!("clientId{dn}deviceName{dn}productKey{pk}");
        let password = lode_alink::sign(lode_alink::SignMethod::HmacSha256, secret, &content);
        Self::connect_with(
            addr,
            &client_id,
            Some(&format!("{dn}&{pk}")),
            Some(password.into_bytes()),
        )
        .await
    }

    async fn connect_with(
        addr: SocketAddr,
        client_id: &str,
        username: Option<&str>,
        password: Option<Vec<u8>>,
    ) -> Mqtt {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut c = Mqtt {
            stream,
            buf: BytesMut::new(),
        };
        c.send(Packet::Connect(Box::new(Connect {
            protocol: V3,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            will: None,
            username: username.map(str::to_owned),
            password: password.map(bytes::Bytes::from),
            properties: ConnectProperties::default(),
        })))
        .await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, lode_mqtt::ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    pub(crate) async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        lode_mqtt::encode(&packet, V3, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    pub(crate) async fn subscribe(&mut self, filter: &str) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(
                filter.to_owned(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
            subscription_identifier: None,
            user_properties: Vec::new(),
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(_)) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes with QoS 1 (packet id 1; the acknowledgement is left to `next_publish`).
    pub(crate) async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.send(Packet::Publish(lode_mqtt::Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: bytes::Bytes::copy_from_slice(topic.as_bytes()),
            packet_id: Some(1),
            properties: Default::default(),
            payload: bytes::Bytes::copy_from_slice(payload),
        }))
        .await;
    }

    /// The next PUBLISH (acknowledged when QoS 1), skipping other packets; its
    /// topic and payload.
    pub(crate) async fn next_publish(&mut self) -> (String, Vec<u8>) {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => {
                    if let Some(id) = p.packet_id {
                        self.send(Packet::PubAck(lode_mqtt::PubResp::new(
                            id,
                            lode_mqtt::ReasonCode::Success,
                        )))
                        .await;
                    }
                    return (
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        p.payload.to_vec(),
                    );
                }
                Some(_) => {}
                None => panic!("connection closed while waiting for a PUBLISH"),
            }
        }
    }

    /// The next PUBLISH on `topic` as JSON, skipping others.
    pub(crate) async fn expect_json(&mut self, topic: &str) -> Value {
        loop {
            let (t, payload) = self.next_publish().await;
            if t == topic {
                return serde_json::from_slice(&payload).expect("JSON payload");
            }
        }
    }

    /// Closes the connection with a DISCONNECT.
    pub(crate) async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Default::default())).await;
    }

    /// The next packet, `None` when the connection closed; panics after 5 s.
    pub(crate) async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(d) =
                    lode_mqtt::decode(&mut self.buf, V3, u32::MAX).expect("valid packet")
                {
                    return Some(d.packet);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a packet or close within 5 s")
    }
}
