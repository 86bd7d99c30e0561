//! Limits and hardening through the real server: anchors.md §4.4's bad-input cases lifted from the transport
//! (`transport/tests/bad_input.rs` plays them over an in-memory pipe) to the endpoint a Coder agent dials, over
//! real loopback sockets: HTTP upgrade, WebSocket, yamux, dRPC, protobuf, handlers.
//!
//! Every case asserts four things:
//! - the abusing session ends with a defined outcome (an HTTP status before the upgrade, a WebSocket close code, a
//!   yamux GoAway code, a stream FIN without a reply, a dRPC error text), or goes on working where it should;
//! - a session opened before the abuse keeps working during and after it ([`Env::bystander`]);
//! - a fresh, well-behaved session on the same server completes GetManifest afterwards;
//! - memory stays bounded: this binary counts every allocation ([`Counting`]) and the abuse may move the peak only
//!   by a stated bound.
//!
//! The tests take turns (one lock): allocation peaks are per process. Timeouts are configured short so the file
//! runs in seconds; waits on the peer side end at [`WAIT`], a hang guard only: no assertion depends on timing. The
//! raw agent is the transport's test kit peer (`agentwire_transport::testing::raw_peer`); the allocation counter stays
//! here, in the test binary.
//!
//! Over 600 lines: one case per anchors.md §4.4 item, sharing one environment and one counting allocator, which a
//! test binary can have only one of.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentwire::proto::agent::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire_store::{CreatedAgent, Store, StoreOptions};
use agentwire_transport::budget::DEFAULT_SESSION_GUARANTEED_MEMORY;
use agentwire_transport::testing::drpc_packets::{drpc_frame, packet, unary_on};
use agentwire_transport::testing::raw_peer::{Ended, RawPeer};
use agentwire_transport::testing::wait::{eventually, within, WAIT};
use agentwire_transport::testing::yamux_frames::*;
use agentwire_transport::wire::{encode_metadata, Kind, Metadata};
use common::server::{agent_with_rows, connect, start, TestServer};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GET_MANIFEST: &str = "/coder.agent.v2.Agent/GetManifest";

// ---------------------------------------------------------------------------------------------------------------
// Allocation accounting: current and peak bytes of the whole process

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The peak of allocated bytes from now on, relative to what is allocated now.
struct PeakWatch {
    base: usize,
}

impl PeakWatch {
    fn start() -> Self {
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        PeakWatch { base }
    }

    fn growth(&self) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(self.base)
    }

    fn assert_under(&self, bound: usize, what: &str) {
        let growth = self.growth();
        assert!(growth <= bound, "{what}: the allocation peak grew by {growth} bytes, over the bound of {bound}");
    }
}

/// One test at a time: allocation peaks are the whole process's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------------------------
// The server, an abuser's agent, and a bystander session opened before any abuse

struct Env {
    server: TestServer,
    abuser: CreatedAgent,
    fresh: CreatedAgent,
    bystander: pb::AgentClient,
    _dir: tempfile::TempDir,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Env {
    async fn start() -> Env {
        Env::with(ServeConfig::default()).await
    }

    async fn with(config: ServeConfig) -> Env {
        let serial = SERIAL.lock().await;
        // A file, not `sqlite::memory:`: an in-memory database lives on one pooled connection, and calls the
        // abuse cancels mid-query can cost that connection (and with it every table).
        let dir = tempfile::Builder::new().prefix("agentwire-hardening-").tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("agentwire.db").display());
        let store = Store::open(&url, StoreOptions::default()).await.unwrap();
        let abuser = agent_with_rows(&store, "abuser").await;
        let bystander = agent_with_rows(&store, "bystander").await;
        let fresh = agent_with_rows(&store, "fresh").await;
        let server = start(store, config).await;
        let bystander = pb::AgentClient::new(connect(&server, bystander.auth_token).await);
        let manifest = within("the bystander's first call", bystander.get_manifest(&pb::GetManifestRequest {}))
            .await
            .expect("the bystander's first call");
        assert_eq!(manifest.workspace_name, "bystander-ws");
        Env { server, abuser, fresh, bystander, _dir: dir, _serial: serial }
    }

    fn token(&self) -> String {
        self.abuser.auth_token.to_string()
    }

    /// The session opened before the abuse still answers.
    async fn assert_bystander_works(&self) {
        let manifest =
            within("a call on the bystander session", self.bystander.get_manifest(&pb::GetManifestRequest {}))
                .await
                .expect("the bystander session failed");
        assert_eq!(manifest.workspace_name, "bystander-ws");
    }

    /// The server survived: the bystander still answers and a new session completes GetManifest.
    async fn assert_survived(&self) {
        self.assert_bystander_works().await;
        let fresh = pb::AgentClient::new(within("a fresh session", connect(&self.server, self.fresh.auth_token)).await);
        let manifest = within("GetManifest on a fresh session", fresh.get_manifest(&pb::GetManifestRequest {}))
            .await
            .expect("GetManifest on a fresh session");
        assert_eq!(manifest.workspace_name, "fresh-ws");
    }

    /// Waits until the server holds exactly `n` agent sessions.
    async fn until_sessions(&self, n: i64, what: &str) {
        eventually(what, || self.server.state.metrics().sessions_active() == n).await;
    }

    async fn finish(self) {
        self.assert_survived().await;
        self.server.state.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// dRPC bytes

fn manifest_call() -> Vec<u8> {
    unary_on(1, GET_MANIFEST, &pb::GetManifestRequest {}.encode_to_vec())
}

// ---------------------------------------------------------------------------------------------------------------
// An agent that writes yamux frames by hand: the test kit's raw peer, over a real WebSocket (tokio-tungstenite) or
// the plain-TCP yamux listener

/// The abuser's agent over the agent endpoint's WebSocket.
async fn connect_raw(env: &Env) -> RawPeer {
    let mut request = env.server.rpc_url("2.10").into_client_request().unwrap();
    request.headers_mut().insert("Coder-Session-Token", env.token().parse().unwrap());
    RawPeer::websocket(request).await
}

/// The abuser's agent over `serve_tcp`: yamux straight on a TCP socket, no WebSocket.
async fn connect_raw_tcp(env: &Env) -> RawPeer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(agentwire::server::serve_tcp(env.server.state.clone(), listener, env.token()));
    RawPeer::tcp(addr).await
}

/// What this suite asserts of the abuser's own calls.
trait AbuserCalls {
    fn assert_manifest_on(&self, stream: u32);
    async fn assert_call_works(&mut self, stream: u32);
}

impl AbuserCalls for RawPeer {
    /// The stream's reply is a manifest of the abuser's workspace.
    fn assert_manifest_on(&self, stream: u32) {
        let packets = self.packets(stream);
        let kinds: Vec<Kind> = packets.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [Kind::Message, Kind::CloseSend], "on stream {stream}");
        let manifest = pb::Manifest::decode(&packets[0].data[..]).expect("a manifest");
        assert_eq!(manifest.workspace_name, "abuser-ws");
    }

    /// A well-behaved GetManifest on a new stream of this session.
    async fn assert_call_works(&mut self, stream: u32) {
        self.call(stream, &manifest_call()).await;
        self.assert_manifest_on(stream);
        assert!(!self.view(stream).rst, "stream {stream} was reset");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A WebSocket client by hand over raw TCP, for abuse below yamux

/// A client frame: FIN, RSV bits, opcode, then the payload masked with `mask` (or unmasked).
fn ws_frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = ws_header(fin, rsv, opcode, mask, payload.len() as u64);
    match mask {
        Some(key) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4])),
        None => out.extend_from_slice(payload),
    }
    out
}

/// Only the header of a client frame declaring `len` payload bytes.
fn ws_header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let masked = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(masked | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(masked | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(masked | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

const MASK: Option<[u8; 4]> = Some([0x12, 0x34, 0x56, 0x78]);
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;

#[derive(Debug, PartialEq, Eq)]
enum WsEvent {
    Data(u8, Vec<u8>),
    Close(Option<u16>),
    Eof,
}

fn upgrade_request(path: &str, token: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Coder-Session-Token: {token}\r\n{extra}\r\n"
    )
}

const RPC_PATH: &str = "/api/v2/workspaceagents/me/rpc?version=2.10";

/// Reads an HTTP response head; returns the status code (0 if the connection closed first).
async fn read_status(tcp: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match within("an HTTP response", tcp.read(&mut byte)).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head);
    head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

struct RawWs {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    async fn upgrade(env: &Env) -> RawWs {
        let mut tcp = TcpStream::connect(env.server.addr).await.unwrap();
        tcp.write_all(upgrade_request(RPC_PATH, &env.token(), "").as_bytes()).await.unwrap();
        assert_eq!(read_status(&mut tcp).await, 101, "the upgrade was refused");
        RawWs { tcp, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        within("writing to the server", self.tcp.write_all(bytes)).await.expect("the server closed the connection");
    }

    /// The next frame from the server (unmasked, as servers send).
    async fn next(&mut self) -> WsEvent {
        loop {
            if let Some((event, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return event;
            }
            let mut chunk = [0u8; 16 * KIB];
            match within("a frame from the server", self.tcp.read(&mut chunk)).await {
                Ok(0) | Err(_) => return WsEvent::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the server's Close frame or the end of the connection: the close code, `None` if there was no
    /// Close frame.
    async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next().await {
                WsEvent::Close(code) => return code,
                WsEvent::Eof => return None,
                WsEvent::Data(..) => {}
            }
        }
    }
}

fn parse_server_frame(buf: &[u8]) -> Option<(WsEvent, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    assert_eq!(buf[1] & 0x80, 0, "the server masked a frame");
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    let event = if opcode == OP_CLOSE {
        WsEvent::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])))
    } else {
        WsEvent::Data(opcode, payload)
    };
    Some((event, at))
}

/// A WebSocket-level case: the abuse `bytes` on a fresh upgraded connection ends it with Close(`code`).
async fn assert_ws_closed_with(env: &Env, bytes: &[u8], code: u16, what: &str) {
    let mut ws = RawWs::upgrade(env).await;
    ws.send(bytes).await;
    assert_eq!(ws.closed().await, Some(code), "{what}");
}

// ===============================================================================================================
// WebSocket layer (§4.4 items 1, 2, 3, 5)

/// §4.4 item 1: a text message on the binary stream. coder/websocket's `NetConn` closes with 1003 (unsupported
/// data); so do we, and the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_text_message_is_closed_with_1003() {
    let env = Env::start().await;
    let watch = PeakWatch::start();
    assert_ws_closed_with(&env, &ws_frame(true, 0, OP_TEXT, MASK, b"hello"), 1003, "a text message").await;
    env.until_sessions(1, "the text-speaking session to end").await;
    watch.assert_under(MIB, "a text message");
    env.finish().await;
}

/// §4.4 item 1: an unmasked client frame (RFC 6455 requires the mask) and frames with each RSV bit set (no
/// extension was negotiated): protocol error, Close 1002.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_unmasked_frames_and_rsv_bits_are_closed_with_1002() {
    let env = Env::start().await;
    let watch = PeakWatch::start();
    let hello = syn(1);
    assert_ws_closed_with(&env, &ws_frame(true, 0, OP_BINARY, None, &hello), 1002, "an unmasked frame").await;
    for rsv in [0b100, 0b010, 0b001] {
        let bytes = ws_frame(true, rsv, OP_BINARY, MASK, &hello);
        assert_ws_closed_with(&env, &bytes, 1002, &format!("RSV bits {rsv:03b}")).await;
        env.assert_bystander_works().await;
    }
    env.until_sessions(1, "the abusive sessions to end").await;
    watch.assert_under(MIB, "bad frames");
    env.finish().await;
}

/// §4.4 item 1: binary messages of 0 bytes between (and inside) the frames of a call change nothing: the call is
/// served and the session stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_empty_binary_messages_are_ignored() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    agent.opened(1);
    let call = syn_data(1, &manifest_call());
    agent.send(&[]).await;
    agent.send(&call[..5]).await;
    agent.send(&[]).await;
    agent.send(&call[5..]).await;
    agent.send(&[]).await;
    agent.until_answered(1).await;
    agent.assert_manifest_on(1);
    agent.assert_call_works(3).await;
    env.finish().await;
}

/// §4.4 item 2: a frame header declaring 2^63−1 bytes. Refused from the header (Close 1009, message too big): no
/// allocation of the declared size, nothing waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_length_header_of_2_pow_63_is_refused_from_the_header() {
    let env = Env::start().await;
    let watch = PeakWatch::start();
    let header = ws_header(true, 0, OP_BINARY, MASK, (1u64 << 63) - 1);
    assert_ws_closed_with(&env, &header, 1009, "a 2^63−1 length header").await;
    watch.assert_under(MIB, "a 2^63−1 length header");
    env.finish().await;
}

/// §4.4 item 2: a 64 MiB message, as one frame and as 64 KiB fragments. Refused at `max_ws_message_size` (1 MiB)
/// with Close 1009; the server buffers at most the cap, so the allocation peak moves by a few MiB, not 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_64_mib_message_is_refused_at_the_cap() {
    let env = Env::start().await;
    assert_eq!(ServeConfig::default().max_ws_message_size, MIB);
    let chunk = vec![0u8; 64 * KIB];
    // A zero mask key leaves the payload as is, so one buffer serves every fragment.
    let zero_mask = Some([0u8; 4]);
    let fragment = |first: bool, last: bool| {
        let mut f = ws_header(last, 0, if first { OP_BINARY } else { 0 }, zero_mask, chunk.len() as u64);
        f.extend_from_slice(&chunk);
        f
    };
    let (first, middle) = (fragment(true, false), fragment(false, false));
    let watch = PeakWatch::start();
    for fragmented in [false, true] {
        let ws = RawWs::upgrade(&env).await;
        let (mut read, mut write) = ws.tcp.into_split();
        let (first, middle) = (first.clone(), middle.clone());
        let header = ws_header(true, 0, OP_BINARY, zero_mask, 64 * MIB as u64);
        let chunk = chunk.clone();
        // The writer goes on until the server stops reading (the socket errors) or 64 MiB are out.
        let writer = tokio::spawn(async move {
            let mut sent = 0;
            if fragmented {
                write.write_all(&first).await?;
                for _ in 1..1024 {
                    write.write_all(&middle).await?;
                    sent += middle.len();
                }
            } else {
                write.write_all(&header).await?;
                for _ in 0..1024 {
                    write.write_all(&chunk).await?;
                    sent += chunk.len();
                }
            }
            std::io::Result::Ok(sent)
        });
        let mut buf = Vec::new();
        let mut close = None;
        within("the server's Close", async {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some((event, used)) = parse_server_frame(&buf) {
                    buf.drain(..used);
                    match event {
                        WsEvent::Close(code) => {
                            close = code;
                            break;
                        }
                        _ => continue,
                    }
                }
                match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        assert_eq!(close, Some(1009), "a 64 MiB message (fragmented: {fragmented})");
        let _ = within("the writer to stop", writer).await;
        env.assert_bystander_works().await;
    }
    watch.assert_under(8 * MIB, "two 64 MiB messages");
    env.finish().await;
}

/// §4.4 item 3: every yamux byte of a GetManifest call in its own 1-byte WebSocket message: message boundaries
/// mean nothing, the call is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_frames_split_into_one_byte_messages_are_served() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    agent.opened(1);
    let mut bytes = syn(1);
    bytes.extend(data(1, &manifest_call()));
    for byte in bytes {
        agent.send(&[byte]).await;
    }
    agent.until_answered(1).await;
    agent.assert_manifest_on(1);
    env.finish().await;
}

/// §4.4 item 3: several whole frames, and two whole calls with their FINs, in one WebSocket message: all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_yamux_frames_in_one_message_are_served() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    let mut bytes = Vec::new();
    for id in [1u32, 3] {
        agent.opened(id);
        bytes.extend(syn(id));
        bytes.extend(data(id, &manifest_call()));
    }
    agent.send(&bytes).await;
    for id in [1, 3] {
        agent.until_answered(id).await;
        agent.assert_manifest_on(id);
    }
    agent.send(&[fin(1), fin(3)].concat()).await;
    agent.until("both FINs", |a| a.view(1).fin && a.view(3).fin).await;
    env.finish().await;
}

/// §4.4 item 5: a ping flood at the WebSocket level from a client that never reads. Each ping obliges a pong; the
/// server queues at most `max_ws_write_buffer` of them (then keeps only the latest), so 64 MiB of pings move the
/// allocation peak by a few MiB. The session stays up and serves a call afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_ping_flood_while_not_reading_queues_bounded_pongs() {
    let env = Env::start().await;
    assert_eq!(agentwire::server::DEFAULT_MAX_WS_WRITE_BUFFER, MIB);
    let ping = ws_frame(true, 0, OP_PING, MASK, &[0x5a; 125]);
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 8_000).collect();
    let ws = RawWs::upgrade(&env).await;
    let watch = PeakWatch::start();
    let (mut read, mut write) = ws.tcp.into_split();
    let flood = 64 * MIB / burst.len();
    within("the ping flood", async {
        for _ in 0..flood {
            write.write_all(&burst).await.expect("the server closed during the ping flood");
        }
    })
    .await;
    env.assert_bystander_works().await;
    // Drain what was queued (far fewer pongs than pings), then a GetManifest call on the same connection is served.
    let mut call = syn(1);
    call.extend(data(1, &manifest_call()));
    write.write_all(&ws_frame(true, 0, OP_BINARY, MASK, &call)).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * KIB];
    let mut yamux = Vec::new();
    let mut pongs = 0usize;
    let mut answered = false;
    within("the pongs and the answer", async {
        while !answered {
            while let Some((event, used)) = parse_server_frame(&buf) {
                buf.drain(..used);
                match event {
                    WsEvent::Data(0xA, _) => pongs += 1,
                    WsEvent::Data(OP_BINARY, bytes) => {
                        yamux.extend_from_slice(&bytes);
                        answered |= parse_frames(&mut yamux).iter().any(|f| f.stream == 1 && f.kind == TYPE_DATA);
                    }
                    other => panic!("{other:?} after the ping flood"),
                }
            }
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => panic!("the connection ended after the ping flood"),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let pings = flood * 8_000;
    assert!(pongs < pings, "{pongs} pongs for {pings} pings: every pong was queued");
    watch.assert_under(8 * MIB, "64 MiB of pings without reading");
    env.finish().await;
}

/// §4.4 item 5: a Close frame with a code no endpoint may send (999, and 1005 which is reserved for "no code"):
/// answered with Close 1002, protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_close_with_an_invalid_code_is_answered_with_1002() {
    let env = Env::start().await;
    for code in [999u16, 1005] {
        let close = ws_frame(true, 0, OP_CLOSE, MASK, &code.to_be_bytes());
        assert_ws_closed_with(&env, &close, 1002, &format!("close code {code}")).await;
    }
    env.until_sessions(1, "the closed sessions to end").await;
    env.finish().await;
}

// ===============================================================================================================
// Before the upgrade (§4.4 items 4, 31)

/// §4.4 item 4: upgrade requests with 1 MiB of headers, and with 200 headers. hyper refuses both with 431 before
/// any handler runs; the buffer it reads into is capped, so the peak moves by well under the 1 MiB sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_upgrade_headers_are_refused_with_431() {
    let env = Env::start().await;
    let big = format!("X-Padding: {}\r\n", "a".repeat(MIB));
    let many: String = (0..200).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let requests = [upgrade_request(RPC_PATH, &env.token(), &big), upgrade_request(RPC_PATH, &env.token(), &many)];
    let watch = PeakWatch::start();
    for request in &requests {
        let mut tcp = TcpStream::connect(env.server.addr).await.unwrap();
        let (mut read, mut write) = tcp.split();
        // The server answers before it has read everything; the rest of the write may fail.
        let (status, _) = tokio::join!(
            async {
                let mut head = [0u8; 12];
                within("the 431", read.read_exact(&mut head)).await.map(|_| head)
            },
            write.write_all(request.as_bytes())
        );
        let head = status.expect("a response");
        assert_eq!(&head[..], b"HTTP/1.1 431", "{}", String::from_utf8_lossy(&head));
    }
    watch.assert_under(2 * MIB, "oversized upgrade headers");
    assert_eq!(env.server.state.metrics().sessions_active(), 1);
    env.finish().await;
}

/// §4.4 item 4: slowloris. A client dribbling its upgrade request one byte at a time, and one that connects and
/// says nothing, are dropped once `handshake_timeout` passes (here 300 ms; 30 s by default, flag
/// `--handshake-timeout`): the connection closes long before the request could be complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_upgrade_is_dropped_after_the_handshake_timeout() {
    assert_eq!(agentwire::server::DEFAULT_HANDSHAKE_TIMEOUT, Duration::from_secs(30));
    assert_eq!(ServeConfig::default().handshake_timeout, Duration::from_secs(30));
    let env = Env::with(ServeConfig { handshake_timeout: Duration::from_millis(300), ..ServeConfig::default() }).await;
    let request = upgrade_request(RPC_PATH, &env.token(), "");
    let mut dribbler = TcpStream::connect(env.server.addr).await.unwrap();
    let mut silent = TcpStream::connect(env.server.addr).await.unwrap();
    let mut sent = 0;
    within("the server to drop the dribbler", async {
        for byte in request.as_bytes() {
            if dribbler.write_all(&[*byte]).await.is_err() {
                return;
            }
            sent += 1;
            // The server closing shows as EOF on our read side.
            let mut probe = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(50), dribbler.read(&mut probe)).await
            {
                return;
            }
        }
    })
    .await;
    assert!(sent < request.len(), "the whole request went out one byte at a time and was still being read");
    env.assert_bystander_works().await;
    let mut probe = [0u8; 1];
    let n = within("the server to drop the silent client", silent.read(&mut probe)).await.unwrap_or(0);
    assert_eq!(n, 0, "the silent client got a response");
    env.finish().await;
}

/// §4.4 item 31: the token of a deleted workspace is refused before the upgrade (401, coderd's text), and so is the
/// token of an agent whose build is no longer the latest (coderd v2.30's lookup finds no row for it either). No
/// session is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_deleted_workspaces_and_stale_builds_are_refused_before_the_upgrade() {
    let env = Env::start().await;
    let store = env.server.store.clone();
    let stale = agent_with_rows(&store, "stale").await;
    let stale_resolved = store.resolve_agent_by_token(&stale.auth_token.to_string()).await.unwrap().unwrap();
    store
        .admin()
        .create_build(stale_resolved.workspace_id, "start", agentwire_store::JobState::Succeeded)
        .await
        .unwrap();
    let resolved = store.resolve_agent_by_token(&env.token()).await.unwrap().unwrap();
    store.admin().delete_workspace(resolved.workspace_id).await.unwrap();
    for (token, status) in [(env.token(), 401), (stale.auth_token.to_string(), 401)] {
        let mut tcp = TcpStream::connect(env.server.addr).await.unwrap();
        tcp.write_all(upgrade_request(RPC_PATH, &token, "").as_bytes()).await.unwrap();
        assert_eq!(read_status(&mut tcp).await, status);
    }
    assert_eq!(env.server.state.metrics().sessions_active(), 1, "only the bystander");
    env.finish().await;
}

// ===============================================================================================================
// yamux layer (§4.4 items 6–19)

/// §4.4 item 6: version 1, and frame types 4 and 255. hashicorp ends the session without a GoAway
/// (`ErrInvalidVersion`); the crate does the same, and the WebSocket closes under it without a Close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_bad_version_or_type_ends_the_session() {
    let env = Env::start().await;
    let watch = PeakWatch::start();
    let cases =
        [encode(1, TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0, &[]), encode(0, 4, 0, 1, 0, &[]), encode(0, 255, 0, 0, 0, &[])];
    for bytes in cases {
        let mut agent = connect_raw(&env).await;
        agent.assert_call_works(1).await;
        agent.send(&bytes).await;
        assert_eq!(agent.ended().await, Ended::default(), "{bytes:?}");
        env.assert_bystander_works().await;
    }
    env.until_sessions(1, "the abusive sessions to end").await;
    watch.assert_under(2 * MIB, "bad yamux headers");
    env.finish().await;
}

/// §4.4 item 7: Data one byte past the 256 KiB window ⇒ GoAway(1, protocol error) and the session ends (Go's
/// behaviour); a Data header declaring 2^32−1 bytes fails from the header alone, with nothing allocated for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_window_overflow_is_a_protocol_error_and_huge_lengths_allocate_nothing() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    agent.opened(1);
    agent.send(&syn(1)).await;
    agent.send(&data(1, &vec![0u8; 256 * KIB + 1])).await;
    assert_eq!(agent.ended().await.go_aways, [1]);

    let watch = PeakWatch::start();
    let mut agent = connect_raw(&env).await;
    agent.opened(1);
    let mut bytes = syn(1);
    bytes.extend(encode(0, TYPE_DATA, 0, 1, u32::MAX, &[]));
    agent.send(&bytes).await;
    assert_eq!(agent.ended().await, Ended::default(), "a 2^32−1 Data length");
    watch.assert_under(MIB, "a 2^32−1 Data length");
    env.finish().await;
}

/// §4.4 item 8 (CVE-2026-32314): SYN with a body of 256 KiB + 1 ⇒ GoAway(1), no stream, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_syn_body_past_the_window_is_refused() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    agent.send(&syn_data(1, &vec![0u8; 256 * KIB + 1])).await;
    assert_eq!(agent.ended().await.go_aways, [1]);
    assert!(!agent.streams.contains_key(&1));
    env.finish().await;
}

/// §4.4 item 9 (CVE-2026-31814): two WindowUpdates of 0xFFFF0000 overflow the send window: GoAway(1), no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_window_update_overflow_is_a_protocol_error() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    let mut bytes = syn(1);
    bytes.extend(window_update(0, 1, 0xFFFF_0000));
    bytes.extend(window_update(0, 1, 0xFFFF_0000));
    agent.send(&bytes).await;
    assert_eq!(agent.ended().await.go_aways, [1]);
    env.finish().await;
}

/// §4.4 item 10: a duplicate SYN for a live stream, SYN on stream 0 and an even (server-parity) id each end the
/// session with GoAway(1); a lower id than an earlier one is served (neither Go nor the crate orders ids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_duplicate_zero_and_even_stream_ids() {
    let env = Env::start().await;
    let cases = [[syn(1), syn(1)].concat(), syn(0), syn_data(2, &manifest_call())];
    for bytes in cases {
        let mut agent = connect_raw(&env).await;
        agent.send(&bytes).await;
        let ended = agent.ended().await;
        assert_eq!(ended.go_aways, [1], "{bytes:?}");
        assert!(!agent.streams.contains_key(&0) && !agent.streams.contains_key(&2));
        env.assert_bystander_works().await;
    }
    let mut agent = connect_raw(&env).await;
    agent.assert_call_works(9).await;
    agent.assert_call_works(3).await;
    assert!(agent.go_aways.is_empty());
    env.finish().await;
}

/// §4.4 item 11: frames for streams that never existed: the Data body (holding what would be a GoAway and a SYN if
/// the server lost frame sync) is drained, WindowUpdate/ACK/FIN/RST are ignored; the next call works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_frames_for_unknown_streams_are_drained() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    let mut decoy = go_away(0);
    decoy.extend(syn_data(1, &manifest_call()));
    let mut bytes = data(7, &decoy);
    bytes.extend(window_update(0, 11, 1000));
    bytes.extend(window_update(FLAG_ACK, 13, 0));
    bytes.extend(fin(15));
    bytes.extend(rst(17));
    agent.send(&bytes).await;
    agent.assert_call_works(1).await;
    assert!(agent.go_aways.is_empty(), "{:?}", agent.go_aways);
    for id in [7, 11, 13, 15, 17] {
        assert!(!agent.streams.contains_key(&id), "the server answered on unknown stream {id}");
    }
    env.finish().await;
}

/// §4.4 item 12: 300 SYNs in one message, past hashicorp's 256 accept backlog: the server accepts them as they
/// come (its cap is `max_streams`, 512), so every one is served and none reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_burst_past_the_go_accept_backlog_is_served() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    let ids: Vec<u32> = (0..300).map(|i| 2 * i + 1).collect();
    let mut bytes = Vec::new();
    for &id in &ids {
        agent.opened(id);
        bytes.extend(syn_data(id, &manifest_call()));
    }
    agent.send(&bytes).await;
    agent.until("300 answers", |a| ids.iter().all(|&id| a.answered(id))).await;
    for &id in &ids {
        agent.assert_manifest_on(id);
        assert!(!agent.view(id).rst);
    }
    env.finish().await;
}

/// §4.4 item 13: 10,000 SYNs from one agent (hashicorp's WindowUpdate opens), streams left open. The first
/// `max_streams` (512 by default, flag `--max-streams-per-session`) are accepted; the next one ends the session
/// with GoAway(1) (the crate refuses the session where hashicorp would RST the stream; a SYN on a Data frame gets
/// GoAway(2), see `bad_input.rs`). Memory stays bounded by the cap, not the SYN count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_ten_thousand_streams_are_refused_past_the_cap() {
    let env = Env::start().await;
    assert_eq!(agentwire_transport::io::yamux::DEFAULT_MAX_STREAMS_PER_SESSION, 512);
    let watch = PeakWatch::start();
    let mut agent = connect_raw(&env).await;
    let mut bytes = Vec::new();
    for i in 0..10_000u32 {
        bytes.extend(syn(2 * i + 1));
    }
    env.assert_bystander_works().await;
    // The server may end the session before it has read the whole burst.
    let _ = agent.try_send(bytes).await;
    let ended = agent.ended().await;
    assert_eq!(ended.go_aways, [1]);
    let acked = agent.streams.values().filter(|v| v.ack).count();
    assert!(acked <= 512, "{acked} streams acknowledged past the cap of 512");
    watch.assert_under(16 * MIB, "10,000 SYNs");
    env.finish().await;
}

/// §4.4 item 14: rapid reset. 40,000 SYN+RST pairs, each SYN a Data frame carrying a GetManifest call, in
/// unpaced bursts of 500. Reset streams are freed only once their server task has run, so the flood reaches
/// `max_streams` and the abusive session ends with GoAway(2), the outcome §4.4 asks for; memory stays bounded and
/// the bystander is untouched. Running handlers stay capped at `max_concurrent_calls` (asserted at the transport
/// level, `bad_input.rs`, where paced SYN+RST churn also keeps its session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_rapid_open_reset_flood_gets_go_away() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    agent.assert_call_works(1).await;
    let call = manifest_call();
    let watch = PeakWatch::start();
    let mut id = 3u32;
    for _burst in 0..80 {
        let mut bytes = Vec::new();
        for _ in 0..500 {
            bytes.extend(syn_data(id, &call));
            bytes.extend(rst(id));
            id += 2;
        }
        if !agent.try_send(bytes).await {
            break;
        }
    }
    env.assert_bystander_works().await;
    assert_eq!(agent.ended().await.go_aways, [2]);
    watch.assert_under(16 * MIB, "40,000 SYN+RST");
    env.finish().await;
}

/// §4.4 items 15 and 16: a yamux ping flood (1,000,000 pings, 12 MB) from a peer that never reads. The crate holds
/// one pong at a time and stops reading until it is written, so pongs cannot pile up; the socket stops taking
/// bytes, and after `write_timeout` (here 300 ms; 10 s by default, hashicorp's `ConnectionWriteTimeout`, flag
/// `--write-timeout`) the session is cut off. The allocation peak moves by a few MiB, not by the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_ping_flood_without_reading_is_bounded_and_cut_off_at_the_write_deadline() {
    use agentwire_transport::io::keepalive::DEFAULT_WRITE_TIMEOUT;
    assert_eq!(DEFAULT_WRITE_TIMEOUT, Duration::from_secs(10));
    let mut config = ServeConfig::default();
    config.rpc.session.keepalive.write_timeout = Some(Duration::from_millis(300));
    let env = Env::with(config).await;
    let mut agent = connect_raw(&env).await;
    agent.assert_call_works(1).await;
    let ping = encode(0, TYPE_PING, FLAG_SYN, 0, 7, &[]);
    let message: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 80_000).collect();
    let watch = PeakWatch::start();
    let mut flooded = 0;
    within("the flood to be cut off", async {
        while flooded < 1_000_000 && agent.try_send(message.clone()).await {
            flooded += 80_000;
            if env.server.state.metrics().sessions_active() < 2 {
                break;
            }
        }
    })
    .await;
    env.assert_bystander_works().await;
    env.until_sessions(1, "the write deadline to end the flooding session").await;
    let ended = agent.ended().await;
    assert!(agent.pongs < flooded, "{} pongs for {flooded} pings", agent.pongs);
    assert_eq!(ended.close, None, "the write deadline closes the socket, there is no room for a Close");
    watch.assert_under(16 * MIB, "a ping flood without reading");
    env.finish().await;
}

/// §4.4 item 16 with replies: 400 GetManifest calls (under the stream cap, streams left open) from a peer that then
/// floods pings and never reads. Once the socket takes no more, the session is cut off after the write deadline
/// instead of buffering replies and pongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_replies_is_cut_off_after_the_write_deadline() {
    let mut config = ServeConfig::default();
    config.rpc.session.keepalive.write_timeout = Some(Duration::from_millis(300));
    let env = Env::with(config).await;
    let mut agent = connect_raw(&env).await;
    agent.assert_call_works(1).await;
    let call = manifest_call();
    let watch = PeakWatch::start();
    let mut bytes = Vec::new();
    for i in 0..400u32 {
        bytes.extend(syn_data(2 * i + 3, &call));
    }
    agent.send(&bytes).await;
    let ping = encode(0, TYPE_PING, FLAG_SYN, 0, 7, &[]);
    let pings: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 80_000).collect();
    within("the reader-less session to be cut off", async {
        for _ in 0..20 {
            if env.server.state.metrics().sessions_active() < 2 || !agent.try_send(pings.clone()).await {
                return;
            }
        }
    })
    .await;
    env.assert_bystander_works().await;
    env.until_sessions(1, "the write deadline to end the session").await;
    let ended = agent.ended().await;
    assert!(ended.go_aways.is_empty(), "{ended:?}");
    watch.assert_under(32 * MIB, "replies to a peer that does not read");
    env.finish().await;
}

/// §4.4 item 17: GoAway(0) from the agent, then a SYN. The crate ends the session on the GoAway (hashicorp would
/// only refuse new streams), so the SYN is never answered and the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_go_away_then_syn_is_not_served() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    agent.assert_call_works(1).await;
    let mut bytes = go_away(0);
    bytes.extend(syn_data(3, &manifest_call()));
    agent.send(&bytes).await;
    let ended = agent.ended().await;
    assert!(ended.go_aways.is_empty(), "{ended:?}");
    assert!(agent.packets(3).is_empty(), "the SYN after GoAway was served");
    env.until_sessions(1, "the session to end").await;
    env.finish().await;
}

/// §4.4 item 18: half-close. Each call is answered, then FINed by both sides; 600 calls in sequence on one session
/// get past the 512-stream cap only if every closed stream's state is freed at once (no 5-minute close timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_half_close_frees_stream_state_in_both_directions() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    let watch = PeakWatch::start();
    for i in 0..600u32 {
        agent.assert_call_works(2 * i + 1).await;
        agent.streams.remove(&(2 * i + 1));
    }
    assert!(agent.go_aways.is_empty());
    watch.assert_under(8 * MIB, "600 sequential calls");
    env.finish().await;
}

/// §4.4 items 19 and 36: liveness. An agent that answers neither WebSocket pings nor yamux pings (a half-open TCP
/// connection: no FIN, peer silent) is dropped once `ws_ping_timeout` passes (here 300 ms; 30 s by default,
/// coderd's `AgentInactiveDisconnectTimeout`, flag `--ws-ping-timeout`). One that answers WebSocket pings but not
/// yamux keepalives is dropped after `keepalive_timeout` (10 s by default, like hashicorp).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_detected_within_the_timeouts() {
    use agentwire_transport::io::keepalive::{DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT};
    assert_eq!(agentwire_transport::io::DEFAULT_WS_PING_TIMEOUT, Duration::from_secs(30));
    assert_eq!(ServeConfig::default().ws_ping_timeout, Duration::from_secs(30));
    assert_eq!(
        (DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT),
        (Duration::from_secs(30), Duration::from_secs(10))
    );
    let mut config = ServeConfig {
        ws_ping_interval: Some(Duration::from_millis(100)),
        ws_ping_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    config.rpc.session.keepalive.interval = Some(Duration::from_millis(100));
    config.rpc.session.keepalive.timeout = Duration::from_millis(200);
    let env = Env::with(config).await;
    // Silent: upgraded, then nothing read or written.
    let silent = RawWs::upgrade(&env).await;
    env.until_sessions(2, "the silent session to start").await;
    env.until_sessions(1, "the silent session to be dropped").await;
    let mut silent = silent;
    assert_eq!(silent.closed().await, None, "the timeout closes the socket without a Close");
    // Answers WebSocket pings (tungstenite does when read) but never a yamux ping.
    let mut agent = connect_raw(&env).await;
    agent.until("a yamux keepalive ping", |a| a.pings > 0).await;
    let ended = agent.ended().await;
    assert_eq!(ended, Ended::default());
    env.assert_survived().await;
    env.server.state.shutdown().await;
}

// ===============================================================================================================
// dRPC layer (§4.4 items 21, 23, 24, 26)

/// §4.4 item 21: a Message packet growing past the 4 MiB cap (flag `--max-message-size`) in 64 KiB frames: the
/// stream closes without a reply once it passes the cap ("data overflow", as Go's drpc reader), the session goes
/// on, and the server never held much more than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drpc_packet_past_four_mib_is_refused_at_the_cap() {
    let env = Env::start().await;
    assert_eq!(agentwire_transport::limits::DEFAULT_MAX_PACKET_SIZE, 4 * MIB);
    let mut agent = connect_raw(&env).await;
    let frame = drpc_frame(1, 2, Kind::Message, false, false, &[b'z'; 64 * KIB]);
    let watch = PeakWatch::start();
    let invoke = packet(1, 1, Kind::Invoke, GET_MANIFEST.as_bytes());
    let sent = agent.send_windowed(1, &invoke, &frame, 4 * 16 + 64).await;
    agent.assert_stream_dropped_without_reply(1).await;
    assert!(sent > 4 * MIB && sent < 4 * MIB + 512 * KIB, "the stream closed after {sent} bytes");
    watch.assert_under(16 * MIB, "a 4 MiB+ packet");
    agent.assert_call_works(3).await;
    env.finish().await;
}

/// §4.4 item 23: a Message before any Invoke closes the stream without a reply; an unknown rpc gets drpcmux's text
/// word for word, code 0, as Coder's server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drpc_message_before_invoke_and_unknown_rpc() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    agent.opened(1);
    let mut bytes = packet(1, 1, Kind::Message, b"orphan");
    bytes.extend(packet(1, 2, Kind::Invoke, GET_MANIFEST.as_bytes()));
    agent.send(&syn_data(1, &bytes)).await;
    agent.assert_stream_dropped_without_reply(1).await;

    let client = within("a session", connect(&env.server, env.abuser.auth_token)).await;
    let err = client.unary("/coder.agent.v2.Agent/Nope", b"").await.unwrap_err();
    assert_eq!(err.to_string(), r#"protocol error: unknown rpc: "/coder.agent.v2.Agent/Nope" (drpc code 0)"#);
    agent.assert_call_works(3).await;
    env.finish().await;
}

/// §4.4 item 24: Cancel after the Invoke, before the request: the call ends without a reply, the yamux stream stays
/// open and serves the next Invoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drpc_cancel_mid_request_ends_the_call_and_keeps_the_stream() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    agent.opened(1);
    let mut bytes = packet(1, 1, Kind::Invoke, GET_MANIFEST.as_bytes());
    bytes.extend(drpc_frame(1, 2, Kind::Cancel, true, true, b""));
    agent.send(&syn_data(1, &bytes)).await;
    agent.send(&data(1, &unary_on(2, GET_MANIFEST, b""))).await;
    agent.until("the second call's answer", |a| a.packets(1).iter().any(|p| p.kind == Kind::CloseSend)).await;
    let packets = agent.packets(1);
    let shape: Vec<(u64, Kind)> = packets.iter().map(|p| (p.id.stream, p.kind)).collect();
    assert_eq!(shape, [(2, Kind::Message), (2, Kind::CloseSend)], "the cancelled call was answered");
    env.finish().await;
}

/// §4.4 item 26: InvokeMetadata past the 64 KiB cap closes the stream without a reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drpc_oversized_invoke_metadata_closes_the_stream() {
    let env = Env::start().await;
    let mut agent = connect_raw(&env).await;
    let metadata = encode_metadata(&Metadata::from([("k".to_owned(), "v".repeat(65 * KIB))]));
    let mut bytes = packet(1, 1, Kind::InvokeMetadata, &metadata);
    bytes.extend(unary_on(1, GET_MANIFEST, b"").split_off(0));
    agent.opened(1);
    agent.send(&syn_data(1, &bytes)).await;
    agent.assert_stream_dropped_without_reply(1).await;
    agent.assert_call_works(3).await;
    env.finish().await;
}

// ===============================================================================================================
// Protobuf and application layer (§4.4 items 27–30)

/// §4.4 item 27: malformed protobuf is a decode error; unknown fields are ignored (forward compatibility); a proto3
/// string with invalid UTF-8 is refused, as Go's protobuf refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_malformed_unknown_fields_and_invalid_utf8() {
    let env = Env::start().await;
    let client = within("a session", connect(&env.server, env.abuser.auth_token)).await;
    let err = client.unary("/coder.agent.v2.Agent/UpdateStats", b"\xff\xff\xff").await.unwrap_err();
    assert!(err.to_string().starts_with("failed to decode coder.agent.v2.UpdateStatsRequest"), "{err}");
    // Field 99, varint 1: unknown to GetManifestRequest.
    let reply = client.unary(GET_MANIFEST, &[0x98, 0x06, 0x01]).await.expect("unknown fields are ignored");
    assert_eq!(pb::Manifest::decode(reply).unwrap().workspace_name, "abuser-ws");
    // Metadata { key: "\xff" }: field 2 (metadata), holding field 1 (key) of one invalid byte.
    let err = client.unary("/coder.agent.v2.Agent/BatchUpdateMetadata", &[0x12, 0x03, 0x0a, 0x01, 0xff]).await;
    let err = err.unwrap_err().to_string();
    assert!(
        err.contains("failed to decode coder.agent.v2.BatchUpdateMetadataRequest") && err.contains("UTF-8"),
        "{err}"
    );
    env.finish().await;
}

/// §4.4 item 27: 100,000 metadata entries in one request under the 4 MiB cap. Keys past Coder's 6144-byte budget
/// are refused with Coder's error; the decoded request is the only cost, bounded by the message cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_hundred_thousand_metadata_entries() {
    let env = Env::start().await;
    let client = pb::AgentClient::new(within("a session", connect(&env.server, env.abuser.auth_token)).await);
    let metadata = vec![pb::Metadata { key: "cpu".into(), result: None }; 100_000];
    let request = pb::BatchUpdateMetadataRequest { metadata };
    assert!(request.encoded_len() < 4 * MIB);
    let watch = PeakWatch::start();
    let err = client.batch_update_metadata(&request).await.unwrap_err();
    assert!(err.to_string().contains("metadata keys of 6147 bytes exceeded 6144 bytes"), "{err}");
    watch.assert_under(64 * MIB, "100,000 metadata entries");
    env.finish().await;
}

/// §4.4 item 28: a value past 2048 bytes is cut and its error says so; a key of 128 characters (past the
/// `varchar(127)` column) is not stored; keys over 6144 bytes in total are refused (see above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_limits_match_coder() {
    let env = Env::start().await;
    let client = pb::AgentClient::new(within("a session", connect(&env.server, env.abuser.auth_token)).await);
    let now = Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 });
    let item = |key: String, value: String| pb::Metadata {
        key,
        result: Some(pb::workspace_agent_metadata::Result { collected_at: now, age: 1, value, error: String::new() }),
    };
    let metadata = vec![item("cpu".into(), "x".repeat(3000)), item("k".repeat(128), "long key".into())];
    client.batch_update_metadata(&pb::BatchUpdateMetadataRequest { metadata }).await.unwrap();
    let store = &env.server.store;
    store.flush().await;
    let scope = store.agent(&store.resolve_agent_by_token(&env.token()).await.unwrap().unwrap());
    let stored = scope.list_metadata().await.unwrap();
    let cpu = stored.iter().find(|m| m.key == "cpu").unwrap();
    assert_eq!((cpu.value.len(), cpu.error.as_str()), (2048, "value of 3000 bytes exceeded 2048 bytes"));
    assert!(stored.iter().all(|m| m.key.len() <= 127));
    let keys = vec![pb::Metadata { key: "k".repeat(7000), result: None }];
    let err = client.batch_update_metadata(&pb::BatchUpdateMetadataRequest { metadata: keys }).await.unwrap_err();
    assert!(err.to_string().contains("metadata keys of 7000 bytes exceeded 6144 bytes"), "{err}");
    env.finish().await;
}

/// §4.4 item 29: logs past Coder's 1 MiB per agent answer `log_limit_exceeded` (not an error), and every later
/// call short-circuits the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_past_one_mib_are_refused_and_later_calls_short_circuit() {
    let env = Env::start().await;
    let client = pb::AgentClient::new(within("a session", connect(&env.server, env.abuser.auth_token)).await);
    let batch = |kib: usize| pb::BatchCreateLogsRequest {
        log_source_id: uuid::Uuid::new_v4().as_bytes().to_vec().into(),
        logs: vec![pb::Log { created_at: None, output: "l".repeat(kib * KIB), level: pb::log::Level::Info as i32 }],
    };
    assert!(!client.batch_create_logs(&batch(600)).await.unwrap().log_limit_exceeded);
    assert!(client.batch_create_logs(&batch(600)).await.unwrap().log_limit_exceeded);
    assert!(client.batch_create_logs(&batch(1)).await.unwrap().log_limit_exceeded);
    env.finish().await;
}

/// §4.4 item 30: stats with absurd counters (negative, i64::MAX) are taken without an error or a panic, and the
/// reply still carries the report interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_with_absurd_counters_are_taken() {
    let env = Env::start().await;
    let client = pb::AgentClient::new(within("a session", connect(&env.server, env.abuser.auth_token)).await);
    for n in [i64::MIN, -1, i64::MAX] {
        let stats = pb::Stats {
            connection_count: n,
            rx_bytes: n,
            tx_bytes: n,
            rx_packets: n,
            session_count_ssh: n,
            connection_median_latency_ms: n as f64,
            ..Default::default()
        };
        let reply = client.update_stats(&pb::UpdateStatsRequest { stats: Some(stats) }).await.unwrap();
        assert_eq!(reply.report_interval.unwrap().seconds, 30);
    }
    env.server.store.flush().await;
    env.finish().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Idle sessions

/// What an idle session holds, both ends in this process: each of 48 sessions makes one call and stays open.
/// tungstenite's default read buffer alone would be 128 KiB per end, zero-filled and so resident; the bound is set by
/// `--ws-read-buffer` (4 KiB by default) and the session's own state. The bound is close to what a session holds
/// (19.2 KiB in a debug build): when the session's task kept the resolved agent by value in two async layers and
/// spawned a task of its own for the heartbeat, it held 22.9 KiB, and that must fail here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_hold_bounded_memory() {
    const SESSIONS: usize = 48;
    let env = Env::with(ServeConfig { max_sessions_per_agent: SESSIONS + 1, ..ServeConfig::default() }).await;
    assert_eq!(ServeConfig::default().ws_read_buffer, 4 * KIB);
    // One session first, so state made once per process (pools, statement caches) is not counted per session.
    let first = pb::AgentClient::new(connect(&env.server, env.fresh.auth_token).await);
    within("the first session's call", first.get_manifest(&pb::GetManifestRequest {})).await.unwrap();
    let before = CURRENT.load(Ordering::Relaxed);
    let mut idle = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let client = pb::AgentClient::new(within("an idle session", connect(&env.server, env.fresh.auth_token)).await);
        within("an idle session's call", client.get_manifest(&pb::GetManifestRequest {})).await.unwrap();
        idle.push(client);
    }
    env.until_sessions(SESSIONS as i64 + 2, "every idle session is admitted").await;
    let per_session = CURRENT.load(Ordering::Relaxed).saturating_sub(before) / SESSIONS;
    println!("idle session, both ends: {per_session} bytes allocated");
    assert!(per_session <= 20 * KIB, "an idle session holds {per_session} bytes (client and server ends together)");
    drop(idle);
    drop(first);
    env.until_sessions(1, "the idle sessions are released").await;
    env.finish().await;
}

// ===============================================================================================================
// Memory budgets (issue 15)

/// A dRPC Invoke frame that declares just under 4 MiB (the attack of issue 15 declared 4,193,280 bytes).
const DECLARED_INVOKE: usize = 4_193_280;

/// The frame the flood sends the start of; made before an allocation watch starts.
fn declared_invoke() -> Vec<u8> {
    drpc_frame(1, 1, Kind::Invoke, false, true, &vec![b'/'; DECLARED_INVOKE])
}

/// What a session's flood of unfinished Invokes achieved.
struct Flood {
    /// Bytes the server's windows let through, over every stream.
    sent: usize,
    /// Streams that got their SYN out before the server ended the session.
    opened: usize,
}

/// Opens `streams` streams and on each sends the start of an Invoke frame declaring [`DECLARED_INVOKE`] bytes, then
/// as much of its body as the server's windows allow, never finishing any: the memory attack of issue 15. Returns
/// once the server has ended the session, or `per_stream` is sent everywhere, or, given `stalled`, once every
/// stream has been out of credit that long (the server has stopped granting window).
async fn flood_unfinished_invokes(
    agent: &mut RawPeer,
    frame: &[u8],
    streams: u32,
    per_stream: usize,
    stalled: Option<Duration>,
) -> Flood {
    let per_stream = per_stream.min(frame.len() - 1);
    let ids: Vec<u32> = (0..streams).map(|i| 2 * i + 1).collect();
    let mut sent: HashMap<u32, usize> = HashMap::new();
    for &id in &ids {
        agent.opened(id);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    'flood: loop {
        let mut progressed = false;
        for &id in &ids {
            let view = agent.view(id);
            let done = sent.get(&id).copied().unwrap_or(0);
            if view.rst || view.fin || done >= per_stream {
                continue;
            }
            let credit = view.credit as usize;
            let take = credit.min(64 * KIB).min(per_stream - done);
            if take == 0 {
                continue;
            }
            let chunk = &frame[done..done + take];
            let bytes = if done == 0 { syn_data(id, chunk) } else { data(id, chunk) };
            if !agent.try_send(bytes).await {
                break 'flood;
            }
            agent.spend(id, take);
            *sent.entry(id).or_default() += take;
            progressed = true;
        }
        if agent.eof || sent.values().all(|&n| n >= per_stream) && sent.len() == ids.len() {
            break;
        }
        if !progressed {
            // Every stream is out of credit: wait for window updates, or for the server to end the session.
            let wait_until = match stalled {
                Some(stalled) => deadline.min(tokio::time::Instant::now() + stalled),
                None => deadline,
            };
            match agent.read_until(wait_until).await {
                Some(true) => {}
                Some(false) => break,
                None if stalled.is_some() && tokio::time::Instant::now() < deadline => break,
                None => panic!("the server neither granted window nor ended the session within {WAIT:?}"),
            }
        }
    }
    Flood { sent: sent.values().sum(), opened: sent.len() }
}

fn evictions(env: &Env) -> Vec<(&'static str, u64)> {
    env.server.state.memory().events().evictions()
}

/// What a flood of `streams` streams can make the server take beyond the limit that stops it: per stream, the chunk a
/// read brought past the limit and the 256 KiB window the protocol lets the peer send before anyone reads again.
fn windows(streams: usize) -> usize {
    2 * streams * 256 * KIB
}

/// The bound a session's flood stays within: its budget, one packet of overdraft, and the streams' windows.
fn session_bound(config: &ServeConfig, streams: usize) -> usize {
    config.rpc.session_memory + config.rpc.limits.max_packet_size + windows(streams)
}

/// Issue 15's attack, on both transports: one session opens streams and sends each the start of an Invoke declaring
/// ~4 MiB, never finishing any. The streams' reads stop at the session's budget (16 MiB), so the server grants no
/// more window; after the memory wait the session is ended with GoAway and the `session` limit is counted. The
/// bystander (another agent) is served while the abuser is stalled; the allocation peak stays within the budget, one
/// packet of overdraft and the streams' windows (before the budgets, 500 such streams grew RSS by 1.9 GiB).
async fn unfinished_invokes_stop_at_the_session_budget(tcp: bool) {
    const STREAMS: u32 = 64;
    let mut config = ServeConfig::default();
    config.rpc.memory_wait = Duration::from_secs(2);
    assert_eq!(config.rpc.session_memory, 16 * MIB);
    let env = Env::with(config.clone()).await;
    let mut agent = if tcp { connect_raw_tcp(&env).await } else { connect_raw(&env).await };
    agent.assert_call_works(1001).await;
    let frame = declared_invoke();
    let watch = PeakWatch::start();
    let flood = flood_unfinished_invokes(&mut agent, &frame, STREAMS, DECLARED_INVOKE, None).await;
    let bound = session_bound(&config, STREAMS as usize);
    assert!(flood.sent <= bound, "the server took {} bytes of unfinished Invokes, over {bound}", flood.sent);
    assert!(flood.sent >= config.rpc.session_memory, "the flood stopped at {} bytes, before the budget", flood.sent);
    assert_eq!(flood.opened, STREAMS as usize);
    let ended = agent.ended().await;
    assert_eq!(ended.go_aways, [0], "the abuser's session ends with GoAway");
    assert_eq!(evictions(&env), [("session", 1)]);
    assert!(env.server.state.memory().events().waits() > 0, "the reads waited for room before the end");
    // Allocations of both ends: within the bound plus a few MiB of slack.
    println!("unfinished Invokes: {} bytes taken, allocation peak +{} bytes", flood.sent, watch.growth());
    watch.assert_under(bound + 8 * MIB, "unfinished Invokes");
    env.until_sessions(1, "the abuser's session to end").await;
    eventually("the abuser's bytes to be given back", || env.server.state.memory().used() == 0).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_invokes_stop_at_the_session_budget_over_websocket() {
    unfinished_invokes_stop_at_the_session_budget(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_invokes_stop_at_the_session_budget_over_tcp() {
    unfinished_invokes_stop_at_the_session_budget(true).await;
}

/// While an abuser sits at its budget, stalled and not yet ended, another agent's session and a new session are
/// served; the abuser's own new call waits (acknowledged, unanswered) with its other streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_agents_are_served_while_an_abuser_holds_its_budget() {
    let mut config = ServeConfig::default();
    config.rpc.memory_wait = Duration::from_secs(60);
    let env = Env::with(config).await;
    let mut agent = connect_raw(&env).await;
    // 8 streams × 3 MiB: 24 MiB would be read without a budget; the session stops at 16 MiB plus the overdraft.
    let frame = declared_invoke();
    let flood = flood_unfinished_invokes(&mut agent, &frame, 8, 3 * MIB, Some(Duration::from_millis(500))).await;
    assert!(flood.sent < 8 * 3 * MIB, "every byte was taken: {}", flood.sent);
    assert!(!agent.eof, "the abuser was ended before the memory wait");
    env.assert_survived().await;
    agent.opened(9001);
    agent.send(&syn_data(9001, &manifest_call())).await;
    agent.until("the ACK of a stream opened over budget", |a| a.view(9001).ack).await;
    assert!(agent.packets(9001).is_empty(), "a call was served past an exhausted budget");
    assert!(!agent.view(9001).rst, "a stream opened over budget was reset");
    assert_eq!(evictions(&env), [], "nobody was ended before the memory wait");
    env.assert_survived().await;
    drop(agent);
    env.until_sessions(1, "the abuser's session to end").await;
    env.finish().await;
}

/// A log batch of about `bytes`, in 1 KiB lines.
fn log_batch(bytes: usize) -> pb::BatchCreateLogsRequest {
    let line = "l".repeat(KIB);
    pb::BatchCreateLogsRequest {
        log_source_id: uuid::Uuid::new_v4().as_bytes().to_vec().into(),
        logs: (0..bytes / (KIB + 8))
            .map(|_| pb::Log { created_at: None, output: line.clone(), level: pb::log::Level::Info as i32 })
            .collect(),
    }
}

/// Legitimate large messages pass however small the session's budget: three ~3.9 MiB log batches at once and 64
/// GetManifest calls opened while the budget is exhausted, in a session whose budget (2 MiB) is under one batch. One
/// stream at a time takes the overdraft and finishes its packet, the others wait for it, nobody is ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_and_concurrent_calls_pass_under_a_small_budget() {
    let mut config = ServeConfig::default();
    config.rpc.session_memory = 2 * MIB;
    config.rpc.memory_wait = Duration::from_secs(60);
    let env = Env::with(config).await;
    let client = pb::AgentClient::new(within("a session", connect(&env.server, env.abuser.auth_token)).await);
    let batch = log_batch(4 * MIB - 64 * KIB);
    assert!(batch.encoded_len() > 3 * MIB + 512 * KIB && batch.encoded_len() < 4 * MIB);
    let large = futures::future::join_all((0..3).map(|_| client.batch_create_logs(&batch)));
    // The small calls open their streams once a read has waited, so they arrive while the budget is exhausted
    // (streams opened then were once reset, failing the calls).
    let small = async {
        while env.server.state.memory().events().waits() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        futures::future::join_all((0..64).map(|_| client.get_manifest(&pb::GetManifestRequest {}))).await
    };
    let (large, small) = within("the calls", futures::future::join(large, small)).await;
    for reply in large {
        // Over the 1 MiB log budget: the whole batch was read and judged by the handler.
        assert!(reply.expect("a large log batch").log_limit_exceeded);
    }
    for manifest in small {
        assert_eq!(manifest.expect("a GetManifest beside the batches").workspace_name, "abuser-ws");
    }
    assert_eq!(evictions(&env), []);
    assert!(env.server.state.memory().events().waits() > 0, "the small budget never made a read wait");
    env.finish().await;
}

/// The server's pool: an abuser fills it (past its own guaranteed part), then another agent sends a 1.5 MiB log
/// batch, which needs the pool. Its read waits; after the memory wait the session holding the most under the server
/// limit (the abuser's) is ended, and the victim's batch goes through. Small calls never wait meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_server_pool_ends_its_largest_holder_and_serves_the_waiting_call() {
    // The abuser's own limits are far above the server's, so the server pool is what stops it.
    let mut config = ServeConfig { server_memory: 8 * MIB, agent_memory: 64 * MIB, ..ServeConfig::default() };
    config.rpc.session_memory = 64 * MIB;
    config.rpc.memory_wait = Duration::from_secs(2);
    let env = Env::with(config).await;
    let mut agent = connect_raw(&env).await;
    let frame = declared_invoke();
    let flood = flood_unfinished_invokes(&mut agent, &frame, 32, 3 * MIB, Some(Duration::from_millis(300))).await;
    let bound = 8 * MIB + DEFAULT_SESSION_GUARANTEED_MEMORY + windows(32);
    assert!(flood.sent <= bound, "the server pool did not stop the flood: {} bytes, over {bound}", flood.sent);
    env.assert_bystander_works().await;
    let victim = pb::AgentClient::new(within("a session", connect(&env.server, env.fresh.auth_token)).await);
    let reply = within("the victim's batch", victim.batch_create_logs(&log_batch(3 * MIB / 2))).await;
    let reply = reply.unwrap_or_else(|err| panic!("the victim's batch: {err}; evictions {:?}", evictions(&env)));
    assert!(reply.log_limit_exceeded);
    assert_eq!(agent.ended().await.go_aways, [0]);
    assert_eq!(evictions(&env), [("server", 1)]);
    env.finish().await;
}

/// An agent's pool across its sessions: two sessions of one agent flood together past the agent's limit (4 MiB
/// beyond their guaranteed parts) while each is far under its own. The one holding the most is ended under the
/// `agent` limit; the other agents are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_sessions_share_its_pool() {
    let mut config = ServeConfig { agent_memory: 4 * MIB, ..ServeConfig::default() };
    config.rpc.memory_wait = Duration::from_secs(2);
    let env = Env::with(config).await;
    let frame = declared_invoke();
    let mut first = connect_raw(&env).await;
    let mut second = connect_raw(&env).await;
    let stall = Some(Duration::from_millis(300));
    let one = flood_unfinished_invokes(&mut first, &frame, 16, 2 * MIB, stall).await;
    let two = flood_unfinished_invokes(&mut second, &frame, 16, 2 * MIB, stall).await;
    let bound = 4 * MIB + 2 * DEFAULT_SESSION_GUARANTEED_MEMORY + windows(32);
    assert!(one.sent + two.sent <= bound, "the agent pool did not stop the flood: {}", one.sent + two.sent);
    env.assert_bystander_works().await;
    eventually("an eviction", || !evictions(&env).is_empty()).await;
    assert_eq!(evictions(&env), [("agent", 1)]);
    env.assert_survived().await;
    drop((first, second));
    env.until_sessions(1, "the abuser's sessions to end").await;
    env.finish().await;
}

/// A partial Invoke counts as a call: with two call slots, two streams that sent only the start of an Invoke hold
/// both, and a third stream's whole GetManifest waits (acknowledged, unanswered) until one of them is reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_invokes_hold_call_slots() {
    let mut config = ServeConfig::default();
    config.rpc.max_concurrent_calls = 2;
    config.rpc.ack_delay = Duration::from_millis(100);
    let env = Env::with(config).await;
    let mut agent = connect_raw(&env).await;
    let frame = declared_invoke();
    for stream in [1, 3] {
        agent.opened(stream);
        agent.send(&syn_data(stream, &frame[..100])).await;
    }
    agent.until("the partial Invokes' ACKs", |a| a.view(1).ack && a.view(3).ack).await;
    agent.opened(5);
    agent.send(&syn_data(5, &manifest_call())).await;
    agent.until("the waiting call's ACK", |a| a.view(5).ack).await;
    assert!(agent.view(5).data.is_empty(), "a call was served past two slots held by partial Invokes");
    agent.send(&rst(1)).await;
    agent.until_answered(5).await;
    agent.assert_manifest_on(5);
    env.finish().await;
}
