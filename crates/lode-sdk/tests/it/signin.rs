//! Sign-in, refusal, disconnect and connection loss.

use std::time::Duration;

use lode_sdk::{Device, Event, SdkError, SignMethod};
use serde_json::json;

use crate::support::Platform;

#[tokio::test]
async fn signs_in_with_each_sign_method() {
    let p = Platform::start().await;
    let mut cloud = p.cloud(&["/sys/+/+/thing/event/property/post"]).await;
    for (i, method) in [
        SignMethod::HmacMd5,
        SignMethod::HmacSha1,
        SignMethod::HmacSha256,
    ]
    .into_iter()
    .enumerate()
    {
        let dn = format!("meter-{i:04}");
        let mut config = p.new_device(&dn).await;
        config.sign_method = method;
        let (device, _events) = Device::connect(config).await.expect("connect");
        let post = tokio::spawn({
            let d = device.clone();
            async move { d.post_properties(json!({"Temp": i})).await }
        });
        let req = cloud.next().await;
        assert_eq!(req.topic, p.sys(&dn, "thing/event/property/post"));
        assert_eq!(req.json()["params"], json!({"Temp": i}));
        cloud.reply(&req, json!({})).await;
        let reply = post.await.expect("join").expect("reply");
        assert!(reply.is_success(), "{method}: {reply:?}");
        device.disconnect().await.expect("disconnect");
    }
    p.broker.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_the_connack_code() {
    let p = Platform::start().await;
    p.device("meter-0001").await;
    match Device::connect(p.config("meter-0001", "not-the-secret")).await {
        Err(SdkError::ConnectRefused { code }) => assert_eq!(code, 4),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        Device::connect(p.config("nobody-here", "x")).await,
        Err(SdkError::ConnectRefused { .. })
    ));
    p.broker.shutdown().await;
    let mut config = p.config("meter-0001", "x");
    config.port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    assert!(matches!(
        Device::connect(config).await,
        Err(SdkError::Io(_))
    ));
}

#[tokio::test]
async fn disconnect_and_connection_loss_are_reported() {
    let p = Platform::start().await;
    let config = p.new_device("meter-0001").await;

    let (device, mut events) = Device::connect(config.clone()).await.expect("connect");
    assert!(!device.is_closed());
    device.disconnect().await.expect("disconnect");
    assert!(matches!(events.recv().await, Some(Event::Disconnected)));
    assert!(events.recv().await.is_none());
    assert!(device.is_closed());
    assert!(matches!(
        device.post_properties(json!({})).await,
        Err(SdkError::Closed)
    ));
    assert!(matches!(device.disconnect().await, Err(SdkError::Closed)));

    // A new sign-in of the same device ends the first connection; a request waiting for
    // its reply learns it at once.
    let (first, mut first_events) = Device::connect(config.clone()).await.expect("connect");
    let pending = tokio::spawn({
        let d = first.clone();
        async move { d.post_properties(json!({"a": 1})).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_second, _events) = Device::connect(config).await.expect("connect");
    match first_events.recv().await {
        Some(Event::ConnectionLost(SdkError::Closed)) => {}
        other => panic!("expected connection loss, got {other:?}"),
    }
    assert!(matches!(pending.await, Ok(Err(SdkError::Closed))));
    assert!(first.is_closed());
    p.broker.shutdown().await;
}

#[tokio::test]
async fn dropping_every_handle_disconnects() {
    let p = Platform::start().await;
    let config = p.new_device("meter-0001").await;
    let mut status = p.cloud(&["/as/mqtt/status/#"]).await;
    let (device, mut events) = Device::connect(config).await.expect("connect");
    assert_eq!(status.next().await.json()["status"], "online");
    drop(device);
    assert!(matches!(events.recv().await, Some(Event::Disconnected)));
    assert_eq!(status.next().await.json()["status"], "offline");
    p.broker.shutdown().await;
}
