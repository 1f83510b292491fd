//! Device shadows: a JSON document per device with the state it reported and the state
//! applications want (`desired`), versioned, readable and writable while the device is
//! offline, as in the Alink shadow protocol (`/shadow/update/${pk}/${dn}` up,
//! `/shadow/get/${pk}/${dn}` down).
//!
//! Two layers: [`document`] is the document and every change to it as pure functions
//! (limits, versions, deltas, the reply shapes); [`service`] is the runtime (the broker
//! hook, storage through the registry's `ShadowStore`, the rate limit, pushes of the
//! desired state). The protocol and its choices are described in `docs/shadow.md`.

pub mod document;
pub mod service;

pub use document::{DesiredUpdate, Document, Limits, ShadowError};
pub use service::{ServiceError, ShadowConfig, ShadowService};
