//! Downlinks: property set, services (async, /ext/rrpc, legacy rrpc), raw, custom topics.

use std::time::Duration;

use bytes::Bytes;
use lode_sdk::{Call, Device, Event, Handlers, QoS, RawCall, Response, Via};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::Platform;

fn echo_handlers(calls: mpsc::UnboundedSender<Call>) -> Handlers {
    let set_calls = calls.clone();
    Handlers::new()
        .property_set(move |call: Call| {
            let calls = set_calls.clone();
            async move {
                let _ = calls.send(call);
                Response::ok(json!({}))
            }
        })
        .service("Echo", move |call: Call| {
            let calls = calls.clone();
            async move {
                let params = call.params.clone();
                let _ = calls.send(call);
                Response::ok(params)
            }
        })
        .service("Explode", |_call| async { panic!("handler bug") })
        .service("Slow", |_call| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Response::ok(json!({}))
        })
}

#[tokio::test]
async fn property_set_and_async_services_are_answered() {
    let p = Platform::start().await;
    let dn = "meter-0001";
    let (tx, mut calls) = mpsc::unbounded_channel();
    let (_device, _events) = Device::connect_with(p.new_device(dn).await, echo_handlers(tx))
        .await
        .expect("connect");
    let mut cloud = p
        .cloud(&[
            "/sys/+/+/thing/service/property/set_reply",
            "/sys/+/+/thing/service/+",
        ])
        .await;

    // Property set: the handler sees the params; the answer goes to set_reply.
    cloud
        .publish_json(
            &p.sys(dn, "thing/service/property/set"),
            &json!({"id": "1001", "version": "1.0", "params": {"Switch": 0}, "method": "thing.service.property.set"}),
        )
        .await;
    let call = calls.recv().await.expect("call");
    assert_eq!(call.id, "1001");
    assert_eq!(call.identifier, "property/set");
    assert_eq!(call.method.as_deref(), Some("thing.service.property.set"));
    assert_eq!(call.params, json!({"Switch": 0}));
    assert_eq!(call.via, Via::Async);
    let answer = cloud.next_answer().await;
    assert_eq!(answer.topic, p.sys(dn, "thing/service/property/set_reply"));
    assert_eq!(
        answer.json(),
        json!({"id": "1001", "code": 200, "data": {}})
    );

    // Async service: answered on thing/service/Echo_reply with the handler's data.
    cloud
        .publish_json(
            &p.sys(dn, "thing/service/Echo"),
            &json!({"id": "1002", "version": "1.0", "params": {"Msg": "hi"}, "method": "thing.service.Echo"}),
        )
        .await;
    let answer = cloud.next_answer().await;
    assert_eq!(answer.topic, p.sys(dn, "thing/service/Echo_reply"));
    assert_eq!(
        answer.json(),
        json!({"id": "1002", "code": 200, "data": {"Msg": "hi"}})
    );

    // A service nobody handles is refused, not ignored; a panicking handler answers 400.
    for (service, id, code) in [("Nope", "1003", 460), ("Explode", "1004", 400)] {
        cloud
            .publish_json(
                &p.sys(dn, &format!("thing/service/{service}")),
                &json!({"id": id, "params": {}}),
            )
            .await;
        let answer = cloud.next_answer().await;
        assert_eq!(
            answer.topic,
            p.sys(dn, &format!("thing/service/{service}_reply"))
        );
        let body = answer.json();
        assert_eq!(
            (body["id"].as_str(), body["code"].as_i64()),
            (Some(id), Some(code))
        );
        assert!(body["message"].is_string(), "{body}");
    }
    p.broker.shutdown().await;
}

#[tokio::test]
async fn a_slow_handler_does_not_hold_up_the_connection() {
    let p = Platform::start().await;
    let dn = "meter-0001";
    let (tx, _calls) = mpsc::unbounded_channel();
    let (device, _events) = Device::connect_with(p.new_device(dn).await, echo_handlers(tx))
        .await
        .expect("connect");
    let mut cloud = p
        .cloud(&[
            "/sys/+/+/thing/service/+",
            "/sys/+/+/thing/event/property/post",
        ])
        .await;
    cloud
        .publish_json(
            &p.sys(dn, "thing/service/Slow"),
            &json!({"id": "1", "params": {}}),
        )
        .await;
    cloud
        .publish_json(
            &p.sys(dn, "thing/service/Echo"),
            &json!({"id": "2", "params": {"k": 1}}),
        )
        .await;
    let started = tokio::time::Instant::now();
    let post = tokio::spawn({
        let d = device.clone();
        async move { d.post_properties(json!({"a": 1})).await }
    });
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = cloud.next().await;
        if m.topic.ends_with("property/post") {
            cloud.reply(&m, json!({})).await;
            seen.push("post");
        } else if m.topic.ends_with("Echo_reply") {
            seen.push("echo");
        }
    }
    assert!(post.await.expect("join").expect("reply").is_success());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    loop {
        let m = cloud.next().await;
        if m.topic.ends_with("Slow_reply") {
            assert_eq!(m.json()["code"], 200);
            break;
        }
    }
    p.broker.shutdown().await;
}

#[tokio::test]
async fn sync_services_over_ext_rrpc_and_legacy_rrpc() {
    let p = Platform::start().await;
    let dn = "meter-0001";
    let (tx, mut calls) = mpsc::unbounded_channel();
    let (_device, mut events) = Device::connect_with(p.new_device(dn).await, echo_handlers(tx))
        .await
        .expect("connect");
    let mut cloud = p
        .cloud(&[
            "/ext/rrpc/+/sys/+/+/thing/service/+",
            "/sys/+/+/rrpc/response/+",
        ])
        .await;

    let topic = format!(
        "/ext/rrpc/1234567890123/sys/{}/{dn}/thing/service/Echo",
        p.pk
    );
    cloud
        .publish_json(
            &topic,
            &json!({"id": "1003", "version": "1.0", "params": {"Msg": "hi"}, "method": "thing.service.Echo"}),
        )
        .await;
    let answer = cloud.next_answer().await;
    assert_eq!(answer.topic, topic, "answered on the identical topic");
    assert_eq!(
        answer.json(),
        json!({"id": "1003", "code": 200, "data": {"Msg": "hi"}})
    );
    let call = calls.recv().await.expect("call");
    assert_eq!(
        call.via,
        Via::Rrpc {
            rrpc_id: "1234567890123".into()
        }
    );

    cloud
        .publish_json(
            &p.sys(dn, "rrpc/request/42"),
            &json!({"id": "1004", "version": "1.0", "params": {"Msg": "old"}, "method": "thing.service.Echo"}),
        )
        .await;
    let answer = cloud.next_answer().await;
    assert_eq!(answer.topic, p.sys(dn, "rrpc/response/42"));
    assert_eq!(
        answer.json(),
        json!({"id": "1004", "code": 200, "data": {"Msg": "old"}})
    );
    let call = calls.recv().await.expect("call");
    assert_eq!(call.identifier, "Echo");
    assert_eq!(
        call.via,
        Via::LegacyRrpc {
            message_id: "42".into()
        }
    );
    // Nothing leaked to the events (no echo of the answers).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err()
    );
    p.broker.shutdown().await;
}

#[tokio::test]
async fn without_server_subscriptions_the_sdk_subscribes_itself() {
    let p = Platform::start().await;
    let dn = "meter-0001";
    let mut config = p.new_device(dn).await;
    config.server_subscriptions = false;
    let (tx, _calls) = mpsc::unbounded_channel();
    let (device, mut events) = Device::connect_with(config, echo_handlers(tx))
        .await
        .expect("connect");
    let mut cloud = p
        .cloud(&[
            "/sys/+/+/thing/service/+",
            "/sys/+/+/thing/service/property/set_reply",
            "/ext/rrpc/+/sys/+/+/thing/service/+",
            "/sys/+/+/thing/event/property/post",
        ])
        .await;
    cloud
        .publish_json(
            &p.sys(dn, "thing/service/property/set"),
            &json!({"id": "1", "params": {"S": 1}}),
        )
        .await;
    assert_eq!(cloud.next_answer().await.json()["code"], 200);
    cloud
        .publish_json(
            &p.sys(dn, "thing/service/Echo"),
            &json!({"id": "2", "params": {"k": 2}}),
        )
        .await;
    assert_eq!(cloud.next_answer().await.json()["data"], json!({"k": 2}));
    let rrpc = format!("/ext/rrpc/77/sys/{}/{dn}/thing/service/Echo", p.pk);
    cloud
        .publish_json(&rrpc, &json!({"id": "3", "params": {"k": 3}}))
        .await;
    let answer = cloud.next_answer().await;
    assert_eq!(
        (answer.topic.as_str(), answer.json()["id"].as_str()),
        (rrpc.as_str(), Some("3"))
    );
    let post = tokio::spawn({
        let d = device.clone();
        async move { d.post_properties(json!({"a": 1})).await }
    });
    let req = cloud.next().await;
    cloud.reply(&req, json!({})).await;
    assert!(post.await.expect("join").expect("reply").is_success());
    // The device hears its own answers through its explicit subscriptions; they are dropped.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err()
    );
    p.broker.shutdown().await;
}

#[tokio::test]
async fn raw_downlinks_are_answered_and_unhandled_ones_are_events() {
    let p = Platform::start().await;
    let dn = "meter-0001";
    let handlers = Handlers::new().raw(|call: RawCall| async move {
        let mut out = call.payload.to_vec();
        out.reverse();
        Bytes::from(out)
    });
    let (device, mut events) = Device::connect_with(p.new_device(dn).await, handlers)
        .await
        .expect("connect");
    let mut cloud = p.cloud(&[&p.sys(dn, "thing/model/down_raw_reply")]).await;
    cloud
        .publish(
            &p.sys(dn, "thing/model/down_raw"),
            Bytes::from_static(b"\x01\x02\x03"),
        )
        .await;
    let answer = cloud.next().await;
    assert_eq!(&answer.payload[..], b"\x03\x02\x01");

    // Without a raw handler the downlink is an event.
    let other = p.new_device("meter-0002").await;
    let (_other, mut other_events) = Device::connect(other).await.expect("connect");
    cloud
        .publish(
            &p.sys("meter-0002", "thing/model/down_raw"),
            Bytes::from_static(b"\x09"),
        )
        .await;
    match other_events.recv().await {
        Some(Event::Message(m)) => assert_eq!(&m.payload[..], b"\x09"),
        other => panic!("expected the raw downlink, got {other:?}"),
    }
    // A handler set later takes over.
    device.on_raw(|_call: RawCall| async { Bytes::from_static(b"later") });
    cloud
        .publish(&p.sys(dn, "thing/model/down_raw"), Bytes::from_static(b"x"))
        .await;
    assert_eq!(&cloud.next().await.payload[..], b"later");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.recv())
            .await
            .is_err()
    );
    p.broker.shutdown().await;
}

#[tokio::test]
async fn custom_topics_and_custom_rrpc() {
    let p = Platform::start().await;
    let dn = "meter-0001";
    let (device, mut events) = Device::connect(p.new_device(dn).await)
        .await
        .expect("connect");
    let update = format!("/{}/{dn}/user/update", p.pk);
    let get = format!("/{}/{dn}/user/get", p.pk);
    let mut cloud = p.cloud(&[&update, "/ext/rrpc/+/+/+/user/get"]).await;

    device
        .publish("user/update", &b"hello"[..], QoS::AtLeastOnce)
        .await
        .expect("publish");
    let m = cloud.next().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        (update.as_str(), &b"hello"[..])
    );

    let mut sub = device
        .subscribe("user/get", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    assert_eq!(sub.filter(), get);
    cloud.publish(&get, Bytes::from_static(b"cmd-1")).await;
    let m = sub.recv().await.expect("message");
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        (get.as_str(), &b"cmd-1"[..], QoS::AtLeastOnce)
    );

    // Custom-topic RRPC: answered on the identical topic; the echo is not surfaced.
    device
        .serve_rrpc("user/get", |call: RawCall| async move {
            let mut out = b"re:".to_vec();
            out.extend_from_slice(&call.payload);
            Bytes::from(out)
        })
        .await
        .expect("serve rrpc");
    let rrpc = format!("/ext/rrpc/55/{}/{dn}/user/get", p.pk);
    cloud.publish(&rrpc, Bytes::from_static(b"ping")).await;
    let mut answers = Vec::new();
    while answers.len() < 2 {
        answers.push(cloud.next().await);
    }
    assert!(answers.iter().all(|a| a.topic == rrpc));
    assert_eq!(
        &answers[1].payload[..],
        b"re:ping",
        "the cloud hears its request, then the answer"
    );
    assert!(
        cloud
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "the device does not answer its own answer"
    );

    // After unsubscribing, messages on the topic stop.
    sub.unsubscribe().await.expect("unsubscribe");
    cloud.publish(&get, Bytes::from_static(b"cmd-2")).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.recv())
            .await
            .is_err()
    );
    p.broker.shutdown().await;
}
