//! The conformance suite against `EmbeddedHistory` (temporary directory) and
//! `PgHistory` (a fresh schema per test; skipped without
//! `LODESTONE_TEST_PG_URL`), and durability of the embedded store.

mod embedded {
    use std::sync::Arc;

    use lode_history::testsuite::Harness;
    use lode_history::{BoxFuture, EmbeddedHistory, HistoryConfig, ThingStore};

    struct EmbeddedHarness {
        dir: tempfile::TempDir,
    }

    impl EmbeddedHarness {
        fn new() -> Self {
            EmbeddedHarness {
                dir: tempfile::tempdir().expect("temporary directory"),
            }
        }
    }

    impl Harness for EmbeddedHarness {
        fn open(&mut self, config: HistoryConfig) -> BoxFuture<'_, Option<Arc<dyn ThingStore>>> {
            Box::pin(async move {
                let store =
                    EmbeddedHistory::open(self.dir.path(), &config).expect("open embedded history");
                Some(Arc::new(store) as Arc<dyn ThingStore>)
            })
        }

        fn cleanup(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    lode_history::history_conformance_tests!(EmbeddedHarness::new());
}

mod postgres {
    use std::str::FromStr;
    use std::sync::Arc;

    use lode_history::testsuite::Harness;
    use lode_history::{BoxFuture, HistoryConfig, PgConnectOptions, PgHistory, ThingStore};
    use sqlx::Connection;

    const URL_VAR: &str = "LODESTONE_TEST_PG_URL";

    struct PgHarness {
        url: Option<String>,
        schema: String,
        created: bool,
    }

    impl PgHarness {
        fn new() -> Self {
            let suffix: u64 = rand::random();
            PgHarness {
                url: std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()),
                schema: format!("thing_test_{suffix:016x}"),
                created: false,
            }
        }

        async fn admin(&self, url: &str, sql: String) {
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .expect("connect to PostgreSQL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("schema statement");
            let _ = conn.close().await;
        }
    }

    impl Harness for PgHarness {
        fn open(&mut self, config: HistoryConfig) -> BoxFuture<'_, Option<Arc<dyn ThingStore>>> {
            Box::pin(async move {
                let Some(url) = self.url.clone() else {
                    println!("skipped: {URL_VAR} is not set");
                    return None;
                };
                self.admin(&url, format!("CREATE SCHEMA {}", self.schema))
                    .await;
                self.created = true;
                let options = PgConnectOptions::from_str(&url)
                    .expect("PostgreSQL URL")
                    .options([("search_path", self.schema.as_str())]);
                let store = PgHistory::connect_with(options.clone(), &config)
                    .await
                    .expect("connect PgHistory");
                store.close().await;
                // Migrations are idempotent: connecting again finds the schema current.
                let store = PgHistory::connect_with(options, &config)
                    .await
                    .expect("reconnect PgHistory");
                Some(Arc::new(store) as Arc<dyn ThingStore>)
            })
        }

        fn cleanup(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                if let (true, Some(url)) = (self.created, self.url.clone()) {
                    self.admin(&url, format!("DROP SCHEMA {} CASCADE", self.schema))
                        .await;
                }
            })
        }
    }

    lode_history::history_conformance_tests!(PgHarness::new());
}

/// Everything written to the embedded store is there after reopening it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_state_survives_reopen() {
    use lode_history::testsuite::T0;
    use lode_history::{
        CallStatus, DeviceKey, Direction, EmbeddedHistory, HistoryConfig, LogEntry, Order,
        PropertyPoint, Query, Record, ServiceCall, ThingStore,
    };
    use serde_json::json;

    let dir = tempfile::tempdir().expect("temporary directory");
    let config = HistoryConfig::default();
    let d = DeviceKey::new("pk", "dn");
    let q = Query {
        order: Order::OldestFirst,
        ..Query::new(d.clone(), i64::MIN, i64::MAX)
    };
    let call = ServiceCall {
        device: d.clone(),
        call_id: "7".into(),
        identifier: "reboot".into(),
        call_type: "sync".into(),
        input: json!({}),
        status: CallStatus::Pending,
        code: None,
        output: None,
        message: None,
        started_at: T0,
        finished_at: None,
    };
    let entry = LogEntry {
        device: d.clone(),
        time: T0,
        direction: Direction::Up,
        topic: "/sys/pk/dn/thing/event/property/post".into(),
        payload: b"{}".to_vec(),
        payload_size: 2,
        code: 200,
        step: None,
        message: None,
        trace_id: "t".into(),
    };
    let before = {
        let store = EmbeddedHistory::open(dir.path(), &config).expect("open");
        let records = (0..50)
            .map(|i| {
                Record::Property(PropertyPoint {
                    device: d.clone(),
                    identifier: "temp".into(),
                    value: json!(i),
                    device_time: T0 + i,
                    server_time: T0 + i,
                })
            })
            .collect();
        store.append(records).await.expect("append");
        store.record_call(call.clone()).await.expect("call");
        store
            .set_desired(&d, "power", json!(1), None, T0)
            .await
            .expect("desired");
        store.append_log(vec![entry.clone()]).await.expect("log");
        (
            store.latest(&d).await.expect("latest"),
            store.property_history(q.clone()).await.expect("history"),
        )
    };
    let store = EmbeddedHistory::open(dir.path(), &config).expect("reopen");
    assert_eq!(store.latest(&d).await.expect("latest"), before.0);
    assert_eq!(
        store.property_history(q.clone()).await.expect("history"),
        before.1
    );
    assert_eq!(before.1.items.len(), 50);
    assert_eq!(store.call(&d, "7").await.expect("call"), Some(call));
    let desired = store.desired(&d, &[]).await.expect("desired");
    assert_eq!(desired.len(), 1);
    assert_eq!(desired[0].version, 1);
    assert_eq!(store.device_log(q).await.expect("log").items, vec![entry]);
}
