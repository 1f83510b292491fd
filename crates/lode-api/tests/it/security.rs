//! Signatures, bearer tokens, throttling and account isolation.

use std::sync::Arc;

use lode_api::{ApiConfig, Qps};
use lode_broker::AllowAnonymous;
use serde_json::json;

use crate::harness::{Api, Key, http, new_account, nonce, now_ms, sign};

#[tokio::test]
async fn signed_request_is_accepted() {
    let api = Api::start().await;
    let r = api.call("GET", "/api/v1/accessKeys", None).await;
    let body = r.ok(200);
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["accessKeyId"], api.key.id.as_str());
    assert!(
        items[0].get("accessKeySecret").is_none(),
        "listing hides secrets"
    );
    assert!(r.header("x-lode-request-id").is_some());

    // Queries are part of the signature, in any order and encoding.
    let r = api
        .call("GET", "/api/v1/products?pageSize=5&pageNo=1", None)
        .await;
    assert_eq!(r.ok(200)["pageSize"], 5);
}

#[tokio::test]
async fn each_refusal_has_its_code() {
    let api = Api::start().await;
    let path = "/api/v1/products";

    // No signature headers at all.
    http(api.addr, "GET", path, &[], b"")
        .await
        .assert_error(401, "MissingSignature");
    // One header missing.
    let mut h = sign(&api.key, "GET", path, b"", now_ms(), &nonce());
    h.retain(|(k, _)| k != "x-lode-nonce");
    http(api.addr, "GET", path, &h, b"")
        .await
        .assert_error(401, "MissingSignature");

    // Wrong secret.
    let wrong = Key {
        secret: "not-the-secret".into(),
        ..api.key.clone()
    };
    let r = api.call_as(&wrong, "GET", path, None).await;
    r.assert_error(403, "SignatureDoesNotMatch");

    // Signed over a different body than the one sent.
    let h = sign(&api.key, "POST", path, b"{}", now_ms(), &nonce());
    http(api.addr, "POST", path, &h, br#"{"name":"x"}"#)
        .await
        .assert_error(403, "SignatureDoesNotMatch");

    // Unknown key.
    let unknown = Key {
        id: "LTAI0000000000000000".into(),
        ..api.key.clone()
    };
    api.call_as(&unknown, "GET", path, None)
        .await
        .assert_error(401, "AccessKeyNotFound");

    // Too old and too far in the future.
    for ts in [now_ms() - 6 * 60_000, now_ms() + 6 * 60_000] {
        let h = sign(&api.key, "GET", path, b"", ts, &nonce());
        http(api.addr, "GET", path, &h, b"")
            .await
            .assert_error(403, "RequestExpired");
    }
    let mut h = sign(&api.key, "GET", path, b"", now_ms(), &nonce());
    for (k, v) in &mut h {
        if k == "x-lode-timestamp" {
            *v = "yesterday".into();
        }
    }
    http(api.addr, "GET", path, &h, b"")
        .await
        .assert_error(403, "RequestExpired");

    // Replayed nonce: the same signed request twice.
    let h = sign(&api.key, "GET", path, b"", now_ms(), "fixed-nonce");
    http(api.addr, "GET", path, &h, b"").await.ok(200);
    http(api.addr, "GET", path, &h, b"")
        .await
        .assert_error(403, "RequestReplayed");

    // Disabled key: a second key disables the first.
    let second = api.call("POST", "/api/v1/accessKeys", None).await.ok(201);
    let second = Key {
        account_id: api.key.account_id.clone(),
        id: second["accessKeyId"].as_str().expect("id").into(),
        secret: second["accessKeySecret"].as_str().expect("secret").into(),
    };
    api.call_as(
        &second,
        "PATCH",
        &format!("/api/v1/accessKeys/{}", api.key.id),
        Some(json!({"enabled": false})),
    )
    .await
    .ok(200);
    api.call("GET", path, None)
        .await
        .assert_error(403, "AccessKeyDisabled");
    api.call_as(
        &second,
        "PATCH",
        &format!("/api/v1/accessKeys/{}", api.key.id),
        Some(json!({"enabled": true})),
    )
    .await
    .ok(200);
    api.call("GET", path, None).await.ok(200);
    api.call_as(
        &second,
        "DELETE",
        &format!("/api/v1/accessKeys/{}", second.id),
        None,
    )
    .await
    .ok(204);
    api.call_as(&second, "GET", path, None)
        .await
        .assert_error(401, "AccessKeyNotFound");
}

#[tokio::test]
async fn bearer_tokens() {
    let api = Api::start().await;
    let t = api.call("POST", "/api/v1/tokens", None).await.ok(201);
    let token = t["token"].as_str().expect("token");
    assert_eq!(token.len(), 64);
    assert!(t["expiresAt"].is_string());

    api.call_bearer(
        token,
        "POST",
        "/api/v1/products",
        Some(json!({"name": "viaToken"})),
    )
    .await
    .ok(201);
    let list = api
        .call_bearer(token, "GET", "/api/v1/products", None)
        .await
        .ok(200);
    assert_eq!(list["total"], 1);

    api.call_bearer("00ff", "GET", "/api/v1/products", None)
        .await
        .assert_error(401, "InvalidToken");
    // A token cannot mint tokens.
    api.call_bearer(token, "POST", "/api/v1/tokens", None)
        .await
        .assert_error(401, "MissingSignature");

    // Disabling the key that obtained the token ends the token too.
    api.registry
        .set_access_key_enabled(&api.key.id, false)
        .await
        .expect("disable");
    api.call_bearer(token, "GET", "/api/v1/products", None)
        .await
        .assert_error(403, "AccessKeyDisabled");
}

#[tokio::test]
async fn accounts_are_isolated() {
    let api = Api::start().await;
    let p = api.product("mine", false).await;
    let pk = p["productKey"].as_str().expect("pk");
    api.call(
        "POST",
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({"deviceName": "dev1"})),
    )
    .await
    .ok(201);

    let other = new_account(api.registry.as_ref(), "other").await;
    let paths = [
        ("GET", format!("/api/v1/products/{pk}")),
        ("DELETE", format!("/api/v1/products/{pk}")),
        ("GET", format!("/api/v1/products/{pk}/devices")),
        ("GET", format!("/api/v1/products/{pk}/devices/dev1")),
        ("GET", format!("/api/v1/products/{pk}/topics")),
        (
            "POST",
            format!("/api/v1/products/{pk}/devices/dev1:disable"),
        ),
    ];
    for (method, path) in &paths {
        api.call_as(&other, method, path, None)
            .await
            .assert_error(404, "ProductNotFound");
    }
    let list = api
        .call_as(&other, "GET", "/api/v1/products", None)
        .await
        .ok(200);
    assert_eq!(list["total"], 0);
    // Another account's key is not found either.
    api.call_as(
        &other,
        "DELETE",
        &format!("/api/v1/accessKeys/{}", api.key.id),
        None,
    )
    .await
    .assert_error(404, "AccessKeyNotFound");
    // Nor can it publish to the product's topics.
    api.call_as(
        &other,
        "POST",
        "/api/v1/pub",
        Some(json!({"topic": format!("/{pk}/dev1/user/get"), "payloadText": "x"})),
    )
    .await
    .assert_error(403, "TopicNotAllowed");
    // The owner still sees everything.
    api.call("GET", &format!("/api/v1/products/{pk}/devices/dev1"), None)
        .await
        .ok(200);
}

#[tokio::test]
async fn throttling_returns_429() {
    let mut config = ApiConfig::default();
    config.throttle.other = Qps {
        per_account: 3,
        per_ip: 1_000,
    };
    config.throttle.broadcast = Qps {
        per_account: 1,
        per_ip: 1_000,
    };
    let api = Api::start_with(config, Arc::new(AllowAnonymous)).await;
    let p = api.product("t", false).await;
    let pk = p["productKey"].as_str().expect("pk").to_owned();
    // The quota is a rate (3/s, a burst of 3): calls in a row soon hit it,
    // however slow the machine.
    let mut throttled = None;
    for i in 0..30 {
        let r = api.call("GET", "/api/v1/products", None).await;
        if r.status == 429 {
            throttled = Some((i, r));
            break;
        }
        r.ok(200);
    }
    let (i, r) = throttled.expect("throttled within 30 calls");
    assert!(i >= 2, "the first calls of the burst pass");
    r.assert_error(429, "Throttling");

    // Broadcast has its own quota (1/s), untouched by the calls above.
    let b = json!({"topicSuffix": "news", "payloadText": "hi"});
    let path = format!("/api/v1/products/{pk}/broadcast");
    api.call("POST", &path, Some(b.clone())).await.ok(200);
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = api.call("POST", &path, Some(b.clone())).await;
        if r.status == 429 {
            r.assert_error(429, "Throttling");
        }
        codes.push(r.status);
    }
    assert!(codes.contains(&429), "{codes:?}");

    // Another account is not throttled by the first one's calls.
    let other = new_account(api.registry.as_ref(), "other").await;
    api.call_as(&other, "GET", "/api/v1/products", None)
        .await
        .ok(200);

    // Per-IP quotas apply before authentication.
    let mut config = ApiConfig::default();
    config.throttle.other = Qps {
        per_account: 1_000,
        per_ip: 2,
    };
    let api = Api::start_with(config, Arc::new(AllowAnonymous)).await;
    let mut codes = Vec::new();
    for _ in 0..30 {
        let r = http(api.addr, "GET", "/api/v1/products", &[], b"").await;
        codes.push(r.status);
        if r.status == 429 {
            r.assert_error(429, "Throttling");
            break;
        }
        r.assert_error(401, "MissingSignature");
    }
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
}

#[tokio::test]
async fn openapi_lists_every_path() {
    let api = Api::start().await;
    let r = http(api.addr, "GET", "/api/v1/openapi.json", &[], b"").await;
    let doc = r.ok(200);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        "/api/v1/accessKeys",
        "/api/v1/accessKeys/{accessKeyId}",
        "/api/v1/tokens",
        "/api/v1/products",
        "/api/v1/products/{productKey}",
        "/api/v1/products/{productKey}/tags",
        "/api/v1/products/{productKey}/topics",
        "/api/v1/products/{productKey}/topics/{id}",
        "/api/v1/products/{productKey}/devices",
        "/api/v1/products/{productKey}/devices:batch",
        "/api/v1/jobs/{jobId}",
        "/api/v1/products/{productKey}/devices/{deviceName}",
        "/api/v1/products/{productKey}/devices/{deviceName}:enable",
        "/api/v1/products/{productKey}/devices/{deviceName}:disable",
        "/api/v1/products/{productKey}/devices/{deviceName}:resetSecret",
        "/api/v1/products/{productKey}/devices/{deviceName}/tags",
        "/api/v1/products/{productKey}/devices/{deviceName}/status",
        "/api/v1/products/{productKey}/devices/{deviceName}/events",
        "/api/v1/pub",
        "/api/v1/products/{productKey}/broadcast",
        "/api/v1/products/{productKey}/devices/broadcast",
        "/api/v1/products/{productKey}/config",
        "/api/v1/products/{productKey}/config/versions",
        "/api/v1/products/{productKey}/config/push",
        "/api/v1/rrpc",
        "/api/v1/products/{productKey}/thing-model",
        "/api/v1/products/{productKey}/thing-model/publish",
        "/api/v1/products/{productKey}/script",
        "/api/v1/products/{productKey}/script/publish",
        "/api/v1/products/{productKey}/script/test",
        "/api/v1/products/{productKey}/properties/set",
        "/api/v1/products/{productKey}/devices/{deviceName}/properties",
        "/api/v1/products/{productKey}/devices/{deviceName}/properties/set",
        "/api/v1/products/{productKey}/devices/{deviceName}/properties/{identifier}/history",
        "/api/v1/products/{productKey}/devices/{deviceName}/services/{identifier}",
        "/api/v1/products/{productKey}/devices/{deviceName}/event-history",
        "/api/v1/products/{productKey}/devices/{deviceName}/service-calls",
        "/api/v1/products/{productKey}/devices/{deviceName}/service-calls/{messageId}",
        "/api/v1/products/{productKey}/devices/{deviceName}/desired",
        "/api/v1/products/{productKey}/devices/{deviceName}/desired/{identifier}",
        "/api/v1/products/{productKey}/devices/{deviceName}/log",
        "/api/v1/products/{productKey}/devices/{deviceName}/shadow",
        "/api/v1/products/{productKey}/devices/{deviceName}/shadow/desired",
        "/api/v1/products/{productKey}/devices/{deviceName}/topology",
        "/api/v1/products/{productKey}/devices/{deviceName}/topology/delete",
        "/api/v1/products/{productKey}/devices/{deviceName}/gateway",
        "/api/v1/ota/firmware",
        "/api/v1/ota/firmware/{firmwareId}",
        "/api/v1/ota/jobs",
        "/api/v1/ota/jobs/{jobId}",
        "/api/v1/ota/jobs/{jobId}/cancel",
        "/api/v1/ota/jobs/{jobId}/devices",
        "/api/v1/ota/jobs/{jobId}/stats",
        "/api/v1/products/{productKey}/devices/{deviceName}/ota/modules",
        "/api/v1/rules",
        "/api/v1/rules/test",
        "/api/v1/rules/{ruleId}",
        "/api/v1/rules/{ruleId}/enable",
        "/api/v1/rules/{ruleId}/disable",
        "/api/v1/rules/{ruleId}/counters",
        "/api/v1/rules/{ruleId}/trace",
        "/api/v1/destinations",
        "/api/v1/destinations/{destinationId}",
        "/api/v1/groups",
        "/api/v1/groups/{groupId}",
        "/api/v1/groups/{groupId}/subgroups",
        "/api/v1/groups/{groupId}/tags",
        "/api/v1/groups/{groupId}/devices",
        "/api/v1/groups/{groupId}/devices/remove",
        "/api/v1/groups/{groupId}/properties/set",
        "/api/v1/groups/{groupId}/services/{identifier}",
        "/api/v1/groups/{groupId}/broadcast",
        "/api/v1/products/{productKey}/devices/{deviceName}/groups",
        "/api/v1/tags/search",
        "/api/v1/openapi.json",
        "/auth/register/device",
    ];
    for p in expected {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["schemas"].get("BTreeMap").is_none());
    assert!(doc["components"]["schemas"]["DeviceDto"].is_object());
    assert!(doc["components"]["schemas"]["ErrorDetail"].is_object());
    assert!(doc["components"]["schemas"]["ServiceCallDto"].is_object());
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(tags.contains(&"thingModel"), "{tags:?}");
    assert!(doc["components"]["securitySchemes"]["accessKeySignature"].is_object());
    // Every signed operation documents the authentication and throttling errors.
    for (path, item) in paths {
        if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
            continue;
        }
        for (method, op) in item.as_object().expect("path item") {
            for (status, resp) in op["responses"].as_object().expect("responses") {
                assert!(
                    resp["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status} has no description"
                );
            }
            for status in ["401", "403", "429"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} lacks {status}"
                );
            }
            assert!(
                op["responses"]["401"]["description"]
                    .as_str()
                    .expect("description")
                    .contains("MissingSignature")
            );
        }
    }
    let dev = &paths["/api/v1/products/{productKey}/devices"]["get"];
    let params: Vec<&str> = dev["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    for q in [
        "productKey",
        "state",
        "name",
        "tagKey",
        "tagValue",
        "pageNo",
        "pageSize",
    ] {
        assert!(params.contains(&q), "{q} missing from {params:?}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let api = Api::start().await;
    http(api.addr, "GET", "/api/v1/nothing", &[], b"")
        .await
        .assert_error(404, "NotFound");
    api.call("PUT", "/api/v1/products", None)
        .await
        .assert_error(405, "MethodNotAllowed");
    // Bad JSON is InvalidParameter, not a bare axum rejection.
    let r = api
        .call("POST", "/api/v1/products", Some(json!({"name": 5})))
        .await;
    r.assert_error(400, "InvalidParameter");
}

#[tokio::test]
async fn tokens_expire_and_housekeeping_runs() {
    let config = ApiConfig {
        token_ttl: std::time::Duration::from_millis(300),
        housekeeping_interval: std::time::Duration::ZERO,
        ..ApiConfig::default()
    };
    let api = Api::start_with(config, Arc::new(AllowAnonymous)).await;
    let t = api.call("POST", "/api/v1/tokens", None).await.ok(201);
    let token = t["token"].as_str().expect("token");
    api.call_bearer(token, "GET", "/api/v1/products", None)
        .await
        .ok(200);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    api.call_bearer(token, "GET", "/api/v1/products", None)
        .await
        .assert_error(401, "InvalidToken");
    // Nonces are still remembered while their timestamp is in the window,
    // whatever the housekeeping.
    let h = sign(&api.key, "GET", "/api/v1/products", b"", now_ms(), "again");
    http(api.addr, "GET", "/api/v1/products", &h, b"")
        .await
        .ok(200);
    http(api.addr, "GET", "/api/v1/products", &h, b"")
        .await
        .assert_error(403, "RequestReplayed");
}
