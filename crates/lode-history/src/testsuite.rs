//! Backend-independent conformance tests for [`ThingStore`] implementations.
//!
//! Enable the `testsuite` feature and, in a test file of the backend:
//!
//! ```ignore
//! struct MyHarness { /* e.g. a temporary directory or database schema */ }
//! impl lode_history::testsuite::Harness for MyHarness {
//!     fn open(&mut self, config: HistoryConfig)
//!         -> BoxFuture<'_, Option<Arc<dyn ThingStore>>> { /* None: skip */ }
//!     fn cleanup(&mut self) -> BoxFuture<'_, ()> { /* drop the schema */ }
//! }
//! lode_history::history_conformance_tests!(MyHarness::new());
//! ```
//!
//! Each generated `#[tokio::test]` evaluates the harness expression once and
//! opens one empty store. The calling crate needs `tokio` with the `macros`
//! and `rt-multi-thread` features.

use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::{
    BoxFuture, CallStatus, DeviceKey, Direction, EventRecord, HistoryConfig, HistoryError,
    LogEntry, Order, Page, PropertyPoint, Query, Record, ServiceCall, ThingStore,
};

/// Opens a backend under test.
pub trait Harness: Send + 'static {
    /// Opens an empty store, or `None` when the backend is not available here
    /// (the case is then skipped).
    fn open(&mut self, config: HistoryConfig) -> BoxFuture<'_, Option<Arc<dyn ThingStore>>>;
    /// Removes what `open` created; called after the case, also when it failed.
    fn cleanup(&mut self) -> BoxFuture<'_, ()>;
}

/// Generates one `#[tokio::test]` per conformance case, each calling
/// `lode_history::testsuite::<case>(harness)`.
#[macro_export]
macro_rules! history_conformance_tests {
    ($harness:expr) => {
        $crate::history_conformance_tests!(@cases $harness;
            latest_advances_only_with_newer_device_time,
            history_range_edges,
            history_orders_and_identifier_filter,
            paging_equal_timestamps_loses_and_repeats_nothing,
            invalid_queries_and_cursors,
            events_with_type_filter,
            service_calls_pending_to_finished,
            desired_values_versions_and_conflicts,
            device_log_keeps_truncated_payloads,
            purge_removes_exactly_the_older_records,
            purge_runs_while_appends_continue,
            delete_device_removes_only_that_device,
            invalid_records_are_refused,
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

/// A fixed base time (2023-11-14), so that cases do not depend on the clock.
pub const T0: i64 = 1_700_000_000_000;

async fn run<H, F, Fut>(mut harness: H, config: HistoryConfig, case: F)
where
    H: Harness,
    F: FnOnce(Arc<dyn ThingStore>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(store) = harness.open(config).await else {
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
fn ok<T>(r: Result<T, HistoryError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[track_caller]
fn err<T: Debug>(r: Result<T, HistoryError>) -> HistoryError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

fn device(name: &str) -> DeviceKey {
    DeviceKey::new("a1TestProduct", name)
}

/// A property point whose value is `[device_time, n]`, so points are told apart.
fn point(device: &DeviceKey, identifier: &str, device_time: i64, n: i64) -> PropertyPoint {
    PropertyPoint {
        device: device.clone(),
        identifier: identifier.into(),
        value: json!([device_time, n]),
        device_time,
        server_time: device_time + 5,
    }
}

fn prop(device: &DeviceKey, identifier: &str, device_time: i64, n: i64) -> Record {
    Record::Property(point(device, identifier, device_time, n))
}

fn event(device: &DeviceKey, identifier: &str, event_type: &str, device_time: i64) -> EventRecord {
    EventRecord {
        device: device.clone(),
        identifier: identifier.into(),
        event_type: event_type.into(),
        output: json!({"at": device_time}),
        device_time,
        server_time: device_time + 1,
    }
}

fn call(device: &DeviceKey, call_id: &str, identifier: &str, started_at: i64) -> ServiceCall {
    ServiceCall {
        device: device.clone(),
        call_id: call_id.into(),
        identifier: identifier.into(),
        call_type: "async".into(),
        input: json!({"mode": 1}),
        status: CallStatus::Pending,
        code: None,
        output: None,
        message: None,
        started_at,
        finished_at: None,
    }
}

fn log(device: &DeviceKey, time: i64, payload: &[u8], payload_size: u32) -> LogEntry {
    LogEntry {
        device: device.clone(),
        time,
        direction: Direction::Up,
        topic: format!(
            "/sys/{}/{}/thing/event/property/post",
            device.product_key, device.device_name
        ),
        payload: payload.to_vec(),
        payload_size,
        code: 200,
        step: None,
        message: None,
        trace_id: format!("trace-{time}"),
    }
}

fn query(device: &DeviceKey, start: i64, end: i64, order: Order, limit: u32) -> Query {
    Query {
        device: device.clone(),
        identifier: None,
        start,
        end,
        order,
        limit,
        cursor: None,
    }
}

fn everything(device: &DeviceKey, order: Order) -> Query {
    query(device, i64::MIN, i64::MAX, order, crate::MAX_PAGE_SIZE)
}

/// Reads every page of a query.
async fn all_pages<T, F>(mut q: Query, mut fetch: F) -> Vec<T>
where
    F: FnMut(Query) -> BoxFuture<'static, Result<Page<T>, HistoryError>>,
{
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let page = ok(fetch(q.clone()).await);
        assert!(page.items.len() <= q.limit as usize, "page over its limit");
        out.extend(page.items);
        match page.next_cursor {
            Some(cursor) => q.cursor = Some(cursor),
            None => return out,
        }
    }
    panic!("paging did not end");
}

fn points_of(
    s: &Arc<dyn ThingStore>,
) -> impl FnMut(Query) -> BoxFuture<'static, Result<Page<PropertyPoint>, HistoryError>> {
    let s = Arc::clone(s);
    move |q| {
        let s = Arc::clone(&s);
        Box::pin(async move { s.property_history(q).await })
    }
}

fn times(points: &[PropertyPoint]) -> Vec<i64> {
    points.iter().map(|p| p.device_time).collect()
}

/// The latest value moves only to points that are not older.
pub async fn latest_advances_only_with_newer_device_time(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        assert!(ok(s.latest(&d).await).is_empty());
        ok(s.append(vec![
            prop(&d, "temp", T0 + 100, 1),
            prop(&d, "hum", T0 + 100, 2),
        ])
        .await);
        // Older point: history only.
        ok(s.append(vec![prop(&d, "temp", T0 + 50, 3)]).await);
        let latest = ok(s.latest(&d).await);
        let summary: Vec<(&str, Value, i64, i64)> = latest
            .iter()
            .map(|l| {
                (
                    l.identifier.as_str(),
                    l.value.clone(),
                    l.device_time,
                    l.server_time,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("hum", json!([T0 + 100, 2]), T0 + 100, T0 + 105),
                ("temp", json!([T0 + 100, 1]), T0 + 100, T0 + 105),
            ]
        );
        // Newer point, and within one batch the newest (last of equals) wins.
        ok(s.append(vec![
            prop(&d, "temp", T0 + 300, 4),
            prop(&d, "temp", T0 + 200, 5),
            prop(&d, "temp", T0 + 300, 6),
        ])
        .await);
        let latest = ok(s.latest(&d).await);
        assert_eq!(latest[1].identifier, "temp");
        assert_eq!(latest[1].value, json!([T0 + 300, 6]));
        // Equal device time in a later append replaces it.
        ok(s.append(vec![prop(&d, "temp", T0 + 300, 7)]).await);
        assert_eq!(ok(s.latest(&d).await)[1].value, json!([T0 + 300, 7]));
        // Every point is in the history.
        let all = ok(s.property_history(everything(&d, Order::OldestFirst)).await);
        assert_eq!(all.items.len(), 7);
        assert!(ok(s.latest(&device("other")).await).is_empty());
    })
    .await;
}

/// `start` is inclusive, `end` exclusive.
pub async fn history_range_edges(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        let records = (0..10).map(|i| prop(&d, "temp", T0 + i * 10, i)).collect();
        ok(s.append(records).await);
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let page = ok(s
                .property_history(query(&d, T0 + 20, T0 + 50, order, 100))
                .await);
            let mut got = times(&page.items);
            if order == Order::NewestFirst {
                got.reverse();
            }
            assert_eq!(got, vec![T0 + 20, T0 + 30, T0 + 40], "{order:?}");
            assert_eq!(page.next_cursor, None);
        }
        let page = ok(s
            .property_history(query(&d, T0 + 21, T0 + 49, Order::OldestFirst, 100))
            .await);
        assert_eq!(times(&page.items), vec![T0 + 30, T0 + 40]);
        let page = ok(s
            .property_history(query(&d, T0 + 30, T0 + 30, Order::OldestFirst, 100))
            .await);
        assert!(page.items.is_empty());
        let page = ok(s
            .property_history(query(&d, T0 + 30, T0 + 31, Order::OldestFirst, 100))
            .await);
        assert_eq!(times(&page.items), vec![T0 + 30]);
        let page = ok(s
            .property_history(query(&d, T0 + 1000, T0 + 2000, Order::NewestFirst, 100))
            .await);
        assert!(page.items.is_empty());
        assert_eq!(page.next_cursor, None);
    })
    .await;
}

/// Both orders, the identifier filter, and all identifiers merged by time.
pub async fn history_orders_and_identifier_filter(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        let other = device("lamp2");
        ok(s.append(vec![
            prop(&d, "temp", T0 + 30, 1),
            prop(&d, "hum", T0 + 10, 2),
            prop(&d, "temp", T0 + 20, 3),
            prop(&d, "hum", T0 + 40, 4),
            prop(&d, "power", T0 + 25, 5),
            prop(&other, "temp", T0 + 15, 6),
        ])
        .await);
        let oldest = ok(s.property_history(everything(&d, Order::OldestFirst)).await);
        let got: Vec<(&str, i64)> = oldest
            .items
            .iter()
            .map(|p| (p.identifier.as_str(), p.device_time))
            .collect();
        assert_eq!(
            got,
            vec![
                ("hum", T0 + 10),
                ("temp", T0 + 20),
                ("power", T0 + 25),
                ("temp", T0 + 30),
                ("hum", T0 + 40),
            ]
        );
        let first = &oldest.items[0];
        assert_eq!(first.device, d);
        assert_eq!(first.value, json!([T0 + 10, 2]));
        assert_eq!(first.server_time, T0 + 15);

        let newest = ok(s.property_history(everything(&d, Order::NewestFirst)).await);
        let mut reversed = newest.items.clone();
        reversed.reverse();
        assert_eq!(reversed, oldest.items);

        let mut q = everything(&d, Order::NewestFirst);
        q.identifier = Some("temp".into());
        let temp = ok(s.property_history(q.clone()).await);
        assert_eq!(times(&temp.items), vec![T0 + 30, T0 + 20]);
        assert!(temp.items.iter().all(|p| p.identifier == "temp"));
        q.identifier = Some("missing".into());
        assert!(ok(s.property_history(q).await).items.is_empty());

        // Paging across identifiers keeps the merged order.
        let mut q = everything(&d, Order::OldestFirst);
        q.limit = 2;
        let paged = all_pages(q, points_of(&s)).await;
        assert_eq!(paged, oldest.items);
    })
    .await;
}

/// Many points with equal timestamps page without loss or repetition.
pub async fn paging_equal_timestamps_loses_and_repeats_nothing(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        let mut n = 0;
        for _ in 0..4 {
            let mut records = Vec::new();
            for i in 0..150 {
                let identifier = ["a", "b", "c"][i % 3];
                // Five distinct times only; equal (identifier, time) pairs too.
                let time = T0 + i64::try_from(i % 5).unwrap_or(0) * 1000;
                records.push(prop(&d, identifier, time, n));
                n += 1;
            }
            ok(s.append(records).await);
        }
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let full = {
                let mut q = everything(&d, order);
                q.limit = crate::MAX_PAGE_SIZE;
                all_pages(q, points_of(&s)).await
            };
            assert_eq!(full.len(), 600, "{order:?}");
            for limit in [1, 7, 150, 1000] {
                let mut q = everything(&d, order);
                q.limit = limit;
                let paged = all_pages(q, points_of(&s)).await;
                assert_eq!(paged, full, "{order:?} limit {limit}");
            }
            let distinct: HashSet<String> = full.iter().map(|p| p.value.to_string()).collect();
            assert_eq!(distinct.len(), 600);
            let ts = times(&full);
            let sorted = match order {
                Order::OldestFirst => ts.windows(2).all(|w| w[0] <= w[1]),
                Order::NewestFirst => ts.windows(2).all(|w| w[0] >= w[1]),
            };
            assert!(sorted, "{order:?} not ordered by time");
            // Within one identifier and time, insertion order (oldest first).
            if order == Order::OldestFirst {
                let mut q = everything(&d, order);
                q.identifier = Some("b".into());
                q.limit = 3;
                let b = all_pages(q, points_of(&s)).await;
                assert_eq!(b.len(), 200);
                let ns: Vec<i64> = b
                    .iter()
                    .filter(|p| p.device_time == T0)
                    .map(|p| p.value[1].as_i64().unwrap_or(-1))
                    .collect();
                assert!(ns.windows(2).all(|w| w[0] < w[1]), "{ns:?}");
            }
        }
        // A page inside a time range with equal timestamps.
        let mut q = query(&d, T0 + 1000, T0 + 3000, Order::NewestFirst, 11);
        q.identifier = Some("a".into());
        let paged = all_pages(q, points_of(&s)).await;
        assert_eq!(paged.len(), 80);
        assert!(
            paged
                .iter()
                .all(|p| p.device_time == T0 + 1000 || p.device_time == T0 + 2000)
        );
    })
    .await;
}

/// Bad ranges, zero limits and foreign cursors are refused.
pub async fn invalid_queries_and_cursors(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        ok(s.append((0..5).map(|i| prop(&d, "t", T0 + i, i)).collect())
            .await);
        let e = err(s
            .property_history(query(&d, T0 + 10, T0, Order::OldestFirst, 10))
            .await);
        assert!(matches!(e, HistoryError::InvalidQuery(_)), "{e:?}");
        let e = err(s
            .device_log(query(&d, T0, T0 + 10, Order::OldestFirst, 0))
            .await);
        assert!(matches!(e, HistoryError::InvalidQuery(_)), "{e:?}");

        let page = ok(s
            .property_history(query(&d, T0, T0 + 10, Order::NewestFirst, 2))
            .await);
        let cursor = page.next_cursor.expect("a cursor");
        let mut q = query(&d, T0, T0 + 10, Order::OldestFirst, 2);
        q.cursor = Some(cursor);
        let e = err(s.property_history(q.clone()).await);
        assert!(matches!(e, HistoryError::InvalidCursor), "{e:?}");
        q.cursor = Some("not a cursor".into());
        let e = err(s.event_history(q.clone(), None).await);
        assert!(matches!(e, HistoryError::InvalidCursor), "{e:?}");
        let e = err(s.call_history(q).await);
        assert!(matches!(e, HistoryError::InvalidCursor), "{e:?}");
    })
    .await;
}

/// Events filter by identifier and event type.
pub async fn events_with_type_filter(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        ok(s.append(vec![
            Record::Event(event(&d, "overheat", "alert", T0 + 1)),
            Record::Event(event(&d, "boot", "info", T0 + 2)),
            Record::Event(event(&d, "overheat", "error", T0 + 3)),
            Record::Event(event(&d, "overheat", "alert", T0 + 4)),
            prop(&d, "temp", T0 + 2, 0),
            Record::Event(event(&device("lamp2"), "overheat", "alert", T0 + 2)),
        ])
        .await);
        let all = ok(s
            .event_history(everything(&d, Order::OldestFirst), None)
            .await);
        assert_eq!(all.items.len(), 4);
        assert_eq!(all.items[1], event(&d, "boot", "info", T0 + 2));

        let alerts = ok(s
            .event_history(everything(&d, Order::NewestFirst), Some("alert".into()))
            .await);
        let got: Vec<(String, i64)> = alerts
            .items
            .iter()
            .map(|e| (e.event_type.clone(), e.device_time))
            .collect();
        assert_eq!(
            got,
            vec![("alert".into(), T0 + 4), ("alert".into(), T0 + 1)]
        );

        let mut q = everything(&d, Order::OldestFirst);
        q.identifier = Some("overheat".into());
        let overheat = ok(s.event_history(q.clone(), None).await);
        assert_eq!(overheat.items.len(), 3);
        let errors = ok(s.event_history(q.clone(), Some("error".into())).await);
        assert_eq!(errors.items, vec![event(&d, "overheat", "error", T0 + 3)]);

        // Filtered paging.
        q.limit = 1;
        let mut seen = Vec::new();
        loop {
            let page = ok(s.event_history(q.clone(), Some("alert".into())).await);
            seen.extend(page.items.iter().map(|e| e.device_time));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, vec![T0 + 1, T0 + 4]);
    })
    .await;
}

/// Calls go from pending to finished, with their duration.
pub async fn service_calls_pending_to_finished(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        let pending = call(&d, "1001", "reboot", T0 + 100);
        ok(s.record_call(pending.clone()).await);
        assert_eq!(ok(s.call(&d, "1001").await), Some(pending.clone()));
        assert_eq!(ok(s.call(&d, "9999").await), None);
        assert_eq!(ok(s.call(&device("lamp2"), "1001").await), None);

        let finished = ok(s
            .finish_call(
                &d,
                "1001",
                CallStatus::Succeeded,
                Some(200),
                Some(json!({"ok": true})),
                Some("success".into()),
                T0 + 350,
            )
            .await)
        .expect("known call");
        assert_eq!(finished.status, CallStatus::Succeeded);
        assert_eq!(finished.duration_ms(), Some(250));
        assert_eq!(finished.output, Some(json!({"ok": true})));
        assert_eq!(ok(s.call(&d, "1001").await), Some(finished.clone()));
        let unknown = s
            .finish_call(&d, "404", CallStatus::Failed, None, None, None, T0)
            .await;
        assert_eq!(ok(unknown), None);

        // Insert or replace by call id.
        let mut second = call(&d, "1002", "setMode", T0 + 200);
        ok(s.record_call(second.clone()).await);
        second.status = CallStatus::TimedOut;
        second.finished_at = Some(T0 + 5200);
        second.started_at = T0 + 210;
        ok(s.record_call(second.clone()).await);
        ok(s.record_call(call(&d, "1003", "reboot", T0 + 300)).await);

        let history = ok(s.call_history(everything(&d, Order::OldestFirst)).await);
        let ids: Vec<&str> = history.items.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(ids, vec!["1001", "1002", "1003"]);
        assert_eq!(history.items[1], second);
        let newest = ok(s.call_history(everything(&d, Order::NewestFirst)).await);
        assert_eq!(newest.items[0].call_id, "1003");

        let mut q = everything(&d, Order::OldestFirst);
        q.identifier = Some("reboot".into());
        let reboots = ok(s.call_history(q).await);
        let ids: Vec<&str> = reboots.items.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(ids, vec!["1001", "1003"]);
        let q = query(&d, T0 + 200, T0 + 300, Order::OldestFirst, 10);
        let ranged = ok(s.call_history(q).await);
        assert_eq!(ranged.items.len(), 1);
        assert_eq!(ranged.items[0].call_id, "1002");
    })
    .await;
}

/// Desired values: versions, conflicts, deletion.
pub async fn desired_values_versions_and_conflicts(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        assert!(ok(s.desired(&d, &[]).await).is_empty());
        assert_eq!(ok(s.set_desired(&d, "power", json!(1), None, T0).await), 1);
        assert_eq!(
            ok(s.set_desired(&d, "power", json!(0), Some(1), T0 + 1).await),
            2
        );
        let e = err(s.set_desired(&d, "power", json!(5), Some(1), T0 + 2).await);
        assert!(
            matches!(e, HistoryError::VersionConflict { current: 2 }),
            "{e:?}"
        );
        let e = err(s.set_desired(&d, "power", json!(5), Some(0), T0 + 2).await);
        assert!(
            matches!(e, HistoryError::VersionConflict { current: 2 }),
            "{e:?}"
        );
        let e = err(s
            .set_desired(&d, "color", json!("red"), Some(3), T0 + 2)
            .await);
        assert!(
            matches!(e, HistoryError::VersionConflict { current: 0 }),
            "{e:?}"
        );
        assert_eq!(
            ok(s.set_desired(&d, "color", json!("red"), Some(0), T0 + 3)
                .await),
            1
        );

        let all = ok(s.desired(&d, &[]).await);
        let got: Vec<(&str, Value, u64, i64)> = all
            .iter()
            .map(|v| (v.identifier.as_str(), v.value.clone(), v.version, v.time))
            .collect();
        assert_eq!(
            got,
            vec![
                ("color", json!("red"), 1, T0 + 3),
                ("power", json!(0), 2, T0 + 1)
            ]
        );
        let some = ok(s.desired(&d, &["power".into(), "missing".into()]).await);
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].identifier, "power");
        assert!(ok(s.desired(&device("lamp2"), &[]).await).is_empty());

        let e = err(s.delete_desired(&d, "power", Some(1)).await);
        assert!(
            matches!(e, HistoryError::VersionConflict { current: 2 }),
            "{e:?}"
        );
        ok(s.delete_desired(&d, "power", Some(2)).await);
        let left = ok(s.desired(&d, &[]).await);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].identifier, "color");
        assert!(ok(s.desired(&d, &["power".into()]).await).is_empty());
        let e = err(s.delete_desired(&d, "power", None).await);
        assert!(matches!(e, HistoryError::NotFound), "{e:?}");
        let e = err(s.delete_desired(&d, "never", None).await);
        assert!(matches!(e, HistoryError::NotFound), "{e:?}");
        // Versions continue after a deletion.
        assert_eq!(
            ok(s.set_desired(&d, "power", json!(1), None, T0 + 9).await),
            4
        );
        ok(s.delete_desired(&d, "color", None).await);
        let left = ok(s.desired(&d, &[]).await);
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].identifier.as_str(), left[0].version), ("power", 4));
    })
    .await;
}

/// The message log keeps truncated payloads, their real size and failures.
pub async fn device_log_keeps_truncated_payloads(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        let truncated: Vec<u8> = (0..=255).collect();
        let mut failed = log(&d, T0 + 2, &truncated, 70_000);
        failed.direction = Direction::Down;
        failed.code = 6_304;
        failed.step = Some("tsl".into());
        failed.message = Some("property not defined".into());
        let entries = vec![
            log(&d, T0 + 1, b"{\"id\":\"1\"}", 10),
            failed.clone(),
            log(&d, T0 + 3, b"", 0),
            log(&device("lamp2"), T0 + 2, b"x", 1),
        ];
        ok(s.append_log(entries).await);
        ok(s.append_log(Vec::new()).await);
        let page = ok(s.device_log(everything(&d, Order::NewestFirst)).await);
        let got: Vec<i64> = page.items.iter().map(|e| e.time).collect();
        assert_eq!(got, vec![T0 + 3, T0 + 2, T0 + 1]);
        assert_eq!(page.items[1], failed);
        assert_eq!(page.items[2].payload, b"{\"id\":\"1\"}".to_vec());

        let mut q = query(&d, T0 + 2, T0 + 4, Order::OldestFirst, 1);
        q.identifier = Some("ignored".into());
        let first = ok(s.device_log(q.clone()).await);
        assert_eq!(first.items, vec![failed]);
        q.cursor = first.next_cursor;
        let second = ok(s.device_log(q).await);
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0].time, T0 + 3);
        assert_eq!(second.next_cursor, None);
    })
    .await;
}

/// Purge removes what is older than its cutoffs and keeps the rest.
pub async fn purge_removes_exactly_the_older_records(h: impl Harness) {
    let config = HistoryConfig {
        purge_batch: 7,
        ..HistoryConfig::default()
    };
    run(h, config, |s| async move {
        let cut = T0 + 1_000;
        let log_cut = T0 + 500;
        for name in ["lamp1", "lamp2"] {
            let d = device(name);
            let mut records = Vec::new();
            for i in -20..20 {
                records.push(prop(&d, "temp", cut + i, i));
                records.push(prop(&d, "hum", cut + i * 3, i));
            }
            for t in [cut - 1, cut, cut + 1] {
                records.push(Record::Event(event(&d, "alarm", "alert", t)));
            }
            ok(s.append(records).await);
            for (id, t) in [("c1", cut - 1), ("c2", cut), ("c3", cut + 1)] {
                ok(s.record_call(call(&d, id, "reboot", t)).await);
            }
            ok(
                s.append_log((0..3).map(|i| log(&d, log_cut - 1 + i, b"p", 1)).collect())
                    .await,
            );
        }
        // A device with calls only.
        let calls_only = device("lamp3");
        ok(s.record_call(call(&calls_only, "c0", "reboot", cut - 10))
            .await);
        let stats = ok(s.purge(cut, log_cut).await);
        // Per device: temp cut-20..cut-1 (20), hum cut-60..cut-3 step 3 (20).
        assert_eq!(stats.properties, 2 * 40);
        assert_eq!(stats.events, 2);
        assert_eq!(stats.calls, 3);
        assert_eq!(stats.log_entries, 2);
        assert_eq!(stats.total(), 87);
        assert_eq!(ok(s.call(&calls_only, "c0").await), None);

        for name in ["lamp1", "lamp2"] {
            let d = device(name);
            let points = all_pages(everything(&d, Order::OldestFirst), points_of(&s)).await;
            assert_eq!(points.len(), 40);
            assert!(points.iter().all(|p| p.device_time >= cut));
            assert_eq!(points[0].device_time, cut);
            let events = ok(s
                .event_history(everything(&d, Order::OldestFirst), None)
                .await);
            assert_eq!(times_of_events(&events.items), vec![cut, cut + 1]);
            assert_eq!(ok(s.call(&d, "c1").await), None);
            assert!(ok(s.call(&d, "c2").await).is_some());
            let calls = ok(s.call_history(everything(&d, Order::OldestFirst)).await);
            assert_eq!(calls.items.len(), 2);
            let logs = ok(s.device_log(everything(&d, Order::OldestFirst)).await);
            let log_times: Vec<i64> = logs.items.iter().map(|e| e.time).collect();
            assert_eq!(log_times, vec![log_cut, log_cut + 1]);
            // Latest values are not subject to retention.
            assert_eq!(ok(s.latest(&d).await).len(), 2);
        }
        // A purged call id can be used again.
        ok(
            s.record_call(call(&device("lamp1"), "c1", "reboot", cut + 5))
                .await,
        );
        assert!(ok(s.call(&device("lamp1"), "c1").await).is_some());
        assert_eq!(ok(s.purge(cut, log_cut).await).total(), 0);
    })
    .await;
}

fn times_of_events(events: &[EventRecord]) -> Vec<i64> {
    events.iter().map(|e| e.device_time).collect()
}

/// Appends proceed and survive while a purge runs.
pub async fn purge_runs_while_appends_continue(h: impl Harness) {
    let config = HistoryConfig {
        purge_batch: 100,
        ..HistoryConfig::default()
    };
    run(h, config, |s| async move {
        let cut = T0 + 1_000_000;
        let n_devices = 20_i64;
        for dn in 0..n_devices {
            let d = device(&format!("dev{dn}"));
            let records = (0..200).map(|i| prop(&d, "temp", T0 + i, i)).collect();
            ok(s.append(records).await);
        }
        let writer = {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                for round in 0..20_i64 {
                    let records = (0..n_devices)
                        .flat_map(|dn| {
                            let d = device(&format!("dev{dn}"));
                            (0..5).map(move |i| prop(&d, "temp", cut + round * 10 + i, i))
                        })
                        .collect();
                    ok(s.append(records).await);
                }
            })
        };
        let stats = ok(s.purge(cut, cut).await);
        writer.await.expect("writer finished");
        assert_eq!(stats.properties, 200 * 20);
        for dn in 0..n_devices {
            let d = device(&format!("dev{dn}"));
            let points = all_pages(everything(&d, Order::OldestFirst), points_of(&s)).await;
            assert_eq!(points.len(), 100, "dev{dn}");
            assert!(points.iter().all(|p| p.device_time >= cut));
        }
    })
    .await;
}

/// Deleting a device removes all of its data and nothing of others.
pub async fn delete_device_removes_only_that_device(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        // Names chosen so that one device's names are prefixes of the other's.
        let gone = DeviceKey::new("ab", "c");
        let kept = DeviceKey::new("a", "bc");
        for d in [&gone, &kept] {
            ok(s.append(vec![
                prop(d, "temp", T0, 1),
                Record::Event(event(d, "alarm", "alert", T0)),
            ])
            .await);
            ok(s.record_call(call(d, "1", "reboot", T0)).await);
            ok(s.set_desired(d, "power", json!(1), None, T0).await);
            ok(s.append_log(vec![log(d, T0, b"x", 1)]).await);
        }
        ok(s.delete_device(&gone).await);
        assert!(ok(s.latest(&gone).await).is_empty());
        assert!(
            ok(s.property_history(everything(&gone, Order::OldestFirst))
                .await)
            .items
            .is_empty()
        );
        assert!(
            ok(s.event_history(everything(&gone, Order::OldestFirst), None)
                .await)
            .items
            .is_empty()
        );
        assert!(
            ok(s.call_history(everything(&gone, Order::OldestFirst)).await)
                .items
                .is_empty()
        );
        assert_eq!(ok(s.call(&gone, "1").await), None);
        assert!(ok(s.desired(&gone, &[]).await).is_empty());
        assert!(
            ok(s.device_log(everything(&gone, Order::OldestFirst)).await)
                .items
                .is_empty()
        );

        assert_eq!(ok(s.latest(&kept).await).len(), 1);
        assert_eq!(
            ok(s.property_history(everything(&kept, Order::OldestFirst))
                .await)
            .items
            .len(),
            1
        );
        assert_eq!(
            ok(s.event_history(everything(&kept, Order::OldestFirst), None)
                .await)
            .items
            .len(),
            1
        );
        assert!(ok(s.call(&kept, "1").await).is_some());
        assert_eq!(ok(s.desired(&kept, &[]).await).len(), 1);
        assert_eq!(
            ok(s.device_log(everything(&kept, Order::OldestFirst)).await)
                .items
                .len(),
            1
        );

        // A deleted device starts afresh.
        ok(s.append(vec![prop(&gone, "temp", T0 + 1, 2)]).await);
        assert_eq!(ok(s.latest(&gone).await).len(), 1);
        assert_eq!(
            ok(s.set_desired(&gone, "power", json!(2), Some(0), T0).await),
            1
        );
        ok(s.delete_device(&DeviceKey::new("none", "none")).await);
    })
    .await;
}

/// Records with empty or oversized names are refused and nothing is stored.
pub async fn invalid_records_are_refused(h: impl Harness) {
    run(h, HistoryConfig::default(), |s| async move {
        let d = device("lamp1");
        let e = err(s
            .append(vec![prop(&d, "temp", T0, 1), prop(&d, "", T0, 2)])
            .await);
        assert!(matches!(e, HistoryError::InvalidRecord(_)), "{e:?}");
        let long = "x".repeat(crate::MAX_NAME_LEN + 1);
        let e = err(s.append(vec![prop(&d, &long, T0, 1)]).await);
        assert!(matches!(e, HistoryError::InvalidRecord(_)), "{e:?}");
        let e = err(s.record_call(call(&d, "", "reboot", T0)).await);
        assert!(matches!(e, HistoryError::InvalidRecord(_)), "{e:?}");
        let e = err(s
            .append_log(vec![log(&DeviceKey::new("", "x"), T0, b"", 0)])
            .await);
        assert!(matches!(e, HistoryError::InvalidRecord(_)), "{e:?}");
        assert!(ok(s.latest(&d).await).is_empty());
        assert!(
            ok(s.property_history(everything(&d, Order::OldestFirst)).await)
                .items
                .is_empty()
        );
        ok(s.append(Vec::new()).await);
    })
    .await;
}
