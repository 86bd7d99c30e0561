//! Liveness under yamux: hashicorp's keepalive (a ping every 30 s, the session ends when no answer comes within
//! 10 s) and its `ConnectionWriteTimeout` (a write that cannot progress for 10 s ends the session).
//!
//! The `yamux` crate has neither: it pings only while streams carry data, to measure round trips, and waits for the
//! socket for ever. So this layer sits between the socket and the crate. It follows yamux frame boundaries in both
//! directions, slips its own Ping frames in between the crate's frames, and takes the answers out of the inbound
//! bytes before the crate sees them. Our pings carry the top bit in their opaque value; the crate numbers its own
//! from 0 upward, so the two never meet. Any peer that follows the spec answers (hashicorp does, the crate does).
//!
//! The same place reads pings as hashicorp does: an answer nobody waits for (unsolicited, duplicate, late) is
//! dropped instead of reaching the crate, which would end the session over it. [`tolerance`] lists every frame
//! checked against hashicorp, what differs, and what this layer does about it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use self::tolerance::{Inbound, PingLedger};

mod tolerance;

// Named in `limits` with every other transport limit; re-exported so `io::keepalive::…` paths keep working.
pub use crate::limits::{DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_WRITE_TIMEOUT};

const HEADER_LEN: usize = 12;
const TYPE_DATA: u8 = 0;
const TYPE_PING: u8 = 2;
const TYPE_GO_AWAY: u8 = 3;
const FLAG_SYN: u16 = 1;
const FLAG_ACK: u16 = 2;
const OUR_PING: u32 = 0x8000_0000;
/// Bytes read from the socket per poll.
const READ_CHUNK: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// `None` turns keepalive pings off. See [`DEFAULT_KEEPALIVE_INTERVAL`].
    pub interval: Option<Duration>,
    /// See [`DEFAULT_KEEPALIVE_TIMEOUT`].
    pub timeout: Duration,
    /// `None` lets writes wait for ever. See [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Option<Duration>,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
        }
    }
}

/// Where a byte stream is within yamux framing.
#[derive(Debug, Default)]
struct FrameCursor {
    header: [u8; HEADER_LEN],
    filled: usize,
    body_left: u64,
}

impl FrameCursor {
    fn at_boundary(&self) -> bool {
        self.filled == 0 && self.body_left == 0
    }

    /// Walks `data`, calling `on_header` for each whole header (which decides whether it is kept, and may rewrite
    /// it; not its length) and passing kept bytes to `out`.
    fn walk(
        &mut self,
        mut data: &[u8],
        out: &mut impl FnMut(&[u8]),
        on_header: &mut impl FnMut(&mut [u8; HEADER_LEN]) -> bool,
    ) {
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = data.len().min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                out(&data[..n]);
                self.body_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (HEADER_LEN - self.filled).min(data.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == HEADER_LEN {
                self.filled = 0;
                let mut header = self.header;
                if on_header(&mut header) {
                    out(&header);
                    if header[1] == TYPE_DATA {
                        self.body_left = u64::from(u32::from_be_bytes([header[8], header[9], header[10], header[11]]));
                    }
                }
            }
        }
    }
}

fn ping_frame(flags: u16, opaque: u32) -> [u8; HEADER_LEN] {
    let mut frame = [0u8; HEADER_LEN];
    frame[1] = TYPE_PING;
    frame[2..4].copy_from_slice(&flags.to_be_bytes());
    frame[8..12].copy_from_slice(&opaque.to_be_bytes());
    frame
}

/// Wraps the socket of one yamux session. See the module docs.
pub struct Keepalive<T> {
    inner: T,
    config: KeepaliveConfig,
    inbound: FrameCursor,
    outbound: FrameCursor,
    /// Bytes read and filtered, not yet handed to the crate.
    readable: BytesMut,
    /// Bytes the crate wrote, not yet on the socket. The crate writes a frame's header and body separately and
    /// flushes after every frame; see [`Keepalive::flush_owed`] for when they go out.
    writable: BytesMut,
    /// The crate asked for a flush that has not reached the socket yet. Its driver flushes after every frame, then
    /// takes the next frame a stream queued, and reads the socket only once no stream has anything more to send. So
    /// the flush is kept until the crate next asks the socket for bytes (or shuts it down, or more than
    /// [`WRITE_BUFFER`] is waiting): every frame made ready in one turn of the session's task leaves in one socket
    /// write (one WebSocket message), where each used to be its own. Nothing waits longer than that turn: the
    /// driver never goes idle without reading.
    flush_owed: bool,
    /// A ping is due and waits for a frame boundary in `writable`.
    ping_due: bool,
    awaiting: Option<u32>,
    next_nonce: u32,
    /// When the next ping is due, or when the one in flight times out.
    timer: Option<Pin<Box<Sleep>>>,
    write_stall: Option<Pin<Box<Sleep>>>,
    /// Pings answered, for tests and metrics.
    pongs: u64,
    /// The crate's own ping, so that only its answer reaches it.
    pings: PingLedger,
    /// The crate sent GoAway with an error code (the peer broke the protocol). hashicorp ends the session there;
    /// the crate would carry on, so once the GoAway is on the wire this layer ends it.
    violated: Option<u32>,
}

impl<T> Keepalive<T> {
    pub fn new(inner: T, config: KeepaliveConfig) -> Self {
        let timer = config.interval.map(|every| Box::pin(tokio::time::sleep(every)));
        Keepalive {
            inner,
            config,
            inbound: FrameCursor::default(),
            outbound: FrameCursor::default(),
            readable: BytesMut::new(),
            writable: BytesMut::new(),
            flush_owed: false,
            ping_due: false,
            awaiting: None,
            next_nonce: 0,
            timer,
            write_stall: None,
            pongs: 0,
            pings: PingLedger::default(),
            violated: None,
        }
    }

    pub fn pongs(&self) -> u64 {
        self.pongs
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl<T: AsyncRead + AsyncWrite + Unpin> Keepalive<T> {
    /// Fires the keepalive timer: sends a ping when one is due, fails when the last one went unanswered.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // The timer exists exactly when keepalive is on (`config.interval` is set).
        let Some(timer) = self.timer.as_mut() else {
            return Ok(());
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        if self.awaiting.is_some() {
            return Err(timed_out("keepalive ping not answered in time"));
        }
        let nonce = OUR_PING | (self.next_nonce & !OUR_PING);
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.awaiting = Some(nonce);
        self.ping_due = true;
        timer.as_mut().reset(Instant::now() + self.config.timeout);
        // Register the timer's waker again for the deadline.
        let _ = timer.as_mut().poll(cx);
        Ok(())
    }

    fn on_pong(&mut self, nonce: u32) {
        if self.awaiting == Some(nonce) {
            self.awaiting = None;
            self.pongs += 1;
            if let (Some(interval), Some(timer)) = (self.config.interval, self.timer.as_mut()) {
                timer.as_mut().reset(Instant::now() + interval);
            }
        }
    }

    /// Tracks a write that cannot progress; fails it once the write timeout passes.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(limit) = self.config.write_timeout else {
            return Poll::Pending;
        };
        let stall = self.write_stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out("write timed out: the peer stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Appends the due ping to the outgoing bytes if they end on a frame boundary.
    fn queue_ping(&mut self) {
        if self.ping_due && self.outbound.at_boundary() {
            if let Some(nonce) = self.awaiting {
                self.writable.extend_from_slice(&ping_frame(FLAG_SYN, nonce));
            }
            self.ping_due = false;
        }
    }

    /// Writes every buffered byte to the socket.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.writable.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.writable) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.write_stall = None;
                    self.writable.advance(n);
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    ready!(self.stalled(cx))?;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes every buffered byte and flushes the socket.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(result) => {
                self.write_stall = None;
                self.flush_owed = false;
                Poll::Ready(result)
            }
            Poll::Pending => self.stalled(cx).map_ok(|_| ()),
        }
    }

    fn fill_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        let data = buf.filled();
        if data.is_empty() {
            return Poll::Ready(Ok(false));
        }
        let mut pongs = Vec::new();
        let readable = &mut self.readable;
        let pings = &mut self.pings;
        self.inbound.walk(data, &mut |bytes| readable.extend_from_slice(bytes), &mut |header| match pings
            .inbound(header)
        {
            Inbound::Pass => true,
            Inbound::OurPong(opaque) => {
                pongs.push(opaque);
                false
            }
            Inbound::Drop => false,
        });
        for nonce in pongs {
            self.on_pong(nonce);
        }
        Poll::Ready(Ok(true))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Keepalive<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(code) = this.violated {
            // Only once the GoAway has left: the peer should learn why it is cut off.
            ready!(this.poll_send(cx))?;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("session ended after GoAway({code}): the peer broke the yamux protocol"),
            )));
        }
        // The crate polls reads all the time, even on an idle session: the place to drive the keepalive.
        this.poll_keepalive(cx)?;
        if this.ping_due {
            this.queue_ping();
            // Pending is fine: the socket wakes this task when it can take more, and the next poll goes on.
            // The flush matters: a WebSocket sends only on flush.
            if let Poll::Ready(Err(err)) = this.poll_send(cx) {
                return Poll::Ready(Err(err));
            }
        }
        loop {
            if !this.readable.is_empty() {
                let n = this.readable.len().min(buf.remaining());
                buf.put_slice(&this.readable[..n]);
                this.readable.advance(n);
                return Poll::Ready(Ok(()));
            }
            // The crate has taken every byte read so far and wants more: the turn is over, what it wrote goes out.
            // A socket that cannot take it now wakes this task again; the read is tried meanwhile.
            if this.flush_owed {
                if let Poll::Ready(Err(err)) = this.poll_send(cx) {
                    return Poll::Ready(Err(err));
                }
            }
            if !ready!(this.fill_readable(cx))? {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Largest run of bytes held before they go to the socket even without a flush.
const WRITE_BUFFER: usize = 64 * 1024;

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Keepalive<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.writable.len() >= WRITE_BUFFER {
            ready!(this.poll_write_out(cx))?;
        }
        this.writable.extend_from_slice(data);
        let mut violated = None;
        let pings = &mut this.pings;
        this.outbound.walk(data, &mut |_| {}, &mut |header| {
            pings.outbound(header);
            let code = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
            if header[1] == TYPE_GO_AWAY && code != 0 {
                violated = Some(code);
            }
            true
        });
        if violated.is_some() {
            this.violated = violated;
            cx.waker().wake_by_ref();
        }
        this.queue_ping();
        Poll::Ready(Ok(data.len()))
    }

    /// Owed, not done: see [`Keepalive::flush_owed`].
    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_owed = true;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn header(kind: u8, flags: u16, stream: u32, len: u32) -> Vec<u8> {
        let mut h = vec![0, kind];
        h.extend_from_slice(&flags.to_be_bytes());
        h.extend_from_slice(&stream.to_be_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn cursor_filters_only_our_pongs_whatever_the_splits() {
        let mut stream = header(TYPE_DATA, 0, 1, 5);
        stream.extend_from_slice(b"hello");
        stream.extend_from_slice(&ping_frame(FLAG_ACK, OUR_PING | 7));
        stream.extend_from_slice(&ping_frame(FLAG_ACK, 3)); // the crate's own pong: kept
        stream.extend_from_slice(&header(TYPE_DATA, 0, 1, 2));
        stream.extend_from_slice(&ping_frame(FLAG_ACK, OUR_PING | 1)[..2]); // body bytes that look like a ping
        let mut expected = header(TYPE_DATA, 0, 1, 5);
        expected.extend_from_slice(b"hello");
        expected.extend_from_slice(&ping_frame(FLAG_ACK, 3));
        expected.extend_from_slice(&header(TYPE_DATA, 0, 1, 2));
        expected.extend_from_slice(&ping_frame(FLAG_ACK, OUR_PING | 1)[..2]);
        for chunk in 1..stream.len() {
            let mut cursor = FrameCursor::default();
            let mut out = Vec::new();
            let mut seen = Vec::new();
            for piece in stream.chunks(chunk) {
                cursor.walk(piece, &mut |b| out.extend_from_slice(b), &mut |h| {
                    let opaque = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
                    let ours = h[1] == TYPE_PING && opaque & OUR_PING != 0;
                    if ours {
                        seen.push(opaque);
                    }
                    !ours
                });
            }
            assert_eq!(out, expected, "chunk size {chunk}");
            assert_eq!(seen, [OUR_PING | 7]);
            assert!(cursor.at_boundary());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_and_gives_up_without_an_answer() {
        let (ours, mut peer) = tokio::io::duplex(4096);
        let mut ka = Keepalive::new(ours, KeepaliveConfig::default());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let result = ka.read(&mut buf).await;
            (result, ka.pongs())
        });
        let mut ping = [0u8; HEADER_LEN];
        let started = Instant::now();
        peer.read_exact(&mut ping).await.unwrap();
        assert_eq!(started.elapsed(), DEFAULT_KEEPALIVE_INTERVAL);
        assert_eq!(&ping[..4], &[0, TYPE_PING, 0, FLAG_SYN as u8]);
        let (result, pongs) = reader.await.unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), DEFAULT_KEEPALIVE_INTERVAL + DEFAULT_KEEPALIVE_TIMEOUT);
        assert_eq!(pongs, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answering_peer_keeps_the_session_and_never_sees_its_pong_passed_on() {
        let (ours, mut peer) = tokio::io::duplex(4096);
        let mut ka = Keepalive::new(ours, KeepaliveConfig::default());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = ka.read(&mut buf).await.unwrap();
            (buf[..n].to_vec(), ka.pongs())
        });
        for _ in 0..5 {
            let mut ping = [0u8; HEADER_LEN];
            peer.read_exact(&mut ping).await.unwrap();
            let opaque = u32::from_be_bytes([ping[8], ping[9], ping[10], ping[11]]);
            peer.write_all(&ping_frame(FLAG_ACK, opaque)).await.unwrap();
        }
        let data = header(TYPE_DATA, 0, 1, 0);
        peer.write_all(&data).await.unwrap();
        let (read, pongs) = reader.await.unwrap();
        assert_eq!(read, data, "the crate sees only the data frame");
        assert_eq!(pongs, 5);
    }

    #[tokio::test]
    async fn only_the_first_answer_to_the_crates_ping_reaches_it() {
        let (ours, mut peer) = tokio::io::duplex(4096);
        let mut ka = Keepalive::new(ours, KeepaliveConfig { interval: None, ..KeepaliveConfig::default() });
        // The crate pings (id 0); the peer answers, then answers again, then answers a ping nobody sent.
        ka.write_all(&ping_frame(FLAG_SYN, 0)).await.unwrap();
        ka.flush().await.unwrap();
        let data = header(TYPE_DATA, 0, 1, 0);
        let peer_side = async {
            let mut ping = [0u8; HEADER_LEN];
            peer.read_exact(&mut ping).await.unwrap();
            assert_eq!(ping, ping_frame(FLAG_SYN, 0));
            for answer in [ping_frame(FLAG_ACK, 0), ping_frame(FLAG_ACK, 0), ping_frame(FLAG_ACK, 5)] {
                peer.write_all(&answer).await.unwrap();
            }
            peer.write_all(&data).await.unwrap();
        };
        // The session's read sends the owed ping, then takes what the peer answered.
        let mut seen = vec![0u8; 2 * HEADER_LEN];
        let ((), read) = tokio::join!(peer_side, ka.read_exact(&mut seen));
        read.unwrap();
        assert_eq!(seen[..HEADER_LEN], ping_frame(FLAG_ACK, 0));
        assert_eq!(seen[HEADER_LEN..], data[..]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_cut_off_after_the_write_timeout() {
        let (ours, _peer) = tokio::io::duplex(1024);
        let mut ka = Keepalive::new(ours, KeepaliveConfig { interval: None, ..KeepaliveConfig::default() });
        let started = Instant::now();
        ka.write_all(&[0u8; 4096]).await.unwrap();
        ka.flush().await.unwrap();
        // The owed flush is tried when the session next reads, and that read is where the stall ends it.
        let err = ka.read(&mut [0u8; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), DEFAULT_WRITE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_waits_for_a_frame_boundary() {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let mut ka = Keepalive::new(ours, KeepaliveConfig::default());
        // Half a frame goes out, the ping falls due, then the rest of the frame.
        let mut frame = header(TYPE_DATA, 0, 1, 4);
        frame.extend_from_slice(b"abcd");
        ka.write_all(&frame[..6]).await.unwrap();
        ka.flush().await.unwrap();
        tokio::time::sleep(DEFAULT_KEEPALIVE_INTERVAL).await;
        let mut buf = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_millis(1), ka.read(&mut buf)).await;
        ka.write_all(&frame[6..]).await.unwrap();
        ka.flush().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(1), ka.read(&mut buf)).await;
        let mut seen = vec![0u8; frame.len() + HEADER_LEN];
        peer.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen[..frame.len()], &frame[..]);
        assert_eq!(seen[frame.len() + 1], TYPE_PING);
    }

    /// Counts the writes that reach the socket.
    struct CountingIo<T> {
        inner: T,
        writes: usize,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            self.writes += 1;
            Pin::new(&mut self.inner).poll_write(cx, data)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn frames_flushed_in_one_turn_leave_in_one_write_when_the_session_next_reads() {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let mut ka = Keepalive::new(CountingIo { inner: ours, writes: 0 }, KeepaliveConfig::default());
        // The crate's way: header, body, flush, for each frame a turn makes ready.
        let mut sent = Vec::new();
        for stream in [1u32, 3, 5] {
            let h = header(TYPE_DATA, 0, stream, 3);
            ka.write_all(&h).await.unwrap();
            ka.write_all(b"abc").await.unwrap();
            ka.flush().await.unwrap();
            sent.extend_from_slice(&h);
            sent.extend_from_slice(b"abc");
        }
        assert_eq!(ka.get_ref().writes, 0, "nothing leaves before the turn ends");
        // The turn ends when the session asks the socket for more than it has.
        let _ = tokio::time::timeout(Duration::from_millis(1), ka.read(&mut [0u8; 1])).await;
        assert_eq!(ka.get_ref().writes, 1);
        let mut seen = vec![0u8; sent.len()];
        peer.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, sent);
        // Shutting down sends what is owed too.
        ka.write_all(&header(TYPE_GO_AWAY, 0, 0, 0)).await.unwrap();
        ka.flush().await.unwrap();
        ka.shutdown().await.unwrap();
        assert_eq!(ka.get_ref().writes, 2);
        let mut go_away = [0u8; HEADER_LEN];
        peer.read_exact(&mut go_away).await.unwrap();
        assert_eq!(go_away[1], TYPE_GO_AWAY);
    }
}
