//! Ping frames a hashicorp/yamux peer survives and the `yamux` crate alone would not (or would answer where Go
//! stays silent), each sent by hand to our real server over plain TCP and over WebSocket. After each, a normal
//! unary call must still be served on the same session, with no GoAway. The list of frames checked against
//! hashicorp's `session.go`, and why the others are left as they are, is in `io/keepalive/tolerance.rs`.

use std::time::Duration;

use agentwire_transport::io::{ws, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::server::{Router, Server, ServerConfig, SessionEnd};
use agentwire_transport::testing::drpc_packets::unary_on;
use agentwire_transport::testing::raw_peer::RawPeer;
use agentwire_transport::testing::wait::{within, WAIT};
use agentwire_transport::testing::yamux_frames::*;
use agentwire_transport::testing::{path, register_interop};
use agentwire_transport::wire::Kind;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

/// The crate's fixed round-trip ping interval (`rtt.rs`, `PING_INTERVAL`), counted from the pong.
const CRATE_PING_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum Transport {
    Tcp,
    WebSocket,
}

/// The client side of one session, played by hand with the test kit's raw peer, and the server's end of it.
struct Peer {
    raw: RawPeer,
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
        let raw = match transport {
            Transport::Tcp => RawPeer::tcp(address).await,
            // The crate's own WebSocket byte stream: each send is flushed as one message.
            Transport::WebSocket => {
                let request = format!("ws://{address}/").into_client_request().unwrap();
                let io = within("the WebSocket handshake", ws::connect(request, DEFAULT_MAX_WS_MESSAGE_SIZE)).await;
                RawPeer::over(io.unwrap())
            }
        };
        Peer { raw, served }
    }

    /// A unary call on a new yamux stream, as a Go agent makes it, gets its echo.
    async fn assert_call_works(&mut self, stream: u32) {
        let body = format!("on stream {stream}");
        let packets = self.raw.call(stream, &unary_on(1, &path("Unary"), body.as_bytes())).await;
        let shape: Vec<_> = packets.iter().map(|p| (p.id.message, p.kind)).collect();
        assert_eq!(shape, [(1, Kind::Message), (2, Kind::CloseSend)], "on stream {stream}");
        assert_eq!(packets[0].data, [b"echo:".as_slice(), body.as_bytes()].concat());
    }

    /// No GoAway came and the session is still served.
    fn assert_session_lives(&self) {
        assert_eq!(self.raw.go_aways, [] as [u32; 0], "the server sent GoAway");
        assert!(!self.raw.eof, "the server closed the transport");
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
    peer.raw.send(&pong(0x1234)).await;
    peer.raw.send(&[pong(7), ping_with(FLAG_ACK, 5, 8), pong(0x8000_0042)].concat()).await;
    peer.assert_call_works(1).await;
    peer.assert_session_lives();
}
over_tcp_and_websocket!(an_unsolicited_pong_is_ignored);

/// The crate's own ping answered twice: hashicorp ignores the second answer, the crate would send GoAway(1). The
/// first answer must still reach the crate: it pings again 10 s after a pong, and only after one.
async fn a_duplicate_pong_is_ignored_and_the_crates_own_pings_go_on(transport: Transport) {
    let mut peer = Peer::connect(transport).await;
    peer.raw.until("the crate's first ping", |p| p.has_ping(FLAG_SYN, 0)).await;
    let answered = Instant::now();
    peer.raw.send(&pong(0)).await;
    peer.raw.send(&[pong(0), pong(0)].concat()).await;
    peer.assert_call_works(1).await;
    peer.assert_session_lives();
    // The crate only looks at its ping timer when it runs: calls wake it until its second ping comes, one interval
    // after the pong it took.
    let mut stream = 3;
    while !peer.raw.has_ping(FLAG_SYN, 1) {
        assert!(answered.elapsed() < CRATE_PING_INTERVAL + WAIT, "no second ping from the crate");
        peer.assert_call_works(stream).await;
        stream += 2;
        peer.raw.settle(Duration::from_millis(250)).await;
    }
    assert!(answered.elapsed() >= CRATE_PING_INTERVAL, "the crate pinged again before its interval");
    peer.raw.send(&[pong(1), pong(1)].concat()).await;
    peer.assert_call_works(stream).await;
    peer.assert_session_lives();
}
over_tcp_and_websocket!(a_duplicate_pong_is_ignored_and_the_crates_own_pings_go_on);

/// Ping with SYN and ACK: hashicorp answers it (it checks SYN first); the crate would take it for a pong (it
/// checks ACK first) that does not match its ping, and send GoAway(1).
async fn a_ping_with_syn_and_ack_is_answered(transport: Transport) {
    let mut peer = Peer::connect(transport).await;
    peer.raw.send(&ping_with(FLAG_SYN | FLAG_ACK, 0, 77)).await;
    peer.raw.until("the answer to Ping(SYN|ACK)", |p| p.has_ping(FLAG_ACK, 77)).await;
    peer.assert_call_works(1).await;
    peer.assert_session_lives();
}
over_tcp_and_websocket!(a_ping_with_syn_and_ack_is_answered);

/// Ping|SYN on a stream id that is no stream: hashicorp answers on stream 0 whatever the id; the crate would not
/// answer at all. The answer comes before the call's, which is sent after the ping.
async fn a_ping_on_an_unknown_stream_is_answered(transport: Transport) {
    let mut peer = Peer::connect(transport).await;
    peer.raw.send(&ping_with(FLAG_SYN, 9, 78)).await;
    peer.assert_call_works(1).await;
    assert!(peer.raw.has_ping(FLAG_ACK, 78), "Ping on stream 9 not answered; pings seen {:?}", peer.raw.ping_frames());
    peer.assert_session_lives();
}
over_tcp_and_websocket!(a_ping_on_an_unknown_stream_is_answered);

/// Ping without SYN: hashicorp reads it as an answer (to no ping of its own, so it is ignored) and sends nothing;
/// the crate would read it as a request and answer. The call, sent after, is answered after any such pong.
async fn a_ping_without_syn_is_an_answer_not_a_request(transport: Transport) {
    let mut peer = Peer::connect(transport).await;
    peer.raw.send(&[ping_with(0, 0, 79), ping_with(FLAG_FIN, 0, 80)].concat()).await;
    peer.assert_call_works(1).await;
    let answered: Vec<(u16, u32, u32)> =
        peer.raw.ping_frames().iter().copied().filter(|&(_, _, opaque)| opaque == 79 || opaque == 80).collect();
    assert_eq!(answered, [], "the server answered a Ping without SYN");
    peer.assert_session_lives();
}
over_tcp_and_websocket!(a_ping_without_syn_is_an_answer_not_a_request);
