//! Every invalid input the codec must refuse, with the error class it must report.

use bytes::BytesMut;

use super::MAX;
use crate::ProtocolVersion::{V5, V311};
use crate::{DecodeError, ProtocolVersion, ReasonCode, decode, decode_connect};

#[track_caller]
fn bad(bytes: &[u8], v: ProtocolVersion, expected: ReasonCode) {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, v, MAX) {
        Err(e) => assert_eq!(e.reason_code(), expected, "{bytes:02x?} gave {e:?}"),
        Ok(p) => panic!("{bytes:02x?} ({v:?}) decoded to {p:?}"),
    }
}

/// Malformed under both versions.
#[track_caller]
fn bad_both(bytes: &[u8], expected: ReasonCode) {
    bad(bytes, V311, expected);
    bad(bytes, V5, expected);
}

const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;
const PROTOCOL: ReasonCode = ReasonCode::ProtocolError;

#[test]
fn remaining_length_longer_than_four_bytes() {
    bad_both(b"\x30\xff\xff\xff\xff\x7f", MALFORMED);
    // Detected before the body arrives.
    bad_both(b"\x30\x80\x80\x80\x80", MALFORMED);
}

#[test]
fn packet_too_large_is_refused_before_the_body_arrives() {
    let mut buf = BytesMut::from(&b"\x30\xff\xff\xff\x7f"[..]);
    assert_eq!(
        decode(&mut buf, V311, 1024),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_455 + 5,
            max: 1024
        })
    );
    // The limit counts the whole packet: 2 header bytes + 3 body bytes.
    let mut buf = BytesMut::from(&b"\x30\x03\x00\x01t"[..]);
    assert!(matches!(
        decode(&mut buf, V311, 4),
        Err(DecodeError::PacketTooLarge { size: 5, max: 4 })
    ));
    let mut buf = BytesMut::from(&b"\x30\x03\x00\x01t"[..]);
    assert!(decode(&mut buf, V311, 5).unwrap().is_some());
}

#[test]
fn incomplete_input_consumes_nothing() {
    for bytes in [
        &b""[..],
        b"\x30",
        b"\x30\x80",
        b"\x30\x05\x00\x03",
        b"\x10\x0f\x00\x04MQTT",
    ] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, V5, MAX), Ok(None));
        assert_eq!(&buf[..], bytes);
    }
}

#[test]
fn reserved_fixed_header_flags() {
    bad_both(b"\x60\x02\x00\x01", MALFORMED); // PUBREL must be 0b0010
    bad_both(b"\x80\x06\x00\x01\x00\x01a\x00", MALFORMED); // SUBSCRIBE
    bad_both(b"\xa0\x05\x00\x01\x00\x01a", MALFORMED); // UNSUBSCRIBE
    bad_both(b"\x41\x02\x00\x01", MALFORMED);
    bad_both(b"\x52\x02\x00\x01", MALFORMED);
    bad_both(b"\x72\x02\x00\x01", MALFORMED);
    bad_both(b"\xc1\x00", MALFORMED);
    bad_both(b"\xd8\x00", MALFORMED);
    bad_both(b"\xe2\x00", MALFORMED);
    bad_both(b"\x21\x02\x00\x00", MALFORMED);
    bad_both(b"\x92\x03\x00\x01\x00", MALFORMED);
    bad_both(b"\xb2\x02\x00\x01", MALFORMED);
    bad_both(b"\x11\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c", MALFORMED);
    bad(b"\xf1\x00", V5, MALFORMED);
}

#[test]
fn reserved_packet_types() {
    bad_both(b"\x00\x00", MALFORMED);
    // AUTH does not exist in 3.1.1.
    bad(b"\xf0\x00", V311, MALFORMED);
}

#[test]
fn publish_qos_3() {
    bad(b"\x36\x05\x00\x01t\x00\x01", V311, MALFORMED);
    bad(b"\x36\x06\x00\x01t\x00\x01\x00", V5, MALFORMED);
}

#[test]
fn dup_with_qos_0() {
    bad(b"\x38\x03\x00\x01t", V311, MALFORMED);
    bad(b"\x38\x04\x00\x01t\x00", V5, PROTOCOL);
}

#[test]
fn packet_id_zero() {
    bad(b"\x32\x05\x00\x01t\x00\x00", V311, PROTOCOL);
    bad(b"\x32\x06\x00\x01t\x00\x00\x00", V5, PROTOCOL);
    bad(b"\x82\x06\x00\x00\x00\x01a\x00", V311, PROTOCOL);
    bad(b"\x82\x07\x00\x00\x00\x00\x01a\x00", V5, PROTOCOL);
    bad(b"\xa2\x05\x00\x00\x00\x01a", V311, PROTOCOL);
    bad(b"\xa2\x06\x00\x00\x00\x00\x01a", V5, PROTOCOL);
    bad_both(b"\x40\x02\x00\x00", PROTOCOL);
    bad_both(b"\x62\x02\x00\x00", PROTOCOL);
}

#[test]
fn empty_subscribe_and_unsubscribe() {
    bad(b"\x82\x02\x00\x01", V311, PROTOCOL);
    bad(b"\x82\x03\x00\x01\x00", V5, PROTOCOL);
    bad(b"\xa2\x02\x00\x01", V311, PROTOCOL);
    bad(b"\xa2\x03\x00\x01\x00", V5, PROTOCOL);
    bad(b"\x90\x02\x00\x01", V311, PROTOCOL);
    bad(b"\xb0\x03\x00\x01\x00", V5, PROTOCOL);
}

#[test]
fn connect_protocol_name_and_level() {
    let cases: [(&[u8], u8); 5] = [
        (b"\x10\x0d\x00\x04MQTX\x04\x02\x00\x3c\x00\x01c", 4),
        (b"\x10\x0d\x00\x04MQTT\x03\x02\x00\x3c\x00\x01c", 3),
        (b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x01c", 6),
        (b"\x10\x0f\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x01c", 4),
        (b"\x10\x0d\x00\x04mqtt\x04\x02\x00\x3c\x00\x01c", 4),
    ];
    for (bytes, level) in cases {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(
            decode_connect(&mut buf, MAX),
            Err(DecodeError::UnsupportedProtocolVersion(level)),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn connect_flags() {
    // Reserved bit 0.
    bad_both(b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01c", MALFORMED);
    // Will QoS without will flag, will retain without will flag.
    bad_both(b"\x10\x0d\x00\x04MQTT\x04\x0a\x00\x3c\x00\x01c", MALFORMED);
    bad_both(b"\x10\x0d\x00\x04MQTT\x04\x22\x00\x3c\x00\x01c", MALFORMED);
    // Will QoS 3.
    bad_both(
        b"\x10\x12\x00\x04MQTT\x04\x1e\x00\x3c\x00\x01c\x00\x01t\x00\x00",
        MALFORMED,
    );
    // Password without user name: malformed in 3.1.1, allowed in 5.0.
    bad_both(
        b"\x10\x0f\x00\x04MQTT\x04\x42\x00\x3c\x00\x01c\x00\x00",
        MALFORMED,
    );
    let mut buf = BytesMut::from(&b"\x10\x10\x00\x04MQTT\x05\x42\x00\x3c\x00\x00\x01c\x00\x00"[..]);
    assert!(decode_connect(&mut buf, MAX).unwrap().is_some());
    // Will topic with a wildcard.
    bad_both(
        b"\x10\x12\x00\x04MQTT\x04\x06\x00\x3c\x00\x01c\x00\x01#\x00\x00",
        ReasonCode::TopicNameInvalid,
    );
}

#[test]
fn first_packet_must_be_connect() {
    for bytes in [&b"\xc0\x00"[..], b"\x30\x03\x00\x01t", b"\x20"] {
        let mut buf = BytesMut::from(bytes);
        assert!(matches!(
            decode_connect(&mut buf, MAX),
            Err(DecodeError::Protocol(_))
        ));
    }
    let mut buf = BytesMut::new();
    assert_eq!(decode_connect(&mut buf, MAX), Ok(None));
}

#[test]
fn invalid_utf8() {
    // Client id 0xff.
    bad_both(
        b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01\xff",
        MALFORMED,
    );
    // U+0000 in a topic.
    bad_both(b"\x30\x05\x00\x03a\x00b", MALFORMED);
    // An encoded surrogate (U+D800).
    bad_both(b"\x30\x05\x00\x03\xed\xa0\x80", MALFORMED);
    // In a user property.
    bad(
        b"\x30\x0b\x00\x01t\x07\x26\x00\x01\xc0\x00\x01v",
        V5,
        MALFORMED,
    );
    // In a topic filter.
    bad(b"\x82\x06\x00\x01\x00\x01\xff\x00", V311, MALFORMED);
}

#[test]
fn subscription_options() {
    // 3.1.1: upper six bits of the requested QoS byte must be 0.
    bad(b"\x82\x06\x00\x01\x00\x01a\x04", V311, MALFORMED);
    bad(b"\x82\x06\x00\x01\x00\x01a\x03", V311, MALFORMED);
    // 5.0: bits 6 and 7 reserved, QoS 3, retain handling 3.
    bad(b"\x82\x07\x00\x01\x00\x00\x01a\x40", V5, MALFORMED);
    bad(b"\x82\x07\x00\x01\x00\x00\x01a\x03", V5, MALFORMED);
    bad(b"\x82\x07\x00\x01\x00\x00\x01a\x30", V5, PROTOCOL);
    // No local on a shared subscription.
    bad(b"\x82\x10\x00\x01\x00\x00\x0a$share/g/a\x04", V5, PROTOCOL);
    // Missing options byte.
    bad(b"\x82\x05\x00\x01\x00\x01a", V311, MALFORMED);
}

#[test]
fn unknown_or_misplaced_reason_codes() {
    bad(b"\x40\x03\x00\x01\x05", V5, MALFORMED); // 0x05 is not a reason code
    bad(b"\x62\x03\x00\x01\x10", V5, MALFORMED); // not a PUBREL code
    bad(b"\x70\x03\x00\x01\x80", V5, MALFORMED); // not a PUBCOMP code
    bad(b"\xe0\x01\x01", V5, MALFORMED);
    bad(b"\xf0\x01\x01", V5, MALFORMED);
    bad(b"\x20\x03\x00\x01\x00", V5, MALFORMED);
    bad(b"\x90\x04\x00\x01\x00\x03", V5, MALFORMED);
    bad(b"\xb0\x04\x00\x01\x00\x01", V5, MALFORMED);
    // 3.1.1 return codes.
    bad(b"\x20\x02\x00\x06", V311, MALFORMED);
    bad(b"\x90\x03\x00\x01\x03", V311, MALFORMED);
    bad(b"\x90\x03\x00\x01\x81", V311, MALFORMED);
}

#[test]
fn topic_names_in_publish() {
    bad(b"\x30\x05\x00\x03a/+", V311, ReasonCode::TopicNameInvalid);
    bad(b"\x30\x06\x00\x03a/#\x00", V5, ReasonCode::TopicNameInvalid);
    bad(b"\x30\x02\x00\x00", V311, ReasonCode::TopicNameInvalid);
    // 5.0: empty topic only with a topic alias.
    bad(b"\x30\x03\x00\x00\x00", V5, PROTOCOL);
}

#[test]
fn topic_filters_in_subscribe_and_unsubscribe() {
    bad(
        b"\x82\x07\x00\x01\x00\x02a#\x00",
        V311,
        ReasonCode::TopicFilterInvalid,
    );
    bad(
        b"\x82\x08\x00\x01\x00\x00\x02a#\x00",
        V5,
        ReasonCode::TopicFilterInvalid,
    );
    bad(
        b"\x82\x05\x00\x01\x00\x00\x00",
        V311,
        ReasonCode::TopicFilterInvalid,
    );
    bad(
        b"\x82\x0e\x00\x01\x00\x09$share//a\x00",
        V311,
        ReasonCode::TopicFilterInvalid,
    );
    bad(
        b"\xa2\x09\x00\x01\x00\x05a/#/b",
        V311,
        ReasonCode::TopicFilterInvalid,
    );
    bad(
        b"\xa2\x0a\x00\x01\x00\x00\x05a/#/b",
        V5,
        ReasonCode::TopicFilterInvalid,
    );
}

#[test]
fn trailing_bytes() {
    bad(b"\x40\x03\x00\x01\x00", V311, MALFORMED);
    bad_both(b"\xc0\x01\x00", MALFORMED);
    bad_both(b"\xd0\x01\x00", MALFORMED);
    bad(b"\x20\x03\x00\x00\x00", V311, MALFORMED);
    bad(b"\x20\x04\x00\x00\x00\x00", V5, MALFORMED);
    bad(b"\xe0\x01\x00", V311, MALFORMED);
    bad(b"\xe0\x03\x00\x00\x00", V5, MALFORMED);
    bad(b"\xb0\x03\x00\x01\x00", V311, MALFORMED);
    bad(b"\x40\x05\x00\x01\x00\x00\x00", V5, MALFORMED);
    bad_both(
        b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c\x00",
        MALFORMED,
    );
}

#[test]
fn short_fields() {
    bad_both(b"\x40\x01\x00", MALFORMED);
    bad_both(b"\x30\x03\x00\x05a", MALFORMED);
    bad_both(b"\x32\x04\x00\x01t\x00", MALFORMED);
    bad(b"\x20\x01\x00", V311, MALFORMED);
    bad(b"\x20\x02\x00\x00", V5, MALFORMED); // 5.0 CONNACK needs a property length
    bad_both(b"\x10\x04\x00\x04MQ", MALFORMED);
}

#[test]
fn property_errors() {
    // Unknown identifier 0x05.
    bad(b"\x30\x06\x00\x01t\x02\x05\x00", V5, MALFORMED);
    // Identifier with the continuation bit: unknown.
    bad(b"\x30\x06\x00\x01t\x02\x81\x00", V5, MALFORMED);
    // Payload format indicator twice.
    bad(b"\x30\x08\x00\x01t\x04\x01\x00\x01\x00", V5, PROTOCOL);
    // Session expiry interval is not a PUBLISH property.
    bad(b"\x30\x09\x00\x01t\x05\x11\x00\x00\x00\x01", V5, PROTOCOL);
    // Property length beyond the packet.
    bad(b"\x30\x05\x00\x01t\x05\x01", V5, MALFORMED);
    // Property value cut short by the property length.
    bad(b"\x30\x07\x00\x01t\x02\x23\x00\x01", V5, MALFORMED);
    // Subscription identifier twice in SUBSCRIBE (allowed only in PUBLISH).
    bad(
        b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00",
        V5,
        PROTOCOL,
    );
    // Subscription identifier 0.
    bad(b"\x82\x09\x00\x01\x02\x0b\x00\x00\x01a\x00", V5, PROTOCOL);
    // Payload format indicator 2.
    bad(b"\x30\x06\x00\x01t\x02\x01\x02", V5, PROTOCOL);
    // Topic alias 0.
    bad(b"\x30\x07\x00\x01t\x03\x23\x00\x00", V5, PROTOCOL);
    // Receive maximum 0 in CONNECT.
    bad(
        b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x03\x21\x00\x00\x00\x00",
        V5,
        PROTOCOL,
    );
    // Reason string twice in PUBACK.
    bad(
        b"\x40\x0c\x00\x01\x00\x08\x1f\x00\x01a\x1f\x00\x01b",
        V5,
        PROTOCOL,
    );
    // A user property may repeat; reason string after it is fine.
    let mut buf = BytesMut::from(
        &b"\x40\x14\x00\x01\x00\x10\x26\x00\x01a\x00\x00\x26\x00\x01a\x00\x00\x1f\x00\x01b"[..],
    );
    assert!(decode(&mut buf, V5, MAX).unwrap().is_some());
}

#[test]
fn errors_carry_reason_codes() {
    assert_eq!(
        DecodeError::Malformed("x").reason_code(),
        ReasonCode::MalformedPacket
    );
    assert_eq!(
        DecodeError::UnsupportedProtocolVersion(9).reason_code(),
        ReasonCode::UnsupportedProtocolVersion
    );
}
