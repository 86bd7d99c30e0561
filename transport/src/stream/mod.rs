//! The per-connection dRPC state machine (sans-IO).

pub mod conn;

pub use conn::{ConnError, Connection, Event, Role, SendError};
