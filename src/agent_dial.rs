//! What an agent dials the endpoint with, as coderd names it: its Agent API version (`?version=2.N`, and what
//! this server speaks) and its token's header and cookie. Apart from the HTTP handlers, so the relay to coderd
//! dials with the same names without depending on them.

use std::fmt;
use std::str::FromStr;

/// The header an agent's token arrives in (coderd's `codersdk.SessionTokenHeader`).
pub const TOKEN_HEADER: &str = "Coder-Session-Token";
/// The cookie an agent's token arrives in (coderd's `codersdk.SessionTokenCookie`); also taken as a query parameter.
pub const TOKEN_COOKIE: &str = "coder_session_token";

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
