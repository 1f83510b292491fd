//! Byte streams (TCP, TLS) and the MQTT exchanges done before the connection task runs.

use bytes::BytesMut;
use lode_mqtt::{Connect, Packet, ProtocolVersion, ReasonCode, decode, encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

#[cfg(feature = "tls")]
use crate::config::TlsConfig;
use crate::config::{DeviceConfig, now_ms};
use crate::error::SdkError;

/// MQTT 3.1.1 everywhere.
pub(crate) const VERSION: ProtocolVersion = ProtocolVersion::V311;

/// Largest packet accepted from the server: the platform's 1 MiB payload plus headers.
pub(crate) const MAX_PACKET: u32 = (1 << 20) + 1024;

/// Any byte stream the connection can run over.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A boxed stream: TCP or TLS over TCP.
pub(crate) type BoxStream = Box<dyn Stream>;

/// Where to connect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<&'a TlsConfig>,
}

/// Opens TCP, then TLS when configured.
pub(crate) async fn open(endpoint: Endpoint<'_>) -> Result<BoxStream, SdkError> {
    let tcp = TcpStream::connect((endpoint.host, endpoint.port)).await?;
    tcp.set_nodelay(true)?;
    #[cfg(feature = "tls")]
    if let Some(tls) = endpoint.tls {
        return tls::wrap(tcp, endpoint.host, tls).await;
    }
    Ok(Box::new(tcp))
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, RootCertStore};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    use super::BoxStream;
    use crate::config::TlsConfig;
    use crate::error::SdkError;

    pub(super) async fn wrap(
        tcp: TcpStream,
        host: &str,
        tls: &TlsConfig,
    ) -> Result<BoxStream, SdkError> {
        let config = match tls {
            TlsConfig::Rustls(config) => config.clone(),
            TlsConfig::CaPem(pem) => from_pem(pem)?,
            TlsConfig::CaFile(path) => from_pem(&tokio::fs::read(path).await?)?,
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| SdkError::Tls(format!("server name {host:?}: {e}")))?;
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| SdkError::Tls(e.to_string()))?;
        Ok(Box::new(stream))
    }

    /// A client configuration trusting the certificates of `pem` (ring provider).
    pub(super) fn from_pem(pem: &[u8]) -> Result<Arc<ClientConfig>, SdkError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| SdkError::Tls(format!("CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| SdkError::Tls(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(SdkError::Tls("no certificate in the CA PEM".to_owned()));
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| SdkError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Arc::new(config))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn pem_without_certificates_is_refused() {
            assert!(matches!(from_pem(b"nothing here"), Err(SdkError::Tls(_))));
            let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
            assert!(matches!(from_pem(garbage), Err(SdkError::Tls(_))));
        }
    }
}

/// Signs a device in: TCP (and TLS), CONNECT, an accepting CONNACK, all within the
/// connect timeout. Returns the stream and what was read past the CONNACK.
pub(crate) async fn dial(config: &DeviceConfig) -> Result<(BoxStream, BytesMut), SdkError> {
    let connect = config.connect_packet(now_ms())?;
    let endpoint = Endpoint {
        host: &config.host,
        port: config.port,
        #[cfg(feature = "tls")]
        tls: config.tls.as_ref(),
    };
    timeout(config.connect_timeout, async {
        let mut stream = open(endpoint).await?;
        let rbuf = handshake(&mut stream, connect).await?;
        Ok((stream, rbuf))
    })
    .await
    .map_err(|_| SdkError::Timeout("CONNACK"))?
}

/// Encodes and writes one packet.
pub(crate) async fn write_packet(stream: &mut BoxStream, packet: &Packet) -> Result<(), SdkError> {
    let mut buf = BytesMut::new();
    encode(packet, VERSION, &mut buf);
    stream.write_all(&buf).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads until one whole packet is decoded; bytes after it stay in `rbuf`.
pub(crate) async fn read_packet(
    stream: &mut BoxStream,
    rbuf: &mut BytesMut,
) -> Result<Packet, SdkError> {
    loop {
        if let Some(d) =
            decode(rbuf, VERSION, MAX_PACKET).map_err(|e| SdkError::Protocol(e.to_string()))?
        {
            return Ok(d.packet);
        }
        rbuf.reserve(4096);
        if stream.read_buf(rbuf).await? == 0 {
            return Err(SdkError::Closed);
        }
    }
}

/// Sends CONNECT and waits for an accepting CONNACK.
pub(crate) async fn handshake(
    stream: &mut BoxStream,
    connect: Connect,
) -> Result<BytesMut, SdkError> {
    write_packet(stream, &Packet::Connect(Box::new(connect))).await?;
    let mut rbuf = BytesMut::with_capacity(4096);
    match read_packet(stream, &mut rbuf).await? {
        Packet::ConnAck(ack) if ack.code == ReasonCode::Success => Ok(rbuf),
        Packet::ConnAck(ack) => Err(SdkError::ConnectRefused {
            code: ack.code.to_v3_connack(),
        }),
        other => Err(SdkError::Protocol(format!(
            "expected CONNACK, got {}",
            packet_name(&other)
        ))),
    }
}

/// The name of a packet type, for errors.
pub(crate) fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}
