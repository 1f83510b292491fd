//! Rules through the API, devices over MQTT, rows at the subscriber and the HTTP receiver.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use lode_registry::RegistryStore;
use lode_sdk::QoS;
use serde_json::{Value, json};

use crate::support::{Receiver, Runtime, TestServer, eventually, runtime_with};

const WAIT: Duration = Duration::from_secs(20);

async fn next_message(sub: &mut lode_sdk::Subscription) -> lode_sdk::Message {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("a message arrives")
        .expect("subscription open")
}

async fn counters(s: &TestServer, rule: &str) -> Value {
    s.call("GET", &format!("/api/v1/rules/{rule}/counters"), None, 200)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_with_where_republishes_to_a_subscriber() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start(dir.path()).await;
    let (pk, secrets) = s.product(&["dev1", "dev2"]).await;
    let (dev1, _e1) = s.device(&pk, "dev1", &secrets[0]).await;
    let (dev2, _e2) = s.device(&pk, "dev2", &secrets[1]).await;
    let mut sub = dev2
        .subscribe(&format!("/{pk}/dev2/user/get"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");

    let sql = format!(
        "SELECT temperature AS t, deviceName() AS dn FROM '/{pk}/+/user/update' WHERE temperature > 30"
    );
    // Tested on samples before it exists.
    let tested = s
        .call(
            "POST",
            "/api/v1/rules/test",
            Some(json!({"sql": sql, "topic": format!("/{pk}/dev1/user/update"), "payload": "{\"temperature\": 21}"})),
            200,
        )
        .await;
    assert_eq!(tested["outcome"], "filtered");
    assert_eq!(
        tested["reason"],
        "WHERE was false: temperature > 30 with temperature = 21"
    );
    let tested = s
        .call(
            "POST",
            "/api/v1/rules/test",
            Some(json!({"sql": sql, "topic": format!("/{pk}/dev1/user/update"), "payload": "{\"temperature\": 35}"})),
            200,
        )
        .await;
    assert_eq!(tested["row"], json!({"t": 35, "dn": "dev1"}));
    let bad = s
        .call(
            "POST",
            "/api/v1/rules",
            Some(json!({"name": "bad", "sql": "SELECT FROM"})),
            400,
        )
        .await;
    assert_eq!(bad["code"], "InvalidParameter");

    let rule = s
        .call(
            "POST",
            "/api/v1/rules",
            Some(json!({
                "name": "hot", "sql": sql, "enabled": true,
                "actions": [{"type": "republish", "topic": "/${productKey}/dev2/user/get", "qos": 1}],
            })),
            201,
        )
        .await;
    let id = rule["id"].as_str().expect("id").to_owned();
    s.call(
        "POST",
        &format!("/api/v1/rules/{id}/trace"),
        Some(json!({"count": 5})),
        204,
    )
    .await;

    let topic = format!("/{pk}/dev1/user/update");
    dev1.publish(&topic, r#"{"temperature": 20}"#, QoS::AtLeastOnce)
        .await
        .expect("publish");
    dev1.publish(&topic, r#"{"temperature": 35}"#, QoS::AtLeastOnce)
        .await
        .expect("publish");
    let got = next_message(&mut sub).await;
    let row: Value = serde_json::from_slice(&got.payload).expect("JSON row");
    assert_eq!(row, json!({"t": 35, "dn": "dev1"}));
    assert_eq!(got.topic, format!("/{pk}/dev2/user/get"));

    let c = counters(&s, &id).await;
    assert_eq!(
        (c["matched"].as_u64(), c["passed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(c["filtered"], 1);
    assert_eq!(c["actions"][0]["forwarded"], 1);
    let trace = s
        .call("GET", &format!("/api/v1/rules/{id}/trace"), None, 200)
        .await;
    assert_eq!(trace["remaining"], 3);
    assert_eq!(trace["entries"][0]["outcome"], "filtered");
    assert_eq!(trace["entries"][1]["row"], json!({"t": 35, "dn": "dev1"}));

    // Disabled: nothing more, without a restart.
    s.call("POST", &format!("/api/v1/rules/{id}/disable"), None, 200)
        .await;
    dev1.publish(&topic, r#"{"temperature": 40}"#, QoS::AtLeastOnce)
        .await
        .expect("publish");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.recv())
            .await
            .is_err(),
        "a disabled rule forwards nothing"
    );
    s.call("POST", &format!("/api/v1/rules/{id}/enable"), None, 200)
        .await;
    dev1.publish(&topic, r#"{"temperature": 41}"#, QoS::AtLeastOnce)
        .await
        .expect("publish");
    let row: Value = serde_json::from_slice(&next_message(&mut sub).await.payload).expect("row");
    assert_eq!(row["t"], 41);
    s.shutdown().await;
}

/// Creates an http destination and a rule forwarding `/pk/+/user/update` rows to it.
async fn webhook_rule(
    s: &TestServer,
    pk: &str,
    receiver: &Receiver,
    error_action: Value,
) -> String {
    let dest = s
        .call(
            "POST",
            "/api/v1/destinations",
            Some(json!({
                "name": format!("hook-{}", receiver.addr.port()), "kind": "http",
                "config": {"url": receiver.url(), "headers": {"Authorization": "Bearer abc"}, "timeoutMs": 2000},
            })),
            201,
        )
        .await;
    let mut spec = json!({
        "name": "to hook",
        "sql": format!("SELECT n, deviceName() AS dev FROM '/{pk}/+/user/update'"),
        "enabled": true,
        "actions": [{
            "type": "webhook", "destination": dest["id"],
            "body": "{\"n\":${n},\"dev\":\"${dev}\"}",
        }],
    });
    if !error_action.is_null() {
        spec["errorAction"] = error_action;
    }
    let rule = s.call("POST", "/api/v1/rules", Some(spec), 201).await;
    rule["id"].as_str().expect("id").to_owned()
}

fn bodies(got: &[crate::support::Received]) -> std::collections::BTreeSet<String> {
    got.iter().map(|r| r.body.clone()).collect()
}

fn expected(ns: std::ops::Range<u32>) -> std::collections::BTreeSet<String> {
    ns.map(|n| format!("{{\"n\":{n},\"dev\":\"dev1\"}}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_the_exact_body_and_loses_nothing_while_the_receiver_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start(dir.path()).await;
    let receiver = Receiver::start().await;
    let (pk, secrets) = s.product(&["dev1"]).await;
    let (dev1, _e) = s.device(&pk, "dev1", &secrets[0]).await;
    let id = webhook_rule(&s, &pk, &receiver, Value::Null).await;
    let topic = format!("/{pk}/dev1/user/update");

    dev1.publish(&topic, r#"{"n": 0}"#, QoS::AtLeastOnce)
        .await
        .expect("publish");
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].body, r#"{"n":0,"dev":"dev1"}"#);
    assert_eq!(got[0].auth.as_deref(), Some("Bearer abc"));
    assert!(got[0].message_id.ends_with(&format!("-{id}-0")));

    receiver.down().await;
    for n in 1..6 {
        dev1.publish(&topic, format!(r#"{{"n": {n}}}"#), QoS::AtLeastOnce)
            .await
            .expect("publish");
    }
    let fw = s.forward.clone();
    eventually("retries", WAIT, || fw.counters().buffered == 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    receiver.up().await;
    let got = receiver.wait_for(6, WAIT).await;
    assert_eq!(bodies(&got), expected(0..6));
    let c = counters(&s, &id).await;
    assert_eq!(c["actions"][0]["forwarded"], 6);
    assert_eq!(c["actions"][0]["failed"], 0);
    assert!(c["actions"][0]["retried"].as_u64() >= Some(1));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_messages_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry: Arc<dyn RegistryStore> = Arc::new(
        lode_registry::SqliteRegistry::open(dir.path().join("registry.db"), Default::default())
            .await
            .expect("registry"),
    );
    let account = registry.create_account("acme").await.expect("account").id;
    let pk = registry
        .create_product(&account, lode_registry::NewProduct::new("p"))
        .await
        .expect("product")
        .product_key;
    let receiver = Receiver::start().await;
    let buffers = dir.path().join("forward");
    let rt = Runtime::start(&buffers, registry).await;
    let dest = rt
        .forward
        .create_destination(
            &account,
            serde_json::from_value(json!({
                "name": "hook", "kind": "http", "config": {"url": receiver.url()},
            }))
            .expect("spec"),
        )
        .await
        .expect("destination");
    let spec = json!({
        "name": "to hook", "enabled": true,
        "sql": format!("SELECT n, deviceName() AS dev FROM '/{pk}/+/user/update'"),
        "actions": [{"type": "webhook", "destination": dest.id, "body": "{\"n\":${n},\"dev\":\"${dev}\"}"}],
    });
    rt.forward
        .create_rule(&account, serde_json::from_value(spec).expect("spec"))
        .await
        .expect("rule");
    receiver.down().await;
    for n in 0..5 {
        rt.publish(&pk, "dev1", format!(r#"{{"n": {n}}}"#)).await;
    }
    let fw = rt.forward.clone();
    eventually("buffering", WAIT, || fw.counters().buffered == 5).await;
    drop(fw);
    let registry = rt.stop().await;

    let rt = Runtime::start(&buffers, registry).await;
    assert_eq!(rt.forward.counters().buffered, 5);
    receiver.up().await;
    let got = receiver.wait_for(5, WAIT).await;
    assert_eq!(bodies(&got), expected(0..5));
    let fw = rt.forward.clone();
    eventually("delivery", WAIT, || fw.counters().buffered == 0).await;
    drop(fw);
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_action_catches_a_failing_destination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start(dir.path()).await;
    let receiver = Receiver::start().await;
    let (pk, secrets) = s.product(&["dev1", "dev2"]).await;
    let (dev1, _e1) = s.device(&pk, "dev1", &secrets[0]).await;
    let (dev2, _e2) = s.device(&pk, "dev2", &secrets[1]).await;
    let mut sub = dev2
        .subscribe(&format!("/{pk}/dev2/user/get"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let id = webhook_rule(
        &s,
        &pk,
        &receiver,
        json!({"type": "republish", "topic": format!("/{pk}/dev2/user/get")}),
    )
    .await;
    receiver.answer(StatusCode::BAD_REQUEST);
    dev1.publish(
        &format!("/{pk}/dev1/user/update"),
        r#"{"n": 7}"#,
        QoS::AtLeastOnce,
    )
    .await
    .expect("publish");
    let report: Value =
        serde_json::from_slice(&next_message(&mut sub).await.payload).expect("JSON report");
    assert_eq!(report["ruleId"], id.as_str());
    assert_eq!(report["action"], 0);
    assert_eq!(report["error"], "HTTP status 400 Bad Request");
    assert_eq!(report["payload"], r#"{"n":7,"dev":"dev1"}"#);
    let c = counters(&s, &id).await;
    assert_eq!(c["actions"][0]["failed"], 1);
    assert_eq!(c["actions"][0]["lastError"], "HTTP status 400 Bad Request");
    assert_eq!(c["errorAction"]["forwarded"], 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_checked_and_scoped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start(dir.path()).await;
    let receiver = Receiver::start().await;
    receiver.down().await;
    let refused = s
        .call(
            "POST",
            "/api/v1/destinations",
            Some(json!({"name": "dead", "kind": "http", "config": {"url": receiver.url()}})),
            400,
        )
        .await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot connect")),
        "{refused}"
    );
    s.call(
        "POST",
        "/api/v1/destinations",
        Some(json!({"name": "x", "kind": "smtp", "config": {}})),
        400,
    )
    .await;
    let missing = s
        .call(
            "POST",
            "/api/v1/rules",
            Some(json!({
                "name": "r", "sql": "SELECT * FROM '/a/+/user/update'",
                "actions": [{"type": "webhook", "destination": "dnope"}],
            })),
            400,
        )
        .await;
    assert_eq!(missing["code"], "InvalidParameter");
    let too_many: Vec<Value> = (0..11)
        .map(|_| json!({"type": "republish", "topic": "/a/b/user/get"}))
        .collect();
    s.call(
        "POST",
        "/api/v1/rules",
        Some(json!({"name": "r", "sql": "SELECT * FROM '/a/+/user/update'", "actions": too_many})),
        400,
    )
    .await;
    let nf = s.call("GET", "/api/v1/rules/rnope", None, 404).await;
    assert_eq!(nf["code"], "RuleNotFound");
    let list = s.call("GET", "/api/v1/rules", None, 200).await;
    assert_eq!(list["items"], json!([]));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_rules() {
    use lode_server::commands::{DestinationCommand, Manage, RuleCommand, run};
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start(dir.path()).await;
    let connection = s.connection(true);
    let create = RuleCommand::Create {
        name: "from cli".into(),
        sql: "SELECT t FROM '/a1/+/user/update' WHERE t > 1".into(),
        actions: r#"[{"type": "republish", "topic": "/a1/x/user/get"}]"#.into(),
        error_action: None,
        enabled: false,
    };
    run(Manage::Rule(create), &connection)
        .await
        .expect("rule create");
    let list = s.call("GET", "/api/v1/rules", None, 200).await;
    let id = list["items"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(list["items"][0]["name"], "from cli");
    run(
        Manage::Rule(RuleCommand::Enable { id: id.clone() }),
        &connection,
    )
    .await
    .expect("enable");
    assert_eq!(
        s.call("GET", &format!("/api/v1/rules/{id}"), None, 200)
            .await["enabled"],
        true
    );
    for c in [
        RuleCommand::Counters { id: id.clone() },
        RuleCommand::Trace {
            id: id.clone(),
            start: Some(3),
        },
        RuleCommand::Test {
            sql: "SELECT t FROM '/a1/+/user/update'".into(),
            topic: "/a1/d/user/update".into(),
            payload: r#"{"t": 2}"#.into(),
        },
        RuleCommand::List,
    ] {
        run(Manage::Rule(c), &connection)
            .await
            .expect("rule command");
    }
    assert_eq!(
        s.call("GET", &format!("/api/v1/rules/{id}/trace"), None, 200)
            .await["remaining"],
        3
    );
    let bad = run(
        Manage::Rule(RuleCommand::Create {
            name: "bad".into(),
            sql: "SELECT".into(),
            actions: "[]".into(),
            error_action: None,
            enabled: false,
        }),
        &connection,
    )
    .await
    .expect_err("invalid SQL");
    assert!(bad.to_string().contains("InvalidParameter"), "{bad}");
    run(Manage::Destination(DestinationCommand::List), &connection)
        .await
        .expect("destination list");
    run(
        Manage::Rule(RuleCommand::Delete { id: id.clone() }),
        &connection,
    )
    .await
    .expect("delete");
    s.call("GET", &format!("/api/v1/rules/{id}"), None, 404)
        .await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validated_property_posts_events_and_status_feed_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start(dir.path()).await;
    let (pk, secrets) = s.product(&["dev1", "dev2"]).await;
    let tsl = json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"productKey": pk},
        "properties": [
            {"identifier": "temperature", "name": "Temperature", "accessMode": "r", "required": false,
             "dataType": {"type": "float", "specs": {"min": "-40", "max": "120", "step": "0.1"}}}
        ],
        "events": [
            {"identifier": "overheat", "name": "Overheat", "type": "alert", "required": false,
             "method": "thing.event.overheat.post",
             "outputData": [{"identifier": "level", "name": "Level",
                "dataType": {"type": "int", "specs": {"min": "1", "max": "3", "step": "1"}}}]}
        ],
        "services": []
    });
    s.call(
        "PUT",
        &format!("/api/v1/products/{pk}/thing-model"),
        Some(tsl),
        200,
    )
    .await;
    s.call(
        "POST",
        &format!("/api/v1/products/{pk}/thing-model/publish"),
        None,
        200,
    )
    .await;
    let (dev2, _e2) = s.device(&pk, "dev2", &secrets[1]).await;
    let mut sub = dev2
        .subscribe(&format!("/{pk}/dev2/user/get"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let republish = json!([{"type": "republish", "topic": format!("/{pk}/dev2/user/get")}]);
    for (name, sql) in [
        (
            "props",
            format!(
                "SELECT 'prop' AS kind, items.temperature.value AS t, deviceName() AS dn \
                 FROM '/sys/{pk}/+/thing/event/property/post' WHERE items.temperature.value > 30"
            ),
        ),
        (
            "events",
            format!(
                "SELECT 'event' AS kind, identifier, value.level AS level \
                 FROM '/sys/{pk}/+/thing/event/overheat/post'"
            ),
        ),
        (
            "status",
            format!(
                "SELECT 'status' AS kind, status, deviceName FROM '/as/mqtt/status/{pk}/+' \
                 WHERE deviceName = 'dev1'"
            ),
        ),
    ] {
        s.call(
            "POST",
            "/api/v1/rules",
            Some(json!({"name": name, "sql": sql, "enabled": true, "actions": republish})),
            201,
        )
        .await;
    }
    let (dev1, _e1) = s.device(&pk, "dev1", &secrets[0]).await;
    let next = async |sub: &mut lode_sdk::Subscription| -> Value {
        serde_json::from_slice(&next_message(sub).await.payload).expect("JSON row")
    };
    assert_eq!(
        next(&mut sub).await,
        json!({"kind": "status", "status": "online", "deviceName": "dev1"})
    );
    // The invalid value is dropped by the thing model and never reaches the rule.
    let reply = dev1
        .post_properties(json!({"temperature": 20.5}))
        .await
        .expect("post");
    assert!(reply.is_success());
    dev1.post_properties(json!({"temperature": 500}))
        .await
        .expect("post");
    dev1.post_properties(json!({"temperature": 35.5}))
        .await
        .expect("post");
    assert_eq!(
        next(&mut sub).await,
        json!({"kind": "prop", "t": 35.5, "dn": "dev1"})
    );
    dev1.post_event("overheat", json!({"level": 2}))
        .await
        .expect("event");
    assert_eq!(
        next(&mut sub).await,
        json!({"kind": "event", "identifier": "overheat", "level": 2})
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_rate_is_throttled_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, account, pk) = runtime_with(dir.path(), |c| lode_forward::ForwardConfig {
        account_rate: 5,
        ..c
    })
    .await;
    let spec = json!({
        "name": "r", "enabled": true,
        "sql": format!("SELECT n FROM '/{pk}/+/user/update'"),
        "actions": [{"type": "republish", "topic": "/elsewhere/x/user/get"}],
    });
    let rule = rt
        .forward
        .create_rule(&account, serde_json::from_value(spec).expect("spec"))
        .await
        .expect("rule");
    for n in 0..40 {
        rt.publish(&pk, "dev1", json!({"n": n}).to_string()).await;
    }
    let fw = rt.forward.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    let c = loop {
        let c = fw
            .rule_counters(&account, &rule.id)
            .await
            .expect("counters");
        if c.matched == 40 || tokio::time::Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(c.matched, 40);
    assert_eq!(c.passed + c.throttled, 40, "{c:?}");
    // The bucket starts full (5) and refills at 5/s while the 40 messages arrive.
    assert!((5..=10).contains(&c.passed), "{c:?}");
    assert_eq!(fw.counters().throttled, c.throttled);
    drop(fw);
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_lifecycle_feeds_rules_and_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start(dir.path()).await;
    let (pk, secrets) = s.product(&["watcher"]).await;
    let (watcher, _e) = s.device(&pk, "watcher", &secrets[0]).await;
    let mut sub = watcher
        .subscribe(&format!("/{pk}/watcher/user/get"), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    s.call(
        "POST",
        "/api/v1/rules",
        Some(json!({
            "name": "lifecycle", "enabled": true,
            "sql": format!("SELECT action, deviceName, productKey() AS pk \
                            FROM '/{pk}/+/thing/lifecycle' WHERE deviceName <> 'watcher'"),
            "actions": [{"type": "republish", "topic": format!("/{pk}/watcher/user/get")}],
        })),
        201,
    )
    .await;
    let created = s
        .call(
            "POST",
            &format!("/api/v1/products/{pk}/devices"),
            Some(json!({"deviceName": "born"})),
            201,
        )
        .await;
    assert!(created["deviceSecret"].is_string());
    let device = format!("/api/v1/products/{pk}/devices/born");
    s.call("POST", &format!("{device}:disable"), None, 200)
        .await;
    s.call("POST", &format!("{device}:enable"), None, 200).await;
    s.call("DELETE", &device, None, 204).await;
    for action in ["create", "disable", "enable", "delete"] {
        let row: Value =
            serde_json::from_slice(&next_message(&mut sub).await.payload).expect("JSON row");
        assert_eq!(
            row,
            json!({"action": action, "deviceName": "born", "pk": pk}),
            "in order"
        );
    }
    let fw = s.forward.clone();
    eventually("the lifecycle messages are streamed", WAIT, || {
        fw.counters().streamed >= 4
    })
    .await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_paced_to_the_account_rate_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, _account, pk) = runtime_with(dir.path(), |c| lode_forward::ForwardConfig {
        stream_rate: 20,
        ..c
    })
    .await;
    let started = tokio::time::Instant::now();
    for n in 0..60 {
        rt.publish(&pk, "dev1", json!({"n": n}).to_string()).await;
    }
    let fw = rt.forward.clone();
    let deadline = started + WAIT;
    while fw.counters().streamed < 60 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = fw.counters();
    assert_eq!(c.streamed, 60, "{c:?}");
    assert_eq!(c.stream_dropped, 0, "{c:?}");
    // A burst of 20, then 20 a second: the other 40 wait at least two seconds.
    assert!(c.stream_throttled >= 30, "{c:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1_800),
        "paced: {:?}",
        started.elapsed()
    );
    drop(fw);
    rt.stop().await;
}
