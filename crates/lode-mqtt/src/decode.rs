//! Bytes to packets.
//!
//! Decoding happens in two steps. The fixed header is parsed in place to learn
//! the packet's size; until all of its bytes are in the buffer nothing is
//! consumed. Then the packet's bytes are split off and frozen, and the body is
//! parsed through a bounds-checked [`Reader`], so PUBLISH topic and payload
//! are slices of that one allocation.

use bytes::{Bytes, BytesMut};

use crate::properties::{self as props, Prop, read_properties, unexpected};
use crate::reader::Reader;
use crate::topic;
use crate::{
    Auth, ConnAck, ConnAckProperties, Connect, ConnectProperties, DecodeError, Disconnect, Packet,
    ProtocolVersion, PubResp, Publish, PublishProperties, QoS, ReasonCode, RetainHandling, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will, WillProperties,
};

/// A decoded packet and its size on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub packet: Packet,
    pub wire_len: usize,
}

// Reason codes each 5.0 packet may carry (spec tables 3.2.2.2, 3.4.2.1, ...).
pub(crate) const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
pub(crate) const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
pub(crate) const PUBREL_CODES: &[u8] = &[0x00, 0x92];
pub(crate) const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
pub(crate) const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
pub(crate) const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
pub(crate) const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

const CONNECT: u8 = 1;

/// Decodes one packet from the front of `buf`, splitting the consumed bytes off.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet. Topic and
/// payload of a PUBLISH are zero-copy slices of the consumed bytes. CONNECT is
/// decoded whatever `version` says, since it is what sets the version.
/// A fixed header announcing more than `max_packet_size` bytes is refused at once.
///
/// The size compared with `max_packet_size` is the whole packet, fixed header
/// included, as the 5.0 Maximum Packet Size property defines it.
/// On error the buffer may or may not have been consumed; the connection is
/// expected to be closed.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Decoded>, DecodeError> {
    let Some((first, header_len, remaining)) = fixed_header(buf)? else {
        return Ok(None);
    };
    // Fail fast on a bad type or flags before waiting for the body.
    check_flags(first, version)?;
    let total = header_len + remaining;
    if total > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    let body = frame.split_off(header_len);
    let packet = decode_body(first, body, version)?;
    Ok(Some(Decoded {
        packet,
        wire_len: total,
    }))
}

/// Decodes the first packet of a connection, which must be a CONNECT.
pub fn decode_connect(
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<Option<Decoded>, DecodeError> {
    if let Some(&first) = buf.first()
        && first >> 4 != CONNECT
    {
        return Err(DecodeError::Protocol("first packet is not CONNECT"));
    }
    // The version argument is irrelevant: CONNECT carries its own.
    decode(buf, ProtocolVersion::V5, max_packet_size)
}

/// Parses the fixed header in place: `(first byte, header length, remaining length)`.
fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((first, 2 + i, remaining)));
        }
    }
    Err(DecodeError::Malformed(
        "remaining length longer than 4 bytes",
    ))
}

/// Packet type and reserved flag bits [MQTT-2.1.3-1].
fn check_flags(first: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let flags = first & 0x0F;
    let expected = match first >> 4 {
        0 => return Err(DecodeError::Malformed("reserved packet type 0")),
        // PUBLISH flags are DUP, QoS and RETAIN, checked when decoding it.
        3 => return Ok(()),
        // PUBREL, SUBSCRIBE, UNSUBSCRIBE.
        6 | 8 | 10 => 0b0010,
        15 if !version.is_v5() => return Err(DecodeError::Malformed("AUTH packet in MQTT 3.1.1")),
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::Malformed("invalid fixed header flags"));
    }
    Ok(())
}

fn decode_body(first: u8, body: Bytes, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body);
    let v5 = version.is_v5();
    let packet = match first >> 4 {
        CONNECT => Packet::Connect(Box::new(connect(&mut r)?)),
        2 => Packet::ConnAck(connack(&mut r, v5)?),
        3 => Packet::Publish(publish(&mut r, first & 0x0F, v5)?),
        4 => Packet::PubAck(pub_resp(&mut r, v5, PUBACK_CODES)?),
        5 => Packet::PubRec(pub_resp(&mut r, v5, PUBACK_CODES)?),
        6 => Packet::PubRel(pub_resp(&mut r, v5, PUBREL_CODES)?),
        7 => Packet::PubComp(pub_resp(&mut r, v5, PUBREL_CODES)?),
        8 => Packet::Subscribe(subscribe(&mut r, v5)?),
        9 => Packet::SubAck(suback(&mut r, v5)?),
        10 => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        11 => Packet::UnsubAck(unsuback(&mut r, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(disconnect(&mut r, v5)?),
        15 => Packet::Auth(auth(&mut r)?),
        _ => return Err(DecodeError::Malformed("reserved packet type 0")),
    };
    r.finish()?;
    Ok(packet)
}

fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// A 5.0 reason code, which must be one of those defined for the packet.
fn reason_code(r: &mut Reader, allowed: &[u8]) -> Result<ReasonCode, DecodeError> {
    let b = r.u8()?;
    if !allowed.contains(&b) {
        return Err(DecodeError::Malformed("invalid reason code for packet"));
    }
    ReasonCode::from_u8(b).ok_or(DecodeError::Malformed("unknown reason code"))
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V310,
        _ => return Err(DecodeError::UnsupportedProtocolVersion(level)),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("reserved CONNECT flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0x03).ok_or(DecodeError::Malformed("will QoS 3"))?;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain without will flag",
        ));
    }
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;

    let mut properties = ConnectProperties::default();
    if v5 {
        let p = &mut properties;
        read_properties(r, &props::CONNECT, |id, value| {
            match (id, value) {
                (props::SESSION_EXPIRY_INTERVAL, Prop::U32(v)) => {
                    p.session_expiry_interval = Some(v)
                }
                (props::RECEIVE_MAXIMUM, Prop::U16(v)) => p.receive_maximum = Some(v),
                (props::MAXIMUM_PACKET_SIZE, Prop::U32(v)) => p.maximum_packet_size = Some(v),
                (props::TOPIC_ALIAS_MAXIMUM, Prop::U16(v)) => p.topic_alias_maximum = Some(v),
                (props::REQUEST_RESPONSE_INFORMATION, Prop::Bool(v)) => {
                    p.request_response_information = Some(v);
                }
                (props::REQUEST_PROBLEM_INFORMATION, Prop::Bool(v)) => {
                    p.request_problem_information = Some(v);
                }
                (props::USER_PROPERTY, Prop::Pair(k, v)) => p.user_properties.push((k, v)),
                (props::AUTHENTICATION_METHOD, Prop::Str(v)) => p.authentication_method = Some(v),
                (props::AUTHENTICATION_DATA, Prop::Bin(v)) => p.authentication_data = Some(v),
                _ => return Err(unexpected()),
            }
            Ok(())
        })?;
    }

    let client_id = r.string()?;
    let will = if will_flag {
        let mut wp = WillProperties::default();
        if v5 {
            let p = &mut wp;
            read_properties(r, &props::WILL, |id, value| {
                match (id, value) {
                    (props::WILL_DELAY_INTERVAL, Prop::U32(v)) => p.will_delay_interval = Some(v),
                    (props::PAYLOAD_FORMAT_INDICATOR, Prop::Byte(v)) => {
                        p.payload_format_indicator = Some(v);
                    }
                    (props::MESSAGE_EXPIRY_INTERVAL, Prop::U32(v)) => {
                        p.message_expiry_interval = Some(v);
                    }
                    (props::CONTENT_TYPE, Prop::Str(v)) => p.content_type = Some(v),
                    (props::RESPONSE_TOPIC, Prop::Str(v)) => p.response_topic = Some(v),
                    (props::CORRELATION_DATA, Prop::Bin(v)) => p.correlation_data = Some(v),
                    (props::USER_PROPERTY, Prop::Pair(k, v)) => p.user_properties.push((k, v)),
                    _ => return Err(unexpected()),
                }
                Ok(())
            })?;
        }
        let topic = r.string()?;
        if !topic::valid_topic_name(&topic) {
            return Err(DecodeError::TopicNameInvalid("invalid will topic"));
        }
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties: wp,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::Malformed("reserved CONNACK flags set"));
    }
    let session_present = flags & 0x01 != 0;
    let mut properties = ConnAckProperties::default();
    let code = if v5 {
        let code = reason_code(r, CONNACK_CODES)?;
        let p = &mut properties;
        read_properties(r, &props::CONNACK, |id, value| {
            match (id, value) {
                (props::SESSION_EXPIRY_INTERVAL, Prop::U32(v)) => {
                    p.session_expiry_interval = Some(v)
                }
                (props::RECEIVE_MAXIMUM, Prop::U16(v)) => p.receive_maximum = Some(v),
                (props::MAXIMUM_QOS, Prop::QoS(v)) => p.maximum_qos = Some(v),
                (props::RETAIN_AVAILABLE, Prop::Bool(v)) => p.retain_available = Some(v),
                (props::MAXIMUM_PACKET_SIZE, Prop::U32(v)) => p.maximum_packet_size = Some(v),
                (props::ASSIGNED_CLIENT_IDENTIFIER, Prop::Str(v)) => {
                    p.assigned_client_identifier = Some(v);
                }
                (props::TOPIC_ALIAS_MAXIMUM, Prop::U16(v)) => p.topic_alias_maximum = Some(v),
                (props::REASON_STRING, Prop::Str(v)) => p.reason_string = Some(v),
                (props::USER_PROPERTY, Prop::Pair(k, v)) => p.user_properties.push((k, v)),
                (props::WILDCARD_SUBSCRIPTION_AVAILABLE, Prop::Bool(v)) => {
                    p.wildcard_subscription_available = Some(v);
                }
                (props::SUBSCRIPTION_IDENTIFIER_AVAILABLE, Prop::Bool(v)) => {
                    p.subscription_identifiers_available = Some(v);
                }
                (props::SHARED_SUBSCRIPTION_AVAILABLE, Prop::Bool(v)) => {
                    p.shared_subscription_available = Some(v);
                }
                (props::SERVER_KEEP_ALIVE, Prop::U16(v)) => p.server_keep_alive = Some(v),
                (props::RESPONSE_INFORMATION, Prop::Str(v)) => p.response_information = Some(v),
                (props::SERVER_REFERENCE, Prop::Str(v)) => p.server_reference = Some(v),
                (props::AUTHENTICATION_METHOD, Prop::Str(v)) => p.authentication_method = Some(v),
                (props::AUTHENTICATION_DATA, Prop::Bin(v)) => p.authentication_data = Some(v),
                _ => return Err(unexpected()),
            }
            Ok(())
        })?;
        code
    } else {
        ReasonCode::from_v3_connack(r.u8()?)
            .ok_or(DecodeError::Malformed("unknown CONNACK return code"))?
    };
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

fn publish(r: &mut Reader, flags: u8, v5: bool) -> Result<Publish, DecodeError> {
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
    let dup = flags & 0x08 != 0;
    let retain = flags & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        // [MQTT-3.3.1-2]; 5.0 classifies it as a protocol error.
        return Err(if v5 {
            DecodeError::Protocol("DUP set on QoS 0 PUBLISH")
        } else {
            DecodeError::Malformed("DUP set on QoS 0 PUBLISH")
        });
    }
    let topic = r.utf8_bytes()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let mut properties = PublishProperties::default();
    if v5 {
        let p = &mut properties;
        read_properties(r, &props::PUBLISH, |id, value| {
            match (id, value) {
                (props::PAYLOAD_FORMAT_INDICATOR, Prop::Byte(v)) => {
                    p.payload_format_indicator = Some(v);
                }
                (props::MESSAGE_EXPIRY_INTERVAL, Prop::U32(v)) => {
                    p.message_expiry_interval = Some(v)
                }
                (props::TOPIC_ALIAS, Prop::U16(v)) => p.topic_alias = Some(v),
                (props::RESPONSE_TOPIC, Prop::Str(v)) => p.response_topic = Some(v),
                (props::CORRELATION_DATA, Prop::Bin(v)) => p.correlation_data = Some(v),
                (props::USER_PROPERTY, Prop::Pair(k, v)) => p.user_properties.push((k, v)),
                (props::SUBSCRIPTION_IDENTIFIER, Prop::U32(v)) => {
                    p.subscription_identifiers.push(v);
                }
                (props::CONTENT_TYPE, Prop::Str(v)) => p.content_type = Some(v),
                _ => return Err(unexpected()),
            }
            Ok(())
        })?;
    }
    if topic.is_empty() {
        // 5.0 allows an empty topic only together with a topic alias.
        if !v5 {
            return Err(DecodeError::TopicNameInvalid("empty topic name"));
        }
        if properties.topic_alias.is_none() {
            return Err(DecodeError::Protocol(
                "empty topic name without topic alias",
            ));
        }
    } else if topic.iter().any(|&b| b == b'+' || b == b'#') {
        return Err(DecodeError::TopicNameInvalid("wildcard in topic name"));
    }
    let payload = r.rest();
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload,
        properties,
    })
}

/// Reason string and user properties, the property set of every ack.
fn ack_properties(
    r: &mut Reader,
    reason_string: &mut Option<String>,
    user_properties: &mut Vec<crate::UserProperty>,
) -> Result<(), DecodeError> {
    read_properties(r, &props::ACK, |id, value| {
        match (id, value) {
            (props::REASON_STRING, Prop::Str(v)) => *reason_string = Some(v),
            (props::USER_PROPERTY, Prop::Pair(k, v)) => user_properties.push((k, v)),
            _ => return Err(unexpected()),
        }
        Ok(())
    })
}

fn pub_resp(r: &mut Reader, v5: bool, codes: &[u8]) -> Result<PubResp, DecodeError> {
    let mut resp = PubResp::new(packet_id(r)?, ReasonCode::Success);
    // [MQTT-3.4.2.1]: remaining length 2 means Success and no properties,
    // remaining length 3 means a reason code and no properties.
    if v5 && !r.is_empty() {
        resp.code = reason_code(r, codes)?;
        if !r.is_empty() {
            ack_properties(r, &mut resp.reason_string, &mut resp.user_properties)?;
        }
    }
    Ok(resp)
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut subscription_identifier = None;
    let mut user_properties = Vec::new();
    if v5 {
        read_properties(r, &props::SUBSCRIBE, |id, value| {
            match (id, value) {
                (props::SUBSCRIPTION_IDENTIFIER, Prop::U32(v)) => subscription_identifier = Some(v),
                (props::USER_PROPERTY, Prop::Pair(k, v)) => user_properties.push((k, v)),
                _ => return Err(unexpected()),
            }
            Ok(())
        })?;
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let shared = check_filter(&filter)?;
        let b = r.u8()?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if b & reserved != 0 {
            return Err(DecodeError::Malformed(
                "reserved subscription option bits set",
            ));
        }
        let qos = QoS::from_u8(b & 0x03).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
        let options = if v5 {
            let retain_handling = match (b >> 4) & 0x03 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => return Err(DecodeError::Protocol("retain handling 3")),
            };
            let no_local = b & 0x04 != 0;
            if shared && no_local {
                // [MQTT-3.8.3-4].
                return Err(DecodeError::Protocol("no local on a shared subscription"));
            }
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: b & 0x08 != 0,
                retain_handling,
            }
        } else {
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            }
        };
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        subscription_identifier,
        user_properties,
    })
}

/// Validates a SUBSCRIBE/UNSUBSCRIBE filter; returns whether it is a shared subscription.
fn check_filter(filter: &str) -> Result<bool, DecodeError> {
    match topic::parse_shared(filter) {
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(DecodeError::TopicFilterInvalid(e)),
        None if topic::valid_topic_filter(filter) => Ok(false),
        None => Err(DecodeError::TopicFilterInvalid("invalid topic filter")),
    }
}

fn suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut ack = SubAck {
        packet_id,
        codes: Vec::new(),
        reason_string: None,
        user_properties: Vec::new(),
    };
    if v5 {
        ack_properties(r, &mut ack.reason_string, &mut ack.user_properties)?;
    }
    while !r.is_empty() {
        let code = if v5 {
            reason_code(r, SUBACK_CODES)?
        } else {
            match r.u8()? {
                0x00 => ReasonCode::Success,
                0x01 => ReasonCode::GrantedQoS1,
                0x02 => ReasonCode::GrantedQoS2,
                0x80 => ReasonCode::UnspecifiedError,
                _ => return Err(DecodeError::Malformed("invalid SUBACK return code")),
            }
        };
        ack.codes.push(code);
    }
    if ack.codes.is_empty() {
        return Err(DecodeError::Protocol("SUBACK without return codes"));
    }
    Ok(ack)
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut user_properties = Vec::new();
    if v5 {
        read_properties(r, &props::UNSUBSCRIBE, |id, value| {
            match (id, value) {
                (props::USER_PROPERTY, Prop::Pair(k, v)) => user_properties.push((k, v)),
                _ => return Err(unexpected()),
            }
            Ok(())
        })?;
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        check_filter(&filter)?;
        filters.push(filter);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        user_properties,
    })
}

fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut ack = UnsubAck {
        packet_id,
        codes: Vec::new(),
        reason_string: None,
        user_properties: Vec::new(),
    };
    // 3.1.1 UNSUBACK is just the packet identifier.
    if v5 {
        ack_properties(r, &mut ack.reason_string, &mut ack.user_properties)?;
        while !r.is_empty() {
            ack.codes.push(reason_code(r, UNSUBACK_CODES)?);
        }
        if ack.codes.is_empty() {
            return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
        }
    }
    Ok(ack)
}

fn disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::default();
    // 3.1.1 DISCONNECT has no body; 5.0 may omit code and properties.
    if v5 && !r.is_empty() {
        d.code = reason_code(r, DISCONNECT_CODES)?;
        if !r.is_empty() {
            read_properties(r, &props::DISCONNECT, |id, value| {
                match (id, value) {
                    (props::SESSION_EXPIRY_INTERVAL, Prop::U32(v)) => {
                        d.session_expiry_interval = Some(v);
                    }
                    (props::REASON_STRING, Prop::Str(v)) => d.reason_string = Some(v),
                    (props::SERVER_REFERENCE, Prop::Str(v)) => d.server_reference = Some(v),
                    (props::USER_PROPERTY, Prop::Pair(k, v)) => d.user_properties.push((k, v)),
                    _ => return Err(unexpected()),
                }
                Ok(())
            })?;
        }
    }
    Ok(d)
}

fn auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut a = Auth {
        code: ReasonCode::Success,
        authentication_method: None,
        authentication_data: None,
        reason_string: None,
        user_properties: Vec::new(),
    };
    // Remaining length 0 means Success without properties.
    if !r.is_empty() {
        a.code = reason_code(r, AUTH_CODES)?;
        if !r.is_empty() {
            read_properties(r, &props::AUTH, |id, value| {
                match (id, value) {
                    (props::AUTHENTICATION_METHOD, Prop::Str(v)) => {
                        a.authentication_method = Some(v);
                    }
                    (props::AUTHENTICATION_DATA, Prop::Bin(v)) => a.authentication_data = Some(v),
                    (props::REASON_STRING, Prop::Str(v)) => a.reason_string = Some(v),
                    (props::USER_PROPERTY, Prop::Pair(k, v)) => a.user_properties.push((k, v)),
                    _ => return Err(unexpected()),
                }
                Ok(())
            })?;
        }
    }
    Ok(a)
}
