//! Throughput of device access without a connection, in one process over loopback:
//! CoAP sign-ins and posts a second (stop-and-wait CON, one socket per device), HTTP posts a
//! second (keep-alive connections), and the memory each CoAP peer costs the server.
//!
//! `cargo run --release -p lode-edge --example bench -- [devices] [seconds]`
//! (defaults: 32 devices, 5 s per phase). Messages go to each device's
//! `/${pk}/${dn}/user/update` topic through the broker, without the thing model.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lode_broker::{Broker, BrokerConfig};
use lode_device::{DeviceAuth, DeviceAuthConfig};
use lode_edge::coap::{CoapServer, Mode};
use lode_edge::lode_coap::{Code, Message, MessageType, Token, decode, encode, opt};
use lode_edge::{Edge, EdgeConfig, TokenKey};
use lode_registry::{NewDevice, NewProduct, RegistryLimits, RegistryStore, SqliteRegistry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Fallible<()> {
    let mut args = std::env::args().skip(1);
    let devices: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let phase = Duration::from_secs(seconds);

    let dir = tempfile::tempdir()?;
    let registry: Arc<dyn RegistryStore> = Arc::new(
        SqliteRegistry::open(dir.path().join("registry.db"), RegistryLimits::default()).await?,
    );
    let account = registry.create_account("bench").await?;
    let pk = registry
        .create_product(&account.id, NewProduct::new("bench"))
        .await?
        .product_key;
    let peers = 2000;
    let mut secrets = Vec::new();
    for i in 0..devices.max(peers) {
        let d = registry
            .create_device(&pk, NewDevice::new(format!("dev-{i:05}")))
            .await?;
        secrets.push((d.device_name, d.device_secret));
    }
    let auth = DeviceAuth::start(registry.clone(), DeviceAuthConfig::default());
    let broker = Broker::open(
        BrokerConfig::default(),
        Arc::new(lode_store::MemoryStore::new()),
        auth.clone(),
    )
    .await?;
    auth.attach_broker(broker.clone());
    let config = EdgeConfig {
        publish_per_second: 1_000_000,
        auth_per_minute: 10_000_000,
        ..EdgeConfig::default()
    };
    let edge = Edge::new(auth, broker, TokenKey::generate(), config);
    let stop = CancellationToken::new();
    let coap = CoapServer::bind("127.0.0.1:0".parse()?, edge.clone(), Mode::Plain).await?;
    let coap_addr = coap.local_addr()?;
    tokio::spawn(coap.run(stop.clone()));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = http.local_addr()?;
    let app = lode_edge::http::router(edge.clone());
    tokio::spawn(async move {
        let _ = axum::serve(
            http,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });

    // CoAP: sign-ins, then posts.
    let signed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (dn, secret) in secrets.iter().take(devices).cloned() {
        let (pk, signed) = (pk.clone(), signed.clone());
        tasks.push(tokio::spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            let mut mid = 0u16;
            let token = coap_auth(&socket, coap_addr, &pk, &dn, &secret, &mut mid).await?;
            signed.fetch_add(1, Ordering::Relaxed);
            Fallible::Ok((socket, token, dn, mid))
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await??);
    }
    let auth_rate = devices as f64 / started.elapsed().as_secs_f64();
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + phase;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (socket, token, dn, mut mid) in clients {
        let (pk, sent) = (pk.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let topic = format!("/topic/{pk}/{dn}/user/update");
            while Instant::now() < deadline {
                mid = mid.wrapping_add(1);
                let mut m = Message::new(MessageType::Confirmable, Code::POST, mid);
                m.token = Token::new(&mid.to_be_bytes())?;
                m.set_uri_path(&topic)?;
                m.add_option(opt::ALINK_AUTH_TOKEN, token.clone().into_bytes())?;
                m.payload = br#"{"id":"1","params":{"t":21.5}}"#.to_vec();
                let resp = exchange(&socket, coap_addr, &m).await?;
                if resp.code == Code::CHANGED {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Fallible::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let coap_rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    // HTTP: one keep-alive connection per device.
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + phase;
    let mut tasks = Vec::new();
    for (dn, secret) in secrets.iter().take(devices) {
        let (pk, sent) = (pk.clone(), sent.clone());
        let (dn, secret) = (dn.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = TcpStream::connect(http_addr).await?;
            conn.set_nodelay(true)?;
            let cid = format!("{pk}.{dn}");
            let sign = lode_alink::sign(
                lode_alink::SignMethod::HmacSha256,
                &secret,
                &format!("clientId{cid}deviceName{dn}productKey{pk}"),
            );
            let body = serde_json::json!({"clientId": cid, "signmethod": "hmacsha256",
                "deviceName": dn, "productKey": pk, "sign": sign})
            .to_string();
            let answer = http_post(&mut conn, "/auth", "", body.as_bytes()).await?;
            let answer: serde_json::Value = serde_json::from_slice(&answer)?;
            let token = answer["info"]["token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let path = format!("/topic/{pk}/{dn}/user/update");
            while Instant::now() < deadline {
                let answer = http_post(
                    &mut conn,
                    &path,
                    &token,
                    br#"{"id":"1","params":{"t":21.5}}"#,
                )
                .await?;
                if answer.starts_with(br#"{"code":0"#) {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            Fallible::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let http_rate = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    // Memory: `peers` further peers, each signs in and posts once from its own address.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kb();
    for chunk in secrets
        .iter()
        .skip(devices)
        .take(peers)
        .collect::<Vec<_>>()
        .chunks(200)
    {
        let mut tasks = Vec::new();
        for (dn, secret) in chunk.iter().map(|d| (*d).clone()) {
            let pk = pk.clone();
            tasks.push(tokio::spawn(async move {
                let socket = UdpSocket::bind("127.0.0.1:0").await?;
                let mut mid = 0u16;
                let token = coap_auth(&socket, coap_addr, &pk, &dn, &secret, &mut mid).await?;
                let mut m = Message::new(MessageType::Confirmable, Code::POST, mid + 1);
                m.set_uri_path(&format!("/topic/{pk}/{dn}/user/update"))?;
                m.add_option(opt::ALINK_AUTH_TOKEN, token.into_bytes())?;
                m.payload = br#"{"id":"1","params":{"t":21.5}}"#.to_vec();
                exchange(&socket, coap_addr, &m).await?;
                Fallible::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kb();
    stop.cancel();

    println!("devices: {devices}, {seconds} s per phase");
    println!("coap sign-ins/s:   {auth_rate:.0}");
    println!("coap posts/s:      {coap_rate:.0}");
    println!("http posts/s:      {http_rate:.0}");
    println!(
        "memory per coap peer: {:.2} KB (RSS {before} KB -> {after} KB over {peers} peers)",
        after.saturating_sub(before) as f64 / peers as f64
    );
    Ok(())
}

async fn coap_auth(
    socket: &UdpSocket,
    server: SocketAddr,
    pk: &str,
    dn: &str,
    secret: &str,
    mid: &mut u16,
) -> Fallible<String> {
    let cid = format!("{pk}.{dn}");
    let sign = lode_alink::sign(
        lode_alink::SignMethod::HmacMd5,
        secret,
        &format!("clientId{cid}deviceName{dn}productKey{pk}"),
    );
    *mid = mid.wrapping_add(1);
    let mut m = Message::new(MessageType::Confirmable, Code::POST, *mid);
    m.set_uri_path("/auth")?;
    m.payload = serde_json::json!({"productKey": pk, "deviceName": dn, "clientId": cid,
        "sign": sign})
    .to_string()
    .into_bytes();
    let resp = exchange(socket, server, &m).await?;
    let body: serde_json::Value = serde_json::from_slice(&resp.payload)?;
    Ok(body["token"].as_str().unwrap_or_default().to_owned())
}

async fn exchange(socket: &UdpSocket, server: SocketAddr, m: &Message) -> Fallible<Message> {
    let mut buf = [0u8; 2048];
    loop {
        socket.send_to(&encode(m), server).await?;
        match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
            Ok(got) => {
                let (n, _) = got?;
                let resp = decode(buf.get(..n).unwrap_or_default())?;
                if resp.message_id == m.message_id {
                    return Ok(resp);
                }
            }
            Err(_) => continue,
        }
    }
}

/// One HTTP/1.1 request on a keep-alive connection; the response body.
async fn http_post(
    conn: &mut TcpStream,
    path: &str,
    token: &str,
    body: &[u8],
) -> Fallible<Vec<u8>> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\npassword: {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // One write: a request split over two segments waits for a delayed ACK.
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    conn.write_all(&request).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Err("connection closed".into());
        }
        raw.extend_from_slice(buf.get(..n).unwrap_or_default());
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if raw.len() >= end + 4 + len {
            return Ok(raw.get(end + 4..end + 4 + len).unwrap_or_default().to_vec());
        }
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
