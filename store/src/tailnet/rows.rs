//! The rows of Coder's tailnet tables as the backend contract exchanges them (`TailnetSql`), apart from the facade
//! in `mod.rs` that runs the contract, so the contract and the facade do not import each other.

use std::time::Duration;

use uuid::Uuid;

use crate::model::UnixMicros;

/// One row of `tailnet_peers`: a peer as one coordinator has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailnetPeer {
    /// The peer (an agent's id, or a client connection's).
    pub id: Uuid,
    /// The coordinator the peer is connected to.
    pub coordinator_id: Uuid,
    /// When the row was last written (the coordinators' own clocks, as `now()` in the database).
    pub updated_at: UnixMicros,
    /// The peer's node, the `tailnet.v2.Node` protobuf.
    pub node: Vec<u8>,
    /// Status `lost`: the peer's connection ended without a disconnect; otherwise `ok`.
    pub lost: bool,
}

/// One row of `tailnet_tunnels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TailnetTunnel {
    /// The coordinator of the tunnel's source.
    pub coordinator_id: Uuid,
    /// The peer that opened the tunnel (a client).
    pub src_id: Uuid,
    /// The peer it leads to (an agent).
    pub dst_id: Uuid,
}

/// One row of `tailnet_coordinators`, with its heartbeat's age by the database's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailnetCoordinator {
    /// The coordinator.
    pub id: Uuid,
    /// How long ago its last heartbeat was written; zero if its clock is ahead of the database's.
    pub heartbeat_age: Duration,
}

/// What one flush of a coordinator writes, each key once, at its latest state: applied in one transaction, in the
/// order of the fields (a single statement alone, without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailnetWrites {
    /// Sources all of whose tunnels go (a peer that disconnected gracefully), before the tunnels below.
    pub delete_all_tunnels: Vec<Uuid>,
    /// Tunnels removed, as `(src, dst)`.
    pub delete_tunnels: Vec<(Uuid, Uuid)>,
    /// Peers that disconnected gracefully.
    pub delete_peers: Vec<Uuid>,
    /// Peers' nodes as `(peer, node protobuf, lost)`.
    pub upsert_peers: Vec<(Uuid, Vec<u8>, bool)>,
    /// Tunnels opened (or refreshed), as `(src, dst)`.
    pub upsert_tunnels: Vec<(Uuid, Uuid)>,
}

impl TailnetWrites {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.delete_all_tunnels.is_empty()
            && self.delete_tunnels.is_empty()
            && self.delete_peers.is_empty()
            && self.upsert_peers.is_empty()
            && self.upsert_tunnels.is_empty()
    }
}
