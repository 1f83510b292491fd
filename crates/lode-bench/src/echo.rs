//! The physical ceiling: a raw TCP relay inside the tool, in the fan-in shape.
//!
//! N sender connections write fixed-size frames (payload plus the size of a small MQTT
//! PUBLISH header and topic) as fast as TCP allows; an in-process server reads them, forwards
//! whole frames to the single receiver connection, and the receiver counts and timestamps them.
//! No protocol, no routing, no acknowledgements: what a broker could at best do on this loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};

use crate::client::STAMP_LEN;
use crate::procstat::sample;
use crate::report::Row;
use crate::util::{new_hist, now_ns};

/// Bytes added to each payload to match a QoS 0 PUBLISH with a ~28 byte topic.
pub(crate) const FRAME_OVERHEAD: usize = 32;

#[derive(Debug, Clone)]
pub(crate) struct EchoParams {
    pub(crate) senders: usize,
    pub(crate) payload: usize,
    pub(crate) duration: Duration,
}

pub(crate) async fn run(p: &EchoParams) -> Row {
    match run_inner(p).await {
        Ok(r) => r,
        Err(e) => Row::failed("tcp relay (in-tool)", format!("{e:#}")),
    }
}

async fn run_inner(p: &EchoParams) -> Result<Row> {
    let frame = p.payload.max(STAMP_LEN) + FRAME_OVERHEAD;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));

    // Server: first connection is the receiver, the rest are senders.
    let n = p.senders.max(1);
    let server = tokio::spawn(async move {
        let (out, _) = listener.accept().await?;
        out.set_nodelay(true)?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(256);
        let writer = tokio::spawn(async move {
            let mut out = out;
            let mut buf = BytesMut::with_capacity(256 * 1024);
            while let Some(b) = rx.recv().await {
                buf.extend_from_slice(&b);
                while buf.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(b) => buf.extend_from_slice(&b),
                        Err(_) => break,
                    }
                }
                if out.write_all(&buf).await.is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let mut readers = Vec::new();
        for _ in 0..n {
            let (mut s, _) = listener.accept().await?;
            s.set_nodelay(true)?;
            let tx = tx.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                loop {
                    if buf.capacity() - buf.len() < 16 * 1024 {
                        buf.reserve(64 * 1024);
                    }
                    match s.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let whole = buf.len() / frame * frame;
                            if whole > 0 && tx.send(buf.split_to(whole).freeze()).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }));
        }
        drop(tx);
        for r in readers {
            r.await.ok();
        }
        writer.await.ok();
        anyhow::Ok(())
    });

    let mut recv_conn = TcpStream::connect(addr).await.context("connect receiver")?;
    recv_conn.set_nodelay(true)?;
    sleep(Duration::from_millis(20)).await;
    let mut senders = Vec::new();
    for i in 0..n {
        let s = TcpStream::connect(addr).await.context("connect sender")?;
        s.set_nodelay(true)?;
        senders.push((i as u32, s));
    }

    let rcv = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut hist = new_hist();
            let mut buf = BytesMut::with_capacity(256 * 1024);
            loop {
                if buf.capacity() - buf.len() < 64 * 1024 {
                    buf.reserve(256 * 1024);
                }
                match recv_conn.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let now = now_ns();
                        let whole = buf.len() / frame;
                        for k in 0..whole {
                            let f = &buf[k * frame..k * frame + 8];
                            let ts = u64::from_be_bytes(f.try_into().expect("8 bytes"));
                            hist.saturating_record(now.saturating_sub(ts).max(1));
                        }
                        let _ = buf.split_to(whole * frame);
                        received.fetch_add(whole as u64, Ordering::Relaxed);
                    }
                }
            }
            hist
        })
    };

    let tool0 = sample(None).ok();
    let t0 = Instant::now();
    let mut send_tasks = Vec::new();
    for (idx, mut s) in senders {
        let (stop, sent) = (stop.clone(), sent.clone());
        send_tasks.push(tokio::spawn(async move {
            let per_batch = (64 * 1024 / frame).max(1);
            let mut buf = vec![0u8; per_batch * frame];
            let mut seq = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let ts = now_ns().to_be_bytes();
                for k in 0..per_batch {
                    seq = seq.wrapping_add(1);
                    let f = &mut buf[k * frame..k * frame + STAMP_LEN];
                    f[0..8].copy_from_slice(&ts);
                    f[8..12].copy_from_slice(&idx.to_be_bytes());
                    f[12..16].copy_from_slice(&seq.to_be_bytes());
                }
                if s.write_all(&buf).await.is_err() {
                    break;
                }
                sent.fetch_add(per_batch as u64, Ordering::Relaxed);
            }
            s
        }));
    }
    sleep(p.duration).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let received_run = received.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut streams = Vec::new();
    for t in send_tasks {
        streams.push(t.await?);
    }
    // Drain what is in flight, bounded.
    let total = sent.load(Ordering::Relaxed);
    let d0 = Instant::now();
    while received.load(Ordering::Relaxed) < total && d0.elapsed() < Duration::from_secs(5) {
        sleep(Duration::from_millis(10)).await;
    }
    let tool1 = sample(None).ok();
    drop(streams);
    let hist = rcv.await?;
    server.await??;

    let mut row = Row::new("tcp relay (in-tool)");
    let msgs = received_run as f64 / elapsed;
    row.set("msgs/s", msgs);
    row.set("MB/s", msgs * frame as f64 / 1e6);
    row.set("frame bytes", frame as f64);
    row.set(
        "lost",
        total.saturating_sub(received.load(Ordering::Relaxed)) as f64,
    );
    let us = |q: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(q) as f64 / 1000.0);
    row.set("p50 µs", us(0.5));
    row.set("p99 µs", us(0.99));
    row.set("p999 µs", us(0.999));
    row.set(
        "tool CPU s",
        match (tool0, tool1) {
            (Some(a), Some(b)) => Some(b.cpu_secs - a.cpu_secs),
            _ => None,
        },
    );
    row.notes.push(
        "server, senders and receiver all run in this process (shares the same cores)".to_owned(),
    );
    row.notes.push(
        "senders are bounded only by TCP backpressure, so latency here is queueing under saturation".to_owned(),
    );
    Ok(row)
}
