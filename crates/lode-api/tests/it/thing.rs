//! The thing-model routes end to end: a product's TSL and script through the API,
//! a device signed in over MQTT posting properties and events and answering
//! property sets and sync calls, and what the queries then show.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Api, Mqtt, new_account};

fn tsl() -> Value {
    json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"productKey": "any"},
        "properties": [
            {"identifier": "temperature", "name": "Temperature", "accessMode": "r", "required": false,
             "dataType": {"type": "float", "specs": {"min": "-40", "max": "120", "step": "0.1"}}},
            {"identifier": "target", "name": "Target", "accessMode": "rw", "required": false,
             "dataType": {"type": "int", "specs": {"min": "0", "max": "100", "step": "1"}}}
        ],
        "events": [
            {"identifier": "overheat", "name": "Overheat", "type": "alert", "required": false,
             "method": "thing.event.overheat.post",
             "outputData": [{"identifier": "level", "name": "Level",
                "dataType": {"type": "int", "specs": {"min": "1", "max": "3", "step": "1"}}}]}
        ],
        "services": [
            {"identifier": "add", "name": "Add", "callType": "sync", "required": false,
             "method": "thing.service.add",
             "inputData": [
                {"identifier": "a", "name": "a", "dataType": {"type": "int", "specs": {"min": "0", "max": "1000", "step": "1"}}},
                {"identifier": "b", "name": "b", "dataType": {"type": "int", "specs": {"min": "0", "max": "1000", "step": "1"}}}
             ],
             "outputData": [
                {"identifier": "sum", "name": "sum", "dataType": {"type": "int", "specs": {"min": "0", "max": "2000", "step": "1"}}}
             ]},
            {"identifier": "reboot", "name": "Reboot", "callType": "async", "required": false,
             "method": "thing.service.reboot", "inputData": [], "outputData": []}
        ]
    })
}

const SCRIPT: &str = "function rawDataToProtocol(bytes) {\n\
    var b = new Uint8Array(bytes);\n\
    return {method: 'thing.event.property.post', id: '1', version: '1.0', params: {target: b[0]}};\n\
}\n\
function protocolToRawData(json) {\n\
    return [0x02, json.params.target];\n\
}\n";

/// A product with a published thing model; its ProductKey.
async fn product_with_model(api: &Api, name: &str) -> String {
    let pk = api.product(name, false).await["productKey"]
        .as_str()
        .expect("productKey")
        .to_owned();
    api.call(
        "PUT",
        &format!("/api/v1/products/{pk}/thing-model"),
        Some(tsl()),
    )
    .await
    .ok(200);
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/thing-model/publish"),
        None,
    )
    .await
    .ok(200);
    pk
}

/// Registers `dn` and signs it in; the connection.
async fn online_device(api: &Api, pk: &str, dn: &str) -> Mqtt {
    let device = api
        .call(
            "POST",
            &format!("/api/v1/products/{pk}/devices"),
            Some(json!({"deviceName": dn})),
        )
        .await
        .ok(201);
    let secret = device["deviceSecret"].as_str().expect("secret");
    let mqtt = Mqtt::connect_device(api.mqtt_addr, pk, dn, secret).await;
    // Presence is recorded after CONNACK.
    let status = format!("/api/v1/products/{pk}/devices/{dn}/status");
    for _ in 0..200 {
        if api.call("GET", &status, None).await.ok(200)["online"] == true {
            return mqtt;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("device {dn} never shown online");
}

/// Polls `path` until `done` holds for its JSON body.
async fn until(api: &Api, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = api.call("GET", path, None).await.ok(200);
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{path} never reached the expected state: {last}");
}

#[tokio::test]
async fn without_the_runtime_thing_routes_are_unavailable() {
    let api = Api::start().await;
    let pk = api.product("plain", false).await["productKey"]
        .as_str()
        .expect("pk")
        .to_owned();
    api.call("GET", &format!("/api/v1/products/{pk}/thing-model"), None)
        .await
        .assert_error(503, "ServiceUnavailable");
    api.call(
        "GET",
        &format!("/api/v1/products/{pk}/devices/d1/properties"),
        None,
    )
    .await
    .assert_error(503, "ServiceUnavailable");
}

#[tokio::test]
async fn thing_model_and_script_drafts_publish_and_errors() {
    let api = Api::start_thing().await;
    let pk = api.product("meters", false).await["productKey"]
        .as_str()
        .expect("pk")
        .to_owned();
    let model = format!("/api/v1/products/{pk}/thing-model");

    // Every error of an invalid model is named by its path.
    let mut bad = tsl();
    bad["properties"][0]["identifier"] = json!("1st");
    bad["properties"][1]["dataType"]["specs"]["min"] = json!("500");
    let r = api.call("PUT", &model, Some(bad)).await;
    r.assert_error(400, "InvalidThingModel");
    let body = r.json();
    let message = body["message"].as_str().expect("message");
    assert!(message.contains("properties[0].identifier"), "{message}");
    assert!(
        message.contains("properties[1].dataType.specs"),
        "{message}"
    );
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.contains(&"properties[0].identifier"), "{paths:?}");
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("properties[1].dataType.specs")),
        "{paths:?}"
    );

    // Draft saved, published model still empty.
    let draft = api.call("PUT", &model, Some(tsl())).await.ok(200);
    assert_eq!(draft["version"], 0);
    assert!(draft["draftUpdatedAt"].is_string());
    assert_eq!(draft["tsl"]["properties"][0]["identifier"], "temperature");
    assert_eq!(draft["tsl"]["profile"]["productKey"], pk.as_str());
    let published = api.call("GET", &model, None).await.ok(200);
    assert_eq!(published["version"], 0);
    assert!(published["publishedAt"].is_null());
    assert_eq!(published["tsl"]["properties"], json!([]));
    let draft = api
        .call("GET", &format!("{model}?draft=true"), None)
        .await
        .ok(200);
    assert_eq!(draft["tsl"]["properties"].as_array().map(Vec::len), Some(2));

    let done = api
        .call("POST", &format!("{model}/publish"), None)
        .await
        .ok(200);
    assert_eq!(done["version"], 1);
    assert!(done["publishedAt"].is_string());
    let published = api.call("GET", &model, None).await.ok(200);
    assert_eq!(
        published["tsl"]["services"].as_array().map(Vec::len),
        Some(4)
    );

    // Another account sees nothing.
    let other = new_account(api.registry.as_ref(), "other").await;
    api.call_as(&other, "GET", &model, None)
        .await
        .assert_error(404, "ProductNotFound");

    // The script: a syntax error names its line, a good draft runs both ways.
    let script = format!("/api/v1/products/{pk}/script");
    let r = api
        .call(
            "PUT",
            &script,
            Some(json!({"source": "function rawDataToProtocol(b) {\n  return {;\n}\n"})),
        )
        .await;
    r.assert_error(400, "ScriptError");
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 2")),
        "{}",
        r.json()
    );
    let saved = api
        .call("PUT", &script, Some(json!({"source": SCRIPT})))
        .await
        .ok(200);
    assert_eq!(saved["source"], SCRIPT);
    assert!(
        api.call("GET", &script, None).await.ok(200)["source"].is_null(),
        "nothing published yet"
    );
    let test = format!("{script}/test");
    let up = api
        .call(
            "POST",
            &test,
            Some(json!({"direction": "up", "payloadHex": "2a"})),
        )
        .await
        .ok(200);
    assert_eq!(up["result"]["params"]["target"], 42);
    let up = api
        .call(
            "POST",
            &test,
            Some(json!({"direction": "up", "payloadBase64": "Bw=="})),
        )
        .await
        .ok(200);
    assert_eq!(up["result"]["params"]["target"], 7);
    let down = api
        .call(
            "POST",
            &test,
            Some(json!({"direction": "down", "message": {"id": "5", "params": {"target": 16}}})),
        )
        .await
        .ok(200);
    assert_eq!(down["result"]["hex"], "0210");
    assert_eq!(down["result"]["length"], 2);
    // A runtime error in a given source, with its line.
    let r = api
        .call(
            "POST",
            &test,
            Some(json!({
                "direction": "up",
                "payloadHex": "00",
                "source": "function protocolToRawData(j) { return []; }\nfunction rawDataToProtocol(b) {\n  return b.nothing.here;\n}\n"
            })),
        )
        .await;
    r.assert_error(400, "ScriptError");
    let body = r.json();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 3")),
        "{body}"
    );
    assert_eq!(body["errors"][0]["line"], 3);
    api.call("POST", &test, Some(json!({"direction": "up"})))
        .await
        .assert_error(400, "InvalidParameter");

    let done = api
        .call("POST", &format!("{script}/publish"), None)
        .await
        .ok(200);
    assert_eq!(
        (done["version"].clone(), done["source"].clone()),
        (json!(1), json!(SCRIPT))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_data_calls_and_queries() {
    let api = Api::start_thing().await;
    let pk = product_with_model(&api, "thermostats").await;
    let dn = "room-1";
    let mut dev = online_device(&api, &pk, dn).await;
    let base = format!("/api/v1/products/{pk}/devices/{dn}");
    let sys = format!("/sys/{pk}/{dn}");

    // Before any post every property of the model is listed, without a value.
    let latest = api
        .call("GET", &format!("{base}/properties"), None)
        .await
        .ok(200);
    assert_eq!(latest["items"][0]["identifier"], "temperature");
    assert_eq!(latest["items"][0]["name"], "Temperature");
    assert_eq!(latest["items"][0]["dataType"], "float");
    assert!(latest["items"][0]["value"].is_null());
    assert_eq!(latest["items"].as_array().map(Vec::len), Some(2));

    // The device posts two values, then an event.
    for (id, t) in [("1", 21.5), ("2", 22.0)] {
        let post = json!({"id": id, "version": "1.0", "method": "thing.event.property.post",
            "params": {"temperature": t}});
        dev.publish(
            &format!("{sys}/thing/event/property/post"),
            post.to_string().as_bytes(),
        )
        .await;
        let reply = dev
            .expect_json(&format!("{sys}/thing/event/property/post_reply"))
            .await;
        assert_eq!(
            (reply["id"].clone(), reply["code"].clone()),
            (json!(id), json!(200))
        );
    }
    let event = json!({"id": "3", "version": "1.0", "method": "thing.event.overheat.post",
        "params": {"value": {"level": 2}}});
    dev.publish(
        &format!("{sys}/thing/event/overheat/post"),
        event.to_string().as_bytes(),
    )
    .await;
    let reply = dev
        .expect_json(&format!("{sys}/thing/event/overheat/post_reply"))
        .await;
    assert_eq!(reply["code"], 200);

    let latest = api
        .call("GET", &format!("{base}/properties"), None)
        .await
        .ok(200);
    assert_eq!(latest["items"][0]["value"], 22.0);
    assert!(latest["items"][0]["time"].is_i64());

    let history = format!("{base}/properties/temperature/history");
    let all = api.call("GET", &history, None).await.ok(200);
    let values: Vec<&Value> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| &p["value"])
        .collect();
    assert_eq!(values, [&json!(22.0), &json!(21.5)], "newest first");
    let first = api
        .call("GET", &format!("{history}?order=asc&limit=1"), None)
        .await
        .ok(200);
    assert_eq!(first["items"][0]["value"], 21.5);
    let cursor = first["nextCursor"].as_str().expect("a next page");
    let second = api
        .call(
            "GET",
            &format!("{history}?order=asc&limit=1&cursor={cursor}"),
            None,
        )
        .await
        .ok(200);
    assert_eq!(second["items"][0]["value"], 22.0);
    api.call("GET", &format!("{history}?order=sideways"), None)
        .await
        .assert_error(400, "InvalidParameter");
    api.call("GET", &format!("{history}?cursor=garbage"), None)
        .await
        .assert_error(400, "InvalidCursor");
    let empty = api
        .call("GET", &format!("{history}?start=0&end=1000"), None)
        .await
        .ok(200);
    assert_eq!(empty["items"], json!([]));

    let events = api
        .call(
            "GET",
            &format!("{base}/event-history?eventType=alert"),
            None,
        )
        .await
        .ok(200);
    assert_eq!(events["items"][0]["identifier"], "overheat");
    assert_eq!(events["items"][0]["output"]["level"], 2);
    let none = api
        .call("GET", &format!("{base}/event-history?eventType=info"), None)
        .await
        .ok(200);
    assert_eq!(none["items"], json!([]));

    // Property set: reaches the device; its reply finishes the call.
    let set = api
        .call(
            "POST",
            &format!("{base}/properties/set"),
            Some(json!({"items": {"target": 25}})),
        )
        .await
        .ok(200);
    let message_id = set["messageId"].as_str().expect("messageId").to_owned();
    let request = dev
        .expect_json(&format!("{sys}/thing/service/property/set"))
        .await;
    assert_eq!(request["id"], message_id.as_str());
    assert_eq!(request["params"]["target"], 25);
    let reply = json!({"id": message_id, "code": 200, "data": {}});
    dev.publish(
        &format!("{sys}/thing/service/property/set_reply"),
        reply.to_string().as_bytes(),
    )
    .await;
    let call = until(&api, &format!("{base}/service-calls/{message_id}"), |c| {
        c["status"] != "pending"
    })
    .await;
    assert_eq!(call["status"], "succeeded");
    assert_eq!(call["identifier"], "set");
    assert_eq!(call["code"], 200);

    // A read-only property is refused, by name.
    let r = api
        .call(
            "POST",
            &format!("{base}/properties/set"),
            Some(json!({"items": {"temperature": 3}})),
        )
        .await;
    r.assert_error(400, "InvalidParameter");
    assert_eq!(r.json()["errors"][0]["path"], "temperature");

    // A sync call answered by the device over /ext/rrpc.
    let invoke = format!("{base}/services/add");
    let caller = {
        let addr = api.addr;
        let key = api.key.clone();
        let invoke = invoke.clone();
        tokio::spawn(async move {
            let body = json!({"args": {"a": 2, "b": 3}}).to_string().into_bytes();
            let headers = crate::harness::sign(
                &key,
                "POST",
                &invoke,
                &body,
                crate::harness::now_ms(),
                &crate::harness::nonce(),
            );
            crate::harness::http(addr, "POST", &invoke, &headers, &body).await
        })
    };
    let (topic, payload) = dev.next_publish().await;
    let request: Value = serde_json::from_slice(&payload).expect("JSON request");
    let id = request["id"].as_str().expect("id").to_owned();
    assert_eq!(topic, format!("/ext/rrpc/{id}{sys}/thing/service/add"));
    assert_eq!(request["params"], json!({"a": 2, "b": 3}));
    let answer = json!({"id": id, "code": 200, "data": {"sum": 5}});
    dev.publish(&topic, answer.to_string().as_bytes()).await;
    let answered = caller.await.expect("caller task").ok(200);
    assert_eq!(answered["callType"], "sync");
    assert_eq!(answered["messageId"], id.as_str());
    assert_eq!(answered["code"], 200);
    assert_eq!(answered["data"]["sum"], 5);

    // A sync call the device does not answer times out, and stays so.
    let r = api
        .call(
            "POST",
            &invoke,
            Some(json!({"args": {"a": 1, "b": 1}, "timeoutMs": 1000})),
        )
        .await;
    r.assert_error(504, "Timeout");
    let (_, payload) = dev.next_publish().await;
    let unanswered: Value = serde_json::from_slice(&payload).expect("JSON request");
    let calls = api
        .call("GET", &format!("{base}/service-calls?identifier=add"), None)
        .await
        .ok(200);
    assert_eq!(calls["items"][0]["messageId"], unanswered["id"]);
    assert_eq!(calls["items"][0]["status"], "timed_out");
    assert_eq!(calls["items"][1]["status"], "succeeded");
    assert_eq!(calls["items"][1]["output"]["sum"], 5);

    // Async call, bad arguments, unknown service.
    let r = api
        .call("POST", &format!("{base}/services/reboot"), Some(json!({})))
        .await
        .ok(200);
    assert_eq!(r["callType"], "async");
    assert!(r["messageId"].is_string());
    assert!(r.get("code").is_none());
    let r = api
        .call("POST", &invoke, Some(json!({"args": {"a": "x", "b": 1}})))
        .await;
    r.assert_error(400, "InvalidParameter");
    assert_eq!(r.json()["errors"][0]["path"], "a");
    api.call("POST", &format!("{base}/services/fly"), Some(json!({})))
        .await
        .assert_error(404, "ServiceNotFound");
    api.call("POST", &invoke, Some(json!({"timeoutMs": 90_000})))
        .await
        .assert_error(400, "InvalidParameter");

    // Batch set: one message per device, errors per device.
    let batch = api
        .call(
            "POST",
            &format!("/api/v1/products/{pk}/properties/set"),
            Some(json!({"deviceNames": [dn, "ghost", dn], "items": {"target": 7}})),
        )
        .await
        .ok(200);
    let items = batch["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "duplicates are dropped: {batch}");
    assert!(items[0]["messageId"].is_string());
    assert_eq!(items[1]["deviceName"], "ghost");
    assert_eq!(items[1]["code"], "DeviceNotFound");
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/properties/set"),
        Some(json!({"deviceNames": [], "items": {"target": 7}})),
    )
    .await
    .assert_error(400, "InvalidParameter");

    // Desired values with versions.
    let desired = format!("{base}/desired");
    let set = api
        .call("PUT", &desired, Some(json!({"items": {"target": 30}})))
        .await
        .ok(200);
    assert_eq!(
        set["items"][0],
        json!({"identifier": "target", "version": 1})
    );
    let got = api
        .call("GET", &format!("{desired}?identifiers=target"), None)
        .await
        .ok(200);
    assert_eq!(got["items"][0]["value"], 30);
    assert_eq!(got["items"][0]["version"], 1);
    api.call(
        "PUT",
        &desired,
        Some(json!({"items": {"target": 31}, "versions": {"target": 0}})),
    )
    .await
    .assert_error(409, "VersionConflict");
    api.call("DELETE", &format!("{desired}/target?version=5"), None)
        .await
        .assert_error(409, "VersionConflict");
    api.call("DELETE", &format!("{desired}/target?version=1"), None)
        .await
        .ok(204);
    let got = api.call("GET", &desired, None).await.ok(200);
    assert_eq!(got["items"], json!([]));
    api.call("DELETE", &format!("{desired}/target"), None)
        .await
        .assert_error(404, "NotFound");

    // The message log has the uplinks and downlinks.
    let log = until(&api, &format!("{base}/log?limit=200"), |l| {
        l["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|e| e["topic"] == format!("{sys}/thing/service/property/set_reply"))
        })
    })
    .await;
    let items = log["items"].as_array().expect("items");
    let post = items
        .iter()
        .find(|e| e["topic"] == format!("{sys}/thing/event/property/post"))
        .expect("the property post is logged");
    assert_eq!(post["direction"], "up");
    assert_eq!(post["payloadEncoding"], "text");
    assert!(
        post["payload"]
            .as_str()
            .is_some_and(|p| p.contains("temperature"))
    );
    assert_eq!(post["code"], 200);
    assert!(
        items.iter().any(|e| e["direction"] == "down"
            && e["topic"] == format!("{sys}/thing/service/property/set")),
        "the property set is logged"
    );

    // Unknown devices; an offline device refuses calls.
    api.call(
        "GET",
        &format!("/api/v1/products/{pk}/devices/ghost/properties"),
        None,
    )
    .await
    .assert_error(404, "DeviceNotFound");
    dev.disconnect().await;
    until(&api, &format!("{base}/status"), |s| s["online"] == false).await;
    api.call(
        "POST",
        &format!("{base}/properties/set"),
        Some(json!({"items": {"target": 1}})),
    )
    .await
    .assert_error(409, "DeviceOffline");
}
