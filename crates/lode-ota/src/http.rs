//! Firmware downloads over the platform's HTTP listener.
//!
//! `GET /ota/download/{firmwareId}?expires=…&signature=…` (see [`crate::url`]): a missing,
//! wrong or expired signature is 403. Downloads resume with `Range`: one range
//! (`bytes=a-b`, `bytes=a-`, `bytes=-n`) is answered 206 with `Content-Range`; a range
//! outside the file, or several ranges in one request, is 416 with
//! `Content-Range: bytes */{size}` (devices fetch one range at a time, and one
//! multipart/byteranges body would have to be parsed by them). `HEAD` answers the
//! headers only. Every answer carries `Accept-Ranges: bytes` and the firmware's
//! MD5 as `Content-MD5`-like `X-Lode-Md5`.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::Ota;
use crate::url::DOWNLOAD_PREFIX;

/// The download routes, to merge into the server's HTTP router.
pub fn router(ota: Ota) -> Router {
    Router::new()
        .route(&format!("{DOWNLOAD_PREFIX}/{{id}}"), get(download))
        .with_state(ota)
}

#[derive(Debug, Deserialize)]
struct Signed {
    expires: Option<i64>,
    signature: Option<String>,
}

/// What a `Range` header asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// No (usable) Range header: the whole file.
    Full,
    /// One satisfiable range, inclusive bounds.
    One(u64, u64),
    /// Not satisfiable, or several ranges.
    Refused,
}

/// Parses a `Range` header against a file of `size` bytes (RFC 9110 §14.1.2).
pub(crate) fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(value) = value else {
        return RangeRequest::Full;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        // Other units are ignored, as the RFC allows.
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Refused;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Refused;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = if first.is_empty() {
        // Suffix: the last n bytes.
        match parse(last) {
            Some(n) if n > 0 && size > 0 => (size.saturating_sub(n), size - 1),
            _ => return RangeRequest::Refused,
        }
    } else {
        let Some(start) = parse(first) else {
            return RangeRequest::Refused;
        };
        let end = if last.is_empty() {
            size.saturating_sub(1)
        } else {
            match parse(last) {
                Some(e) if e >= start => e.min(size.saturating_sub(1)),
                _ => return RangeRequest::Refused,
            }
        };
        (start, end)
    };
    if start >= size {
        return RangeRequest::Refused;
    }
    RangeRequest::One(start, end)
}

fn status(code: StatusCode, text: &'static str) -> Response {
    (code, text).into_response()
}

async fn download(
    State(ota): State<Ota>,
    Path(id): Path<String>,
    Query(signed): Query<Signed>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let (Some(expires), Some(signature)) = (signed.expires, signed.signature) else {
        return status(StatusCode::FORBIDDEN, "missing signature\n");
    };
    let now = chrono::Utc::now().timestamp();
    if !ota.inner.signer.verify(&id, expires, &signature, now) {
        return status(StatusCode::FORBIDDEN, "invalid or expired signature\n");
    }
    let firmware = match ota.inner.registry.ota().get_firmware(&id).await {
        Ok(Some(f)) => f,
        Ok(None) => return status(StatusCode::NOT_FOUND, "no such firmware\n"),
        Err(error) => {
            tracing::warn!(%error, "firmware lookup failed");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let size = firmware.size;
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let (code, start, len) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::One(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeRequest::Refused => {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        match ota.inner.blobs.open_range(&id, start, len).await {
            Ok(Some(reader)) => {
                ota.inner.stats.download_started(len);
                Body::from_stream(tokio_util::io::ReaderStream::new(reader))
            }
            Ok(None) => return status(StatusCode::NOT_FOUND, "firmware bytes missing\n"),
            Err(error) => {
                tracing::warn!(%error, firmware = %id, "firmware read failed");
                return status(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
            }
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = code;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&firmware.md5) {
        h.insert("x-lode-md5", v);
    }
    if code == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::{RangeRequest::*, parse_range};

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("items=1-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), One(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), One(5, 9));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), One(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), One(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), One(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Refused);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Refused);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Refused);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Refused);
        assert_eq!(parse_range(Some("bytes=x-"), 10), Refused);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Refused);
    }
}
