//! Health, readiness and metrics over a real socket.

use lode_server::ServerConfig;

use crate::support::{TestServer, get};

#[tokio::test]
async fn healthz_readyz_metrics() {
    let server = TestServer::start(ServerConfig::local_ephemeral()).await;
    assert_eq!(get(server.http, "/healthz").await.0, 200);
    assert_eq!(get(server.http, "/readyz").await.0, 200);
    let (status, body) = get(server.http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("process_resident_memory_bytes"), "{body}");
    for name in [
        "lode_rules_received_total",
        "lode_rules_buffered",
        "lode_stream_throttled_total",
    ] {
        assert!(body.contains(&format!("\n{name} 0\n")), "{name} in {body}");
    }
    assert_eq!(get(server.http, "/nope").await.0, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn two_servers_in_one_process() {
    let a = TestServer::start(ServerConfig::local_ephemeral()).await;
    let b = TestServer::start(ServerConfig::local_ephemeral()).await;
    assert_eq!(get(a.http, "/metrics").await.0, 200);
    assert_eq!(get(b.http, "/metrics").await.0, 200);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn listeners_close_after_shutdown() {
    let server = TestServer::start(ServerConfig::local_ephemeral()).await;
    let (mqtt, http) = (server.mqtt, server.http);
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(mqtt).await.is_err());
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
}
