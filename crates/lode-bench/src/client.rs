//! A small async MQTT client over `lode-mqtt`: connection setup and the pipelined load pump.
//!
//! Each load client is one task that owns its socket and does its own reading and writing
//! (no channels, no per-message tasks). Outgoing packets are appended to one write buffer
//! and flushed in batches; PUBLISH packets are stamped from a pre-encoded template, so
//! publishing allocates nothing per message.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use lode_mqtt::{
    Connect, ConnectProperties, Disconnect, Packet, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, decode, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use crate::util::{new_hist, now_ns};

/// Largest packet accepted from a broker.
pub(crate) const MAX_PACKET: u32 = 1 << 24;
/// Stop appending to the write buffer past this many bytes until it drains.
const WBUF_HIGH: usize = 64 * 1024;
/// Read buffer growth step.
const RBUF_CHUNK: usize = 64 * 1024;
/// Setup steps (TCP connect, CONNACK, SUBACK) give up after this long.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes at the start of every payload: send timestamp, publisher index, sequence number.
pub(crate) const STAMP_LEN: usize = 16;

/// Opens a TCP connection, bound to `src` first when given.
pub(crate) async fn tcp_connect(addr: SocketAddr, src: Option<IpAddr>) -> Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = sock
        .connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One MQTT connection with its buffers.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    version: ProtocolVersion,
}

impl Conn {
    /// TCP connect, CONNECT, wait for a successful CONNACK. `session_expiry` > 0 asks
    /// for a persistent session (3.1.1: clean session 0).
    pub(crate) async fn connect(
        addr: SocketAddr,
        src: Option<IpAddr>,
        version: ProtocolVersion,
        client_id: &str,
        keep_alive: u16,
        session_expiry: u32,
    ) -> Result<Conn> {
        Conn::connect_as(
            addr,
            src,
            version,
            client_id,
            keep_alive,
            session_expiry,
            None,
        )
        .await
    }

    /// Like [`Conn::connect`], signing in with a username and password when given.
    pub(crate) async fn connect_as(
        addr: SocketAddr,
        src: Option<IpAddr>,
        version: ProtocolVersion,
        client_id: &str,
        keep_alive: u16,
        session_expiry: u32,
        credentials: Option<(&str, &[u8])>,
    ) -> Result<Conn> {
        timeout(SETUP_TIMEOUT, async {
            let stream = tcp_connect(addr, src).await?;
            let mut conn = Conn {
                stream,
                rbuf: BytesMut::new(),
                wbuf: BytesMut::new(),
                version,
            };
            let connect = Packet::Connect(Box::new(Connect {
                protocol: version,
                clean_start: version.is_v5() || session_expiry == 0,
                keep_alive,
                client_id: client_id.to_owned(),
                will: None,
                username: credentials.map(|(u, _)| u.to_owned()),
                password: credentials.map(|(_, p)| Bytes::copy_from_slice(p)),
                properties: ConnectProperties {
                    session_expiry_interval: (session_expiry > 0).then_some(session_expiry),
                    ..ConnectProperties::default()
                },
            }));
            conn.send(&connect).await?;
            match conn.recv().await? {
                Packet::ConnAck(ack) if !ack.code.is_error() => Ok(conn),
                Packet::ConnAck(ack) => bail!("CONNACK refused: {:?}", ack.code),
                other => bail!("expected CONNACK, got {}", kind(&other)),
            }
        })
        .await
        .context("timed out waiting for CONNACK")?
    }

    /// Subscribes to one filter and waits for a granted SUBACK.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<()> {
        let sub = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(
                filter.to_owned(),
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            )],
            subscription_identifier: None,
            user_properties: Vec::new(),
        });
        timeout(SETUP_TIMEOUT, async {
            self.send(&sub).await?;
            loop {
                match self.recv().await? {
                    Packet::SubAck(ack) => {
                        let code = ack
                            .codes
                            .first()
                            .copied()
                            .unwrap_or(ReasonCode::UnspecifiedError);
                        ensure!(!code.is_error(), "SUBACK refused `{filter}`: {code:?}");
                        return Ok(());
                    }
                    Packet::PingResp => {}
                    other => bail!("expected SUBACK, got {}", kind(&other)),
                }
            }
        })
        .await
        .context("timed out waiting for SUBACK")?
    }

    async fn send(&mut self, p: &Packet) -> Result<()> {
        self.wbuf.clear();
        encode(p, self.version, &mut self.wbuf);
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    async fn recv(&mut self) -> Result<Packet> {
        loop {
            if let Some(d) = decode(&mut self.rbuf, self.version, MAX_PACKET)
                .context("malformed packet from broker")?
            {
                return Ok(d.packet);
            }
            self.rbuf.reserve(512);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                bail!("connection closed by broker");
            }
        }
    }

    /// Gives up the buffers, keeping only the socket (for connections held idle).
    pub(crate) fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// The socket and the read buffer with any bytes received after the last packet
    /// returned.
    pub(crate) fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.rbuf)
    }
}

/// Writes a DISCONNECT without waiting; a full socket buffer just drops it.
pub(crate) fn disconnect_now(stream: &TcpStream, version: ProtocolVersion) {
    let mut b = BytesMut::with_capacity(8);
    encode(&Packet::Disconnect(Disconnect::default()), version, &mut b);
    let _ = stream.try_write(&b);
}

fn kind(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

/// A PUBLISH encoded once, with the offsets to patch per message.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub(crate) bytes: Vec<u8>,
    pub(crate) pid_off: Option<usize>,
    pub(crate) payload_off: usize,
}

impl Template {
    /// Encodes a PUBLISH of `payload_len` bytes to `topic` and locates its packet id and payload,
    /// checking the result by decoding it back.
    pub(crate) fn new(
        topic: &str,
        payload_len: usize,
        qos: QoS,
        version: ProtocolVersion,
    ) -> Result<Template> {
        ensure!(
            payload_len >= STAMP_LEN,
            "payload must be at least {STAMP_LEN} bytes"
        );
        ensure!(
            qos != QoS::ExactlyOnce,
            "QoS 2 is not supported by the load client"
        );
        let qos1 = qos == QoS::AtLeastOnce;
        let packet = Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            packet_id: qos1.then_some(0x1234),
            payload: Bytes::from(vec![0xA5u8; payload_len]),
            properties: Default::default(),
        });
        let mut buf = BytesMut::new();
        encode(&packet, version, &mut buf);
        let payload_off = buf.len() - payload_len;
        let pid_off = if qos1 {
            // Packet id, then (5.0 only) an empty property block of one length byte, then payload.
            let off = payload_off - 2 - usize::from(version.is_v5());
            ensure!(
                buf[off..off + 2] == [0x12, 0x34],
                "unexpected PUBLISH layout from the encoder"
            );
            Some(off)
        } else {
            None
        };
        let mut check = buf.clone();
        match decode(&mut check, version, MAX_PACKET).context("decoding the PUBLISH template")? {
            Some(d) if d.packet == packet && check.is_empty() => {}
            _ => bail!("PUBLISH template does not round-trip through the codec"),
        }
        Ok(Template {
            bytes: buf.to_vec(),
            pid_off,
            payload_off,
        })
    }
}

/// What a publishing client sends.
#[derive(Debug, Clone)]
pub(crate) struct PubSpec {
    pub(crate) template: Template,
    pub(crate) pub_idx: u32,
    /// Fixed interval between messages; `None` sends as fast as flow control allows.
    pub(crate) interval: Option<Duration>,
    /// QoS 1 only: unacknowledged PUBLISH packets allowed at once.
    pub(crate) inflight: usize,
}

/// Run phases, broadcast to every client of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Publishers send.
    Run,
    /// Publishers stop producing; everyone keeps reading (acks, late deliveries).
    Drain,
    /// Everyone disconnects.
    Stop,
}

/// Counters shared by all clients of one scenario run, updated in batches.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) delivered: AtomicU64,
    /// Deliveries the flow-control window gave up waiting for (the broker dropped them).
    pub(crate) written_off: AtomicU64,
    /// Subscribers that receive each published message.
    pub(crate) fanout: u64,
    /// Published messages allowed to be not yet delivered, summed over publishers; 0 = no limit.
    pub(crate) max_lag: u64,
    pub(crate) n_pubs: usize,
}

impl Shared {
    /// Deliveries still outstanding, counting `unflushed` sends not yet added to `sent`.
    fn lag_deliveries(&self, unflushed: u64, written_off: u64) -> u64 {
        let expect = (self.sent.load(Ordering::Relaxed) + unflushed) * self.fanout;
        expect.saturating_sub(self.delivered.load(Ordering::Relaxed) + written_off)
    }

    /// How many more messages may be published before the end-to-end window is full.
    fn allowance(&self, unflushed: u64) -> u64 {
        if self.max_lag == 0 {
            return u64::MAX;
        }
        let lag = self.lag_deliveries(unflushed, self.written_off.load(Ordering::Relaxed))
            / self.fanout.max(1);
        self.max_lag.saturating_sub(lag)
    }

    /// Gives up on the deliveries outstanding now (they will be reported lost, not waited for).
    fn write_off(&self, unflushed: u64) {
        let wo = self.written_off.load(Ordering::Relaxed);
        let lag = self.lag_deliveries(unflushed, wo);
        if lag > 0 {
            let _ = self.written_off.compare_exchange(
                wo,
                wo + lag,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

/// What one client saw.
#[derive(Debug)]
pub(crate) struct ClientStats {
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) delivered: u64,
    /// Deliveries whose sequence number was not above the last one from the same publisher.
    pub(crate) dups: u64,
    /// PUBLISH packets without our stamp.
    pub(crate) foreign: u64,
    /// End-to-end latency in ns (subscribers only).
    pub(crate) hist: Option<Histogram<u64>>,
    pub(crate) error: Option<String>,
}

/// Drives one connection until `Phase::Stop`: publishes per `publ` (if any) and receives.
pub(crate) async fn pump(
    mut conn: Conn,
    publ: Option<PubSpec>,
    subscriber: bool,
    shared: &Shared,
    mut phase: watch::Receiver<Phase>,
) -> ClientStats {
    let mut st = ClientStats {
        sent: 0,
        acked: 0,
        delivered: 0,
        dups: 0,
        foreign: 0,
        hist: subscriber.then(new_hist),
        error: None,
    };
    if let Err(e) = pump_inner(&mut conn, publ.as_ref(), shared, &mut phase, &mut st).await {
        st.error = Some(format!("{e:#}"));
    }
    if let Some(p) = &publ {
        // Messages still sitting in the write buffer never reached the broker.
        let unsent = (conn.wbuf.len() / p.template.bytes.len()) as u64;
        st.sent -= unsent.min(st.sent);
        shared.sent.fetch_sub(unsent, Ordering::Relaxed);
    }
    disconnect_now(&conn.stream, conn.version);
    st
}

async fn pump_inner(
    conn: &mut Conn,
    publ: Option<&PubSpec>,
    sh: &Shared,
    phase: &mut watch::Receiver<Phase>,
    st: &mut ClientStats,
) -> Result<()> {
    let version = conn.version;
    let stream = &conn.stream;
    let rbuf = &mut conn.rbuf;
    let wbuf = &mut conn.wbuf;
    rbuf.reserve(RBUF_CHUNK);
    wbuf.reserve(WBUF_HIGH + publ.map_or(0, |p| p.template.bytes.len()));

    let mut sending = publ.is_some();
    let mut inflight = 0usize;
    let mut next_pid: u16 = 1;
    let mut seq: u32 = 0;
    let mut next_due = Instant::now();
    let mut last_seq = vec![0u32; sh.n_pubs];
    let (mut f_sent, mut f_acked, mut f_deliv) = (0u64, 0u64, 0u64);
    // Since when the end-to-end window has been full, and the delivered count then.
    let mut stall: Option<(Instant, u64)> = None;
    let far = Instant::now() + Duration::from_secs(86_400);

    loop {
        match *phase.borrow_and_update() {
            Phase::Stop => return Ok(()),
            Phase::Drain => sending = false,
            Phase::Run => {}
        }
        let mut wake: Option<Instant> = None;

        if let (true, Some(p)) = (sending, publ) {
            let now = Instant::now();
            let mut budget = sh.allowance(f_sent);
            if budget == 0 {
                let delivered = sh.delivered.load(Ordering::Relaxed);
                match stall {
                    Some((since, d)) if d == delivered => {
                        if now - since > Duration::from_millis(200) {
                            sh.write_off(f_sent);
                            stall = None;
                        }
                    }
                    _ => stall = Some((now, delivered)),
                }
                wake = Some(now + Duration::from_millis(1));
            } else {
                stall = None;
            }
            if let Some(iv) = p.interval
                && now > next_due + iv.max(Duration::from_millis(100))
            {
                // Fell behind (tool starved of CPU): do not burst to catch up.
                next_due = now;
            }
            let ts = now_ns().to_be_bytes();
            let tpl = &p.template;
            while budget > 0 && wbuf.len() < WBUF_HIGH {
                if tpl.pid_off.is_some() && inflight >= p.inflight {
                    break;
                }
                if let Some(iv) = p.interval {
                    if next_due > now {
                        wake = Some(next_due);
                        break;
                    }
                    next_due += iv;
                }
                seq = seq.wrapping_add(1);
                let start = wbuf.len();
                wbuf.extend_from_slice(&tpl.bytes);
                let m = &mut wbuf[start..];
                if let Some(off) = tpl.pid_off {
                    m[off..off + 2].copy_from_slice(&next_pid.to_be_bytes());
                    next_pid = next_pid.checked_add(1).unwrap_or(1);
                    inflight += 1;
                }
                let po = tpl.payload_off;
                m[po..po + 8].copy_from_slice(&ts);
                m[po + 8..po + 12].copy_from_slice(&p.pub_idx.to_be_bytes());
                m[po + 12..po + 16].copy_from_slice(&seq.to_be_bytes());
                budget -= 1;
                f_sent += 1;
            }
        }

        if f_sent > 0 {
            sh.sent.fetch_add(f_sent, Ordering::Relaxed);
            st.sent += f_sent;
            f_sent = 0;
        }
        if f_acked > 0 {
            sh.acked.fetch_add(f_acked, Ordering::Relaxed);
            st.acked += f_acked;
            f_acked = 0;
        }
        if f_deliv > 0 {
            sh.delivered.fetch_add(f_deliv, Ordering::Relaxed);
            st.delivered += f_deliv;
            f_deliv = 0;
        }

        let interest = if wbuf.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            ready = stream.ready(interest) => {
                let ready = ready?;
                if ready.is_readable() {
                    if rbuf.capacity() - rbuf.len() < RBUF_CHUNK / 4 {
                        rbuf.reserve(RBUF_CHUNK);
                    }
                    match stream.try_read_buf(rbuf) {
                        Ok(0) => bail!("connection closed by broker"),
                        Ok(_) => {
                            let now = now_ns();
                            while let Some(d) =
                                decode(rbuf, version, MAX_PACKET).context("malformed packet from broker")?
                            {
                                match d.packet {
                                    Packet::Publish(p) => {
                                        f_deliv += 1;
                                        let pl = &p.payload[..];
                                        if pl.len() >= STAMP_LEN {
                                            let ts = u64::from_be_bytes(pl[0..8].try_into().expect("8 bytes"));
                                            let idx = u32::from_be_bytes(pl[8..12].try_into().expect("4 bytes"));
                                            let s = u32::from_be_bytes(pl[12..16].try_into().expect("4 bytes"));
                                            if let Some(h) = st.hist.as_mut() {
                                                h.saturating_record(now.saturating_sub(ts).max(1));
                                            }
                                            match last_seq.get_mut(idx as usize) {
                                                Some(last) if s <= *last => st.dups += 1,
                                                Some(last) => *last = s,
                                                None => st.foreign += 1,
                                            }
                                        } else {
                                            st.foreign += 1;
                                        }
                                        if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
                                            let ack = Packet::PubAck(PubResp::new(id, ReasonCode::Success));
                                            encode(&ack, version, wbuf);
                                        }
                                    }
                                    Packet::PubAck(_) => {
                                        inflight = inflight.saturating_sub(1);
                                        f_acked += 1;
                                    }
                                    Packet::Disconnect(d) => bail!("broker sent DISCONNECT ({:?})", d.code),
                                    _ => {}
                                }
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if ready.is_writable() && !wbuf.is_empty() {
                    match stream.try_write(wbuf) {
                        Ok(n) => wbuf.advance(n),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            () = sleep_until(wake.unwrap_or(far)), if wake.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_offsets_patch_packet_id_and_stamp() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                let t = Template::new("a/b/c", 64, qos, version).unwrap();
                let mut buf = BytesMut::from(&t.bytes[..]);
                if let Some(off) = t.pid_off {
                    buf[off..off + 2].copy_from_slice(&7u16.to_be_bytes());
                }
                let po = t.payload_off;
                buf[po..po + 8].copy_from_slice(&42u64.to_be_bytes());
                let d = decode(&mut buf, version, MAX_PACKET).unwrap().unwrap();
                let Packet::Publish(p) = d.packet else {
                    panic!("not a PUBLISH")
                };
                assert_eq!(p.packet_id, (qos == QoS::AtLeastOnce).then_some(7));
                assert_eq!(&p.topic[..], b"a/b/c");
                assert_eq!(p.payload.len(), 64);
                assert_eq!(&p.payload[..8], &42u64.to_be_bytes());
            }
        }
    }
}
