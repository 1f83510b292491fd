//! Byte vectors written by hand from the 3.1.1 and 5.0 specifications.

use bytes::Bytes;

use super::{decode_one, encode_vec};
use crate::ProtocolVersion::{V5, V310, V311};
use crate::*;

/// The vector decodes to `packet` and `packet` encodes to the vector.
#[track_caller]
fn kat(bytes: &[u8], v: ProtocolVersion, packet: Packet) {
    assert_eq!(
        decode_one(bytes, v).as_ref(),
        Ok(&packet),
        "decode {bytes:02x?}"
    );
    assert_eq!(encode_vec(&packet, v), bytes, "encode {packet:?}");
}

/// Non-canonical vectors: they decode to `packet`, which encodes differently.
#[track_caller]
fn decodes_to(bytes: &[u8], v: ProtocolVersion, packet: Packet) {
    assert_eq!(
        decode_one(bytes, v).as_ref(),
        Ok(&packet),
        "decode {bytes:02x?}"
    );
}

fn connect(protocol: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn publish(
    qos: QoS,
    topic: &'static str,
    packet_id: Option<u16>,
    payload: &'static [u8],
) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: Bytes::from_static(topic.as_bytes()),
        packet_id,
        payload: Bytes::from_static(payload),
        properties: PublishProperties::default(),
    }
}

fn pair(k: &str, v: &str) -> UserProperty {
    (k.into(), v.into())
}

#[test]
fn connect_v311_minimal() {
    kat(
        b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc",
        V311,
        Packet::Connect(Box::new(connect(V311, "abc"))),
    );
}

#[test]
fn connect_v311_will_user_password() {
    let mut c = connect(V311, "c");
    c.keep_alive = 10;
    c.will = Some(Will {
        topic: "t".into(),
        payload: Bytes::from_static(b"hi"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    c.username = Some("u".into());
    c.password = Some(Bytes::from_static(b"p"));
    kat(
        b"\x10\x1a\x00\x04MQTT\x04\xee\x00\x0a\x00\x01c\x00\x01t\x00\x02hi\x00\x01u\x00\x01p",
        V311,
        Packet::Connect(Box::new(c)),
    );
}

#[test]
fn connect_v31() {
    kat(
        b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01x",
        V310,
        Packet::Connect(Box::new(connect(V310, "x"))),
    );
}

#[test]
fn connect_is_decoded_whatever_the_version() {
    let bytes = b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc";
    assert_eq!(
        decode_one(bytes, V5),
        Ok(Packet::Connect(Box::new(connect(V311, "abc"))))
    );
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let d = decode_connect(&mut buf, 1024).unwrap().unwrap();
    assert_eq!(d.packet, Packet::Connect(Box::new(connect(V311, "abc"))));
}

#[test]
fn connect_v5_properties() {
    let mut c = connect(V5, "c");
    c.properties.session_expiry_interval = Some(10);
    kat(
        b"\x10\x13\x00\x04MQTT\x05\x02\x00\x3c\x05\x11\x00\x00\x00\x0a\x00\x01c",
        V5,
        Packet::Connect(Box::new(c)),
    );
}

#[test]
fn connect_v5_will_properties_and_password_only() {
    let mut c = connect(V5, "");
    c.clean_start = false;
    c.will = Some(Will {
        topic: "w".into(),
        payload: Bytes::new(),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(5),
            ..Default::default()
        },
    });
    // 5.0 allows a password without a user name.
    c.password = Some(Bytes::from_static(b"pw"));
    // flags: password 0x40 | will QoS 2 0x10 | will 0x04 = 0x54.
    kat(
        b"\x10\x1c\x00\x04MQTT\x05\x54\x00\x3c\x00\x00\x00\x05\x18\x00\x00\x00\x05\x00\x01w\x00\x00\x00\x02pw",
        V5,
        Packet::Connect(Box::new(c)),
    );
}

#[test]
fn connack() {
    let ok = ConnAck {
        session_present: true,
        code: ReasonCode::Success,
        properties: ConnAckProperties::default(),
    };
    kat(b"\x20\x02\x01\x00", V311, Packet::ConnAck(ok.clone()));
    kat(b"\x20\x03\x01\x00\x00", V5, Packet::ConnAck(ok));
    let refused = ConnAck {
        session_present: false,
        code: ReasonCode::NotAuthorized,
        properties: ConnAckProperties::default(),
    };
    kat(b"\x20\x02\x00\x05", V311, Packet::ConnAck(refused.clone()));
    kat(b"\x20\x03\x00\x87\x00", V5, Packet::ConnAck(refused));
    let with_props = ConnAck {
        session_present: false,
        code: ReasonCode::Success,
        properties: ConnAckProperties {
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            ..Default::default()
        },
    };
    kat(
        b"\x20\x07\x00\x00\x04\x24\x01\x25\x00",
        V5,
        Packet::ConnAck(with_props),
    );
}

#[test]
fn connack_v311_maps_codes() {
    let busy = ConnAck {
        session_present: false,
        code: ReasonCode::ServerBusy,
        properties: ConnAckProperties::default(),
    };
    assert_eq!(
        encode_vec(&Packet::ConnAck(busy), V311),
        b"\x20\x02\x00\x03"
    );
}

#[test]
fn publish_v311() {
    kat(
        b"\x30\x07\x00\x03a/bhi",
        V311,
        Packet::Publish(publish(QoS::AtMostOnce, "a/b", None, b"hi")),
    );
    let mut p = publish(QoS::AtLeastOnce, "t", Some(10), b"hi");
    p.dup = true;
    p.retain = true;
    kat(b"\x3b\x07\x00\x01t\x00\x0ahi", V311, Packet::Publish(p));
    kat(
        b"\x30\x03\x00\x01t",
        V311,
        Packet::Publish(publish(QoS::AtMostOnce, "t", None, b"")),
    );
}

#[test]
fn publish_v5() {
    kat(
        b"\x30\x08\x00\x03a/b\x00hi",
        V5,
        Packet::Publish(publish(QoS::AtMostOnce, "a/b", None, b"hi")),
    );
    let mut p = publish(QoS::ExactlyOnce, "t", Some(5), b"x");
    p.properties = PublishProperties {
        payload_format_indicator: Some(1),
        topic_alias: Some(7),
        user_properties: vec![pair("k", "v")],
        subscription_identifiers: vec![129, 2],
        ..Default::default()
    };
    kat(
        b"\x34\x18\x00\x01t\x00\x05\x11\x01\x01\x23\x00\x07\x26\x00\x01k\x00\x01v\x0b\x81\x01\x0b\x02x",
        V5,
        Packet::Publish(p),
    );
}

#[test]
fn publish_v5_empty_topic_with_alias() {
    let mut p = publish(QoS::AtMostOnce, "", None, b"");
    p.properties.topic_alias = Some(1);
    kat(b"\x30\x06\x00\x00\x03\x23\x00\x01", V5, Packet::Publish(p));
}

#[test]
fn publish_is_zero_copy() {
    let mut buf = bytes::BytesMut::from(&b"\x30\x07\x00\x03a/bhi\xc0"[..]);
    let start = buf.as_ptr() as usize;
    let d = decode(&mut buf, V311, 1024).unwrap().unwrap();
    let Packet::Publish(p) = d.packet else {
        panic!("not a publish")
    };
    assert_eq!(p.topic.as_ptr() as usize, start + 4);
    assert_eq!(p.payload.as_ptr() as usize, start + 7);
    assert_eq!(&buf[..], b"\xc0");
}

#[test]
fn pub_responses() {
    kat(
        b"\x40\x02\x00\x07",
        V311,
        Packet::PubAck(PubResp::new(7, ReasonCode::Success)),
    );
    kat(
        b"\x50\x02\x00\x07",
        V311,
        Packet::PubRec(PubResp::new(7, ReasonCode::Success)),
    );
    kat(
        b"\x62\x02\x00\x07",
        V311,
        Packet::PubRel(PubResp::new(7, ReasonCode::Success)),
    );
    kat(
        b"\x70\x02\x00\x07",
        V311,
        Packet::PubComp(PubResp::new(7, ReasonCode::Success)),
    );
    // 5.0 short form: Success without properties is just the packet id.
    kat(
        b"\x40\x02\x00\x07",
        V5,
        Packet::PubAck(PubResp::new(7, ReasonCode::Success)),
    );
    kat(
        b"\x50\x02\x00\x07",
        V5,
        Packet::PubRec(PubResp::new(7, ReasonCode::Success)),
    );
    kat(
        b"\x62\x02\x00\x07",
        V5,
        Packet::PubRel(PubResp::new(7, ReasonCode::Success)),
    );
    kat(
        b"\x70\x02\x00\x07",
        V5,
        Packet::PubComp(PubResp::new(7, ReasonCode::Success)),
    );
    kat(
        b"\x40\x03\x00\x07\x10",
        V5,
        Packet::PubAck(PubResp::new(7, ReasonCode::NoMatchingSubscribers)),
    );
    kat(
        b"\x62\x03\x00\x07\x92",
        V5,
        Packet::PubRel(PubResp::new(7, ReasonCode::PacketIdentifierNotFound)),
    );
    let mut r = PubResp::new(7, ReasonCode::NotAuthorized);
    r.reason_string = Some("x".into());
    kat(
        b"\x50\x08\x00\x07\x87\x04\x1f\x00\x01x",
        V5,
        Packet::PubRec(r),
    );
    // Long forms of Success are accepted too.
    decodes_to(
        b"\x40\x03\x00\x07\x00",
        V5,
        Packet::PubAck(PubResp::new(7, ReasonCode::Success)),
    );
    decodes_to(
        b"\x70\x04\x00\x07\x00\x00",
        V5,
        Packet::PubComp(PubResp::new(7, ReasonCode::Success)),
    );
}

#[test]
fn pub_response_v311_drops_code_and_properties() {
    let mut r = PubResp::new(7, ReasonCode::NotAuthorized);
    r.user_properties.push(pair("a", "b"));
    assert_eq!(encode_vec(&Packet::PubAck(r), V311), b"\x40\x02\x00\x07");
}

#[test]
fn subscribe() {
    let s = Subscribe {
        packet_id: 1,
        filters: vec![
            (
                "a/#".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            ),
            (
                "+".into(),
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..Default::default()
                },
            ),
        ],
        subscription_identifier: None,
        user_properties: vec![],
    };
    kat(
        b"\x82\x0c\x00\x01\x00\x03a/#\x01\x00\x01+\x02",
        V311,
        Packet::Subscribe(s),
    );
    let s = Subscribe {
        packet_id: 1,
        filters: vec![(
            "a".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
        subscription_identifier: Some(5),
        user_properties: vec![],
    };
    kat(
        b"\x82\x09\x00\x01\x02\x0b\x05\x00\x01a\x2d",
        V5,
        Packet::Subscribe(s),
    );
}

#[test]
fn suback() {
    let a = SubAck {
        packet_id: 1,
        codes: vec![ReasonCode::Success, ReasonCode::UnspecifiedError],
        reason_string: None,
        user_properties: vec![],
    };
    kat(b"\x90\x04\x00\x01\x00\x80", V311, Packet::SubAck(a));
    let a = SubAck {
        packet_id: 1,
        codes: vec![ReasonCode::GrantedQoS1, ReasonCode::QuotaExceeded],
        reason_string: None,
        user_properties: vec![],
    };
    kat(
        b"\x90\x05\x00\x01\x00\x01\x97",
        V5,
        Packet::SubAck(a.clone()),
    );
    // 3.1.1 has one failure code.
    assert_eq!(
        encode_vec(&Packet::SubAck(a), V311),
        b"\x90\x04\x00\x01\x01\x80"
    );
}

#[test]
fn unsubscribe_and_unsuback() {
    let u = Unsubscribe {
        packet_id: 2,
        filters: vec!["a".into()],
        user_properties: vec![],
    };
    kat(
        b"\xa2\x05\x00\x02\x00\x01a",
        V311,
        Packet::Unsubscribe(u.clone()),
    );
    kat(b"\xa2\x06\x00\x02\x00\x00\x01a", V5, Packet::Unsubscribe(u));
    let a = UnsubAck {
        packet_id: 2,
        codes: vec![],
        reason_string: None,
        user_properties: vec![],
    };
    kat(b"\xb0\x02\x00\x02", V311, Packet::UnsubAck(a));
    let a = UnsubAck {
        packet_id: 2,
        codes: vec![ReasonCode::NoSubscriptionExisted],
        reason_string: None,
        user_properties: vec![],
    };
    kat(b"\xb0\x04\x00\x02\x00\x11", V5, Packet::UnsubAck(a.clone()));
    // 3.1.1 UNSUBACK has no payload.
    assert_eq!(encode_vec(&Packet::UnsubAck(a), V311), b"\xb0\x02\x00\x02");
}

#[test]
fn ping() {
    for v in [V311, V5] {
        kat(b"\xc0\x00", v, Packet::PingReq);
        kat(b"\xd0\x00", v, Packet::PingResp);
    }
}

#[test]
fn disconnect() {
    kat(b"\xe0\x00", V311, Packet::Disconnect(Disconnect::default()));
    kat(b"\xe0\x00", V5, Packet::Disconnect(Disconnect::default()));
    let with_will = Disconnect {
        code: ReasonCode::DisconnectWithWill,
        ..Default::default()
    };
    kat(b"\xe0\x01\x04", V5, Packet::Disconnect(with_will.clone()));
    assert_eq!(
        encode_vec(&Packet::Disconnect(with_will), V311),
        b"\xe0\x00"
    );
    let expiry = Disconnect {
        session_expiry_interval: Some(60),
        ..Default::default()
    };
    kat(
        b"\xe0\x07\x00\x05\x11\x00\x00\x00\x3c",
        V5,
        Packet::Disconnect(expiry),
    );
    decodes_to(
        b"\xe0\x02\x00\x00",
        V5,
        Packet::Disconnect(Disconnect::default()),
    );
}

#[test]
fn auth() {
    let ok = Auth {
        code: ReasonCode::Success,
        authentication_method: None,
        authentication_data: None,
        reason_string: None,
        user_properties: vec![],
    };
    kat(b"\xf0\x00", V5, Packet::Auth(ok.clone()));
    let cont = Auth {
        code: ReasonCode::ContinueAuthentication,
        authentication_method: Some("m".into()),
        authentication_data: Some(Bytes::from_static(b"d")),
        ..ok.clone()
    };
    kat(
        b"\xf0\x0a\x18\x08\x15\x00\x01m\x16\x00\x01d",
        V5,
        Packet::Auth(cont),
    );
    // AUTH has no 3.1.1 form.
    assert_eq!(encode_vec(&Packet::Auth(ok), V311), b"");
}

#[test]
fn user_properties_keep_order_and_duplicates() {
    let mut p = publish(QoS::AtMostOnce, "t", None, b"");
    p.properties.user_properties = vec![pair("b", "1"), pair("a", "2"), pair("b", "1")];
    let bytes = encode_vec(&Packet::Publish(p.clone()), V5);
    assert_eq!(decode_one(&bytes, V5), Ok(Packet::Publish(p)));
}

#[test]
fn all_connack_properties_round_trip() {
    let a = ConnAck {
        session_present: false,
        code: ReasonCode::Success,
        properties: ConnAckProperties {
            session_expiry_interval: Some(1),
            receive_maximum: Some(2),
            maximum_qos: Some(QoS::AtMostOnce),
            retain_available: Some(true),
            maximum_packet_size: Some(3),
            assigned_client_identifier: Some("id".into()),
            topic_alias_maximum: Some(4),
            reason_string: Some("why".into()),
            user_properties: vec![pair("k", "v")],
            wildcard_subscription_available: Some(false),
            subscription_identifiers_available: Some(true),
            shared_subscription_available: Some(false),
            server_keep_alive: Some(5),
            response_information: Some("ri".into()),
            server_reference: Some("sr".into()),
            authentication_method: Some("am".into()),
            authentication_data: Some(Bytes::from_static(b"ad")),
        },
    };
    let bytes = encode_vec(&Packet::ConnAck(a.clone()), V5);
    assert_eq!(decode_one(&bytes, V5), Ok(Packet::ConnAck(a)));
}

#[test]
fn four_byte_remaining_length() {
    // 2,097,152 bytes of remaining length need a four-byte varint.
    let payload = vec![7u8; 2_097_152 - 3];
    let p = Publish {
        payload: Bytes::from(payload),
        ..publish(QoS::AtMostOnce, "t", None, b"")
    };
    let bytes = encode_vec(&Packet::Publish(p.clone()), V311);
    assert_eq!(&bytes[..5], b"\x30\x80\x80\x80\x01");
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let d = decode(&mut buf, V311, 4 << 20).unwrap().unwrap();
    assert_eq!(d.packet, Packet::Publish(p));
    assert_eq!(d.wire_len, 2_097_152 + 5);
}
