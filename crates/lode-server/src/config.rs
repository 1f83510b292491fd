//! Server configuration: the resolved, typed [`ServerConfig`] and the loader that builds it.
//!
//! Precedence, lowest first: defaults, the TOML file (`--config` / `LODESTONE_CONFIG`),
//! `LODESTONE_*` environment variables, command-line flags. Stage 1 is the file format
//! ([`file::FileConfig`]); stage 2 ([`resolve()`]) merges the layers, validates everything at
//! once and produces typed config for each crate. This module is the only place below `main`
//! that reads the environment or config files.

pub mod file;
mod resolve;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lode_broker::BrokerConfig;

pub use resolve::resolve;

use crate::cli::ServeArgs;
use file::FileConfig;

/// Environment variables as the loader sees them: injected in tests, the process's in `main`.
pub type Env = HashMap<String, String>;

/// Everything `Server::bind` needs, resolved and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Directory holding all durable state.
    pub data_dir: PathBuf,
    /// Storage backend.
    pub storage: StorageKind,
    /// PostgreSQL URL of the device registry; `None`: SQLite in the data directory.
    pub registry_url: Option<String>,
    /// PostgreSQL URL of the thing-model history; `None`: embedded, in the data directory.
    pub history_url: Option<String>,
    /// How long property, event and service-call history is kept.
    pub history_retention: Duration,
    /// How long the device message log is kept.
    pub log_retention: Duration,
    /// Timeout of a sync service call when the caller gives none.
    pub sync_call_timeout: Duration,
    /// AccessKey `(id, secret)` given to the admin account created on first start
    /// (`LODESTONE_ADMIN_ACCESS_KEY_ID`/`_SECRET`); generated and printed once when unset.
    pub admin_key: Option<(String, String)>,
    /// Listener addresses.
    pub listeners: ListenerAddrs,
    /// TLS settings; `None` disables the `mqtts`, `wss` and `https` listeners.
    pub tls: Option<TlsConfig>,
    /// Accept every client without credentials (development mode).
    pub allow_anonymous: bool,
    /// Most simultaneous MQTT transport connections over all listeners.
    pub max_connections: usize,
    /// Time a connection has to finish its TLS or WebSocket handshake.
    pub handshake_timeout: Duration,
    /// Longest graceful shutdown.
    pub shutdown_grace: Duration,
    /// Broker limits.
    pub broker: BrokerConfig,
    /// Topic filters no client may subscribe to.
    pub deny_subscribe: Vec<String>,
    /// SUBACK reason code for a denied subscription.
    pub deny_subscribe_reason: lode_mqtt::ReasonCode,
    /// HTTP and CoAP device access: token validity, online window, limits.
    pub edge: lode_edge::EdgeConfig,
    /// DTLS limits of the `coap_dtls` listener. Its certificate, when `None`, is the TLS
    /// certificate if that key is ECDSA, else a self-signed ECDSA P-256 one made at start.
    pub dtls: lode_edge::dtls::DtlsConfig,
    /// The rules engine and the applications' stream; `dir` is replaced by
    /// `<data dir>/forward` at start.
    pub rules: lode_forward::ForwardConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./lodestone-data"),
            storage: StorageKind::Embedded,
            registry_url: None,
            history_url: None,
            history_retention: Duration::from_secs(30 * 24 * 3600),
            log_retention: Duration::from_secs(7 * 24 * 3600),
            sync_call_timeout: Duration::from_secs(5),
            admin_key: None,
            listeners: ListenerAddrs::default(),
            tls: None,
            allow_anonymous: false,
            max_connections: 100_000,
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            broker: BrokerConfig::default(),
            deny_subscribe: Vec::new(),
            deny_subscribe_reason: lode_mqtt::ReasonCode::NotAuthorized,
            edge: lode_edge::EdgeConfig::default(),
            dtls: lode_edge::dtls::DtlsConfig::default(),
            rules: lode_forward::ForwardConfig::new("forward"),
        }
    }
}

impl ServerConfig {
    /// Every listener on `127.0.0.1:0`, in-memory storage, anonymous access and a 5 s shutdown
    /// grace: for tests.
    pub fn local_ephemeral() -> ServerConfig {
        let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        ServerConfig {
            storage: StorageKind::Memory,
            allow_anonymous: true,
            listeners: ListenerAddrs {
                mqtt: any,
                mqtts: any,
                ws: any,
                wss: any,
                http: any,
                https: any,
                coap: any,
                coap_psk: any,
                coap_dtls: any,
            },
            ..ServerConfig::default()
        }
    }
}

/// Where each listener binds. Port 0 picks a free port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerAddrs {
    pub mqtt: SocketAddr,
    pub mqtts: SocketAddr,
    pub ws: SocketAddr,
    pub wss: SocketAddr,
    pub http: SocketAddr,
    /// The HTTP router over TLS, bound only when TLS is configured.
    pub https: SocketAddr,
    /// CoAP over UDP (plain payloads).
    pub coap: SocketAddr,
    /// CoAP over UDP with Alink's symmetric-key encrypted payloads.
    pub coap_psk: SocketAddr,
    /// CoAP over DTLS 1.2 (certificate and PSK).
    pub coap_dtls: SocketAddr,
}

impl Default for ListenerAddrs {
    fn default() -> Self {
        let on = |port| SocketAddr::from(([0, 0, 0, 0], port));
        ListenerAddrs {
            mqtt: on(1883),
            mqtts: on(8883),
            ws: on(8083),
            wss: on(8084),
            http: on(8080),
            https: on(8443),
            coap: on(5683),
            coap_psk: on(5682),
            coap_dtls: on(5684),
        }
    }
}

/// Server certificate and client authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates for client certificates.
    pub client_ca: Option<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
}

/// Client-certificate policy of the TLS listeners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client certificate is verified when presented.
    Optional,
    /// Every client must present a valid certificate.
    Required,
}

/// Storage backend for broker state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StorageKind {
    /// Durable storage in the data directory.
    #[default]
    Embedded,
    /// In memory only: nothing survives a restart.
    Memory,
}

/// Why the config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(Problems),
}

/// Every validation problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Loads the config for `lodestone serve` from the process environment, the file and `args`.
#[allow(
    clippy::disallowed_methods,
    reason = "the config loader is the one reader of the environment"
)]
pub fn load(args: &ServeArgs) -> Result<ServerConfig, ConfigError> {
    let env: Env = std::env::vars()
        .filter(|(k, _)| k.starts_with("LODESTONE_"))
        .collect();
    load_with_env(args, &env)
}

/// [`load`] with injected environment variables.
pub fn load_with_env(args: &ServeArgs, env: &Env) -> Result<ServerConfig, ConfigError> {
    let path = args
        .config
        .clone()
        .or_else(|| env.get("LODESTONE_CONFIG").map(PathBuf::from));
    let file = match &path {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let mut config = resolve(&file, env, args).map_err(ConfigError::Invalid)?;
    // The bootstrap key is a secret: environment only, never a flag or the file.
    let id = env
        .get("LODESTONE_ADMIN_ACCESS_KEY_ID")
        .filter(|v| !v.is_empty());
    let secret = env
        .get("LODESTONE_ADMIN_ACCESS_KEY_SECRET")
        .filter(|v| !v.is_empty());
    config.admin_key = match (id, secret) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid(Problems(vec![
                "LODESTONE_ADMIN_ACCESS_KEY_ID and LODESTONE_ADMIN_ACCESS_KEY_SECRET go together"
                    .to_owned(),
            ])));
        }
    };
    Ok(config)
}

/// Reads and parses one config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    FileConfig::parse(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
