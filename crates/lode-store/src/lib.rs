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

mod embedded;
mod group_commit;
mod keys;
mod memory;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use embedded::EmbeddedStore;
pub use group_commit::{GroupCommit, GroupCommitConfig};
pub use memory::MemoryStore;

/// Longest client id or topic, in UTF-8 bytes, that every backend accepts.
///
/// The embedded engine limits keys to 65 535 bytes and a queue key adds 13
/// bytes to the client id; the limit is kept a little lower and the same for
/// all backends so that they behave alike. Longer ids are rejected with
/// [`StoreError::TooLong`] and the batch is not applied.
pub const MAX_ID_LEN: usize = 65_000;

/// Largest value (session record, message payload), in bytes.
pub const MAX_VALUE_LEN: usize = u32::MAX as usize;

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
    Enqueue {
        client_id: String,
        seq: u64,
        data: Bytes,
    },
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

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("failed to open store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store is closed")]
    Closed,
    /// The embedded engine failed while reading or writing.
    #[error("embedded store at {path}: {action} failed: {reason}")]
    Embedded {
        path: String,
        action: &'static str,
        reason: String,
    },
    /// Stored data could not be decoded.
    #[error("store at {path} holds corrupt data in {keyspace}: {detail}")]
    Corrupt {
        path: String,
        keyspace: &'static str,
        detail: String,
    },
    /// A client id, topic or value exceeds what the store accepts; nothing of
    /// the batch was applied.
    #[error("{what} {preview:?} is {len} bytes long, more than the {max} bytes the store accepts")]
    TooLong {
        what: &'static str,
        /// The first characters of the offending id (empty for values).
        preview: String,
        len: usize,
        max: usize,
    },
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

/// Checks that every op of a batch fits the limits shared by all backends
/// ([`MAX_ID_LEN`], [`MAX_VALUE_LEN`]). Backends call it before applying
/// anything, so that a batch with one bad op is rejected as a whole.
pub fn validate(ops: &[Op]) -> Result<(), StoreError> {
    fn id(what: &'static str, id: &str) -> Result<(), StoreError> {
        if id.len() > MAX_ID_LEN {
            return Err(StoreError::TooLong {
                what,
                preview: id.chars().take(32).collect(),
                len: id.len(),
                max: MAX_ID_LEN,
            });
        }
        Ok(())
    }
    fn value(what: &'static str, data: &Bytes) -> Result<(), StoreError> {
        if data.len() > MAX_VALUE_LEN {
            return Err(StoreError::TooLong {
                what,
                preview: String::new(),
                len: data.len(),
                max: MAX_VALUE_LEN,
            });
        }
        Ok(())
    }
    for op in ops {
        match op {
            Op::PutSession { client_id, data } => {
                id("client id", client_id)?;
                value("session record", data)?;
            }
            Op::DeleteSession { client_id } | Op::Dequeue { client_id, .. } => {
                id("client id", client_id)?;
            }
            Op::Enqueue {
                client_id, data, ..
            } => {
                id("client id", client_id)?;
                value("queued message", data)?;
            }
            Op::PutRetained { topic, data } => {
                id("topic", topic)?;
                value("retained message", data)?;
            }
            Op::DeleteRetained { topic } => id("topic", topic)?,
        }
    }
    Ok(())
}

impl Op {
    /// Approximate number of bytes the op occupies, for batching limits.
    pub fn approx_size(&self) -> usize {
        const OVERHEAD: usize = 24;
        OVERHEAD
            + match self {
                Op::PutSession { client_id, data }
                | Op::Enqueue {
                    client_id, data, ..
                } => client_id.len() + data.len(),
                Op::DeleteSession { client_id } | Op::Dequeue { client_id, .. } => client_id.len(),
                Op::PutRetained { topic, data } => topic.len() + data.len(),
                Op::DeleteRetained { topic } => topic.len(),
            }
    }
}
