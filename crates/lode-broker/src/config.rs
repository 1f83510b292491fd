//! Broker limits and behaviour, resolved and typed. Nothing here reads files or the environment.

use std::time::Duration;

/// Every limit the broker enforces, in one place.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// Largest packet accepted from a client, in bytes (fixed header included).
    pub max_packet_size: u32,
    /// Longest topic name or filter, in bytes.
    pub max_topic_len: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter.
    pub max_topic_levels: usize,
    /// Most topic filters in one SUBSCRIBE.
    pub max_topics_per_subscribe: usize,
    /// Most subscriptions one session may hold.
    pub max_subscriptions_per_client: usize,
    /// Most unacknowledged QoS 1/2 messages sent to a client (our Receive Maximum towards it is
    /// the smaller of this and the client's own).
    pub max_inflight: u16,
    /// Receive Maximum announced to 5.0 clients: QoS 1/2 publishes we accept unacknowledged.
    pub receive_maximum: u16,
    /// Most messages queued for one session (online backlog or offline).
    pub max_queued_messages: usize,
    /// How long a message waits in an offline session's queue at most.
    pub queued_message_expiry: Duration,
    /// Longest session expiry interval a client may ask for.
    pub max_session_expiry: Duration,
    /// Session expiry given to 3.1.1 clients that connect with clean session = 0.
    pub v3_session_expiry: Duration,
    /// Keep alive range accepted from clients; `None` = any value. 0 means no keep alive.
    pub keep_alive_range: Option<(u16, u16)>,
    /// Keep alive imposed when a client asks for 0 or for more than the range allows (5.0 only).
    pub server_keep_alive: Option<u16>,
    /// Time a client has to send CONNECT after the transport is up.
    pub connect_timeout: Duration,
    /// Highest topic alias accepted from 5.0 clients (0 = none).
    pub topic_alias_maximum: u16,
    /// How long a publisher waits for a subscriber whose backlog is full before that
    /// subscriber is disconnected (it stopped reading; its session keeps its queue).
    pub slow_subscriber_timeout: Duration,
    /// Most bytes waiting to be written to one client before it is considered stalled.
    pub max_write_backlog: usize,
    /// Whether retained messages are stored.
    pub retain_available: bool,
    /// Whether `$share/{group}/{filter}` subscriptions are accepted.
    pub shared_subscriptions: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers: bool,
    /// Whether wildcard subscriptions are accepted.
    pub wildcard_subscriptions: bool,
    /// Largest QoS granted.
    pub maximum_qos: lode_mqtt::QoS,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_packet_size: 256 * 1024,
            max_topic_len: 65_535,
            max_topic_levels: 128,
            max_topics_per_subscribe: 128,
            max_subscriptions_per_client: 1_000,
            max_inflight: 100,
            receive_maximum: 100,
            max_queued_messages: 10_000,
            queued_message_expiry: Duration::from_secs(7 * 24 * 3600),
            max_session_expiry: Duration::from_secs(7 * 24 * 3600),
            v3_session_expiry: Duration::from_secs(7 * 24 * 3600),
            keep_alive_range: None,
            server_keep_alive: None,
            connect_timeout: Duration::from_secs(10),
            topic_alias_maximum: 64,
            slow_subscriber_timeout: Duration::from_secs(30),
            max_write_backlog: 4 * 1024 * 1024,
            retain_available: true,
            shared_subscriptions: true,
            subscription_identifiers: true,
            wildcard_subscriptions: true,
            maximum_qos: lode_mqtt::QoS::ExactlyOnce,
        }
    }
}
