//! WebSocket binary messages as one continuous byte stream, as Coder's `websocket.NetConn(…, MessageBinary)` does.
//!
//! Message boundaries mean nothing: a Go yamux peer writes a frame's 12-byte header and its body as two messages,
//! and one message may hold several frames. A text message is a protocol error. Each flush sends what was written
//! since the last one as one binary message, so a yamux frame's header and body travel together.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// Named in `limits` with every other transport limit; re-exported so `io::ws::…` paths keep working.
pub use crate::limits::{
    DEFAULT_MAX_WS_MESSAGE_SIZE, DEFAULT_WS_PING_INTERVAL, DEFAULT_WS_PING_TIMEOUT, DEFAULT_WS_READ_BUFFER,
    WS_WRITE_COALESCE,
};

/// What the byte stream needs to know of a WebSocket library's message type.
pub enum WsFrame {
    Binary(Bytes),
    Text,
    /// Ping, pong and raw frames: the library answers pings itself.
    Control,
    Close,
}

pub trait WsMessage: Sized {
    fn classify(self) -> WsFrame;
    fn binary(data: Bytes) -> Self;
    fn ping() -> Self;
    /// A Close frame with `code`, for libraries that can send one: a peer that broke the protocol learns why.
    fn close(_code: u16, _reason: &'static str) -> Option<Self> {
        None
    }
    /// The close code for a read error of the library (its `Display` text), `None` when the connection can no
    /// longer carry one.
    fn close_code_for(_error: &str) -> Option<u16> {
        None
    }
}

/// RFC 6455 close codes sent to a peer that breaks the protocol.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// A text message on the binary stream: coder/websocket's `NetConn` closes with this code (StatusUnsupportedData).
pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// A message or frame past `max_ws_message_size`.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// WebSocket-level liveness, as coderd keeps it on the agent connection.
struct Liveness {
    interval: std::time::Duration,
    timeout: std::time::Duration,
    next_ping: Pin<Box<tokio::time::Sleep>>,
    last_heard: tokio::time::Instant,
}

pub struct WsByteStream<S, M> {
    inner: S,
    liveness: Option<Liveness>,
    _message: std::marker::PhantomData<fn(M) -> M>,
    readable: Bytes,
    writable: BytesMut,
    read_closed: bool,
}

impl<S, M> WsByteStream<S, M> {
    /// Pings every `interval` and fails the stream when nothing (no message, no pong) arrived for `timeout`.
    pub fn with_pings(inner: S, interval: std::time::Duration, timeout: std::time::Duration) -> Self {
        let mut stream = Self::new(inner);
        stream.liveness = Some(Liveness {
            interval,
            timeout,
            next_ping: Box::pin(tokio::time::sleep(interval)),
            last_heard: tokio::time::Instant::now(),
        });
        stream
    }

    pub fn new(inner: S) -> Self {
        WsByteStream {
            inner,
            liveness: None,
            _message: std::marker::PhantomData,
            readable: Bytes::new(),
            writable: BytesMut::new(),
            read_closed: false,
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn io_err<E: std::fmt::Display>(err: E) -> io::Error {
    io::Error::other(err.to_string())
}

impl<S, M, E> WsByteStream<S, M>
where
    S: Sink<M, Error = E> + Unpin,
    M: WsMessage,
    E: std::fmt::Display,
{
    /// Sends a ping when one is due; fails once the peer has been silent too long.
    fn poll_liveness(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(live) = self.liveness.as_mut() else {
            return Ok(());
        };
        if live.last_heard.elapsed() >= live.timeout {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "websocket peer silent past the ping timeout"));
        }
        if live.next_ping.as_mut().poll(cx).is_ready() {
            let interval = live.interval;
            live.next_ping.as_mut().reset(tokio::time::Instant::now() + interval);
            let _ = live.next_ping.as_mut().poll(cx);
            // Best effort: a socket too full to take a ping has a peer that is not reading, which the write
            // timeout above us deals with.
            if let Poll::Ready(Ok(())) = Pin::new(&mut self.inner).poll_ready(cx) {
                Pin::new(&mut self.inner).start_send(M::ping()).map_err(io_err)?;
                let _ = Pin::new(&mut self.inner).poll_flush(cx).map_err(io_err)?;
            }
        }
        Ok(())
    }
}

impl<S, M, E> AsyncRead for WsByteStream<S, M>
where
    S: Stream<Item = Result<M, E>> + Sink<M, Error = E> + Unpin,
    M: WsMessage,
    E: std::fmt::Display,
{
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // After the peer's Close there is nothing left to keep alive: reads report EOF, not a timeout.
        if !self.read_closed {
            self.poll_liveness(cx)?;
        }
        if buf.remaining() == 0 {
            // Nothing can be handed over, so nothing is taken: a zero-length read must not swallow a message (a
            // Close consumed here would end the stream without the reader ever seeing EOF).
            return Poll::Ready(Ok(()));
        }
        loop {
            if !self.readable.is_empty() {
                let n = self.readable.len().min(buf.remaining());
                buf.put_slice(&self.readable[..n]);
                self.readable.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.read_closed {
                return Poll::Ready(Ok(()));
            }
            let next = ready!(Pin::new(&mut self.inner).poll_next(cx));
            if let Some(live) = self.liveness.as_mut() {
                live.last_heard = tokio::time::Instant::now();
            }
            match next {
                Some(Ok(message)) => match message.classify() {
                    WsFrame::Binary(data) => self.readable = data,
                    WsFrame::Control => {}
                    WsFrame::Text => {
                        self.read_closed = true;
                        self.send_close(cx, M::close(CLOSE_UNSUPPORTED_DATA, "binary messages only"));
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "text websocket message on a binary stream",
                        )));
                    }
                    WsFrame::Close => {
                        self.read_closed = true;
                        // The library queued its reply to the Close (an echo, or 1002 for a code no peer may
                        // send); it goes out on the next write or flush, and after EOF there may be none.
                        let _ = Pin::new(&mut self.inner).poll_flush(cx);
                    }
                },
                Some(Err(err)) => {
                    self.read_closed = true;
                    let text = err.to_string();
                    let close = M::close_code_for(&text).and_then(|code| M::close(code, "protocol error"));
                    self.send_close(cx, close);
                    return Poll::Ready(Err(io::Error::other(text)));
                }
                None => self.read_closed = true,
            }
        }
    }
}

impl<S, M, E> WsByteStream<S, M>
where
    S: Sink<M, Error = E> + Unpin,
    M: WsMessage,
    E: std::fmt::Display,
{
    /// Best effort, once, just before the stream fails: the session ends right after, so there is no later poll
    /// to finish a write the socket cannot take now.
    fn send_close(&mut self, cx: &mut Context<'_>, close: Option<M>) {
        let Some(close) = close else { return };
        if let Poll::Ready(Ok(())) = Pin::new(&mut self.inner).poll_ready(cx) {
            if Pin::new(&mut self.inner).start_send(close).is_ok() {
                let _ = Pin::new(&mut self.inner).poll_flush(cx);
            }
        }
    }

    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.writable.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(io_err)?;
        let message = M::binary(self.writable.split().freeze());
        Pin::new(&mut self.inner).start_send(message).map_err(io_err)?;
        Poll::Ready(Ok(()))
    }
}

impl<S, M, E> AsyncWrite for WsByteStream<S, M>
where
    S: Sink<M, Error = E> + Unpin,
    M: WsMessage,
    E: std::fmt::Display,
{
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.writable.len() >= WS_WRITE_COALESCE {
            ready!(self.poll_send_pending(cx))?;
        }
        self.writable.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx).map_err(io_err)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.inner).poll_close(cx).map_err(io_err)
    }
}

/// The close code for a tungstenite read error, from its `Display` text (axum hides the error type, and neither
/// library sends a Close of its own on these errors). I/O errors and resets get none: the connection is gone.
#[cfg(any(feature = "websocket", feature = "axum"))]
fn tungstenite_close_code(error: &str) -> Option<u16> {
    if error.starts_with("Space limit exceeded") {
        Some(CLOSE_MESSAGE_TOO_BIG)
    } else if error.starts_with("UTF-8 encoding error") {
        Some(CLOSE_INVALID_PAYLOAD)
    } else if error.starts_with("WebSocket protocol error") && !error.contains("without closing handshake") {
        Some(CLOSE_PROTOCOL_ERROR)
    } else {
        None
    }
}

#[cfg(feature = "websocket")]
mod tungstenite_support {
    use super::*;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::handshake::client::Request;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    impl WsMessage for Message {
        fn classify(self) -> WsFrame {
            match self {
                Message::Binary(data) => WsFrame::Binary(data),
                Message::Text(_) => WsFrame::Text,
                Message::Close(_) => WsFrame::Close,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => WsFrame::Control,
            }
        }

        fn binary(data: Bytes) -> Self {
            Message::Binary(data)
        }

        fn ping() -> Self {
            Message::Ping(Bytes::new())
        }

        fn close(code: u16, reason: &'static str) -> Option<Self> {
            use tokio_tungstenite::tungstenite::protocol::CloseFrame;
            Some(Message::Close(Some(CloseFrame { code: code.into(), reason: reason.into() })))
        }

        fn close_code_for(error: &str) -> Option<u16> {
            tungstenite_close_code(error)
        }
    }

    pub fn ws_config(max_message_size: usize) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(max_message_size))
            .max_frame_size(Some(max_message_size))
            .read_buffer_size(DEFAULT_WS_READ_BUFFER)
    }

    pub type ClientWs = WsByteStream<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
    pub type ServerWs = WsByteStream<WebSocketStream<TcpStream>, Message>;

    /// Dials a WebSocket the way Coder's agent does: binary, no compression, Nagle off.
    pub async fn connect(request: Request, max_message_size: usize) -> io::Result<ClientWs> {
        let (ws, _response) =
            tokio_tungstenite::connect_async_with_config(request, Some(ws_config(max_message_size)), true)
                .await
                .map_err(io_err)?;
        Ok(WsByteStream::new(ws))
    }

    /// Accepts a WebSocket on an already-accepted TCP connection (tests and tools; the server uses axum).
    pub async fn accept(tcp: TcpStream, max_message_size: usize) -> io::Result<ServerWs> {
        tcp.set_nodelay(true)?;
        let ws = tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config(max_message_size)))
            .await
            .map_err(io_err)?;
        Ok(WsByteStream::new(ws))
    }
}

#[cfg(feature = "axum")]
mod axum_support {
    use super::*;
    use axum::extract::ws::{Message, WebSocket};

    impl WsMessage for Message {
        fn classify(self) -> WsFrame {
            match self {
                Message::Binary(data) => WsFrame::Binary(data),
                Message::Text(_) => WsFrame::Text,
                Message::Close(_) => WsFrame::Close,
                Message::Ping(_) | Message::Pong(_) => WsFrame::Control,
            }
        }

        fn binary(data: Bytes) -> Self {
            Message::Binary(data)
        }

        fn ping() -> Self {
            Message::Ping(Bytes::new())
        }

        fn close(code: u16, reason: &'static str) -> Option<Self> {
            Some(Message::Close(Some(axum::extract::ws::CloseFrame { code, reason: reason.into() })))
        }

        fn close_code_for(error: &str) -> Option<u16> {
            tungstenite_close_code(error)
        }
    }

    /// The byte stream of an upgraded axum WebSocket.
    pub type AxumWs = WsByteStream<WebSocket, Message>;
}

#[cfg(feature = "axum")]
pub use axum_support::AxumWs;

#[cfg(feature = "websocket")]
pub use tungstenite_support::{accept, connect, ws_config, ClientWs, ServerWs};

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Debug, PartialEq)]
    enum Msg {
        Bin(Bytes),
        Text,
        Ping,
        Close,
    }

    impl WsMessage for Msg {
        fn classify(self) -> WsFrame {
            match self {
                Msg::Bin(b) => WsFrame::Binary(b),
                Msg::Text => WsFrame::Text,
                Msg::Ping => WsFrame::Control,
                Msg::Close => WsFrame::Close,
            }
        }
        fn binary(data: Bytes) -> Self {
            Msg::Bin(data)
        }
        fn ping() -> Self {
            Msg::Ping
        }
    }

    struct Pipe {
        rx: mpsc::UnboundedReceiver<Result<Msg, String>>,
        tx: mpsc::UnboundedSender<Msg>,
    }

    impl Stream for Pipe {
        type Item = Result<Msg, String>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Pin::new(&mut self.rx).poll_next(cx)
        }
    }

    impl Sink<Msg> for Pipe {
        type Error = String;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Msg) -> Result<(), String> {
            self.tx.unbounded_send(item).map_err(|e| e.to_string())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
            Poll::Ready(Ok(()))
        }
    }

    type PipeEnds = (WsByteStream<Pipe, Msg>, mpsc::UnboundedSender<Result<Msg, String>>, mpsc::UnboundedReceiver<Msg>);

    fn pipe() -> PipeEnds {
        let (in_tx, in_rx) = mpsc::unbounded();
        let (out_tx, out_rx) = mpsc::unbounded();
        (WsByteStream::new(Pipe { rx: in_rx, tx: out_tx }), in_tx, out_rx)
    }

    #[tokio::test]
    async fn messages_join_into_one_stream_whatever_their_boundaries() {
        let (mut ws, tx, _out) = pipe();
        // A 12-byte header split one byte per message, then body and the next header in one message.
        let header = [0u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3];
        for b in header {
            tx.unbounded_send(Ok(Msg::Bin(Bytes::copy_from_slice(&[b])))).unwrap();
        }
        tx.unbounded_send(Ok(Msg::Ping)).unwrap();
        tx.unbounded_send(Ok(Msg::Bin(Bytes::new()))).unwrap();
        tx.unbounded_send(Ok(Msg::Bin(Bytes::from_static(b"abc\x00\x01")))).unwrap();
        tx.unbounded_send(Ok(Msg::Close)).unwrap();
        let mut all = Vec::new();
        ws.read_to_end(&mut all).await.unwrap();
        let mut expected = header.to_vec();
        expected.extend_from_slice(b"abc\x00\x01");
        assert_eq!(all, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_and_drops_a_silent_peer() {
        let (in_tx, in_rx) = mpsc::unbounded();
        let (out_tx, mut out_rx) = mpsc::unbounded();
        let mut ws: WsByteStream<Pipe, Msg> =
            WsByteStream::with_pings(Pipe { rx: in_rx, tx: out_tx }, DEFAULT_WS_PING_INTERVAL, DEFAULT_WS_PING_TIMEOUT);
        let started = tokio::time::Instant::now();
        // An answering peer: a pong (here any control message) after each ping keeps the stream alive.
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            let result = ws.read(&mut byte).await;
            (result.map(|_| byte[0]), started.elapsed())
        });
        for _ in 0..3 {
            assert_eq!(out_rx.next().await, Some(Msg::Ping));
            in_tx.unbounded_send(Ok(Msg::Ping)).unwrap();
        }
        assert_eq!(started.elapsed(), 3 * DEFAULT_WS_PING_INTERVAL);
        // Then silence: pings go unanswered and the stream fails 30 s after the last thing heard.
        let (result, at) = reader.await.unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(at >= 3 * DEFAULT_WS_PING_INTERVAL + DEFAULT_WS_PING_TIMEOUT, "{at:?}");
        assert!(at <= 3 * DEFAULT_WS_PING_INTERVAL + DEFAULT_WS_PING_TIMEOUT + DEFAULT_WS_PING_INTERVAL, "{at:?}");
    }

    #[tokio::test]
    async fn a_text_message_is_a_protocol_error() {
        let (mut ws, tx, _out) = pipe();
        tx.unbounded_send(Ok(Msg::Text)).unwrap();
        let err = ws.read_u8().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn writes_between_flushes_leave_as_one_binary_message() {
        let (mut ws, _tx, mut out) = pipe();
        ws.write_all(&[0u8; 12]).await.unwrap();
        ws.write_all(b"body").await.unwrap();
        ws.flush().await.unwrap();
        ws.flush().await.unwrap();
        let mut message = [0u8; 16].to_vec();
        message[12..].copy_from_slice(b"body");
        assert_eq!(out.try_recv().unwrap(), Msg::Bin(Bytes::from(message)));
        assert!(out.try_recv().is_err(), "an empty flush sends nothing");
    }
}
