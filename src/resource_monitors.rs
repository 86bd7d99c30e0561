//! A session's copy of its agent's resource monitors (Coder keeps the same in its connection: `InitMonitors`), the
//! one piece of handler state a session carries. Its own room so that the session holds it without depending on the
//! handlers that use it (`agentapi::resources`).

use std::sync::OnceLock;

use agentwire_store::{AgentScope, MonitorState, StoreError, UnixMicros};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

/// A session's copy of its agent's resource monitors, loaded by the first call that needs them.
///
/// Every session has one, and most never monitor: empty, it is a pointer-sized cell and a flag (16 bytes); the lock
/// and the rows are allocated on first use.
#[derive(Default)]
pub struct ResourceMonitors(pub(crate) OnceLock<Box<Mutex<Option<Loaded>>>>);

impl std::fmt::Debug for ResourceMonitors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceMonitors").field("used", &self.0.get().is_some()).finish()
    }
}

/// The rows as a push needs them: what Coder's connection keeps of `workspace_agent_*_resource_monitors`.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) memory: Option<Monitor>,
    /// By path.
    pub(crate) volumes: Vec<(String, Monitor)>,
}

#[derive(Debug)]
pub(crate) struct Monitor {
    pub(crate) enabled: bool,
    pub(crate) threshold: i64,
    pub(crate) state: MonitorState,
    pub(crate) debounced_until: UnixMicros,
}

impl Monitor {
    fn new(enabled: bool, threshold: i64, state: &str, debounced_until: UnixMicros) -> Self {
        // Anything but NOK counts as OK, as Coder's state machine treats its default.
        let state = state.parse().unwrap_or(MonitorState::Ok);
        Monitor { enabled, threshold, state, debounced_until }
    }
}

impl ResourceMonitors {
    /// The agent's monitors, read from the store on the first call (2 keyed reads, Coder's `InitMonitors`), held
    /// locked until the guard drops. A failed read leaves the slot empty, so the next call tries again.
    pub(crate) async fn lock(&self, scope: &AgentScope) -> Result<MappedMutexGuard<'_, Loaded>, StoreError> {
        let mut slot = self.0.get_or_init(Box::default).lock().await;
        if slot.is_none() {
            let memory = scope.memory_monitor().await?;
            let volumes = scope.volume_monitors().await?;
            *slot = Some(Loaded {
                memory: memory.map(|m| Monitor::new(m.enabled, m.threshold, &m.state, m.debounced_until)),
                volumes: volumes
                    .into_iter()
                    .map(|v| (v.path, Monitor::new(v.enabled, v.threshold, &v.state, v.debounced_until)))
                    .collect(),
            });
        }
        Ok(MutexGuard::map(slot, |loaded| loaded.get_or_insert_with(Loaded::default)))
    }
}
