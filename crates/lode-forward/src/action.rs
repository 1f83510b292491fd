//! What a rule does with its output row ([`Action`]) and the named connections actions
//! forward to ([`DestinationConfig`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ForwardError;

/// One action of a rule. JSON: `{"type": "republish", …}` or `{"type": "webhook", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// Publishes the row to a topic of the broker.
    Republish {
        /// Topic template: `${field}` from the row, or `${productKey}`, `${deviceName}`,
        /// `${topic}`, `${messageId}`, `${timestamp}`, `${ruleId}`.
        topic: String,
        /// QoS of the republished message (0 or 1).
        #[serde(default)]
        qos: u8,
        /// Payload template; the row as JSON when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
    },
    /// Inserts the row into a table of a `postgres` or `mysql` destination.
    #[serde(rename_all = "camelCase")]
    Insert {
        /// Id of the destination.
        destination: String,
        /// Table name (`name` or `schema.name`).
        table: String,
        /// Column → template; a template that is exactly `${field}` keeps the value's type.
        columns: BTreeMap<String, String>,
        /// A column (with a unique index) that receives the message id; a duplicate
        /// delivery is then ignored by the database.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id_column: Option<String>,
    },
    /// Sends the row to a `redis` destination.
    Redis {
        /// Id of the destination.
        destination: String,
        /// `rpush` (list), `xadd` (stream, one field per column plus `messageId`) or
        /// `publish` (channel).
        command: RedisCommand,
        /// Key, stream or channel template.
        key: String,
        /// Payload template for `rpush` and `publish`; the row as JSON when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
    },
    /// Publishes the row to a `rabbitmq` destination (publisher confirms).
    #[serde(rename_all = "camelCase")]
    Amqp {
        /// Id of the destination.
        destination: String,
        /// Exchange name (`""` is the default exchange).
        #[serde(default)]
        exchange: String,
        /// Routing-key template.
        routing_key: String,
        /// Payload template; the row as JSON when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
    },
    /// Publishes the row to a `nats` destination (JetStream when it is configured so).
    Nats {
        /// Id of the destination.
        destination: String,
        /// Subject template.
        subject: String,
        /// Payload template; the row as JSON when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
    },
    /// Sends the row to an `http` destination.
    Webhook {
        /// Id of the destination.
        destination: String,
        /// HTTP method; `POST` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        /// Headers added to the destination's own (values are templates).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// Body template; the row as JSON when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
}

impl Action {
    /// Checks what can be checked without the destination: QoS, method, header names,
    /// template syntax.
    pub(crate) fn validate(&self, index: &str) -> Result<(), ForwardError> {
        let bad = |reason: String| ForwardError::InvalidAction {
            index: index.to_owned(),
            reason,
        };
        match self {
            Action::Republish {
                topic,
                qos,
                payload,
            } => {
                if *qos > 1 {
                    return Err(bad(format!("qos must be 0 or 1, not {qos}")));
                }
                if topic.is_empty() || topic.contains(['+', '#']) {
                    return Err(bad(format!("{topic:?} is not a topic name")));
                }
                crate::template::check(topic).map_err(bad)?;
                if let Some(p) = payload {
                    crate::template::check(p).map_err(bad)?;
                }
            }
            Action::Insert {
                destination,
                table,
                columns,
                message_id_column,
            } => {
                if destination.is_empty() {
                    return Err(bad("destination is empty".into()));
                }
                if !sql_identifier(table) {
                    return Err(bad(format!("{table:?} is not a table name")));
                }
                if columns.is_empty() {
                    return Err(bad("columns is empty".into()));
                }
                let column_ok = |c: &str| sql_identifier(c) && !c.contains('.');
                for (column, template) in columns {
                    if !column_ok(column) {
                        return Err(bad(format!("{column:?} is not a column name")));
                    }
                    crate::template::check(template).map_err(bad)?;
                }
                if let Some(c) = message_id_column.as_deref().filter(|c| !column_ok(c)) {
                    return Err(bad(format!("{c:?} is not a column name")));
                }
            }
            Action::Amqp {
                destination,
                routing_key: key,
                payload,
                ..
            }
            | Action::Nats {
                destination,
                subject: key,
                payload,
            }
            | Action::Redis {
                destination,
                key,
                payload,
                ..
            } => {
                if destination.is_empty() {
                    return Err(bad("destination is empty".into()));
                }
                if key.is_empty() {
                    return Err(bad("key is empty".into()));
                }
                crate::template::check(key).map_err(bad)?;
                if let Some(p) = payload {
                    crate::template::check(p).map_err(bad)?;
                }
            }
            Action::Webhook {
                destination,
                method,
                headers,
                body,
            } => {
                if destination.is_empty() {
                    return Err(bad("destination is empty".into()));
                }
                if let Some(m) = method {
                    hyper::Method::from_bytes(m.as_bytes())
                        .map_err(|_| bad(format!("{m:?} is not an HTTP method")))?;
                }
                for (name, value) in headers {
                    hyper::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| bad(format!("{name:?} is not a header name")))?;
                    crate::template::check(value).map_err(bad)?;
                }
                if let Some(b) = body {
                    crate::template::check(b).map_err(bad)?;
                }
            }
        }
        Ok(())
    }

    /// The destination this action needs, if any, and the kinds it accepts.
    pub(crate) fn destination(&self) -> Option<(&str, &'static [&'static str])> {
        match self {
            Action::Republish { .. } => None,
            Action::Webhook { destination, .. } => Some((destination, &["http"])),
            Action::Insert { destination, .. } => Some((destination, &["postgres", "mysql"])),
            Action::Redis { destination, .. } => Some((destination, &["redis"])),
            Action::Amqp { destination, .. } => Some((destination, &["rabbitmq"])),
            Action::Nats { destination, .. } => Some((destination, &["nats"])),
        }
    }
}

/// The Redis command of a `redis` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisCommand {
    Rpush,
    Xadd,
    Publish,
}

/// Whether `s` is a plain SQL identifier, optionally schema-qualified (`a`, `s.t`).
pub(crate) fn sql_identifier(s: &str) -> bool {
    let part = |p: &str| {
        let mut chars = p.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && p.len() <= 63
    };
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| part(p))
}

/// Settings of a `postgres`, `mysql` or `redis` destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlDestination {
    /// `postgres://user:password@host:port/db`, `mysql://…` or `redis://…`.
    pub url: String,
}

/// Settings of a `nats` destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsDestination {
    /// `nats://host:port`.
    pub url: String,
    /// Publish through JetStream and wait for its acknowledgement (a stream must cover
    /// the subjects); the message id goes in `Nats-Msg-Id`, so JetStream drops duplicates.
    #[serde(default)]
    pub jetstream: bool,
}

/// Settings of an `http` destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDestination {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Headers sent with every request (credentials such as `Authorization`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Time allowed for one request, in milliseconds; 5,000 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl HttpDestination {
    /// The request timeout.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(5_000).clamp(1, 120_000))
    }
}

/// The settings of a destination, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestinationConfig {
    /// `http`: webhooks.
    Http(HttpDestination),
    /// `postgres`: row inserts.
    Postgres(UrlDestination),
    /// `mysql` (MySQL, MariaDB): row inserts.
    Mysql(UrlDestination),
    /// `redis`: list push, stream add, publish.
    Redis(UrlDestination),
    /// `rabbitmq` (AMQP 0-9-1): exchange and routing key, publisher confirms.
    Rabbitmq(UrlDestination),
    /// `nats`: subject, optionally JetStream.
    Nats(NatsDestination),
}

impl DestinationConfig {
    /// Parses and checks the settings of a destination of `kind`.
    pub fn parse(
        kind: &str,
        config: &serde_json::Value,
    ) -> Result<DestinationConfig, ForwardError> {
        let bad = |e: serde_json::Error| ForwardError::InvalidDestination(e.to_string());
        match kind {
            "http" => {
                let http: HttpDestination = serde_json::from_value(config.clone()).map_err(bad)?;
                let uri: hyper::Uri = http.url.parse().map_err(|_| {
                    ForwardError::InvalidDestination(format!("{:?} is not a URL", http.url))
                })?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(ForwardError::InvalidDestination(format!(
                        "{:?} is not an http:// or https:// URL",
                        http.url
                    )));
                }
                for (name, value) in &http.headers {
                    hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        ForwardError::InvalidDestination(format!("{name:?} is not a header name"))
                    })?;
                    hyper::header::HeaderValue::from_str(value).map_err(|_| {
                        ForwardError::InvalidDestination(format!(
                            "the value of header {name:?} is not valid"
                        ))
                    })?;
                }
                Ok(DestinationConfig::Http(http))
            }
            "nats" => {
                let n: NatsDestination = serde_json::from_value(config.clone()).map_err(bad)?;
                if !n.url.starts_with("nats://") && !n.url.starts_with("tls://") {
                    return Err(ForwardError::InvalidDestination(
                        "a nats url starts with nats:// or tls://".into(),
                    ));
                }
                Ok(DestinationConfig::Nats(n))
            }
            "postgres" | "mysql" | "redis" | "rabbitmq" => {
                let u: UrlDestination = serde_json::from_value(config.clone()).map_err(bad)?;
                let scheme = match kind {
                    "postgres" => &["postgres://", "postgresql://"][..],
                    "mysql" => &["mysql://", "mariadb://"][..],
                    "rabbitmq" => &["amqp://", "amqps://"][..],
                    _ => &["redis://", "rediss://"][..],
                };
                if !scheme.iter().any(|s| u.url.starts_with(s)) {
                    return Err(ForwardError::InvalidDestination(format!(
                        "a {kind} url starts with {}",
                        scheme.join(" or ")
                    )));
                }
                Ok(match kind {
                    "postgres" => DestinationConfig::Postgres(u),
                    "mysql" => DestinationConfig::Mysql(u),
                    "rabbitmq" => DestinationConfig::Rabbitmq(u),
                    _ => DestinationConfig::Redis(u),
                })
            }
            other => Err(ForwardError::InvalidDestination(format!(
                "unknown kind {other:?} (known: http, postgres, mysql, redis, rabbitmq, nats)"
            ))),
        }
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            DestinationConfig::Http(_) => "http",
            DestinationConfig::Postgres(_) => "postgres",
            DestinationConfig::Mysql(_) => "mysql",
            DestinationConfig::Redis(_) => "redis",
            DestinationConfig::Rabbitmq(_) => "rabbitmq",
            DestinationConfig::Nats(_) => "nats",
        }
    }

    /// Host and port to probe when the destination is saved (the other kinds are
    /// checked by signing in).
    pub(crate) fn probe_address(&self) -> Option<(String, u16)> {
        match self {
            DestinationConfig::Postgres(_)
            | DestinationConfig::Mysql(_)
            | DestinationConfig::Redis(_)
            | DestinationConfig::Rabbitmq(_)
            | DestinationConfig::Nats(_) => None,
            DestinationConfig::Http(h) => {
                let uri: hyper::Uri = h.url.parse().ok()?;
                let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                    Some("https") => 443,
                    _ => 80,
                });
                Some((uri.host()?.trim_matches(['[', ']']).to_owned(), port))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn actions_round_trip_and_validate() {
        let a: Action = serde_json::from_value(json!({
            "type": "republish", "topic": "/${productKey}/${deviceName}/user/alert", "qos": 1
        }))
        .expect("parses");
        assert_eq!(
            a,
            Action::Republish {
                topic: "/${productKey}/${deviceName}/user/alert".into(),
                qos: 1,
                payload: None
            }
        );
        a.validate("0").expect("valid");
        let w: Action = serde_json::from_value(json!({
            "type": "webhook", "destination": "d1", "headers": {"X-A": "${t}"}
        }))
        .expect("parses");
        assert_eq!(w.destination(), Some(("d1", &["http"][..])));
        let i: Action = serde_json::from_value(json!({
            "type": "insert", "destination": "d2", "table": "public.readings",
            "columns": {"temp": "${t}", "device": "${deviceName}"}, "messageIdColumn": "msg_id"
        }))
        .expect("parses");
        i.validate("2").expect("valid");
        let r: Action = serde_json::from_value(json!({
            "type": "redis", "destination": "d3", "command": "xadd", "key": "s:${deviceName}"
        }))
        .expect("parses");
        r.validate("3").expect("valid");
        w.validate("1").expect("valid");

        let bad = [
            json!({"type": "republish", "topic": "/a/+", "qos": 0}),
            json!({"type": "republish", "topic": "/a", "qos": 2}),
            json!({"type": "republish", "topic": "/a/${x", "qos": 0}),
            json!({"type": "webhook", "destination": "d", "method": "GE T"}),
            json!({"type": "webhook", "destination": "d", "headers": {"a b": "1"}}),
            json!({"type": "insert", "destination": "d", "table": "t; drop", "columns": {"a": "1"}}),
            json!({"type": "insert", "destination": "d", "table": "t", "columns": {"a-b": "1"}}),
            json!({"type": "insert", "destination": "d", "table": "t", "columns": {}}),
            json!({"type": "insert", "destination": "d", "table": "a.b.c", "columns": {"a": "1"}}),
            json!({"type": "redis", "destination": "d", "command": "rpush", "key": ""}),
        ];
        for b in bad {
            let a: Action = serde_json::from_value(b.clone()).expect("parses");
            assert!(a.validate("0").is_err(), "{b} should be refused");
        }
        assert!(serde_json::from_value::<Action>(json!({"type": "fax"})).is_err());
        assert!(
            serde_json::from_value::<Action>(json!({"type": "republish", "topic": "/a", "x": 1}))
                .is_err()
        );
    }

    #[test]
    fn http_destinations_are_checked() {
        let ok = DestinationConfig::parse(
            "http",
            &json!({"url": "http://127.0.0.1:8080/in", "headers": {"Authorization": "Bearer x"}}),
        )
        .expect("valid");
        assert_eq!(ok.probe_address(), Some(("127.0.0.1".into(), 8080)));
        let tls = DestinationConfig::parse("http", &json!({"url": "https://example.com/in"}))
            .expect("valid");
        assert_eq!(tls.probe_address(), Some(("example.com".into(), 443)));
        for bad in [
            json!({"url": "ftp://x/"}),
            json!({"url": "not a url"}),
            json!({"url": "http://x/", "headers": {"a b": "1"}}),
            json!({"url": "http://x/", "extra": 1}),
        ] {
            assert!(DestinationConfig::parse("http", &bad).is_err(), "{bad}");
        }
        assert_eq!(
            DestinationConfig::parse("smtp", &json!({})).map_err(|e| e.code()),
            Err("InvalidDestination")
        );
        let pg = DestinationConfig::parse("postgres", &json!({"url": "postgres://u@h/db"}))
            .expect("valid");
        assert_eq!((pg.kind(), pg.probe_address()), ("postgres", None));
        assert!(DestinationConfig::parse("mysql", &json!({"url": "postgres://u@h/db"})).is_err());
        assert!(DestinationConfig::parse("redis", &json!({"url": "redis://h", "x": 1})).is_err());
        let nats =
            DestinationConfig::parse("nats", &json!({"url": "nats://h:4222", "jetstream": true}))
                .expect("valid");
        assert_eq!(nats.kind(), "nats");
        assert!(DestinationConfig::parse("nats", &json!({"url": "http://h"})).is_err());
        assert!(DestinationConfig::parse("rabbitmq", &json!({"url": "amqp://g:g@h/%2f"})).is_ok());
    }
}
