//! The signed HTTP management API of Lodestone, as an axum [`Router`] that the
//! server merges into its HTTP listener.
//!
//! - `/api/v1/...`: access keys, products, tags, topic categories, devices,
//!   batch registration jobs, cloud-side publish and broadcast, bearer tokens;
//!   with a thing-model runtime attached ([`ApiState::with_thing`]), the thing
//!   model and data parsing script of products, property set, service calls,
//!   latest values, history, desired values and the device message log.
//!   Every call is authenticated (an AccessKey signature, see [`signing`], or a
//!   bearer token), throttled per account and per client IP, and scoped to the
//!   caller's account: another account's objects do not exist for it.
//! - `GET /api/v1/openapi.json`: the OpenAPI 3.1 document (public).
//! - `POST /auth/register/device`: Alink HTTPS dynamic registration (section
//!   5.1 of the protocol reference), signed with the ProductSecret instead.
//!
//! The server side is the default feature `server`; without it (`default-features
//! = false`) the crate is only [`signing`], with `hmac`, `sha2` and `hex`, for
//! clients such as the command-line tool.
//!
//! Errors are `{"code", "message", "requestId"}` with the status and code
//! decided in one place ([`ApiError::status_and_code`]). Client IPs come from
//! axum's `ConnectInfo<SocketAddr>`: serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`; without it the
//! per-IP quotas are not enforced (the per-account ones are).

#[cfg(feature = "server")]
mod auth;
#[cfg(feature = "server")]
mod config;
#[cfg(feature = "server")]
mod dto;
#[cfg(feature = "server")]
mod error;
#[cfg(feature = "server")]
mod extract;
#[cfg(feature = "server")]
mod jobs;
#[cfg(feature = "server")]
mod routes;
pub mod signing;
#[cfg(feature = "server")]
mod state;
#[cfg(feature = "server")]
mod throttle;

#[cfg(feature = "server")]
pub use config::{ApiConfig, Qps, ThrottleConfig};
#[cfg(feature = "server")]
pub use dto::*;
#[cfg(feature = "server")]
pub use error::{ApiError, ApiResult, ErrorBody, ErrorDetail};
#[cfg(feature = "server")]
pub use state::{ApiState, REQUEST_ID_HEADER, router};
