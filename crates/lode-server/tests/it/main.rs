//! Integration tests of the `lodestone` server: config, CLI, HTTP, TLS, WebSocket and MQTT.

mod cli;
mod config;
mod http;
mod https;
mod interop;
mod mqtt;
mod platform;
mod sdk;
mod support;
mod tls;
mod ws;
mod x509;
