//! Device groups over the API: groups and subgroups, members with per-device outcomes,
//! tags and tag search, a device's groups, and group-wide property set, service call and
//! broadcast reaching devices signed in over MQTT.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, Mqtt, new_account};

/// A thing model with one read-write property and an async and a sync service.
fn tsl() -> Value {
    json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"productKey": "any"},
        "properties": [
            {"identifier": "brightness", "name": "Brightness", "accessMode": "rw", "required": false,
             "dataType": {"type": "int", "specs": {"min": "0", "max": "100", "step": "1"}}}
        ],
        "events": [],
        "services": [
            {"identifier": "blink", "name": "Blink", "callType": "async", "required": false,
             "method": "thing.service.blink",
             "inputData": [{"identifier": "times", "name": "times",
                "dataType": {"type": "int", "specs": {"min": "1", "max": "10", "step": "1"}}}],
             "outputData": []},
            {"identifier": "ping", "name": "Ping", "callType": "sync", "required": false,
             "method": "thing.service.ping", "inputData": [], "outputData": []}
        ]
    })
}

/// A product of the default account, with the thing model published when `model`.
async fn product(api: &Api, name: &str, model: bool) -> String {
    let pk = api.product(name, false).await["productKey"]
        .as_str()
        .expect("productKey")
        .to_owned();
    if model {
        let base = format!("/api/v1/products/{pk}/thing-model");
        api.call("PUT", &base, Some(tsl())).await.ok(200);
        api.call("POST", &format!("{base}/publish"), None)
            .await
            .ok(200);
    }
    pk
}

/// Registers `dn`; its secret.
async fn device(api: &Api, pk: &str, dn: &str) -> String {
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({"deviceName": dn})),
    )
    .await
    .ok(201)["deviceSecret"]
        .as_str()
        .expect("secret")
        .to_owned()
}

/// Signs `dn` in over MQTT and waits until the platform shows it online.
async fn connect(api: &Api, pk: &str, dn: &str, secret: &str) -> Mqtt {
    let mqtt = Mqtt::connect_device(api.mqtt_addr, pk, dn, secret).await;
    let status = format!("/api/v1/products/{pk}/devices/{dn}/status");
    for _ in 0..200 {
        if api.call("GET", &status, None).await.ok(200)["online"] == true {
            return mqtt;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("device {dn} never shown online");
}

async fn create_group(api: &Api, body: Value) -> String {
    api.call("POST", "/api/v1/groups", Some(body)).await.ok(201)["groupId"]
        .as_str()
        .expect("groupId")
        .to_owned()
}

fn members(pk: &str, names: &[&str]) -> Value {
    json!({"devices": names.iter().map(|n| json!({"productKey": pk, "deviceName": n})).collect::<Vec<_>>()})
}

/// `(deviceName, status)` of each item of a group operation's answer.
fn statuses(answer: &Value) -> Vec<(String, String)> {
    answer["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["deviceName"].as_str().unwrap_or_default().to_owned(),
                i["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn groups_subgroups_members_and_tags() {
    let api = Api::start().await;
    let pk = product(&api, "lamps", false).await;
    for dn in ["lamp1", "lamp2", "lamp3"] {
        device(&api, &pk, dn).await;
    }

    let floor = create_group(
        &api,
        json!({"groupName": "floor_1", "description": "first floor", "tags": {"site": "berlin"}}),
    )
    .await;
    let room = create_group(&api, json!({"groupName": "room_11", "parentId": floor})).await;
    let desk = create_group(&api, json!({"groupName": "desk_111", "parentId": room})).await;
    api.call(
        "POST",
        "/api/v1/groups",
        Some(json!({"groupName": "drawer", "parentId": desk})),
    )
    .await
    .assert_error(400, "QuotaExceeded.GroupDepth");
    api.call(
        "POST",
        "/api/v1/groups",
        Some(json!({"groupName": "floor_1"})),
    )
    .await
    .assert_error(409, "GroupAlreadyExists");
    api.call("POST", "/api/v1/groups", Some(json!({"groupName": "x"})))
        .await
        .assert_error(400, "InvalidParameter");

    let g = api
        .call("GET", &format!("/api/v1/groups/{room}"), None)
        .await
        .ok(200);
    assert_eq!(g["parentId"], floor.as_str());
    assert_eq!(g["depth"], 2);
    assert_eq!(g["subgroupCount"], 1);

    let top = api.call("GET", "/api/v1/groups", None).await.ok(200);
    assert_eq!(top["total"], 1);
    assert_eq!(top["items"][0]["groupName"], "floor_1");
    let all = api
        .call("GET", "/api/v1/groups?all=true", None)
        .await
        .ok(200);
    assert_eq!(all["total"], 3);
    let subs = api
        .call("GET", &format!("/api/v1/groups/{floor}/subgroups"), None)
        .await
        .ok(200);
    assert_eq!(subs["items"][0]["groupId"], room.as_str());
    let by_parent = api
        .call("GET", &format!("/api/v1/groups?parentId={room}"), None)
        .await
        .ok(200);
    assert_eq!(by_parent["items"][0]["groupId"], desk.as_str());

    let renamed = api
        .call(
            "PATCH",
            &format!("/api/v1/groups/{room}"),
            Some(json!({"groupName": "room_12", "description": "corner"})),
        )
        .await
        .ok(200);
    assert_eq!(
        (
            renamed["groupName"].as_str(),
            renamed["description"].as_str()
        ),
        (Some("room_12"), Some("corner"))
    );

    // Members, per device.
    let added = api
        .call(
            "POST",
            &format!("/api/v1/groups/{floor}/devices"),
            Some(members(&pk, &["lamp1", "lamp2", "ghost"])),
        )
        .await
        .ok(200);
    let outcome: Vec<(bool, Option<&str>)> = added["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| (i["changed"] == true, i["code"].as_str()))
        .collect();
    assert_eq!(
        outcome,
        [(true, None), (true, None), (false, Some("DeviceNotFound"))]
    );
    api.call(
        "POST",
        &format!("/api/v1/groups/{desk}/devices"),
        Some(members(&pk, &["lamp3"])),
    )
    .await
    .ok(200);
    let page = api
        .call(
            "GET",
            &format!("/api/v1/groups/{floor}/devices?pageSize=1"),
            None,
        )
        .await
        .ok(200);
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"][0]["deviceName"], "lamp1");
    assert!(page["items"][0].get("deviceSecret").is_none());
    let of_lamp3 = api
        .call(
            "GET",
            &format!("/api/v1/products/{pk}/devices/lamp3/groups"),
            None,
        )
        .await
        .ok(200);
    assert_eq!(of_lamp3["items"][0]["groupName"], "desk_111");
    let removed = api
        .call(
            "POST",
            &format!("/api/v1/groups/{floor}/devices/remove"),
            Some(members(&pk, &["lamp2", "lamp3"])),
        )
        .await
        .ok(200);
    assert_eq!(removed["items"][0]["changed"], true);
    assert_eq!(removed["items"][1]["changed"], false);
    api.call(
        "POST",
        &format!("/api/v1/groups/{floor}/devices"),
        Some(json!({"devices": []})),
    )
    .await
    .assert_error(400, "InvalidParameter");

    // Tags and tag search over products, devices and groups.
    api.call(
        "PUT",
        &format!("/api/v1/products/{pk}/tags"),
        Some(json!({"tags": {"site": "berlin"}})),
    )
    .await
    .ok(200);
    api.call(
        "PUT",
        &format!("/api/v1/products/{pk}/devices/lamp2/tags"),
        Some(json!({"tags": {"site": "berlin"}})),
    )
    .await
    .ok(200);
    let tags = api
        .call(
            "PUT",
            &format!("/api/v1/groups/{room}/tags"),
            Some(json!({"tags": {"site": "paris", "kind": "room"}})),
        )
        .await
        .ok(200);
    assert_eq!(tags["tags"], json!({"kind": "room", "site": "paris"}));
    let tags = api
        .call(
            "DELETE",
            &format!("/api/v1/groups/{room}/tags?keys=kind"),
            None,
        )
        .await
        .ok(200);
    assert_eq!(tags["tags"], json!({"site": "paris"}));
    let found = api
        .call("GET", "/api/v1/tags/search?tag=site%3Dberlin", None)
        .await
        .ok(200);
    assert_eq!(found["products"][0]["productKey"], pk.as_str());
    assert_eq!(found["devices"][0]["deviceName"], "lamp2");
    assert_eq!(found["deviceTotal"], 1);
    assert_eq!(found["groups"][0]["groupId"], floor.as_str());
    let any_site = api
        .call("GET", "/api/v1/tags/search?tag=site&types=group", None)
        .await
        .ok(200);
    assert_eq!(any_site["groups"].as_array().map(Vec::len), Some(2));
    assert_eq!(any_site["products"], json!([]));
    api.call("GET", "/api/v1/tags/search?tag=site&types=thing", None)
        .await
        .assert_error(400, "InvalidParameter");

    // Another account sees none of it.
    let other = new_account(api.registry.as_ref(), "other").await;
    api.call_as(&other, "GET", &format!("/api/v1/groups/{floor}"), None)
        .await
        .assert_error(404, "GroupNotFound");
    api.call_as(
        &other,
        "POST",
        &format!("/api/v1/groups/{floor}/devices"),
        Some(members(&pk, &["lamp1"])),
    )
    .await
    .assert_error(404, "GroupNotFound");
    let theirs = api
        .call_as(&other, "GET", "/api/v1/tags/search?tag=site", None)
        .await
        .ok(200);
    assert_eq!(theirs["groups"], json!([]));

    // Deletion: not with subgroups; memberships go, devices stay.
    api.call("DELETE", &format!("/api/v1/groups/{floor}"), None)
        .await
        .assert_error(409, "GroupHasSubgroups");
    api.call("DELETE", &format!("/api/v1/groups/{desk}"), None)
        .await
        .ok(204);
    let of_lamp3 = api
        .call(
            "GET",
            &format!("/api/v1/products/{pk}/devices/lamp3/groups"),
            None,
        )
        .await
        .ok(200);
    assert_eq!(of_lamp3["items"], json!([]));
    api.call("GET", &format!("/api/v1/groups/{desk}"), None)
        .await
        .assert_error(404, "GroupNotFound");
    api.call("GET", &format!("/api/v1/products/{pk}/devices/lamp3"), None)
        .await
        .ok(200);
    // Deleting a device takes it out of its groups.
    api.call(
        "DELETE",
        &format!("/api/v1/products/{pk}/devices/lamp1"),
        None,
    )
    .await
    .ok(204);
    let g = api
        .call("GET", &format!("/api/v1/groups/{floor}"), None)
        .await
        .ok(200);
    assert_eq!(g["deviceCount"], 0);

    // The operations are in the OpenAPI document under their tag.
    let doc = api.call("GET", "/api/v1/openapi.json", None).await.ok(200);
    for path in [
        "/api/v1/groups",
        "/api/v1/groups/{groupId}/devices/remove",
        "/api/v1/groups/{groupId}/properties/set",
        "/api/v1/tags/search",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}

#[tokio::test]
async fn group_operations_reach_devices_over_mqtt() {
    let api = Api::start_thing().await;
    let lamps = product(&api, "lamps", true).await;
    let bare = product(&api, "bare", false).await;
    let s1 = device(&api, &lamps, "lamp1").await;
    device(&api, &lamps, "lamp2").await;
    let s3 = device(&api, &lamps, "lamp3").await;
    device(&api, &bare, "bare1").await;

    let floor = create_group(&api, json!({"groupName": "floor_1"})).await;
    let room = create_group(&api, json!({"groupName": "room_11", "parentId": floor})).await;
    api.call(
        "POST",
        &format!("/api/v1/groups/{floor}/devices"),
        Some(members(&lamps, &["lamp1", "lamp2"])),
    )
    .await
    .ok(200);
    api.call(
        "POST",
        &format!("/api/v1/groups/{room}/devices"),
        Some(members(&lamps, &["lamp3"])),
    )
    .await
    .ok(200);
    api.call(
        "POST",
        &format!("/api/v1/groups/{room}/devices"),
        Some(members(&bare, &["bare1"])),
    )
    .await
    .ok(200);

    let mut lamp1 = connect(&api, &lamps, "lamp1", &s1).await;
    let mut lamp3 = connect(&api, &lamps, "lamp3", &s3).await;

    // Property set to the group alone: lamp1 gets it, lamp2 is offline.
    let answer = api
        .call(
            "POST",
            &format!("/api/v1/groups/{floor}/properties/set"),
            Some(json!({"items": {"brightness": 40}})),
        )
        .await
        .ok(200);
    assert_eq!(
        statuses(&answer),
        [
            ("lamp1".to_owned(), "sent".to_owned()),
            ("lamp2".to_owned(), "offline".to_owned())
        ]
    );
    assert_eq!(
        (answer["sent"].clone(), answer["offline"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(answer["items"][1]["code"], "DeviceOffline");
    let id = answer["items"][0]["messageId"].as_str().expect("messageId");
    let request = lamp1
        .expect_json(&format!("/sys/{lamps}/lamp1/thing/service/property/set"))
        .await;
    assert_eq!(request["id"], id);
    assert_eq!(request["method"], "thing.service.property.set");
    assert_eq!(request["params"], json!({"brightness": 40}));

    // With subgroups: lamp3 too; bare1's product has no thing model: refused.
    let answer = api
        .call(
            "POST",
            &format!("/api/v1/groups/{floor}/properties/set"),
            Some(json!({"items": {"brightness": 70}, "withSubgroups": true})),
        )
        .await
        .ok(200);
    let mut got = statuses(&answer);
    got.sort();
    assert_eq!(
        got,
        [
            ("bare1".to_owned(), "refused".to_owned()),
            ("lamp1".to_owned(), "sent".to_owned()),
            ("lamp2".to_owned(), "offline".to_owned()),
            ("lamp3".to_owned(), "sent".to_owned()),
        ]
    );
    assert_eq!(answer["total"], 4);
    for mqtt in [&mut lamp1, &mut lamp3] {
        let (topic, payload) = mqtt.next_publish().await;
        assert!(topic.ends_with("/thing/service/property/set"), "{topic}");
        let request: Value = serde_json::from_slice(&payload).expect("JSON");
        assert_eq!(request["params"], json!({"brightness": 70}));
    }
    // A value the thing model refuses is refused per device, nothing is sent.
    let answer = api
        .call(
            "POST",
            &format!("/api/v1/groups/{room}/properties/set"),
            Some(json!({"items": {"brightness": 500}})),
        )
        .await
        .ok(200);
    let lamp3_item = answer["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["deviceName"] == "lamp3")
        .cloned()
        .expect("lamp3");
    assert_eq!(lamp3_item["status"], "refused");
    assert_eq!(lamp3_item["code"], "InvalidParameter");

    // An async service to the subgroup; a sync one is refused per device.
    let answer = api
        .call(
            "POST",
            &format!("/api/v1/groups/{room}/services/blink"),
            Some(json!({"args": {"times": 3}})),
        )
        .await
        .ok(200);
    let mut got = statuses(&answer);
    got.sort();
    assert_eq!(
        got,
        [
            ("bare1".to_owned(), "refused".to_owned()),
            ("lamp3".to_owned(), "sent".to_owned())
        ]
    );
    let request = lamp3
        .expect_json(&format!("/sys/{lamps}/lamp3/thing/service/blink"))
        .await;
    assert_eq!(request["params"], json!({"times": 3}));
    let answer = api
        .call(
            "POST",
            &format!("/api/v1/groups/{room}/services/ping"),
            Some(json!({})),
        )
        .await
        .ok(200);
    assert_eq!(answer["sent"], 0);
    assert_eq!(answer["refused"], 2);

    // Broadcast to the group with its subgroups: the device broadcast topic.
    let answer = api
        .call(
            "POST",
            &format!("/api/v1/groups/{floor}/broadcast"),
            Some(json!({"payloadText": "hello floor", "withSubgroups": true})),
        )
        .await
        .ok(200);
    let message_id = answer["messageId"].as_str().expect("messageId").to_owned();
    let mut got = statuses(&answer);
    got.sort();
    assert_eq!(
        got,
        [
            ("bare1".to_owned(), "offline".to_owned()),
            ("lamp1".to_owned(), "sent".to_owned()),
            ("lamp2".to_owned(), "offline".to_owned()),
            ("lamp3".to_owned(), "sent".to_owned()),
        ]
    );
    for (mqtt, dn) in [(&mut lamp1, "lamp1"), (&mut lamp3, "lamp3")] {
        let want = format!("/sys/{lamps}/{dn}/broadcast/request/{message_id}");
        loop {
            let (topic, payload) = mqtt.next_publish().await;
            if topic == want {
                assert_eq!(payload, b"hello floor");
                break;
            }
        }
    }
    lamp1.disconnect().await;
    lamp3.disconnect().await;

    // Without the thing-model runtime the group calls are unavailable, the rest works.
    let plain = Api::start().await;
    let g = create_group(&plain, json!({"groupName": "solo"})).await;
    plain
        .call(
            "POST",
            &format!("/api/v1/groups/{g}/properties/set"),
            Some(json!({"items": {"brightness": 1}})),
        )
        .await
        .assert_error(503, "ServiceUnavailable");
}
