//! Codec tests: known-answer vectors, malformed inputs and property tests.

mod known_answers;
mod malformed;
mod roundtrip;

use bytes::BytesMut;

use crate::{DecodeError, Decoded, Packet, ProtocolVersion, decode, encode, encoded_len};

/// A generous limit for tests that are not about the maximum packet size.
pub(crate) const MAX: u32 = 1 << 20;

/// Decodes exactly one packet that must fill `bytes`.
pub(crate) fn decode_one(bytes: &[u8], v: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, v, MAX)? {
        Some(Decoded { packet, wire_len }) => {
            assert_eq!(wire_len, bytes.len(), "wire_len");
            assert!(buf.is_empty(), "bytes left after packet");
            Ok(packet)
        }
        None => panic!("incomplete packet: {bytes:02x?}"),
    }
}

pub(crate) fn encode_vec(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf);
    assert_eq!(
        buf.len(),
        encoded_len(p, v),
        "encoded_len disagrees with encode"
    );
    buf.to_vec()
}
