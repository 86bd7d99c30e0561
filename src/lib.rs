//! agentwire: a wire-compatible server for Coder's workspace agent RPC endpoint.

pub mod agentapi;
pub mod proto;
pub mod session;
