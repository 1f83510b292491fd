//! The CoAP message model (RFC 7252 section 3) and typed access to the options we understand.
//!
//! A [`Message`] keeps its options sorted by number (stable among repeats), which is the order
//! the wire format needs, so encoding cannot fail. Every value a [`Message`] can hold has a wire
//! form: tokens are at most 8 bytes ([`Token`]) and option values at most
//! [`MAX_OPTION_VALUE_LEN`] bytes (checked by [`Message::add_option`]).

use std::fmt;

use thiserror::Error;

use crate::block::BlockOpt;

/// The longest option value the option header can express: 65535 + 269 bytes.
pub const MAX_OPTION_VALUE_LEN: usize = 65_535 + 269;

/// The four message types of RFC 7252 section 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// CON: needs an acknowledgement.
    Confirmable,
    /// NON: no acknowledgement.
    NonConfirmable,
    /// ACK: acknowledges a CON, empty or carrying a piggybacked response.
    Acknowledgement,
    /// RST: a CON or NON could not be processed.
    Reset,
}

impl MessageType {
    /// The 2-bit wire value.
    pub fn to_bits(self) -> u8 {
        match self {
            MessageType::Confirmable => 0,
            MessageType::NonConfirmable => 1,
            MessageType::Acknowledgement => 2,
            MessageType::Reset => 3,
        }
    }

    /// The type of a 2-bit wire value (higher bits are ignored).
    pub fn from_bits(bits: u8) -> MessageType {
        match bits & 0b11 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }
}

/// A message code `c.dd`: 3-bit class, 5-bit detail (RFC 7252 section 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(u8);

impl Code {
    /// 0.00: an Empty message.
    pub const EMPTY: Code = Code::new(0, 0);
    /// 0.01 GET.
    pub const GET: Code = Code::new(0, 1);
    /// 0.02 POST.
    pub const POST: Code = Code::new(0, 2);
    /// 0.03 PUT.
    pub const PUT: Code = Code::new(0, 3);
    /// 0.04 DELETE.
    pub const DELETE: Code = Code::new(0, 4);
    /// 2.01 Created.
    pub const CREATED: Code = Code::new(2, 1);
    /// 2.02 Deleted.
    pub const DELETED: Code = Code::new(2, 2);
    /// 2.03 Valid.
    pub const VALID: Code = Code::new(2, 3);
    /// 2.04 Changed.
    pub const CHANGED: Code = Code::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 2.31 Continue (RFC 7959): a Block1 block was accepted, send the next one.
    pub const CONTINUE: Code = Code::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01 Unauthorized: the Alink token is missing, expired or wrong.
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.02 Bad Option: an unrecognized critical option (RFC 7252 section 5.4.1).
    pub const BAD_OPTION: Code = Code::new(4, 2);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Code = Code::new(4, 3);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);
    /// 4.08 Request Entity Incomplete (RFC 7959): a Block1 block arrived out of order.
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    /// 4.12 Precondition Failed.
    pub const PRECONDITION_FAILED: Code = Code::new(4, 12);
    /// 4.13 Request Entity Too Large, with Size1 giving the limit.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    /// 5.00 Internal Server Error (an Alink device re-authenticates after 1 s).
    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    /// 5.01 Not Implemented.
    pub const NOT_IMPLEMENTED: Code = Code::new(5, 1);
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);

    /// The code `class.detail`; bits beyond 3 (class) and 5 (detail) are dropped.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code(((class & 0x07) << 5) | (detail & 0x1f))
    }

    /// The code of a wire byte.
    pub const fn from_byte(byte: u8) -> Code {
        Code(byte)
    }

    /// The wire byte.
    pub const fn to_byte(self) -> u8 {
        self.0
    }

    /// The class, 0..=7.
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail, 0..=31.
    pub const fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// 0.00.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A method code: class 0, detail not 0.
    pub const fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
    }

    /// A response code: class 2, 4 or 5.
    pub const fn is_response(self) -> bool {
        matches!(self.class(), 2 | 4 | 5)
    }

    /// Class 1, 6 or 7: reserved by RFC 7252, a message format error.
    pub const fn is_reserved(self) -> bool {
        matches!(self.class(), 1 | 6 | 7)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({self})")
    }
}

/// A token longer than 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a CoAP token has at most 8 bytes, got {0}")]
pub struct TokenTooLong(pub usize);

/// A CoAP token: 0 to 8 bytes chosen by the requester to match responses to requests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Token {
    bytes: [u8; 8],
    len: u8,
}

impl Token {
    /// The zero-length token.
    pub const EMPTY: Token = Token {
        bytes: [0; 8],
        len: 0,
    };

    /// A token of at most 8 bytes.
    pub fn new(bytes: &[u8]) -> Result<Token, TokenTooLong> {
        let len = u8::try_from(bytes.len())
            .ok()
            .filter(|&n| n <= 8)
            .ok_or(TokenTooLong(bytes.len()))?;
        let mut t = Token { bytes: [0; 8], len };
        t.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(t)
    }

    /// The token bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Its length, 0..=8.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Option numbers (RFC 7252 section 12.2, RFC 7641, RFC 7959, Alink).
///
/// Odd numbers are critical: a recipient that does not understand one must refuse the message
/// (RFC 7252 section 5.4.1).
pub mod opt {
    /// If-Match (critical, repeatable, 0–8 bytes).
    pub const IF_MATCH: u16 = 1;
    /// Uri-Host (critical, string).
    pub const URI_HOST: u16 = 3;
    /// ETag (elective, repeatable in requests, 1–8 bytes).
    pub const ETAG: u16 = 4;
    /// If-None-Match (critical, empty).
    pub const IF_NONE_MATCH: u16 = 5;
    /// Observe (RFC 7641; elective, uint 0–3 bytes).
    pub const OBSERVE: u16 = 6;
    /// Uri-Port (critical, uint).
    pub const URI_PORT: u16 = 7;
    /// Location-Path (elective, repeatable string).
    pub const LOCATION_PATH: u16 = 8;
    /// Uri-Path (critical, repeatable string, one segment each).
    pub const URI_PATH: u16 = 11;
    /// Content-Format (elective, uint 0–2 bytes).
    pub const CONTENT_FORMAT: u16 = 12;
    /// Max-Age (elective, uint 0–4 bytes).
    pub const MAX_AGE: u16 = 14;
    /// Uri-Query (critical, repeatable string).
    pub const URI_QUERY: u16 = 15;
    /// Accept (critical, uint 0–2 bytes).
    pub const ACCEPT: u16 = 17;
    /// Location-Query (elective, repeatable string).
    pub const LOCATION_QUERY: u16 = 20;
    /// Block2 (RFC 7959; critical, uint 0–3 bytes).
    pub const BLOCK2: u16 = 23;
    /// Block1 (RFC 7959; critical, uint 0–3 bytes).
    pub const BLOCK1: u16 = 27;
    /// Size2 (RFC 7959; elective, uint 0–4 bytes).
    pub const SIZE2: u16 = 28;
    /// Proxy-Uri (critical).
    pub const PROXY_URI: u16 = 35;
    /// Proxy-Scheme (critical).
    pub const PROXY_SCHEME: u16 = 39;
    /// Size1 (elective, uint 0–4 bytes).
    pub const SIZE1: u16 = 60;
    /// The Alink auth-token option of the C SDK v3.2.0 cloud client (critical).
    pub const ALINK_AUTH_TOKEN_61: u16 = 61;
    /// The Alink auth-token option of the C SDK v2 cloud client (elective).
    pub const ALINK_AUTH_TOKEN: u16 = 2088;
    /// The Alink encrypted sequence number of the symmetric-key mode (critical).
    pub const ALINK_SEQ: u16 = 2089;

    /// The options this crate understands: anything else that is critical is refused.
    pub const KNOWN: &[u16] = &[
        IF_MATCH,
        URI_HOST,
        ETAG,
        IF_NONE_MATCH,
        OBSERVE,
        URI_PORT,
        LOCATION_PATH,
        URI_PATH,
        CONTENT_FORMAT,
        MAX_AGE,
        URI_QUERY,
        ACCEPT,
        LOCATION_QUERY,
        BLOCK2,
        BLOCK1,
        SIZE2,
        SIZE1,
        ALINK_AUTH_TOKEN_61,
        ALINK_AUTH_TOKEN,
        ALINK_SEQ,
    ];

    /// Whether an option is critical (odd number).
    pub const fn is_critical(number: u16) -> bool {
        number & 1 == 1
    }
}

/// Content-Format identifiers used by Alink devices (RFC 7252 section 12.3, RFC 7049).
pub mod content_format {
    /// `text/plain; charset=utf-8`.
    pub const TEXT_PLAIN: u16 = 0;
    /// `application/link-format` (`/.well-known/core`).
    pub const LINK_FORMAT: u16 = 40;
    /// `application/octet-stream` (what Alink devices put in Accept).
    pub const OCTET_STREAM: u16 = 42;
    /// `application/json` (the /auth request and JSON uplinks).
    pub const JSON: u16 = 50;
    /// `application/cbor`.
    pub const CBOR: u16 = 60;
}

/// One option instance: its number and raw value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoapOption {
    /// The option number.
    pub number: u16,
    /// The raw value.
    pub value: Vec<u8>,
}

/// An option value longer than the wire format can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("option {number} value of {len} bytes exceeds {MAX_OPTION_VALUE_LEN}")]
pub struct OptionTooLong {
    /// The option number.
    pub number: u16,
    /// The value's length.
    pub len: usize,
}

/// An option present with a value its definition does not allow.
///
/// RFC 7252 section 5.4.3 and 5.4.5: such an option is treated like an unrecognized one, so a
/// critical one refuses the request with 4.02 and an elective one is ignored
/// ([`OptionError::response_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OptionError {
    /// The value is longer than the option's definition allows.
    #[error("option {number} value of {len} bytes is longer than {max}")]
    TooLong {
        /// The option number.
        number: u16,
        /// The value's length.
        len: usize,
        /// The longest allowed value.
        max: usize,
    },
    /// A string option is not UTF-8.
    #[error("option {number} is not UTF-8")]
    NotUtf8 {
        /// The option number.
        number: u16,
    },
    /// A non-repeatable option occurs more than once.
    #[error("option {number} is repeated")]
    Repeated {
        /// The option number.
        number: u16,
    },
    /// A Block1/Block2 value with SZX 7 (reserved by RFC 7959, answered 4.00).
    #[error("option {number} has the reserved block size exponent 7")]
    ReservedBlockSize {
        /// The option number.
        number: u16,
    },
}

impl OptionError {
    /// The option number.
    pub fn number(&self) -> u16 {
        match *self {
            OptionError::TooLong { number, .. }
            | OptionError::NotUtf8 { number }
            | OptionError::Repeated { number }
            | OptionError::ReservedBlockSize { number } => number,
        }
    }

    /// The response to a request carrying this error: 4.00 for a reserved block size
    /// (RFC 7959 section 2.2), 4.02 for any other error in a critical option, `None` for an
    /// elective option, which is then ignored.
    pub fn response_code(&self) -> Option<Code> {
        match self {
            OptionError::ReservedBlockSize { .. } => Some(Code::BAD_REQUEST),
            _ if opt::is_critical(self.number()) => Some(Code::BAD_OPTION),
            _ => None,
        }
    }
}

/// A CoAP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// CON, NON, ACK or RST.
    pub message_type: MessageType,
    /// The method or response code.
    pub code: Code,
    /// The message id, for deduplication and matching ACK/RST.
    pub message_id: u16,
    /// The token, for matching responses to requests.
    pub token: Token,
    options: Vec<CoapOption>,
    /// The payload (empty when there is none).
    pub payload: Vec<u8>,
}

impl Message {
    /// A message without token, options or payload.
    pub fn new(message_type: MessageType, code: Code, message_id: u16) -> Message {
        Message {
            message_type,
            code,
            message_id,
            token: Token::EMPTY,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// An Empty message (code 0.00) of the given type.
    pub fn empty(message_type: MessageType, message_id: u16) -> Message {
        Message::new(message_type, Code::EMPTY, message_id)
    }

    /// The options, sorted by number, repeats in the order they were added.
    pub fn options(&self) -> &[CoapOption] {
        &self.options
    }

    /// Every value of the option `number`, in order.
    pub fn option_values(&self, number: u16) -> impl Iterator<Item = &[u8]> {
        self.options
            .iter()
            .filter(move |o| o.number == number)
            .map(|o| o.value.as_slice())
    }

    /// The first value of the option `number`.
    pub fn first_option(&self, number: u16) -> Option<&[u8]> {
        self.option_values(number).next()
    }

    /// Adds one instance of the option `number` after any existing instance.
    pub fn add_option(
        &mut self,
        number: u16,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), OptionTooLong> {
        let value = value.into();
        if value.len() > MAX_OPTION_VALUE_LEN {
            return Err(OptionTooLong {
                number,
                len: value.len(),
            });
        }
        let at = self.options.partition_point(|o| o.number <= number);
        self.options.insert(at, CoapOption { number, value });
        Ok(())
    }

    /// Replaces every instance of the option `number` with one value.
    pub fn set_option(
        &mut self,
        number: u16,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), OptionTooLong> {
        let value = value.into();
        if value.len() > MAX_OPTION_VALUE_LEN {
            return Err(OptionTooLong {
                number,
                len: value.len(),
            });
        }
        self.remove_option(number);
        self.add_option(number, value)
    }

    /// Removes every instance of the option `number`.
    pub fn remove_option(&mut self, number: u16) {
        self.options.retain(|o| o.number != number);
    }

    /// Replaces the option `number` with an unsigned integer in its shortest form (0 is
    /// the empty value, RFC 7252 section 3.2).
    pub fn set_uint_option(&mut self, number: u16, value: u32) {
        self.remove_option(number);
        let at = self.options.partition_point(|o| o.number <= number);
        self.options.insert(
            at,
            CoapOption {
                number,
                value: encode_uint(value),
            },
        );
    }

    /// The single value of a non-repeatable unsigned-integer option of at most `max_len`
    /// bytes; leading zero bytes are accepted.
    pub fn uint_option(&self, number: u16, max_len: usize) -> Result<Option<u32>, OptionError> {
        let Some(value) = self.single(number)? else {
            return Ok(None);
        };
        if value.len() > max_len.min(4) {
            return Err(OptionError::TooLong {
                number,
                len: value.len(),
                max: max_len.min(4),
            });
        }
        Ok(Some(decode_uint(value)))
    }

    /// The Uri-Path segments, e.g. `["topic", "a1pk", "dev", "user", "update"]`.
    pub fn uri_path(&self) -> Result<Vec<&str>, OptionError> {
        self.strings(opt::URI_PATH, 255)
    }

    /// The Uri-Path joined with `/` and a leading `/`; `/` when there is none.
    pub fn uri_path_string(&self) -> Result<String, OptionError> {
        let segments = self.uri_path()?;
        if segments.is_empty() {
            return Ok("/".to_owned());
        }
        let mut s = String::new();
        for seg in segments {
            s.push('/');
            s.push_str(seg);
        }
        Ok(s)
    }

    /// Replaces the Uri-Path with the segments of `path` (split at `/`, a leading `/` ignored).
    pub fn set_uri_path(&mut self, path: &str) -> Result<(), OptionTooLong> {
        self.remove_option(opt::URI_PATH);
        let path = path.strip_prefix('/').unwrap_or(path);
        if path.is_empty() {
            return Ok(());
        }
        for seg in path.split('/') {
            self.add_option(opt::URI_PATH, seg.as_bytes())?;
        }
        Ok(())
    }

    /// The Uri-Query arguments, e.g. `["a=1", "b"]`.
    pub fn uri_query(&self) -> Result<Vec<&str>, OptionError> {
        self.strings(opt::URI_QUERY, 255)
    }

    /// The Content-Format, if present.
    pub fn content_format(&self) -> Result<Option<u16>, OptionError> {
        self.uint16(opt::CONTENT_FORMAT)
    }

    /// Sets the Content-Format.
    pub fn set_content_format(&mut self, format: u16) {
        self.set_uint_option(opt::CONTENT_FORMAT, u32::from(format));
    }

    /// The Accept option, if present.
    pub fn accept(&self) -> Result<Option<u16>, OptionError> {
        self.uint16(opt::ACCEPT)
    }

    /// Sets the Accept option.
    pub fn set_accept(&mut self, format: u16) {
        self.set_uint_option(opt::ACCEPT, u32::from(format));
    }

    /// The Block1 option (request payload block), if present.
    pub fn block1(&self) -> Result<Option<BlockOpt>, OptionError> {
        self.block(opt::BLOCK1)
    }

    /// Sets the Block1 option.
    pub fn set_block1(&mut self, block: BlockOpt) {
        self.set_uint_option(opt::BLOCK1, block.to_uint());
    }

    /// The Block2 option (response payload block), if present.
    pub fn block2(&self) -> Result<Option<BlockOpt>, OptionError> {
        self.block(opt::BLOCK2)
    }

    /// Sets the Block2 option.
    pub fn set_block2(&mut self, block: BlockOpt) {
        self.set_uint_option(opt::BLOCK2, block.to_uint());
    }

    /// Size1: the request body size (in a request) or the largest accepted (in a 4.13).
    pub fn size1(&self) -> Result<Option<u32>, OptionError> {
        self.uint_option(opt::SIZE1, 4)
    }

    /// Sets Size1.
    pub fn set_size1(&mut self, size: u32) {
        self.set_uint_option(opt::SIZE1, size);
    }

    /// Size2: the size of the whole response body.
    pub fn size2(&self) -> Result<Option<u32>, OptionError> {
        self.uint_option(opt::SIZE2, 4)
    }

    /// Sets Size2.
    pub fn set_size2(&mut self, size: u32) {
        self.set_uint_option(opt::SIZE2, size);
    }

    /// The Observe option (RFC 7641): 0 registers, 1 deregisters in a request; a 24-bit
    /// sequence number in a notification.
    pub fn observe(&self) -> Result<Option<u32>, OptionError> {
        self.uint_option(opt::OBSERVE, 3)
    }

    /// Sets the Observe option to the low 24 bits of `value`.
    pub fn set_observe(&mut self, value: u32) {
        self.set_uint_option(opt::OBSERVE, value & 0x00ff_ffff);
    }

    /// Every ETag value (1–8 bytes each).
    pub fn etags(&self) -> Result<Vec<&[u8]>, OptionError> {
        self.option_values(opt::ETAG)
            .map(|v| {
                if (1..=8).contains(&v.len()) {
                    Ok(v)
                } else {
                    Err(OptionError::TooLong {
                        number: opt::ETAG,
                        len: v.len(),
                        max: 8,
                    })
                }
            })
            .collect()
    }

    /// Adds an ETag.
    pub fn add_etag(&mut self, etag: &[u8]) -> Result<(), OptionTooLong> {
        self.add_option(opt::ETAG, etag)
    }

    /// The Alink auth token: option 2088 if present, otherwise option 61 (both numbers are
    /// used by Alibaba's C SDKs; the protocol reference accepts either).
    pub fn alink_token(&self) -> Result<Option<&str>, OptionError> {
        for number in [opt::ALINK_AUTH_TOKEN, opt::ALINK_AUTH_TOKEN_61] {
            if let Some(v) = self.single(number)? {
                return std::str::from_utf8(v)
                    .map(Some)
                    .map_err(|_| OptionError::NotUtf8 { number });
            }
        }
        Ok(None)
    }

    /// The Alink encrypted sequence number (option 2089), still encrypted.
    pub fn alink_seq(&self) -> Result<Option<&[u8]>, OptionError> {
        self.single(opt::ALINK_SEQ)
    }

    /// The first critical option whose number is not in `known` (RFC 7252 section 5.4.1).
    pub fn first_unknown_critical(&self, known: &[u16]) -> Option<u16> {
        self.options
            .iter()
            .map(|o| o.number)
            .find(|&n| opt::is_critical(n) && !known.contains(&n))
    }

    /// Installs options read from the wire, already in wire order.
    pub(crate) fn set_decoded_options(&mut self, options: Vec<CoapOption>) {
        self.options = options;
    }

    fn single(&self, number: u16) -> Result<Option<&[u8]>, OptionError> {
        let mut values = self.option_values(number);
        let first = values.next();
        if values.next().is_some() {
            return Err(OptionError::Repeated { number });
        }
        Ok(first)
    }

    fn uint16(&self, number: u16) -> Result<Option<u16>, OptionError> {
        // A 2-byte value always fits.
        Ok(self
            .uint_option(number, 2)?
            .and_then(|v| u16::try_from(v).ok()))
    }

    fn strings(&self, number: u16, max: usize) -> Result<Vec<&str>, OptionError> {
        self.option_values(number)
            .map(|v| {
                if v.len() > max {
                    return Err(OptionError::TooLong {
                        number,
                        len: v.len(),
                        max,
                    });
                }
                std::str::from_utf8(v).map_err(|_| OptionError::NotUtf8 { number })
            })
            .collect()
    }

    fn block(&self, number: u16) -> Result<Option<BlockOpt>, OptionError> {
        self.uint_option(number, 3)?
            .map(|v| BlockOpt::from_uint(v).ok_or(OptionError::ReservedBlockSize { number }))
            .transpose()
    }
}

/// The shortest big-endian form of `value` (RFC 7252 section 3.2): 0 is empty.
pub(crate) fn encode_uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}

/// A big-endian unsigned integer of at most 4 bytes (the caller checks the length).
fn decode_uint(value: &[u8]) -> u32 {
    value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_parts_and_display() {
        assert_eq!(Code::UNAUTHORIZED.to_byte(), 0x81);
        assert_eq!(Code::CONTENT.to_byte(), 0x45);
        assert_eq!(Code::CONTINUE.to_byte(), 0x5f);
        assert_eq!(Code::REQUEST_ENTITY_TOO_LARGE.to_string(), "4.13");
        assert_eq!(format!("{:?}", Code::POST), "Code(0.02)");
        assert!(Code::POST.is_request() && !Code::POST.is_response());
        assert!(Code::EMPTY.is_empty() && !Code::EMPTY.is_request());
        assert!(Code::new(7, 3).is_reserved() && Code::new(1, 0).is_reserved());
        assert!(Code::BAD_OPTION.is_response());
        assert_eq!(Code::from_byte(0xa0).class(), 5);
    }

    #[test]
    fn token_bounds() {
        assert_eq!(Token::new(&[]).map(|t| t.len()), Ok(0));
        let t = Token::new(&[1, 2, 3, 4, 5, 6, 7, 8]).expect("valid");
        assert_eq!(t.as_bytes(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Token::new(&[0; 9]), Err(TokenTooLong(9)));
        assert_eq!(
            format!("{:?}", Token::new(&[0xab, 1]).expect("valid")),
            "Token(ab01)"
        );
    }

    #[test]
    fn options_stay_sorted_and_repeats_keep_order() {
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 1);
        m.set_content_format(content_format::JSON);
        m.set_uri_path("/topic/a/b").expect("valid");
        m.add_option(opt::ALINK_AUTH_TOKEN, b"tok".to_vec())
            .expect("valid");
        m.set_accept(content_format::OCTET_STREAM);
        let numbers: Vec<u16> = m.options().iter().map(|o| o.number).collect();
        assert_eq!(numbers, [11, 11, 11, 12, 17, 2088]);
        assert_eq!(m.uri_path(), Ok(vec!["topic", "a", "b"]));
        assert_eq!(m.uri_path_string().as_deref(), Ok("/topic/a/b"));
        assert_eq!(m.content_format(), Ok(Some(50)));
        assert_eq!(m.accept(), Ok(Some(42)));
        assert_eq!(m.alink_token(), Ok(Some("tok")));
        m.set_uri_path("/").expect("valid");
        assert_eq!(m.uri_path_string().as_deref(), Ok("/"));
    }

    #[test]
    fn uint_forms() {
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(0x0102), vec![1, 2]);
        assert_eq!(encode_uint(u32::MAX), vec![0xff; 4]);
        let mut m = Message::new(MessageType::Confirmable, Code::GET, 1);
        // Leading zeros are accepted (RFC 7252 section 3.2).
        m.add_option(opt::SIZE1, vec![0, 0, 4, 0]).expect("valid");
        assert_eq!(m.size1(), Ok(Some(1024)));
        m.set_size1(0);
        assert_eq!(m.first_option(opt::SIZE1), Some(&[][..]));
        assert_eq!(m.size1(), Ok(Some(0)));
        m.add_option(opt::CONTENT_FORMAT, vec![1, 2, 3])
            .expect("valid");
        assert_eq!(
            m.content_format(),
            Err(OptionError::TooLong {
                number: 12,
                len: 3,
                max: 2
            })
        );
        m.set_observe(0x0123_4567);
        assert_eq!(m.observe(), Ok(Some(0x23_4567)));
    }

    #[test]
    fn option_errors_map_to_responses() {
        let mut m = Message::new(MessageType::Confirmable, Code::GET, 1);
        m.add_option(opt::ACCEPT, vec![1]).expect("valid");
        m.add_option(opt::ACCEPT, vec![2]).expect("valid");
        let err = m.accept().err();
        assert_eq!(err, Some(OptionError::Repeated { number: 17 }));
        assert_eq!(err.and_then(|e| e.response_code()), Some(Code::BAD_OPTION));
        // Elective: ignored.
        let e = OptionError::TooLong {
            number: opt::CONTENT_FORMAT,
            len: 3,
            max: 2,
        };
        assert_eq!(e.response_code(), None);
        let mut m = Message::new(MessageType::Confirmable, Code::PUT, 1);
        m.add_option(opt::BLOCK1, vec![0x0f]).expect("valid");
        let err = m.block1().err();
        assert_eq!(err, Some(OptionError::ReservedBlockSize { number: 27 }));
        assert_eq!(err.and_then(|e| e.response_code()), Some(Code::BAD_REQUEST));
        m.add_option(opt::URI_PATH, vec![0xff]).expect("valid");
        assert_eq!(m.uri_path(), Err(OptionError::NotUtf8 { number: 11 }));
        assert_eq!(
            m.add_option(1, vec![0; MAX_OPTION_VALUE_LEN + 1]),
            Err(OptionTooLong {
                number: 1,
                len: MAX_OPTION_VALUE_LEN + 1
            })
        );
    }

    #[test]
    fn alink_token_prefers_2088_then_61() {
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 1);
        assert_eq!(m.alink_token(), Ok(None));
        m.add_option(opt::ALINK_AUTH_TOKEN_61, b"old".to_vec())
            .expect("valid");
        assert_eq!(m.alink_token(), Ok(Some("old")));
        m.add_option(opt::ALINK_AUTH_TOKEN, b"new".to_vec())
            .expect("valid");
        assert_eq!(m.alink_token(), Ok(Some("new")));
        m.add_option(opt::ALINK_SEQ, vec![9; 16]).expect("valid");
        assert_eq!(m.alink_seq(), Ok(Some(&[9u8; 16][..])));
    }

    #[test]
    fn unknown_critical_detection() {
        let mut m = Message::new(MessageType::Confirmable, Code::GET, 1);
        m.set_uri_path("a").expect("valid");
        m.add_option(opt::ALINK_AUTH_TOKEN_61, b"t".to_vec())
            .expect("valid");
        assert_eq!(m.first_unknown_critical(opt::KNOWN), None);
        // Elective unknown options are fine.
        m.add_option(2090, vec![]).expect("valid");
        assert_eq!(m.first_unknown_critical(opt::KNOWN), None);
        m.add_option(2091, vec![]).expect("valid");
        m.add_option(opt::PROXY_URI, b"coap://x".to_vec())
            .expect("valid");
        assert_eq!(m.first_unknown_critical(opt::KNOWN), Some(opt::PROXY_URI));
    }

    #[test]
    fn etags_checked() {
        let mut m = Message::new(MessageType::Confirmable, Code::GET, 1);
        m.add_etag(&[1, 2]).expect("valid");
        m.add_etag(&[3]).expect("valid");
        assert_eq!(m.etags(), Ok(vec![&[1u8, 2][..], &[3][..]]));
        m.add_option(opt::ETAG, vec![]).expect("valid");
        assert!(m.etags().is_err());
    }
}
