//! Target `ws_bytes`: `io::ws::WsByteStream` over a scripted in-memory WebSocket (a `Stream` + `Sink` of a test
//! message type implementing `WsMessage`), polled directly with a no-op waker inside a current-thread tokio runtime
//! whose clock is paused (time moves only by `Tick`): no sockets, no real time.
//!
//! Input: a header byte (`& 1`: built with `WsByteStream::with_pings(15 s, 30 s)` instead of `new`), then ops
//! until the input ends, each a tag byte, `tag % 13` selecting:
//!
//! | tag | op | operands |
//! | --- | --- | --- |
//! | 0 | `Binary(bytes)` arrives | u16 LE length, bytes |
//! | 1 | `Text` arrives | |
//! | 2 | `Ping` (control) arrives | |
//! | 3 | `Close` arrives | |
//! | 4 | the stream yields `Err(text)` | u8 length, text (lossy UTF-8) |
//! | 5 | the stream ends (`None`) | |
//! | 6 | `Read(cap)`: one `poll_read` into a buffer of `cap` bytes | u16 LE, `% 4097` |
//! | 7 | `Write(len, fill)`: one `poll_write` of `len` bytes `fill, fill+1, …` | u16 LE, u8 |
//! | 8 | `Flush`: one `poll_flush` | |
//! | 9 | `Shutdown`: one `poll_shutdown` | |
//! | 10 | `Sink(mode)`: the sink becomes ready, pending or failing | u8 `% 3` |
//! | 11 | `BinaryFill(len, fill)` arrives: a large binary message from two operands | u16 LE, u8 |
//! | 12 | `Tick(secs)`: the paused clock moves on | u8 `% 64` |
//!
//! With nothing queued (and no end), the stream is `Pending`, as a socket would be.
//!
//! Read properties: the bytes read are always a prefix of the concatenation of the binary messages up to the
//! first Text, Close, error or end, and all of it is read before that terminal shows; a Text message yields
//! `ErrorKind::InvalidData` and a stream error `ErrorKind::Other` with its text, each exactly once, after which
//! reads report EOF; Close and end report EOF (a read of 0 bytes into a non-empty buffer) and EOF stays EOF;
//! `Pending` only when every byte that arrived has been read and no terminal has arrived. Nothing after the
//! terminal is ever read.
//!
//! Write properties: `poll_write` takes all bytes or none (`Pending`/error only while at least
//! `WS_WRITE_COALESCE` bytes wait and the sink is not ready); the messages sent are non-empty binary messages
//! whose concatenation is always a prefix of the bytes accepted; a message sent from `poll_write` carries at least
//! `WS_WRITE_COALESCE` bytes; a successful flush or shutdown has sent everything accepted.
//!
//! Liveness properties (with pings): a read fails with `ErrorKind::TimedOut` once 30 s passed since the stream
//! last yielded anything, and keeps failing; otherwise a read at or past the ping deadline sends exactly one Ping
//! (when the sink is ready) and moves the deadline 15 s on; nothing else ever sends a Ping. Once the stream has
//! ended (EOF or a read error was reported) reads keep reporting EOF: no timeout, no more pings.
//!
//! Over 600 lines: the scripted WebSocket, its frame model and the checks are one harness.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use agentwire_transport::io::ws::{WsByteStream, WsFrame, WsMessage, WS_WRITE_COALESCE};
use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Checks relaxed for transport bugs already reported, so fuzzing goes on past them (reproducers in
/// `fuzz/regressions/ws_bytes/`, strict test in `ws/tests/replay.rs`). Flip to `false` once the fix lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// With pings on, `poll_read` runs the liveness check before it looks at `read_closed`: after EOF (a Close,
    /// the end of the stream) or a read error, a later read fails with `TimedOut` once 30 s pass, and sends pings
    /// while they fall due. Tolerated: the model then expects exactly that.
    pub tolerate_liveness_after_end: bool,
}

impl Checks {
    pub const FUZZ: Checks = Checks { tolerate_liveness_after_end: false };
    pub const STRICT: Checks = Checks { tolerate_liveness_after_end: false };
}

pub const PING_INTERVAL: Duration = Duration::from_secs(15);
pub const PING_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Bin(Bytes),
    Text,
    Ping,
    Close,
}

impl WsMessage for Msg {
    fn classify(self) -> WsFrame {
        match self {
            Msg::Bin(data) => WsFrame::Binary(data),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    Ready,
    Pending,
    Failing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Arrive(Msg),
    StreamError(String),
    End,
    Read(usize),
    Write(usize, u8),
    Flush,
    Shutdown,
    Sink(SinkMode),
    Tick(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsInput {
    pub pings: bool,
    pub ops: Vec<Op>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }
}

fn fill(len: usize, first: u8) -> Vec<u8> {
    (0..len).map(|i| first.wrapping_add(i as u8)).collect()
}

impl WsInput {
    pub fn parse(data: &[u8]) -> WsInput {
        let mut r = Reader(data);
        let pings = r.u8() & 1 == 1;
        let mut ops = Vec::new();
        while !r.0.is_empty() {
            let op = match r.u8() % 13 {
                0 => {
                    let n = r.u16();
                    Op::Arrive(Msg::Bin(Bytes::copy_from_slice(r.bytes(n.into()))))
                }
                1 => Op::Arrive(Msg::Text),
                2 => Op::Arrive(Msg::Ping),
                3 => Op::Arrive(Msg::Close),
                4 => {
                    let n = r.u8();
                    Op::StreamError(String::from_utf8_lossy(r.bytes(n.into())).into_owned())
                }
                5 => Op::End,
                6 => Op::Read(usize::from(r.u16() % 4097)),
                7 => {
                    let len = r.u16();
                    Op::Write(len.into(), r.u8())
                }
                8 => Op::Flush,
                9 => Op::Shutdown,
                10 => Op::Sink(match r.u8() % 3 {
                    0 => SinkMode::Ready,
                    1 => SinkMode::Pending,
                    _ => SinkMode::Failing,
                }),
                11 => {
                    let len = r.u16();
                    Op::Arrive(Msg::Bin(fill(len.into(), r.u8()).into()))
                }
                _ => Op::Tick(u64::from(r.u8() % 64)),
            };
            ops.push(op);
        }
        WsInput { pings, ops }
    }
}

impl<'a> Arbitrary<'a> for WsInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(WsInput::parse(u.bytes(u.len())?))
    }

    fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(WsInput::parse(u.take_rest()))
    }
}

/// Where a sent message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum During {
    Read,
    Write,
    Flush,
}

#[derive(Debug)]
struct Shared {
    /// `None` is the end of the stream, in order with the messages.
    incoming: VecDeque<Option<Result<Msg, String>>>,
    ended: bool,
    mode: SinkMode,
    during: During,
    sent: Vec<(Msg, During)>,
}

struct Pipe(Rc<RefCell<Shared>>);

impl Stream for Pipe {
    type Item = Result<Msg, String>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut s = self.0.borrow_mut();
        if s.ended {
            return Poll::Ready(None);
        }
        match s.incoming.pop_front() {
            Some(Some(item)) => Poll::Ready(Some(item)),
            Some(None) => {
                s.ended = true;
                Poll::Ready(None)
            }
            None => Poll::Pending,
        }
    }
}

impl Pipe {
    fn status(&self) -> Poll<Result<(), String>> {
        match self.0.borrow().mode {
            SinkMode::Ready => Poll::Ready(Ok(())),
            SinkMode::Pending => Poll::Pending,
            SinkMode::Failing => Poll::Ready(Err("sink failed".to_owned())),
        }
    }
}

impl Sink<Msg> for Pipe {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.status()
    }

    fn start_send(self: Pin<&mut Self>, item: Msg) -> Result<(), String> {
        let mut s = self.0.borrow_mut();
        assert_eq!(s.mode, SinkMode::Ready, "start_send without poll_ready");
        let during = s.during;
        s.sent.push((item, during));
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.status()
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        self.status()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Terminal {
    Text,
    Error(String),
    Eof,
}

/// The liveness timers as the model sees them, as offsets from the stream's creation.
#[derive(Debug)]
struct Live {
    next_ping: Duration,
    last_heard: Duration,
}

struct Harness {
    shared: Rc<RefCell<Shared>>,
    ws: WsByteStream<Pipe, Msg>,
    /// Binary bytes that arrived before the first terminal, and that terminal.
    arrived: Vec<u8>,
    terminal: Option<Terminal>,
    /// How many bytes reads returned (each checked against `arrived` as it came), and the terminal reported.
    read_len: usize,
    reported: Option<Terminal>,
    /// Bytes accepted by writes and not yet seen in a sent message (checked messages are dropped).
    unsent: Vec<u8>,
    /// Time since creation (the paused clock), and the liveness model when pings are on.
    now: Duration,
    live: Option<Live>,
    /// Pings the model expects among the messages not yet checked.
    pings_due: usize,
    checks: Checks,
}

impl Harness {
    fn new(pings: bool, checks: Checks) -> Self {
        let shared = Rc::new(RefCell::new(Shared {
            incoming: VecDeque::new(),
            ended: false,
            mode: SinkMode::Ready,
            during: During::Write,
            sent: Vec::new(),
        }));
        let pipe = Pipe(shared.clone());
        let ws =
            if pings { WsByteStream::with_pings(pipe, PING_INTERVAL, PING_TIMEOUT) } else { WsByteStream::new(pipe) };
        Harness {
            ws,
            shared,
            arrived: Vec::new(),
            terminal: None,
            read_len: 0,
            reported: None,
            unsent: Vec::new(),
            now: Duration::ZERO,
            live: pings.then_some(Live { next_ping: PING_INTERVAL, last_heard: Duration::ZERO }),
            pings_due: 0,
            checks,
        }
    }

    fn arrive(&mut self, item: Result<Msg, String>) {
        if self.terminal.is_none() {
            match &item {
                Ok(Msg::Bin(data)) => self.arrived.extend_from_slice(data),
                Ok(Msg::Ping) => {}
                Ok(Msg::Text) => self.terminal = Some(Terminal::Text),
                Ok(Msg::Close) => self.terminal = Some(Terminal::Eof),
                Err(text) => self.terminal = Some(Terminal::Error(text.clone())),
            }
        }
        self.shared.borrow_mut().incoming.push_back(Some(item));
    }

    fn end(&mut self) {
        if self.terminal.is_none() {
            self.terminal = Some(Terminal::Eof);
        }
        self.shared.borrow_mut().incoming.push_back(None);
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Arrive(msg) => self.arrive(Ok(msg.clone())),
            Op::StreamError(text) => self.arrive(Err(text.clone())),
            Op::End => self.end(),
            Op::Read(cap) => {
                self.read(*cap);
            }
            Op::Write(len, first) => self.write(&fill(*len, *first)),
            Op::Flush => self.flush(false),
            Op::Shutdown => self.flush(true),
            Op::Sink(mode) => self.shared.borrow_mut().mode = *mode,
            Op::Tick(secs) => {
                let d = Duration::from_secs(*secs);
                tokio::time::advance(d).await;
                self.now += d;
            }
        }
    }

    /// How far the stream has taken its script: messages taken, and whether it saw the end.
    fn taken(&self) -> (usize, bool) {
        let s = self.shared.borrow();
        (s.incoming.len(), s.ended)
    }

    /// One `poll_read`; returns whether it was ready.
    fn read(&mut self, cap: usize) -> bool {
        // What the liveness check does first: time out, or send a ping that is due.
        let mut timed_out = false;
        let ended = self.reported.is_some() && !self.checks.tolerate_liveness_after_end;
        if let (Some(live), false) = (self.live.as_mut(), ended) {
            if self.now - live.last_heard >= PING_TIMEOUT {
                timed_out = true;
            } else if self.now >= live.next_ping {
                live.next_ping = self.now + PING_INTERVAL;
                if self.shared.borrow().mode == SinkMode::Ready {
                    self.pings_due += 1;
                }
            }
        }
        let before = self.taken();
        self.shared.borrow_mut().during = During::Read;
        let mut storage = vec![0u8; cap];
        let mut buf = ReadBuf::new(&mut storage);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let poll = Pin::new(&mut self.ws).poll_read(&mut cx, &mut buf);
        let filled = buf.filled().to_vec();
        self.check_sent(false);
        if timed_out {
            match &poll {
                Poll::Ready(Err(err)) => assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}"),
                other => panic!(
                    "{:?} silent, yet the read gave {other:?}",
                    self.now - self.live.as_ref().unwrap().last_heard
                ),
            }
            assert_eq!(self.taken(), before, "a timed-out read took messages");
            return true;
        }
        if self.taken() != before {
            if let Some(live) = self.live.as_mut() {
                live.last_heard = self.now;
            }
        }
        match poll {
            Poll::Pending => {
                assert!(filled.is_empty());
                assert!(self.terminal.is_none(), "Pending though {:?} has arrived", self.terminal);
                assert_eq!(self.read_len, self.arrived.len(), "Pending with unread bytes");
                false
            }
            Poll::Ready(Ok(())) => {
                if self.reported.is_some() {
                    assert!(filled.is_empty(), "{} bytes read after the stream ended", filled.len());
                    return true;
                }
                let at = self.read_len;
                assert!(
                    self.arrived.get(at..at + filled.len()) == Some(&filled[..]),
                    "read bytes are not the next bytes of the binary messages ({at} read before, {} now, {} arrived)",
                    filled.len(),
                    self.arrived.len()
                );
                self.read_len += filled.len();
                if filled.is_empty() && cap > 0 {
                    // EOF.
                    assert_eq!(self.terminal, Some(Terminal::Eof), "EOF without Close or end");
                    assert_eq!(self.read_len, self.arrived.len(), "EOF before every byte was read");
                    self.reported = Some(Terminal::Eof);
                }
                true
            }
            Poll::Ready(Err(err)) => {
                assert!(filled.is_empty());
                assert!(self.reported.is_none(), "error {err:?} after the stream ended ({:?})", self.reported);
                assert_eq!(self.read_len, self.arrived.len(), "error before every byte was read");
                match &self.terminal {
                    Some(Terminal::Text) => {
                        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "a Text message gave {err:?}");
                    }
                    Some(Terminal::Error(text)) => {
                        assert_eq!(err.kind(), io::ErrorKind::Other);
                        assert_eq!(&err.to_string(), text);
                    }
                    other => panic!("read error {err:?} with terminal {other:?}"),
                }
                self.reported = self.terminal.clone();
                true
            }
        }
    }

    fn write(&mut self, data: &[u8]) {
        let waiting = self.unsent.len();
        let mode = self.shared.borrow().mode;
        self.shared.borrow_mut().during = During::Write;
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match Pin::new(&mut self.ws).poll_write(&mut cx, data) {
            Poll::Ready(Ok(n)) => {
                assert_eq!(n, data.len(), "a write took part of its bytes");
                self.unsent.extend_from_slice(data);
            }
            Poll::Pending => {
                assert_eq!(mode, SinkMode::Pending);
                assert!(waiting >= WS_WRITE_COALESCE, "write blocked with only {waiting} bytes waiting");
            }
            Poll::Ready(Err(err)) => {
                assert_eq!(mode, SinkMode::Failing, "write failed: {err}");
                assert!(waiting >= WS_WRITE_COALESCE, "write failed with only {waiting} bytes waiting");
            }
        }
        self.check_sent(false);
    }

    fn flush(&mut self, shutdown: bool) {
        let mode = self.shared.borrow().mode;
        self.shared.borrow_mut().during = During::Flush;
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let ws = Pin::new(&mut self.ws);
        let poll = if shutdown { ws.poll_shutdown(&mut cx) } else { ws.poll_flush(&mut cx) };
        match poll {
            Poll::Ready(Ok(())) => {
                assert_eq!(mode, SinkMode::Ready);
                self.check_sent(true);
            }
            Poll::Pending => {
                assert_eq!(mode, SinkMode::Pending);
                self.check_sent(false);
            }
            Poll::Ready(Err(err)) => {
                assert_eq!(mode, SinkMode::Failing, "flush failed: {err}");
                self.check_sent(false);
            }
        }
    }

    /// Checks the messages sent since the last call: binary ones carry the next bytes written, in order; pings
    /// come from reads, as many as the model expects.
    fn check_sent(&mut self, all: bool) {
        let sent = std::mem::take(&mut self.shared.borrow_mut().sent);
        let mut pings = 0;
        for (msg, during) in sent {
            let data = match msg {
                Msg::Bin(data) => data,
                Msg::Ping => {
                    assert_eq!(during, During::Read, "a ping sent from {during:?}");
                    pings += 1;
                    continue;
                }
                other => panic!("sent {other:?}"),
            };
            assert!(during != During::Read, "a read sent a binary message");
            assert!(!data.is_empty(), "sent an empty message");
            if during == During::Write {
                assert!(data.len() >= WS_WRITE_COALESCE, "a write sent a {}-byte message", data.len());
            }
            assert!(
                self.unsent.get(..data.len()) == Some(&data[..]),
                "a sent message ({} bytes) is not the next bytes written ({} waiting)",
                data.len(),
                self.unsent.len()
            );
            self.unsent.drain(..data.len());
        }
        assert_eq!(pings, std::mem::take(&mut self.pings_due), "pings sent at {:?} ({:?})", self.now, self.live);
        if all {
            assert!(self.unsent.is_empty(), "a successful flush left {} bytes unsent", self.unsent.len());
        }
    }

    /// Whether a read now must time out (the stream has not ended, or that is tolerated).
    fn silent_too_long(&self) -> bool {
        self.reported.is_none() && self.live.as_ref().is_some_and(|l| self.now - l.last_heard >= PING_TIMEOUT)
    }

    async fn finish(&mut self) {
        self.end();
        if self.silent_too_long() {
            // Dead by the timeout: `read` asserts TimedOut, again and again.
            assert!(self.read(4096));
            assert!(self.read(4096));
            return;
        }
        let mut reads = 0;
        while self.reported.is_none() {
            assert!(self.read(4096), "Pending after the stream ended");
            reads += 1;
            // Each ready read takes bytes or a message off the queue; input is far smaller than this.
            assert!(reads <= 1_000_000, "reads never end");
        }
        assert_eq!(self.read_len, self.arrived.len(), "fewer bytes read than the binary messages before the terminal");
        assert_eq!(self.reported, self.terminal);
        // EOF stays EOF, however long the silence that follows.
        assert!(self.read(16));
        self.apply(&Op::Tick(63)).await;
        assert!(self.read(16));
        self.shared.borrow_mut().mode = SinkMode::Ready;
        self.flush(false);
    }
}

pub fn run(input: &WsInput) {
    run_checked(input, Checks::FUZZ);
}

pub fn run_checked(input: &WsInput, checks: Checks) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let mut h = Harness::new(input.pings, checks);
        for op in &input.ops {
            h.apply(op).await;
        }
        h.finish().await;
    });
}

pub fn run_bytes(data: &[u8]) {
    run(&WsInput::parse(data));
}
