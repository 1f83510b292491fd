//! The broker's shared state: the session table, the subscription trie, retained
//! messages, durable writes and session expiry.
//!
//! Lock order, to rule out deadlocks: the session table, then the trie, then one
//! session's state. Two session states are never held at once; the retained map
//! is never held together with anything else.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lode_mqtt::{QoS, ReasonCode, RetainHandling, SubscriptionOptions, topic};
use lode_store::{GroupCommit, Op, StoreError};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::BrokerError;
use crate::auth::AuthHook;
use crate::config::BrokerConfig;
use crate::message::{
    Message, Queued, StoredSession, StoredSub, decode_queued, encode_queued, now_ms,
};
use crate::session::{Session, SessionState};
use crate::stats::{self, Stats};
use crate::trie::{SubEntry, Trie};

/// A durable write the caller waits for before acknowledging.
pub(crate) type Commit = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

pub(crate) struct Inner {
    pub(crate) config: BrokerConfig,
    pub(crate) auth: Arc<dyn AuthHook>,
    /// Consulted in the order they were added ([`crate::Broker::add_message_hook`]).
    pub(crate) message_hooks: RwLock<Arc<[Arc<dyn crate::MessageHook>]>>,
    /// Each sees every routed message ([`crate::Broker::add_tap`]).
    pub(crate) taps: RwLock<Arc<[Arc<dyn crate::Tap>]>>,
    pub(crate) stats: Stats,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// Unique identities (`Principal::unique_key`) and the client id holding each.
    unique: Mutex<HashMap<String, Arc<str>>>,
    trie: RwLock<Trie>,
    retained: RwLock<HashMap<String, Arc<Message>>>,
    commit: GroupCommit,
    next_seq: AtomicU64,
    next_id: AtomicU64,
    /// Offline persistent sessions by expiry deadline (ms since the epoch).
    expiries: Mutex<BTreeMap<(u64, u64), Arc<Session>>>,
    expiry_wake: Notify,
}

/// Result of attaching a connection to a session.
pub(crate) struct Attached {
    pub(crate) session: Arc<Session>,
    pub(crate) present: bool,
    pub(crate) generation: u64,
}

impl Inner {
    pub(crate) async fn open(
        config: BrokerConfig,
        store: Arc<dyn lode_store::BrokerStore>,
        auth: Arc<dyn AuthHook>,
    ) -> Result<Arc<Inner>, BrokerError> {
        let snapshot = store.load().await?;
        let inner = Arc::new(Inner {
            config,
            auth,
            message_hooks: RwLock::new(Arc::from(Vec::new())),
            taps: RwLock::new(Arc::from(Vec::new())),
            stats: Stats::default(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            sessions: Mutex::new(HashMap::new()),
            unique: Mutex::new(HashMap::new()),
            trie: RwLock::new(Trie::default()),
            retained: RwLock::new(HashMap::new()),
            commit: GroupCommit::new(store),
            next_seq: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            expiries: Mutex::new(BTreeMap::new()),
            expiry_wake: Notify::new(),
        });
        inner.restore(snapshot)?;
        let reaper = inner.clone();
        inner
            .tracker
            .spawn(async move { reaper.reap_expired().await });
        Ok(inner)
    }

    fn restore(self: &Arc<Self>, snapshot: lode_store::Snapshot) -> Result<(), BrokerError> {
        let now = now_ms();
        let mut max_seq = 0;
        let mut expired = Vec::new();
        for (client_id, data) in &snapshot.sessions {
            let record = StoredSession::decode(data)
                .map_err(|e| BrokerError::Corrupt(format!("session {client_id}: {e}")))?;
            let disconnected_at = record.disconnected_at.unwrap_or(now);
            let session = self.new_session(client_id.as_str().into(), record.expiry_interval);
            {
                let mut st = session.state.lock();
                st.persisted = true;
                st.disconnected_at = Some(disconnected_at);
            }
            let mut trie = self.trie.write();
            for sub in record.subscriptions {
                let (group, filter) = split_shared(&sub.filter);
                trie.insert(group, filter, sub_entry(&session, &sub));
                session
                    .state
                    .lock()
                    .subscriptions
                    .insert(sub.filter.clone(), sub);
            }
            drop(trie);
            let deadline = expiry_deadline(disconnected_at, record.expiry_interval);
            if deadline.is_some_and(|d| d <= now) {
                expired.push(session.clone());
            } else if let Some(deadline) = deadline {
                self.expiries
                    .lock()
                    .insert((deadline, session.id), session.clone());
            }
            self.sessions
                .lock()
                .insert(session.client_id.clone(), session);
        }
        {
            let sessions = self.sessions.lock();
            for (client_id, seq, data) in &snapshot.queued {
                max_seq = max_seq.max(*seq);
                let q = decode_queued(data, Some(*seq)).map_err(|e| {
                    BrokerError::Corrupt(format!("queued message {client_id}/{seq}: {e}"))
                })?;
                match sessions.get(client_id.as_str()) {
                    Some(session) => session.state.lock().queue.push_back(q),
                    None => {
                        let _ = self.commit.submit_nowait(vec![Op::Dequeue {
                            client_id: client_id.clone(),
                            seq: *seq,
                        }]);
                    }
                }
            }
        }
        {
            let mut retained = self.retained.write();
            for (topic, data) in &snapshot.retained {
                let q = decode_queued(data, None).map_err(|e| {
                    BrokerError::Corrupt(format!("retained message on {topic}: {e}"))
                })?;
                retained.insert(topic.clone(), q.msg);
            }
            stats::add(&self.stats.retained, retained.len() as u64);
        }
        self.next_seq.store(max_seq + 1, Ordering::Relaxed);
        for session in expired {
            self.end_session(&session);
        }
        self.refresh_gauges();
        tracing::info!(
            sessions = snapshot.sessions.len(),
            queued = snapshot.queued.len(),
            retained = snapshot.retained.len(),
            "broker state restored"
        );
        Ok(())
    }

    fn new_session(&self, client_id: Arc<str>, expiry_interval: u32) -> Arc<Session> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Arc::new(Session::new(
            id,
            client_id,
            SessionState {
                expiry_interval,
                ..SessionState::default()
            },
        ))
    }

    pub(crate) fn next_generation(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn refresh_gauges(&self) {
        self.stats
            .sessions
            .store(self.sessions.lock().len() as u64, Ordering::Relaxed);
        self.stats
            .subscriptions
            .store(self.trie.read().len() as u64, Ordering::Relaxed);
    }

    pub(crate) fn submit(&self, ops: Vec<Op>) -> Commit {
        Box::pin(self.commit.submit(ops))
    }

    pub(crate) fn submit_nowait(&self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        if let Err(error) = self.commit.submit_nowait(ops) {
            stats::inc(&self.stats.store_errors);
            tracing::warn!(%error, "failed to queue a storage write");
        }
    }

    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        self.commit.flush().await
    }

    /// Attaches a new connection to the session of `client_id`, taking it over from
    /// a connection still attached. Returns the ops that must be durable before CONNACK.
    pub(crate) async fn attach(
        &self,
        client_id: &str,
        clean_start: bool,
        expiry_interval: u32,
        ops: &mut Vec<Op>,
    ) -> Attached {
        let generation = self.next_generation();
        loop {
            let existing = self.sessions.lock().get(client_id).cloned();
            let Some(session) = existing else {
                let session = self.new_session(client_id.into(), expiry_interval);
                {
                    let mut sessions = self.sessions.lock();
                    if sessions.contains_key(client_id) {
                        continue;
                    }
                    let mut st = session.state.lock();
                    st.generation = generation;
                    if st.persistent() {
                        st.persisted = true;
                        ops.push(Op::PutSession {
                            client_id: client_id.to_owned(),
                            data: st.record().encode(),
                        });
                    }
                    drop(st);
                    sessions.insert(session.client_id.clone(), session.clone());
                }
                session.set_online(true);
                self.refresh_gauges();
                return Attached {
                    session,
                    present: false,
                    generation,
                };
            };

            if session.state.lock().ended {
                continue;
            }
            if self.take_over(&session).await {
                continue;
            }

            if clean_start {
                self.end_session(&session);
                continue;
            }
            let mut st = session.state.lock();
            if st.ended {
                continue;
            }
            st.generation = generation;
            st.kick = None;
            let was_persisted = st.persisted;
            st.expiry_interval = expiry_interval;
            st.disconnected_at = None;
            if st.persistent() {
                st.persisted = true;
                ops.push(Op::PutSession {
                    client_id: client_id.to_owned(),
                    data: st.record().encode(),
                });
            } else if was_persisted {
                // The session now ends with this connection: nothing of it stays durable.
                st.persisted = false;
                ops.push(Op::DeleteSession {
                    client_id: client_id.to_owned(),
                });
            }
            drop(st);
            session.set_online(true);
            return Attached {
                session,
                present: true,
                generation,
            };
        }
    }

    /// Detaches the connection `generation` from `session`. A session that does not
    /// outlive its connection ends here; others start their expiry clock.
    pub(crate) fn detach(&self, session: &Arc<Session>, generation: u64) {
        let mut st = session.state.lock();
        if st.generation != generation {
            return;
        }
        st.generation = 0;
        st.kick = None;
        session.set_online(false);
        if !st.persistent() {
            drop(st);
            self.end_session(session);
        } else {
            let now = now_ms();
            st.disconnected_at = Some(now);
            // Messages that can never be delivered later are dropped now: QoS 0
            // messages are not kept for offline sessions.
            st.queue.retain(|q| q.qos != QoS::AtMostOnce);
            let op = Op::PutSession {
                client_id: session.client_id.to_string(),
                data: st.record().encode(),
            };
            if let Some(deadline) = expiry_deadline(now, st.expiry_interval) {
                self.expiries
                    .lock()
                    .insert((deadline, session.id), session.clone());
                self.expiry_wake.notify_one();
            }
            drop(st);
            self.submit_nowait(vec![op]);
        }
        session.detached.notify_waiters();
        session.space.notify_waiters();
    }

    /// Makes `client_id` the holder of the unique identity `key`, ending the
    /// connection of another client id that holds it (0x8E) and waiting for it to go.
    pub(crate) async fn claim_unique(&self, key: &str, client_id: &str) {
        for _ in 0..3 {
            let holder = {
                let mut unique = self.unique.lock();
                match unique.get(key) {
                    Some(holder) if &**holder != client_id => holder.clone(),
                    _ => {
                        unique.insert(key.to_owned(), client_id.into());
                        return;
                    }
                }
            };
            let session = self.sessions.lock().get(&holder).cloned();
            let Some(session) = session else {
                self.unique.lock().remove(key);
                continue;
            };
            self.take_over(&session).await;
            let mut unique = self.unique.lock();
            if unique.get(key).is_some_and(|h| *h == holder) {
                unique.remove(key);
            }
        }
        self.unique.lock().insert(key.to_owned(), client_id.into());
    }

    /// Releases `key` if `client_id` still holds it.
    pub(crate) fn release_unique(&self, key: &str, client_id: &str) {
        let mut unique = self.unique.lock();
        if unique.get(key).is_some_and(|h| &**h == client_id) {
            unique.remove(key);
        }
    }

    /// Ends the connection holding the unique identity `key`, if any, with `reason`.
    pub(crate) fn kick_unique(&self, key: &str, reason: ReasonCode) -> bool {
        let Some(holder) = self.unique.lock().get(key).cloned() else {
            return false;
        };
        self.kick_client(&holder, reason)
    }

    /// Ends the connection of `client_id`, if one is attached, with `reason`.
    pub(crate) fn kick_client(&self, client_id: &str, reason: ReasonCode) -> bool {
        let session = self.sessions.lock().get(client_id).cloned();
        session.is_some_and(|s| s.kick(reason))
    }

    /// Ends the connection attached to `session` (0x8E) and waits until it has
    /// detached. Returns whether one was attached.
    async fn take_over(&self, session: &Arc<Session>) -> bool {
        // Register for the detach notice before kicking, so it cannot be missed.
        let detached = session.detached.notified();
        tokio::pin!(detached);
        detached.as_mut().enable();
        if !session.kick(ReasonCode::SessionTakenOver) {
            return false;
        }
        stats::inc(&self.stats.takeovers);
        if tokio::time::timeout(Duration::from_secs(10), detached)
            .await
            .is_err()
        {
            tracing::warn!(client_id = %session.client_id, "previous connection did not detach in time");
        }
        true
    }

    /// Adds the server-side subscriptions of a connection (no local, no retained).
    pub(crate) fn auto_subscribe(&self, session: &Arc<Session>, subs: &[(String, QoS)]) {
        for (filter, qos) in subs {
            let sub = StoredSub {
                filter: filter.clone(),
                qos: *qos as u8,
                no_local: true,
                retain_as_published: false,
                retain_handling: RetainHandling::DoNotSend as u8,
                identifier: None,
            };
            session
                .state
                .lock()
                .subscriptions
                .insert(filter.clone(), sub.clone());
            self.subscribe(session, &sub);
        }
    }

    /// The attached session of the unique identity `key`.
    fn identity_session(&self, key: &str) -> Option<Arc<Session>> {
        let holder = self.unique.lock().get(key).cloned()?;
        self.sessions.lock().get(&holder).cloned()
    }

    /// Server-side subscriptions added to a connected identity's session.
    pub(crate) fn subscribe_identity(&self, key: &str, subs: &[(String, QoS)]) -> bool {
        let Some(session) = self.identity_session(key) else {
            return false;
        };
        self.auto_subscribe(&session, subs);
        true
    }

    /// Removes subscriptions from a connected identity's session.
    pub(crate) fn unsubscribe_identity(&self, key: &str, filters: &[String]) -> bool {
        let Some(session) = self.identity_session(key) else {
            return false;
        };
        for filter in filters {
            let removed = session.state.lock().subscriptions.remove(filter).is_some();
            if removed {
                self.unsubscribe(&session, filter);
            }
        }
        true
    }

    /// Tells every attached connection to close with `reason` (server shutdown).
    /// Connections wake through their session, so they need no shutdown future of their own.
    pub(crate) fn kick_all(&self, reason: ReasonCode) {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            session.kick(reason);
        }
    }

    /// Removes a session for good: from the table, the trie and the store.
    pub(crate) fn end_session(&self, session: &Arc<Session>) {
        let (subs, persisted) = {
            let mut st = session.state.lock();
            if st.ended {
                return;
            }
            st.ended = true;
            st.queue.clear();
            st.inflight.clear();
            (
                std::mem::take(&mut st.subscriptions),
                std::mem::replace(&mut st.persisted, false),
            )
        };
        {
            let mut sessions = self.sessions.lock();
            if sessions
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                sessions.remove(&session.client_id);
            }
        }
        {
            let mut trie = self.trie.write();
            for filter in subs.keys() {
                let (group, filter) = split_shared(filter);
                trie.remove(group, filter, session);
            }
        }
        if persisted {
            self.submit_nowait(vec![Op::DeleteSession {
                client_id: session.client_id.to_string(),
            }]);
        }
        session.detached.notify_waiters();
        session.space.notify_waiters();
        self.refresh_gauges();
    }

    /// Adds a subscription to the trie. Returns whether it existed before.
    pub(crate) fn subscribe(&self, session: &Arc<Session>, sub: &StoredSub) -> bool {
        let (group, filter) = split_shared(&sub.filter);
        let existed = self
            .trie
            .write()
            .insert(group, filter, sub_entry(session, sub));
        self.stats
            .subscriptions
            .store(self.trie.read().len() as u64, Ordering::Relaxed);
        existed
    }

    /// Removes a subscription from the trie. Returns whether it existed.
    pub(crate) fn unsubscribe(&self, session: &Arc<Session>, full_filter: &str) -> bool {
        let (group, filter) = split_shared(full_filter);
        let removed = self.trie.write().remove(group, filter, session);
        self.stats
            .subscriptions
            .store(self.trie.read().len() as u64, Ordering::Relaxed);
        removed
    }

    /// Subscribers a message on `topic` would reach ([`crate::Broker::subscriber_count`]).
    pub(crate) fn subscriber_count(&self, topic: &str) -> usize {
        self.trie.read().count_matches(topic)
    }

    /// Delivers `msg` to every matching session. Durable enqueues are appended to
    /// `ops`. Returns how many sessions it reached and, if one of them is an online
    /// session whose backlog is over its limit, that session: the publisher must
    /// pause until it drains.
    ///
    /// With `own`, deliveries to the publishing session itself are handed back in it
    /// instead of queued, so the publisher can send them after its acknowledgement
    /// (a client that hears its own message must already hold the PUBACK).
    pub(crate) fn route(
        &self,
        msg: &Arc<Message>,
        topic: &str,
        ops: &mut Vec<Op>,
        mut own: Option<&mut Vec<Queued>>,
    ) -> (usize, Option<Arc<Session>>) {
        let targets = self.trie.read().matches(topic);
        let limit = self.config.max_queued_messages;
        let queued_expiry_ms = self.config.queued_message_expiry.as_millis() as u64;
        let mut matched = 0;
        let mut blocked = None;
        for target in targets {
            if target.options.no_local && target.session.id == msg.origin {
                continue;
            }
            let qos = msg.qos.min(target.options.qos);
            let retain = msg.retain && target.options.retain_as_published;
            let mut st = target.session.state.lock();
            if st.ended {
                continue;
            }
            let online = st.generation != 0;
            if !online {
                if qos == QoS::AtMostOnce {
                    continue;
                }
                if st.queue.len() >= limit {
                    stats::inc(&self.stats.dropped_queue_full);
                    continue;
                }
            }
            let mut queued = Queued {
                msg: msg.clone(),
                qos,
                retain,
                identifiers: target.identifiers,
                seq: None,
                deadline: (!online).then(|| now_ms() + queued_expiry_ms),
            };
            if qos != QoS::AtMostOnce && st.persistent() {
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                queued.seq = Some(seq);
                ops.push(Op::Enqueue {
                    client_id: target.session.client_id.to_string(),
                    seq,
                    data: encode_queued(&queued),
                });
            }
            if target.session.id == msg.origin
                && let Some(own) = own.as_deref_mut()
            {
                own.push(queued);
                matched += 1;
                continue;
            }
            st.queue.push_back(queued);
            let over = online && st.queue.len() > limit;
            drop(st);
            matched += 1;
            if online {
                target.session.wake.notify_one();
            }
            if over && blocked.is_none() {
                stats::inc(&self.stats.backpressure);
                blocked = Some(target.session);
            }
        }
        (matched, blocked)
    }

    /// Stores or clears the retained message of a topic; returns the durable op.
    pub(crate) fn retain(&self, msg: &Arc<Message>, topic: &str) -> Op {
        let mut retained = self.retained.write();
        if msg.payload.is_empty() {
            if retained.remove(topic).is_some() {
                stats::dec(&self.stats.retained);
            }
            Op::DeleteRetained {
                topic: topic.to_owned(),
            }
        } else {
            if retained.insert(topic.to_owned(), msg.clone()).is_none() {
                stats::inc(&self.stats.retained);
            }
            let q = Queued {
                msg: msg.clone(),
                qos: msg.qos,
                retain: true,
                identifiers: Vec::new(),
                seq: None,
                deadline: None,
            };
            Op::PutRetained {
                topic: topic.to_owned(),
                data: encode_queued(&q),
            }
        }
    }

    /// Retained messages matching `filter`, as queue entries for a new subscription.
    pub(crate) fn retained_for(
        &self,
        filter: &str,
        options: &SubscriptionOptions,
        identifier: Option<u32>,
    ) -> Vec<Queued> {
        let now = now_ms();
        let retained = self.retained.read();
        retained
            .iter()
            .filter(|(topic, msg)| topic::matches(filter, topic) && !msg.expired(now))
            .map(|(_, msg)| Queued {
                msg: msg.clone(),
                qos: msg.qos.min(options.qos),
                retain: true,
                identifiers: identifier.into_iter().collect(),
                seq: None,
                deadline: None,
            })
            .collect()
    }

    /// Publishes a will message (or any message from the platform side).
    pub(crate) fn publish_internal(&self, msg: Arc<Message>) {
        let Ok(topic) = std::str::from_utf8(&msg.topic) else {
            return;
        };
        let topic = topic.to_owned();
        let mut ops = Vec::new();
        if msg.retain {
            ops.push(self.retain(&msg, &topic));
        }
        self.route(&msg, &topic, &mut ops, None);
        self.tap(&msg, &topic, None);
        self.submit_nowait(ops);
    }

    /// Hands a routed message to the tap, if one is installed.
    pub(crate) fn tap(&self, msg: &Message, topic: &str, client: Option<crate::TapClient<'_>>) {
        let taps = self.taps.read().clone();
        for tap in taps.iter() {
            tap.on_message(crate::Tapped {
                topic,
                payload: &msg.payload,
                qos: msg.qos,
                retain: msg.retain,
                client,
            });
        }
    }

    /// Asks every message hook, in the order they were added. The message is routed
    /// unless one of them took it ([`crate::Intercept::Take`]); the acknowledgement waits
    /// for every hook's future, in that order.
    pub(crate) fn intercept(&self, uplink: crate::Uplink<'_>) -> crate::Intercept {
        use crate::Intercept;
        let hooks = self.message_hooks.read().clone();
        let mut route = true;
        let mut waits = Vec::new();
        for hook in hooks.iter() {
            match hook.on_publish(uplink) {
                Intercept::Route => {}
                Intercept::Take(f) => {
                    route = false;
                    waits.push(f);
                }
                Intercept::TakeAndRoute(f) => waits.push(f),
            }
        }
        if waits.is_empty() {
            return Intercept::Route;
        }
        let accepted: crate::BoxFuture<'static, Result<(), crate::NotAccepted>> =
            if waits.len() == 1 {
                waits.remove(0)
            } else {
                Box::pin(async move {
                    for f in waits {
                        f.await?;
                    }
                    Ok(())
                })
            };
        if route {
            Intercept::TakeAndRoute(accepted)
        } else {
            Intercept::Take(accepted)
        }
    }

    /// Ends offline sessions whose expiry interval has passed.
    async fn reap_expired(self: Arc<Self>) {
        loop {
            let now = now_ms();
            let due: Vec<Arc<Session>> = {
                let mut expiries = self.expiries.lock();
                let later = expiries.split_off(&(now + 1, 0));
                std::mem::replace(&mut *expiries, later)
                    .into_values()
                    .collect()
            };
            for session in due {
                let end = {
                    let st = session.state.lock();
                    !st.ended
                        && st.generation == 0
                        && st
                            .disconnected_at
                            .and_then(|at| expiry_deadline(at, st.expiry_interval))
                            .is_some_and(|d| d <= now)
                };
                if end {
                    tracing::debug!(client_id = %session.client_id, "session expired");
                    self.end_session(&session);
                }
            }
            let next = self.expiries.lock().keys().next().map(|(d, _)| *d);
            let wait = next.map_or(Duration::from_secs(3600), |d| {
                Duration::from_millis(d.saturating_sub(now_ms()).max(10))
            });
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.expiry_wake.notified() => {}
                _ = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {}
            }
        }
    }

    pub(crate) fn connected(&self) -> usize {
        self.stats.connections.load(Ordering::Relaxed) as usize
    }
}

fn expiry_deadline(disconnected_at: u64, interval: u32) -> Option<u64> {
    (interval != u32::MAX).then(|| disconnected_at + interval as u64 * 1000)
}

/// Splits `$share/group/filter` into its group and filter; a plain filter has no group.
pub(crate) fn split_shared(full: &str) -> (Option<&str>, &str) {
    match topic::parse_shared(full) {
        Some(Ok((group, filter))) => (Some(group), filter),
        _ => (None, full),
    }
}

pub(crate) fn sub_options(sub: &StoredSub) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(sub.qos).unwrap_or_default(),
        no_local: sub.no_local,
        retain_as_published: sub.retain_as_published,
        retain_handling: match sub.retain_handling {
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendAtSubscribe,
        },
    }
}

fn sub_entry(session: &Arc<Session>, sub: &StoredSub) -> SubEntry {
    SubEntry {
        session: session.clone(),
        options: sub_options(sub),
        identifier: sub.identifier,
    }
}

/// Message built from a PUBLISH or a will.
pub(crate) fn message(
    topic: Bytes,
    payload: Bytes,
    qos: QoS,
    retain: bool,
    mut properties: lode_mqtt::PublishProperties,
    origin: u64,
) -> Message {
    let expires_at = properties
        .message_expiry_interval
        .map(|s| now_ms() + s as u64 * 1000);
    properties.topic_alias = None;
    properties.subscription_identifiers.clear();
    properties.message_expiry_interval = None;
    Message {
        topic,
        payload,
        qos,
        retain,
        properties,
        expires_at,
        origin,
    }
}
