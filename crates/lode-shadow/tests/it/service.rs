//! The API's operations: concurrent desired updates, deletion of the shadow and of the
//! device.

use serde_json::json;

use lode_shadow::{ServiceError, ShadowError};

use crate::harness::{Platform, error_code};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_desired_updates_one_wins_per_version_none_lost_without() {
    let p = Platform::start().await;
    p.register("lamp4").await;

    // Sixteen writers send version 1: exactly one wins, the others conflict.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (s, pk) = (p.shadows.clone(), p.product_key.clone());
        tasks.push(tokio::spawn(async move {
            s.update_desired(&pk, "lamp4", &json!({ "w": i }), Some(1))
                .await
        }));
    }
    let (mut won, mut conflicts) = (Vec::new(), 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(doc) => won.push(doc),
            Err(ServiceError::Shadow(ShadowError::VersionConflict { current: 1 })) => {
                conflicts += 1
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((won.len(), conflicts), (1, 15));
    let stored = p
        .shadows
        .get(&p.product_key, "lamp4")
        .await
        .expect("shadow");
    assert_eq!(stored.version, 1);
    assert_eq!(stored.desired.values, won[0].desired.values);

    // Without versions every write lands: no update overwrites another.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (s, pk) = (p.shadows.clone(), p.product_key.clone());
        tasks.push(tokio::spawn(async move {
            s.update_desired(&pk, "lamp4", &json!({ format!("k{i}"): i }), None)
                .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("unversioned write");
    }
    let stored = p
        .shadows
        .get(&p.product_key, "lamp4")
        .await
        .expect("shadow");
    assert_eq!(stored.version, 17);
    assert_eq!(
        stored.desired.values.len(),
        17,
        "{:?}",
        stored.desired.values
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_shadow_and_device() {
    let p = Platform::start().await;
    let mut d = p.device("lamp5").await;
    let r = d
        .request(json!({"method":"update","state":{"reported":{"a":1}},"version":9}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");
    assert!(
        p.shadows
            .delete(&p.product_key, "lamp5")
            .await
            .expect("delete")
    );
    assert!(
        !p.shadows
            .delete(&p.product_key, "lamp5")
            .await
            .expect("delete again")
    );
    let doc = p
        .shadows
        .get(&p.product_key, "lamp5")
        .await
        .expect("shadow");
    assert_eq!((doc.version, doc.is_empty()), (0, true));
    let r = d.request(json!({"method":"get"})).await;
    assert_eq!(error_code(&r).as_deref(), Some("407"), "{r}");
    let r = d
        .request(json!({"method":"update","state":{"reported":{"a":2}},"version":1}))
        .await;
    assert_eq!(error_code(&r), None, "{r}");

    d.device.disconnect().await.expect("disconnect");
    p.registry
        .registry
        .delete_device(&p.product_key, "lamp5")
        .await
        .expect("device deleted");
    let e = p.shadows.get(&p.product_key, "lamp5").await.unwrap_err();
    assert!(
        matches!(
            e,
            ServiceError::Registry(lode_registry::RegistryError::DeviceNotFound(_))
        ),
        "{e}"
    );
    let e = p
        .shadows
        .update_desired(&p.product_key, "lamp5", &json!({"a":1}), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::Registry(_)), "{e}");
    p.register("lamp5").await;
    let doc = p
        .shadows
        .get(&p.product_key, "lamp5")
        .await
        .expect("shadow");
    assert!(
        doc.is_empty(),
        "a new device of the same name starts without a shadow"
    );
}
