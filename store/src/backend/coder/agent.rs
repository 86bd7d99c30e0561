//! `AgentSql` on Coder's schema: one agent's rows, every statement bound to the scope's agent id (or, for the rows
//! that belong to its owner or workspace rather than to it, to the scope's owner or workspace id).
//!
//! Each statement is named after the coderd v2.30 sqlc query it stands for and writes what that query writes. Where
//! one statement here does the work of several of coderd's, or is tighter than coderd's (an id must also belong to
//! this agent), a comment on the statement says so.

use std::collections::HashMap;

use uuid::Uuid;

use super::CoderDb;
use crate::backend::{begin, commit, q, qa, AgentSql, Engine, LogBatch};
use crate::counting::Stmt;
use crate::model::*;
use crate::scope::EXTERNAL_LOG_SOURCE_ID;
use crate::{AgentScope, StoreError};

const PG: Engine = Engine::Postgres;

/// A `timestamptz` column read as unix microseconds.
macro_rules! micros {
    ($col:literal) => {
        concat!("(EXTRACT(EPOCH FROM ", $col, ") * 1000000)::bigint")
    };
}

/// A `timestamptz` column whose "never" is Go's zero time (`'0001-01-01 00:00:00+00'`, the default coderd gives it),
/// read as unix microseconds with that zero time as 0, the domain's "never".
macro_rules! micros_or_zero {
    ($col:literal) => {
        concat!(
            "(CASE WHEN ",
            $col,
            " = '0001-01-01 00:00:00+00'::timestamptz THEN 0 ELSE (EXTRACT(EPOCH FROM ",
            $col,
            ") * 1000000)::bigint END)"
        )
    };
}

/// A unix-microseconds parameter as a `timestamptz`.
macro_rules! ts {
    ($param:literal) => {
        concat!("to_timestamp(", $param, "::float8 / 1e6)")
    };
}

const GET_STATE: Stmt = Stmt::new(
    "GetWorkspaceAgentByID",
    concat!(
        "SELECT lifecycle_state::text AS lifecycle_state, ",
        micros!("started_at"),
        " AS started_at, ",
        micros!("ready_at"),
        " AS ready_at, logs_length::bigint AS logs_length, logs_overflowed, version, \
         expanded_directory::text AS expanded_directory, \
         COALESCE(array_to_json(subsystems)::text, '[]') AS subsystems, api_version, ",
        micros!("first_connected_at"),
        " AS first_connected_at, ",
        micros!("last_connected_at"),
        " AS last_connected_at, ",
        micros!("disconnected_at"),
        " AS disconnected_at, last_connected_replica_id::text AS last_connected_replica_id \
         FROM workspace_agents WHERE id = $1::uuid AND deleted = FALSE",
    ),
);

const LIST_APPS: Stmt = Stmt::new(
    "GetWorkspaceAppsByAgentID",
    "SELECT id::text AS id, slug, display_name::text AS display_name, icon::text AS icon, \
     command::text AS command, url::text AS url, healthcheck_url, \
     healthcheck_interval::bigint AS healthcheck_interval, healthcheck_threshold::bigint AS healthcheck_threshold, \
     health::text AS health, subdomain, sharing_level::text AS sharing_level, external, \
     display_order::bigint AS display_order, hidden, open_in::text AS open_in, display_group, \
     tooltip::text AS tooltip \
     FROM workspace_apps WHERE agent_id = $1::uuid ORDER BY slug",
);

const LIST_SCRIPTS: Stmt = Stmt::new(
    "GetWorkspaceAgentScriptsByAgentIDs",
    // coderd's query has no ORDER BY, so its agents get the rows in heap order: the order the provisioner inserted
    // them, the template's, since scripts are never updated. `ctid` is that order made explicit, so an agent sees
    // its scripts as coderd would hand them (ids are random and would shuffle them).
    "SELECT id::text AS id, log_source_id::text AS log_source_id, log_path, script, cron, start_blocks_login, \
     run_on_start, run_on_stop, timeout_seconds::bigint AS timeout_seconds, display_name \
     FROM workspace_agent_scripts WHERE workspace_agent_id = $1::uuid ORDER BY ctid",
);

const LIST_METADATA: Stmt = Stmt::new(
    "GetWorkspaceAgentMetadata",
    concat!(
        "SELECT key::text AS key, display_name::text AS display_name, script::text AS script, \
         value::text AS value, error::text AS error, timeout, \"interval\" AS interval, ",
        micros_or_zero!("collected_at"),
        " AS collected_at, display_order::bigint AS display_order \
         FROM workspace_agent_metadata WHERE workspace_agent_id = $1::uuid ORDER BY display_order, key",
    ),
);

const LIST_DEVCONTAINERS: Stmt = Stmt::new(
    "GetWorkspaceAgentDevcontainersByAgentID",
    // v2.30's devcontainer rows carry no sub-agent id.
    "SELECT id::text AS id, workspace_folder, config_path, name, NULL::text AS subagent_id \
     FROM workspace_agent_devcontainers WHERE workspace_agent_id = $1::uuid ORDER BY created_at, id",
);

const LIST_LOG_SOURCES: Stmt = Stmt::new(
    "GetWorkspaceAgentLogSourcesByAgentIDs",
    "SELECT id::text AS id, display_name::text AS display_name, icon \
     FROM workspace_agent_log_sources WHERE workspace_agent_id = $1::uuid ORDER BY created_at, id",
);

const UPDATE_LIFECYCLE: Stmt = Stmt::new(
    "UpdateWorkspaceAgentLifecycleStateByID",
    // coderd (agentapi/lifecycle.go) computes started_at and ready_at from the row it read before and writes them
    // back; the same rules inside the UPDATE need no read and cannot race another connection's report. `starting`
    // sets started_at and clears ready_at; the three end states of a start set started_at only if unset, and set
    // ready_at. coderd leaves updated_at alone here, and so does this.
    concat!(
        "UPDATE workspace_agents SET lifecycle_state = $2::workspace_agent_lifecycle_state, \
         started_at = CASE WHEN $2 = 'starting' THEN ",
        ts!("$3"),
        " WHEN $2 IN ('ready', 'start_timeout', 'start_error') THEN COALESCE(started_at, ",
        ts!("$3"),
        ") ELSE started_at END, \
         ready_at = CASE WHEN $2 = 'starting' THEN NULL \
         WHEN $2 IN ('ready', 'start_timeout', 'start_error') THEN ",
        ts!("$3"),
        " ELSE ready_at END \
         WHERE id = $1::uuid AND deleted = FALSE RETURNING ",
        micros!("started_at"),
        " AS started_at, ",
        micros!("ready_at"),
        " AS ready_at",
    ),
);

const UPDATE_STARTUP: Stmt = Stmt::new(
    "UpdateWorkspaceAgentStartupByID",
    "UPDATE workspace_agents SET version = $2, expanded_directory = $3, \
     subsystems = $4::text[]::workspace_agent_subsystem[], api_version = $5 \
     WHERE id = $1::uuid AND deleted = FALSE",
);

const APP_HEALTHS: Stmt = Stmt::new(
    "GetWorkspaceAppsByAgentID",
    "SELECT id::text, healthcheck_url, health::text FROM workspace_apps WHERE agent_id = $1::uuid",
);

const UPDATE_APP_HEALTHS: Stmt = Stmt::new(
    "UpdateWorkspaceAppHealthByID",
    // coderd runs one UPDATE per changed app, each on its own; one UPDATE over the pairs changes the same rows at
    // once (so all or none), and only apps of this agent.
    "UPDATE workspace_apps AS a SET health = v.health::workspace_app_health \
     FROM unnest($2::text[], $3::text[]) AS v(id, health) \
     WHERE a.id = v.id::uuid AND a.agent_id = $1::uuid",
);

const INSERT_APP_STATUS: Stmt = Stmt::new(
    "InsertWorkspaceAppStatus",
    // coderd's PATCH me/app-status runs GetWorkspaceAppByAgentIDAndSlug, GetLatestWorkspaceAppStatusByAppID and
    // InsertWorkspaceAppStatus one after the other; here they are one statement, whose snapshot gives the
    // previous status as it was before this insert. No row when the agent has no app with the slug.
    "WITH app AS (SELECT id FROM workspace_apps WHERE agent_id = $1::uuid AND slug = $2), \
     previous AS (SELECT s.state FROM workspace_app_statuses s, app WHERE s.app_id = app.id \
                  ORDER BY s.created_at DESC, s.id DESC LIMIT 1), \
     inserted AS (INSERT INTO workspace_app_statuses (id, created_at, workspace_id, agent_id, app_id, state, \
                  message, uri) \
                  SELECT $3::uuid, to_timestamp($4::float8 / 1e6), $5::uuid, $1::uuid, app.id, \
                  $6::workspace_app_status_state, $7, $8 FROM app RETURNING app_id) \
     SELECT inserted.app_id::text, (SELECT state::text FROM previous) FROM inserted",
);

const INSERT_EXTERNAL_LOG_SOURCE: Stmt = Stmt::new(
    "InsertWorkspaceAgentLogSources",
    // coderd inserts it and takes a primary-key violation as "already there"; inside a transaction a violation
    // would abort the rest, so the conflict is skipped instead. coderd answers an agent already marked overflowed
    // before making the source, hence the condition.
    "INSERT INTO workspace_agent_log_sources (workspace_agent_id, created_at, id, display_name, icon) \
     SELECT $1::uuid, to_timestamp($2::float8 / 1e6), $3::uuid, 'External', '/emojis/1f310.png' \
     WHERE EXISTS (SELECT 1 FROM workspace_agents WHERE id = $1::uuid AND NOT logs_overflowed) \
     ON CONFLICT (workspace_agent_id, id) DO NOTHING",
);

const INSERT_LOGS: Stmt = Stmt::new(
    "InsertWorkspaceAgentLogs",
    // coderd's statement adds the batch's length to logs_length and inserts the lines at once, and lets the
    // max_logs_length CHECK refuse a batch that would pass 1 MiB. This one refuses it in its WHERE instead (and at
    // the store's own limit, which is at most the CHECK's), so the transaction stays usable for the overflow flag,
    // and it also refuses once the agent is marked overflowed (coderd checks that flag on the row it read). The
    // first value is logs_length before this batch, NULL when refused; the second is the lowest id inserted.
    "WITH new_length AS ( \
       UPDATE workspace_agents SET logs_length = logs_length + $2 \
       WHERE id = $1::uuid AND deleted = FALSE AND logs_overflowed = FALSE AND logs_length + $2 <= $3 \
       RETURNING (logs_length - $2)::bigint AS before), \
     inserted AS ( \
       INSERT INTO workspace_agent_logs (agent_id, created_at, output, level, log_source_id) \
       SELECT $1::uuid, to_timestamp($4::float8 / 1e6), unnest($5::varchar(1024)[]), unnest($6::log_level[]), \
       $7::uuid FROM new_length RETURNING id) \
     SELECT (SELECT before FROM new_length), (SELECT min(id) FROM inserted)",
);

const SET_LOGS_OVERFLOWED: Stmt = Stmt::new(
    "UpdateWorkspaceAgentLogOverflowByID",
    // Only the first overflow flips the flag, so the caller knows whether to publish agt_logs_overflow.
    "UPDATE workspace_agents SET logs_overflowed = TRUE WHERE id = $1::uuid AND logs_overflowed = FALSE",
);

const INSERT_LOG_SOURCES: Stmt = Stmt::new(
    "InsertWorkspaceAgentLogSources",
    // coderd's multi-row shape; a source the agent already has is left as it is.
    "INSERT INTO workspace_agent_log_sources (workspace_agent_id, created_at, id, display_name, icon) \
     SELECT $1::uuid, to_timestamp($2::float8 / 1e6), unnest($3::text[])::uuid, unnest($4::varchar(127)[]), \
     unnest($5::text[]) \
     ON CONFLICT (workspace_agent_id, id) DO NOTHING",
);

const INSERT_SCRIPT_TIMING: Stmt = Stmt::new(
    "InsertWorkspaceAgentScriptTimings",
    // Tighter than coderd: the script must be one of this agent's.
    concat!(
        "INSERT INTO workspace_agent_script_timings (script_id, started_at, ended_at, exit_code, stage, status) \
         SELECT s.id, ",
        ts!("$3"),
        ", ",
        ts!("$4"),
        ", $5::int4, $6::workspace_agent_script_timing_stage, $7::workspace_agent_script_timing_status \
         FROM workspace_agent_scripts s WHERE s.id = $1::uuid AND s.workspace_agent_id = $2::uuid",
    ),
);

const UPSERT_CONNECTION_LOG: Stmt = Stmt::new(
    "UpsertConnectionLog",
    // coderd's query as it is. A disconnect seen first is stored already closed; a later one closes an open row
    // once; a connect after that changes nothing.
    "INSERT INTO connection_logs (id, connect_time, organization_id, workspace_owner_id, workspace_id, \
     workspace_name, agent_name, type, code, ip, user_agent, user_id, slug_or_port, connection_id, \
     disconnect_reason, disconnect_time) \
     VALUES ($1::uuid, to_timestamp($2::float8 / 1e6), $3::uuid, $4::uuid, $5::uuid, $6, $7, $8::connection_type, \
     $9::int4, $10::inet, NULL, NULL, NULL, $11::uuid, $12, \
     CASE WHEN $13::connection_status = 'disconnected' THEN to_timestamp($2::float8 / 1e6) ELSE NULL END) \
     ON CONFLICT (connection_id, workspace_id, agent_name) DO UPDATE SET \
     disconnect_time = CASE WHEN $13::connection_status = 'disconnected' \
       AND connection_logs.disconnect_time IS NULL THEN EXCLUDED.connect_time \
       ELSE connection_logs.disconnect_time END, \
     disconnect_reason = CASE WHEN $13::connection_status = 'disconnected' \
       AND connection_logs.disconnect_reason IS NULL THEN EXCLUDED.disconnect_reason \
       ELSE connection_logs.disconnect_reason END, \
     code = CASE WHEN $13::connection_status = 'disconnected' \
       AND connection_logs.code IS NULL THEN EXCLUDED.code ELSE connection_logs.code END",
);

const GET_MEMORY_MONITOR: Stmt = Stmt::new(
    "FetchMemoryResourceMonitorsByAgentID",
    concat!(
        "SELECT enabled, threshold::bigint AS threshold, state::text AS state, ",
        micros!("updated_at"),
        " AS updated_at, ",
        micros_or_zero!("debounced_until"),
        " AS debounced_until FROM workspace_agent_memory_resource_monitors WHERE agent_id = $1::uuid",
    ),
);

const GET_VOLUME_MONITORS: Stmt = Stmt::new(
    "FetchVolumesResourceMonitorsByAgentID",
    concat!(
        "SELECT path, enabled, threshold::bigint AS threshold, state::text AS state, ",
        micros!("updated_at"),
        " AS updated_at, ",
        micros_or_zero!("debounced_until"),
        " AS debounced_until FROM workspace_agent_volume_resource_monitors WHERE agent_id = $1::uuid ORDER BY path",
    ),
);

const INSERT_SUB_AGENT: Stmt = Stmt::new(
    "InsertWorkspaceAgent",
    // coderd's CreateSubAgent reads the parent and copies its resource, instance id, connection timeout,
    // troubleshooting URL and key scope into the child; reading them from the parent's row in the INSERT copies the
    // same values without the read. No row when the parent is deleted.
    concat!(
        "INSERT INTO workspace_agents (id, parent_id, created_at, updated_at, name, resource_id, auth_token, \
         auth_instance_id, architecture, environment_variables, operating_system, directory, instance_metadata, \
         resource_metadata, connection_timeout_seconds, troubleshooting_url, motd_file, display_apps, display_order, \
         api_key_scope) \
         SELECT $2::uuid, p.id, ",
        ts!("$3"),
        ", ",
        ts!("$3"),
        ", $4, p.resource_id, $5::uuid, p.auth_instance_id, $6, NULL, $7, $8, NULL, NULL, \
         p.connection_timeout_seconds, p.troubleshooting_url, '', $9::text[]::display_app[], 0, p.api_key_scope \
         FROM workspace_agents p WHERE p.id = $1::uuid AND p.deleted = FALSE",
    ),
);

const LIST_SUB_AGENTS: Stmt = Stmt::new(
    "GetWorkspaceAgentsByParentID",
    "SELECT id::text AS id, name::text AS name, auth_token::text AS auth_token FROM workspace_agents \
     WHERE parent_id = $1::uuid AND deleted = FALSE ORDER BY created_at, id",
);

const DELETE_SUB_AGENT: Stmt = Stmt::new(
    "DeleteWorkspaceSubAgentByID",
    // Tighter than coderd (any agent with a parent): only children of this agent.
    "UPDATE workspace_agents SET deleted = TRUE WHERE id = $1::uuid AND parent_id = $2::uuid AND deleted = FALSE",
);

const LOGS_AFTER: Stmt = Stmt::new(
    "GetWorkspaceAgentLogsAfter",
    concat!(
        "SELECT id, ",
        micros!("created_at"),
        " AS created_at, output::text AS output, level::text AS level, log_source_id::text AS log_source_id \
         FROM workspace_agent_logs WHERE agent_id = $1::uuid AND id > $2 ORDER BY id",
    ),
);

const LIST_SCRIPT_TIMINGS: Stmt = Stmt::new(
    "GetWorkspaceAgentScriptTimingsByAgentID",
    concat!(
        "SELECT t.script_id::text AS script_id, ",
        micros!("t.started_at"),
        " AS started_at, ",
        micros!("t.ended_at"),
        " AS ended_at, t.exit_code::bigint AS exit_code, t.stage::text AS stage, t.status::text AS status \
         FROM workspace_agent_script_timings t JOIN workspace_agent_scripts s ON s.id = t.script_id \
         WHERE s.workspace_agent_id = $1::uuid ORDER BY t.started_at, t.script_id",
    ),
);

const LIST_CONNECTION_LOGS: Stmt = Stmt::new(
    "GetConnectionLogsByWorkspaceAndAgentName",
    // connection_logs carry no agent id: the agent is its workspace and name. host() drops the /32 or /128 that
    // inet's text form adds.
    concat!(
        "SELECT connection_id::text AS connection_id, ",
        micros!("connect_time"),
        " AS connect_time, type::text AS type, code::bigint AS code, host(ip) AS ip, ",
        micros!("disconnect_time"),
        " AS disconnect_time, disconnect_reason \
         FROM connection_logs WHERE workspace_id = $1::uuid AND agent_name = $2 ORDER BY connect_time, id",
    ),
);

const UPDATE_SUB_AGENT: Stmt = Stmt::new(
    "UpdateWorkspaceAgentDisplayAppsAndDirectoryByID",
    // coderd v2.30 has no pre-provisioned children (its CreateSubAgentRequest has no id); this writes the two
    // columns coderd's InsertWorkspaceAgent gives a child, for a live child of this agent only.
    concat!(
        "UPDATE workspace_agents SET display_apps = $3::text[]::display_app[], \
         directory = CASE WHEN $4 = '' THEN directory ELSE $4 END, updated_at = ",
        ts!("$5"),
        " WHERE id = $1::uuid AND parent_id = $2::uuid AND deleted = FALSE \
         RETURNING id::text AS id, name::text AS name, auth_token::text AS auth_token",
    ),
);

const MARK_CONNECTED: Stmt = Stmt::new(
    "UpdateWorkspaceAgentConnectionByID",
    // coderd's connection monitor writes first_connected_at (the row's, or now on the first connection),
    // last_connected_at = now, its replica, disconnected_at as it read it, and updated_at; keeping the row's
    // first_connected_at and disconnected_at in the UPDATE writes the same without the read.
    concat!(
        "UPDATE workspace_agents SET first_connected_at = COALESCE(first_connected_at, ",
        ts!("$2"),
        "), last_connected_at = ",
        ts!("$2"),
        ", last_connected_replica_id = $3::uuid, updated_at = ",
        ts!("$2"),
        " WHERE id = $1::uuid AND deleted = FALSE RETURNING ",
        micros!("first_connected_at"),
        " AS first_connected_at, ",
        micros!("disconnected_at"),
        " AS disconnected_at",
    ),
);

const MARK_DISCONNECTED: Stmt = Stmt::new(
    "UpdateWorkspaceAgentConnectionByID",
    // coderd's monitor ends with the same UPDATE, disconnected_at = now and the other times as it last wrote them:
    // the row holds those (the heartbeat batcher only moves last_connected_at forward), so they are left alone.
    concat!(
        "UPDATE workspace_agents SET disconnected_at = ",
        ts!("$2"),
        ", updated_at = ",
        ts!("$2"),
        ", last_connected_replica_id = $3::uuid WHERE id = $1::uuid",
    ),
);

const GET_GIT_SSH_KEY: Stmt = Stmt::new(
    "GetGitSSHKey",
    concat!(
        "SELECT user_id::text AS user_id, ",
        micros!("created_at"),
        " AS created_at, ",
        micros!("updated_at"),
        " AS updated_at, private_key, public_key FROM gitsshkeys WHERE user_id = $1::uuid",
    ),
);

const INSERT_GIT_SSH_KEY: Stmt = Stmt::new(
    "InsertGitSSHKey",
    // coderd makes the key with the user; one made here for a user without one loses to a key stored meanwhile,
    // and the caller reads back whichever is stored.
    concat!(
        "INSERT INTO gitsshkeys (user_id, created_at, updated_at, private_key, public_key) VALUES ($1::uuid, ",
        ts!("$2"),
        ", ",
        ts!("$2"),
        ", $3, $4) ON CONFLICT (user_id) DO NOTHING",
    ),
);

/// coderd's `ActivityBumpWorkspace` (queries/activitybump.sql) as it is, for the one caller here, PATCH
/// me/app-status, which coderd calls with a zero `next_autostart`: the autostart branch is then never taken, and the
/// parameter is that zero time. The latest build of the workspace, if it is a finished `start` build with a deadline
/// of a template with an activity bump, moves its deadline to at least now + the bump, never past its max deadline,
/// once 5 % of the bump has elapsed; prebuilt workspaces are left to their reconciler.
const ACTIVITY_BUMP_WORKSPACE: Stmt = Stmt::new(
    "ActivityBumpWorkspace",
    "WITH latest AS ( \
       SELECT workspace_builds.id::uuid AS build_id, \
         workspace_builds.deadline::timestamp with time zone AS build_deadline, \
         workspace_builds.max_deadline::timestamp with time zone AS build_max_deadline, \
         workspace_builds.transition AS build_transition, \
         provisioner_jobs.completed_at::timestamp with time zone AS job_completed_at, \
         templates.activity_bump AS activity_bump, \
         (CASE WHEN NOW() + (templates.activity_bump / 1000 / 1000 / 1000 || ' seconds')::interval \
                 > $2::timestamptz AND $2::timestamptz > NOW() \
               THEN ($2::timestamptz - NOW()) + CASE WHEN templates.allow_user_autostop \
                 THEN (workspaces.ttl / 1000 / 1000 / 1000 || ' seconds')::interval \
                 ELSE (templates.default_ttl / 1000 / 1000 / 1000 || ' seconds')::interval END \
               ELSE (templates.activity_bump / 1000 / 1000 / 1000 || ' seconds')::interval END) AS ttl_interval \
       FROM workspace_builds \
       JOIN provisioner_jobs ON provisioner_jobs.id = workspace_builds.job_id \
       JOIN workspaces ON workspaces.id = workspace_builds.workspace_id \
       JOIN templates ON templates.id = workspaces.template_id \
       WHERE workspace_builds.workspace_id = $1::uuid \
         AND workspaces.owner_id != 'c42fdf75-3097-471c-8c33-fb52454d81c0'::uuid \
       ORDER BY workspace_builds.build_number DESC LIMIT 1) \
     UPDATE workspace_builds wb SET updated_at = NOW(), \
       deadline = CASE WHEN l.build_max_deadline = '0001-01-01 00:00:00+00' \
         THEN GREATEST(wb.deadline, NOW() + l.ttl_interval) \
         ELSE LEAST(GREATEST(wb.deadline, NOW() + l.ttl_interval), l.build_max_deadline) END \
     FROM latest l \
     WHERE wb.id = l.build_id AND l.job_completed_at IS NOT NULL AND l.activity_bump > 0 \
       AND l.build_transition = 'start' AND l.ttl_interval > '0 seconds'::interval \
       AND l.build_deadline != '0001-01-01 00:00:00+00' \
       AND l.build_deadline - (l.ttl_interval * 0.95) < NOW()",
);

/// Go's zero `time.Time`, what coderd passes as "no next autostart".
const GO_ZERO_TIME: &str = "0001-01-01 00:00:00+00";

impl CoderDb {
    /// Every row `stmt` reads for the scope's agent, whose id is the statement's one parameter.
    async fn agent_rows<T>(&self, a: &AgentScope, stmt: &Stmt) -> Result<Vec<T>, StoreError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        Ok(qa!(self.counters, PG, *stmt, T).bind(&a.agent_key).fetch_all(&self.pool).await?)
    }

    /// The row `stmt` reads for the scope's agent, if any, as [`CoderDb::agent_rows`].
    async fn agent_row<T>(&self, a: &AgentScope, stmt: &Stmt) -> Result<Option<T>, StoreError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        Ok(qa!(self.counters, PG, *stmt, T).bind(&a.agent_key).fetch_optional(&self.pool).await?)
    }
}

impl AgentSql for CoderDb {
    async fn agent_state(&self, a: &AgentScope) -> Result<Option<AgentState>, StoreError> {
        self.agent_row(a, &GET_STATE).await
    }

    async fn list_apps(&self, a: &AgentScope) -> Result<Vec<App>, StoreError> {
        self.agent_rows(a, &LIST_APPS).await
    }

    async fn list_scripts(&self, a: &AgentScope) -> Result<Vec<Script>, StoreError> {
        self.agent_rows(a, &LIST_SCRIPTS).await
    }

    async fn list_metadata(&self, a: &AgentScope) -> Result<Vec<Metadata>, StoreError> {
        self.agent_rows(a, &LIST_METADATA).await
    }

    async fn list_devcontainers(&self, a: &AgentScope) -> Result<Vec<Devcontainer>, StoreError> {
        self.agent_rows(a, &LIST_DEVCONTAINERS).await
    }

    async fn list_log_sources(&self, a: &AgentScope) -> Result<Vec<LogSource>, StoreError> {
        self.agent_rows(a, &LIST_LOG_SOURCES).await
    }

    async fn update_lifecycle(
        &self,
        a: &AgentScope,
        state: &str,
        changed_at: UnixMicros,
    ) -> Result<Option<LifecycleTimes>, StoreError> {
        Ok(qa!(self.counters, PG, UPDATE_LIFECYCLE, LifecycleTimes)
            .bind(&a.agent_key)
            .bind(state)
            .bind(changed_at)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn update_startup(
        &self,
        a: &AgentScope,
        version: &str,
        expanded_directory: &str,
        subsystems: &[String],
        api_version: &str,
    ) -> Result<(), StoreError> {
        q!(self.counters, PG, UPDATE_STARTUP)
            .bind(&a.agent_key)
            .bind(version)
            .bind(expanded_directory)
            .bind(subsystems)
            .bind(api_version)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn app_healths(&self, a: &AgentScope) -> Result<HashMap<Uuid, (String, String)>, StoreError> {
        let apps: Vec<(String, String, String)> = qa!(self.counters, PG, APP_HEALTHS, (String, String, String))
            .bind(&a.agent_key)
            .fetch_all(&self.pool)
            .await?;
        apps.into_iter()
            .map(|(i, url, health)| {
                let id = Uuid::parse_str(&i).map_err(|e| StoreError::corrupt("workspace_apps", e.to_string()))?;
                Ok((id, (url, health)))
            })
            .collect()
    }

    async fn update_app_healths(&self, a: &AgentScope, writes: &[(Uuid, &str)]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = writes.iter().map(|(app, _)| id(*app)).collect();
        let healths: Vec<&str> = writes.iter().map(|(_, health)| *health).collect();
        q!(self.counters, PG, UPDATE_APP_HEALTHS)
            .bind(&a.agent_key)
            .bind(ids)
            .bind(healths)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_app_status(
        &self,
        a: &AgentScope,
        slug: &str,
        state: &str,
        message: &str,
        uri: Option<&str>,
    ) -> Result<Option<AppStatusOutcome>, StoreError> {
        let status_id = Uuid::new_v4();
        let row: Option<(String, Option<String>)> = qa!(self.counters, PG, INSERT_APP_STATUS, (String, Option<String>))
            .bind(&a.agent_key)
            .bind(slug)
            .bind(id(status_id))
            .bind(now_micros())
            .bind(id(a.workspace_id()))
            .bind(state)
            .bind(message)
            // coderd stores an empty URI as NULL.
            .bind(uri.filter(|u| !u.is_empty()))
            .fetch_optional(&self.pool)
            .await?;
        let Some((app, previous_state)) = row else {
            return Ok(None);
        };
        let app_id = Uuid::parse_str(&app).map_err(|e| StoreError::corrupt("workspace_apps", e.to_string()))?;
        Ok(Some(AppStatusOutcome { app_id, status_id, previous_state }))
    }

    async fn insert_logs(&self, a: &AgentScope, batch: LogBatch<'_>) -> Result<InsertLogsOutcome, StoreError> {
        let LogBatch { source, ensure_external_source, lines, bytes, limit } = batch;
        let now = now_micros();
        let outputs: Vec<&str> = lines.iter().map(|(output, _)| output.as_str()).collect();
        let levels: Vec<&str> = lines.iter().map(|(_, level)| *level).collect();
        let mut tx = begin(&self.counters, PG, &self.pool).await?;
        if ensure_external_source {
            q!(self.counters, PG, INSERT_EXTERNAL_LOG_SOURCE)
                .bind(&a.agent_key)
                .bind(now)
                .bind(id(EXTERNAL_LOG_SOURCE_ID))
                .execute(&mut *tx)
                .await?;
        }
        let (before, first_id): (Option<i64>, Option<i64>) =
            qa!(self.counters, PG, INSERT_LOGS, (Option<i64>, Option<i64>))
                .bind(&a.agent_key)
                .bind(bytes)
                .bind(limit)
                .bind(now)
                .bind(&outputs)
                .bind(&levels)
                .bind(id(source))
                .fetch_one(&mut *tx)
                .await?;
        let Some(before) = before else {
            let r = q!(self.counters, PG, SET_LOGS_OVERFLOWED).bind(&a.agent_key).execute(&mut *tx).await?;
            commit(&self.counters, tx).await?;
            return Ok(InsertLogsOutcome::LimitExceeded { newly: r.rows_affected() > 0 });
        };
        commit(&self.counters, tx).await?;
        match first_id {
            Some(first_id) => Ok(InsertLogsOutcome::Inserted { first_id, count: lines.len(), first_logs: before == 0 }),
            // Only an empty batch inserts nothing, and the scope sends none.
            None => Ok(InsertLogsOutcome::Empty),
        }
    }

    async fn upsert_log_sources(&self, a: &AgentScope, sources: &[LogSource]) -> Result<(), StoreError> {
        if sources.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = sources.iter().map(|s| id(s.id)).collect();
        let names: Vec<&str> = sources.iter().map(|s| s.display_name.as_str()).collect();
        let icons: Vec<&str> = sources.iter().map(|s| s.icon.as_str()).collect();
        q!(self.counters, PG, INSERT_LOG_SOURCES)
            .bind(&a.agent_key)
            .bind(now_micros())
            .bind(ids)
            .bind(names)
            .bind(icons)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_script_timing(&self, a: &AgentScope, t: &ScriptTiming) -> Result<bool, StoreError> {
        let n = q!(self.counters, PG, INSERT_SCRIPT_TIMING)
            .bind(id(t.script_id))
            .bind(&a.agent_key)
            .bind(t.started_at)
            .bind(t.ended_at)
            .bind(t.exit_code)
            .bind(&t.stage)
            .bind(&t.status)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Written as enterprise coderd's database backend writes it. AGPL coderd's connection logger discards the
    /// event, but v2.30's schema has the table either way, and the rows are what an enterprise deployment's
    /// dashboard reads.
    async fn insert_connection_log(
        &self,
        a: &AgentScope,
        ev: &ConnectionEvent,
        ip: Option<&str>,
    ) -> Result<(), StoreError> {
        let agent = a.agent();
        // coderd stores a status code for disconnects only, and a reason whenever the agent sent a non-empty one.
        let (status, code) =
            if ev.connect { ("connected", None) } else { ("disconnected", Some(ev.code.unwrap_or(0))) };
        let reason = ev.disconnect_reason.as_deref().filter(|r| !r.is_empty());
        q!(self.counters, PG, UPSERT_CONNECTION_LOG)
            .bind(id(Uuid::new_v4()))
            .bind(ev.time)
            .bind(id(agent.organization_id))
            .bind(id(agent.owner_id))
            .bind(id(agent.workspace_id))
            .bind(&agent.workspace_name)
            .bind(&agent.name)
            .bind(&ev.kind)
            .bind(code)
            .bind(ip)
            .bind(id(ev.connection_id))
            .bind(reason)
            .bind(status)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn memory_monitor(&self, a: &AgentScope) -> Result<Option<MemoryMonitor>, StoreError> {
        self.agent_row(a, &GET_MEMORY_MONITOR).await
    }

    async fn volume_monitors(&self, a: &AgentScope) -> Result<Vec<VolumeMonitor>, StoreError> {
        self.agent_rows(a, &GET_VOLUME_MONITORS).await
    }

    async fn create_sub_agent(&self, a: &AgentScope, sub: &SubAgent, new: &NewSubAgent) -> Result<(), StoreError> {
        let n = q!(self.counters, PG, INSERT_SUB_AGENT)
            .bind(&a.agent_key)
            .bind(id(sub.id))
            .bind(now_micros())
            .bind(&new.name)
            .bind(id(sub.auth_token))
            .bind(&new.architecture)
            .bind(&new.operating_system)
            .bind(&new.directory)
            .bind(&new.display_apps)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::Invalid("agent is deleted".into()));
        }
        Ok(())
    }

    async fn list_sub_agents(&self, a: &AgentScope) -> Result<Vec<SubAgent>, StoreError> {
        self.agent_rows(a, &LIST_SUB_AGENTS).await
    }

    /// v2.30 keeps no context rows, so soft-deleting the child is all there is.
    async fn delete_sub_agent(&self, a: &AgentScope, sub_agent_id: Uuid) -> Result<bool, StoreError> {
        let n = q!(self.counters, PG, DELETE_SUB_AGENT)
            .bind(id(sub_agent_id))
            .bind(&a.agent_key)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// coderd v2.30 stores no boundary log: its ReportBoundaryLogs writes each request to its own log and counts
    /// them in the replica's in-memory usage tracker, and answers success. Nothing is written here either, and the
    /// call succeeds as coderd's does; there are no sessions, so none belongs to another agent.
    async fn insert_boundary_logs(
        &self,
        _a: &AgentScope,
        _session_id: Uuid,
        _confined_process_name: &str,
        _logs: &[BoundaryLog],
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn push_context_state(&self, _a: &AgentScope, _st: &ContextState) -> Result<bool, StoreError> {
        Err(StoreError::NotInCoderSchema("workspace agent context state (coderd v2.30 has no PushContextState)"))
    }

    async fn logs_after(&self, a: &AgentScope, after_id: i64) -> Result<Vec<AgentLog>, StoreError> {
        Ok(qa!(self.counters, PG, LOGS_AFTER, AgentLog).bind(&a.agent_key).bind(after_id).fetch_all(&self.pool).await?)
    }

    async fn script_timings(&self, a: &AgentScope) -> Result<Vec<ScriptTiming>, StoreError> {
        self.agent_rows(a, &LIST_SCRIPT_TIMINGS).await
    }

    async fn connection_logs(&self, a: &AgentScope) -> Result<Vec<ConnectionLogEntry>, StoreError> {
        Ok(qa!(self.counters, PG, LIST_CONNECTION_LOGS, ConnectionLogEntry)
            .bind(id(a.workspace_id()))
            .bind(a.agent_name())
            .fetch_all(&self.pool)
            .await?)
    }

    async fn update_sub_agent(
        &self,
        a: &AgentScope,
        sub_agent_id: Uuid,
        display_apps: &[String],
        directory: &str,
    ) -> Result<Option<SubAgent>, StoreError> {
        Ok(qa!(self.counters, PG, UPDATE_SUB_AGENT, SubAgent)
            .bind(id(sub_agent_id))
            .bind(&a.agent_key)
            .bind(display_apps)
            .bind(directory)
            .bind(now_micros())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// coderd v2.30 records the API version with UpdateStartup only, never at connection, so `_api_version` is not
    /// written.
    async fn mark_connected(
        &self,
        a: &AgentScope,
        replica_id: Uuid,
        _api_version: &str,
    ) -> Result<Option<ConnectionTimes>, StoreError> {
        Ok(qa!(self.counters, PG, MARK_CONNECTED, ConnectionTimes)
            .bind(&a.agent_key)
            .bind(now_micros())
            .bind(id(replica_id))
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn mark_disconnected(&self, a: &AgentScope, replica_id: Uuid) -> Result<(), StoreError> {
        q!(self.counters, PG, MARK_DISCONNECTED)
            .bind(&a.agent_key)
            .bind(now_micros())
            .bind(id(replica_id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn owner_git_ssh_key(&self, a: &AgentScope) -> Result<Option<GitSshKey>, StoreError> {
        Ok(qa!(self.counters, PG, GET_GIT_SSH_KEY, GitSshKey).bind(id(a.owner_id())).fetch_optional(&self.pool).await?)
    }

    async fn insert_owner_git_ssh_key(
        &self,
        a: &AgentScope,
        private_key: &str,
        public_key: &str,
    ) -> Result<GitSshKey, StoreError> {
        let owner = id(a.owner_id());
        q!(self.counters, PG, INSERT_GIT_SSH_KEY)
            .bind(&owner)
            .bind(now_micros())
            .bind(private_key)
            .bind(public_key)
            .execute(&self.pool)
            .await?;
        // A statement of its own, so it sees a key another connection committed after the INSERT's snapshot.
        let row = qa!(self.counters, PG, GET_GIT_SSH_KEY, GitSshKey).bind(&owner).fetch_optional(&self.pool).await?;
        // Inserted or already there; only the user's deletion in between could take it away.
        row.ok_or_else(|| StoreError::Invalid(format!("user {} has no git SSH key after inserting one", a.owner_id())))
    }

    async fn bump_workspace_activity(&self, a: &AgentScope) -> Result<(), StoreError> {
        q!(self.counters, PG, ACTIVITY_BUMP_WORKSPACE)
            .bind(id(a.workspace_id()))
            .bind(GO_ZERO_TIME)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
