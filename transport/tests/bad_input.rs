//! Bad input at the yamux and dRPC layers, anchors.md §4.4 items 6–26, against our real `Server::serve_session`.
//!
//! Each test plays the client of one session by hand over a `tokio::io::duplex` with the test kit's raw peer
//! (`testing::raw_peer`): it writes raw yamux frames (12-byte big-endian headers) and raw dRPC frames, and reads
//! back what the server sends. A second, well-behaved
//! session served by the same `Server` runs alongside and must keep working after the abuse. A panic hook counts
//! panics on the test's thread (every task of a `current_thread` runtime runs there), so a panic inside a server
//! task fails the test even though tokio swallows it.
//!
//! The yamux side is the `yamux` crate (0.14.1). Where it differs from hashicorp/yamux (the Go agent's side), the
//! test asserts what the crate does and a comment says what hashicorp would do.
//!
//! Over 600 lines: one case per anchors.md §4.4 item, sharing one fixture.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use agentwire_transport::client::Client;
use agentwire_transport::io::{spawn_session, Mode, SessionConfig};
use agentwire_transport::server::{CallObserver, CallOutcome, Router, Server, ServerConfig, SessionEnd};
use agentwire_transport::testing::drpc_packets::{drpc_frame, invoke, packet, unary_on};
use agentwire_transport::testing::raw_peer::RawPeer;
use agentwire_transport::testing::wait::within;
use agentwire_transport::testing::yamux_frames::*;
use agentwire_transport::testing::{path, register_interop};
use agentwire_transport::wire::{encode_metadata, Kind, Metadata, Packet};
use agentwire_transport::Limits;
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// hashicorp's and the crate's initial stream window.
const WINDOW: usize = 256 * KIB;
const MAX_PACKET: usize = 4 * MIB;

// ---------------------------------------------------------------------------------------------------------------
// dRPC bytes

fn unary(method: &str, body: &[u8]) -> Vec<u8> {
    unary_on(1, method, body)
}

fn echo(body: &[u8]) -> Vec<u8> {
    [b"echo:".as_slice(), body].concat()
}

/// `(dRPC stream, message id, kind)` of each packet, for compact assertions.
fn shape(packets: &[Packet]) -> Vec<(u64, u64, Kind)> {
    packets.iter().map(|p| (p.id.stream, p.id.message, p.kind)).collect()
}

fn error_of(packet: &Packet) -> (u64, String) {
    assert_eq!(packet.kind, Kind::Error, "{packet:?}");
    let body = agentwire_transport::wire::ErrorBody::decode(&packet.data);
    (body.code, body.message)
}

// ---------------------------------------------------------------------------------------------------------------
// Panics anywhere on this thread, server tasks included

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            default(info);
        }));
    });
    PANICS.with(|p| p.set(0));
}

// ---------------------------------------------------------------------------------------------------------------
// The hand-written peer: the kit's raw peer, plus what this suite asserts of a session

/// The interop service's checks on the abused session.
trait Abused {
    async fn assert_call_works(&mut self, stream: u32);
    async fn assert_go_away_then_closed(&mut self, code: u32);
}

impl Abused for RawPeer {
    /// A normal call on a new stream of this (abused) session gets its echo: the session survived.
    async fn assert_call_works(&mut self, stream: u32) {
        let body = format!("on stream {stream}");
        let packets = self.call(stream, &unary(&path("Unary"), body.as_bytes())).await;
        assert_eq!(shape(&packets), [(1, 1, Kind::Message), (1, 2, Kind::CloseSend)], "on stream {stream}");
        assert_eq!(packets[0].data, echo(body.as_bytes()));
        assert!(!self.view(stream).rst, "stream {stream} was reset");
        assert!(self.view(stream).ack, "stream {stream} was never acknowledged");
    }

    /// rust-yamux 0.14 answers a protocol violation with GoAway and then carries on: its `Action::Terminate` only
    /// queues the frame, it neither closes the socket nor refuses later frames. hashicorp would end the session
    /// after its GoAway(1). So the session still serves a new stream.
    /// The crate answered a violation with GoAway(code). A Go peer ends its session on that GoAway, and our
    /// keepalive layer ends ours once the GoAway is out, as hashicorp does.
    async fn assert_go_away_then_closed(&mut self, code: u32) {
        assert_eq!(self.until_go_away().await, code, "GoAway code");
        self.until_eof("the transport to close after the GoAway").await;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Fixture: the abused session and a well-behaved one, served by the same Server

struct Fixture {
    peer: RawPeer,
    served: JoinHandle<SessionEnd>,
    good: Client,
    good_served: JoinHandle<SessionEnd>,
}

impl Fixture {
    fn new() -> Self {
        Self::with(ServerConfig::default(), |_| {})
    }

    fn with(config: ServerConfig, extra: impl FnOnce(&mut Router<()>)) -> Self {
        Self::observed(config, extra, None)
    }

    fn observed(
        config: ServerConfig,
        extra: impl FnOnce(&mut Router<()>),
        observer: Option<Arc<dyn CallObserver>>,
    ) -> Self {
        count_panics();
        let mut router = Router::<()>::new();
        register_interop(&mut router);
        extra(&mut router);
        let mut server = Server::new(router, config);
        if let Some(observer) = observer {
            server = server.with_observer(observer);
        }
        let (peer_io, server_io) = tokio::io::duplex(MIB);
        let abused = server.clone();
        let served = tokio::spawn(async move { abused.serve_session(server_io, (), CancellationToken::new()).await });
        let (good_io, good_server_io) = tokio::io::duplex(MIB);
        let good_served =
            tokio::spawn(async move { server.serve_session(good_server_io, (), CancellationToken::new()).await });
        let (session, _incoming) = spawn_session(good_io, Mode::Client, &SessionConfig::default());
        Fixture { peer: RawPeer::over(peer_io), served, good: Client::new(session, Limits::default()), good_served }
    }

    /// The other session, served by the same `Server` all along, still answers a normal call.
    async fn assert_other_session_works(&self) {
        let reply = within("a call on the other session", self.good.unary(&path("Unary"), b"unaffected"))
            .await
            .expect("the well-behaved session failed");
        assert_eq!(&reply[..], b"echo:unaffected");
        assert!(!self.good_served.is_finished(), "the well-behaved session ended");
    }

    /// How the abused session ended.
    async fn session_end(&mut self) -> SessionEnd {
        within("serve_session to return", &mut self.served).await.expect("serve_session panicked")
    }

    fn assert_session_running(&self) {
        assert!(!self.served.is_finished(), "the abused session ended");
    }

    /// GoAway(code), the transport closed, `serve_session` failed saying why, and the other session unharmed.
    async fn assert_ended_by_go_away(&mut self, code: u32) {
        self.peer.assert_go_away_then_closed(code).await;
        failed_with(self.session_end().await, &format!("GoAway({code})"));
        self.assert_other_session_works().await;
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_eq!(PANICS.with(Cell::get), 0, "a task panicked during the test (see stderr)");
        }
    }
}

/// Handlers of `HOLD` now running, and the most ever running at once.
#[derive(Clone, Default)]
struct Gauge {
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

struct Live(Gauge);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A unary method whose handler holds for a minute unless it is cancelled (dropped).
const HOLD: &str = "/test.Hold/Hold";

impl Gauge {
    fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// A fixture whose server also serves `HOLD`, counted by the returned gauge.
    fn fixture(config: ServerConfig) -> (Fixture, Gauge) {
        Self::observed_fixture(config, None)
    }

    fn observed_fixture(config: ServerConfig, observer: Option<Arc<dyn CallObserver>>) -> (Fixture, Gauge) {
        let gauge = Gauge::default();
        let handlers = gauge.clone();
        let fixture = Fixture::observed(
            config,
            move |router| {
                router.unary(HOLD, move |_, _| {
                    let gauge = handlers.clone();
                    async move {
                        let now = gauge.live.fetch_add(1, Ordering::SeqCst) + 1;
                        gauge.peak.fetch_max(now, Ordering::SeqCst);
                        let _live = Live(gauge);
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok(Bytes::new())
                    }
                });
            },
            observer,
        );
        (fixture, gauge)
    }

    /// Reads from the server until `live()` is `target`.
    async fn until_live(&self, peer: &mut RawPeer, target: usize) {
        peer.settle_until(&format!("{target} handlers running"), || self.live() == target).await;
    }
}

fn failed_with(end: SessionEnd, text: &str) {
    match end {
        SessionEnd::Failed(err) => assert!(err.to_string().contains(text), "session failed with {err}, not {text:?}"),
        other => panic!("expected the session to fail with {text:?}, got {other:?}"),
    }
}

// ===============================================================================================================
// yamux layer

/// §4.4 item 6: a header with version 1. The crate fails the session with a decode error and closes the transport
/// without a GoAway, as hashicorp does (`ErrInvalidVersion`).
#[tokio::test]
async fn yamux_version_other_than_zero_ends_the_session() {
    let mut f = Fixture::new();
    f.peer.send(&encode(1, TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0, &[])).await;
    f.peer.until_eof("the server to drop the session").await;
    assert!(f.peer.go_aways.is_empty(), "no GoAway expected, got {:?}", f.peer.go_aways);
    failed_with(f.session_end().await, "unknown version: 1");
    f.assert_other_session_works().await;
}

/// §4.4 item 6: frame type 4 (and 255). Session error, transport closed, no GoAway (hashicorp: the same).
#[tokio::test]
async fn yamux_type_above_three_ends_the_session() {
    for kind in [4u8, 255] {
        let mut f = Fixture::new();
        f.peer.assert_call_works(1).await;
        f.peer.send(&encode(0, kind, 0, 1, 0, &[])).await;
        f.peer.until_eof("the server to drop the session").await;
        assert!(f.peer.go_aways.is_empty());
        failed_with(f.session_end().await, &format!("unknown frame type: {kind}"));
        f.assert_other_session_works().await;
    }
}

/// §4.4 item 7: a Data frame one byte longer than the 256 KiB window of an open stream. The crate reads the body,
/// drops it and sends GoAway(1) (hashicorp: GoAway(1) and the session ends). Nothing of it reaches the stream.
#[tokio::test]
async fn data_longer_than_the_window_is_a_protocol_error() {
    let mut f = Fixture::new();
    f.peer.opened(1);
    f.peer.send(&syn(1)).await;
    f.peer.send(&data(1, &vec![0u8; WINDOW + 1])).await;
    f.assert_ended_by_go_away(1).await;
    // Stream 1 never saw the bytes: had they reached its dRPC connection (zeros are a frame of stream 0, an id
    // monotonicity violation), the server would have closed it with a FIN first.
    assert!(!f.peer.view(1).fin);
}

/// §4.4 item 7: declared Data lengths up to 2^32−1 must not allocate. Past the crate's 1 MiB frame cap the header
/// alone fails the session, so the server never waits for (or reserves) the body.
#[tokio::test]
async fn data_length_up_to_u32_max_fails_from_the_header_alone() {
    for length in [u32::MAX, (MIB + 1) as u32] {
        let mut f = Fixture::new();
        f.peer.opened(1);
        f.peer.send(&syn(1)).await;
        f.peer.send(&encode(0, TYPE_DATA, 0, 1, length, &[])).await;
        f.peer.until_eof("the server to drop the session").await;
        assert_eq!(f.peer.sent, 2 * HEADER_LEN);
        failed_with(f.session_end().await, "frame body is too large");
        f.assert_other_session_works().await;
    }
}

/// §4.4 item 8 (CVE-2026-32314 regression): SYN with a 256 KiB + 1 body. GoAway(1), no stream, no panic; a body of
/// exactly 256 KiB opens a stream and its call is served. (hashicorp: the same GoAway, then the session ends.)
#[tokio::test]
async fn syn_with_a_body_past_the_initial_window_is_refused() {
    let mut f = Fixture::new();
    f.peer.send(&syn_data(1, &vec![0u8; WINDOW + 1])).await;
    f.assert_ended_by_go_away(1).await;
    // The refused stream never existed: nothing came back on it.
    assert!(!f.peer.streams.contains_key(&1));
}

/// §4.4 item 8, the limit itself: a first body of exactly one window is served.
#[tokio::test]
async fn syn_with_a_body_of_exactly_the_initial_window_is_served() {
    let mut f = Fixture::new();
    // An Invoke, a Message (in 64 KiB frames) filling the rest and a CloseSend: exactly one window.
    let method = path("Unary");
    let mut body = vec![b'x'; WINDOW];
    while unary(&method, &body).len() > WINDOW {
        body.pop();
    }
    let call = unary(&method, &body);
    assert_eq!(call.len(), WINDOW);
    f.peer.opened(3);
    f.peer.send(&syn_data(3, &call)).await;
    f.peer.until_answered_on(3, 1).await;
    let packets = f.peer.packets(3);
    assert_eq!(shape(&packets), [(1, 1, Kind::Message), (1, 2, Kind::CloseSend)]);
    assert_eq!(packets[0].data, echo(&body));
    assert!(f.peer.go_aways.is_empty());
    f.assert_session_running();
}

/// §4.4 item 9 (CVE-2026-31814 regression): WindowUpdate deltas of 0xFFFF0000 overflow the send window. Checked
/// add: GoAway(1) for each, no panic; a SYN carrying such a delta is refused the same way. (hashicorp adds without
/// a check, u32 wrap-around, and carries on.)
#[tokio::test]
async fn window_update_credit_overflow_is_a_protocol_error_not_a_panic() {
    let mut f = Fixture::new();
    f.peer.opened(1);
    let mut bytes = syn(1);
    bytes.extend(window_update(0, 1, 0xFFFF_0000));
    bytes.extend(window_update(0, 1, 0xFFFF_0000));
    f.peer.send(&bytes).await;
    f.assert_ended_by_go_away(1).await;
}

/// §4.4 item 10: a second SYN for a live stream. GoAway(1) (hashicorp: `ErrDuplicateStream`, GoAway(1), session
/// ends); the live stream is untouched and still serves its call.
#[tokio::test]
async fn duplicate_syn_for_a_live_stream_is_a_protocol_error() {
    let mut f = Fixture::new();
    f.peer.opened(1);
    let mut twice = syn(1);
    twice.extend(syn(1));
    f.peer.send(&twice).await;
    f.assert_ended_by_go_away(1).await;
}

/// §4.4 item 10: SYN on stream 0 (the session's id), as WindowUpdate and as Data. GoAway(1) each time and no
/// stream. (hashicorp has no check for id 0 and would open the stream.)
#[tokio::test]
async fn syn_for_stream_zero_is_a_protocol_error() {
    let mut f = Fixture::new();
    let mut bytes = syn(0);
    bytes.extend(syn_data(0, &unary(&path("Unary"), b"zero")));
    f.peer.send(&bytes).await;
    f.assert_ended_by_go_away(1).await;
    assert!(!f.peer.streams.contains_key(&0), "the server answered on stream 0");
}

/// §4.4 item 10: an even (server-parity) stream id from the client. The crate checks parity: GoAway(1), no stream.
/// (hashicorp does not check parity and would serve it.)
#[tokio::test]
async fn even_stream_id_from_the_client_is_a_protocol_error() {
    let mut f = Fixture::new();
    f.peer.send(&syn_data(2, &unary(&path("Unary"), b"even"))).await;
    f.assert_ended_by_go_away(1).await;
    assert!(!f.peer.streams.contains_key(&2), "the server answered on stream 2");
}

/// §4.4 item 10: a stream id lower than an earlier one. Neither implementation requires increasing ids (hashicorp
/// only refuses duplicates), so both streams are served.
#[tokio::test]
async fn a_lower_stream_id_than_an_earlier_one_is_served() {
    let mut f = Fixture::new();
    f.peer.assert_call_works(9).await;
    f.peer.assert_call_works(3).await;
    assert!(f.peer.go_aways.is_empty());
    f.assert_other_session_works().await;
}

/// §4.4 item 11: frames for streams that never existed. The Data body is drained, not parsed: it holds what
/// would be a GoAway and a SYN for stream 1 if the server lost frame sync. WindowUpdate, ACK, FIN and RST for
/// unknown ids are ignored. Then a call on stream 1 works and no GoAway ever came (hashicorp: the same).
#[tokio::test]
async fn frames_for_unknown_streams_are_drained_without_desync() {
    let mut f = Fixture::new();
    let mut decoy = go_away(0);
    decoy.extend(syn_data(1, &unary(&path("Unary"), b"decoy")));
    f.peer.send(&data(7, &decoy)).await;
    f.peer.send(&data_frame(FLAG_FIN, 9, b"late bytes")).await;
    f.peer.send(&window_update(0, 11, 1000)).await;
    f.peer.send(&window_update(FLAG_ACK, 13, 0)).await;
    f.peer.send(&fin(15)).await;
    f.peer.send(&rst(17)).await;
    f.peer.assert_call_works(1).await;
    assert_eq!(f.peer.packets(1)[0].data, echo(b"on stream 1"), "the decoy call was served");
    assert!(f.peer.go_aways.is_empty(), "GoAway {:?}", f.peer.go_aways);
    for id in [7, 9, 11, 13, 15, 17] {
        assert!(!f.peer.streams.contains_key(&id), "the server answered on unknown stream {id}");
    }
    f.assert_session_running();
    f.assert_other_session_works().await;
}

/// §4.4 item 11: frames for a stream closed both ways: a whole new call on it is dropped unanswered (the stream is
/// gone; hashicorp drains it the same way), and the next stream works.
#[tokio::test]
async fn frames_for_a_closed_stream_are_dropped() {
    let mut f = Fixture::new();
    f.peer.assert_call_works(1).await;
    let answered_before = f.peer.view(1).data.len();
    f.peer.send(&data(1, &unary_on(2, &path("Unary"), b"late"))).await;
    f.peer.send(&window_update(0, 1, 1000)).await;
    f.peer.assert_call_works(3).await;
    assert_eq!(f.peer.view(1).data.len(), answered_before, "the closed stream answered");
    assert!(f.peer.go_aways.is_empty());
    f.assert_other_session_works().await;
}

/// §4.4 item 13: one stream past `SessionConfig.max_streams`, with every earlier stream still open (answered, not
/// closed by us). The crate refuses the extra SYN with GoAway(2, internal error) and drops its frames, but keeps
/// the session and the open streams, and once one closes a new stream works. (hashicorp would RST the excess
/// stream only, past its 256 accept backlog, and has no cap of its own.)
async fn check_max_streams(max_streams: usize) {
    let session = SessionConfig { max_streams, ..SessionConfig::default() };
    let mut f = Fixture::with(ServerConfig { session, ..ServerConfig::default() }, |_| {});
    let open: Vec<u32> = (0..max_streams as u32).map(|i| 2 * i + 1).collect();
    let mut burst = Vec::new();
    for &id in &open {
        f.peer.opened(id);
        burst.extend(syn_data(id, &unary(&path("Unary"), b"open")));
    }
    f.peer.send(&burst).await;
    f.peer.until("every stream answered", |p| open.iter().all(|&id| p.answered_on(id, 1))).await;
    let extra = 2 * max_streams as u32 + 1;
    f.peer.send(&syn_data(extra, &unary(&path("Unary"), b"one too many"))).await;
    // The crate refuses the session rather than the stream (hashicorp would RST just that stream); a Go peer
    // ends its session on GoAway(2) anyway.
    f.assert_ended_by_go_away(2).await;
    assert!(!f.peer.streams.contains_key(&extra), "the refused stream was answered");
}

/// §4.4 item 13 with the default cap (512 streams).
#[tokio::test]
async fn streams_past_the_default_max_streams_are_refused() {
    check_max_streams(SessionConfig::default().max_streams).await;
}

/// §4.4 item 13 with a small cap (4 streams).
#[tokio::test]
async fn streams_past_a_small_max_streams_are_refused() {
    check_max_streams(4).await;
}

/// §4.4 item 14: 2,000 SYN+RST pairs in one burst. Nothing panics; streams past the 512 limit meet GoAway while the
/// reset ones are still being dropped (hashicorp would RST what overflows its accept backlog); afterwards a normal
/// call works and the session is still up.
#[tokio::test]
async fn open_rst_churn_leaves_the_session_usable() {
    let mut f = Fixture::new();
    // 2,000 SYN+RST pairs in bursts of 100, each well under the stream limit, as fast as the server drops them.
    for burst_start in (0..2_000u32).step_by(100) {
        let mut burst = Vec::new();
        for i in burst_start..burst_start + 100 {
            let id = 2 * i + 1;
            burst.extend(syn(id));
            burst.extend(rst(id));
        }
        f.peer.send(&burst).await;
        f.peer.settle(Duration::from_millis(20)).await;
    }
    assert!(f.peer.go_aways.is_empty(), "{:?}", f.peer.go_aways);
    f.peer.assert_call_works(4_001).await;
    for id in (1..4_000).step_by(2) {
        assert!(f.peer.view(id).data.is_empty(), "data on reset stream {id}");
    }
    f.assert_session_running();
    f.assert_other_session_works().await;
}

/// §4.4 item 14, with handlers: 1,000 calls to a handler that would hold for a minute, opened in batches of 200 and
/// reset. A reset cancels the handler (the live count drops to 0 at once), and running handlers never exceed
/// `max_concurrent_calls` (128), however many streams are opened.
#[tokio::test]
async fn rapid_reset_cancels_handlers_and_running_handlers_stay_capped() {
    let (mut f, gauge) = Gauge::fixture(ServerConfig::default());
    let max_calls = ServerConfig::default().max_concurrent_calls;
    let mut next_id = 1u32;
    for _batch in 0..5 {
        let ids: Vec<u32> = (0..200).map(|i| next_id + 2 * i).collect();
        next_id += 400;
        let mut burst = Vec::new();
        for &id in &ids {
            burst.extend(syn_data(id, &unary(HOLD, b"")));
        }
        f.peer.send(&burst).await;
        gauge.until_live(&mut f.peer, max_calls).await;
        let mut resets = Vec::new();
        for &id in &ids {
            resets.extend(rst(id));
        }
        f.peer.send(&resets).await;
        gauge.until_live(&mut f.peer, 0).await;
    }
    assert_eq!(gauge.peak.load(Ordering::SeqCst), max_calls, "running handlers past max_concurrent_calls");
    f.peer.assert_call_works(next_id).await;
    f.assert_other_session_works().await;
}

/// `HOLD` calls the server reported cancelled.
#[derive(Default)]
struct CancelledHolds(AtomicUsize);

impl CallObserver for CancelledHolds {
    fn call_finished(&self, method: &str, outcome: CallOutcome, _elapsed: Duration) {
        if method == HOLD && outcome == CallOutcome::Cancelled {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A stream whose call waits for a slot behind `max_concurrent_calls` is acknowledged after `ack_delay`, as a slow
/// reply would be (a Go peer tears the session down over a stream left un-ACKed for 75 s), and one the peer resets
/// while it waits is let go then, not once a slot frees, and never takes the slot. The call still waiting gets the
/// slot when the running one ends.
#[tokio::test]
async fn a_call_waiting_for_a_slot_is_acknowledged_and_a_reset_one_is_let_go() {
    let config = ServerConfig { max_concurrent_calls: 1, ack_delay: Duration::from_millis(50), ..Default::default() };
    let cancelled = Arc::new(CancelledHolds::default());
    let (mut f, gauge) = Gauge::observed_fixture(config, Some(cancelled.clone()));
    f.peer.send(&syn_data(1, &unary(HOLD, b""))).await;
    gauge.until_live(&mut f.peer, 1).await;
    f.peer.send(&syn_data(3, &unary(HOLD, b""))).await;
    f.peer.until("the waiting stream's ACK", |p| p.view(3).ack).await;
    assert_eq!(gauge.live(), 1, "the waiting call started past max_concurrent_calls");
    assert!(f.peer.view(3).data.is_empty(), "the waiting call was answered");

    let mut reset = syn_data(5, &unary(HOLD, b""));
    reset.extend(rst(5));
    f.peer.send(&reset).await;
    let cancelled_count = || cancelled.0.load(Ordering::SeqCst);
    f.peer.settle_until("the reset call to be let go while stream 1 holds the slot", || cancelled_count() > 0).await;
    assert_eq!(gauge.live(), 1);
    assert!(!f.peer.view(5).ack, "the reset stream was acknowledged");

    // Stream 1's call ends (cancelled), and the waiting one takes its slot.
    f.peer.send(&rst(1)).await;
    let what = "stream 1's call cancelled and the waiting one running";
    f.peer.settle_until(what, || cancelled_count() >= 2 && gauge.live() == 1).await;
    assert_eq!(gauge.peak.load(Ordering::SeqCst), 1, "running handlers past max_concurrent_calls");
    assert_eq!(cancelled_count(), 2, "stream 1's call and the reset one");
    f.assert_other_session_works().await;
}

/// §4.4 item 17: GoAway(0) from the client while a call is in flight. The crate ends the whole session at once:
/// `serve_session` returns `PeerClosed`, the call gets no reply, the transport is closed, and a new SYN goes
/// nowhere. (hashicorp would only refuse new streams and let the call finish.)
#[tokio::test]
async fn go_away_from_the_client_ends_the_session() {
    let (mut f, gauge) = Gauge::fixture(ServerConfig::default());
    f.peer.opened(1);
    f.peer.send(&syn_data(1, &unary(HOLD, b""))).await;
    gauge.until_live(&mut f.peer, 1).await;
    let sent_at = Instant::now();
    f.peer.send(&go_away(0)).await;
    let end = f.session_end().await;
    assert!(matches!(end, SessionEnd::PeerClosed), "{end:?}");
    assert!(sent_at.elapsed() < Duration::from_secs(2), "the session waited for the call");
    f.peer.until_eof("the server to close the transport").await;
    assert_eq!(shape(&f.peer.packets(1)), []);
    let accepted = f.peer.try_send(syn_data(3, &unary(&path("Unary"), b"after"))).await;
    assert!(!accepted, "a SYN after GoAway was accepted by the transport");
    f.assert_other_session_works().await;
}

/// §4.4 item 17: data after FIN. hashicorp queues Data on a remote-closed stream and reads it before EOF; the crate
/// does the same, so the rest of a call sent after an early FIN is still read and answered (then the server
/// FINs). Once a stream is closed both ways, data for it is dropped (see `frames_for_a_closed_stream_are_dropped`).
#[tokio::test]
async fn data_after_fin_is_read_like_hashicorp_does() {
    let mut f = Fixture::new();
    f.peer.opened(1);
    let mut bytes = syn_data(1, &invoke(1, 1, &path("Unary")));
    bytes.extend(fin(1));
    let mut rest = packet(1, 2, Kind::Message, b"after fin");
    rest.extend(packet(1, 3, Kind::CloseSend, b""));
    bytes.extend(data(1, &rest));
    f.peer.send(&bytes).await;
    f.peer.until_fin(1).await;
    let packets = f.peer.packets(1);
    assert_eq!(shape(&packets), [(1, 1, Kind::Message), (1, 2, Kind::CloseSend)]);
    assert_eq!(packets[0].data, echo(b"after fin"));
    assert!(f.peer.go_aways.is_empty());
    f.peer.assert_call_works(3).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 18 / drpc-yamux.md §4.5: the client FINs right after CloseSend, in the same write. The Go server
/// treats EOF on its transport as cancellation, and so do we: the handler (which would hold for a minute) starts,
/// is dropped when the FIN is read, no reply comes, only our FIN back. A handler that has already finished when
/// the FIN is read (Unary) still answers.
#[tokio::test]
async fn client_fin_right_after_close_send_cancels_a_running_call() {
    let (mut f, gauge) = Gauge::fixture(ServerConfig::default());
    f.peer.opened(1);
    let mut bytes = syn_data(1, &unary(HOLD, b""));
    bytes.extend(fin(1));
    f.peer.send(&bytes).await;
    f.peer.assert_stream_dropped_without_reply(1).await;
    assert_eq!(gauge.peak.load(Ordering::SeqCst), 1, "the handler never started");
    assert_eq!(gauge.live(), 0, "the handler outlived the FIN");

    f.peer.opened(3);
    let mut bytes = syn_data(3, &unary(&path("Unary"), b"quick"));
    bytes.extend(fin(3));
    f.peer.send(&bytes).await;
    f.peer.until_fin(3).await;
    assert_eq!(shape(&f.peer.packets(3)), [(1, 1, Kind::Message), (1, 2, Kind::CloseSend)]);
    f.peer.assert_call_works(5).await;
    // Two streams served since: the dropped handler left no reply behind.
    assert_eq!(shape(&f.peer.packets(1)), [], "a reply came after all");
    f.assert_other_session_works().await;
}

// ===============================================================================================================
// dRPC layer

/// §4.4 item 20: a varint of 11 bytes (and one overflowing u64 in 10). Protocol error: the stream is closed with
/// no reply, as Go's drpc ends the connection; the session is unaffected.
#[tokio::test]
async fn varint_longer_than_ten_bytes_closes_the_stream() {
    let mut f = Fixture::new();
    let mut too_long = invoke(1, 1, &path("Unary"));
    too_long.push(0x05);
    too_long.extend_from_slice(&[0x80; 11]);
    too_long.push(0x01);
    let mut overflow = invoke(1, 1, &path("Unary"));
    overflow.extend_from_slice(&[0x05, 0x01, 0x02]);
    overflow.extend_from_slice(&[0xff; 9]);
    overflow.push(0x02);
    for (id, bytes) in [(1u32, too_long), (3, overflow)] {
        f.peer.opened(id);
        f.peer.send(&syn_data(id, &bytes)).await;
        f.peer.assert_stream_dropped_without_reply(id).await;
    }
    f.peer.assert_call_works(5).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 20: a frame that declares more data than the 4 MiB cap fails from its header: the stream closes after
/// a few dozen bytes, so the server never buffered (or waited for) 4 MiB.
#[tokio::test]
async fn frame_length_past_the_cap_fails_from_the_header() {
    let mut f = Fixture::new();
    for (id, declared) in [(1u32, (MAX_PACKET + 1) as u64), (3, u64::MAX)] {
        f.peer.opened(id);
        let mut bytes = invoke(1, 1, &path("Unary"));
        bytes.push(0x05);
        bytes.push(0x01);
        bytes.push(0x02);
        let mut len = BytesMut::new();
        agentwire_transport::wire::varint::encode(declared, &mut len);
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(&[b'x'; 100]);
        let before = f.peer.sent;
        f.peer.send(&syn_data(id, &bytes)).await;
        f.peer.assert_stream_dropped_without_reply(id).await;
        assert!(f.peer.sent - before < 200, "{} bytes sent before the stream closed", f.peer.sent - before);
    }
    f.peer.assert_call_works(5).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 20: a frame cut short by the client's FIN (truncated at EOF). The call is cancelled: no reply, FIN.
#[tokio::test]
async fn truncated_frame_at_eof_ends_the_call_without_a_reply() {
    let mut f = Fixture::new();
    f.peer.opened(1);
    let mut bytes = invoke(1, 1, &path("Unary"));
    let message = packet(1, 2, Kind::Message, &[b'y'; 100]);
    bytes.extend_from_slice(&message[..message.len() / 2]);
    f.peer.send(&syn_data(1, &bytes)).await;
    f.peer.send(&fin(1)).await;
    f.peer.assert_stream_dropped_without_reply(1).await;
    f.peer.assert_call_works(3).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 21: a Message packet growing past 4 MiB in 64 KiB frames, sent as fast as the yamux window allows.
/// "data overflow": the stream closes with no reply once the packet passes the cap, before the client could
/// send much more than 4 MiB. Memory stays bounded by the cap: the server took at most one frame past it.
#[tokio::test]
async fn packet_past_four_mib_across_frames_is_a_data_overflow() {
    let mut f = Fixture::new();
    let frame = drpc_frame(1, 2, Kind::Message, false, false, &[b'z'; 64 * KIB]);
    let frames = MAX_PACKET / (64 * KIB) + 16;
    let offset = f.peer.send_windowed(1, &invoke(1, 1, &path("Unary")), &frame, frames).await;
    f.peer.assert_stream_dropped_without_reply(1).await;
    // Everything up to the cap was taken without complaint; the stream closed within one frame and one window
    // of it.
    assert!(offset > MAX_PACKET, "closed after only {offset} bytes");
    assert!(offset <= MAX_PACKET + 64 * KIB + WINDOW + 1024, "the server read {offset} bytes before refusing");
    f.peer.assert_call_works(3).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 22: ids that go down, on the first frame (stream 0) and after a finished packet (message 1 again):
/// "id monotonicity violation", the stream closes without a reply.
#[tokio::test]
async fn non_monotonic_ids_close_the_stream() {
    let mut f = Fixture::new();
    let mut repeated = invoke(1, 1, &path("Unary"));
    repeated.extend(packet(1, 1, Kind::Message, b"again"));
    repeated.extend(packet(1, 2, Kind::CloseSend, b""));
    let cases = [(1u32, unary_on(0, &path("Unary"), b"zero")), (3, repeated)];
    for (id, bytes) in cases {
        f.peer.opened(id);
        f.peer.send(&syn_data(id, &bytes)).await;
        f.peer.assert_stream_dropped_without_reply(id).await;
    }
    f.peer.assert_call_works(5).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 22: the kind changes inside one packet (a Message frame without Done, then a CloseSend frame with the
/// same id): "packet kind change", the stream closes without a reply.
#[tokio::test]
async fn kind_change_mid_packet_closes_the_stream() {
    let mut f = Fixture::new();
    let mut bytes = invoke(1, 1, &path("Unary"));
    bytes.extend(drpc_frame(1, 2, Kind::Message, false, false, b"half"));
    bytes.extend(drpc_frame(1, 2, Kind::CloseSend, false, true, b""));
    f.peer.opened(1);
    f.peer.send(&syn_data(1, &bytes)).await;
    f.peer.assert_stream_dropped_without_reply(1).await;
    f.peer.assert_call_works(3).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 22: unknown kinds (0, 8, 63) without the Control flag are "unknown packet kind": the stream closes
/// without a reply.
#[tokio::test]
async fn unknown_kind_without_control_closes_the_stream() {
    let mut f = Fixture::new();
    for (id, code) in [(1u32, 0u8), (3, 8), (5, 63)] {
        let mut bytes = invoke(1, 1, &path("Unary"));
        bytes.extend(drpc_frame(1, 2, Kind::from_code(code), false, true, b"?"));
        bytes.extend(packet(1, 3, Kind::Message, b"m"));
        bytes.extend(packet(1, 4, Kind::CloseSend, b""));
        f.peer.opened(id);
        f.peer.send(&syn_data(id, &bytes)).await;
        f.peer.assert_stream_dropped_without_reply(id).await;
    }
    f.peer.assert_call_works(7).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 22: unknown kinds with the Control flag are ignored, and a known kind with the Control flag is handled
/// as usual: the call around them succeeds.
#[tokio::test]
async fn unknown_kind_with_control_is_ignored_and_the_call_succeeds() {
    let mut f = Fixture::new();
    let mut bytes = drpc_frame(1, 1, Kind::from_code(9), true, true, b"future");
    bytes.extend(invoke(1, 2, &path("Unary")));
    bytes.extend(drpc_frame(1, 3, Kind::from_code(0), true, true, b""));
    bytes.extend(drpc_frame(1, 4, Kind::from_code(63), true, false, b"multi"));
    bytes.extend(drpc_frame(1, 4, Kind::from_code(63), false, true, b"frame"));
    bytes.extend(drpc_frame(1, 5, Kind::Message, true, true, b"controlled"));
    bytes.extend(packet(1, 6, Kind::CloseSend, b""));
    f.peer.opened(1);
    f.peer.send(&syn_data(1, &bytes)).await;
    f.peer.until_answered_on(1, 1).await;
    let packets = f.peer.packets(1);
    assert_eq!(shape(&packets), [(1, 1, Kind::Message), (1, 2, Kind::CloseSend)]);
    assert_eq!(packets[0].data, echo(b"controlled"));
    f.peer.send(&fin(1)).await;
    f.peer.until_fin(1).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 23: a Message before any Invoke. Go's manager would wait for an Invoke that never comes; we end the
/// stream instead (protocol error, no reply, FIN).
#[tokio::test]
async fn message_before_invoke_closes_the_stream() {
    let mut f = Fixture::new();
    let mut bytes = packet(1, 1, Kind::Message, b"orphan");
    bytes.extend(invoke(1, 2, &path("Unary")));
    f.peer.opened(1);
    f.peer.send(&syn_data(1, &bytes)).await;
    f.peer.assert_stream_dropped_without_reply(1).await;
    f.peer.assert_call_works(3).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 23: two Invokes with the same dRPC stream id. Go: "invoke on existing stream" ends the connection;
/// ours closes the stream without a reply.
#[tokio::test]
async fn second_invoke_on_the_same_drpc_stream_closes_the_stream() {
    let mut f = Fixture::new();
    let mut bytes = invoke(1, 1, &path("Unary"));
    bytes.extend(invoke(1, 2, &path("Unary")));
    bytes.extend(packet(1, 3, Kind::Message, b"m"));
    bytes.extend(packet(1, 4, Kind::CloseSend, b""));
    f.peer.opened(1);
    f.peer.send(&syn_data(1, &bytes)).await;
    f.peer.assert_stream_dropped_without_reply(1).await;
    f.peer.assert_call_works(3).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 23: an unknown rpc gets drpcmux's answer word for word (code 0), and the same yamux stream then serves
/// a second Invoke with a higher dRPC stream id.
#[tokio::test]
async fn unknown_rpc_is_answered_and_the_stream_serves_the_next_invoke() {
    let mut f = Fixture::new();
    let nope = "/agentwire.interop.v1.Interop/Nope";
    f.peer.opened(1);
    f.peer.send(&syn_data(1, &unary(nope, b"?"))).await;
    f.peer.until_answered_on(1, 1).await;
    let packets = f.peer.packets(1);
    assert_eq!(shape(&packets), [(1, 1, Kind::Error)]);
    assert_eq!(error_of(&packets[0]), (0, format!(r#"protocol error: unknown rpc: "{nope}""#)));
    assert!(!f.peer.view(1).fin, "the stream must stay open for the next Invoke");

    f.peer.send(&data(1, &unary_on(2, &path("Unary"), b"second"))).await;
    f.peer.until_answered_on(1, 2).await;
    let packets = f.peer.packets(1);
    assert_eq!(shape(&packets), [(1, 1, Kind::Error), (2, 1, Kind::Message), (2, 2, Kind::CloseSend)]);
    assert_eq!(packets[1].data, echo(b"second"));
    f.peer.send(&fin(1)).await;
    f.peer.until_fin(1).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 23: Invoke and CloseSend with no Message: a unary handler's MsgRecv sees EOF, so the answer is Error
/// code 0 "EOF", as Go's.
#[tokio::test]
async fn invoke_and_close_send_without_a_message_is_eof() {
    let mut f = Fixture::new();
    let mut bytes = invoke(1, 1, &path("Unary"));
    bytes.extend(packet(1, 2, Kind::CloseSend, b""));
    f.peer.opened(1);
    f.peer.send(&syn_data(1, &bytes)).await;
    f.peer.until_answered_on(1, 1).await;
    let packets = f.peer.packets(1);
    assert_eq!(shape(&packets), [(1, 1, Kind::Error)]);
    assert_eq!(error_of(&packets[0]), (0, "EOF".to_owned()));
    f.peer.send(&fin(1)).await;
    f.peer.until_fin(1).await;
    f.peer.assert_call_works(3).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 24: Cancel (kind 4, Control) in the middle of a call whose handler would hold for a minute. The
/// handler is dropped at once and the call ends without a reply. As with Go's soft cancel the transport stays
/// open: the server does not FIN, and the next Invoke on the same yamux stream is served. The stream is FINed
/// after ours.
#[tokio::test]
async fn cancel_mid_call_drops_the_handler_and_keeps_the_stream() {
    let (mut f, gauge) = Gauge::fixture(ServerConfig::default());
    f.peer.opened(1);
    f.peer.send(&syn_data(1, &unary(HOLD, b""))).await;
    gauge.until_live(&mut f.peer, 1).await;
    f.peer.send(&data(1, &drpc_frame(1, 4, Kind::Cancel, true, true, b""))).await;
    gauge.until_live(&mut f.peer, 0).await;
    assert_eq!(shape(&f.peer.packets(1)), [], "the cancelled call was answered");
    assert!(!f.peer.view(1).fin, "soft cancel keeps the transport open");

    // The next Invoke's answer on the same stream shows what came before it: no answer to the cancelled call, and
    // no FIN (a FINed stream could not carry the answer).
    f.peer.send(&data(1, &unary_on(2, &path("Unary"), b"next"))).await;
    f.peer.until_answered_on(1, 2).await;
    let packets = f.peer.packets(1);
    assert_eq!(shape(&packets), [(2, 1, Kind::Message), (2, 2, Kind::CloseSend)]);
    assert!(!f.peer.view(1).fin, "soft cancel keeps the transport open");
    assert_eq!(packets[0].data, echo(b"next"));
    f.peer.send(&fin(1)).await;
    f.peer.until_fin(1).await;
    f.peer.assert_call_works(3).await;
    f.assert_other_session_works().await;
}

/// §4.4 item 25: an Error packet from the client shorter than 8 bytes (3 bytes, then empty), each in the middle
/// of a held call. Go's client reads such a body as "invalid error data"; here it ends the call like any client
/// Error: the handler is dropped, no reply, no panic decoding it, and the stream serves the next Invoke.
#[tokio::test]
async fn short_error_packet_from_the_client_ends_the_call() {
    let (mut f, gauge) = Gauge::fixture(ServerConfig::default());
    f.peer.opened(1);
    f.peer.send(&syn_data(1, &[])).await;
    for (drpc_stream, body) in [(1u64, &b"bad"[..]), (2, &b""[..])] {
        let mut call = invoke(drpc_stream, 1, HOLD);
        call.extend(packet(drpc_stream, 2, Kind::Message, b""));
        f.peer.send(&data(1, &call)).await;
        gauge.until_live(&mut f.peer, 1).await;
        f.peer.send(&data(1, &packet(drpc_stream, 3, Kind::Error, body))).await;
        gauge.until_live(&mut f.peer, 0).await;
    }
    f.peer.send(&data(1, &unary_on(3, &path("Unary"), b"third"))).await;
    f.peer.until_answered_on(1, 3).await;
    let packets = f.peer.packets(1);
    assert_eq!(shape(&packets), [(3, 1, Kind::Message), (3, 2, Kind::CloseSend)]);
    assert_eq!(packets[0].data, echo(b"third"));
    f.peer.send(&fin(1)).await;
    f.peer.until_fin(1).await;
    f.assert_other_session_works().await;
}

fn metadata_of_encoded_len(len: usize) -> Metadata {
    // One entry; find the value length that makes the encoding exactly `len` bytes.
    (0..len)
        .rev()
        .map(|n| Metadata::from([("k".to_owned(), "v".repeat(n))]))
        .find(|md| encode_metadata(md).len() <= len)
        .filter(|md| encode_metadata(md).len() == len)
        .expect("no single-entry map of that size")
}

/// §4.4 item 26: InvokeMetadata one byte over the 64 KiB `max_metadata_size` (sent across two frames): protocol
/// error, the stream closes without a reply. Exactly 64 KiB is accepted and the call is served.
#[tokio::test]
async fn oversized_invoke_metadata_closes_the_stream() {
    let mut f = Fixture::new();
    let max = Limits::default().max_metadata_size;
    for (id, len, accepted) in [(1u32, max + 1, false), (3, max, true)] {
        let metadata = encode_metadata(&metadata_of_encoded_len(len));
        assert_eq!(metadata.len(), len);
        let mut bytes = packet(1, 1, Kind::InvokeMetadata, &metadata);
        bytes.extend(packet(1, 2, Kind::Invoke, path("Unary").as_bytes()));
        bytes.extend(packet(1, 3, Kind::Message, b"md"));
        bytes.extend(packet(1, 4, Kind::CloseSend, b""));
        f.peer.opened(id);
        f.peer.send(&syn_data(id, &bytes)).await;
        if accepted {
            f.peer.until_answered_on(id, 1).await;
            assert_eq!(f.peer.packets(id)[0].data, echo(b"md"));
            f.peer.send(&fin(id)).await;
            f.peer.until_fin(id).await;
        } else {
            f.peer.assert_stream_dropped_without_reply(id).await;
        }
    }
    f.peer.assert_call_works(5).await;
    f.assert_other_session_works().await;
}
