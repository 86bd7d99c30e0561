//! Metadata batcher (Coder MAIN's `metadatabatcher`): the last value per `(agent, key)` wins;
//! flush at 500 distinct keys or every 5 s; one transaction per flush; then one
//! `workspace_agent_metadata_batch` notification per chunk of agent ids.

use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::{publish_unsent, Flush, Pushed};
use crate::backend::BatchSql;
use crate::model::UnixMicros;
use crate::pubsub::{metadata_batch_payloads, METADATA_BATCH_CHANNEL};
use crate::rows::MetaEntry;
use crate::{Core, StoreError};

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
        let entries: Vec<MetaEntry> = acc.drain().collect();
        let agents: Vec<Uuid> = entries.iter().map(|((a, _), _)| *a).collect::<BTreeSet<_>>().into_iter().collect();
        let payloads = metadata_batch_payloads(&agents, self.notify_max_ids);
        let notices: Vec<(&str, &str)> = payloads.iter().map(|p| (METADATA_BATCH_CHANNEL, p.as_str())).collect();
        let sent = self.core.db.flush_metadata(&entries, &notices).await?;
        // The rows are written; if a message is lost, watchers catch up on the next change.
        publish_unsent(&self.core, sent, &notices, "workspace agent metadata batch").await;
        Ok(entries.len())
    }
}
