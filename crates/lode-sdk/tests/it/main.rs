//! The SDK against a real broker with device sign-in (and a few scripted servers).

mod downlink;
mod keepalive;
mod register;
mod signin;
mod support;
#[cfg(feature = "tls")]
mod tls;
mod uplink;
