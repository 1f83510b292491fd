//! The conformance suite against `MemoryStore` and `EmbeddedStore`.

mod memory {
    lode_store::store_conformance_tests!(lode_store::testsuite::MemoryHarness::default());
}

mod embedded {
    use std::sync::Arc;

    use lode_store::{BoxFuture, BrokerStore, EmbeddedStore, testsuite::Harness};

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
        fn open(&mut self) -> BoxFuture<'_, Arc<dyn BrokerStore>> {
            Box::pin(async move {
                let store = EmbeddedStore::open(self.dir.path()).expect("open embedded store");
                Arc::new(store) as Arc<dyn BrokerStore>
            })
        }
    }

    lode_store::store_conformance_tests!(EmbeddedHarness::new());
}
