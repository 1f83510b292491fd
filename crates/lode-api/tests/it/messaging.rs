//! Cloud-side publish and broadcast reach MQTT subscribers; disabling a device
//! ends its connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use lode_api::ApiConfig;
use lode_broker::{AuthHook, BoxFuture, ConnectRequest, Principal};
use lode_mqtt::{Packet, ReasonCode};
use serde_json::json;

use crate::harness::{Api, Mqtt};

#[tokio::test]
async fn publish_reaches_subscriber() {
    let api = Api::start().await;
    let p = api.product("pub", false).await;
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    let topic = format!("/{pk}/dev1/user/get");

    let mut sub = Mqtt::connect(api.mqtt_addr, "sub-1", None).await;
    sub.subscribe(&topic).await;
    sub.subscribe(&format!("/broadcast/{pk}/#")).await;

    let payload = [0u8, 1, 2, 255];
    let r = api
        .call(
            "POST",
            "/api/v1/pub",
            Some(json!({
                "topic": topic,
                "payload": base64::engine::general_purpose::STANDARD.encode(payload),
                "qos": 1
            })),
        )
        .await
        .ok(200);
    assert_eq!(r["delivered"], 1);
    match sub.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(&p.topic[..], topic.as_bytes());
            assert_eq!(&p.payload[..], &payload);
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }

    let r = api
        .call(
            "POST",
            &format!("/api/v1/products/{pk}/broadcast"),
            Some(json!({"topicSuffix": "firmware", "payloadText": "v2"})),
        )
        .await
        .ok(200);
    assert_eq!(r["topic"], format!("/broadcast/{pk}/firmware"));
    assert_eq!(r["delivered"], 1);
    match sub.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"v2"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }

    // Refusals.
    let bad = [
        (
            json!({"topic": topic, "payloadText": "x", "qos": 2}),
            400,
            "InvalidParameter",
        ),
        (
            json!({"topic": topic, "payload": "***"}),
            400,
            "InvalidParameter",
        ),
        (
            json!({"topic": topic, "payload": "", "payloadText": ""}),
            400,
            "InvalidParameter",
        ),
        (
            json!({"topic": format!("/{pk}/+/user/get"), "payloadText": "x"}),
            400,
            "InvalidParameter",
        ),
        (
            json!({"topic": "/a1NoSuchPK0/d/user/get", "payloadText": "x"}),
            403,
            "TopicNotAllowed",
        ),
        (
            json!({"topic": "no/leading/slash", "payloadText": "x"}),
            403,
            "TopicNotAllowed",
        ),
    ];
    for (body, status, code) in bad {
        api.call("POST", "/api/v1/pub", Some(body.clone()))
            .await
            .assert_error(status, code);
    }
    let big = "x".repeat(256 * 1024 + 1);
    api.call(
        "POST",
        "/api/v1/pub",
        Some(json!({"topic": topic, "payloadText": big})),
    )
    .await
    .assert_error(400, "InvalidParameter");
}

/// Devices sign in with username `productKey/deviceName` and hold one
/// connection per identity.
struct DeviceIdentity;

impl AuthHook for DeviceIdentity {
    fn authenticate<'a>(
        &'a self,
        req: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, ReasonCode>> {
        let name = req.username.unwrap_or("anonymous").to_owned();
        Box::pin(async move {
            let mut p = Principal::named(name.clone());
            p.unique_key = Some(name);
            Ok(p)
        })
    }

    fn authorize_publish(&self, _: &Principal, _: &str) -> bool {
        true
    }

    fn authorize_subscribe(&self, _: &Principal, _: &str) -> bool {
        true
    }

    fn connected(&self, _: &Principal, _: &str, _: SocketAddr) {}
}

async fn wait_connected(api: &Api, n: usize) {
    for _ in 0..300 {
        if api.broker.connected_clients() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} connected clients, have {}",
        api.broker.connected_clients()
    );
}

#[tokio::test]
async fn disable_and_delete_end_the_connection() {
    let api = Api::start_with(ApiConfig::default(), Arc::new(DeviceIdentity)).await;
    let p = api.product("kick", false).await;
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    for dn in ["dev1", "dev2"] {
        api.call(
            "POST",
            &format!("/api/v1/products/{pk}/devices"),
            Some(json!({"deviceName": dn})),
        )
        .await
        .ok(201);
    }
    let mut d1 = Mqtt::connect(api.mqtt_addr, "c1", Some(&format!("{pk}/dev1"))).await;
    let mut d2 = Mqtt::connect(api.mqtt_addr, "c2", Some(&format!("{pk}/dev2"))).await;
    let _bystander = Mqtt::connect(api.mqtt_addr, "c3", Some(&format!("{pk}/dev3"))).await;
    wait_connected(&api, 3).await;

    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices/dev1:disable"),
        None,
    )
    .await
    .ok(200);
    // 3.1.1: the broker just closes the connection.
    assert!(d1.recv().await.is_none(), "d1's connection should end");
    wait_connected(&api, 2).await;

    api.call(
        "DELETE",
        &format!("/api/v1/products/{pk}/devices/dev2"),
        None,
    )
    .await
    .ok(204);
    assert!(d2.recv().await.is_none(), "d2's connection should end");
    wait_connected(&api, 1).await;
}
