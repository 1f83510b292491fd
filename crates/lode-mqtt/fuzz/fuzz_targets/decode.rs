//! Fuzz target: decoding arbitrary bytes never panics, and whatever decodes
//! re-encodes to bytes that decode to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lode_mqtt::{ProtocolVersion, decode, decode_connect, encode, encoded_len};

const MAX: u32 = 1 << 20;

fn check(data: &[u8], version: ProtocolVersion) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let packet = match decode(&mut buf, version, MAX) {
            Ok(Some(d)) => d.packet,
            Ok(None) => {
                // Needing more bytes must not consume any.
                assert_eq!(buf.len(), before);
                return;
            }
            Err(_) => return,
        };
        let mut out = BytesMut::new();
        encode(&packet, version, &mut out);
        assert_eq!(out.len(), encoded_len(&packet, version));
        let wire_len = out.len();
        let again = decode(&mut out, version, MAX)
            .expect("re-encoded packet must decode")
            .expect("re-encoded packet must be whole");
        assert_eq!(again.packet, packet);
        assert_eq!(again.wire_len, wire_len);
        assert!(out.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, ProtocolVersion::V311);
    check(data, ProtocolVersion::V5);
    let _ = decode_connect(&mut BytesMut::from(data), MAX);
});
