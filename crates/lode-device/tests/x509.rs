//! Device sign-in with X.509 client certificates over real MQTT sockets: the broker is
//! handed the certificate (DER) as a TLS listener with client authentication would.

use lode_testkit::{TestRegistry, device_broker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lode_broker::{Broker, ConnInfo};
use lode_device::DeviceAuthConfig;
use lode_mqtt::{Connect, ConnectProperties, Packet, ProtocolVersion, ReasonCode};
use lode_registry::{AuthType, Device, NewDevice, NewProduct, RegistryStore};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const V5: ProtocolVersion = ProtocolVersion::V5;

struct Platform {
    registry: Arc<dyn RegistryStore>,
    broker: Broker,
    x509_pk: String,
    secret_pk: String,
    _dir: tempfile::TempDir,
}

async fn platform() -> Platform {
    let r = TestRegistry::new().await;
    let x509_pk = r
        .product(NewProduct {
            auth_type: AuthType::X509,
            ..NewProduct::new("certified meters")
        })
        .await;
    let secret_pk = r.product(NewProduct::new("meters")).await;
    let (broker, _auth) = device_broker(&r.registry, DeviceAuthConfig::default()).await;
    Platform {
        registry: r.registry,
        broker,
        x509_pk,
        secret_pk,
        _dir: r.dir,
    }
}

impl Platform {
    async fn device(&self, pk: &str, name: &str) -> Device {
        self.registry
            .create_device(pk, NewDevice::new(name))
            .await
            .expect("device")
    }

    /// A listener for one connection, which the broker serves with `cert` as its
    /// verified client certificate.
    async fn listener(&self, cert: Option<Vec<u8>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let broker = self.broker.clone();
        tokio::spawn(async move {
            if let Ok((stream, peer)) = listener.accept().await {
                let info = ConnInfo {
                    peer,
                    listener: "tls",
                    client_cert: cert,
                };
                broker.serve_connection(stream, info).await;
            }
        });
        addr
    }

    /// Signs in over a connection carrying `cert`; returns the CONNACK code.
    async fn sign_in(&self, cert: Option<Vec<u8>>, connect: Connect) -> ReasonCode {
        let addr = self.listener(cert).await;
        let mut stream = TcpStream::connect(addr).await.expect("tcp");
        let mut out = BytesMut::new();
        lode_mqtt::encode(&Packet::Connect(Box::new(connect)), V5, &mut out);
        stream.write_all(&out).await.expect("write");
        let mut buf = BytesMut::new();
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(d) = lode_mqtt::decode(&mut buf, V5, 1 << 20).expect("decode") {
                    match d.packet {
                        Packet::ConnAck(ack) => return ack.code,
                        other => panic!("expected CONNACK, got {other:?}"),
                    }
                }
                assert!(stream.read_buf(&mut buf).await.expect("read") > 0, "closed");
            }
        })
        .await
        .expect("timed out waiting for CONNACK")
    }
}

/// A device certificate: `CN=${dn}, OU=${pk}`, signed by a test CA.
fn device_cert(pk: &str, dn: &str) -> Vec<u8> {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Test Device CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, dn);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, pk);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme");
    params
        .signed_by(&key, &issuer)
        .expect("device cert")
        .der()
        .to_vec()
}

fn connect(client_id: &str, username: Option<String>, password: Option<&str>) -> Connect {
    Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.to_owned(),
        will: None,
        username,
        password: password.map(|p| Bytes::from(p.to_owned())),
        properties: ConnectProperties::default(),
    }
}

/// The Alink HMAC-SHA256 CONNECT of a device.
fn signed(pk: &str, dn: &str, secret: &str) -> Connect {
    let prefix = format!("{pk}&{dn}");
    let ts = "1795827149000";
    let content = lode_alink::mqtt_sign_content(&prefix, dn, pk, Some(ts));
    let password = lode_alink::sign(lode_alink::SignMethod::HmacSha256, secret, &content);
    connect(
        &format!("{prefix}|securemode=2,signmethod=hmacsha256,timestamp={ts}|"),
        Some(format!("{dn}&{pk}")),
        Some(&password),
    )
}

#[tokio::test]
async fn certificate_signs_in_without_a_password() {
    let p = platform().await;
    p.device(&p.x509_pk, "cam-0001").await;
    p.device(&p.x509_pk, "cam-0002").await;
    let cert = device_cert(&p.x509_pk, "cam-0001");
    // No username, no password.
    let code = p
        .sign_in(
            Some(cert.clone()),
            connect(&format!("{}.cam-0001|securemode=2|", p.x509_pk), None, None),
        )
        .await;
    assert_eq!(code, ReasonCode::Success);
    // The matching username, any password (it is not checked).
    let code = p
        .sign_in(
            Some(cert),
            connect(
                "cam-0001",
                Some(format!("cam-0001&{}", p.x509_pk)),
                Some("ignored"),
            ),
        )
        .await;
    assert_eq!(code, ReasonCode::Success);
    // A certificate of an unregistered device.
    let code = p
        .sign_in(
            Some(device_cert(&p.x509_pk, "cam-9999")),
            connect("cam-9999", None, None),
        )
        .await;
    assert_eq!(code, ReasonCode::BadUserNameOrPassword);
}

#[tokio::test]
async fn certificate_of_another_device_than_the_username_is_refused() {
    let p = platform().await;
    p.device(&p.x509_pk, "cam-0001").await;
    p.device(&p.x509_pk, "cam-0002").await;
    let code = p
        .sign_in(
            Some(device_cert(&p.x509_pk, "cam-0001")),
            connect("cam-0002", Some(format!("cam-0002&{}", p.x509_pk)), None),
        )
        .await;
    assert_eq!(code, ReasonCode::BadUserNameOrPassword);
    // An application username with a device certificate.
    let code = p
        .sign_in(
            Some(device_cert(&p.x509_pk, "cam-0001")),
            connect("app", Some("dashboard".to_owned()), None),
        )
        .await;
    assert_eq!(code, ReasonCode::BadUserNameOrPassword);
}

#[tokio::test]
async fn x509_product_refuses_sign_in_without_a_certificate() {
    let p = platform().await;
    let d = p.device(&p.x509_pk, "cam-0001").await;
    // A correct HMAC signature is not enough.
    let code = p
        .sign_in(None, signed(&p.x509_pk, "cam-0001", &d.device_secret))
        .await;
    assert_eq!(code, ReasonCode::NotAuthorized);
    // Nor is a certificate that names no device (no OU).
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "cam-0001");
    let anonymous = params.self_signed(&key).expect("cert").der().to_vec();
    let code = p
        .sign_in(
            Some(anonymous),
            signed(&p.x509_pk, "cam-0001", &d.device_secret),
        )
        .await;
    assert_eq!(code, ReasonCode::NotAuthorized);
}

#[tokio::test]
async fn secret_product_still_checks_the_password_with_a_certificate() {
    let p = platform().await;
    let d = p.device(&p.secret_pk, "meter-0001").await;
    let cert = device_cert(&p.secret_pk, "meter-0001");
    let code = p
        .sign_in(Some(cert.clone()), connect("meter-0001", None, None))
        .await;
    assert_eq!(code, ReasonCode::BadUserNameOrPassword);
    let code = p
        .sign_in(
            Some(cert),
            signed(&p.secret_pk, "meter-0001", &d.device_secret),
        )
        .await;
    assert_eq!(code, ReasonCode::Success);
}
