//! Sign-in signatures: MQTT password (section 3.3), dynamic registration (section 5), hex and
//! constant-time comparison.
//!
//! Every Alink signature is `hex(HMAC_<method>(secret, content))`. The Python SDK sends
//! lowercase hex, every C SDK uppercase, so presented signatures are compared
//! case-insensitively ([`verify_hex`]); what we produce ([`sign`]) is lowercase.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The HMAC a signature uses, named by the `signmethod` clientId option (or the
/// `signMethod` form field of dynamic registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignMethod {
    /// `hmacmd5`: 16-byte MAC, 32 hex characters.
    HmacMd5,
    /// `hmacsha1`: 20-byte MAC, 40 hex characters (Python SDK default).
    HmacSha1,
    /// `hmacsha256`: 32-byte MAC, 64 hex characters ((C3/C4 SDKs)).
    HmacSha256,
}

impl SignMethod {
    /// The method assumed for an MQTT sign-in whose clientId has no `signmethod` option:
    /// `hmacmd5`, as Alibaba's documentation states (doc 73742; unconfirmed for today's
    /// platform, and no SDK omits the option).
    pub const MQTT_DEFAULT: SignMethod = SignMethod::HmacMd5;

    /// The method assumed for HTTPS dynamic registration without a `signMethod` field:
    /// `hmacsha256`, the algorithm section 5 of the protocol reference describes.
    pub const REGISTER_DEFAULT: SignMethod = SignMethod::HmacSha256;

    /// The wire name, lowercase.
    pub fn as_str(self) -> &'static str {
        match self {
            SignMethod::HmacMd5 => "hmacmd5",
            SignMethod::HmacSha1 => "hmacsha1",
            SignMethod::HmacSha256 => "hmacsha256",
        }
    }

    /// Length of the MAC in bytes.
    pub fn mac_len(self) -> usize {
        match self {
            SignMethod::HmacMd5 => 16,
            SignMethod::HmacSha1 => 20,
            SignMethod::HmacSha256 => 32,
        }
    }
}

impl fmt::Display for SignMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `signmethod` value we do not know.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown sign method {0:?}: expected hmacmd5, hmacsha1 or hmacsha256")]
pub struct UnknownSignMethod(pub String);

impl FromStr for SignMethod {
    type Err = UnknownSignMethod;

    /// Case-insensitive: `hmacsha256`, `hmacSha256` (gateway payloads) and `HMACSHA256` all parse.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("hmacmd5") {
            Ok(SignMethod::HmacMd5)
        } else if s.eq_ignore_ascii_case("hmacsha1") {
            Ok(SignMethod::HmacSha1)
        } else if s.eq_ignore_ascii_case("hmacsha256") {
            Ok(SignMethod::HmacSha256)
        } else {
            Err(UnknownSignMethod(s.to_owned()))
        }
    }
}

/// The MQTT password content (section 3.3):
/// `"clientId" + prefix + "deviceName" + dn + "productKey" + pk [+ "timestamp" + ts]`.
///
/// `client_id_prefix` is the clientId up to (not including) its first `|`
/// ([`crate::ClientId::prefix`]); `timestamp` is the `timestamp` option's value if the clientId
/// carries one, even when empty.
pub fn mqtt_sign_content(
    client_id_prefix: &str,
    device_name: &str,
    product_key: &str,
    timestamp: Option<&str>,
) -> String {
    let mut s = String::with_capacity(
        48 + client_id_prefix.len()
            + device_name.len()
            + product_key.len()
            + timestamp.map_or(0, str::len),
    );
    s.push_str("clientId");
    s.push_str(client_id_prefix);
    s.push_str("deviceName");
    s.push_str(device_name);
    s.push_str("productKey");
    s.push_str(product_key);
    if let Some(ts) = timestamp {
        s.push_str("timestamp");
        s.push_str(ts);
    }
    s
}

/// The dynamic-registration content (section 5), signed with the ProductSecret:
/// `"deviceName" + dn + "productKey" + pk + "random" + random`.
pub fn register_sign_content(device_name: &str, product_key: &str, random: &str) -> String {
    format!("deviceName{device_name}productKey{product_key}random{random}")
}

/// The raw MAC bytes `HMAC_<method>(secret, content)`.
pub fn sign_bytes(method: SignMethod, secret: &[u8], content: &[u8]) -> Vec<u8> {
    fn mac<M: Mac + KeyInit>(secret: &[u8], content: &[u8]) -> Vec<u8> {
        let mut m =
            <M as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        m.update(content);
        m.finalize().into_bytes().to_vec()
    }
    match method {
        SignMethod::HmacMd5 => mac::<Hmac<md5::Md5>>(secret, content),
        SignMethod::HmacSha1 => mac::<Hmac<sha1::Sha1>>(secret, content),
        SignMethod::HmacSha256 => mac::<Hmac<sha2::Sha256>>(secret, content),
    }
}

/// `hex(HMAC_<method>(secret, content))`, lowercase.
pub fn sign(method: SignMethod, secret: &str, content: &str) -> String {
    hex_lower(&sign_bytes(method, secret.as_bytes(), content.as_bytes()))
}

/// Whether `presented` is the hex form of `expected` (raw MAC bytes), in either case.
///
/// The comparison of the decoded bytes is constant-time; a presented value of the wrong
/// length or with a non-hex character is refused without comparing.
pub fn verify_hex(expected: &[u8], presented: &str) -> bool {
    match hex_decode(presented) {
        Some(bytes) if bytes.len() == expected.len() => bool::from(bytes.ct_eq(expected)),
        _ => false,
    }
}

/// Whether `presented` (hex, either case) is the signature of `content` under `secret`.
pub fn verify_signature(method: SignMethod, secret: &str, content: &str, presented: &str) -> bool {
    verify_hex(
        &sign_bytes(method, secret.as_bytes(), content.as_bytes()),
        presented,
    )
}

/// Lowercase hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The value of one hex digit, either case.
pub(crate) fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex in either case; `None` for an odd length or a non-hex character.
pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(hex_nibble(p[0])? << 4 | hex_nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY_CONTENT: &str =
        "clientIda1TestPK001&dev01deviceNamedev01productKeya1TestPK001timestamp1795827149";
    const DS: &str = "DeviceSecretForTest0123456789abc";

    #[test]
    fn content_matches_section_3_3() {
        assert_eq!(
            mqtt_sign_content(
                "a1TestPK001&dev01",
                "dev01",
                "a1TestPK001",
                Some("1795827149")
            ),
            PY_CONTENT
        );
        assert_eq!(
            mqtt_sign_content("a1TestPK001.dev01", "dev01", "a1TestPK001", None),
            "clientIda1TestPK001.dev01deviceNamedev01productKeya1TestPK001"
        );
        // [C4] MQTT 5 assigned-clientId mode signs an empty clientId value.
        assert_eq!(
            mqtt_sign_content("", "dev01", "pk", None),
            "clientIddeviceNamedev01productKeypk"
        );
    }

    #[test]
    fn verified_sha1_vector() {
        // Captured from the Python SDK on the wire (section 3.3, [VERIFIED]).
        assert_eq!(
            sign(SignMethod::HmacSha1, DS, PY_CONTENT),
            "4b43c1bf44c7f160cd1a3c1890674a5dce9ccee6"
        );
    }

    #[test]
    fn md5_and_sha256_vectors() {
        // Computed with Python's hmac module.
        assert_eq!(
            sign(SignMethod::HmacMd5, DS, PY_CONTENT),
            "e7c0321ce26ae897c3724b07340a4ab6"
        );
        assert_eq!(
            sign(SignMethod::HmacSha256, DS, PY_CONTENT),
            "1398b19ccfc963454529f505e9b59adaed9ca19c8e6e7be47c03d77433937f67"
        );
        let c3 = mqtt_sign_content(
            "a1TestPK001.dev01",
            "dev01",
            "a1TestPK001",
            Some("2524608000000"),
        );
        // The C SDKs send uppercase hex.
        assert!(verify_signature(
            SignMethod::HmacSha256,
            DS,
            &c3,
            "E02457882163C1E825D7C32DC55EC0F56D26A5B743EE8F1F0351B73E5952A930"
        ));
        let no_ts = mqtt_sign_content("a1TestPK001.dev01", "dev01", "a1TestPK001", None);
        assert_eq!(
            sign(SignMethod::HmacMd5, DS, &no_ts),
            "d282269d5c766f4a9bdb11f67b85f406"
        );
    }

    #[test]
    fn register_vectors() {
        let ps = "ProductSecret012";
        let c = register_sign_content("newdev01", "a1TestPK001", "px8kGEXcGFHYcAS");
        assert_eq!(
            c,
            "deviceNamenewdev01productKeya1TestPK001randompx8kGEXcGFHYcAS"
        );
        assert_eq!(
            sign(SignMethod::HmacSha256, ps, &c),
            "9e4727691317bf4066080dbaf8607a14feff25e10f4addb3cb26bb15e04e3441"
        );
        let c = register_sign_content("dev.01@x:y", "a1TestPK001", "8Ygb7ULYh53B6OA");
        assert!(verify_signature(
            SignMethod::HmacSha256,
            ps,
            &c,
            "619875A753AF8A4D95DD4E48B348F7B7463EAE0364685E3D8692765EAC864B9F"
        ));
    }

    #[test]
    fn verify_is_case_insensitive_and_strict() {
        let mac = sign_bytes(SignMethod::HmacSha1, DS.as_bytes(), PY_CONTENT.as_bytes());
        let lower = "4b43c1bf44c7f160cd1a3c1890674a5dce9ccee6";
        assert!(verify_hex(&mac, lower));
        assert!(verify_hex(&mac, &lower.to_ascii_uppercase()));
        assert!(verify_hex(&mac, "4B43c1BF44c7f160cd1a3c1890674a5dce9ccee6"));
        assert!(!verify_hex(&mac, ""));
        assert!(!verify_hex(&mac, &lower[..38]));
        assert!(!verify_hex(&mac, &format!("{lower}00")));
        assert!(!verify_hex(&mac, &format!("{lower}0")));
        assert!(!verify_hex(
            &mac,
            "4b43c1bf44c7f160cd1a3c1890674a5dce9ccee7"
        ));
        assert!(!verify_hex(
            &mac,
            "4b43c1bf44c7f160cd1a3c1890674a5dce9ccegg"
        ));
        assert!(!verify_hex(
            &mac,
            " 4b43c1bf44c7f160cd1a3c1890674a5dce9ccee"
        ));
        // The wrong method yields the wrong length and is refused.
        assert!(!verify_signature(
            SignMethod::HmacSha256,
            DS,
            PY_CONTENT,
            lower
        ));
    }

    #[test]
    fn sign_method_names() {
        for (s, m) in [
            ("hmacmd5", SignMethod::HmacMd5),
            ("HmacSha1", SignMethod::HmacSha1),
            ("hmacSha256", SignMethod::HmacSha256),
            ("HMACSHA256", SignMethod::HmacSha256),
        ] {
            assert_eq!(s.parse::<SignMethod>(), Ok(m));
            assert_eq!(m.as_str().parse::<SignMethod>(), Ok(m));
            assert_eq!(sign(m, "k", "c").len(), m.mac_len() * 2);
        }
        for bad in ["", "sha256", "hmacsha512", "hmac-sha256", " hmacsha1"] {
            assert!(bad.parse::<SignMethod>().is_err(), "{bad}");
        }
        assert_eq!(SignMethod::MQTT_DEFAULT, SignMethod::HmacMd5);
        assert_eq!(SignMethod::REGISTER_DEFAULT, SignMethod::HmacSha256);
    }

    #[test]
    fn hex_roundtrip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_lower(&bytes)), Some(bytes));
    }
}
