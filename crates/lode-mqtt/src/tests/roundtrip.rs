//! Round-trip and robustness property tests.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::{MAX, decode_one, encode_vec};
use crate::ProtocolVersion::{V5, V310, V311};
use crate::decode::{
    AUTH_CODES, CONNACK_CODES, DISCONNECT_CODES, PUBACK_CODES, PUBREL_CODES, SUBACK_CODES,
    UNSUBACK_CODES,
};
use crate::*;

fn string() -> impl Strategy<Value = String> {
    // Any non-control character: valid UTF-8 and never U+0000.
    "\\PC{0,6}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-z$]{1,4}(/[a-z0-9]{0,4}){0,3}"
}

fn topic_filter() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("#".to_owned()),
        "([a-z]{1,3}|\\+)(/([a-z]{0,3}|\\+)){0,3}(/#)?",
        "\\$share/[a-z]{1,3}/[a-z]{1,3}(/\\+)?",
    ]
}

fn bin() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..8).prop_map(Bytes::from)
}

fn users() -> impl Strategy<Value = Vec<UserProperty>> {
    vec((string(), string()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn code(allowed: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(allowed).prop_map(|b| ReasonCode::from_u8(b).unwrap_or_default())
}

fn nonzero_u16() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(nonzero_u16()),
            option::of(1..=u32::MAX),
        ),
        (
            option::of(any::<u16>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
        ),
        (users(), option::of(string()), option::of(bin())),
    )
        .prop_map(
            |((sei, rm, mps), (tam, rri, rpi), (up, am, ad))| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: up,
                authentication_method: am,
                authentication_data: ad,
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(0..=1u8),
            option::of(any::<u32>()),
        ),
        (
            option::of(string()),
            option::of(topic_name()),
            option::of(bin()),
            users(),
        ),
    )
        .prop_map(|((wdi, pfi, mei), (ct, rt, cd, up))| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        })
}

fn connect(v5: bool) -> impl Strategy<Value = Packet> {
    let protocol = if v5 {
        Just(V5).boxed()
    } else {
        prop_oneof![Just(V311), Just(V310)].boxed()
    };
    let will = (topic_name(), bin(), qos(), any::<bool>(), will_properties()).prop_map(
        move |(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties: if v5 {
                properties
            } else {
                WillProperties::default()
            },
        },
    );
    (
        protocol,
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of(will),
        option::of(string()),
        option::of(bin()),
        connect_properties(),
    )
        .prop_map(
            move |(protocol, clean_start, keep_alive, client_id, will, username, password, p)| {
                // 3.1.1 forbids a password without a user name.
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: if v5 { p } else { ConnectProperties::default() },
                }))
            },
        )
}

fn connack(v5: bool) -> impl Strategy<Value = Packet> {
    let props = (
        (option::of(any::<u32>()), option::of(nonzero_u16())),
        (
            option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
            option::of(any::<bool>()),
        ),
        (
            option::of(1..=u32::MAX),
            option::of(string()),
            option::of(any::<u16>()),
        ),
        (option::of(string()), users(), option::of(any::<bool>())),
        (
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<u16>()),
        ),
        (
            option::of(string()),
            option::of(string()),
            option::of(string()),
            option::of(bin()),
        ),
    )
        .prop_map(
            |(
                (sei, rm),
                (mq, ra),
                (mps, aci, tam),
                (rs, up, wsa),
                (sia, ssa, ska),
                (ri, sr, am, ad),
            )| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: up,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        );
    let v3_codes: &'static [u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
    let codes = if v5 { CONNACK_CODES } else { v3_codes };
    (any::<bool>(), code(codes), props).prop_map(move |(session_present, code, properties)| {
        Packet::ConnAck(ConnAck {
            session_present,
            code,
            properties: if v5 {
                properties
            } else {
                ConnAckProperties::default()
            },
        })
    })
}

fn publish(v5: bool) -> impl Strategy<Value = Packet> {
    let props = (
        (
            option::of(0..=1u8),
            option::of(any::<u32>()),
            option::of(nonzero_u16()),
        ),
        (option::of(topic_name()), option::of(bin()), users()),
        (vec(1..=268_435_455u32, 0..3), option::of(string())),
    )
        .prop_map(
            |((pfi, mei, ta), (rt, cd, up), (si, ct))| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: ta,
                response_topic: rt,
                correlation_data: cd,
                user_properties: up,
                subscription_identifiers: si,
                content_type: ct,
            },
        );
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        nonzero_u16(),
        bin(),
        props,
    )
        .prop_map(
            move |(qos, dup, retain, topic, empty_topic, id, payload, properties)| {
                let properties = if v5 {
                    properties
                } else {
                    PublishProperties::default()
                };
                // 5.0: an empty topic is allowed together with a topic alias.
                let topic = if v5 && empty_topic && properties.topic_alias.is_some() {
                    Bytes::new()
                } else {
                    Bytes::from(topic)
                };
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    payload,
                    properties,
                })
            },
        )
}

fn pub_resp(v5: bool, codes: &'static [u8]) -> impl Strategy<Value = PubResp> {
    (nonzero_u16(), code(codes), option::of(string()), users()).prop_map(
        move |(id, code, rs, up)| {
            if v5 {
                PubResp {
                    packet_id: id,
                    code,
                    reason_string: rs,
                    user_properties: up,
                }
            } else {
                PubResp::new(id, ReasonCode::Success)
            }
        },
    )
}

fn subscribe(v5: bool) -> impl Strategy<Value = Packet> {
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(move |(qos, nl, rap, rh)| {
            if !v5 {
                return SubscriptionOptions {
                    qos,
                    ..Default::default()
                };
            }
            SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: match rh {
                    0 => RetainHandling::SendAtSubscribe,
                    1 => RetainHandling::SendIfNew,
                    _ => RetainHandling::DoNotSend,
                },
            }
        });
    (
        nonzero_u16(),
        vec((topic_filter(), options), 1..4),
        option::of(1..=268_435_455u32),
        users(),
    )
        .prop_map(move |(packet_id, mut filters, si, up)| {
            // [MQTT-3.8.3-4]: no local is a protocol error on shared subscriptions.
            for (f, o) in &mut filters {
                if f.starts_with("$share/") {
                    o.no_local = false;
                }
            }
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                subscription_identifier: if v5 { si } else { None },
                user_properties: if v5 { up } else { Vec::new() },
            })
        })
}

fn packet(v5: bool) -> impl Strategy<Value = Packet> {
    let v3_suback: &'static [u8] = &[0x00, 0x01, 0x02, 0x80];
    let suback = (
        nonzero_u16(),
        vec(code(if v5 { SUBACK_CODES } else { v3_suback }), 1..4),
        option::of(string()),
        users(),
    )
        .prop_map(move |(packet_id, codes, rs, up)| {
            Packet::SubAck(SubAck {
                packet_id,
                codes,
                reason_string: if v5 { rs } else { None },
                user_properties: if v5 { up } else { Vec::new() },
            })
        });
    let unsubscribe = (nonzero_u16(), vec(topic_filter(), 1..4), users()).prop_map(
        move |(packet_id, filters, up)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                user_properties: if v5 { up } else { Vec::new() },
            })
        },
    );
    let unsuback = (
        nonzero_u16(),
        vec(code(UNSUBACK_CODES), 1..4),
        option::of(string()),
        users(),
    )
        .prop_map(move |(packet_id, codes, rs, up)| {
            Packet::UnsubAck(if v5 {
                UnsubAck {
                    packet_id,
                    codes,
                    reason_string: rs,
                    user_properties: up,
                }
            } else {
                UnsubAck {
                    packet_id,
                    codes: vec![],
                    reason_string: None,
                    user_properties: vec![],
                }
            })
        });
    let disconnect = (
        code(DISCONNECT_CODES),
        option::of(any::<u32>()),
        option::of(string()),
        option::of(string()),
        users(),
    )
        .prop_map(move |(code, sei, rs, sr, up)| {
            Packet::Disconnect(if v5 {
                Disconnect {
                    code,
                    session_expiry_interval: sei,
                    reason_string: rs,
                    server_reference: sr,
                    user_properties: up,
                }
            } else {
                Disconnect::default()
            })
        });
    let auth = (
        code(AUTH_CODES),
        option::of(string()),
        option::of(bin()),
        option::of(string()),
        users(),
    )
        .prop_map(|(code, am, ad, rs, up)| {
            Packet::Auth(Auth {
                code,
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: up,
            })
        });
    let common = prop_oneof![
        connect(v5),
        connack(v5),
        publish(v5),
        publish(v5),
        pub_resp(v5, PUBACK_CODES).prop_map(Packet::PubAck),
        pub_resp(v5, PUBACK_CODES).prop_map(Packet::PubRec),
        pub_resp(v5, PUBREL_CODES).prop_map(Packet::PubRel),
        pub_resp(v5, PUBREL_CODES).prop_map(Packet::PubComp),
        subscribe(v5),
        suback,
        unsubscribe,
        unsuback,
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect,
    ];
    if v5 {
        prop_oneof![14 => common, 1 => auth].boxed()
    } else {
        common.boxed()
    }
}

fn version_and_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    prop_oneof![
        packet(false).prop_map(|p| (V311, p)),
        packet(true).prop_map(|p| (V5, p))
    ]
}

/// Decodes packets from `buf` until it needs more bytes, checking that
/// `Ok(None)` leaves the buffer untouched.
fn drain(buf: &mut BytesMut, v: ProtocolVersion, out: &mut Vec<Packet>) -> Result<(), DecodeError> {
    loop {
        let before = buf.clone();
        match decode(buf, v, MAX)? {
            Some(d) => out.push(d.packet),
            None => {
                assert_eq!(*buf, before, "Ok(None) consumed bytes");
                return Ok(());
            }
        }
    }
}

/// What the fuzz target checks: anything that decodes re-encodes to bytes that
/// decode to the same packet.
fn check_reencode(bytes: &[u8], v: ProtocolVersion) {
    let mut buf = BytesMut::from(bytes);
    let mut packets = Vec::new();
    let _ = drain(&mut buf, v, &mut packets);
    for p in packets {
        let again = encode_vec(&p, v);
        assert_eq!(
            decode_one(&again, v).as_ref(),
            Ok(&p),
            "re-encoding changed {p:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity((v, p) in version_and_packet()) {
        let bytes = encode_vec(&p, v);
        prop_assert_eq!(decode_one(&bytes, v), Ok(p));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..96)) {
        for v in [V311, V5] {
            check_reencode(&bytes, v);
        }
        let mut buf = BytesMut::from(&bytes[..]);
        let before = buf.clone();
        if let Ok(None) = decode_connect(&mut buf, MAX) {
            prop_assert_eq!(buf, before);
        }
    }

    #[test]
    fn decode_never_panics_on_mutated_packets(
        (v, p) in version_and_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        // Valid packets with a few bytes changed reach far deeper than random bytes.
        let mut bytes = encode_vec(&p, v);
        if bytes.is_empty() {
            return Ok(());
        }
        for (i, b) in &flips {
            let i = i.index(bytes.len());
            bytes[i] ^= b;
        }
        check_reencode(&bytes, v);
        check_reencode(&bytes[..cut.index(bytes.len() + 1)], v);
    }

    #[test]
    fn stream_split_at_every_boundary(packets in vec(version_and_packet(), 1..5), v5 in any::<bool>()) {
        let v = if v5 { V5 } else { V311 };
        let packets: Vec<Packet> = packets
            .into_iter()
            .filter(|(pv, _)| *pv == v)
            .map(|(_, p)| p)
            .collect();
        let mut stream = Vec::new();
        for p in &packets {
            stream.extend(encode_vec(p, v));
        }
        for split in 0..=stream.len() {
            let mut buf = BytesMut::from(&stream[..split]);
            let mut got = Vec::new();
            prop_assert_eq!(drain(&mut buf, v, &mut got), Ok(()));
            buf.extend_from_slice(&stream[split..]);
            prop_assert_eq!(drain(&mut buf, v, &mut got), Ok(()));
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&got, &packets);
        }
    }

    #[test]
    fn v5_only_content_is_dropped_for_v311(p in packet(true)) {
        // Encoding any 5.0 packet for 3.1.1 yields a valid 3.1.1 packet (or
        // nothing, for AUTH).
        let bytes = encode_vec(&p, V311);
        if bytes.is_empty() {
            prop_assert!(matches!(p, Packet::Auth(_)));
        } else if let Packet::Publish(pb) = &p && pb.topic.is_empty() {
            // A topic alias with an empty topic has no 3.1.1 form.
            prop_assert!(decode_one(&bytes, V311).is_err());
        } else if !matches!(p, Packet::Connect(_)) {
            prop_assert!(decode_one(&bytes, V311).is_ok());
        }
    }

    #[test]
    fn topic_matching_agrees_with_itself(topic in topic_name()) {
        prop_assert!(crate::topic::valid_topic_name(&topic));
        prop_assert!(crate::topic::matches(&topic, &topic));
        if !topic.starts_with('$') {
            prop_assert!(crate::topic::matches("#", &topic));
        }
        let parent = format!("{topic}/#");
        prop_assert!(crate::topic::matches(&parent, &topic));
    }
}

#[test]
fn every_byte_boundary_of_a_fixed_stream() {
    // A deterministic stream mixing every 3.1.1 packet type.
    let stream: &[u8] = b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc\
        \x30\x07\x00\x03a/bhi\x3b\x07\x00\x01t\x00\x0ahi\x40\x02\x00\x07\x62\x02\x00\x07\
        \x82\x0c\x00\x01\x00\x03a/#\x01\x00\x01+\x02\x90\x04\x00\x01\x00\x80\
        \xa2\x05\x00\x02\x00\x01a\xb0\x02\x00\x02\xc0\x00\xd0\x00\xe0\x00";
    let mut whole = BytesMut::from(stream);
    let mut expected = Vec::new();
    drain(&mut whole, V311, &mut expected).unwrap();
    assert!(whole.is_empty());
    assert_eq!(expected.len(), 12);
    for split in 0..=stream.len() {
        let mut buf = BytesMut::from(&stream[..split]);
        let mut got = Vec::new();
        drain(&mut buf, V311, &mut got).unwrap();
        buf.extend_from_slice(&stream[split..]);
        drain(&mut buf, V311, &mut got).unwrap();
        assert_eq!(got, expected, "split at {split}");
    }
}
