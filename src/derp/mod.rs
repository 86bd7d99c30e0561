//! The embedded DERP relay, as coderd embeds tailscale's: peers that cannot reach each other directly (no UDP,
//! strict NATs) exchange WireGuard packets through it, addressed by their node keys. It speaks tailscale's DERP
//! protocol version 2 at `/derp` ([`http`]), and its region is the default DERP map ([`region`]) until an operator
//! sets one with `agentwire derp set`.
//!
//! * [`frame`]: the wire format, sans IO, and the limits a client's frames are held to;
//! * [`keys`]: node keys and the NaCl box of the login;
//! * [`relay`]: who is connected, the per-client queues and their bounds;
//! * [`conn`]: one connection, from the login to its end;
//! * [`stats`]: the counters on `/metrics`.

pub mod conn;
pub mod frame;
pub mod http;
pub mod keys;
pub mod region;
pub mod relay;
pub mod stats;

pub use region::{default_derp_map, embedded_derp_map, DerpMapError, EmbeddedRegion};
pub use relay::{Relay, RelayConfig};
pub use stats::RelayStats;

/// The access URL the default map points at when none is given: the default listen address, as agents'
/// `access_url` defaults to it.
pub const DEFAULT_ACCESS_URL: &str = "http://127.0.0.1:3000";

/// The embedded relay and the default map that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerpConfig {
    /// Serve the relay at `/derp` and make its region the default map (coderd's `--derp-server-enable`, on by
    /// default). Off: no relay, and without `derp set` agents get an empty map, as before.
    pub enabled: bool,
    pub region: EmbeddedRegion,
    /// Where peers reach the relay: the server's access URL.
    pub access_url: String,
    /// The STUN servers the default map adds a region for each (coderd's `--derp-server-stun-addresses`); `disable`
    /// among them, or none, turns STUN off. None by default, unlike coderd (why: the `Default` impl); beside coderd,
    /// coderd's [`region::CODERD_STUN_ADDRESSES`].
    pub stun_addresses: Vec<String>,
    /// coderd's `--block-direct-connections` as it shapes the map: no STUN regions, whatever `stun_addresses` says.
    /// The manifest's flag is [`crate::agentapi::AgentApiConfig::disable_direct_connections`]; set both.
    pub block_direct: bool,
    pub relay: RelayConfig,
}

impl DerpConfig {
    /// The map agents get while no map is stored, as coderd builds it for the same settings; `None` with the relay
    /// off.
    pub fn default_map(&self) -> Result<Option<crate::proto::tailnet::v2::DerpMap>, DerpMapError> {
        if !self.enabled {
            return Ok(None);
        }
        default_derp_map(&self.region, &self.access_url, &self.stun_addresses, self.block_direct).map(Some)
    }
}

impl Default for DerpConfig {
    fn default() -> Self {
        DerpConfig {
            enabled: true,
            region: EmbeddedRegion::default(),
            access_url: DEFAULT_ACCESS_URL.to_owned(),
            // Standalone, the map is the relay's region alone, as agentwire has always served it. coderd's default
            // points every agent's and client's netcheck at Google's STUN servers, a third party this deployment
            // never named, and where they cannot be reached (an air-gapped network) each netcheck waits out
            // tailscale's 3 s STUN probe timeout: offline, the real agent's life in cli/tests/real_agent.rs takes
            // about 10 s longer with them (28-36 s against 21-24 s). Peers still connect directly on the addresses
            // they share, and through the relay otherwise; `serve --derp-server-stun-addresses` names STUN servers,
            // and `serve --coder-db` takes coderd's, as its map must be coderd's.
            stun_addresses: Vec::new(),
            block_direct: false,
            relay: RelayConfig::default(),
        }
    }
}
