//! The values the backend contract exchanges beyond the agent's own rows ([`crate::model`]): the operator's
//! arguments and new ids, the metrics aggregates' rows, the demo history, and the batchers' flush entries.

use uuid::Uuid;

use crate::enums::MonitorState;
use crate::model::{StatsReport, UnixMicros};

// The operator's writes (`crate::Admin`).

/// A freshly created agent and its token (printed once by `agentwire agent create`).
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedAgent {
    /// Agent id.
    pub id: Uuid,
    /// The token the agent authenticates with.
    pub auth_token: Uuid,
}

impl std::fmt::Debug for CreatedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAgent").field("id", &self.id).field("auth_token", &"<redacted>").finish()
    }
}

/// Ids created by [`crate::Admin::create_workspace_with_build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildIds {
    /// Workspace.
    pub workspace_id: Uuid,
    /// Build.
    pub build_id: Uuid,
    /// Its provisioner job.
    pub job_id: Uuid,
    /// The resource agents attach to.
    pub resource_id: Uuid,
    /// Build number.
    pub build_number: i64,
}

/// Ids created by [`crate::Admin::create_template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateIds {
    /// Organization (created if needed).
    pub organization_id: Uuid,
    /// Template.
    pub template_id: Uuid,
    /// Its active version.
    pub version_id: Uuid,
}

/// Arguments for [`crate::Admin::create_agent`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewAgent {
    pub name: String,
    pub directory: String,
    /// JSON object, or `None`.
    pub environment_variables: Option<String>,
    pub motd_file: String,
    pub architecture: String,
    pub operating_system: String,
    pub connection_timeout_seconds: i64,
    pub troubleshooting_url: String,
}

/// Arguments for [`crate::Admin::add_app`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewApp {
    pub slug: String,
    pub display_name: String,
    pub url: Option<String>,
    pub command: Option<String>,
    pub healthcheck_url: String,
    pub healthcheck_interval: i64,
    pub healthcheck_threshold: i64,
    /// `disabled` unless a healthcheck URL is given (then `initializing`).
    pub health: Option<String>,
    pub subdomain: bool,
    /// Default `owner`.
    pub sharing_level: Option<String>,
    pub display_order: i64,
}

/// Arguments for [`crate::Admin::add_script`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewScript {
    pub display_name: String,
    pub script: String,
    pub cron: String,
    pub run_on_start: bool,
    pub run_on_stop: bool,
    pub start_blocks_login: bool,
    pub timeout_seconds: i64,
    pub log_path: String,
}

/// Arguments for [`crate::Admin::add_metadata_description`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewMetadata {
    pub key: String,
    pub display_name: String,
    pub script: String,
    /// Seconds for a Coder agent: coderd stores the template's seconds and GetManifest sends the number as a Go
    /// `time.Duration`, which the agent multiplies by a second again (coderd/agentapi/manifest.go:172,
    /// agent/agent.go:648 in v2.30.0).
    pub interval: i64,
    /// Seconds, as `interval`.
    pub timeout: i64,
    pub display_order: i64,
}

/// Build state for [`crate::Admin::create_workspace_with_build`] and [`crate::Admin::set_job_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Not started.
    Pending,
    /// Started, not completed.
    Running,
    /// Completed without error.
    Succeeded,
    /// Completed with an error.
    Failed,
}

// The metrics aggregates (`crate::aggregates`).

/// One user's activity on one template on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityDay {
    /// Template of the stats rows.
    pub template_id: Uuid,
    /// User of the stats rows.
    pub user_id: Uuid,
    /// UTC day (days since 1970-01-01).
    pub day: i64,
    /// First row of that day with a connection.
    pub first_at: UnixMicros,
    /// Last row of that day with a connection.
    pub last_at: UnixMicros,
}

/// One user's activity on one UTC day across all templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserActivityDay {
    /// The user.
    pub user_id: Uuid,
    /// UTC day (days since 1970-01-01).
    pub day: i64,
    /// First connected report of that day, on any template.
    pub first_at: UnixMicros,
    /// Last connected report of that day, on any template.
    pub last_at: UnixMicros,
}

/// How many users were active on a template on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateDayUsers {
    /// The template.
    pub template_id: Uuid,
    /// UTC day (days since 1970-01-01).
    pub day: i64,
    /// Distinct users with a connection that day.
    pub users: i64,
}

/// The execution time of one recent successful build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDuration {
    /// Template the build's version belongs to.
    pub template_id: Uuid,
    /// `start`, `stop` or `delete`.
    pub transition: String,
    /// `completed_at − started_at`.
    pub micros: i64,
}

/// Agent stats of the recent window, without percentiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStatsWindow {
    /// Sum over every row.
    pub rx_bytes: i64,
    /// Sum over every row.
    pub tx_bytes: i64,
    /// Sum over each agent's latest row.
    pub session_count_vscode: i64,
    /// Sum over each agent's latest row.
    pub session_count_ssh: i64,
    /// Sum over each agent's latest row.
    pub session_count_jetbrains: i64,
    /// Sum over each agent's latest row.
    pub session_count_reconnecting_pty: i64,
    /// `connection_median_latency_ms` of every row where it is > 0, ascending.
    pub latencies_ms: Vec<f64>,
}

/// Workspaces by the state of their latest build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct WorkspaceStateCounts {
    pub pending: i64,
    pub building: i64,
    pub running: i64,
    pub failed: i64,
    pub stopped: i64,
}

/// A template as the template endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TemplateRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub display_name: String,
    pub active_version_id: Option<Uuid>,
    pub created_at: UnixMicros,
    pub updated_at: UnixMicros,
}

/// One (template, user, UTC day) of connected stats rows, folded to its first and last instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ActivityKey {
    pub template_id: Uuid,
    pub user_id: Uuid,
    pub day: i64,
}

/// One rollup row from `crate::aggregates::fold_activity`: its key, first and last instant.
pub(crate) type ActivitySpan = (ActivityKey, UnixMicros, UnixMicros);

/// Name under which each multi-row upsert of the activity rollup is counted.
pub const UPSERT_ACTIVITY_DAYS: &str = "UpsertTemplateUserActivityDays";

// The demo-data writer.

/// Names of the demo writer's multi-row INSERTs, as counted.
pub const INSERT_DEMO_ROWS: &str = "InsertDemoHistory";

/// A user of [`DemoHistory`].
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct DemoUser {
    pub id: Uuid,
    pub username: String,
    pub created_at: UnixMicros,
}

/// A template of [`DemoHistory`], with its one version (and that version's import job).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct DemoTemplate {
    pub id: Uuid,
    pub name: String,
    pub version_id: Uuid,
    pub import_job_id: Uuid,
    pub deleted: bool,
    pub created_at: UnixMicros,
}

/// A workspace of [`DemoHistory`].
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct DemoWorkspace {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub template_id: Uuid,
    pub name: String,
    pub deleted: bool,
    pub created_at: UnixMicros,
}

/// A build of [`DemoHistory`] and its provisioner job.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct DemoBuild {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub version_id: Uuid,
    pub build_number: i64,
    pub transition: &'static str,
    pub initiator_id: Uuid,
    pub job_id: Uuid,
    pub created_at: UnixMicros,
    pub job_updated_at: UnixMicros,
    pub started_at: Option<UnixMicros>,
    pub completed_at: Option<UnixMicros>,
    pub canceled_at: Option<UnixMicros>,
    pub error: Option<String>,
}

/// A `workspace_agent_stats` row of [`DemoHistory`].
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct DemoStat {
    pub id: Uuid,
    pub created_at: UnixMicros,
    pub user_id: Uuid,
    pub agent_id: Uuid,
    pub workspace_id: Uuid,
    pub template_id: Uuid,
    pub connection_count: i64,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub connection_median_latency_ms: f64,
    pub session_count_vscode: i64,
    pub session_count_jetbrains: i64,
    pub session_count_reconnecting_pty: i64,
    pub session_count_ssh: i64,
}

/// Rows `agentwire demo-data` writes (see [`crate::Store::insert_demo_history`]).
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct DemoHistory {
    pub users: Vec<DemoUser>,
    pub templates: Vec<DemoTemplate>,
    pub workspaces: Vec<DemoWorkspace>,
    pub builds: Vec<DemoBuild>,
    pub stats: Vec<DemoStat>,
}

// The batchers' flushes (`crate::batch`).

/// One `workspace_agent_stats` row as a handler reports it and the stats batcher writes it.
#[derive(Debug, Clone)]
pub(crate) struct StatsRow {
    pub id: Uuid,
    pub created_at: UnixMicros,
    pub agent_id: Uuid,
    pub workspace_id: Uuid,
    pub template_id: Uuid,
    pub user_id: Uuid,
    pub report: StatsReport,
}

/// One `(agent, key)` of a metadata flush and its latest `(value, error, collected_at)`.
pub(crate) type MetaEntry = ((Uuid, String), (String, String, UnixMicros));

/// One agent of a heartbeat flush and its latest `(at, replica)`.
pub(crate) type HeartbeatEntry = (Uuid, (UnixMicros, Uuid));

/// What a monitor flush writes to one resource monitor's row: Coder's `UpdateMemoryResourceMonitor` and
/// `UpdateVolumeResourceMonitor` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MonitorWrite {
    pub state: MonitorState,
    pub updated_at: UnixMicros,
    /// 0: never debounced (Coder's zero time).
    pub debounced_until: UnixMicros,
}

/// One agent's memory monitor in a monitor flush.
pub(crate) type MemoryMonitorEntry = (Uuid, MonitorWrite);

/// One `(agent, path)` volume monitor in a monitor flush.
pub(crate) type VolumeMonitorEntry = ((Uuid, String), MonitorWrite);
