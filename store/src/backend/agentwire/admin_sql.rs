//! The statements behind [`crate::Admin`], each under Coder's query name.

use crate::counting::Stmt;

pub(super) const UPSERT_ORG: Stmt = Stmt::new(
    "InsertOrganization",
    "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
);
pub(super) const SELECT_USER_ID: Stmt =
    Stmt::new("GetUserByUsername", "SELECT id FROM users WHERE username = $1 AND deleted = FALSE");
pub(super) const INSERT_USER: Stmt = Stmt::new(
    "InsertUser",
    "INSERT INTO users (id, email, username, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $4)",
);
pub(super) const INSERT_JOB: Stmt = Stmt::new(
    "InsertProvisionerJob",
    "INSERT INTO provisioner_jobs (id, organization_id, type, created_at, updated_at, \
     started_at, completed_at) VALUES ($1, $2, $3, $4, $4, $5, $6)",
);
pub(super) const INSERT_TEMPLATE: Stmt = Stmt::new(
    "InsertTemplate",
    "INSERT INTO templates (id, organization_id, name, display_name, created_at, updated_at) \
     VALUES ($1, $2, $3, $3, $4, $4)",
);
pub(super) const INSERT_TEMPLATE_VERSION: Stmt = Stmt::new(
    "InsertTemplateVersion",
    "INSERT INTO template_versions (id, template_id, organization_id, name, job_id, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
);
pub(super) const SET_ACTIVE_VERSION: Stmt =
    Stmt::new("UpdateTemplateActiveVersionByID", "UPDATE templates SET active_version_id = $2 WHERE id = $1");
pub(super) const INSERT_WORKSPACE: Stmt = Stmt::new(
    "InsertWorkspace",
    "INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, \
     template_id, name) SELECT $1, $2, $2, $3, t.organization_id, t.id, $4 \
     FROM templates t WHERE t.id = $5",
);
pub(super) const NEXT_BUILD_NUMBER: Stmt = Stmt::new(
    "GetNextWorkspaceBuildNumber",
    "SELECT COALESCE(MAX(build_number), 0) + 1 FROM workspace_builds WHERE workspace_id = $1",
);
pub(super) const WORKSPACE_ORG_AND_TEMPLATE: Stmt = Stmt::new(
    "GetWorkspaceTemplateVersion",
    "SELECT w.organization_id, t.active_version_id, w.owner_id FROM workspaces w \
     JOIN templates t ON t.id = w.template_id WHERE w.id = $1",
);
pub(super) const INSERT_BUILD: Stmt = Stmt::new(
    "InsertWorkspaceBuild",
    "INSERT INTO workspace_builds (id, created_at, updated_at, workspace_id, \
     template_version_id, build_number, transition, initiator_id, job_id) \
     VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8)",
);
pub(super) const INSERT_RESOURCE: Stmt = Stmt::new(
    "InsertWorkspaceResource",
    "INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name) \
     VALUES ($1, $2, $3, $4, 'agentwire_agent', 'main')",
);
pub(super) const INSERT_AGENT: Stmt = Stmt::new(
    "InsertWorkspaceAgent",
    "INSERT INTO workspace_agents (id, created_at, updated_at, name, resource_id, \
     auth_token, architecture, operating_system, environment_variables, directory, \
     connection_timeout_seconds, troubleshooting_url, motd_file) \
     VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
);
pub(super) const INSERT_APP: Stmt = Stmt::new(
    "InsertWorkspaceApp",
    "INSERT INTO workspace_apps (id, created_at, agent_id, slug, display_name, url, command, \
     healthcheck_url, healthcheck_interval, healthcheck_threshold, health, subdomain, \
     sharing_level, display_order) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
);
pub(super) const INSERT_LOG_SOURCE: Stmt = Stmt::new(
    "InsertWorkspaceAgentLogSources",
    "INSERT INTO workspace_agent_log_sources (workspace_agent_id, id, created_at, \
     display_name, icon) VALUES ($1, $2, $3, $4, '') \
     ON CONFLICT (workspace_agent_id, id) DO NOTHING",
);
pub(super) const INSERT_SCRIPT: Stmt = Stmt::new(
    "InsertWorkspaceAgentScripts",
    "INSERT INTO workspace_agent_scripts (id, workspace_agent_id, log_source_id, log_path, \
     created_at, script, cron, start_blocks_login, run_on_start, run_on_stop, \
     timeout_seconds, display_name) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
);
pub(super) const INSERT_METADATA: Stmt = Stmt::new(
    "InsertWorkspaceAgentMetadata",
    "INSERT INTO workspace_agent_metadata (workspace_agent_id, display_name, key, script, \
     timeout, interval, display_order) VALUES ($1, $2, $3, $4, $5, $6, $7)",
);
pub(super) const INSERT_DEVCONTAINER: Stmt = Stmt::new(
    "InsertWorkspaceAgentDevcontainers",
    "INSERT INTO workspace_agent_devcontainers (id, workspace_agent_id, created_at, \
     workspace_folder, config_path, name) VALUES ($1, $2, $3, $4, $5, $6)",
);
pub(super) const INSERT_MEMORY_MONITOR: Stmt = Stmt::new(
    "InsertMemoryResourceMonitor",
    "INSERT INTO workspace_agent_memory_resource_monitors (agent_id, enabled, threshold, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
);
pub(super) const INSERT_VOLUME_MONITOR: Stmt = Stmt::new(
    "InsertVolumeResourceMonitor",
    "INSERT INTO workspace_agent_volume_resource_monitors (agent_id, path, enabled, \
     threshold, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
);
pub(super) const SET_BUILD_DEADLINE: Stmt = Stmt::new(
    "UpdateWorkspaceBuildDeadlineByID",
    "UPDATE workspace_builds SET deadline = $2, max_deadline = $3 WHERE id = $1",
);
pub(super) const GET_BUILD_ACTIVITY: Stmt = Stmt::new(
    "GetWorkspaceBuildActivity",
    "SELECT b.deadline, w.last_used_at FROM workspace_builds b JOIN workspaces w ON w.id = b.workspace_id \
     WHERE b.id = $1",
);
pub(super) const SET_JOB_STATE: Stmt = Stmt::new(
    "UpdateProvisionerJobState",
    "UPDATE provisioner_jobs SET started_at = $2, completed_at = $3, canceled_at = $4, \
     error = $5 WHERE id = $1",
);
pub(super) const DELETE_WORKSPACE: Stmt =
    Stmt::new("UpdateWorkspaceDeletedByID", "UPDATE workspaces SET deleted = TRUE WHERE id = $1");
pub(super) const UPSERT_SITE_CONFIG: Stmt = Stmt::new(
    "UpsertSiteConfig",
    "INSERT INTO site_configs (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
);
pub(super) const INSERT_API_KEY: Stmt = Stmt::new(
    "InsertAPIKey",
    "INSERT INTO api_keys (id, hashed_secret, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
);
