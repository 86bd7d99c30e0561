//! `TailnetSql` on Coder's schema: enterprise PGCoordinator's statements (`coderd/database/queries/tailnet.sql`) on
//! `tailnet_coordinators`, `tailnet_peers` and `tailnet_tunnels`.
//!
//! Each statement is Coder's, named after its sqlc query. Where PGCoordinator runs one per peer or tunnel (its
//! binder and tunneler write one row per statement, its querier reads one peer's rows), the statement here takes
//! arrays, one element per row, and a flush's writes are one transaction: the rows and what their triggers notify
//! are what Coder's statements would leave, in one round trip. Times are written as Coder writes them,
//! `now() at time zone 'utc'`, so the rows order and expire by the same clock as coderd's.

use std::time::Duration;

use uuid::Uuid;

use super::CoderDb;
use crate::backend::{begin, commit, q, qa, Engine, TailnetSql};
use crate::counting::Stmt;
use crate::model::id;
use crate::tailnet::{TailnetCoordinator, TailnetPeer, TailnetTunnel, TailnetWrites};
use crate::StoreError;

const PG: Engine = Engine::Postgres;

const UPSERT_COORDINATOR: Stmt = Stmt::new(
    "UpsertTailnetCoordinator",
    "INSERT INTO tailnet_coordinators (id, heartbeat_at) VALUES ($1::uuid, now() at time zone 'utc') \
     ON CONFLICT (id) DO UPDATE SET id = $1::uuid, heartbeat_at = now() at time zone 'utc'",
);

/// Coder's statement with a tunnel source per array element (PGCoordinator deletes one source's per statement).
const DELETE_ALL_TUNNELS: Stmt = Stmt::new(
    "DeleteAllTailnetTunnels",
    "DELETE FROM tailnet_tunnels WHERE coordinator_id = $1::uuid AND src_id = ANY($2::uuid[])",
);

/// Coder's statement with a tunnel per pair of array elements.
const DELETE_TUNNELS: Stmt = Stmt::new(
    "DeleteTailnetTunnel",
    "DELETE FROM tailnet_tunnels t USING unnest($2::uuid[], $3::uuid[]) AS d(src_id, dst_id) \
     WHERE t.coordinator_id = $1::uuid AND t.src_id = d.src_id AND t.dst_id = d.dst_id",
);

/// Coder's statement with a peer per array element.
const DELETE_PEERS: Stmt = Stmt::new(
    "DeleteTailnetPeer",
    "DELETE FROM tailnet_peers WHERE id = ANY($2::uuid[]) AND coordinator_id = $1::uuid",
);

/// Coder's statement with a peer per element of the arrays; a flush holds each peer once, as `ON CONFLICT DO
/// UPDATE` requires.
const UPSERT_PEERS: Stmt = Stmt::new(
    "UpsertTailnetPeer",
    "INSERT INTO tailnet_peers (id, coordinator_id, node, status, updated_at) \
     SELECT p.id, $1::uuid, p.node, p.status, now() at time zone 'utc' \
     FROM unnest($2::uuid[], $3::bytea[], $4::tailnet_status[]) AS p(id, node, status) \
     ON CONFLICT (id, coordinator_id) DO UPDATE SET \
       node = EXCLUDED.node, status = EXCLUDED.status, updated_at = now() at time zone 'utc'",
);

/// Coder's statement with a tunnel per pair of array elements.
const UPSERT_TUNNELS: Stmt = Stmt::new(
    "UpsertTailnetTunnel",
    "INSERT INTO tailnet_tunnels (coordinator_id, src_id, dst_id, updated_at) \
     SELECT $1::uuid, t.src_id, t.dst_id, now() at time zone 'utc' \
     FROM unnest($2::uuid[], $3::uuid[]) AS t(src_id, dst_id) \
     ON CONFLICT (coordinator_id, src_id, dst_id) DO UPDATE SET updated_at = now() at time zone 'utc'",
);

const MARK_LOST: Stmt = Stmt::new(
    "UpdateTailnetPeerStatusByCoordinator",
    "UPDATE tailnet_peers SET status = 'lost'::tailnet_status WHERE coordinator_id = $1::uuid",
);

/// The columns of a `tailnet_peers` row, in [`PeerRow`]'s order.
macro_rules! peer_columns {
    () => {
        "id::text, coordinator_id::text, (EXTRACT(EPOCH FROM updated_at) * 1000000)::bigint, node, status::text"
    };
}

/// Coder's statement for several peers at once.
const GET_PEERS: Stmt =
    Stmt::new("GetTailnetPeers", concat!("SELECT ", peer_columns!(), " FROM tailnet_peers WHERE id = ANY($1::uuid[])"));

/// What PGCoordinator's querier reads on a tunnel's change (`GetTailnetTunnelPeerIDs` of its source), for exactly the
/// changed tunnels, several at once.
const GET_TUNNELS: Stmt = Stmt::new(
    "GetTailnetTunnelPeerIDs",
    "SELECT t.coordinator_id::text, t.src_id::text, t.dst_id::text FROM tailnet_tunnels t \
     JOIN unnest($1::uuid[], $2::uuid[]) AS p(src_id, dst_id) ON t.src_id = p.src_id AND t.dst_id = p.dst_id",
);

const GET_ALL_PEERS: Stmt = Stmt::new("GetAllTailnetPeers", concat!("SELECT ", peer_columns!(), " FROM tailnet_peers"));

const GET_ALL_TUNNELS: Stmt =
    Stmt::new("GetAllTailnetTunnels", "SELECT coordinator_id::text, src_id::text, dst_id::text FROM tailnet_tunnels");

/// Coder's statement, with each heartbeat's age by the database's clock rather than its time.
const GET_ALL_COORDINATORS: Stmt = Stmt::new(
    "GetAllTailnetCoordinators",
    "SELECT id::text, GREATEST((EXTRACT(EPOCH FROM now() - heartbeat_at) * 1000000)::bigint, 0) \
     FROM tailnet_coordinators",
);

const CLEAN_COORDINATORS: Stmt = Stmt::new(
    "CleanTailnetCoordinators",
    "DELETE FROM tailnet_coordinators WHERE heartbeat_at < now() - INTERVAL '24 HOURS'",
);

const CLEAN_LOST_PEERS: Stmt = Stmt::new(
    "CleanTailnetLostPeers",
    "DELETE FROM tailnet_peers WHERE updated_at < now() - INTERVAL '24 HOURS' AND status = 'lost'::tailnet_status",
);

const CLEAN_TUNNELS: Stmt = Stmt::new(
    "CleanTailnetTunnels",
    "DELETE FROM tailnet_tunnels WHERE updated_at < now() - INTERVAL '24 HOURS' AND \
       NOT EXISTS (SELECT 1 FROM tailnet_peers \
         WHERE id = tailnet_tunnels.src_id AND coordinator_id = tailnet_tunnels.coordinator_id)",
);

type PeerRow = (String, String, i64, Vec<u8>, String);
type TunnelRow = (String, String, String);

fn uuid(table: &'static str, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::corrupt(table, e.to_string()))
}

fn peer((peer, coordinator, updated_at, node, status): PeerRow) -> Result<TailnetPeer, StoreError> {
    let lost = match status.as_str() {
        "ok" => false,
        "lost" => true,
        other => return Err(StoreError::corrupt("tailnet_peers", format!("status {other:?}"))),
    };
    Ok(TailnetPeer {
        id: uuid("tailnet_peers", &peer)?,
        coordinator_id: uuid("tailnet_peers", &coordinator)?,
        updated_at,
        node,
        lost,
    })
}

fn tunnel((coordinator, src, dst): TunnelRow) -> Result<TailnetTunnel, StoreError> {
    Ok(TailnetTunnel {
        coordinator_id: uuid("tailnet_tunnels", &coordinator)?,
        src_id: uuid("tailnet_tunnels", &src)?,
        dst_id: uuid("tailnet_tunnels", &dst)?,
    })
}

fn pair_columns(pairs: &[(Uuid, Uuid)]) -> (Vec<String>, Vec<String>) {
    pairs.iter().map(|(src, dst)| (id(*src), id(*dst))).unzip()
}

/// The statements of a flush, in [`TailnetWrites`]' order, each only when it has rows.
async fn run_writes(
    db: &CoderDb,
    conn: &mut sqlx::PgConnection,
    me: &str,
    writes: &TailnetWrites,
) -> Result<(), StoreError> {
    if !writes.delete_all_tunnels.is_empty() {
        let srcs: Vec<String> = writes.delete_all_tunnels.iter().map(|s| id(*s)).collect();
        q!(db.counters, PG, DELETE_ALL_TUNNELS).bind(me).bind(srcs).execute(&mut *conn).await?;
    }
    if !writes.delete_tunnels.is_empty() {
        let (srcs, dsts) = pair_columns(&writes.delete_tunnels);
        q!(db.counters, PG, DELETE_TUNNELS).bind(me).bind(srcs).bind(dsts).execute(&mut *conn).await?;
    }
    if !writes.delete_peers.is_empty() {
        let peers: Vec<String> = writes.delete_peers.iter().map(|p| id(*p)).collect();
        q!(db.counters, PG, DELETE_PEERS).bind(me).bind(peers).execute(&mut *conn).await?;
    }
    if !writes.upsert_peers.is_empty() {
        let n = writes.upsert_peers.len();
        let (mut peers, mut nodes, mut statuses) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for (peer, node, lost) in &writes.upsert_peers {
            peers.push(id(*peer));
            nodes.push(node.as_slice());
            statuses.push(if *lost { "lost" } else { "ok" });
        }
        q!(db.counters, PG, UPSERT_PEERS).bind(me).bind(peers).bind(nodes).bind(statuses).execute(&mut *conn).await?;
    }
    if !writes.upsert_tunnels.is_empty() {
        let (srcs, dsts) = pair_columns(&writes.upsert_tunnels);
        q!(db.counters, PG, UPSERT_TUNNELS).bind(me).bind(srcs).bind(dsts).execute(&mut *conn).await?;
    }
    Ok(())
}

impl TailnetSql for CoderDb {
    async fn upsert_tailnet_coordinator(&self, coordinator: Uuid) -> Result<(), StoreError> {
        q!(self.counters, PG, UPSERT_COORDINATOR).bind(id(coordinator)).execute(&self.pool).await?;
        Ok(())
    }

    async fn write_tailnet(&self, coordinator: Uuid, writes: &TailnetWrites) -> Result<(), StoreError> {
        let me = id(coordinator);
        let kinds = [
            writes.delete_all_tunnels.is_empty(),
            writes.delete_tunnels.is_empty(),
            writes.delete_peers.is_empty(),
            writes.upsert_peers.is_empty(),
            writes.upsert_tunnels.is_empty(),
        ];
        // One statement is atomic on its own: the common flush (a peer's new node) is one round trip, as
        // PGCoordinator's write is.
        if kinds.iter().filter(|empty| !**empty).count() <= 1 {
            let mut conn = self.pool.acquire().await?;
            return run_writes(self, &mut conn, &me, writes).await;
        }
        let mut tx = begin(&self.counters, PG, &self.pool).await?;
        run_writes(self, &mut tx, &me, writes).await?;
        commit(&self.counters, tx).await
    }

    async fn mark_tailnet_peers_lost(&self, coordinator: Uuid) -> Result<(), StoreError> {
        q!(self.counters, PG, MARK_LOST).bind(id(coordinator)).execute(&self.pool).await?;
        Ok(())
    }

    async fn tailnet_peers(&self, ids: &[Uuid]) -> Result<Vec<TailnetPeer>, StoreError> {
        let ids: Vec<String> = ids.iter().map(|p| id(*p)).collect();
        let rows = qa!(self.counters, PG, GET_PEERS, PeerRow).bind(ids).fetch_all(&self.pool).await?;
        rows.into_iter().map(peer).collect()
    }

    async fn tailnet_tunnels(&self, pairs: &[(Uuid, Uuid)]) -> Result<Vec<TailnetTunnel>, StoreError> {
        let (srcs, dsts) = pair_columns(pairs);
        let rows = qa!(self.counters, PG, GET_TUNNELS, TunnelRow).bind(srcs).bind(dsts).fetch_all(&self.pool).await?;
        rows.into_iter().map(tunnel).collect()
    }

    async fn all_tailnet_peers(&self) -> Result<Vec<TailnetPeer>, StoreError> {
        let rows = qa!(self.counters, PG, GET_ALL_PEERS, PeerRow).fetch_all(&self.pool).await?;
        rows.into_iter().map(peer).collect()
    }

    async fn all_tailnet_tunnels(&self) -> Result<Vec<TailnetTunnel>, StoreError> {
        let rows = qa!(self.counters, PG, GET_ALL_TUNNELS, TunnelRow).fetch_all(&self.pool).await?;
        rows.into_iter().map(tunnel).collect()
    }

    async fn tailnet_coordinators(&self) -> Result<Vec<TailnetCoordinator>, StoreError> {
        let rows = qa!(self.counters, PG, GET_ALL_COORDINATORS, (String, i64)).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(coordinator, age)| {
                Ok(TailnetCoordinator {
                    id: uuid("tailnet_coordinators", &coordinator)?,
                    heartbeat_age: Duration::from_micros(u64::try_from(age).unwrap_or(0)),
                })
            })
            .collect()
    }

    async fn clean_tailnet(&self) -> Result<(), StoreError> {
        for stmt in [CLEAN_COORDINATORS, CLEAN_LOST_PEERS, CLEAN_TUNNELS] {
            q!(self.counters, PG, stmt).execute(&self.pool).await?;
        }
        Ok(())
    }
}
