//! One dRPC connection over one yamux stream: the sans-IO [`Connection`] plus the stream it reads and writes.
//! Nothing here decides anything; the server and client loops do.

use std::io;

use futures::{AsyncWriteExt, StreamExt};

use crate::limits::Limits;
use crate::stream::{ConnError, Connection, Event, Role};

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error(transparent)]
    Protocol(#[from] ConnError),
    #[error("transport: {0}")]
    Io(#[from] io::Error),
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
}

impl DrpcStream {
    pub fn new(stream: yamux::Stream, role: Role, limits: Limits) -> Self {
        DrpcStream { stream, conn: Connection::new(role, limits), eof: false, closed: false, acked: false }
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
        if !self.acked {
            tokio::select! {
                biased;
                event = self.next_event() => return event,
                _ = tokio::time::sleep_until(ack_at) => self.acknowledge().await?,
            }
        }
        self.next_event().await
    }

    /// The next event; `Ok(None)` when the peer has closed its side and every buffered packet was delivered.
    /// Cancel-safe: a chunk is handed to the connection in the same poll that receives it.
    pub async fn next_event(&mut self) -> Result<Option<Event>, DriveError> {
        loop {
            if let Some(event) = self.conn.poll_event()? {
                return Ok(Some(event));
            }
            if self.eof {
                return Ok(None);
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self.conn.handle_input(chunk.as_ref()),
                Some(Err(err)) if err.kind() == io::ErrorKind::WriteZero => self.eof = true,
                Some(Err(err)) => {
                    self.eof = true;
                    return Err(err.into());
                }
                None => self.eof = true,
            }
        }
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
