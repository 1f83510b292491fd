//! Dynamic registration over MQTT (section 5.2): `authType=register` returns the
//! DeviceSecret of a pre-registered device, `authType=regnwl` a clientId and token for a
//! device the server did not know.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use lode_alink::{
    AuthType, SignMethod, check_device_name, check_product_key, register_sign_content, sign,
};
use lode_mqtt::{Connect, ConnectProperties, Disconnect, Packet, PubResp, ReasonCode};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::Value;
use tokio::time::timeout;

#[cfg(feature = "tls")]
use crate::config::TlsConfig;
use crate::config::{Credential, SDK_VERSION};
use crate::error::SdkError;
use crate::transport::{self, Endpoint, VERSION};

/// What registration without pre-registration returns: the login of [`Credential::Token`].
#[derive(Clone, PartialEq, Eq)]
pub struct NoWhitelistRegistration {
    /// The clientId to sign in with.
    pub client_id: String,
    /// The device token, the password of the token login.
    pub token: String,
}

impl fmt::Debug for NoWhitelistRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoWhitelistRegistration")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl NoWhitelistRegistration {
    /// The credential of the token login.
    pub fn into_credential(self) -> Credential {
        Credential::Token {
            client_id: self.client_id,
            token: self.token,
        }
    }
}

/// A dynamic registration: where, which device, and the ProductSecret that signs it.
#[derive(Clone)]
pub struct Registration {
    /// Server host name or address.
    pub host: String,
    /// Server MQTT port.
    pub port: u16,
    /// TLS settings; `None` for plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<TlsConfig>,
    /// The ProductKey.
    pub product_key: String,
    /// The DeviceName to register.
    pub device_name: String,
    /// The ProductSecret.
    pub product_secret: String,
    /// How long the whole exchange may take (default 10 s).
    pub timeout: Duration,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("product_key", &self.product_key)
            .field("device_name", &self.device_name)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// A registration over plain TCP with a 10 s timeout.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        product_key: impl Into<String>,
        device_name: impl Into<String>,
        product_secret: impl Into<String>,
    ) -> Registration {
        Registration {
            host: host.into(),
            port,
            #[cfg(feature = "tls")]
            tls: None,
            product_key: product_key.into(),
            device_name: device_name.into(),
            product_secret: product_secret.into(),
            timeout: Duration::from_secs(10),
        }
    }

    fn uses_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// The CONNECT of a registration: clientId `${dn}.${pk}|random=..,authType=..|`,
    /// password = HMAC-SHA256 of the registration content with the ProductSecret.
    fn connect_packet(&self, auth_type: AuthType, random: &str) -> Result<Connect, SdkError> {
        check_product_key(&self.product_key).map_err(|e| SdkError::Config(e.to_string()))?;
        check_device_name(&self.device_name).map_err(|e| SdkError::Config(e.to_string()))?;
        let (pk, dn) = (&self.product_key, &self.device_name);
        let method = SignMethod::HmacSha256;
        let password = sign(
            method,
            &self.product_secret,
            &register_sign_content(dn, pk, random),
        );
        let securemode = if self.uses_tls() { 2 } else { 3 };
        Ok(Connect {
            protocol: VERSION,
            clean_start: true,
            keep_alive: 60,
            client_id: format!(
                "{dn}.{pk}|random={random},authType={},securemode={securemode},signmethod={},lan=Rust,_v={SDK_VERSION}|",
                auth_type.as_str(),
                method.as_str()
            ),
            will: None,
            username: Some(format!("{dn}&{pk}")),
            password: Some(Bytes::from(password)),
            properties: ConnectProperties::default(),
        })
    }

    /// Registers a pre-registered device and returns its DeviceSecret (from `/ext/register`).
    pub async fn register(&self) -> Result<String, SdkError> {
        let body = self.exchange(AuthType::Register).await?;
        string_field(&body, "deviceSecret")
    }

    /// Registers without pre-registration and returns the clientId and token of the token
    /// login (from `/ext/regnwl`).
    pub async fn register_no_whitelist(&self) -> Result<NoWhitelistRegistration, SdkError> {
        let body = self.exchange(AuthType::RegisterNoWhitelist).await?;
        Ok(NoWhitelistRegistration {
            client_id: string_field(&body, "clientId")?,
            token: string_field(&body, "deviceToken")?,
        })
    }

    /// Connects, waits for the greeting on `/ext/<authType>`, disconnects.
    async fn exchange(&self, auth_type: AuthType) -> Result<Value, SdkError> {
        let random = Alphanumeric.sample_string(&mut rand::rng(), 15);
        let connect = self.connect_packet(auth_type, &random)?;
        let endpoint = Endpoint {
            host: &self.host,
            port: self.port,
            #[cfg(feature = "tls")]
            tls: self.tls.as_ref(),
        };
        let greeting = format!("/ext/{}", auth_type.as_str());
        timeout(self.timeout, async {
            let mut stream = transport::open(endpoint).await?;
            let mut rbuf = transport::handshake(&mut stream, connect).await?;
            loop {
                let Packet::Publish(p) = transport::read_packet(&mut stream, &mut rbuf).await?
                else {
                    continue;
                };
                if let Some(id) = p.packet_id {
                    let ack = Packet::PubAck(PubResp::new(id, ReasonCode::Success));
                    transport::write_packet(&mut stream, &ack).await?;
                }
                if p.topic[..] != *greeting.as_bytes() {
                    continue;
                }
                let body: Value = serde_json::from_slice(&p.payload)
                    .map_err(|e| SdkError::Protocol(format!("{greeting} payload: {e}")))?;
                // The answer is in hand; a failed DISCONNECT changes nothing.
                let _ = transport::write_packet(
                    &mut stream,
                    &Packet::Disconnect(Disconnect::default()),
                )
                .await;
                return Ok(body);
            }
        })
        .await
        .map_err(|_| SdkError::Timeout("the registration answer"))?
    }
}

fn string_field(body: &Value, key: &str) -> Result<String, SdkError> {
    body.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| SdkError::Protocol(format!("registration answer without {key}")))
}

/// Registers a pre-registered device over plain TCP (`authType=register`) and returns its
/// DeviceSecret. See [`Registration`] for TLS and timeouts.
pub async fn register(
    host: &str,
    port: u16,
    product_key: &str,
    device_name: &str,
    product_secret: &str,
) -> Result<String, SdkError> {
    Registration::new(host, port, product_key, device_name, product_secret)
        .register()
        .await
}

/// Registers a device without pre-registration over plain TCP (`authType=regnwl`) and
/// returns the clientId and token to sign in with ([`NoWhitelistRegistration::into_credential`]).
pub async fn register_no_whitelist(
    host: &str,
    port: u16,
    product_key: &str,
    device_name: &str,
    product_secret: &str,
) -> Result<NoWhitelistRegistration, SdkError> {
    Registration::new(host, port, product_key, device_name, product_secret)
        .register_no_whitelist()
        .await
}

#[cfg(test)]
mod tests {
    use lode_alink::{ClientId, LoginKind, verify_signature};
    use serde_json::json;

    use super::*;

    #[test]
    fn registration_connect_is_signed_with_the_product_secret() {
        let r = Registration::new("h", 1, "a1TestPK001", "newdev01", "ps0123");
        for (kind, login) in [
            (AuthType::Register, LoginKind::Register),
            (
                AuthType::RegisterNoWhitelist,
                LoginKind::RegisterNoWhitelist,
            ),
        ] {
            let c = r.connect_packet(kind, "px8kGEXcGFHYcAS").expect("connect");
            let cid = ClientId::parse(&c.client_id).expect("client id");
            assert_eq!(cid.login_kind(), login);
            assert_eq!(cid.prefix, "newdev01.a1TestPK001");
            assert_eq!(cid.random.as_deref(), Some("px8kGEXcGFHYcAS"));
            let content = register_sign_content("newdev01", "a1TestPK001", "px8kGEXcGFHYcAS");
            let password = c.password.expect("password");
            let password = std::str::from_utf8(&password).expect("hex");
            assert!(verify_signature(
                SignMethod::HmacSha256,
                "ps0123",
                &content,
                password
            ));
        }
        let bad = Registration::new("h", 1, "a1TestPK001", "x", "ps");
        assert!(matches!(
            bad.connect_packet(AuthType::Register, "r"),
            Err(SdkError::Config(_))
        ));
    }

    #[test]
    fn answers_need_their_fields() {
        let body = json!({"deviceSecret": "s3cr3t", "n": 1});
        assert_eq!(
            string_field(&body, "deviceSecret").expect("secret"),
            "s3cr3t"
        );
        assert!(matches!(
            string_field(&body, "n"),
            Err(SdkError::Protocol(_))
        ));
        assert!(matches!(
            string_field(&body, "x"),
            Err(SdkError::Protocol(_))
        ));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let r = Registration::new("h", 1, "a1TestPK001", "newdev01", "productsecret");
        assert!(!format!("{r:?}").contains("productsecret"));
        let n = NoWhitelistRegistration {
            client_id: "cid".into(),
            token: "tokentoken".into(),
        };
        assert!(!format!("{n:?}").contains("tokentoken"));
        assert_eq!(
            n.into_credential(),
            Credential::Token {
                client_id: "cid".into(),
                token: "tokentoken".into()
            }
        );
    }
}
