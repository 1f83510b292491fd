//! Composition root of Lodestone: wires config, storage, the broker, listeners and HTTP.
//!
//! [`Server::bind`] binds every listener and opens storage; [`Server::run`] serves until the
//! shutdown future completes, then shuts down gracefully within the configured grace period:
//! stop accepting, let the broker disconnect clients and persist, wait for connection tasks.
//! Tests and `main` use the same two calls.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod http;
mod https;
mod listener;
mod metrics;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use lode_broker::{AuthHook, Broker, DenySubscribe};
use lode_device::{DeviceAuth, DeviceAuthConfig};
use lode_edge::coap::{CoapServer, Mode as CoapMode};
use lode_edge::dtls::{DtlsConfig, DtlsIdentity, DtlsServer};
use lode_edge::{Edge, TokenKey};
use lode_history::ThingStore;
use lode_registry::{PgRegistry, RegistryLimits, RegistryStore, SqliteRegistry};
use lode_store::BrokerStore;
use lode_thing::{DeviceSession, Presence, ThingConfig, ThingEngine};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ServerConfig;

use config::StorageKind;
use listener::{ConnContext, MqttListener, Transport};

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("failed to bind {name} listener on {addr}")]
pub struct BindError {
    pub name: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// A bound, not yet running server.
pub struct Server {
    config: ServerConfig,
    broker: Broker,
    mqtt: MqttListener,
    mqtts: Option<MqttListener>,
    ws: MqttListener,
    wss: Option<MqttListener>,
    http: TcpListener,
    https: Option<https::HttpsListener>,
    coap: CoapServer,
    coap_psk: CoapServer,
    coap_dtls: DtlsServer,
    edge: Edge,
    routes: axum::Router,
    ready: Arc<AtomicBool>,
    registry: Arc<dyn RegistryStore>,
    /// Holds the registry of a memory-storage server; removed when the server is dropped.
    _registry_dir: Option<tempfile::TempDir>,
    thing: ThingEngine,
    /// The history's retention worker, stopped at shutdown.
    retention: (CancellationToken, tokio::task::JoinHandle<()>),
    forward: lode_forward::Forwarder,
    ota: lode_ota::Ota,
}

impl Server {
    /// Binds every listener (port 0 picks a free port) and opens storage and the broker.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        let acceptor = match &config.tls {
            Some(tls) => Some(tls::acceptor(tls).context("failed to set up TLS")?),
            None => None,
        };
        let addrs = config.listeners;
        let mqtt = MqttListener {
            listener: bind("mqtt", addrs.mqtt).await?,
            transport: Transport::Tcp,
        };
        let ws = MqttListener {
            listener: bind("websocket", addrs.ws).await?,
            transport: Transport::Ws,
        };
        let (mqtts, wss, https) = match acceptor {
            Some(acceptor) => (
                Some(MqttListener {
                    listener: bind("mqtts", addrs.mqtts).await?,
                    transport: Transport::Tls(acceptor.clone()),
                }),
                Some(MqttListener {
                    listener: bind("secure websocket", addrs.wss).await?,
                    transport: Transport::Wss(acceptor.clone()),
                }),
                Some(https::HttpsListener {
                    listener: bind("https", addrs.https).await?,
                    acceptor,
                }),
            ),
            None => (None, None, None),
        };
        let http = bind("http", addrs.http).await?;

        let store = open_store(&config).await?;
        let (registry, registry_dir) = open_registry(&config).await?;
        bootstrap(registry.as_ref(), config.admin_key.as_ref()).await?;
        let device_auth = DeviceAuth::start(
            registry.clone(),
            DeviceAuthConfig {
                allow_applications: config.allow_anonymous,
                ..DeviceAuthConfig::default()
            },
        );
        if config.allow_anonymous {
            tracing::warn!(
                "anonymous mode: clients without a device identity are accepted and may publish \
                 and subscribe anywhere; devices still sign in with their secrets"
            );
        }
        let auth: Arc<dyn AuthHook> = device_auth.clone();
        let auth: Arc<dyn AuthHook> = if config.deny_subscribe.is_empty() {
            auth
        } else {
            let deny = DenySubscribe::new(auth, config.deny_subscribe.iter().cloned())
                .context("invalid mqtt.deny_subscribe")?;
            Arc::new(deny.with_reason(config.deny_subscribe_reason))
        };
        let broker = Broker::open(config.broker.clone(), store, auth)
            .await
            .context("failed to open the broker")?;
        device_auth.attach_broker(broker.clone());
        let gateways = lode_gateway::Gateways::start(
            registry.clone(),
            device_auth.clone(),
            &broker,
            lode_gateway::Gateways::DEFAULT_LIMIT,
        );
        let history_config = lode_history::HistoryConfig {
            retention: config.history_retention,
            log_retention: config.log_retention,
            ..lode_history::HistoryConfig::default()
        };
        let history = open_history(&config, registry_dir.as_ref(), &history_config).await?;
        let retention_stop = CancellationToken::new();
        let retention =
            lode_history::spawn_retention(history.clone(), history_config, retention_stop.clone());
        let scripts = lode_script::ScriptEngine::new(lode_script::EngineConfig::default())
            .context("failed to start the script engine")?;
        let thing = ThingEngine::start(
            registry.clone(),
            history,
            scripts,
            ThingConfig {
                sync_call_timeout: config.sync_call_timeout,
                ..ThingConfig::default()
            },
        );
        thing.attach(broker.clone(), Arc::new(Online(device_auth.clone())));
        let key = token_key(&config).await?;
        let devconfig = lode_devconfig::DevConfig::new(
            registry.clone(),
            device_auth.clone(),
            lode_devconfig::DevConfigSettings::new(format!("http://{}", advertised(&http)))
                .with_url_secret(key.as_bytes()),
        );
        devconfig.attach(broker.clone());
        let forward_dir = match &registry_dir {
            Some(temp) => temp.path().join("forward"),
            None => config.data_dir.join("forward"),
        };
        let forward = lode_forward::Forwarder::start(
            lode_forward::ForwardConfig {
                dir: forward_dir,
                ..config.rules.clone()
            },
            registry.clone(),
            broker.clone(),
        )
        .await
        .context("failed to start the rules engine")?;
        thing.set_listener(forward.thing_listener());
        let shadow = lode_shadow::ShadowService::new(
            registry.clone(),
            broker.clone(),
            device_auth.clone(),
            lode_shadow::ShadowConfig::default(),
        );
        broker.add_message_hook(shadow.hook());
        device_auth.add_status_listener(shadow.status_listener());
        let ota_dir = match &registry_dir {
            Some(temp) => temp.path().join("ota"),
            None => config.data_dir.join("ota"),
        };
        let ota = lode_ota::Ota::start(
            registry.clone(),
            Arc::new(
                lode_ota::DirBlobStore::open(ota_dir)
                    .await
                    .context("failed to open the firmware store")?,
            ),
            lode_ota::UrlSigner::derive(key.as_bytes()),
            lode_ota::OtaConfig::new(format!("http://{}", advertised(&http))),
        )
        .await
        .context("failed to start OTA")?;
        ota.attach(broker.clone(), device_auth.clone());
        let edge = Edge::new(
            device_auth.clone(),
            broker.clone(),
            key,
            config.edge.clone(),
        );
        let coap = CoapServer::bind(addrs.coap, edge.clone(), CoapMode::Plain)
            .await
            .map_err(|source| BindError {
                name: "coap",
                addr: addrs.coap,
                source,
            })?;
        let coap_psk = CoapServer::bind(addrs.coap_psk, edge.clone(), CoapMode::Encrypted)
            .await
            .map_err(|source| BindError {
                name: "coap-psk",
                addr: addrs.coap_psk,
                source,
            })?;
        let dtls = DtlsConfig {
            certificate: match &config.dtls.certificate {
                Some(identity) => Some(identity.clone()),
                None => Some(dtls_identity(config.tls.as_ref())?),
            },
            ..config.dtls.clone()
        };
        let coap_dtls = DtlsServer::bind(addrs.coap_dtls, edge.clone(), dtls)
            .await
            .with_context(|| {
                format!(
                    "failed to bind the coap-dtls listener on {}",
                    addrs.coap_dtls
                )
            })?;
        let api = lode_api::router(
            lode_api::ApiState::new(
                registry.clone(),
                broker.clone(),
                lode_api::ApiConfig::default(),
            )
            .with_thing(thing.clone()),
        )
        .layer(axum::Extension(forward.clone()))
        .layer(axum::Extension(shadow))
        .layer(axum::Extension(gateways))
        .layer(axum::Extension(devconfig.clone()))
        .merge(lode_edge::http::router(edge.clone()))
        .merge(lode_devconfig::http::router(devconfig))
        .layer(axum::Extension(ota.clone()))
        .merge(lode_ota::http::router(ota.clone()));

        Ok(Server {
            config,
            broker,
            mqtt,
            mqtts,
            ws,
            wss,
            http,
            https,
            coap,
            coap_psk,
            coap_dtls,
            edge,
            routes: api,
            registry,
            _registry_dir: registry_dir,
            thing,
            retention: (retention_stop, retention),
            forward,
            ota,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Address of the MQTT over TCP listener.
    pub fn mqtt_addr(&self) -> SocketAddr {
        local_addr(&self.mqtt.listener)
    }

    /// Address of the MQTT over TLS listener, when TLS is configured.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.mqtts.as_ref().map(|l| local_addr(&l.listener))
    }

    /// Address of the MQTT over WebSocket listener.
    pub fn ws_addr(&self) -> SocketAddr {
        local_addr(&self.ws.listener)
    }

    /// Address of the MQTT over secure WebSocket listener, when TLS is configured.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss.as_ref().map(|l| local_addr(&l.listener))
    }

    /// Address of the HTTP listener.
    pub fn http_addr(&self) -> SocketAddr {
        local_addr(&self.http)
    }

    /// Address of the HTTPS listener (the HTTP router over TLS), when TLS is configured.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(|l| local_addr(&l.listener))
    }

    /// Address of the Alink CoAP listener (UDP).
    pub fn coap_addr(&self) -> SocketAddr {
        self.coap
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Address of the Alink CoAP listener with encrypted payloads (UDP).
    pub fn coap_psk_addr(&self) -> SocketAddr {
        self.coap_psk
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Address of the Alink CoAP over DTLS listener (UDP).
    pub fn coap_dtls_addr(&self) -> SocketAddr {
        self.coap_dtls
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// HTTP and CoAP device access.
    pub fn edge(&self) -> &Edge {
        &self.edge
    }

    /// The thing model (TSL, device data).
    pub fn thing(&self) -> &ThingEngine {
        &self.thing
    }

    /// OTA: firmware, downloads and upgrade jobs.
    pub fn ota(&self) -> &lode_ota::Ota {
        &self.ota
    }

    /// The rules engine.
    pub fn forward(&self) -> &lode_forward::Forwarder {
        &self.forward
    }

    /// The broker, for components that publish or inspect sessions (management API, rules).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The device registry.
    pub fn registry(&self) -> &Arc<dyn RegistryStore> {
        &self.registry
    }

    /// Adds routes (the management API) to the HTTP and HTTPS listeners, next to `/healthz`,
    /// `/readyz` and `/metrics`.
    pub fn merge_routes(mut self, routes: axum::Router) -> Server {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: readiness turns to 503,
    /// listeners stop accepting, the broker disconnects clients (5.0: reason 0x8B) and
    /// persists its state, and connection tasks are awaited. Whatever is still running when
    /// the grace period ends is dropped.
    pub async fn run(self, shutdown: impl Future) -> anyhow::Result<()> {
        let Server {
            config,
            broker,
            mqtt,
            mqtts,
            ws,
            wss,
            http,
            https,
            coap,
            coap_psk,
            coap_dtls,
            edge,
            routes,
            ready,
            // Kept until the end: the device hook and the API use them while draining.
            registry: _registry,
            _registry_dir,
            thing,
            retention,
            forward,
            ota,
        } = self;

        let root = CancellationToken::new();
        let stop_accepting = root.child_token();
        let stop_http = root.child_token();
        let tracker = TaskTracker::new();
        let ctx = Arc::new(ConnContext {
            broker: broker.clone(),
            limiter: Arc::new(Semaphore::new(
                config.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            handshake_timeout: config.handshake_timeout,
            ws_max_message: ws_max_message(config.broker.max_packet_size),
            tracker: TaskTracker::new(),
            hard_stop: root.child_token(),
        });

        for l in [Some(mqtt), mqtts, Some(ws), wss].into_iter().flatten() {
            tracing::info!(listener = l.transport.name(), addr = %local_addr(&l.listener), "listening");
            tracker.spawn(listener::accept_loop(
                l,
                ctx.clone(),
                stop_accepting.clone(),
            ));
        }

        for (name, server) in [("coap", coap), ("coap-psk", coap_psk)] {
            if let Ok(addr) = server.local_addr() {
                tracing::info!(listener = name, %addr, "listening");
            }
            tracker.spawn(server.run(stop_accepting.clone()));
        }
        if let Ok(addr) = coap_dtls.local_addr() {
            tracing::info!(listener = "coap-dtls", %addr, "listening");
        }
        tracker.spawn(coap_dtls.run(stop_accepting.clone()));

        let app = http::router(http::HttpState {
            broker: broker.clone(),
            ready: ready.clone(),
            prometheus: metrics::prometheus(),
            edge,
            forward: forward.clone(),
        })
        .merge(routes);
        if let Some(https) = https {
            tracing::info!(listener = "https", addr = %local_addr(&https.listener), "listening");
            tracker.spawn(https::serve(
                https,
                app.clone(),
                config.handshake_timeout,
                stop_http.clone(),
            ));
        }
        tracing::info!(listener = "http", addr = %local_addr(&http), "listening");
        let http_stop = stop_http.clone();
        let http_task = tracker.spawn(async move {
            axum::serve(
                http,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(http_stop.cancelled_owned())
            .await
        });
        tracker.close();

        ready.store(true, Ordering::Release);
        tracing::info!(storage = ?config.storage, "lodestone is ready");

        shutdown.await;
        tracing::info!(grace = ?config.shutdown_grace, "shutting down");
        ready.store(false, Ordering::Release);
        stop_accepting.cancel();

        let conns = ctx.tracker.clone();
        conns.close();
        let graceful = async {
            broker.shutdown().await;
            conns.wait().await;
            thing.shutdown().await;
            forward.shutdown().await;
            ota.shutdown();
        };
        let clean = tokio::time::timeout(config.shutdown_grace, graceful)
            .await
            .is_ok();
        if !clean {
            tracing::warn!(
                open = conns.len(),
                "shutdown grace period over, dropping remaining connections"
            );
        }
        // Drops whatever is left and stops HTTP last, so /readyz reports 503 during the drain.
        root.cancel();
        let rest = async {
            conns.wait().await;
            tracker.wait().await;
        };
        if tokio::time::timeout(std::time::Duration::from_secs(5), rest)
            .await
            .is_err()
        {
            tracing::warn!("tasks still running after shutdown");
        }
        match http_task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "http server failed"),
            Err(error) => tracing::warn!(%error, "http server task failed"),
        }
        let (retention_stop, retention_task) = retention;
        retention_stop.cancel();
        let _ = retention_task.await;
        tracing::info!(clean, "shutdown complete");
        Ok(())
    }
}

/// The certificate of the DTLS listener: the TLS certificate when its key is ECDSA (the only
/// kind DTLS here signs with), otherwise a self-signed ECDSA P-256 certificate made at start.
fn dtls_identity(tls: Option<&config::TlsConfig>) -> anyhow::Result<DtlsIdentity> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    /// DER of the id-ecPublicKey algorithm identifier (1.2.840.10045.2.1).
    const EC_PUBLIC_KEY: [u8; 9] = [0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    if let Some(tls) = tls {
        let key = PrivateKeyDer::from_pem_file(&tls.key)
            .with_context(|| format!("failed to read private key from {}", tls.key.display()))?;
        let ecdsa = match &key {
            PrivateKeyDer::Sec1(_) => true,
            PrivateKeyDer::Pkcs8(k) => k
                .secret_pkcs8_der()
                .windows(EC_PUBLIC_KEY.len())
                .any(|w| w == EC_PUBLIC_KEY),
            _ => false,
        };
        if ecdsa {
            let cert = CertificateDer::from_pem_file(&tls.cert).with_context(|| {
                format!("failed to read certificate from {}", tls.cert.display())
            })?;
            return Ok(DtlsIdentity {
                certificate: cert.to_vec(),
                private_key: key.secret_der().to_vec(),
            });
        }
        tracing::warn!("the TLS key is not ECDSA; coap-dtls presents a self-signed certificate");
    }
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .context("failed to generate the DTLS certificate")?;
    Ok(DtlsIdentity {
        certificate: generated.cert.der().to_vec(),
        private_key: generated.signing_key.serialize_der(),
    })
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { name, addr, source })
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    // A bound listener always has a local address; the fallback is never reached in practice.
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Largest WebSocket message accepted: room for a few packets of the largest allowed size.
fn ws_max_message(max_packet_size: u32) -> usize {
    (max_packet_size as usize).saturating_mul(2).max(64 * 1024)
}

/// The key of HTTP and CoAP device tokens: kept in `edge-token.key` in the data directory
/// (created on the first start, readable by the owner only) so tokens outlive a restart;
/// a fresh one for memory storage.
async fn token_key(config: &ServerConfig) -> anyhow::Result<TokenKey> {
    if config.storage == StorageKind::Memory {
        return Ok(TokenKey::generate());
    }
    let path = config.data_dir.join("edge-token.key");
    tokio::task::spawn_blocking(move || -> anyhow::Result<TokenKey> {
        if let Ok(bytes) = std::fs::read(&path) {
            let bytes: [u8; lode_edge::token::KEY_LEN] = bytes.try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a token key; remove it to make a new one",
                    path.display()
                )
            })?;
            return Ok(TokenKey::from_bytes(bytes));
        }
        let key = TokenKey::generate();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        std::io::Write::write_all(&mut file, key.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("failed to write {}", path.display()))?;
        Ok(key)
    })
    .await
    .context("token key task failed")?
}

/// The address devices reach the HTTP listener at: its own, or loopback when it listens on
/// every address.
fn advertised(listener: &TcpListener) -> SocketAddr {
    let mut addr = local_addr(listener);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// The sign-in layer tells the thing model who is online.
struct Online(Arc<DeviceAuth>);

impl Presence for Online {
    fn session(&self, product_key: &str, device_name: &str) -> Option<DeviceSession> {
        self.0
            .online(product_key, device_name)
            .map(|ext_rrpc| DeviceSession { ext_rrpc })
    }
}

/// Opens the thing-model history: PostgreSQL when a URL is configured, else embedded in
/// the data directory (next to the registry of a memory-storage server).
async fn open_history(
    config: &ServerConfig,
    temp: Option<&tempfile::TempDir>,
    history_config: &lode_history::HistoryConfig,
) -> anyhow::Result<Arc<dyn ThingStore>> {
    if let Some(url) = &config.history_url {
        let history = lode_history::PgHistory::connect(url, history_config)
            .await
            .context("failed to open the PostgreSQL history")?;
        tracing::info!("thing-model history in PostgreSQL");
        return Ok(Arc::new(history));
    }
    let dir = match temp {
        Some(t) => t.path().to_owned(),
        None => config.data_dir.clone(),
    };
    let path = dir.join("history");
    let history_config = history_config.clone();
    let history = tokio::task::spawn_blocking(move || {
        lode_history::EmbeddedHistory::open(&path, &history_config)
            .with_context(|| format!("failed to open the history at {}", path.display()))
    })
    .await
    .context("history opening task failed")??;
    Ok(Arc::new(history))
}

/// Opens the device registry: PostgreSQL when a URL is configured, else an SQLite
/// file in the data directory (in a temporary directory with memory storage).
async fn open_registry(
    config: &ServerConfig,
) -> anyhow::Result<(Arc<dyn RegistryStore>, Option<tempfile::TempDir>)> {
    if let Some(url) = &config.registry_url {
        let registry = PgRegistry::connect(url, RegistryLimits::default())
            .await
            .context("failed to open the PostgreSQL registry")?;
        tracing::info!("device registry in PostgreSQL");
        return Ok((Arc::new(registry), None));
    }
    let (dir, temp) = match config.storage {
        StorageKind::Memory => {
            let temp = tempfile::tempdir().context("failed to create a temporary directory")?;
            (temp.path().to_owned(), Some(temp))
        }
        StorageKind::Embedded => (config.data_dir.clone(), None),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create data directory {}", dir.display()))?;
    let path = dir.join("registry.db");
    let registry = SqliteRegistry::open(&path, RegistryLimits::default())
        .await
        .with_context(|| format!("failed to open the registry at {}", path.display()))?;
    Ok((Arc::new(registry), temp))
}

/// First start: creates the admin account and its first AccessKey, taken from
/// `admin_key` when given, otherwise generated and printed once.
async fn bootstrap(
    registry: &dyn RegistryStore,
    admin_key: Option<&(String, String)>,
) -> anyhow::Result<()> {
    let accounts = registry
        .list_accounts()
        .await
        .context("failed to read accounts")?;
    let account = match accounts.into_iter().next() {
        Some(account) => {
            if let Some((id, secret)) = admin_key
                && registry
                    .get_access_key(id)
                    .await
                    .context("failed to read access keys")?
                    .is_none()
            {
                registry
                    .import_access_key(&account.id, id, secret)
                    .await
                    .context("failed to add the admin access key")?;
            }
            return Ok(());
        }
        None => registry
            .create_account("admin")
            .await
            .context("failed to create the admin account")?,
    };
    match admin_key {
        Some((id, secret)) => {
            registry
                .import_access_key(&account.id, id, secret)
                .await
                .context("failed to add the admin access key")?;
            tracing::info!(access_key_id = %id, "admin account created with the configured access key");
        }
        None => {
            let key = registry
                .create_access_key(&account.id)
                .await
                .context("failed to create the admin access key")?;
            // Printed once, on the first start only: the operator's way in.
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "\nadmin account created; its access key (shown only now):\n  \
                     LODESTONE_ACCESS_KEY_ID={}\n  LODESTONE_ACCESS_KEY_SECRET={}\n",
                    key.id, key.secret
                );
            }
        }
    }
    Ok(())
}

async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn BrokerStore>> {
    match config.storage {
        StorageKind::Memory => {
            tracing::warn!("memory storage: broker state is lost when the process stops");
            Ok(Arc::new(lode_store::MemoryStore::default()))
        }
        StorageKind::Embedded => {
            let dir = config.data_dir.clone();
            let path = dir.join("broker");
            let store = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).with_context(|| {
                    format!("failed to create data directory {}", dir.display())
                })?;
                lode_store::EmbeddedStore::open(&path)
                    .with_context(|| format!("failed to open store at {}", path.display()))
            })
            .await
            .context("store opening task failed")??;
            tracing::info!(path = %config.data_dir.display(), "embedded storage open");
            Ok(Arc::new(store))
        }
    }
}
