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
