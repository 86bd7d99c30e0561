//! agentwire: a wire-compatible server for Coder's workspace agent RPC endpoint.
//!
//! A session resolves its agent once from the token and serves every `coder.agent.v2.Agent` RPC from that
//! session's context ([`session`]), with one module per concern under [`agentapi`]; the store
//! (`agentwire-store`) batches hot writes; the dRPC transport (`agentwire-transport`) speaks Go's wire.

pub mod agent_dial;
pub mod agent_spec;
pub mod agentapi;
pub mod build_watch;
pub mod derp;
pub mod http;
pub mod metrics;
pub mod metrics_cache;
pub mod provision;
pub mod resource_monitors;
pub mod server;
pub mod session;
pub mod site_config;
pub mod tailnet;

/// The generated messages and dRPC services (`agentwire-proto`), under the path the server's modules and tests use.
pub use agentwire_proto as proto;
