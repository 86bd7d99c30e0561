//! Rows and arguments the store exchanges with the server.
//!
//! Times are `i64` unix **microseconds** ([`UnixMicros`]); ids are [`Uuid`]s (stored as TEXT).

use std::fmt;

use sqlx::FromRow;
use uuid::Uuid;

/// Unix time in microseconds: Postgres' precision and Coder's `dbtime.Now()`.
pub type UnixMicros = i64;

/// Current time in unix microseconds (the server's clock).
pub fn now_micros() -> UnixMicros {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        // A clock before 1970 is a broken host; clamp rather than panic.
        Err(_) => 0,
    }
}

/// Decode helper for nullable UUID columns stored as TEXT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NullableUuid(pub Option<Uuid>);

impl<DB: sqlx::Database> sqlx::Type<DB> for NullableUuid
where
    String: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as sqlx::Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for NullableUuid
where
    Option<String>: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match <Option<String> as sqlx::Decode<'r, DB>>::decode(value)? {
            None => Ok(NullableUuid(None)),
            Some(s) => Ok(NullableUuid(Some(Uuid::parse_str(&s)?))),
        }
    }
}

impl From<NullableUuid> for Option<Uuid> {
    fn from(v: NullableUuid) -> Self {
        v.0
    }
}

/// Store a UUID as TEXT: lowercase, hyphenated.
pub(crate) fn id(u: Uuid) -> String {
    u.hyphenated().to_string()
}

/// Private marker: a [`ResolvedAgent`] can only come out of `resolve_agent_by_token`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sealed;

/// Everything the session layer learns from the agent's token in **one** query: the agent row,
/// its build, workspace, owner and template. The token itself is not carried.
#[derive(Clone, FromRow)]
#[non_exhaustive]
pub struct ResolvedAgent {
    /// `workspace_agents.id`.
    #[sqlx(try_from = "String")]
    pub id: Uuid,
    /// Agent name.
    pub name: String,
    /// `workspace_resources.id` the agent belongs to.
    #[sqlx(try_from = "String")]
    pub resource_id: Uuid,
    /// Parent agent for sub-agents (devcontainers).
    #[sqlx(try_from = "NullableUuid")]
    pub parent_id: Option<Uuid>,
    /// Working directory for the manifest.
    pub directory: String,
    /// Set by UpdateStartup.
    pub expanded_directory: String,
    /// JSON object of environment variables, or `None`.
    pub environment_variables: Option<String>,
    /// Manifest `motd_path`.
    pub motd_file: String,
    /// Troubleshooting URL.
    pub troubleshooting_url: String,
    /// 0 = no timeout.
    pub connection_timeout_seconds: i64,
    /// CPU architecture reported at build time.
    pub architecture: String,
    /// OS reported at build time.
    pub operating_system: String,
    /// Agent version, set by UpdateStartup.
    pub version: String,
    /// Negotiated API version stored by UpdateStartup / connect.
    pub api_version: String,
    /// Coder's lifecycle enum, lower snake case.
    pub lifecycle_state: String,
    /// Lifecycle timestamps.
    pub started_at: Option<UnixMicros>,
    /// Lifecycle timestamps.
    pub ready_at: Option<UnixMicros>,
    /// Bytes of logs stored so far.
    pub logs_length: i64,
    /// Set once the log limit was hit.
    pub logs_overflowed: bool,
    /// JSON array of display apps.
    pub display_apps: String,
    /// JSON array of subsystems.
    pub subsystems: String,
    /// `all` or `no_user_data`.
    pub api_key_scope: String,
    /// Connection bookkeeping.
    pub first_connected_at: Option<UnixMicros>,
    /// Creation time of the agent row.
    pub created_at: UnixMicros,
    /// Display order.
    pub display_order: i64,
    /// Workspace.
    #[sqlx(try_from = "String")]
    pub workspace_id: Uuid,
    /// Workspace name.
    pub workspace_name: String,
    /// Organization of the workspace.
    #[sqlx(try_from = "String")]
    pub organization_id: Uuid,
    /// Cron schedule, if any.
    pub autostart_schedule: Option<String>,
    /// Workspace owner.
    #[sqlx(try_from = "String")]
    pub owner_id: Uuid,
    /// Owner's username.
    pub owner_username: String,
    /// Template.
    #[sqlx(try_from = "String")]
    pub template_id: Uuid,
    /// Template name.
    pub template_name: String,
    /// The build the agent belongs to.
    #[sqlx(try_from = "String")]
    pub build_id: Uuid,
    /// Its build number.
    pub build_number: i64,
    /// `start`, `stop` or `delete`.
    pub build_transition: String,
    /// Template version of that build.
    #[sqlx(try_from = "String")]
    pub template_version_id: Uuid,
    /// Whether that build is the workspace's latest.
    pub is_latest_build: bool,
    /// Coder's shutdown exception: not the latest, but the next build is a `stop` still pending or
    /// running, so the agent may connect to report its shutdown.
    pub in_shutdown_case: bool,
    #[sqlx(skip)]
    pub(crate) _sealed: Sealed,
}

impl fmt::Debug for ResolvedAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedAgent")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("workspace_id", &self.workspace_id)
            .field("workspace_name", &self.workspace_name)
            .field("owner_username", &self.owner_username)
            .field("build_number", &self.build_number)
            .field("is_latest_build", &self.is_latest_build)
            .finish_non_exhaustive()
    }
}

/// The mutable part of the agent's own row, re-read through [`crate::AgentScope::state`].
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct AgentState {
    /// Lifecycle enum.
    pub lifecycle_state: String,
    /// Lifecycle timestamps.
    pub started_at: Option<UnixMicros>,
    /// Lifecycle timestamps.
    pub ready_at: Option<UnixMicros>,
    /// Bytes of logs stored so far.
    pub logs_length: i64,
    /// Set once the log limit was hit.
    pub logs_overflowed: bool,
    /// Agent version.
    pub version: String,
    /// Expanded directory.
    pub expanded_directory: String,
    /// JSON array.
    pub subsystems: String,
    /// Negotiated API version.
    pub api_version: String,
    /// Connection bookkeeping.
    pub first_connected_at: Option<UnixMicros>,
    /// Connection bookkeeping.
    pub last_connected_at: Option<UnixMicros>,
    /// Connection bookkeeping.
    pub disconnected_at: Option<UnixMicros>,
    /// Replica that last served the agent.
    #[sqlx(try_from = "NullableUuid")]
    pub last_connected_replica_id: Option<Uuid>,
}

/// `workspace_apps` row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct App {
    #[sqlx(try_from = "String")]
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub icon: String,
    pub command: Option<String>,
    pub url: Option<String>,
    pub healthcheck_url: String,
    pub healthcheck_interval: i64,
    pub healthcheck_threshold: i64,
    pub health: String,
    pub subdomain: bool,
    pub sharing_level: String,
    pub external: bool,
    pub display_order: i64,
    pub hidden: bool,
    pub open_in: String,
    pub display_group: Option<String>,
    pub tooltip: String,
}

/// `workspace_agent_scripts` row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Script {
    #[sqlx(try_from = "String")]
    pub id: Uuid,
    #[sqlx(try_from = "String")]
    pub log_source_id: Uuid,
    pub log_path: String,
    pub script: String,
    pub cron: String,
    pub start_blocks_login: bool,
    pub run_on_start: bool,
    pub run_on_stop: bool,
    pub timeout_seconds: i64,
    pub display_name: String,
}

/// `workspace_agent_metadata` row: description and latest value.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Metadata {
    pub key: String,
    pub display_name: String,
    pub script: String,
    pub value: String,
    pub error: String,
    /// Nanoseconds, as Coder stores them.
    pub timeout: i64,
    /// Nanoseconds, as Coder stores them.
    pub interval: i64,
    pub collected_at: UnixMicros,
    pub display_order: i64,
}

/// `workspace_agent_devcontainers` row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Devcontainer {
    #[sqlx(try_from = "String")]
    pub id: Uuid,
    pub workspace_folder: String,
    pub config_path: String,
    pub name: String,
    #[sqlx(try_from = "NullableUuid")]
    pub subagent_id: Option<Uuid>,
}

/// `workspace_agent_log_sources` row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct LogSource {
    #[sqlx(try_from = "String")]
    pub id: Uuid,
    pub display_name: String,
    pub icon: String,
}

/// `gitsshkeys` row: a user's SSH key pair for `coder gitssh`, OpenSSH private key and `authorized_keys` public key.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct GitSshKey {
    #[sqlx(try_from = "String")]
    pub user_id: Uuid,
    pub created_at: UnixMicros,
    pub updated_at: UnixMicros,
    pub private_key: String,
    pub public_key: String,
}

/// One log line to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The line's level.
    pub level: crate::LogLevel,
    /// The text; NULs are replaced and the stored line is cut to `max_log_line_chars`.
    pub output: String,
}

/// Result of [`crate::AgentScope::insert_logs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertLogsOutcome {
    /// Nothing to insert.
    Empty,
    /// Lines stored. `first_id - 1` is the `created_after` to publish on `agent-logs:<agent>`;
    /// `first_logs` is true when the agent had no logs before (Coder's `agt_first_logs`).
    Inserted {
        /// Id of the first inserted row.
        first_id: i64,
        /// Rows inserted.
        count: usize,
        /// The agent's `logs_length` was 0 before this call.
        first_logs: bool,
    },
    /// The agent is (now) over its log limit; nothing stored. `newly` is true when this call
    /// set `logs_overflowed` (publish `agt_logs_overflow` then).
    LimitExceeded {
        /// This call flipped `logs_overflowed`.
        newly: bool,
    },
}

/// Result of [`crate::AgentScope::batch_update_app_healths`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppHealthOutcome {
    /// Apps whose health changed (and was written).
    pub changed: Vec<Uuid>,
    /// Ids that are not apps of this agent. If non-empty, nothing was written.
    pub unknown: Vec<Uuid>,
    /// Apps of this agent without a healthcheck URL. If non-empty, nothing was written.
    pub no_healthcheck: Vec<Uuid>,
}

/// Result of [`crate::AgentScope::insert_app_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStatusOutcome {
    /// The app the slug named.
    pub app_id: Uuid,
    /// The new status row.
    pub status_id: Uuid,
    /// State of the app's previous status, if any (for Coder's activity-bump rule).
    pub previous_state: Option<String>,
}

/// One metadata value reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataUpdate {
    /// Key (must already exist to have any effect, as in Coder).
    pub key: String,
    /// Value (already capped by the caller).
    pub value: String,
    /// Error text (already capped by the caller).
    pub error: String,
}

/// How many of a batch of enqueued items were accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// Items queued.
    pub accepted: usize,
    /// Items dropped because the batcher's queue was full (or it is shut down).
    pub dropped: usize,
}

/// One stats report (Coder's `agentproto.Stats` scalars).
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct StatsReport {
    /// JSON object `{"proto": count}`.
    pub connections_by_proto: String,
    pub connection_count: i64,
    pub rx_packets: i64,
    pub rx_bytes: i64,
    pub tx_packets: i64,
    pub tx_bytes: i64,
    pub connection_median_latency_ms: f64,
    pub session_count_vscode: i64,
    pub session_count_jetbrains: i64,
    pub session_count_reconnecting_pty: i64,
    pub session_count_ssh: i64,
    pub usage: bool,
}

/// A script timing (ScriptCompleted).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
#[allow(missing_docs)]
pub struct ScriptTiming {
    #[sqlx(try_from = "String")]
    pub script_id: Uuid,
    pub started_at: UnixMicros,
    pub ended_at: UnixMicros,
    pub exit_code: i64,
    /// `start`, `stop` or `cron`.
    pub stage: String,
    /// `ok`, `exit_failure`, `timed_out` or `pipes_left_open`.
    pub status: String,
}

/// A connection log event (ReportConnection).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConnectionEvent {
    pub connection_id: Uuid,
    pub time: UnixMicros,
    /// true = connect, false = disconnect.
    pub connect: bool,
    /// `ssh`, `vscode`, `jetbrains`, `reconnecting_pty`.
    pub kind: String,
    /// Disconnect status code.
    pub code: Option<i64>,
    pub ip: Option<String>,
    pub disconnect_reason: Option<String>,
}

/// A stored `workspace_agent_logs` row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AgentLog {
    pub id: i64,
    pub created_at: UnixMicros,
    pub output: String,
    pub level: String,
    #[sqlx(try_from = "String")]
    pub log_source_id: Uuid,
}

/// A stored `connection_logs` row, as [`crate::AgentScope::connection_logs`] reads it.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConnectionLogEntry {
    #[sqlx(try_from = "NullableUuid")]
    pub connection_id: Option<Uuid>,
    pub connect_time: UnixMicros,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub code: Option<i64>,
    pub ip: Option<String>,
    pub disconnect_time: Option<UnixMicros>,
    pub disconnect_reason: Option<String>,
}

/// Memory resource monitor row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MemoryMonitor {
    pub enabled: bool,
    pub threshold: i64,
    pub state: String,
    pub updated_at: UnixMicros,
    pub debounced_until: UnixMicros,
}

/// Volume resource monitor row.
#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct VolumeMonitor {
    pub path: String,
    pub enabled: bool,
    pub threshold: i64,
    pub state: String,
    pub updated_at: UnixMicros,
    pub debounced_until: UnixMicros,
}

/// A sub-agent as CreateSubAgent/ListSubAgents return it. The token is hidden from `Debug`.
#[derive(Clone, FromRow, PartialEq, Eq)]
pub struct SubAgent {
    /// Sub-agent id.
    #[sqlx(try_from = "String")]
    pub id: Uuid,
    /// Sub-agent name.
    pub name: String,
    /// Its auth token (what the RPC returns to the parent).
    #[sqlx(try_from = "String")]
    pub auth_token: Uuid,
}

impl fmt::Debug for SubAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubAgent")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

/// Arguments for a new sub-agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewSubAgent {
    pub name: String,
    pub directory: String,
    pub architecture: String,
    pub operating_system: String,
    /// DB strings (`vscode`, `web_terminal`, …).
    pub display_apps: Vec<String>,
}

/// One boundary log (http request decision).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct BoundaryLog {
    pub id: Uuid,
    pub sequence_number: i64,
    pub created_at: UnixMicros,
    pub method: String,
    pub detail: String,
    pub matched_rule: Option<String>,
}

/// One context resource (PushContextState).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ContextResource {
    pub source: String,
    pub body_kind: String,
    /// JSON text.
    pub body: String,
    pub content_hash: String,
    pub size_bytes: i64,
    pub status: String,
    pub error: String,
    pub source_path: String,
}

/// A context snapshot push.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ContextState {
    pub version: i64,
    pub initial: bool,
    pub aggregate_hash: String,
    pub snapshot_error: String,
    pub resources: Vec<ContextResource>,
}

/// What `mark_connected` left in the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct ConnectionTimes {
    /// Set on the first connection ever.
    pub first_connected_at: Option<UnixMicros>,
    /// Carried over unchanged.
    pub disconnected_at: Option<UnixMicros>,
}

/// Result of lifecycle update: the timestamps as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct LifecycleTimes {
    /// `started_at` after the update.
    pub started_at: Option<UnixMicros>,
    /// `ready_at` after the update.
    pub ready_at: Option<UnixMicros>,
}
