//! The device shadow through the whole server: a device signed in over MQTT reports on
//! `/shadow/update`, the `lodestone shadow` CLI (the signed API) sets desired state, which
//! is pushed to the device at once, reads and deletes the document; a stale version is
//! refused with `VersionConflict`.

use std::process::Command;
use std::time::Duration;

use lode_server::ServerConfig;
use serde_json::{Value, json};

use crate::support::{MqttDevice, TestServer};

const KEY_ID: &str = "LTAItestadmin0005";
const KEY_SECRET: &str = "test-admin-secret-shadow-0123456789";

/// Runs the CLI with `--json`: its output as JSON, or its error text.
fn run(http: std::net::SocketAddr, args: Vec<String>) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_lodestone"))
        .args(&args)
        .arg("--json")
        .env("LODESTONE_URL", format!("http://{http}"))
        .env("LODESTONE_ACCESS_KEY_ID", KEY_ID)
        .env("LODESTONE_ACCESS_KEY_SECRET", KEY_SECRET)
        .env("HOME", "/nonexistent")
        .output()
        .expect("the CLI runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn cli_result(server: &TestServer, a: &[&str]) -> Result<Value, String> {
    let (http, a) = (server.http, a.iter().map(|s| (*s).to_owned()).collect());
    tokio::task::spawn_blocking(move || run(http, a))
        .await
        .expect("CLI task")
}

async fn cli(server: &TestServer, a: &[&str]) -> Value {
    cli_result(server, a)
        .await
        .unwrap_or_else(|e| panic!("lodestone {a:?} failed: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_shadow_with_a_device() {
    let mut config = ServerConfig::local_ephemeral();
    config.allow_anonymous = false;
    config.admin_key = Some((KEY_ID.to_owned(), KEY_SECRET.to_owned()));
    let server = TestServer::start(config).await;
    let s = &server;

    let product = cli(s, &["product", "create", "--name", "lamps"]).await;
    let pk = product["productKey"].as_str().expect("pk").to_owned();
    let device = cli(
        s,
        &[
            "device",
            "register",
            "--product-key",
            &pk,
            "--name",
            "lamp-1",
        ],
    )
    .await;
    let secret = device["deviceSecret"].as_str().expect("secret").to_owned();
    let (update, get) = (
        format!("/shadow/update/{pk}/lamp-1"),
        format!("/shadow/get/{pk}/lamp-1"),
    );

    let mut dev = MqttDevice::connect(s.mqtt, &pk, "lamp-1", &secret).await;
    dev.publish(
        &update,
        &json!({"method":"update","state":{"reported":{"color":"red"}},"version":1}),
    )
    .await;
    let (_, reply) = dev.expect(&get).await;
    assert_eq!(reply["payload"]["status"], "success", "{reply}");
    assert_eq!(reply["version"], 1);
    for _ in 0..200 {
        let st = cli(
            s,
            &["device", "status", "--product", &pk, "--device", "lamp-1"],
        )
        .await;
        if st["online"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Desired through the CLI: the document, and a control push to the device.
    let doc = cli(
        s,
        &[
            "shadow",
            "update",
            &pk,
            "lamp-1",
            "--desired",
            r#"{"color":"green"}"#,
            "--shadow-version",
            "2",
        ],
    )
    .await;
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["state"]["desired"], json!({"color":"green"}));
    let (_, control) = dev.expect(&get).await;
    assert_eq!(control["method"], "control", "{control}");
    assert_eq!(
        control["payload"]["state"]["desired"],
        json!({"color":"green"})
    );
    assert_eq!(control["version"], 2);

    // The same version again: a conflict, and nothing changes.
    let err = cli_result(
        s,
        &[
            "shadow",
            "update",
            &pk,
            "lamp-1",
            "--desired",
            r#"{"color":"blue"}"#,
            "--shadow-version",
            "2",
        ],
    )
    .await
    .expect_err("a stale version is refused");
    assert!(err.contains("VersionConflict"), "{err}");
    let err = cli_result(s, &["shadow", "update", &pk, "lamp-1", "--desired", "[1]"])
        .await
        .expect_err("desired must be an object");
    assert!(err.contains("InvalidParameter"), "{err}");

    let doc = cli(s, &["shadow", "get", &pk, "lamp-1"]).await;
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["state"]["reported"], json!({"color":"red"}));
    assert_eq!(doc["state"]["desired"], json!({"color":"green"}));
    assert!(doc["metadata"]["desired"]["color"]["timestamp"].is_u64());

    cli(s, &["shadow", "delete", &pk, "lamp-1"]).await;
    let doc = cli(s, &["shadow", "get", &pk, "lamp-1"]).await;
    assert_eq!(doc["version"], 0);
    assert_eq!(doc["state"]["reported"], json!({}));
    let err = cli_result(s, &["shadow", "get", &pk, "nope"])
        .await
        .expect_err("unknown device");
    assert!(err.contains("DeviceNotFound"), "{err}");

    server.shutdown().await;
}
