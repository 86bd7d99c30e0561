//! yamux sessions with the settings a Go `hashicorp/yamux` peer expects, on top of the `yamux` crate.
//!
//! The crate has no control handle: one driver task owns the [`yamux::Connection`], and everything else talks to
//! it through channels. What the wrapper adds, each for a reason a Go peer would notice:
//! - receive windows fixed at 256 KiB (the crate would auto-tune them up to frames past its own 1 MiB cap);
//! - a stream limit that is ours to name (past it the crate answers GoAway, and the session then ends);
//! - hashicorp's keepalive pings and write timeout ([`super::keepalive`]);
//! - inbound streams are acknowledged by their server task at once (see `server`): the crate delays the ACK until
//!   the first write, and a Go peer closes the whole session when a stream stays un-ACKed for 75 s.

use std::future::poll_fn;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite};
// futures' unbounded channels over tokio's: tokio allocates a 32-slot block per channel up front (2.5 KiB for
// streams), which every idle session would carry; these allocate per message.
use futures::channel::mpsc;
use futures::StreamExt;
use tokio::sync::oneshot;
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::keepalive::{Keepalive, KeepaliveConfig};

// Named in `limits` with every other transport limit; re-exported so `io::yamux::…` paths keep working.
pub use crate::limits::{DEFAULT_MAX_STREAMS_PER_SESSION, DEFAULT_SPLIT_SEND_SIZE, STREAM_WINDOW};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// See [`DEFAULT_MAX_STREAMS_PER_SESSION`].
    pub max_streams: usize,
    /// See [`DEFAULT_SPLIT_SEND_SIZE`].
    pub split_send_size: usize,
    /// Keepalive pings and the write timeout, as hashicorp's `DefaultConfig` has them.
    pub keepalive: KeepaliveConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_streams: DEFAULT_MAX_STREAMS_PER_SESSION,
            split_send_size: DEFAULT_SPLIT_SEND_SIZE,
            keepalive: KeepaliveConfig::default(),
        }
    }
}

impl SessionConfig {
    pub fn to_yamux(&self) -> yamux::Config {
        let max_streams = self.max_streams.max(1);
        let mut cfg = yamux::Config::default();
        // Each setter asserts window >= streams × 256 KiB against the other's current value, so lift the window
        // cap, set the stream count, then cap the window to exactly what the streams need (no auto-tuning).
        cfg.set_max_connection_receive_window(None);
        cfg.set_max_num_streams(max_streams);
        cfg.set_max_connection_receive_window(Some(max_streams * STREAM_WINDOW));
        cfg.set_split_send_size(self.split_send_size.max(1));
        cfg
    }
}

pub use yamux::Mode;

type OpenReply = oneshot::Sender<Result<yamux::Stream, yamux::ConnectionError>>;

enum Command {
    Open(OpenReply),
    Close,
}

/// A handle to a running session: opens streams and closes the session. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Open(_) => "Open",
            Command::Close => "Close",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("yamux session closed")]
    Closed,
    #[error("yamux: {0}")]
    Yamux(#[from] yamux::ConnectionError),
}

impl SessionHandle {
    /// Opens a stream (client side: odd ids). Nothing reaches the wire before the stream's first write.
    pub async fn open(&self) -> Result<yamux::Stream, SessionError> {
        let (tx, rx) = oneshot::channel();
        self.commands.unbounded_send(Command::Open(tx)).map_err(|_| SessionError::Closed)?;
        Ok(rx.await.map_err(|_| SessionError::Closed)??)
    }

    /// Sends GoAway and closes the transport; streams in flight end.
    pub fn close(&self) {
        let _ = self.commands.unbounded_send(Command::Close);
    }

    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

/// A session's inbound streams, and how the session ended once they stop.
pub struct Incoming {
    streams: mpsc::UnboundedReceiver<yamux::Stream>,
    ended: oneshot::Receiver<Result<(), yamux::ConnectionError>>,
}

impl Incoming {
    /// The next stream the peer opened; `None` once the session is over.
    pub async fn next(&mut self) -> Option<yamux::Stream> {
        self.streams.next().await
    }

    /// How the session ended: `Ok` for a clean close by either side.
    pub async fn ended(self) -> Result<(), yamux::ConnectionError> {
        self.ended.await.unwrap_or(Ok(()))
    }
}

/// Starts a session over `io` and spawns its driver task on the current tokio runtime.
pub fn spawn_session<T>(io: T, mode: Mode, config: &SessionConfig) -> (SessionHandle, Incoming)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Keepalive::new(io, config.keepalive);
    let mut conn = yamux::Connection::new(io.compat(), config.to_yamux(), mode);
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded::<Command>();
    // Unbounded on purpose: the driver must never stop polling the connection (pings, window updates), and the
    // number of streams is already bounded by `max_streams`.
    let (stream_tx, stream_rx) = mpsc::unbounded();
    let (ended_tx, ended_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut pending_open: Option<OpenReply> = None;
        let mut closing = false;
        let result = poll_fn(|cx| loop {
            if closing {
                return conn.poll_close(cx);
            }
            if pending_open.is_none() {
                match cmd_rx.poll_next_unpin(cx) {
                    Poll::Ready(Some(Command::Open(reply))) => pending_open = Some(reply),
                    Poll::Ready(Some(Command::Close)) => {
                        closing = true;
                        continue;
                    }
                    // Every handle is gone and nobody takes inbound streams: nothing can use the session any more, so
                    // it says goodbye instead of holding the connection (and the peer's session) open for ever.
                    Poll::Ready(None) if stream_tx.is_closed() => {
                        closing = true;
                        continue;
                    }
                    // Every handle is gone: keep serving inbound streams until the peer leaves.
                    Poll::Ready(None) | Poll::Pending => {}
                }
            }
            if let Some(reply) = pending_open.take() {
                match conn.poll_new_outbound(cx) {
                    Poll::Ready(result) => {
                        let _ = reply.send(result);
                        continue;
                    }
                    Poll::Pending => pending_open = Some(reply),
                }
            }
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    let _ = stream_tx.unbounded_send(stream);
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(err)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
        if let Err(err) = &result {
            tracing::debug!(error = %err, "yamux session ended with an error");
        }
        let _ = ended_tx.send(result);
    });
    (SessionHandle { commands: cmd_tx }, Incoming { streams: stream_rx, ended: ended_rx })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_stream_limit_builds_a_config() {
        for max_streams in [1, 4, 511, 512, 513, 10_000] {
            let _ = SessionConfig { max_streams, ..SessionConfig::default() }.to_yamux();
        }
    }
}
