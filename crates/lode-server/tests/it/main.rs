//! Integration tests of the `lodestone` server: config, CLI, HTTP, TLS, WebSocket, MQTT and
//! the thing model.

mod cli;
mod config;
mod dtls;
mod edge;
mod http;
mod https;
mod interop;
mod mqtt;
mod platform;
mod sdk;
mod support;
mod thing;
mod tls;
mod ws;
mod x509;
