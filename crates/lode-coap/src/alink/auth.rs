//! The `/auth` exchange of Alink CoAP (protocol reference section 9).
//!
//! Request (CON POST `/auth`, Content-Format 50):
//! `{"productKey":"..","deviceName":"..","clientId":"..","sign":".."[,"seq":"<n>"][,"signmethod":".."]}`.
//! The signature is `hex(HMAC(${ds}, "clientId" + cid + "deviceName" + dn + "productKey" + pk
//! [+ "seq" + n]))`, HMAC-MD5 unless `signmethod` names another; hex in either case.
//! A request with `seq` asks for the symmetric-key (encrypted payload) mode.
//!
//! Reply (2.05 Content, JSON): `{"token":".."}`, plus `"random":"..","seqOffset":n` in the
//! encrypted mode.

use lode_alink::{SignMethod, mqtt_sign_content, verify_signature};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::message::Code;

/// The signature method when the request names none: HMAC-MD5, what the C SDK's CoAP client
/// uses.
pub const DEFAULT_SIGN_METHOD: SignMethod = SignMethod::HmacMd5;

/// Why an `/auth` request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The payload is not a JSON object.
    #[error("auth payload is not a JSON object")]
    NotJson,
    /// A required field is missing, empty or not a string.
    #[error("auth field {0:?} is missing, empty or not a string")]
    MissingField(&'static str),
    /// `seq` is not a decimal number that fits 32 bits.
    #[error("auth field \"seq\" is not a decimal number")]
    BadSeq,
    /// `signmethod` names an unknown method.
    #[error("unknown sign method {0:?}")]
    UnknownSignMethod(String),
    /// The signature does not match the device secret.
    #[error("signature mismatch")]
    BadSignature,
}

impl AuthError {
    /// The response code: 4.00 Bad Request for a malformed request, 4.01 Unauthorized for a
    /// wrong signature.
    pub fn code(&self) -> Code {
        match self {
            AuthError::BadSignature => Code::UNAUTHORIZED,
            _ => Code::BAD_REQUEST,
        }
    }
}

/// A parsed `/auth` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// `productKey`.
    pub product_key: String,
    /// `deviceName`.
    pub device_name: String,
    /// `clientId` (the C SDK sends `${pk}.${dn}`, the documentation `${pk}&${dn}`).
    pub client_id: String,
    /// `sign`, hex in either case.
    pub sign: String,
    /// `seq` as sent (decimal digits), present in the encrypted mode.
    pub seq: Option<String>,
    /// `signmethod` (or `signMethod`), [`DEFAULT_SIGN_METHOD`] when absent.
    pub sign_method: SignMethod,
}

impl AuthRequest {
    /// Parses the JSON payload. Unknown fields are ignored; `seq` may be a string of digits
    /// (what the C SDK sends) or a JSON number.
    pub fn parse(payload: &[u8]) -> Result<AuthRequest, AuthError> {
        let obj: Map<String, Value> =
            serde_json::from_slice(payload).map_err(|_| AuthError::NotJson)?;
        let text = |key: &'static str| -> Result<String, AuthError> {
            match obj.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(AuthError::MissingField(key)),
            }
        };
        let seq = match obj.get("seq") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err(AuthError::BadSeq),
        };
        if let Some(s) = &seq
            && super::crypto::parse_decimal(s.as_bytes()).is_none()
        {
            return Err(AuthError::BadSeq);
        }
        let sign_method = match obj.get("signmethod").or_else(|| obj.get("signMethod")) {
            None | Some(Value::Null) => DEFAULT_SIGN_METHOD,
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| AuthError::UnknownSignMethod(s.clone()))?,
            Some(other) => return Err(AuthError::UnknownSignMethod(other.to_string())),
        };
        Ok(AuthRequest {
            product_key: text("productKey")?,
            device_name: text("deviceName")?,
            client_id: text("clientId")?,
            sign: text("sign")?,
            seq,
            sign_method,
        })
    }

    /// The `seq` as a number (encrypted mode), already checked by [`AuthRequest::parse`].
    pub fn seq_value(&self) -> Option<u32> {
        self.seq
            .as_deref()
            .and_then(|s| super::crypto::parse_decimal(s.as_bytes()))
    }

    /// Whether the device asks for the symmetric-key (encrypted payload) mode.
    pub fn is_encrypted_mode(&self) -> bool {
        self.seq.is_some()
    }

    /// The signed content.
    pub fn sign_content(&self) -> String {
        sign_content(
            &self.client_id,
            &self.device_name,
            &self.product_key,
            self.seq.as_deref(),
        )
    }

    /// Checks the signature against the device secret (constant-time, hex in either case).
    pub fn verify(&self, device_secret: &str) -> Result<(), AuthError> {
        if verify_signature(
            self.sign_method,
            device_secret,
            &self.sign_content(),
            &self.sign,
        ) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// `"clientId" + cid + "deviceName" + dn + "productKey" + pk [+ "seq" + seq]`.
pub fn sign_content(
    client_id: &str,
    device_name: &str,
    product_key: &str,
    seq: Option<&str>,
) -> String {
    let mut s = mqtt_sign_content(client_id, device_name, product_key, None);
    if let Some(seq) = seq {
        s.push_str("seq");
        s.push_str(seq);
    }
    s
}

/// The encrypted-mode part of an `/auth` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedGrant {
    /// The `random` the session key is derived from (caller-chosen, e.g. 16 random bytes in
    /// hex).
    pub random: String,
    /// The first `seq` the device will use.
    pub seq_offset: u32,
}

/// The 2.05 payload answering a successful `/auth`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReply {
    /// The token the device puts in option 2088 (or 61) of every later request.
    pub token: String,
    /// Present in the encrypted mode.
    pub encrypted: Option<EncryptedGrant>,
}

impl AuthReply {
    /// The JSON payload: `{"token":".."}` or `{"token":"..","random":"..","seqOffset":n}`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut obj = Map::new();
        obj.insert("token".to_owned(), Value::String(self.token.clone()));
        if let Some(g) = &self.encrypted {
            obj.insert("random".to_owned(), Value::String(g.random.clone()));
            obj.insert("seqOffset".to_owned(), Value::from(g.seq_offset));
        }
        Value::Object(obj).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DS: &str = "DeviceSecretForTest0123456789abc";

    fn payload(sign: &str, extra: &str) -> Vec<u8> {
        format!(
            r#"{{"productKey":"a1TestPK001","deviceName":"dev01","clientId":"a1TestPK001.dev01","sign":"{sign}"{extra}}}"#
        )
        .into_bytes()
    }

    // Expected signatures computed independently with Python's hmac module over
    // "clientIda1TestPK001.dev01deviceNamedev01productKeya1TestPK001" [+ "seq1234"].
    #[test]
    fn plain_mode_every_method() {
        for (method, sign) in [
            ("", "D282269D5C766F4A9BDB11F67B85F406"),
            (
                r#","signmethod":"hmacmd5""#,
                "d282269d5c766f4a9bdb11f67b85f406",
            ),
            (
                r#","signmethod":"hmacsha1""#,
                "3DE7EDE9E338C8B4B64BB39845E358BC7F68F35F",
            ),
            (
                r#","signMethod":"HmacSha256""#,
                "D21656CD7A58C3E694A4395490252DAB783290A96959EE7C186596E2AAFDB43D",
            ),
        ] {
            let req = AuthRequest::parse(&payload(sign, method)).expect("parses");
            assert!(!req.is_encrypted_mode());
            assert_eq!(req.verify(DS), Ok(()), "{method}");
            assert_eq!(req.verify("another secret"), Err(AuthError::BadSignature));
        }
    }

    #[test]
    fn encrypted_mode_signs_seq() {
        for (extra, sign) in [
            (r#","seq":"1234""#, "3f9e697517665f05a8de4da6fa308777"),
            (r#","seq":1234"#, "3F9E697517665F05A8DE4DA6FA308777"),
            (
                r#","seq":"1234","signmethod":"hmacsha1""#,
                "ef10ebdb40af3f61ea8dd21cc657c5e69c4eaf37",
            ),
            (
                r#","seq":"1234","signmethod":"hmacsha256""#,
                "7ba46fb89452dc4f192b8bd2de9dd794e1d07ad1534899799e686e52272b6b3b",
            ),
        ] {
            let req = AuthRequest::parse(&payload(sign, extra)).expect("parses");
            assert!(req.is_encrypted_mode());
            assert_eq!(req.seq_value(), Some(1234));
            assert_eq!(
                req.sign_content(),
                "clientIda1TestPK001.dev01deviceNamedev01productKeya1TestPK001seq1234"
            );
            assert_eq!(req.verify(DS), Ok(()), "{extra}");
        }
        // The plain-mode signature does not pass once seq is present.
        let req = AuthRequest::parse(&payload(
            "d282269d5c766f4a9bdb11f67b85f406",
            r#","seq":"1234""#,
        ))
        .expect("parses");
        assert_eq!(req.verify(DS), Err(AuthError::BadSignature));
    }

    #[test]
    fn malformed_requests() {
        assert_eq!(AuthRequest::parse(b"not json"), Err(AuthError::NotJson));
        assert_eq!(AuthRequest::parse(b"[1]"), Err(AuthError::NotJson));
        assert_eq!(AuthRequest::parse(&[0xff, 0xfe]), Err(AuthError::NotJson));
        assert_eq!(
            AuthRequest::parse(br#"{"productKey":"p","deviceName":"d","clientId":"c"}"#),
            Err(AuthError::MissingField("sign"))
        );
        assert_eq!(
            AuthRequest::parse(br#"{"productKey":"","deviceName":"d","clientId":"c","sign":"s"}"#),
            Err(AuthError::MissingField("productKey"))
        );
        assert_eq!(
            AuthRequest::parse(br#"{"productKey":1,"deviceName":"d","clientId":"c","sign":"s"}"#),
            Err(AuthError::MissingField("productKey"))
        );
        for seq in [
            r#","seq":"-1""#,
            r#","seq":"1a""#,
            r#","seq":"""#,
            r#","seq":1.5"#,
            r#","seq":true"#,
            r#","seq":"99999999999""#,
        ] {
            assert_eq!(
                AuthRequest::parse(&payload("00", seq)),
                Err(AuthError::BadSeq),
                "{seq}"
            );
        }
        assert_eq!(
            AuthRequest::parse(&payload("00", r#","signmethod":"hmacsha512""#)),
            Err(AuthError::UnknownSignMethod("hmacsha512".to_owned()))
        );
        assert_eq!(AuthError::BadSeq.code(), Code::BAD_REQUEST);
        assert_eq!(AuthError::BadSignature.code(), Code::UNAUTHORIZED);
        // Unknown fields are ignored.
        let req = AuthRequest::parse(&payload("00", r#","version":"1.0""#)).expect("parses");
        assert_eq!(req.sign_method, SignMethod::HmacMd5);
    }

    #[test]
    fn reply_json() {
        let plain = AuthReply {
            token: "tok123".to_owned(),
            encrypted: None,
        };
        assert_eq!(plain.to_json(), br#"{"token":"tok123"}"#);
        let enc = AuthReply {
            token: "tok\"1".to_owned(),
            encrypted: Some(EncryptedGrant {
                random: "a1b2c3d4e5f6".to_owned(),
                seq_offset: 42,
            }),
        };
        let v: Value = serde_json::from_slice(&enc.to_json()).expect("json");
        assert_eq!(v["token"], "tok\"1");
        assert_eq!(v["random"], "a1b2c3d4e5f6");
        assert_eq!(v["seqOffset"], 42);
    }
}
