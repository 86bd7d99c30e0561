//! Ping frames a hashicorp/yamux peer survives and the `yamux` crate alone would not (or would answer where Go
//! stays silent), each sent by hand to our real server over plain TCP and over WebSocket. After each, a normal
//! unary call must still be served on the same session, with no GoAway. The list of frames checked against
//! hashicorp's `session.go`, and why the others are left as they are, is in `io/keepalive/tolerance.rs`.

use std::future::Future;
use std::time::Duration;

use agentwire_transport::io::{ws, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::server::{Router, Server, ServerConfig, SessionEnd};
use agentwire_transport::testing::drpc_packets::unary_on;
use agentwire_transport::testing::yamux_frames::*;
use agentwire_transport::testing::{path, register_interop};
use agentwire_transport::wire::{Frame, Kind, Packet, PacketAssembler};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

/// Every wait on the server ends here at the latest: a hang fails the test instead of blocking it.
const WAIT: Duration = Duration::from_secs(10);
/// The crate's fixed round-trip ping interval (`rtt.rs`, `PING_INTERVAL`), counted from the pong.
const CRATE_PING_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum Transport {
    Tcp,
    WebSocket,
}

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

/// The client side of one session, played by hand.
struct Peer {
    io: Box<dyn Duplex>,
    inbox: Vec<u8>,
    frames: Vec<YamuxFrame>,
    eof: bool,
    served: JoinHandle<SessionEnd>,
}

impl Peer {
    /// Serves one session on a fresh listener and connects to it.
    async fn connect(transport: Transport) -> Peer {
        let mut router = Router::<()>::new();
        register_interop(&mut router);
        let server = Server::new(router, ServerConfig::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            match transport {
                Transport::Tcp => server.serve_session(tcp, (), CancellationToken::new()).await,
                Transport::WebSocket => {
                    let io = ws::accept(tcp, DEFAULT_MAX_WS_MESSAGE_SIZE).await.unwrap();
                    server.serve_session(io, (), CancellationToken::new()).await
                }
            }
        });
        let io: Box<dyn Duplex> = match transport {
            Transport::Tcp => {
                let tcp = TcpStream::connect(address).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                Box::new(tcp)
            }
            Transport::WebSocket => {
                let request = format!("ws://{address}/").into_client_request().unwrap();
                Box::new(
                    within("the WebSocket handshake", ws::connect(request, DEFAULT_MAX_WS_MESSAGE_SIZE)).await.unwrap(),
                )
            }
        };
        Peer { io, inbox: Vec::new(), frames: Vec::new(), eof: false, served }
    }

    /// Writes and flushes (a WebSocket sends on flush): one write, so one WebSocket message.
    async fn send(&mut self, bytes: &[u8]) {
        within("writing to the server", async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        .expect("the server closed the transport");
    }

    async fn read_more(&mut self) {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = self.io.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            self.eof = true;
            return;
        }
        self.inbox.extend_from_slice(&chunk[..n]);
        self.frames.extend(parse_frames(&mut self.inbox));
    }

    /// Reads until `done` holds; panics if the server closes the transport first or `WAIT` passes.
    async fn until(&mut self, what: &str, done: impl Fn(&Peer) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(!self.eof, "the server closed the transport before {what}; GoAway {:?}", self.go_aways());
            tokio::time::timeout_at(deadline, self.read_more())
                .await
                .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"));
        }
    }

    fn go_aways(&self) -> Vec<u32> {
        self.frames.iter().filter(|f| f.kind == TYPE_GO_AWAY).map(|f| f.length).collect()
    }

    /// Ping frames from the server, as (flags, stream, opaque).
    fn pings(&self) -> Vec<(u16, u32, u32)> {
        self.frames.iter().filter(|f| f.kind == TYPE_PING).map(|f| (f.flags, f.stream, f.length)).collect()
    }

    fn has_ping(&self, flags: u16, opaque: u32) -> bool {
        self.pings().contains(&(flags, 0, opaque))
    }

    /// The dRPC packets the server sent on yamux stream `stream`.
    fn packets(&self, stream: u32) -> Vec<Packet> {
        let data: Vec<u8> = self
            .frames
            .iter()
            .filter(|f| f.kind == TYPE_DATA && f.stream == stream)
            .flat_map(|f| f.body.iter().copied())
            .collect();
        let mut buf = BytesMut::from(&data[..]);
        let mut assembler = PacketAssembler::new(usize::MAX >> 1);
        let mut packets = Vec::new();
        while let Some(frame) = Frame::decode(&mut buf, usize::MAX >> 1).expect("the server sent a bad dRPC frame") {
            if let Some(packet) = assembler.push(frame).expect("the server broke dRPC packet rules") {
                packets.push(packet);
            }
        }
        packets
    }

    /// A unary call on a new yamux stream, as a Go agent makes it, gets its echo.
    async fn assert_call_works(&mut self, stream: u32) {
        let body = format!("on stream {stream}");
        self.send(&syn_data(stream, &unary_on(1, &path("Unary"), body.as_bytes()))).await;
        let what = format!("the answer on stream {stream}");
        self.until(&what, |p| p.packets(stream).iter().any(|p| matches!(p.kind, Kind::CloseSend | Kind::Error))).await;
        let packets = self.packets(stream);
        let shape: Vec<_> = packets.iter().map(|p| (p.id.message, p.kind)).collect();
        assert_eq!(shape, [(1, Kind::Message), (2, Kind::CloseSend)], "on stream {stream}");
        assert_eq!(packets[0].data, [b"echo:".as_slice(), body.as_bytes()].concat());
        self.send(&fin(stream)).await;
    }

    /// No GoAway came and the session is still served.
    fn assert_session_lives(&self) {
        assert_eq!(self.go_aways(), [] as [u32; 0], "the server sent GoAway");
        assert!(!self.eof, "the server closed the transport");
        assert!(!self.served.is_finished(), "the session ended");
    }
}

/// Runs one scenario over TCP and over WebSocket.
macro_rules! over_tcp_and_websocket {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn tcp() {
                super::$scenario(super::Transport::Tcp).await;
            }

            #[tokio::test]
            async fn websocket() {
                super::$scenario(super::Transport::WebSocket).await;
            }
        }
    };
}

/// Ping|ACK for pings nobody sent: hashicorp finds no waiter and ignores them. The crate, whose own first ping
/// (id 0) is outstanding, would take them for a wrong pong and answer GoAway(1). Also with a stray stream id and
/// with the top bit our keepalive pings use.
async fn an_unsolicited_pong_is_ignored(transport: Transport) {
    let mut peer = Peer::connect(transport).await;
    peer.send(&pong(0x1234)).await;
    peer.send(&[pong(7), ping_with(FLAG_ACK, 5, 8), pong(0x8000_0042)].concat()).await;
    peer.assert_call_works(1).await;
    peer.assert_session_lives();
}
over_tcp_and_websocket!(an_unsolicited_pong_is_ignored);

/// The crate's own ping answered twice: hashicorp ignores the second answer, the crate would send GoAway(1). The
/// first answer must still reach the crate: it pings again 10 s after a pong, and only after one.
async fn a_duplicate_pong_is_ignored_and_the_crates_own_pings_go_on(transport: Transport) {
    let mut peer = Peer::connect(transport).await;
    peer.until("the crate's first ping", |p| p.has_ping(FLAG_SYN, 0)).await;
    peer.send(&pong(0)).await;
    let answered = Instant::now();
    peer.send(&[pong(0), pong(0)].concat()).await;
    peer.assert_call_works(1).await;
    peer.assert_session_lives();
    // The crate only looks at its ping timer when it runs: a call after the interval wakes it.
    tokio::time::sleep_until(answered + CRATE_PING_INTERVAL + Duration::from_millis(500)).await;
    peer.assert_call_works(3).await;
    peer.until("the crate's second ping", |p| p.has_ping(FLAG_SYN, 1)).await;
    peer.send(&[pong(1), pong(1)].concat()).await;
    peer.assert_call_works(5).await;
    peer.assert_session_lives();
}
over_tcp_and_websocket!(a_duplicate_pong_is_ignored_and_the_crates_own_pings_go_on);

/// Ping with SYN and ACK: hashicorp answers it (it checks SYN first); the crate would take it for a pong (it
/// checks ACK first) that does not match its ping, and send GoAway(1).
async fn a_ping_with_syn_and_ack_is_answered(transport: Transport) {
    let mut peer = Peer::connect(transport).await;
    peer.send(&ping_with(FLAG_SYN | FLAG_ACK, 0, 77)).await;
    peer.until("the answer to Ping(SYN|ACK)", |p| p.has_ping(FLAG_ACK, 77)).await;
    peer.assert_call_works(1).await;
    peer.assert_session_lives();
}
over_tcp_and_websocket!(a_ping_with_syn_and_ack_is_answered);

/// Ping|SYN on a stream id that is no stream: hashicorp answers on stream 0 whatever the id; the crate would not
/// answer at all. The answer comes before the call's, which is sent after the ping.
async fn a_ping_on_an_unknown_stream_is_answered(transport: Transport) {
    let mut peer = Peer::connect(transport).await;
    peer.send(&ping_with(FLAG_SYN, 9, 78)).await;
    peer.assert_call_works(1).await;
    assert!(peer.has_ping(FLAG_ACK, 78), "Ping on stream 9 not answered; pings seen {:?}", peer.pings());
    peer.assert_session_lives();
}
over_tcp_and_websocket!(a_ping_on_an_unknown_stream_is_answered);

/// Ping without SYN: hashicorp reads it as an answer (to no ping of its own, so it is ignored) and sends nothing;
/// the crate would read it as a request and answer. The call, sent after, is answered after any such pong.
async fn a_ping_without_syn_is_an_answer_not_a_request(transport: Transport) {
    let mut peer = Peer::connect(transport).await;
    peer.send(&[ping_with(0, 0, 79), ping_with(FLAG_FIN, 0, 80)].concat()).await;
    peer.assert_call_works(1).await;
    let answered: Vec<_> = peer.pings().into_iter().filter(|&(_, _, opaque)| opaque == 79 || opaque == 80).collect();
    assert_eq!(answered, [], "the server answered a Ping without SYN");
    peer.assert_session_lives();
}
over_tcp_and_websocket!(a_ping_without_syn_is_an_answer_not_a_request);
