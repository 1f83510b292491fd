//! Shadow updates per second through the whole device path: devices signed in over MQTT
//! (TCP loopback, the Rust device SDK) publish `update` requests with reported state on
//! `/shadow/update/${pk}/${dn}`; the broker authorizes them, the shadow hook applies and
//! stores each one in the SQLite registry (compare-and-set), and the reply comes back on
//! `/shadow/get/${pk}/${dn}`. Each device waits for its reply before the next update;
//! a run counts the replies (successes and errors) and their latency.
//!
//! ```text
//! cargo run --release -p lode-shadow --example shadow_bench -- --devices 200 --updates 50
//! ```
//!
//! The per-device limit of 20 requests per second is lifted for the run (`--rate N`
//! sets it), since a single device is otherwise held to 20 updates per second.

use std::time::{Duration, Instant};

use lode_device::DeviceAuthConfig;
use lode_registry::{NewDevice, NewProduct};
use lode_sdk::{Credential, Device, DeviceConfig, Event, QoS};
use lode_shadow::{ShadowConfig, ShadowService};
use lode_testkit::TestRegistry;
use serde_json::{Value, json};

struct Args {
    devices: usize,
    updates: u64,
    rate: u32,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        devices: 200,
        updates: 50,
        rate: u32::MAX,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--devices" => out.devices = value.parse().map_err(bad)?,
            "--updates" => out.updates = value.parse().map_err(bad)?,
            "--rate" => out.rate = value.parse().map_err(bad)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(out)
}

/// What one device saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

async fn run_device(config: DeviceConfig, updates: u64) -> Result<Tally, String> {
    let topic = format!(
        "/shadow/update/{}/{}",
        config.product_key, config.device_name
    );
    let replies = format!("/shadow/get/{}/{}", config.product_key, config.device_name);
    let (device, mut events) = Device::connect(config)
        .await
        .map_err(|e| format!("sign-in: {e}"))?;
    let mut tally = Tally::default();
    for i in 1..=updates {
        let request = json!({"method": "update", "version": i,
            "state": {"reported": {"temperature": 20 + i % 10, "seq": i}}});
        let sent = Instant::now();
        device
            .publish(&topic, request.to_string(), QoS::AtLeastOnce)
            .await
            .map_err(|e| format!("publish: {e}"))?;
        let reply = loop {
            match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
                Ok(Some(Event::Message(m))) if m.topic == replies => {
                    break serde_json::from_slice::<Value>(&m.payload)
                        .map_err(|e| format!("reply: {e}"))?;
                }
                Ok(Some(Event::Message(_))) => {}
                Ok(other) => return Err(format!("connection: {other:?}")),
                Err(_) => return Err("no reply within 30 s".into()),
            }
        };
        tally
            .latencies_us
            .push(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
        if reply["payload"]["status"] == "success" {
            tally.ok += 1;
        } else {
            tally.errors += 1;
        }
    }
    device
        .disconnect()
        .await
        .map_err(|e| format!("disconnect: {e}"))?;
    Ok(tally)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = args()?;
    let registry = TestRegistry::new().await;
    let pk = registry.product(NewProduct::new("bench")).await;
    let (broker, auth) = lode_testkit::device_broker(
        &registry.registry,
        DeviceAuthConfig {
            connects_per_minute: 1000,
            ..DeviceAuthConfig::default()
        },
    )
    .await;
    let shadows = ShadowService::new(
        registry.registry.clone(),
        broker.clone(),
        auth.clone(),
        ShadowConfig {
            requests_per_second: args.rate,
            ..ShadowConfig::default()
        },
    );
    broker.add_message_hook(shadows.hook());
    auth.add_status_listener(shadows.status_listener());
    let addr = lode_testkit::serve_tcp(broker.clone()).await;

    let mut configs = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let name = format!("bench-{i:05}");
        let device = registry
            .registry
            .create_device(&pk, NewDevice::new(&name))
            .await
            .map_err(|e| format!("register {name}: {e}"))?;
        configs.push(DeviceConfig::new(
            addr.ip().to_string(),
            addr.port(),
            &pk,
            &name,
            Credential::DeviceSecret(device.device_secret),
        ));
    }

    let started = Instant::now();
    let tasks: Vec<_> = configs
        .into_iter()
        .map(|c| tokio::spawn(run_device(c, args.updates)))
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        let tally = t.await.map_err(|e| format!("device task: {e}"))??;
        total.ok += tally.ok;
        total.errors += tally.errors;
        total.latencies_us.extend(tally.latencies_us);
    }
    let elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    let replies = total.ok + total.errors;
    println!(
        "devices {} x updates {} (rate limit {}/s per device), registry SQLite",
        args.devices, args.updates, args.rate
    );
    println!(
        "replies {replies} (success {}, error {}) in {:.2} s: {:.0} updates/s",
        total.ok,
        total.errors,
        elapsed.as_secs_f64(),
        replies as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&total.latencies_us, 0.50),
        percentile(&total.latencies_us, 0.99),
        percentile(&total.latencies_us, 1.0)
    );
    Ok(())
}
