//! Conformance of [`crate::RegistryStore::shadows`].

use std::sync::Arc;

use super::{Harness, account_and_product, code, ok, run, small_limits};
use crate::{NewDevice, ShadowWrite};

pub async fn shadows(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_, pk) = account_and_product(&s).await;
        ok(s.create_device(&pk, NewDevice::new("dev1")).await);
        ok(s.create_device(&pk, NewDevice::new("dev2")).await);
        let shadows = s.shadows();

        // No shadow yet; unknown devices are refused.
        assert_eq!(ok(shadows.get_shadow(&pk, "dev1").await), None);
        assert_eq!(
            code(shadows.get_shadow(&pk, "nope").await),
            "DeviceNotFound"
        );
        assert_eq!(
            code(shadows.put_shadow(&pk, "nope", 0, "{}", 1).await),
            "DeviceNotFound"
        );
        assert_eq!(
            code(shadows.delete_shadow(&pk, "nope").await),
            "DeviceNotFound"
        );
        assert_eq!(
            code(shadows.put_shadow(&pk, "dev1", 3, "{}", 3).await),
            "InvalidParameter"
        );

        // First write expects 0; a second writer that also expected 0 loses.
        let first = ok(shadows.put_shadow(&pk, "dev1", 0, r#"{"a":1}"#, 1).await);
        let ShadowWrite::Written(first) = first else {
            panic!("first write refused: {first:?}");
        };
        assert_eq!((first.document.as_str(), first.version), (r#"{"a":1}"#, 1));
        match ok(shadows.put_shadow(&pk, "dev1", 0, r#"{"a":2}"#, 1).await) {
            ShadowWrite::Conflict(Some(current)) => assert_eq!(current, first),
            other => panic!("expected a conflict, got {other:?}"),
        }
        // A stale expectation loses, the right one wins, versions may jump.
        let w = ok(shadows.put_shadow(&pk, "dev1", 1, r#"{"a":3}"#, 5).await);
        assert!(matches!(w, ShadowWrite::Written(ref r) if r.version == 5));
        match ok(shadows.put_shadow(&pk, "dev1", 1, r#"{"a":4}"#, 6).await) {
            ShadowWrite::Conflict(Some(current)) => {
                assert_eq!(
                    (current.document.as_str(), current.version),
                    (r#"{"a":3}"#, 5)
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let got = ok(shadows.get_shadow(&pk, "dev1").await).expect("shadow");
        assert_eq!((got.document.as_str(), got.version), (r#"{"a":3}"#, 5));

        // Per-device isolation.
        assert_eq!(ok(shadows.get_shadow(&pk, "dev2").await), None);
        let w = ok(shadows.put_shadow(&pk, "dev2", 0, r#"{"b":1}"#, 1).await);
        assert!(matches!(w, ShadowWrite::Written(_)));
        assert_eq!(
            ok(shadows.get_shadow(&pk, "dev1").await).map(|r| r.version),
            Some(5)
        );

        // Concurrent writers expecting the same version: exactly one wins.
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let s = Arc::clone(&s);
            let pk = pk.clone();
            tasks.push(tokio::spawn(async move {
                let doc = format!(r#"{{"w":{i}}}"#);
                ok(s.shadows().put_shadow(&pk, "dev1", 5, &doc, 6).await)
            }));
        }
        let mut won = 0;
        for t in tasks {
            if matches!(t.await.expect("writer task"), ShadowWrite::Written(_)) {
                won += 1;
            }
        }
        assert_eq!(won, 1);
        assert_eq!(
            ok(shadows.get_shadow(&pk, "dev1").await).map(|r| r.version),
            Some(6)
        );

        // Delete: gone, then a new document starts from 0 again.
        assert!(ok(shadows.delete_shadow(&pk, "dev1").await));
        assert!(!ok(shadows.delete_shadow(&pk, "dev1").await));
        assert_eq!(ok(shadows.get_shadow(&pk, "dev1").await), None);
        let w = ok(shadows.put_shadow(&pk, "dev1", 0, "{}", 1).await);
        assert!(matches!(w, ShadowWrite::Written(_)));

        // Deleting the device deletes its shadow: a device of the same name starts empty.
        ok(s.delete_device(&pk, "dev2").await);
        assert_eq!(
            code(shadows.get_shadow(&pk, "dev2").await),
            "DeviceNotFound"
        );
        ok(s.create_device(&pk, NewDevice::new("dev2")).await);
        assert_eq!(ok(shadows.get_shadow(&pk, "dev2").await), None);
    })
    .await;
}
