-- agentwire schema, SQLite flavour.
--
-- Table and column names follow Coder's coderd/database/dump.sql where the agent endpoint and the
-- metrics snapshotter use them. Types are deliberately engine-neutral (see the crate doc):
--   * UUIDs are TEXT holding the lowercase hyphenated form;
--   * timestamps are BIGINT unix microseconds (Postgres' own precision, Coder's dbtime.Now());
--   * Coder's enums are TEXT with CHECK constraints, enum arrays are TEXT holding a JSON array;
--   * every integer is BIGINT so one Rust type (i64) decodes on both engines.
-- The only DDL difference from migrations/postgres is the serial id of workspace_agent_logs
-- (INTEGER PRIMARY KEY AUTOINCREMENT, so ids are never reused after a delete).

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    username TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    avatar_url TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'active',
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    is_system BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX idx_users_username ON users (username) WHERE deleted = FALSE;

CREATE TABLE templates (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    name TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    active_version_id TEXT,
    default_ttl BIGINT NOT NULL DEFAULT 0,
    activity_bump BIGINT NOT NULL DEFAULT 3600000000000,
    allow_user_autostop BOOLEAN NOT NULL DEFAULT TRUE,
    max_port_sharing_level TEXT NOT NULL DEFAULT 'owner',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX idx_templates_organization_id ON templates (organization_id);

CREATE TABLE provisioner_jobs (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'workspace_build',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    canceled_at BIGINT,
    completed_at BIGINT,
    error TEXT,
    error_code TEXT
);

CREATE TABLE template_versions (
    id TEXT PRIMARY KEY,
    template_id TEXT REFERENCES templates (id),
    organization_id TEXT NOT NULL,
    name TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES provisioner_jobs (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX idx_template_versions_template_id ON template_versions (template_id);

CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users (id),
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    template_id TEXT NOT NULL REFERENCES templates (id),
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    name TEXT NOT NULL,
    autostart_schedule TEXT,
    ttl BIGINT,
    last_used_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX idx_workspaces_owner_id ON workspaces (owner_id);
CREATE INDEX idx_workspaces_template_id ON workspaces (template_id);

CREATE TABLE workspace_builds (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    template_version_id TEXT NOT NULL REFERENCES template_versions (id),
    build_number BIGINT NOT NULL,
    transition TEXT NOT NULL CHECK (transition IN ('start', 'stop', 'delete')),
    initiator_id TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES provisioner_jobs (id),
    deadline BIGINT NOT NULL DEFAULT 0,
    max_deadline BIGINT NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT 'initiator',
    UNIQUE (workspace_id, build_number)
);
CREATE UNIQUE INDEX idx_workspace_builds_job_id ON workspace_builds (job_id);

CREATE TABLE workspace_resources (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    job_id TEXT NOT NULL REFERENCES provisioner_jobs (id),
    transition TEXT NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL
);
CREATE INDEX idx_workspace_resources_job_id ON workspace_resources (job_id);

CREATE TABLE workspace_agents (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    name TEXT NOT NULL,
    first_connected_at BIGINT,
    last_connected_at BIGINT,
    disconnected_at BIGINT,
    last_connected_replica_id TEXT,
    resource_id TEXT NOT NULL REFERENCES workspace_resources (id) ON DELETE CASCADE,
    auth_token TEXT NOT NULL,
    auth_instance_id TEXT,
    architecture TEXT NOT NULL DEFAULT '',
    operating_system TEXT NOT NULL DEFAULT '',
    environment_variables TEXT,
    directory TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    connection_timeout_seconds BIGINT NOT NULL DEFAULT 0,
    troubleshooting_url TEXT NOT NULL DEFAULT '',
    motd_file TEXT NOT NULL DEFAULT '',
    lifecycle_state TEXT NOT NULL DEFAULT 'created' CHECK (lifecycle_state IN (
        'created', 'starting', 'start_timeout', 'start_error', 'ready',
        'shutting_down', 'shutdown_timeout', 'shutdown_error', 'off')),
    expanded_directory TEXT NOT NULL DEFAULT '',
    logs_length BIGINT NOT NULL DEFAULT 0,
    logs_overflowed BOOLEAN NOT NULL DEFAULT FALSE,
    started_at BIGINT,
    ready_at BIGINT,
    subsystems TEXT NOT NULL DEFAULT '[]' CHECK (subsystems NOT LIKE '%"none"%'),
    display_apps TEXT NOT NULL DEFAULT '[]',
    api_version TEXT NOT NULL DEFAULT '',
    display_order BIGINT NOT NULL DEFAULT 0,
    parent_id TEXT REFERENCES workspace_agents (id),
    api_key_scope TEXT NOT NULL DEFAULT 'all' CHECK (api_key_scope IN ('all', 'no_user_data')),
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    -- Coder's name: the hard ceiling on a single agent's stored log bytes (1 MiB).
    CONSTRAINT max_logs_length CHECK (logs_length <= 1048576)
);
-- The session layer's one lookup: resolve_agent_by_token.
CREATE UNIQUE INDEX idx_workspace_agents_auth_token ON workspace_agents (auth_token);
CREATE INDEX idx_workspace_agents_resource_id ON workspace_agents (resource_id);
CREATE INDEX idx_workspace_agents_parent_id ON workspace_agents (parent_id) WHERE deleted = FALSE;

CREATE TABLE workspace_apps (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    slug TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    icon TEXT NOT NULL DEFAULT '',
    command TEXT,
    url TEXT,
    healthcheck_url TEXT NOT NULL DEFAULT '',
    healthcheck_interval BIGINT NOT NULL DEFAULT 0,
    healthcheck_threshold BIGINT NOT NULL DEFAULT 0,
    health TEXT NOT NULL DEFAULT 'disabled' CHECK (health IN ('disabled', 'initializing', 'healthy', 'unhealthy')),
    subdomain BOOLEAN NOT NULL DEFAULT FALSE,
    sharing_level TEXT NOT NULL DEFAULT 'owner' CHECK (sharing_level IN ('owner', 'authenticated', 'organization', 'public')),
    external BOOLEAN NOT NULL DEFAULT FALSE,
    display_order BIGINT NOT NULL DEFAULT 0,
    hidden BOOLEAN NOT NULL DEFAULT FALSE,
    open_in TEXT NOT NULL DEFAULT 'slim-window' CHECK (open_in IN ('tab', 'window', 'slim-window')),
    display_group TEXT,
    tooltip TEXT NOT NULL DEFAULT '',
    UNIQUE (agent_id, slug)
);

CREATE TABLE workspace_app_statuses (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    app_id TEXT NOT NULL REFERENCES workspace_apps (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('working', 'complete', 'failure', 'idle')),
    message TEXT NOT NULL,
    uri TEXT
);
CREATE INDEX idx_workspace_app_statuses_app_id_created_at ON workspace_app_statuses (app_id, created_at DESC);
CREATE INDEX idx_workspace_app_statuses_workspace_id_created_at ON workspace_app_statuses (workspace_id, created_at DESC);

CREATE TABLE workspace_agent_metadata (
    workspace_agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    key TEXT NOT NULL,
    script TEXT NOT NULL,
    value TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    timeout BIGINT NOT NULL,
    interval BIGINT NOT NULL,
    collected_at BIGINT NOT NULL DEFAULT 0,
    display_order BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_agent_id, key)
);

CREATE TABLE workspace_agent_stats (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    template_id TEXT NOT NULL,
    connections_by_proto TEXT NOT NULL DEFAULT '{}',
    connection_count BIGINT NOT NULL DEFAULT 0,
    rx_packets BIGINT NOT NULL DEFAULT 0,
    rx_bytes BIGINT NOT NULL DEFAULT 0,
    tx_packets BIGINT NOT NULL DEFAULT 0,
    tx_bytes BIGINT NOT NULL DEFAULT 0,
    connection_median_latency_ms DOUBLE PRECISION NOT NULL DEFAULT -1,
    session_count_vscode BIGINT NOT NULL DEFAULT 0,
    session_count_jetbrains BIGINT NOT NULL DEFAULT 0,
    session_count_reconnecting_pty BIGINT NOT NULL DEFAULT 0,
    session_count_ssh BIGINT NOT NULL DEFAULT 0,
    usage BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX idx_workspace_agent_stats_created_at ON workspace_agent_stats (created_at);
CREATE INDEX idx_workspace_agent_stats_user_id ON workspace_agent_stats (user_id);
CREATE INDEX idx_workspace_agent_stats_agent_id_created_at ON workspace_agent_stats (agent_id, created_at);
CREATE INDEX idx_workspace_agent_stats_template_id_created_at ON workspace_agent_stats (template_id, created_at, user_id)
    WHERE connection_count > 0;

CREATE TABLE workspace_agent_log_sources (
    workspace_agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    display_name TEXT NOT NULL,
    icon TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (workspace_agent_id, id)
);

CREATE TABLE workspace_agent_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    output TEXT NOT NULL,
    level TEXT NOT NULL DEFAULT 'info' CHECK (level IN ('trace', 'debug', 'info', 'warn', 'error')),
    log_source_id TEXT NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000'
);
CREATE INDEX idx_workspace_agent_logs_agent_id_id ON workspace_agent_logs (agent_id, id);

CREATE TABLE workspace_agent_scripts (
    id TEXT PRIMARY KEY,
    workspace_agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    log_source_id TEXT NOT NULL,
    log_path TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    script TEXT NOT NULL,
    cron TEXT NOT NULL DEFAULT '',
    start_blocks_login BOOLEAN NOT NULL DEFAULT FALSE,
    run_on_start BOOLEAN NOT NULL DEFAULT FALSE,
    run_on_stop BOOLEAN NOT NULL DEFAULT FALSE,
    timeout_seconds BIGINT NOT NULL DEFAULT 0,
    display_name TEXT NOT NULL DEFAULT ''
);
CREATE INDEX idx_workspace_agent_scripts_agent_id ON workspace_agent_scripts (workspace_agent_id);

CREATE TABLE workspace_agent_script_timings (
    script_id TEXT NOT NULL REFERENCES workspace_agent_scripts (id) ON DELETE CASCADE,
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    exit_code BIGINT NOT NULL,
    stage TEXT NOT NULL CHECK (stage IN ('start', 'stop', 'cron')),
    status TEXT NOT NULL CHECK (status IN ('ok', 'exit_failure', 'timed_out', 'pipes_left_open')),
    UNIQUE (script_id, started_at)
);

CREATE TABLE workspace_agent_devcontainers (
    id TEXT PRIMARY KEY,
    workspace_agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    workspace_folder TEXT NOT NULL,
    config_path TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL,
    subagent_id TEXT
);
CREATE INDEX idx_workspace_agent_devcontainers_agent_id ON workspace_agent_devcontainers (workspace_agent_id, created_at, id);

CREATE TABLE workspace_agent_memory_resource_monitors (
    agent_id TEXT PRIMARY KEY REFERENCES workspace_agents (id) ON DELETE CASCADE,
    enabled BOOLEAN NOT NULL,
    threshold BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    state TEXT NOT NULL DEFAULT 'OK' CHECK (state IN ('OK', 'NOK')),
    debounced_until BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE workspace_agent_volume_resource_monitors (
    agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    threshold BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    state TEXT NOT NULL DEFAULT 'OK' CHECK (state IN ('OK', 'NOK')),
    debounced_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (agent_id, path)
);

CREATE TABLE connection_logs (
    id TEXT PRIMARY KEY,
    connect_time BIGINT NOT NULL,
    organization_id TEXT NOT NULL,
    workspace_owner_id TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    workspace_name TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('ssh', 'vscode', 'jetbrains', 'reconnecting_pty', 'workspace_app', 'port_forwarding')),
    code BIGINT,
    ip TEXT,
    user_agent TEXT,
    user_id TEXT,
    slug_or_port TEXT,
    connection_id TEXT,
    disconnect_time BIGINT,
    disconnect_reason TEXT
);
CREATE UNIQUE INDEX idx_connection_logs_connection_id_workspace_id_agent_name
    ON connection_logs (connection_id, workspace_id, agent_name);
CREATE INDEX idx_connection_logs_connect_time ON connection_logs (connect_time DESC);
CREATE INDEX idx_connection_logs_organization_id ON connection_logs (organization_id);
CREATE INDEX idx_connection_logs_workspace_id ON connection_logs (workspace_id);
CREATE INDEX idx_connection_logs_workspace_owner_id ON connection_logs (workspace_owner_id);

-- Deployment-wide key/value settings: announcement banners, the service banner and the DERP map
-- (all stored as JSON text), as Coder's site_configs.
CREATE TABLE site_configs (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE boundary_sessions (
    id TEXT PRIMARY KEY,
    workspace_agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    owner_id TEXT NOT NULL,
    confined_process_name TEXT NOT NULL DEFAULT '',
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX idx_boundary_sessions_agent_id ON boundary_sessions (workspace_agent_id);

CREATE TABLE boundary_logs (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES boundary_sessions (id) ON DELETE CASCADE,
    sequence_number BIGINT NOT NULL CHECK (sequence_number >= 0),
    captured_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    proto TEXT NOT NULL,
    method TEXT NOT NULL,
    detail TEXT NOT NULL,
    matched_rule TEXT,
    owner_id TEXT NOT NULL
);
CREATE INDEX idx_boundary_logs_session_id ON boundary_logs (session_id, sequence_number);

CREATE TABLE workspace_agent_context_snapshots (
    workspace_agent_id TEXT PRIMARY KEY REFERENCES workspace_agents (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    aggregate_hash TEXT NOT NULL DEFAULT '',
    snapshot_error TEXT NOT NULL DEFAULT '',
    received_at BIGINT NOT NULL
);

CREATE TABLE workspace_agent_context_resources (
    workspace_agent_id TEXT NOT NULL REFERENCES workspace_agents (id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    body_kind TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,
    content_hash TEXT NOT NULL DEFAULT '',
    size_bytes BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    source_path TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_agent_id, source)
);
