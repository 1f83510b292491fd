//! Device SDK for the Alink protocol over MQTT 3.1.1 (async, tokio).
//!
//! A device signs in with its DeviceSecret (or a token from dynamic registration), posts
//! properties and events and gets the server's replies matched to its requests, and
//! answers property sets, services (async, `/ext/rrpc` and legacy RRPC), raw downlinks and
//! custom-topic RRPC through handlers. Section numbers refer to the Alink protocol reference.
//!
//! - [`DeviceConfig`] and [`Credential`]: the sign-in (clientId options `securemode`,
//!   `signmethod`, `timestamp`, `ext=1`, `_ss=1`; password HMAC; token login).
//! - [`Device`]: a clonable handle. One task owns the socket: it reads, writes, sends
//!   PINGREQ, acknowledges QoS 1 and allocates packet ids; handles queue work for it.
//! - [`Request`] / [`Reply`]: uplinks on `/sys/${pk}/${dn}/...` with their `_reply`,
//!   [`Device::send`] for `sys.ack=0`.
//! - [`Handlers`], [`Call`], [`Response`], [`RawCall`]: downlinks. Handlers run in tasks
//!   of their own; their answers go back through the connection task. A call without a
//!   handler is answered with code 460.
//! - [`Events`]: messages nobody handled, connection loss, reconnection ([`Reconnect`],
//!   off by default) and the end of the connection.
//! - [`register`] and [`register_no_whitelist`] ([`Registration`] for TLS): dynamic
//!   registration over MQTT (section 5.2).
//!
//! TLS (feature `tls`, on by default) uses rustls with the ring provider.
//!
//! A typical device:
//!
//! ```no_run
//! use lode_sdk::{Credential, Device, DeviceConfig, Event, Handlers, Response};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), lode_sdk::SdkError> {
//! let config = DeviceConfig::new(
//!     "iot.example.com",
//!     1883,
//!     "a1TestPK001",
//!     "meter-0001",
//!     Credential::DeviceSecret("DeviceSecretForTest0123456789abc".into()),
//! );
//! let handlers = Handlers::new()
//!     .property_set(|call| async move {
//!         // Apply call.params, e.g. {"Switch":0}, then confirm.
//!         Response::ok(json!({}))
//!     })
//!     .service("Echo", |call| async move { Response::ok(call.params) });
//! let (device, mut events) = Device::connect_with(config, handlers).await?;
//!
//! let reply = device.post_properties(json!({"Temp": 23.5})).await?;
//! assert!(reply.is_success());
//! device.post_event("Alarm", json!({"value": {"Level": 2}})).await?;
//!
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Message(msg) => println!("{}: {} bytes", msg.topic, msg.payload.len()),
//!         Event::ConnectionLost(e) => eprintln!("connection lost: {e}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod alink;
mod config;
mod device;
mod error;
mod handler;
mod message;
mod register;
mod shared;
mod task;
mod transport;

pub use alink::{
    CODE_NOT_SUPPORTED, CODE_REQUEST_ERROR, CODE_SUCCESS, Call, Reply, Request, Response, Via,
};
#[cfg(feature = "tls")]
pub use config::TlsConfig;
pub use config::{Credential, DeviceConfig, Reconnect};
pub use device::{Device, Event, Events, Subscription};
pub use error::SdkError;
pub use handler::{BoxFuture, CallHandler, Handlers, RawCall, RawHandler};
pub use lode_alink::SignMethod;
pub use message::{Message, QoS};
pub use register::{NoWhitelistRegistration, Registration, register, register_no_whitelist};
