//! Plain MQTT messages: the QoS levels Alink uses and a received publish.

use bytes::Bytes;

/// The QoS levels Alink devices use (the platform has no QoS 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QoS {
    /// QoS 0: fire and forget.
    #[default]
    AtMostOnce,
    /// QoS 1: acknowledged by the server (PUBACK).
    AtLeastOnce,
}

impl QoS {
    pub(crate) fn to_mqtt(self) -> lode_mqtt::QoS {
        match self {
            QoS::AtMostOnce => lode_mqtt::QoS::AtMostOnce,
            QoS::AtLeastOnce => lode_mqtt::QoS::AtLeastOnce,
        }
    }

    /// The SDK's view of a received QoS (QoS 2 cannot be granted to a 0/1 subscription).
    pub(crate) fn from_mqtt(qos: lode_mqtt::QoS) -> QoS {
        match qos {
            lode_mqtt::QoS::AtMostOnce => QoS::AtMostOnce,
            lode_mqtt::QoS::AtLeastOnce | lode_mqtt::QoS::ExactlyOnce => QoS::AtLeastOnce,
        }
    }
}

/// A message the server delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The full topic.
    pub topic: String,
    /// The payload, as sent.
    pub payload: Bytes,
    /// The delivery QoS.
    pub qos: QoS,
    /// The retain flag.
    pub retain: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_maps_both_ways() {
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            assert_eq!(QoS::from_mqtt(q.to_mqtt()), q);
        }
        assert_eq!(
            QoS::from_mqtt(lode_mqtt::QoS::ExactlyOnce),
            QoS::AtLeastOnce
        );
    }
}
