//! The rules engine end to end: a real server in-process, devices signed in over MQTT, rules
//! and destinations created through the signed management API, and a local HTTP receiver.

mod support;

mod forward;
mod sinks;
