//! Integration tests of the `lodestone` server: config, CLI, HTTP, TLS, WebSocket, MQTT and
//! the thing model.

mod cli;
mod config;
mod crash;
mod devconfig;
mod dtls;
mod edge;
mod gateway;
mod http;
mod https;
mod interop;
mod mqtt;
mod ota;
mod platform;
mod sdk;
mod shadow;
mod support;
mod thing;
mod tls;
mod ws;
mod x509;
