//! The `ota` scenario: an OTA job to many simulated devices.
//!
//! Every device of `--devices FILE` signs in (`_ss=1`, so the server subscribes it to
//! `/ota/device/upgrade/...`) and reports version `1.0.0`. A random firmware of
//! `--firmware-size` bytes is uploaded through the management API and a static job to all
//! the devices is created with `--rollout` devices per minute. Each device that gets the push
//! downloads the URL over HTTP, checks the MD5 against `sign`, reports progress 100 and
//! the pushed version. The run ends when the job's statistics count every device finished or
//! after `--duration`. Reported: pushes, succeeded devices, the observed rollout rate
//! against the configured one, download throughput and latency, the server's CPU seconds
//! and peak RSS (sampled from /proc every 500 ms).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Bytes, BytesMut};
use lode_api::signing::{Credentials, signature_headers};
use lode_mqtt::{Packet, ProtocolVersion, PubResp, Publish, QoS, ReasonCode, decode, encode};
use md5::Digest as _;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

use crate::client::Conn;
use crate::conns::open_many;
use crate::procstat::{sample, sample_opt};
use crate::report::Row;
use crate::signin::{DeviceRecord, alink_credentials};
use crate::util::{Target, check_nofile, now_ns};

/// Parameters of the `ota` scenario.
#[derive(Debug, Clone)]
pub(crate) struct OtaParams {
    pub(crate) devices: usize,
    pub(crate) concurrency: usize,
    pub(crate) per_source: usize,
    pub(crate) firmware_size: usize,
    pub(crate) rate_per_minute: u32,
    pub(crate) duration: Duration,
    pub(crate) api: SocketAddr,
    pub(crate) key_id: String,
    pub(crate) secret: String,
}

const V3: ProtocolVersion = ProtocolVersion::V311;

/// What the devices observed.
#[derive(Default)]
struct Observed {
    /// Push arrival times (ns on the tool's clock).
    pushes: Mutex<Vec<u64>>,
    /// Per download: ns taken and bytes.
    downloads: Mutex<Vec<(u64, u64)>>,
    bad_digest: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Observed {
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(e.to_string());
        }
    }
}

/// A signed API call with a raw body; status and JSON.
async fn api_call(
    p: &OtaParams,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    content_type: &str,
) -> Result<(u16, Value)> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let nonce = format!("{:016x}{:08x}", now_ns(), std::process::id());
    let credentials = Credentials {
        access_key_id: &p.key_id,
        secret: &p.secret,
    };
    let headers = signature_headers(credentials, method, path, query, body, now_ms, &nonce);
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        p.api,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let raw = timeout(Duration::from_secs(60), async {
        let mut s = TcpStream::connect(p.api).await?;
        s.write_all(req.as_bytes()).await?;
        s.write_all(body).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    })
    .await
    .context("the API did not answer in time")??;
    let (status, _, body) = split_http(&raw)?;
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).context("API answer is not JSON")?
    };
    Ok((status, json))
}

/// Status, head and body of a `Connection: close` HTTP/1.1 answer with a plain body.
fn split_http(raw: &[u8]) -> Result<(u16, &str, &[u8])> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP answer")?;
    let head = std::str::from_utf8(&raw[..split]).context("malformed HTTP head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status")?;
    Ok((status, head, &raw[split + 4..]))
}

/// Downloads an `http://IP:PORT/path` URL; the body.
async fn download(url: &str) -> Result<Vec<u8>> {
    let rest = url
        .strip_prefix("http://")
        .context("the download URL is not http://")?;
    let slash = rest.find('/').context("URL without a path")?;
    let addr: SocketAddr = rest[..slash].parse().context("URL host is not IP:PORT")?;
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
            &rest[slash..]
        )
        .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let (status, _, body) = split_http(&raw)?;
    ensure!(status == 200, "download answered {status}");
    Ok(body.to_vec())
}

/// One simulated device on its connection.
struct Device {
    stream: TcpStream,
    rbuf: BytesMut,
    next_id: u16,
}

impl Device {
    async fn send(&mut self, p: &Packet) -> Result<()> {
        let mut out = BytesMut::new();
        encode(p, V3, &mut out);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Packet> {
        loop {
            if let Some(d) = decode(&mut self.rbuf, V3, 1 << 20).context("malformed packet")? {
                return Ok(d.packet);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                bail!("connection closed by the server");
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK (answering pushes meanwhile is not
    /// needed: the device is idle then).
    async fn publish(&mut self, topic: &str, payload: Value) -> Result<()> {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let id = self.next_id;
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            packet_id: Some(id),
            payload: Bytes::from(payload.to_string()),
            properties: Default::default(),
        }))
        .await?;
        loop {
            match self.recv().await? {
                Packet::PubAck(a) if a.packet_id == id => return Ok(()),
                Packet::Publish(p) => self.ack(&p).await?,
                _ => {}
            }
        }
    }

    async fn ack(&mut self, p: &Publish) -> Result<()> {
        if let Some(id) = p.packet_id {
            self.send(&Packet::PubAck(PubResp::new(id, ReasonCode::Success)))
                .await?;
        }
        Ok(())
    }

    /// Waits for the push, downloads, checks, reports progress and the new version.
    async fn upgrade(&mut self, d: &DeviceRecord, seen: &Observed) -> Result<()> {
        let upgrade = format!("/ota/device/upgrade/{}/{}", d.product_key, d.device_name);
        let push = loop {
            if let Packet::Publish(p) = self.recv().await? {
                self.ack(&p).await?;
                if p.topic.as_ref() == upgrade.as_bytes() {
                    break p;
                }
            }
        };
        seen.pushes.lock().push(now_ns());
        let msg: Value = serde_json::from_slice(&push.payload).context("push is not JSON")?;
        let url = msg["data"]["url"].as_str().context("push without url")?;
        let sign = msg["data"]["sign"].as_str().context("push without sign")?;
        let version = msg["data"]["version"]
            .as_str()
            .context("push without version")?
            .to_owned();
        let t0 = now_ns();
        let body = download(url).await?;
        seen.downloads
            .lock()
            .push((now_ns().saturating_sub(t0), body.len() as u64));
        if hex::encode(md5::Md5::digest(&body)) != sign {
            seen.bad_digest.fetch_add(1, Ordering::Relaxed);
            bail!("digest mismatch");
        }
        let (pk, dn) = (&d.product_key, &d.device_name);
        self.publish(
            &format!("/ota/device/progress/{pk}/{dn}"),
            json!({"id": 2, "params": {"step": "100", "desc": "done"}}),
        )
        .await?;
        self.publish(
            &format!("/ota/device/inform/{pk}/{dn}"),
            json!({"id": 3, "params": {"version": version}}),
        )
        .await
    }
}

/// The `ota` scenario against one target.
pub(crate) async fn run(target: &Target, devices: Arc<[DeviceRecord]>, p: &OtaParams) -> Row {
    let mut row = Row::new(&target.name);
    match run_inner(target, devices, p, &mut row).await {
        Ok(()) => row,
        Err(e) => {
            row.error = Some(format!("{e:#}"));
            row
        }
    }
}

async fn run_inner(
    target: &Target,
    devices: Arc<[DeviceRecord]>,
    p: &OtaParams,
    row: &mut Row,
) -> Result<()> {
    // One socket per device plus the downloads and API calls in flight.
    check_nofile(p.devices + 1000)?;
    ensure!(
        p.devices <= devices.len(),
        "{} devices needed, the file lists {}",
        p.devices,
        devices.len()
    );
    let pk = devices[0].product_key.clone();
    ensure!(
        devices[..p.devices].iter().all(|d| d.product_key == pk),
        "the devices must be of one product"
    );

    // Sign in every device and report 1.0.0.
    let t_connect = Instant::now();
    let (t, devs, pp) = (target.clone(), devices.clone(), p.clone());
    let opened = open_many(p.devices, p.concurrency, move |i| {
        let (t, devs, pp) = (t.clone(), devs.clone(), pp.clone());
        async move {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let (client_id, username, password) = alink_credentials(&devs[i], now_ms, true);
            let conn = Conn::connect_as(
                t.addr,
                t.source_for(i, pp.per_source),
                V3,
                &client_id,
                1200,
                0,
                Some((&username, password.as_bytes())),
            )
            .await?;
            let (stream, rbuf) = conn.into_parts();
            let mut dev = Device {
                stream,
                rbuf,
                next_id: 0,
            };
            let d = &devs[i];
            dev.publish(
                &format!("/ota/device/inform/{}/{}", d.product_key, d.device_name),
                json!({"id": 1, "params": {"version": "1.0.0"}}),
            )
            .await?;
            anyhow::Ok((i, dev))
        }
    })
    .await;
    ensure!(
        opened.failed == 0,
        "{} devices failed to sign in: {}",
        opened.failed,
        opened.first_error.unwrap_or_default()
    );
    row.set("sign-in + report s", t_connect.elapsed().as_secs_f64());

    let seen = Arc::new(Observed::default());
    let mut tasks = Vec::with_capacity(opened.streams.len());
    for (i, mut dev) in opened.streams {
        let (seen, devs) = (seen.clone(), devices.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = dev.upgrade(&devs[i], &seen).await {
                seen.error(e);
            }
            dev
        }));
    }

    // Firmware and job.
    let mut firmware = vec![0u8; p.firmware_size];
    let mut x = now_ns() | 1;
    for b in firmware.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let version = format!("2.0.0-{}", now_ns() % 1_000_000);
    let (status, fw) = api_call(
        p,
        "POST",
        "/api/v1/ota/firmware",
        &format!("productKey={pk}&version={version}"),
        &firmware,
        "application/octet-stream",
    )
    .await?;
    ensure!(status == 201, "upload answered {status}: {fw}");
    let names: Vec<&str> = devices[..p.devices]
        .iter()
        .map(|d| d.device_name.as_str())
        .collect();
    let spec = json!({"firmwareId": fw["id"], "deviceNames": names,
        "ratePerMinute": p.rate_per_minute, "timeoutSecs": 600});
    let body = spec.to_string().into_bytes();
    let broker0 = sample_opt(target.pid, &mut row.notes);
    let tool0 = sample(None).ok();
    let t_job = Instant::now();
    let (status, job) =
        api_call(p, "POST", "/api/v1/ota/jobs", "", &body, "application/json").await?;
    ensure!(status == 201, "job creation answered {status}: {job}");
    let job_id = job["id"].as_str().context("job id")?.to_owned();
    row.set("job create s", t_job.elapsed().as_secs_f64());

    // Until every device finished, sampling the server.
    let mut peak_rss = broker0.as_ref().map_or(0, |s| s.rss_kb);
    let mut stats = Value::Null;
    let deadline = Instant::now() + p.duration;
    let mut last_poll = Instant::now();
    while Instant::now() < deadline {
        sleep(Duration::from_millis(500)).await;
        if let Some(s) = target.pid.and_then(|pid| sample(Some(pid)).ok()) {
            peak_rss = peak_rss.max(s.rss_kb);
        }
        if last_poll.elapsed() >= Duration::from_secs(2) {
            last_poll = Instant::now();
            let (status, v) = api_call(
                p,
                "GET",
                &format!("/api/v1/ota/jobs/{job_id}/stats"),
                "",
                b"",
                "application/json",
            )
            .await?;
            if status == 200 {
                stats = v;
                let finished = stats["succeeded"].as_u64().unwrap_or(0)
                    + stats["failed"].as_u64().unwrap_or(0);
                if finished >= p.devices as u64 {
                    break;
                }
            }
        }
    }
    let wall = t_job.elapsed().as_secs_f64();
    let broker1 = sample_opt(target.pid, &mut row.notes);
    let tool1 = sample(None).ok();
    for t in tasks {
        t.abort();
    }

    let pushes = seen.pushes.lock().clone();
    let downloads = seen.downloads.lock().clone();
    let succeeded = stats["succeeded"].as_f64();
    row.set("devices", p.devices as f64);
    row.set("succeeded", succeeded);
    row.set("failed", stats["failed"].as_f64());
    row.set("pushes", pushes.len() as f64);
    row.set("job wall s", wall);
    row.set("rate set /min", f64::from(p.rate_per_minute));
    if let (Some(first), Some(last)) = (pushes.iter().min(), pushes.iter().max())
        && pushes.len() > 1
        && last > first
    {
        let secs = (last - first) as f64 / 1e9;
        row.set("rate seen /min", (pushes.len() - 1) as f64 / secs * 60.0);
    }
    let bytes: u64 = downloads.iter().map(|(_, b)| b).sum();
    if let (Some(first), Some(last)) = (pushes.iter().min(), pushes.iter().max()) {
        let span = ((last - first) as f64 / 1e9).max(1e-3);
        row.set("download MB/s (avg)", bytes as f64 / 1e6 / span);
    }
    let mut ms: Vec<f64> = downloads.iter().map(|(ns, _)| *ns as f64 / 1e6).collect();
    ms.sort_by(f64::total_cmp);
    let q = |f: f64| {
        ms.get(((ms.len() as f64 - 1.0) * f).round() as usize)
            .copied()
    };
    row.set("download p50 ms", q(0.5));
    row.set("download p99 ms", q(0.99));
    row.set(
        "bad digests",
        seen.bad_digest.load(Ordering::Relaxed) as f64,
    );
    row.set("device errors", seen.errors.load(Ordering::Relaxed) as f64);
    if let (Some(b0), Some(b1)) = (&broker0, &broker1) {
        row.set("server CPU s", b1.cpu_secs - b0.cpu_secs);
        row.set("server RSS MB", b1.rss_kb as f64 / 1024.0);
        row.set(
            "server peak RSS MB",
            peak_rss.max(b1.rss_kb) as f64 / 1024.0,
        );
    }
    if let (Some(t0), Some(t1)) = (&tool0, &tool1) {
        row.set("tool CPU s", t1.cpu_secs - t0.cpu_secs);
    }
    if let Some(e) = seen.first_error.lock().clone() {
        row.notes.push(format!("first device error: {e}"));
    }
    row.notes.push(format!(
        "firmware {} bytes, job {job_id}, {}",
        p.firmware_size,
        if succeeded == Some(p.devices as f64) {
            "every device succeeded"
        } else {
            "not every device finished in --duration"
        }
    ));
    Ok(())
}
