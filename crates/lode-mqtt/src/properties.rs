//! MQTT 5.0 properties: identifiers, which packet allows which, reading and writing.
//!
//! Reading is split in two: [`read_properties`] parses the wire format, checks
//! that each identifier is known, allowed on the packet and not repeated,
//! and hands each value to a per-packet closure that stores it in the model.
//! Writing goes through [`Sink`] so that one function both measures and writes
//! a property block; the two can never disagree.

use bytes::Bytes;

use crate::encode::Sink;
use crate::reader::Reader;
use crate::{
    ConnAckProperties, ConnectProperties, DecodeError, PublishProperties, QoS, UserProperty,
    WillProperties,
};

pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub(crate) const CONTENT_TYPE: u8 = 0x03;
pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
pub(crate) const CORRELATION_DATA: u8 = 0x09;
pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
pub(crate) const REASON_STRING: u8 = 0x1F;
pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub(crate) const TOPIC_ALIAS: u8 = 0x23;
pub(crate) const MAXIMUM_QOS: u8 = 0x24;
pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
pub(crate) const USER_PROPERTY: u8 = 0x26;
pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// A set of property identifiers; all identifiers are below 64.
#[derive(Clone, Copy)]
pub(crate) struct IdSet(u64);

impl IdSet {
    const fn of(ids: &[u8]) -> IdSet {
        let mut bits = 0u64;
        let mut i = 0;
        while i < ids.len() {
            bits |= 1 << ids[i];
            i += 1;
        }
        IdSet(bits)
    }

    fn contains(self, id: u8) -> bool {
        id < 64 && self.0 & (1 << id) != 0
    }
}

/// Which properties each packet (or the will) may carry, and which may repeat.
pub(crate) struct Allowed {
    ids: IdSet,
    repeatable: IdSet,
}

const USER_ONLY: IdSet = IdSet::of(&[USER_PROPERTY]);

pub(crate) const CONNECT: Allowed = Allowed {
    ids: IdSet::of(&[
        SESSION_EXPIRY_INTERVAL,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REQUEST_PROBLEM_INFORMATION,
        REQUEST_RESPONSE_INFORMATION,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
    ]),
    repeatable: USER_ONLY,
};
pub(crate) const WILL: Allowed = Allowed {
    ids: IdSet::of(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        WILL_DELAY_INTERVAL,
        USER_PROPERTY,
    ]),
    repeatable: USER_ONLY,
};
pub(crate) const CONNACK: Allowed = Allowed {
    ids: IdSet::of(&[
        SESSION_EXPIRY_INTERVAL,
        ASSIGNED_CLIENT_IDENTIFIER,
        SERVER_KEEP_ALIVE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        REASON_STRING,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
    ]),
    repeatable: USER_ONLY,
};
pub(crate) const PUBLISH: Allowed = Allowed {
    ids: IdSet::of(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        SUBSCRIPTION_IDENTIFIER,
        TOPIC_ALIAS,
        USER_PROPERTY,
    ]),
    // A server forwards one PUBLISH for several overlapping subscriptions.
    repeatable: IdSet::of(&[USER_PROPERTY, SUBSCRIPTION_IDENTIFIER]),
};
/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
pub(crate) const ACK: Allowed = Allowed {
    ids: IdSet::of(&[REASON_STRING, USER_PROPERTY]),
    repeatable: USER_ONLY,
};
pub(crate) const SUBSCRIBE: Allowed = Allowed {
    ids: IdSet::of(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]),
    repeatable: USER_ONLY,
};
pub(crate) const UNSUBSCRIBE: Allowed = Allowed {
    ids: USER_ONLY,
    repeatable: USER_ONLY,
};
pub(crate) const DISCONNECT: Allowed = Allowed {
    ids: IdSet::of(&[
        SESSION_EXPIRY_INTERVAL,
        SERVER_REFERENCE,
        REASON_STRING,
        USER_PROPERTY,
    ]),
    repeatable: USER_ONLY,
};
pub(crate) const AUTH: Allowed = Allowed {
    ids: IdSet::of(&[
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REASON_STRING,
        USER_PROPERTY,
    ]),
    repeatable: USER_ONLY,
};

/// One decoded property value.
pub(crate) enum Prop {
    Byte(u8),
    Bool(bool),
    QoS(QoS),
    U16(u16),
    U32(u32),
    Str(String),
    Bin(Bytes),
    Pair(String, String),
}

/// The wire type of each known identifier, `None` for unknown ones.
enum Kind {
    Byte,
    Bool,
    QoS,
    U16,
    /// Two-byte integer where 0 is a protocol error.
    U16NonZero,
    U32,
    /// Four-byte integer where 0 is a protocol error.
    U32NonZero,
    /// Variable byte integer where 0 is a protocol error.
    VarIntNonZero,
    Str,
    Bin,
    Pair,
}

fn kind(id: u8) -> Option<Kind> {
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR => Kind::Byte,
        MESSAGE_EXPIRY_INTERVAL | SESSION_EXPIRY_INTERVAL | WILL_DELAY_INTERVAL => Kind::U32,
        MAXIMUM_PACKET_SIZE => Kind::U32NonZero,
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => Kind::Str,
        CORRELATION_DATA | AUTHENTICATION_DATA => Kind::Bin,
        SUBSCRIPTION_IDENTIFIER => Kind::VarIntNonZero,
        SERVER_KEEP_ALIVE | TOPIC_ALIAS_MAXIMUM => Kind::U16,
        RECEIVE_MAXIMUM | TOPIC_ALIAS => Kind::U16NonZero,
        REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => Kind::Bool,
        MAXIMUM_QOS => Kind::QoS,
        USER_PROPERTY => Kind::Pair,
        _ => return None,
    })
}

/// Reads a property block (length prefix included) and feeds each property to `store`.
pub(crate) fn read_properties(
    r: &mut Reader,
    allowed: &Allowed,
    mut store: impl FnMut(u8, Prop) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.varint()?;
    let len = usize::try_from(len).map_err(|_| DecodeError::Malformed("property length"))?;
    if len > r.remaining() {
        return Err(DecodeError::Malformed("property length exceeds packet"));
    }
    let mut props = Reader::new(r.take(len)?);
    let mut seen = IdSet(0);
    while !props.is_empty() {
        // Identifiers are variable byte integers, but every defined one fits in
        // a single byte; a byte with the continuation bit is therefore unknown.
        let id = props.u8()?;
        let kind = kind(id).ok_or(DecodeError::Malformed("unknown property identifier"))?;
        if !allowed.ids.contains(id) {
            return Err(DecodeError::Protocol("property not allowed on this packet"));
        }
        if seen.contains(id) && !allowed.repeatable.contains(id) {
            return Err(DecodeError::Protocol("property included more than once"));
        }
        seen.0 |= 1 << id;
        let value = match kind {
            Kind::Byte => match props.u8()? {
                // The only byte property is the payload format indicator: 0 or 1.
                v @ (0 | 1) => Prop::Byte(v),
                _ => return Err(DecodeError::Protocol("invalid payload format indicator")),
            },
            Kind::Bool => match props.u8()? {
                0 => Prop::Bool(false),
                1 => Prop::Bool(true),
                _ => return Err(DecodeError::Protocol("boolean property not 0 or 1")),
            },
            Kind::QoS => match props.u8()? {
                // Maximum QoS only ever announces a downgrade to 0 or 1.
                0 => Prop::QoS(QoS::AtMostOnce),
                1 => Prop::QoS(QoS::AtLeastOnce),
                _ => return Err(DecodeError::Protocol("maximum QoS not 0 or 1")),
            },
            Kind::U16 => Prop::U16(props.u16()?),
            Kind::U16NonZero => match props.u16()? {
                0 => return Err(DecodeError::Protocol("property value must not be 0")),
                v => Prop::U16(v),
            },
            Kind::U32 => Prop::U32(props.u32()?),
            Kind::U32NonZero => match props.u32()? {
                0 => return Err(DecodeError::Protocol("property value must not be 0")),
                v => Prop::U32(v),
            },
            Kind::VarIntNonZero => match props.varint()? {
                0 => {
                    return Err(DecodeError::Protocol(
                        "subscription identifier must not be 0",
                    ));
                }
                v => Prop::U32(v),
            },
            Kind::Str => Prop::Str(props.string()?),
            Kind::Bin => Prop::Bin(props.binary()?),
            Kind::Pair => Prop::Pair(props.string()?, props.string()?),
        };
        store(id, value)?;
    }
    Ok(())
}

/// The error for a (property, value) combination the per-packet store did not
/// expect; [`read_properties`] already filters by packet, so this is a safety net.
pub(crate) fn unexpected() -> DecodeError {
    DecodeError::Protocol("property not allowed on this packet")
}

// ---- writing ------------------------------------------------------------

pub(crate) fn put_u8<S: Sink>(s: &mut S, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        s.u8(id);
        s.u8(v);
    }
}

pub(crate) fn put_bool<S: Sink>(s: &mut S, id: u8, v: Option<bool>) {
    put_u8(s, id, v.map(u8::from));
}

pub(crate) fn put_u16<S: Sink>(s: &mut S, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        s.u8(id);
        s.u16(v);
    }
}

pub(crate) fn put_u32<S: Sink>(s: &mut S, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        s.u8(id);
        s.u32(v);
    }
}

pub(crate) fn put_varint<S: Sink>(s: &mut S, id: u8, v: u32) {
    s.u8(id);
    s.varint(v);
}

pub(crate) fn put_str<S: Sink>(s: &mut S, id: u8, v: Option<&str>) {
    if let Some(v) = v {
        s.u8(id);
        s.binary(v.as_bytes());
    }
}

pub(crate) fn put_bin<S: Sink>(s: &mut S, id: u8, v: Option<&Bytes>) {
    if let Some(v) = v {
        s.u8(id);
        s.binary(v);
    }
}

pub(crate) fn put_user<S: Sink>(s: &mut S, users: &[UserProperty]) {
    for (k, v) in users {
        s.u8(USER_PROPERTY);
        s.binary(k.as_bytes());
        s.binary(v.as_bytes());
    }
}

/// Reason string and user properties: the whole property set of the acks.
pub(crate) fn put_ack<S: Sink>(s: &mut S, reason: Option<&str>, users: &[UserProperty]) {
    put_str(s, REASON_STRING, reason);
    put_user(s, users);
}

pub(crate) fn put_connect<S: Sink>(s: &mut S, p: &ConnectProperties) {
    put_u32(s, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    put_u16(s, RECEIVE_MAXIMUM, p.receive_maximum);
    put_u32(s, MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    put_u16(s, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    put_bool(
        s,
        REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    put_bool(
        s,
        REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    put_user(s, &p.user_properties);
    put_str(s, AUTHENTICATION_METHOD, p.authentication_method.as_deref());
    put_bin(s, AUTHENTICATION_DATA, p.authentication_data.as_ref());
}

pub(crate) fn put_will<S: Sink>(s: &mut S, p: &WillProperties) {
    put_u32(s, WILL_DELAY_INTERVAL, p.will_delay_interval);
    put_u8(s, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    put_u32(s, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    put_str(s, CONTENT_TYPE, p.content_type.as_deref());
    put_str(s, RESPONSE_TOPIC, p.response_topic.as_deref());
    put_bin(s, CORRELATION_DATA, p.correlation_data.as_ref());
    put_user(s, &p.user_properties);
}

pub(crate) fn put_connack<S: Sink>(s: &mut S, p: &ConnAckProperties) {
    put_u32(s, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    put_u16(s, RECEIVE_MAXIMUM, p.receive_maximum);
    put_u8(s, MAXIMUM_QOS, p.maximum_qos.map(|q| q as u8));
    put_bool(s, RETAIN_AVAILABLE, p.retain_available);
    put_u32(s, MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    put_str(
        s,
        ASSIGNED_CLIENT_IDENTIFIER,
        p.assigned_client_identifier.as_deref(),
    );
    put_u16(s, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    put_str(s, REASON_STRING, p.reason_string.as_deref());
    put_user(s, &p.user_properties);
    put_bool(
        s,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    put_bool(
        s,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifiers_available,
    );
    put_bool(
        s,
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
    put_u16(s, SERVER_KEEP_ALIVE, p.server_keep_alive);
    put_str(s, RESPONSE_INFORMATION, p.response_information.as_deref());
    put_str(s, SERVER_REFERENCE, p.server_reference.as_deref());
    put_str(s, AUTHENTICATION_METHOD, p.authentication_method.as_deref());
    put_bin(s, AUTHENTICATION_DATA, p.authentication_data.as_ref());
}

pub(crate) fn put_publish<S: Sink>(s: &mut S, p: &PublishProperties) {
    put_u8(s, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    put_u32(s, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    put_u16(s, TOPIC_ALIAS, p.topic_alias);
    put_str(s, RESPONSE_TOPIC, p.response_topic.as_deref());
    put_bin(s, CORRELATION_DATA, p.correlation_data.as_ref());
    put_user(s, &p.user_properties);
    for &id in &p.subscription_identifiers {
        put_varint(s, SUBSCRIPTION_IDENTIFIER, id);
    }
    put_str(s, CONTENT_TYPE, p.content_type.as_deref());
}
