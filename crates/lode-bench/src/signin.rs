//! Device sign-in: provisioning many devices straight into a registry, and the `signin`
//! scenario, which signs devices in with their Alink credentials (HMAC-SHA256 of the
//! DeviceSecret) and reports sign-ins per second and CONNECT→CONNACK latency.
//!
//! The devices file is CSV with the header `productKey,deviceName,deviceSecret`, one
//! device a line; a file starting with `[` is read as a JSON array of objects with those
//! three keys.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use lode_alink::SignMethod;
use lode_mqtt::ProtocolVersion;
use lode_registry::{
    DocumentKind, NewProduct, PgRegistry, RegistryLimits, RegistryStore, SqliteRegistry,
};
use lode_tsl::Tsl;
use serde_json::Value;
use tokio::time::{Instant, sleep};

use crate::client::{Conn, disconnect_now};
use crate::conns::{Opened, open_many};
use crate::flow::add_cpu_columns;
use crate::procstat::{sample, sample_opt};
use crate::report::Row;
use crate::util::{Target, check_nofile};

/// One device's credentials.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRecord {
    pub(crate) product_key: String,
    pub(crate) device_name: String,
    pub(crate) device_secret: String,
}

/// Reads a devices file (CSV with a header line, or a JSON array).
pub(crate) fn read_devices(path: &Path) -> Result<Vec<DeviceRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let devices = if text.trim_start().starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON array", path.display()))?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let field = |k: &str| {
                    v.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .with_context(|| format!("item {i}: no string `{k}`"))
                };
                Ok(DeviceRecord {
                    product_key: field("productKey")?,
                    device_name: field("deviceName")?,
                    device_secret: field("deviceSecret")?,
                })
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (n == 0 && line.starts_with("productKey")) {
                continue;
            }
            let mut f = line.split(',');
            match (f.next(), f.next(), f.next(), f.next()) {
                (Some(pk), Some(dn), Some(ds), None) => out.push(DeviceRecord {
                    product_key: pk.to_owned(),
                    device_name: dn.to_owned(),
                    device_secret: ds.to_owned(),
                }),
                _ => bail!(
                    "{} line {}: expected productKey,deviceName,deviceSecret",
                    path.display(),
                    n + 1
                ),
            }
        }
        out
    };
    ensure!(!devices.is_empty(), "{} lists no devices", path.display());
    Ok(devices)
}

/// Opens the registry named by `registry`: a `postgres://` URL, or the path of an SQLite file
/// (for `lodestone serve`: `<data-dir>/registry.db`, written while the server is stopped).
async fn open_registry(registry: &str) -> Result<Arc<dyn RegistryStore>> {
    let limits = RegistryLimits::default();
    if registry.starts_with("postgres://") || registry.starts_with("postgresql://") {
        Ok(Arc::new(
            PgRegistry::connect(registry, limits)
                .await
                .context("connecting to PostgreSQL")?,
        ))
    } else {
        Ok(Arc::new(
            SqliteRegistry::open(registry, limits)
                .await
                .with_context(|| format!("opening SQLite registry {registry}"))?,
        ))
    }
}

/// Reads a thing model (TSL JSON in the reference format) and checks it with `lode-tsl`.
pub(crate) fn read_tsl(path: &Path) -> Result<(String, Tsl)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let tsl = Tsl::from_json(&text)
        .map_err(|e| anyhow!("{} is not a valid thing model: {e}", path.display()))?;
    Ok((text, tsl))
}

/// Creates an account with an AccessKey (printed, for the management API), a product
/// with the thing model `tsl` saved and published when given, and `count` devices in
/// batches of the registry's batch maximum, and writes their credentials to `out` as CSV.
pub(crate) async fn provision(
    registry: &str,
    count: usize,
    out: &Path,
    tsl: Option<&Path>,
) -> Result<()> {
    ensure!(
        (1..=1_000_000).contains(&count),
        "--count must be 1..=1000000"
    );
    let tsl_text = tsl.map(read_tsl).transpose()?.map(|(text, _)| text);
    let store = open_registry(registry).await?;
    let t0 = Instant::now();
    let account = store.create_account("signin-bench").await?;
    let product = store
        .create_product(&account.id, NewProduct::new("signin-bench"))
        .await?;
    let pk = product.product_key;
    eprintln!(
        "provision: {} registry, account {}, product {pk}",
        store.kind(),
        account.id
    );
    let key = store.create_access_key(&account.id).await?;
    eprintln!(
        "provision: the account's access key, for the management API:\n  \
         LODESTONE_ACCESS_KEY_ID={}\n  LODESTONE_ACCESS_KEY_SECRET={}",
        key.id, key.secret
    );
    if let Some(text) = &tsl_text {
        store.save_draft(&pk, DocumentKind::Tsl, text).await?;
        let doc = store.publish_draft(&pk, DocumentKind::Tsl).await?;
        eprintln!("provision: thing model published (version {})", doc.version);
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(w, "productKey,deviceName,deviceSecret")?;
    let batch = store.limits().batch_register_max.max(1);
    let mut created = 0usize;
    let mut start = 0usize;
    while start < count {
        let end = (start + batch).min(count);
        let names: Vec<String> = (start..end).map(|i| format!("sb-{i:07}")).collect();
        let tb = Instant::now();
        let items = store.register_devices_batch(&pk, names).await?;
        for item in items {
            let device = item
                .result
                .with_context(|| format!("registering {}", item.device_name))?;
            writeln!(w, "{pk},{},{}", device.device_name, device.device_secret)?;
            created += 1;
        }
        eprintln!(
            "  devices {start}..{end} registered in {:.2} s",
            tb.elapsed().as_secs_f64()
        );
        start = end;
    }
    w.flush()?;
    eprintln!(
        "provision: {created} devices in {:.1} s, credentials in {}",
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// Parameters of the `signin` scenario.
#[derive(Debug, Clone)]
pub(crate) struct SigninParams {
    pub(crate) connections: usize,
    pub(crate) concurrency: usize,
    pub(crate) per_source: usize,
    pub(crate) keep_alive: u16,
    pub(crate) version: ProtocolVersion,
}

/// The Alink CONNECT of one device: clientId, username, password (section 3 of the
/// Alink reference, `securemode=3`, HMAC-SHA256 over the sign content with a timestamp).
/// `server_subscribe` adds `_ss=1`: the server subscribes the device to its reply topics.
pub(crate) fn alink_credentials(
    d: &DeviceRecord,
    timestamp_ms: u128,
    server_subscribe: bool,
) -> (String, String, String) {
    let prefix = format!("{}&{}", d.product_key, d.device_name);
    let ts = timestamp_ms.to_string();
    let ss = if server_subscribe { ",_ss=1" } else { "" };
    let client_id = format!("{prefix}|securemode=3,signmethod=hmacsha256,timestamp={ts}{ss}|");
    let username = format!("{}&{}", d.device_name, d.product_key);
    let content = lode_alink::mqtt_sign_content(&prefix, &d.device_name, &d.product_key, Some(&ts));
    let password = lode_alink::sign(SignMethod::HmacSha256, &d.device_secret, &content);
    (client_id, username, password)
}

/// Signs in `p.connections` distinct devices (one connection each) with at most
/// `p.concurrency` handshakes in flight, keeping the connections open.
async fn sign_in_all(target: &Target, devices: Arc<[DeviceRecord]>, p: &SigninParams) -> Opened {
    let (target, p2) = (target.clone(), p.clone());
    open_many(p.connections, p.concurrency, move |i| {
        let (target, p, devices) = (target.clone(), p2.clone(), devices.clone());
        async move {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let (client_id, username, password) = alink_credentials(&devices[i], now_ms, false);
            let src = target.source_for(i, p.per_source);
            Conn::connect_as(
                target.addr,
                src,
                p.version,
                &client_id,
                p.keep_alive,
                0,
                Some((&username, password.as_bytes())),
            )
            .await
            .map(Conn::into_stream)
        }
    })
    .await
}

/// The `signin` scenario against one target.
pub(crate) async fn run(target: &Target, devices: Arc<[DeviceRecord]>, p: &SigninParams) -> Row {
    if let Err(e) = check_nofile(p.connections) {
        return Row::failed(&target.name, format!("{e:#}"));
    }
    if p.connections > devices.len() {
        return Row::failed(
            &target.name,
            format!(
                "{} sign-ins need as many distinct devices, the file lists {}",
                p.connections,
                devices.len()
            ),
        );
    }
    let mut row = Row::new(&target.name);
    let broker0 = sample_opt(target.pid, &mut row.notes);
    let tool0 = sample(None).ok();
    let o = sign_in_all(target, devices, p).await;
    let broker1 = sample_opt(target.pid, &mut row.notes);
    let tool1 = sample(None).ok();
    let ok = o.streams.len();
    let secs = o.elapsed.as_secs_f64();
    row.set("sign-ins/s", ok as f64 / secs);
    row.set("signed in", ok as f64);
    row.set("failed", o.failed as f64);
    row.set("wall s", secs);
    let ms = |q: f64| (!o.hist.is_empty()).then(|| o.hist.value_at_quantile(q) as f64 / 1e6);
    row.set("p50 ms", ms(0.5));
    row.set("p90 ms", ms(0.9));
    row.set("p99 ms", ms(0.99));
    row.set(
        "max ms",
        (!o.hist.is_empty()).then(|| o.hist.max() as f64 / 1e6),
    );
    row.set("RSS before MB", broker0.map(|b| b.rss_kb as f64 / 1024.0));
    add_cpu_columns(&mut row, broker0, broker1, tool0, tool1, ok as f64);
    row.notes
        .push("msgs/CPU-s here = sign-ins per broker CPU second".to_owned());
    if let Some(e) = o.first_error {
        row.notes.push(format!("first sign-in error: {e}"));
    }
    for s in &o.streams {
        disconnect_now(s, p.version);
    }
    drop(o.streams);
    sleep(Duration::from_millis(500)).await;
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_verify_with_the_server_side_check() {
        let d = DeviceRecord {
            product_key: "a1B2c3D4e5F".to_owned(),
            device_name: "sb-0000001".to_owned(),
            device_secret: "s3cr3t".to_owned(),
        };
        let (client_id, username, password) = alink_credentials(&d, 1_700_000_000_000, false);
        assert_eq!(username, "sb-0000001&a1B2c3D4e5F");
        let id = lode_alink::ClientId::parse(&client_id).unwrap();
        let content = lode_alink::mqtt_sign_content(
            &id.prefix,
            &d.device_name,
            &d.product_key,
            id.timestamp.as_deref(),
        );
        assert!(lode_alink::verify_signature(
            id.effective_sign_method(),
            &d.device_secret,
            &content,
            &password
        ));
        assert!(!id.server_subscribe);
        let (client_id, _, password_ss) = alink_credentials(&d, 1_700_000_000_000, true);
        let id = lode_alink::ClientId::parse(&client_id).unwrap();
        assert!(id.server_subscribe);
        assert_eq!(
            password_ss, password,
            "_ss=1 is not part of the signed content"
        );
    }

    #[test]
    fn devices_file_csv_and_json() {
        let dir = std::env::temp_dir().join(format!("lb-devices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("d.csv");
        std::fs::write(
            &csv,
            "productKey,deviceName,deviceSecret\npk1,dev1,s1\npk1,dev2,s2\n",
        )
        .unwrap();
        let d = read_devices(&csv).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].device_secret, "s2");
        let json = dir.join("d.json");
        std::fs::write(
            &json,
            r#"[{"productKey":"pk1","deviceName":"dev1","deviceSecret":"s1"}]"#,
        )
        .unwrap();
        assert_eq!(read_devices(&json).unwrap()[0].device_name, "dev1");
        std::fs::write(&csv, "pk1,dev1\n").unwrap();
        assert!(read_devices(&csv).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
