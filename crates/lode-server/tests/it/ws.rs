//! WebSocket upgrade: path /mqtt with subprotocol mqtt, 404 elsewhere.

use std::net::SocketAddr;

use lode_server::ServerConfig;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::TestServer;

pub(crate) async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    proto: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<TcpStream>,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(proto).unwrap(),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await
}

#[tokio::test]
async fn upgrade_with_mqtt_subprotocol() {
    let server = TestServer::start(ServerConfig::local_ephemeral()).await;
    let (_ws, resp) = ws_connect(server.ws, "/mqtt", "mqtt").await.unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "mqtt");

    let (_ws2, resp) = ws_connect(server.ws, "/mqtt", "mqttv3.1").await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "mqttv3.1");
    drop((_ws, _ws2));
    server.shutdown().await;
}

#[tokio::test]
async fn other_path_gets_404() {
    let server = TestServer::start(ServerConfig::local_ephemeral()).await;
    match ws_connect(server.ws, "/other", "mqtt").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        Err(e) => panic!("expected 404, got {e}"),
        Ok(_) => panic!("expected 404, got an upgrade"),
    }
    server.shutdown().await;
}
