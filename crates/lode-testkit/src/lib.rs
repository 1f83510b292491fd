//! Test support shared by the integration tests of several crates: a registry in a
//! temporary SQLite file with one account, a broker whose hook is the device sign-in, and
//! a loopback listener serving a broker. Only for tests: every failure panics.

use std::net::SocketAddr;
use std::sync::Arc;

use lode_broker::{Broker, BrokerConfig, ConnInfo};
use lode_device::{DeviceAuth, DeviceAuthConfig};
use lode_registry::{RegistryLimits, RegistryStore, SqliteRegistry};
use tokio::net::TcpListener;

/// A registry in a temporary directory, with one account.
pub struct TestRegistry {
    pub registry: Arc<dyn RegistryStore>,
    /// Id of the account `acme`.
    pub account: String,
    /// Holds the registry file (and room for other stores of the test).
    pub dir: tempfile::TempDir,
}

impl TestRegistry {
    /// An SQLite registry in a new temporary directory, with the account `acme`.
    pub async fn new() -> TestRegistry {
        let dir = tempfile::tempdir().expect("temporary directory");
        let registry: Arc<dyn RegistryStore> = Arc::new(
            SqliteRegistry::open(dir.path().join("registry.db"), RegistryLimits::default())
                .await
                .expect("registry opens"),
        );
        let account = registry
            .create_account("acme")
            .await
            .expect("account created")
            .id;
        TestRegistry {
            registry,
            account,
            dir,
        }
    }

    /// A product of the account; returns its ProductKey.
    pub async fn product(&self, product: lode_registry::NewProduct) -> String {
        self.registry
            .create_product(&self.account, product)
            .await
            .expect("product created")
            .product_key
    }
}

/// A broker (memory store) whose hook is the device sign-in over `registry`.
pub async fn device_broker(
    registry: &Arc<dyn RegistryStore>,
    config: DeviceAuthConfig,
) -> (Broker, Arc<DeviceAuth>) {
    let auth = DeviceAuth::start(registry.clone(), config);
    let broker = Broker::open(
        BrokerConfig::default(),
        Arc::new(lode_store::MemoryStore::new()),
        auth.clone(),
    )
    .await
    .expect("broker opens");
    auth.attach_broker(broker.clone());
    (broker, auth)
}

/// Serves `broker` over plain TCP on a free loopback port until the runtime ends.
pub async fn serve_tcp(broker: Broker) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let broker = broker.clone();
            tokio::spawn(async move {
                broker
                    .serve_connection(
                        stream,
                        ConnInfo {
                            peer,
                            listener: "tcp",
                            client_cert: None,
                        },
                    )
                    .await;
            });
        }
    });
    addr
}
