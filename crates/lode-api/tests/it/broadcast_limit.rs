//! A topic broadcast is refused when its topic has more subscribers than the limit.

use std::sync::Arc;

use lode_api::{ApiConfig, Qps, ThrottleConfig};
use lode_broker::AllowAnonymous;
use serde_json::json;

use crate::harness::{Api, Mqtt};

#[tokio::test]
async fn broadcast_over_the_subscriber_limit_is_refused() {
    let config = ApiConfig {
        broadcast_subscribers_max: 2,
        throttle: ThrottleConfig {
            broadcast: Qps {
                per_account: 0,
                per_ip: 0,
            },
            ..ThrottleConfig::default()
        },
        ..ApiConfig::default()
    };
    let api = Api::start_with(config, Arc::new(AllowAnonymous)).await;
    let p = api.product("bcast", false).await;
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    let path = format!("/api/v1/products/{pk}/broadcast");
    let body = json!({"topicSuffix": "news", "payloadText": "hello"});

    let mut subs = Vec::new();
    for (i, filter) in ["#", "news", "+"].iter().enumerate() {
        let mut s = Mqtt::connect(api.mqtt_addr, &format!("sub-{i}"), None).await;
        s.subscribe(&format!("/broadcast/{pk}/{filter}")).await;
        subs.push(s);
    }
    api.call("POST", &path, Some(body.clone()))
        .await
        .assert_error(409, "TooManySubscribers");
    // Refused means not sent.
    for s in &mut subs {
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), s.recv())
                .await
                .is_err(),
            "a refused broadcast was delivered"
        );
    }

    // At the limit it goes out.
    let last = subs.pop().expect("three subscribers");
    last.disconnect().await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let sent = api.call("POST", &path, Some(body)).await.ok(200);
    assert_eq!(sent["delivered"], 2);
    for s in &mut subs {
        let (topic, payload) = s.next_publish().await;
        assert_eq!(
            (topic, payload),
            (format!("/broadcast/{pk}/news"), b"hello".to_vec())
        );
    }
}
