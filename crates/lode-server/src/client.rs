//! A small client of the management API for the command line: signs each
//! request with an AccessKey and speaks HTTP/1.1 over one connection per call.
//!
//! It finds the server and its key the way cloud CLIs do: flags, then the
//! `LODESTONE_URL`, `LODESTONE_ACCESS_KEY_ID` and `LODESTONE_ACCESS_KEY_SECRET`
//! environment variables, then a profile file (`--profile`, `LODESTONE_PROFILE`,
//! default `~/.lodestone/profile.toml`) with `url`, `access_key_id` and
//! `access_key_secret`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use lode_api::signing::{Credentials, signature_headers};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a call may take: longer than the longest sync service call (60 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(75);

/// Where the server is and which key signs for us.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Base URL of the server's HTTP listener [default: http://127.0.0.1:8080]
    #[arg(long, env = "LODESTONE_URL", global = true)]
    pub url: Option<String>,
    /// AccessKey id
    #[arg(long, env = "LODESTONE_ACCESS_KEY_ID", global = true)]
    pub access_key_id: Option<String>,
    /// AccessKey secret
    #[arg(
        long,
        env = "LODESTONE_ACCESS_KEY_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub access_key_secret: Option<String>,
    /// Profile file with url, access_key_id and access_key_secret
    #[arg(long, env = "LODESTONE_PROFILE", global = true)]
    pub profile: Option<PathBuf>,
    /// Print the API's JSON object instead of a table
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    url: Option<String>,
    access_key_id: Option<String>,
    access_key_secret: Option<String>,
}

/// A resolved, ready client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    host: String,
    port: u16,
    key_id: String,
    secret: String,
}

/// An answer of the API: status and JSON body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

impl ApiClient {
    /// Resolves flags, environment and profile into a client.
    pub fn from_connection(c: &Connection) -> anyhow::Result<ApiClient> {
        #[allow(clippy::disallowed_methods)]
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let profile_path = c
            .profile
            .clone()
            .or_else(|| home.map(|h| h.join(".lodestone/profile.toml")));
        let profile = match &profile_path {
            Some(path) if path.try_exists().unwrap_or(false) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("failed to read profile {}", path.display()))?;
                toml::from_str::<Profile>(&text)
                    .with_context(|| format!("invalid profile {}", path.display()))?
            }
            Some(path) if c.profile.is_some() => {
                bail!("profile {} does not exist", path.display())
            }
            _ => Profile::default(),
        };
        let url = c
            .url
            .clone()
            .or(profile.url)
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        let key_id = c.access_key_id.clone().or(profile.access_key_id).context(
            "no access key: pass --access-key-id or set LODESTONE_ACCESS_KEY_ID (or a profile)",
        )?;
        let secret = c
            .access_key_secret
            .clone()
            .or(profile.access_key_secret)
            .context(
                "no access key secret: pass --access-key-secret or set LODESTONE_ACCESS_KEY_SECRET",
            )?;
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("{url}: only http:// URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse().with_context(|| format!("bad port in {url}"))?,
            ),
            None => (authority.to_owned(), 80),
        };
        Ok(ApiClient {
            host,
            port,
            key_id,
            secret,
        })
    }

    /// Sends a signed request. `path_and_query` starts with `/api/v1/`.
    pub async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<Response> {
        let body = match body {
            Some(v) => serde_json::to_vec(v)?,
            None => Vec::new(),
        };
        let content_type = (!body.is_empty()).then_some("application/json");
        self.call_bytes(method, path_and_query, &body, content_type)
            .await
    }

    /// Sends a signed request with a raw body (a firmware upload).
    pub async fn call_bytes(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> anyhow::Result<Response> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let nonce = lode_alink::hex_lower(&rand::random::<[u8; 16]>());
        let credentials = Credentials {
            access_key_id: &self.key_id,
            secret: &self.secret,
        };
        let headers = signature_headers(credentials, method, path, query, body, now, &nonce);
        let mut request = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\n\
             Accept: application/json\r\nContent-Length: {}\r\n",
            self.host,
            self.port,
            body.len()
        );
        if let Some(content_type) = content_type {
            request.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let exchange = async {
            let mut stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .with_context(|| format!("cannot reach {}:{}", self.host, self.port))?;
            stream.write_all(request.as_bytes()).await?;
            stream.write_all(body).await?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await?;
            anyhow::Ok(raw)
        };
        let raw = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .with_context(|| {
                format!(
                    "the server did not answer within {} s",
                    ANSWER_TIMEOUT.as_secs()
                )
            })??;
        parse_response(&raw)
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = std::str::from_utf8(&raw[..split]).context("malformed HTTP response")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    let body = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
        })
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("malformed chunk")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end])?
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n")
            .expect("plain");
        assert_eq!(r.status, 201);
        assert_eq!(r.body["a"], 1);
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"b\"\r\n3\r\n:2}\r\n0\r\n\r\n",
        )
        .expect("chunked");
        assert_eq!(r.body["b"], 2);
    }
}
