//! Management API integration tests: the router served on 127.0.0.1:0 over a
//! SQLite registry and a real broker (with devices signing in and the
//! thing-model runtime for the thing-model tests), spoken to with a small
//! HTTP/1.1 client.

mod broadcast_limit;
mod groups;
mod harness;
mod messaging;
mod objects;
mod register;
mod security;
mod thing;
