//! Alink CoAP over DTLS end to end with libcoap's `coap-client` (OpenSSL or GnuTLS build):
//! a PSK session (identity `${productKey}&${deviceName}`, key the DeviceSecret) and a
//! certificate session each sign in with `/auth` and post a property that the thing model
//! stores; a wrong key gets no session, and a PSK session cannot act for another device; an
//! ECDSA TLS certificate is the one presented; an unfinished handshake is dropped and counted.
//! Skipped with a note when no DTLS-capable `coap-client` is installed.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tokio::net::UdpSocket;

use crate::edge::{Platform, coap_auth, config, property_post};

/// The first DTLS-capable `coap-client` found.
fn client() -> Option<&'static str> {
    ["coap-client-openssl", "coap-client-gnutls"]
        .into_iter()
        .find(|c| Command::new(c).arg("-h").output().is_ok())
}

/// Runs the client with `args`, then the URI, waiting at most `wait` seconds.
async fn run(client: &'static str, args: Vec<String>, uri: String) -> Output {
    run_for(client, args, uri, 10).await
}

async fn run_for(client: &'static str, args: Vec<String>, uri: String, wait: u32) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(client)
            .args(["-m", "post", "-t", "50", "-B", &wait.to_string()])
            .args(&args)
            .arg(uri)
            .output()
            .expect("coap-client runs")
    })
    .await
    .expect("task")
}

/// The token of a `/auth` answer, if the output carries one.
fn token_of(out: &Output) -> Option<String> {
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find('{')?;
    let grant: Value = serde_json::from_str(text[start..].trim()).ok()?;
    grant["token"].as_str().map(str::to_owned)
}

fn psk(identity: &str, key: &str) -> Vec<String> {
    vec![
        "-u".to_owned(),
        identity.to_owned(),
        "-k".to_owned(),
        key.to_owned(),
    ]
}

/// Signs in over `security` (client arguments), then posts `value` with the token.
async fn sign_in_and_post(
    client: &'static str,
    p: &Platform,
    security: Vec<String>,
    dn: &str,
    secret: &str,
    value: f64,
) {
    let dtls = p.coap_dtls;
    let auth = String::from_utf8(coap_auth(&p.pk, dn, secret, None)).expect("utf-8");
    let mut args = security.clone();
    args.extend(["-e".to_owned(), auth]);
    let out = run(client, args, format!("coaps://{dtls}/auth")).await;
    let token = token_of(&out).unwrap_or_else(|| {
        panic!(
            "no token: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let mut args = security;
    args.extend([
        "-O".to_owned(),
        format!("2088,{token}"),
        "-e".to_owned(),
        String::from_utf8(property_post(value)).expect("utf-8"),
    ]);
    let pk = &p.pk;
    let uri = format!("coaps://{dtls}/topic/sys/{pk}/{dn}/thing/event/property/post");
    let out = run(client, args, uri).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.expect_temperature(dn, value).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psk_session_signs_in_and_posts_a_property() {
    let Some(client) = client() else {
        eprintln!("coap-client-openssl/-gnutls (libcoap3-bin) not installed; skipped");
        return;
    };
    let p = Platform::start(config()).await;
    let secret = p.device("dtls-psk-1").await;
    let identity = format!("{}&dtls-psk-1", p.pk);
    let security = psk(&identity, &secret);
    sign_in_and_post(client, &p, security, "dtls-psk-1", &secret, 17.5).await;

    // A PSK session is bound to its device: signing in as another is refused.
    let other = p.device("dtls-psk-2").await;
    let auth = String::from_utf8(coap_auth(&p.pk, "dtls-psk-2", &other, None)).expect("utf-8");
    let mut args = psk(&identity, &secret);
    args.extend(["-e".to_owned(), auth]);
    let out = run(client, args, format!("coaps://{}/auth", p.coap_dtls)).await;
    assert_eq!(token_of(&out), None, "another device over a bound session");

    // A wrong key gets no session, hence no answer.
    let auth = String::from_utf8(coap_auth(&p.pk, "dtls-psk-1", &secret, None)).expect("utf-8");
    let mut args = psk(&identity, "not-the-secret");
    args.extend(["-e".to_owned(), auth.clone()]);
    let out = run_for(client, args, format!("coaps://{}/auth", p.coap_dtls), 2).await;
    assert_eq!(token_of(&out), None, "wrong PSK");
    // So does an identity naming no device.
    let mut args = psk(&format!("{}&nobody", p.pk), &secret);
    args.extend(["-e".to_owned(), auth]);
    let out = run_for(client, args, format!("coaps://{}/auth", p.coap_dtls), 2).await;
    assert_eq!(token_of(&out), None, "unknown identity");

    let (_, metrics) = crate::support::get(p.http, "/metrics").await;
    assert!(
        metrics.contains("lode_dtls_handshakes_total 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lode_dtls_failures_total 2\n"),
        "wrong key and unknown identity: {metrics}"
    );
    assert!(
        metrics.contains("lode_edge_auth_failures_total{transport=\"coap\"} 1\n"),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_session_signs_in_and_posts_a_property() {
    let Some(client) = client() else {
        eprintln!("coap-client-openssl/-gnutls (libcoap3-bin) not installed; skipped");
        return;
    };
    let p = Platform::start(config()).await;
    let secret = p.device("dtls-cert-1").await;
    sign_in_and_post(client, &p, Vec::new(), "dtls-cert-1", &secret, 16.5).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_handshake_is_dropped_and_counted() {
    let mut config = config();
    config.dtls.handshake_timeout = Duration::from_millis(300);
    let p = Platform::start(config).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket
        .send_to(&client_hello(), p.coap_dtls)
        .await
        .expect("send");
    let mut buf = [0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .expect("recv");
    assert_eq!(from, p.coap_dtls);
    assert_eq!(buf[0], 22, "a handshake record");
    assert_eq!(buf[13], 3, "HelloVerifyRequest: {:?}", &buf[..n]);
    // Garbage gets nothing.
    socket
        .send_to(b"\x00garbage", p.coap_dtls)
        .await
        .expect("send");
    let silent = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await;
    assert!(silent.is_err(), "no answer to garbage");
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = crate::support::get(p.http, "/metrics").await.1;
        if metrics.contains("lode_dtls_handshake_timeouts_total 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains("lode_dtls_handshake_timeouts_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lode_dtls_handshakes_total 0\n"),
        "{metrics}"
    );
    p.shutdown().await;
}

/// A DTLS 1.2 ClientHello offering `TLS_PSK_WITH_AES_128_CCM_8`, without a cookie.
fn client_hello() -> Vec<u8> {
    let mut body = vec![0xFE, 0xFD];
    body.extend([9u8; 32]);
    body.extend([0, 0]); // session id, cookie
    body.extend([0, 2, 0xC0, 0xA8]);
    body.extend([1, 0]); // compression: null
    body.extend([0, 0]); // no extensions
    let len = body.len();
    let mut hs = vec![1, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 0, 0, 0];
    hs.extend([(len >> 8) as u8, len as u8]);
    hs.extend(body);
    let mut record = vec![22, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0];
    record.extend([(hs.len() >> 8) as u8, hs.len() as u8]);
    record.extend(hs);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_mode_presents_the_ecdsa_tls_certificate() {
    let Some(client) = client() else {
        eprintln!("coap-client-openssl/-gnutls (libcoap3-bin) not installed; skipped");
        return;
    };
    let cert = crate::support::self_signed();
    let mut config = crate::support::tls_config(&cert);
    config.allow_anonymous = false;
    let p = Platform::start(config).await;
    let secret = p.device("dtls-cert-2").await;
    let port = p.coap_dtls.port();
    let auth = String::from_utf8(coap_auth(&p.pk, "dtls-cert-2", &secret, None)).expect("utf-8");
    let trusted = cert.cert.display().to_string();
    let args = vec!["-R".to_owned(), trusted, "-e".to_owned(), auth];
    let out = run(client, args, format!("coaps://localhost:{port}/auth")).await;
    assert!(
        token_of(&out).is_some(),
        "verified against the TLS certificate: {} / {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The certificate on the wire is the TLS one (libcoap accepts any self-signed one).
    let shown = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["10", "openssl", "s_client", "-dtls1_2", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .expect("task");
    match shown {
        Ok(out) if out.status.code() != Some(127) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let body = |pem: &str| {
                pem.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>()
            };
            assert!(
                body(&text).contains(&body(&cert.cert_pem)),
                "{text} / {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        _ => eprintln!("openssl not installed; the certificate check skipped"),
    }
    p.shutdown().await;
}
