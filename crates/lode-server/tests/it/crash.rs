//! A server killed with SIGKILL loses no device message that a rule reads and that its
//! device saw acknowledged: the acknowledgement leaves only once the rule's rows are in the
//! durable buffers, which a restart delivers.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use lode_server::client::{ApiClient, Connection};
use serde_json::{Value, json};

use crate::support::MqttDevice;

const KEY_ID: &str = "LTAItestcrash000001";
const KEY_SECRET: &str = "test-admin-secret-crash-0123456789";
const MESSAGES: u32 = 300;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Starts `lodestone serve` on `dir`; its log goes to `log`.
fn serve(
    dir: &std::path::Path,
    mqtt: SocketAddr,
    http: SocketAddr,
    log: &std::path::Path,
) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_lodestone"))
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args([
            "--mqtt-addr",
            &mqtt.to_string(),
            "--http-addr",
            &http.to_string(),
        ])
        .args(["--ws-addr", "127.0.0.1:0"])
        .args([
            "--coap-addr",
            "127.0.0.1:0",
            "--coap-psk-addr",
            "127.0.0.1:0",
        ])
        .args(["--coap-dtls-addr", "127.0.0.1:0"])
        .env("LODESTONE_ADMIN_ACCESS_KEY_ID", KEY_ID)
        .env("LODESTONE_ADMIN_ACCESS_KEY_SECRET", KEY_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("lodestone serve starts")
}

fn client(http: SocketAddr) -> ApiClient {
    ApiClient::from_connection(&Connection {
        url: Some(format!("http://{http}")),
        access_key_id: Some(KEY_ID.to_owned()),
        access_key_secret: Some(KEY_SECRET.to_owned()),
        profile: None,
        json: true,
    })
    .expect("API client")
}

async fn ready(api: &ApiClient) {
    for _ in 0..500 {
        if api.call("GET", "/api/v1/rules", None).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not come up");
}

async fn call(api: &ApiClient, method: &str, path: &str, body: Value, status: u16) -> Value {
    let r = api
        .call(method, path, Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(r.status, status, "{method} {path}: {}", r.body);
    r.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_acknowledged_message_a_rule_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (mqtt, http) = (addr(), addr());
    let api = client(http);

    // The webhook's receiver accepts connections but never answers until the restart: the
    // rows wait in the buffer.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = silent.local_addr().expect("addr");

    let mut server = serve(&data, mqtt, http, &dir.path().join("first.log"));
    ready(&api).await;
    let product = call(
        &api,
        "POST",
        "/api/v1/products",
        json!({"name": "crash"}),
        201,
    )
    .await;
    let pk = product["productKey"].as_str().expect("pk").to_owned();
    let device = call(
        &api,
        "POST",
        &format!("/api/v1/products/{pk}/devices"),
        json!({"deviceName": "dev1"}),
        201,
    )
    .await;
    let secret = device["deviceSecret"].as_str().expect("secret").to_owned();
    let dest = call(
        &api,
        "POST",
        "/api/v1/destinations",
        json!({"name": "hook", "kind": "http",
               "config": {"url": format!("http://{hook}/hook"), "timeoutMs": 500}}),
        201,
    )
    .await;
    call(
        &api,
        "POST",
        "/api/v1/rules",
        json!({"name": "to hook", "enabled": true,
               "sql": format!("SELECT n FROM '/{pk}/+/user/update'"),
               "actions": [{"type": "webhook", "destination": dest["id"], "body": "${n}"}]}),
        201,
    )
    .await;

    let mut dev = MqttDevice::connect(mqtt, &pk, "dev1", &secret).await;
    let topic = format!("/{pk}/dev1/user/update");
    for n in 0..MESSAGES {
        dev.publish_acked(&topic, &json!({"n": n}), (n % 60_000 + 1) as u16)
            .await;
    }
    // Every message was acknowledged: kill at once, without a graceful shutdown.
    server.kill().expect("SIGKILL");
    server.wait().expect("exit");
    drop(silent);

    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        post({
            let got = got.clone();
            move |body: String| async move {
                got.lock().expect("lock").push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(hook)
        .await
        .expect("the receiver takes the hook's port");
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    // The restart takes new ports: the killed process's may not be free yet.
    let second_log = dir.path().join("second.log");
    let (mqtt, http) = (addr(), addr());
    let mut server = serve(&data, mqtt, http, &second_log);
    ready(&client(http)).await;
    let want: BTreeSet<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let seen: BTreeSet<String> = got.lock().expect("lock").iter().cloned().collect();
        if seen == want || tokio::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = server.kill();
    let _ = server.wait();
    receiver.abort();
    let missing: Vec<&String> = want.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "lost after the crash: {missing:?}\nserver log after the restart:\n{}",
        std::fs::read_to_string(&second_log).unwrap_or_default()
    );
}
