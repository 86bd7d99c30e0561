//! agentwire: a wire-compatible server for Coder's workspace agent RPC endpoint.

pub mod proto;
