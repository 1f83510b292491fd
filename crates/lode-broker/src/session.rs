//! Sessions: the state that outlives a connection.
//!
//! A session is owned by the broker's session table. While a client is connected,
//! exactly one connection task is attached to it (`SessionState::generation`
//! names that connection); publishers push into its queue and wake it through
//! `wake`. A connection task that is told to leave (`kick`) moves its in-flight
//! messages back to the front of the queue before it lets go, so a takeover or
//! reconnect resends them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lode_mqtt::ReasonCode;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::message::{Queued, StoredSession, StoredSub};

/// A message sent with a packet identifier and not yet fully acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    pub(crate) packet_id: u16,
    pub(crate) item: Queued,
    /// QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP.
    pub(crate) released: bool,
}

#[derive(Debug, Default)]
pub(crate) struct SessionState {
    /// Subscriptions by their full filter (including a `$share/…` prefix).
    pub(crate) subscriptions: HashMap<String, StoredSub>,
    /// Messages not yet sent.
    pub(crate) queue: VecDeque<Queued>,
    /// Messages sent and not yet acknowledged, oldest first.
    pub(crate) inflight: VecDeque<Inflight>,
    /// QoS 2 packet ids received (PUBREC sent) and not yet released.
    pub(crate) incoming_qos2: HashSet<u16>,
    /// Seconds the session outlives its connection; `u32::MAX` = forever.
    pub(crate) expiry_interval: u32,
    /// Identifies the attached connection; 0 = none attached.
    pub(crate) generation: u64,
    /// Set to tell the attached connection to close with this reason.
    pub(crate) kick: Option<ReasonCode>,
    /// Whether the store holds a record of this session.
    pub(crate) persisted: bool,
    /// When the last connection ended (ms since the epoch).
    pub(crate) disconnected_at: Option<u64>,
    /// Set once the session has been removed from the broker.
    pub(crate) ended: bool,
}

impl SessionState {
    pub(crate) fn persistent(&self) -> bool {
        self.expiry_interval > 0
    }

    pub(crate) fn record(&self) -> StoredSession {
        let mut subscriptions: Vec<StoredSub> = self.subscriptions.values().cloned().collect();
        subscriptions.sort_by(|a, b| a.filter.cmp(&b.filter));
        StoredSession {
            expiry_interval: self.expiry_interval,
            subscriptions,
            disconnected_at: self.disconnected_at,
        }
    }
}

pub(crate) struct Session {
    /// Unique for the life of the process; used for no-local and ordering.
    pub(crate) id: u64,
    pub(crate) client_id: Arc<str>,
    pub(crate) state: Mutex<SessionState>,
    /// Wakes the attached connection: new messages, or a kick.
    pub(crate) wake: Notify,
    /// Wakes publishers waiting for this session's backlog to shrink.
    pub(crate) space: Notify,
    /// Wakes a connection waiting for the previous one to detach.
    pub(crate) detached: Notify,
    online: AtomicBool,
}

impl Session {
    pub(crate) fn new(id: u64, client_id: Arc<str>, state: SessionState) -> Session {
        Session {
            id,
            client_id,
            state: Mutex::new(state),
            wake: Notify::new(),
            space: Notify::new(),
            detached: Notify::new(),
            online: AtomicBool::new(false),
        }
    }

    /// Tells the attached connection, if any, to close with `reason`.
    /// Returns whether a connection was attached.
    pub(crate) fn kick(&self, reason: ReasonCode) -> bool {
        let attached = {
            let mut st = self.state.lock();
            if st.generation != 0 {
                st.kick = Some(reason);
            }
            st.generation != 0
        };
        if attached {
            self.wake.notify_one();
        }
        attached
    }

    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    pub(crate) fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .finish()
    }
}
