//! MQTT 3.1.1 and 5.0 packet model and codec.
//!
//! This crate is pure: no I/O, no clock, no allocation beyond the packets it returns.
//! [`decode`] turns bytes into a [`Packet`], [`encode`] turns a [`Packet`] into bytes.
//! Both protocol versions share one packet model; fields that exist only in 5.0
//! (properties, reason codes) are simply ignored when encoding for 3.1.1.
//!
//! Architecture invariant: decoding never panics, whatever the input, and every
//! malformed input maps to a [`DecodeError`] that carries the 5.0 reason code the
//! broker sends back before closing the connection.

mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod reader;
pub mod topic;

pub use decode::{Decoded, decode, decode_connect};
pub use encode::{encode, encoded_len};
pub use error::DecodeError;
pub use packet::*;

#[cfg(test)]
mod tests;
