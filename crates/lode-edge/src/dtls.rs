//! Alink CoAP over DTLS 1.2 (`coaps://`, port 5684).
//!
//! One task owns the UDP socket and a DTLS session per peer address; the plaintext datagrams
//! go to the same CoAP message layer as the plain listener ([`crate::coap`]: `/auth` with the
//! signed JSON, the token option, the same limits), and its answers are encrypted back.
//!
//! Two ways in, chosen per handshake from the cipher suites the client offers:
//!
//! - certificate (`TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256` and friends): the server presents
//!   [`DtlsConfig::certificate`] (an ECDSA P-256 or P-384 key) and asks for no client
//!   certificate; the device then signs in with `/auth` as on the plain port.
//! - PSK (`TLS_PSK_WITH_AES_128_CCM_8`, RFC 7252's mandatory suite): the PSK identity is
//!   `${productKey}&${deviceName}` and the key is the UTF-8 bytes of that device's
//!   DeviceSecret. This binding is Lodestone's choice; the reference platform does not
//!   document one. A PSK session is bound to its device: `/auth` and `/topic` requests over
//!   it may act for that device only (4.03 otherwise).
//!
//! Limits: at most [`DtlsConfig::max_handshakes`] handshakes at once and
//! [`DtlsConfig::max_sessions`] sessions in all (further ClientHellos are dropped and
//! counted); a handshake not finished within [`DtlsConfig::handshake_timeout`] is dropped and
//! counted; an established session silent for [`DtlsConfig::idle_timeout`] is forgotten (the
//! device does a new handshake). Timers are checked every 100 ms.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dimpl::{Config, Dtls, DtlsCertificate, Output, PskResolver};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Edge;
use crate::coap::{CoapServer, TunnelIn};
use crate::stats::inc;

/// The largest datagram read.
const MAX_DATAGRAM: usize = 65_536;
/// Plaintext datagrams queued between the DTLS task and the CoAP message layer.
const QUEUE: usize = 4096;
/// How often handshake, retransmission and idle timers are checked.
const TICK: Duration = Duration::from_millis(100);

/// `TLS_PSK_WITH_AES_128_CCM_8`.
const PSK_AES128_CCM_8: u16 = 0xC0A8;
/// The ECDHE-ECDSA suites of the certificate mode (AES-128-GCM, AES-256-GCM, ChaCha20).
const ECDHE_ECDSA: [u16; 3] = [0xC02B, 0xC02C, 0xCCA9];

/// The server's certificate for the certificate mode.
#[derive(Clone, PartialEq, Eq)]
pub struct DtlsIdentity {
    /// The leaf certificate, DER.
    pub certificate: Vec<u8>,
    /// Its ECDSA private key, PKCS#8 or SEC1 DER.
    pub private_key: Vec<u8>,
}

impl std::fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("certificate", &self.certificate.len())
            .finish_non_exhaustive()
    }
}

/// What the DTLS listener accepts and how much of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsConfig {
    /// The certificate mode's certificate (`None`: certificate handshakes are refused).
    pub certificate: Option<DtlsIdentity>,
    /// Whether PSK handshakes (identity `${productKey}&${deviceName}`) are accepted.
    pub psk: bool,
    /// A handshake must finish within this. Default 30 s.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once. Default 1024.
    pub max_handshakes: usize,
    /// Sessions (in progress or established) at once. Default 100 000.
    pub max_sessions: usize,
    /// An established session silent this long is forgotten. Default 10 min.
    pub idle_timeout: Duration,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            certificate: None,
            psk: true,
            handshake_timeout: Duration::from_secs(30),
            max_handshakes: 1024,
            max_sessions: 100_000,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Why the DTLS listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    /// The UDP socket could not be bound.
    #[error("cannot bind the DTLS socket: {0}")]
    Bind(#[source] io::Error),
    /// The DTLS engine refused the settings.
    #[error("invalid DTLS settings: {0}")]
    Config(#[source] dimpl::Error),
    /// Neither mode is enabled.
    #[error("DTLS needs a certificate or PSK enabled")]
    NothingEnabled,
}

/// A bound DTLS listener, not yet serving.
#[derive(Debug)]
pub struct DtlsServer {
    socket: UdpSocket,
    edge: Edge,
    config: DtlsConfig,
    /// The certificate mode's engine settings.
    certificate: Option<Arc<Config>>,
    coap: CoapServer,
    to_coap: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    from_coap: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    bound: Arc<Mutex<HashMap<SocketAddr, String>>>,
}

impl DtlsServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(
        addr: SocketAddr,
        edge: Edge,
        config: DtlsConfig,
    ) -> Result<DtlsServer, DtlsError> {
        if config.certificate.is_none() && !config.psk {
            return Err(DtlsError::NothingEnabled);
        }
        let certificate = match config.certificate {
            Some(_) => Some(Arc::new(
                engine_config(&config)
                    .require_client_certificate(false)
                    .build()
                    .map_err(DtlsError::Config)?,
            )),
            None => None,
        };
        if config.psk {
            engine_config(&config)
                .with_psk_server(None, Arc::new(Slot::default()))
                .build()
                .map_err(DtlsError::Config)?;
        }
        let socket = UdpSocket::bind(addr).await.map_err(DtlsError::Bind)?;
        let local = socket.local_addr().map_err(DtlsError::Bind)?;
        let (to_coap, inbound): (_, TunnelIn) = mpsc::channel(QUEUE);
        let (out, from_coap) = mpsc::channel(QUEUE);
        let bound = Arc::new(Mutex::new(HashMap::new()));
        let coap = CoapServer::tunnel(local, edge.clone(), inbound, out, bound.clone());
        Ok(DtlsServer {
            socket,
            edge,
            config,
            certificate,
            coap,
            to_coap,
            from_coap,
            bound,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let DtlsServer {
            socket,
            edge,
            config,
            certificate,
            coap,
            to_coap,
            mut from_coap,
            bound,
        } = self;
        let layer = tokio::spawn(coap.run(stop.clone()));
        let mut peers = Peers {
            socket,
            edge,
            config,
            certificate,
            to_coap,
            bound,
            sessions: HashMap::new(),
            handshaking: 0,
            out: vec![0u8; 2048],
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                received = peers.socket.recv_from(&mut buf) => match received {
                    Ok((n, peer)) => {
                        let datagram = buf.get(..n).unwrap_or_default().to_vec();
                        peers.datagram(&datagram, peer).await;
                    }
                    Err(error) => tracing::debug!(%error, "dtls receive failed"),
                },
                Some((peer, plain)) = from_coap.recv() => peers.encrypt(peer, &plain).await,
                _ = tick.tick() => peers.timers(Instant::now()).await,
            }
        }
        let _ = layer.await;
    }
}

fn engine_config(config: &DtlsConfig) -> dimpl::ConfigBuilder {
    Config::builder().handshake_timeout(config.handshake_timeout)
}

/// The PSK of one handshake, filled in once the identity's device is looked up.
#[derive(Debug, Default)]
struct Slot(OnceLock<(Vec<u8>, Vec<u8>)>);

impl PskResolver for Slot {
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self.0
            .get()
            .filter(|(id, _)| id.as_slice() == identity)
            .map(|(_, key)| key.clone())
    }
}

/// How a session authenticates.
enum Kind {
    Certificate,
    Psk {
        slot: Arc<Slot>,
        /// The device (`pk/dn`) of the identity, once looked up.
        device: Option<String>,
    },
}

struct Session {
    dtls: Dtls,
    kind: Kind,
    connected: bool,
    started: Instant,
    last_seen: Instant,
    wake: Option<Instant>,
}

/// What one round of engine output asked for.
#[derive(Default)]
struct Drained {
    packets: Vec<Vec<u8>>,
    plain: Vec<Vec<u8>>,
    connected: bool,
    closed: bool,
}

/// The sessions, owned by the socket's task.
struct Peers {
    socket: UdpSocket,
    edge: Edge,
    config: DtlsConfig,
    certificate: Option<Arc<Config>>,
    to_coap: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    bound: Arc<Mutex<HashMap<SocketAddr, String>>>,
    sessions: HashMap<SocketAddr, Session>,
    /// Sessions still in their handshake.
    handshaking: usize,
    out: Vec<u8>,
}

impl Peers {
    async fn datagram(&mut self, datagram: &[u8], peer: SocketAddr) {
        let now = Instant::now();
        let fresh_hello = client_hello_suites(datagram).is_some();
        let known = self
            .sessions
            .get(&peer)
            .is_some_and(|s| !s.connected || !fresh_hello);
        if !known {
            // A new ClientHello from a connected peer means the device starts afresh.
            self.drop_session(peer);
            let Some(session) = self.start(datagram, now) else {
                return;
            };
            self.sessions.insert(peer, session);
            self.handshaking += 1;
        }
        if let Some(identity) = client_key_exchange_identity(datagram) {
            self.resolve(peer, &identity).await;
        }
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        session.last_seen = now;
        // The engine acts on its clock first (a new one picks its random there).
        let fed = guarded(|| {
            session.dtls.handle_timeout(now)?;
            session.dtls.handle_packet(datagram)
        });
        match fed {
            Ok(()) => self.flush(peer).await,
            Err(error) => {
                tracing::debug!(%error, %peer, "dtls session failed");
                inc(&self.edge.stats().dtls_failures);
                self.drop_session(peer);
            }
        }
    }

    /// A session for a ClientHello, if it offers a suite of ours and there is room.
    fn start(&self, datagram: &[u8], now: Instant) -> Option<Session> {
        let suites = client_hello_suites(datagram)?;
        let stats = self.edge.stats();
        if self.handshaking >= self.config.max_handshakes
            || self.sessions.len() >= self.config.max_sessions
        {
            inc(&stats.dtls_refused);
            return None;
        }
        let offers_cert = suites.iter().any(|s| ECDHE_ECDSA.contains(s));
        let offers_psk = suites.contains(&PSK_AES128_CCM_8);
        let (dtls, kind) = match (&self.certificate, &self.config.certificate) {
            (Some(engine), Some(identity)) if offers_cert => {
                let cert = DtlsCertificate {
                    certificate: identity.certificate.clone(),
                    private_key: identity.private_key.clone(),
                };
                (Dtls::new_12(engine.clone(), cert, now), Kind::Certificate)
            }
            _ if offers_psk && self.config.psk => {
                let slot = Arc::new(Slot::default());
                let engine = engine_config(&self.config)
                    .with_psk_server(None, slot.clone())
                    .build()
                    .ok()?;
                let dtls = Dtls::new_12_psk(Arc::new(engine), now);
                (dtls, Kind::Psk { slot, device: None })
            }
            _ => {
                inc(&stats.dtls_refused);
                return None;
            }
        };
        Some(Session {
            dtls,
            kind,
            connected: false,
            started: now,
            last_seen: now,
            wake: None,
        })
    }

    /// Looks up the device a PSK identity names and hands its key to the handshake.
    async fn resolve(&mut self, peer: SocketAddr, identity: &[u8]) {
        let Some(Session {
            kind: Kind::Psk { slot, .. },
            ..
        }) = self.sessions.get(&peer)
        else {
            return;
        };
        if slot.0.get().is_some() {
            return;
        }
        let slot = slot.clone();
        let Some((pk, dn)) = std::str::from_utf8(identity)
            .ok()
            .and_then(|id| id.split_once('&'))
        else {
            return;
        };
        let Ok(device) = self.edge.device(pk, dn).await else {
            return;
        };
        let _ = slot
            .0
            .set((identity.to_vec(), device.device_secret.as_bytes().to_vec()));
        if let Some(Session {
            kind: Kind::Psk { device: bound, .. },
            ..
        }) = self.sessions.get_mut(&peer)
        {
            *bound = Some(lode_alink::identity_key(pk, dn));
        }
    }

    /// Sends a plaintext answer of the CoAP layer over the peer's session.
    async fn encrypt(&mut self, peer: SocketAddr, plain: &[u8]) {
        let Some(session) = self.sessions.get_mut(&peer).filter(|s| s.connected) else {
            return;
        };
        match guarded(|| session.dtls.send_application_data(plain).map(drop)) {
            Ok(_) => self.flush(peer).await,
            Err(error) => {
                tracing::debug!(%error, %peer, "dtls send failed");
                inc(&self.edge.stats().dtls_failures);
                self.drop_session(peer);
            }
        }
    }

    /// Drives the timers: retransmissions, handshake deadlines, idle sessions.
    async fn timers(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut due = Vec::new();
        for (peer, s) in &self.sessions {
            if !s.connected
                && now.saturating_duration_since(s.started) >= self.config.handshake_timeout
            {
                inc(&self.edge.stats().dtls_timeouts);
                expired.push(*peer);
            } else if s.connected
                && now.saturating_duration_since(s.last_seen) >= self.config.idle_timeout
            {
                expired.push(*peer);
            } else if s.wake.is_some_and(|w| w <= now) {
                due.push(*peer);
            }
        }
        for peer in expired {
            self.drop_session(peer);
        }
        for peer in due {
            let Some(session) = self.sessions.get_mut(&peer) else {
                continue;
            };
            session.wake = None;
            match guarded(|| session.dtls.handle_timeout(now)) {
                Ok(()) => self.flush(peer).await,
                Err(error) => {
                    tracing::debug!(%error, %peer, "dtls session timed out");
                    if session.connected {
                        inc(&self.edge.stats().dtls_failures);
                    } else {
                        inc(&self.edge.stats().dtls_timeouts);
                    }
                    self.drop_session(peer);
                }
            }
        }
    }

    /// Sends what the peer's engine produced and passes its plaintext on.
    async fn flush(&mut self, peer: SocketAddr) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        let drained = drain(&mut session.dtls, &mut self.out, &mut session.wake);
        if drained.connected && !session.connected {
            session.connected = true;
            self.handshaking = self.handshaking.saturating_sub(1);
            inc(&self.edge.stats().dtls_handshakes);
            if let Kind::Psk {
                device: Some(device),
                ..
            } = &session.kind
            {
                self.bound.lock().insert(peer, device.clone());
            }
        }
        for packet in &drained.packets {
            if let Err(error) = self.socket.send_to(packet, peer).await {
                tracing::debug!(%error, %peer, "dtls send failed");
            }
        }
        for plain in drained.plain {
            // A full queue loses the datagram, as a full socket buffer would.
            let _ = self.to_coap.try_send((peer, plain));
        }
        if drained.closed {
            self.drop_session(peer);
        }
    }

    fn drop_session(&mut self, peer: SocketAddr) {
        if let Some(session) = self.sessions.remove(&peer) {
            if !session.connected {
                self.handshaking = self.handshaking.saturating_sub(1);
            }
            self.bound.lock().remove(&peer);
        }
    }
}

/// Why a session ended with an error.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Dtls(#[from] dimpl::Error),
    #[error("the DTLS engine failed internally")]
    Engine,
}

/// Runs an engine call; a panic inside the engine ends only this session.
fn guarded(f: impl FnOnce() -> Result<(), dimpl::Error>) -> Result<(), SessionError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(SessionError::from),
        Err(_) => Err(SessionError::Engine),
    }
}

/// Polls the engine until it waits for a timer.
fn drain(dtls: &mut Dtls, out: &mut Vec<u8>, wake: &mut Option<Instant>) -> Drained {
    let mut drained = Drained::default();
    loop {
        match dtls.poll_output(out) {
            Output::Packet(p) => drained.packets.push(p.to_vec()),
            Output::BufferTooSmall { needed } => out.resize(needed, 0),
            Output::Timeout(t) => {
                *wake = Some(t);
                break;
            }
            Output::Connected => drained.connected = true,
            Output::ApplicationData(d) => drained.plain.push(d.to_vec()),
            Output::CloseNotify => drained.closed = true,
            _ => {}
        }
    }
    drained
}

/// The handshake messages (type, body) of the epoch-0 handshake records in a datagram.
fn handshakes(datagram: &[u8]) -> Vec<(u8, &[u8])> {
    let mut found = Vec::new();
    let mut rest = datagram;
    while let Some(header) = rest.get(..13) {
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let Some(body) = rest.get(13..13 + len) else {
            break;
        };
        let epoch = u16::from_be_bytes([header[3], header[4]]);
        if header[0] == 22
            && epoch == 0
            && let Some(hs) = body.get(..12)
            && hs[6..9] == [0, 0, 0]
        {
            let frag_len = usize::from(hs[10]) << 8 | usize::from(hs[11]);
            let frag_len = (usize::from(hs[9]) << 16) | frag_len;
            if let Some(fragment) = body.get(12..12 + frag_len) {
                found.push((hs[0], fragment));
            }
        }
        rest = rest.get(13 + len..).unwrap_or_default();
    }
    found
}

/// The cipher suites a datagram's ClientHello offers.
fn client_hello_suites(datagram: &[u8]) -> Option<Vec<u16>> {
    let (_, body) = handshakes(datagram).into_iter().find(|(t, _)| *t == 1)?;
    // client_version(2) random(32) session_id<1> cookie<1> cipher_suites<2>
    let sid = usize::from(*body.get(34)?);
    let cookie_at = 35 + sid;
    let cookie = usize::from(*body.get(cookie_at)?);
    let suites_at = cookie_at + 1 + cookie;
    let len = body.get(suites_at..suites_at + 2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let list = body.get(suites_at + 2..suites_at + 2 + len)?;
    Some(
        list.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect(),
    )
}

/// The PSK identity of a datagram's ClientKeyExchange.
fn client_key_exchange_identity(datagram: &[u8]) -> Option<Vec<u8>> {
    let (_, body) = handshakes(datagram).into_iter().find(|(t, _)| *t == 16)?;
    let len = body.get(..2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    body.get(2..2 + len).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One epoch-0 handshake record with one unfragmented message.
    fn record(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let len = body.len();
        let mut hs = vec![msg_type, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 0, 0];
        hs.extend([0, (len >> 8) as u8, len as u8]);
        hs.extend_from_slice(body);
        let mut rec = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0];
        rec.extend([(hs.len() >> 8) as u8, hs.len() as u8]);
        rec.extend(hs);
        rec
    }

    fn client_hello(cookie: &[u8], suites: &[u16]) -> Vec<u8> {
        let mut body = vec![0xFE, 0xFD];
        body.extend([7u8; 32]);
        body.push(0);
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend(((suites.len() * 2) as u16).to_be_bytes());
        for s in suites {
            body.extend(s.to_be_bytes());
        }
        body.extend([1, 0]);
        record(1, &body)
    }

    #[test]
    fn reads_the_offered_suites() {
        let hello = client_hello(b"cookie", &[PSK_AES128_CCM_8, 0x00AE]);
        assert_eq!(
            client_hello_suites(&hello),
            Some(vec![PSK_AES128_CCM_8, 0x00AE])
        );
        let hello = client_hello(&[], &[0xC02B]);
        assert_eq!(client_hello_suites(&hello), Some(vec![0xC02B]));
    }

    #[test]
    fn reads_the_psk_identity_behind_other_records() {
        let mut datagram = client_hello(&[], &[0xC02B]);
        let identity = b"a1pk&dev-1";
        let mut cke = vec![0, identity.len() as u8];
        cke.extend_from_slice(identity);
        datagram.extend(record(16, &cke));
        assert_eq!(
            client_key_exchange_identity(&datagram),
            Some(identity.to_vec())
        );
    }

    #[test]
    fn garbage_and_truncation_yield_nothing() {
        assert_eq!(client_hello_suites(&[]), None);
        assert_eq!(client_hello_suites(&[22; 40]), None);
        let hello = client_hello(b"c", &[PSK_AES128_CCM_8]);
        for cut in 0..hello.len() {
            assert_eq!(client_hello_suites(&hello[..cut]), None, "cut at {cut}");
        }
        let mut encrypted = hello.clone();
        encrypted[4] = 1;
        assert_eq!(client_hello_suites(&encrypted), None, "epoch 1 is not read");
        assert_eq!(client_key_exchange_identity(&hello), None);
    }

    #[test]
    fn the_slot_answers_only_its_identity() {
        let slot = Slot::default();
        assert_eq!(slot.resolve(b"pk&dn"), None);
        let _ = slot.0.set((b"pk&dn".to_vec(), b"secret".to_vec()));
        assert_eq!(slot.resolve(b"pk&dn"), Some(b"secret".to_vec()));
        assert_eq!(slot.resolve(b"pk&other"), None);
    }
}
