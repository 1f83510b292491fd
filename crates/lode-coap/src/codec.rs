//! The datagram codec (RFC 7252 section 3): [`decode`] and [`encode`].
//!
//! ```text
//!  0                   1                   2                   3
//! |Ver| T |  TKL  |      Code     |          Message ID           |
//! |   Token (TKL bytes) ...
//! |   Options (delta/length nibbles, 13 → +1 byte, 14 → +2 bytes, 15 reserved) ...
//! |1 1 1 1 1 1 1 1|    Payload (if any, never empty after the marker) ...
//! ```

use thiserror::Error;

use crate::message::{CoapOption, Code, Message, MessageType, Token};

/// Why a datagram is not a CoAP message (a "message format error" of RFC 7252).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer than the 4 header bytes.
    #[error("datagram of {0} bytes is shorter than the 4-byte header")]
    TooShort(usize),
    /// Version other than 1: silently ignored (RFC 7252 section 3).
    #[error("unsupported CoAP version {0}")]
    UnsupportedVersion(u8),
    /// Token length 9 to 15 (reserved).
    #[error("reserved token length {0}")]
    ReservedTokenLength(u8),
    /// The token or an option runs past the end of the datagram.
    #[error("truncated token or option")]
    Truncated,
    /// An option delta or length nibble of 15 outside a payload marker.
    #[error("reserved option nibble 15")]
    ReservedOptionNibble,
    /// The option number grows past 65535.
    #[error("option number past 65535")]
    OptionNumberTooLarge,
    /// A payload marker followed by no payload.
    #[error("payload marker with an empty payload")]
    EmptyPayload,
    /// A code 0.00 message with a token, options or payload (RFC 7252 section 4.1).
    #[error("empty message (0.00) with bytes after the message id")]
    NonEmptyEmptyMessage,
}

/// Decodes one datagram. Never panics, whatever the input.
pub fn decode(datagram: &[u8]) -> Result<Message, DecodeError> {
    let [first, code, mid_hi, mid_lo, rest @ ..] = datagram else {
        return Err(DecodeError::TooShort(datagram.len()));
    };
    let version = first >> 6;
    if version != 1 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let tkl = first & 0x0f;
    if tkl > 8 {
        return Err(DecodeError::ReservedTokenLength(tkl));
    }
    let code = Code::from_byte(*code);
    if code.is_empty() && (tkl != 0 || !rest.is_empty()) {
        return Err(DecodeError::NonEmptyEmptyMessage);
    }
    let (token, mut rest) = rest
        .split_at_checked(usize::from(tkl))
        .ok_or(DecodeError::Truncated)?;
    let mut message = Message::new(
        MessageType::from_bits(first >> 4),
        code,
        u16::from_be_bytes([*mid_hi, *mid_lo]),
    );
    message.token = Token::new(token).map_err(|_| DecodeError::ReservedTokenLength(tkl))?;

    let mut options = Vec::new();
    let mut number: u32 = 0;
    while let [head, tail @ ..] = rest {
        if *head == 0xff {
            if tail.is_empty() {
                return Err(DecodeError::EmptyPayload);
            }
            message.payload = tail.to_vec();
            break;
        }
        let (delta, tail) = extended(head >> 4, tail)?;
        let (len, tail) = extended(head & 0x0f, tail)?;
        number += delta;
        let number16 = u16::try_from(number).map_err(|_| DecodeError::OptionNumberTooLarge)?;
        let (value, tail) = tail
            .split_at_checked(len as usize)
            .ok_or(DecodeError::Truncated)?;
        options.push(CoapOption {
            number: number16,
            value: value.to_vec(),
        });
        rest = tail;
    }
    message.set_decoded_options(options);
    Ok(message)
}

/// An option delta or length: the nibble and its extension bytes.
fn extended(nibble: u8, bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match (nibble, bytes) {
        (0..=12, _) => Ok((u32::from(nibble), bytes)),
        (13, [b, rest @ ..]) => Ok((u32::from(*b) + 13, rest)),
        (14, [hi, lo, rest @ ..]) => Ok((u32::from(u16::from_be_bytes([*hi, *lo])) + 269, rest)),
        (13 | 14, _) => Err(DecodeError::Truncated),
        _ => Err(DecodeError::ReservedOptionNibble),
    }
}

/// Encodes a message into a new buffer.
///
/// Any [`Message`] encodes; one whose code is 0.00 but which carries a token, options or a
/// payload produces a datagram that [`decode`] refuses, as RFC 7252 requires.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(message));
    encode_into(message, &mut out);
    out
}

/// Appends the encoding of `message` to `out`.
pub fn encode_into(message: &Message, out: &mut Vec<u8>) {
    let token = message.token.as_bytes();
    // The token length is at most 8, so it fits the nibble.
    let tkl = u8::try_from(token.len()).unwrap_or(0) & 0x0f;
    out.push(0x40 | (message.message_type.to_bits() << 4) | tkl);
    out.push(message.code.to_byte());
    out.extend_from_slice(&message.message_id.to_be_bytes());
    out.extend_from_slice(token);
    let mut previous = 0u16;
    for o in message.options() {
        let delta = o.number.saturating_sub(previous);
        previous = o.number;
        let (dn, dext) = nibble(u32::from(delta));
        let (ln, lext) = nibble(u32::try_from(o.value.len()).unwrap_or(u32::MAX));
        out.push((dn << 4) | ln);
        out.extend_from_slice(dext.as_slice());
        out.extend_from_slice(lext.as_slice());
        out.extend_from_slice(&o.value);
    }
    if !message.payload.is_empty() {
        out.push(0xff);
        out.extend_from_slice(&message.payload);
    }
}

/// The encoded length of `message`, in bytes.
pub fn encoded_len(message: &Message) -> usize {
    let mut len = 4 + message.token.len();
    let mut previous = 0u16;
    for o in message.options() {
        let delta = o.number.saturating_sub(previous);
        previous = o.number;
        len += 1 + ext_len(usize::from(delta)) + ext_len(o.value.len()) + o.value.len();
    }
    if !message.payload.is_empty() {
        len += 1 + message.payload.len();
    }
    len
}

fn ext_len(v: usize) -> usize {
    match v {
        0..=12 => 0,
        13..=268 => 1,
        _ => 2,
    }
}

/// Up to two extension bytes.
struct Ext {
    bytes: [u8; 2],
    len: usize,
}

impl Ext {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The nibble and extension bytes of a delta or length; values are at most 65535 + 269
/// (option numbers are u16 and [`Message::add_option`] bounds value lengths).
fn nibble(v: u32) -> (u8, Ext) {
    match v {
        0..=12 => (
            u8::try_from(v).unwrap_or(0),
            Ext {
                bytes: [0; 2],
                len: 0,
            },
        ),
        13..=268 => (
            13,
            Ext {
                bytes: [u8::try_from(v - 13).unwrap_or(0), 0],
                len: 1,
            },
        ),
        _ => (
            14,
            Ext {
                bytes: u16::try_from(v - 269).unwrap_or(u16::MAX).to_be_bytes(),
                len: 2,
            },
        ),
    }
}

/// The Reset that rejects a datagram that failed to decode, if one is due: a Confirmable
/// message whose header could be read is rejected with a matching RST (RFC 7252 section 4.2);
/// anything else (too short, another version, NON, ACK, RST) is silently dropped.
pub fn reject_malformed(datagram: &[u8]) -> Option<Message> {
    let [first, _, hi, lo, ..] = datagram else {
        return None;
    };
    (first >> 6 == 1 && MessageType::from_bits(first >> 4) == MessageType::Confirmable)
        .then(|| Message::empty(MessageType::Reset, u16::from_be_bytes([*hi, *lo])))
}

#[cfg(test)]
mod tests;
