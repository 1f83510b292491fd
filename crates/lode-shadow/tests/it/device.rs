//! Device requests on `/shadow/update` and their replies on `/shadow/get`; pushes of the
//! desired state to online devices and to devices coming online; limits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::{Platform, error_code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_get_delete_and_clear_desired() {
    let p = Platform::start().await;
    let mut d = p.device("lamp1").await;

    let r = d
        .request(json!({"method":"update","state":{"reported":{"color":"red","power":1}},"version":1,"clientToken":"c-1"}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");
    assert_eq!(
        (r["payload"]["version"].as_u64(), r["version"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(r["clientToken"], "c-1");
    assert!(r["timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000));

    // A stale version is refused with the current one.
    let r = d
        .request(json!({"method":"update","state":{"reported":{"color":"blue"}},"version":1}))
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("409"), "{r}");
    assert_eq!(r["version"], 1);

    let r = d.request(json!({"method":"get","clientToken":"g"})).await;
    assert_eq!(error_code(&r), None, "{r}");
    assert_eq!(
        r["payload"]["state"]["reported"],
        json!({"color":"red","power":1})
    );
    assert!(r["payload"]["metadata"]["reported"]["color"]["timestamp"].is_u64());
    assert_eq!(
        (r["version"].as_u64(), r["clientToken"].as_str()),
        (Some(1), Some("g"))
    );

    // The application sets desired state: the online device gets the difference at once.
    let doc = p
        .shadows
        .update_desired(
            &p.product_key,
            "lamp1",
            &json!({"color":"green","power":1}),
            Some(2),
        )
        .await
        .expect("desired set");
    assert_eq!(doc.version, 2);
    let c = d.next().await;
    assert_eq!(c["method"], "control", "{c}");
    assert_eq!(c["payload"]["state"]["desired"], json!({"color":"green"}));
    assert_eq!(
        (c["version"].as_u64(), c["payload"]["status"].as_str()),
        (Some(2), Some("success"))
    );
    assert!(
        c["timestamp"].is_u64()
            && c["payload"]["metadata"]["desired"]["color"]["timestamp"].is_u64()
    );

    // The device applies it, reports, and clears desired.
    let r = d
        .request(json!({"method":"update","state":{"reported":{"color":"green"}},"version":3}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");
    let r = d
        .request(json!({"method":"update","state":{"desired":"null"},"version":4}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");
    let doc = p
        .shadows
        .get(&p.product_key, "lamp1")
        .await
        .expect("shadow");
    assert!(doc.desired.values.is_empty());
    assert_eq!(doc.version, 4);

    // Delete one attribute, then all of them.
    let r = d
        .request(json!({"method":"delete","state":{"reported":{"power":"null"}},"version":5}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");
    let r = d.request(json!({"method":"get"})).await;
    assert_eq!(r["payload"]["state"]["reported"], json!({"color":"green"}));
    assert_eq!(r["version"], 5);
    let r = d
        .request(json!({"method":"delete","state":{"reported":"null"}}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");
    assert_eq!(r["version"], 6);
    let r = d.request(json!({"method":"get"})).await;
    assert_eq!(error_code(&r).as_deref(), Some("407"), "{r}");

    // Malformed requests are answered, not dropped.
    for (req, code) in [
        (json!({"state":{}}), "401"),
        (json!({"method":"update"}), "402"),
        (
            json!({"method":"update","state":{"reported":{"a":1}},"version":"x"}),
            "403",
        ),
        (json!({"method":"update","state":{}}), "404"),
        (json!({"method":"update","state":{"reported":{}}}), "405"),
        (json!({"method":"reboot"}), "406"),
    ] {
        let r = d.request(req.clone()).await;
        assert_eq!(error_code(&r).as_deref(), Some(code), "{req} -> {r}");
    }
    d.send_raw(b"{not json").await;
    let r = d.next().await;
    assert_eq!(error_code(&r).as_deref(), Some("400"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_set_offline_is_pushed_at_sign_in() {
    let p = Platform::start().await;
    let secret = p.register("lamp2").await;
    let mut d = p.connect("lamp2", &secret).await;
    let r = d
        .request(json!({"method":"update","state":{"reported":{"color":"red","mode":1}}}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");
    d.device.disconnect().await.expect("disconnect");
    drop(d);
    p.wait_status("lamp2", false).await;

    let doc = p
        .shadows
        .update_desired(
            &p.product_key,
            "lamp2",
            &json!({"color":"blue","mode":1}),
            None,
        )
        .await
        .expect("desired set while offline");
    assert_eq!(doc.version, 2);

    let mut d = p.connect("lamp2", &secret).await;
    let c = d.next().await;
    assert_eq!(c["method"], "control", "{c}");
    assert_eq!(c["payload"]["state"]["desired"], json!({"color":"blue"}));
    assert_eq!(c["version"], 2);

    // Once reported and cleared, the next sign-in pushes nothing.
    let r = d
        .request(json!({"method":"update","state":{"reported":{"color":"blue"},"desired":"null"}}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");
    d.device.disconnect().await.expect("disconnect");
    drop(d);
    p.wait_status("lamp2", false).await;
    let mut d = p.connect("lamp2", &secret).await;
    assert!(d.nothing_within(Duration::from_millis(500)).await);
}

fn unix_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Waits for the start of a second, so that a burst stays within one rate window.
async fn start_of_second() {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1000 - ms) + 5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_depth_size_properties_and_rate() {
    let p = Platform::start().await;
    let mut d = p.device("lamp3").await;

    let deep = json!({"a":{"b":{"c":{"d":{"e":{"f":1}}}}}});
    let r = d
        .request(json!({"method":"update","state":{"reported":deep}}))
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("400"), "{r}");
    let five = json!({"a":{"b":{"c":{"d":1}}}});
    let r = d
        .request(json!({"method":"update","state":{"reported":five}}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");

    let many: serde_json::Map<String, Value> =
        (0..129).map(|i| (format!("p{i}"), json!(i))).collect();
    let r = d
        .request(json!({"method":"update","state":{"reported":many}}))
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("408"), "{r}");

    let big = "x".repeat(17 * 1024);
    let r = d
        .request(json!({"method":"update","state":{"reported":{"blob":big}}}))
        .await;
    assert_eq!(error_code(&r).as_deref(), Some("400"), "{r}");
    let r = p
        .shadows
        .update_desired(
            &p.product_key,
            "lamp3",
            &json!({"blob": "y".repeat(17 * 1024)}),
            None,
        )
        .await;
    assert!(
        matches!(r, Err(lode_shadow::ServiceError::Shadow(ref e)) if e.code() == 400),
        "{r:?}"
    );

    // 30 requests in one second: 20 answered normally, the rest with 429; none dropped.
    start_of_second().await;
    let first = unix_second();
    for _ in 0..30 {
        d.send(&json!({"method":"get"})).await;
    }
    let mut throttled = 0;
    for _ in 0..30 {
        let r = d.next().await;
        if error_code(&r).as_deref() == Some("429") {
            throttled += 1;
        }
    }
    let windows = unix_second() - first + 1;
    if windows == 1 {
        assert_eq!(throttled, 10);
    } else {
        // A slow machine spread the burst over several windows.
        assert!(
            30 - throttled <= 20 * windows,
            "{throttled} throttled over {windows} s"
        );
    }
}
