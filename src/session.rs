//! One agent connection: who it is, resolved once from its token, and what every handler needs to know about it.
//!
//! The [`Session`] is built at connect time from the single token lookup and passed by reference to every RPC.
//! Handlers reach the database only through `scope`, which is bound to this agent; nothing here can look the agent
//! row up again.

use std::fmt;
use std::str::FromStr;

use agentwire_store::{AgentScope, ResolvedAgent};
use uuid::Uuid;

/// The agent API versions this server speaks: 2.0 up to [`ApiVersion::CURRENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    /// The newest minor documented for `coder.agent.v2` (PushContextState).
    pub const CURRENT: ApiVersion = ApiVersion { major: 2, minor: 10 };
    /// The newest minor coderd v2.30 speaks (`agent/proto.CurrentVersion`): on a Coder deployment's database agentwire
    /// serves no newer one than the coderd beside it, so an agent cannot tell which of the two it dialed.
    pub const CODER_V2_30: ApiVersion = ApiVersion { major: 2, minor: 7 };
    /// What an agent that sends no version speaks.
    pub const DEFAULT: ApiVersion = ApiVersion { major: 2, minor: 0 };

    pub const fn new(major: u32, minor: u32) -> Self {
        ApiVersion { major, minor }
    }

    pub fn is_supported(self) -> bool {
        self.is_supported_up_to(Self::CURRENT)
    }

    /// Supported by a server whose newest version is `newest` (of the same major).
    pub fn is_supported_up_to(self, newest: ApiVersion) -> bool {
        self.major == newest.major && self <= newest
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for ApiVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("invalid version {s:?}: expected MAJOR.MINOR");
        let (major, minor) = s.split_once('.').ok_or_else(invalid)?;
        Ok(ApiVersion { major: major.parse().map_err(|_| invalid())?, minor: minor.parse().map_err(|_| invalid())? })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!("2.7".parse::<ApiVersion>(), Ok(ApiVersion::new(2, 7)));
        assert!("2".parse::<ApiVersion>().is_err());
        assert!("2.x".parse::<ApiVersion>().is_err());
        assert!(ApiVersion::new(2, 0).is_supported());
        assert!(ApiVersion::new(2, 10).is_supported());
        assert!(!ApiVersion::new(2, 11).is_supported());
        assert!(!ApiVersion::new(1, 0).is_supported());
        assert!(!ApiVersion::new(3, 0).is_supported());
    }
}
