//! Targets `drpc_conn` (server role) and `drpc_conn_client` (client role): one `stream::Connection` driven by a
//! script of ops, with a well-behaved peer `Connection` of the other role decoding everything it transmits.
//!
//! Input: one limits byte, then ops until the input ends. Limits byte `l`: `max_packet_size =
//! MAX_PACKET[l & 7]`, `split_size = SPLIT[(l >> 3) & 7]`, `max_metadata_size = MAX_METADATA[l >> 6]`
//! (`0xff` is [`Limits::default`]). Each op is a tag byte, `tag % 10` selecting:
//!
//! | tag | op | operands |
//! | --- | --- | --- |
//! | 0 | `Input(bytes)` | u16 LE length, bytes: fed to `handle_input` |
//! | 1 | `PollEvents` | `poll_event` until it returns `Ok(None)` or an error |
//! | 2 | `PollOne` | a single `poll_event` |
//! | 3 | `SendMessage(sel, bytes)` | selector byte, u16 LE length, bytes |
//! | 4 | `SendCloseSend(sel)` | selector byte |
//! | 5 | `SendError(sel, code, text)` | selector byte, code ([`Reader::id`]), u8 length, text (lossy UTF-8) |
//! | 6 | `SendClose(sel)` | selector byte |
//! | 7 | `SendCancel(sel)` | selector byte |
//! | 8 | `Transmit` | `poll_transmit`, checked and handed to the peer |
//! | 9 | `StartCall(method, metadata)` | u8 length + method, entry count byte (`% 4`), then per entry u8 length + key, u8 length + value (all lossy UTF-8) |
//!
//! A selector byte below 0x80 names the current stream (the active one, else the last one seen); otherwise
//! stream `sel & 0x7f`.
//!
//! Properties checked:
//! - no panic; after `poll_event` returns `Ok(None)`, `buffered_input() < max_packet_size + MAX_FRAME_HEADER_LEN`
//!   (an incomplete frame and the partial packet it belongs to never hold more than the cap between them);
//! - once `poll_event` fails, every later call fails with the same error, whatever else is fed;
//! - events make sense per stream: stream ids never go down; a server sees `Invoke` first; nothing follows
//!   `Close`, `Cancel`, `Error` or `Superseded`; no `Message` or second `CloseSend` after `CloseSend`;
//! - sends agree with `is_finished`, a server cannot `start_call`, a client's call ids count up from 1;
//! - every `poll_transmit` is whole frames ending on a packet boundary, with Go's flags and split sizes, never an
//!   Invoke from a server, and `pending_transmit()` announced its length;
//! - the peer decodes everything transmitted without a protocol error and sees exactly the events our
//!   successful sends stand for, in order. The server's peer is a client that called `start_call`, and calls it
//!   again for each newer stream the server answers on, as a real client would have opened it first. A client's
//!   call ids count 1, 2, 3…, while the server may answer on any ids that go up (they come from the fuzzed
//!   input), so each frame's stream id is mapped, in order, onto the client's call id before the peer decodes
//!   it. Packets the peer gets for a call it has left are dropped, as in Go, so those are not expected.

use std::collections::VecDeque;

use agentwire_transport::limits::{
    Limits, DEFAULT_MAX_METADATA_SIZE, DEFAULT_MAX_PACKET_SIZE, DEFAULT_SPLIT_SIZE, KIB, MIB,
};
use agentwire_transport::stream::{ConnError, Connection, Event, Role, SendError};
use agentwire_transport::wire::frame::encode_frame;
use agentwire_transport::wire::frame::MAX_FRAME_HEADER_LEN;
use agentwire_transport::wire::{ErrorBody, Frame, Id, Kind, Metadata};
use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;

use crate::Reader;

pub const MAX_PACKET: [usize; 8] = [1, 8, 64, 256, KIB, 4 * KIB, 64 * KIB, DEFAULT_MAX_PACKET_SIZE];
pub const SPLIT: [usize; 8] = [1, 2, 7, 16, 64, 256, KIB, DEFAULT_SPLIT_SIZE];
pub const MAX_METADATA: [usize; 4] = [0, 16, 256, DEFAULT_MAX_METADATA_SIZE];

/// The peer is generous: it must never be the one to refuse.
const PEER_LIMITS: Limits =
    Limits { max_packet_size: 64 * MIB, split_size: DEFAULT_SPLIT_SIZE, max_metadata_size: 64 * MIB };

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sel {
    Current,
    Id(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Input(Vec<u8>),
    PollEvents,
    PollOne,
    SendMessage(Sel, Vec<u8>),
    SendCloseSend(Sel),
    SendError(Sel, u64, String),
    SendClose(Sel),
    SendCancel(Sel),
    Transmit,
    StartCall(String, Metadata),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInput {
    pub limits: Limits,
    pub ops: Vec<Op>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl ConnInput {
    pub fn parse(data: &[u8]) -> ConnInput {
        let mut r = Reader::new(data);
        let l = r.u8();
        let limits = Limits {
            max_packet_size: MAX_PACKET[usize::from(l & 7)],
            split_size: SPLIT[usize::from((l >> 3) & 7)],
            max_metadata_size: MAX_METADATA[usize::from(l >> 6)],
        };
        let mut ops = Vec::new();
        while !r.is_empty() {
            let tag = r.u8();
            let sel = |r: &mut Reader<'_>| match r.u8() {
                b if b < 0x80 => Sel::Current,
                b => Sel::Id(u64::from(b & 0x7f)),
            };
            let op = match tag % 10 {
                0 => {
                    let n = r.u16();
                    Op::Input(r.bytes(n.into()).to_vec())
                }
                1 => Op::PollEvents,
                2 => Op::PollOne,
                3 => {
                    let s = sel(&mut r);
                    let n = r.u16();
                    Op::SendMessage(s, r.bytes(n.into()).to_vec())
                }
                4 => Op::SendCloseSend(sel(&mut r)),
                5 => {
                    let s = sel(&mut r);
                    let code = r.id();
                    let n = r.u8();
                    Op::SendError(s, code, lossy(r.bytes(n.into())))
                }
                6 => Op::SendClose(sel(&mut r)),
                7 => Op::SendCancel(sel(&mut r)),
                8 => Op::Transmit,
                _ => {
                    let n = r.u8();
                    let method = lossy(r.bytes(n.into()));
                    let mut metadata = Metadata::new();
                    for _ in 0..r.u8() % 4 {
                        let n = r.u8();
                        let key = lossy(r.bytes(n.into()));
                        let n = r.u8();
                        let value = lossy(r.bytes(n.into()));
                        metadata.insert(key, value);
                    }
                    Op::StartCall(method, metadata)
                }
            };
            ops.push(op);
        }
        ConnInput { limits, ops }
    }
}

impl<'a> Arbitrary<'a> for ConnInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(ConnInput::parse(u.bytes(u.len())?))
    }

    fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(ConnInput::parse(u.take_rest()))
    }
}

pub fn run_server(data: &[u8]) {
    run(Role::Server, &ConnInput::parse(data));
}

pub fn run_client(data: &[u8]) {
    run(Role::Client, &ConnInput::parse(data));
}

/// What a run exercised (for the replay test's sanity checks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Events the connection under test produced.
    pub events: usize,
    /// Events the peer saw and matched against our sends.
    pub peer_events: usize,
    pub transmitted: usize,
    pub failed: bool,
}

/// Checks relaxed for transport bugs already reported, so fuzzing goes on past them. Each has a reproducer in
/// `fuzz/regressions/` and an ignored strict test in `tests/replay.rs`; flip it to `false` once the fix lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// A repeated CloseSend packet from the peer yields a second `Event::CloseSend` for the same stream (Go's
    /// `sigs.recv.Set(io.EOF)` is idempotent: one EOF). Drivers today ignore the repeat, so it is tolerated.
    pub tolerate_duplicate_close_send: bool,
}

impl Checks {
    /// What the fuzz targets and the replay test use.
    pub const FUZZ: Checks = Checks { tolerate_duplicate_close_send: false };
    pub const STRICT: Checks = Checks { tolerate_duplicate_close_send: false };
}

pub fn run(role: Role, input: &ConnInput) -> Stats {
    run_checked(role, input, Checks::FUZZ)
}

pub fn run_checked(role: Role, input: &ConnInput, checks: Checks) -> Stats {
    let mut h = Harness::new(role, input.limits, checks);
    for op in &input.ops {
        h.apply(op);
    }
    h.apply(&Op::PollEvents);
    h.apply(&Op::Transmit);
    h.stats.failed = h.failed.is_some();
    h.stats
}

fn event_stream(event: &Event) -> u64 {
    match event {
        Event::Invoke { stream, .. }
        | Event::Message { stream, .. }
        | Event::CloseSend { stream }
        | Event::Close { stream }
        | Event::Cancel { stream }
        | Event::Error { stream, .. }
        | Event::Superseded { stream } => *stream,
    }
}

/// What the events of the connection under test have said about its latest stream.
#[derive(Debug, Default)]
struct StreamView {
    id: u64,
    seen: bool,
    invoked: bool,
    half_closed: bool,
    ended: bool,
}

struct Harness {
    role: Role,
    limits: Limits,
    conn: Connection,
    failed: Option<ConnError>,
    view: StreamView,
    /// The stream named by `Sel::Current` when none is active.
    last_stream: u64,
    /// Client only: the id of the last call started.
    last_call: u64,
    peer: Peer,
    stats: Stats,
    checks: Checks,
}

/// The other end: decodes what the connection under test transmits.
struct Peer {
    conn: Connection,
    /// Events our successful sends stand for (in the peer's stream ids), not yet transmitted.
    expected: VecDeque<Event>,
    /// Server's peer: the call its client side is on. Client's peer: the stream the server side has open.
    stream: Option<u64>,
    /// Server's peer: (server stream id, client call id), both increasing.
    streams: Vec<(u64, u64)>,
}

impl Harness {
    fn new(role: Role, limits: Limits, checks: Checks) -> Self {
        let peer = match role {
            Role::Server => {
                let mut conn = Connection::new(Role::Client, PEER_LIMITS);
                let id = conn.start_call("/fuzz.Peer/Call", &Metadata::new()).expect("a client starts calls");
                assert_eq!(id, 1);
                let _ = conn.poll_transmit();
                Peer { conn, expected: VecDeque::new(), stream: Some(id), streams: Vec::new() }
            }
            Role::Client => Peer {
                conn: Connection::new(Role::Server, PEER_LIMITS),
                expected: VecDeque::new(),
                stream: None,
                streams: Vec::new(),
            },
        };
        Harness {
            role,
            limits,
            conn: Connection::new(role, limits),
            failed: None,
            view: StreamView::default(),
            last_stream: 1,
            last_call: 0,
            peer,
            stats: Stats::default(),
            checks,
        }
    }

    fn resolve(&self, sel: Sel) -> u64 {
        match sel {
            Sel::Current => self.conn.active_stream().unwrap_or(self.last_stream),
            Sel::Id(id) => id,
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Input(bytes) => self.conn.handle_input(bytes),
            Op::PollEvents => while self.poll() {},
            Op::PollOne => {
                self.poll();
            }
            Op::SendMessage(sel, data) => {
                let s = self.resolve(*sel);
                let finished = self.conn.is_finished(s);
                let result = self.conn.send_message(s, data);
                self.sent(s, finished, result, Event::Message { stream: s, data: data.clone().into() });
            }
            Op::SendCloseSend(sel) => {
                let s = self.resolve(*sel);
                let finished = self.conn.is_finished(s);
                let result = self.conn.send_close_send(s);
                self.sent(s, finished, result, Event::CloseSend { stream: s });
            }
            Op::SendError(sel, code, text) => {
                let s = self.resolve(*sel);
                let finished = self.conn.is_finished(s);
                let result = self.conn.send_error(s, *code, text);
                let error = ErrorBody { code: *code, message: text.clone() };
                self.sent(s, finished, result, Event::Error { stream: s, error });
            }
            Op::SendClose(sel) => {
                let s = self.resolve(*sel);
                let finished = self.conn.is_finished(s);
                let result = self.conn.send_close(s);
                self.sent(s, finished, result, Event::Close { stream: s });
            }
            Op::SendCancel(sel) => {
                let s = self.resolve(*sel);
                let finished = self.conn.is_finished(s);
                let result = self.conn.send_cancel(s);
                self.sent(s, finished, result, Event::Cancel { stream: s });
            }
            Op::Transmit => self.transmit(),
            Op::StartCall(method, metadata) => self.start_call(method, metadata),
        }
    }

    /// One `poll_event`; true when it returned an event (worth polling again).
    fn poll(&mut self) -> bool {
        let result = self.conn.poll_event();
        if let Some(first) = &self.failed {
            assert_eq!(result.as_ref(), Err(first), "a failed connection must keep failing the same way");
            return false;
        }
        match result {
            Ok(Some(event)) => {
                self.check_event(&event);
                self.stats.events += 1;
                true
            }
            Ok(None) => {
                // One incomplete frame plus the partial packet it continues, which must fit the cap together.
                let bound = self.limits.max_packet_size + MAX_FRAME_HEADER_LEN;
                let buffered = self.conn.buffered_input();
                assert!(buffered < bound, "{buffered} bytes buffered after Ok(None), bound {bound}");
                false
            }
            Err(err) => {
                // The same error again, at once and after more input.
                assert_eq!(self.conn.poll_event(), Err(err.clone()));
                self.conn.handle_input(&[0x05, 0x01, 0x01, 0x00]);
                assert_eq!(self.conn.poll_event(), Err(err.clone()));
                self.failed = Some(err);
                false
            }
        }
    }

    fn check_event(&mut self, event: &Event) {
        let s = event_stream(event);
        let v = &mut self.view;
        assert!(s >= v.id, "event for stream {s} after events for stream {}: {event:?}", v.id);
        if s > v.id || !v.seen {
            *v = StreamView { id: s, seen: true, ..StreamView::default() };
        } else {
            assert!(!v.ended, "{event:?} after the stream ended");
        }
        self.last_stream = self.last_stream.max(s);
        match event {
            Event::Invoke { .. } => {
                assert_eq!(self.role, Role::Server, "a client got an Invoke event");
                assert!(!v.invoked, "second Invoke for stream {s}");
                v.invoked = true;
            }
            _ if self.role == Role::Server => {
                assert!(v.invoked, "{event:?} before the stream's Invoke");
            }
            _ => {
                assert!(s >= 1 && s <= self.last_call, "client event {event:?} for a call it never started");
            }
        }
        match event {
            Event::Invoke { .. } => {}
            Event::Message { .. } => assert!(!v.half_closed, "Message after CloseSend"),
            Event::CloseSend { .. } => {
                assert!(!v.half_closed || self.checks.tolerate_duplicate_close_send, "second CloseSend");
                v.half_closed = true;
            }
            Event::Close { .. } | Event::Cancel { .. } | Event::Error { .. } | Event::Superseded { .. } => {
                v.ended = true;
            }
        }
    }

    fn sent(&mut self, stream: u64, was_finished: bool, result: Result<(), SendError>, event: Event) {
        match result {
            Ok(()) => {
                assert!(!was_finished, "sent on stream {stream}, which is_finished");
                self.peer.expect(self.role, stream, event);
            }
            Err(SendError::StreamFinished) => assert!(was_finished, "StreamFinished on live stream {stream}"),
            Err(SendError::SendClosed) => {
                assert!(!was_finished);
                assert!(matches!(event, Event::Message { .. } | Event::CloseSend { .. }));
            }
            Err(SendError::NotAClient) => panic!("NotAClient from a send"),
        }
    }

    fn start_call(&mut self, method: &str, metadata: &Metadata) {
        let result = self.conn.start_call(method, metadata);
        if self.role == Role::Server {
            assert_eq!(result, Err(SendError::NotAClient));
            return;
        }
        let id = result.expect("a client can always start a call");
        assert_eq!(id, self.last_call + 1, "call ids count up from 1");
        self.last_call = id;
        self.last_stream = self.last_stream.max(id);
        assert_eq!(self.conn.active_stream(), Some(id));
        assert!(!self.conn.is_finished(id));
        // The server side supersedes its open stream, if any, then sees the call.
        if let Some(open) = self.peer.stream.take() {
            self.peer.expected.push_back(Event::Superseded { stream: open });
        }
        self.peer.expected.push_back(Event::Invoke {
            stream: id,
            method: method.to_owned(),
            metadata: metadata.clone(),
        });
        self.peer.stream = Some(id);
    }

    fn transmit(&mut self) {
        let pending = self.conn.pending_transmit();
        let Some(bytes) = self.conn.poll_transmit() else {
            assert_eq!(pending, 0);
            assert!(self.peer.expected.is_empty(), "sends succeeded but nothing to transmit");
            return;
        };
        assert_eq!(bytes.len(), pending);
        assert!(!bytes.is_empty());
        assert_eq!(self.conn.pending_transmit(), 0);
        check_output(self.role, self.limits.split_size, &bytes);
        self.stats.transmitted += bytes.len();
        self.stats.peer_events += self.peer.receive(self.role, &bytes);
    }
}

impl Peer {
    fn expect(&mut self, role: Role, stream: u64, event: Event) {
        match role {
            Role::Server => {
                let call = match self.streams.last() {
                    Some(&(server, call)) if server == stream => call,
                    last => {
                        if let Some(&(server, _)) = last {
                            assert!(stream > server, "server answered on stream {stream} after {server}");
                        }
                        // A client opened this stream before the server could answer on it. Its first one is the
                        // call started in `Harness::new`.
                        let call = if last.is_none() {
                            self.stream.expect("the first call")
                        } else {
                            let id = self.conn.start_call("/fuzz.Peer/Call", &Metadata::new()).expect("client");
                            let _ = self.conn.poll_transmit();
                            self.stream = Some(id);
                            id
                        };
                        self.streams.push((stream, call));
                        call
                    }
                };
                self.expected.push_back(with_stream(event, call));
            }
            Role::Client => {
                if matches!(event, Event::Close { .. } | Event::Cancel { .. } | Event::Error { .. }) {
                    // The server side's stream ends with these (it never sends, so CloseSend alone does not).
                    self.stream = None;
                }
                self.expected.push_back(event);
            }
        }
    }

    /// Returns how many events the peer matched.
    fn receive(&mut self, role: Role, bytes: &[u8]) -> usize {
        let mapped;
        let bytes = if role == Role::Server {
            mapped = self.map_streams(bytes);
            &mapped[..]
        } else {
            bytes
        };
        self.conn.handle_input(bytes);
        let mut got = Vec::new();
        loop {
            match self.conn.poll_event() {
                Ok(Some(event)) => got.push(event),
                Ok(None) => break,
                Err(err) => panic!("the peer refused our output: {err}\noutput: {bytes:02x?}"),
            }
        }
        let mut expected: Vec<Event> = self.expected.drain(..).collect();
        if role == Role::Server {
            // Packets for a call the client has already left are dropped, as Go's manager does.
            let current = self.stream.expect("the server's peer always has a call");
            expected.retain(|e| event_stream(e) == current);
        }
        assert_eq!(got, expected, "the peer saw other events than our sends stand for");
        got.len()
    }
}

impl Peer {
    /// The server's output with each stream id replaced by the client call id it stands for.
    fn map_streams(&self, bytes: &[u8]) -> BytesMut {
        let mut buf = BytesMut::from(bytes);
        let mut out = BytesMut::with_capacity(bytes.len());
        while let Some(frame) = Frame::decode(&mut buf, usize::MAX >> 1).expect("checked by check_output") {
            let &(_, call) = self
                .streams
                .iter()
                .find(|(server, _)| *server == frame.id.stream)
                .unwrap_or_else(|| panic!("server sent on stream {} without a successful send", frame.id.stream));
            let id = Id::new(call, frame.id.message);
            encode_frame(&mut out, id, frame.kind, frame.control, frame.done, &frame.data);
        }
        out
    }
}

fn with_stream(event: Event, s: u64) -> Event {
    match event {
        Event::Invoke { method, metadata, .. } => Event::Invoke { stream: s, method, metadata },
        Event::Message { data, .. } => Event::Message { stream: s, data },
        Event::CloseSend { .. } => Event::CloseSend { stream: s },
        Event::Close { .. } => Event::Close { stream: s },
        Event::Cancel { .. } => Event::Cancel { stream: s },
        Event::Error { error, .. } => Event::Error { stream: s, error },
        Event::Superseded { .. } => Event::Superseded { stream: s },
    }
}

/// Whatever `poll_transmit` returns is whole frames ending on a packet boundary, flagged and split as Go does.
fn check_output(role: Role, split_size: usize, bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    let mut last_done = false;
    loop {
        let frame = match Frame::decode(&mut buf, usize::MAX >> 1) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                assert!(buf.is_empty(), "poll_transmit ended inside a frame");
                break;
            }
            Err(err) => panic!("our own output does not decode: {err}"),
        };
        assert!(!matches!(frame.kind, Kind::Unknown(_)), "sent an unknown kind");
        if role == Role::Server {
            assert!(!matches!(frame.kind, Kind::Invoke | Kind::InvokeMetadata), "a server sent {:?}", frame.kind);
        }
        assert_eq!(frame.control, frame.kind == Kind::Cancel, "control flag on {:?}", frame.kind);
        if matches!(frame.kind, Kind::Invoke | Kind::InvokeMetadata | Kind::Message) {
            assert!(frame.data.len() <= split_size.max(1), "frame of {} past split {split_size}", frame.data.len());
        } else {
            assert!(frame.done, "{:?} sent in pieces", frame.kind);
        }
        last_done = frame.done;
    }
    assert!(last_done, "poll_transmit ended inside a packet");
}
