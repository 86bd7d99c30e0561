//! One agent connection: who it is, resolved once from its token, and what every handler needs to know about it.
//!
//! The [`Session`] is built at connect time from the single token lookup and passed by reference to every RPC.
//! Handlers reach the database only through `scope`, which is bound to this agent; nothing here can look the agent
//! row up again.

use std::fmt;

use agentwire_store::{AgentScope, ResolvedAgent};
use uuid::Uuid;

pub use crate::agent_dial::ApiVersion;

/// Everything a handler knows about the agent on the other end, fixed for the connection's life.
pub struct Session {
    /// The only door to this agent's rows, and the agent as resolved at connect ([`Session::agent`]).
    pub scope: AgentScope,
    pub api_version: ApiVersion,
    /// This server process, recorded on the agent row while connected.
    pub replica_id: Uuid,
    /// Beside coderd with relayed coordination: the way to coderd with the agent's token, which only relayed sessions
    /// keep.
    pub coderd_relay: Option<Box<crate::tailnet::coderd_relay::AgentLink>>,
    /// The agent's resource monitors, loaded by the monitoring RPCs' first call and kept for the session's life.
    pub monitors: crate::resource_monitors::ResourceMonitors,
}

impl Session {
    /// The agent row and its workspace, build, owner and template, as resolved at connect.
    pub fn agent(&self) -> &ResolvedAgent {
        self.scope.agent()
    }

    pub fn agent_id(&self) -> Uuid {
        self.scope.agent_id()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("agent_id", &self.agent_id())
            .field("agent_name", &self.scope.agent_name())
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}
