//! The thing model end to end through the `lodestone` CLI: a TSL file and a script
//! are saved and published, a device signed in over MQTT posts properties and
//! answers a property set and a sync service call, and the CLI shows the values,
//! the history, the calls, desired values and the message log.

use std::process::Command;
use std::time::Duration;

use lode_server::ServerConfig;
use serde_json::{Value, json};

use crate::support::{MqttDevice, TestServer};

const KEY_ID: &str = "LTAItestadmin0002";
const KEY_SECRET: &str = "test-admin-secret-thing-0123456789";

/// Runs the CLI with `--json`; its output, or its error text.
fn run(http: std::net::SocketAddr, args: &[String]) -> Result<Value, String> {
    let mut with_json = args.to_vec();
    with_json.push("--json".to_owned());
    let text = run_text(http, &with_json)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Runs the CLI; its standard output, or its error text.
fn run_text(http: std::net::SocketAddr, args: &[String]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_lodestone"))
        .args(args)
        .env("LODESTONE_URL", format!("http://{http}"))
        .env("LODESTONE_ACCESS_KEY_ID", KEY_ID)
        .env("LODESTONE_ACCESS_KEY_SECRET", KEY_SECRET)
        .env("HOME", "/nonexistent")
        .output()
        .expect("the CLI runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs the CLI from the async test; it must succeed.
async fn cli(server: &TestServer, a: &[&str]) -> Value {
    let (http, a) = (server.http, args(a));
    let shown = a.clone();
    tokio::task::spawn_blocking(move || run(http, &a))
        .await
        .expect("CLI task")
        .unwrap_or_else(|e| panic!("lodestone {shown:?} failed: {e}"))
}

const TSL: &str = r#"{
  "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
  "profile": {"productKey": "any"},
  "properties": [
    {"identifier": "temperature", "name": "Temperature", "accessMode": "r", "required": false,
     "dataType": {"type": "float", "specs": {"min": "-40", "max": "120", "step": "0.1"}}},
    {"identifier": "target", "name": "Target", "accessMode": "rw", "required": false,
     "dataType": {"type": "int", "specs": {"min": "0", "max": "100", "step": "1"}}}
  ],
  "events": [],
  "services": [
    {"identifier": "add", "name": "Add", "callType": "sync", "required": false,
     "method": "thing.service.add",
     "inputData": [
       {"identifier": "a", "name": "a", "dataType": {"type": "int", "specs": {"min": "0", "max": "1000", "step": "1"}}},
       {"identifier": "b", "name": "b", "dataType": {"type": "int", "specs": {"min": "0", "max": "1000", "step": "1"}}}
     ],
     "outputData": [
       {"identifier": "sum", "name": "sum", "dataType": {"type": "int", "specs": {"min": "0", "max": "2000", "step": "1"}}}
     ]}
  ]
}"#;

const SCRIPT: &str = "function rawDataToProtocol(bytes) {\n\
    return {method: 'thing.event.property.post', id: '1', version: '1.0', params: {target: bytes[0]}};\n\
}\n\
function protocolToRawData(json) {\n\
    return [json.params.target];\n\
}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_thing_model_device_data_and_calls() {
    let mut config = ServerConfig::local_ephemeral();
    config.allow_anonymous = false;
    config.admin_key = Some((KEY_ID.to_owned(), KEY_SECRET.to_owned()));
    let server = TestServer::start(config).await;
    let s = &server;
    let files = tempfile::tempdir().expect("tempdir");
    let tsl_file = files.path().join("tsl.json");
    std::fs::write(&tsl_file, TSL).expect("write TSL");
    let script_file = files.path().join("script.js");
    std::fs::write(&script_file, SCRIPT).expect("write script");
    let (tsl_file, script_file) = (
        tsl_file.to_str().expect("utf-8 path"),
        script_file.to_str().expect("utf-8 path"),
    );

    let product = cli(s, &["product", "create", "--name", "thermostats"]).await;
    let pk = product["productKey"].as_str().expect("pk").to_owned();
    let device = cli(
        s,
        &[
            "device",
            "register",
            "--product-key",
            &pk,
            "--name",
            "room-1",
        ],
    )
    .await;
    let secret = device["deviceSecret"].as_str().expect("secret").to_owned();

    // Thing model: put the file, publish, read back.
    let draft = cli(s, &["thing-model", "put", "--product", &pk, tsl_file]).await;
    assert_eq!(draft["version"], 0);
    let published = cli(s, &["thing-model", "publish", "--product", &pk]).await;
    assert_eq!(published["version"], 1);
    let got = cli(s, &["thing-model", "get", "--product", &pk]).await;
    assert_eq!(got["tsl"]["properties"][1]["identifier"], "target");
    // An invalid file is refused with the path of the error.
    let bad_file = files.path().join("bad.json");
    std::fs::write(
        &bad_file,
        TSL.replace(r#""identifier": "target""#, r#""identifier": "9target""#),
    )
    .expect("write bad TSL");
    let bad = args(&[
        "thing-model",
        "put",
        "--product",
        &pk,
        bad_file.to_str().expect("path"),
    ]);
    let http = s.http;
    let err = tokio::task::spawn_blocking(move || run(http, &bad))
        .await
        .expect("CLI task")
        .expect_err("an invalid TSL is refused");
    assert!(
        err.contains("InvalidThingModel") && err.contains("properties[1].identifier"),
        "{err}"
    );

    // Script: put, test both ways, publish.
    cli(s, &["script", "put", "--product", &pk, script_file]).await;
    let up = cli(
        s,
        &[
            "script",
            "test",
            "--product",
            &pk,
            "--direction",
            "up",
            "--hex",
            "2a",
        ],
    )
    .await;
    assert_eq!(up["params"]["target"], 42);
    let down = cli(
        s,
        &[
            "script",
            "test",
            "--product",
            &pk,
            "--direction",
            "down",
            "--message",
            r#"{"id":"1","params":{"target":16}}"#,
        ],
    )
    .await;
    assert_eq!(down["hex"], "10");
    let published = cli(s, &["script", "publish", "--product", &pk]).await;
    assert_eq!(published["version"], 1);
    // Without --json, `get` prints the documents themselves, ready to edit and put back.
    let (script_get, tsl_get) = (
        args(&["script", "get", "--product", &pk]),
        args(&["thing-model", "get", "--product", &pk]),
    );
    let (source, tsl) = tokio::task::spawn_blocking(move || {
        (
            run_text(http, &script_get).expect("script get"),
            run_text(http, &tsl_get).expect("thing-model get"),
        )
    })
    .await
    .expect("CLI task");
    assert_eq!(source, SCRIPT);
    let tsl: Value = serde_json::from_str(&tsl).expect("the TSL JSON");
    assert_eq!(tsl["services"].as_array().map(Vec::len), Some(3));

    // The device signs in and posts a value.
    let mut dev = MqttDevice::connect(s.mqtt, &pk, "room-1", &secret).await;
    let sys = format!("/sys/{pk}/room-1");
    let dref = ["--product", pk.as_str(), "--device", "room-1"];
    for _ in 0..200 {
        let st = cli(s, &[&["device", "status"][..], &dref[..]].concat()).await;
        if st["online"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dev.publish(
        &format!("{sys}/thing/event/property/post"),
        &json!({"id": "1", "version": "1.0", "method": "thing.event.property.post",
            "params": {"temperature": 21.5}}),
    )
    .await;
    let (_, reply) = dev
        .expect(&format!("{sys}/thing/event/property/post_reply"))
        .await;
    assert_eq!(reply["code"], 200);

    let props = cli(s, &[&["device", "props"][..], &dref[..]].concat()).await;
    assert_eq!(props["items"][0]["identifier"], "temperature");
    assert_eq!(props["items"][0]["value"], 21.5);
    let history = cli(
        s,
        &[
            &["device", "history"][..],
            &dref[..],
            &["--property", "temperature", "--order", "asc"],
        ]
        .concat(),
    )
    .await;
    assert_eq!(history["items"][0]["value"], 21.5);

    // Property set: reaches the device, its reply finishes the call.
    let set = cli(
        s,
        &[
            &["device", "set"][..],
            &dref[..],
            &["--items", r#"{"target": 25}"#],
        ]
        .concat(),
    )
    .await;
    let id = set["messageId"].as_str().expect("messageId").to_owned();
    let (_, request) = dev
        .expect(&format!("{sys}/thing/service/property/set"))
        .await;
    assert_eq!(request["id"], id.as_str());
    dev.publish(
        &format!("{sys}/thing/service/property/set_reply"),
        &json!({"id": id, "code": 200, "data": {}}),
    )
    .await;
    let mut status = Value::Null;
    for _ in 0..200 {
        let call = cli(
            s,
            &[&["device", "calls"][..], &dref[..], &["--id", &id]].concat(),
        )
        .await;
        status = call["status"].clone();
        if status != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "succeeded");

    // A sync service call answered by the device over /ext/rrpc.
    let invoke = args(
        &[
            &["device", "invoke"][..],
            &dref[..],
            &["--service", "add", "--args", r#"{"a": 2, "b": 3}"#],
        ]
        .concat(),
    );
    let waiting = tokio::task::spawn_blocking(move || run(http, &invoke));
    let (topic, request) = dev.expect("/ext/rrpc/").await;
    let rid = request["id"].as_str().expect("id").to_owned();
    dev.publish(&topic, &json!({"id": rid, "code": 200, "data": {"sum": 5}}))
        .await;
    let answer = waiting
        .await
        .expect("CLI task")
        .unwrap_or_else(|e| panic!("invoke failed: {e}"));
    assert_eq!(answer["callType"], "sync");
    assert_eq!(answer["data"]["sum"], 5);

    // Desired values, the call list and the message log.
    let set = cli(
        s,
        &[
            &["device", "set-desired"][..],
            &dref[..],
            &["--items", r#"{"target": 30}"#],
        ]
        .concat(),
    )
    .await;
    assert_eq!(set["items"][0]["version"], 1);
    let desired = cli(s, &[&["device", "desired"][..], &dref[..]].concat()).await;
    assert_eq!(desired["items"][0]["value"], 30);
    let calls = cli(s, &[&["device", "calls"][..], &dref[..]].concat()).await;
    let services: Vec<&str> = calls["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["identifier"].as_str())
        .collect();
    assert_eq!(services, ["add", "set"], "newest first");
    let log = cli(
        s,
        &[&["device", "log"][..], &dref[..], &["--limit", "200"]].concat(),
    )
    .await;
    let topics: Vec<&str> = log["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["topic"].as_str())
        .collect();
    assert!(
        topics.contains(&format!("{sys}/thing/event/property/post").as_str()),
        "{topics:?}"
    );
    assert!(
        topics.contains(&format!("{sys}/thing/service/property/set").as_str()),
        "{topics:?}"
    );
    server.shutdown().await;
}
