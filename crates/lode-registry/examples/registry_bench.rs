//! Registry throughput: batch registration and `get_device` lookups, for
//! SQLite and (when `LODESTONE_TEST_PG_URL` is set) PostgreSQL.
//!
//! `cargo run --release -p lode-registry --example registry_bench`

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use lode_registry::{
    NewProduct, PgConnectOptions, PgRegistry, RegistryLimits, RegistryStore, SqliteRegistry,
};
use rand::RngExt;
use sqlx::Connection;

const DEVICES: usize = 100_000;
const BATCH: usize = 10_000;
const LOOKUPS: usize = 100_000;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

async fn bench(store: Arc<dyn RegistryStore>) -> BenchResult<()> {
    let acc = store.create_account("bench").await?;
    let product = store
        .create_product(&acc.id, NewProduct::new("bench"))
        .await?;
    let pk = product.product_key;

    let start = Instant::now();
    for b in 0..DEVICES / BATCH {
        let names = (0..BATCH)
            .map(|i| format!("device-{:07}", b * BATCH + i))
            .collect();
        let items = store.register_devices_batch(&pk, names).await?;
        if let Some(failed) = items.iter().find(|i| i.result.is_err()) {
            return Err(format!("{} not registered", failed.device_name).into());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  register: {DEVICES} devices in batches of {BATCH}: {secs:.2} s, {:.0} rows/s",
        DEVICES as f64 / secs
    );

    let mut rng = rand::rng();
    let start = Instant::now();
    for _ in 0..LOOKUPS {
        let name = format!("device-{:07}", rng.random_range(0..DEVICES));
        if store.get_device(&pk, &name).await?.is_none() {
            return Err(format!("{name} not found").into());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  get_device: {LOOKUPS} random lookups (one task): {secs:.2} s, {:.0} lookups/s",
        LOOKUPS as f64 / secs
    );
    Ok(())
}

fn file_size(path: &std::path::Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|ext| {
            let mut p = path.as_os_str().to_owned();
            p.push(ext);
            std::fs::metadata(p).ok().map(|m| m.len())
        })
        .sum()
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let limits = RegistryLimits::default();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("registry.db");
    println!("sqlite ({})", path.display());
    let store = Arc::new(SqliteRegistry::open(&path, limits).await?);
    bench(store.clone()).await?;
    println!(
        "  file size with WAL: {:.1} MiB",
        file_size(&path) as f64 / 1048576.0
    );
    store.close().await;
    println!(
        "  file size after close: {:.1} MiB",
        file_size(&path) as f64 / 1048576.0
    );

    match std::env::var("LODESTONE_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("lode_bench_{:08x}", rand::random::<u32>());
            let mut admin = sqlx::PgConnection::connect(&url).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut admin)
                .await?;
            println!("postgres (schema {schema})");
            let options = PgConnectOptions::from_str(&url)?.options([("search_path", &schema)]);
            let store = Arc::new(PgRegistry::connect_with(options, limits).await?);
            let outcome = bench(store.clone()).await;
            store.close().await;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await?;
            outcome?;
        }
        _ => println!("postgres: skipped, LODESTONE_TEST_PG_URL is not set"),
    }
    Ok(())
}
