//! Resource monitor batcher: the state, `updated_at` and debounce that each PushResourcesMonitoringUsage computes for
//! an agent's memory and volume monitors (Coder's `UpdateMemoryResourceMonitor` / `UpdateVolumeResourceMonitor`, one
//! statement per monitor per push in coderd). The latest per `(agent, monitor)` wins; a flush (≤ 5 s or 500 monitors)
//! is one transaction with one statement per monitor kind for every agent in it. Kept and retried when a flush fails:
//! a debounce lost with it would let the next push alert again inside the 30 minutes, and the session that computed
//! it may be gone by then. Bounded: one entry per monitor, newer ones merging into it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::{Flush, Pushed};
use crate::backend::BatchSql;
use crate::rows::{MemoryMonitorEntry, MonitorWrite, VolumeMonitorEntry};
use crate::{Core, StoreError};

/// One monitor's new state: the memory monitor when `path` is `None`, else the volume monitor at `path`.
#[derive(Debug, Clone)]
pub(crate) struct MonitorItem {
    pub agent_id: Uuid,
    pub path: Option<String>,
    pub write: MonitorWrite,
}

#[derive(Debug, Default)]
pub(crate) struct Acc {
    memory: HashMap<Uuid, MonitorWrite>,
    volumes: HashMap<(Uuid, String), MonitorWrite>,
}

pub(crate) struct MonitorFlush {
    pub core: Arc<Core>,
}

/// Keeps the later of two writes of one monitor; the server stamps `updated_at`, so ties keep the one pushed last.
fn merge<K>(slot: Entry<'_, K, MonitorWrite>, write: MonitorWrite) -> Pushed {
    match slot {
        Entry::Vacant(slot) => {
            slot.insert(write);
            Pushed::Added
        }
        Entry::Occupied(mut slot) => {
            if write.updated_at >= slot.get().updated_at {
                slot.insert(write);
            }
            Pushed::Superseded
        }
    }
}

fn add(acc: &mut Acc, item: MonitorItem) -> Pushed {
    match item.path {
        None => merge(acc.memory.entry(item.agent_id), item.write),
        Some(path) => merge(acc.volumes.entry((item.agent_id, path)), item.write),
    }
}

impl Flush for MonitorFlush {
    type Item = MonitorItem;
    type Acc = Acc;

    fn push(&self, acc: &mut Acc, item: MonitorItem) -> Pushed {
        add(acc, item)
    }

    fn len(acc: &Acc) -> usize {
        acc.memory.len() + acc.volumes.len()
    }

    async fn flush(&self, acc: &mut Acc) -> Result<usize, StoreError> {
        let memory: Vec<MemoryMonitorEntry> = acc.memory.drain().collect();
        let volumes: Vec<VolumeMonitorEntry> = acc.volumes.drain().collect();
        if let Err(e) = self.core.db.flush_monitors(&memory, &volumes).await {
            acc.memory.extend(memory);
            acc.volumes.extend(volumes);
            return Err(e);
        }
        Ok(memory.len() + volumes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enums::MonitorState;

    fn write(state: MonitorState, updated_at: i64) -> MonitorWrite {
        MonitorWrite { state, updated_at, debounced_until: updated_at + 1 }
    }

    /// Latest per (agent, monitor) wins whatever the arrival order; memory and a volume of one agent, or one path of
    /// two agents, are different monitors.
    #[test]
    fn the_latest_write_of_each_monitor_wins() {
        let acc = &mut Acc::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let item =
            |agent, path: Option<&str>, w| MonitorItem { agent_id: agent, path: path.map(str::to_owned), write: w };
        assert_eq!(add(acc, item(a, None, write(MonitorState::Nok, 10))), Pushed::Added);
        assert_eq!(add(acc, item(a, Some("/home"), write(MonitorState::Ok, 10))), Pushed::Added);
        assert_eq!(add(acc, item(b, Some("/home"), write(MonitorState::Ok, 10))), Pushed::Added);
        assert_eq!(add(acc, item(a, None, write(MonitorState::Ok, 20))), Pushed::Superseded);
        assert_eq!(add(acc, item(a, None, write(MonitorState::Nok, 15))), Pushed::Superseded, "older: dropped");
        assert_eq!(add(acc, item(a, Some("/home"), write(MonitorState::Nok, 30))), Pushed::Superseded);
        assert_eq!(MonitorFlush::len(acc), 3);
        assert_eq!(acc.memory[&a], write(MonitorState::Ok, 20));
        assert_eq!(acc.volumes[&(a, "/home".to_owned())], write(MonitorState::Nok, 30));
        assert_eq!(acc.volumes[&(b, "/home".to_owned())], write(MonitorState::Ok, 10));
    }
}
