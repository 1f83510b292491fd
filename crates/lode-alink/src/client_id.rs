//! The MQTT clientId of an Alink sign-in: `<prefix>|k1=v1,k2=v2,...|` (section 3.2).
//!
//! Parsing rules:
//! - `prefix` is everything before the first `|` (possibly empty: [C4] MQTT 5 assigned-id mode);
//!   it is what the password signs, never the device identity (that comes from the username).
//! - The options section runs from the first `|` to the next `|`, or to the end when the closing
//!   `|` is missing. Anything after the closing `|` is ignored.
//! - Options are separated by `,`; each is `key=value` split at its first `=`. An option without
//!   `=` is kept with an empty value; empty items (`,,`) are skipped. Keys are case-sensitive
//!   (`authtype=id2` of iTLS is not `authType=register`). Every option is kept, in order, in
//!   [`ClientId::options`]; unknown keys are never an error.
//! - Interpreted keys: `securemode` (integer), `signmethod` (case-insensitive), `timestamp`
//!   (verbatim, signed), `_ss` (`1`/`0`), `ext` (unsigned bitmap), `authType`
//!   (`register`/`regnwl`/`connwl`), `random`, `instanceId`. An empty value of a typed key
//!   (`securemode`, `signmethod`, `_ss`, `ext`, `authType`) means "absent"; `timestamp`,
//!   `random` and `instanceId` keep an empty value as `Some("")` because its presence changes
//!   what is signed. A malformed value of a typed key, or an interpreted key given twice, is an
//!   error: the sign-in cannot be checked unambiguously.

use thiserror::Error;

use crate::sign::{SignMethod, UnknownSignMethod};

/// `ext` bit 0: synchronous services over `/ext/rrpc/...` (section 1 rule 10).
pub const EXT_RRPC: u32 = 1;
/// `ext` bit 1: "ext_notify" (C4 SDK).
pub const EXT_NOTIFY: u32 = 2;

/// The `authType` clientId option (dynamic registration and token login, sections 3.5 and 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// `register`: dynamic registration of a pre-registered device; the server answers on
    /// `/ext/register` with the DeviceSecret.
    Register,
    /// `regnwl`: registration without pre-registration; the server answers on `/ext/regnwl`
    /// with a clientId and a device token.
    RegisterNoWhitelist,
    /// `connwl`: login with the token obtained through `regnwl`; the password is the token.
    ConnectWithToken,
}

impl AuthType {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Register => "register",
            AuthType::RegisterNoWhitelist => "regnwl",
            AuthType::ConnectWithToken => "connwl",
        }
    }
}

/// How the password of a sign-in must be checked, from the clientId alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginKind {
    /// Password = hex HMAC with the DeviceSecret over [`crate::mqtt_sign_content`].
    DeviceSecret,
    /// Password = hex HMAC with the ProductSecret over [`crate::register_sign_content`]
    /// (`random` from the clientId); the session only receives `/ext/register`.
    Register,
    /// As [`LoginKind::Register`], answered on `/ext/regnwl`.
    RegisterNoWhitelist,
    /// Password = the device token issued through `regnwl`.
    Token,
}

/// Why a clientId was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientIdError {
    /// `signmethod` names no method we know.
    #[error("clientId option signmethod: {0}")]
    SignMethod(#[from] UnknownSignMethod),
    /// A typed option has a value of the wrong shape.
    #[error("clientId option {key}={value:?} is malformed: expected {expected}")]
    InvalidValue {
        /// The option key.
        key: &'static str,
        /// The value as sent.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// An interpreted option appears twice.
    #[error("clientId option {0} is given more than once")]
    Duplicate(&'static str),
}

/// A parsed Alink clientId.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientId {
    /// The part before the first `|`: the `clientId` value of the password content.
    pub prefix: String,
    /// Every option of the `|...|` section, in order, as sent.
    pub options: Vec<(String, String)>,
    /// `securemode`: 2 TLS, 3 TCP, -2 dynreg/token on new instances, ... (informational here).
    pub securemode: Option<i32>,
    /// `signmethod`; `None` when absent (see [`ClientId::effective_sign_method`]).
    pub sign_method: Option<SignMethod>,
    /// `timestamp`, verbatim; signed when present. Never checked for freshness.
    pub timestamp: Option<String>,
    /// `_ss=1`: the server subscribes the device to its system topics.
    pub server_subscribe: bool,
    /// `ext` bitmap ([`EXT_RRPC`], [`EXT_NOTIFY`]); 0 when absent.
    pub ext: u32,
    /// `authType`.
    pub auth_type: Option<AuthType>,
    /// `random` (dynamic registration).
    pub random: Option<String>,
    /// `instanceId`.
    pub instance_id: Option<String>,
}

impl ClientId {
    /// Parses a clientId; see the module documentation for the rules.
    pub fn parse(client_id: &str) -> Result<ClientId, ClientIdError> {
        let (prefix, rest) = match client_id.split_once('|') {
            Some((p, r)) => (p, Some(r)),
            None => (client_id, None),
        };
        let mut id = ClientId {
            prefix: prefix.to_owned(),
            ..ClientId::default()
        };
        let Some(rest) = rest else {
            return Ok(id);
        };
        let section = rest.split_once('|').map_or(rest, |(s, _)| s);

        let mut seen = Seen::default();
        for item in section.split(',').filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            id.options.push((key.to_owned(), value.to_owned()));
            match key {
                "securemode" => {
                    once(&mut seen.securemode, "securemode")?;
                    if !value.is_empty() {
                        id.securemode =
                            Some(value.parse().map_err(|_| ClientIdError::InvalidValue {
                                key: "securemode",
                                value: value.to_owned(),
                                expected: "an integer",
                            })?);
                    }
                }
                "signmethod" => {
                    once(&mut seen.signmethod, "signmethod")?;
                    if !value.is_empty() {
                        id.sign_method = Some(value.parse()?);
                    }
                }
                "timestamp" => {
                    once(&mut seen.timestamp, "timestamp")?;
                    id.timestamp = Some(value.to_owned());
                }
                "_ss" => {
                    once(&mut seen.ss, "_ss")?;
                    id.server_subscribe = match value {
                        "1" => true,
                        "0" | "" => false,
                        _ => {
                            return Err(ClientIdError::InvalidValue {
                                key: "_ss",
                                value: value.to_owned(),
                                expected: "0 or 1",
                            });
                        }
                    };
                }
                "ext" => {
                    once(&mut seen.ext, "ext")?;
                    if !value.is_empty() {
                        id.ext = value.parse().map_err(|_| ClientIdError::InvalidValue {
                            key: "ext",
                            value: value.to_owned(),
                            expected: "an unsigned integer bitmap",
                        })?;
                    }
                }
                "authType" => {
                    once(&mut seen.auth_type, "authType")?;
                    id.auth_type = match value {
                        "" => None,
                        "register" => Some(AuthType::Register),
                        "regnwl" => Some(AuthType::RegisterNoWhitelist),
                        "connwl" => Some(AuthType::ConnectWithToken),
                        _ => {
                            return Err(ClientIdError::InvalidValue {
                                key: "authType",
                                value: value.to_owned(),
                                expected: "register, regnwl or connwl",
                            });
                        }
                    };
                }
                "random" => {
                    once(&mut seen.random, "random")?;
                    id.random = Some(value.to_owned());
                }
                "instanceId" => {
                    once(&mut seen.instance_id, "instanceId")?;
                    id.instance_id = Some(value.to_owned());
                }
                _ => {}
            }
        }
        Ok(id)
    }

    /// The sign method to verify with: the `signmethod` option, or
    /// [`SignMethod::MQTT_DEFAULT`] (`hmacmd5`) when absent.
    pub fn effective_sign_method(&self) -> SignMethod {
        self.sign_method.unwrap_or(SignMethod::MQTT_DEFAULT)
    }

    /// Whether `ext` bit 0 asks for synchronous services over `/ext/rrpc/...`.
    pub fn ext_rrpc(&self) -> bool {
        self.ext & EXT_RRPC != 0
    }

    /// How the password must be checked.
    pub fn login_kind(&self) -> LoginKind {
        match self.auth_type {
            None => LoginKind::DeviceSecret,
            Some(AuthType::Register) => LoginKind::Register,
            Some(AuthType::RegisterNoWhitelist) => LoginKind::RegisterNoWhitelist,
            Some(AuthType::ConnectWithToken) => LoginKind::Token,
        }
    }

    /// The first value of option `key` (exact, case-sensitive key), if present.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Seen {
    securemode: bool,
    signmethod: bool,
    timestamp: bool,
    ss: bool,
    ext: bool,
    auth_type: bool,
    random: bool,
    instance_id: bool,
}

fn once(flag: &mut bool, key: &'static str) -> Result<(), ClientIdError> {
    if std::mem::replace(flag, true) {
        Err(ClientIdError::Duplicate(key))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_sdk_verified() {
        let id = ClientId::parse(
            "a1TestPK001&dev01|securemode=3,signmethod=hmacsha1,ext=1,_ss=1,lan=Python,_v=1.2.13,timestamp=1795827149|",
        )
        .unwrap();
        assert_eq!(id.prefix, "a1TestPK001&dev01");
        assert_eq!(id.securemode, Some(3));
        assert_eq!(id.sign_method, Some(SignMethod::HmacSha1));
        assert_eq!(id.timestamp.as_deref(), Some("1795827149"));
        assert!(id.server_subscribe);
        assert_eq!(id.ext, 1);
        assert!(id.ext_rrpc());
        assert_eq!(id.auth_type, None);
        assert_eq!(id.login_kind(), LoginKind::DeviceSecret);
        assert_eq!(id.option("lan"), Some("Python"));
        assert_eq!(id.option("_v"), Some("1.2.13"));
        assert_eq!(id.options.len(), 7);
    }

    #[test]
    fn c3_sdk() {
        let id = ClientId::parse(
            "a1TestPK001.dev01|timestamp=2524608000000,_v=sdk-c-3.2.0,securemode=2,signmethod=hmacsha256,lan=C,_ss=1,gw=0,ext=0|",
        )
        .unwrap();
        assert_eq!(id.prefix, "a1TestPK001.dev01");
        assert_eq!(id.securemode, Some(2));
        assert_eq!(id.sign_method, Some(SignMethod::HmacSha256));
        assert_eq!(id.timestamp.as_deref(), Some("2524608000000"));
        assert!(id.server_subscribe);
        assert_eq!(id.ext, 0);
        assert!(!id.ext_rrpc());
        assert_eq!(id.option("gw"), Some("0"));
    }

    #[test]
    fn c4_sdk_with_extension() {
        let id = ClientId::parse(
            "a1TestPK001.dev01|timestamp=2524608000000,_ss=1,_v=sdk-c-4.2.0,securemode=2,signmethod=hmacsha256,ext=3,_conn=tls_1a2b|",
        )
        .unwrap();
        assert_eq!(id.ext, EXT_RRPC | EXT_NOTIFY);
        assert!(id.server_subscribe);
        assert_eq!(id.option("_conn"), Some("tls_1a2b"));
        // MQTT 5 assigned-id mode: empty prefix.
        let id = ClientId::parse("|securemode=2,signmethod=hmacsha256|").unwrap();
        assert_eq!(id.prefix, "");
    }

    #[test]
    fn dynreg_and_token() {
        let id = ClientId::parse(
            "newdev01.a1TestPK001|random=px8kGEXcGFHYcAS,authType=register,securemode=2,signmethod=hmacsha256|",
        )
        .unwrap();
        assert_eq!(id.auth_type, Some(AuthType::Register));
        assert_eq!(id.login_kind(), LoginKind::Register);
        assert_eq!(id.random.as_deref(), Some("px8kGEXcGFHYcAS"));
        let id = ClientId::parse(
            "dev.pk|random=1,authType=regnwl,securemode=-2,signmethod=hmacsha256,instanceId=iot-06z00abc|",
        )
        .unwrap();
        assert_eq!(id.login_kind(), LoginKind::RegisterNoWhitelist);
        assert_eq!(id.securemode, Some(-2));
        assert_eq!(id.instance_id.as_deref(), Some("iot-06z00abc"));
        let id = ClientId::parse(
            "a1TestPK001.newdev02_cid|authType=connwl,securemode=-2,_ss=1,ext=3,lan=Python,_v=1.2.13|",
        )
        .unwrap();
        assert_eq!(id.login_kind(), LoginKind::Token);
        assert_eq!(id.prefix, "a1TestPK001.newdev02_cid");
        // iTLS `authtype` (lowercase key) is a different option.
        let id = ClientId::parse("pk.dn|authtype=id2,securemode=8|").unwrap();
        assert_eq!(id.auth_type, None);
        assert_eq!(id.option("authtype"), Some("id2"));
    }

    #[test]
    fn lenient_edges() {
        // No options at all.
        let id = ClientId::parse("plain-client").unwrap();
        assert_eq!(id.prefix, "plain-client");
        assert!(id.options.is_empty());
        assert_eq!(id.effective_sign_method(), SignMethod::HmacMd5);
        // Missing trailing '|'.
        let id = ClientId::parse("p|securemode=3,signmethod=HMACSHA1").unwrap();
        assert_eq!(id.sign_method, Some(SignMethod::HmacSha1));
        assert_eq!(id.effective_sign_method(), SignMethod::HmacSha1);
        // Empty values, valueless options, empty items, text after the closing '|'.
        let id =
            ClientId::parse("p|securemode=,signmethod=,,flag,timestamp=,ext=,_ss=|tail=1").unwrap();
        assert_eq!(id.securemode, None);
        assert_eq!(id.sign_method, None);
        assert_eq!(id.timestamp.as_deref(), Some(""));
        assert_eq!(id.ext, 0);
        assert!(!id.server_subscribe);
        assert_eq!(id.option("flag"), Some(""));
        assert_eq!(id.option("tail"), None);
        // Values may contain '='.
        let id = ClientId::parse("p|sii=a=b|").unwrap();
        assert_eq!(id.option("sii"), Some("a=b"));
        // Empty clientId and bare separators.
        assert_eq!(ClientId::parse("").unwrap(), ClientId::default());
        assert_eq!(ClientId::parse("||").unwrap().prefix, "");
        assert_eq!(ClientId::parse("|").unwrap().options.len(), 0);
        // Unknown keys, including look-alikes of known ones.
        let id = ClientId::parse("p|SignMethod=x,_SS=1,Ext=zz|").unwrap();
        assert_eq!(id.sign_method, None);
        assert!(!id.server_subscribe);
        assert_eq!(id.ext, 0);
    }

    #[test]
    fn errors() {
        assert_eq!(
            ClientId::parse("p|signmethod=hmacsha512|"),
            Err(ClientIdError::SignMethod(UnknownSignMethod(
                "hmacsha512".into()
            )))
        );
        assert!(matches!(
            ClientId::parse("p|securemode=two|"),
            Err(ClientIdError::InvalidValue {
                key: "securemode",
                ..
            })
        ));
        assert!(matches!(
            ClientId::parse("p|ext=-1|"),
            Err(ClientIdError::InvalidValue { key: "ext", .. })
        ));
        assert!(matches!(
            ClientId::parse("p|_ss=yes|"),
            Err(ClientIdError::InvalidValue { key: "_ss", .. })
        ));
        assert!(matches!(
            ClientId::parse("p|authType=Register|"),
            Err(ClientIdError::InvalidValue {
                key: "authType",
                ..
            })
        ));
        assert_eq!(
            ClientId::parse("p|timestamp=1,timestamp=2|"),
            Err(ClientIdError::Duplicate("timestamp"))
        );
        assert_eq!(
            ClientId::parse("p|signmethod=hmacsha1,signmethod=hmacmd5|"),
            Err(ClientIdError::Duplicate("signmethod"))
        );
        let msg = ClientId::parse("p|securemode=two|")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("securemode") && msg.contains("two"), "{msg}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = ClientId::parse(&s);
            let _ = crate::DeviceIdentity::from_username(&s);
        }

        #[test]
        fn prefix_is_before_first_bar(prefix in "[^|]{0,20}", opts in "[a-z_=,0-9|]{0,40}") {
            let s = format!("{prefix}|{opts}");
            if let Ok(id) = ClientId::parse(&s) {
                proptest::prop_assert_eq!(id.prefix, prefix);
            }
        }
    }
}
