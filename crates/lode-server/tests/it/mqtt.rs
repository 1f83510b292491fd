//! CONNECT / CONNACK over every transport (needs the broker).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lode_server::ServerConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    CONNACK_OK, CONNECT_V311, TestServer, self_signed, tls_config, tls_connector,
};
use crate::ws::ws_connect;

async fn connack<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> [u8; 4] {
    s.write_all(&CONNECT_V311).await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("CONNACK should arrive")
        .unwrap();
    buf
}

#[tokio::test]
async fn connack_over_tcp() {
    let server = TestServer::start(ServerConfig::local_ephemeral()).await;
    let tcp = TcpStream::connect(server.mqtt).await.unwrap();
    assert_eq!(connack(tcp).await, CONNACK_OK);
    server.shutdown().await;
}

#[tokio::test]
async fn connack_over_tls() {
    let cert = self_signed();
    let server = TestServer::start(tls_config(&cert)).await;
    let tcp = TcpStream::connect(server.mqtts.unwrap()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tls_connector(&cert.cert_pem)
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(connack(tls).await, CONNACK_OK);
    server.shutdown().await;
}

#[tokio::test]
async fn connack_over_websocket_split_across_frames() {
    let server = TestServer::start(ServerConfig::local_ephemeral()).await;
    let (mut ws, _) = ws_connect(server.ws, "/mqtt", "mqtt").await.unwrap();
    // One packet split over two binary messages.
    ws.send(Message::Binary(CONNECT_V311[..5].to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(CONNECT_V311[5..].to_vec().into()))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("CONNACK should arrive")
            .expect("stream should stay open")
            .unwrap();
        if let Message::Binary(b) = msg {
            got.extend_from_slice(&b);
        }
    }
    assert_eq!(got[..4], CONNACK_OK);
    drop(ws);
    server.shutdown().await;
}

#[tokio::test]
async fn anonymous_refused_without_allow_anonymous() {
    let config = ServerConfig {
        allow_anonymous: false,
        ..ServerConfig::local_ephemeral()
    };
    let server = TestServer::start(config).await;
    let tcp = TcpStream::connect(server.mqtt).await.unwrap();
    // 3.1.1 return code 5: not authorized.
    assert_eq!(connack(tcp).await, [0x20, 0x02, 0x00, 0x05]);
    server.shutdown().await;
}

#[tokio::test]
async fn configured_deny_subscribe_refuses_with_the_configured_code() {
    let file = lode_server::config::file::FileConfig::parse(
        "[mqtt]\ndeny_subscribe = [\"test/nosubscribe\"]\ndeny_subscribe_reason = 128\n",
    )
    .expect("config parses");
    let mut config = ServerConfig::local_ephemeral();
    let resolved = lode_server::config::resolve(&file, &Default::default(), &Default::default())
        .expect("config resolves");
    config.deny_subscribe = resolved.deny_subscribe;
    config.deny_subscribe_reason = resolved.deny_subscribe_reason;
    let server = TestServer::start(config).await;
    let mut tcp = TcpStream::connect(server.mqtt).await.unwrap();
    assert_eq!(connack(&mut tcp).await, CONNACK_OK);
    // SUBSCRIBE id 1: "test/nosubscribe" QoS 1, then "ok" QoS 1.
    let mut sub = vec![0x82, 0, 0, 1, 0, 16];
    sub.extend_from_slice(b"test/nosubscribe");
    sub.extend_from_slice(&[1, 0, 2, b'o', b'k', 1]);
    sub[1] = (sub.len() - 2) as u8;
    tcp.write_all(&sub).await.unwrap();
    let mut suback = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut suback))
        .await
        .expect("SUBACK should arrive")
        .unwrap();
    assert_eq!(suback, [0x90, 4, 0, 1, 0x80, 1]);
    server.shutdown().await;
}
