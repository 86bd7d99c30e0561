//! A yamux peer played by hand, for tests that abuse a server byte by byte: it writes whatever frames the test
//! makes (see [`yamux_frames`](super::yamux_frames) and [`drpc_packets`](super::drpc_packets)) and keeps what the
//! server sent, per stream: dRPC bytes, ACK, FIN, RST and our send credit; GoAway codes; pings and pongs; how the
//! connection ended. It never answers pings (a test that wants to sends `pong` itself) and gives window back for
//! what it reads, as a yamux peer must.
//!
//! It runs over any byte transport: an in-memory `tokio::io::duplex`, TCP, the crate's own WebSocket byte stream
//! ([`RawPeer::over`]), or, with the `websocket` feature, a tokio-tungstenite client socket whose messages it sees
//! one by one ([`RawPeer::websocket`]): empty messages, Close codes and WebSocket pings.
//!
//! Every wait ends at [`WAIT`] and then panics saying what it waited for. The peer allocates one 16 KiB read buffer
//! and what the server sends; tests that measure allocation peaks may use it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::time::Instant;

use super::wait::{within, WAIT};
use super::yamux_frames::*;
use crate::wire::{Frame, Kind, Packet, PacketAssembler};

/// hashicorp's and the `yamux` crate's initial stream window.
pub const WINDOW: u64 = 256 * 1024;
/// Bytes asked of the transport per read.
const READ_CHUNK: usize = 16 * 1024;
/// Ping frames kept for [`RawPeer::ping_frames`]; the counters go on past it.
const PING_LOG: usize = 1024;

/// A byte transport the peer can own.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

#[cfg(feature = "websocket")]
type ClientSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

enum Link {
    /// Bytes both ways; one [`RawPeer::send`] is one write and one flush.
    Bytes(Box<dyn Duplex>),
    /// One [`RawPeer::send`] is one binary message.
    #[cfg(feature = "websocket")]
    WebSocket(Box<ClientSocket>),
}

/// What one read brought.
#[cfg_attr(not(feature = "websocket"), allow(dead_code))]
enum Received {
    /// `n` bytes in the read buffer.
    Bytes(usize),
    /// A binary WebSocket message.
    Message(Vec<u8>),
    /// A WebSocket Close frame and its code.
    Close(Option<u16>),
    /// A WebSocket ping (tungstenite answers it on the next read or write).
    WsPing,
    /// Anything else that changes nothing.
    Nothing,
    /// The transport is over.
    End,
}

/// What the server sent on one yamux stream, and our send credit on it.
#[derive(Debug, Default, Clone)]
pub struct StreamView {
    /// Data bodies, concatenated: the server's dRPC bytes.
    pub data: Vec<u8>,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    /// Bytes we may still send: [`WINDOW`] from [`RawPeer::opened`], plus the server's WindowUpdates, less what
    /// [`RawPeer::spend`] and [`RawPeer::send_windowed`] took.
    pub credit: u64,
    /// Bytes received and not yet given back with a WindowUpdate.
    pub ungranted: usize,
}

static NO_STREAM: StreamView =
    StreamView { data: Vec::new(), ack: false, fin: false, rst: false, credit: 0, ungranted: 0 };

/// How the server ended a connection, as the peer saw it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ended {
    /// yamux GoAway codes received.
    pub go_aways: Vec<u32>,
    /// The WebSocket close code received; `None` when the connection closed without a Close frame (and always on
    /// a byte transport).
    pub close: Option<u16>,
}

pub struct RawPeer {
    link: Link,
    chunk: Box<[u8]>,
    inbox: Vec<u8>,
    /// Every stream the server sent something on, or that we [`opened`](RawPeer::opened).
    pub streams: HashMap<u32, StreamView>,
    pub go_aways: Vec<u32>,
    /// yamux Ping frames the server sent without ACK (requests) and with ACK (answers).
    pub pings: usize,
    pub pongs: usize,
    ping_frames: Vec<(u16, u32, u32)>,
    /// WebSocket pings received.
    pub ws_pings: usize,
    /// `Some` once a WebSocket Close frame came, with its code.
    pub close: Option<Option<u16>>,
    /// The transport is over: end of stream, a read error, or the WebSocket closed.
    pub eof: bool,
    /// Bytes written by [`send`](RawPeer::send) and [`try_send`](RawPeer::try_send), window grants not included.
    pub sent: usize,
}

impl RawPeer {
    /// A peer over any byte transport: a `tokio::io::duplex` end, a `TcpStream`, a WebSocket byte stream.
    pub fn over(io: impl Duplex + 'static) -> RawPeer {
        RawPeer::with_link(Link::Bytes(Box::new(io)))
    }

    /// A peer over a new TCP connection to `addr`, Nagle off.
    pub async fn tcp(addr: impl ToSocketAddrs) -> RawPeer {
        let tcp = within("the TCP connection", TcpStream::connect(addr)).await.expect("connect");
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        RawPeer::over(tcp)
    }

    /// A peer over a WebSocket dialed with tokio-tungstenite's defaults (no limits of ours in the way).
    #[cfg(feature = "websocket")]
    pub async fn websocket(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> RawPeer {
        let (ws, _) =
            within("the WebSocket upgrade", tokio_tungstenite::connect_async(request)).await.expect("upgrade");
        RawPeer::over_websocket(ws)
    }

    /// A peer over a tokio-tungstenite client socket: each send is one binary message.
    #[cfg(feature = "websocket")]
    pub fn over_websocket(ws: ClientSocket) -> RawPeer {
        RawPeer::with_link(Link::WebSocket(Box::new(ws)))
    }

    fn with_link(link: Link) -> RawPeer {
        RawPeer {
            link,
            chunk: vec![0u8; READ_CHUNK].into_boxed_slice(),
            inbox: Vec::new(),
            streams: HashMap::new(),
            go_aways: Vec::new(),
            pings: 0,
            pongs: 0,
            ping_frames: Vec::new(),
            ws_pings: 0,
            close: None,
            eof: false,
            sent: 0,
        }
    }

    // -----------------------------------------------------------------------------------------------------------
    // Writing

    /// Writes `bytes` (one write and flush, or one binary message); panics if the server closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) {
        assert!(self.try_send(bytes.to_vec()).await, "the server closed the connection");
    }

    /// Like [`send`](RawPeer::send); `false` when the server has closed the connection.
    pub async fn try_send(&mut self, bytes: Vec<u8>) -> bool {
        let len = bytes.len();
        let sent = self.write(bytes).await;
        if sent {
            self.sent += len;
        }
        sent
    }

    async fn write(&mut self, bytes: Vec<u8>) -> bool {
        match &mut self.link {
            Link::Bytes(io) => within("writing to the server", async {
                io.write_all(&bytes).await?;
                io.flush().await
            })
            .await
            .is_ok(),
            #[cfg(feature = "websocket")]
            Link::WebSocket(ws) => {
                use futures::SinkExt;
                let message = tokio_tungstenite::tungstenite::Message::Binary(bytes.into());
                within("sending a message", ws.send(message)).await.is_ok()
            }
        }
    }

    /// Marks a stream we open: our credit on it starts at one [`WINDOW`].
    pub fn opened(&mut self, stream: u32) {
        self.streams.entry(stream).or_default().credit = WINDOW;
    }

    /// Counts `bytes` of Data we sent on `stream` against our credit.
    pub fn spend(&mut self, stream: u32, bytes: usize) {
        let view = self.streams.entry(stream).or_default();
        view.credit = view.credit.saturating_sub(bytes as u64);
    }

    /// Opens `stream` with `first` as its SYN's body, then sends `body` `repeat` times in Data frames of at most
    /// 16 KiB, as fast as the server's window allows, until everything is out or the server ends the stream or the
    /// connection. Returns the bytes sent on the stream, `first` included.
    pub async fn send_windowed(&mut self, stream: u32, first: &[u8], body: &[u8], repeat: usize) -> usize {
        self.opened(stream);
        self.send(&syn_data(stream, first)).await;
        self.spend(stream, first.len());
        let mut sent = first.len();
        let mut left = repeat;
        let mut offset = 0;
        while left > 0 && !self.view(stream).fin && !self.view(stream).rst && !self.eof {
            let credit = self.view(stream).credit as usize;
            if credit == 0 {
                self.until("window or the end of the stream", |p| {
                    let view = p.view(stream);
                    view.credit > 0 || view.fin || view.rst
                })
                .await;
                continue;
            }
            let take = credit.min(16 * 1024).min(body.len() - offset);
            if !self.try_send(data(stream, &body[offset..offset + take])).await {
                break;
            }
            self.spend(stream, take);
            sent += take;
            offset += take;
            if offset == body.len() {
                offset = 0;
                left -= 1;
            }
        }
        sent
    }

    // -----------------------------------------------------------------------------------------------------------
    // What the server sent

    pub fn view(&self, stream: u32) -> &StreamView {
        self.streams.get(&stream).unwrap_or(&NO_STREAM)
    }

    /// The dRPC packets the server sent on a yamux stream, checked against drpcwire's rules.
    pub fn packets(&self, stream: u32) -> Vec<Packet> {
        let mut buf = BytesMut::from(&self.view(stream).data[..]);
        let mut assembler = PacketAssembler::new(usize::MAX >> 1);
        let mut packets = Vec::new();
        while let Some(frame) = Frame::decode(&mut buf, usize::MAX >> 1).expect("the server sent a bad dRPC frame") {
            if let Some(packet) = assembler.push(frame).expect("the server broke dRPC packet rules") {
                packets.push(packet);
            }
        }
        packets
    }

    /// Whether the server finished an answer on yamux stream `stream`: a CloseSend or an Error.
    pub fn answered(&self, stream: u32) -> bool {
        self.packets(stream).iter().any(|p| matches!(p.kind, Kind::CloseSend | Kind::Error))
    }

    /// Whether the server finished its answer to dRPC stream `drpc_stream` on yamux stream `stream`.
    pub fn answered_on(&self, stream: u32, drpc_stream: u64) -> bool {
        self.packets(stream)
            .iter()
            .any(|p| p.id.stream == drpc_stream && matches!(p.kind, Kind::CloseSend | Kind::Error))
    }

    /// The first [`PING_LOG`] Ping frames from the server, as (flags, stream, opaque).
    pub fn ping_frames(&self) -> &[(u16, u32, u32)] {
        &self.ping_frames
    }

    /// Whether the server sent a Ping with exactly `flags` and `opaque` on stream 0.
    pub fn has_ping(&self, flags: u16, opaque: u32) -> bool {
        self.ping_frames.contains(&(flags, 0, opaque))
    }

    // -----------------------------------------------------------------------------------------------------------
    // Reading

    /// One read from the transport. Cancel-safe: nothing is applied until the read is complete.
    async fn receive(&mut self) -> Received {
        match &mut self.link {
            Link::Bytes(io) => match io.read(&mut self.chunk).await {
                Ok(0) | Err(_) => Received::End,
                Ok(n) => Received::Bytes(n),
            },
            #[cfg(feature = "websocket")]
            Link::WebSocket(ws) => {
                use futures::StreamExt;
                use tokio_tungstenite::tungstenite::Message;
                match ws.next().await {
                    Some(Ok(Message::Binary(data))) => Received::Message(data.to_vec()),
                    Some(Ok(Message::Close(frame))) => Received::Close(frame.map(|f| u16::from(f.code))),
                    Some(Ok(Message::Ping(_))) => Received::WsPing,
                    Some(Ok(_)) => Received::Nothing,
                    Some(Err(_)) | None => Received::End,
                }
            }
        }
    }

    /// Applies what a read brought, then gives window back for streams half read. `false` at the end.
    async fn absorb(&mut self, received: Received) -> bool {
        match received {
            Received::Bytes(n) => self.inbox.extend_from_slice(&self.chunk[..n]),
            Received::Message(bytes) => self.inbox.extend_from_slice(&bytes),
            Received::Close(code) => {
                self.close = Some(code);
                return true;
            }
            Received::WsPing => {
                self.ws_pings += 1;
                return true;
            }
            Received::Nothing => return true,
            Received::End => {
                self.eof = true;
                return false;
            }
        }
        for frame in parse_frames(&mut self.inbox) {
            self.apply(frame);
        }
        let grants: Vec<(u32, usize)> = self
            .streams
            .iter_mut()
            .filter(|(_, v)| v.ungranted as u64 >= WINDOW / 2 && !v.fin && !v.rst)
            .map(|(id, v)| (*id, std::mem::take(&mut v.ungranted)))
            .collect();
        for (stream, delta) in grants {
            // The stream may be gone by now; a failed grant changes nothing.
            let _ = self.write(window_update(0, stream, delta as u32)).await;
        }
        true
    }

    fn apply(&mut self, frame: YamuxFrame) {
        match frame.kind {
            TYPE_GO_AWAY => self.go_aways.push(frame.length),
            TYPE_PING => {
                if frame.has(FLAG_ACK) {
                    self.pongs += 1;
                } else {
                    self.pings += 1;
                }
                if self.ping_frames.len() < PING_LOG {
                    self.ping_frames.push((frame.flags, frame.stream, frame.length));
                }
            }
            TYPE_DATA | TYPE_WINDOW_UPDATE => {
                let view = self.streams.entry(frame.stream).or_default();
                view.ack |= frame.has(FLAG_ACK);
                view.fin |= frame.has(FLAG_FIN);
                view.rst |= frame.has(FLAG_RST);
                if frame.kind == TYPE_DATA {
                    view.ungranted += frame.body.len();
                    view.data.extend_from_slice(&frame.body);
                } else {
                    view.credit += u64::from(frame.length);
                }
            }
            other => panic!("the server sent yamux frame type {other}"),
        }
    }

    /// Reads once and applies what came. `false` once the connection is over.
    pub async fn read_more(&mut self) -> bool {
        let received = self.receive().await;
        self.absorb(received).await
    }

    /// Like [`read_more`](RawPeer::read_more), giving up at `deadline`: `None` if nothing came by then.
    pub async fn read_until(&mut self, deadline: Instant) -> Option<bool> {
        let received = tokio::time::timeout_at(deadline, self.receive()).await.ok()?;
        Some(self.absorb(received).await)
    }

    /// Reads until `done` holds; panics naming `what` if the connection ends first or [`WAIT`] passes.
    pub async fn until(&mut self, what: &str, done: impl Fn(&RawPeer) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(!self.eof, "the server closed the connection before {what}; GoAway {:?}", self.go_aways);
            if self.read_until(deadline).await.is_none() {
                panic!("timed out after {WAIT:?} waiting for {what}");
            }
        }
    }

    /// Reads whatever comes within `quiet`; returns early at the end of the connection.
    pub async fn settle(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        while !self.eof {
            if self.read_until(deadline).await.is_none() {
                return;
            }
        }
    }

    /// Keeps reading until a condition outside the peer holds (a handler count, a metric); panics naming `what`
    /// after [`WAIT`].
    pub async fn settle_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
            self.settle(Duration::from_millis(10)).await;
        }
    }

    /// Reads until the server closes the connection.
    pub async fn until_eof(&mut self, what: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.eof {
            if self.read_until(deadline).await.is_none() {
                panic!("timed out after {WAIT:?} waiting for {what}");
            }
        }
    }

    /// Reads to the end of the connection and says how it ended.
    pub async fn ended(&mut self) -> Ended {
        self.until_eof("the server to end the session").await;
        Ended { go_aways: self.go_aways.clone(), close: self.close.flatten() }
    }

    /// The first GoAway's code.
    pub async fn until_go_away(&mut self) -> u32 {
        self.until("a GoAway", |p| !p.go_aways.is_empty()).await;
        self.go_aways[0]
    }

    pub async fn until_fin(&mut self, stream: u32) {
        self.until(&format!("the server's FIN on stream {stream}"), |p| p.view(stream).fin).await;
    }

    pub async fn until_answered(&mut self, stream: u32) {
        self.until(&format!("the answer on stream {stream}"), |p| p.answered(stream)).await;
    }

    pub async fn until_answered_on(&mut self, stream: u32, drpc_stream: u64) {
        let what = format!("the answer on yamux stream {stream}, dRPC stream {drpc_stream}");
        self.until(&what, |p| p.answered_on(stream, drpc_stream)).await;
    }

    // -----------------------------------------------------------------------------------------------------------
    // Whole exchanges

    /// A well-behaved call on a new yamux stream: SYN carrying `request` (dRPC bytes) in one frame, the answer,
    /// then our FIN and the server's. Returns the packets the server sent on the stream.
    pub async fn call(&mut self, stream: u32, request: &[u8]) -> Vec<Packet> {
        self.opened(stream);
        self.send(&syn_data(stream, request)).await;
        self.until_answered(stream).await;
        self.send(&fin(stream)).await;
        self.until_fin(stream).await;
        self.packets(stream)
    }

    /// The server ended the stream the way Go's drpc ends a connection after a protocol error: no dRPC packet (no
    /// Error packet either), a FIN and no RST.
    pub async fn assert_stream_dropped_without_reply(&mut self, stream: u32) {
        self.until_fin(stream).await;
        let kinds: Vec<Kind> = self.packets(stream).iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [], "the server answered on stream {stream}");
        assert!(!self.view(stream).rst, "stream {stream} was reset, not closed");
    }
}
