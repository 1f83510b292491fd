//! Device sign-in over real MQTT sockets: Alink signatures, topic permissions,
//! server-side subscription, refusals, dynamic registration and lifecycle.

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
use lode_registry::{
    DeviceState, NewDevice, NewProduct, RegistryLimits, RegistryStore, SqliteRegistry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

struct Platform {
    registry: Arc<dyn RegistryStore>,
    broker: Broker,
    addr: SocketAddr,
    pk: String,
    _dir: tempfile::TempDir,
}

async fn platform(config: DeviceAuthConfig, dynamic: bool) -> Platform {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry: Arc<dyn RegistryStore> = Arc::new(
        SqliteRegistry::open(dir.path().join("registry.db"), RegistryLimits::default())
            .await
            .expect("registry"),
    );
    let account = registry.create_account("acme").await.expect("account");
    let mut product = NewProduct::new("meters");
    product.dynamic_registration = dynamic;
    let product = registry
        .create_product(&account.id, product)
        .await
        .expect("product");
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
    let b = broker.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let b = b.clone();
            tokio::spawn(async move {
                let info = ConnInfo {
                    peer,
                    listener: "tcp",
                    client_cert: None,
                };
                b.serve_connection(stream, info).await;
            });
        }
    });
    Platform {
        registry,
        broker,
        addr,
        pk: product.product_key,
        _dir: dir,
    }
}

impl Platform {
    async fn device(&self, name: &str) -> lode_registry::Device {
        self.registry
            .create_device(&self.pk, NewDevice::new(name))
            .await
            .expect("device")
    }
}

/// The Python SDK's clientId and password for a device.
fn alink_connect(pk: &str, dn: &str, secret: &str, ss: bool, version: ProtocolVersion) -> Connect {
    let prefix = format!("{pk}&{dn}");
    let ts = "1795827149";
    let content = lode_alink::mqtt_sign_content(&prefix, dn, pk, Some(ts));
    let password = lode_alink::sign(lode_alink::SignMethod::HmacSha1, secret, &content);
    let ss = if ss { ",_ss=1" } else { "" };
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: format!("{prefix}|securemode=3,signmethod=hmacsha1,ext=1{ss},timestamp={ts}|"),
        will: None,
        username: Some(format!("{dn}&{pk}")),
        password: Some(Bytes::from(password)),
        properties: ConnectProperties::default(),
    }
}

struct Client {
    stream: TcpStream,
    version: ProtocolVersion,
    buf: BytesMut,
}

impl Client {
    async fn connect(addr: SocketAddr, connect: Connect) -> (Client, ReasonCode) {
        let stream = TcpStream::connect(addr).await.expect("tcp");
        let mut c = Client {
            stream,
            version: connect.protocol,
            buf: BytesMut::new(),
        };
        c.send(Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => (c, ack.code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        lode_mqtt::encode(&p, self.version, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("timed out")
    }

    async fn recv_within(&mut self, d: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(d, async {
            loop {
                if let Some(p) =
                    lode_mqtt::decode(&mut self.buf, self.version, u32::MAX).expect("valid")
                {
                    return Some(p.packet);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .map_err(|_| ())
    }

    async fn subscribe(&mut self, filter: &str) -> ReasonCode {
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
            Some(Packet::SubAck(ack)) => ack.codes[0],
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, payload: &[u8]) -> Option<ReasonCode> {
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            packet_id: Some(1),
            payload: Bytes::copy_from_slice(payload),
            properties: PublishProperties::default(),
        }))
        .await;
        loop {
            match self.recv().await {
                Some(Packet::PubAck(a)) => return Some(a.code),
                Some(Packet::Publish(p)) => self.ack(&p).await,
                Some(other) => panic!("expected PUBACK, got {other:?}"),
                None => return None,
            }
        }
    }

    async fn ack(&mut self, p: &Publish) {
        if let Some(id) = p.packet_id {
            self.send(Packet::PubAck(PubResp::new(id, ReasonCode::Success)))
                .await;
        }
    }

    async fn next_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(p)) => {
                self.ack(&p).await;
                p
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn signed_device_connects_and_is_confined_to_its_topics() {
    let p = platform(DeviceAuthConfig::default(), false).await;
    let d = p.device("meter-0001").await;
    let (mut c, code) = Client::connect(
        p.addr,
        alink_connect(&p.pk, "meter-0001", &d.device_secret, false, V5),
    )
    .await;
    assert_eq!(code, ReasonCode::Success);

    // Its own topics.
    assert_eq!(
        c.subscribe(&format!("/{}/meter-0001/user/get", p.pk)).await,
        ReasonCode::GrantedQoS1
    );
    assert_eq!(
        c.publish(
            &format!("/sys/{}/meter-0001/thing/event/property/post", p.pk),
            b"{}"
        )
        .await,
        Some(ReasonCode::NoMatchingSubscribers)
    );
    // Escapes: another device, wildcards over devices, the whole tree, shared subscriptions.
    for filter in [
        format!("/{}/meter-0002/user/get", p.pk),
        format!("/{}/+/user/get", p.pk),
        format!("/sys/{}/+/thing/service/+", p.pk),
        "#".to_owned(),
        "$share/g/#".to_owned(),
        format!("$share/g//{}/+/user/get", p.pk),
    ] {
        assert_eq!(
            c.subscribe(&filter).await,
            ReasonCode::NotAuthorized,
            "{filter}"
        );
    }
    assert_eq!(
        c.publish(
            &format!("/sys/{}/meter-0002/thing/event/property/post", p.pk),
            b"{}"
        )
        .await,
        Some(ReasonCode::NotAuthorized)
    );
    assert_eq!(
        c.publish(&format!("/{}/meter-0001/user/get", p.pk), b"{}")
            .await,
        Some(ReasonCode::NotAuthorized),
        "a subscribe-only category cannot be published to"
    );
    p.broker.shutdown().await;
}

#[tokio::test]
async fn refusals_have_the_right_codes() {
    let p = platform(DeviceAuthConfig::default(), false).await;
    let d = p.device("meter-0001").await;
    let mut wrong = alink_connect(&p.pk, "meter-0001", &d.device_secret, false, V3);
    wrong.password = Some(Bytes::from_static(b"00112233"));
    assert_eq!(
        Client::connect(p.addr, wrong).await.1,
        ReasonCode::BadUserNameOrPassword
    );

    let unknown = alink_connect(&p.pk, "nobody-here", &d.device_secret, false, V3);
    assert_eq!(
        Client::connect(p.addr, unknown).await.1,
        ReasonCode::BadUserNameOrPassword
    );

    let mut slow = alink_connect(&p.pk, "meter-0001", &d.device_secret, false, V5);
    slow.keep_alive = 10;
    assert_eq!(
        Client::connect(p.addr, slow).await.1,
        ReasonCode::ImplementationSpecificError
    );

    p.registry
        .set_device_enabled(&p.pk, "meter-0001", false, Some("test"))
        .await
        .expect("disable");
    let disabled = alink_connect(&p.pk, "meter-0001", &d.device_secret, false, V5);
    assert_eq!(
        Client::connect(p.addr, disabled).await.1,
        ReasonCode::NotAuthorized
    );

    let anonymous = Connect {
        username: None,
        password: None,
        ..alink_connect(&p.pk, "x", "y", false, V5)
    };
    assert_eq!(
        Client::connect(p.addr, anonymous).await.1,
        ReasonCode::NotAuthorized
    );
    p.broker.shutdown().await;
}

#[tokio::test]
async fn sixth_connect_in_a_minute_is_refused() {
    let p = platform(DeviceAuthConfig::default(), false).await;
    let d = p.device("meter-0001").await;
    for _ in 0..5 {
        let (_c, code) = Client::connect(
            p.addr,
            alink_connect(&p.pk, "meter-0001", &d.device_secret, false, V5),
        )
        .await;
        assert_eq!(code, ReasonCode::Success);
    }
    let (_c, code) = Client::connect(
        p.addr,
        alink_connect(&p.pk, "meter-0001", &d.device_secret, false, V5),
    )
    .await;
    assert_eq!(code, ReasonCode::ConnectionRateExceeded);
    p.broker.shutdown().await;
}

#[tokio::test]
async fn server_side_subscription_delivers_downlinks_and_status_is_recorded() {
    let config = DeviceAuthConfig {
        allow_applications: true,
        ..DeviceAuthConfig::default()
    };
    let p = platform(config, false).await;
    let d = p.device("meter-0001").await;
    let app_connect = Connect {
        username: None,
        password: None,
        client_id: "console".into(),
        ..alink_connect(&p.pk, "x", "y", false, V3)
    };
    let (mut app, code) = Client::connect(p.addr, app_connect).await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(
        app.subscribe("/as/mqtt/status/#").await,
        ReasonCode::GrantedQoS1
    );

    let (mut dev, code) = Client::connect(
        p.addr,
        alink_connect(&p.pk, "meter-0001", &d.device_secret, true, V3),
    )
    .await;
    assert_eq!(code, ReasonCode::Success);
    let online = app.next_publish().await;
    let status: serde_json::Value = serde_json::from_slice(&online.payload).expect("json");
    assert_eq!(status["status"], "online");
    assert_eq!(status["deviceName"], "meter-0001");

    // A property set reaches the device without it ever subscribing...
    let set = format!("/sys/{}/meter-0001/thing/service/property/set", p.pk);
    assert_eq!(
        app.publish(&set, br#"{"id":"1","params":{}}"#).await,
        Some(ReasonCode::Success)
    );
    assert_eq!(
        dev.next_publish().await.payload,
        Bytes::from_static(br#"{"id":"1","params":{}}"#)
    );
    // ...and its own reply under the same auto-subscribed filter is not echoed back.
    let reply = format!("/sys/{}/meter-0001/thing/service/property/set_reply", p.pk);
    dev.publish(&reply, b"{}").await;
    assert!(
        dev.recv_within(Duration::from_millis(300)).await.is_err(),
        "no echo"
    );

    let device = p
        .registry
        .get_device(&p.pk, "meter-0001")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(device.state, DeviceState::Online);
    assert!(device.activated_at.is_some());
    drop(dev);
    let offline = app.next_publish().await;
    let status: serde_json::Value = serde_json::from_slice(&offline.payload).expect("json");
    assert_eq!(status["status"], "offline");
    let device = p
        .registry
        .get_device(&p.pk, "meter-0001")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(device.state, DeviceState::Offline);
    p.broker.shutdown().await;
}

#[tokio::test]
async fn new_sign_in_of_the_same_device_ends_the_old_one() {
    let p = platform(DeviceAuthConfig::default(), false).await;
    let d = p.device("meter-0001").await;
    let (mut old, _) = Client::connect(
        p.addr,
        alink_connect(&p.pk, "meter-0001", &d.device_secret, false, V5),
    )
    .await;
    // Same device, the C SDK's clientId style.
    let mut c = alink_connect(&p.pk, "meter-0001", &d.device_secret, false, V5);
    let prefix = format!("{}.meter-0001", p.pk);
    let content =
        lode_alink::mqtt_sign_content(&prefix, "meter-0001", &p.pk, Some("2524608000000"));
    c.client_id = format!(
        "{prefix}|timestamp=2524608000000,_v=sdk-c-3.2.0,securemode=2,signmethod=hmacsha256,lan=C,_ss=1,gw=0,ext=0|"
    );
    c.password = Some(Bytes::from(
        lode_alink::sign(
            lode_alink::SignMethod::HmacSha256,
            &d.device_secret,
            &content,
        )
        .to_uppercase(),
    ));
    let (_new, code) = Client::connect(p.addr, c).await;
    assert_eq!(code, ReasonCode::Success);
    match old.recv().await {
        Some(Packet::Disconnect(x)) => assert_eq!(x.code, ReasonCode::SessionTakenOver),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    p.broker.shutdown().await;
}

fn register_connect(pk: &str, dn: &str, product_secret: &str, auth_type: &str) -> Connect {
    let random = "px8kGEXcGFHYcAS";
    let content = lode_alink::register_sign_content(dn, pk, random);
    let sign = lode_alink::sign(lode_alink::SignMethod::HmacSha256, product_secret, &content);
    Connect {
        protocol: V3,
        clean_start: true,
        keep_alive: 60,
        client_id: format!(
            "{dn}.{pk}|random={random},authType={auth_type},securemode=2,signmethod=hmacsha256|"
        ),
        will: None,
        username: Some(format!("{dn}&{pk}")),
        password: Some(Bytes::from(sign)),
        properties: ConnectProperties::default(),
    }
}

#[tokio::test]
async fn dynamic_registration_over_mqtt() {
    let config = DeviceAuthConfig {
        allow_applications: true,
        ..DeviceAuthConfig::default()
    };
    let p = platform(config, true).await;
    // An application watches the product's lifecycle messages.
    let (mut app, code) = Client::connect(
        p.addr,
        Connect {
            username: None,
            password: None,
            client_id: "console".into(),
            ..alink_connect(&p.pk, "x", "y", false, V3)
        },
    )
    .await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(
        app.subscribe(&format!("/{}/+/thing/lifecycle", p.pk)).await,
        ReasonCode::GrantedQoS1
    );
    let product = p
        .registry
        .get_product(&p.pk)
        .await
        .expect("get")
        .expect("product");
    let pre = p.device("pre-registered").await;

    // register: the secret of a pre-registered device, once.
    let (mut c, code) = Client::connect(
        p.addr,
        register_connect(&p.pk, "pre-registered", &product.product_secret, "register"),
    )
    .await;
    assert_eq!(code, ReasonCode::Success);
    let msg = c.next_publish().await;
    assert_eq!(&msg.topic[..], b"/ext/register");
    let body: serde_json::Value = serde_json::from_slice(&msg.payload).expect("json");
    assert_eq!(body["deviceSecret"], pre.device_secret);
    let (_c, again) = Client::connect(
        p.addr,
        register_connect(&p.pk, "pre-registered", &product.product_secret, "register"),
    )
    .await;
    assert_eq!(again, ReasonCode::NotAuthorized, "a device registers once");

    // Wrong product secret.
    let (_c, bad) = Client::connect(
        p.addr,
        register_connect(&p.pk, "pre-registered", "not-the-secret", "register"),
    )
    .await;
    assert_eq!(bad, ReasonCode::BadUserNameOrPassword);

    // regnwl: a new device gets a token, then signs in with it.
    let (mut c, code) = Client::connect(
        p.addr,
        register_connect(&p.pk, "brand-new-1", &product.product_secret, "regnwl"),
    )
    .await;
    assert_eq!(code, ReasonCode::Success);
    let msg = c.next_publish().await;
    assert_eq!(&msg.topic[..], b"/ext/regnwl");
    // The new device's creation is announced.
    let created = app.next_publish().await;
    assert_eq!(
        created.topic,
        format!("/{}/brand-new-1/thing/lifecycle", p.pk).as_bytes()
    );
    let event: serde_json::Value = serde_json::from_slice(&created.payload).expect("json");
    assert_eq!(
        (&event["action"], &event["deviceName"]),
        (
            &serde_json::json!("create"),
            &serde_json::json!("brand-new-1")
        )
    );
    let body: serde_json::Value = serde_json::from_slice(&msg.payload).expect("json");
    let token = body["deviceToken"].as_str().expect("token").to_owned();
    let client_id = body["clientId"].as_str().expect("client id").to_owned();
    let login = Connect {
        protocol: V3,
        clean_start: true,
        keep_alive: 60,
        client_id: format!(
            "{client_id}|authType=connwl,securemode=-2,_ss=1,ext=3,lan=Python,_v=1.2.13|"
        ),
        will: None,
        username: Some(format!("brand-new-1&{}", p.pk)),
        password: Some(Bytes::from(token)),
        properties: ConnectProperties::default(),
    };
    let (_dev, code) = Client::connect(p.addr, login.clone()).await;
    assert_eq!(code, ReasonCode::Success);
    let mut forged = login;
    forged.password = Some(Bytes::from_static(b"0123456789abcdef0123456789abcdef"));
    assert_eq!(
        Client::connect(p.addr, forged).await.1,
        ReasonCode::BadUserNameOrPassword
    );
    p.broker.shutdown().await;
}

#[tokio::test]
async fn registration_needs_the_product_switch() {
    let p = platform(DeviceAuthConfig::default(), false).await;
    let product = p
        .registry
        .get_product(&p.pk)
        .await
        .expect("get")
        .expect("product");
    p.device("pre-registered").await;
    let (_c, code) = Client::connect(
        p.addr,
        register_connect(&p.pk, "pre-registered", &product.product_secret, "register"),
    )
    .await;
    assert_eq!(code, ReasonCode::NotAuthorized);
    p.broker.shutdown().await;
}
