//! One dRPC connection over one yamux stream: the sans-IO [`Connection`] plus the stream it reads and writes.
//! Nothing here decides anything; the server and client loops do.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use tokio::time::Instant;

use crate::budget::{Evicted, MemoryCharge, SessionMemory};
use crate::limits::Limits;
use crate::stream::{ConnError, Connection, Event, Role};

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Protocol(#[from] ConnError),
    #[error("transport: {0}")]
    Io(#[from] io::Error),
    /// The session's memory budget ended it while this stream waited to read.
    #[error(transparent)]
    Memory(#[from] Evicted),
}

/// The memory budget a stream reads under: what it holds undispatched counts against `memory`, and it reads only
/// while there is room.
#[derive(Debug, Clone)]
pub struct StreamMemory {
    pub memory: SessionMemory,
    /// How long a read may wait for room before the largest holder is ended
    /// ([`crate::budget::DEFAULT_MEMORY_WAIT`]).
    pub patience: Duration,
}

/// A stream's wait for room under its budget.
type RoomWait<'a> = Pin<Box<dyn Future<Output = Result<(), Evicted>> + Send + 'a>>;

#[derive(Debug, Default)]
struct Accounting {
    budget: Option<StreamMemory>,
    /// This stream among its session's, for the session's overdraft.
    stream: u64,
    /// Bytes of this stream counted against the budget: the capacity of its connection's input buffers.
    counted: usize,
    /// Whether the connection holds part of a packet (it may then take the session's overdraft to finish it).
    holding: bool,
    waiting_since: Option<Instant>,
}

impl Accounting {
    fn recount(&mut self, conn: &Connection) {
        self.set(conn.buffered_capacity(), conn.buffered_input() > 0);
    }

    /// Called after every read and every event, so it touches the session's lock only when something changed.
    fn set(&mut self, now: usize, holding: bool) {
        let was_holding = std::mem::replace(&mut self.holding, holding);
        let Some(budget) = &self.budget else { return };
        if now > self.counted {
            budget.memory.add(now - self.counted);
        } else if now < self.counted {
            budget.memory.release(self.counted - now);
        }
        self.counted = now;
        // Only a stream holding part of a packet can have taken the overdraft.
        if was_holding && !holding {
            budget.memory.end_overdraft(self.stream);
        }
    }

    /// `None` when the stream may read now; otherwise the wait for room, boxed: a wait carries timers and
    /// notifications that every idle stream's task would otherwise hold inline, for a case that is rare.
    fn wait_for_room(&mut self) -> Option<RoomWait<'_>> {
        let budget = self.budget.as_ref()?;
        if budget.memory.may_read(self.stream, self.holding) {
            self.waiting_since = None;
            return None;
        }
        Some(Box::pin(budget.memory.room(self.stream, self.holding, &mut self.waiting_since, budget.patience)))
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        self.set(0, false);
    }
}

/// `$io.$read()` (a cancel-safe read), acknowledging the stream at `$ack_at` if nothing has gone out by then and
/// the read is still waiting; the read starts again after the ACK. A macro, not a function taking the read as an
/// async closure: that one's future would sit inline in every stream's task (16 bytes more in a debug build).
macro_rules! read_acking {
    ($io:ident . $read:ident (), $ack_at:expr) => {{
        if !$io.acked {
            tokio::select! {
                biased;
                done = $io.$read() => return done,
                _ = tokio::time::sleep_until($ack_at) => $io.acknowledge().await?,
            }
        }
        $io.$read().await
    }};
}

pub struct DrpcStream {
    stream: yamux::Stream,
    conn: Connection,
    /// The peer closed its write side (yamux FIN) or reset the stream.
    eof: bool,
    /// We sent our FIN; never send it twice (hashicorp ends the whole session on a second FIN).
    closed: bool,
    /// Something went out on the stream, so the peer has its ACK (the crate sets it on the first frame we send).
    acked: bool,
    memory: Accounting,
}

impl DrpcStream {
    pub fn new(stream: yamux::Stream, role: Role, limits: Limits) -> Self {
        DrpcStream {
            stream,
            conn: Connection::new(role, limits),
            eof: false,
            closed: false,
            acked: false,
            memory: Accounting::default(),
        }
    }

    /// Reads under `budget` from now on.
    pub fn with_memory(mut self, budget: StreamMemory) -> Self {
        self.memory.budget = Some(budget);
        self.memory.stream = SessionMemory::stream_id();
        self
    }

    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub fn stream_id(&self) -> u32 {
        self.stream.id().val()
    }

    /// Acknowledges an inbound stream now rather than at its first reply: an empty write makes the crate send a
    /// zero-length Data frame carrying ACK.
    pub async fn acknowledge(&mut self) -> io::Result<()> {
        if self.acked {
            return Ok(());
        }
        self.acked = true;
        // An empty write on purpose: it is the frame, not the bytes, that carries the ACK.
        let _written: usize = self.stream.write(&[]).await?;
        self.stream.flush().await
    }

    pub fn is_acked(&self) -> bool {
        self.acked
    }

    /// Like [`DrpcStream::next_event`], but acknowledges the stream if nothing has gone out by `ack_at`: the reply
    /// usually carries the ACK for free, and a slow one must not leave a Go peer waiting past its open timeout.
    pub async fn next_event_acking(&mut self, ack_at: tokio::time::Instant) -> Result<Option<Event>, DriveError> {
        read_acking!(self.next_event(), ack_at)
    }

    /// Like [`DrpcStream::wait_input`], acknowledging the stream at `ack_at` if it is still waiting then.
    pub async fn wait_input_acking(&mut self, ack_at: tokio::time::Instant) -> Result<bool, DriveError> {
        read_acking!(self.wait_input(), ack_at)
    }

    /// Counts `n` bytes against the stream's budget until the guard is dropped: a message handed on, not yet taken.
    pub fn charge(&self, n: usize) -> Option<MemoryCharge> {
        self.memory.budget.as_ref().map(|budget| budget.memory.charge(n))
    }

    /// The next event; `Ok(None)` when the peer has closed its side and every buffered packet was delivered.
    /// Cancel-safe: a chunk is handed to the connection in the same poll that receives it.
    pub async fn next_event(&mut self) -> Result<Option<Event>, DriveError> {
        loop {
            let event = self.conn.poll_event();
            self.memory.recount(&self.conn);
            if let Some(event) = event? {
                return Ok(Some(event));
            }
            if self.eof {
                return Ok(None);
            }
            self.read_chunk().await?;
        }
    }

    /// Waits until the peer has sent something for the connection (bytes of a call, or the end of the stream)
    /// without parsing it: `Ok(false)` once the stream has ended with nothing left to deliver. Cancel-safe.
    pub async fn wait_input(&mut self) -> Result<bool, DriveError> {
        while !self.conn.has_pending_input() {
            if self.eof {
                return Ok(false);
            }
            self.read_chunk().await?;
        }
        Ok(true)
    }

    /// Reads one chunk into the connection once the memory budget has room for it. Cancel-safe.
    async fn read_chunk(&mut self) -> Result<(), DriveError> {
        if let Some(wait) = self.memory.wait_for_room() {
            wait.await?;
        }
        match self.stream.next().await {
            Some(Ok(chunk)) => {
                self.conn.handle_input(chunk.as_ref());
                self.memory.recount(&self.conn);
            }
            Some(Err(err)) if err.kind() == io::ErrorKind::WriteZero => self.eof = true,
            Some(Err(err)) => {
                self.eof = true;
                return Err(err.into());
            }
            None => self.eof = true,
        }
        Ok(())
    }

    pub fn peer_closed(&self) -> bool {
        self.eof
    }

    /// Writes whatever the connection has queued, in one write, and flushes.
    pub async fn flush(&mut self) -> io::Result<()> {
        if let Some(bytes) = self.conn.poll_transmit() {
            self.acked = true;
            self.stream.write_all(&bytes).await?;
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// Half-closes our side with a FIN (never an RST: hashicorp drops unread reply bytes on RST).
    pub async fn close(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.acked = true;
        self.flush().await?;
        self.stream.close().await
    }
}
