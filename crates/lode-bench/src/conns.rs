//! Connection scenarios: connect storm (CONNECT→CONNACK rate) and idle connections (broker memory).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use hdrhistogram::Histogram;
use lode_mqtt::ProtocolVersion;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};

use crate::client::{Conn, disconnect_now};
use crate::flow::{add_cpu_columns, run_prefix};
use crate::procstat::{sample, sample_opt};
use crate::report::Row;
use crate::util::{Target, check_nofile, new_hist};

#[derive(Debug, Clone)]
pub(crate) struct ConnParams {
    pub(crate) connections: usize,
    pub(crate) concurrency: usize,
    pub(crate) per_source: usize,
    pub(crate) keep_alive: u16,
    pub(crate) version: ProtocolVersion,
    /// Idle only: how long to hold the connections before measuring memory.
    pub(crate) settle: Duration,
}

/// What [`open_many`] opened: the connections (in no particular order) and the handshake times.
pub(crate) struct Opened<T = TcpStream> {
    pub(crate) streams: Vec<T>,
    pub(crate) hist: Histogram<u64>,
    pub(crate) failed: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
}

/// Opens `n` connections with at most `concurrency` handshakes in flight and keeps
/// them open; `connect(i)` makes connection `i`. Records each handshake's time.
pub(crate) async fn open_many<T, F, Fut>(n: usize, concurrency: usize, connect: F) -> Opened<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (next, connect) = (next.clone(), connect.clone());
        workers.push(tokio::spawn(async move {
            let mut streams = Vec::new();
            let mut hist = new_hist();
            let mut failed = 0usize;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                match connect(i).await {
                    Ok(c) => {
                        hist.saturating_record(t.elapsed().as_nanos().max(1) as u64);
                        streams.push(c);
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            (streams, hist, failed, first_error)
        }));
    }
    let mut out = Opened {
        streams: Vec::new(),
        hist: new_hist(),
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for w in workers {
        match w.await {
            Ok((s, h, f, e)) => {
                out.streams.extend(s);
                out.hist.add(&h).ok();
                out.failed += f;
                if out.first_error.is_none() {
                    out.first_error = e;
                }
            }
            Err(e) => {
                out.first_error
                    .get_or_insert_with(|| format!("worker panicked: {e}"));
            }
        }
    }
    out.elapsed = t0.elapsed();
    out
}

/// Opens `connections` MQTT connections with at most `concurrency` handshakes in flight,
/// spreading them over source addresses, and keeps them open.
async fn open_all(target: &Target, p: &ConnParams) -> Opened {
    let prefix = run_prefix();
    let tag: Arc<str> = prefix.rsplit('/').next().unwrap_or("x").into();
    let (target, p2) = (target.clone(), p.clone());
    open_many(p.connections, p.concurrency, move |i| {
        let (target, p, tag) = (target.clone(), p2.clone(), tag.clone());
        async move {
            let src = target.source_for(i, p.per_source);
            let id = format!("lb-{tag}-c{i}");
            Conn::connect(target.addr, src, p.version, &id, p.keep_alive, 0)
                .await
                .map(Conn::into_stream)
        }
    })
    .await
}

fn close_all(streams: Vec<TcpStream>, version: ProtocolVersion) {
    for s in &streams {
        disconnect_now(s, version);
    }
    drop(streams);
}

pub(crate) async fn connect_storm(target: &Target, p: &ConnParams) -> Row {
    if let Err(e) = check_nofile(p.connections) {
        return Row::failed(&target.name, format!("{e:#}"));
    }
    let mut row = Row::new(&target.name);
    let broker0 = sample_opt(target.pid, &mut row.notes);
    let tool0 = sample(None).ok();
    let o = open_all(target, p).await;
    let broker1 = sample_opt(target.pid, &mut row.notes);
    let tool1 = sample(None).ok();
    let ok = o.streams.len();
    let secs = o.elapsed.as_secs_f64();
    row.set("connects/s", ok as f64 / secs);
    row.set("connected", ok as f64);
    row.set("failed", o.failed as f64);
    row.set("wall s", secs);
    let ms = |q: f64| (!o.hist.is_empty()).then(|| o.hist.value_at_quantile(q) as f64 / 1e6);
    row.set("p50 ms", ms(0.5));
    row.set("p99 ms", ms(0.99));
    row.set(
        "max ms",
        (!o.hist.is_empty()).then(|| o.hist.max() as f64 / 1e6),
    );
    add_cpu_columns(&mut row, broker0, broker1, tool0, tool1, ok as f64);
    // Rename the per-CPU-second column's meaning in a note rather than a second column.
    row.notes
        .push("msgs/CPU-s here = connections per broker CPU second".to_owned());
    if let Some(e) = o.first_error {
        row.notes.push(format!("first connect error: {e}"));
    }
    close_all(o.streams, p.version);
    sleep(Duration::from_millis(500)).await;
    row
}

pub(crate) async fn idle(target: &Target, p: &ConnParams) -> Row {
    if let Err(e) = check_nofile(p.connections) {
        return Row::failed(&target.name, format!("{e:#}"));
    }
    let mut row = Row::new(&target.name);
    if target.pid.is_none() {
        row.notes.push(
            "no broker pid given (name=addr@pid): memory per connection not measured".to_owned(),
        );
    }
    let before = sample_opt(target.pid, &mut row.notes);
    let o = open_all(target, p).await;
    sleep(p.settle).await;
    let after = sample_opt(target.pid, &mut row.notes);
    // Check how many are still open: a broker that dropped them would show here.
    let mut alive = 0usize;
    let mut probe = [0u8; 64];
    for s in &o.streams {
        match s.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => alive += 1,
            _ => {}
        }
    }
    let ok = o.streams.len();
    row.set("connected", ok as f64);
    row.set("still open", alive as f64);
    row.set("failed", o.failed as f64);
    row.set("open s", o.elapsed.as_secs_f64());
    row.set("RSS before MB", before.map(|b| b.rss_kb as f64 / 1024.0));
    row.set("RSS after MB", after.map(|a| a.rss_kb as f64 / 1024.0));
    let per = match (before, after) {
        (Some(b), Some(a)) if ok > 0 => Some((a.rss_kb as f64 - b.rss_kb as f64) / ok as f64),
        _ => None,
    };
    row.set("KB/conn", per);
    row.notes.push(
        "KB/conn = VmRSS growth / connections; memory the broker freed earlier and reuses is not counted".to_owned(),
    );
    if let Some(e) = o.first_error {
        row.notes.push(format!("first connect error: {e}"));
    }
    close_all(o.streams, p.version);
    sleep(Duration::from_secs(1)).await;
    let closed = sample_opt(target.pid, &mut row.notes);
    row.set(
        "RSS after close MB",
        closed.map(|c| c.rss_kb as f64 / 1024.0),
    );
    row
}

/// Validates parameters shared by both scenarios.
pub(crate) fn check(p: &ConnParams) -> Result<()> {
    anyhow::ensure!(
        p.connections > 0 && p.connections <= 1_000_000,
        "--connections must be 1..=1000000"
    );
    anyhow::ensure!(
        p.per_source > 0 && p.per_source <= 28_000,
        "--per-source must be 1..=28000"
    );
    Ok(())
}
