//! Scripted servers: keep alive, refused subscriptions, protocol errors.

use std::time::Duration;

use bytes::Bytes;
use bytes::BytesMut;
use lode_mqtt::{
    ConnAck, ConnAckProperties, Packet, ProtocolVersion, PubResp, Publish, PublishProperties,
    ReasonCode, SubAck,
};
use lode_sdk::{Credential, Device, DeviceConfig, Event, QoS, Reconnect, SdkError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const V3: ProtocolVersion = ProtocolVersion::V311;

struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
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

    async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        lode_mqtt::encode(p, V3, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    /// Accepts a CONNECT and answers it with `code`; returns the announced keep alive.
    async fn connack(listener: &TcpListener, code: ReasonCode) -> (Peer, u16) {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut peer = Peer {
            stream,
            buf: BytesMut::new(),
        };
        let keep_alive = match peer.read().await {
            Some(Packet::Connect(c)) => c.keep_alive,
            other => panic!("expected CONNECT, got {other:?}"),
        };
        peer.send(&Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: ConnAckProperties::default(),
        }))
        .await;
        (peer, keep_alive)
    }

    /// Answers one SUBSCRIBE with `code` for each filter; returns the filters.
    async fn suback(&mut self, code: ReasonCode) -> Vec<String> {
        match self.read().await {
            Some(Packet::Subscribe(s)) => {
                self.send(&Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    codes: vec![code; s.filters.len()],
                    reason_string: None,
                    user_properties: Vec::new(),
                }))
                .await;
                s.filters.into_iter().map(|(f, _)| f).collect()
            }
            other => panic!("expected SUBSCRIBE, got {other:?}"),
        }
    }

    /// Accepts the CONNECT and the SDK's first SUBSCRIBE, granting it with `code`.
    async fn accept(listener: &TcpListener, code: ReasonCode) -> (Peer, u16) {
        let (mut peer, keep_alive) = Peer::connack(listener, ReasonCode::Success).await;
        peer.suback(code).await;
        (peer, keep_alive)
    }
}

fn config(port: u16) -> DeviceConfig {
    let mut c = DeviceConfig::new(
        "127.0.0.1",
        port,
        "a1TestPK001",
        "dev01",
        Credential::DeviceSecret("secret".into()),
    );
    c.keep_alive = Duration::from_secs(1);
    c
}

#[tokio::test]
async fn keep_alive_pings_and_an_unanswered_ping_ends_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut peer, keep_alive) = Peer::accept(&listener, ReasonCode::GrantedQoS1).await;
        assert_eq!(keep_alive, 1);
        let started = tokio::time::Instant::now();
        assert_eq!(peer.read().await, Some(Packet::PingReq));
        let first = started.elapsed();
        peer.send(&Packet::PingResp).await;
        assert_eq!(peer.read().await, Some(Packet::PingReq));
        // No answer this time: the client gives up and closes.
        assert_eq!(peer.read().await, None);
        first
    });
    let (_device, mut events) = Device::connect(config(port)).await.expect("connect");
    match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        Ok(Some(Event::ConnectionLost(SdkError::Timeout(what)))) => assert_eq!(what, "PINGRESP"),
        other => panic!("expected a keep-alive timeout, got {other:?}"),
    }
    let first = server.await.expect("server");
    assert!(
        first >= Duration::from_millis(800) && first <= Duration::from_millis(1500),
        "first PINGREQ after {first:?}"
    );
}

#[tokio::test]
async fn a_refused_setup_subscription_fails_the_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut peer, _) = Peer::accept(&listener, ReasonCode::UnspecifiedError).await;
        // The client ends the session it could not set up.
        assert!(matches!(peer.read().await, Some(Packet::Disconnect(_))));
    });
    match Device::connect(config(port)).await {
        Err(SdkError::SubscribeRefused { filter }) => {
            assert_eq!(
                filter,
                "/sys/a1TestPK001/dev01/thing/event/property/batch/post_reply"
            );
        }
        other => panic!("expected a refused subscription, got {other:?}"),
    }
    server.await.expect("server");
}

#[tokio::test]
async fn a_malformed_packet_is_a_protocol_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut peer, _) = Peer::accept(&listener, ReasonCode::GrantedQoS1).await;
        let _ = rx.await;
        // A PUBREL with reserved flags 0000 is malformed.
        peer.stream
            .write_all(&[0x60, 0x02, 0x00, 0x01])
            .await
            .expect("write");
        peer.read().await
    });
    let (_device, mut events) = Device::connect(config(port)).await.expect("connect");
    tx.send(()).expect("go");
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Some(Event::ConnectionLost(SdkError::Protocol(_)))) => {}
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert_eq!(server.await.expect("server"), None);
}

#[tokio::test]
async fn a_connect_without_connack_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(stream);
    });
    let mut c = config(port);
    c.connect_timeout = Duration::from_millis(300);
    assert!(matches!(
        Device::connect(c).await,
        Err(SdkError::Timeout("CONNACK"))
    ));
    server.await.expect("server");
}

#[tokio::test]
async fn reconnects_with_backoff_and_restores_subscriptions() {
    const BATCH: &str = "/sys/a1TestPK001/dev01/thing/event/property/batch/post_reply";
    const GET: &str = "/a1TestPK001/dev01/user/get";
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        // First connection: set up, one more subscription, then lost.
        let (mut peer, _) = Peer::accept(&listener, ReasonCode::GrantedQoS1).await;
        assert_eq!(
            peer.suback(ReasonCode::GrantedQoS1).await,
            vec![GET.to_owned()]
        );
        drop(peer);
        // Second: refused, the client waits longer and tries again.
        let (refused, _) = Peer::connack(&listener, ReasonCode::ServerUnavailable).await;
        drop(refused);
        // Third: accepted; every granted filter is subscribed again.
        let (mut peer, _) = Peer::connack(&listener, ReasonCode::Success).await;
        let mut filters = Vec::new();
        while filters.len() < 2 {
            filters.extend(peer.suback(ReasonCode::GrantedQoS1).await);
        }
        filters.sort();
        assert_eq!(filters, vec![GET.to_owned(), BATCH.to_owned()]);
        peer.send(&Packet::Publish(Publish {
            dup: false,
            qos: lode_mqtt::QoS::AtMostOnce,
            retain: false,
            topic: Bytes::from_static(GET.as_bytes()),
            packet_id: None,
            payload: Bytes::from_static(b"back"),
            properties: PublishProperties::default(),
        }))
        .await;
        match peer.read().await {
            Some(Packet::Publish(p)) => {
                assert_eq!(&p.topic[..], b"/a1TestPK001/dev01/user/update");
                let id = p.packet_id.expect("QoS 1");
                peer.send(&Packet::PubAck(PubResp::new(id, ReasonCode::Success)))
                    .await;
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        assert!(matches!(peer.read().await, Some(Packet::Disconnect(_))));
    });

    let mut c = config(port);
    c.keep_alive = Duration::from_secs(60);
    c.reconnect = Some(Reconnect {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
    });
    let (device, mut events) = Device::connect(c).await.expect("connect");
    let mut sub = device
        .subscribe("user/get", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    match events.recv().await {
        Some(Event::ConnectionLost(SdkError::Closed)) => {}
        other => panic!("expected the loss, got {other:?}"),
    }
    assert!(!device.is_closed(), "the handle survives the loss");
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Some(Event::Reconnected)) => {}
        other => panic!("expected the reconnection, got {other:?}"),
    }
    let m = sub.recv().await.expect("routed after the reconnection");
    assert_eq!(&m.payload[..], b"back");
    device
        .publish("user/update", &b"hi"[..], QoS::AtLeastOnce)
        .await
        .expect("publish");
    device.disconnect().await.expect("disconnect");
    assert!(matches!(events.recv().await, Some(Event::Disconnected)));
    assert!(sub.recv().await.is_none());
    server.await.expect("server");
}
