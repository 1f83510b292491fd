//! Message-flow scenarios: fan-in, fan-out, pairs and fixed-rate latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use lode_mqtt::{ProtocolVersion, QoS};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use crate::client::{Conn, Phase, PubSpec, Shared, Template, pump};
use crate::procstat::{sample, sample_opt};
use crate::report::Row;
use crate::util::{Target, new_hist};

/// Shape of a flow scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// N publishers on distinct topics, one subscriber on a `+` wildcard.
    FanIn,
    /// One publisher, M subscribers on its topic.
    FanOut,
    /// N publisher/subscriber pairs, one topic per pair.
    Pairs,
}

#[derive(Debug, Clone)]
pub(crate) struct FlowParams {
    pub(crate) shape: Shape,
    /// Publishers (fan-in), subscribers (fan-out) or pairs.
    pub(crate) clients: usize,
    pub(crate) qos: QoS,
    pub(crate) payload: usize,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
    /// Messages per second per publisher; 0 = as fast as flow control allows.
    pub(crate) rate: f64,
    pub(crate) inflight: usize,
    /// End-to-end window in published messages over all publishers; 0 = none.
    pub(crate) max_lag: u64,
    pub(crate) version: ProtocolVersion,
    pub(crate) latency_only: bool,
    /// Subscribers keep a persistent session.
    pub(crate) persistent_subs: bool,
}

static RUN: AtomicU64 = AtomicU64::new(0);

/// A topic prefix no other run (of this or an earlier process) uses.
pub(crate) fn run_prefix() -> String {
    format!(
        "lodestone-bench/{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) async fn run(target: &Target, p: &FlowParams) -> Row {
    match run_inner(target, p).await {
        Ok(row) => row,
        Err(e) => Row::failed(&target.name, format!("{e:#}")),
    }
}

async fn run_inner(target: &Target, p: &FlowParams) -> Result<Row> {
    let prefix = run_prefix();
    let n = p.clients.max(1);
    // (publisher topics, subscriber filters, deliveries per message)
    let (pub_topics, sub_filters, fanout): (Vec<String>, Vec<String>, u64) = match p.shape {
        Shape::FanIn => (
            (0..n).map(|i| format!("{prefix}/in/{i}")).collect(),
            vec![format!("{prefix}/in/+")],
            1,
        ),
        Shape::FanOut => (
            vec![format!("{prefix}/out")],
            vec![format!("{prefix}/out"); n],
            n as u64,
        ),
        Shape::Pairs => {
            let topics: Vec<String> = (0..n).map(|i| format!("{prefix}/pair/{i}")).collect();
            (topics.clone(), topics, 1)
        }
    };
    let n_pubs = pub_topics.len();
    let interval = (p.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / p.rate));

    // Subscribers first, so nothing published is missed.
    let mut subs = Vec::with_capacity(sub_filters.len());
    for (i, f) in sub_filters.iter().enumerate() {
        let id = format!("lb-{}-s{i}", prefix.rsplit('/').next().unwrap_or("x"));
        let expiry = if p.persistent_subs { 3600 } else { 0 };
        let mut c = Conn::connect(target.addr, None, p.version, &id, 600, expiry).await?;
        c.subscribe(f, p.qos).await?;
        subs.push(c);
    }
    let mut pubs = Vec::with_capacity(n_pubs);
    for (i, t) in pub_topics.iter().enumerate() {
        let id = format!("lb-{}-p{i}", prefix.rsplit('/').next().unwrap_or("x"));
        let c = Conn::connect(target.addr, None, p.version, &id, 600, 0).await?;
        let spec = PubSpec {
            template: Template::new(t, p.payload, p.qos, p.version)?,
            pub_idx: i as u32,
            interval,
            inflight: p.inflight.max(1),
        };
        pubs.push((c, spec));
    }
    sleep(Duration::from_millis(100)).await;

    let mut row = Row::new(&target.name);
    let shared = Arc::new(Shared {
        fanout,
        max_lag: p.max_lag,
        n_pubs,
        ..Default::default()
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let broker0 = sample_opt(target.pid, &mut row.notes);
    let tool0 = sample(None).ok();

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in subs {
        let (sh, rx) = (shared.clone(), phase_rx.clone());
        tasks.push(tokio::spawn(
            async move { pump(c, None, true, &sh, rx).await },
        ));
    }
    for (c, spec) in pubs {
        let (sh, rx) = (shared.clone(), phase_rx.clone());
        tasks.push(tokio::spawn(async move {
            pump(c, Some(spec), false, &sh, rx).await
        }));
    }
    sleep(p.duration).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let sent_run = shared.sent.load(Ordering::Relaxed);
    let delivered_run = shared.delivered.load(Ordering::Relaxed);
    phase_tx.send_replace(Phase::Drain);

    // Drain: until everything sent is delivered (and acked), nothing moves for 1 s, or timeout.
    let drain_start = Instant::now();
    let mut last = (u64::MAX, u64::MAX);
    let mut still_since = Instant::now();
    while drain_start.elapsed() < p.drain {
        sleep(Duration::from_millis(20)).await;
        let (s, d, a) = (
            shared.sent.load(Ordering::Relaxed),
            shared.delivered.load(Ordering::Relaxed),
            shared.acked.load(Ordering::Relaxed),
        );
        if d >= s * fanout && (p.qos == QoS::AtMostOnce || a >= s) {
            break;
        }
        if (d, a) != last {
            last = (d, a);
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    let broker1 = sample_opt(target.pid, &mut row.notes);
    let tool1 = sample(None).ok();
    phase_tx.send_replace(Phase::Stop);

    let mut hist = new_hist();
    let (mut sent, mut acked, mut delivered, mut dups, mut foreign) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut errors = Vec::new();
    for t in tasks {
        let st = t.await?;
        sent += st.sent;
        acked += st.acked;
        delivered += st.delivered;
        dups += st.dups;
        foreign += st.foreign;
        if let Some(h) = &st.hist {
            hist.add(h).ok();
        }
        if let Some(e) = st.error {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        row.notes.push(format!(
            "{} client(s) failed; first: {}",
            errors.len(),
            errors[0]
        ));
    }

    let expected = sent * fanout;
    let unique = delivered - dups.min(delivered);
    let lost = expected.saturating_sub(unique);
    let us = |q: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(q) as f64 / 1000.0);

    if !p.latency_only {
        row.set("sent/s", sent_run as f64 / elapsed);
        row.set("delivered/s", delivered_run as f64 / elapsed);
        row.set("sent", sent as f64);
        if p.qos == QoS::AtLeastOnce {
            row.set("acked", acked as f64);
            // An acknowledged message that never arrived is loss, whatever the QoS 0 rules say.
            row.set(
                "acked-not-delivered",
                (acked * fanout).saturating_sub(unique) as f64,
            );
        }
        row.set("expected", expected as f64);
        row.set("delivered", delivered as f64);
        row.set("lost", lost as f64);
        row.set(
            "lost %",
            if expected > 0 {
                100.0 * lost as f64 / expected as f64
            } else {
                0.0
            },
        );
        if dups > 0 {
            row.set("dup/reordered", dups as f64);
        }
    } else {
        row.set("sent/s", sent_run as f64 / elapsed);
        row.set("delivered", delivered as f64);
        row.set("lost", lost as f64);
    }
    row.set("p50 µs", us(0.5));
    row.set("p99 µs", us(0.99));
    row.set("p999 µs", us(0.999));
    if p.latency_only {
        row.set(
            "max µs",
            (!hist.is_empty()).then(|| hist.max() as f64 / 1000.0),
        );
    }
    add_cpu_columns(&mut row, broker0, broker1, tool0, tool1, delivered as f64);
    if foreign > 0 {
        row.notes.push(format!(
            "{foreign} PUBLISH packets without this tool's stamp"
        ));
    }
    if shared.written_off.load(Ordering::Relaxed) > 0 {
        row.notes.push(format!(
            "flow-control window gave up waiting for {} deliveries (broker dropped them)",
            shared.written_off.load(Ordering::Relaxed)
        ));
    }
    Ok(row)
}

/// Broker CPU seconds, messages per broker CPU second, broker RSS and the tool's own CPU.
pub(crate) fn add_cpu_columns(
    row: &mut Row,
    broker0: Option<crate::procstat::Sample>,
    broker1: Option<crate::procstat::Sample>,
    tool0: Option<crate::procstat::Sample>,
    tool1: Option<crate::procstat::Sample>,
    work: f64,
) {
    let cpu = match (broker0, broker1) {
        (Some(a), Some(b)) => Some(b.cpu_secs - a.cpu_secs),
        _ => None,
    };
    row.set("broker CPU s", cpu);
    row.set("msgs/CPU-s", cpu.filter(|&c| c > 0.0).map(|c| work / c));
    row.set("broker RSS MB", broker1.map(|b| b.rss_kb as f64 / 1024.0));
    row.set(
        "tool CPU s",
        match (tool0, tool1) {
            (Some(a), Some(b)) => Some(b.cpu_secs - a.cpu_secs),
            _ => None,
        },
    );
}
