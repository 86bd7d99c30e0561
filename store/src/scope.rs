//! [`AgentScope`]: every per-agent read and write a handler may do, bound to one agent. Values are validated
//! here, once; the statements live with the backend ([`crate::backend::AgentSql`]).
//!
//! Every statement carries the scope's own agent id in its WHERE clause (or inserts it),
//! including the ones that take other ids (apps, scripts, sub-agents, boundary sessions): an id
//! that belongs to another agent simply matches nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use uuid::Uuid;

use crate::backend::{AgentSql, Db, LogBatch};
use crate::batch::heartbeat::Heartbeat;
use crate::batch::metadata::MetaItem;
use crate::batch::monitors::MonitorItem;
use crate::model::*;
use crate::rows::{MonitorWrite, StatsRow};
use crate::{AppHealth, LifecycleState, MonitorState, Subsystem};
use crate::{Store, StoreError};

/// Coder's fixed log source for agents that send the nil source id.
pub const EXTERNAL_LOG_SOURCE_ID: Uuid = uuid::uuid!("3b579bf4-1ed8-4b99-87a8-e9a1e3410410");

/// Per-agent handle. Cheap to clone; create it with [`Store::agent`].
#[derive(Debug, Clone)]
pub struct AgentScope {
    store: Store,
    /// The agent as its token resolved it at connect: the one copy a session holds.
    agent: Arc<ResolvedAgent>,
    /// The agent id as agentwire's schema binds it (text), formatted once.
    pub(crate) agent_key: String,
}

/// NULs replaced by ❌, as Coder MAIN sanitises log lines: PostgreSQL's text and jsonb cannot hold them. Everything
/// an agent sends into a **batched** write goes through this, since one value the database refuses would fail the
/// whole flush, every other agent's rows in it included, on every retry.
pub fn without_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{274c}")
    } else {
        s.to_owned()
    }
}

/// Replace NULs (Postgres TEXT cannot hold them; Coder MAIN does the same) and cut to
/// `max_chars` characters, as Coder's `varchar(1024)` cast does.
fn sanitize_line(s: &str, max_chars: usize) -> (String, usize) {
    let cleaned = without_nul(s);
    let full_len = cleaned.len();
    let cut = match cleaned.char_indices().nth(max_chars) {
        Some((byte, _)) => cleaned[..byte].to_owned(),
        None => cleaned,
    };
    (cut, full_len)
}

impl AgentScope {
    pub(crate) fn new(store: Store, a: ResolvedAgent) -> Self {
        AgentScope { store, agent_key: id(a.id), agent: Arc::new(a) }
    }

    /// The agent as resolved at connect: its row, workspace, build, owner and template fields. Fixed for the scope's
    /// life; [`AgentScope::state`] re-reads the parts that change.
    pub fn agent(&self) -> &ResolvedAgent {
        &self.agent
    }

    /// The agent this scope is bound to.
    pub fn agent_id(&self) -> Uuid {
        self.agent.id
    }

    /// The agent's name.
    pub fn agent_name(&self) -> &str {
        &self.agent.name
    }

    /// The agent's workspace.
    pub fn workspace_id(&self) -> Uuid {
        self.agent.workspace_id
    }

    /// The workspace owner (for `workspace_owner:<owner>` events).
    pub fn owner_id(&self) -> Uuid {
        self.agent.owner_id
    }

    /// Tells the workspace's watchers that this agent changed: Coder's `WorkspaceEvent` of `kind`
    /// (`agt_lifecycle_update`, `agt_app_health_update`, …) on the owner's `workspace_owner:<owner>` channel, which
    /// coderd's workspace watchers and the dashboard listen on.
    pub async fn publish_workspace_event(&self, kind: &str) -> Result<(), StoreError> {
        let payload = crate::pubsub::workspace_event_payload(kind, self.agent.workspace_id, Some(self.agent.id));
        self.store.pubsub().publish(&crate::pubsub::workspace_owner_channel(self.agent.owner_id), &payload).await
    }

    fn db(&self) -> &Db {
        &self.store.core().db
    }

    /// Re-read the mutable part of this agent's own row (lifecycle, logs counters, …).
    pub async fn state(&self) -> Result<Option<AgentState>, StoreError> {
        self.db().agent_state(self).await
    }

    /// Apps, ordered by slug (manifest).
    pub async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        self.db().list_apps(self).await
    }

    /// Scripts, ordered by id (manifest).
    pub async fn list_scripts(&self) -> Result<Vec<Script>, StoreError> {
        self.db().list_scripts(self).await
    }

    /// Metadata descriptions and values (manifest).
    pub async fn list_metadata(&self) -> Result<Vec<Metadata>, StoreError> {
        self.db().list_metadata(self).await
    }

    /// Devcontainers, ordered by creation (manifest).
    pub async fn list_devcontainers(&self) -> Result<Vec<Devcontainer>, StoreError> {
        self.db().list_devcontainers(self).await
    }

    /// Log sources.
    pub async fn list_log_sources(&self) -> Result<Vec<LogSource>, StoreError> {
        self.db().list_log_sources(self).await
    }

    /// UpdateLifecycle: one statement applying Coder's started_at/ready_at rules; `changed_at` is the
    /// (server-filled if zero) change time.
    pub async fn update_lifecycle(
        &self,
        state: LifecycleState,
        changed_at: UnixMicros,
    ) -> Result<LifecycleTimes, StoreError> {
        let row = self.db().update_lifecycle(self, state.as_str(), changed_at).await?;
        row.ok_or_else(|| StoreError::Invalid("agent is deleted".into()))
    }

    /// UpdateStartup. Subsystems are de-duplicated and sorted (Coder's order).
    pub async fn update_startup(
        &self,
        version: &str,
        expanded_directory: &str,
        subsystems: &[Subsystem],
        api_version: &str,
    ) -> Result<(), StoreError> {
        let subs: BTreeSet<Subsystem> = subsystems.iter().copied().collect();
        let subs: Vec<String> = subs.into_iter().map(|s| s.as_str().to_owned()).collect();
        self.db().update_startup(self, version, expanded_directory, &subs, api_version).await
    }

    /// BatchUpdateAppHealths: all-or-nothing. Ids that are not this agent's apps (or apps
    /// without a healthcheck) are reported and nothing is written; otherwise every changed app
    /// is updated in one transaction.
    pub async fn batch_update_app_healths(
        &self,
        updates: &[(Uuid, AppHealth)],
    ) -> Result<AppHealthOutcome, StoreError> {
        let mut out = AppHealthOutcome::default();
        if updates.is_empty() {
            return Ok(out);
        }
        // Agents repeat the health they already reported on every check; reading first, outside any transaction,
        // makes those repeats cost one read and no write.
        let apps = self.db().app_healths(self).await?;
        let mut writes = Vec::new();
        for (app, health) in updates {
            match apps.get(app) {
                None => out.unknown.push(*app),
                Some((url, _)) if url.is_empty() => out.no_healthcheck.push(*app),
                Some((_, current)) if current == health.as_str() => {}
                Some(_) => writes.push((*app, health.as_str())),
            }
        }
        if !out.unknown.is_empty() || !out.no_healthcheck.is_empty() || writes.is_empty() {
            return Ok(out);
        }
        self.db().update_app_healths(self, &writes).await?;
        out.changed.extend(writes.iter().map(|(app, _)| *app));
        Ok(out)
    }

    /// UpdateAppStatus: `Ok(None)` when this agent has no app with that slug.
    pub async fn insert_app_status(
        &self,
        slug: &str,
        state: &str,
        message: &str,
        uri: Option<&str>,
    ) -> Result<Option<AppStatusOutcome>, StoreError> {
        self.db().insert_app_status(self, slug, state, message, uri).await
    }

    /// BatchUpdateMetadata: queue each value for the metadata batcher, stamped with the
    /// **server's** clock (Coder ignores the agent's `collected_at`). Never blocks; a full
    /// queue drops and counts.
    pub fn enqueue_metadata(&self, updates: &[MetadataUpdate]) -> Enqueued {
        let now = now_micros();
        let mut out = Enqueued::default();
        for u in updates {
            let ok = self.store.enqueue_metadata(MetaItem {
                agent_id: self.agent.id,
                key: without_nul(&u.key),
                value: without_nul(&u.value),
                error: without_nul(&u.error),
                collected_at: now,
            });
            if ok {
                out.accepted += 1;
            } else {
                out.dropped += 1;
            }
        }
        out
    }

    /// UpdateStats: queue one row for the stats batcher. Returns false if it was dropped.
    pub fn enqueue_stats(&self, report: StatsReport) -> bool {
        self.store.enqueue_stats(StatsRow {
            id: Uuid::new_v4(),
            created_at: now_micros(),
            agent_id: self.agent.id,
            workspace_id: self.agent.workspace_id,
            template_id: self.agent.template_id,
            user_id: self.agent.owner_id,
            report,
        })
    }

    /// BatchCreateLogs, atomically: in one transaction, check `logs_length + new bytes`
    /// against `max_logs_length` and either add the bytes and insert the lines, or set
    /// `logs_overflowed`. **Lines are sanitised and cut here** (NUL → ❌, at most
    /// `max_log_line_chars` characters stored); `logs_length` counts the full sanitised
    /// length, as Coder's does. The nil source id maps to Coder's "External" source, created on
    /// demand.
    pub async fn insert_logs(&self, log_source_id: Uuid, lines: &[LogLine]) -> Result<InsertLogsOutcome, StoreError> {
        if lines.is_empty() {
            return Ok(InsertLogsOutcome::Empty);
        }
        let opts = self.store.options();
        let max_chars = opts.max_log_line_chars;
        let mut total: i64 = 0;
        let cleaned: Vec<(String, &str)> = lines
            .iter()
            .map(|l| {
                let (s, full) = sanitize_line(&l.output, max_chars);
                total = total.saturating_add(i64::try_from(full).unwrap_or(i64::MAX));
                (s, l.level.as_str())
            })
            .collect();
        let batch = LogBatch {
            source: if log_source_id.is_nil() { EXTERNAL_LOG_SOURCE_ID } else { log_source_id },
            ensure_external_source: log_source_id.is_nil(),
            lines: &cleaned,
            bytes: total,
            limit: opts.max_logs_length,
        };
        self.db().insert_logs(self, batch).await
    }

    /// Insert log sources; existing `(agent, id)` pairs are left as they are.
    pub async fn upsert_log_sources(&self, sources: &[LogSource]) -> Result<(), StoreError> {
        if sources.is_empty() {
            return Ok(());
        }
        self.db().upsert_log_sources(self, sources).await
    }

    /// The SSH key pair of the agent's owner (Coder's `GetGitSSHKey` for the workspace owner); `None` until one is
    /// stored with [`AgentScope::insert_owner_git_ssh_key`].
    pub async fn owner_git_ssh_key(&self) -> Result<Option<GitSshKey>, StoreError> {
        self.db().owner_git_ssh_key(self).await
    }

    /// Store a key pair for the agent's owner unless one exists, and return the owner's key as stored: the one
    /// given, or the one a concurrent caller stored first.
    pub async fn insert_owner_git_ssh_key(&self, private_key: &str, public_key: &str) -> Result<GitSshKey, StoreError> {
        self.db().insert_owner_git_ssh_key(self, private_key, public_key).await
    }

    /// Coder's `ActivityBumpWorkspace` for the agent's workspace: its latest build's deadline moves to at least now
    /// plus the template's activity bump, under the same rules as the stats batcher's bump.
    pub async fn bump_workspace_activity(&self) -> Result<(), StoreError> {
        self.db().bump_workspace_activity(self).await
    }

    /// ScriptCompleted. `Ok(false)` when the script is not one of this agent's. A duplicate
    /// `(script_id, started_at)` is a unique violation, as in Coder.
    pub async fn insert_script_timing(&self, t: &ScriptTiming) -> Result<bool, StoreError> {
        self.db().insert_script_timing(self, t).await
    }

    /// ReportConnection: one upsert into `connection_logs` (Coder SEED semantics).
    pub async fn insert_connection_log(&self, ev: &ConnectionEvent) -> Result<(), StoreError> {
        let ip = ev
            .ip
            .as_deref()
            .map(|ip| if ip == "localhost" { "127.0.0.1" } else { ip })
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
        self.db().insert_connection_log(self, ev, ip).await
    }

    /// Memory monitor, if configured.
    pub async fn memory_monitor(&self) -> Result<Option<MemoryMonitor>, StoreError> {
        self.db().memory_monitor(self).await
    }

    /// Volume monitors.
    pub async fn volume_monitors(&self) -> Result<Vec<VolumeMonitor>, StoreError> {
        self.db().volume_monitors(self).await
    }

    /// Queue the memory monitor's new state for the monitor batcher (Coder's `UpdateMemoryResourceMonitor`, written
    /// at the next flush, the latest per monitor winning). `false` when the queue is full: the write is dropped and
    /// counted.
    pub fn enqueue_memory_monitor(
        &self,
        state: MonitorState,
        updated_at: UnixMicros,
        debounced_until: UnixMicros,
    ) -> bool {
        let write = MonitorWrite { state, updated_at, debounced_until };
        self.store.enqueue_monitor(MonitorItem { agent_id: self.agent.id, path: None, write })
    }

    /// Queue the new state of the volume monitor at `path`, as [`AgentScope::enqueue_memory_monitor`].
    pub fn enqueue_volume_monitor(
        &self,
        path: &str,
        state: MonitorState,
        updated_at: UnixMicros,
        debounced_until: UnixMicros,
    ) -> bool {
        let write = MonitorWrite { state, updated_at, debounced_until };
        self.store.enqueue_monitor(MonitorItem { agent_id: self.agent.id, path: Some(path.to_owned()), write })
    }

    /// CreateSubAgent (new agent path): a child of this agent on the same resource, with a
    /// fresh token; inherits the connection timeout, troubleshooting URL and key scope.
    pub async fn create_sub_agent(&self, a: &NewSubAgent) -> Result<SubAgent, StoreError> {
        let sub = SubAgent { id: Uuid::new_v4(), name: a.name.clone(), auth_token: Uuid::new_v4() };
        self.db().create_sub_agent(self, &sub, a).await?;
        Ok(sub)
    }

    /// ListSubAgents: this agent's live children.
    pub async fn list_sub_agents(&self) -> Result<Vec<SubAgent>, StoreError> {
        self.db().list_sub_agents(self).await
    }

    /// DeleteSubAgent: soft delete, only of this agent's own children (tighter than Coder);
    /// also removes the child's context rows. `Ok(false)` if no such child.
    pub async fn delete_sub_agent(&self, sub_agent_id: Uuid) -> Result<bool, StoreError> {
        self.db().delete_sub_agent(self, sub_agent_id).await
    }

    /// ReportBoundaryLogs: ensure the session (owned by this agent) and insert the logs in one
    /// transaction. `Ok(false)` and nothing written when the session id belongs to another
    /// agent.
    pub async fn insert_boundary_logs(
        &self,
        session_id: Uuid,
        confined_process_name: &str,
        logs: &[BoundaryLog],
    ) -> Result<bool, StoreError> {
        self.db().insert_boundary_logs(self, session_id, confined_process_name, logs).await
    }

    /// PushContextState in one read-modify-write transaction. `Ok(false)` (nothing written)
    /// when a snapshot exists, the push is not `initial`, and its version is not newer.
    pub async fn push_context_state(&self, st: &ContextState) -> Result<bool, StoreError> {
        self.db().push_context_state(self, st).await
    }

    /// This agent's log lines with an id above `after_id`, oldest first (what a log stream
    /// fetches after an `agent-logs:<agent>` notification).
    pub async fn logs_after(&self, after_id: i64) -> Result<Vec<AgentLog>, StoreError> {
        self.db().logs_after(self, after_id).await
    }

    /// Timings recorded for this agent's scripts.
    pub async fn script_timings(&self) -> Result<Vec<ScriptTiming>, StoreError> {
        self.db().script_timings(self).await
    }

    /// Connection log entries of this agent (its workspace and name), oldest first.
    pub async fn connection_logs(&self) -> Result<Vec<ConnectionLogEntry>, StoreError> {
        self.db().connection_logs(self).await
    }

    /// CreateSubAgent for a pre-provisioned child (`req.id`): set its display apps, and its
    /// directory unless `directory` is empty. `Ok(None)` when `sub_agent_id` is not a live
    /// child of this agent (nothing written).
    pub async fn update_sub_agent(
        &self,
        sub_agent_id: Uuid,
        display_apps: &[String],
        directory: &str,
    ) -> Result<Option<SubAgent>, StoreError> {
        self.db().update_sub_agent(self, sub_agent_id, display_apps, directory).await
    }

    /// Connection monitor start: `first_connected_at` if unset, `last_connected_at`, the
    /// replica, and the negotiated API version (empty = leave as is). Written at once.
    pub async fn mark_connected(&self, replica_id: Uuid, api_version: &str) -> Result<ConnectionTimes, StoreError> {
        let row = self.db().mark_connected(self, replica_id, api_version).await?;
        row.ok_or_else(|| StoreError::Invalid("agent is deleted".into()))
    }

    /// Periodic liveness refresh of `last_connected_at`, batched. Returns false if dropped.
    pub fn heartbeat(&self, replica_id: Uuid) -> bool {
        self.store.enqueue_heartbeat(Heartbeat { agent_id: self.agent.id, at: now_micros(), replica_id })
    }

    /// Connection end: `disconnected_at = now`, written at once.
    pub async fn mark_disconnected(&self, replica_id: Uuid) -> Result<(), StoreError> {
        self.db().mark_disconnected(self, replica_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_cuts_chars_counts_full() {
        let long = "é".repeat(1500);
        let (cut, full) = sanitize_line(&long, 1024);
        assert_eq!(cut.chars().count(), 1024);
        assert_eq!(full, 3000);
        let (nul, _) = sanitize_line("a\0b", 1024);
        assert_eq!(nul, "a\u{274c}b");
    }
}
