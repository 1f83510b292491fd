//! The device platform end to end, as the README tells a new user: the CLI creates
//! a product and a device over the signed API, the device signs in over MQTT with
//! its secret, is seen online through the API, and is refused outside its topics.

use std::process::Command;
use std::time::Duration;

use lode_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestServer;

const KEY_ID: &str = "LTAItestadmin0001";
const KEY_SECRET: &str = "test-admin-secret-0123456789";

fn cli(server: &TestServer, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lodestone"))
        .args(args)
        .arg("--json")
        .env("LODESTONE_URL", format!("http://{}", server.http))
        .env("LODESTONE_ACCESS_KEY_ID", KEY_ID)
        .env("LODESTONE_ACCESS_KEY_SECRET", KEY_SECRET)
        .env("HOME", "/nonexistent")
        .output()
        .expect("the CLI runs");
    assert!(
        out.status.success(),
        "lodestone {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A hand-encoded MQTT 3.1.1 CONNECT.
fn connect_packet(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60];
    for field in [client_id, username, password] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

async fn connack(
    server: &TestServer,
    client_id: &str,
    username: &str,
    password: &str,
) -> (TcpStream, u8) {
    let mut tcp = TcpStream::connect(server.mqtt).await.expect("tcp");
    tcp.write_all(&connect_packet(client_id, username, password))
        .await
        .expect("write");
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut ack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    (tcp, ack[3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_product_device_sign_in_and_status() {
    let mut config = ServerConfig::local_ephemeral();
    config.allow_anonymous = false;
    config.admin_key = Some((KEY_ID.to_owned(), KEY_SECRET.to_owned()));
    let server = TestServer::start(config).await;

    let s = &server;
    let product =
        tokio::task::block_in_place(|| cli(s, &["product", "create", "--name", "meters"]));
    let pk = product["productKey"]
        .as_str()
        .expect("productKey")
        .to_owned();
    assert_eq!(pk.len(), 11);
    let device = tokio::task::block_in_place(|| {
        cli(
            s,
            &[
                "device",
                "register",
                "--product-key",
                &pk,
                "--name",
                "meter-01",
            ],
        )
    });
    let secret = device["deviceSecret"]
        .as_str()
        .expect("deviceSecret")
        .to_owned();
    assert_eq!(device["deviceName"], "meter-01");

    // The device signs in with the Alink signature.
    let client_id = "meter-01|securemode=3,signmethod=hmacsha256|";
    let content = format!("clientIdmeter-01deviceNamemeter-01productKey{pk}");
    let password = lode_alink::sign(lode_alink::SignMethod::HmacSha256, &secret, &content);
    let username = format!("meter-01&{pk}");
    let (mut tcp, code) = connack(&server, client_id, &username, &password).await;
    assert_eq!(code, 0, "signed device accepted");

    let mut online = false;
    for _ in 0..100 {
        let status = tokio::task::block_in_place(|| {
            cli(
                s,
                &[
                    "device",
                    "status",
                    "--product-key",
                    &pk,
                    "--name",
                    "meter-01",
                ],
            )
        });
        if status["online"] == true {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(online, "the API shows the device online");

    // A SUBSCRIBE to another device's topic is refused (SUBACK 0x80).
    let filter = format!("/{pk}/meter-02/user/get");
    let mut sub = vec![0x82, 0, 0, 1];
    sub.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    sub.extend_from_slice(filter.as_bytes());
    sub.push(1);
    sub[1] = (sub.len() - 2) as u8;
    tcp.write_all(&sub).await.expect("subscribe");
    let mut suback = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut suback))
        .await
        .expect("SUBACK in time")
        .expect("SUBACK");
    assert_eq!(suback, [0x90, 3, 0, 1, 0x80]);

    // Wrong password, unknown device, no credentials.
    assert_eq!(connack(&server, client_id, &username, "00ff").await.1, 4);
    assert_eq!(
        connack(&server, client_id, &format!("ghost-01&{pk}"), &password)
            .await
            .1,
        4
    );
    assert_eq!(connack(&server, "anon", "", "").await.1, 5);

    // Disabling the device ends its connection at once.
    tokio::task::block_in_place(|| {
        cli(
            s,
            &[
                "device",
                "disable",
                "--product-key",
                &pk,
                "--name",
                "meter-01",
            ],
        )
    });
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the connection of a disabled device is closed"
    );
    server.shutdown().await;
}
