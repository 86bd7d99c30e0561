//! `AgentSql` on Coder's schema: one agent's rows, every statement bound to the scope's agent id.

use std::collections::HashMap;

use uuid::Uuid;

use super::CoderDb;
use crate::backend::{AgentSql, LogBatch};
use crate::model::*;
use crate::{AgentScope, StoreError};

impl AgentSql for CoderDb {
    async fn agent_state(&self, _a: &AgentScope) -> Result<Option<AgentState>, StoreError> {
        Err(StoreError::Invalid("coder backend: agent_state not yet written".into()))
    }
    async fn list_apps(&self, _a: &AgentScope) -> Result<Vec<App>, StoreError> {
        Err(StoreError::Invalid("coder backend: list_apps not yet written".into()))
    }
    async fn list_scripts(&self, _a: &AgentScope) -> Result<Vec<Script>, StoreError> {
        Err(StoreError::Invalid("coder backend: list_scripts not yet written".into()))
    }
    async fn list_metadata(&self, _a: &AgentScope) -> Result<Vec<Metadata>, StoreError> {
        Err(StoreError::Invalid("coder backend: list_metadata not yet written".into()))
    }
    async fn list_devcontainers(&self, _a: &AgentScope) -> Result<Vec<Devcontainer>, StoreError> {
        Err(StoreError::Invalid("coder backend: list_devcontainers not yet written".into()))
    }
    async fn list_log_sources(&self, _a: &AgentScope) -> Result<Vec<LogSource>, StoreError> {
        Err(StoreError::Invalid("coder backend: list_log_sources not yet written".into()))
    }
    async fn update_lifecycle(
        &self,
        _a: &AgentScope,
        _state: &str,
        _changed_at: UnixMicros,
    ) -> Result<Option<LifecycleTimes>, StoreError> {
        Err(StoreError::Invalid("coder backend: update_lifecycle not yet written".into()))
    }
    async fn update_startup(
        &self,
        _a: &AgentScope,
        _version: &str,
        _expanded_directory: &str,
        _subsystems: &[String],
        _api_version: &str,
    ) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: update_startup not yet written".into()))
    }
    async fn app_healths(&self, _a: &AgentScope) -> Result<HashMap<Uuid, (String, String)>, StoreError> {
        Err(StoreError::Invalid("coder backend: app_healths not yet written".into()))
    }
    async fn update_app_healths(&self, _a: &AgentScope, _writes: &[(Uuid, &str)]) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: update_app_healths not yet written".into()))
    }
    async fn insert_app_status(
        &self,
        _a: &AgentScope,
        _slug: &str,
        _state: &str,
        _message: &str,
        _uri: Option<&str>,
    ) -> Result<Option<AppStatusOutcome>, StoreError> {
        Err(StoreError::Invalid("coder backend: insert_app_status not yet written".into()))
    }
    async fn insert_logs(&self, _a: &AgentScope, _batch: LogBatch<'_>) -> Result<InsertLogsOutcome, StoreError> {
        Err(StoreError::Invalid("coder backend: insert_logs not yet written".into()))
    }
    async fn upsert_log_sources(&self, _a: &AgentScope, _sources: &[LogSource]) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: upsert_log_sources not yet written".into()))
    }
    async fn insert_script_timing(&self, _a: &AgentScope, _t: &ScriptTiming) -> Result<bool, StoreError> {
        Err(StoreError::Invalid("coder backend: insert_script_timing not yet written".into()))
    }
    async fn insert_connection_log(
        &self,
        _a: &AgentScope,
        _ev: &ConnectionEvent,
        _ip: Option<&str>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: insert_connection_log not yet written".into()))
    }
    async fn memory_monitor(&self, _a: &AgentScope) -> Result<Option<MemoryMonitor>, StoreError> {
        Err(StoreError::Invalid("coder backend: memory_monitor not yet written".into()))
    }
    async fn volume_monitors(&self, _a: &AgentScope) -> Result<Vec<VolumeMonitor>, StoreError> {
        Err(StoreError::Invalid("coder backend: volume_monitors not yet written".into()))
    }
    async fn update_memory_monitor(
        &self,
        _a: &AgentScope,
        _state: &str,
        _updated_at: UnixMicros,
        _debounced_until: UnixMicros,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Invalid("coder backend: update_memory_monitor not yet written".into()))
    }
    async fn update_volume_monitor(
        &self,
        _a: &AgentScope,
        _path: &str,
        _state: &str,
        _updated_at: UnixMicros,
        _debounced_until: UnixMicros,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Invalid("coder backend: update_volume_monitor not yet written".into()))
    }
    async fn create_sub_agent(&self, _a: &AgentScope, _sub: &SubAgent, _new: &NewSubAgent) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: create_sub_agent not yet written".into()))
    }
    async fn list_sub_agents(&self, _a: &AgentScope) -> Result<Vec<SubAgent>, StoreError> {
        Err(StoreError::Invalid("coder backend: list_sub_agents not yet written".into()))
    }
    async fn delete_sub_agent(&self, _a: &AgentScope, _sub_agent_id: Uuid) -> Result<bool, StoreError> {
        Err(StoreError::Invalid("coder backend: delete_sub_agent not yet written".into()))
    }
    async fn insert_boundary_logs(
        &self,
        _a: &AgentScope,
        _session_id: Uuid,
        _confined_process_name: &str,
        _logs: &[BoundaryLog],
    ) -> Result<bool, StoreError> {
        Err(StoreError::Invalid("coder backend: insert_boundary_logs not yet written".into()))
    }
    async fn push_context_state(&self, _a: &AgentScope, _st: &ContextState) -> Result<bool, StoreError> {
        Err(StoreError::Invalid("coder backend: push_context_state not yet written".into()))
    }
    async fn logs_after(&self, _a: &AgentScope, _after_id: i64) -> Result<Vec<AgentLog>, StoreError> {
        Err(StoreError::Invalid("coder backend: logs_after not yet written".into()))
    }
    async fn script_timings(&self, _a: &AgentScope) -> Result<Vec<ScriptTiming>, StoreError> {
        Err(StoreError::Invalid("coder backend: script_timings not yet written".into()))
    }
    async fn connection_logs(&self, _a: &AgentScope) -> Result<Vec<ConnectionLogEntry>, StoreError> {
        Err(StoreError::Invalid("coder backend: connection_logs not yet written".into()))
    }
    async fn update_sub_agent(
        &self,
        _a: &AgentScope,
        _sub_agent_id: Uuid,
        _display_apps: &[String],
        _directory: &str,
    ) -> Result<Option<SubAgent>, StoreError> {
        Err(StoreError::Invalid("coder backend: update_sub_agent not yet written".into()))
    }
    async fn mark_connected(
        &self,
        _a: &AgentScope,
        _replica_id: Uuid,
        _api_version: &str,
    ) -> Result<Option<ConnectionTimes>, StoreError> {
        Err(StoreError::Invalid("coder backend: mark_connected not yet written".into()))
    }
    async fn mark_disconnected(&self, _a: &AgentScope, _replica_id: Uuid) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: mark_disconnected not yet written".into()))
    }
    async fn owner_git_ssh_key(&self, _a: &AgentScope) -> Result<Option<GitSshKey>, StoreError> {
        Err(StoreError::Invalid("coder backend: owner_git_ssh_key not yet written".into()))
    }
    async fn insert_owner_git_ssh_key(
        &self,
        _a: &AgentScope,
        _private_key: &str,
        _public_key: &str,
    ) -> Result<GitSshKey, StoreError> {
        Err(StoreError::Invalid("coder backend: insert_owner_git_ssh_key not yet written".into()))
    }
    async fn bump_workspace_activity(&self, _a: &AgentScope) -> Result<(), StoreError> {
        Err(StoreError::Invalid("coder backend: bump_workspace_activity not yet written".into()))
    }
}
