//! Coder's workspace-agent API as Rust types: the protobuf messages of `coder.agent.v2` and `coder.tailnet.v2`
//! (prost), and for each service a server trait, a `register_*` function for a dRPC router and a typed client.
//!
//! Everything here is generated at build time from `agent.proto` and `tailnet.proto` beside this crate, with
//! protox (no system `protoc`) and the dRPC generator of `agentwire-transport` (feature `codegen`); nothing is
//! written by hand but this page. The server, the load generator, the fuzz targets and the tests share these types,
//! so none of them reaches into another for a message.
//!
//! For `coder.agent.v2.Agent`, in [`agent::v2`] (and likewise `Tailnet` in [`tailnet::v2`]):
//! - the messages, and `agent_methods::GET_MANIFEST` and so on: every method's dRPC path;
//! - `AgentServer`: one async method per RPC, served by `register_agent(router, service)` on an
//!   `agentwire_transport::server::Router`;
//! - `AgentClient`: typed calls over an `agentwire_transport::client::Client` (streams as `TypedClientStream`).

#![allow(clippy::all, missing_docs)]

pub mod agent {
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/coder.agent.v2.rs"));
    }
}

pub mod tailnet {
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/coder.tailnet.v2.rs"));
    }
}
