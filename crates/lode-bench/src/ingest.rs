//! The `ingest` scenario: end-to-end property ingestion of the thing model.
//!
//! Devices sign in with their Alink credentials (clientId with `_ss=1`, so the server
//! subscribes them to their replies) and post properties on
//! `/sys/${pk}/${dn}/thing/event/property/post` at QoS 1: every post carries a valid random
//! value for each property of the product's thing model. Each device keeps at most
//! `window` posts unacknowledged, optionally at a fixed rate. Lodestone sends the PUBACK
//! of a post only once the batch holding it is stored (history and latest values), so
//! the PUBACK latency is the publish→stored latency and every acknowledged post is
//! `properties` stored data points. The `_reply` of every post is read: a code other than
//! 200 means the server refused a value, and is counted.
//!
//! With [`VerifyParams`] the scenario then asks the management API, for a sample of
//! devices, for the history of one property in the run's time window (its length must
//! equal the device's acknowledged posts) and for the latest values (they must equal the
//! last acknowledged post).

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use lode_mqtt::{Packet, ProtocolVersion, PubResp, Publish, QoS, ReasonCode, decode, encode};
use lode_tsl::{DataType, Tsl};
use serde_json::{Map, Value, json};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use crate::api::{ApiClient, encode_query_value};
use crate::client::{Conn, MAX_PACKET, Phase, disconnect_now};
use crate::conns::open_many;
use crate::flow::add_cpu_columns;
use crate::procstat::{sample, sample_opt};
use crate::report::Row;
use crate::signin::{DeviceRecord, alink_credentials};
use crate::util::{Target, check_nofile, new_hist, now_ns};

/// Stop appending posts to a device's write buffer past this many bytes.
const WBUF_HIGH: usize = 16 * 1024;
/// Latencies a device collects before adding them to the shared histogram.
const LAT_FLUSH: usize = 64;
/// Suffix of the reply topic of a property post.
const REPLY_SUFFIX: &[u8] = b"/thing/event/property/post_reply";
/// Most posts a device may keep unacknowledged.
pub(crate) const MAX_WINDOW: usize = 1_000;

/// Parameters of the `ingest` scenario.
#[derive(Debug, Clone)]
pub(crate) struct IngestParams {
    /// Devices that sign in and post (at most the devices listed).
    pub(crate) devices: usize,
    /// Sign-ins in flight at once.
    pub(crate) concurrency: usize,
    pub(crate) per_source: usize,
    /// Unacknowledged posts per device.
    pub(crate) window: usize,
    /// Posts per second per device; 0 = as fast as the window allows.
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
    pub(crate) version: ProtocolVersion,
    pub(crate) verify: Option<VerifyParams>,
}

/// Checking the stored data through the management API after the run.
#[derive(Debug, Clone)]
pub(crate) struct VerifyParams {
    pub(crate) api: ApiClient,
    /// Devices to check.
    pub(crate) devices: usize,
}

/// Counters shared by the devices of one run, updated once per loop turn.
#[derive(Debug)]
struct Shared {
    sent: AtomicU64,
    acked: AtomicU64,
    replies: AtomicU64,
    /// PUBACK latencies in ns.
    hist: Mutex<Histogram<u64>>,
}

/// What one device saw.
#[derive(Debug)]
struct DeviceStats {
    idx: usize,
    sent: u64,
    acked: u64,
    replies_ok: u64,
    replies_failed: u64,
    first_failed_reply: Option<String>,
    /// The params of the last acknowledged post.
    last_acked: Option<Map<String, Value>>,
    /// PUBACK latencies (ns) not yet added to the shared histogram.
    latencies: Vec<u64>,
    error: Option<String>,
}

/// A post waiting for its PUBACK.
#[derive(Debug)]
struct InFlight {
    packet_id: u16,
    sent_ns: u64,
    params: Map<String, Value>,
}

/// A small deterministic generator (SplitMix64): values differ per device and per post.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A random value that passes the thing model's check for `dt`.
pub(crate) fn random_value(dt: &DataType, rng: &mut SplitMix, now_ms: u64) -> Value {
    match dt {
        DataType::Int(s) => {
            let min = s.min.unwrap_or(0.0).max(f64::from(i32::MIN));
            let max = s.max.unwrap_or(1000.0).min(f64::from(i32::MAX));
            let (lo, hi) = (min.ceil() as i64, max.floor() as i64);
            if hi <= lo {
                return json!(lo);
            }
            match s.step.filter(|st| *st >= 1.0 && st.fract() == 0.0) {
                Some(step) => {
                    let step = step as i64;
                    let base = s.min.filter(|m| m.fract() == 0.0).unwrap_or(0.0) as i64;
                    let mut first = base + (lo - base).div_euclid(step) * step;
                    if first < lo {
                        first += step;
                    }
                    let steps = (hi - first).div_euclid(step);
                    if steps <= 0 {
                        json!(first)
                    } else {
                        json!(first + rng.below(steps as u64 + 1) as i64 * step)
                    }
                }
                None => json!(lo + rng.below((hi - lo) as u64 + 1) as i64),
            }
        }
        DataType::Float(s) | DataType::Double(s) => {
            let min = s.min.unwrap_or(0.0);
            let max = s.max.unwrap_or(min + 1000.0).max(min);
            let scale = if matches!(dt, DataType::Float(_)) {
                100.0
            } else {
                1000.0
            };
            let x = ((min + rng.unit() * (max - min)) * scale).round() / scale;
            json!(x.clamp(min, max))
        }
        DataType::Text { length } => {
            let len = (*length as usize).min(12);
            let text: String = (0..len)
                .map(|_| char::from(b'a' + rng.below(26) as u8))
                .collect();
            Value::String(text)
        }
        DataType::Enum { items } => {
            let keys: Vec<i64> = items.iter().filter_map(|i| i.key.parse().ok()).collect();
            json!(
                keys.get(rng.below(keys.len() as u64) as usize)
                    .copied()
                    .unwrap_or(0)
            )
        }
        DataType::Bool { .. } => json!(rng.below(2)),
        DataType::Date => Value::String(now_ms.to_string()),
        DataType::Struct { members } => Value::Object(
            members
                .iter()
                .map(|m| {
                    (
                        m.identifier.clone(),
                        random_value(&m.data_type, rng, now_ms),
                    )
                })
                .collect(),
        ),
        DataType::Array { size, item } => Value::Array(
            (0..(*size).min(3))
                .map(|_| random_value(item, rng, now_ms))
                .collect(),
        ),
    }
}

/// The params of one property post: a random valid value for every property.
pub(crate) fn random_params(tsl: &Tsl, rng: &mut SplitMix, now_ms: u64) -> Map<String, Value> {
    tsl.properties
        .iter()
        .map(|p| {
            (
                p.identifier.clone(),
                random_value(&p.data_type, rng, now_ms),
            )
        })
        .collect()
}

/// The Alink envelope of a property post.
pub(crate) fn post_payload(id: u64, params: &Map<String, Value>) -> Vec<u8> {
    json!({
        "id": id.to_string(),
        "version": "1.0",
        "params": params,
        "method": "thing.event.property.post",
    })
    .to_string()
    .into_bytes()
}

/// What a reply says: `Ok(())` for code 200, else the reply (or why it is unreadable).
pub(crate) fn check_reply(payload: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(payload);
    let v: Value = serde_json::from_slice(payload).map_err(|_| format!("not JSON: {text}"))?;
    let code = match v.get("code") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    if code == Some(200) {
        Ok(())
    } else {
        Err(text.into_owned())
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `ingest` scenario against one target.
pub(crate) async fn run(
    target: &Target,
    devices: Arc<[DeviceRecord]>,
    tsl: Arc<Tsl>,
    p: &IngestParams,
) -> Row {
    match run_inner(target, devices, tsl, p).await {
        Ok(row) => row,
        Err(e) => Row::failed(&target.name, format!("{e:#}")),
    }
}

async fn run_inner(
    target: &Target,
    devices: Arc<[DeviceRecord]>,
    tsl: Arc<Tsl>,
    p: &IngestParams,
) -> Result<Row> {
    check_nofile(p.devices)?;
    ensure!(
        p.devices <= devices.len(),
        "{} devices need as many listed, the file lists {}",
        p.devices,
        devices.len()
    );
    ensure!(
        !tsl.properties.is_empty(),
        "the thing model has no properties to post"
    );
    let n_props = tsl.properties.len() as f64;
    let mut row = Row::new(&target.name);

    let (t2, p2, d2) = (target.clone(), p.clone(), devices.clone());
    let opened = open_many(p.devices, p.concurrency, move |i| {
        let (target, p, devices) = (t2.clone(), p2.clone(), d2.clone());
        async move {
            let (client_id, username, password) =
                alink_credentials(&devices[i], wall_ms().into(), true);
            let src = target.source_for(i, p.per_source);
            let conn = Conn::connect_as(
                target.addr,
                src,
                p.version,
                &client_id,
                300,
                0,
                Some((&username, password.as_bytes())),
            )
            .await?;
            Ok((i, conn))
        }
    })
    .await;
    row.set("devices", opened.streams.len() as f64);
    row.set("sign-in s", opened.elapsed.as_secs_f64());
    if opened.failed > 0 {
        row.set("sign-ins failed", opened.failed as f64);
    }
    if let Some(e) = &opened.first_error {
        row.notes.push(format!("first sign-in error: {e}"));
    }
    ensure!(!opened.streams.is_empty(), "no device signed in");
    sleep(Duration::from_millis(200)).await;

    let shared = Arc::new(Shared {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        replies: AtomicU64::new(0),
        hist: Mutex::new(new_hist()),
    });
    let interval = (p.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / p.rate));
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let start_ms = wall_ms();
    let broker0 = sample_opt(target.pid, &mut row.notes);
    let tool0 = sample(None).ok();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(opened.streams.len());
    for (idx, conn) in opened.streams {
        let d = &devices[idx];
        let dev = Device {
            topic: Bytes::from(format!(
                "/sys/{}/{}/thing/event/property/post",
                d.product_key, d.device_name
            )),
            rng: SplitMix::new(now_ns() ^ (idx as u64).wrapping_mul(0x9E37_79B9)),
            window: p.window,
            interval,
            version: p.version,
        };
        let (sh, tsl, rx) = (shared.clone(), tsl.clone(), phase_rx.clone());
        tasks.push(tokio::spawn(async move {
            device_run(idx, conn, dev, &tsl, &sh, rx).await
        }));
    }
    sleep(p.duration).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let acked_run = shared.acked.load(Ordering::Relaxed);
    let broker1 = sample_opt(target.pid, &mut row.notes);
    let tool1 = sample(None).ok();
    phase_tx.send_replace(Phase::Drain);

    // Until every post is acknowledged and replied to, or --drain: a stored batch may take
    // a while, and an unacknowledged post is reported, not forgotten.
    let drain_start = Instant::now();
    while drain_start.elapsed() < p.drain {
        sleep(Duration::from_millis(20)).await;
        let (s, a, r) = (
            shared.sent.load(Ordering::Relaxed),
            shared.acked.load(Ordering::Relaxed),
            shared.replies.load(Ordering::Relaxed),
        );
        if a >= s && r >= a {
            break;
        }
    }
    row.set("drain s", drain_start.elapsed().as_secs_f64());
    phase_tx.send_replace(Phase::Stop);
    let mut stats = Vec::with_capacity(tasks.len());
    for t in tasks {
        stats.push(t.await.context("a device task panicked")?);
    }
    let end_ms = wall_ms();

    let (mut sent, mut acked, mut ok, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut errors = Vec::new();
    let mut first_failed = None;
    for s in &stats {
        sent += s.sent;
        acked += s.acked;
        ok += s.replies_ok;
        failed += s.replies_failed;
        if let Some(e) = &s.error {
            errors.push(e.clone());
        }
        if first_failed.is_none() {
            first_failed.clone_from(&s.first_failed_reply);
        }
    }
    let hist = shared
        .hist
        .lock()
        .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?
        .clone();
    let ms = |q: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(q) as f64 / 1e6);

    row.set("points/s", acked_run as f64 * n_props / elapsed);
    row.set("posts/s", acked_run as f64 / elapsed);
    row.set("posts acked", acked as f64);
    row.set("points stored", acked as f64 * n_props);
    row.set("unacked", sent.saturating_sub(acked) as f64);
    row.set("p50 ms", ms(0.5));
    row.set("p90 ms", ms(0.9));
    row.set("p99 ms", ms(0.99));
    row.set(
        "max ms",
        (!hist.is_empty()).then(|| hist.max() as f64 / 1e6),
    );
    row.set("replies 200", ok as f64);
    row.set("replies not 200", failed as f64);
    row.set("replies missing", acked.saturating_sub(ok + failed) as f64);
    let cpu = match (broker0, broker1) {
        (Some(a), Some(b)) => Some(100.0 * (b.cpu_secs - a.cpu_secs) / elapsed),
        _ => None,
    };
    row.set("server CPU %", cpu);
    add_cpu_columns(
        &mut row,
        broker0,
        broker1,
        tool0,
        tool1,
        acked_run as f64 * n_props,
    );
    row.notes.push(
        "rates, CPU seconds and CPU % are over the publishing window; msgs/CPU-s here = stored points per server CPU second".to_owned(),
    );
    if let Some(r) = first_failed {
        row.notes
            .push(format!("first reply with a code other than 200: {r}"));
    }
    if !errors.is_empty() {
        row.notes.push(format!(
            "{} device(s) failed; first: {}",
            errors.len(),
            errors[0]
        ));
    }
    if let Some(v) = &p.verify {
        let (checked, mismatches, first) =
            verify(v, &devices, &tsl, &stats, start_ms, end_ms + 1).await;
        row.set("verified devices", checked as f64);
        row.set("verify mismatches", mismatches as f64);
        if let Some(m) = first {
            row.notes.push(format!("first verify mismatch: {m}"));
        }
    }
    Ok(row)
}

/// One device's identity and posting settings.
#[derive(Debug)]
struct Device {
    topic: Bytes,
    rng: SplitMix,
    window: usize,
    interval: Option<Duration>,
    version: ProtocolVersion,
}

async fn device_run(
    idx: usize,
    conn: Conn,
    mut dev: Device,
    tsl: &Tsl,
    sh: &Shared,
    mut phase: watch::Receiver<Phase>,
) -> DeviceStats {
    let mut st = DeviceStats {
        idx,
        sent: 0,
        acked: 0,
        replies_ok: 0,
        replies_failed: 0,
        first_failed_reply: None,
        last_acked: None,
        latencies: Vec::with_capacity(LAT_FLUSH),
        error: None,
    };
    let (stream, rbuf) = conn.into_parts();
    if let Err(e) = device_loop(&stream, rbuf, &mut dev, tsl, sh, &mut phase, &mut st).await {
        st.error = Some(format!("{e:#}"));
    }
    flush_latencies(sh, &mut st.latencies);
    disconnect_now(&stream, dev.version);
    st
}

fn flush_latencies(sh: &Shared, lat: &mut Vec<u64>) {
    if lat.is_empty() {
        return;
    }
    if let Ok(mut h) = sh.hist.lock() {
        for &ns in lat.iter() {
            h.saturating_record(ns.max(1));
        }
    }
    lat.clear();
}

async fn device_loop(
    stream: &TcpStream,
    mut rbuf: BytesMut,
    dev: &mut Device,
    tsl: &Tsl,
    sh: &Shared,
    phase: &mut watch::Receiver<Phase>,
    st: &mut DeviceStats,
) -> Result<()> {
    let version = dev.version;
    let mut wbuf = BytesMut::with_capacity(WBUF_HIGH * 2);
    rbuf.reserve(16 * 1024);
    let mut inflight: VecDeque<InFlight> = VecDeque::with_capacity(dev.window);
    let mut sending = true;
    let mut next_pid: u16 = 1;
    let mut post_id: u64 = 0;
    // Spread the devices' first posts over one interval, so a fixed rate does not burst.
    let mut next_due = Instant::now()
        + dev
            .interval
            .map_or(Duration::ZERO, |iv| iv.mul_f64(dev.rng.unit()));
    let far = Instant::now() + Duration::from_secs(86_400);
    let (mut f_sent, mut f_acked, mut f_replies) = (0u64, 0u64, 0u64);

    loop {
        match *phase.borrow_and_update() {
            Phase::Stop => return Ok(()),
            Phase::Drain => sending = false,
            Phase::Run => {}
        }
        let mut wake: Option<Instant> = None;
        if sending {
            let now = Instant::now();
            if let Some(iv) = dev.interval
                && now > next_due + iv.max(Duration::from_millis(100))
            {
                // Fell behind (tool or server starved of CPU): do not burst to catch up.
                next_due = now;
            }
            while inflight.len() < dev.window && wbuf.len() < WBUF_HIGH {
                if let Some(iv) = dev.interval {
                    if next_due > now {
                        wake = Some(next_due);
                        break;
                    }
                    next_due += iv;
                }
                post_id += 1;
                let params = random_params(tsl, &mut dev.rng, wall_ms());
                let publish = Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: dev.topic.clone(),
                    packet_id: Some(next_pid),
                    payload: Bytes::from(post_payload(post_id, &params)),
                    properties: Default::default(),
                });
                encode(&publish, version, &mut wbuf);
                inflight.push_back(InFlight {
                    packet_id: next_pid,
                    sent_ns: now_ns(),
                    params,
                });
                next_pid = next_pid.checked_add(1).unwrap_or(1);
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
        if f_replies > 0 {
            sh.replies.fetch_add(f_replies, Ordering::Relaxed);
            f_replies = 0;
        }
        if st.latencies.len() >= LAT_FLUSH {
            flush_latencies(sh, &mut st.latencies);
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
                    if rbuf.capacity() - rbuf.len() < 4096 {
                        rbuf.reserve(16 * 1024);
                    }
                    match stream.try_read_buf(&mut rbuf) {
                        Ok(0) => bail!("connection closed by the server"),
                        Ok(_) => {
                            while let Some(d) = decode(&mut rbuf, version, MAX_PACKET)
                                .context("malformed packet from the server")?
                            {
                                match d.packet {
                                    Packet::PubAck(ack) => {
                                        let Some(pos) = inflight
                                            .iter()
                                            .position(|f| f.packet_id == ack.packet_id)
                                        else {
                                            bail!("PUBACK for unknown packet id {}", ack.packet_id);
                                        };
                                        if ack.code.is_error() {
                                            bail!("post refused with PUBACK {:?}", ack.code);
                                        }
                                        if let Some(f) = inflight.remove(pos) {
                                            st.latencies.push(now_ns().saturating_sub(f.sent_ns));
                                            st.last_acked = Some(f.params);
                                        }
                                        f_acked += 1;
                                    }
                                    Packet::Publish(p) => {
                                        if p.topic.ends_with(REPLY_SUFFIX) {
                                            f_replies += 1;
                                            match check_reply(&p.payload) {
                                                Ok(()) => st.replies_ok += 1,
                                                Err(r) => {
                                                    st.replies_failed += 1;
                                                    st.first_failed_reply.get_or_insert(r);
                                                }
                                            }
                                        }
                                        if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
                                            let ack = Packet::PubAck(PubResp::new(id, ReasonCode::Success));
                                            encode(&ack, version, &mut wbuf);
                                        }
                                    }
                                    Packet::Disconnect(d) => bail!("server sent DISCONNECT ({:?})", d.code),
                                    _ => {}
                                }
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if ready.is_writable() && !wbuf.is_empty() {
                    match stream.try_write(&wbuf) {
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

/// Checks up to `v.devices` devices that had posts acknowledged; returns the devices
/// checked, the mismatches and the first mismatch.
async fn verify(
    v: &VerifyParams,
    devices: &[DeviceRecord],
    tsl: &Tsl,
    stats: &[DeviceStats],
    start_ms: u64,
    end_ms: u64,
) -> (usize, usize, Option<String>) {
    let (mut checked, mut mismatches, mut first) = (0usize, 0usize, None);
    let Some(first_prop) = tsl.properties.first() else {
        return (0, 0, None);
    };
    for s in stats
        .iter()
        .filter(|s| s.acked > 0 && s.error.is_none())
        .take(v.devices)
    {
        let d = &devices[s.idx];
        checked += 1;
        let problem = match verify_device(v, d, &first_prop.identifier, s, start_ms, end_ms).await {
            Ok(None) => continue,
            Ok(Some(m)) => m,
            Err(e) => format!("{e:#}"),
        };
        mismatches += 1;
        first.get_or_insert_with(|| format!("{}/{}: {problem}", d.product_key, d.device_name));
    }
    (checked, mismatches, first)
}

/// `Ok(None)` when the history length and the latest values match what was acknowledged.
async fn verify_device(
    v: &VerifyParams,
    d: &DeviceRecord,
    property: &str,
    s: &DeviceStats,
    start_ms: u64,
    end_ms: u64,
) -> Result<Option<String>> {
    let base = format!(
        "/api/v1/products/{}/devices/{}",
        encode_query_value(&d.product_key),
        encode_query_value(&d.device_name)
    );
    let history = format!("{base}/properties/{}/history", encode_query_value(property));
    let mut count = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let mut query = format!("end={end_ms}&limit=200&order=asc&start={start_ms}");
        if let Some(c) = &cursor {
            query = format!("cursor={}&{query}", encode_query_value(c));
        }
        let (status, body) = v.api.get(&history, &query).await?;
        ensure!(status == 200, "history: HTTP {status}: {body}");
        count += body["items"].as_array().map_or(0, |a| a.len() as u64);
        match body["nextCursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => break,
        }
    }
    if count != s.acked {
        return Ok(Some(format!(
            "{count} points of {property} stored in the run's window, {} posts acknowledged",
            s.acked
        )));
    }
    let (status, body) = v.api.get(&format!("{base}/properties"), "").await?;
    ensure!(status == 200, "latest properties: HTTP {status}: {body}");
    let Some(expected) = &s.last_acked else {
        return Ok(None);
    };
    let items = body["items"].as_array().cloned().unwrap_or_default();
    for (id, want) in expected {
        let got = items
            .iter()
            .find(|i| i["identifier"].as_str() == Some(id.as_str()))
            .map(|i| &i["value"]);
        if !same_value(got, want) {
            return Ok(Some(format!(
                "latest {id} is {}, the last acknowledged post had {want}",
                got.map_or("missing".to_owned(), Value::to_string)
            )));
        }
    }
    Ok(None)
}

/// Equal JSON values, numbers compared as `f64` with a relative tolerance.
fn same_value(got: Option<&Value>, want: &Value) -> bool {
    match (got, want) {
        (Some(Value::Number(a)), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0),
            _ => false,
        },
        (Some(g), w) => g == w,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BENCH_TSL: &str = include_str!("../tsl/ingest.json");

    #[test]
    fn bench_model_is_valid_with_five_typed_properties() {
        let tsl = Tsl::from_json(BENCH_TSL).unwrap();
        assert_eq!(tsl.properties.len(), 5);
        let kinds: Vec<&str> = tsl
            .properties
            .iter()
            .map(|p| match p.data_type {
                DataType::Int(_) => "int",
                DataType::Float(_) => "float",
                DataType::Double(_) => "double",
                DataType::Bool { .. } => "bool",
                DataType::Enum { .. } => "enum",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["int", "float", "double", "bool", "enum"]);
    }

    #[test]
    fn random_posts_pass_the_model_check() {
        let models = [
            BENCH_TSL.to_owned(),
            r#"{"properties": [
                {"identifier": "Odd", "name": "Odd", "accessMode": "r",
                 "dataType": {"type": "int", "specs": {"min": "-7", "max": "23", "step": "5"}}},
                {"identifier": "Label", "name": "Label", "accessMode": "rw",
                 "dataType": {"type": "text", "specs": {"length": "4"}}},
                {"identifier": "At", "name": "At", "accessMode": "r",
                 "dataType": {"type": "date", "specs": {}}},
                {"identifier": "Pos", "name": "Pos", "accessMode": "r",
                 "dataType": {"type": "struct", "specs": [
                    {"identifier": "lat", "name": "lat",
                     "dataType": {"type": "double", "specs": {"min": "-90", "max": "90"}}},
                    {"identifier": "on", "name": "on",
                     "dataType": {"type": "bool", "specs": {"0": "no", "1": "yes"}}}]}},
                {"identifier": "Samples", "name": "Samples", "accessMode": "r",
                 "dataType": {"type": "array", "specs": {"size": "2",
                    "item": {"type": "float", "specs": {"min": "0", "max": "1"}}}}}
            ]}"#
            .to_owned(),
        ];
        for text in models {
            let tsl = Tsl::from_json(&text).unwrap();
            let mut rng = SplitMix::new(7);
            for _ in 0..2_000 {
                let params = random_params(&tsl, &mut rng, 1_700_000_000_000);
                assert_eq!(params.len(), tsl.properties.len());
                let check = tsl.check_properties(&Value::Object(params.clone()));
                assert_eq!(check.code(), 200, "{params:?}: {:?}", check.rejected);
            }
        }
    }

    #[test]
    fn random_values_vary_and_respect_steps() {
        let tsl = Tsl::from_json(BENCH_TSL).unwrap();
        let mut rng = SplitMix::new(1);
        let powers: std::collections::HashSet<i64> = (0..200)
            .map(|_| random_params(&tsl, &mut rng, 0)["Power"].as_i64().unwrap())
            .collect();
        assert!(powers.len() > 100, "{} distinct values", powers.len());
        let dt = DataType::Int(lode_tsl::NumberSpecs {
            min: Some(10.0),
            max: Some(12.0),
            step: Some(5.0),
            ..Default::default()
        });
        assert_eq!(random_value(&dt, &mut rng, 0), json!(10));
    }

    #[test]
    fn post_envelope_and_replies() {
        let mut params = Map::new();
        params.insert("Switch".into(), json!(1));
        let v: Value = serde_json::from_slice(&post_payload(42, &params)).unwrap();
        assert_eq!(v["id"], "42");
        assert_eq!(v["version"], "1.0");
        assert_eq!(v["method"], "thing.event.property.post");
        assert_eq!(v["params"]["Switch"], 1);
        assert!(check_reply(br#"{"id":"42","code":200,"data":{},"message":"success"}"#).is_ok());
        assert!(check_reply(br#"{"id":"42","code":"200","data":{}}"#).is_ok());
        let bad = check_reply(br#"{"id":"42","code":6306,"data":{}}"#).unwrap_err();
        assert!(bad.contains("6306"), "{bad}");
        assert!(check_reply(b"\xff not json").is_err());
        assert!(check_reply(br#"{"id":"42"}"#).is_err());
    }

    #[test]
    fn value_comparison_tolerates_float_formatting_only() {
        assert!(same_value(Some(&json!(0.1 + 0.2)), &json!(0.3)));
        assert!(same_value(Some(&json!(3)), &json!(3.0)));
        assert!(!same_value(Some(&json!(3)), &json!(4)));
        assert!(same_value(Some(&json!("ab")), &json!("ab")));
        assert!(!same_value(Some(&json!("1")), &json!(1)));
        assert!(!same_value(None, &json!(1)));
    }
}
