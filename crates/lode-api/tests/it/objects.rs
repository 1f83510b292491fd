//! Products, topic categories, devices, listings and batch registration.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::Api;

#[tokio::test]
async fn product_round_trip() {
    let api = Api::start().await;
    let p = api
        .call(
            "POST",
            "/api/v1/products",
            Some(json!({
                "name": "Thermostat",
                "nodeType": "Gateway",
                "dataFormat": "Custom",
                "authType": "DeviceSecret",
                "dynamicRegistration": true,
                "description": "living room"
            })),
        )
        .await
        .ok(201);
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    assert_eq!(p["name"], "Thermostat");
    assert_eq!(p["nodeType"], "Gateway");
    assert_eq!(p["dataFormat"], "Custom");
    assert_eq!(p["dynamicRegistration"], true);
    assert_eq!(p["productSecret"].as_str().expect("secret").len(), 16);

    let got = api
        .call("GET", &format!("/api/v1/products/{pk}"), None)
        .await
        .ok(200);
    assert_eq!(got, p);

    let up = api
        .call(
            "PATCH",
            &format!("/api/v1/products/{pk}"),
            Some(json!({"description": "kitchen", "dynamicRegistration": false})),
        )
        .await
        .ok(200);
    assert_eq!(up["description"], "kitchen");
    assert_eq!(up["dynamicRegistration"], false);
    assert_eq!(up["name"], "Thermostat");

    // Tags.
    let t = api
        .call(
            "PUT",
            &format!("/api/v1/products/{pk}/tags"),
            Some(json!({"tags": {"room": "kitchen", "floor": "1"}})),
        )
        .await
        .ok(200);
    assert_eq!(t["tags"], json!({"floor": "1", "room": "kitchen"}));
    let t = api
        .call(
            "DELETE",
            &format!("/api/v1/products/{pk}/tags?keys=room"),
            None,
        )
        .await
        .ok(200);
    assert_eq!(t["tags"], json!({"floor": "1"}));
    api.call(
        "PUT",
        &format!("/api/v1/products/{pk}/tags"),
        Some(json!({"tags": {"bad key!": "x"}})),
    )
    .await
    .assert_error(400, "InvalidTag");

    // Topic categories: three defaults, then one more.
    let topics = api
        .call("GET", &format!("/api/v1/products/{pk}/topics"), None)
        .await
        .ok(200);
    assert_eq!(topics["items"].as_array().expect("items").len(), 3);
    let c = api
        .call(
            "POST",
            &format!("/api/v1/products/{pk}/topics"),
            Some(json!({"topicShortName": "/${productKey}/${deviceName}/user/cmd", "operation": "Sub", "desc": "commands"})),
        )
        .await
        .ok(201);
    let id = c["id"].as_i64().expect("id");
    let c2 = api
        .call(
            "PATCH",
            &format!("/api/v1/products/{pk}/topics/{id}"),
            Some(json!({"operation": "PubSub"})),
        )
        .await
        .ok(200);
    assert_eq!(c2["operation"], "PubSub");
    assert_eq!(
        c2["topicShortName"],
        "/${productKey}/${deviceName}/user/cmd"
    );
    assert_eq!(c2["desc"], "commands");
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/topics"),
        Some(json!({"topicShortName": "/other/x", "operation": "Sub"})),
    )
    .await
    .assert_error(400, "InvalidTopicTemplate");
    api.call(
        "DELETE",
        &format!("/api/v1/products/{pk}/topics/{id}"),
        None,
    )
    .await
    .ok(204);
    api.call(
        "DELETE",
        &format!("/api/v1/products/{pk}/topics/{id}"),
        None,
    )
    .await
    .assert_error(404, "TopicCategoryNotFound");

    // Not empty, then empty.
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({"deviceName": "dev0"})),
    )
    .await
    .ok(201);
    api.call("DELETE", &format!("/api/v1/products/{pk}"), None)
        .await
        .assert_error(409, "ProductNotEmpty");
    api.call(
        "DELETE",
        &format!("/api/v1/products/{pk}/devices/dev0"),
        None,
    )
    .await
    .ok(204);
    api.call("DELETE", &format!("/api/v1/products/{pk}"), None)
        .await
        .ok(204);
    api.call("GET", &format!("/api/v1/products/{pk}"), None)
        .await
        .assert_error(404, "ProductNotFound");
}

#[tokio::test]
async fn product_paging() {
    let api = Api::start().await;
    for i in 0..5 {
        api.product(&format!("p{i}"), false).await;
    }
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = api
            .call(
                "GET",
                &format!("/api/v1/products?pageNo={page}&pageSize=2"),
                None,
            )
            .await
            .ok(200);
        assert_eq!(r["total"], 5);
        for p in r["items"].as_array().expect("items") {
            seen.push(p["productKey"].as_str().expect("pk").to_owned());
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "ordered by ProductKey, no repeats");
    assert_eq!(seen.len(), 5);
    api.call("GET", "/api/v1/products?pageNo=0", None)
        .await
        .assert_error(400, "InvalidParameter");
    api.call("GET", "/api/v1/products?pageSize=100000", None)
        .await
        .assert_error(400, "InvalidPageSize");
    api.call("GET", "/api/v1/products?pageSize=abc", None)
        .await
        .assert_error(400, "InvalidParameter");
}

#[tokio::test]
async fn device_round_trip() {
    let api = Api::start().await;
    let p = api.product("lamp", false).await;
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    let base = format!("/api/v1/products/{pk}/devices");

    let d = api
        .call(
            "POST",
            &base,
            Some(json!({"deviceName": "lamp-01", "nickname": "Hall"})),
        )
        .await
        .ok(201);
    assert_eq!(d["deviceName"], "lamp-01");
    assert_eq!(d["nickname"], "Hall");
    assert_eq!(d["state"], "Inactive");
    let secret = d["deviceSecret"].as_str().expect("secret").to_owned();
    assert_eq!(secret.len(), 32);

    // Generated name.
    let g = api.call("POST", &base, Some(json!({}))).await.ok(201);
    assert_eq!(g["deviceName"].as_str().expect("name").len(), 20);

    api.call("POST", &base, Some(json!({"deviceName": "lamp-01"})))
        .await
        .assert_error(409, "DeviceAlreadyExists");
    api.call("POST", &base, Some(json!({"deviceName": "no spaces"})))
        .await
        .assert_error(400, "InvalidDeviceName");

    let got = api
        .call("GET", &format!("{base}/lamp-01"), None)
        .await
        .ok(200);
    assert_eq!(got["deviceSecret"], secret.as_str());
    assert_eq!(got["iotId"], d["iotId"]);

    // Disable, enable, reset secret.
    let dis = api
        .call("POST", &format!("{base}/lamp-01:disable"), None)
        .await
        .ok(200);
    assert_eq!(dis["state"], "Disabled");
    let en = api
        .call("POST", &format!("{base}/lamp-01:enable"), None)
        .await
        .ok(200);
    assert_ne!(en["state"], "Disabled");
    let reset = api
        .call("POST", &format!("{base}/lamp-01:resetSecret"), None)
        .await
        .ok(200);
    assert_ne!(reset["deviceSecret"], secret.as_str());
    api.call("POST", &format!("{base}/lamp-01:explode"), None)
        .await
        .assert_error(404, "NotFound");
    api.call("POST", &format!("{base}/ghost:disable"), None)
        .await
        .assert_error(404, "DeviceNotFound");

    // Tags.
    let t = api
        .call(
            "PUT",
            &format!("{base}/lamp-01/tags"),
            Some(json!({"tags": {"color": "red"}})),
        )
        .await
        .ok(200);
    assert_eq!(t["tags"], json!({"color": "red"}));
    let t = api
        .call("DELETE", &format!("{base}/lamp-01/tags?keys=color"), None)
        .await
        .ok(200);
    assert_eq!(t["tags"], json!({}));

    // Status and lifecycle log.
    let st = api
        .call("GET", &format!("{base}/lamp-01/status"), None)
        .await
        .ok(200);
    assert_eq!(st["online"], false);
    assert!(st["lastOnline"].is_null());
    let ev = api
        .call("GET", &format!("{base}/lamp-01/events?pageSize=10"), None)
        .await
        .ok(200);
    let kinds: Vec<&str> = ev["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["event"].as_str().expect("event"))
        .collect();
    assert_eq!(kinds, ["SecretReset", "Enabled", "Disabled", "Created"]);
    assert_eq!(ev["total"], 4);

    // Delete.
    api.call("DELETE", &format!("{base}/lamp-01"), None)
        .await
        .ok(204);
    api.call("GET", &format!("{base}/lamp-01"), None)
        .await
        .assert_error(404, "DeviceNotFound");
    api.call("DELETE", &format!("{base}/lamp-01"), None)
        .await
        .assert_error(404, "DeviceNotFound");
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["deviceName"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn device_list_paging_and_filters() {
    let api = Api::start().await;
    let p = api.product("sensors", false).await;
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    let base = format!("/api/v1/products/{pk}/devices");
    for i in 0..7 {
        api.call(
            "POST",
            &base,
            Some(json!({"deviceName": format!("temp-{i}")})),
        )
        .await
        .ok(201);
    }
    for i in 0..3 {
        api.call(
            "POST",
            &base,
            Some(json!({"deviceName": format!("hum-{i}")})),
        )
        .await
        .ok(201);
    }
    api.call(
        "PUT",
        &format!("{base}/temp-1/tags"),
        Some(json!({"tags": {"site": "a"}})),
    )
    .await
    .ok(200);
    api.call(
        "PUT",
        &format!("{base}/temp-2/tags"),
        Some(json!({"tags": {"site": "b"}})),
    )
    .await
    .ok(200);
    api.call("POST", &format!("{base}/hum-0:disable"), None)
        .await
        .ok(200);

    let page1 = api
        .call("GET", &format!("{base}?pageNo=1&pageSize=4"), None)
        .await
        .ok(200);
    assert_eq!(page1["total"], 10);
    assert_eq!(names(&page1), ["hum-0", "hum-1", "hum-2", "temp-0"]);
    assert!(
        page1["items"][0].get("deviceSecret").is_none(),
        "listing hides secrets"
    );
    let page3 = api
        .call("GET", &format!("{base}?pageNo=3&pageSize=4"), None)
        .await
        .ok(200);
    assert_eq!(names(&page3), ["temp-5", "temp-6"]);

    let by_name = api
        .call("GET", &format!("{base}?name=temp&pageSize=50"), None)
        .await
        .ok(200);
    assert_eq!(by_name["total"], 7);
    let by_state = api
        .call("GET", &format!("{base}?state=Disabled"), None)
        .await
        .ok(200);
    assert_eq!(names(&by_state), ["hum-0"]);
    let by_tag = api
        .call("GET", &format!("{base}?tagKey=site"), None)
        .await
        .ok(200);
    assert_eq!(names(&by_tag), ["temp-1", "temp-2"]);
    let by_tag_value = api
        .call("GET", &format!("{base}?tagKey=site&tagValue=b"), None)
        .await
        .ok(200);
    assert_eq!(names(&by_tag_value), ["temp-2"]);
    let combined = api
        .call("GET", &format!("{base}?state=Inactive&name=hum"), None)
        .await
        .ok(200);
    assert_eq!(names(&combined), ["hum-1", "hum-2"]);
    api.call("GET", &format!("{base}?state=Sleeping"), None)
        .await
        .assert_error(400, "InvalidParameter");
    api.call("GET", &format!("{base}?tagValue=b"), None)
        .await
        .assert_error(400, "InvalidParameter");
}

#[tokio::test]
async fn batch_registration_job() {
    let api = Api::start().await;
    let p = api.product("fleet", false).await;
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({"deviceName": "unit-0005"})),
    )
    .await
    .ok(201);

    let mut names: Vec<String> = (0..990).map(|i| format!("unit-{i:04}")).collect();
    names.extend((0..5).map(|i| format!("bad name {i}"))); // invalid
    names.extend((0..5).map(|i| format!("unit-{i:04}"))); // repeated in the batch
    assert_eq!(names.len(), 1_000);

    let r = api
        .call(
            "POST",
            &format!("/api/v1/products/{pk}/devices:batch"),
            Some(json!({"deviceNames": names})),
        )
        .await;
    let job_id = r.ok(202)["jobId"].as_str().expect("jobId").to_owned();

    let mut job = Value::Null;
    for _ in 0..200 {
        job = api
            .call("GET", &format!("/api/v1/jobs/{job_id}"), None)
            .await
            .ok(200);
        if job["status"] != "Running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job["status"], "Succeeded", "{job}");
    assert_eq!(job["total"], 1_000);
    // unit-0005 existed before; 5 invalid; 5 repeated names.
    assert_eq!(job["succeeded"], 989);
    assert_eq!(job["failed"], 11);
    let failures = job["failures"].as_array().expect("failures");
    let code_of = |name: &str| {
        failures
            .iter()
            .filter(|f| f["deviceName"] == name)
            .map(|f| f["code"].as_str().expect("code").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(code_of("bad name 0"), ["InvalidDeviceName"]);
    assert_eq!(code_of("unit-0005"), ["DeviceAlreadyExists"]);
    assert_eq!(code_of("unit-0001"), ["DeviceAlreadyExists"]);
    let results = job["results"].as_array().expect("results");
    assert_eq!(results.len(), 989);
    assert_eq!(
        results[0]["deviceSecret"].as_str().expect("secret").len(),
        32
    );

    let list = api
        .call(
            "GET",
            &format!("/api/v1/products/{pk}/devices?pageSize=1"),
            None,
        )
        .await
        .ok(200);
    assert_eq!(list["total"], 990);

    // Other accounts cannot read the job; unknown ids are JobNotFound.
    let other = crate::harness::new_account(api.registry.as_ref(), "other").await;
    api.call_as(&other, "GET", &format!("/api/v1/jobs/{job_id}"), None)
        .await
        .assert_error(404, "JobNotFound");

    // Limits checked up front.
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices:batch"),
        Some(json!({"deviceNames": []})),
    )
    .await
    .assert_error(400, "InvalidParameter");
    let too_many: Vec<String> = (0..10_001).map(|i| format!("x{i}")).collect();
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices:batch"),
        Some(json!({"deviceNames": too_many})),
    )
    .await
    .assert_error(400, "BatchTooLarge");
}
