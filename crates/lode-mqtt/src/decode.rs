//! Bytes to packets.

use bytes::BytesMut;

use crate::{DecodeError, Packet, ProtocolVersion};

/// A decoded packet and its size on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub packet: Packet,
    pub wire_len: usize,
}

/// Decodes one packet from the front of `buf`, splitting the consumed bytes off.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet. Topic and
/// payload of a PUBLISH are zero-copy slices of the consumed bytes. CONNECT is
/// decoded whatever `version` says, since it is what sets the version.
/// A fixed header announcing more than `max_packet_size` bytes is refused at once.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Decoded>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    unimplemented!("decode")
}

/// Decodes the first packet of a connection, which must be a CONNECT.
pub fn decode_connect(buf: &mut BytesMut, max_packet_size: u32) -> Result<Option<Decoded>, DecodeError> {
    let _ = (buf, max_packet_size);
    unimplemented!("decode_connect")
}
