//! Command-line options of `lodestone serve`. The `lodestone` binary owns the top-level parser.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{ClientAuth, StorageKind};

/// Runs the broker, its listeners and the HTTP endpoints until SIGINT or SIGTERM.
///
/// Options are taken, lowest precedence first, from defaults, the config file,
/// `LODESTONE_*` environment variables and these flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file. Unknown keys in it are an error.
    #[arg(long, short = 'c', env = "LODESTONE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding all durable state [default: ./lodestone-data]
    #[arg(long, env = "LODESTONE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Storage backend for broker state [default: embedded]
    #[arg(long, env = "LODESTONE_STORAGE", value_enum)]
    pub storage: Option<StorageKind>,

    /// PostgreSQL URL of the device registry, to share it between nodes (postgres://…)
    /// [default: an SQLite file in the data directory]
    #[arg(long, env = "LODESTONE_REGISTRY_URL", value_name = "URL")]
    pub registry_url: Option<String>,

    /// PostgreSQL URL of the thing-model history (postgres://…)
    /// [default: embedded, in the data directory]
    #[arg(long, env = "LODESTONE_HISTORY_URL", value_name = "URL")]
    pub history_url: Option<String>,

    /// Address of the MQTT over TCP listener [default: 0.0.0.0:1883]
    #[arg(long, env = "LODESTONE_MQTT_ADDR", value_name = "ADDR")]
    pub mqtt_addr: Option<SocketAddr>,

    /// Address of the MQTT over TLS listener, started only when --tls-cert and --tls-key are set
    /// [default: 0.0.0.0:8883]
    #[arg(long, env = "LODESTONE_MQTTS_ADDR", value_name = "ADDR")]
    pub mqtts_addr: Option<SocketAddr>,

    /// Address of the MQTT over WebSocket listener, path /mqtt [default: 0.0.0.0:8083]
    #[arg(long, env = "LODESTONE_WS_ADDR", value_name = "ADDR")]
    pub ws_addr: Option<SocketAddr>,

    /// Address of the MQTT over secure WebSocket listener, started only when TLS is configured
    /// [default: 0.0.0.0:8084]
    #[arg(long, env = "LODESTONE_WSS_ADDR", value_name = "ADDR")]
    pub wss_addr: Option<SocketAddr>,

    /// Address of the HTTP listener: /healthz, /readyz, /metrics [default: 0.0.0.0:8080]
    #[arg(long, env = "LODESTONE_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// Address of the HTTPS listener (the HTTP endpoints, management API and device
    /// registration over TLS), started only when TLS is configured [default: 0.0.0.0:8443]
    #[arg(long, env = "LODESTONE_HTTPS_ADDR", value_name = "ADDR")]
    pub https_addr: Option<SocketAddr>,

    /// Address of the Alink CoAP listener (UDP) [default: 0.0.0.0:5683]
    #[arg(long, env = "LODESTONE_COAP_ADDR", value_name = "ADDR")]
    pub coap_addr: Option<SocketAddr>,

    /// Address of the Alink CoAP listener with symmetric-key encrypted payloads (UDP)
    /// [default: 0.0.0.0:5682]
    #[arg(long, env = "LODESTONE_COAP_PSK_ADDR", value_name = "ADDR")]
    pub coap_psk_addr: Option<SocketAddr>,

    /// Address of the Alink CoAP over DTLS listener (UDP; certificate and PSK)
    /// [default: 0.0.0.0:5684]
    #[arg(long, env = "LODESTONE_COAP_DTLS_ADDR", value_name = "ADDR")]
    pub coap_dtls_addr: Option<SocketAddr>,

    /// PEM file with the server certificate chain (enables the mqtts, wss and https listeners)
    #[arg(long, env = "LODESTONE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the server private key
    #[arg(long, env = "LODESTONE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM file with the CA certificates that client certificates must chain to
    #[arg(long, env = "LODESTONE_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Client-certificate authentication on the TLS listeners [default: none]
    #[arg(long, env = "LODESTONE_TLS_CLIENT_AUTH", value_enum)]
    pub tls_client_auth: Option<ClientAuth>,

    /// Accept every MQTT client without credentials (development only). Without it clients are
    /// refused until device authentication is configured.
    #[arg(
        long,
        env = "LODESTONE_ALLOW_ANONYMOUS",
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true,
        value_name = "BOOL"
    )]
    pub allow_anonymous: Option<bool>,

    /// Most simultaneous MQTT connections over all listeners [default: 100000]
    #[arg(long, env = "LODESTONE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive list
    #[arg(
        long,
        env = "LODESTONE_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log: String,
}
