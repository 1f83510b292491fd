//! State shared by the device handles and the connection task: requests awaiting their
//! replies, handlers, and the routes of subscriptions.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::alink::{Reply, Topics};
use crate::handler::Handlers;
use crate::message::Message;

/// Locks a mutex; a poisoned lock still holds consistent data here (no section panics midway).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request waiting for its `_reply`.
struct Pending {
    reply_topic: String,
    tx: oneshot::Sender<Reply>,
}

/// Where messages matching one subscription go.
struct Route {
    id: u64,
    filter: String,
    tx: mpsc::UnboundedSender<Message>,
}

/// State shared by every [`crate::Device`] clone and the connection task.
pub(crate) struct Shared {
    pub(crate) topics: Topics,
    pub(crate) reply_timeout: Duration,
    next_id: AtomicU64,
    pending: Mutex<HashMap<String, Pending>>,
    raw_waiters: Mutex<VecDeque<oneshot::Sender<Bytes>>>,
    /// Serializes raw uplinks so that waiters queue in publish order.
    pub(crate) raw_order: tokio::sync::Mutex<()>,
    handlers: RwLock<Handlers>,
    routes: Mutex<Vec<Route>>,
    next_route: AtomicU64,
}

impl Shared {
    pub(crate) fn new(topics: Topics, reply_timeout: Duration, handlers: Handlers) -> Shared {
        Shared {
            topics,
            reply_timeout,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            raw_waiters: Mutex::new(VecDeque::new()),
            raw_order: tokio::sync::Mutex::new(()),
            handlers: RwLock::new(handlers),
            routes: Mutex::new(Vec::new()),
            next_route: AtomicU64::new(1),
        }
    }

    /// A fresh Alink message id: decimal digits, unique for this connection.
    pub(crate) fn next_id(&self) -> String {
        self.next_id.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Registers a request; the entry is removed when the guard drops.
    pub(crate) fn expect_reply(
        &self,
        id: String,
        reply_topic: String,
        tx: oneshot::Sender<Reply>,
    ) -> PendingGuard<'_> {
        lock(&self.pending).insert(id.clone(), Pending { reply_topic, tx });
        PendingGuard { shared: self, id }
    }

    /// Hands a reply to its request; false when no request on that topic has its id.
    pub(crate) fn complete(&self, topic: &str, reply: Reply) -> bool {
        let mut pending = lock(&self.pending);
        match pending.get(&reply.id) {
            Some(p) if p.reply_topic == topic => {}
            _ => return false,
        }
        match pending.remove(&reply.id) {
            Some(p) => p.tx.send(reply).is_ok(),
            None => false,
        }
    }

    /// Queues a raw uplink waiting for `up_raw_reply`.
    pub(crate) fn expect_raw_reply(&self, tx: oneshot::Sender<Bytes>) {
        lock(&self.raw_waiters).push_back(tx);
    }

    /// Hands a raw reply to the oldest raw uplink still waiting.
    pub(crate) fn complete_raw(&self, payload: &Bytes) -> bool {
        let mut waiters = lock(&self.raw_waiters);
        while let Some(tx) = waiters.pop_front() {
            if tx.send(payload.clone()).is_ok() {
                return true;
            }
        }
        false
    }

    pub(crate) fn handlers(&self) -> RwLockReadGuard<'_, Handlers> {
        self.handlers.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn handlers_mut(&self) -> RwLockWriteGuard<'_, Handlers> {
        self.handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a route for `filter`; returns its id and receiver.
    pub(crate) fn add_route(&self, filter: String) -> (u64, mpsc::UnboundedReceiver<Message>) {
        let id = self.next_route.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).push(Route { id, filter, tx });
        (id, rx)
    }

    pub(crate) fn remove_route(&self, id: u64) {
        lock(&self.routes).retain(|r| r.id != id);
    }

    /// Sends `msg` to every route whose filter matches; false when none took it.
    pub(crate) fn route(&self, msg: &Message) -> bool {
        let mut routes = lock(&self.routes);
        routes.retain(|r| !r.tx.is_closed());
        let mut delivered = false;
        for r in routes.iter() {
            if lode_mqtt::topic::matches(&r.filter, &msg.topic) && r.tx.send(msg.clone()).is_ok() {
                delivered = true;
            }
        }
        delivered
    }

    /// The connection was lost: requests waiting for replies learn it by their channel
    /// closing. Routes stay, for a reconnection.
    pub(crate) fn fail_pending(&self) {
        lock(&self.pending).clear();
        lock(&self.raw_waiters).clear();
    }

    /// The connection is gone for good: every waiter and route learns it.
    pub(crate) fn close(&self) {
        self.fail_pending();
        lock(&self.routes).clear();
    }
}

/// Removes a pending request when its caller stops waiting.
pub(crate) struct PendingGuard<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pending).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::message::QoS;

    fn shared() -> Shared {
        Shared::new(
            Topics::new("a1PK", "dev01"),
            Duration::from_secs(1),
            Handlers::new(),
        )
    }

    fn reply(id: &str) -> Reply {
        Reply {
            id: id.into(),
            code: 200,
            data: json!({}),
            message: None,
        }
    }

    #[tokio::test]
    async fn replies_match_by_id_and_topic() {
        let s = shared();
        let (tx, rx) = oneshot::channel();
        let guard = s.expect_reply("5".into(), "/t_reply".into(), tx);
        assert!(!s.complete("/other_reply", reply("5")), "wrong topic");
        assert!(!s.complete("/t_reply", reply("6")), "wrong id");
        assert!(s.complete("/t_reply", reply("5")));
        assert_eq!(rx.await.expect("reply").id, "5");
        assert!(!s.complete("/t_reply", reply("5")), "once");
        drop(guard);
        let (tx, _rx) = oneshot::channel();
        drop(s.expect_reply("7".into(), "/t_reply".into(), tx));
        assert!(!s.complete("/t_reply", reply("7")), "guard removed it");
    }

    #[tokio::test]
    async fn raw_replies_go_to_the_oldest_live_waiter() {
        let s = shared();
        let (gone, gone_rx) = oneshot::channel();
        let (tx, rx) = oneshot::channel();
        s.expect_raw_reply(gone);
        s.expect_raw_reply(tx);
        drop(gone_rx);
        assert!(s.complete_raw(&Bytes::from_static(b"x")));
        assert_eq!(&rx.await.expect("raw")[..], b"x");
        assert!(!s.complete_raw(&Bytes::from_static(b"y")));
    }

    #[tokio::test]
    async fn routes_follow_filters_and_close() {
        let s = shared();
        let (id, mut rx) = s.add_route("/a1PK/dev01/user/#".into());
        let msg = |topic: &str| Message {
            topic: topic.into(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
        };
        assert!(s.route(&msg("/a1PK/dev01/user/get")));
        assert!(!s.route(&msg("/a1PK/dev01/other")));
        assert_eq!(rx.recv().await.expect("msg").topic, "/a1PK/dev01/user/get");
        s.remove_route(id);
        assert!(!s.route(&msg("/a1PK/dev01/user/get")));
        let (_id, mut rx) = s.add_route("#".into());
        s.close();
        assert!(rx.recv().await.is_none());
        assert_eq!(s.next_id(), "1");
        assert_eq!(s.next_id(), "2");
    }
}
