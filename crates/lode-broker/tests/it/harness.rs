//! Test harness: a broker on 127.0.0.1:0 and a packet-level client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lode_broker::{AllowAnonymous, AuthHook, Broker, BrokerConfig, ConnInfo};
use lode_mqtt::{
    ConnAck, Connect, ConnectProperties, Packet, ProtocolVersion, PubResp, Publish,
    PublishProperties, QoS, ReasonCode, Subscribe, SubscriptionOptions, Will,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const V3: ProtocolVersion = ProtocolVersion::V311;
pub(crate) const V5: ProtocolVersion = ProtocolVersion::V5;

pub(crate) struct TestBroker {
    pub(crate) broker: Broker,
    pub(crate) addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    pub(crate) async fn start() -> TestBroker {
        Self::with(
            BrokerConfig::default(),
            Arc::new(lode_store::MemoryStore::new()),
        )
        .await
    }

    pub(crate) async fn with_config(config: BrokerConfig) -> TestBroker {
        Self::with(config, Arc::new(lode_store::MemoryStore::new())).await
    }

    pub(crate) async fn embedded(dir: &Path) -> TestBroker {
        // The previous broker's store closes asynchronously after its shutdown.
        let mut tries = 0;
        let store = loop {
            match lode_store::EmbeddedStore::open(dir) {
                Ok(store) => break store,
                Err(e) if tries < 50 && e.to_string().contains("Locked") => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("store should open: {e}"),
            }
        };
        Self::with(BrokerConfig::default(), Arc::new(store)).await
    }

    pub(crate) async fn with(
        config: BrokerConfig,
        store: Arc<dyn lode_store::BrokerStore>,
    ) -> TestBroker {
        Self::with_auth(config, store, Arc::new(AllowAnonymous)).await
    }

    pub(crate) async fn with_auth(
        config: BrokerConfig,
        store: Arc<dyn lode_store::BrokerStore>,
        auth: Arc<dyn AuthHook>,
    ) -> TestBroker {
        let broker = Broker::open(config, store, auth)
            .await
            .expect("broker should open");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let b = broker.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let b = b.clone();
                tokio::spawn(async move {
                    b.serve_connection(
                        stream,
                        ConnInfo {
                            peer,
                            listener: "tcp",
                            client_cert: None,
                        },
                    )
                    .await;
                });
            }
        });
        TestBroker {
            broker,
            addr,
            accept,
        }
    }

    /// Waits until exactly `n` clients are connected (the broker has processed
    /// every disconnect before it).
    pub(crate) async fn wait_connected(&self, n: usize) {
        for _ in 0..500 {
            if self.broker.connected_clients() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} connected clients, have {}",
            self.broker.connected_clients()
        );
    }

    pub(crate) async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
        self.broker.shutdown().await;
    }
}

pub(crate) fn connect_packet(version: ProtocolVersion, client_id: &str, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 60,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

pub(crate) fn will(topic: &str, payload: &'static [u8]) -> Will {
    Will {
        topic: topic.to_owned(),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    }
}

pub(crate) fn publish(topic: &str, payload: &[u8], qos: QoS, packet_id: Option<u16>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: Bytes::copy_from_slice(topic.as_bytes()),
        packet_id,
        payload: Bytes::copy_from_slice(payload),
        properties: PublishProperties::default(),
    }
}

pub(crate) fn subscribe(packet_id: u16, filter: &str, qos: QoS) -> Subscribe {
    Subscribe {
        packet_id,
        filters: vec![(
            filter.to_owned(),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
        subscription_identifier: None,
        user_properties: Vec::new(),
    }
}

pub(crate) struct Client {
    pub(crate) stream: TcpStream,
    pub(crate) version: ProtocolVersion,
    buf: BytesMut,
}

impl Client {
    pub(crate) async fn raw(addr: SocketAddr, version: ProtocolVersion) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    /// Connects and returns the CONNACK.
    pub(crate) async fn connect_with(addr: SocketAddr, connect: Connect) -> (Client, ConnAck) {
        let mut c = Client::raw(addr, connect.protocol).await;
        c.send(Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Packet::ConnAck(ack) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with a clean session and checks the CONNACK is a success.
    pub(crate) async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
    ) -> Client {
        let (c, ack) = Client::connect_with(addr, connect_packet(version, client_id, true)).await;
        assert_eq!(ack.code, ReasonCode::Success);
        c
    }

    pub(crate) async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        lode_mqtt::encode(&packet, self.version, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, or `None` if the connection closed; panics after 5 s.
    pub(crate) async fn try_recv(&mut self) -> Option<Packet> {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("timed out waiting for a packet")
    }

    pub(crate) async fn recv(&mut self) -> Packet {
        self.try_recv()
            .await
            .expect("connection closed while waiting for a packet")
    }

    /// `Err` on timeout, `Ok(None)` when closed.
    pub(crate) async fn recv_within(&mut self, within: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(within, async {
            loop {
                if let Some(d) = lode_mqtt::decode(&mut self.buf, self.version, u32::MAX)
                    .expect("broker sent a bad packet")
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
        .map_err(|_| ())
    }

    /// Asserts nothing arrives for a short while.
    pub(crate) async fn expect_nothing(&mut self) {
        if let Ok(p) = self.recv_within(Duration::from_millis(300)).await {
            panic!("expected nothing, got {p:?}");
        }
    }

    pub(crate) async fn subscribe(
        &mut self,
        packet_id: u16,
        filter: &str,
        qos: QoS,
    ) -> Vec<ReasonCode> {
        self.send(Packet::Subscribe(subscribe(packet_id, filter, qos)))
            .await;
        match self.recv().await {
            Packet::SubAck(ack) => {
                assert_eq!(ack.packet_id, packet_id);
                ack.codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS flow, returning the reason code of the acknowledgement.
    pub(crate) async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        packet_id: u16,
    ) -> ReasonCode {
        let id = (qos != QoS::AtMostOnce).then_some(packet_id);
        self.send(Packet::Publish(publish(topic, payload, qos, id)))
            .await;
        match qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => match self.recv().await {
                Packet::PubAck(a) => {
                    assert_eq!(a.packet_id, packet_id);
                    a.code
                }
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                let code = match self.recv().await {
                    Packet::PubRec(r) => {
                        assert_eq!(r.packet_id, packet_id);
                        r.code
                    }
                    other => panic!("expected PUBREC, got {other:?}"),
                };
                self.send(Packet::PubRel(PubResp::new(packet_id, ReasonCode::Success)))
                    .await;
                match self.recv().await {
                    Packet::PubComp(c) => assert_eq!(c.packet_id, packet_id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
                code
            }
        }
    }

    /// Receives a PUBLISH and acknowledges it as its QoS requires.
    pub(crate) async fn recv_publish(&mut self) -> Publish {
        let p = match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        };
        self.ack(&p).await;
        p
    }

    pub(crate) async fn ack(&mut self, p: &Publish) {
        match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                self.send(Packet::PubAck(PubResp::new(id, ReasonCode::Success)))
                    .await
            }
            (QoS::ExactlyOnce, Some(id)) => {
                self.send(Packet::PubRec(PubResp::new(id, ReasonCode::Success)))
                    .await;
                match self.recv().await {
                    Packet::PubRel(r) => assert_eq!(r.packet_id, id),
                    other => panic!("expected PUBREL, got {other:?}"),
                }
                self.send(Packet::PubComp(PubResp::new(id, ReasonCode::Success)))
                    .await;
            }
            _ => {}
        }
    }

    pub(crate) async fn disconnect(mut self) {
        self.send(Packet::Disconnect(Default::default())).await;
        let _ = self.stream.shutdown().await;
    }
}
