//! Devices signing in with X.509 client certificates over the TLS listener
//! (client authentication optional): the certificate's subject `CN=${dn}, OU=${pk}`
//! names the device, no password needed; an X.509 product refuses a device without one.
//! The registry is the SQLite file of the data directory (embedded storage).

use std::sync::Arc;

use lode_registry::{
    AuthType, NewDevice, NewProduct, RegistryLimits, RegistryStore, SqliteRegistry,
};
use lode_server::ServerConfig;
use lode_server::config::{ClientAuth, StorageKind, TlsConfig};
use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, self_signed};

/// A hand-encoded MQTT 3.1.1 CONNECT with an optional username (no password).
fn connect_packet(client_id: &str, username: Option<&str>) -> Vec<u8> {
    let flags = 0x02 | if username.is_some() { 0x80 } else { 0 };
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
    for field in std::iter::once(client_id).chain(username) {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    assert!(body.len() < 128);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Connects over TLS (presenting `client` if given), sends CONNECT, returns the CONNACK
/// return code.
async fn connack(
    server: &TestServer,
    server_pem: &str,
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    packet: &[u8],
) -> u8 {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.mqtts.expect("mqtts listener"))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(packet).await.unwrap();
    let mut ack = [0u8; 4];
    tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_exact(&mut ack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    assert_eq!(ack[0], 0x20, "CONNACK expected, got {ack:?}");
    ack[3]
}

#[tokio::test]
async fn device_signs_in_with_its_certificate_over_tls() {
    let data = tempfile::tempdir().unwrap();
    // The registry of the server's data directory: an X.509 product and one device.
    let registry = SqliteRegistry::open(data.path().join("registry.db"), RegistryLimits::default())
        .await
        .unwrap();
    let account = registry.create_account("acme").await.unwrap();
    let product = registry
        .create_product(
            &account.id,
            NewProduct {
                auth_type: AuthType::X509,
                ..NewProduct::new("cameras")
            },
        )
        .await
        .unwrap();
    let pk = product.product_key;
    registry
        .create_device(&pk, NewDevice::new("cam-0001"))
        .await
        .unwrap();
    registry.close().await;

    // A device CA, and a device certificate it signs.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Device CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_file = data.path().join("device-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let device_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "cam-0001");
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, pk.as_str());
    let device_cert = params.signed_by(&device_key, &issuer).unwrap();
    let client = || {
        (
            device_cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(device_key.serialize_der())),
        )
    };

    let server_cert = self_signed();
    let server = TestServer::start(ServerConfig {
        data_dir: data.path().to_path_buf(),
        storage: StorageKind::Embedded,
        allow_anonymous: false,
        tls: Some(TlsConfig {
            cert: server_cert.cert.clone(),
            key: server_cert.key.clone(),
            client_ca: Some(ca_file),
            client_auth: ClientAuth::Optional,
        }),
        ..ServerConfig::local_ephemeral()
    })
    .await;
    let pem = &server_cert.cert_pem;
    let username = format!("cam-0001&{pk}");

    // The certificate alone signs the device in.
    let code = connack(
        &server,
        pem,
        Some(client()),
        &connect_packet("cam-0001", None),
    )
    .await;
    assert_eq!(code, 0);
    // With the matching username.
    let code = connack(
        &server,
        pem,
        Some(client()),
        &connect_packet("cam-0001", Some(&username)),
    )
    .await;
    assert_eq!(code, 0);
    // A username of another device: bad user name or password (4).
    let other = format!("cam-0002&{pk}");
    let code = connack(
        &server,
        pem,
        Some(client()),
        &connect_packet("cam-0002", Some(&other)),
    )
    .await;
    assert_eq!(code, 4);
    // No certificate: not authorized (5).
    let code = connack(
        &server,
        pem,
        None,
        &connect_packet("cam-0001", Some(&username)),
    )
    .await;
    assert_eq!(code, 5);
    server.shutdown().await;
}
