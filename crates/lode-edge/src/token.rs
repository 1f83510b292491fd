//! Self-contained device tokens.
//!
//! A token names its device and channel, carries its expiry (and, in the encrypted CoAP
//! mode, the `random` the session key derives from), and ends with a MAC:
//! HMAC-SHA256 under the server's token key over the token's text, the device's registry id
//! and its secret, cut to 16 bytes.
//! The server keeps no table of tokens, so a restart (with the same key, kept in the data
//! directory) keeps every token valid. Binding the MAC to the registry id and the secret
//! revokes the tokens of a device that is deleted (and perhaps created again under the same
//! name) or whose secret is reset; a disabled device is refused when the token is used.
//!
//! Text: `1{channel}.{expiry}.{productKey}.{deviceName}.{random}.{mac}`, where the names and
//! the MAC are base64url without padding, the expiry is Unix seconds in decimal and `random`
//! is lowercase hex (empty outside the encrypted mode). At most about 150 characters for the
//! longest names, under the 192 bytes the C SDKs keep for a token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Length of the server's token key.
pub const KEY_LEN: usize = 32;

/// Length of the MAC kept in a token.
const MAC_LEN: usize = 16;

/// The server's secret for signing tokens. Keep it with the data: a new key invalidates
/// every token issued before.
#[derive(Clone)]
pub struct TokenKey([u8; KEY_LEN]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> TokenKey {
        TokenKey(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> TokenKey {
        TokenKey(rand::random())
    }

    /// The key's bytes, to store it.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn mac(&self, body: &str, iot_id: &str, secret: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length; the fallback is never used.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        for part in [body, iot_id, secret] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }
}

/// The transport a token was issued for; a token works only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// HTTP(S) `/topic/...`.
    Http,
    /// Plain CoAP (and CoAP over DTLS).
    Coap,
    /// CoAP with the symmetric-key encrypted payload.
    CoapEncrypted,
}

impl Channel {
    fn tag(self) -> char {
        match self {
            Channel::Http => 'h',
            Channel::Coap => 'c',
            Channel::CoapEncrypted => 'e',
        }
    }

    fn from_tag(tag: char) -> Option<Channel> {
        match tag {
            'h' => Some(Channel::Http),
            'c' => Some(Channel::Coap),
            'e' => Some(Channel::CoapEncrypted),
            _ => None,
        }
    }

    /// The channel's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Http => "http",
            Channel::Coap => "coap",
            Channel::CoapEncrypted => "coap-psk",
        }
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The transport it is valid on.
    pub channel: Channel,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// The device's ProductKey.
    pub product_key: String,
    /// The device's DeviceName.
    pub device_name: String,
    /// The `random` of the encrypted CoAP mode.
    pub random: Option<String>,
}

/// A token read but not yet checked against its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unverified<'a> {
    pub(crate) claims: Claims,
    body: &'a str,
    mac: Vec<u8>,
}

impl Unverified<'_> {
    /// Whether the MAC matches for the device as it is now.
    pub(crate) fn verify(&self, key: &TokenKey, iot_id: &str, secret: &str) -> bool {
        key.mac(self.body, iot_id, secret)
            .verify_truncated_left(&self.mac)
            .is_ok()
    }
}

/// Issues a token for `claims`, bound to the device's registry id and secret.
pub(crate) fn issue(key: &TokenKey, claims: &Claims, iot_id: &str, secret: &str) -> String {
    let body = format!(
        "1{}.{}.{}.{}.{}",
        claims.channel.tag(),
        claims.expires,
        B64.encode(&claims.product_key),
        B64.encode(&claims.device_name),
        claims.random.as_deref().unwrap_or(""),
    );
    let mac = key.mac(&body, iot_id, secret).finalize().into_bytes();
    let mac = mac.get(..MAC_LEN).unwrap_or(&[]);
    format!("{body}.{}", B64.encode(mac))
}

/// Reads a token; `None` when it is not one of ours.
pub(crate) fn parse(token: &str) -> Option<Unverified<'_>> {
    let (body, mac) = token.rsplit_once('.')?;
    let mac = B64.decode(mac).ok().filter(|m| m.len() == MAC_LEN)?;
    let mut parts = body.split('.');
    let head = parts.next()?;
    let mut head_chars = head.chars();
    if head_chars.next()? != '1' {
        return None;
    }
    let channel = Channel::from_tag(head_chars.next()?)?;
    if head_chars.next().is_some() {
        return None;
    }
    let expires = parts.next()?.parse().ok()?;
    let text = |part: Option<&str>| -> Option<String> {
        String::from_utf8(B64.decode(part?).ok()?)
            .ok()
            .filter(|s| !s.is_empty())
    };
    let product_key = text(parts.next())?;
    let device_name = text(parts.next())?;
    let random = parts.next()?;
    if parts.next().is_some() || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(Unverified {
        claims: Claims {
            channel,
            expires,
            product_key,
            device_name,
            random: (!random.is_empty()).then(|| random.to_owned()),
        },
        body,
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(channel: Channel, random: Option<&str>) -> Claims {
        Claims {
            channel,
            expires: 1_900_000_000,
            product_key: "a1B2c3D4e5F".to_owned(),
            device_name: "meter-0001".to_owned(),
            random: random.map(str::to_owned),
        }
    }

    #[test]
    fn round_trip_and_binding() {
        let key = TokenKey::from_bytes([7; KEY_LEN]);
        for c in [
            claims(Channel::Http, None),
            claims(Channel::Coap, None),
            claims(Channel::CoapEncrypted, Some("0a1b2c3d4e5f6a7b")),
        ] {
            let token = issue(&key, &c, "iot-1", "secret-1");
            assert!(token.len() < 192, "{token}");
            let read = parse(&token).expect("parses");
            assert_eq!(read.claims, c);
            assert!(read.verify(&key, "iot-1", "secret-1"));
            assert!(!read.verify(&key, "iot-2", "secret-1"), "another device id");
            assert!(!read.verify(&key, "iot-1", "secret-2"), "a reset secret");
            let other = TokenKey::from_bytes([8; KEY_LEN]);
            assert!(
                !read.verify(&other, "iot-1", "secret-1"),
                "another server key"
            );
        }
    }

    #[test]
    fn tampering_is_detected() {
        let key = TokenKey::from_bytes([1; KEY_LEN]);
        let token = issue(&key, &claims(Channel::Http, None), "iot", "s");
        // A later expiry with the old MAC.
        let forged = token.replacen("1900000000", "1900000001", 1);
        let read = parse(&forged).expect("parses");
        assert!(!read.verify(&key, "iot", "s"));
        // Another channel with the old MAC.
        let forged = token.replacen("1h", "1c", 1);
        let read = parse(&forged).expect("parses");
        assert_eq!(read.claims.channel, Channel::Coap);
        assert!(!read.verify(&key, "iot", "s"));
    }

    #[test]
    fn garbage_is_not_a_token() {
        for bad in [
            "",
            ".",
            "abc",
            "1h.1.YQ.Yg..",
            "2h.1.YQ.Yg..AAAAAAAAAAAAAAAAAAAAAA",
            "1x.1.YQ.Yg..AAAAAAAAAAAAAAAAAAAAAA",
            "1h.x.YQ.Yg..AAAAAAAAAAAAAAAAAAAAAA",
            "1h.1..Yg..AAAAAAAAAAAAAAAAAAAAAA",
            "1h.1.YQ.Yg.zz.AAAAAAAAAAAAAAAAAAAAAA",
            "1h.1.YQ.Yg...AAAAAAAAAAAAAAAAAAAAAA",
            "1h.1.YQ.Yg..AAAA",
            "1hh.1.YQ.Yg..AAAAAAAAAAAAAAAAAAAAAA",
            "1h.1.//.Yg..AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert!(parse("1h.1.YQ.Yg..AAAAAAAAAAAAAAAAAAAAAA").is_some());
    }
}
