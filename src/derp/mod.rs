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

pub use region::{embedded_derp_map, EmbeddedRegion};
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
    pub relay: RelayConfig,
}

impl Default for DerpConfig {
    fn default() -> Self {
        DerpConfig {
            enabled: true,
            region: EmbeddedRegion::default(),
            access_url: DEFAULT_ACCESS_URL.to_owned(),
            relay: RelayConfig::default(),
        }
    }
}
