//! Heartbeat batcher: `last_connected_at` / `last_connected_replica_id` refreshes, the latest
//! per agent wins, one batched UPDATE per flush (≤ 5 s or 500 agents), kept and retried when a
//! flush fails. Connect and disconnect are not batched: they are written at once by [`crate::AgentScope`].

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::{Flush, Pushed};
use crate::backend::BatchSql;
use crate::model::UnixMicros;
use crate::rows::HeartbeatEntry;
use crate::{Core, StoreError};

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
        let entries: Vec<HeartbeatEntry> = acc.drain().collect();
        if let Err(e) = self.core.db.flush_heartbeats(&entries).await {
            acc.extend(entries);
            return Err(e);
        }
        Ok(entries.len())
    }
}
