//! Codec tests: RFC examples written out by hand, option encoding edge cases, format errors,
//! and properties (round trip, canonical form, no panic on arbitrary bytes).

use proptest::prelude::*;

use super::*;
use crate::block::BlockOpt;
use crate::message::{MAX_OPTION_VALUE_LEN, opt};

fn bytes(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[track_caller]
fn roundtrip(wire: &[u8]) -> Message {
    let m = decode(wire).expect("decodes");
    assert_eq!(encode(&m), wire, "re-encodes to the same bytes");
    assert_eq!(encoded_len(&m), wire.len());
    m
}

#[test]
fn rfc7252_get_with_piggybacked_response() {
    // RFC 7252 appendix A, figure 16: CON [0x7d34] GET /temperature.
    let req = bytes(&[&[0x40, 0x01, 0x7d, 0x34, 0xbb], b"temperature"]);
    let m = roundtrip(&req);
    assert_eq!(m.message_type, MessageType::Confirmable);
    assert_eq!(m.code, Code::GET);
    assert_eq!(m.message_id, 0x7d34);
    assert!(m.token.is_empty());
    assert_eq!(m.uri_path(), Ok(vec!["temperature"]));
    assert!(m.payload.is_empty());
    // ACK [0x7d34] 2.05 Content "22.3 C".
    let resp = bytes(&[&[0x60, 0x45, 0x7d, 0x34, 0xff], b"22.3 C"]);
    let m = roundtrip(&resp);
    assert_eq!(m.message_type, MessageType::Acknowledgement);
    assert_eq!(m.code, Code::CONTENT);
    assert_eq!(m.payload, b"22.3 C");
}

#[test]
fn rfc7252_get_with_token() {
    // RFC 7252 appendix A, figure 17: the same GET with token 0x20.
    let req = bytes(&[&[0x41, 0x01, 0x7d, 0x35, 0x20, 0xbb], b"temperature"]);
    let m = roundtrip(&req);
    assert_eq!(m.token.as_bytes(), &[0x20]);
    let resp = bytes(&[&[0x61, 0x45, 0x7d, 0x35, 0x20, 0xff], b"22.3 C"]);
    assert_eq!(roundtrip(&resp).token.as_bytes(), &[0x20]);
}

#[test]
fn rfc7959_block2_get() {
    // RFC 7959 figure 2: CON [MID=1234] GET /status, then ACK 2.05 with Block2 0/1/128.
    let req = bytes(&[&[0x40, 0x01, 0x04, 0xd2, 0xb6], b"status"]);
    assert_eq!(roundtrip(&req).uri_path(), Ok(vec!["status"]));
    let mut resp = vec![0x60, 0x45, 0x04, 0xd2, 0xd1, 0x0a, 0x0b, 0xff];
    resp.extend_from_slice(&[b'x'; 128]);
    let m = roundtrip(&resp);
    assert_eq!(m.block2(), Ok(BlockOpt::new(0, true, 3)));
    assert_eq!(m.payload.len(), 128);
}

#[test]
fn rfc7959_block1_put() {
    // RFC 7959 figure 6: CON [MID=1234] PUT /options with Block1 0/1/128 ...
    let mut req = bytes(&[
        &[0x40, 0x03, 0x04, 0xd2, 0xb7],
        b"options",
        &[0xd1, 0x03, 0x0b, 0xff],
    ]);
    req.extend_from_slice(&[b'y'; 128]);
    let m = roundtrip(&req);
    assert_eq!(m.code, Code::PUT);
    assert_eq!(m.block1(), Ok(BlockOpt::new(0, true, 3)));
    // ... answered ACK 2.31 Continue with Block1 0/1/128.
    let resp = [0x60, 0x5f, 0x04, 0xd2, 0xd1, 0x0e, 0x0b];
    let m = roundtrip(&resp);
    assert_eq!(m.code, Code::CONTINUE);
    assert_eq!(m.block1(), Ok(BlockOpt::new(0, true, 3)));
}

#[test]
fn alink_options_use_two_byte_extensions() {
    // Option 2088 "abc" (delta 2088 = 269 + 0x071b), then 2089 with 16 bytes (length 13 + 3).
    let mut wire = bytes(&[
        &[0x42, 0x02, 0x00, 0x01, 0x04, 0x03],
        &[0xe3, 0x07, 0x1b],
        b"abc",
        &[0x1d, 0x03],
    ]);
    wire.extend_from_slice(&[0xaa; 16]);
    wire.extend_from_slice(&[0xff, b'{', b'}']);
    let m = roundtrip(&wire);
    assert_eq!(m.token.as_bytes(), &[0x04, 0x03]);
    assert_eq!(m.alink_token(), Ok(Some("abc")));
    assert_eq!(m.alink_seq(), Ok(Some(&[0xaa; 16][..])));
    assert_eq!(m.payload, b"{}");
}

#[test]
fn option_extension_boundaries() {
    let head = [0x40, 0x01, 0x00, 0x00];
    for (delta, enc) in [
        (12u16, vec![0xc0]),
        (13, vec![0xd0, 0x00]),
        (268, vec![0xd0, 0xff]),
        (269, vec![0xe0, 0x00, 0x00]),
        (65535, vec![0xe0, 0xfe, 0xf2]),
    ] {
        let wire = bytes(&[&head, &enc]);
        let m = roundtrip(&wire);
        assert_eq!(m.options().len(), 1);
        assert_eq!(m.options()[0].number, delta);
    }
    for (len, enc) in [
        (12usize, vec![0x0c]),
        (13, vec![0x0d, 0x00]),
        (268, vec![0x0d, 0xff]),
        (269, vec![0x0e, 0x00, 0x00]),
    ] {
        let mut wire = bytes(&[&head, &enc]);
        wire.extend(std::iter::repeat_n(7u8, len));
        let m = roundtrip(&wire);
        assert_eq!(m.options()[0].value.len(), len);
    }
    // The longest value the header can express.
    let mut m = Message::new(MessageType::NonConfirmable, Code::POST, 9);
    m.add_option(opt::ETAG, vec![1; MAX_OPTION_VALUE_LEN])
        .expect("fits");
    let wire = encode(&m);
    assert_eq!(&wire[4..7], &[0x4e, 0xff, 0xff]);
    assert_eq!(decode(&wire), Ok(m));
}

#[test]
fn format_errors() {
    use DecodeError::*;
    let cases: &[(&[u8], DecodeError)] = &[
        (&[], TooShort(0)),
        (&[0x40, 0x01, 0x00], TooShort(3)),
        (&[0x80, 0x01, 0x00, 0x01], UnsupportedVersion(2)),
        (&[0x00, 0x01, 0x00, 0x01], UnsupportedVersion(0)),
        (
            &[0x49, 0x01, 0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            ReservedTokenLength(9),
        ),
        (&[0x4f, 0x01, 0x00, 0x01], ReservedTokenLength(15)),
        (&[0x42, 0x01, 0x00, 0x01, 0xaa], Truncated),
        // Delta nibble 15 that is not the payload marker.
        (&[0x40, 0x01, 0x00, 0x01, 0xf0], ReservedOptionNibble),
        (&[0x40, 0x01, 0x00, 0x01, 0xf1, 0x00], ReservedOptionNibble),
        // Length nibble 15.
        (&[0x40, 0x01, 0x00, 0x01, 0x1f], ReservedOptionNibble),
        // Extension bytes missing.
        (&[0x40, 0x01, 0x00, 0x01, 0xd0], Truncated),
        (&[0x40, 0x01, 0x00, 0x01, 0xe0, 0x00], Truncated),
        (&[0x40, 0x01, 0x00, 0x01, 0x0d], Truncated),
        // Value runs past the end.
        (&[0x40, 0x01, 0x00, 0x01, 0x13, 0x61, 0x62], Truncated),
        // Option number past 65535, directly or by accumulation.
        (
            &[0x40, 0x01, 0x00, 0x01, 0xe0, 0xff, 0xff],
            OptionNumberTooLarge,
        ),
        (
            &[0x40, 0x01, 0x00, 0x01, 0xe0, 0xfe, 0xf2, 0x10],
            OptionNumberTooLarge,
        ),
        // Marker with nothing after it.
        (&[0x40, 0x02, 0x00, 0x01, 0xff], EmptyPayload),
        (&[0x40, 0x02, 0x00, 0x01, 0xb1, 0x61, 0xff], EmptyPayload),
        // 0.00 with a token, an option or a payload.
        (&[0x41, 0x00, 0x00, 0x01, 0x01], NonEmptyEmptyMessage),
        (&[0x41, 0x00, 0x00, 0x01], NonEmptyEmptyMessage),
        (&[0x40, 0x00, 0x00, 0x01, 0xff, 0x01], NonEmptyEmptyMessage),
    ];
    for (wire, want) in cases {
        assert_eq!(decode(wire), Err(*want), "{wire:02x?}");
    }
}

#[test]
fn empty_messages() {
    let ping = roundtrip(&[0x40, 0x00, 0x12, 0x34]);
    assert_eq!(ping, Message::empty(MessageType::Confirmable, 0x1234));
    let rst = roundtrip(&[0x70, 0x00, 0x12, 0x34]);
    assert_eq!(rst.message_type, MessageType::Reset);
    assert!(rst.code.is_empty());
}

#[test]
fn malformed_con_is_reset_others_dropped() {
    // A CON whose header is readable: RST with its message id.
    assert_eq!(
        reject_malformed(&[0x40, 0x01, 0xbe, 0xef, 0xf0]),
        Some(Message::empty(MessageType::Reset, 0xbeef))
    );
    assert_eq!(reject_malformed(&[0x50, 0x01, 0xbe, 0xef, 0xf0]), None);
    assert_eq!(reject_malformed(&[0x60, 0x01, 0xbe, 0xef, 0xf0]), None);
    assert_eq!(reject_malformed(&[0x80, 0x01, 0xbe, 0xef]), None);
    assert_eq!(reject_malformed(&[0x40, 0x01, 0xbe]), None);
}

#[test]
fn encode_into_appends() {
    let mut out = vec![9];
    encode_into(&Message::empty(MessageType::Acknowledgement, 7), &mut out);
    assert_eq!(out, [9, 0x60, 0x00, 0x00, 0x07]);
}

fn arb_option_number() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            1u16, 4, 6, 11, 12, 13, 14, 17, 23, 27, 28, 60, 61, 268, 269, 270, 2088, 2089, 65535
        ]),
        any::<u16>(),
    ]
}

fn arb_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16),
        prop::collection::vec(any::<u8>(), 260..280),
        prop::collection::vec(any::<u8>(), 0..600),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let ty = prop::sample::select(vec![
        MessageType::Confirmable,
        MessageType::NonConfirmable,
        MessageType::Acknowledgement,
        MessageType::Reset,
    ]);
    (
        ty,
        1u8..=255,
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..=8),
        prop::collection::vec((arb_option_number(), arb_value()), 0..8),
        prop::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
    )
        .prop_map(|(ty, code, mid, token, options, payload, empty)| {
            if empty {
                return Message::empty(ty, mid);
            }
            let mut m = Message::new(ty, Code::from_byte(code), mid);
            m.token = Token::new(&token).expect("at most 8");
            for (n, v) in options {
                m.add_option(n, v).expect("short value");
            }
            m.payload = payload;
            m
        })
}

proptest! {
    #[test]
    fn decode_inverts_encode(m in arb_message()) {
        let wire = encode(&m);
        prop_assert_eq!(wire.len(), encoded_len(&m));
        prop_assert_eq!(decode(&wire), Ok(m));
    }

    #[test]
    fn decode_never_panics_and_is_canonical(data in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = decode(&data) {
            // Every field has exactly one wire form, so what decodes re-encodes byte for byte.
            prop_assert_eq!(encode(&m), data);
        }
    }

    #[test]
    fn decode_never_panics_on_coap_like_input(
        first in prop::sample::select(vec![0x40u8, 0x41, 0x48, 0x50, 0x60, 0x70]),
        code in any::<u8>(),
        rest in prop::collection::vec(
            prop_oneof![Just(0xffu8), Just(0xd0), Just(0xe0), Just(0x0d), Just(0x0e), any::<u8>()],
            0..64,
        ),
    ) {
        let mut data = vec![first, code, 0, 1];
        data.extend(rest);
        if let Ok(m) = decode(&data) {
            prop_assert_eq!(encode(&m), data);
        } else {
            // Whatever failed, a CON is answered with a matching Reset.
            let rst = reject_malformed(&data);
            prop_assert_eq!(rst.is_some(), first >> 4 == 0x4);
        }
    }
}
