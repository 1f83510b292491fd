//! A broker with device sign-in on port 0 (SQLite registry in a tempdir), and a plain MQTT
//! "application" client that plays the cloud.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lode_broker::{Broker, BrokerConfig, ConnInfo};
use lode_device::{DeviceAuth, DeviceAuthConfig};
use lode_mqtt::{
    Connect, ConnectProperties, Packet, ProtocolVersion, PubResp, Publish, PublishProperties, QoS,
    ReasonCode, Subscribe, SubscriptionOptions,
};
use lode_registry::{NewDevice, NewProduct, RegistryLimits, RegistryStore, SqliteRegistry};
use lode_sdk::{Credential, DeviceConfig};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const V3: ProtocolVersion = ProtocolVersion::V311;
const WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Platform {
    pub(crate) registry: Arc<dyn RegistryStore>,
    pub(crate) broker: Broker,
    pub(crate) addr: SocketAddr,
    pub(crate) pk: String,
    pub(crate) product_secret: String,
    _dir: tempfile::TempDir,
}

/// Serves the broker on `listener`, each connection through `wrap`.
pub(crate) fn serve<W, F, S>(broker: Broker, listener: TcpListener, wrap: W)
where
    W: Fn(TcpStream) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Option<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let wrap = Arc::new(wrap);
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let b = broker.clone();
            let wrap = wrap.clone();
            tokio::spawn(async move {
                if let Some(stream) = wrap(stream).await {
                    let info = ConnInfo {
                        peer,
                        listener: "tcp",
                        client_cert: None,
                    };
                    b.serve_connection(stream, info).await;
                }
            });
        }
    });
}

impl Platform {
    /// A platform on plain TCP.
    pub(crate) async fn start() -> Platform {
        Platform::start_with(|broker, listener| {
            serve(broker, listener, |s| async move { Some(s) });
        })
        .await
    }

    /// A platform whose product allows dynamic registration and whose hook accepts
    /// applications; `listen` serves the broker on the bound listener.
    pub(crate) async fn start_with(listen: impl FnOnce(Broker, TcpListener)) -> Platform {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry: Arc<dyn RegistryStore> = Arc::new(
            SqliteRegistry::open(dir.path().join("registry.db"), RegistryLimits::default())
                .await
                .expect("registry"),
        );
        let account = registry.create_account("acme").await.expect("account");
        let mut product = NewProduct::new("meters");
        product.dynamic_registration = true;
        let product = registry
            .create_product(&account.id, product)
            .await
            .expect("product");
        let config = DeviceAuthConfig {
            allow_applications: true,
            connects_per_minute: 1000,
            ..DeviceAuthConfig::default()
        };
        let auth = DeviceAuth::start(registry.clone(), config);
        let broker = Broker::open(
            BrokerConfig::default(),
            Arc::new(lode_store::MemoryStore::new()),
            auth.clone(),
        )
        .await
        .expect("broker");
        auth.attach_broker(broker.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        listen(broker.clone(), listener);
        Platform {
            registry,
            broker,
            addr,
            pk: product.product_key,
            product_secret: product.product_secret,
            _dir: dir,
        }
    }

    /// Creates a device and returns its DeviceSecret.
    pub(crate) async fn device(&self, name: &str) -> String {
        self.registry
            .create_device(&self.pk, NewDevice::new(name))
            .await
            .expect("device")
            .device_secret
    }

    /// A device configuration for plain TCP.
    pub(crate) fn config(&self, name: &str, secret: &str) -> DeviceConfig {
        DeviceConfig::new(
            "127.0.0.1",
            self.addr.port(),
            &self.pk,
            name,
            Credential::DeviceSecret(secret.to_owned()),
        )
    }

    /// Creates a device and returns a configuration for it.
    pub(crate) async fn new_device(&self, name: &str) -> DeviceConfig {
        let secret = self.device(name).await;
        self.config(name, &secret)
    }

    /// The cloud side, subscribed to `filters`.
    pub(crate) async fn cloud(&self, filters: &[&str]) -> Cloud {
        let mut c = Cloud::connect(self.addr).await;
        for f in filters {
            c.subscribe(f).await;
        }
        c
    }

    /// `/sys/${pk}/${dn}/<suffix>`.
    pub(crate) fn sys(&self, dn: &str, suffix: &str) -> String {
        format!("/sys/{}/{dn}/{suffix}", self.pk)
    }
}

/// A plain MQTT 3.1.1 application client (no device username: full access).
pub(crate) struct Cloud {
    stream: TcpStream,
    buf: BytesMut,
    queued: VecDeque<Publish>,
    next_id: u16,
}

/// A received message, decoded.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
}

impl Received {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("json payload")
    }
}

impl Cloud {
    pub(crate) async fn connect(addr: SocketAddr) -> Cloud {
        let stream = TcpStream::connect(addr).await.expect("tcp");
        let mut c = Cloud {
            stream,
            buf: BytesMut::new(),
            queued: VecDeque::new(),
            next_id: 0,
        };
        c.send(Packet::Connect(Box::new(Connect {
            protocol: V3,
            clean_start: true,
            keep_alive: 0,
            client_id: format!("cloud-{}", rand::random::<u32>()),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        })))
        .await;
        match c.read().await {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        lode_mqtt::encode(&p, V3, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    async fn read(&mut self) -> Option<Packet> {
        loop {
            if let Some(d) = lode_mqtt::decode(&mut self.buf, V3, u32::MAX).expect("valid") {
                return Some(d.packet);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    fn packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    pub(crate) async fn subscribe(&mut self, filter: &str) {
        let packet_id = self.packet_id();
        self.send(Packet::Subscribe(Subscribe {
            packet_id,
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
        loop {
            match tokio::time::timeout(WAIT, self.read())
                .await
                .expect("SUBACK in time")
            {
                Some(Packet::SubAck(a)) => {
                    assert!(!a.codes[0].is_error(), "subscribe {filter}");
                    return;
                }
                Some(Packet::Publish(p)) => self.stash(p).await,
                Some(_) => {}
                None => panic!("closed while subscribing"),
            }
        }
    }

    async fn stash(&mut self, p: Publish) {
        if let Some(id) = p.packet_id {
            self.send(Packet::PubAck(PubResp::new(id, ReasonCode::Success)))
                .await;
        }
        self.queued.push_back(p);
    }

    /// Publishes at QoS 1 without waiting for the PUBACK.
    pub(crate) async fn publish(&mut self, topic: &str, payload: impl Into<Bytes>) {
        let packet_id = self.packet_id();
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            packet_id: Some(packet_id),
            payload: payload.into(),
            properties: PublishProperties::default(),
        }))
        .await;
    }

    /// Publishes a JSON value.
    pub(crate) async fn publish_json(&mut self, topic: &str, v: &Value) {
        self.publish(topic, v.to_string()).await;
    }

    /// The next message within `d`, if any.
    pub(crate) async fn next_within(&mut self, d: Duration) -> Option<Received> {
        if let Some(p) = self.queued.pop_front() {
            return Some(received(p));
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let packet = tokio::time::timeout_at(deadline, self.read())
                .await
                .ok()??;
            if let Packet::Publish(p) = packet {
                self.stash(p).await;
                return self.queued.pop_front().map(received);
            }
        }
    }

    /// The next message.
    pub(crate) async fn next(&mut self) -> Received {
        self.next_within(WAIT).await.expect("a message in time")
    }

    /// The next message whose JSON payload has a `code` (answers, not requests: the cloud
    /// also hears its own requests on the topics it subscribed to).
    pub(crate) async fn next_answer(&mut self) -> Received {
        loop {
            let m = self.next().await;
            let is_answer = serde_json::from_slice::<Value>(&m.payload)
                .ok()
                .is_some_and(|v| v.get("code").is_some());
            if is_answer {
                return m;
            }
        }
    }

    /// Answers an Alink request on `<topic>_reply` with code 200 and `data`.
    pub(crate) async fn reply(&mut self, request: &Received, data: Value) {
        let id = request.json()["id"].clone();
        let body = serde_json::json!({"id": id, "code": 200, "data": data, "message": "success", "version": "1.0"});
        self.publish_json(&format!("{}_reply", request.topic), &body)
            .await;
    }
}

fn received(p: Publish) -> Received {
    Received {
        topic: String::from_utf8(p.topic.to_vec()).expect("utf-8 topic"),
        payload: p.payload,
    }
}
