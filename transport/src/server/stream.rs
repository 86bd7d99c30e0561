//! The handler's side of a streaming call: receive the client's messages, send replies.

use bytes::Bytes;
use tokio::sync::mpsc;

use super::status::Status;

/// Messages between a streaming handler and the loop that owns the yamux stream. The inbound channel holds one
/// message, like Go's stream: while the handler has not taken it, the loop stops reading, and the yamux window
/// pushes back on the peer.
pub struct ServerStream {
    pub(crate) inbound: mpsc::Receiver<Bytes>,
    pub(crate) outbound: mpsc::Sender<Bytes>,
    pub(crate) method: String,
}

impl ServerStream {
    /// The next message; `None` once the client has closed its send side.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.inbound.recv().await
    }

    /// Queues one message for the client. Fails once the call is over (the client left or cancelled).
    pub async fn send(&self, message: Bytes) -> Result<(), Status> {
        self.outbound.send(message).await.map_err(|_| Status::error("stream closed"))
    }

    pub fn method(&self) -> &str {
        &self.method
    }
}
