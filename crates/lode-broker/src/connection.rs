//! One client connection: CONNECT, then a single task that reads packets, writes
//! queued messages and acknowledgements, and keeps the protocol's promises.
//!
//! Acknowledgements leave in the order their packets arrived. A PUBACK/PUBREC
//! or SUBACK whose effects must be durable waits in `pending` until the store
//! confirms the write (group commit), so the client never holds an
//! acknowledgement for something a crash could lose.
//!
//! Flow control: a publisher whose message pushed an online subscriber's backlog
//! past its limit stops reading its socket until that backlog drains. Nothing
//! accepted is dropped for an online subscriber; the publisher is slowed instead.
//! While paused, the task keeps writing its own outbound traffic, so two clients
//! publishing to each other cannot deadlock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lode_mqtt::{
    ConnAck, ConnAckProperties, Connect, DecodeError, Disconnect, Packet, ProtocolVersion, PubResp,
    Publish, PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck,
    Unsubscribe, Will, topic,
};
use lode_store::Op;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{Instant, Sleep};

use crate::auth::{CloseReason, ConnectRequest, Principal};
use crate::intercept::{Intercept, NotAccepted, Uplink};
use crate::message::{Queued, StoredSub, now_ms};
use crate::session::{Inflight, Session};
use crate::state::{Commit, Inner, message, sub_options};
use crate::stats;
use crate::{BoxFuture, ConnInfo};

/// Bytes of encoded output gathered before the task writes to the socket.
const WRITE_BATCH: usize = 64 * 1024;
/// Buffers larger than this are released when the connection goes idle.
const IDLE_BUFFER: usize = 8 * 1024;
/// How long a connection we close keeps reading (and discarding) what the client
/// still sends. Closing a socket with unread input makes the kernel answer with a
/// reset, which can destroy our DISCONNECT before the client has read it.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// An answer to the client, sent once its durable effects (if any) are committed.
struct Pending {
    /// `None` for a taken QoS 0 publish: nothing to answer, but it holds its place.
    packet: Option<Packet>,
    commit: Option<Commit>,
    /// Retained messages to queue once a SUBACK has been written.
    then_queue: Vec<Queued>,
    /// Whether this answers a QoS 1/2 PUBLISH that is not already counted in the
    /// session's `incoming_qos2` (counts against Receive Maximum until sent).
    publish: bool,
}

/// Topic aliases of one connection (5.0).
#[derive(Default)]
struct Aliases {
    /// Client to server.
    inbound: HashMap<u16, Bytes>,
    /// Server to client.
    outbound: HashMap<Bytes, u16>,
}

/// Why the main loop ended.
enum Close {
    /// The client sent DISCONNECT; `with_will` for reason 0x04.
    Client { with_will: bool },
    /// We end the connection with this reason (sent as DISCONNECT to 5.0 clients).
    Server(ReasonCode),
    /// The transport closed or failed.
    Transport,
}

/// Reads and answers the CONNECT. `None` when the connection ends there.
async fn accept<S>(inner: Arc<Inner>, stream: S, info: ConnInfo) -> Option<Conn<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut rbuf = BytesMut::new();
    let max = inner.config.max_packet_size;
    let first = tokio::select! {
        res = tokio::time::timeout(inner.config.connect_timeout, read_connect(&mut rd, &mut rbuf, max)) => res,
        _ = inner.shutdown.cancelled() => return None,
    };
    let connect = match first {
        Err(_) => {
            stats::inc(&inner.stats.connect_timeouts);
            return None;
        }
        Ok(Err(None)) => return None,
        Ok(Err(Some(error))) => {
            stats::inc(&inner.stats.connects_refused);
            stats::inc(&inner.stats.malformed);
            tracing::debug!(peer = %info.peer, %error, "bad connect");
            if let DecodeError::UnsupportedProtocolVersion(_) = error {
                // The 3.1.1 form (return code 0x01) is the one every client version understands.
                refuse(
                    &mut wr,
                    ProtocolVersion::V311,
                    ReasonCode::UnsupportedProtocolVersion,
                )
                .await;
            }
            return None;
        }
        Ok(Ok(connect)) => connect,
    };
    let conn = Conn::establish(inner.clone(), *connect, &info, rd, wr, rbuf).await;
    match &conn {
        Some(conn) => inner
            .auth
            .connected(&conn.principal, &conn.session.client_id, info.peer),
        None => stats::inc(&inner.stats.connects_refused),
    }
    conn
}

pub(crate) async fn serve<S>(inner: Arc<Inner>, stream: S, info: ConnInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The connect phase is boxed and freed before the connection goes idle, so
    // that a connection's long-lived task holds only what `run` needs.
    let Some(mut conn) = Box::pin(accept(inner.clone(), stream, info)).await else {
        return;
    };
    stats::inc(&inner.stats.connects);
    stats::inc(&inner.stats.connections);
    let close = conn.run().await;
    stats::dec(&inner.stats.connections);
    let finish: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(conn.finish(close));
    finish.await;
}

/// Reads until a whole CONNECT is buffered. `Err(None)` = the transport closed.
async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    max: u32,
) -> Result<Box<Connect>, Option<DecodeError>> {
    loop {
        match lode_mqtt::decode_connect(rbuf, max) {
            Ok(Some(decoded)) => match decoded.packet {
                Packet::Connect(c) => return Ok(c),
                _ => return Err(Some(DecodeError::Protocol("first packet is not CONNECT"))),
            },
            Ok(None) => {}
            Err(e) => return Err(Some(e)),
        }
        rbuf.reserve(256);
        match rd.read_buf(rbuf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
}

async fn refuse<W: AsyncWrite + Unpin>(wr: &mut W, version: ProtocolVersion, code: ReasonCode) {
    let mut buf = BytesMut::new();
    let ack = ConnAck {
        session_present: false,
        code,
        properties: ConnAckProperties::default(),
    };
    lode_mqtt::encode(&Packet::ConnAck(ack), version, &mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = wr.write_all(&buf).await;
        let _ = wr.shutdown().await;
    })
    .await;
}

struct Conn<S> {
    inner: Arc<Inner>,
    session: Arc<Session>,
    generation: u64,
    version: ProtocolVersion,
    principal: Principal,
    peer: std::net::SocketAddr,
    rd: ReadHalf<S>,
    wr: WriteHalf<S>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    keep_alive: Option<Duration>,
    last_packet: Instant,
    pending: VecDeque<Pending>,
    /// Answers to QoS 1/2 publishes not yet sent, for Receive Maximum. A QoS 2
    /// message whose packet id is in `incoming_qos2` is counted there instead, so
    /// that no message counts twice.
    n_pending_publish: usize,
    blocked_on: Option<Arc<Session>>,
    /// When the publisher was paused for `blocked_on`.
    blocked_since: Instant,
    will: Option<Box<Will>>,
    /// Session expiry asked for at CONNECT (a DISCONNECT may not raise it from 0).
    connect_expiry: u32,
    /// Most QoS 1/2 messages we send unacknowledged.
    send_quota: usize,
    client_max_packet: u32,
    next_packet_id: u16,
    /// Topic aliases, allocated on first use (most clients never use them).
    aliases: Option<Box<Aliases>>,
    alias_out_max: u16,
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Validates and authenticates the CONNECT, attaches the session and sends CONNACK.
    async fn establish(
        inner: Arc<Inner>,
        mut connect: Connect,
        info: &ConnInfo,
        rd: ReadHalf<S>,
        mut wr: WriteHalf<S>,
        rbuf: BytesMut,
    ) -> Option<Conn<S>> {
        let cfg = &inner.config;
        let version = connect.protocol;
        let v5 = version.is_v5();
        let mut props = ConnAckProperties::default();

        if inner.shutdown.is_cancelled() {
            refuse(&mut wr, version, ReasonCode::ServerUnavailable).await;
            return None;
        }
        if connect.properties.authentication_method.is_some() {
            refuse(&mut wr, version, ReasonCode::BadAuthenticationMethod).await;
            return None;
        }
        if connect.client_id.is_empty() {
            if !v5 && !connect.clean_start {
                refuse(&mut wr, version, ReasonCode::ClientIdentifierNotValid).await;
                return None;
            }
            connect.client_id = format!(
                "lodestone-{:016x}",
                inner.next_generation() ^ now_ms().rotate_left(17)
            );
            if v5 {
                props.assigned_client_identifier = Some(connect.client_id.clone());
            }
        }

        let mut keep_alive = connect.keep_alive;
        if let Some((lo, hi)) = cfg.keep_alive_range
            && (keep_alive < lo || keep_alive > hi)
        {
            match cfg.server_keep_alive {
                Some(server) if v5 => {
                    keep_alive = server;
                    props.server_keep_alive = Some(server);
                }
                _ => {
                    tracing::debug!(client_id = %connect.client_id, keep_alive, "keep alive out of range");
                    refuse(&mut wr, version, ReasonCode::ProtocolError).await;
                    return None;
                }
            }
        }

        if let Some(will) = &connect.will {
            let code =
                if !topic::valid_topic_name(&will.topic) || topic_over_limits(cfg, &will.topic) {
                    Some(ReasonCode::TopicNameInvalid)
                } else if will.qos > cfg.maximum_qos {
                    Some(ReasonCode::QoSNotSupported)
                } else if will.retain && !cfg.retain_available {
                    Some(ReasonCode::RetainNotSupported)
                } else {
                    None
                };
            if let Some(code) = code {
                refuse(&mut wr, version, code).await;
                return None;
            }
        }

        let req = ConnectRequest {
            client_id: &connect.client_id,
            username: connect.username.as_deref(),
            password: connect.password.as_deref(),
            peer: info.peer,
            client_cert: info.client_cert.as_deref(),
            keep_alive,
        };
        let principal = match inner.auth.authenticate(&req).await {
            Ok(p) => p,
            Err(code) => {
                tracing::debug!(client_id = %connect.client_id, peer = %info.peer, ?code, "connect refused");
                refuse(&mut wr, version, code).await;
                return None;
            }
        };
        if let Some(will) = &connect.will
            && !inner.auth.authorize_publish(&principal, &will.topic)
        {
            refuse(&mut wr, version, ReasonCode::NotAuthorized).await;
            return None;
        }
        if let Some(key) = &principal.unique_key {
            inner.claim_unique(key, &connect.client_id).await;
        }

        let max_expiry = cfg.max_session_expiry.as_secs().min(u32::MAX as u64) as u32;
        let expiry = if v5 {
            let asked = connect.properties.session_expiry_interval.unwrap_or(0);
            if asked > max_expiry && asked != u32::MAX
                || (asked == u32::MAX && max_expiry != u32::MAX)
            {
                props.session_expiry_interval = Some(max_expiry);
                max_expiry
            } else {
                asked
            }
        } else if connect.clean_start {
            0
        } else {
            cfg.v3_session_expiry.as_secs().min(u32::MAX as u64) as u32
        };

        let mut ops = Vec::new();
        let attached = inner
            .attach(&connect.client_id, connect.clean_start, expiry, &mut ops)
            .await;
        if !ops.is_empty()
            && let Err(error) = inner.submit(ops).await
        {
            tracing::warn!(%error, "failed to store session at connect");
            stats::inc(&inner.stats.store_errors);
            inner.detach(&attached.session, attached.generation);
            if let Some(key) = &principal.unique_key {
                inner.release_unique(key, &connect.client_id);
            }
            refuse(&mut wr, version, ReasonCode::ServerUnavailable).await;
            return None;
        }

        if inner.shutdown.is_cancelled() {
            // Shutdown began while this client was attaching: it missed the kick.
            inner.detach(&attached.session, attached.generation);
            if let Some(key) = &principal.unique_key {
                inner.release_unique(key, &connect.client_id);
            }
            refuse(&mut wr, version, ReasonCode::ServerShuttingDown).await;
            return None;
        }

        if v5 {
            props.receive_maximum = Some(cfg.receive_maximum);
            props.maximum_packet_size = Some(cfg.max_packet_size);
            props.topic_alias_maximum = Some(cfg.topic_alias_maximum);
            if cfg.maximum_qos != QoS::ExactlyOnce {
                props.maximum_qos = Some(cfg.maximum_qos);
            }
            if !cfg.retain_available {
                props.retain_available = Some(false);
            }
            if !cfg.wildcard_subscriptions {
                props.wildcard_subscription_available = Some(false);
            }
            if !cfg.subscription_identifiers {
                props.subscription_identifiers_available = Some(false);
            }
            if !cfg.shared_subscriptions {
                props.shared_subscription_available = Some(false);
            }
        }
        let ack = ConnAck {
            session_present: attached.present,
            code: ReasonCode::Success,
            properties: props,
        };
        let mut wbuf = BytesMut::new();
        lode_mqtt::encode(&Packet::ConnAck(ack), version, &mut wbuf);

        let client_receive_max = connect
            .properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .max(1);
        let mut conn = Conn {
            send_quota: client_receive_max.min(cfg.max_inflight.max(1)) as usize,
            client_max_packet: connect.properties.maximum_packet_size.unwrap_or(u32::MAX),
            alias_out_max: if v5 {
                connect.properties.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
            inner: inner.clone(),
            session: attached.session,
            generation: attached.generation,
            version,
            principal,
            peer: info.peer,
            rd,
            wr,
            rbuf,
            wbuf,
            keep_alive: (keep_alive > 0).then(|| Duration::from_millis(keep_alive as u64 * 1500)),
            last_packet: Instant::now(),
            pending: VecDeque::new(),
            n_pending_publish: 0,
            blocked_on: None,
            blocked_since: Instant::now(),
            will: connect.will.take().map(Box::new),
            connect_expiry: expiry,
            next_packet_id: 0,
            aliases: None,
        };
        conn.resend_inflight();
        let auto = std::mem::take(&mut conn.principal.auto_subscriptions);
        if !auto.is_empty() {
            inner.auto_subscribe(&conn.session, &auto);
        }
        let greetings = std::mem::take(&mut conn.principal.greetings);
        if !greetings.is_empty() {
            let mut st = conn.session.state.lock();
            for (topic, payload) in greetings {
                let msg = message(
                    Bytes::from(topic),
                    payload,
                    QoS::AtMostOnce,
                    false,
                    PublishProperties::default(),
                    0,
                );
                st.queue.push_back(Queued {
                    msg: Arc::new(msg),
                    qos: QoS::AtMostOnce,
                    retain: false,
                    identifiers: Vec::new(),
                    seq: None,
                    deadline: None,
                });
            }
        }
        Some(conn)
    }

    /// Resends what the previous connection left unacknowledged: PUBLISH with DUP,
    /// or PUBREL for QoS 2 messages already received by the client.
    fn resend_inflight(&mut self) {
        let session = self.session.clone();
        let st = session.state.lock();
        for f in &st.inflight {
            if f.released {
                let packet = Packet::PubRel(PubResp::new(f.packet_id, ReasonCode::Success));
                lode_mqtt::encode(&packet, self.version, &mut self.wbuf);
            } else {
                let item = f.item.clone();
                self.encode_publish(&item, Some(f.packet_id), true, now_ms());
            }
        }
    }

    async fn run(&mut self) -> Close {
        let session = self.session.clone();
        let inner = self.inner.clone();
        let mut ka_timer: Option<std::pin::Pin<Box<Sleep>>> =
            self.keep_alive.map(|ka| Box::pin(tokio::time::sleep(ka)));
        loop {
            if let Some(close) = self.kicked() {
                return close;
            }
            self.send_ready_answers();
            self.fill();
            let can_read = self.blocked_on.is_none()
                && self.pending.len() < 4 * inner.config.receive_maximum.max(16) as usize
                && self.wbuf.len() < inner.config.max_write_backlog;
            let blocked = self.blocked_on.clone();
            tokio::select! {
                biased;
                _ = session.wake.notified() => {}
                res = self.wr.write_buf(&mut self.wbuf), if !self.wbuf.is_empty() => match res {
                    Ok(0) | Err(_) => return Close::Transport,
                    Ok(n) => {
                        stats::add(&inner.stats.bytes_sent, n as u64);
                        if self.wbuf.is_empty() && self.wbuf.capacity() > IDLE_BUFFER {
                            self.wbuf = BytesMut::new();
                        }
                    }
                },
                res = wait_commit(&mut self.pending) => {
                    if let Err(error) = res {
                        stats::inc(&inner.stats.store_errors);
                        tracing::error!(%error, client_id = %session.client_id, "durable write failed");
                        return Close::Server(ReasonCode::ImplementationSpecificError);
                    }
                }
                _ = wait_space(blocked.as_deref(), inner.config.max_queued_messages), if blocked.is_some() => {
                    self.check_unblocked();
                    // Packets read before the pause are still buffered.
                    if self.blocked_on.is_none()
                        && let Some(close) = self.process_input()
                    {
                        return close;
                    }
                }
                _ = tokio::time::sleep_until(self.blocked_since + inner.config.slow_subscriber_timeout), if blocked.is_some() => {
                    if let Some(target) = self.blocked_on.take() {
                        self.disconnect_slow(&target);
                    }
                    if let Some(close) = self.process_input() {
                        return close;
                    }
                }
                res = self.rd.read_buf(&mut self.rbuf), if can_read => match res {
                    Ok(0) | Err(_) => return Close::Transport,
                    Ok(n) => {
                        stats::add(&inner.stats.bytes_received, n as u64);
                        self.last_packet = Instant::now();
                        if let Some(close) = self.process_input() {
                            return close;
                        }
                        if self.rbuf.is_empty() && self.rbuf.capacity() > IDLE_BUFFER {
                            self.rbuf = BytesMut::new();
                        } else if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                            self.rbuf.reserve(if n >= 1024 { 32 * 1024 } else { 1024 });
                        }
                    }
                },
                _ = async { ka_timer.as_mut().expect("guarded by is_some").await }, if ka_timer.is_some() => {
                    let ka = self.keep_alive.expect("timer exists only with keep alive");
                    let deadline = self.last_packet + ka;
                    if deadline <= Instant::now() {
                        stats::inc(&inner.stats.keepalive_timeouts);
                        return Close::Server(ReasonCode::KeepAliveTimeout);
                    }
                    if let Some(timer) = ka_timer.as_mut() {
                        timer.as_mut().reset(deadline);
                    }
                }
            }
        }
    }

    fn kicked(&self) -> Option<Close> {
        let st = self.session.state.lock();
        if st.generation != self.generation {
            return Some(Close::Server(ReasonCode::SessionTakenOver));
        }
        st.kick.map(Close::Server)
    }

    /// Ends the connection of a subscriber that stopped reading while this publisher
    /// waited for it. Its session (if persistent) keeps its queue within the offline bound.
    fn disconnect_slow(&self, target: &Arc<Session>) {
        let attached = {
            let mut st = target.state.lock();
            if st.generation != 0 {
                st.kick = Some(ReasonCode::QuotaExceeded);
            }
            st.generation != 0
        };
        if attached {
            stats::inc(&self.inner.stats.slow_subscribers);
            tracing::warn!(client_id = %target.client_id, "disconnecting a subscriber that stopped reading");
            target.wake.notify_one();
        }
    }

    fn check_unblocked(&mut self) {
        if let Some(target) = &self.blocked_on {
            let st = target.state.lock();
            if st.ended
                || st.generation == 0
                || st.queue.len() <= self.inner.config.max_queued_messages
            {
                drop(st);
                self.blocked_on = None;
            }
        }
    }

    /// Decodes and handles every whole packet in the read buffer.
    fn process_input(&mut self) -> Option<Close> {
        loop {
            match lode_mqtt::decode(
                &mut self.rbuf,
                self.version,
                self.inner.config.max_packet_size,
            ) {
                Ok(None) => return None,
                Ok(Some(decoded)) => {
                    if let Some(close) = self.handle(decoded.packet) {
                        return Some(close);
                    }
                    if self.blocked_on.is_some() {
                        // Stop taking input until the slow subscriber catches up.
                        return None;
                    }
                }
                Err(error) => {
                    tracing::debug!(client_id = %self.session.client_id, %error, "bad packet");
                    let code = error.reason_code();
                    if code == ReasonCode::MalformedPacket || code == ReasonCode::PacketTooLarge {
                        stats::inc(&self.inner.stats.malformed);
                    } else {
                        stats::inc(&self.inner.stats.protocol_errors);
                    }
                    return Some(Close::Server(code));
                }
            }
        }
    }

    fn handle(&mut self, packet: Packet) -> Option<Close> {
        match packet {
            Packet::Publish(p) => self.on_publish(p).err(),
            Packet::PubAck(a) => {
                self.on_ack(a.packet_id, QoS::AtLeastOnce);
                None
            }
            Packet::PubRec(r) => {
                self.on_pubrec(r);
                None
            }
            Packet::PubRel(r) => {
                let known = self.session.state.lock().incoming_qos2.remove(&r.packet_id);
                let code = if known || !self.version.is_v5() {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.answer(
                    Packet::PubComp(PubResp::new(r.packet_id, code)),
                    None,
                    Vec::new(),
                    false,
                );
                None
            }
            Packet::PubComp(c) => {
                self.on_ack(c.packet_id, QoS::ExactlyOnce);
                None
            }
            Packet::Subscribe(s) => self.on_subscribe(s).err(),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                None
            }
            Packet::PingReq => {
                self.answer(Packet::PingResp, None, Vec::new(), false);
                None
            }
            Packet::Disconnect(d) => Some(self.on_disconnect(d)),
            Packet::Auth(_) => {
                stats::inc(&self.inner.stats.protocol_errors);
                Some(Close::Server(ReasonCode::ProtocolError))
            }
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => {
                stats::inc(&self.inner.stats.protocol_errors);
                Some(Close::Server(ReasonCode::ProtocolError))
            }
        }
    }

    fn answer(
        &mut self,
        packet: Packet,
        commit: Option<Commit>,
        then_queue: Vec<Queued>,
        publish: bool,
    ) {
        if publish {
            self.n_pending_publish += 1;
        }
        self.pending.push_back(Pending {
            packet: Some(packet),
            commit,
            then_queue,
            publish,
        });
    }

    fn on_publish(&mut self, mut p: Publish) -> Result<(), Close> {
        let inner = self.inner.clone();
        let cfg = &inner.config;
        stats::inc(&inner.stats.publish_received);

        if let Some(alias) = p.properties.topic_alias {
            if alias == 0 || alias > cfg.topic_alias_maximum {
                return Err(Close::Server(ReasonCode::TopicAliasInvalid));
            }
            if p.topic.is_empty() {
                match self.aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
                    Some(topic) => p.topic = topic.clone(),
                    None => return Err(Close::Server(ReasonCode::ProtocolError)),
                }
            } else {
                self.aliases
                    .get_or_insert_with(Box::default)
                    .inbound
                    .insert(alias, p.topic.clone());
            }
        }
        let topic = match std::str::from_utf8(&p.topic) {
            Ok(t) if !t.is_empty() && topic::valid_topic_name(t) && !topic_over_limits(cfg, t) => {
                t.to_owned()
            }
            _ => return Err(Close::Server(ReasonCode::TopicNameInvalid)),
        };
        if p.qos > cfg.maximum_qos {
            return Err(Close::Server(ReasonCode::QoSNotSupported));
        }
        if p.retain && !cfg.retain_available {
            return Err(Close::Server(ReasonCode::RetainNotSupported));
        }
        let packet_id = p.packet_id.unwrap_or(0);
        let resend = p.qos == QoS::ExactlyOnce
            && self.session.state.lock().incoming_qos2.contains(&packet_id);
        if p.qos != QoS::AtMostOnce && self.version.is_v5() && !resend {
            let unacked = self.n_pending_publish + self.session.state.lock().incoming_qos2.len();
            if unacked >= cfg.receive_maximum as usize {
                return Err(Close::Server(ReasonCode::ReceiveMaximumExceeded));
            }
        }
        if resend {
            // A resend of a message we already took: acknowledge again, route nothing.
            // It already counts against Receive Maximum through `incoming_qos2`.
            self.answer(
                Packet::PubRec(PubResp::new(packet_id, ReasonCode::Success)),
                None,
                Vec::new(),
                false,
            );
            return Ok(());
        }

        if !inner.auth.authorize_publish(&self.principal, &topic) {
            stats::inc(&inner.stats.publish_unauthorized);
            tracing::debug!(client_id = %self.session.client_id, topic, "publish not authorized");
            let code = if self.version.is_v5() {
                ReasonCode::NotAuthorized
            } else {
                ReasonCode::Success
            };
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.answer(
                    Packet::PubAck(PubResp::new(packet_id, code)),
                    None,
                    Vec::new(),
                    true,
                ),
                QoS::ExactlyOnce => {
                    let taken = code == ReasonCode::Success;
                    if taken {
                        self.session.state.lock().incoming_qos2.insert(packet_id);
                    }
                    self.answer(
                        Packet::PubRec(PubResp::new(packet_id, code)),
                        None,
                        Vec::new(),
                        !taken,
                    );
                }
            }
            return Ok(());
        }

        let mut taken = None;
        {
            let uplink = Uplink {
                principal: &self.principal,
                client_id: &self.session.client_id,
                peer: self.peer,
                topic: &topic,
                payload: &p.payload,
                qos: p.qos,
            };
            match inner.intercept(uplink) {
                Intercept::Route => {}
                Intercept::Take(accepted) => {
                    stats::inc(&inner.stats.publish_taken);
                    self.take(p.qos, packet_id, accepted);
                    return Ok(());
                }
                Intercept::TakeAndRoute(accepted) => {
                    stats::inc(&inner.stats.publish_taken);
                    taken = Some(accepted_commit(accepted));
                }
            }
        }

        let msg = Arc::new(message(
            p.topic,
            p.payload,
            p.qos,
            p.retain,
            p.properties,
            self.session.id,
        ));
        let mut ops = Vec::new();
        if msg.retain {
            ops.push(inner.retain(&msg, &topic));
        }
        let mut own = Vec::new();
        let defer_own = (p.qos != QoS::AtMostOnce).then_some(&mut own);
        let (matched, blocked) = inner.route(&msg, &topic, &mut ops, defer_own);
        inner.tap(
            &msg,
            &topic,
            Some(crate::TapClient {
                client_id: &self.session.client_id,
                identity: self.principal.unique_key.as_deref(),
                peer: self.peer,
            }),
        );
        if blocked.is_some() {
            if self.blocked_on.is_none() {
                self.blocked_since = Instant::now();
            }
            self.blocked_on = blocked;
        }
        let code = if matched == 0 && taken.is_none() && self.version.is_v5() {
            ReasonCode::NoMatchingSubscribers
        } else {
            ReasonCode::Success
        };
        match p.qos {
            QoS::AtMostOnce => {
                inner.submit_nowait(ops);
                if let Some(accepted) = taken {
                    self.pending.push_back(Pending {
                        packet: None,
                        commit: Some(accepted),
                        then_queue: Vec::new(),
                        publish: false,
                    });
                }
            }
            QoS::AtLeastOnce => {
                let commit = both((!ops.is_empty()).then(|| inner.submit(ops)), taken);
                self.answer(
                    Packet::PubAck(PubResp::new(packet_id, code)),
                    commit,
                    own,
                    true,
                );
            }
            QoS::ExactlyOnce => {
                self.session.state.lock().incoming_qos2.insert(packet_id);
                let commit = both((!ops.is_empty()).then(|| inner.submit(ops)), taken);
                // Counted through `incoming_qos2` until PUBREL.
                self.answer(
                    Packet::PubRec(PubResp::new(packet_id, code)),
                    commit,
                    own,
                    false,
                );
            }
        }
        Ok(())
    }

    /// Answers a publish the platform took once it is accepted.
    fn take(
        &mut self,
        qos: QoS,
        packet_id: u16,
        accepted: BoxFuture<'static, Result<(), NotAccepted>>,
    ) {
        let commit = accepted_commit(accepted);
        match qos {
            QoS::AtMostOnce => self.pending.push_back(Pending {
                packet: None,
                commit: Some(commit),
                then_queue: Vec::new(),
                publish: false,
            }),
            QoS::AtLeastOnce => self.answer(
                Packet::PubAck(PubResp::new(packet_id, ReasonCode::Success)),
                Some(commit),
                Vec::new(),
                true,
            ),
            QoS::ExactlyOnce => {
                self.session.state.lock().incoming_qos2.insert(packet_id);
                self.answer(
                    Packet::PubRec(PubResp::new(packet_id, ReasonCode::Success)),
                    Some(commit),
                    Vec::new(),
                    false,
                );
            }
        }
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) from the client: the message is delivered.
    fn on_ack(&mut self, packet_id: u16, qos: QoS) {
        let mut st = self.session.state.lock();
        let pos = st.inflight.iter().position(|f| {
            f.packet_id == packet_id && f.item.qos == qos && (qos == QoS::AtLeastOnce || f.released)
        });
        let Some(pos) = pos else { return };
        let Some(done) = st.inflight.remove(pos) else {
            return;
        };
        drop(st);
        if let Some(seq) = done.item.seq {
            self.inner.submit_nowait(vec![Op::Dequeue {
                client_id: self.session.client_id.to_string(),
                seq,
            }]);
        }
    }

    fn on_pubrec(&mut self, r: PubResp) {
        let mut st = self.session.state.lock();
        let Some(pos) = st
            .inflight
            .iter()
            .position(|f| f.packet_id == r.packet_id && f.item.qos == QoS::ExactlyOnce)
        else {
            drop(st);
            if self.version.is_v5() {
                let rel = PubResp::new(r.packet_id, ReasonCode::PacketIdentifierNotFound);
                lode_mqtt::encode(&Packet::PubRel(rel), self.version, &mut self.wbuf);
            }
            return;
        };
        if r.code.is_error() {
            // The receiver refused the message: it is done, unsuccessfully.
            let done = st.inflight.remove(pos);
            drop(st);
            if let Some(seq) = done.and_then(|d| d.item.seq) {
                self.inner.submit_nowait(vec![Op::Dequeue {
                    client_id: self.session.client_id.to_string(),
                    seq,
                }]);
            }
            return;
        }
        st.inflight[pos].released = true;
        drop(st);
        let rel = PubResp::new(r.packet_id, ReasonCode::Success);
        lode_mqtt::encode(&Packet::PubRel(rel), self.version, &mut self.wbuf);
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        let inner = self.inner.clone();
        let cfg = &inner.config;
        if s.subscription_identifier.is_some() && !cfg.subscription_identifiers {
            return Err(Close::Server(
                ReasonCode::SubscriptionIdentifiersNotSupported,
            ));
        }
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let mut changed = false;
        for (idx, (filter, options)) in s.filters.iter().enumerate() {
            let code = if idx >= cfg.max_topics_per_subscribe {
                ReasonCode::QuotaExceeded
            } else {
                match self.subscribe_one(filter, options, s.subscription_identifier, &mut retained)
                {
                    Ok(code) => {
                        changed = true;
                        code
                    }
                    Err(Close::Server(ReasonCode::ProtocolError)) => {
                        return Err(Close::Server(ReasonCode::ProtocolError));
                    }
                    Err(Close::Server(code)) => code,
                    Err(other) => return Err(other),
                }
            };
            if code.is_error() {
                stats::inc(&inner.stats.subscribe_refused);
            }
            codes.push(code);
        }
        let commit = self.persist_session_if(changed);
        let ack = SubAck {
            packet_id: s.packet_id,
            codes,
            reason_string: None,
            user_properties: Vec::new(),
        };
        self.answer(Packet::SubAck(ack), commit, retained, false);
        Ok(())
    }

    fn subscribe_one(
        &mut self,
        full: &str,
        options: &lode_mqtt::SubscriptionOptions,
        identifier: Option<u32>,
        retained: &mut Vec<Queued>,
    ) -> Result<ReasonCode, Close> {
        let cfg = &self.inner.config;
        let (group, filter) = match topic::parse_shared(full) {
            Some(Ok((group, filter))) => {
                if !cfg.shared_subscriptions {
                    return Err(Close::Server(ReasonCode::SharedSubscriptionsNotSupported));
                }
                if options.no_local && self.version.is_v5() {
                    return Err(Close::Server(ReasonCode::ProtocolError));
                }
                (Some(group), filter)
            }
            Some(Err(_)) => return Err(Close::Server(ReasonCode::TopicFilterInvalid)),
            None => (None, full),
        };
        if !topic::valid_topic_filter(filter) || topic_over_limits(cfg, filter) {
            return Err(Close::Server(ReasonCode::TopicFilterInvalid));
        }
        if !cfg.wildcard_subscriptions && (filter.contains('+') || filter.contains('#')) {
            return Err(Close::Server(ReasonCode::WildcardSubscriptionsNotSupported));
        }
        if let Some(code) = self.inner.auth.check_subscribe(&self.principal, filter) {
            tracing::debug!(client_id = %self.session.client_id, filter, ?code, "subscribe refused");
            return Err(Close::Server(code));
        }
        let qos = options.qos.min(cfg.maximum_qos);
        let sub = StoredSub {
            filter: full.to_owned(),
            qos: qos as u8,
            no_local: options.no_local,
            retain_as_published: options.retain_as_published,
            retain_handling: options.retain_handling as u8,
            identifier,
        };
        {
            let mut st = self.session.state.lock();
            if !st.subscriptions.contains_key(full)
                && st.subscriptions.len() >= cfg.max_subscriptions_per_client
            {
                return Err(Close::Server(ReasonCode::QuotaExceeded));
            }
            st.subscriptions.insert(full.to_owned(), sub.clone());
        }
        let existed = self.inner.subscribe(&self.session, &sub);
        let send_retained = group.is_none()
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        if send_retained {
            retained.extend(
                self.inner
                    .retained_for(filter, &sub_options(&sub), identifier),
            );
        }
        Ok(ReasonCode::granted(qos))
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        let mut changed = false;
        for filter in &u.filters {
            let had = self
                .session
                .state
                .lock()
                .subscriptions
                .remove(filter)
                .is_some();
            let removed = self.inner.unsubscribe(&self.session, filter);
            changed |= had;
            codes.push(if had || removed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        let commit = self.persist_session_if(changed);
        let ack = UnsubAck {
            packet_id: u.packet_id,
            codes,
            reason_string: None,
            user_properties: Vec::new(),
        };
        self.answer(Packet::UnsubAck(ack), commit, Vec::new(), false);
    }

    fn persist_session_if(&self, changed: bool) -> Option<Commit> {
        if !changed {
            return None;
        }
        let st = self.session.state.lock();
        if !st.persisted {
            return None;
        }
        let op = Op::PutSession {
            client_id: self.session.client_id.to_string(),
            data: st.record().encode(),
        };
        drop(st);
        Some(self.inner.submit(vec![op]))
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Close {
        if let Some(expiry) = d.session_expiry_interval {
            if self.connect_expiry == 0 && expiry != 0 {
                stats::inc(&self.inner.stats.protocol_errors);
                return Close::Server(ReasonCode::ProtocolError);
            }
            let mut st = self.session.state.lock();
            let was = st.persistent();
            st.expiry_interval = expiry;
            if was && expiry == 0 {
                // Ends with this connection; `detach` ends it and deletes its record.
                st.persisted = true;
            }
        }
        Close::Client {
            with_will: d.code == ReasonCode::DisconnectWithWill,
        }
    }

    /// Encodes answers whose durable effects are committed, in arrival order.
    fn send_ready_answers(&mut self) {
        while self.pending.front().is_some_and(|p| p.commit.is_none()) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if p.publish {
                self.n_pending_publish -= 1;
            }
            if let Some(packet) = &p.packet {
                lode_mqtt::encode(packet, self.version, &mut self.wbuf);
            }
            if !p.then_queue.is_empty() {
                let mut st = self.session.state.lock();
                st.queue.extend(p.then_queue);
            }
        }
    }

    /// Moves queued messages into the write buffer, within the client's receive
    /// maximum and our write batch.
    fn fill(&mut self) {
        let session = self.session.clone();
        let now = now_ms();
        let limit = self.inner.config.max_queued_messages;
        let mut dequeue = Vec::new();
        let mut st = session.state.lock();
        let was_over = st.queue.len() > limit;
        while self.wbuf.len() < WRITE_BATCH {
            let Some(front) = st.queue.front() else { break };
            if front.qos != QoS::AtMostOnce && st.inflight.len() >= self.send_quota {
                break;
            }
            let Some(item) = st.queue.pop_front() else {
                break;
            };
            if item.stale(now) {
                stats::inc(&self.inner.stats.dropped_expired);
                dequeue.extend(item.seq);
                continue;
            }
            let packet_id = if item.qos == QoS::AtMostOnce {
                None
            } else {
                let id = self.alloc_packet_id(&st.inflight);
                Some(id)
            };
            if !self.encode_publish(&item, packet_id, false, now) {
                stats::inc(&self.inner.stats.dropped_too_large);
                dequeue.extend(item.seq);
                continue;
            }
            if let Some(packet_id) = packet_id {
                st.inflight.push_back(Inflight {
                    packet_id,
                    item,
                    released: false,
                });
            }
        }
        let now_under = st.queue.len() <= limit;
        drop(st);
        if was_over && now_under {
            session.space.notify_waiters();
        }
        if !dequeue.is_empty() {
            let client_id = self.session.client_id.to_string();
            self.inner.submit_nowait(
                dequeue
                    .into_iter()
                    .map(|seq| Op::Dequeue {
                        client_id: client_id.clone(),
                        seq,
                    })
                    .collect(),
            );
        }
    }

    fn alloc_packet_id(&mut self, inflight: &VecDeque<Inflight>) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            let id = self.next_packet_id;
            if !inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// Encodes one outgoing PUBLISH. Returns false if it exceeds the client's
    /// maximum packet size (the message is then dropped for this client).
    fn encode_publish(
        &mut self,
        item: &Queued,
        packet_id: Option<u16>,
        dup: bool,
        now: u64,
    ) -> bool {
        let msg = &item.msg;
        let v5 = self.version.is_v5();
        let mut topic = msg.topic.clone();
        let properties = if v5 {
            let mut props: PublishProperties = msg.properties.clone();
            props.message_expiry_interval = msg.remaining_expiry(now);
            props.subscription_identifiers.clone_from(&item.identifiers);
            if self.alias_out_max > 0 {
                let aliases = self.aliases.get_or_insert_with(Box::default);
                match aliases.outbound.get(&topic) {
                    Some(alias) => {
                        props.topic_alias = Some(*alias);
                        topic = Bytes::new();
                    }
                    None if aliases.outbound.len() < self.alias_out_max as usize => {
                        let alias = aliases.outbound.len() as u16 + 1;
                        aliases.outbound.insert(topic.clone(), alias);
                        props.topic_alias = Some(alias);
                    }
                    None => {}
                }
            }
            props
        } else {
            PublishProperties::default()
        };
        let packet = Packet::Publish(Publish {
            dup: dup && item.qos != QoS::AtMostOnce,
            qos: item.qos,
            retain: item.retain,
            topic,
            packet_id,
            payload: msg.payload.clone(),
            properties,
        });
        if self.client_max_packet != u32::MAX
            && lode_mqtt::encoded_len(&packet, self.version) > self.client_max_packet as usize
        {
            return false;
        }
        lode_mqtt::encode(&packet, self.version, &mut self.wbuf);
        stats::inc(&self.inner.stats.publish_sent);
        true
    }

    /// Ends the connection: tells a 5.0 client why, flushes, detaches the session,
    /// and publishes the will when the connection did not end normally.
    async fn finish(mut self, close: Close) {
        let (reason, publish_will) = match close {
            Close::Client { with_will } => (None, with_will),
            Close::Server(code) => (Some(code), true),
            Close::Transport => (None, true),
        };
        if reason.is_some() {
            // Answers whose effects are durable still go out, ahead of the DISCONNECT.
            self.send_ready_answers();
        }
        if let Some(code) = reason
            && self.version.is_v5()
        {
            let d = Disconnect {
                code,
                ..Disconnect::default()
            };
            lode_mqtt::encode(&Packet::Disconnect(d), self.version, &mut self.wbuf);
        }
        if reason.is_some() || matches!(close, Close::Client { .. }) {
            let wr = &mut self.wr;
            let wbuf = &mut self.wbuf;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                if !wbuf.is_empty() {
                    let _ = wr.write_all(wbuf).await;
                }
                let _ = wr.shutdown().await;
            })
            .await;
        }
        let will = if publish_will && !matches!(reason, Some(ReasonCode::ServerShuttingDown)) {
            self.will.take()
        } else {
            None
        };
        let expiry = self.session.state.lock().expiry_interval;
        self.inner.detach(&self.session, self.generation);
        if let Some(key) = &self.principal.unique_key {
            self.inner.release_unique(key, &self.session.client_id);
        }
        let close_reason = match close {
            Close::Client { .. } => CloseReason::Client,
            Close::Server(code) => CloseReason::Server(code),
            Close::Transport => CloseReason::Transport,
        };
        self.inner
            .auth
            .disconnected(&self.principal, &self.session.client_id, close_reason);
        if let Some(will) = will {
            self.publish_will(*will, expiry);
        }
        if reason.is_some() && !self.inner.shutdown.is_cancelled() {
            self.linger().await;
        }
    }

    /// Drains the client's input until it closes its side or [`CLOSE_LINGER`] passes,
    /// so the packets we wrote last are not lost to a reset.
    /// Shutdown cuts it short.
    async fn linger(&mut self) {
        let rd = &mut self.rd;
        let drain = tokio::time::timeout(CLOSE_LINGER, async {
            let mut sink = [0u8; 4096];
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        tokio::select! {
            _ = drain => {}
            _ = self.inner.shutdown.cancelled() => {}
        }
    }

    fn publish_will(&self, will: Will, session_expiry: u32) {
        let delay = will
            .properties
            .will_delay_interval
            .unwrap_or(0)
            .min(session_expiry);
        let props = PublishProperties {
            payload_format_indicator: will.properties.payload_format_indicator,
            message_expiry_interval: will.properties.message_expiry_interval,
            content_type: will.properties.content_type,
            response_topic: will.properties.response_topic,
            correlation_data: will.properties.correlation_data,
            user_properties: will.properties.user_properties,
            ..PublishProperties::default()
        };
        let msg = Arc::new(message(
            Bytes::from(will.topic),
            will.payload,
            will.qos,
            will.retain,
            props,
            0,
        ));
        let inner = self.inner.clone();
        if delay == 0 {
            stats::inc(&inner.stats.wills);
            inner.publish_internal(msg);
            return;
        }
        let session = self.session.clone();
        let generation = self.generation;
        let task_inner = inner.clone();
        inner.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(delay as u64)) => {}
                _ = task_inner.shutdown.cancelled() => return,
            }
            let resumed = {
                let st = session.state.lock();
                !st.ended && st.generation != 0 && st.generation != generation
            };
            if !resumed {
                stats::inc(&task_inner.stats.wills);
                task_inner.publish_internal(msg);
            }
        });
    }
}

/// The platform's acceptance of a taken message, as a commit the answer waits for.
fn accepted_commit(accepted: BoxFuture<'static, Result<(), NotAccepted>>) -> Commit {
    Box::pin(async move {
        accepted
            .await
            .map_err(|e| lode_store::StoreError::Backend(e.to_string()))
    })
}

/// A commit done when both are.
fn both(a: Option<Commit>, b: Option<Commit>) -> Option<Commit> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Box::pin(async move {
            a.await?;
            b.await
        })),
        (a, b) => a.or(b),
    }
}

async fn wait_commit(pending: &mut VecDeque<Pending>) -> Result<(), lode_store::StoreError> {
    match pending.front_mut().and_then(|p| p.commit.as_mut()) {
        Some(commit) => {
            let res = commit.await;
            if res.is_ok() {
                if let Some(front) = pending.front_mut() {
                    front.commit = None;
                }
            } else {
                // Not durable: the answer must never be sent.
                pending.pop_front();
            }
            res
        }
        None => std::future::pending().await,
    }
}

/// Resolves once `session`'s backlog is within `limit` (or it went offline or ended).
async fn wait_space(session: Option<&Session>, limit: usize) {
    let Some(session) = session else {
        return std::future::pending().await;
    };
    loop {
        // Register before looking, so a drain between the look and the wait is not missed.
        let notified = session.space.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let st = session.state.lock();
            if st.ended || st.generation == 0 || st.queue.len() <= limit {
                return;
            }
        }
        notified.await;
    }
}

fn topic_over_limits(cfg: &crate::BrokerConfig, topic: &str) -> bool {
    topic.len() > cfg.max_topic_len || topic.split('/').count() > cfg.max_topic_levels
}
