//! Routed messages, queue entries, and their durable encoding.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lode_mqtt::{PublishProperties, QoS};
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Message expiry is wall-clock time so that it
/// survives a restart.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One application message as published, shared by every receiver.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) topic: Bytes,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// Publish properties with topic alias and subscription identifiers removed.
    pub(crate) properties: PublishProperties,
    /// Wall-clock expiry in ms since the epoch.
    pub(crate) expires_at: Option<u64>,
    /// Id of the publishing session, for no-local (0 = the platform itself).
    pub(crate) origin: u64,
}

impl Message {
    pub(crate) fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Remaining message expiry interval in seconds, for the outgoing PUBLISH.
    pub(crate) fn remaining_expiry(&self, now: u64) -> Option<u32> {
        self.expires_at
            .map(|at| (at.saturating_sub(now).div_ceil(1000)).min(u32::MAX as u64) as u32)
    }
}

/// A message waiting for, or in, delivery to one session.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) msg: Arc<Message>,
    /// Delivery QoS: the lower of the publish QoS and the subscription's.
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) identifiers: Vec<u32>,
    /// Sequence number of the durable copy, when there is one.
    pub(crate) seq: Option<u64>,
    /// When a message queued for an offline session is dropped (ms since the epoch).
    pub(crate) deadline: Option<u64>,
}

impl Queued {
    /// Whether the message expired, by its own expiry or by its queue deadline.
    pub(crate) fn stale(&self, now: u64) -> bool {
        self.msg.expired(now) || self.deadline.is_some_and(|d| d <= now)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredProperties {
    payload_format_indicator: Option<u8>,
    #[serde(with = "serde_bytes")]
    correlation_data: Option<Vec<u8>>,
    response_topic: Option<String>,
    content_type: Option<String>,
    user_properties: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct StoredMessage {
    #[serde(with = "serde_bytes")]
    topic: Vec<u8>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    publish_qos: u8,
    delivery_qos: u8,
    retain: bool,
    expires_at: Option<u64>,
    identifiers: Vec<u32>,
    deadline: Option<u64>,
    properties: Option<StoredProperties>,
}

fn qos_from(v: u8) -> QoS {
    QoS::from_u8(v).unwrap_or(QoS::AtLeastOnce)
}

/// Encodes a queue entry (or a retained message) for the store.
pub(crate) fn encode_queued(q: &Queued) -> Bytes {
    let m = &q.msg;
    let p = &m.properties;
    let properties = (!p.is_empty()).then(|| StoredProperties {
        payload_format_indicator: p.payload_format_indicator,
        correlation_data: p.correlation_data.as_ref().map(|b| b.to_vec()),
        response_topic: p.response_topic.clone(),
        content_type: p.content_type.clone(),
        user_properties: p.user_properties.clone(),
    });
    let stored = StoredMessage {
        topic: m.topic.to_vec(),
        payload: m.payload.to_vec(),
        publish_qos: m.qos as u8,
        delivery_qos: q.qos as u8,
        retain: q.retain,
        expires_at: m.expires_at,
        identifiers: q.identifiers.clone(),
        deadline: q.deadline,
        properties,
    };
    Bytes::from(postcard::to_stdvec(&stored).unwrap_or_default())
}

/// Decodes what [`encode_queued`] wrote.
pub(crate) fn decode_queued(data: &[u8], seq: Option<u64>) -> Result<Queued, postcard::Error> {
    let s: StoredMessage = postcard::from_bytes(data)?;
    let properties = match s.properties {
        Some(p) => PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            correlation_data: p.correlation_data.map(Bytes::from),
            response_topic: p.response_topic,
            content_type: p.content_type,
            user_properties: p.user_properties,
            ..PublishProperties::default()
        },
        None => PublishProperties::default(),
    };
    let msg = Message {
        topic: Bytes::from(s.topic),
        payload: Bytes::from(s.payload),
        qos: qos_from(s.publish_qos),
        retain: s.retain,
        properties,
        expires_at: s.expires_at,
        origin: 0,
    };
    Ok(Queued {
        msg: Arc::new(msg),
        qos: qos_from(s.delivery_qos),
        retain: s.retain,
        identifiers: s.identifiers,
        seq,
        deadline: s.deadline,
    })
}

/// One subscription as stored with its session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredSub {
    pub(crate) filter: String,
    pub(crate) qos: u8,
    pub(crate) no_local: bool,
    pub(crate) retain_as_published: bool,
    pub(crate) retain_handling: u8,
    pub(crate) identifier: Option<u32>,
}

/// A session's durable record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredSession {
    pub(crate) expiry_interval: u32,
    pub(crate) subscriptions: Vec<StoredSub>,
    /// When the last connection ended, ms since the epoch; `None` while connected.
    pub(crate) disconnected_at: Option<u64>,
}

impl StoredSession {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).unwrap_or_default())
    }

    pub(crate) fn decode(data: &[u8]) -> Result<StoredSession, postcard::Error> {
        postcard::from_bytes(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_round_trip_keeps_everything_durable() {
        let q = Queued {
            msg: Arc::new(Message {
                topic: Bytes::from_static(b"a/b"),
                payload: Bytes::from_static(&[0, 1, 2, 255]),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: PublishProperties {
                    correlation_data: Some(Bytes::from_static(b"id")),
                    response_topic: Some("r".into()),
                    user_properties: vec![("k".into(), "v".into())],
                    ..PublishProperties::default()
                },
                expires_at: Some(42),
                origin: 7,
            }),
            qos: QoS::AtLeastOnce,
            retain: true,
            identifiers: vec![3, 9],
            seq: None,
            deadline: Some(77),
        };
        let back = decode_queued(&encode_queued(&q), Some(5)).unwrap();
        assert_eq!(back.msg.topic, q.msg.topic);
        assert_eq!(back.msg.payload, q.msg.payload);
        assert_eq!(back.msg.qos, QoS::ExactlyOnce);
        assert_eq!(back.msg.properties, q.msg.properties);
        assert_eq!(back.msg.expires_at, Some(42));
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert_eq!(back.identifiers, vec![3, 9]);
        assert_eq!(back.seq, Some(5));
        assert_eq!(back.deadline, Some(77));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_queued(&[0xff; 3], None).is_err());
        assert!(StoredSession::decode(&[0xff; 3]).is_err());
    }
}
