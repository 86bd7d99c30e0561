//! Coder's HA tailnet coordination state (enterprise PGCoordinator's), on a Coder database: the coordinators and
//! their heartbeats (`tailnet_coordinators`), each coordinator's peers with their nodes and status
//! (`tailnet_peers`), and the tunnels between peers (`tailnet_tunnels`). Coder's schema has triggers on the three
//! tables that notify every change (`tailnet_coordinator_heartbeat`, `tailnet_peer_update`,
//! `tailnet_tunnel_update`), so writing a row is what tells the other coordinators; only "ready for handshake" is
//! published directly. [`CoderTailnet`] is the door to it, and every statement behind it is counted under the
//! sqlc query of Coder's `coderd/database/queries/tailnet.sql` it stands for. agentwire's own schema has no such
//! tables: there every call fails with [`StoreError::Invalid`].

use std::time::Duration;

use uuid::Uuid;

use crate::backend::TailnetSql;
use crate::model::UnixMicros;
use crate::{Store, StoreError};

/// Coder's trigger channel for a coordinator's heartbeat; the payload is its id.
pub const HEARTBEAT_CHANNEL: &str = "tailnet_coordinator_heartbeat";
/// Coder's trigger channel for a change to a peer's rows; the payload is the peer's id.
pub const PEER_UPDATE_CHANNEL: &str = "tailnet_peer_update";
/// Coder's trigger channel for a change to a tunnel's rows; the payload is `<src>,<dst>`.
pub const TUNNEL_UPDATE_CHANNEL: &str = "tailnet_tunnel_update";
/// PGCoordinator's channel for a peer ready for a handshake with another; the payload is `<to>,<from>`.
pub const READY_FOR_HANDSHAKE_CHANNEL: &str = "tailnet_ready_for_handshake";

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

/// PGCoordinator's statements on this store's database (see the module doc). Cheap to make: see
/// [`Store::coder_tailnet`].
#[derive(Debug, Clone)]
pub struct CoderTailnet {
    pub(crate) store: Store,
}

impl CoderTailnet {
    /// `UpsertTailnetCoordinator`: the coordinator's heartbeat (its row, created on the first).
    pub async fn heartbeat(&self, coordinator: Uuid) -> Result<(), StoreError> {
        self.store.core().db.upsert_tailnet_coordinator(coordinator).await
    }

    /// A coordinator's pending writes in one transaction (none for a single statement): `DeleteAllTailnetTunnels`,
    /// `DeleteTailnetTunnel`, `DeleteTailnetPeer`, `UpsertTailnetPeer`, `UpsertTailnetTunnel`, each one statement for
    /// all its rows and run only when it has some. The rows' triggers notify at commit.
    pub async fn write(&self, coordinator: Uuid, writes: &TailnetWrites) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.store.core().db.write_tailnet(coordinator, writes).await
    }

    /// `UpdateTailnetPeerStatusByCoordinator` to `lost`: every peer of a coordinator that closes.
    pub async fn mark_lost(&self, coordinator: Uuid) -> Result<(), StoreError> {
        self.store.core().db.mark_tailnet_peers_lost(coordinator).await
    }

    /// `GetTailnetPeers` for each of `ids` at once: their rows from every coordinator.
    pub async fn peers(&self, ids: &[Uuid]) -> Result<Vec<TailnetPeer>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.store.core().db.tailnet_peers(ids).await
    }

    /// The rows of the tunnels among `pairs` (`(src, dst)`), from every coordinator: the read PGCoordinator's
    /// `GetTailnetTunnelPeerIDs` makes for a tunnel's change, for many changes at once.
    pub async fn tunnels(&self, pairs: &[(Uuid, Uuid)]) -> Result<Vec<TailnetTunnel>, StoreError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        self.store.core().db.tailnet_tunnels(pairs).await
    }

    /// `GetAllTailnetPeers`.
    pub async fn all_peers(&self) -> Result<Vec<TailnetPeer>, StoreError> {
        self.store.core().db.all_tailnet_peers().await
    }

    /// `GetAllTailnetTunnels`.
    pub async fn all_tunnels(&self) -> Result<Vec<TailnetTunnel>, StoreError> {
        self.store.core().db.all_tailnet_tunnels().await
    }

    /// `GetAllTailnetCoordinators`, with each heartbeat's age.
    pub async fn coordinators(&self) -> Result<Vec<TailnetCoordinator>, StoreError> {
        self.store.core().db.tailnet_coordinators().await
    }

    /// PGCoordinator's hourly cleanup, idempotent and shared by all coordinators: `CleanTailnetCoordinators` (a
    /// day without heartbeat; their peers and tunnels go with them), `CleanTailnetLostPeers` (lost for a day),
    /// `CleanTailnetTunnels` (a day old and their source gone).
    pub async fn clean(&self) -> Result<(), StoreError> {
        self.store.core().db.clean_tailnet().await
    }

    /// Tells the coordinator of `to` that `from` is ready for a handshake with it.
    pub async fn ready_for_handshake(&self, to: Uuid, from: Uuid) -> Result<(), StoreError> {
        self.store.pubsub().publish(READY_FOR_HANDSHAKE_CHANNEL, &format!("{to},{from}")).await
    }
}
