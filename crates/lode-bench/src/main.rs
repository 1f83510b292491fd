//! `lodestone-bench`: drives any MQTT broker by address and reports throughput, loss, latency,
//! connection rate, broker CPU and memory, one row per broker, ratios against the first.

mod api;
mod client;
mod conns;
mod echo;
mod flow;
mod ingest;
mod ota;
mod procstat;
mod report;
mod signin;
mod util;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use lode_mqtt::{ProtocolVersion, QoS};

use crate::conns::ConnParams;
use crate::echo::EchoParams;
use crate::flow::{FlowParams, Shape};
use crate::report::{Report, Row, fmt_num};
use crate::util::{Target, parse_duration};

const AFTER_HELP: &str = "\
Scenarios:
  fan-in          N publishers (--clients, default 50) on distinct topics -> 1 subscriber on a `+` wildcard
  fan-out         1 publisher -> M subscribers (--clients, default 50) on the same topic
  pairs           N publisher/subscriber pairs (--clients, default 50), one topic per pair
  latency         1 publisher -> 1 subscriber at a fixed rate (--rate, default 1000 msg/s)
  connect-storm   open --connections (default 5000) as fast as possible, at most --concurrency handshakes
                  in flight; reports CONNECT->CONNACK rate, then disconnects
  idle            open --connections (default 10000) idle connections (keepalive 600 s), spread over
                  source addresses 127.0.0.1, .2, ... (--per-source each); reports broker VmRSS growth
                  per connection (needs @pid), then closes them
  signin          Alink device sign-in: --connections (default: 10000, at most the devices listed)
                  distinct devices from --devices FILE connect with clientId
                  `pk&dn|securemode=3,signmethod=hmacsha256,timestamp=..|`, username `dn&pk` and the
                  HMAC-SHA256 password, at most --concurrency in flight; reports sign-ins/s
                  (CONNECT->CONNACK 0) and latency percentiles, then disconnects. Each device signs
                  in once per run (Lodestone allows 5 sign-ins per device per minute)
  ingest          thing-model property ingestion: --connections (default: all listed) devices from
                  --devices FILE sign in (clientId with _ss=1, so replies are delivered) and post
                  properties (`thing.event.property.post`, a valid random value for every property
                  of --tsl FILE, default the bench model tsl/ingest.json) at QoS 1, each with at
                  most --window unacknowledged posts and --rate posts/s (default: as fast as the
                  window allows), for --duration. Lodestone acknowledges a post once it is stored,
                  so the PUBACK latency is publish->stored; reports stored points/s (acked posts x
                  properties), latency percentiles, replies with code 200 and not, server CPU and
                  RSS. --verify N then checks N devices through the management API (--api-url,
                  --access-key-id, --access-key-secret): history length in the run's window =
                  acknowledged posts, latest values = last acknowledged post
  ota             an OTA job to --connections (default: all listed) devices of --devices FILE (one
                  product): they sign in (_ss=1) and report version 1.0.0; a random firmware of
                  --firmware-size bytes is uploaded and a static job created through the API
                  (--api-url, --access-key-id, --access-key-secret) with --rollout devices per
                  minute; each device downloads the pushed URL, checks the MD5, reports progress
                  100 and the new version. Runs until the job counts every device finished or
                  --duration; reports pushes, succeeded, the observed rollout rate, download
                  throughput and latency, server CPU and peak RSS (needs @pid)
  provision       helper, no target: creates an account with an access key (printed), a product
                  (with the thing model --tsl FILE saved and published, when given) and --count
                  devices (default 100000) directly in the registry --registry PATH|URL (an SQLite
                  file, e.g. <data-dir>/registry.db of a stopped `lodestone serve`, or a
                  postgres:// URL), in batches of 10000, and writes their credentials to --devices
                  FILE (CSV productKey,deviceName,deviceSecret)
  echo-baseline   raw TCP relay inside the tool, fan-in shape (--clients senders, one receiver):
                  the ceiling for this machine's loopback; needs no target
  all             the standard matrix: fan-in QoS 0/1 x 64 B/4 KB, fan-out QoS 0/1 64 B, pairs QoS 1,
                  latency, connect-storm, echo-baseline 64 B/4 KB; idle (--connections,
                  default 10000) runs first so freed broker memory does not hide its growth

Targets: --target NAME=HOST:PORT[@PID], repeatable; every scenario runs against each target in
order and the first one is the reference for the ratio column/rows. With @PID (or --pid, matched
by position) the broker's CPU seconds (utime+stime from /proc/PID/stat) and VmRSS are reported.
Only loopback addresses are accepted unless --allow-remote.

Flow control: QoS 1 publishers keep at most --inflight unacknowledged PUBLISHes. At QoS 0 (and
at QoS 1 with --max-lag) publishers pause while more than --max-lag published messages (summed
over publishers, default inflight x publishers) are not yet delivered, so the tool cannot flood
memory; a pause with no delivery progress for 200 ms writes the outstanding messages off as lost.
After --duration the publishers stop and the tool waits up to --drain for late deliveries and
acknowledgements; lost = expected - unique delivered. At QoS 1, acked-not-delivered counts
messages the broker acknowledged that no subscriber received: that is loss too.

Latency: each payload starts with a send timestamp from this process's monotonic clock.

Limits: idle and connect-storm need one file descriptor per connection in this tool AND in the
broker: raise `ulimit -n` first (e.g. `ulimit -n 65536`), and the broker's own limit. This tool
does not change its limits itself.

The tool shares the machine's cores with the broker: its own CPU seconds are reported
(`tool CPU s`) so a tool-bound run can be recognised.

Example:
  lodestone-bench fan-in --target lodestone=127.0.0.1:1884@$(pgrep -x lodestone) \\
      --target mosquitto=127.0.0.1:1883@$(pgrep -x mosquitto) --duration 10s --qos 1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    FanIn,
    FanOut,
    Pairs,
    Latency,
    ConnectStorm,
    Idle,
    Signin,
    Ingest,
    Ota,
    Provision,
    EchoBaseline,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MqttVersion {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

#[derive(Debug, Parser)]
#[command(name = "lodestone-bench", version, about = "Load tool for MQTT brokers: throughput, loss, latency, connect rate, memory per connection", after_help = AFTER_HELP)]
struct Args {
    /// Scenario to run.
    #[arg(value_enum)]
    scenario: Option<Scenario>,
    /// Scenario to run (alternative to the positional form).
    #[arg(long = "scenario", value_enum, conflicts_with = "scenario")]
    scenario_opt: Option<Scenario>,
    /// Broker to measure: NAME=HOST:PORT[@PID]; repeatable; the first is the ratio reference.
    #[arg(long = "target", short = 't')]
    targets: Vec<String>,
    /// Broker PIDs, matched by position to targets without @PID.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Measurement time per flow scenario (e.g. 10s, 500ms); at most 300s.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Longest wait for late deliveries and acks after publishing stops.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain: Duration,
    /// QoS of publishes and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Payload size in bytes (at least 16: timestamp, publisher, sequence).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Publishers (fan-in), subscribers (fan-out), pairs, or senders (echo-baseline).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Messages per second per publisher (0 = as fast as flow control allows);
    /// for `latency` the total rate, default 1000; for `ingest` posts per second per device.
    #[arg(long)]
    rate: Option<f64>,
    /// QoS 1 window: unacknowledged PUBLISHes per publisher.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// End-to-end window: published-but-undelivered messages over all publishers
    /// (default at QoS 0: inflight x publishers; at QoS 1: off). 0 = off.
    #[arg(long)]
    max_lag: Option<u64>,
    /// Connections for connect-storm (default 5000) and idle (default 10000);
    /// devices for signin (default 10000) and ingest (default all listed).
    #[arg(long)]
    connections: Option<usize>,
    /// Handshakes in flight at once for connect-storm and idle.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Connections per source address 127.0.0.x (ephemeral ports are per source address).
    #[arg(long, default_value_t = 25_000)]
    per_source: usize,
    /// Idle: time to hold the connections before reading broker memory.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// Subscribers keep a persistent session (3.1.1 clean session 0, 5.0 session
    /// expiry 1 h), so QoS 1 messages to them must be stored durably by the broker.
    #[arg(long)]
    persistent_subs: bool,
    /// MQTT protocol version.
    #[arg(long = "mqtt-version", value_enum, default_value = "3.1.1")]
    mqtt_version: MqttVersion,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Allow targets that are not loopback addresses.
    #[arg(long)]
    allow_remote: bool,
    /// Devices file for signin (read) and provision (written): CSV productKey,deviceName,deviceSecret.
    #[arg(long)]
    devices: Option<PathBuf>,
    /// Provision: the registry, an SQLite file path or a postgres:// URL.
    #[arg(long)]
    registry: Option<String>,
    /// Provision: devices to create.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Worker threads of the tool's runtime (default: number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Ingest: unacknowledged property posts per device.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Provision: thing model (TSL JSON) to save and publish for the product;
    /// ingest: the model whose properties are posted (default: the bench model).
    #[arg(long)]
    tsl: Option<PathBuf>,
    /// Ingest: devices whose stored history and latest values are checked afterwards
    /// through the management API (0 = no check).
    #[arg(long, default_value_t = 0)]
    verify: usize,
    /// OTA: firmware size in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    firmware_size: usize,
    /// OTA: devices pushed per minute.
    #[arg(long, default_value_t = 6000)]
    rollout: u32,
    /// Ingest --verify and OTA: base URL of the server's HTTP listener, http://IP:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api_url: String,
    /// Ingest --verify: AccessKey id of the account owning the product.
    #[arg(long, env = "LODESTONE_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    /// Ingest --verify: AccessKey secret.
    #[arg(long, env = "LODESTONE_ACCESS_KEY_SECRET", hide_env_values = true)]
    access_key_secret: Option<String>,
}

/// The thing model `ingest` posts when no --tsl is given.
const BENCH_TSL: &str = include_str!("../tsl/ingest.json");

fn main() -> Result<()> {
    util::init_clock();
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()?.block_on(run(args))
}

struct Ctx {
    args: Args,
    targets: Vec<Target>,
    version: ProtocolVersion,
    reports: Vec<Report>,
}

async fn run(args: Args) -> Result<()> {
    let scenario = args
        .scenario
        .or(args.scenario_opt)
        .context("no scenario given (see --help)")?;
    ensure!(
        args.duration <= Duration::from_secs(300),
        "--duration is at most 300s"
    );
    ensure!(
        args.drain <= Duration::from_secs(60),
        "--drain is at most 60s"
    );
    ensure!(
        args.settle <= Duration::from_secs(60),
        "--settle is at most 60s"
    );
    ensure!(
        args.payload >= client::STAMP_LEN && args.payload <= 1 << 20,
        "--payload must be 16..=1048576"
    );
    ensure!(
        args.clients >= 1 && args.clients <= 10_000,
        "--clients must be 1..=10000"
    );
    ensure!(
        args.inflight >= 1 && args.inflight <= 30_000,
        "--inflight must be 1..=30000"
    );
    if scenario == Scenario::Provision {
        let registry = args
            .registry
            .as_deref()
            .context("provision needs --registry PATH|URL")?;
        let out = args
            .devices
            .as_deref()
            .context("provision needs --devices FILE to write")?;
        return signin::provision(registry, args.count, out, args.tsl.as_deref()).await;
    }
    let mut targets = Vec::new();
    let mut pids = args.pids.iter();
    for spec in &args.targets {
        let mut t = Target::parse(spec)?;
        if t.pid.is_none() {
            t.pid = pids.next().copied();
        }
        t.check_allowed(args.allow_remote)?;
        targets.push(t);
    }
    if targets.is_empty() && scenario != Scenario::EchoBaseline {
        bail!("give at least one --target NAME=HOST:PORT[@PID]");
    }
    let version = match args.mqtt_version {
        MqttVersion::V311 => ProtocolVersion::V311,
        MqttVersion::V5 => ProtocolVersion::V5,
    };
    let mut ctx = Ctx {
        args,
        targets,
        version,
        reports: Vec::new(),
    };
    eprintln!(
        "lodestone-bench: {} target(s), MQTT {}, {} tool threads; the tool shares the CPU with the broker, see `tool CPU s`",
        ctx.targets.len(),
        if version.is_v5() { "5.0" } else { "3.1.1" },
        ctx.args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    );

    let qos = if ctx.args.qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let payload = ctx.args.payload;
    match scenario {
        Scenario::FanIn => ctx.flow(Shape::FanIn, qos, payload, false).await,
        Scenario::FanOut => ctx.flow(Shape::FanOut, qos, payload, false).await,
        Scenario::Pairs => ctx.flow(Shape::Pairs, qos, payload, false).await,
        Scenario::Latency => ctx.flow(Shape::Pairs, qos, payload, true).await,
        Scenario::ConnectStorm => {
            ctx.conns(false, ctx.args.connections.unwrap_or(5_000))
                .await?
        }
        Scenario::Idle => {
            ctx.conns(true, ctx.args.connections.unwrap_or(10_000))
                .await?
        }
        Scenario::Signin => ctx.signin().await?,
        Scenario::Ingest => ctx.ingest().await?,
        Scenario::Ota => ctx.ota().await?,
        Scenario::Provision => unreachable!("handled before the targets"),
        Scenario::EchoBaseline => ctx.echo(payload).await,
        Scenario::All => {
            // Idle first: broker memory freed by earlier scenarios would hide per-connection growth.
            ctx.conns(true, ctx.args.connections.unwrap_or(10_000))
                .await?;
            ctx.flow(Shape::FanIn, QoS::AtMostOnce, 64, false).await;
            ctx.flow(Shape::FanIn, QoS::AtMostOnce, 4096, false).await;
            ctx.flow(Shape::FanIn, QoS::AtLeastOnce, 64, false).await;
            ctx.flow(Shape::FanIn, QoS::AtLeastOnce, 4096, false).await;
            ctx.flow(Shape::FanOut, QoS::AtMostOnce, 64, false).await;
            ctx.flow(Shape::FanOut, QoS::AtLeastOnce, 64, false).await;
            ctx.flow(Shape::Pairs, QoS::AtLeastOnce, 64, false).await;
            ctx.flow(Shape::Pairs, qos, 64, true).await;
            ctx.conns(false, 5_000).await?;
            ctx.echo(64).await;
            ctx.echo(4096).await;
            if !ctx.args.json {
                println!("{}", summary(&ctx.reports));
            }
        }
    }
    if ctx.args.json {
        let all: Vec<_> = ctx.reports.iter().map(Report::to_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "reports": all }))?
        );
    }
    Ok(())
}

impl Ctx {
    fn emit(&mut self, r: Report) {
        if !self.args.json {
            println!("{}", r.to_markdown());
        }
        self.reports.push(r);
    }

    async fn flow(&mut self, shape: Shape, qos: QoS, payload: usize, latency: bool) {
        let a = &self.args;
        let (clients, rate) = if latency {
            (1, a.rate.unwrap_or(1000.0))
        } else {
            (a.clients, a.rate.unwrap_or(0.0))
        };
        let n_pubs = if shape == Shape::FanOut { 1 } else { clients };
        let max_lag = a.max_lag.unwrap_or(if qos == QoS::AtMostOnce {
            (a.inflight * n_pubs) as u64
        } else {
            0
        });
        let p = FlowParams {
            shape,
            clients,
            qos,
            payload,
            duration: a.duration,
            drain: a.drain,
            rate,
            inflight: a.inflight,
            max_lag,
            version: self.version,
            latency_only: latency,
            persistent_subs: a.persistent_subs,
        };
        let (name, primary) = match (latency, shape) {
            (true, _) => ("latency", "p99 µs"),
            (_, Shape::FanIn) => ("fan-in", "delivered/s"),
            (_, Shape::FanOut) => ("fan-out", "delivered/s"),
            (_, Shape::Pairs) => ("pairs", "delivered/s"),
        };
        let shape_desc = match (latency, shape) {
            (true, _) => "1 pub -> 1 sub".to_owned(),
            (_, Shape::FanIn) => format!("{clients} pubs -> 1 wildcard sub"),
            (_, Shape::FanOut) => format!("1 pub -> {clients} subs"),
            (_, Shape::Pairs) => format!("{clients} pairs"),
        };
        let rate_desc = if rate > 0.0 {
            format!("{rate} msg/s per pub")
        } else {
            "max rate".to_owned()
        };
        let params = format!(
            "{shape_desc}, QoS {}, {payload} B, {rate_desc}, {:?}, inflight {}, max-lag {}{}",
            qos as u8,
            a.duration,
            a.inflight,
            if max_lag == 0 {
                "off".to_owned()
            } else {
                max_lag.to_string()
            },
            if a.persistent_subs {
                ", persistent subscribers"
            } else {
                ""
            }
        );
        eprintln!("running {name}: {params}");
        let mut rows = Vec::new();
        for t in &self.targets {
            eprintln!("  -> {}", t.name);
            rows.push(flow::run(t, &p).await);
        }
        self.emit(Report {
            scenario: name.to_owned(),
            params,
            primary,
            rows,
        });
    }

    async fn conns(&mut self, idle: bool, connections: usize) -> Result<()> {
        let a = &self.args;
        let p = ConnParams {
            connections,
            concurrency: a.concurrency,
            per_source: a.per_source,
            keep_alive: 600,
            version: self.version,
            settle: a.settle,
        };
        conns::check(&p)?;
        let (name, primary) = if idle {
            ("idle", "KB/conn")
        } else {
            ("connect-storm", "connects/s")
        };
        let params = format!(
            "{connections} connections, concurrency {}, keepalive 600 s",
            a.concurrency
        );
        eprintln!("running {name}: {params}");
        let mut rows = Vec::new();
        for t in &self.targets {
            eprintln!("  -> {}", t.name);
            rows.push(if idle {
                conns::idle(t, &p).await
            } else {
                conns::connect_storm(t, &p).await
            });
        }
        self.emit(Report {
            scenario: name.to_owned(),
            params,
            primary,
            rows,
        });
        Ok(())
    }

    async fn signin(&mut self) -> Result<()> {
        let a = &self.args;
        let path = a
            .devices
            .as_deref()
            .context("signin needs --devices FILE (see `provision`)")?;
        let devices: Arc<[signin::DeviceRecord]> = signin::read_devices(path)?.into();
        let connections = a.connections.unwrap_or(10_000).min(devices.len());
        let p = signin::SigninParams {
            connections,
            concurrency: a.concurrency,
            per_source: a.per_source,
            keep_alive: 300,
            version: self.version,
        };
        ensure!(
            p.per_source > 0 && p.per_source <= 28_000,
            "--per-source must be 1..=28000"
        );
        let params = format!(
            "{connections} distinct devices, HMAC-SHA256, concurrency {}, keepalive 300 s",
            a.concurrency
        );
        eprintln!(
            "running signin: {params} ({} devices listed)",
            devices.len()
        );
        let mut rows = Vec::new();
        for t in &self.targets {
            eprintln!("  -> {}", t.name);
            rows.push(signin::run(t, devices.clone(), &p).await);
        }
        self.emit(Report {
            scenario: "signin".to_owned(),
            params,
            primary: "sign-ins/s",
            rows,
        });
        Ok(())
    }

    async fn ota(&mut self) -> Result<()> {
        let a = &self.args;
        let path = a
            .devices
            .as_deref()
            .context("ota needs --devices FILE (see `provision`)")?;
        let devices: Arc<[signin::DeviceRecord]> = signin::read_devices(path)?.into();
        ensure!(!devices.is_empty(), "the devices file lists no device");
        ensure!(
            a.firmware_size >= 1 && a.firmware_size <= 64 << 20,
            "--firmware-size must be 1..=67108864"
        );
        ensure!(a.rollout >= 1, "--rollout must be at least 1");
        let api = a
            .api_url
            .strip_prefix("http://")
            .and_then(|r| r.trim_end_matches('/').parse().ok())
            .context("--api-url must be http://IP:PORT")?;
        let p = ota::OtaParams {
            devices: a.connections.unwrap_or(devices.len()).min(devices.len()),
            concurrency: a.concurrency,
            per_source: a.per_source,
            firmware_size: a.firmware_size,
            rate_per_minute: a.rollout,
            duration: a.duration,
            api,
            key_id: a
                .access_key_id
                .clone()
                .context("ota needs --access-key-id (or LODESTONE_ACCESS_KEY_ID)")?,
            secret: a
                .access_key_secret
                .clone()
                .context("ota needs --access-key-secret (or LODESTONE_ACCESS_KEY_SECRET)")?,
        };
        let params = format!(
            "{} devices, firmware {} B, rollout {}/min",
            p.devices, p.firmware_size, p.rate_per_minute
        );
        eprintln!("running ota: {params}");
        let mut rows = Vec::new();
        for t in &self.targets {
            eprintln!("  -> {}", t.name);
            rows.push(ota::run(t, devices.clone(), &p).await);
        }
        self.emit(Report {
            scenario: "ota".to_owned(),
            params,
            primary: "succeeded",
            rows,
        });
        Ok(())
    }

    async fn ingest(&mut self) -> Result<()> {
        let a = &self.args;
        let path = a
            .devices
            .as_deref()
            .context("ingest needs --devices FILE (see `provision`)")?;
        let devices: Arc<[signin::DeviceRecord]> = signin::read_devices(path)?.into();
        let (tsl_name, tsl) = match a.tsl.as_deref() {
            Some(p) => (p.display().to_string(), signin::read_tsl(p)?.1),
            None => (
                "tsl/ingest.json".to_owned(),
                lode_tsl::Tsl::from_json(BENCH_TSL)
                    .map_err(|e| anyhow!("the bench thing model is invalid: {e}"))?,
            ),
        };
        ensure!(
            a.window >= 1 && a.window <= ingest::MAX_WINDOW,
            "--window must be 1..={}",
            ingest::MAX_WINDOW
        );
        ensure!(
            a.per_source > 0 && a.per_source <= 28_000,
            "--per-source must be 1..=28000"
        );
        let rate = a.rate.unwrap_or(0.0);
        ensure!(
            rate.is_finite() && rate >= 0.0,
            "--rate must be a number of posts per second, 0 or more"
        );
        let verify = if a.verify > 0 {
            let id = a
                .access_key_id
                .clone()
                .context("--verify needs --access-key-id (or LODESTONE_ACCESS_KEY_ID)")?;
            let secret = a
                .access_key_secret
                .clone()
                .context("--verify needs --access-key-secret (or LODESTONE_ACCESS_KEY_SECRET)")?;
            Some(ingest::VerifyParams {
                api: api::ApiClient::new(&a.api_url, id, secret)?,
                devices: a.verify,
            })
        } else {
            None
        };
        let n = a.connections.unwrap_or(devices.len()).min(devices.len());
        let p = ingest::IngestParams {
            devices: n,
            concurrency: a.concurrency,
            per_source: a.per_source,
            window: a.window,
            rate,
            duration: a.duration,
            drain: a.drain,
            version: self.version,
            verify,
        };
        let rate_desc = if rate > 0.0 {
            format!("{rate} posts/s per device")
        } else {
            "max rate".to_owned()
        };
        let params = format!(
            "{n} devices (_ss=1), {} properties per post ({tsl_name}), QoS 1, window {}, {rate_desc}, {:?}",
            tsl.properties.len(),
            a.window,
            a.duration
        );
        eprintln!("running ingest: {params}");
        let tsl = Arc::new(tsl);
        let mut rows = Vec::new();
        for t in &self.targets {
            eprintln!("  -> {}", t.name);
            rows.push(ingest::run(t, devices.clone(), tsl.clone(), &p).await);
        }
        self.emit(Report {
            scenario: "ingest".to_owned(),
            params,
            primary: "points/s",
            rows,
        });
        Ok(())
    }

    async fn echo(&mut self, payload: usize) {
        let p = EchoParams {
            senders: self.args.clients,
            payload,
            duration: self.args.duration,
        };
        let params = format!(
            "{} senders -> 1 receiver, {payload} B payload, {:?}",
            p.senders, p.duration
        );
        eprintln!("running echo-baseline: {params}");
        let row: Row = echo::run(&p).await;
        self.emit(Report {
            scenario: "echo-baseline".to_owned(),
            params,
            primary: "msgs/s",
            rows: vec![row],
        });
    }
}

/// One markdown table over all scenarios: the primary metric per target and its ratio.
fn summary(reports: &[Report]) -> String {
    let mut s = String::from(
        "### summary\n\n| scenario | params | target | metric | value | ratio vs first | lost | broker CPU s | msgs/CPU-s |\n|---|---|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        let first = r.rows.first().and_then(|f| f.get(r.primary));
        for row in &r.rows {
            let v = row.get(r.primary);
            let ratio = match (v, first) {
                (Some(v), Some(f)) if f != 0.0 => format!("{:.2}", v / f),
                _ => "n/a".to_owned(),
            };
            let value = match &row.error {
                Some(e) => format!("FAILED: {}", e.replace('|', "/")),
                None => fmt_num(v),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.scenario,
                r.params,
                row.target,
                r.primary,
                value,
                ratio,
                fmt_num(row.get("lost")),
                fmt_num(row.get("broker CPU s")),
                fmt_num(row.get("msgs/CPU-s")),
            ));
        }
    }
    s
}
