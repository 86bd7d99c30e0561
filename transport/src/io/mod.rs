//! Async I/O under the dRPC layer: yamux sessions, one dRPC connection per yamux stream, WebSocket byte streams.

pub mod drpc_stream;
pub mod keepalive;
pub mod ws;
pub mod yamux;

pub use self::drpc_stream::{DriveError, DrpcStream, StreamMemory};
pub use self::keepalive::{Keepalive, KeepaliveConfig};
pub use self::ws::{
    WsByteStream, WsFrame, WsMessage, DEFAULT_MAX_WS_MESSAGE_SIZE, DEFAULT_WS_PING_INTERVAL, DEFAULT_WS_PING_TIMEOUT,
    DEFAULT_WS_READ_BUFFER,
};
pub use self::yamux::{spawn_session, Incoming, Mode, SessionConfig, SessionError, SessionHandle};
