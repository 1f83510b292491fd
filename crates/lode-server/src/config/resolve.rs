//! Stage 2 of the config: merges defaults, file, environment and flags into typed config.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use lode_broker::BrokerConfig;
use lode_mqtt::QoS;

use super::file::{FileConfig, MqttFile};
use super::{ClientAuth, Env, ListenerAddrs, Problems, ServerConfig, StorageKind, TlsConfig};
use crate::cli::ServeArgs;

/// One layer of overrides for the options that flags and environment variables can set.
#[derive(Debug, Default)]
struct Layer {
    data_dir: Option<PathBuf>,
    storage: Option<StorageKind>,
    registry_url: Option<String>,
    history_url: Option<String>,
    allow_anonymous: Option<bool>,
    max_connections: Option<usize>,
    mqtt_addr: Option<std::net::SocketAddr>,
    mqtts_addr: Option<std::net::SocketAddr>,
    ws_addr: Option<std::net::SocketAddr>,
    wss_addr: Option<std::net::SocketAddr>,
    http_addr: Option<std::net::SocketAddr>,
    https_addr: Option<std::net::SocketAddr>,
    coap_addr: Option<std::net::SocketAddr>,
    coap_psk_addr: Option<std::net::SocketAddr>,
    coap_dtls_addr: Option<std::net::SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_client_auth: Option<ClientAuth>,
}

impl Layer {
    fn from_file(file: &FileConfig, problems: &mut Vec<String>) -> Layer {
        Layer {
            data_dir: file.data_dir.clone(),
            storage: file
                .storage
                .as_deref()
                .and_then(|s| parse_enum("storage", s, problems)),
            registry_url: file.registry_url.clone(),
            history_url: file.history_url.clone(),
            allow_anonymous: file.allow_anonymous,
            max_connections: file.max_connections,
            mqtt_addr: file.listeners.mqtt,
            mqtts_addr: file.listeners.mqtts,
            ws_addr: file.listeners.ws,
            wss_addr: file.listeners.wss,
            http_addr: file.listeners.http,
            https_addr: file.listeners.https,
            coap_addr: file.listeners.coap,
            coap_psk_addr: file.listeners.coap_psk,
            coap_dtls_addr: file.listeners.coap_dtls,
            tls_cert: file.tls.cert.clone(),
            tls_key: file.tls.key.clone(),
            tls_client_ca: file.tls.client_ca.clone(),
            tls_client_auth: file
                .tls
                .client_auth
                .as_deref()
                .and_then(|s| parse_enum("tls.client_auth", s, problems)),
        }
    }

    fn from_env(env: &Env, problems: &mut Vec<String>) -> Layer {
        let get = |name: &str| env.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let mut parse_addr = |name: &str| {
            get(name).and_then(|v| parse_value::<std::net::SocketAddr>(name, v, problems))
        };
        let mqtt_addr = parse_addr("LODESTONE_MQTT_ADDR");
        let mqtts_addr = parse_addr("LODESTONE_MQTTS_ADDR");
        let ws_addr = parse_addr("LODESTONE_WS_ADDR");
        let wss_addr = parse_addr("LODESTONE_WSS_ADDR");
        let http_addr = parse_addr("LODESTONE_HTTP_ADDR");
        let https_addr = parse_addr("LODESTONE_HTTPS_ADDR");
        let coap_addr = parse_addr("LODESTONE_COAP_ADDR");
        let coap_psk_addr = parse_addr("LODESTONE_COAP_PSK_ADDR");
        let coap_dtls_addr = parse_addr("LODESTONE_COAP_DTLS_ADDR");
        Layer {
            data_dir: get("LODESTONE_DATA_DIR").map(PathBuf::from),
            storage: get("LODESTONE_STORAGE")
                .and_then(|v| parse_enum("LODESTONE_STORAGE", v, problems)),
            registry_url: get("LODESTONE_REGISTRY_URL").map(str::to_owned),
            history_url: get("LODESTONE_HISTORY_URL").map(str::to_owned),
            allow_anonymous: get("LODESTONE_ALLOW_ANONYMOUS")
                .and_then(|v| parse_bool("LODESTONE_ALLOW_ANONYMOUS", v, problems)),
            max_connections: get("LODESTONE_MAX_CONNECTIONS")
                .and_then(|v| parse_value("LODESTONE_MAX_CONNECTIONS", v, problems)),
            mqtt_addr,
            mqtts_addr,
            ws_addr,
            wss_addr,
            http_addr,
            https_addr,
            coap_addr,
            coap_psk_addr,
            coap_dtls_addr,
            tls_cert: get("LODESTONE_TLS_CERT").map(PathBuf::from),
            tls_key: get("LODESTONE_TLS_KEY").map(PathBuf::from),
            tls_client_ca: get("LODESTONE_TLS_CLIENT_CA").map(PathBuf::from),
            tls_client_auth: get("LODESTONE_TLS_CLIENT_AUTH")
                .and_then(|v| parse_enum("LODESTONE_TLS_CLIENT_AUTH", v, problems)),
        }
    }

    fn from_args(args: &ServeArgs) -> Layer {
        Layer {
            data_dir: args.data_dir.clone(),
            storage: args.storage,
            registry_url: args.registry_url.clone(),
            history_url: args.history_url.clone(),
            allow_anonymous: args.allow_anonymous,
            max_connections: args.max_connections,
            mqtt_addr: args.mqtt_addr,
            mqtts_addr: args.mqtts_addr,
            ws_addr: args.ws_addr,
            wss_addr: args.wss_addr,
            http_addr: args.http_addr,
            https_addr: args.https_addr,
            coap_addr: args.coap_addr,
            coap_psk_addr: args.coap_psk_addr,
            coap_dtls_addr: args.coap_dtls_addr,
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
            tls_client_ca: args.tls_client_ca.clone(),
            tls_client_auth: args.tls_client_auth,
        }
    }

    /// Lays `top` over `self`: every option `top` sets wins.
    fn overlay(self, top: Layer) -> Layer {
        Layer {
            data_dir: top.data_dir.or(self.data_dir),
            storage: top.storage.or(self.storage),
            registry_url: top.registry_url.or(self.registry_url),
            history_url: top.history_url.or(self.history_url),
            allow_anonymous: top.allow_anonymous.or(self.allow_anonymous),
            max_connections: top.max_connections.or(self.max_connections),
            mqtt_addr: top.mqtt_addr.or(self.mqtt_addr),
            mqtts_addr: top.mqtts_addr.or(self.mqtts_addr),
            ws_addr: top.ws_addr.or(self.ws_addr),
            wss_addr: top.wss_addr.or(self.wss_addr),
            http_addr: top.http_addr.or(self.http_addr),
            https_addr: top.https_addr.or(self.https_addr),
            coap_addr: top.coap_addr.or(self.coap_addr),
            coap_psk_addr: top.coap_psk_addr.or(self.coap_psk_addr),
            coap_dtls_addr: top.coap_dtls_addr.or(self.coap_dtls_addr),
            tls_cert: top.tls_cert.or(self.tls_cert),
            tls_key: top.tls_key.or(self.tls_key),
            tls_client_ca: top.tls_client_ca.or(self.tls_client_ca),
            tls_client_auth: top.tls_client_auth.or(self.tls_client_auth),
        }
    }
}

/// Merges `file` < `env` < `flags` over the defaults and validates the result. Every problem
/// found is reported, not only the first.
pub fn resolve(file: &FileConfig, env: &Env, flags: &ServeArgs) -> Result<ServerConfig, Problems> {
    let mut problems = Vec::new();
    if let Some(version) = file.version
        && version != 1
    {
        problems.push(format!(
            "version: unsupported config file version {version} (expected 1)"
        ));
    }
    let layer = Layer::from_file(file, &mut problems)
        .overlay(Layer::from_env(env, &mut problems))
        .overlay(Layer::from_args(flags));

    let defaults = ServerConfig::default();
    let default_addrs = ListenerAddrs::default();
    let listeners = ListenerAddrs {
        mqtt: layer.mqtt_addr.unwrap_or(default_addrs.mqtt),
        mqtts: layer.mqtts_addr.unwrap_or(default_addrs.mqtts),
        ws: layer.ws_addr.unwrap_or(default_addrs.ws),
        wss: layer.wss_addr.unwrap_or(default_addrs.wss),
        http: layer.http_addr.unwrap_or(default_addrs.http),
        https: layer.https_addr.unwrap_or(default_addrs.https),
        coap: layer.coap_addr.unwrap_or(default_addrs.coap),
        coap_psk: layer.coap_psk_addr.unwrap_or(default_addrs.coap_psk),
        coap_dtls: layer.coap_dtls_addr.unwrap_or(default_addrs.coap_dtls),
    };

    let client_auth = layer.tls_client_auth.unwrap_or_default();
    let tls = match (layer.tls_cert, layer.tls_key) {
        (Some(cert), Some(key)) => {
            if client_auth != ClientAuth::None && layer.tls_client_ca.is_none() {
                problems.push(
                    "tls.client_auth: client authentication needs a CA file (tls.client_ca / --tls-client-ca)"
                        .to_owned(),
                );
            }
            Some(TlsConfig {
                cert,
                key,
                client_ca: layer.tls_client_ca,
                client_auth,
            })
        }
        (Some(_), None) => {
            problems.push(
                "tls: a certificate is configured but no private key (tls.key / --tls-key)"
                    .to_owned(),
            );
            None
        }
        (None, Some(_)) => {
            problems.push(
                "tls: a private key is configured but no certificate (tls.cert / --tls-cert)"
                    .to_owned(),
            );
            None
        }
        (None, None) => {
            if layer.tls_client_ca.is_some() || client_auth != ClientAuth::None {
                problems.push(
                    "tls: client authentication is configured but TLS is not (set tls.cert and tls.key)"
                        .to_owned(),
                );
            }
            None
        }
    };

    let max_connections = layer.max_connections.unwrap_or(defaults.max_connections);
    if max_connections == 0 {
        problems.push("max_connections: must be at least 1".to_owned());
    }
    let handshake_timeout = file.handshake_timeout.unwrap_or(defaults.handshake_timeout);
    if handshake_timeout.is_zero() {
        problems.push("handshake_timeout: must be more than zero".to_owned());
    }

    let broker = resolve_broker(&file.mqtt, &mut problems);
    let deny_subscribe = file.mqtt.deny_subscribe.clone().unwrap_or_default();
    for filter in &deny_subscribe {
        if !lode_mqtt::topic::valid_topic_filter(filter) {
            problems.push(format!(
                "mqtt.deny_subscribe: {filter:?} is not a valid topic filter"
            ));
        }
    }
    let deny_subscribe_reason = match file.mqtt.deny_subscribe_reason {
        None => defaults.deny_subscribe_reason,
        Some(0x80) => lode_mqtt::ReasonCode::UnspecifiedError,
        Some(0x87) => lode_mqtt::ReasonCode::NotAuthorized,
        Some(other) => {
            problems.push(format!(
                "mqtt.deny_subscribe_reason: {other} is not 128 (unspecified error) or 135 (not authorized)"
            ));
            defaults.deny_subscribe_reason
        }
    };

    let sync_call_timeout = file
        .thing
        .sync_call_timeout
        .unwrap_or(defaults.sync_call_timeout);
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&sync_call_timeout) {
        problems.push(format!(
            "thing.sync_call_timeout: {sync_call_timeout:?} is not within 1s..=60s"
        ));
    }
    for (name, d) in [
        ("thing.retention", file.thing.retention),
        ("thing.log_retention", file.thing.log_retention),
    ] {
        if d.is_some_and(|d| d < Duration::from_secs(3600)) {
            problems.push(format!("{name}: must be at least 1h"));
        }
    }

    let edge = resolve_edge(&file.edge, &mut problems);
    let rules = resolve_rules(&file.rules, &mut problems);

    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    Ok(ServerConfig {
        data_dir: layer.data_dir.unwrap_or(defaults.data_dir),
        storage: layer.storage.unwrap_or(defaults.storage),
        registry_url: layer.registry_url.or(defaults.registry_url),
        history_url: layer.history_url.or(defaults.history_url),
        history_retention: file.thing.retention.unwrap_or(defaults.history_retention),
        log_retention: file.thing.log_retention.unwrap_or(defaults.log_retention),
        sync_call_timeout,
        admin_key: None,
        listeners,
        tls,
        allow_anonymous: layer.allow_anonymous.unwrap_or(defaults.allow_anonymous),
        max_connections,
        handshake_timeout,
        shutdown_grace: file.shutdown_grace.unwrap_or(defaults.shutdown_grace),
        broker,
        deny_subscribe,
        deny_subscribe_reason,
        edge,
        dtls: defaults.dtls,
        rules,
    })
}

fn resolve_edge(e: &super::file::EdgeFile, problems: &mut Vec<String>) -> lode_edge::EdgeConfig {
    let mut edge = lode_edge::EdgeConfig::default();
    if let Some(ttl) = e.token_ttl {
        if ttl < Duration::from_secs(60) {
            problems.push("edge.token_ttl: must be at least 1m".to_owned());
        }
        edge.token_ttl = ttl;
    }
    if let Some(window) = e.online_window {
        if window < Duration::from_secs(1) {
            problems.push("edge.online_window: must be at least 1s".to_owned());
        }
        edge.online_window = window;
    }
    if let Some(n) = e.auth_per_minute {
        if n == 0 {
            problems.push("edge.auth_per_minute: must be at least 1".to_owned());
        }
        edge.auth_per_minute = n;
    }
    edge
}

fn resolve_rules(
    r: &super::file::RulesFile,
    problems: &mut Vec<String>,
) -> lode_forward::ForwardConfig {
    let mut c = lode_forward::ForwardConfig::new("forward");
    let mut at_least_one = |name: &str, v: Option<u64>| {
        if v == Some(0) {
            problems.push(format!("rules.{name}: must be at least 1"));
        }
    };
    at_least_one("rules_per_account", r.rules_per_account);
    at_least_one("actions_per_rule", r.actions_per_rule.map(|v| v as u64));
    at_least_one("account_rate", r.account_rate.map(u64::from));
    at_least_one("stream_rate", r.stream_rate.map(u64::from));
    at_least_one("stream_queue", r.stream_queue.map(|v| v as u64));
    at_least_one("buffer_capacity", r.buffer_capacity.map(|v| v as u64));
    at_least_one("max_attempts", r.max_attempts.map(u64::from));
    at_least_one("input_queue", r.input_queue.map(|v| v as u64));
    c.rules_per_account = r.rules_per_account.unwrap_or(c.rules_per_account);
    c.actions_per_rule = r.actions_per_rule.unwrap_or(c.actions_per_rule);
    c.account_rate = r.account_rate.unwrap_or(c.account_rate);
    c.stream_rate = r.stream_rate.unwrap_or(c.stream_rate);
    c.stream_queue = r.stream_queue.unwrap_or(c.stream_queue);
    c.buffer_capacity = r.buffer_capacity.unwrap_or(c.buffer_capacity);
    c.max_attempts = r.max_attempts.unwrap_or(c.max_attempts);
    c.backoff_initial = r.backoff_initial.unwrap_or(c.backoff_initial);
    c.backoff_max = r.backoff_max.unwrap_or(c.backoff_max);
    c.input_queue = r.input_queue.unwrap_or(c.input_queue);
    if c.backoff_initial > c.backoff_max {
        problems.push(format!(
            "rules.backoff_initial: {:?} is above rules.backoff_max {:?}",
            c.backoff_initial, c.backoff_max
        ));
    }
    match r.full_policy.as_deref() {
        None => {}
        Some("drop_oldest") => c.full_policy = lode_forward::FullPolicy::DropOldest,
        Some("refuse_new") => c.full_policy = lode_forward::FullPolicy::RefuseNew,
        Some(other) => problems.push(format!(
            "rules.full_policy: {other:?} is not \"drop_oldest\" or \"refuse_new\""
        )),
    }
    c
}

fn resolve_broker(m: &MqttFile, problems: &mut Vec<String>) -> BrokerConfig {
    let d = BrokerConfig::default();
    let maximum_qos = match m.maximum_qos {
        None => d.maximum_qos,
        Some(q) => QoS::from_u8(q).unwrap_or_else(|| {
            problems.push(format!(
                "mqtt.maximum_qos: {q} is not a QoS (expected 0, 1 or 2)"
            ));
            d.maximum_qos
        }),
    };
    let keep_alive_range = match m.keep_alive_range {
        Some([min, max]) if min > max => {
            problems.push(format!(
                "mqtt.keep_alive_range: minimum {min} is above maximum {max}"
            ));
            None
        }
        Some([min, max]) => Some((min, max)),
        None => d.keep_alive_range,
    };
    let c = BrokerConfig {
        max_packet_size: m.max_packet_size.unwrap_or(d.max_packet_size),
        max_topic_len: m.max_topic_len.unwrap_or(d.max_topic_len),
        max_topic_levels: m.max_topic_levels.unwrap_or(d.max_topic_levels),
        max_topics_per_subscribe: m
            .max_topics_per_subscribe
            .unwrap_or(d.max_topics_per_subscribe),
        max_subscriptions_per_client: m
            .max_subscriptions_per_client
            .unwrap_or(d.max_subscriptions_per_client),
        max_inflight: m.max_inflight.unwrap_or(d.max_inflight),
        receive_maximum: m.receive_maximum.unwrap_or(d.receive_maximum),
        max_queued_messages: m.max_queued_messages.unwrap_or(d.max_queued_messages),
        queued_message_expiry: m.queued_message_expiry.unwrap_or(d.queued_message_expiry),
        max_session_expiry: m.max_session_expiry.unwrap_or(d.max_session_expiry),
        v3_session_expiry: m.v3_session_expiry.unwrap_or(d.v3_session_expiry),
        keep_alive_range,
        server_keep_alive: m.server_keep_alive.or(d.server_keep_alive),
        connect_timeout: m.connect_timeout.unwrap_or(d.connect_timeout),
        topic_alias_maximum: m.topic_alias_maximum.unwrap_or(d.topic_alias_maximum),
        slow_subscriber_timeout: m
            .slow_subscriber_timeout
            .unwrap_or(d.slow_subscriber_timeout),
        max_write_backlog: m.max_write_backlog.unwrap_or(d.max_write_backlog),
        retain_available: m.retain_available.unwrap_or(d.retain_available),
        shared_subscriptions: m.shared_subscriptions.unwrap_or(d.shared_subscriptions),
        subscription_identifiers: m
            .subscription_identifiers
            .unwrap_or(d.subscription_identifiers),
        wildcard_subscriptions: m.wildcard_subscriptions.unwrap_or(d.wildcard_subscriptions),
        maximum_qos,
    };
    // The smallest packet that can carry anything useful is a few bytes; below 16 nothing works.
    if c.max_packet_size < 16 {
        problems.push(format!(
            "mqtt.max_packet_size: {} is too small (at least 16)",
            c.max_packet_size
        ));
    }
    if c.max_packet_size > 268_435_460 {
        problems.push(format!(
            "mqtt.max_packet_size: {} is above the MQTT maximum of 268435460",
            c.max_packet_size
        ));
    }
    for (name, value) in [
        ("mqtt.max_inflight", u64::from(c.max_inflight)),
        ("mqtt.receive_maximum", u64::from(c.receive_maximum)),
        ("mqtt.max_topic_len", c.max_topic_len as u64),
        ("mqtt.max_topic_levels", c.max_topic_levels as u64),
        (
            "mqtt.max_topics_per_subscribe",
            c.max_topics_per_subscribe as u64,
        ),
        ("mqtt.max_write_backlog", c.max_write_backlog as u64),
    ] {
        if value == 0 {
            problems.push(format!("{name}: must be at least 1"));
        }
    }
    if c.max_topic_len > 65_535 {
        problems.push(format!(
            "mqtt.max_topic_len: {} is above the MQTT maximum of 65535",
            c.max_topic_len
        ));
    }
    if c.connect_timeout.is_zero() {
        problems.push("mqtt.connect_timeout: must be more than zero".to_owned());
    }
    c
}

fn parse_enum<T: ValueEnum>(name: &str, value: &str, problems: &mut Vec<String>) -> Option<T> {
    match T::from_str(value, true) {
        Ok(v) => Some(v),
        Err(_) => {
            let expected: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
                .collect();
            problems.push(format!(
                "{name}: unknown value {value:?} (expected one of {})",
                expected.join(", ")
            ));
            None
        }
    }
}

fn parse_value<T: FromStr>(name: &str, value: &str, problems: &mut Vec<String>) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    match value.trim().parse() {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{name}: invalid value {value:?}: {e}"));
            None
        }
    }
}

fn parse_bool(name: &str, value: &str, problems: &mut Vec<String>) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => {
            problems.push(format!(
                "{name}: invalid value {value:?} (expected true or false)"
            ));
            None
        }
    }
}
