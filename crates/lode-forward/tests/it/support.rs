//! Test harness: a server with durable storage in a temporary directory, the signed API
//! client, devices, and an HTTP receiver that can go down and come back on the same port.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use lode_forward::{ForwardConfig, Forwarder};
use lode_registry::RegistryStore;
use lode_sdk::{Credential, Device, DeviceConfig, Events};
use lode_server::client::{ApiClient, Connection};
use lode_server::config::StorageKind;
use lode_server::{Server, ServerConfig};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const KEY_ID: &str = "LTAItestrules000001";
pub(crate) const KEY_SECRET: &str = "test-admin-secret-rules-0123456789";

/// A running server.
pub(crate) struct TestServer {
    pub(crate) mqtt: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) api: ApiClient,
    pub(crate) forward: lode_forward::Forwarder,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server whose state lives in `dir` (so a second start finds it again).
    pub(crate) async fn start(dir: &Path) -> TestServer {
        let config = ServerConfig {
            storage: StorageKind::Embedded,
            data_dir: dir.to_path_buf(),
            admin_key: Some((KEY_ID.to_owned(), KEY_SECRET.to_owned())),
            ..ServerConfig::local_ephemeral()
        };
        let server = Server::bind(config).await.expect("server binds");
        let (mqtt, http) = (server.mqtt_addr(), server.http_addr());
        let forward = server.forward().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        let api = ApiClient::from_connection(&Connection {
            url: Some(format!("http://{http}")),
            access_key_id: Some(KEY_ID.to_owned()),
            access_key_secret: Some(KEY_SECRET.to_owned()),
            profile: None,
            json: true,
        });
        let api = api.expect("API client");
        for _ in 0..200 {
            if api.call("GET", "/api/v1/rules", None).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        TestServer {
            mqtt,
            http,
            api,
            forward,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The CLI's connection settings for this server.
    pub(crate) fn connection(&self, json: bool) -> Connection {
        Connection {
            url: Some(format!("http://{}", self.http)),
            access_key_id: Some(KEY_ID.to_owned()),
            access_key_secret: Some(KEY_SECRET.to_owned()),
            profile: None,
            json,
        }
    }

    /// A signed API call that must answer `status`; its body.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let r = self
            .api
            .call(method, path, body.as_ref())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        r.body
    }

    /// A product with devices; their secrets, by name.
    pub(crate) async fn product(&self, devices: &[&str]) -> (String, Vec<String>) {
        let p = self
            .call(
                "POST",
                "/api/v1/products",
                Some(json!({"name": "rules test"})),
                201,
            )
            .await;
        let pk = p["productKey"].as_str().expect("productKey").to_owned();
        let mut secrets = Vec::new();
        for dn in devices {
            let d = self
                .call(
                    "POST",
                    &format!("/api/v1/products/{pk}/devices"),
                    Some(json!({"deviceName": dn})),
                    201,
                )
                .await;
            secrets.push(d["deviceSecret"].as_str().expect("deviceSecret").to_owned());
        }
        (pk, secrets)
    }

    /// Signs a device in.
    pub(crate) async fn device(&self, pk: &str, dn: &str, secret: &str) -> (Device, Events) {
        let config = DeviceConfig::new(
            self.mqtt.ip().to_string(),
            self.mqtt.port(),
            pk,
            dn,
            Credential::DeviceSecret(secret.to_owned()),
        );
        Device::connect(config).await.expect("device signs in")
    }

    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let res = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("shutdown within the grace period");
            res.expect("server task").expect("run succeeds");
        }
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) message_id: String,
    pub(crate) body: String,
    pub(crate) auth: Option<String>,
}

/// An HTTP receiver: answers `status` to POST /hook and records every request.
#[derive(Clone)]
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    pub(crate) got: Arc<Mutex<Vec<Received>>>,
    status: Arc<Mutex<StatusCode>>,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl Receiver {
    /// Starts on a free port.
    pub(crate) async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let r = Receiver {
            addr: listener.local_addr().expect("addr"),
            got: Arc::default(),
            status: Arc::new(Mutex::new(StatusCode::OK)),
            stop: Arc::default(),
        };
        r.serve(listener);
        r
    }

    fn serve(&self, listener: TcpListener) {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.clone());
        let (tx, rx) = oneshot::channel();
        *self.stop.lock() = Some(tx);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
    }

    /// Stops listening (connections refused until [`Receiver::up`]); a connection still
    /// open from before gets 503.
    pub(crate) async fn down(&self) {
        self.answer(StatusCode::SERVICE_UNAVAILABLE);
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(());
        }
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn up(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.answer(StatusCode::OK);
        self.serve(listener);
    }

    pub(crate) fn answer(&self, status: StatusCode) {
        *self.status.lock() = status;
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Distinct message ids received so far.
    pub(crate) fn ids(&self) -> std::collections::BTreeSet<String> {
        self.got
            .lock()
            .iter()
            .map(|r| r.message_id.clone())
            .collect()
    }

    /// Waits until `n` distinct messages arrived.
    pub(crate) async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        while self.ids().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} messages arrived",
                self.ids().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.got.lock().clone()
    }
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let status = *r.status.lock();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if status.is_success() {
        r.got.lock().push(Received {
            message_id: header(lode_forward::MESSAGE_ID_HEADER).unwrap_or_default(),
            body,
            auth: header("authorization"),
        });
    }
    status
}

/// Polls `f` until it holds.
pub(crate) async fn eventually<F: Fn() -> bool>(what: &str, within: Duration, f: F) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The runtime alone over a broker and a registry, so it can be stopped and started again
/// on the same buffer directory (the server's other components keep its broker open).
pub(crate) struct Runtime {
    pub(crate) broker: lode_broker::Broker,
    pub(crate) registry: Arc<dyn RegistryStore>,
    pub(crate) forward: Forwarder,
}

impl Runtime {
    pub(crate) async fn start(dir: &std::path::Path, registry: Arc<dyn RegistryStore>) -> Runtime {
        Runtime::with_config(ForwardConfig::new(dir), registry).await
    }

    /// A runtime with explicit settings.
    pub(crate) async fn with_config(
        config: ForwardConfig,
        registry: Arc<dyn RegistryStore>,
    ) -> Runtime {
        let broker = lode_broker::Broker::open(
            lode_broker::BrokerConfig::default(),
            Arc::new(lode_store::MemoryStore::new()),
            Arc::new(lode_broker::AllowAnonymous),
        )
        .await
        .expect("broker");
        let forward = Forwarder::start(config, registry.clone(), broker.clone())
            .await
            .expect("runtime starts");
        Runtime {
            broker,
            registry,
            forward,
        }
    }

    /// Publishes as device `pk/dn`.
    pub(crate) async fn publish(&self, pk: &str, dn: &str, payload: String) {
        let device = lode_broker::Principal {
            unique_key: Some(format!("{pk}/{dn}")),
            ..lode_broker::Principal::named(dn)
        };
        self.broker
            .publish_as(
                &device,
                dn,
                "127.0.0.1:1".parse().expect("addr"),
                &format!("/{pk}/{dn}/user/update"),
                payload.into(),
                lode_mqtt::QoS::AtLeastOnce,
            )
            .await
            .expect("published");
    }

    pub(crate) async fn stop(self) -> Arc<dyn RegistryStore> {
        self.forward.shutdown().await;
        self.broker.shutdown().await;
        self.registry
    }
}

/// A runtime over a fresh SQLite registry with one account and product.
pub(crate) async fn runtime(dir: &std::path::Path) -> (Runtime, String, String) {
    runtime_with(dir, |c| c).await
}

/// A runtime with settings changed by `tune`, over a fresh SQLite registry with one account
/// and product; the runtime, the account id and the product key.
pub(crate) async fn runtime_with(
    dir: &std::path::Path,
    tune: impl FnOnce(ForwardConfig) -> ForwardConfig,
) -> (Runtime, String, String) {
    let registry: Arc<dyn RegistryStore> = Arc::new(
        lode_registry::SqliteRegistry::open(dir.join("registry.db"), Default::default())
            .await
            .expect("registry"),
    );
    let account = registry.create_account("acme").await.expect("account").id;
    let pk = registry
        .create_product(&account, lode_registry::NewProduct::new("p"))
        .await
        .expect("product")
        .product_key;
    let config = tune(ForwardConfig::new(dir.join("forward")));
    (Runtime::with_config(config, registry).await, account, pk)
}
