//! Device configuration and the Alink sign-in it produces (protocol reference, section 3).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lode_alink::{SignMethod, check_device_name, check_product_key, mqtt_sign_content, sign};
use lode_mqtt::{Connect, ConnectProperties, ProtocolVersion};

use crate::error::SdkError;

/// The `_v` clientId option: who is signing in.
pub(crate) const SDK_VERSION: &str = concat!("lode-sdk-", env!("CARGO_PKG_VERSION"));

/// Milliseconds since the Unix epoch, for the clientId `timestamp` (0 if the clock is
/// before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a device proves its identity with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The DeviceSecret: the password is the HMAC of the sign-in content (section 3.3).
    DeviceSecret(String),
    /// A device token obtained through registration without pre-registration (`regnwl`,
    /// see [`crate::register_no_whitelist`]), with the clientId issued alongside it.
    /// The password is the token itself (section 3.5).
    Token {
        /// The clientId the server issued.
        client_id: String,
        /// The device token.
        token: String,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::DeviceSecret(_) => f.write_str("DeviceSecret(..)"),
            Credential::Token { client_id, .. } => f
                .debug_struct("Token")
                .field("client_id", client_id)
                .finish_non_exhaustive(),
        }
    }
}

/// How to reach the server over TLS.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub enum TlsConfig {
    /// A ready rustls configuration (its crypto provider is used as is).
    Rustls(std::sync::Arc<rustls::ClientConfig>),
    /// Trust the certificates of this PEM text (ring provider, default protocol versions).
    CaPem(Vec<u8>),
    /// Trust the certificates of this PEM file, read at each connect.
    CaFile(std::path::PathBuf),
}

#[cfg(feature = "tls")]
impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfig::Rustls(_) => f.write_str("Rustls(..)"),
            TlsConfig::CaPem(pem) => write!(f, "CaPem({} bytes)", pem.len()),
            TlsConfig::CaFile(path) => f.debug_tuple("CaFile").field(path).finish(),
        }
    }
}

/// Everything a device needs to sign in. Build it with [`DeviceConfig::new`] and adjust the
/// public fields.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Server host name or address.
    pub host: String,
    /// Server MQTT port.
    pub port: u16,
    /// TLS settings; `None` for plain TCP (clientId `securemode=3`, else `2`).
    #[cfg(feature = "tls")]
    pub tls: Option<TlsConfig>,
    /// The ProductKey.
    pub product_key: String,
    /// The DeviceName.
    pub device_name: String,
    /// DeviceSecret or token.
    pub credential: Credential,
    /// MQTT keep alive, whole seconds (default 60 s; zero disables PINGREQ). The platform
    /// accepts 30 s to 1200 s from devices.
    pub keep_alive: Duration,
    /// The HMAC of the password (default `hmacsha256`).
    pub sign_method: SignMethod,
    /// `ext=1`: synchronous services arrive on `/ext/rrpc/...` (default true); without it
    /// the server uses the legacy `rrpc/request` topics.
    pub ext_rrpc: bool,
    /// `_ss=1`: the server subscribes the device to its system topics (default true);
    /// without it the SDK subscribes to them itself after CONNACK.
    pub server_subscriptions: bool,
    /// MQTT clean session (default true).
    pub clean_session: bool,
    /// How long an uplink waits for its `_reply` (default 10 s).
    pub reply_timeout: Duration,
    /// How long the connection setup (TCP, TLS, CONNACK, initial SUBACKs) may take (default 10 s).
    pub connect_timeout: Duration,
    /// Sign in again after a connection loss (default `None`: the connection ends).
    pub reconnect: Option<Reconnect>,
}

/// Automatic reconnection: after a loss, wait, sign in again, subscribe again; each failed
/// attempt doubles the wait, up to `max_delay`. Each wait is jittered down to half its value
/// so that a fleet does not return all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The first wait.
    pub min_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Default for Reconnect {
    /// 1 s, doubling up to 60 s.
    fn default() -> Self {
        Reconnect {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl Reconnect {
    /// The wait after `delay`: doubled, within `[min_delay, max_delay]`.
    pub(crate) fn next(&self, delay: Duration) -> Duration {
        delay
            .saturating_mul(2)
            .clamp(self.min_delay, self.max_delay.max(self.min_delay))
    }

    /// `delay` scaled by `factor` in `[0.5, 1]` (clamped), the jitter.
    pub(crate) fn jittered(delay: Duration, factor: f64) -> Duration {
        delay.mul_f64(factor.clamp(0.5, 1.0))
    }
}

impl DeviceConfig {
    /// A configuration with the defaults listed on each field, plain TCP.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        product_key: impl Into<String>,
        device_name: impl Into<String>,
        credential: Credential,
    ) -> DeviceConfig {
        DeviceConfig {
            host: host.into(),
            port,
            #[cfg(feature = "tls")]
            tls: None,
            product_key: product_key.into(),
            device_name: device_name.into(),
            credential,
            keep_alive: Duration::from_secs(60),
            sign_method: SignMethod::HmacSha256,
            ext_rrpc: true,
            server_subscriptions: true,
            clean_session: true,
            reply_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            reconnect: None,
        }
    }

    /// Whether the connection uses TLS.
    pub(crate) fn uses_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// The keep alive in whole seconds, checked.
    pub(crate) fn keep_alive_secs(&self) -> Result<u16, SdkError> {
        let secs = self.keep_alive.as_secs();
        let secs = if secs == 0 && !self.keep_alive.is_zero() {
            1
        } else {
            secs
        };
        u16::try_from(secs)
            .map_err(|_| SdkError::Config(format!("keep alive of {secs} s exceeds 65535 s")))
    }

    /// The keep alive the CONNECT announces (zero when disabled or out of range).
    pub(crate) fn keep_alive_duration(&self) -> Duration {
        Duration::from_secs(self.keep_alive_secs().map_or(0, u64::from))
    }

    /// The MQTT CONNECT of this device; `timestamp_ms` goes into the clientId and the signature.
    pub(crate) fn connect_packet(&self, timestamp_ms: u64) -> Result<Connect, SdkError> {
        check_product_key(&self.product_key).map_err(|e| SdkError::Config(e.to_string()))?;
        check_device_name(&self.device_name).map_err(|e| SdkError::Config(e.to_string()))?;
        let keep_alive = self.keep_alive_secs()?;
        let (pk, dn) = (&self.product_key, &self.device_name);
        let mut options = Vec::new();
        let (client_id, password) = match &self.credential {
            Credential::DeviceSecret(secret) => {
                let prefix = format!("{pk}.{dn}");
                let ts = timestamp_ms.to_string();
                let content = mqtt_sign_content(&prefix, dn, pk, Some(&ts));
                let securemode = if self.uses_tls() { "2" } else { "3" };
                options.push(format!("securemode={securemode}"));
                options.push(format!("signmethod={}", self.sign_method.as_str()));
                options.push(format!("timestamp={ts}"));
                (prefix, sign(self.sign_method, secret, &content))
            }
            Credential::Token { client_id, token } => {
                if client_id.contains('|') {
                    return Err(SdkError::Config(
                        "a token clientId cannot contain '|'".to_owned(),
                    ));
                }
                options.push("authType=connwl".to_owned());
                options.push("securemode=-2".to_owned());
                (client_id.clone(), token.clone())
            }
        };
        options.push(format!("ext={}", u8::from(self.ext_rrpc)));
        if self.server_subscriptions {
            options.push("_ss=1".to_owned());
        }
        options.push("lan=Rust".to_owned());
        options.push(format!("_v={SDK_VERSION}"));
        Ok(Connect {
            protocol: ProtocolVersion::V311,
            clean_start: self.clean_session,
            keep_alive,
            client_id: format!("{client_id}|{}|", options.join(",")),
            will: None,
            username: Some(format!("{dn}&{pk}")),
            password: Some(Bytes::from(password)),
            properties: ConnectProperties::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use lode_alink::{ClientId, DeviceIdentity, LoginKind, verify_signature};

    use super::*;

    fn config(credential: Credential) -> DeviceConfig {
        DeviceConfig::new("localhost", 1883, "a1TestPK001", "dev01", credential)
    }

    #[test]
    fn device_secret_sign_in_verifies_with_each_method() {
        for method in [
            SignMethod::HmacMd5,
            SignMethod::HmacSha1,
            SignMethod::HmacSha256,
        ] {
            let mut c = config(Credential::DeviceSecret("secret0123".into()));
            c.sign_method = method;
            let connect = c.connect_packet(1_795_827_149_000).expect("connect");
            let cid = ClientId::parse(&connect.client_id).expect("client id");
            assert_eq!(cid.login_kind(), LoginKind::DeviceSecret);
            assert_eq!(cid.prefix, "a1TestPK001.dev01");
            assert_eq!(cid.effective_sign_method(), method);
            assert_eq!(cid.timestamp.as_deref(), Some("1795827149000"));
            assert_eq!(cid.securemode, Some(3));
            assert!(cid.server_subscribe);
            assert!(cid.ext_rrpc());
            let id = DeviceIdentity::from_username(connect.username.as_deref().unwrap_or(""))
                .expect("username");
            assert_eq!(id.key(), "a1TestPK001/dev01");
            let content = mqtt_sign_content(
                &cid.prefix,
                &id.device_name,
                &id.product_key,
                cid.timestamp.as_deref(),
            );
            let password = connect.password.expect("password");
            let password = std::str::from_utf8(&password).expect("hex");
            assert!(verify_signature(method, "secret0123", &content, password));
            assert!(!verify_signature(method, "other", &content, password));
            assert_eq!(connect.keep_alive, 60);
            assert!(connect.clean_start);
        }
    }

    #[test]
    fn options_follow_the_switches() {
        let mut c = config(Credential::DeviceSecret("s".into()));
        c.ext_rrpc = false;
        c.server_subscriptions = false;
        c.clean_session = false;
        let connect = c.connect_packet(1).expect("connect");
        let cid = ClientId::parse(&connect.client_id).expect("client id");
        assert!(!cid.server_subscribe);
        assert!(!cid.ext_rrpc());
        assert_eq!(cid.option("lan"), Some("Rust"));
        assert_eq!(cid.option("_v"), Some(SDK_VERSION));
        assert!(!connect.clean_start);
    }

    #[test]
    fn token_sign_in_sends_the_token_and_issued_client_id() {
        let c = config(Credential::Token {
            client_id: "a1TestPK001.dev01_cid".into(),
            token: "tok123".into(),
        });
        let connect = c.connect_packet(1).expect("connect");
        let cid = ClientId::parse(&connect.client_id).expect("client id");
        assert_eq!(cid.login_kind(), LoginKind::Token);
        assert_eq!(cid.prefix, "a1TestPK001.dev01_cid");
        assert_eq!(cid.securemode, Some(-2));
        assert_eq!(connect.password.as_deref(), Some(&b"tok123"[..]));
        assert_eq!(connect.username.as_deref(), Some("dev01&a1TestPK001"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut c = config(Credential::DeviceSecret("s".into()));
        c.device_name = "a/b".into();
        assert!(matches!(c.connect_packet(1), Err(SdkError::Config(_))));
        let mut c = config(Credential::DeviceSecret("s".into()));
        c.keep_alive = Duration::from_secs(70_000);
        assert!(matches!(c.connect_packet(1), Err(SdkError::Config(_))));
        let c = config(Credential::Token {
            client_id: "x|y".into(),
            token: "t".into(),
        });
        assert!(matches!(c.connect_packet(1), Err(SdkError::Config(_))));
    }

    #[test]
    fn keep_alive_rounds_sub_second_values_up() {
        let mut c = config(Credential::DeviceSecret("s".into()));
        c.keep_alive = Duration::from_millis(300);
        assert_eq!(c.keep_alive_secs().expect("ok"), 1);
        c.keep_alive = Duration::ZERO;
        assert_eq!(c.keep_alive_secs().expect("ok"), 0);
    }

    #[test]
    fn reconnect_delays_double_within_bounds() {
        let r = Reconnect {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        assert_eq!(r.next(Duration::ZERO), Duration::from_millis(100));
        assert_eq!(
            r.next(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
        assert_eq!(
            r.next(Duration::from_millis(200)),
            Duration::from_millis(350)
        );
        assert_eq!(r.next(Duration::MAX), Duration::from_millis(350));
        let d = Duration::from_millis(200);
        assert_eq!(Reconnect::jittered(d, 0.75), Duration::from_millis(150));
        assert_eq!(Reconnect::jittered(d, 0.1), Duration::from_millis(100));
        assert_eq!(Reconnect::jittered(d, 7.0), d);
        let odd = Reconnect {
            min_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(odd.next(Duration::ZERO), Duration::from_secs(2));
        assert_eq!(Reconnect::default().min_delay, Duration::from_secs(1));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = config(Credential::DeviceSecret("topsecret".into()));
        assert!(!format!("{c:?}").contains("topsecret"));
        let t = Credential::Token {
            client_id: "cid".into(),
            token: "toktok".into(),
        };
        assert!(!format!("{t:?}").contains("toktok"));
    }
}
