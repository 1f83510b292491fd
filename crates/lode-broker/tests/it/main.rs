//! Broker integration tests: a real broker on a loopback port, spoken to with raw
//! MQTT packets over real sockets, for both protocol versions.

mod harness;
mod hooks;
mod intercept;
mod persistence;
mod protocol;
mod subscribers;
