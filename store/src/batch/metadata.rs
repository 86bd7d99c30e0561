//! Metadata batcher (Coder MAIN's `metadatabatcher`): the last value per `(agent, key)` wins;
//! flush at 500 distinct keys or every 5 s; one transaction per flush; then one
//! `workspace_agent_metadata_batch` notification per chunk of agent ids.

use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::{Flush, Pushed};
use crate::backend::{begin, commit, q, rows_per_statement, with_pool, Engine};
use crate::counting::Stmt;
use crate::model::{id, UnixMicros};
use crate::pubsub::{metadata_batch_payloads, METADATA_BATCH_CHANNEL};
use crate::{Core, StoreError};

/// Statement name under which each batched metadata UPDATE is counted.
pub const BATCH_UPDATE_METADATA: &str = "BatchUpdateWorkspaceAgentMetadata";
const COLS: usize = 5;

#[derive(Debug, Clone)]
pub(crate) struct MetaItem {
    pub agent_id: Uuid,
    pub key: String,
    pub value: String,
    pub error: String,
    pub collected_at: UnixMicros,
}

type Acc = HashMap<(Uuid, String), (String, String, UnixMicros)>;

pub(crate) struct MetadataFlush {
    pub core: Arc<Core>,
    /// Agent ids per notification (Coder: ⌊8000 / 22⌋ = 363).
    pub notify_max_ids: usize,
}

impl Flush for MetadataFlush {
    type Item = MetaItem;
    type Acc = Acc;

    fn push(&self, acc: &mut Acc, item: MetaItem) -> Pushed {
        let value = (item.value, item.error, item.collected_at);
        match acc.entry((item.agent_id, item.key)) {
            Slot::Vacant(slot) => {
                slot.insert(value);
                Pushed::Added
            }
            Slot::Occupied(mut slot) => {
                // The newest collection wins; the server stamps items, so ties keep the later one.
                if value.2 >= slot.get().2 {
                    slot.insert(value);
                }
                Pushed::Superseded
            }
        }
    }

    fn len(acc: &Acc) -> usize {
        acc.len()
    }

    async fn flush(&self, acc: &mut Acc) -> Result<usize, StoreError> {
        // Coder drops a failed batch instead of retrying; the agent reports again shortly. The batcher counts what
        // is dropped.
        let entries: Vec<_> = acc.drain().collect();
        let agents: Vec<Uuid> = entries.iter().map(|((a, _), _)| *a).collect::<BTreeSet<_>>().into_iter().collect();
        let payloads = metadata_batch_payloads(&agents, self.notify_max_ids);
        let notified_in_tx = write(&self.core, &entries, &payloads).await?;
        if !notified_in_tx {
            for payload in &payloads {
                if let Err(e) = self.core.pubsub.publish(METADATA_BATCH_CHANNEL, payload).await {
                    // The rows are written; watchers will catch up on the next change.
                    tracing::warn!(error = %e, "publish workspace agent metadata batch");
                }
            }
        }
        Ok(entries.len())
    }
}

type Entry = ((Uuid, String), (String, String, UnixMicros));

/// PostgreSQL's NOTIFY inside the flush transaction: delivered at commit, with the rows, and costing no
/// transaction of its own (sent after the commit, each chunk would be one more write transaction).
const NOTIFY_IN_FLUSH: Stmt = Stmt::new("pg_notify", "SELECT pg_notify($1, $2)");

/// Writes one flush in one transaction. On PostgreSQL the notifications go in the same transaction and this
/// returns true; elsewhere the caller publishes them after the commit.
async fn write(core: &Core, entries: &[Entry], notifications: &[String]) -> Result<bool, StoreError> {
    with_pool!(&core.db, write, |eng, pool| {
        let mut tx = begin(&core.counters, eng, pool).await?;
        for chunk in entries.chunks(rows_per_statement(COLS)) {
            core.counters.hit(BATCH_UPDATE_METADATA);
            // Only keys created at build time change (UPDATE … FROM), as in Coder.
            let mut qb = sqlx::QueryBuilder::new(
                "UPDATE workspace_agent_metadata AS m SET value = v.column3, error = v.column4, \
                 collected_at = v.column5 FROM (",
            );
            qb.push_values(chunk, |mut b, ((agent, key), (value, error, at))| {
                b.push_bind(id(*agent))
                    .push_bind(key.as_str())
                    .push_bind(value.as_str())
                    .push_bind(error.as_str())
                    .push_bind(*at);
            });
            qb.push(") AS v WHERE m.workspace_agent_id = v.column1 AND m.key = v.column2");
            qb.build().execute(&mut *tx).await?;
        }
        let in_tx = eng == Engine::Postgres;
        if in_tx {
            for payload in notifications {
                q!(core.counters, eng, NOTIFY_IN_FLUSH)
                    .bind(METADATA_BATCH_CHANNEL)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        commit(&core.counters, tx).await?;
        if in_tx {
            core.counters.notified(notifications.len() as u64);
        }
        Ok(in_tx)
    })
}
