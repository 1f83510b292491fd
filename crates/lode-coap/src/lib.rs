//! CoAP device access for Alink devices, the part without I/O: the message codec
//! (RFC 7252), the server's message-layer rules, block-wise transfer (RFC 7959), Observe
//! (RFC 7641), and Alink's CoAP sign-in and symmetric-key payload encryption.
//!
//! - [`decode`] / [`encode`]: datagram ↔ [`Message`], with typed option accessors on
//!   [`Message`] (Uri-Path, Uri-Query, Content-Format, Accept, Block1/Block2, Size1/Size2,
//!   Observe, ETag, and the Alink options 2088/61 and 2089).
//! - [`exchange`]: classifying incoming messages, building piggybacked and separate
//!   responses, refusing unknown critical options, message-id deduplication.
//! - [`block`]: Block1 reassembly under a body limit (1 KB by default, 4.13 over it) and
//!   Block2 slicing.
//! - [`observe`]: observation registry and notification sequence numbers.
//! - [`alink`]: `/auth` parsing and signature checks, the auth reply, the session key, the
//!   AES-128-CBC cipher and the `seq` replay window.
//!
//! Architecture invariant: pure functions and plain state machines. No I/O, no clock (time
//! is an argument), no randomness (tokens and `random` come from the caller), no async.
//! Decoding never panics on any datagram (property tests and a cargo-fuzz target in `fuzz/`).
//!
//! # Why our own codec
//!
//! `coap-lite` was the recommended sans-IO codec, and we read it before deciding. We keep the
//! wire format here because the codec is small (about 150 lines) and the places where we must
//! differ are the ones that matter for a server facing untrusted devices: `coap-lite` accepts a
//! payload marker followed by no payload and an Empty message carrying a token, both message
//! format errors in RFC 7252; it keeps options in a map of linked lists; and its decode errors
//! do not carry what is needed to answer a malformed CON with a matching RST. Owning the codec
//! gives one error type that maps to the RFC's answers, makes every decodable datagram
//! re-encode byte for byte (a property test and the fuzz target check it), and costs no
//! dependency. The cryptography is not ours: RustCrypto's `aes` and `cbc`, and the HMAC
//! signatures of `lode-alink`.
//!
//! # Example: the message layer of a server
//!
//! ```
//! use std::time::Instant;
//! use lode_coap::exchange::{self, DedupCache, Inbound, Seen, Verdict, EXCHANGE_LIFETIME};
//! use lode_coap::{Code, decode, encode, opt, reject_malformed};
//!
//! let mut dedup = DedupCache::new(EXCHANGE_LIFETIME, 10_000);
//! let peer = "192.0.2.1:5683";
//! // CON GET /temperature (RFC 7252, figure 16).
//! let datagram = b"\x40\x01\x7d\x34\xbbtemperature";
//! let reply = match decode(datagram) {
//!     Err(_) => reject_malformed(datagram).map(|m| encode(&m)),
//!     Ok(req) => match exchange::classify(&req) {
//!         Inbound::Ping => Some(encode(&exchange::reset(req.message_id))),
//!         Inbound::Request => match exchange::check_critical_options(&req, opt::KNOWN) {
//!             Verdict::Reply(m) => Some(encode(&m)),
//!             Verdict::Drop => None,
//!             Verdict::Accept => match dedup.check(&peer, req.message_id, Instant::now()) {
//!                 Seen::Replay(bytes) => Some(bytes.to_vec()),
//!                 Seen::Pending | Seen::Unanswered => None,
//!                 Seen::New => {
//!                     let mut resp = exchange::piggybacked(&req, Code::CONTENT);
//!                     resp.payload = b"22.3 C".to_vec();
//!                     let bytes = encode(&resp);
//!                     dedup.complete(&peer, req.message_id, bytes.clone());
//!                     Some(bytes)
//!                 }
//!             },
//!         },
//!         _ => None,
//!     },
//! };
//! assert_eq!(reply.as_deref(), Some(&b"\x60\x45\x7d\x34\xff22.3 C"[..]));
//! ```

pub mod alink;
pub mod block;
mod codec;
pub mod exchange;
mod message;
pub mod observe;

pub use codec::{DecodeError, decode, encode, encode_into, encoded_len, reject_malformed};
pub use message::{
    CoapOption, Code, MAX_OPTION_VALUE_LEN, Message, MessageType, OptionError, OptionTooLong,
    Token, TokenTooLong, content_format, opt,
};

#[cfg(test)]
mod tests;
