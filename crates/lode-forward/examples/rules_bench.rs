//! Throughput and latency through the rules engine.
//!
//! A device (in process, through `Broker::publish_as`) publishes `{"seq", "ts", "t"}`
//! messages; a rule with a WHERE clause that passes one message in two forwards them
//! (1) by republish to a topic an MQTT subscriber (the SDK, over TCP) receives, and
//! (2) to a local HTTP receiver. Reports messages/s and the p50/p99 latency from the
//! publish to the arrival.
//!
//! (3) or into a PostgreSQL table (`LODESTONE_TEST_PG_URL`, default the local `test` database).
//!
//! With `devices` > 0, that many devices publish at QoS 1 at once, each waiting for its
//! message to be accepted (the PUBACK, which waits for the rule's durable buffer) before
//! the next; the rate is then ignored.
//!
//! `cargo run -p lode-forward --example rules_bench -- [messages] [republish|webhook|postgres] [rate/s, 0 = flood] [devices]`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use lode_broker::{AllowAnonymous, Broker, BrokerConfig, ConnInfo, Principal};
use lode_forward::{ForwardConfig, Forwarder};
use lode_registry::{NewProduct, RegistryStore, SqliteRegistry};
use lode_sdk::{Credential, Device, DeviceConfig, QoS};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Publishes message `seq` as `device`: `t` is 40 (passes the WHERE clause) for even ones.
async fn publish(
    broker: &Broker,
    device: &Principal,
    peer: std::net::SocketAddr,
    topic: &str,
    seq: u64,
    qos: lode_mqtt::QoS,
) -> anyhow::Result<()> {
    let t = if seq.is_multiple_of(2) { 40 } else { 20 };
    let payload = json!({"seq": seq, "ts": now_us(), "t": t}).to_string();
    broker
        .publish_as(device, &device.name, peer, topic, payload.into(), qos)
        .await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let mode = args.next().unwrap_or_else(|| "republish".to_owned());
    let rate: u64 = args.next().map_or(Ok(0), |a| a.parse())?;
    let devices: u64 = args.next().map_or(Ok(0), |a| a.parse())?;
    let dir = tempfile::tempdir()?;

    let registry: Arc<dyn RegistryStore> =
        Arc::new(SqliteRegistry::open(dir.path().join("registry.db"), Default::default()).await?);
    let account = registry.create_account("bench").await?.id;
    let pk = registry
        .create_product(&account, NewProduct::new("bench"))
        .await?
        .product_key;
    let broker = Broker::open(
        BrokerConfig::default(),
        Arc::new(lode_store::MemoryStore::new()),
        Arc::new(AllowAnonymous),
    )
    .await?;
    let config = ForwardConfig {
        account_rate: 10_000_000,
        ..ForwardConfig::new(dir.path().join("forward"))
    };
    let fw = Forwarder::start(config, registry.clone(), broker.clone()).await?;

    // Arrival times, by transport.
    let arrivals: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let mut pg = None;
    let action = match mode.as_str() {
        "postgres" => {
            let url = std::env::var("LODESTONE_TEST_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let pool = sqlx::PgPool::connect(&url).await?;
            let table = format!("lode_bench_{:x}", rand::random::<u32>());
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {table} (seq BIGINT, ts BIGINT, t INT, msg_id TEXT UNIQUE, \
                 arrived BIGINT DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT)"
            )))
            .execute(&pool)
            .await?;
            let dest = fw
                .create_destination(
                    &account,
                    serde_json::from_value(json!({
                        "name": "bench", "kind": "postgres", "config": {"url": url},
                    }))?,
                )
                .await?;
            let action = json!({
                "type": "insert", "destination": dest.id, "table": table,
                "columns": {"seq": "${seq}", "ts": "${ts}", "t": "${t}"},
                "messageIdColumn": "msg_id",
            });
            pg = Some((pool, table));
            action
        }
        "webhook" => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let got = arrivals.clone();
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: String| {
                    let got = got.clone();
                    async move {
                        if let Ok(v) = serde_json::from_str::<Value>(&body) {
                            let ts = v["ts"].as_u64().unwrap_or(0);
                            got.lock().push((ts, now_us()));
                        }
                        "ok"
                    }
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await });
            let dest = fw
                .create_destination(
                    &account,
                    serde_json::from_value(json!({
                        "name": "bench", "kind": "http",
                        "config": {"url": format!("http://{addr}/hook")},
                    }))?,
                )
                .await?;
            json!({"type": "webhook", "destination": dest.id})
        }
        _ => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let b = broker.clone();
            tokio::spawn(async move {
                while let Ok((stream, peer)) = listener.accept().await {
                    let b = b.clone();
                    tokio::spawn(async move {
                        let info = ConnInfo {
                            peer,
                            listener: "tcp",
                            client_cert: None,
                        };
                        b.serve_connection(stream, info).await;
                    });
                }
            });
            let mut config = DeviceConfig::new(
                "127.0.0.1",
                addr.port(),
                &pk,
                "subscriber",
                Credential::DeviceSecret("x".into()),
            );
            config.server_subscriptions = false;
            let (sub, _events) = Device::connect(config)
                .await
                .map_err(|e| anyhow::anyhow!("subscriber: {e:?}"))?;
            let mut s = sub
                .subscribe(&format!("/{pk}/subscriber/user/get"), QoS::AtMostOnce)
                .await?;
            let got = arrivals.clone();
            tokio::spawn(async move {
                let _keep = sub;
                while let Some(m) = s.recv().await {
                    if let Ok(v) = serde_json::from_slice::<Value>(&m.payload) {
                        let ts = v["ts"].as_u64().unwrap_or(0);
                        got.lock().push((ts, now_us()));
                    }
                }
            });
            json!({"type": "republish", "topic": format!("/{pk}/subscriber/user/get")})
        }
    };
    let spec = json!({
        "name": "bench", "enabled": true,
        "sql": format!("SELECT seq, ts, t FROM '/{pk}/+/user/update' WHERE t > 30"),
        "actions": [action],
    });
    fw.create_rule(&account, serde_json::from_value(spec)?)
        .await?;

    let device = Principal {
        unique_key: Some(format!("{pk}/dev")),
        ..Principal::named("dev")
    };
    let topic = format!("/{pk}/dev/user/update");
    let peer = "127.0.0.1:1".parse()?;
    let expected = n / 2;
    let start = Instant::now();
    if devices > 0 {
        let mut tasks = Vec::new();
        for d in 0..devices {
            let (broker, topic) = (broker.clone(), topic.clone());
            let device = Principal {
                unique_key: Some(format!("{pk}/dev{d}")),
                ..Principal::named(format!("dev{d}"))
            };
            let topic = topic.replace("/dev/", &format!("/dev{d}/"));
            tasks.push(tokio::spawn(async move {
                for seq in (d..n).step_by(devices as usize) {
                    publish(
                        &broker,
                        &device,
                        peer,
                        &topic,
                        seq,
                        lode_mqtt::QoS::AtLeastOnce,
                    )
                    .await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
    }
    for seq in (0..n).take_while(|_| devices == 0) {
        publish(
            &broker,
            &device,
            peer,
            &topic,
            seq,
            lode_mqtt::QoS::AtMostOnce,
        )
        .await?;
        if let Some(offset) = (seq * 1_000_000).checked_div(rate) {
            let due = start + Duration::from_micros(offset);
            tokio::time::sleep_until(due.into()).await;
        } else if seq % 1024 == 1023 {
            // Keep within the input queue: a real fleet publishes from many connections.
            tokio::task::yield_now().await;
        }
    }
    let published = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut elapsed = start.elapsed();
    if let Some((pool, table)) = &pg {
        while Instant::now() < deadline {
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(pool)
                    .await?;
            elapsed = start.elapsed();
            if n as u64 >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rows: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT ts, arrived FROM {table}"
        )))
        .fetch_all(pool)
        .await?;
        arrivals
            .lock()
            .extend(rows.into_iter().map(|(a, b)| (a as u64, b as u64)));
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(pool)
            .await?;
    } else {
        while (arrivals.lock().len() as u64) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        elapsed = start.elapsed();
    }
    let got = arrivals.lock().clone();
    let mut h = Histogram::<u64>::new(3)?;
    for (ts, at) in &got {
        h.record(at.saturating_sub(*ts))?;
    }
    let c = fw.counters();
    println!(
        "mode={mode} published={n} in {:.2}s; forwarded {}/{expected} rows in {:.2}s = {:.0} rows/s \
         ({:.0} input msgs/s); latency p50={}us p99={}us max={}us; input dropped={}",
        published.as_secs_f64(),
        got.len(),
        elapsed.as_secs_f64(),
        got.len() as f64 / elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max(),
        c.input_dropped,
    );
    fw.shutdown().await;
    broker.shutdown().await;
    Ok(())
}
