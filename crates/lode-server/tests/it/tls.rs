//! TLS listener handshake with a self-signed certificate.

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::support::{TestServer, self_signed, tls_config, tls_connector};

#[tokio::test]
async fn tls_handshake_with_self_signed_cert() {
    let cert = self_signed();
    let server = TestServer::start(tls_config(&cert)).await;
    let addr = server.mqtts.expect("tls listener should be up");
    assert!(server.wss.is_some());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tls_connector(&cert.cert_pem).connect(name, tcp).await;
    assert!(tls.is_ok(), "{:?}", tls.err());
    drop(tls);
    server.shutdown().await;
}

#[tokio::test]
async fn no_tls_listeners_without_cert() {
    let server = TestServer::start(lode_server::ServerConfig::local_ephemeral()).await;
    assert!(server.mqtts.is_none() && server.wss.is_none());
    server.shutdown().await;
}
