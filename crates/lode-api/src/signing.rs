//! Request signing of the management API, shared by the server and its clients.
//!
//! A request is signed with an AccessKey secret over a canonical string of six
//! lines joined by `\n` (no trailing newline):
//!
//! ```text
//! METHOD                  upper case, e.g. POST
//! PATH                    the request path as sent, e.g. /api/v1/products
//! SORTED_QUERY            canonical_query(raw query), empty when there is none
//! HEX(SHA256(body))       lowercase hex; of the empty string when there is no body
//! TIMESTAMP               unix milliseconds, the X-Lode-Timestamp header
//! NONCE                   the X-Lode-Nonce header
//! ```
//!
//! `SORTED_QUERY` decodes each `key=value` pair of the raw query
//! (`application/x-www-form-urlencoded` rules: `+` is a space), re-encodes key and
//! value with [`percent_encode`] (RFC 3986 unreserved characters stay, every other
//! byte becomes `%XX` in upper case), sorts the pairs by key then value, and joins
//! them as `k=v&k=v`. The signature is `hex(HMAC-SHA256(secret, canonical))` in
//! lower case, sent in `X-Lode-Signature`.
//!
//! Only `hmac`, `sha2` and `hex` are used, so command-line clients can depend on
//! this module without pulling in the server (`lode-api` with
//! `default-features = false`).
//!
//! A client signing `GET /api/v1/products/a1B/devices?state=Online&pageNo=1`:
//!
//! ```
//! use lode_api::signing::{Credentials, canonical_request, signature_headers, verify};
//!
//! let key = Credentials { access_key_id: "LTAIexample", secret: "s3cret" };
//! let headers = signature_headers(
//!     key,
//!     "GET",
//!     "/api/v1/products/a1B/devices",
//!     "state=Online&pageNo=1",
//!     b"",
//!     1_764_300_000_000,
//!     "9f1c2e",
//! );
//! assert_eq!(headers[0], ("x-lode-access-key-id", "LTAIexample".to_owned()));
//! // What the server recomputes and checks:
//! let canonical = canonical_request(
//!     "GET",
//!     "/api/v1/products/a1B/devices",
//!     "state=Online&pageNo=1",
//!     b"",
//!     "1764300000000",
//!     "9f1c2e",
//! );
//! assert!(canonical.starts_with("GET\n/api/v1/products/a1B/devices\npageNo=1&state=Online\n"));
//! assert!(verify("s3cret", &canonical, &headers[3].1));
//! ```

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Header carrying the AccessKey id.
pub const HEADER_ACCESS_KEY_ID: &str = "x-lode-access-key-id";
/// Header carrying the request time in unix milliseconds.
pub const HEADER_TIMESTAMP: &str = "x-lode-timestamp";
/// Header carrying a single-use random string (at most [`MAX_NONCE_LEN`] bytes).
pub const HEADER_NONCE: &str = "x-lode-nonce";
/// Header carrying the lowercase hex signature.
pub const HEADER_SIGNATURE: &str = "x-lode-signature";
/// Longest accepted nonce.
pub const MAX_NONCE_LEN: usize = 128;

/// Lowercase hex SHA-256 of `body`.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Percent-encodes `s`: `A-Z a-z 0-9 - _ . ~` stay, every other byte is `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one query component (`+` is a space, `%XX` a byte). Malformed
/// escapes are kept as they are; invalid UTF-8 is replaced, so decoding never
/// fails and both sides compute the same string.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decoded `(key, value)` pairs of a raw query string, in order.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Encodes pairs as a query string (`k=v&k=v`, in the given order), for clients.
pub fn encode_query<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encode(k.as_ref()),
                percent_encode(v.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical form of a raw query string (without the leading `?`).
pub fn canonical_query(raw: &str) -> String {
    let mut pairs: Vec<(String, String)> = parse_query(raw)
        .into_iter()
        .map(|(k, v)| (percent_encode(&k), percent_encode(&v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The string to sign for a request.
///
/// `path` is the path as sent (no query), `raw_query` the part after `?`
/// (empty when there is none), `body` the exact bytes sent.
pub fn canonical_request(
    method: &str,
    path: &str,
    raw_query: &str,
    body: &[u8],
    timestamp_ms: &str,
    nonce: &str,
) -> String {
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        canonical_query(raw_query),
        body_hash(body),
        timestamp_ms,
        nonce
    )
}

fn mac(secret: &str, canonical: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this never fails.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(canonical.as_bytes());
    mac
}

/// `hex(HMAC-SHA256(secret, canonical))`, lowercase.
pub fn sign(secret: &str, canonical: &str) -> String {
    hex::encode(mac(secret, canonical).finalize().into_bytes())
}

/// Whether `signature` (hex, either case) is right for `canonical`; constant time.
pub fn verify(secret: &str, canonical: &str, signature: &str) -> bool {
    match hex::decode(signature) {
        Ok(bytes) => mac(secret, canonical).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// An AccessKey as a client holds it.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
}

/// The four signature headers of a request, as `(name, value)` pairs: what a
/// client sends with a request (the canonical string is [`canonical_request`]).
pub fn signature_headers(
    credentials: Credentials<'_>,
    method: &str,
    path: &str,
    raw_query: &str,
    body: &[u8],
    timestamp_ms: u64,
    nonce: &str,
) -> [(&'static str, String); 4] {
    let ts = timestamp_ms.to_string();
    let canonical = canonical_request(method, path, raw_query, body, &ts, nonce);
    [
        (HEADER_ACCESS_KEY_ID, credentials.access_key_id.to_owned()),
        (HEADER_TIMESTAMP, ts),
        (HEADER_NONCE, nonce.to_owned()),
        (HEADER_SIGNATURE, sign(credentials.secret, &canonical)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(
            canonical_query("pageSize=10&name=a+b&pageNo=2&tagKey=%E6%B8%A9"),
            "name=a%20b&pageNo=2&pageSize=10&tagKey=%E6%B8%A9"
        );
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("x=%zz"), "x=%25zz");
    }

    #[test]
    fn canonical_request_shape() {
        let c = canonical_request(
            "get",
            "/api/v1/products",
            "pageNo=1",
            b"",
            "1700000000000",
            "n1",
        );
        assert_eq!(
            c,
            "GET\n/api/v1/products\npageNo=1\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             1700000000000\nn1"
        );
    }

    #[test]
    fn sign_and_verify() {
        // HMAC-SHA256 test vector (RFC 4231 case 2).
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = sign("secret", "content");
        assert!(verify("secret", "content", &s));
        assert!(verify("secret", "content", &s.to_uppercase()));
        assert!(!verify("secret2", "content", &s));
        assert!(!verify("secret", "content", "zz"));
        assert!(!verify("secret", "content", ""));
    }

    #[test]
    fn encode_query_round_trips() {
        let q = encode_query(&[("name", "a b/c"), ("k", "ü")]);
        assert_eq!(q, "name=a%20b%2Fc&k=%C3%BC");
        assert_eq!(
            parse_query(&q),
            vec![("name".into(), "a b/c".into()), ("k".into(), "ü".into())]
        );
    }
}
