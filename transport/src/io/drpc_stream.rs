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
}

impl DrpcStream {
    pub fn new(stream: yamux::Stream, role: Role, limits: Limits) -> Self {
        DrpcStream { stream, conn: Connection::new(role, limits), eof: false, closed: false }
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
        self.stream.write(&[]).await?;
        self.stream.flush().await
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
        self.flush().await?;
        self.stream.close().await
    }
}
