//! Protobuf messages and dRPC services of Coder's agent API, generated at build time from `proto/`.

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
