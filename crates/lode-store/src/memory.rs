//! [`MemoryStore`]: broker state in memory, for tests and for running with
//! persistence off.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use crate::{BoxFuture, BrokerStore, Op, Snapshot, StoreError};

/// Broker state kept in memory only. Batches are atomic; nothing is durable.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sessions: BTreeMap<String, Bytes>,
    queue: BTreeMap<(String, u64), Bytes>,
    retained: BTreeMap<String, Bytes>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn apply_now(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        // Validation is the only way a batch can fail, and it happens before
        // anything changes: batches are all or nothing.
        crate::validate(&ops)?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for op in ops {
            match op {
                Op::PutSession { client_id, data } => {
                    state.sessions.insert(client_id, data);
                }
                Op::DeleteSession { client_id } => {
                    state.sessions.remove(&client_id);
                    let seqs: Vec<u64> = state
                        .queue
                        .range((client_id.clone(), 0)..=(client_id.clone(), u64::MAX))
                        .map(|((_, seq), _)| *seq)
                        .collect();
                    for seq in seqs {
                        state.queue.remove(&(client_id.clone(), seq));
                    }
                }
                Op::Enqueue {
                    client_id,
                    seq,
                    data,
                } => {
                    state.queue.insert((client_id, seq), data);
                }
                Op::Dequeue { client_id, seq } => {
                    state.queue.remove(&(client_id, seq));
                }
                Op::PutRetained { topic, data } => {
                    state.retained.insert(topic, data);
                }
                Op::DeleteRetained { topic } => {
                    state.retained.remove(&topic);
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Snapshot {
            sessions: state
                .sessions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            queued: state
                .queue
                .iter()
                .map(|((c, s), v)| (c.clone(), *s, v.clone()))
                .collect(),
            retained: state
                .retained
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl BrokerStore for MemoryStore {
    fn apply(&self, ops: Vec<Op>) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = self.apply_now(ops);
        Box::pin(std::future::ready(result))
    }

    fn load(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(std::future::ready(Ok(self.snapshot())))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
