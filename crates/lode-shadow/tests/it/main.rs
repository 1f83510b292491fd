//! The shadow end to end over real sockets: devices signed in with their secrets through
//! the Rust device SDK, the broker with the shadow hook and status listener, the registry
//! in SQLite, and the service's API operations.

mod device;
mod harness;
mod service;
