//! Uplinks: requests with their replies, `sys.ack=0`, raw data, concurrency.

use std::time::Duration;

use bytes::Bytes;
use lode_sdk::{Device, Event, QoS, Request, SdkError};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::Platform;

#[tokio::test]
async fn property_post_reply_is_matched_by_id_and_topic() {
    let p = Platform::start().await;
    let (device, mut events) = Device::connect(p.new_device("meter-0001").await)
        .await
        .expect("connect");
    let mut cloud = p.cloud(&["/sys/+/+/thing/event/property/post"]).await;

    let post = tokio::spawn({
        let d = device.clone();
        async move { d.post_properties(json!({"Temp": 23.5, "Switch": 1})).await }
    });
    let req = cloud.next().await;
    assert_eq!(req.topic, p.sys("meter-0001", "thing/event/property/post"));
    let body = req.json();
    assert_eq!(body["method"], "thing.event.property.post");
    assert_eq!(body["version"], "1.0");
    assert_eq!(body["params"], json!({"Temp": 23.5, "Switch": 1}));
    assert!(body.get("sys").is_none(), "a reply is wanted");
    let id = body["id"].as_str().expect("string id").to_owned();
    assert!(id.chars().all(|c| c.is_ascii_digit()), "{id}");

    // A reply with another id, or the right id on another topic, is not this request's.
    let reply_topic = format!("{}_reply", req.topic);
    cloud
        .publish_json(
            &reply_topic,
            &json!({"id": "999999", "code": 200, "data": {}}),
        )
        .await;
    cloud
        .publish_json(
            &p.sys("meter-0001", "thing/event/Alarm/post_reply"),
            &json!({"id": id, "code": 200, "data": {}}),
        )
        .await;
    for _ in 0..2 {
        match events.recv().await {
            Some(Event::Message(m)) => assert!(m.topic.ends_with("_reply"), "{}", m.topic),
            other => panic!("expected the unmatched reply, got {other:?}"),
        }
    }
    assert!(!post.is_finished());
    cloud
        .publish_json(
            &reply_topic,
            &json!({"id": id, "code": 6100, "data": {"x": 1}, "message": "device not found"}),
        )
        .await;
    let reply = post.await.expect("join").expect("reply");
    assert_eq!(reply.id, id);
    assert_eq!(reply.code, 6100);
    assert!(!reply.is_success());
    assert_eq!(reply.data, json!({"x": 1}));
    assert_eq!(reply.message.as_deref(), Some("device not found"));
    p.broker.shutdown().await;
}

#[tokio::test]
async fn a_request_nobody_answers_times_out() {
    let p = Platform::start().await;
    let (device, mut events) = Device::connect(p.new_device("meter-0001").await)
        .await
        .expect("connect");
    let mut cloud = p.cloud(&["/sys/+/+/thing/event/property/post"]).await;
    let started = tokio::time::Instant::now();
    let res = device
        .request(Request::property_post(json!({"a": 1})).timeout(Duration::from_millis(300)))
        .await;
    assert!(matches!(res, Err(SdkError::Timeout(_))), "{res:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The late reply is not lost: it is an event.
    let req = cloud.next().await;
    cloud.reply(&req, json!({})).await;
    match events.recv().await {
        Some(Event::Message(m)) => assert_eq!(m.topic, format!("{}_reply", req.topic)),
        other => panic!("expected the late reply, got {other:?}"),
    }
    p.broker.shutdown().await;
}

#[tokio::test]
async fn events_and_no_ack_requests() {
    let p = Platform::start().await;
    let (device, _events) = Device::connect(p.new_device("meter-0001").await)
        .await
        .expect("connect");
    let mut cloud = p.cloud(&["/sys/+/+/thing/event/+/post"]).await;

    let post = tokio::spawn({
        let d = device.clone();
        async move { d.post_event("Alarm", json!({"value": {"Level": 2}})).await }
    });
    let req = cloud.next().await;
    assert_eq!(req.topic, p.sys("meter-0001", "thing/event/Alarm/post"));
    assert_eq!(req.json()["method"], "thing.event.Alarm.post");
    assert_eq!(req.json()["params"], json!({"value": {"Level": 2}}));
    cloud.reply(&req, json!({})).await;
    assert!(post.await.expect("join").expect("reply").is_success());

    // sys.ack=0: sent, nothing awaited.
    device
        .send(Request::event_post("Alarm", json!({"value": {"Level": 3}})).qos(QoS::AtLeastOnce))
        .await
        .expect("send");
    let req = cloud.next().await;
    assert_eq!(req.json()["sys"], json!({"ack": 0}));
    assert_eq!(req.json()["params"]["value"]["Level"], 3);
    p.broker.shutdown().await;
}

#[tokio::test]
async fn every_request_kind_uses_its_topic_and_method() {
    let p = Platform::start().await;
    let dn = "meter-0001";
    let (device, _events) = Device::connect(p.new_device(dn).await)
        .await
        .expect("connect");
    let suffixes = [
        "thing/event/property/batch/post",
        "thing/property/desired/get",
        "thing/property/desired/delete",
        "thing/deviceinfo/update",
        "thing/deviceinfo/delete",
        "thing/dsltemplate/get",
    ];
    let filters: Vec<String> = suffixes.iter().map(|s| p.sys(dn, s)).collect();
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut cloud = p.cloud(&filters).await;

    let tsl = json!({"schema": "x", "properties": [{"identifier": "Temp"}]});
    let cases: Vec<(&str, &str, Value, Value)> = vec![
        (
            "thing/event/property/batch/post",
            "thing.event.property.batch.post",
            json!({"properties": {"Power": [{"value": "on", "time": 1}]}}),
            json!({}),
        ),
        (
            "thing/property/desired/get",
            "thing.property.desired.get",
            json!(["Light"]),
            json!({"Light": {"value": 1, "version": 2}}),
        ),
        (
            "thing/property/desired/delete",
            "thing.property.desired.delete",
            json!({"Light": {}}),
            json!({}),
        ),
        (
            "thing/deviceinfo/update",
            "thing.deviceinfo.update",
            json!([{"attrKey": "room", "attrValue": "lab1"}]),
            json!({}),
        ),
        (
            "thing/deviceinfo/delete",
            "thing.deviceinfo.delete",
            json!([{"attrKey": "room"}]),
            json!({}),
        ),
        (
            "thing/dsltemplate/get",
            "thing.dsltemplate.get",
            json!({}),
            tsl.clone(),
        ),
    ];
    for (i, (suffix, method, params, data)) in cases.into_iter().enumerate() {
        let d = device.clone();
        let call = tokio::spawn(async move {
            match i {
                0 => {
                    d.post_properties_batch(
                        json!({"properties": {"Power": [{"value": "on", "time": 1}]}}),
                    )
                    .await
                }
                1 => d.get_desired(["Light"]).await,
                2 => d.delete_desired(json!({"Light": {}})).await,
                3 => d.update_device_info([("room", "lab1")]).await,
                4 => d.delete_device_info(["room"]).await,
                _ => d.get_tsl().await,
            }
        });
        let req = cloud.next().await;
        assert_eq!(req.topic, p.sys(dn, suffix));
        assert_eq!(req.json()["method"], method);
        assert_eq!(req.json()["params"], params);
        cloud.reply(&req, data.clone()).await;
        let reply = call.await.expect("join").expect("reply");
        assert_eq!(reply.data, data, "{suffix}");
    }
    p.broker.shutdown().await;
}

#[tokio::test]
async fn raw_uplink_gets_the_raw_reply() {
    let p = Platform::start().await;
    let dn = "meter-0001";
    let (device, _events) = Device::connect(p.new_device(dn).await)
        .await
        .expect("connect");
    let mut cloud = p.cloud(&[&p.sys(dn, "thing/model/up_raw")]).await;
    let post = tokio::spawn({
        let d = device.clone();
        async move { d.post_raw(Bytes::from_static(b"\x01\x02\xff")).await }
    });
    let req = cloud.next().await;
    assert_eq!(&req.payload[..], b"\x01\x02\xff");
    cloud
        .publish(
            &p.sys(dn, "thing/model/up_raw_reply"),
            Bytes::from_static(b"\xaa\x00"),
        )
        .await;
    assert_eq!(
        &post.await.expect("join").expect("raw reply")[..],
        b"\xaa\x00"
    );
    p.broker.shutdown().await;
}

#[tokio::test]
async fn many_requests_in_flight_each_get_their_own_reply() {
    const N: usize = 300;
    let p = Platform::start().await;
    let (device, _events) = Device::connect(p.new_device("meter-0001").await)
        .await
        .expect("connect");
    let mut cloud = p.cloud(&["/sys/+/+/thing/event/property/post"]).await;
    // The cloud answers in reverse order of arrival, echoing the params as data.
    let responder = tokio::spawn(async move {
        let mut requests = Vec::with_capacity(N);
        for _ in 0..N {
            requests.push(cloud.next().await);
        }
        for req in requests.iter().rev() {
            let params = req.json()["params"].clone();
            cloud.reply(req, params).await;
        }
        cloud
    });
    let mut posts = JoinSet::new();
    for i in 0..N {
        let d = device.clone();
        posts.spawn(async move {
            let reply = d.post_properties(json!({"n": i})).await.expect("reply");
            assert_eq!(reply.data, json!({"n": i}));
            i
        });
    }
    let mut done = Vec::new();
    while let Some(i) = posts.join_next().await {
        done.push(i.expect("post"));
    }
    done.sort_unstable();
    assert_eq!(done, (0..N).collect::<Vec<_>>());
    responder.await.expect("responder");
    p.broker.shutdown().await;
}
