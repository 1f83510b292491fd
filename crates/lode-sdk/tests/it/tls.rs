//! Sign-in over TLS (rustls, ring), trusting a CA given as PEM text or file.

use std::sync::Arc;

use lode_sdk::{Device, QoS, SdkError, TlsConfig};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use crate::support::{Platform, serve};

async fn tls_platform() -> (Platform, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let p = Platform::start_with(move |broker, listener| {
        serve(broker, listener, move |s| {
            let acceptor = acceptor.clone();
            async move { acceptor.accept(s).await.ok() }
        });
    })
    .await;
    (p, ck.cert.pem())
}

#[tokio::test]
async fn signs_in_over_tls_with_a_ca_pem_or_file() {
    let (p, ca) = tls_platform().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("write CA");
    for (i, tls) in [
        TlsConfig::CaPem(ca.clone().into_bytes()),
        TlsConfig::CaFile(ca_file),
    ]
    .into_iter()
    .enumerate()
    {
        let mut config = p.new_device(&format!("meter-{i:04}")).await;
        config.host = "localhost".into();
        config.tls = Some(tls);
        let (device, _events) = Device::connect(config).await.expect("connect over TLS");
        let _sub = device
            .subscribe("user/get", QoS::AtLeastOnce)
            .await
            .expect("SUBACK over TLS");
        device
            .publish("user/update", &b"over tls"[..], QoS::AtLeastOnce)
            .await
            .expect("PUBACK over TLS");
        device.disconnect().await.expect("disconnect");
    }
    p.broker.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_a_tls_error() {
    let (p, _ca) = tls_platform().await;
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let mut config = p.new_device("meter-0001").await;
    config.host = "localhost".into();
    config.tls = Some(TlsConfig::CaPem(other.cert.pem().into_bytes()));
    assert!(matches!(
        Device::connect(config).await,
        Err(SdkError::Tls(_))
    ));
    p.broker.shutdown().await;
}
