//! Heartbeat batcher: `last_connected_at` / `last_connected_replica_id` refreshes, the latest
//! per agent wins, one batched UPDATE per flush (≤ 5 s or 500 agents), kept and retried when a
//! flush fails. Connect and disconnect are not batched: they are written at once by [`crate::AgentScope`].

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::{Flush, Pushed};
use crate::backend::{begin, commit, rows_per_statement, with_pool};
use crate::model::{id, UnixMicros};
use crate::{Core, StoreError};

/// Statement name under which each batched heartbeat UPDATE is counted.
pub const BATCH_UPDATE_HEARTBEATS: &str = "BatchUpdateWorkspaceAgentHeartbeats";
const COLS: usize = 3;

#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    pub agent_id: Uuid,
    pub at: UnixMicros,
    pub replica_id: Uuid,
}

type Acc = HashMap<Uuid, (UnixMicros, Uuid)>;

pub(crate) struct HeartbeatFlush {
    pub core: Arc<Core>,
}

impl Flush for HeartbeatFlush {
    type Item = Heartbeat;
    type Acc = Acc;

    fn push(&self, acc: &mut Acc, item: Heartbeat) -> Pushed {
        match acc.entry(item.agent_id) {
            Entry::Vacant(slot) => {
                slot.insert((item.at, item.replica_id));
                Pushed::Added
            }
            Entry::Occupied(mut slot) => {
                if item.at >= slot.get().0 {
                    slot.insert((item.at, item.replica_id));
                }
                Pushed::Superseded
            }
        }
    }

    fn len(acc: &Acc) -> usize {
        acc.len()
    }

    async fn flush(&self, acc: &mut Acc) -> Result<usize, StoreError> {
        // Kept for the next tick on failure: during a database outage the next heartbeat cannot land either, and
        // without these the agents would look disconnected to other replicas until their next refresh after it.
        // Bounded: one entry per agent, newer ones merging into it.
        let entries: Vec<_> = acc.drain().collect();
        if let Err(e) = write(&self.core, &entries).await {
            acc.extend(entries);
            return Err(e);
        }
        Ok(entries.len())
    }
}

async fn write(core: &Core, entries: &[(Uuid, (UnixMicros, Uuid))]) -> Result<(), StoreError> {
    with_pool!(&core.db, write, |eng, pool| {
        let mut tx = begin(&core.counters, eng, pool).await?;
        for chunk in entries.chunks(rows_per_statement(COLS)) {
            core.counters.hit(BATCH_UPDATE_HEARTBEATS);
            let mut qb = sqlx::QueryBuilder::new(
                "UPDATE workspace_agents SET last_connected_at = v.column2, \
                 last_connected_replica_id = v.column3, updated_at = v.column2 FROM (",
            );
            qb.push_values(chunk, |mut b, (agent, (at, replica))| {
                b.push_bind(id(*agent)).push_bind(*at).push_bind(id(*replica));
            });
            // Never move the timestamp backwards (a late flush after a newer direct write).
            qb.push(
                ") AS v WHERE workspace_agents.id = v.column1 AND \
                 (workspace_agents.last_connected_at IS NULL OR \
                 workspace_agents.last_connected_at < v.column2)",
            );
            qb.build().execute(&mut *tx).await?;
        }
        commit(&core.counters, tx).await
    })
}
