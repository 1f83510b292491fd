//! Ingest benchmark of the history backends.
//!
//! Devices post 5 properties at a time; concurrent tasks gather posts into
//! batches the way the ingest pipeline does and append them, each append
//! durable before the next. Phase 1 measures ingest alone; phase 2 ingests
//! while a purge removes everything phase 1 wrote.
//!
//! ```text
//! cargo run --release -p lode-history --example history_bench -- \
//!     [--devices 2000] [--tasks 8] [--batch 256] [--seconds 10]
//! ```
//!
//! PostgreSQL is measured too when `LODESTONE_TEST_PG_URL` is set (in a
//! throw-away schema).

use std::error::Error;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use lode_history::{
    DeviceKey, EmbeddedHistory, HistoryConfig, PgConnectOptions, PgHistory, PropertyPoint,
    PurgeStats, Record, ThingStore,
};
use serde_json::json;
use sqlx::Connection;
use tokio::time::Instant;

type BoxError = Box<dyn Error + Send + Sync>;

const PROPERTIES_PER_POST: usize = 5;
/// Phase 1 writes device times from here, phase 2 from `PHASE2_TIME`.
const PHASE1_TIME: i64 = 1_700_000_000_000;
const PHASE2_TIME: i64 = 1_800_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Args {
    devices: usize,
    tasks: usize,
    batch: usize,
    seconds: u64,
}

impl Args {
    fn parse() -> Result<Args, BoxError> {
        let mut args = Args {
            devices: 2_000,
            tasks: 8,
            batch: 256,
            seconds: 10,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--devices" => args.devices = value.parse()?,
                "--tasks" => args.tasks = value.parse()?,
                "--batch" => args.batch = value.parse()?,
                "--seconds" => args.seconds = value.parse()?,
                _ => return Err(format!("unknown flag {flag}").into()),
            }
        }
        if args.devices == 0 || args.tasks == 0 || args.batch < PROPERTIES_PER_POST {
            return Err("devices and tasks must be positive, batch at least 5".into());
        }
        Ok(args)
    }
}

struct Report {
    points: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Report {
    fn print(&self, backend: &str, phase: &str) {
        let rate = self.points as f64 / self.elapsed.as_secs_f64();
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "{backend:<9} {phase:<14} {:>9} points in {:>5.1} s = {:>8.0} points/s   \
             append latency p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} appends)",
            self.points,
            self.elapsed.as_secs_f64(),
            rate,
            ms(self.latency_us.value_at_quantile(0.5)),
            ms(self.latency_us.value_at_quantile(0.99)),
            ms(self.latency_us.max()),
            self.latency_us.len(),
        );
    }
}

fn post(device: &DeviceKey, seq: i64, device_time: i64, out: &mut Vec<Record>) {
    let values = [
        ("temperature", json!(20.0 + (seq % 100) as f64 / 10.0)),
        ("humidity", json!(40 + seq % 30)),
        ("power", json!(seq % 2 == 0)),
        (
            "mode",
            json!(["eco", "comfort", "boost"][(seq % 3) as usize]),
        ),
        (
            "position",
            json!({"lat": 30.27, "lng": 120.15, "alt": seq % 50}),
        ),
    ];
    for (identifier, value) in values {
        out.push(Record::Property(PropertyPoint {
            device: device.clone(),
            identifier: identifier.into(),
            value,
            device_time,
            server_time: device_time + 3,
        }));
    }
}

/// Appends posts from `args.tasks` concurrent tasks for `args.seconds`.
async fn ingest(
    store: Arc<dyn ThingStore>,
    args: Args,
    base_time: i64,
) -> Result<Report, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task_idx in 0..args.tasks {
        let store = Arc::clone(&store);
        let devices: Vec<DeviceKey> = (task_idx..args.devices)
            .step_by(args.tasks)
            .map(|n| DeviceKey::new("a1BenchProd", format!("device{n:05}")))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut latency_us = Histogram::<u64>::new(3)?;
            let mut points = 0_u64;
            let mut n_posts = 0_i64;
            let posts_per_batch = args.batch / PROPERTIES_PER_POST;
            while Instant::now() < deadline && !devices.is_empty() {
                let mut records = Vec::with_capacity(posts_per_batch * PROPERTIES_PER_POST);
                for _ in 0..posts_per_batch {
                    let n_devices = i64::try_from(devices.len())?;
                    let device_idx = usize::try_from(n_posts % n_devices)?;
                    // One post per device per simulated second.
                    let device_time = base_time + (n_posts / n_devices) * 1000;
                    post(&devices[device_idx], n_posts, device_time, &mut records);
                    n_posts += 1;
                }
                let n = u64::try_from(records.len())?;
                let begin = Instant::now();
                store.append(records).await?;
                let us = u64::try_from(begin.elapsed().as_micros())?;
                latency_us.record(us.max(1))?;
                points += n;
            }
            Ok::<_, BoxError>((points, latency_us))
        }));
    }
    let mut report = Report {
        points: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new(3)?,
    };
    for task in tasks {
        let (points, latency_us) = task.await??;
        report.points += points;
        report.latency_us.add(latency_us)?;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Phase 1, then phase 2 with a concurrent purge of phase 1's data.
async fn bench(backend: &str, store: Arc<dyn ThingStore>, args: Args) -> Result<(), BoxError> {
    ingest(Arc::clone(&store), args, PHASE1_TIME)
        .await?
        .print(backend, "ingest");

    let purge_store = Arc::clone(&store);
    let purge = tokio::spawn(async move {
        let begin = Instant::now();
        let stats = purge_store.purge(PHASE2_TIME, PHASE2_TIME).await?;
        Ok::<(PurgeStats, Duration), BoxError>((stats, begin.elapsed()))
    });
    let report = ingest(Arc::clone(&store), args, PHASE2_TIME).await?;
    let (stats, took) = purge.await??;
    report.print(backend, "ingest+purge");
    println!(
        "{backend:<9} purge          removed {} points in {:.1} s, concurrently with the ingest above",
        stats.properties,
        took.as_secs_f64()
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse()?;
    println!(
        "{} devices, {} properties per post, batches of {} records, {} tasks, {} s per phase",
        args.devices,
        PROPERTIES_PER_POST,
        args.batch / PROPERTIES_PER_POST * PROPERTIES_PER_POST,
        args.tasks,
        args.seconds
    );
    let config = HistoryConfig::default();

    let dir = tempfile::tempdir()?;
    let embedded = Arc::new(EmbeddedHistory::open(dir.path(), &config)?);
    bench("embedded", embedded, args).await?;

    match std::env::var("LODESTONE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("thing_bench_{:08x}", rand::random::<u32>());
            let mut admin = sqlx::PgConnection::connect(&url).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut admin)
                .await?;
            let options =
                PgConnectOptions::from_str(&url)?.options([("search_path", schema.as_str())]);
            let pg = PgHistory::connect_with(options, &config).await?;
            let outcome = bench("postgres", Arc::new(pg.clone()), args).await;
            pg.close().await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await?;
            outcome?;
        }
        _ => println!("postgres  skipped: LODESTONE_TEST_PG_URL is not set"),
    }
    Ok(())
}
