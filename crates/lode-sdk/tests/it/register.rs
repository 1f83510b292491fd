//! Dynamic registration over MQTT, then sign-in with what it returned.

use lode_sdk::{Credential, Device, DeviceConfig, SdkError, register, register_no_whitelist};
use serde_json::json;

use crate::support::Platform;

#[tokio::test]
async fn register_returns_the_device_secret_once() {
    let p = Platform::start().await;
    let secret = p.device("pre-registered").await;
    let port = p.addr.port();
    let got = register(
        "127.0.0.1",
        port,
        &p.pk,
        "pre-registered",
        &p.product_secret,
    )
    .await
    .expect("register");
    assert_eq!(got, secret);
    let (device, _events) = Device::connect(p.config("pre-registered", &got))
        .await
        .expect("sign in with the secret");
    device.disconnect().await.expect("disconnect");

    assert!(matches!(
        register(
            "127.0.0.1",
            port,
            &p.pk,
            "pre-registered",
            &p.product_secret
        )
        .await,
        Err(SdkError::ConnectRefused { code: 5 })
    ));
    p.device("pre-registered-2").await;
    assert!(matches!(
        register(
            "127.0.0.1",
            port,
            &p.pk,
            "pre-registered-2",
            "wrong-product-secret"
        )
        .await,
        Err(SdkError::ConnectRefused { code: 4 })
    ));
    p.broker.shutdown().await;
}

#[tokio::test]
async fn register_without_whitelist_then_token_login() {
    let p = Platform::start().await;
    let port = p.addr.port();
    let registration =
        register_no_whitelist("127.0.0.1", port, &p.pk, "brand-new-1", &p.product_secret)
            .await
            .expect("regnwl");
    assert!(!registration.client_id.is_empty());
    assert!(!registration.token.is_empty());

    let config = DeviceConfig::new(
        "127.0.0.1",
        port,
        &p.pk,
        "brand-new-1",
        registration.clone().into_credential(),
    );
    let (device, _events) = Device::connect(config).await.expect("token login");
    let mut cloud = p.cloud(&["/sys/+/+/thing/event/property/post"]).await;
    let post = tokio::spawn({
        let d = device.clone();
        async move { d.post_properties(json!({"Temp": 1})).await }
    });
    let req = cloud.next().await;
    assert_eq!(req.topic, p.sys("brand-new-1", "thing/event/property/post"));
    cloud.reply(&req, json!({})).await;
    assert!(post.await.expect("join").expect("reply").is_success());
    device.disconnect().await.expect("disconnect");

    let forged = DeviceConfig::new(
        "127.0.0.1",
        port,
        &p.pk,
        "brand-new-1",
        Credential::Token {
            client_id: registration.client_id,
            token: "0123456789abcdef0123456789abcdef".into(),
        },
    );
    assert!(matches!(
        Device::connect(forged).await,
        Err(SdkError::ConnectRefused { code: 4 })
    ));
    p.broker.shutdown().await;
}
