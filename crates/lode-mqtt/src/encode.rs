//! Packets to bytes.

use bytes::BytesMut;

use crate::{Packet, ProtocolVersion};

/// Appends the wire form of `packet` for `version` to `buf`.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    let _ = (packet, version, buf);
    unimplemented!("encode")
}

/// The number of bytes [`encode`] would append.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let _ = (packet, version);
    unimplemented!("encoded_len")
}
