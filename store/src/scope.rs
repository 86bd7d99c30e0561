//! [`AgentScope`]: every per-agent read and write a handler may do, bound to one agent.
//!
//! Every statement here carries the scope's own agent id in its WHERE clause (or inserts it),
//! including the ones that take other ids (apps, scripts, sub-agents, boundary sessions): an id
//! that belongs to another agent simply matches nothing.

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

use crate::backend::{begin, commit, q, qa, qs, rollback, rows_per_statement, with_pool};
use crate::batch::heartbeat::Heartbeat;
use crate::batch::metadata::MetaItem;
use crate::batch::stats::StatsRow;
use crate::counting::Stmt;
use crate::model::*;
use crate::{Store, StoreError};

/// Coder's fixed log source for agents that send the nil source id.
pub const EXTERNAL_LOG_SOURCE_ID: Uuid = uuid::uuid!("3b579bf4-1ed8-4b99-87a8-e9a1e3410410");

/// Per-agent handle. Cheap to clone; create it with [`Store::agent`].
#[derive(Debug, Clone)]
pub struct AgentScope {
    store: Store,
    agent_id: Uuid,
    agent_key: String,
    name: String,
    workspace_id: Uuid,
    owner_id: Uuid,
    template_id: Uuid,
    organization_id: Uuid,
    workspace_name: String,
    resource_id: Uuid,
    connection_timeout_seconds: i64,
    troubleshooting_url: String,
    api_key_scope: String,
}

const LIST_APPS: Stmt = Stmt::new(
    "GetWorkspaceAppsByAgentID",
    "SELECT id, slug, display_name, icon, command, url, healthcheck_url, healthcheck_interval, \
     healthcheck_threshold, health, subdomain, sharing_level, external, display_order, hidden, \
     open_in, display_group, tooltip FROM workspace_apps WHERE agent_id = $1 ORDER BY slug",
);
const LIST_SCRIPTS: Stmt = Stmt::new(
    "GetWorkspaceAgentScriptsByAgentIDs",
    "SELECT id, log_source_id, log_path, script, cron, start_blocks_login, run_on_start, \
     run_on_stop, timeout_seconds, display_name FROM workspace_agent_scripts \
     WHERE workspace_agent_id = $1 ORDER BY id",
);
const LIST_METADATA: Stmt = Stmt::new(
    "GetWorkspaceAgentMetadata",
    "SELECT key, display_name, script, value, error, timeout, interval, collected_at, \
     display_order FROM workspace_agent_metadata WHERE workspace_agent_id = $1 \
     ORDER BY display_order, key",
);
const LIST_DEVCONTAINERS: Stmt = Stmt::new(
    "GetWorkspaceAgentDevcontainersByAgentID",
    "SELECT id, workspace_folder, config_path, name, subagent_id \
     FROM workspace_agent_devcontainers WHERE workspace_agent_id = $1 ORDER BY created_at, id",
);
const LIST_LOG_SOURCES: Stmt = Stmt::new(
    "GetWorkspaceAgentLogSourcesByAgentIDs",
    "SELECT id, display_name, icon FROM workspace_agent_log_sources \
     WHERE workspace_agent_id = $1 ORDER BY created_at, id",
);
const GET_STATE: Stmt = Stmt::new(
    "GetWorkspaceAgentStateBySelf",
    "SELECT lifecycle_state, started_at, ready_at, logs_length, logs_overflowed, version, \
     expanded_directory, subsystems, api_version, first_connected_at, last_connected_at, \
     disconnected_at, last_connected_replica_id FROM workspace_agents \
     WHERE id = $1 AND deleted = FALSE",
);
const UPDATE_LIFECYCLE: Stmt = Stmt::new(
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
const UPDATE_STARTUP: Stmt = Stmt::new(
    "UpdateWorkspaceAgentStartupByID",
    "UPDATE workspace_agents SET version = $2, expanded_directory = $3, subsystems = $4, \
     api_version = $5, updated_at = $6 WHERE id = $1 AND deleted = FALSE",
);
const APP_HEALTHS: Stmt = Stmt::new(
    "GetWorkspaceAppHealthsByAgentID",
    "SELECT id, healthcheck_url, health FROM workspace_apps WHERE agent_id = $1",
);
const UPDATE_APP_HEALTH: Stmt =
    Stmt::new("UpdateWorkspaceAppHealthByID", "UPDATE workspace_apps SET health = $3 WHERE id = $1 AND agent_id = $2");
const APP_BY_SLUG: Stmt =
    Stmt::new("GetWorkspaceAppByAgentIDAndSlug", "SELECT id FROM workspace_apps WHERE agent_id = $1 AND slug = $2");
const LATEST_APP_STATUS: Stmt = Stmt::new(
    "GetLatestWorkspaceAppStatusByAppID",
    "SELECT state FROM workspace_app_statuses WHERE app_id = $1 \
     ORDER BY created_at DESC, id DESC LIMIT 1",
);
const INSERT_APP_STATUS: Stmt = Stmt::new(
    "InsertWorkspaceAppStatus",
    "INSERT INTO workspace_app_statuses (id, created_at, workspace_id, agent_id, app_id, state, \
     message, uri) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
);
const ADD_LOGS_LENGTH: Stmt = Stmt::new(
    "UpdateWorkspaceAgentLogsLength",
    // The limit check and the increment are one statement, so two concurrent inserts cannot
    // both pass the check.
    "UPDATE workspace_agents SET logs_length = logs_length + $2 \
     WHERE id = $1 AND deleted = FALSE AND logs_overflowed = FALSE \
       AND logs_length + $2 <= $3 \
     RETURNING logs_length - $2",
);
const SET_LOGS_OVERFLOWED: Stmt = Stmt::new(
    "UpdateWorkspaceAgentLogOverflowByID",
    "UPDATE workspace_agents SET logs_overflowed = TRUE \
     WHERE id = $1 AND logs_overflowed = FALSE",
);
/// Statement name of each multi-row log INSERT.
pub const INSERT_LOGS: &str = "InsertWorkspaceAgentLogs";
const INSERT_LOG_SOURCE: Stmt = Stmt::new(
    "InsertWorkspaceAgentLogSources",
    "INSERT INTO workspace_agent_log_sources (workspace_agent_id, id, created_at, display_name, \
     icon) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_agent_id, id) DO NOTHING",
);
const INSERT_SCRIPT_TIMING: Stmt = Stmt::new(
    "InsertWorkspaceAgentScriptTimings",
    // Tighter than Coder: the script must belong to this agent.
    "INSERT INTO workspace_agent_script_timings (script_id, started_at, ended_at, exit_code, \
     stage, status) SELECT s.id, $3, $4, $5, $6, $7 FROM workspace_agent_scripts s \
     WHERE s.id = $1 AND s.workspace_agent_id = $2",
);
const UPSERT_CONNECTION_LOG: Stmt = Stmt::new(
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
const GET_MEMORY_MONITOR: Stmt = Stmt::new(
    "FetchMemoryResourceMonitorsByAgentID",
    "SELECT enabled, threshold, state, updated_at, debounced_until \
     FROM workspace_agent_memory_resource_monitors WHERE agent_id = $1",
);
const GET_VOLUME_MONITORS: Stmt = Stmt::new(
    "FetchVolumesResourceMonitorsByAgentID",
    "SELECT path, enabled, threshold, state, updated_at, debounced_until \
     FROM workspace_agent_volume_resource_monitors WHERE agent_id = $1 ORDER BY path",
);
const UPDATE_MEMORY_MONITOR: Stmt = Stmt::new(
    "UpdateMemoryResourceMonitor",
    "UPDATE workspace_agent_memory_resource_monitors SET state = $2, updated_at = $3, \
     debounced_until = $4 WHERE agent_id = $1",
);
const UPDATE_VOLUME_MONITOR: Stmt = Stmt::new(
    "UpdateVolumeResourceMonitor",
    "UPDATE workspace_agent_volume_resource_monitors SET state = $3, updated_at = $4, \
     debounced_until = $5 WHERE agent_id = $1 AND path = $2",
);
const INSERT_SUB_AGENT: Stmt = Stmt::new(
    "InsertWorkspaceAgent",
    "INSERT INTO workspace_agents (id, created_at, updated_at, name, parent_id, resource_id, \
     auth_token, architecture, operating_system, directory, display_apps, \
     connection_timeout_seconds, troubleshooting_url, api_key_scope, motd_file, display_order) \
     VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, '', 0)",
);
const LIST_SUB_AGENTS: Stmt = Stmt::new(
    "GetWorkspaceAgentsByParentID",
    "SELECT id, name, auth_token FROM workspace_agents \
     WHERE parent_id = $1 AND deleted = FALSE ORDER BY created_at, id",
);
const DELETE_SUB_AGENT: Stmt = Stmt::new(
    "DeleteWorkspaceSubAgentByID",
    // Tighter than Coder: only children of this agent.
    "UPDATE workspace_agents SET deleted = TRUE \
     WHERE id = $1 AND parent_id = $2 AND deleted = FALSE",
);
const DELETE_SUB_AGENT_CONTEXT: Stmt = Stmt::new(
    "DeleteWorkspaceAgentContextByAgentID",
    "DELETE FROM workspace_agent_context_resources WHERE workspace_agent_id = $1",
);
const DELETE_SUB_AGENT_SNAPSHOT: Stmt = Stmt::new(
    "DeleteWorkspaceAgentContextSnapshotByAgentID",
    "DELETE FROM workspace_agent_context_snapshots WHERE workspace_agent_id = $1",
);
const ENSURE_BOUNDARY_SESSION: Stmt = Stmt::new(
    "InsertBoundarySession",
    "INSERT INTO boundary_sessions (id, workspace_agent_id, owner_id, confined_process_name, \
     started_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
);
const BOUNDARY_SESSION_OWNER: Stmt =
    Stmt::new("GetBoundarySessionByID", "SELECT workspace_agent_id FROM boundary_sessions WHERE id = $1");
/// Statement name of each multi-row boundary log INSERT.
pub const INSERT_BOUNDARY_LOGS: &str = "InsertBoundaryLogs";
const GET_CONTEXT_VERSION: Stmt = Stmt::new(
    "GetLatestWorkspaceAgentContextSnapshot",
    "SELECT version FROM workspace_agent_context_snapshots WHERE workspace_agent_id = $1",
);
const UPSERT_CONTEXT_SNAPSHOT: Stmt = Stmt::new(
    "UpsertWorkspaceAgentContextSnapshot",
    "INSERT INTO workspace_agent_context_snapshots (workspace_agent_id, version, aggregate_hash, \
     snapshot_error, received_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (workspace_agent_id) DO UPDATE SET version = excluded.version, \
     aggregate_hash = excluded.aggregate_hash, snapshot_error = excluded.snapshot_error, \
     received_at = excluded.received_at",
);
const UPSERT_CONTEXT_RESOURCE: Stmt = Stmt::new(
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
pub const DELETE_STALE_CONTEXT: &str = "DeleteStaleWorkspaceAgentContextResources";
const LOGS_AFTER: Stmt = Stmt::new(
    "GetWorkspaceAgentLogsAfter",
    "SELECT id, created_at, output, level, log_source_id FROM workspace_agent_logs \
     WHERE agent_id = $1 AND id > $2 ORDER BY id",
);
const LIST_SCRIPT_TIMINGS: Stmt = Stmt::new(
    "GetWorkspaceAgentScriptTimingsByAgentID",
    "SELECT t.script_id, t.started_at, t.ended_at, t.exit_code, t.stage, t.status \
     FROM workspace_agent_script_timings t JOIN workspace_agent_scripts s ON s.id = t.script_id \
     WHERE s.workspace_agent_id = $1 ORDER BY t.started_at, t.script_id",
);
const LIST_CONNECTION_LOGS: Stmt = Stmt::new(
    "GetConnectionLogsByWorkspaceAndAgentName",
    // connection_logs carry no agent id (Coder's schema): the agent is its workspace and name.
    "SELECT connection_id, connect_time, type, code, ip, disconnect_time, disconnect_reason \
     FROM connection_logs WHERE workspace_id = $1 AND agent_name = $2 \
     ORDER BY connect_time, id",
);
const UPDATE_SUB_AGENT: Stmt = Stmt::new(
    "UpdateWorkspaceAgentDisplayAppsAndDirectoryByID",
    // Coder's pre-provisioned path runs two updates after reading the child; one statement
    // that also checks the parent does the same for a child of this agent and nothing else.
    "UPDATE workspace_agents SET display_apps = $3, \
     directory = CASE WHEN $4 = '' THEN directory ELSE $4 END, updated_at = $5 \
     WHERE id = $1 AND parent_id = $2 AND deleted = FALSE RETURNING id, name, auth_token",
);
const MARK_CONNECTED: Stmt = Stmt::new(
    "UpdateWorkspaceAgentConnectionByID",
    "UPDATE workspace_agents SET first_connected_at = COALESCE(first_connected_at, $2), \
     last_connected_at = $2, last_connected_replica_id = $3, updated_at = $2, \
     api_version = CASE WHEN $4 = '' THEN api_version ELSE $4 END \
     WHERE id = $1 AND deleted = FALSE RETURNING first_connected_at, disconnected_at",
);
const MARK_DISCONNECTED: Stmt = Stmt::new(
    "UpdateWorkspaceAgentDisconnectedByID",
    "UPDATE workspace_agents SET disconnected_at = $2, updated_at = $2, \
     last_connected_replica_id = $3 WHERE id = $1",
);

const LIFECYCLE_STATES: &[&str] = &[
    "created",
    "starting",
    "start_timeout",
    "start_error",
    "ready",
    "shutting_down",
    "shutdown_timeout",
    "shutdown_error",
    "off",
];
const SUBSYSTEMS: &[&str] = &["envbox", "envbuilder", "exectrace"];
const APP_HEALTHS_ALLOWED: &[&str] = &["disabled", "initializing", "healthy", "unhealthy"];
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

fn json_string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

/// Replace NULs (Postgres TEXT cannot hold them; Coder MAIN does the same) and cut to
/// `max_chars` characters, as Coder's `varchar(1024)` cast does.
fn sanitize_line(s: &str, max_chars: usize) -> (String, usize) {
    let cleaned: String = if s.contains('\0') { s.replace('\0', "\u{274c}") } else { s.to_owned() };
    let full_len = cleaned.len();
    let cut = match cleaned.char_indices().nth(max_chars) {
        Some((byte, _)) => cleaned[..byte].to_owned(),
        None => cleaned,
    };
    (cut, full_len)
}

impl AgentScope {
    pub(crate) fn new(store: Store, a: &ResolvedAgent) -> Self {
        AgentScope {
            store,
            agent_id: a.id,
            agent_key: id(a.id),
            name: a.name.clone(),
            workspace_id: a.workspace_id,
            owner_id: a.owner_id,
            template_id: a.template_id,
            organization_id: a.organization_id,
            workspace_name: a.workspace_name.clone(),
            resource_id: a.resource_id,
            connection_timeout_seconds: a.connection_timeout_seconds,
            troubleshooting_url: a.troubleshooting_url.clone(),
            api_key_scope: a.api_key_scope.clone(),
        }
    }

    /// The agent this scope is bound to.
    pub fn agent_id(&self) -> Uuid {
        self.agent_id
    }

    /// The agent's name.
    pub fn agent_name(&self) -> &str {
        &self.name
    }

    /// The agent's workspace.
    pub fn workspace_id(&self) -> Uuid {
        self.workspace_id
    }

    /// The workspace owner (for `workspace_owner:<owner>` events).
    pub fn owner_id(&self) -> Uuid {
        self.owner_id
    }

    fn core(&self) -> &crate::Core {
        self.store.core()
    }

    /// Re-read the mutable part of this agent's own row (lifecycle, logs counters, …).
    pub async fn state(&self) -> Result<Option<AgentState>, StoreError> {
        let core = self.core();
        let row = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, GET_STATE, AgentState).bind(&self.agent_key).fetch_optional(pool).await?
        });
        Ok(row)
    }

    /// Apps, ordered by slug (manifest).
    pub async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, LIST_APPS, App).bind(&self.agent_key).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Scripts, ordered by id (manifest).
    pub async fn list_scripts(&self) -> Result<Vec<Script>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, LIST_SCRIPTS, Script).bind(&self.agent_key).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Metadata descriptions and values (manifest).
    pub async fn list_metadata(&self) -> Result<Vec<Metadata>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, LIST_METADATA, Metadata).bind(&self.agent_key).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Devcontainers, ordered by creation (manifest).
    pub async fn list_devcontainers(&self) -> Result<Vec<Devcontainer>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, LIST_DEVCONTAINERS, Devcontainer).bind(&self.agent_key).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Log sources.
    pub async fn list_log_sources(&self) -> Result<Vec<LogSource>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, LIST_LOG_SOURCES, LogSource).bind(&self.agent_key).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// UpdateLifecycle: one statement applying Coder's started_at/ready_at rules. `state` is
    /// the DB enum string; `changed_at` the (server-filled if zero) change time.
    pub async fn update_lifecycle(&self, state: &str, changed_at: UnixMicros) -> Result<LifecycleTimes, StoreError> {
        if !LIFECYCLE_STATES.contains(&state) {
            return Err(StoreError::Invalid(format!("unknown lifecycle state {state:?}")));
        }
        let core = self.core();
        let row = with_pool!(&core.db, write, |eng, pool| {
            qa!(core.counters, eng, UPDATE_LIFECYCLE, LifecycleTimes)
                .bind(&self.agent_key)
                .bind(state)
                .bind(changed_at)
                .bind(now_micros())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::Invalid("agent is deleted".into()))
    }

    /// UpdateStartup. Subsystems are validated, de-duplicated and sorted (Coder's order).
    pub async fn update_startup(
        &self,
        version: &str,
        expanded_directory: &str,
        subsystems: &[&str],
        api_version: &str,
    ) -> Result<(), StoreError> {
        let mut subs = BTreeSet::new();
        for s in subsystems {
            if !SUBSYSTEMS.contains(s) {
                return Err(StoreError::Invalid(format!("invalid agent subsystem {s:?}")));
            }
            subs.insert((*s).to_owned());
        }
        let subs: Vec<String> = subs.into_iter().collect();
        let core = self.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, UPDATE_STARTUP)
                .bind(&self.agent_key)
                .bind(version)
                .bind(expanded_directory)
                .bind(json_string_array(&subs))
                .bind(api_version)
                .bind(now_micros())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// BatchUpdateAppHealths: all-or-nothing. Ids that are not this agent's apps (or apps
    /// without a healthcheck) are reported and nothing is written; otherwise every changed app
    /// is updated in one transaction.
    pub async fn batch_update_app_healths(&self, updates: &[(Uuid, &str)]) -> Result<AppHealthOutcome, StoreError> {
        let mut out = AppHealthOutcome::default();
        if updates.is_empty() {
            return Ok(out);
        }
        for (_, h) in updates {
            if !APP_HEALTHS_ALLOWED.contains(h) {
                return Err(StoreError::Invalid(format!("unknown app health {h:?}")));
            }
        }
        let core = self.core();
        // Agents repeat the health they already reported on every check; reading first, outside any transaction,
        // makes those repeats cost one read and no write.
        let apps: Vec<(String, String, String)> = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, APP_HEALTHS, (String, String, String)).bind(&self.agent_key).fetch_all(pool).await?
        });
        let apps: HashMap<String, (String, String)> = apps.into_iter().map(|(i, u, h)| (i, (u, h))).collect();
        let mut writes = Vec::new();
        for (app, health) in updates {
            match apps.get(&id(*app)) {
                None => out.unknown.push(*app),
                Some((url, _)) if url.is_empty() => out.no_healthcheck.push(*app),
                Some((_, current)) if current == health => {}
                Some(_) => writes.push((*app, *health)),
            }
        }
        if !out.unknown.is_empty() || !out.no_healthcheck.is_empty() || writes.is_empty() {
            return Ok(out);
        }
        with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            for (app, health) in &writes {
                q!(core.counters, eng, UPDATE_APP_HEALTH)
                    .bind(id(*app))
                    .bind(&self.agent_key)
                    .bind(*health)
                    .execute(&mut *tx)
                    .await?;
            }
            commit(&core.counters, tx).await?;
        });
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
        let core = self.core();
        let status_id = Uuid::new_v4();
        let out = with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            let app: Option<String> = qs!(core.counters, eng, APP_BY_SLUG, String)
                .bind(&self.agent_key)
                .bind(slug)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(app) = app else {
                rollback(&core.counters, tx).await?;
                return Ok(None);
            };
            let previous: Option<String> =
                qs!(core.counters, eng, LATEST_APP_STATUS, String).bind(&app).fetch_optional(&mut *tx).await?;
            q!(core.counters, eng, INSERT_APP_STATUS)
                .bind(id(status_id))
                .bind(now_micros())
                .bind(id(self.workspace_id))
                .bind(&self.agent_key)
                .bind(&app)
                .bind(state)
                .bind(message)
                .bind(uri)
                .execute(&mut *tx)
                .await?;
            commit(&core.counters, tx).await?;
            let app_id = Uuid::parse_str(&app).map_err(|e| StoreError::corrupt("workspace_apps", e.to_string()))?;
            AppStatusOutcome { app_id, status_id, previous_state: previous }
        });
        Ok(Some(out))
    }

    /// BatchUpdateMetadata: queue each value for the metadata batcher, stamped with the
    /// **server's** clock (Coder ignores the agent's `collected_at`). Never blocks; a full
    /// queue drops and counts.
    pub fn enqueue_metadata(&self, updates: &[MetadataUpdate]) -> Enqueued {
        let now = now_micros();
        let mut out = Enqueued::default();
        for u in updates {
            let ok = self.store.enqueue_metadata(MetaItem {
                agent_id: self.agent_id,
                key: u.key.clone(),
                value: u.value.clone(),
                error: u.error.clone(),
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
            agent_id: self.agent_id,
            workspace_id: self.workspace_id,
            template_id: self.template_id,
            user_id: self.owner_id,
            report,
        })
    }

    /// BatchCreateLogs, atomically: in one transaction, check `logs_length + new bytes`
    /// against `max_logs_length` and either add the bytes and insert the lines, or set
    /// `logs_overflowed`. **Lines are sanitised and cut here** (NUL → ❌, at most
    /// `max_log_line_chars` characters stored); `logs_length` counts the full sanitised
    /// length, as Coder's does. The nil source id maps to Coder's "External" source, created on
    /// demand. Unknown levels are an error; map "unspecified" to `info` before calling.
    pub async fn insert_logs(&self, log_source_id: Uuid, lines: &[LogLine]) -> Result<InsertLogsOutcome, StoreError> {
        if lines.is_empty() {
            return Ok(InsertLogsOutcome::Empty);
        }
        for l in lines {
            if !LOG_LEVELS.contains(&l.level.as_str()) {
                return Err(StoreError::Invalid(format!("unknown log level {:?}", l.level)));
            }
        }
        let core = self.core();
        let max_chars = core.opts.max_log_line_chars;
        let mut total: i64 = 0;
        let cleaned: Vec<(String, &str)> = lines
            .iter()
            .map(|l| {
                let (s, full) = sanitize_line(&l.output, max_chars);
                total = total.saturating_add(i64::try_from(full).unwrap_or(i64::MAX));
                (s, l.level.as_str())
            })
            .collect();
        let source = if log_source_id.is_nil() { EXTERNAL_LOG_SOURCE_ID } else { log_source_id };
        let now = now_micros();
        let limit = core.opts.max_logs_length;
        let out = with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            if log_source_id.is_nil() {
                q!(core.counters, eng, INSERT_LOG_SOURCE)
                    .bind(&self.agent_key)
                    .bind(id(EXTERNAL_LOG_SOURCE_ID))
                    .bind(now)
                    .bind("External")
                    .bind("/emojis/1f310.png")
                    .execute(&mut *tx)
                    .await?;
            }
            let before: Option<i64> = qs!(core.counters, eng, ADD_LOGS_LENGTH, i64)
                .bind(&self.agent_key)
                .bind(total)
                .bind(limit)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(before) = before else {
                let r = q!(core.counters, eng, SET_LOGS_OVERFLOWED).bind(&self.agent_key).execute(&mut *tx).await?;
                commit(&core.counters, tx).await?;
                return Ok(InsertLogsOutcome::LimitExceeded { newly: r.rows_affected() > 0 });
            };
            let mut first_id = i64::MAX;
            for chunk in cleaned.chunks(rows_per_statement(5)) {
                core.counters.hit(INSERT_LOGS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO workspace_agent_logs (agent_id, created_at, output, level, \
                     log_source_id) ",
                );
                qb.push_values(chunk, |mut b, (output, level)| {
                    b.push_bind(self.agent_key.as_str())
                        .push_bind(now)
                        .push_bind(output.as_str())
                        .push_bind(*level)
                        .push_bind(id(source));
                });
                qb.push(" RETURNING id");
                let ids: Vec<i64> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
                if let Some(m) = ids.into_iter().min() {
                    first_id = first_id.min(m);
                }
            }
            commit(&core.counters, tx).await?;
            InsertLogsOutcome::Inserted { first_id, count: cleaned.len(), first_logs: before == 0 }
        });
        Ok(out)
    }

    /// Insert log sources; existing `(agent, id)` pairs are left as they are.
    pub async fn upsert_log_sources(&self, sources: &[LogSource]) -> Result<(), StoreError> {
        if sources.is_empty() {
            return Ok(());
        }
        let core = self.core();
        let now = now_micros();
        with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            for s in sources {
                q!(core.counters, eng, INSERT_LOG_SOURCE)
                    .bind(&self.agent_key)
                    .bind(id(s.id))
                    .bind(now)
                    .bind(&s.display_name)
                    .bind(&s.icon)
                    .execute(&mut *tx)
                    .await?;
            }
            commit(&core.counters, tx).await?;
        });
        Ok(())
    }

    /// ScriptCompleted. `Ok(false)` when the script is not one of this agent's. A duplicate
    /// `(script_id, started_at)` is a unique violation, as in Coder.
    pub async fn insert_script_timing(&self, t: &ScriptTiming) -> Result<bool, StoreError> {
        let core = self.core();
        let n = with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, INSERT_SCRIPT_TIMING)
                .bind(id(t.script_id))
                .bind(&self.agent_key)
                .bind(t.started_at)
                .bind(t.ended_at)
                .bind(t.exit_code)
                .bind(&t.stage)
                .bind(&t.status)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// ReportConnection: one upsert into `connection_logs` (Coder SEED semantics).
    pub async fn insert_connection_log(&self, ev: &ConnectionEvent) -> Result<(), StoreError> {
        let core = self.core();
        let (disconnect_time, reason, code) =
            if ev.connect { (None, None, None) } else { (Some(ev.time), ev.disconnect_reason.as_deref(), ev.code) };
        let ip = ev
            .ip
            .as_deref()
            .map(|ip| if ip == "localhost" { "127.0.0.1" } else { ip })
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, UPSERT_CONNECTION_LOG)
                .bind(id(Uuid::new_v4()))
                .bind(ev.time)
                .bind(id(self.organization_id))
                .bind(id(self.owner_id))
                .bind(id(self.workspace_id))
                .bind(&self.workspace_name)
                .bind(&self.name)
                .bind(&ev.kind)
                .bind(code)
                .bind(ip)
                .bind(id(ev.connection_id))
                .bind(disconnect_time)
                .bind(reason)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Memory monitor, if configured.
    pub async fn memory_monitor(&self) -> Result<Option<MemoryMonitor>, StoreError> {
        let core = self.core();
        let row = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, GET_MEMORY_MONITOR, MemoryMonitor)
                .bind(&self.agent_key)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Volume monitors.
    pub async fn volume_monitors(&self) -> Result<Vec<VolumeMonitor>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, GET_VOLUME_MONITORS, VolumeMonitor).bind(&self.agent_key).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Write the memory monitor's state.
    pub async fn update_memory_monitor(
        &self,
        state: &str,
        updated_at: UnixMicros,
        debounced_until: UnixMicros,
    ) -> Result<bool, StoreError> {
        let core = self.core();
        let n = with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, UPDATE_MEMORY_MONITOR)
                .bind(&self.agent_key)
                .bind(state)
                .bind(updated_at)
                .bind(debounced_until)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Write one volume monitor's state.
    pub async fn update_volume_monitor(
        &self,
        path: &str,
        state: &str,
        updated_at: UnixMicros,
        debounced_until: UnixMicros,
    ) -> Result<bool, StoreError> {
        let core = self.core();
        let n = with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, UPDATE_VOLUME_MONITOR)
                .bind(&self.agent_key)
                .bind(path)
                .bind(state)
                .bind(updated_at)
                .bind(debounced_until)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// CreateSubAgent (new agent path): a child of this agent on the same resource, with a
    /// fresh token; inherits the connection timeout, troubleshooting URL and key scope.
    pub async fn create_sub_agent(&self, a: &NewSubAgent) -> Result<SubAgent, StoreError> {
        let core = self.core();
        let sub = SubAgent { id: Uuid::new_v4(), name: a.name.clone(), auth_token: Uuid::new_v4() };
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, INSERT_SUB_AGENT)
                .bind(id(sub.id))
                .bind(now_micros())
                .bind(&a.name)
                .bind(&self.agent_key)
                .bind(id(self.resource_id))
                .bind(id(sub.auth_token))
                .bind(&a.architecture)
                .bind(&a.operating_system)
                .bind(&a.directory)
                .bind(json_string_array(&a.display_apps))
                .bind(self.connection_timeout_seconds)
                .bind(&self.troubleshooting_url)
                .bind(&self.api_key_scope)
                .execute(pool)
                .await?;
        });
        Ok(sub)
    }

    /// ListSubAgents: this agent's live children.
    pub async fn list_sub_agents(&self) -> Result<Vec<SubAgent>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, LIST_SUB_AGENTS, SubAgent).bind(&self.agent_key).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// DeleteSubAgent: soft delete, only of this agent's own children (tighter than Coder);
    /// also removes the child's context rows. `Ok(false)` if no such child.
    pub async fn delete_sub_agent(&self, sub_agent_id: Uuid) -> Result<bool, StoreError> {
        let core = self.core();
        let deleted = with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            let n = q!(core.counters, eng, DELETE_SUB_AGENT)
                .bind(id(sub_agent_id))
                .bind(&self.agent_key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                rollback(&core.counters, tx).await?;
                return Ok(false);
            }
            q!(core.counters, eng, DELETE_SUB_AGENT_CONTEXT).bind(id(sub_agent_id)).execute(&mut *tx).await?;
            q!(core.counters, eng, DELETE_SUB_AGENT_SNAPSHOT).bind(id(sub_agent_id)).execute(&mut *tx).await?;
            commit(&core.counters, tx).await?;
            true
        });
        Ok(deleted)
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
        let core = self.core();
        let now = now_micros();
        let ok = with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            q!(core.counters, eng, ENSURE_BOUNDARY_SESSION)
                .bind(id(session_id))
                .bind(&self.agent_key)
                .bind(id(self.owner_id))
                .bind(confined_process_name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let owner: String = qs!(core.counters, eng, BOUNDARY_SESSION_OWNER, String)
                .bind(id(session_id))
                .fetch_one(&mut *tx)
                .await?;
            if owner != self.agent_key {
                rollback(&core.counters, tx).await?;
                return Ok(false);
            }
            for chunk in logs.chunks(rows_per_statement(10)) {
                core.counters.hit(INSERT_BOUNDARY_LOGS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO boundary_logs (id, session_id, sequence_number, captured_at, \
                     created_at, proto, method, detail, matched_rule, owner_id) ",
                );
                qb.push_values(chunk, |mut b, l| {
                    b.push_bind(id(l.id))
                        .push_bind(id(session_id))
                        .push_bind(l.sequence_number)
                        .push_bind(now)
                        .push_bind(l.created_at)
                        .push_bind("http")
                        .push_bind(l.method.as_str())
                        .push_bind(l.detail.as_str())
                        .push_bind(l.matched_rule.as_deref())
                        .push_bind(id(self.owner_id));
                });
                qb.build().execute(&mut *tx).await?;
            }
            commit(&core.counters, tx).await?;
            true
        });
        Ok(ok)
    }

    /// PushContextState in one read-modify-write transaction. `Ok(false)` (nothing written)
    /// when a snapshot exists, the push is not `initial`, and its version is not newer.
    pub async fn push_context_state(&self, st: &ContextState) -> Result<bool, StoreError> {
        let core = self.core();
        let now = now_micros();
        let accepted = with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            let existing: Option<i64> = qs!(core.counters, eng, GET_CONTEXT_VERSION, i64)
                .bind(&self.agent_key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(v) = existing {
                if !st.initial && st.version <= v {
                    rollback(&core.counters, tx).await?;
                    return Ok(false);
                }
            }
            q!(core.counters, eng, UPSERT_CONTEXT_SNAPSHOT)
                .bind(&self.agent_key)
                .bind(st.version)
                .bind(&st.aggregate_hash)
                .bind(&st.snapshot_error)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            for r in &st.resources {
                q!(core.counters, eng, UPSERT_CONTEXT_RESOURCE)
                    .bind(&self.agent_key)
                    .bind(&r.source)
                    .bind(&r.body_kind)
                    .bind(&r.body)
                    .bind(&r.content_hash)
                    .bind(r.size_bytes)
                    .bind(&r.status)
                    .bind(&r.error)
                    .bind(&r.source_path)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            core.counters.hit(DELETE_STALE_CONTEXT);
            let mut qb =
                sqlx::QueryBuilder::new("DELETE FROM workspace_agent_context_resources WHERE workspace_agent_id = ");
            qb.push_bind(self.agent_key.as_str());
            if !st.resources.is_empty() {
                qb.push(" AND source NOT IN (");
                let mut sep = qb.separated(", ");
                for r in &st.resources {
                    sep.push_bind(r.source.as_str());
                }
                qb.push(")");
            }
            qb.build().execute(&mut *tx).await?;
            commit(&core.counters, tx).await?;
            true
        });
        Ok(accepted)
    }

    /// This agent's log lines with an id above `after_id`, oldest first (what a log stream
    /// fetches after an `agent-logs:<agent>` notification).
    pub async fn logs_after(&self, after_id: i64) -> Result<Vec<AgentLog>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, LOGS_AFTER, AgentLog).bind(&self.agent_key).bind(after_id).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Timings recorded for this agent's scripts.
    pub async fn script_timings(&self) -> Result<Vec<ScriptTiming>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, LIST_SCRIPT_TIMINGS, ScriptTiming).bind(&self.agent_key).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Connection log entries of this agent (its workspace and name), oldest first.
    pub async fn connection_logs(&self) -> Result<Vec<ConnectionLogEntry>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, LIST_CONNECTION_LOGS, ConnectionLogEntry)
                .bind(id(self.workspace_id))
                .bind(&self.name)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
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
        let core = self.core();
        let row = with_pool!(&core.db, write, |eng, pool| {
            qa!(core.counters, eng, UPDATE_SUB_AGENT, SubAgent)
                .bind(id(sub_agent_id))
                .bind(&self.agent_key)
                .bind(json_string_array(display_apps))
                .bind(directory)
                .bind(now_micros())
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Connection monitor start: `first_connected_at` if unset, `last_connected_at`, the
    /// replica, and the negotiated API version (empty = leave as is). Written at once.
    pub async fn mark_connected(&self, replica_id: Uuid, api_version: &str) -> Result<ConnectionTimes, StoreError> {
        let core = self.core();
        let row = with_pool!(&core.db, write, |eng, pool| {
            qa!(core.counters, eng, MARK_CONNECTED, ConnectionTimes)
                .bind(&self.agent_key)
                .bind(now_micros())
                .bind(id(replica_id))
                .bind(api_version)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| StoreError::Invalid("agent is deleted".into()))
    }

    /// Periodic liveness refresh of `last_connected_at`, batched. Returns false if dropped.
    pub fn heartbeat(&self, replica_id: Uuid) -> bool {
        self.store.enqueue_heartbeat(Heartbeat { agent_id: self.agent_id, at: now_micros(), replica_id })
    }

    /// Connection end: `disconnected_at = now`, written at once.
    pub async fn mark_disconnected(&self, replica_id: Uuid) -> Result<(), StoreError> {
        let core = self.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, MARK_DISCONNECTED)
                .bind(&self.agent_key)
                .bind(now_micros())
                .bind(id(replica_id))
                .execute(pool)
                .await?;
        });
        Ok(())
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

    #[test]
    fn json_array_escapes() {
        assert_eq!(json_string_array(&["a\"b".into(), "c".into()]), r#"["a\"b","c"]"#);
        assert_eq!(json_string_array(&[]), "[]");
    }
}
