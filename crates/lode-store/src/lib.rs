//! Durable broker state behind one trait.
//!
//! The broker keeps sessions, offline message queues and retained messages in
//! memory and writes every change through a [`BrokerStore`]. Values are opaque
//! bytes: the broker owns their encoding, the store owns durability.
//!
//! Architecture invariant: when [`BrokerStore::apply`] returns `Ok`, every op of
//! the batch survives a crash of the process (`kill -9`) and of the machine, and
//! a batch is applied atomically: all of it or none of it.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// A boxed future, so that [`BrokerStore`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One change to durable broker state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Creates or replaces a session's record (subscriptions, expiry, …).
    PutSession { client_id: String, data: Bytes },
    /// Deletes a session and every message queued for it.
    DeleteSession { client_id: String },
    /// Appends a message to a session's queue under a sequence number.
    Enqueue { client_id: String, seq: u64, data: Bytes },
    /// Removes one queued message (it was acknowledged or expired).
    Dequeue { client_id: String, seq: u64 },
    /// Creates or replaces the retained message of a topic.
    PutRetained { topic: String, data: Bytes },
    /// Removes the retained message of a topic.
    DeleteRetained { topic: String },
}

/// Everything read back at start-up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `(client_id, data)` of every session.
    pub sessions: Vec<(String, Bytes)>,
    /// `(client_id, seq, data)` of every queued message, ordered by client then seq.
    pub queued: Vec<(String, u64, Bytes)>,
    /// `(topic, data)` of every retained message.
    pub retained: Vec<(String, Bytes)>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("failed to open store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store is closed")]
    Closed,
}

/// Durable broker state.
pub trait BrokerStore: Send + Sync + 'static {
    /// Applies `ops` in order, atomically and durably.
    fn apply(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Reads all state back (at start-up).
    fn load(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>>;
    /// A short name for logs and metrics (`"embedded"`, `"memory"`, `"postgres"`).
    fn kind(&self) -> &'static str;
}
