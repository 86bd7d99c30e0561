//! Dialing one agent session, as Coder's agent does: WebSocket with the token in `Coder-Session-Token` (or plain TCP
//! for the server's --tcp-listen), Nagle off, a yamux client session on top. The socket may be bound to a chosen
//! loopback source address first, so that more sessions fit than one address has ephemeral ports.

use std::io;
use std::net::{IpAddr, SocketAddr};

use agentwire_transport::client::Client;
use agentwire_transport::io::ws::{ws_config, ClientWs};
use agentwire_transport::io::{
    spawn_session, Incoming, Mode, SessionConfig, WsByteStream, DEFAULT_MAX_WS_MESSAGE_SIZE,
};
use agentwire_transport::Limits;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::MaybeTlsStream;

use crate::config::Target;

/// One connected session: the client to call on and how the session ends.
pub(crate) struct Connection {
    pub client: Client,
    pub incoming: Incoming,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect: {0}")]
    Io(#[from] io::Error),
    #[error("websocket upgrade refused: HTTP {0}")]
    Http(u16),
    #[error("websocket handshake: {0}")]
    Handshake(String),
    #[error("the token is not a valid header value")]
    Token,
    #[error("connect timed out")]
    Timeout,
}

impl ConnectError {
    /// A short label for the report's error counts.
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Io(err) => format!("connect_{}", io_kind(err)),
            ConnectError::Http(status) => format!("connect_http_{status}"),
            ConnectError::Handshake(_) => "connect_handshake".into(),
            ConnectError::Token => "connect_bad_token".into(),
            ConnectError::Timeout => "connect_timeout".into(),
        }
    }
}

pub(crate) fn io_kind(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset => "reset",
        io::ErrorKind::ConnectionAborted => "aborted",
        io::ErrorKind::BrokenPipe => "broken_pipe",
        io::ErrorKind::TimedOut => "timed_out",
        io::ErrorKind::UnexpectedEof => "eof",
        // Out of ephemeral ports (or file descriptors show up as Other with EMFILE).
        io::ErrorKind::AddrNotAvailable => "addr_not_available",
        io::ErrorKind::AddrInUse => "addr_in_use",
        _ if err.raw_os_error() == Some(libc::EMFILE) || err.raw_os_error() == Some(libc::ENFILE) => "too_many_files",
        _ => "io",
    }
}

async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens one session to `target`.
pub(crate) async fn dial(
    target: &Target,
    token: Option<&str>,
    source: Option<IpAddr>,
    session: &SessionConfig,
) -> Result<Connection, ConnectError> {
    let (handle, incoming) = match target {
        Target::Tcp { addr } => spawn_session(tcp(*addr, source).await?, Mode::Client, session),
        Target::Ws { url, addr } => {
            let mut request =
                url.as_str().into_client_request().map_err(|err| ConnectError::Handshake(err.to_string()))?;
            if let Some(token) = token {
                let value = HeaderValue::from_str(token).map_err(|_| ConnectError::Token)?;
                request.headers_mut().insert("Coder-Session-Token", value);
            }
            let stream = MaybeTlsStream::Plain(tcp(*addr, source).await?);
            let config = ws_config(DEFAULT_MAX_WS_MESSAGE_SIZE);
            let (ws, _response) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|err| match err {
                    tokio_tungstenite::tungstenite::Error::Http(response) => {
                        ConnectError::Http(response.status().as_u16())
                    }
                    tokio_tungstenite::tungstenite::Error::Io(err) => ConnectError::Io(err),
                    other => ConnectError::Handshake(other.to_string()),
                })?;
            let io: ClientWs = WsByteStream::new(ws);
            spawn_session(io, Mode::Client, session)
        }
    };
    Ok(Connection { client: Client::new(handle, Limits::default()), incoming })
}
