//! A minimal client of Lodestone's management API: signed GET requests over HTTP/1.1,
//! one connection per call, for checking what a scenario stored.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use lode_api::signing::{Credentials, signature_headers};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

use crate::util::now_ns;

/// Longest wait for one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a request the API refused with 429 (too many requests).
const THROTTLED_RETRIES: usize = 10;

/// Where the API is and the AccessKey that signs the calls.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    addr: SocketAddr,
    key_id: String,
    secret: String,
}

impl ApiClient {
    /// `url` is `http://HOST:PORT` (an address, no name lookup).
    pub(crate) fn new(url: &str, key_id: String, secret: String) -> Result<ApiClient> {
        let authority = url
            .strip_prefix("http://")
            .with_context(|| format!("{url}: only http:// URLs are supported"))?
            .trim_end_matches('/');
        let addr = authority
            .parse()
            .with_context(|| format!("{url}: expected http://IP:PORT"))?;
        Ok(ApiClient {
            addr,
            key_id,
            secret,
        })
    }

    /// Sends a signed GET of `path` (starting with `/api/v1/`) with the raw `query`
    /// (already percent-encoded, may be empty); returns the status and the JSON body.
    /// A 429 (the API's rate limit) is retried after a pause, a bounded number of times.
    pub(crate) async fn get(&self, path: &str, query: &str) -> Result<(u16, Value)> {
        let mut pause = Duration::from_millis(250);
        for _ in 0..THROTTLED_RETRIES {
            let (status, body) = self.get_once(path, query).await?;
            if status != 429 {
                return Ok((status, body));
            }
            sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        self.get_once(path, query).await
    }

    async fn get_once(&self, path: &str, query: &str) -> Result<(u16, Value)> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let nonce = format!("{:016x}{:016x}", now_ns(), std::process::id());
        let credentials = Credentials {
            access_key_id: &self.key_id,
            secret: &self.secret,
        };
        let headers = signature_headers(credentials, "GET", path, query, b"", now_ms, &nonce);
        let target = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let mut request = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
            self.addr
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let raw = timeout(ANSWER_TIMEOUT, async {
            let mut stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("cannot reach the API at {}", self.addr))?;
            stream.write_all(request.as_bytes()).await?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await?;
            anyhow::Ok(raw)
        })
        .await
        .context("the API did not answer in time")??;
        parse_response(&raw)
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub(crate) fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Status and JSON body of a complete HTTP/1.1 response (plain or chunked).
fn parse_response(raw: &[u8]) -> Result<(u16, Value)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = std::str::from_utf8(&raw[..split]).context("malformed HTTP response head")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).context("the API answered with a body that is not JSON")?
    };
    Ok((status, value))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("malformed chunk")?;
        let size_text = std::str::from_utf8(&data[..line_end]).context("malformed chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("malformed chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let (status, body) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n").unwrap();
        assert_eq!(status, 200);
        assert_eq!(body["a"], 1);
        let (status, body) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"b\"\r\n3\r\n:2}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(status, 404);
        assert_eq!(body["b"], 2);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nnot json").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\n{}")
                .is_err()
        );
    }

    #[test]
    fn query_values_are_percent_encoded_and_urls_checked() {
        assert_eq!(encode_query_value("a b+c/="), "a%20b%2Bc%2F%3D");
        assert_eq!(encode_query_value("Ab-9_.~"), "Ab-9_.~");
        assert!(ApiClient::new("http://127.0.0.1:8080/", "k".into(), "s".into()).is_ok());
        assert!(ApiClient::new("https://127.0.0.1:8080", "k".into(), "s".into()).is_err());
        assert!(ApiClient::new("http://localhost:8080", "k".into(), "s".into()).is_err());
    }
}
