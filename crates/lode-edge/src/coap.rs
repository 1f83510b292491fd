//! Alink over CoAP (protocol reference section 9) on a UDP socket.
//!
//! One task owns the socket's message layer: decoding (a malformed CON is answered with RST,
//! anything else malformed is dropped; both are counted), CoAP pings, unknown critical
//! options (4.02), message-id deduplication (a duplicate is answered from the cache, or
//! dropped while its original is still being handled), and Block1 reassembly up to
//! [`crate::EdgeConfig::coap_max_body`] (a bigger body gets 4.13 with Size1).
//! Each request is then handled on its own task, so a slow platform never blocks the socket:
//! a CON answered within [`CoapServer::with_separate_after`] (1 s by default) gets a
//! piggybacked response; a slower one gets an empty ACK at once and a separate CON response
//! later, retransmitted (2 s, doubling, 4 times) until the device acknowledges it.
//!
//! At most 4096 requests are handled at once; more get 5.03 Service Unavailable.
//!
//! Resources:
//!
//! - `POST /auth` (JSON, Content-Format 50): 2.05 with `{"token":".."}`; on the
//!   encrypted-mode socket also `"random"` and `"seqOffset"`.
//! - `POST /topic/${topic}` with the token in option 2088 (or 61): published as an MQTT QoS 0
//!   PUBLISH of the device; 2.04 Changed, 4.01 when the token is missing, expired, invalid or
//!   revoked, 4.03 when the device may not publish there, 5.03 over the rate limit.
//! - `GET /topic/${topic}` with Observe 0 (RFC 7641) and the token, on the plain socket: the
//!   device observes one of its downlink topics (4.03 for a topic it may not subscribe to).
//!   While it observes, the server holds an MQTT session of the device in process (signed in
//!   with its secret through the device hook, so it counts as a connection of the device:
//!   online, one per device, and within the sign-ins-per-minute limit), and each message the
//!   platform publishes there goes to the observer as a NON 2.05 notification (CON once a
//!   day). Observe 1, or a RST to a notification, ends the observation; the session ends
//!   with the device's last observation.
//! - `GET /.well-known/core`: the resources in link format.
//!
//! In the encrypted mode ([`Mode::Encrypted`]) every `/topic` request carries option 2089, the
//! AES-128-CBC encrypted decimal `seq`, and an encrypted payload; the session key is
//! `SHA256(${ds} + "," + random)[8..24]`. Each `seq` is accepted once within a window of 64
//! ([`lode_coap::alink::SeqWindow`]); a replayed, too old or undecryptable `seq` is dropped
//! without an answer and counted. The windows live in memory: after a restart a token's
//! window starts afresh.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lode_coap::alink::{self, AuthReply, AuthRequest, EncryptedGrant, SeqWindow, SessionKey};
use lode_coap::block::{Block1Uploads, BlockOpt, UploadLimits, UploadRefusal, UploadStep};
use lode_coap::exchange::{self, DedupCache, EXCHANGE_LIFETIME, Inbound, Seen, Verdict};
use lode_coap::observe::{ObserveAction, Observers, observe_action};
use lode_coap::{Code, Message, MessageType, Token, content_format, decode, encode, opt};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::feed::{self, Credentials, Downlink, Feed};
use crate::stats::inc;
use crate::{Channel, Edge, SignIn};

/// The first wait for the ACK of a separate response (RFC 7252 ACK_TIMEOUT).
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a separate response is sent again (RFC 7252 MAX_RETRANSMIT).
const MAX_RETRANSMIT: u32 = 4;
/// Message ids remembered for deduplication.
const DEDUP_CAPACITY: usize = 100_000;
/// The largest datagram read; bigger ones are cut by the kernel.
const MAX_DATAGRAM: usize = 65_536;
/// Requests handled at once; more are answered 5.03 Service Unavailable.
const MAX_IN_FLIGHT: usize = 4096;
/// Observations at once over the socket.
const MAX_OBSERVATIONS: usize = 100_000;
/// Encrypted-mode sessions remembered before the oldest half is forgotten.
const MAX_SEQ_SESSIONS: usize = 200_000;

/// Which Alink CoAP flavour a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain payloads (`coap://`, port 5683).
    Plain,
    /// Symmetric-key encrypted payloads (`coap-psk://`, port 5682).
    Encrypted,
}

impl Mode {
    fn channel(self) -> Channel {
        match self {
            Mode::Plain => Channel::Coap,
            Mode::Encrypted => Channel::CoapEncrypted,
        }
    }
}

/// A bound CoAP socket, not yet serving.
#[derive(Debug)]
pub struct CoapServer {
    shared: Arc<Shared>,
    downlinks: mpsc::UnboundedReceiver<Downlink>,
    tunnel: Option<TunnelIn>,
}

/// Where the message layer's datagrams come from and go to.
#[derive(Debug)]
enum Transport {
    /// A UDP socket of its own.
    Udp(UdpSocket),
    /// Plaintext datagrams of a secured transport ([`crate::dtls`]), which owns the socket.
    Tunnel {
        local: SocketAddr,
        out: mpsc::Sender<(SocketAddr, Vec<u8>)>,
        /// The device each PSK peer authenticated as (`pk/dn`).
        bound: Arc<Mutex<HashMap<SocketAddr, String>>>,
    },
}

/// Plaintext datagrams a secured transport hands to the message layer.
pub(crate) type TunnelIn = mpsc::Receiver<(SocketAddr, Vec<u8>)>;

#[derive(Debug)]
struct Shared {
    transport: Transport,
    edge: Edge,
    mode: Mode,
    separate_after: Duration,
    next_mid: AtomicU16,
    /// Separate responses waiting for their ACK (`true`) or RST (`false`).
    awaiting: Mutex<HashMap<(SocketAddr, u16), oneshot::Sender<bool>>>,
    /// Encrypted mode: the `seq` window of each token, with its creation order.
    windows: Mutex<HashMap<String, (SeqWindow, u64)>>,
    window_serial: std::sync::atomic::AtomicU64,
    /// Bounds the requests being handled.
    in_flight: Arc<Semaphore>,
    /// Observations of downlink topics (`/topic/${topic}` with Observe 0).
    observers: Mutex<Observers<SocketAddr>>,
    /// Which device each observation belongs to.
    observing: Mutex<HashMap<(SocketAddr, Token), String>>,
    /// The downlink session of each observing device.
    feeds: Mutex<HashMap<String, Feed>>,
    /// Where the sessions deliver downlinks.
    downlinks: mpsc::UnboundedSender<Downlink>,
}

/// A request handled: the exchange's answer, which the socket's task records for duplicates
/// and then sends (`None`: deliberately unanswered). Recording before sending means a
/// retransmission that crosses the answer is never taken for one still in progress.
#[derive(Debug)]
struct Done {
    peer: SocketAddr,
    message_id: u16,
    answer: Option<Vec<u8>>,
    /// Already sent (the empty ACK of a separate response must not wait).
    sent: bool,
}

/// What the handler decided.
#[derive(Debug)]
enum Reply {
    Respond {
        code: Code,
        payload: Vec<u8>,
        format: Option<u16>,
        observe: Option<u32>,
    },
    Drop,
}

impl Reply {
    fn code(code: Code) -> Reply {
        Reply::Respond {
            code,
            payload: Vec::new(),
            format: None,
            observe: None,
        }
    }
}

impl CoapServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, edge: Edge, mode: Mode) -> io::Result<CoapServer> {
        let socket = UdpSocket::bind(addr).await?;
        Ok(CoapServer::over(Transport::Udp(socket), edge, mode, None))
    }

    /// A plain-mode message layer fed by a secured transport: it reads plaintext datagrams
    /// from `inbound` and writes its answers to `out`; `bound` names the device of each PSK
    /// peer, whose requests may act only for that device.
    pub(crate) fn tunnel(
        local: SocketAddr,
        edge: Edge,
        inbound: TunnelIn,
        out: mpsc::Sender<(SocketAddr, Vec<u8>)>,
        bound: Arc<Mutex<HashMap<SocketAddr, String>>>,
    ) -> CoapServer {
        let transport = Transport::Tunnel { local, out, bound };
        CoapServer::over(transport, edge, Mode::Plain, Some(inbound))
    }

    fn over(transport: Transport, edge: Edge, mode: Mode, tunnel: Option<TunnelIn>) -> CoapServer {
        let (downlinks, downlinks_rx) = mpsc::unbounded_channel();
        CoapServer {
            downlinks: downlinks_rx,
            tunnel,
            shared: Arc::new(Shared {
                transport,
                edge,
                mode,
                separate_after: Duration::from_secs(1),
                next_mid: AtomicU16::new(rand::random()),
                awaiting: Mutex::new(HashMap::new()),
                windows: Mutex::new(HashMap::new()),
                window_serial: std::sync::atomic::AtomicU64::new(0),
                in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
                observers: Mutex::new(Observers::new(MAX_OBSERVATIONS)),
                observing: Mutex::new(HashMap::new()),
                feeds: Mutex::new(HashMap::new()),
                downlinks,
            }),
        }
    }

    /// How long a CON request may take before it gets an empty ACK and a separate response
    /// (zero: always separate).
    pub fn with_separate_after(mut self, after: Duration) -> CoapServer {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.separate_after = after;
        }
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.shared.transport {
            Transport::Udp(socket) => socket.local_addr(),
            Transport::Tunnel { local, .. } => Ok(*local),
        }
    }

    /// Serves until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let CoapServer {
            shared,
            mut downlinks,
            mut tunnel,
        } = self;
        let limits = UploadLimits {
            max_body: shared.edge.config().coap_max_body,
            ..UploadLimits::default()
        };
        let mut layer = Layer {
            shared: shared.clone(),
            dedup: DedupCache::new(EXCHANGE_LIFETIME, DEDUP_CAPACITY),
            uploads: Block1Uploads::new(limits),
            stop: stop.clone(),
            done: mpsc::unbounded_channel(),
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let shared = &layer.shared.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(done) = layer.done.1.recv() => layer.complete(done).await,
                Some((topic, payload)) = downlinks.recv() => shared.notify(&topic, &payload, &stop).await,
                _ = tick.tick() => {
                    let now = Instant::now();
                    layer.dedup.expire(now);
                    layer.uploads.expire(now);
                }
                received = receive(&shared.transport, tunnel.as_mut(), &mut buf) => match received {
                    Ok(Some((n, peer))) => {
                        let datagram = buf.get(..n).unwrap_or_default();
                        layer.datagram(datagram, peer).await;
                    }
                    Ok(None) => break,
                    Err(error) => tracing::debug!(%error, "coap receive failed"),
                },
            }
        }
    }
}

/// The next datagram into `buf`: its length and sender (`None`: the tunnel is closed).
async fn receive(
    transport: &Transport,
    tunnel: Option<&mut TunnelIn>,
    buf: &mut [u8],
) -> io::Result<Option<(usize, SocketAddr)>> {
    match (transport, tunnel) {
        (Transport::Udp(socket), _) => socket.recv_from(buf).await.map(Some),
        (Transport::Tunnel { .. }, Some(inbound)) => Ok(inbound.recv().await.map(|(peer, d)| {
            let n = d.len().min(buf.len());
            if let (Some(dst), Some(src)) = (buf.get_mut(..n), d.get(..n)) {
                dst.copy_from_slice(src);
            }
            (n, peer)
        })),
        (Transport::Tunnel { .. }, None) => Ok(None),
    }
}

/// The message layer, owned by the socket's task.
struct Layer {
    shared: Arc<Shared>,
    dedup: DedupCache<SocketAddr>,
    uploads: Block1Uploads<(SocketAddr, String)>,
    stop: CancellationToken,
    done: (mpsc::UnboundedSender<Done>, mpsc::UnboundedReceiver<Done>),
}

impl Layer {
    async fn complete(&mut self, done: Done) {
        match done.answer {
            Some(bytes) => {
                if !done.sent {
                    self.shared.send(&bytes, done.peer).await;
                }
                self.dedup.complete(&done.peer, done.message_id, bytes);
            }
            None => self.dedup.complete_silently(&done.peer, done.message_id),
        }
    }

    async fn datagram(&mut self, datagram: &[u8], peer: SocketAddr) {
        let stats = self.shared.edge.stats();
        inc(&stats.datagrams_in);
        let message = match decode(datagram) {
            Ok(m) => m,
            Err(_) => {
                inc(&stats.malformed);
                if let Some(rst) = lode_coap::reject_malformed(datagram) {
                    self.shared.send(&encode(&rst), peer).await;
                }
                return;
            }
        };
        match exchange::classify(&message) {
            Inbound::Ping => {
                let rst = encode(&exchange::reset(message.message_id));
                self.shared.send(&rst, peer).await;
            }
            Inbound::Reject => {
                inc(&stats.malformed);
                let rst = encode(&exchange::reset(message.message_id));
                self.shared.send(&rst, peer).await;
            }
            Inbound::Ack | Inbound::Reset => {
                let acked = exchange::classify(&message) == Inbound::Ack;
                let waiting = self
                    .shared
                    .awaiting
                    .lock()
                    .remove(&(peer, message.message_id));
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(acked);
                    }
                    // A RST to a NON notification: the observer is gone.
                    None if !acked => self.shared.forget_observer(peer),
                    None => {}
                }
            }
            Inbound::Response | Inbound::Ignore => {}
            Inbound::Request => self.request(message, peer).await,
        }
    }

    /// Answers at once from the message layer, remembering the answer for duplicates.
    async fn answer(&mut self, req: &Message, response: Message, peer: SocketAddr) {
        let bytes = encode(&response);
        self.shared.send(&bytes, peer).await;
        self.dedup.complete(&peer, req.message_id, bytes);
    }

    async fn request(&mut self, req: Message, peer: SocketAddr) {
        match exchange::check_critical_options(&req, opt::KNOWN) {
            Verdict::Accept => {}
            Verdict::Reply(m) => {
                self.shared.send(&encode(&m), peer).await;
                return;
            }
            Verdict::Drop => return,
        }
        let now = Instant::now();
        match self.dedup.check(&peer, req.message_id, now) {
            Seen::New => {}
            Seen::Replay(bytes) => {
                let bytes = bytes.to_vec();
                inc(&self.shared.edge.stats().replays);
                self.shared.send(&bytes, peer).await;
                return;
            }
            Seen::Pending | Seen::Unanswered => {
                inc(&self.shared.edge.stats().replays);
                return;
            }
        }
        let path = match req.uri_path_string() {
            Ok(p) => p,
            Err(error) => {
                let code = error.response_code().unwrap_or(Code::BAD_OPTION);
                let resp = self.shared.response(&req, code);
                return self.answer(&req, resp, peer).await;
            }
        };
        if req.code == Code::GET && path == "/.well-known/core" {
            let mut resp = self.shared.response(&req, Code::CONTENT);
            resp.set_content_format(content_format::LINK_FORMAT);
            resp.payload = br#"</auth>;rt="alink.auth";ct=50,</topic>;rt="alink.topic""#.to_vec();
            return self.answer(&req, resp, peer).await;
        }
        let (body, block) = match req.block1() {
            Err(error) => {
                let code = error.response_code().unwrap_or(Code::BAD_OPTION);
                let resp = self.shared.response(&req, code);
                return self.answer(&req, resp, peer).await;
            }
            Ok(Some(block)) => {
                let size1 = req.size1().ok().flatten();
                let key = (peer, path);
                match self.uploads.receive(&key, block, &req.payload, size1, now) {
                    UploadStep::Continue(b) => {
                        let mut resp = self.shared.response(&req, Code::CONTINUE);
                        resp.set_block1(b);
                        return self.answer(&req, resp, peer).await;
                    }
                    UploadStep::Refused(why) => return self.refuse(&req, why, peer).await,
                    UploadStep::Complete { body, block } => (body, Some(block)),
                }
            }
            Ok(None) => {
                let max = self.uploads.limits().max_body;
                if let Err(why) = lode_coap::block::check_body_size(req.payload.len(), max) {
                    return self.refuse(&req, why, peer).await;
                }
                (req.payload.clone(), None)
            }
        };
        let Ok(permit) = self.shared.in_flight.clone().try_acquire_owned() else {
            let resp = self.shared.response(&req, Code::SERVICE_UNAVAILABLE);
            return self.answer(&req, resp, peer).await;
        };
        let shared = self.shared.clone();
        let done = self.done.0.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            shared.respond(&req, body, block, peer, &done, stop).await;
        });
    }

    async fn refuse(&mut self, req: &Message, why: UploadRefusal, peer: SocketAddr) {
        let mut resp = self.shared.response(req, why.code());
        why.apply(&mut resp);
        self.answer(req, resp, peer).await;
    }
}

impl Shared {
    async fn send(&self, bytes: &[u8], peer: SocketAddr) {
        let sent = match &self.transport {
            Transport::Udp(socket) => socket.send_to(bytes, peer).await.map(drop),
            // A full queue loses the datagram, as a full socket buffer would.
            Transport::Tunnel { out, .. } => out
                .try_send((peer, bytes.to_vec()))
                .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "dtls queue full")),
        };
        match sent {
            Ok(()) => inc(&self.edge.stats().datagrams_out),
            Err(error) => tracing::debug!(%error, %peer, "coap send failed"),
        }
    }

    /// Whether `peer` may act for the device `pk/dn`: a PSK peer only for its own device.
    fn may_act_for(&self, peer: SocketAddr, product_key: &str, device_name: &str) -> bool {
        match &self.transport {
            Transport::Tunnel { bound, .. } => bound
                .lock()
                .get(&peer)
                .is_none_or(|device| *device == lode_alink::identity_key(product_key, device_name)),
            Transport::Udp(_) => true,
        }
    }

    fn fresh_mid(&self) -> u16 {
        self.next_mid.fetch_add(1, Ordering::Relaxed)
    }

    /// The immediate response: piggybacked for a CON, a NON for a NON.
    fn response(&self, req: &Message, code: Code) -> Message {
        exchange::response_to(req, code, self.fresh_mid())
    }

    /// Handles a request on its own task; the immediate answer goes through `done` to the
    /// socket's task, a separate response is sent from here.
    async fn respond(
        &self,
        req: &Message,
        body: Vec<u8>,
        block: Option<BlockOpt>,
        peer: SocketAddr,
        done: &mpsc::UnboundedSender<Done>,
        stop: CancellationToken,
    ) {
        let answer = |answer: Option<Vec<u8>>, sent: bool| {
            let _ = done.send(Done {
                peer,
                message_id: req.message_id,
                answer,
                sent,
            });
        };
        let work = self.handle(req, body, peer);
        tokio::pin!(work);
        let fill = |mut m: Message, reply: Reply| -> Option<Message> {
            let Reply::Respond {
                code,
                payload,
                format,
                observe,
            } = reply
            else {
                return None;
            };
            m.code = code;
            m.payload = payload;
            if let Some(f) = format {
                m.set_content_format(f);
            }
            if let Some(o) = observe {
                m.set_observe(o);
            }
            if let Some(b) = block {
                m.set_block1(b);
            }
            Some(m)
        };
        if req.message_type != MessageType::Confirmable {
            let reply = work.await;
            return answer(
                fill(self.response(req, Code::EMPTY), reply).map(|m| encode(&m)),
                false,
            );
        }
        let quick = if self.separate_after.is_zero() {
            None
        } else {
            tokio::time::timeout(self.separate_after, &mut work)
                .await
                .ok()
        };
        match quick {
            Some(reply) => {
                answer(
                    fill(exchange::piggybacked(req, Code::EMPTY), reply).map(|m| encode(&m)),
                    false,
                );
            }
            None => {
                let ack = encode(&exchange::empty_ack(req));
                self.send(&ack, peer).await;
                answer(Some(ack), true);
                let reply = work.await;
                if let Some(m) = fill(
                    exchange::separate(req, Code::EMPTY, true, self.fresh_mid()),
                    reply,
                ) {
                    self.send_confirmable(&m, peer, &stop).await;
                }
            }
        }
    }

    /// Sends a CON and sends it again until it is acknowledged, refused or given up.
    async fn send_confirmable(&self, m: &Message, peer: SocketAddr, stop: &CancellationToken) {
        let (tx, mut rx) = oneshot::channel();
        self.awaiting.lock().insert((peer, m.message_id), tx);
        let bytes = encode(m);
        let mut wait = ACK_TIMEOUT;
        for attempt in 0..=MAX_RETRANSMIT {
            if attempt > 0 {
                inc(&self.edge.stats().retransmissions);
            }
            self.send(&bytes, peer).await;
            tokio::select! {
                () = stop.cancelled() => break,
                got = tokio::time::timeout(wait, &mut rx) => match got {
                    Ok(_) => return,
                    Err(_) => wait = wait.saturating_mul(2),
                },
            }
        }
        self.awaiting.lock().remove(&(peer, m.message_id));
    }

    async fn handle(&self, req: &Message, body: Vec<u8>, peer: SocketAddr) -> Reply {
        if alink::is_auth(req) {
            return self.auth(&body, peer).await;
        }
        match alink::topic_of(req) {
            Ok(Some(topic)) if req.code == Code::POST => {
                self.publish(req, &topic, body, peer).await
            }
            Ok(Some(topic)) if req.code == Code::GET && self.mode == Mode::Plain => {
                self.observe(req, &topic, peer).await
            }
            Ok(Some(_)) => Reply::code(Code::METHOD_NOT_ALLOWED),
            Ok(None) => Reply::code(Code::NOT_FOUND),
            Err(error) => Reply::code(error.response_code().unwrap_or(Code::BAD_OPTION)),
        }
    }

    async fn auth(&self, body: &[u8], peer: SocketAddr) -> Reply {
        let req = match AuthRequest::parse(body) {
            Ok(r) => r,
            Err(error) => {
                self.edge.stats().auth_failed(self.mode.channel());
                return Reply::code(error.code());
            }
        };
        let grant = match (self.mode, req.seq_value()) {
            (Mode::Encrypted, None) => {
                self.edge.stats().auth_failed(self.mode.channel());
                return Reply::code(Code::BAD_REQUEST);
            }
            (Mode::Encrypted, Some(seq)) => Some(EncryptedGrant {
                random: lode_alink::hex_lower(&rand::random::<[u8; 8]>()),
                seq_offset: seq.saturating_add(1),
            }),
            (Mode::Plain, _) => None,
        };
        if !self.may_act_for(peer, &req.product_key, &req.device_name) {
            self.edge.stats().auth_failed(self.mode.channel());
            return Reply::code(Code::FORBIDDEN);
        }
        let content = req.sign_content();
        let sign_in = SignIn {
            product_key: &req.product_key,
            device_name: &req.device_name,
            method: req.sign_method,
            content: &content,
            sign: &req.sign,
        };
        let random = grant.as_ref().map(|g| g.random.clone());
        match self
            .edge
            .sign_in(self.mode.channel(), &sign_in, random, peer)
            .await
        {
            Ok(issued) => {
                if let Some(g) = &grant {
                    self.open_window(&issued.token, g.seq_offset);
                }
                let reply = AuthReply {
                    token: issued.token,
                    encrypted: grant,
                };
                Reply::Respond {
                    code: Code::CONTENT,
                    payload: reply.to_json(),
                    format: Some(content_format::JSON),
                    observe: None,
                }
            }
            Err(error) => Reply::code(error.coap_code()),
        }
    }

    /// `GET /topic/${topic}` with Observe 0 (register) or 1 (deregister).
    async fn observe(&self, req: &Message, topic: &str, peer: SocketAddr) -> Reply {
        let action = match observe_action(req) {
            Ok(ObserveAction::None) => return Reply::code(Code::METHOD_NOT_ALLOWED),
            Ok(action) => action,
            Err(error) => return Reply::code(error.response_code().unwrap_or(Code::BAD_OPTION)),
        };
        let token = match alink::request_token(req) {
            Ok(t) => t,
            Err(code) => return Reply::code(code),
        };
        let session = match self.edge.session(token, self.mode.channel()).await {
            Ok(s) => s,
            Err(error) => return Reply::code(error.coap_code()),
        };
        if !self.may_act_for(
            peer,
            &session.claims.product_key,
            &session.claims.device_name,
        ) {
            return Reply::code(Code::FORBIDDEN);
        }
        let device =
            lode_alink::identity_key(&session.claims.product_key, &session.claims.device_name);
        if action == ObserveAction::Deregister {
            self.observers.lock().deregister(&peer, req.token);
            self.observing.lock().remove(&(peer, req.token));
            self.release(&device);
            return Reply::code(Code::CONTENT);
        }
        if !self.edge.may_subscribe(&session, topic) {
            return Reply::code(Code::FORBIDDEN);
        }
        let seq = match self
            .observers
            .lock()
            .register(&peer, req.token, topic, Instant::now())
        {
            Ok(seq) => seq,
            Err(_) => return Reply::code(Code::SERVICE_UNAVAILABLE),
        };
        self.observing
            .lock()
            .insert((peer, req.token), device.clone());
        let mut feeds = self.feeds.lock();
        let feed = feeds.entry(device).or_insert_with(|| {
            feed::open(
                self.edge.broker().clone(),
                Credentials {
                    product_key: session.claims.product_key.clone(),
                    device_name: session.claims.device_name.clone(),
                    secret: session.device.device_secret.clone(),
                },
                peer,
                self.downlinks.clone(),
            )
        });
        feed.subscribe(topic);
        Reply::Respond {
            code: Code::CONTENT,
            payload: Vec::new(),
            format: None,
            observe: Some(seq),
        }
    }

    /// Ends a device's downlink session once nothing of it is observed.
    fn release(&self, device: &str) {
        let still = self.observing.lock().values().any(|d| d == device);
        if !still {
            self.feeds.lock().remove(device);
        }
    }

    /// Forgets every observation of a peer that refused a notification.
    fn forget_observer(&self, peer: SocketAddr) {
        if self.observers.lock().forget_peer(&peer) == 0 {
            return;
        }
        let gone: Vec<String> = {
            let mut observing = self.observing.lock();
            let mut gone = Vec::new();
            observing.retain(|(p, _), d| {
                if *p == peer {
                    gone.push(d.clone());
                    false
                } else {
                    true
                }
            });
            gone
        };
        for device in gone {
            self.release(&device);
        }
    }

    /// Sends a downlink to everyone observing its topic.
    async fn notify(self: &Arc<Self>, topic: &str, payload: &[u8], stop: &CancellationToken) {
        let now = Instant::now();
        let targets: Vec<(SocketAddr, Token, lode_coap::observe::Notification)> = {
            let mut observers = self.observers.lock();
            let list: Vec<(SocketAddr, Token)> = observers
                .observers_of(topic)
                .map(|(p, t)| (*p, t))
                .collect();
            list.into_iter()
                .filter_map(|(p, t)| observers.notify(&p, t, now, false).map(|n| (p, t, n)))
                .collect()
        };
        for (peer, token, n) in targets {
            let ty = if n.confirmable {
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            };
            let mut m = Message::new(ty, Code::CONTENT, self.fresh_mid());
            m.token = token;
            m.set_observe(n.observe);
            m.payload = payload.to_vec();
            if n.confirmable {
                let (shared, stop) = (self.clone(), stop.clone());
                tokio::spawn(async move { shared.send_confirmable(&m, peer, &stop).await });
            } else {
                self.send(&encode(&m), peer).await;
            }
        }
    }

    fn open_window(&self, token: &str, seq_offset: u32) {
        let serial = self.window_serial.fetch_add(1, Ordering::Relaxed);
        let mut windows = self.windows.lock();
        if windows.len() >= MAX_SEQ_SESSIONS {
            let cut = serial.saturating_sub(MAX_SEQ_SESSIONS as u64 / 2);
            windows.retain(|_, (_, s)| *s >= cut);
        }
        windows.insert(token.to_owned(), (SeqWindow::new(seq_offset), serial));
    }

    async fn publish(&self, req: &Message, topic: &str, body: Vec<u8>, peer: SocketAddr) -> Reply {
        let token = match alink::request_token(req) {
            Ok(t) => t,
            Err(code) => return Reply::code(code),
        };
        let session = match self.edge.session(token, self.mode.channel()).await {
            Ok(s) => s,
            Err(error) => return Reply::code(error.coap_code()),
        };
        if !self.may_act_for(
            peer,
            &session.claims.product_key,
            &session.claims.device_name,
        ) {
            return Reply::code(Code::FORBIDDEN);
        }
        let payload = match self.mode {
            Mode::Plain => body,
            Mode::Encrypted => {
                let Some(random) = session.claims.random.as_deref() else {
                    return Reply::code(Code::UNAUTHORIZED);
                };
                let key = SessionKey::derive(&session.device.device_secret, random);
                let seq = req
                    .alink_seq()
                    .ok()
                    .flatten()
                    .and_then(|v| key.decrypt_seq(v).ok());
                let accepted = seq.is_some_and(|seq| {
                    let serial = self.window_serial.fetch_add(1, Ordering::Relaxed);
                    self.windows
                        .lock()
                        .entry(token.to_owned())
                        .or_insert_with(|| (SeqWindow::new(0), serial))
                        .0
                        .accept(seq)
                        .is_ok()
                });
                if !accepted {
                    inc(&self.edge.stats().seq_refused);
                    return Reply::Drop;
                }
                match key.decrypt(&body) {
                    Ok(plain) => plain,
                    Err(_) => return Reply::code(Code::BAD_REQUEST),
                }
            }
        };
        match self
            .edge
            .publish(&session, topic, Bytes::from(payload), peer)
            .await
        {
            Ok(_) => Reply::code(Code::CHANGED),
            Err(error) => Reply::code(error.coap_code()),
        }
    }
}
