//! Test harness: start a server on loopback, talk HTTP/1.1 by hand, make certificates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lode_server::config::{ClientAuth, TlsConfig};
use lode_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in the test's runtime.
pub(crate) struct TestServer {
    pub(crate) mqtt: SocketAddr,
    pub(crate) mqtts: Option<SocketAddr>,
    pub(crate) ws: SocketAddr,
    pub(crate) wss: Option<SocketAddr>,
    pub(crate) http: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub(crate) async fn start(config: ServerConfig) -> TestServer {
        let server = Server::bind(config)
            .await
            .expect("server should bind on loopback");
        let (tx, rx) = oneshot::channel::<()>();
        let addrs = (
            server.mqtt_addr(),
            server.mqtts_addr(),
            server.ws_addr(),
            server.wss_addr(),
            server.http_addr(),
        );
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        // Readiness is set right after the listeners are spawned.
        let http = addrs.4;
        for _ in 0..200 {
            if get(http, "/readyz").await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        TestServer {
            mqtt: addrs.0,
            mqtts: addrs.1,
            ws: addrs.2,
            wss: addrs.3,
            http,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Triggers shutdown and waits for `run` to return.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let res = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("shutdown should finish within the grace period");
            res.expect("server task should not panic")
                .expect("run should succeed");
        }
    }
}

/// Sends `GET path` over a fresh connection; returns status and body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    if stream.read_to_end(&mut raw).await.is_err() {
        return (0, String::new());
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A self-signed certificate for `localhost`, written as PEM files.
pub(crate) struct TestCert {
    _dir: tempfile::TempDir,
    pub(crate) cert_pem: String,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

pub(crate) fn self_signed() -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let cert_pem = ck.cert.pem();
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    TestCert {
        _dir: dir,
        cert_pem,
        cert,
        key,
    }
}

/// The ephemeral test config with TLS from `cert`.
pub(crate) fn tls_config(cert: &TestCert) -> ServerConfig {
    ServerConfig {
        tls: Some(TlsConfig {
            cert: cert.cert.clone(),
            key: cert.key.clone(),
            client_ca: None,
            client_auth: ClientAuth::None,
        }),
        ..ServerConfig::local_ephemeral()
    }
}

/// A TLS client that trusts exactly `cert_pem`.
pub(crate) fn tls_connector(cert_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// MQTT 3.1.1 CONNECT, clean session, keep alive 60, client id "t".
pub(crate) const CONNECT_V311: [u8; 15] = [
    0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, b't',
];
/// CONNACK, session present 0, return code 0 (accepted).
pub(crate) const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

/// A server that signs clients in (no anonymous access) with the admin AccessKey
/// `(key_id, key_secret)`, and an API client signed with it.
pub(crate) async fn start_signed(
    key_id: &str,
    key_secret: &str,
) -> (TestServer, lode_server::client::ApiClient) {
    let mut config = ServerConfig::local_ephemeral();
    config.allow_anonymous = false;
    config.admin_key = Some((key_id.to_owned(), key_secret.to_owned()));
    let server = TestServer::start(config).await;
    let api = lode_server::client::ApiClient::from_connection(&lode_server::client::Connection {
        url: Some(format!("http://{}", server.http)),
        access_key_id: Some(key_id.to_owned()),
        access_key_secret: Some(key_secret.to_owned()),
        profile: None,
        json: true,
    })
    .expect("client");
    (server, api)
}

/// A signed API call; its answer, whatever the status.
pub(crate) async fn call(
    api: &lode_server::client::ApiClient,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> lode_server::client::Response {
    api.call(method, path, body.as_ref())
        .await
        .expect("API answers")
}

/// The body of a successful (2xx) answer.
#[track_caller]
pub(crate) fn ok(r: lode_server::client::Response) -> serde_json::Value {
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.body);
    r.body
}

/// The MQTT 3.1.1 CONNECT of device `pk/dn` signed with its DeviceSecret (HMAC-SHA256,
/// `_ss=1`, `ext=1`).
pub(crate) fn device_connect(pk: &str, dn: &str, secret: &str) -> lode_mqtt::Packet {
    let content = format!("clientId{dn}deviceName{dn}productKey{pk}");
    let password = lode_alink::sign(lode_alink::SignMethod::HmacSha256, secret, &content);
    lode_mqtt::Packet::Connect(Box::new(lode_mqtt::Connect {
        protocol: lode_mqtt::ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 60,
        client_id: format!("{dn}|securemode=3,signmethod=hmacsha256,_ss=1,ext=1|"),
        will: None,
        username: Some(format!("{dn}&{pk}")),
        password: Some(password.into_bytes().into()),
        properties: lode_mqtt::ConnectProperties::default(),
    }))
}

/// A device's MQTT 3.1.1 connection, signed in with its DeviceSecret (`ext=1`, `_ss=1`).
pub(crate) struct MqttDevice {
    tcp: TcpStream,
    buf: bytes::BytesMut,
}

impl MqttDevice {
    pub(crate) async fn connect(mqtt: SocketAddr, pk: &str, dn: &str, secret: &str) -> MqttDevice {
        let mut d = MqttDevice {
            tcp: TcpStream::connect(mqtt).await.expect("tcp"),
            buf: bytes::BytesMut::new(),
        };
        d.send(device_connect(pk, dn, secret)).await;
        match d.recv().await {
            lode_mqtt::Packet::ConnAck(ack) => assert_eq!(ack.code, lode_mqtt::ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        d
    }

    pub(crate) async fn send(&mut self, packet: lode_mqtt::Packet) {
        let mut out = bytes::BytesMut::new();
        lode_mqtt::encode(&packet, lode_mqtt::ProtocolVersion::V311, &mut out);
        self.tcp.write_all(&out).await.expect("write");
    }

    pub(crate) async fn recv(&mut self) -> lode_mqtt::Packet {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(d) =
                    lode_mqtt::decode(&mut self.buf, lode_mqtt::ProtocolVersion::V311, u32::MAX)
                        .expect("valid")
                {
                    return d.packet;
                }
                let n = self.tcp.read_buf(&mut self.buf).await.expect("read");
                assert!(n > 0, "connection closed");
            }
        })
        .await
        .expect("a packet within 10 s")
    }

    pub(crate) async fn publish(&mut self, topic: &str, payload: &serde_json::Value) {
        self.send(lode_mqtt::Packet::Publish(lode_mqtt::Publish {
            dup: false,
            qos: lode_mqtt::QoS::AtLeastOnce,
            retain: false,
            topic: bytes::Bytes::copy_from_slice(topic.as_bytes()),
            packet_id: Some(1),
            payload: payload.to_string().into_bytes().into(),
            properties: Default::default(),
        }))
        .await;
    }

    /// Publishes at QoS 1 with `packet_id` and waits for its PUBACK (skipping other packets).
    pub(crate) async fn publish_acked(
        &mut self,
        topic: &str,
        payload: &serde_json::Value,
        packet_id: u16,
    ) {
        self.send(lode_mqtt::Packet::Publish(lode_mqtt::Publish {
            dup: false,
            qos: lode_mqtt::QoS::AtLeastOnce,
            retain: false,
            topic: bytes::Bytes::copy_from_slice(topic.as_bytes()),
            packet_id: Some(packet_id),
            payload: payload.to_string().into_bytes().into(),
            properties: Default::default(),
        }))
        .await;
        loop {
            if let lode_mqtt::Packet::PubAck(ack) = self.recv().await
                && ack.packet_id == packet_id
            {
                assert_eq!(ack.code, lode_mqtt::ReasonCode::Success);
                return;
            }
        }
    }

    /// The next PUBLISH on a topic starting with `prefix`, acknowledged; topic and JSON.
    pub(crate) async fn expect(&mut self, prefix: &str) -> (String, serde_json::Value) {
        loop {
            if let lode_mqtt::Packet::Publish(p) = self.recv().await {
                if let Some(id) = p.packet_id {
                    self.send(lode_mqtt::Packet::PubAck(lode_mqtt::PubResp::new(
                        id,
                        lode_mqtt::ReasonCode::Success,
                    )))
                    .await;
                }
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                if topic.starts_with(prefix) {
                    return (topic, serde_json::from_slice(&p.payload).expect("JSON"));
                }
            }
        }
    }
}
