//! MQTT over WebSocket: the upgrade handshake and an adapter that turns a WebSocket into a
//! byte stream.
//!
//! MQTT packets may span several binary messages or share one, so the adapter hands the broker
//! plain bytes. Every write becomes one binary message, sent at once without waiting for a
//! flush. A close frame reads as end of stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// The one path MQTT is served on.
pub const MQTT_PATH: &str = "/mqtt";
/// Subprotocols accepted, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Runs the server side of the WebSocket handshake: path `/mqtt`, subprotocol `mqtt`
/// (or `mqttv3.1`). Other paths get 404, other subprotocols 400.
pub(crate) async fn accept<S>(
    stream: S,
    max_message_size: usize,
) -> Result<WebSocketStream<S>, tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size));
    tokio_tungstenite::accept_hdr_async_with_config(stream, check_request, Some(config)).await
}

#[allow(
    clippy::result_large_err,
    reason = "the callback signature is tungstenite's"
)]
fn check_request(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() != MQTT_PATH {
        return Err(error_response(StatusCode::NOT_FOUND, "not found"));
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        // Some clients offer no subprotocol at all; MQTT still works for them.
        return Ok(resp);
    }
    let chosen = SUBPROTOCOLS
        .iter()
        .find(|want| offered.iter().any(|o| o.eq_ignore_ascii_case(want)));
    match chosen {
        Some(proto) => {
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(proto),
            );
            Ok(resp)
        }
        None => Err(error_response(
            StatusCode::BAD_REQUEST,
            "unsupported websocket subprotocol",
        )),
    }
}

fn error_response(status: StatusCode, body: &str) -> ErrorResponse {
    let mut resp = ErrorResponse::new(Some(body.to_owned()));
    *resp.status_mut() = status;
    resp
}

/// A WebSocket seen as an ordered byte stream.
pub struct WsByteStream<S> {
    inner: WebSocketStream<S>,
    /// Bytes of the last binary message not yet read.
    pending: Bytes,
    /// The peer closed (or sent something MQTT forbids): reads return end of stream.
    eof: bool,
}

impl<S> WsByteStream<S> {
    pub fn new(inner: WebSocketStream<S>) -> Self {
        WsByteStream {
            inner,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn to_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
        }
        other => io::Error::other(other),
    }
}

impl<S> AsyncRead for WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Pushes out anything an earlier write left in the WebSocket's buffer (see poll_write).
        let _ = Pin::new(&mut this.inner).poll_flush(cx);
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // Pings are answered by tungstenite itself; pongs and raw frames carry no data.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // MQTT over WebSocket is binary only: a text message ends the connection.
                Some(Ok(Message::Text(_))) => {
                    this.eof = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text websocket message on an mqtt connection",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => this.eof = true,
                Some(Err(e)) => {
                    this.eof = true;
                    return Poll::Ready(Err(to_io(e)));
                }
            }
        }
    }
}

impl<S> AsyncWrite for WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let inner = &mut self.inner;
        ready!(Pin::new(&mut *inner).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut *inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        // Send at once: callers that never flush (a plain TCP stream needs no flush) must still
        // see their bytes go out. If the socket is full, the rest goes on the next write, read
        // or flush; the waker is registered either way.
        if let Poll::Ready(Err(e)) = Pin::new(&mut *inner).poll_flush(cx) {
            return Poll::Ready(Err(to_io(e)));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.inner).poll_close(cx)) {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}
