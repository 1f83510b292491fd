//! Conformance of [`crate::RegistryStore::configs`].

use super::{Harness, account_and_product, code, ok, run, small_limits};

pub async fn remote_configs(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_, pk) = account_and_product(&s).await;
        let c = s.configs();
        assert_eq!(ok(c.current_config(&pk).await), None);
        assert!(ok(c.list_config_versions(&pk).await).is_empty());

        let v1 = ok(c.save_config(&pk, r#"{"a":1}"#, "aa", 64).await);
        assert_eq!((v1.version, v1.size, v1.sha256.as_str()), (1, 7, "aa"));
        assert!(v1.config_id.starts_with('c') && v1.config_id.len() == 21);
        let v2 = ok(c.save_config(&pk, r#"{"a":2}"#, "bb", 64).await);
        assert_eq!(v2.version, 2);
        assert_ne!(v1.config_id, v2.config_id);

        assert_eq!(ok(c.current_config(&pk).await), Some(v2.clone()));
        assert_eq!(ok(c.get_config_version(&pk, 1).await), Some(v1.clone()));
        assert_eq!(ok(c.get_config_version(&pk, 3).await), None);
        assert_eq!(
            ok(c.get_config_by_id(&v1.config_id).await),
            Some(v1.clone())
        );
        assert_eq!(ok(c.get_config_by_id("cnope").await), None);
        assert_eq!(
            ok(c.list_config_versions(&pk).await),
            vec![v2.clone(), v1.clone()]
        );

        // Over the size limit: refused, nothing stored.
        assert_eq!(
            code(c.save_config(&pk, r#"{"a":"0123456789"}"#, "cc", 10).await),
            "InvalidParameter"
        );
        assert_eq!(ok(c.list_config_versions(&pk).await).len(), 2);
        assert_eq!(
            code(c.save_config("nope", "{}", "dd", 64).await),
            "ProductNotFound"
        );

        // Concurrent saves get distinct, consecutive versions.
        let mut tasks = Vec::new();
        for i in 0..6 {
            let s = s.clone();
            let pk = pk.clone();
            tasks.push(tokio::spawn(async move {
                s.configs()
                    .save_config(&pk, &format!("{{\"n\":{i}}}"), "ee", 64)
                    .await
                    .map(|v| v.version)
            }));
        }
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(ok(t.await.expect("task")));
        }
        versions.sort_unstable();
        assert_eq!(versions, (3..=8).collect::<Vec<i64>>());

        // Deleting the product deletes its configurations.
        ok(s.delete_product(&pk).await);
        assert!(ok(c.list_config_versions(&pk).await).is_empty());
    })
    .await;
}
