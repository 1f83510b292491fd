//! The HTTPS listener: the HTTP router over TLS, with the client address as connect info.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use lode_server::{Server, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self_signed, tls_config, tls_connector};

/// Sends `GET path` over TLS on a fresh connection; returns status and body.
async fn get_tls(addr: SocketAddr, cert_pem: &str, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tls_connector(cert_pem).connect(name, tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A peer closing without close_notify is not this test's concern: keep what was read.
    let _ = tls.read_to_end(&mut raw).await;
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

#[tokio::test]
async fn healthz_over_tls_with_client_address() {
    let cert = self_signed();
    let server =
        Server::bind(tls_config(&cert))
            .await
            .unwrap()
            .merge_routes(axum::Router::new().route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            ));
    let addr = server.https_addr().expect("https listener should be up");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));

    let (status, body) = get_tls(addr, &cert.cert_pem, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "ok\n");
    let (status, body) = get_tls(addr, &cert.cert_pem, "/peer").await;
    assert_eq!(status, 200, "{body}");
    let peer: SocketAddr = body
        .parse()
        .expect("the route should see the client address");
    assert!(peer.ip().is_loopback(), "{peer}");
    assert_eq!(get_tls(addr, &cert.cert_pem, "/nope").await.0, 404);

    // An idle keep-alive connection does not hold up shutdown.
    let idle = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let idle = tls_connector(&cert.cert_pem).connect(name, idle).await;
    assert!(idle.is_ok());

    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("shutdown should finish")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    drop(idle);
}

#[tokio::test]
async fn no_https_listener_without_tls() {
    let server = Server::bind(ServerConfig::local_ephemeral()).await.unwrap();
    assert!(server.https_addr().is_none());
}
