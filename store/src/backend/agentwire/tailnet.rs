//! `TailnetSql` on agentwire's own schema: refused. The tables are Coder's (enterprise PGCoordinator's); agentwire's
//! replicas coordinate through the pubsub alone and keep no tailnet rows.

use uuid::Uuid;

use crate::backend::{AgentwireDb, TailnetSql};
use crate::tailnet::{TailnetCoordinator, TailnetPeer, TailnetTunnel, TailnetWrites};
use crate::StoreError;

fn refused<T>() -> Result<T, StoreError> {
    Err(StoreError::Invalid(
        "Coder's HA tailnet tables (tailnet_coordinators, tailnet_peers, tailnet_tunnels) exist only on a Coder \
         database: agentwire's own schema has none; PGCoordinator's protocol needs a store opened on Coder's \
         database (--coder-db)"
            .to_owned(),
    ))
}

impl TailnetSql for AgentwireDb {
    async fn upsert_tailnet_coordinator(&self, _coordinator: Uuid) -> Result<(), StoreError> {
        refused()
    }
    async fn write_tailnet(&self, _coordinator: Uuid, _writes: &TailnetWrites) -> Result<(), StoreError> {
        refused()
    }
    async fn mark_tailnet_peers_lost(&self, _coordinator: Uuid) -> Result<(), StoreError> {
        refused()
    }
    async fn tailnet_peers(&self, _ids: &[Uuid]) -> Result<Vec<TailnetPeer>, StoreError> {
        refused()
    }
    async fn tailnet_tunnels(&self, _pairs: &[(Uuid, Uuid)]) -> Result<Vec<TailnetTunnel>, StoreError> {
        refused()
    }
    async fn all_tailnet_peers(&self) -> Result<Vec<TailnetPeer>, StoreError> {
        refused()
    }
    async fn all_tailnet_tunnels(&self) -> Result<Vec<TailnetTunnel>, StoreError> {
        refused()
    }
    async fn tailnet_coordinators(&self) -> Result<Vec<TailnetCoordinator>, StoreError> {
        refused()
    }
    async fn clean_tailnet(&self) -> Result<(), StoreError> {
        refused()
    }
}
