//! The statements behind [`crate::AgentScope`], each under Coder's query name. Every one carries the scope's
//! agent id in its WHERE clause (or inserts it), so an id that belongs to another agent matches nothing.

use crate::counting::Stmt;

pub(super) const LIST_APPS: Stmt = Stmt::new(
    "GetWorkspaceAppsByAgentID",
    "SELECT id, slug, display_name, icon, command, url, healthcheck_url, healthcheck_interval, \
     healthcheck_threshold, health, subdomain, sharing_level, external, display_order, hidden, \
     open_in, display_group, tooltip FROM workspace_apps WHERE agent_id = $1 ORDER BY slug",
);
pub(super) const LIST_SCRIPTS: Stmt = Stmt::new(
    "GetWorkspaceAgentScriptsByAgentIDs",
    "SELECT id, log_source_id, log_path, script, cron, start_blocks_login, run_on_start, \
     run_on_stop, timeout_seconds, display_name FROM workspace_agent_scripts \
     WHERE workspace_agent_id = $1 ORDER BY id",
);
pub(super) const LIST_METADATA: Stmt = Stmt::new(
    "GetWorkspaceAgentMetadata",
    "SELECT key, display_name, script, value, error, timeout, interval, collected_at, \
     display_order FROM workspace_agent_metadata WHERE workspace_agent_id = $1 \
     ORDER BY display_order, key",
);
pub(super) const LIST_DEVCONTAINERS: Stmt = Stmt::new(
    "GetWorkspaceAgentDevcontainersByAgentID",
    "SELECT id, workspace_folder, config_path, name, subagent_id \
     FROM workspace_agent_devcontainers WHERE workspace_agent_id = $1 ORDER BY created_at, id",
);
pub(super) const LIST_LOG_SOURCES: Stmt = Stmt::new(
    "GetWorkspaceAgentLogSourcesByAgentIDs",
    "SELECT id, display_name, icon FROM workspace_agent_log_sources \
     WHERE workspace_agent_id = $1 ORDER BY created_at, id",
);
pub(super) const GET_STATE: Stmt = Stmt::new(
    "GetWorkspaceAgentStateBySelf",
    "SELECT lifecycle_state, started_at, ready_at, logs_length, logs_overflowed, version, \
     expanded_directory, subsystems, api_version, first_connected_at, last_connected_at, \
     disconnected_at, last_connected_replica_id FROM workspace_agents \
     WHERE id = $1 AND deleted = FALSE",
);
pub(super) const UPDATE_LIFECYCLE: Stmt = Stmt::new(
    "UpdateWorkspaceAgentLifecycleStateByID",
    // Coder's rules (lifecycle.go): `starting` sets started_at and clears ready_at; the
    // terminal start states set started_at only if unset, and set ready_at.
    "UPDATE workspace_agents SET lifecycle_state = $2, updated_at = $4, \
     started_at = CASE WHEN $2 = 'starting' THEN $3 \
       WHEN $2 IN ('ready', 'start_timeout', 'start_error') THEN COALESCE(started_at, $3) \
       ELSE started_at END, \
     ready_at = CASE WHEN $2 = 'starting' THEN NULL \
       WHEN $2 IN ('ready', 'start_timeout', 'start_error') THEN $3 \
       ELSE ready_at END \
     WHERE id = $1 AND deleted = FALSE RETURNING started_at, ready_at",
);
pub(super) const UPDATE_STARTUP: Stmt = Stmt::new(
    "UpdateWorkspaceAgentStartupByID",
    "UPDATE workspace_agents SET version = $2, expanded_directory = $3, subsystems = $4, \
     api_version = $5, updated_at = $6 WHERE id = $1 AND deleted = FALSE",
);
pub(super) const APP_HEALTHS: Stmt = Stmt::new(
    "GetWorkspaceAppHealthsByAgentID",
    "SELECT id, healthcheck_url, health FROM workspace_apps WHERE agent_id = $1",
);
pub(super) const UPDATE_APP_HEALTH: Stmt =
    Stmt::new("UpdateWorkspaceAppHealthByID", "UPDATE workspace_apps SET health = $3 WHERE id = $1 AND agent_id = $2");
pub(super) const APP_BY_SLUG: Stmt =
    Stmt::new("GetWorkspaceAppByAgentIDAndSlug", "SELECT id FROM workspace_apps WHERE agent_id = $1 AND slug = $2");
pub(super) const LATEST_APP_STATUS: Stmt = Stmt::new(
    "GetLatestWorkspaceAppStatusByAppID",
    "SELECT state FROM workspace_app_statuses WHERE app_id = $1 \
     ORDER BY created_at DESC, id DESC LIMIT 1",
);
pub(super) const INSERT_APP_STATUS: Stmt = Stmt::new(
    "InsertWorkspaceAppStatus",
    "INSERT INTO workspace_app_statuses (id, created_at, workspace_id, agent_id, app_id, state, \
     message, uri) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
);
pub(super) const ADD_LOGS_LENGTH: Stmt = Stmt::new(
    "UpdateWorkspaceAgentLogsLength",
    // The limit check and the increment are one statement, so two concurrent inserts cannot
    // both pass the check.
    "UPDATE workspace_agents SET logs_length = logs_length + $2 \
     WHERE id = $1 AND deleted = FALSE AND logs_overflowed = FALSE \
       AND logs_length + $2 <= $3 \
     RETURNING logs_length - $2",
);
pub(super) const SET_LOGS_OVERFLOWED: Stmt = Stmt::new(
    "UpdateWorkspaceAgentLogOverflowByID",
    "UPDATE workspace_agents SET logs_overflowed = TRUE \
     WHERE id = $1 AND logs_overflowed = FALSE",
);
/// Statement name of each multi-row log INSERT.
pub(super) const INSERT_LOGS: &str = "InsertWorkspaceAgentLogs";
pub(super) const INSERT_LOG_SOURCE: Stmt = Stmt::new(
    "InsertWorkspaceAgentLogSources",
    "INSERT INTO workspace_agent_log_sources (workspace_agent_id, id, created_at, display_name, \
     icon) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_agent_id, id) DO NOTHING",
);
pub(super) const INSERT_SCRIPT_TIMING: Stmt = Stmt::new(
    "InsertWorkspaceAgentScriptTimings",
    // Tighter than Coder: the script must belong to this agent.
    "INSERT INTO workspace_agent_script_timings (script_id, started_at, ended_at, exit_code, \
     stage, status) SELECT s.id, $3, $4, $5, $6, $7 FROM workspace_agent_scripts s \
     WHERE s.id = $1 AND s.workspace_agent_id = $2",
);
pub(super) const UPSERT_CONNECTION_LOG: Stmt = Stmt::new(
    "UpsertConnectionLog",
    // Coder SEED's UpsertConnectionLog: a disconnect fills disconnect fields once; a first-seen
    // disconnect is inserted with connect_time = disconnect_time.
    "INSERT INTO connection_logs (id, connect_time, organization_id, workspace_owner_id, \
     workspace_id, workspace_name, agent_name, type, code, ip, connection_id, \
     disconnect_time, disconnect_reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (connection_id, workspace_id, agent_name) DO UPDATE SET \
       disconnect_time = CASE WHEN connection_logs.disconnect_time IS NULL \
         THEN excluded.disconnect_time ELSE connection_logs.disconnect_time END, \
       disconnect_reason = CASE WHEN connection_logs.disconnect_reason IS NULL \
         THEN excluded.disconnect_reason ELSE connection_logs.disconnect_reason END, \
       code = CASE WHEN connection_logs.code IS NULL \
         THEN excluded.code ELSE connection_logs.code END",
);
pub(super) const GET_MEMORY_MONITOR: Stmt = Stmt::new(
    "FetchMemoryResourceMonitorsByAgentID",
    "SELECT enabled, threshold, state, updated_at, debounced_until \
     FROM workspace_agent_memory_resource_monitors WHERE agent_id = $1",
);
pub(super) const GET_VOLUME_MONITORS: Stmt = Stmt::new(
    "FetchVolumesResourceMonitorsByAgentID",
    "SELECT path, enabled, threshold, state, updated_at, debounced_until \
     FROM workspace_agent_volume_resource_monitors WHERE agent_id = $1 ORDER BY path",
);
pub(super) const INSERT_SUB_AGENT: Stmt = Stmt::new(
    "InsertWorkspaceAgent",
    "INSERT INTO workspace_agents (id, created_at, updated_at, name, parent_id, resource_id, \
     auth_token, architecture, operating_system, directory, display_apps, \
     connection_timeout_seconds, troubleshooting_url, api_key_scope, motd_file, display_order) \
     VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, '', 0)",
);
pub(super) const LIST_SUB_AGENTS: Stmt = Stmt::new(
    "GetWorkspaceAgentsByParentID",
    "SELECT id, name, auth_token FROM workspace_agents \
     WHERE parent_id = $1 AND deleted = FALSE ORDER BY created_at, id",
);
pub(super) const DELETE_SUB_AGENT: Stmt = Stmt::new(
    "DeleteWorkspaceSubAgentByID",
    // Tighter than Coder: only children of this agent.
    "UPDATE workspace_agents SET deleted = TRUE \
     WHERE id = $1 AND parent_id = $2 AND deleted = FALSE",
);
pub(super) const DELETE_SUB_AGENT_CONTEXT: Stmt = Stmt::new(
    "DeleteWorkspaceAgentContextByAgentID",
    "DELETE FROM workspace_agent_context_resources WHERE workspace_agent_id = $1",
);
pub(super) const DELETE_SUB_AGENT_SNAPSHOT: Stmt = Stmt::new(
    "DeleteWorkspaceAgentContextSnapshotByAgentID",
    "DELETE FROM workspace_agent_context_snapshots WHERE workspace_agent_id = $1",
);
pub(super) const ENSURE_BOUNDARY_SESSION: Stmt = Stmt::new(
    "InsertBoundarySession",
    "INSERT INTO boundary_sessions (id, workspace_agent_id, owner_id, confined_process_name, \
     started_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
);
pub(super) const BOUNDARY_SESSION_OWNER: Stmt =
    Stmt::new("GetBoundarySessionByID", "SELECT workspace_agent_id FROM boundary_sessions WHERE id = $1");
/// Statement name of each multi-row boundary log INSERT.
pub(super) const INSERT_BOUNDARY_LOGS: &str = "InsertBoundaryLogs";
pub(super) const GET_CONTEXT_VERSION: Stmt = Stmt::new(
    "GetLatestWorkspaceAgentContextSnapshot",
    "SELECT version FROM workspace_agent_context_snapshots WHERE workspace_agent_id = $1",
);
pub(super) const UPSERT_CONTEXT_SNAPSHOT: Stmt = Stmt::new(
    "UpsertWorkspaceAgentContextSnapshot",
    "INSERT INTO workspace_agent_context_snapshots (workspace_agent_id, version, aggregate_hash, \
     snapshot_error, received_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (workspace_agent_id) DO UPDATE SET version = excluded.version, \
     aggregate_hash = excluded.aggregate_hash, snapshot_error = excluded.snapshot_error, \
     received_at = excluded.received_at",
);
pub(super) const UPSERT_CONTEXT_RESOURCE: Stmt = Stmt::new(
    "UpsertWorkspaceAgentContextResource",
    "INSERT INTO workspace_agent_context_resources (workspace_agent_id, source, body_kind, body, \
     content_hash, size_bytes, status, error, source_path, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
     ON CONFLICT (workspace_agent_id, source) DO UPDATE SET body_kind = excluded.body_kind, \
     body = excluded.body, content_hash = excluded.content_hash, \
     size_bytes = excluded.size_bytes, status = excluded.status, error = excluded.error, \
     source_path = excluded.source_path, updated_at = excluded.updated_at",
);
/// Statement name of the stale context resource DELETE.
pub(super) const DELETE_STALE_CONTEXT: &str = "DeleteStaleWorkspaceAgentContextResources";
pub(super) const LOGS_AFTER: Stmt = Stmt::new(
    "GetWorkspaceAgentLogsAfter",
    "SELECT id, created_at, output, level, log_source_id FROM workspace_agent_logs \
     WHERE agent_id = $1 AND id > $2 ORDER BY id",
);
pub(super) const LIST_SCRIPT_TIMINGS: Stmt = Stmt::new(
    "GetWorkspaceAgentScriptTimingsByAgentID",
    "SELECT t.script_id, t.started_at, t.ended_at, t.exit_code, t.stage, t.status \
     FROM workspace_agent_script_timings t JOIN workspace_agent_scripts s ON s.id = t.script_id \
     WHERE s.workspace_agent_id = $1 ORDER BY t.started_at, t.script_id",
);
pub(super) const LIST_CONNECTION_LOGS: Stmt = Stmt::new(
    "GetConnectionLogsByWorkspaceAndAgentName",
    // connection_logs carry no agent id (Coder's schema): the agent is its workspace and name.
    "SELECT connection_id, connect_time, type, code, ip, disconnect_time, disconnect_reason \
     FROM connection_logs WHERE workspace_id = $1 AND agent_name = $2 \
     ORDER BY connect_time, id",
);
pub(super) const UPDATE_SUB_AGENT: Stmt = Stmt::new(
    "UpdateWorkspaceAgentDisplayAppsAndDirectoryByID",
    // Coder's pre-provisioned path runs two updates after reading the child; one statement
    // that also checks the parent does the same for a child of this agent and nothing else.
    "UPDATE workspace_agents SET display_apps = $3, \
     directory = CASE WHEN $4 = '' THEN directory ELSE $4 END, updated_at = $5 \
     WHERE id = $1 AND parent_id = $2 AND deleted = FALSE RETURNING id, name, auth_token",
);
pub(super) const MARK_CONNECTED: Stmt = Stmt::new(
    "UpdateWorkspaceAgentConnectionByID",
    "UPDATE workspace_agents SET first_connected_at = COALESCE(first_connected_at, $2), \
     last_connected_at = $2, last_connected_replica_id = $3, updated_at = $2, \
     api_version = CASE WHEN $4 = '' THEN api_version ELSE $4 END \
     WHERE id = $1 AND deleted = FALSE RETURNING first_connected_at, disconnected_at",
);
pub(super) const MARK_DISCONNECTED: Stmt = Stmt::new(
    "UpdateWorkspaceAgentDisconnectedByID",
    "UPDATE workspace_agents SET disconnected_at = $2, updated_at = $2, \
     last_connected_replica_id = $3 WHERE id = $1",
);
