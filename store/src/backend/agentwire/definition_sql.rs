//! The statements behind an agent's definition ([`crate::AgentDefinition`]): the agent row's defined columns, and
//! the apps, scripts, metadata descriptions and monitors keyed by what identifies them across updates (slug, display
//! name, key, path). Statements Coder has keep its query names; the rest are agentwire's own.

use crate::counting::Stmt;

pub(super) const INSERT_DEFINED_AGENT: Stmt = Stmt::new(
    "InsertWorkspaceAgent",
    "INSERT INTO workspace_agents (id, created_at, updated_at, name, resource_id, \
     auth_token, architecture, operating_system, environment_variables, directory, \
     connection_timeout_seconds, troubleshooting_url, motd_file, display_apps) \
     VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
);
// Sub-agents are defined by their parent's devcontainers, never by a file: only top-level agents match.
pub(super) const UPDATE_AGENT_DEFINITION: Stmt = Stmt::new(
    "UpdateWorkspaceAgentDefinitionByID",
    "UPDATE workspace_agents SET updated_at = $2, architecture = $3, operating_system = $4, \
     environment_variables = $5, directory = $6, connection_timeout_seconds = $7, \
     troubleshooting_url = $8, motd_file = $9, display_apps = $10 \
     WHERE id = $1 AND deleted = FALSE AND parent_id IS NULL",
);
pub(super) const FIND_AGENT: Stmt = Stmt::new(
    "GetWorkspaceAgentByOwnerWorkspaceAndName",
    "SELECT a.id FROM workspace_agents a \
     JOIN workspace_resources r ON r.id = a.resource_id \
     JOIN workspace_builds b ON b.job_id = r.job_id \
     JOIN workspaces w ON w.id = b.workspace_id \
     JOIN users u ON u.id = w.owner_id \
     WHERE u.username = $1 AND u.deleted = FALSE AND w.name = $2 AND w.deleted = FALSE \
       AND a.name = $3 AND a.deleted = FALSE AND a.parent_id IS NULL \
     ORDER BY b.build_number DESC LIMIT 1",
);

pub(super) const SELECT_APP_SLUGS: Stmt =
    Stmt::new("GetWorkspaceAppSlugsByAgentID", "SELECT slug FROM workspace_apps WHERE agent_id = $1");
// Coder upserts apps too (UpsertWorkspaceApp). An app keeps its id, statuses and health while its health check
// stays the same URL: a connected agent reports health only on change, so a reset would stick until it reconnects.
pub(super) const UPSERT_APP: Stmt = Stmt::new(
    "UpsertWorkspaceApp",
    "INSERT INTO workspace_apps (id, created_at, agent_id, slug, display_name, icon, command, url, \
     healthcheck_url, healthcheck_interval, healthcheck_threshold, health, subdomain, sharing_level, \
     external, display_order, hidden, open_in, display_group, tooltip) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
     ON CONFLICT (agent_id, slug) DO UPDATE SET display_name = excluded.display_name, icon = excluded.icon, \
     command = excluded.command, url = excluded.url, healthcheck_url = excluded.healthcheck_url, \
     healthcheck_interval = excluded.healthcheck_interval, \
     healthcheck_threshold = excluded.healthcheck_threshold, \
     health = CASE WHEN workspace_apps.healthcheck_url = excluded.healthcheck_url \
                   THEN workspace_apps.health ELSE excluded.health END, \
     subdomain = excluded.subdomain, sharing_level = excluded.sharing_level, external = excluded.external, \
     display_order = excluded.display_order, hidden = excluded.hidden, open_in = excluded.open_in, \
     display_group = excluded.display_group, tooltip = excluded.tooltip",
);
pub(super) const DELETE_APP: Stmt =
    Stmt::new("DeleteWorkspaceAppBySlug", "DELETE FROM workspace_apps WHERE agent_id = $1 AND slug = $2");

pub(super) const SELECT_SCRIPT_NAMES: Stmt = Stmt::new(
    "GetWorkspaceAgentScriptNamesByAgentID",
    "SELECT id, log_source_id, display_name FROM workspace_agent_scripts WHERE workspace_agent_id = $1 \
     ORDER BY created_at, id",
);
pub(super) const INSERT_SCRIPT_LOG_SOURCE: Stmt = Stmt::new(
    "InsertWorkspaceAgentLogSources",
    "INSERT INTO workspace_agent_log_sources (workspace_agent_id, id, created_at, display_name, icon) \
     VALUES ($1, $2, $3, $4, $5)",
);
pub(super) const UPDATE_LOG_SOURCE_ICON: Stmt = Stmt::new(
    "UpdateWorkspaceAgentLogSourceIcon",
    "UPDATE workspace_agent_log_sources SET icon = $3 WHERE workspace_agent_id = $1 AND id = $2",
);
pub(super) const UPDATE_SCRIPT: Stmt = Stmt::new(
    "UpdateWorkspaceAgentScript",
    "UPDATE workspace_agent_scripts SET log_path = $3, script = $4, cron = $5, start_blocks_login = $6, \
     run_on_start = $7, run_on_stop = $8, timeout_seconds = $9 WHERE id = $1 AND workspace_agent_id = $2",
);
pub(super) const DELETE_SCRIPT: Stmt = Stmt::new(
    "DeleteWorkspaceAgentScript",
    "DELETE FROM workspace_agent_scripts WHERE id = $1 AND workspace_agent_id = $2",
);

pub(super) const SELECT_METADATA_KEYS: Stmt = Stmt::new(
    "GetWorkspaceAgentMetadataKeys",
    "SELECT key FROM workspace_agent_metadata WHERE workspace_agent_id = $1",
);
// A kept key keeps its last value until the agent next reports it, as a connected agent goes on collecting it.
pub(super) const UPSERT_METADATA: Stmt = Stmt::new(
    "UpsertWorkspaceAgentMetadataDescription",
    "INSERT INTO workspace_agent_metadata (workspace_agent_id, display_name, key, script, timeout, \"interval\", \
     display_order) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (workspace_agent_id, key) DO UPDATE SET display_name = excluded.display_name, \
     script = excluded.script, timeout = excluded.timeout, \"interval\" = excluded.\"interval\", \
     display_order = excluded.display_order",
);
pub(super) const DELETE_METADATA: Stmt = Stmt::new(
    "DeleteWorkspaceAgentMetadataKey",
    "DELETE FROM workspace_agent_metadata WHERE workspace_agent_id = $1 AND key = $2",
);

// A kept monitor keeps its state and debounce: the thresholds change, the alert history does not.
pub(super) const UPSERT_MEMORY_MONITOR: Stmt = Stmt::new(
    "UpsertMemoryResourceMonitor",
    "INSERT INTO workspace_agent_memory_resource_monitors (agent_id, enabled, threshold, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4) \
     ON CONFLICT (agent_id) DO UPDATE SET enabled = excluded.enabled, threshold = excluded.threshold, \
     updated_at = excluded.updated_at",
);
pub(super) const DELETE_MEMORY_MONITOR: Stmt = Stmt::new(
    "DeleteMemoryResourceMonitor",
    "DELETE FROM workspace_agent_memory_resource_monitors WHERE agent_id = $1",
);
pub(super) const SELECT_VOLUME_PATHS: Stmt = Stmt::new(
    "GetVolumeResourceMonitorPaths",
    "SELECT path FROM workspace_agent_volume_resource_monitors WHERE agent_id = $1",
);
pub(super) const UPSERT_VOLUME_MONITOR: Stmt = Stmt::new(
    "UpsertVolumeResourceMonitor",
    "INSERT INTO workspace_agent_volume_resource_monitors (agent_id, path, enabled, threshold, created_at, \
     updated_at) VALUES ($1, $2, $3, $4, $5, $5) \
     ON CONFLICT (agent_id, path) DO UPDATE SET enabled = excluded.enabled, threshold = excluded.threshold, \
     updated_at = excluded.updated_at",
);
pub(super) const DELETE_VOLUME_MONITOR: Stmt = Stmt::new(
    "DeleteVolumeResourceMonitor",
    "DELETE FROM workspace_agent_volume_resource_monitors WHERE agent_id = $1 AND path = $2",
);
