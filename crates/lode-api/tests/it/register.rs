//! HTTPS dynamic registration (`POST /auth/register/device`).

use lode_alink::{SignMethod, register_sign_content, sign};
use lode_registry::DeviceState;
use serde_json::{Value, json};

use crate::harness::{Api, Resp, http};

async fn register(api: &Api, pk: &str, dn: &str, secret: &str) -> Resp {
    let random = "8Ygb7ULYh53B6OA";
    let s = sign(
        SignMethod::HmacSha256,
        secret,
        &register_sign_content(dn, pk, random),
    );
    let body =
        format!("productKey={pk}&deviceName={dn}&random={random}&sign={s}&signMethod=hmacsha256");
    post_form(api, &body).await
}

async fn post_form(api: &Api, body: &str) -> Resp {
    http(
        api.addr,
        "POST",
        "/auth/register/device",
        &[(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )],
        body.as_bytes(),
    )
    .await
}

#[track_caller]
fn refused(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["code"], status);
    assert!(v["message"].is_string());
    assert!(v.get("data").is_none());
}

#[tokio::test]
async fn dynamic_registration() {
    let api = Api::start().await;
    let p = api.product("dyn", true).await;
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    let ps = p["productSecret"].as_str().expect("ps").to_owned();
    let dev = api
        .call(
            "POST",
            &format!("/api/v1/products/{pk}/devices"),
            Some(json!({"deviceName": "newdev01"})),
        )
        .await
        .ok(201);

    let r = register(&api, &pk, "newdev01", &ps).await;
    assert_eq!(r.status, 200);
    // Exactly the reference platform's shape (field order included).
    let expected = format!(
        r#"{{"code":200,"data":{{"productKey":"{pk}","deviceName":"newdev01","deviceSecret":"{}"}},"message":"success"}}"#,
        dev["deviceSecret"].as_str().expect("secret")
    );
    assert_eq!(String::from_utf8_lossy(&r.body), expected);

    let d = api
        .call(
            "GET",
            &format!("/api/v1/products/{pk}/devices/newdev01"),
            None,
        )
        .await
        .ok(200);
    assert_eq!(d["dynamicallyRegistered"], true);

    // Once only.
    refused(&register(&api, &pk, "newdev01", &ps).await, 409);

    // Not after the device has connected.
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({"deviceName": "newdev03"})),
    )
    .await
    .ok(201);
    api.registry
        .set_device_state(
            &pk,
            "newdev03",
            DeviceState::Online,
            chrono::Utc::now(),
            None,
            None,
        )
        .await
        .expect("online");
    refused(&register(&api, &pk, "newdev03", &ps).await, 409);

    // Bad signature, unknown device, unknown product, malformed form.
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({"deviceName": "newdev02"})),
    )
    .await
    .ok(201);
    refused(
        &register(&api, &pk, "newdev02", "WrongSecret00000").await,
        401,
    );
    refused(&register(&api, &pk, "ghost", &ps).await, 404);
    refused(&register(&api, "a1NoSuchPK0", "newdev02", &ps).await, 404);
    refused(&post_form(&api, "productKey=&deviceName=x").await, 400);
    refused(&post_form(&api, "%zz").await, 400);

    // Dynamic registration off for the product.
    let off = api.product("static", false).await;
    let off_pk = off["productKey"].as_str().expect("pk").to_owned();
    let off_ps = off["productSecret"].as_str().expect("ps").to_owned();
    api.call(
        "POST",
        &format!("/api/v1/products/{off_pk}/devices"),
        Some(json!({"deviceName": "dev1"})),
    )
    .await
    .ok(201);
    refused(&register(&api, &off_pk, "dev1", &off_ps).await, 403);

    // A disabled device is refused; newdev02 still registers after that.
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices/newdev02:disable"),
        None,
    )
    .await
    .ok(200);
    refused(&register(&api, &pk, "newdev02", &ps).await, 403);
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices/newdev02:enable"),
        None,
    )
    .await
    .ok(200);
    let ok: Value = register(&api, &pk, "newdev02", &ps).await.json();
    assert_eq!(ok["code"], 200);
    assert_eq!(ok["data"]["deviceName"], "newdev02");
}
