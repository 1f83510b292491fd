//! Stage 1 of the config: the TOML file format, which is the user contract.
//!
//! Every field is optional; what is left out keeps its default. Unknown keys are an
//! error, so a misspelt option never goes unnoticed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The whole `lodestone.toml` file.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Version of the file format. Only `1` exists.
    pub version: Option<u32>,
    /// Directory holding all durable state. Default `./lodestone-data`.
    pub data_dir: Option<PathBuf>,
    /// Storage backend: `"embedded"` (default, durable, inside `data_dir`) or `"memory"`
    /// (nothing survives a restart; for development and tests).
    pub storage: Option<String>,
    /// PostgreSQL URL of the device registry (`postgres://user@host/db`), shared by several
    /// nodes. Default: an SQLite file `registry.db` in `data_dir`.
    pub registry_url: Option<String>,
    /// PostgreSQL URL of the thing-model history (property, event and service-call history,
    /// device log). Default: embedded, in `data_dir/history`.
    pub history_url: Option<String>,
    /// Accept every MQTT client without credentials and let it publish and subscribe anywhere.
    /// Development only. Default `false`: clients are refused until device authentication exists.
    pub allow_anonymous: Option<bool>,
    /// Most simultaneous transport connections over all MQTT listeners; more are closed at once.
    /// Default 100000.
    pub max_connections: Option<usize>,
    /// Time a new connection has to finish its TLS or WebSocket handshake, e.g. `"10s"`.
    #[serde(default, with = "humantime_serde")]
    pub handshake_timeout: Option<Duration>,
    /// Longest graceful shutdown, e.g. `"30s"`. Past it, remaining connections are dropped.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    /// Listener addresses.
    #[serde(default)]
    pub listeners: ListenersFile,
    /// TLS for the `mqtts`, `wss` and `https` listeners.
    #[serde(default)]
    pub tls: TlsFile,
    /// Broker limits and behaviour.
    #[serde(default)]
    pub mqtt: MqttFile,
    /// Thing model: history retention, service calls.
    #[serde(default)]
    pub thing: ThingFile,
    /// HTTP and CoAP device access.
    #[serde(default)]
    pub edge: EdgeFile,
    /// The rules engine and the applications' stream.
    #[serde(default)]
    pub rules: RulesFile,
}

/// `[rules]`: the rules engine's limits, retries and buffers, and the applications' stream.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Rules one account may have. Default 1000.
    pub rules_per_account: Option<u64>,
    /// Actions one rule may have. Default 10.
    pub actions_per_rule: Option<usize>,
    /// Messages per second the rules of one account take; the rest is counted as
    /// throttled. Default 1000.
    pub account_rate: Option<u32>,
    /// Messages per second one account's applications receive on the `$lode` stream; more
    /// wait their turn. Default 1000.
    pub stream_rate: Option<u32>,
    /// Stream messages that may wait, over all accounts. Default 100000.
    pub stream_queue: Option<usize>,
    /// Messages one destination buffer holds. Default 100000.
    pub buffer_capacity: Option<usize>,
    /// What a full destination buffer does: `"drop_oldest"` (default) or `"refuse_new"`.
    pub full_policy: Option<String>,
    /// Delivery attempts before a message goes to the rule's error action. Default 12.
    pub max_attempts: Option<u32>,
    /// Wait before the first retry, doubled after each failure. Default `"100ms"`.
    #[serde(default, with = "humantime_serde")]
    pub backoff_initial: Option<Duration>,
    /// Longest wait between retries. Default `"30s"`.
    #[serde(default, with = "humantime_serde")]
    pub backoff_max: Option<Duration>,
    /// Messages waiting between the broker and the rules. Default 65536.
    pub input_queue: Option<usize>,
}

/// `[edge]`: devices that sign in over HTTP or CoAP and send without a connection.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFile {
    /// How long an `/auth` token is valid, e.g. `"48h"` (default), at least 1m.
    #[serde(default, with = "humantime_serde")]
    pub token_ttl: Option<Duration>,
    /// How long a device stays online after its last message, e.g. `"5m"` (default),
    /// at least 1s.
    #[serde(default, with = "humantime_serde")]
    pub online_window: Option<Duration>,
    /// `/auth` requests one source address may make a minute. Default 60.
    pub auth_per_minute: Option<u32>,
}

/// `[thing]`: the thing model's history and calls.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThingFile {
    /// How long property, event and service-call history is kept, e.g. `"30days"`.
    /// Default 30 days.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// How long the device message log is kept. Default 7 days.
    #[serde(default, with = "humantime_serde")]
    pub log_retention: Option<Duration>,
    /// Timeout of a sync service call when the caller gives none, 1s to 60s. Default 5s.
    #[serde(default, with = "humantime_serde")]
    pub sync_call_timeout: Option<Duration>,
}

/// `[listeners]`: where each listener binds.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersFile {
    /// MQTT over TCP. Default `0.0.0.0:1883`.
    pub mqtt: Option<SocketAddr>,
    /// MQTT over TLS, only when `[tls]` has a certificate and key. Default `0.0.0.0:8883`.
    pub mqtts: Option<SocketAddr>,
    /// MQTT over WebSocket, path `/mqtt`. Default `0.0.0.0:8083`.
    pub ws: Option<SocketAddr>,
    /// MQTT over secure WebSocket, only when `[tls]` is set. Default `0.0.0.0:8084`.
    pub wss: Option<SocketAddr>,
    /// HTTP: health, readiness, metrics, management API. Default `0.0.0.0:8080`.
    pub http: Option<SocketAddr>,
    /// The HTTP endpoints over TLS (HTTPS device registration), only when `[tls]` is set.
    /// Default `0.0.0.0:8443`.
    pub https: Option<SocketAddr>,
    /// Alink CoAP over UDP. Default `0.0.0.0:5683`.
    pub coap: Option<SocketAddr>,
    /// Alink CoAP with symmetric-key encrypted payloads (`coap-psk://`). Default `0.0.0.0:5682`.
    pub coap_psk: Option<SocketAddr>,
    /// Alink CoAP over DTLS 1.2 (`coaps://`, certificate and PSK). Default `0.0.0.0:5684`.
    pub coap_dtls: Option<SocketAddr>,
}

/// `[tls]`: server certificate and optional client-certificate authentication.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM file with the server certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// PEM file with the CA certificates that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Client certificates: `"none"` (default), `"optional"` (verified when presented) or
    /// `"required"`. `optional` and `required` need `client_ca`.
    pub client_auth: Option<String>,
}

/// `[mqtt]`: every limit of the broker. Each maps onto one field of the broker's config.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttFile {
    /// Largest packet accepted from a client, in bytes (fixed header included). Default 262144.
    pub max_packet_size: Option<u32>,
    /// Longest topic name or filter, in bytes. Default 65535.
    pub max_topic_len: Option<usize>,
    /// Most levels (`/`-separated parts) in a topic name or filter. Default 128.
    pub max_topic_levels: Option<usize>,
    /// Most topic filters in one SUBSCRIBE. Default 128.
    pub max_topics_per_subscribe: Option<usize>,
    /// Most subscriptions one session may hold. Default 1000.
    pub max_subscriptions_per_client: Option<usize>,
    /// Most unacknowledged QoS 1/2 messages sent to one client. Default 100.
    pub max_inflight: Option<u16>,
    /// Receive Maximum announced to 5.0 clients. Default 100.
    pub receive_maximum: Option<u16>,
    /// Most messages queued for one session. Default 10000.
    pub max_queued_messages: Option<usize>,
    /// How long a message waits in an offline session's queue at most, e.g. `"7d"`.
    #[serde(default, with = "humantime_serde")]
    pub queued_message_expiry: Option<Duration>,
    /// Longest session expiry interval a client may ask for, e.g. `"7d"`.
    #[serde(default, with = "humantime_serde")]
    pub max_session_expiry: Option<Duration>,
    /// Session expiry given to 3.1.1 clients connecting with clean session = 0, e.g. `"7d"`.
    #[serde(default, with = "humantime_serde")]
    pub v3_session_expiry: Option<Duration>,
    /// Keep alive range accepted from clients in seconds, as `[min, max]`. Default: any.
    pub keep_alive_range: Option<[u16; 2]>,
    /// Keep alive imposed on 5.0 clients outside the range, in seconds. Default: none.
    pub server_keep_alive: Option<u16>,
    /// Time a client has to send CONNECT after the transport is up, e.g. `"10s"`.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// Highest topic alias accepted from 5.0 clients (0 = none). Default 64.
    pub topic_alias_maximum: Option<u16>,
    /// How long publishers wait for a subscriber that stopped reading before it is
    /// disconnected, e.g. `"30s"`. Default 30 s.
    #[serde(default, with = "humantime_serde")]
    pub slow_subscriber_timeout: Option<Duration>,
    /// Most bytes waiting to be written to one client before it counts as stalled. Default 4 MiB.
    pub max_write_backlog: Option<usize>,
    /// Whether retained messages are stored. Default `true`.
    pub retain_available: Option<bool>,
    /// Whether `$share/{group}/{filter}` subscriptions are accepted. Default `true`.
    pub shared_subscriptions: Option<bool>,
    /// Whether subscription identifiers are supported. Default `true`.
    pub subscription_identifiers: Option<bool>,
    /// Whether wildcard subscriptions are accepted. Default `true`.
    pub wildcard_subscriptions: Option<bool>,
    /// Largest QoS granted: 0, 1 or 2. Default 2.
    pub maximum_qos: Option<u8>,
    /// Topic filters no client may subscribe to (wildcards in the list cover every
    /// filter they match), e.g. `["$SYS/#"]`. Default: none.
    pub deny_subscribe: Option<Vec<String>>,
    /// SUBACK reason code for a denied subscription: 128 (0x80, unspecified error)
    /// or 135 (0x87, not authorized). Default 135.
    pub deny_subscribe_reason: Option<u8>,
}

impl FileConfig {
    /// Parses the text of a config file.
    pub fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }
}
