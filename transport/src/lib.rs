//! storj dRPC, server and client, wire-compatible with Go's `storj.io/drpc` as Coder uses it over
//! `hashicorp/yamux` and WebSocket.
//!
//! The layers, inside out:
//! - [`wire`]: bytes ↔ frames ↔ packets (varints, control byte, splitting, reassembly, error and metadata bodies);
//! - [`stream`]: one dRPC connection as a sans-IO state machine: bytes in, [`stream::Event`]s and bytes out;
//! - `io` (feature `tokio`): yamux sessions with the settings a Go peer expects, and a WebSocket byte stream;
//! - `budget` (feature `tokio`): memory budgets for what peers send, per session and per pool of sessions;
//! - `server` and `client` (feature `tokio`): method routing, handlers of every shape, calls over a yamux session.
//!
//! `wire` and `stream` need no async runtime: fuzz targets and protocol tests drive them directly.

pub mod limits;
pub mod stream;
pub mod wire;

pub use limits::Limits;

#[cfg(feature = "tokio")]
pub mod budget;
#[cfg(feature = "tokio")]
pub mod client;
#[cfg(feature = "codegen")]
pub mod codegen;
#[cfg(feature = "tokio")]
pub mod io;
#[cfg(feature = "tokio")]
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
