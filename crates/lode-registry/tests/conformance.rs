//! The conformance suite against `SqliteRegistry` (temporary file) and
//! `PgRegistry` (a fresh schema per test; skipped without
//! `LODESTONE_TEST_PG_URL`).

mod sqlite {
    use std::sync::Arc;

    use lode_registry::testsuite::Harness;
    use lode_registry::{BoxFuture, RegistryLimits, RegistryStore, SqliteRegistry};

    struct SqliteHarness {
        dir: tempfile::TempDir,
    }

    impl SqliteHarness {
        fn new() -> Self {
            SqliteHarness {
                dir: tempfile::tempdir().expect("temporary directory"),
            }
        }
    }

    impl Harness for SqliteHarness {
        fn open(
            &mut self,
            limits: RegistryLimits,
        ) -> BoxFuture<'_, Option<Arc<dyn RegistryStore>>> {
            Box::pin(async move {
                let path = self.dir.path().join("registry.db");
                let store = SqliteRegistry::open(path, limits)
                    .await
                    .expect("open sqlite registry");
                Some(Arc::new(store) as Arc<dyn RegistryStore>)
            })
        }

        fn cleanup(&mut self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    lode_registry::registry_conformance_tests!(SqliteHarness::new());
}

mod postgres {
    use std::str::FromStr;
    use std::sync::Arc;

    use lode_registry::testsuite::Harness;
    use lode_registry::{BoxFuture, PgConnectOptions, PgRegistry, RegistryLimits, RegistryStore};
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
                schema: format!("lode_test_{suffix:016x}"),
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
        fn open(
            &mut self,
            limits: RegistryLimits,
        ) -> BoxFuture<'_, Option<Arc<dyn RegistryStore>>> {
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
                let store = PgRegistry::connect_with(options, limits)
                    .await
                    .expect("connect PgRegistry");
                Some(Arc::new(store) as Arc<dyn RegistryStore>)
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

    lode_registry::registry_conformance_tests!(PgHarness::new());
}

/// A registry file keeps its contents across close and reopen.
#[tokio::test]
async fn sqlite_state_survives_reopen() {
    use lode_registry::{NewDevice, NewProduct, RegistryLimits, RegistryStore, SqliteRegistry};
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("registry.db");
    let store = SqliteRegistry::open(&path, RegistryLimits::default())
        .await
        .expect("open");
    let acc = store.create_account("acme").await.expect("account");
    let p = store
        .create_product(&acc.id, NewProduct::new("lamp"))
        .await
        .expect("product");
    let d = store
        .create_device(&p.product_key, NewDevice::new("dev1"))
        .await
        .expect("device");
    store.close().await;
    drop(store);
    let store = SqliteRegistry::open(&path, RegistryLimits::default())
        .await
        .expect("reopen");
    let again = store.get_device(&p.product_key, "dev1").await.expect("get");
    assert_eq!(again, Some(d));
    assert_eq!(store.count_devices(&p.product_key).await.expect("count"), 1);
}
