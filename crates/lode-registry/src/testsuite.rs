//! Backend-independent conformance tests for [`RegistryStore`] implementations.
//!
//! Enable the `testsuite` feature and, in a test file of the backend:
//!
//! ```ignore
//! struct MyHarness { /* e.g. a temporary file or database schema */ }
//! impl lode_registry::testsuite::Harness for MyHarness {
//!     fn open(&mut self, limits: RegistryLimits)
//!         -> BoxFuture<'_, Option<Arc<dyn RegistryStore>>> { /* None: skip */ }
//!     fn cleanup(&mut self) -> BoxFuture<'_, ()> { /* drop the schema */ }
//! }
//! lode_registry::registry_conformance_tests!(MyHarness::new());
//! ```
//!
//! Each generated `#[tokio::test]` evaluates the harness expression once and
//! opens one empty store with the limits the case needs (small ones, so that
//! every quota is reached cheaply). The calling crate needs `tokio` with the
//! `macros` and `rt` features.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use chrono::{Duration, Utc};

use crate::{
    BoxFuture, DeviceEventKind, DeviceFilter, DeviceState, DocumentKind, NewDevice, NewProduct,
    NewTopicCategory, PageRequest, ProductUpdate, RegistryLimits, RegistryStore, Result, Tags,
    TopicPermission,
};

mod groups;
pub use groups::groups_and_tags;
mod shadow;
pub use shadow::shadows;
mod ota;
pub use ota::ota_firmware_and_jobs;
mod devconfig;
pub use devconfig::remote_configs;
mod topology;
pub use topology::gateway_topology;

/// Opens a backend under test.
pub trait Harness: Send + 'static {
    /// Opens an empty store enforcing `limits`, or `None` when the backend is
    /// not available here (the case is then skipped).
    fn open(&mut self, limits: RegistryLimits) -> BoxFuture<'_, Option<Arc<dyn RegistryStore>>>;
    /// Removes what `open` created; called after the case, also when it failed.
    fn cleanup(&mut self) -> BoxFuture<'_, ()>;
}

/// Generates one `#[tokio::test]` per conformance case, each calling
/// `lode_registry::testsuite::<case>(harness)`.
#[macro_export]
macro_rules! registry_conformance_tests {
    ($harness:expr) => {
        $crate::registry_conformance_tests!(@cases $harness;
            accounts_and_access_keys,
            products_and_default_topic_categories,
            products_per_account_quota,
            account_with_products_is_not_deleted,
            devices_create_get_and_validate,
            devices_per_product_quota,
            devices_per_account_quota,
            batch_register_reports_per_name,
            batch_register_ten_thousand,
            list_devices_pages_cursors_filters,
            device_state_lifecycle,
            reset_secret_and_delete_device,
            product_and_device_tags,
            tags_limit,
            topic_categories,
            topic_categories_limit,
            concurrent_creates_respect_quota,
            json_names,
            dynamic_registration_once,
            imported_access_key,
            product_documents_draft_and_publish,
            rules_and_destinations,
            groups_and_tags,
            shadows,
            ota_firmware_and_jobs,
            remote_configs,
            gateway_topology,
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testsuite::$case($harness).await;
            }
        )*
    };
}

/// Limits small enough to reach every quota with a handful of objects.
pub fn small_limits() -> RegistryLimits {
    RegistryLimits {
        products_per_account: 3,
        devices_per_product: 5,
        devices_per_account: 8,
        tags_per_object: 3,
        topic_categories_per_product: 5,
        batch_register_max: 10_000,
        page_size_max: 200,
        groups_per_account: 5,
        group_depth: 3,
        devices_per_group: 4,
        groups_per_device: 3,
        group_batch_max: 10,
    }
}

async fn run<H, F, Fut>(mut harness: H, limits: RegistryLimits, case: F)
where
    H: Harness,
    F: FnOnce(Arc<dyn RegistryStore>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(store) = harness.open(limits).await else {
        return;
    };
    let outcome = tokio::spawn(case(store)).await;
    harness.cleanup().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("case did not finish: {e}");
    }
}

#[track_caller]
fn ok<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("unexpected error {}: {e}", e.code()),
    }
}

#[track_caller]
fn code<T: Debug>(r: Result<T>) -> &'static str {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code(),
    }
}

fn alnum(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn account_and_product(s: &Arc<dyn RegistryStore>) -> (String, String) {
    let acc = ok(s.create_account("acme").await);
    let p = ok(s.create_product(&acc.id, NewProduct::new("lamp")).await);
    (acc.id, p.product_key)
}

async fn batch(s: &Arc<dyn RegistryStore>, pk: &str, names: &[&str]) {
    let items = ok(s
        .register_devices_batch(pk, names.iter().map(|n| n.to_string()).collect())
        .await);
    for item in items {
        ok(item.result);
    }
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub async fn accounts_and_access_keys(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let acc = ok(s.create_account("acme").await);
        assert_eq!(ok(s.get_account(&acc.id).await), Some(acc.clone()));
        assert_eq!(ok(s.list_accounts().await), vec![acc.clone()]);
        assert_eq!(ok(s.get_account("nope").await), None);

        let k1 = ok(s.create_access_key(&acc.id).await);
        let k2 = ok(s.create_access_key(&acc.id).await);
        assert!(k1.id.starts_with("LTAI") && k1.id.len() == 20 && alnum(&k1.id));
        assert!(k1.secret.len() == 30 && alnum(&k1.secret) && k1.enabled);
        assert_ne!(k1.id, k2.id);
        assert_eq!(ok(s.get_access_key(&k1.id).await), Some(k1.clone()));
        assert_eq!(ok(s.list_access_keys(&acc.id).await).len(), 2);

        let off = ok(s.set_access_key_enabled(&k1.id, false).await);
        assert!(!off.enabled);
        assert!(
            !ok(s.get_access_key(&k1.id).await)
                .map(|k| k.enabled)
                .unwrap_or(true)
        );
        assert!(ok(s.set_access_key_enabled(&k1.id, true).await).enabled);
        assert_eq!(
            code(s.set_access_key_enabled("LTAInope", true).await),
            "AccessKeyNotFound"
        );

        ok(s.delete_access_key(&k1.id).await);
        assert_eq!(ok(s.get_access_key(&k1.id).await), None);
        assert_eq!(code(s.delete_access_key(&k1.id).await), "AccessKeyNotFound");
        assert_eq!(code(s.create_access_key("nope").await), "AccountNotFound");

        ok(s.delete_account(&acc.id).await);
        assert_eq!(ok(s.get_account(&acc.id).await), None);
        assert_eq!(ok(s.get_access_key(&k2.id).await), None);
        assert_eq!(code(s.delete_account(&acc.id).await), "AccountNotFound");
    })
    .await
}

pub async fn products_and_default_topic_categories(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let acc = ok(s.create_account("acme").await);
        let mut np = NewProduct::new("lamp");
        np.description = "a lamp".into();
        np.tags = tags(&[("room", "kitchen")]);
        let p = ok(s.create_product(&acc.id, np).await);
        assert!(p.product_key.starts_with("a1") && p.product_key.len() == 11);
        assert!(alnum(&p.product_key));
        assert!(p.product_secret.len() == 16 && alnum(&p.product_secret));
        assert_eq!(p.tags, tags(&[("room", "kitchen")]));
        assert_eq!(ok(s.get_product(&p.product_key).await), Some(p.clone()));

        let cats = ok(s.list_topic_categories(&p.product_key).await);
        let got: Vec<_> = cats
            .iter()
            .map(|c| (c.template.as_str(), c.permission))
            .collect();
        assert_eq!(got, crate::DEFAULT_TOPIC_CATEGORIES.to_vec());

        let up = ok(s
            .update_product(
                &p.product_key,
                ProductUpdate {
                    name: Some("lamp 2".into()),
                    description: None,
                    dynamic_registration: Some(true),
                },
            )
            .await);
        assert_eq!(up.name, "lamp 2");
        assert_eq!(up.description, "a lamp");
        assert!(up.dynamic_registration);
        assert_eq!(
            code(s.update_product("a1nope", ProductUpdate::default()).await),
            "ProductNotFound"
        );

        assert_eq!(
            code(s.create_product(&acc.id, NewProduct::new("")).await),
            "InvalidProductName"
        );
        assert_eq!(
            code(s.create_product("nope", NewProduct::new("x")).await),
            "AccountNotFound"
        );

        let p2 = ok(s.create_product(&acc.id, NewProduct::new("switch")).await);
        let page = ok(s.list_products(&acc.id, PageRequest::first(1)).await);
        assert_eq!(page.total, 2);
        assert_eq!(page.items.len(), 1);
        let rest = ok(s
            .list_products(
                &acc.id,
                PageRequest::After {
                    cursor: page.next_cursor.clone(),
                    page_size: 10,
                },
            )
            .await);
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.next_cursor, None);
        let mut keys = vec![
            page.items[0].product_key.clone(),
            rest.items[0].product_key.clone(),
        ];
        keys.sort();
        let mut want = vec![p.product_key.clone(), p2.product_key.clone()];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(ok(s.count_products(&acc.id).await), 2);

        ok(s.delete_product(&p.product_key).await);
        assert_eq!(ok(s.get_product(&p.product_key).await), None);
        assert_eq!(
            code(s.delete_product(&p.product_key).await),
            "ProductNotFound"
        );
        assert_eq!(
            code(s.list_topic_categories(&p.product_key).await),
            "ProductNotFound"
        );
        assert_eq!(ok(s.count_products(&acc.id).await), 1);
    })
    .await
}

pub async fn products_per_account_quota(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let acc = ok(s.create_account("acme").await);
        let mut keys = Vec::new();
        for i in 0..3 {
            keys.push(
                ok(s.create_product(&acc.id, NewProduct::new(format!("p{i}")))
                    .await)
                .product_key,
            );
        }
        assert_eq!(
            code(s.create_product(&acc.id, NewProduct::new("p3")).await),
            "QuotaExceeded.ProductsPerAccount"
        );
        assert_eq!(ok(s.count_products(&acc.id).await), 3);
        ok(s.delete_product(&keys[0]).await);
        ok(s.create_product(&acc.id, NewProduct::new("p3")).await);
        // Another account has its own quota.
        let other = ok(s.create_account("other").await);
        ok(s.create_product(&other.id, NewProduct::new("p0")).await);
    })
    .await
}

pub async fn account_with_products_is_not_deleted(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (acc, pk) = account_and_product(&s).await;
        assert_eq!(code(s.delete_account(&acc).await), "AccountNotEmpty");
        ok(s.delete_product(&pk).await);
        ok(s.delete_account(&acc).await);
    })
    .await
}

pub async fn devices_create_get_and_validate(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_, pk) = account_and_product(&s).await;
        let d = ok(s
            .create_device(
                &pk,
                NewDevice {
                    device_name: "dev-1_a@b.c:d".into(),
                    nickname: Some("front door".into()),
                    dynamically_registered: true,
                },
            )
            .await);
        assert_eq!(d.state, DeviceState::Inactive);
        assert!(d.device_secret.len() == 32 && alnum(&d.device_secret));
        assert!(!d.iot_id.is_empty());
        assert!(d.dynamically_registered);
        assert_eq!(ok(s.get_device(&pk, &d.device_name).await), Some(d.clone()));
        assert_eq!(ok(s.get_device_by_iot_id(&d.iot_id).await), Some(d.clone()));
        assert_eq!(ok(s.get_device(&pk, "missing").await), None);
        assert_eq!(ok(s.get_device_by_iot_id("missing").await), None);

        assert_eq!(
            code(s.create_device(&pk, NewDevice::new("dev-1_a@b.c:d")).await),
            "DeviceAlreadyExists"
        );
        for bad in ["abc", "has space", "a/b/c/d", &"x".repeat(33)] {
            assert_eq!(
                code(s.create_device(&pk, NewDevice::new(bad)).await),
                "InvalidDeviceName"
            );
        }
        assert_eq!(
            code(s.create_device("a1nope", NewDevice::new("dev1")).await),
            "ProductNotFound"
        );
        assert_eq!(code(s.delete_product(&pk).await), "ProductNotEmpty");

        let d2 = ok(s.set_device_nickname(&pk, &d.device_name, None).await);
        assert_eq!(d2.nickname, None);
        let d3 = ok(s
            .set_device_firmware_version(&pk, &d.device_name, "1.2.3")
            .await);
        assert_eq!(d3.firmware_version.as_deref(), Some("1.2.3"));
        assert_eq!(
            code(s.set_device_nickname(&pk, "missing", None).await),
            "DeviceNotFound"
        );

        let events = ok(s
            .list_device_events(&pk, &d.device_name, PageRequest::first(10))
            .await);
        assert_eq!(events.total, 1);
        assert_eq!(events.items[0].event, DeviceEventKind::Created);
    })
    .await
}

pub async fn devices_per_product_quota(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (acc, pk) = account_and_product(&s).await;
        batch(&s, &pk, &["dev1", "dev2", "dev3"]).await;
        // A batch that would go over creates nothing.
        assert_eq!(
            code(
                s.register_devices_batch(&pk, vec!["dev4".into(), "dev5".into(), "dev6".into()])
                    .await
            ),
            "QuotaExceeded.DevicesPerProduct"
        );
        assert_eq!(ok(s.count_devices(&pk).await), 3);
        assert_eq!(ok(s.get_device(&pk, "dev4").await), None);
        ok(s.create_device(&pk, NewDevice::new("dev4")).await);
        ok(s.create_device(&pk, NewDevice::new("dev5")).await);
        assert_eq!(
            code(s.create_device(&pk, NewDevice::new("dev6")).await),
            "QuotaExceeded.DevicesPerProduct"
        );
        assert_eq!(ok(s.count_devices(&pk).await), 5);
        assert_eq!(ok(s.count_account_devices(&acc).await), 5);
        ok(s.delete_device(&pk, "dev1").await);
        ok(s.create_device(&pk, NewDevice::new("dev6")).await);
    })
    .await
}

pub async fn devices_per_account_quota(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (acc, p1) = account_and_product(&s).await;
        let p2 = ok(s.create_product(&acc, NewProduct::new("p2")).await).product_key;
        batch(&s, &p1, &["dev1", "dev2", "dev3", "dev4", "dev5"]).await;
        batch(&s, &p2, &["dev1", "dev2"]).await;
        assert_eq!(
            code(
                s.register_devices_batch(&p2, vec!["dev3".into(), "dev4".into()])
                    .await
            ),
            "QuotaExceeded.DevicesPerAccount"
        );
        assert_eq!(ok(s.count_devices(&p2).await), 2);
        ok(s.create_device(&p2, NewDevice::new("dev3")).await);
        assert_eq!(
            code(s.create_device(&p2, NewDevice::new("dev4")).await),
            "QuotaExceeded.DevicesPerAccount"
        );
        assert_eq!(ok(s.count_account_devices(&acc).await), 8);
        assert_eq!(ok(s.count_devices(&p2).await), 3);
    })
    .await
}

pub async fn batch_register_reports_per_name(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_, pk) = account_and_product(&s).await;
        ok(s.create_device(&pk, NewDevice::new("old1")).await);
        let names: Vec<String> = ["new1", "bad", "old1", "new2", "new1"]
            .iter()
            .map(|n| n.to_string())
            .collect();
        let items = ok(s.register_devices_batch(&pk, names.clone()).await);
        let got: Vec<_> = items
            .iter()
            .map(|i| {
                (
                    i.device_name.as_str(),
                    i.result.as_ref().map_err(|e| e.code()).map(|_| ()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("new1", Ok(())),
                ("bad", Err("InvalidDeviceName")),
                ("old1", Err("DeviceAlreadyExists")),
                ("new2", Ok(())),
                ("new1", Err("DeviceAlreadyExists")),
            ]
        );
        for item in &items {
            if let Ok(d) = &item.result {
                assert_eq!(
                    ok(s.get_device(&pk, &d.device_name).await).as_ref(),
                    Some(d)
                );
                let ev = ok(s
                    .list_device_events(&pk, &d.device_name, PageRequest::first(5))
                    .await);
                assert_eq!(ev.items[0].event, DeviceEventKind::Created);
            }
        }
        assert_eq!(ok(s.count_devices(&pk).await), 3);
        assert_eq!(
            code(
                s.register_devices_batch("a1nope", vec!["dev1".into()])
                    .await
            ),
            "ProductNotFound"
        );
        assert!(ok(s.register_devices_batch(&pk, Vec::new()).await).is_empty());
    })
    .await
}

pub async fn batch_register_ten_thousand(h: impl Harness) {
    let limits = RegistryLimits {
        devices_per_product: 20_000,
        devices_per_account: 20_000,
        ..small_limits()
    };
    run(h, limits, |s| async move {
        let (acc, pk) = account_and_product(&s).await;
        let names: Vec<String> = (0..10_000).map(|i| format!("dev{i:05}")).collect();
        let items = ok(s.register_devices_batch(&pk, names).await);
        assert_eq!(items.len(), 10_000);
        assert!(items.iter().all(|i| i.result.is_ok()));
        assert_eq!(ok(s.count_devices(&pk).await), 10_000);
        assert_eq!(ok(s.count_account_devices(&acc).await), 10_000);
        let page = ok(s
            .list_devices(&pk, DeviceFilter::default(), PageRequest::first(200))
            .await);
        assert_eq!(page.total, 10_000);
        assert_eq!(page.items.len(), 200);
        assert!(ok(s.get_device(&pk, "dev09999").await).is_some());
        let too_many: Vec<String> = (0..10_001).map(|i| format!("big{i:05}")).collect();
        assert_eq!(
            code(s.register_devices_batch(&pk, too_many).await),
            "BatchTooLarge"
        );
    })
    .await
}

pub async fn list_devices_pages_cursors_filters(h: impl Harness) {
    let limits = RegistryLimits {
        devices_per_product: 100,
        devices_per_account: 100,
        ..small_limits()
    };
    run(h, limits, |s| async move {
        let (_, pk) = account_and_product(&s).await;
        let mut names: Vec<String> = (0..15).map(|i| format!("sensor-{i:02}")).collect();
        names.extend((0..10).map(|i| format!("valve-{i:02}")));
        let items = ok(s.register_devices_batch(&pk, names.clone()).await);
        assert!(items.iter().all(|i| i.result.is_ok()));
        names.sort();

        let mut seen = Vec::new();
        for page_no in 1..=3 {
            let page = ok(s
                .list_devices(
                    &pk,
                    DeviceFilter::default(),
                    PageRequest::Page {
                        page_no,
                        page_size: 10,
                    },
                )
                .await);
            assert_eq!(page.total, 25);
            seen.extend(page.items.into_iter().map(|d| d.device_name));
        }
        assert_eq!(seen, names);

        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = ok(s
                .list_devices(
                    &pk,
                    DeviceFilter::default(),
                    PageRequest::After {
                        cursor,
                        page_size: 7,
                    },
                )
                .await);
            assert_eq!(page.total, 25);
            seen.extend(page.items.into_iter().map(|d| d.device_name));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, names);

        let prefix = DeviceFilter {
            name_prefix: Some("valve-".into()),
            ..Default::default()
        };
        let page = ok(s.list_devices(&pk, prefix, PageRequest::first(200)).await);
        assert_eq!(page.total, 10);
        assert!(
            page.items
                .iter()
                .all(|d| d.device_name.starts_with("valve-"))
        );

        let at = Utc::now();
        ok(
            s.set_device_state(&pk, "sensor-03", DeviceState::Online, at, None, None)
                .await,
        );
        ok(
            s.set_device_state(&pk, "valve-01", DeviceState::Online, at, None, None)
                .await,
        );
        ok(s.set_device_enabled(&pk, "valve-02", false, None).await);
        let online = DeviceFilter {
            state: Some(DeviceState::Online),
            ..Default::default()
        };
        let page = ok(s.list_devices(&pk, online, PageRequest::first(200)).await);
        let got: Vec<_> = page.items.iter().map(|d| d.device_name.as_str()).collect();
        assert_eq!(got, vec!["sensor-03", "valve-01"]);
        let both = DeviceFilter {
            state: Some(DeviceState::Online),
            name_prefix: Some("valve".into()),
            ..Default::default()
        };
        assert_eq!(
            ok(s.list_devices(&pk, both, PageRequest::first(200)).await).total,
            1
        );
        let disabled = DeviceFilter {
            state: Some(DeviceState::Disabled),
            ..Default::default()
        };
        assert_eq!(
            ok(s.list_devices(&pk, disabled, PageRequest::first(200)).await).total,
            1
        );

        ok(s.set_device_tags(&pk, "sensor-01", tags(&[("floor", "1")]))
            .await);
        ok(s.set_device_tags(&pk, "sensor-02", tags(&[("floor", "2")]))
            .await);
        let tagged = |v: Option<&str>| DeviceFilter {
            tag: Some(("floor".into(), v.map(str::to_owned))),
            ..Default::default()
        };
        assert_eq!(
            ok(s.list_devices(&pk, tagged(None), PageRequest::first(200))
                .await)
            .total,
            2
        );
        let page = ok(s
            .list_devices(&pk, tagged(Some("2")), PageRequest::first(200))
            .await);
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].device_name, "sensor-02");

        for size in [0, 201] {
            assert_eq!(
                code(
                    s.list_devices(&pk, DeviceFilter::default(), PageRequest::first(size))
                        .await
                ),
                "InvalidPageSize"
            );
        }
        assert_eq!(
            code(
                s.list_devices("a1nope", DeviceFilter::default(), PageRequest::first(10))
                    .await
            ),
            "ProductNotFound"
        );
    })
    .await
}

pub async fn device_state_lifecycle(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_, pk) = account_and_product(&s).await;
        ok(s.create_device(&pk, NewDevice::new("dev1")).await);
        let t1 = crate::backend::now();
        let d = ok(s
            .set_device_state(&pk, "dev1", DeviceState::Online, t1, Some("10.0.0.7"), None)
            .await);
        assert_eq!(d.state, DeviceState::Online);
        assert_eq!(d.activated_at, Some(t1));
        assert_eq!(d.last_online_at, Some(t1));
        assert_eq!(d.last_ip.as_deref(), Some("10.0.0.7"));

        let t2 = t1 + Duration::seconds(5);
        let d = ok(s
            .set_device_state(
                &pk,
                "dev1",
                DeviceState::Offline,
                t2,
                None,
                Some("keepalive timeout"),
            )
            .await);
        assert_eq!(d.state, DeviceState::Offline);
        assert_eq!(d.last_offline_at, Some(t2));
        assert_eq!(d.activated_at, Some(t1));

        let t3 = t2 + Duration::seconds(5);
        let d = ok(s
            .set_device_state(&pk, "dev1", DeviceState::Online, t3, None, None)
            .await);
        assert_eq!(d.activated_at, Some(t1), "activated once");

        let d = ok(s
            .set_device_enabled(&pk, "dev1", false, Some("stolen"))
            .await);
        assert_eq!(d.state, DeviceState::Disabled);
        assert_eq!(
            code(
                s.set_device_state(&pk, "dev1", DeviceState::Online, t3, None, None)
                    .await
            ),
            "DeviceDisabled"
        );
        assert_eq!(
            ok(s.set_device_enabled(&pk, "dev1", false, None).await).state,
            DeviceState::Disabled
        );
        assert_eq!(
            ok(s.set_device_enabled(&pk, "dev1", true, None).await).state,
            DeviceState::Offline
        );
        ok(s.create_device(&pk, NewDevice::new("dev2")).await);
        ok(s.set_device_enabled(&pk, "dev2", false, None).await);
        assert_eq!(
            ok(s.set_device_enabled(&pk, "dev2", true, None).await).state,
            DeviceState::Inactive
        );

        assert_eq!(
            code(
                s.set_device_state(&pk, "dev1", DeviceState::Inactive, t3, None, None)
                    .await
            ),
            "InvalidParameter"
        );
        assert_eq!(
            code(
                s.set_device_state(&pk, "nope", DeviceState::Online, t3, None, None)
                    .await
            ),
            "DeviceNotFound"
        );

        use DeviceEventKind::*;
        let all = ok(s
            .list_device_events(&pk, "dev1", PageRequest::first(50))
            .await);
        let kinds: Vec<_> = all.items.iter().map(|e| e.event).collect();
        assert_eq!(
            kinds,
            vec![
                Enabled, Disabled, Online, Offline, Online, Activated, Created
            ]
        );
        assert_eq!(all.total, 7);
        assert_eq!(all.items[1].reason.as_deref(), Some("stolen"));
        assert_eq!(all.items[3].reason.as_deref(), Some("keepalive timeout"));
        assert_eq!(all.items[5].ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(all.items[5].at, t1);

        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = ok(s
                .list_device_events(
                    &pk,
                    "dev1",
                    PageRequest::After {
                        cursor,
                        page_size: 3,
                    },
                )
                .await);
            seen.extend(page.items.iter().map(|e| e.event));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, kinds);
        let p2 = ok(s
            .list_device_events(
                &pk,
                "dev1",
                PageRequest::Page {
                    page_no: 2,
                    page_size: 3,
                },
            )
            .await);
        assert_eq!(
            p2.items.iter().map(|e| e.event).collect::<Vec<_>>(),
            kinds[3..6].to_vec()
        );
    })
    .await
}

pub async fn reset_secret_and_delete_device(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (acc, pk) = account_and_product(&s).await;
        let d = ok(s.create_device(&pk, NewDevice::new("dev1")).await);
        ok(s.set_device_tags(&pk, "dev1", tags(&[("k", "v")])).await);
        let r = ok(s.reset_device_secret(&pk, "dev1").await);
        assert_ne!(r.device_secret, d.device_secret);
        assert_eq!(r.device_secret.len(), 32);
        assert_eq!(
            ok(s.get_device(&pk, "dev1").await).map(|d| d.device_secret),
            Some(r.device_secret)
        );
        assert_eq!(
            code(s.reset_device_secret(&pk, "nope").await),
            "DeviceNotFound"
        );

        ok(s.delete_device(&pk, "dev1").await);
        assert_eq!(ok(s.get_device(&pk, "dev1").await), None);
        assert_eq!(ok(s.get_device_by_iot_id(&d.iot_id).await), None);
        assert_eq!(ok(s.count_devices(&pk).await), 0);
        assert_eq!(ok(s.count_account_devices(&acc).await), 0);
        assert_eq!(code(s.delete_device(&pk, "dev1").await), "DeviceNotFound");
        assert_eq!(
            code(s.delete_device("a1nope", "dev1").await),
            "DeviceNotFound"
        );
        let page = ok(s
            .find_devices_by_tag(&acc, "k", None, PageRequest::first(10))
            .await);
        assert_eq!(page.total, 0);

        let events = ok(s
            .list_device_events(&pk, "dev1", PageRequest::first(10))
            .await);
        let kinds: Vec<_> = events.items.iter().map(|e| e.event).collect();
        use DeviceEventKind::*;
        assert_eq!(kinds, vec![Deleted, SecretReset, Created]);

        // The name can be registered again, with a new identity.
        let again = ok(s.create_device(&pk, NewDevice::new("dev1")).await);
        assert_ne!(again.iot_id, d.iot_id);
        assert!(again.tags.is_empty());
        ok(s.delete_device(&pk, "dev1").await);
        ok(s.delete_product(&pk).await);
    })
    .await
}

pub async fn product_and_device_tags(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (acc, p1) = account_and_product(&s).await;
        let p2 = ok(s.create_product(&acc, NewProduct::new("p2")).await).product_key;
        let t = ok(s
            .set_product_tags(&p1, tags(&[("env", "prod"), ("site", "a")]))
            .await);
        assert_eq!(t, tags(&[("env", "prod"), ("site", "a")]));
        let t = ok(s.set_product_tags(&p1, tags(&[("env", "test")])).await);
        assert_eq!(t, tags(&[("env", "test"), ("site", "a")]));
        assert_eq!(ok(s.get_product(&p1).await).map(|p| p.tags), Some(t));
        ok(s.set_product_tags(&p2, tags(&[("env", "prod")])).await);

        let found = ok(s.find_products_by_tag(&acc, "env", None).await);
        assert_eq!(found.len(), 2);
        let found = ok(s.find_products_by_tag(&acc, "env", Some("test")).await);
        assert_eq!(
            found
                .iter()
                .map(|p| p.product_key.clone())
                .collect::<Vec<_>>(),
            vec![p1.clone()]
        );
        let other = ok(s.create_account("other").await);
        assert!(ok(s.find_products_by_tag(&other.id, "env", None).await).is_empty());

        let t = ok(s
            .remove_product_tags(&p1, vec!["env".into(), "absent".into()])
            .await);
        assert_eq!(t, tags(&[("site", "a")]));
        assert_eq!(
            ok(s.find_products_by_tag(&acc, "env", Some("test")).await).len(),
            0
        );
        assert_eq!(
            code(s.set_product_tags("a1nope", tags(&[("a", "b")])).await),
            "ProductNotFound"
        );
        assert_eq!(
            code(s.set_product_tags(&p1, tags(&[("bad key", "b")])).await),
            "InvalidTag"
        );

        batch(&s, &p1, &["dev1", "dev2"]).await;
        batch(&s, &p2, &["dev1"]).await;
        ok(s.set_device_tags(&p1, "dev1", tags(&[("color", "red")]))
            .await);
        ok(s.set_device_tags(&p1, "dev2", tags(&[("color", "blue")]))
            .await);
        let t = ok(s
            .set_device_tags(&p2, "dev1", tags(&[("color", "red"), ("x", "1")]))
            .await);
        assert_eq!(ok(s.get_device(&p2, "dev1").await).map(|d| d.tags), Some(t));

        let red = ok(s
            .find_devices_by_tag(&acc, "color", Some("red"), PageRequest::first(10))
            .await);
        let mut got: Vec<_> = red
            .items
            .iter()
            .map(|d| (d.product_key.clone(), d.device_name.clone()))
            .collect();
        got.sort();
        let mut want = vec![
            (p1.clone(), "dev1".to_string()),
            (p2.clone(), "dev1".to_string()),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(red.total, 2);
        let any = ok(s
            .find_devices_by_tag(&acc, "color", None, PageRequest::first(2))
            .await);
        assert_eq!(any.total, 3);
        let next = ok(s
            .find_devices_by_tag(
                &acc,
                "color",
                None,
                PageRequest::After {
                    cursor: any.next_cursor,
                    page_size: 2,
                },
            )
            .await);
        assert_eq!(any.items.len() + next.items.len(), 3);
        assert_eq!(next.next_cursor, None);

        let t = ok(s
            .remove_device_tags(&p2, "dev1", vec!["color".into()])
            .await);
        assert_eq!(t, tags(&[("x", "1")]));
        assert_eq!(
            ok(
                s.find_devices_by_tag(&acc, "color", Some("red"), PageRequest::first(10))
                    .await
            )
            .total,
            1
        );
        assert_eq!(
            code(s.set_device_tags(&p1, "nope", tags(&[("a", "b")])).await),
            "DeviceNotFound"
        );
    })
    .await
}

pub async fn tags_limit(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let acc = ok(s.create_account("acme").await);
        let mut np = NewProduct::new("p");
        np.tags = tags(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
        assert_eq!(code(s.create_product(&acc.id, np).await), "TooManyTags");
        let pk = ok(s.create_product(&acc.id, NewProduct::new("p")).await).product_key;
        ok(
            s.set_product_tags(&pk, tags(&[("a", "1"), ("b", "2"), ("c", "3")]))
                .await,
        );
        assert_eq!(
            code(s.set_product_tags(&pk, tags(&[("d", "4")])).await),
            "TooManyTags"
        );
        // Replacing an existing key does not count twice.
        ok(s.set_product_tags(&pk, tags(&[("a", "9")])).await);
        ok(s.create_device(&pk, NewDevice::new("dev1")).await);
        ok(
            s.set_device_tags(&pk, "dev1", tags(&[("a", "1"), ("b", "2")]))
                .await,
        );
        assert_eq!(
            code(
                s.set_device_tags(&pk, "dev1", tags(&[("c", "1"), ("d", "2")]))
                    .await
            ),
            "TooManyTags"
        );
        let d = ok(s.get_device(&pk, "dev1").await).map(|d| d.tags.len());
        assert_eq!(d, Some(2));
    })
    .await
}

pub async fn topic_categories(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_, pk) = account_and_product(&s).await;
        let new = |t: &str, p| NewTopicCategory {
            template: t.to_string(),
            permission: p,
            description: "custom".into(),
        };
        let c = ok(s
            .create_topic_category(
                &pk,
                new(
                    "/${productKey}/${deviceName}/user/cmd",
                    TopicPermission::Sub,
                ),
            )
            .await);
        assert_eq!(c.product_key, pk);
        assert_eq!(c.permission, TopicPermission::Sub);
        assert_eq!(ok(s.list_topic_categories(&pk).await).len(), 4);
        assert_eq!(
            code(
                s.create_topic_category(
                    &pk,
                    new(
                        "/${productKey}/${deviceName}/user/cmd",
                        TopicPermission::Pub
                    )
                )
                .await
            ),
            "TopicCategoryAlreadyExists"
        );
        for bad in [
            "/${productKey}/user/cmd",
            "/${productKey}/${deviceName}/a/b/c/d/e/f",
            "/${productKey}/${deviceName}/user//x",
        ] {
            assert_eq!(
                code(
                    s.create_topic_category(&pk, new(bad, TopicPermission::Pub))
                        .await
                ),
                "InvalidTopicTemplate"
            );
        }
        let long = format!("/${{productKey}}/${{deviceName}}/{}", "a".repeat(100));
        assert_eq!(
            code(
                s.create_topic_category(&pk, new(&long, TopicPermission::Pub))
                    .await
            ),
            "InvalidTopicTemplate"
        );
        assert_eq!(
            code(
                s.create_topic_category(
                    "a1nope",
                    new("/${productKey}/${deviceName}/user/x", TopicPermission::Pub)
                )
                .await
            ),
            "ProductNotFound"
        );

        let u = ok(s
            .update_topic_category(
                &pk,
                c.id,
                new(
                    "/${productKey}/${deviceName}/user/cmd2",
                    TopicPermission::PubSub,
                ),
            )
            .await);
        assert_eq!(u.id, c.id);
        assert_eq!(u.permission, TopicPermission::PubSub);
        assert_eq!(
            code(
                s.update_topic_category(
                    &pk,
                    c.id,
                    new(
                        "/${productKey}/${deviceName}/user/get",
                        TopicPermission::Sub
                    )
                )
                .await
            ),
            "TopicCategoryAlreadyExists"
        );
        let listed = ok(s.list_topic_categories(&pk).await);
        assert_eq!(listed.last(), Some(&u));
        ok(s.delete_topic_category(&pk, c.id).await);
        assert_eq!(
            code(s.delete_topic_category(&pk, c.id).await),
            "TopicCategoryNotFound"
        );
        assert_eq!(
            code(
                s.update_topic_category(
                    &pk,
                    c.id,
                    new("/${productKey}/${deviceName}/user/z", TopicPermission::Sub)
                )
                .await
            ),
            "TopicCategoryNotFound"
        );
        assert_eq!(ok(s.list_topic_categories(&pk).await).len(), 3);
    })
    .await
}

pub async fn topic_categories_limit(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_, pk) = account_and_product(&s).await;
        let new = |i: u32| NewTopicCategory {
            template: format!("/${{productKey}}/${{deviceName}}/user/t{i}"),
            permission: TopicPermission::Pub,
            description: String::new(),
        };
        ok(s.create_topic_category(&pk, new(1)).await);
        ok(s.create_topic_category(&pk, new(2)).await);
        assert_eq!(
            code(s.create_topic_category(&pk, new(3)).await),
            "QuotaExceeded.TopicCategoriesPerProduct"
        );
        assert_eq!(ok(s.list_topic_categories(&pk).await).len(), 5);
    })
    .await
}

pub async fn concurrent_creates_respect_quota(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (acc, pk) = account_and_product(&s).await;
        let mut tasks = Vec::new();
        for i in 0..12 {
            let s = Arc::clone(&s);
            let pk = pk.clone();
            tasks.push(tokio::spawn(async move {
                s.create_device(&pk, NewDevice::new(format!("dev{i:02}")))
                    .await
                    .map_err(|e| e.code())
                    .map(|_| ())
            }));
        }
        let mut created = 0;
        for t in tasks {
            match t.await {
                Ok(Ok(())) => created += 1,
                Ok(Err(code)) => assert_eq!(code, "QuotaExceeded.DevicesPerProduct"),
                Err(e) => panic!("task failed: {e}"),
            }
        }
        assert_eq!(created, 5);
        assert_eq!(ok(s.count_devices(&pk).await), 5);
        assert_eq!(ok(s.count_account_devices(&acc).await), 5);
        let page = ok(s
            .list_devices(&pk, DeviceFilter::default(), PageRequest::first(20))
            .await);
        assert_eq!(page.total, 5);
    })
    .await
}

pub async fn json_names(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_, pk) = account_and_product(&s).await;
        let d = ok(s.create_device(&pk, NewDevice::new("dev1")).await);
        let v = match serde_json_value(&d) {
            Some(v) => v,
            None => panic!("device does not serialize"),
        };
        for key in [
            "productKey",
            "deviceName",
            "deviceSecret",
            "iotId",
            "status",
            "gmtCreate",
        ] {
            assert!(v.contains(&format!("\"{key}\":")), "{key} missing in {v}");
        }
        let p = ok(s.get_product(&pk).await);
        let v = serde_json_value(&p).unwrap_or_default();
        for key in ["productKey", "productSecret", "productName", "nodeType"] {
            assert!(v.contains(&format!("\"{key}\":")), "{key} missing in {v}");
        }
    })
    .await
}

fn serde_json_value<T: serde::Serialize>(v: &T) -> Option<String> {
    serde_json::to_string(v).ok()
}

pub async fn dynamic_registration_once(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_acc, pk) = account_and_product(&s).await;
        ok(s.create_device(&pk, NewDevice::new("dev1")).await);
        let d = ok(s.mark_dynamically_registered(&pk, "dev1").await);
        assert!(d.dynamically_registered);
        assert_eq!(
            code(s.mark_dynamically_registered(&pk, "dev1").await),
            "DeviceAlreadyRegistered"
        );
        ok(s.create_device(&pk, NewDevice::new("dev2")).await);
        ok(
            s.set_device_state(&pk, "dev2", DeviceState::Online, Utc::now(), None, None)
                .await,
        );
        assert_eq!(
            code(s.mark_dynamically_registered(&pk, "dev2").await),
            "DeviceAlreadyRegistered",
            "a device that connected already has its secret"
        );
        assert_eq!(
            code(s.mark_dynamically_registered(&pk, "nope").await),
            "DeviceNotFound"
        );
    })
    .await;
}

pub async fn imported_access_key(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let acc = ok(s.create_account("ops").await);
        let key = ok(s
            .import_access_key(&acc.id, "LTAIbootstrap01", "0123456789abcdef0123")
            .await);
        assert_eq!(key.secret, "0123456789abcdef0123");
        assert_eq!(
            ok(s.get_access_key("LTAIbootstrap01").await).map(|k| k.account_id),
            Some(acc.id.clone())
        );
        assert_eq!(
            code(
                s.import_access_key(&acc.id, "LTAIbootstrap01", "0123456789abcdef0123")
                    .await
            ),
            "InvalidParameter"
        );
        assert_eq!(
            code(s.import_access_key(&acc.id, "x", "short").await),
            "InvalidParameter"
        );
    })
    .await;
}

pub async fn product_documents_draft_and_publish(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (_acc, pk) = account_and_product(&s).await;
        assert_eq!(ok(s.get_document(&pk, DocumentKind::Tsl).await), None);
        assert_eq!(
            code(s.publish_draft(&pk, DocumentKind::Tsl).await),
            "NothingToPublish"
        );
        let d = ok(s.save_draft(&pk, DocumentKind::Tsl, "{\"v\":1}").await);
        assert_eq!(d.draft.as_deref(), Some("{\"v\":1}"));
        assert_eq!((d.published.as_deref(), d.version), (None, 0));
        assert!(d.draft_updated_at.is_some());

        let p = ok(s.publish_draft(&pk, DocumentKind::Tsl).await);
        assert_eq!(p.published.as_deref(), Some("{\"v\":1}"));
        assert_eq!(p.version, 1);
        assert!(p.published_at.is_some());

        // A new draft leaves the published version alone until it is published.
        ok(s.save_draft(&pk, DocumentKind::Tsl, "{\"v\":2}").await);
        let d = ok(s.get_document(&pk, DocumentKind::Tsl).await).expect("exists");
        assert_eq!(d.draft.as_deref(), Some("{\"v\":2}"));
        assert_eq!(d.published.as_deref(), Some("{\"v\":1}"));
        assert_eq!(d.version, 1);
        let p = ok(s.publish_draft(&pk, DocumentKind::Tsl).await);
        assert_eq!((p.published.as_deref(), p.version), (Some("{\"v\":2}"), 2));

        // Kinds are independent.
        assert_eq!(ok(s.get_document(&pk, DocumentKind::Script).await), None);
        ok(s.save_draft(&pk, DocumentKind::Script, "function f(){}")
            .await);
        let t = ok(s.get_document(&pk, DocumentKind::Tsl).await).expect("exists");
        assert_eq!(t.version, 2);

        assert_eq!(
            code(s.save_draft("nope", DocumentKind::Tsl, "{}").await),
            "ProductNotFound"
        );
        assert_eq!(
            code(s.publish_draft("nope", DocumentKind::Tsl).await),
            "ProductNotFound"
        );
        // Deleting the product deletes its documents.
        ok(s.delete_product(&pk).await);
        assert_eq!(ok(s.get_document(&pk, DocumentKind::Tsl).await), None);
    })
    .await;
}

pub async fn rules_and_destinations(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let acc = ok(s.create_account("acme").await).id;
        let other = ok(s.create_account("other").await).id;
        let store = s.rules();
        let new = |name: &str| crate::NewRule {
            name: name.to_owned(),
            sql: "SELECT * FROM '/a/+/user/up'".to_owned(),
            enabled: false,
            actions: "[]".to_owned(),
            error_action: None,
        };
        let r1 = ok(store.create_rule(&acc, new("one"), 2).await);
        assert!(r1.id.starts_with('r') && !r1.enabled);
        assert_eq!(
            (r1.name.as_str(), r1.account_id.as_str()),
            ("one", acc.as_str())
        );
        let r2 = ok(store.create_rule(&acc, new("two"), 2).await);
        assert_eq!(
            code(store.create_rule(&acc, new("three"), 2).await),
            "QuotaExceeded.RulesPerAccount"
        );
        assert_eq!(
            code(store.create_rule("nope", new("x"), 2).await),
            "AccountNotFound"
        );
        ok(store.create_rule(&other, new("theirs"), 2).await);

        let mut changed = new("one again");
        changed.actions = r#"[{"type":"republish"}]"#.to_owned();
        changed.error_action = Some("{}".to_owned());
        let u = ok(store.update_rule(&r1.id, changed).await);
        assert_eq!(u.actions, r#"[{"type":"republish"}]"#);
        assert_eq!(
            (u.name.as_str(), u.error_action.as_deref()),
            ("one again", Some("{}"))
        );
        assert!(ok(store.set_rule_enabled(&r1.id, true).await).enabled);
        assert_eq!(
            ok(store.get_rule(&r1.id).await),
            Some(ok(store.get_rule(&r1.id).await).expect("exists"))
        );
        assert!(ok(store.get_rule(&r1.id).await).expect("exists").enabled);
        let mine: Vec<String> = ok(store.list_rules(Some(&acc)).await)
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut expected = vec![r1.id.clone(), r2.id.clone()];
        expected.sort();
        assert_eq!(mine, expected);
        assert_eq!(ok(store.list_rules(None).await).len(), 3);
        assert_eq!(
            code(store.update_rule("nope", new("x")).await),
            "RuleNotFound"
        );
        assert_eq!(
            code(store.set_rule_enabled("nope", true).await),
            "RuleNotFound"
        );

        // Deleting frees a place under the limit.
        ok(store.delete_rule(&r2.id).await);
        assert_eq!(ok(store.get_rule(&r2.id).await), None);
        assert_eq!(code(store.delete_rule(&r2.id).await), "RuleNotFound");
        ok(store.create_rule(&acc, new("three"), 2).await);

        let dest = |name: &str| crate::NewDestination {
            name: name.to_owned(),
            kind: "http".to_owned(),
            config: r#"{"url":"http://127.0.0.1:1/"}"#.to_owned(),
        };
        let d = ok(store.create_destination(&acc, dest("hook")).await);
        assert!(d.id.starts_with('d'));
        assert_eq!(
            code(store.create_destination(&acc, dest("hook")).await),
            "DestinationAlreadyExists"
        );
        ok(store.create_destination(&other, dest("hook")).await);
        assert_eq!(
            code(store.create_destination("nope", dest("x")).await),
            "AccountNotFound"
        );
        let mut changed = dest("hook2");
        changed.kind = "postgres".to_owned();
        let u = ok(store.update_destination(&d.id, changed).await);
        assert_eq!((u.name.as_str(), u.kind.as_str()), ("hook2", "postgres"));
        assert_eq!(ok(store.get_destination(&d.id).await), Some(u));
        assert_eq!(ok(store.list_destinations(Some(&acc)).await).len(), 1);
        assert_eq!(ok(store.list_destinations(None).await).len(), 2);
        ok(store.delete_destination(&d.id).await);
        assert_eq!(
            code(store.delete_destination(&d.id).await),
            "DestinationNotFound"
        );
        assert_eq!(
            code(store.update_destination(&d.id, dest("x")).await),
            "DestinationNotFound"
        );
    })
    .await;
}
