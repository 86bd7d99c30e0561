//! Every limit the transport enforces, named once: dRPC, yamux, keepalive, WebSocket, the server's call slots and
//! the memory budget. The modules that enforce them (`io::ws`, `io::yamux`, `io::keepalive`, `server`, `budget`)
//! re-export their constants from here, so old paths keep working and there is one definition of each.
//!
//! Each limit is a `DEFAULT_*` constant (or a fixed value where the peer's protocol fixes it), a field of a config
//! struct, and a `serve` flag of the `agentwire` binary whose default is the constant. README, "Limits", has what
//! a peer sees past each.
//!
//! | constant | default | source | `serve` flag |
//! | --- | --- | --- | --- |
//! | [`DEFAULT_MAX_PACKET_SIZE`] | 4 MiB | Coder's `drpcsdk` (`MaximumBufferSize`) | `--max-message-size` |
//! | [`DEFAULT_SPLIT_SIZE`] | 64 KiB | storj drpc's `SplitSize` default | none: how we send, not what we accept |
//! | [`DEFAULT_MAX_METADATA_SIZE`] | 64 KiB | ours (Go: the packet cap) | none: Coder agents send no metadata |
//! | [`STREAM_WINDOW`] | 256 KiB | fixed: hashicorp's `MaxStreamWindowSize` | none: a Go peer assumes it |
//! | [`DEFAULT_MAX_STREAMS_PER_SESSION`] | 512 | ours (hashicorp caps only unaccepted ones: `AcceptBacklog` 256) | `--max-streams-per-session` |
//! | [`DEFAULT_SPLIT_SEND_SIZE`] | 16 KiB | the `yamux` crate's default | none: how we send |
//! | [`DEFAULT_KEEPALIVE_INTERVAL`] | 30 s | hashicorp's `KeepAliveInterval` | `--keepalive-interval` |
//! | [`DEFAULT_KEEPALIVE_TIMEOUT`] | 10 s | hashicorp (its `ConnectionWriteTimeout`) | `--keepalive-timeout` |
//! | [`DEFAULT_WRITE_TIMEOUT`] | 10 s | hashicorp's `ConnectionWriteTimeout` | `--write-timeout` |
//! | [`DEFAULT_MAX_WS_MESSAGE_SIZE`] | 1 MiB | ours (a Go peer sends at most 256 KiB + 12) | `--max-ws-message-size` |
//! | [`DEFAULT_WS_READ_BUFFER`] | 4 KiB | ours (tungstenite: 128 KiB) | `--ws-read-buffer` |
//! | [`WS_WRITE_COALESCE`] | 64 KiB | ours | none: how we send |
//! | [`DEFAULT_WS_PING_INTERVAL`] | 15 s | coderd's `AgentConnectionUpdateFrequency` | `--ws-ping-interval` |
//! | [`DEFAULT_WS_PING_TIMEOUT`] | 30 s | coderd's `AgentInactiveDisconnectTimeout` | `--ws-ping-timeout` |
//! | [`DEFAULT_MAX_CONCURRENT_CALLS_PER_SESSION`] | 128 | ours (Go: none) | `--max-concurrent-calls` |
//! | [`DEFAULT_STREAM_SEND_QUEUE`] | 8 | ours | none: back-pressure on our own handlers |
//! | [`DEFAULT_ACK_DELAY`] | 1 s | ours, far inside hashicorp's 75 s `StreamOpenTimeout` | none |
//! | [`DEFAULT_SESSION_MEMORY`] | 16 MiB | ours (four of Coder's largest messages) | `--max-session-memory` |
//! | [`DEFAULT_SESSION_GUARANTEED_MEMORY`] | 256 KiB | ours | `--session-guaranteed-memory` |
//! | [`DEFAULT_MEMORY_WAIT`] | 5 s | ours | `--memory-wait` |
//!
//! The pools above one session (an agent's sessions, the whole server) are the server's to size: their defaults are
//! `agentwire::server::DEFAULT_AGENT_MEMORY` (`--max-agent-memory`) and `DEFAULT_SERVER_MEMORY`
//! (`--max-server-memory`).

use std::time::Duration;

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

// dRPC (storj drpc as Coder configures it, `drpcsdk.DefaultDRPCOptions`).

/// Largest packet (reassembled from frames) accepted from the peer. Go drpc's `Reader.MaximumBufferSize`, which
/// Coder sets to 4 MiB. Past it the connection ends with the protocol error "data overflow".
pub const DEFAULT_MAX_PACKET_SIZE: usize = 4 * MIB;

/// Size at which outgoing Invoke, InvokeMetadata and Message bodies are cut into frames. Go drpc's
/// `Stream.SplitSize` default (0 means 64 KiB).
pub const DEFAULT_SPLIT_SIZE: usize = 64 * KIB;

/// Largest InvokeMetadata map accepted, in encoded bytes. Go has no separate cap (the packet cap applies); ours is
/// lower because metadata is held for the whole call and Coder agents never send any.
pub const DEFAULT_MAX_METADATA_SIZE: usize = 64 * KIB;

// yamux (hashicorp's settings, on the `yamux` crate).

/// hashicorp's `MaxStreamWindowSize`, which Coder never changes: a Go peer sends at most this much unacknowledged.
/// Fixed: a Go peer assumes it, so it is no setting.
pub const STREAM_WINDOW: usize = 256 * KIB;

/// Streams one session may hold open at once. A Coder agent holds a handful; past the limit the crate refuses the
/// session (GoAway, internal error). Bounds receive buffers to `max_streams × 256 KiB` per session.
pub const DEFAULT_MAX_STREAMS_PER_SESSION: usize = 512;

/// Largest Data frame body we send; the crate's own default. Go accepts any size up to the window.
pub const DEFAULT_SPLIT_SEND_SIZE: usize = 16 * KIB;

// Keepalive and write timeout (hashicorp's `DefaultConfig`).

/// hashicorp's `KeepAliveInterval`.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a keepalive ping may go unanswered: hashicorp uses its `ConnectionWriteTimeout` for this.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// hashicorp's `ConnectionWriteTimeout`: a peer that stops reading is cut off after this long.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

// WebSocket (coderd's agent connection).

/// Largest WebSocket message read. A Go yamux peer sends at most a 256 KiB window's worth plus a 12-byte header in
/// one message; the cap leaves room and keeps a hostile peer from making us buffer more.
pub const DEFAULT_MAX_WS_MESSAGE_SIZE: usize = MIB;

/// Bytes a WebSocket asks of the socket per read. tungstenite zero-fills its whole read buffer before each read, so
/// its 128 KiB default would be resident for every idle connection; an agent's frames are mostly a few hundred bytes,
/// and a larger message still arrives whole (the buffer grows to the frame's announced length).
pub const DEFAULT_WS_READ_BUFFER: usize = 4 * KIB;

/// Bytes gathered before a message is sent even without a flush.
pub const WS_WRITE_COALESCE: usize = 64 * KIB;

/// How often the server pings an agent's WebSocket: coderd's `AgentConnectionUpdateFrequency`.
pub const DEFAULT_WS_PING_INTERVAL: Duration = Duration::from_secs(15);
/// How long a WebSocket may stay silent (no message, no pong) before it is dropped: coderd's
/// `AgentInactiveDisconnectTimeout`.
pub const DEFAULT_WS_PING_TIMEOUT: Duration = Duration::from_secs(30);

// Serving calls.

/// Calls one session may run at once; a stream past it is ACKed and waits for a slot. A call holds its slot from
/// its first byte, so a partial Invoke counts as a call. Go has no such limit; ours keeps one agent from occupying
/// every worker, or holding memory in calls it never finishes.
pub const DEFAULT_MAX_CONCURRENT_CALLS_PER_SESSION: usize = 128;

/// Replies a streaming handler may queue before its `send` waits for the peer to take them.
pub const DEFAULT_STREAM_SEND_QUEUE: usize = 8;

/// How long an accepted stream may go without an ACK. A reply carries the ACK in its first frame, so a quick call
/// costs no extra frame; a slower one is acknowledged after this delay, far inside the 75 s after which a Go peer
/// (hashicorp `StreamOpenTimeout`) tears the whole session down. Streaming calls are acknowledged at once.
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_secs(1);

// Memory budget (`budget`).

/// Undispatched bytes one session may hold. Four of Coder's largest messages (4 MiB) fit, so a large log batch
/// among ordinary calls never waits; Coder's agent holds a few KiB.
pub const DEFAULT_SESSION_MEMORY: usize = 16 * MIB;

/// The part of a session's budget that is its own, not drawn from the pools above it. Larger than any ordinary
/// agent call (stats, metadata, lifecycle); only log batches and manifests of sub-agents go past it.
pub const DEFAULT_SESSION_GUARANTEED_MEMORY: usize = 256 * KIB;

/// How long a stream may wait for room under an exhausted limit before the largest holder under it is ended.
pub const DEFAULT_MEMORY_WAIT: Duration = Duration::from_secs(5);

/// Limits of one dRPC connection (one yamux stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`DEFAULT_MAX_PACKET_SIZE`].
    pub max_packet_size: usize,
    /// See [`DEFAULT_SPLIT_SIZE`]. Must be at least 1.
    pub split_size: usize,
    /// See [`DEFAULT_MAX_METADATA_SIZE`]. Past it the call is refused with "metadata too large".
    pub max_metadata_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            split_size: DEFAULT_SPLIT_SIZE,
            max_metadata_size: DEFAULT_MAX_METADATA_SIZE,
        }
    }
}
