//! The dRPC client, as Coder's agent uses it (`drpcsdk.MultiplexedConn`): every call, unary or streaming, opens
//! its own yamux stream and runs its own dRPC connection on it.

use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::io::{DriveError, DrpcStream, SessionError, SessionHandle};
use crate::limits::Limits;
use crate::server::Status;
use crate::stream::{ConnError, Event, Role, SendError};
use crate::wire::Metadata;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server answered with an Error packet.
    #[error(transparent)]
    Status(#[from] Status),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("transport: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Protocol(#[from] ConnError),
    #[error(transparent)]
    Send(#[from] SendError),
    /// The stream ended without the reply a unary call needs (Go's client reports EOF).
    #[error("EOF: the stream ended without a reply")]
    NoReply,
    /// The server closed or cancelled the stream.
    #[error("remote closed the stream")]
    RemoteClosed,
    /// The reply is not a valid protobuf message of the expected type.
    #[error("failed to decode {type_name}: {source}")]
    Decode { type_name: &'static str, source: prost::DecodeError },
}

impl From<DriveError> for CallError {
    fn from(err: DriveError) -> Self {
        match err {
            DriveError::Protocol(err) => CallError::Protocol(err),
            DriveError::Io(err) => CallError::Io(err),
            // Clients read under no budget; should one ever be set, its end is the transport's.
            DriveError::Memory(err) => CallError::Io(std::io::Error::other(err)),
        }
    }
}

impl CallError {
    /// The dRPC error code when the server answered with one.
    pub fn code(&self) -> Option<u64> {
        match self {
            CallError::Status(status) => Some(status.code),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    session: SessionHandle,
    limits: Limits,
}

impl Client {
    pub fn new(session: SessionHandle, limits: Limits) -> Self {
        Client { session, limits }
    }

    pub fn session(&self) -> &SessionHandle {
        &self.session
    }

    /// A unary call. Invoke, Message and CloseSend leave in one write; the stream is half-closed only after the
    /// reply (a Go server treats an early FIN as cancellation).
    pub async fn unary(&self, method: &str, request: &[u8]) -> Result<Bytes, CallError> {
        let stream = self.session.open().await?;
        let mut io = DrpcStream::new(stream, Role::Client, self.limits);
        let id = io.conn().start_call(method, &Metadata::new())?;
        io.conn().send_message(id, request)?;
        io.conn().send_close_send(id)?;
        io.flush().await?;
        let reply = loop {
            match io.next_event().await {
                Ok(Some(Event::Message { data, .. })) => break Ok(data),
                Ok(Some(Event::Error { error, .. })) => break Err(Status::new(error.code, error.message).into()),
                Ok(Some(Event::CloseSend { .. })) | Ok(None) => break Err(CallError::NoReply),
                Ok(Some(Event::Close { .. } | Event::Cancel { .. })) => break Err(CallError::RemoteClosed),
                Ok(Some(_)) => continue,
                Err(err) => break Err(err.into()),
            }
        };
        // As Go's Invoke does on return: Close unless the stream already ended, then FIN.
        if !io.conn().is_finished(id) {
            let _ = io.conn().send_close(id);
        }
        let _ = io.close().await;
        reply
    }

    /// Opens a streaming call (server, client or bidi shape). The Invoke goes out at once.
    pub async fn open_stream(&self, method: &str) -> Result<ClientStream, CallError> {
        let stream = self.session.open().await?;
        let mut io = DrpcStream::new(stream, Role::Client, self.limits);
        let id = io.conn().start_call(method, &Metadata::new())?;
        io.flush().await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (event_tx, event_rx) = mpsc::channel(8);
        tokio::spawn(drive_client_stream(io, id, cmd_rx, event_tx));
        Ok(ClientStream { commands: cmd_tx, events: event_rx, _session: self.session.clone() })
    }
}

enum Command {
    Send(Bytes),
    CloseSend,
}

/// The caller's side of a streaming call. Dropping it ends the call (Close, then FIN).
pub struct ClientStream {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Result<Option<Bytes>, CallError>>,
    /// The session closes once its last handle is gone (see [`spawn_session`](crate::io::spawn_session)); an open
    /// stream keeps it, so a caller may drop the [`Client`] and go on with the stream.
    _session: SessionHandle,
}

impl ClientStream {
    pub async fn send(&self, message: Bytes) -> Result<(), CallError> {
        self.commands.send(Command::Send(message)).await.map_err(|_| CallError::RemoteClosed)
    }

    /// Ends our send side (CloseSend); replies keep coming.
    pub async fn close_send(&self) -> Result<(), CallError> {
        self.commands.send(Command::CloseSend).await.map_err(|_| CallError::RemoteClosed)
    }

    /// The next reply; `Ok(None)` once the server has closed its send side.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, CallError> {
        match self.events.recv().await {
            Some(result) => result,
            None => Ok(None),
        }
    }
}

async fn drive_client_stream(
    mut io: DrpcStream,
    id: u64,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Result<Option<Bytes>, CallError>>,
) {
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Send(message)) => {
                    if let Err(err) = io.conn().send_message(id, &message) {
                        let _ = events.send(Err(err.into())).await;
                    } else if let Err(err) = io.flush().await {
                        let _ = events.send(Err(err.into())).await;
                        break;
                    }
                }
                Some(Command::CloseSend) => {
                    let _ = io.conn().send_close_send(id);
                    if io.flush().await.is_err() {
                        break;
                    }
                }
                None => {
                    if !io.conn().is_finished(id) {
                        let _ = io.conn().send_close(id);
                    }
                    break;
                }
            },
            event = io.next_event() => {
                let delivered = match event {
                    Ok(Some(Event::Message { data, .. })) => Ok(Some(data)),
                    Ok(Some(Event::CloseSend { .. })) | Ok(None) => Ok(None),
                    Ok(Some(Event::Error { error, .. })) => Err(Status::new(error.code, error.message).into()),
                    Ok(Some(Event::Close { .. } | Event::Cancel { .. })) => Err(CallError::RemoteClosed),
                    Ok(Some(_)) => continue,
                    Err(err) => Err(err.into()),
                };
                let last = !matches!(delivered, Ok(Some(_)));
                if events.send(delivered).await.is_err() || last {
                    // Keep the stream open until the caller is done with it: an early FIN cancels on Go servers,
                    // and the caller may still be sending on a bidi stream after the server closed its side.
                    if last {
                        while let Some(command) = commands.recv().await {
                            if let Command::Send(_) = command {
                                continue;
                            }
                        }
                        if !io.conn().is_finished(id) {
                            let _ = io.conn().send_close(id);
                        }
                    }
                    break;
                }
            }
        }
    }
    let _ = io.close().await;
}

/// A streaming call with protobuf messages: requests of type `Req` out, replies of type `Resp` in.
pub struct TypedClientStream<Req, Resp> {
    inner: ClientStream,
    reply_type: &'static str,
    _types: std::marker::PhantomData<fn(Req) -> Resp>,
}

impl<Req: prost::Message, Resp: prost::Message + Default> TypedClientStream<Req, Resp> {
    pub fn new(inner: ClientStream, reply_type: &'static str) -> Self {
        TypedClientStream { inner, reply_type, _types: std::marker::PhantomData }
    }

    pub async fn send(&self, request: &Req) -> Result<(), CallError> {
        self.inner.send(request.encode_to_vec().into()).await
    }

    pub async fn close_send(&self) -> Result<(), CallError> {
        self.inner.close_send().await
    }

    pub async fn recv(&mut self) -> Result<Option<Resp>, CallError> {
        match self.inner.recv().await? {
            Some(body) => {
                Resp::decode(body).map(Some).map_err(|source| CallError::Decode { type_name: self.reply_type, source })
            }
            None => Ok(None),
        }
    }
}
