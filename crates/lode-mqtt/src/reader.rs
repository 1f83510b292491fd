//! A bounds-checked cursor over the body of one packet.
//!
//! Every read checks the remaining length first and reports a short read as
//! a malformed packet, so decoding code can use `?` everywhere and never index.

use bytes::{Buf, Bytes};

use crate::DecodeError;

/// Reads the fields of one packet body. Binary fields are zero-copy slices.
pub(crate) struct Reader {
    data: Bytes,
}

const SHORT: DecodeError = DecodeError::Malformed("packet shorter than its fields");

impl Reader {
    pub(crate) fn new(data: Bytes) -> Reader {
        Reader { data }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Fails unless every byte was consumed: trailing bytes make a packet malformed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed("trailing bytes in packet"))
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.data.try_get_u8().map_err(|_| SHORT)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.data.try_get_u16().map_err(|_| SHORT)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.data.try_get_u32().map_err(|_| SHORT)
    }

    /// A Variable Byte Integer: at most four bytes, as in the fixed header.
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// `n` raw bytes as a slice of the packet.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.data.len() < n {
            return Err(SHORT);
        }
        Ok(self.data.split_to(n))
    }

    /// Everything left, e.g. a PUBLISH payload.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.data)
    }

    /// Two-byte length followed by that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 string as a slice of the packet, validated but not copied.
    pub(crate) fn utf8_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let raw = self.binary()?;
        check_utf8(&raw)?;
        Ok(raw)
    }

    /// A UTF-8 string copied into a `String`.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        Ok(check_utf8(&raw)?.to_owned())
    }
}

/// [MQTT-1.5.4-1], [MQTT-1.5.4-2]: well-formed UTF-8 and no U+0000.
pub(crate) fn check_utf8(raw: &[u8]) -> Result<&str, DecodeError> {
    let s = std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed("invalid UTF-8 string"))?;
    if raw.contains(&0) {
        return Err(DecodeError::Malformed("U+0000 in UTF-8 string"));
    }
    Ok(s)
}
