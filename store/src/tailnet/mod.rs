//! Coder's HA tailnet coordination state (enterprise PGCoordinator's), on a Coder database: the coordinators and
//! their heartbeats (`tailnet_coordinators`), each coordinator's peers with their nodes and status
//! (`tailnet_peers`), and the tunnels between peers (`tailnet_tunnels`). Coder's schema has triggers on the three
//! tables that notify every change (`tailnet_coordinator_heartbeat`, `tailnet_peer_update`,
//! `tailnet_tunnel_update`), so writing a row is what tells the other coordinators; only "ready for handshake" is
//! published directly. [`CoderTailnet`] is the door to it, and every statement behind it is counted under the
//! sqlc query of Coder's `coderd/database/queries/tailnet.sql` it stands for. agentwire's own schema has no such
//! tables: there every call fails with [`StoreError::Invalid`].

use uuid::Uuid;

pub(crate) mod rows;

pub use rows::{TailnetCoordinator, TailnetPeer, TailnetTunnel, TailnetWrites};

use crate::backend::TailnetSql;
use crate::{Store, StoreError};

/// Coder's trigger channel for a coordinator's heartbeat; the payload is its id.
pub const HEARTBEAT_CHANNEL: &str = "tailnet_coordinator_heartbeat";
/// Coder's trigger channel for a change to a peer's rows; the payload is the peer's id.
pub const PEER_UPDATE_CHANNEL: &str = "tailnet_peer_update";
/// Coder's trigger channel for a change to a tunnel's rows; the payload is `<src>,<dst>`.
pub const TUNNEL_UPDATE_CHANNEL: &str = "tailnet_tunnel_update";
/// PGCoordinator's channel for a peer ready for a handshake with another; the payload is `<to>,<from>`.
pub const READY_FOR_HANDSHAKE_CHANNEL: &str = "tailnet_ready_for_handshake";

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
