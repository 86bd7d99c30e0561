//! Deployment-wide aggregates for the server's metrics snapshotter (Coder's `metricscache`): daily active users,
//! build times, workspace states and the last minutes of agent stats, plus the bulk writer behind
//! `agentwire demo-data`.
//!
//! The rows come from the backend ([`crate::backend`]'s `AggregateSql`), each read one named, counted statement.
//! Percentiles are computed by the caller in Rust from the values these reads return, not with PostgreSQL's
//! `percentile_disc`/`percentile_cont`: SQLite has neither, and one Rust implementation gives both engines
//! bit-identical answers. The values are small sets (at most `per_template` builds per template; the latencies of
//! one stats window), so shipping them costs little.
//!
//! Daily active users are read as one row per (template, user, UTC day) with the first and last activity of that
//! day. A whole-hour timezone offset moves a UTC day's activity onto at most two local days, and the local day is
//! monotonic in time, so the first and last instants decide exactly which local days the user was active on: one
//! scan answers every offset, where Coder ran one query per offset. The stats flush keeps that rollup, folded here
//! (`fold_activity`).

use uuid::Uuid;

use crate::backend::AggregateSql;
use crate::model::UnixMicros;
use crate::{Store, StoreError};

/// Microseconds in a UTC day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Names of the demo writer's multi-row INSERTs, as counted.
pub const INSERT_DEMO_ROWS: &str = "InsertDemoHistory";

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

/// Name under which each multi-row upsert of the activity rollup is counted.
pub const UPSERT_ACTIVITY_DAYS: &str = "UpsertTemplateUserActivityDays";

/// One (template, user, UTC day) of connected stats rows, folded to its first and last instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ActivityKey {
    pub template_id: Uuid,
    pub user_id: Uuid,
    pub day: i64,
}

/// Folds connected stats rows (`(template, user, created_at)`) into rollup rows, unique per key: one upsert must
/// not touch a row twice (PostgreSQL refuses that).
pub(crate) fn fold_activity(rows: impl IntoIterator<Item = (Uuid, Uuid, UnixMicros)>) -> Vec<ActivitySpan> {
    let mut days: std::collections::BTreeMap<ActivityKey, (UnixMicros, UnixMicros)> = Default::default();
    for (template_id, user_id, at) in rows {
        let key = ActivityKey { template_id, user_id, day: at.div_euclid(MICROS_PER_DAY) };
        let span = days.entry(key).or_insert((at, at));
        span.0 = span.0.min(at);
        span.1 = span.1.max(at);
    }
    days.into_iter().map(|(k, (first, last))| (k, first, last)).collect()
}

/// One rollup row from [`fold_activity`]: its key, first and last instant.
pub(crate) type ActivitySpan = (ActivityKey, UnixMicros, UnixMicros);

impl Store {
    /// Ids of the templates that are not deleted.
    pub async fn active_template_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        self.core().db.active_template_ids().await
    }

    /// Every (template, user, UTC day) with a connection in `workspace_agent_stats`, with the day's first and last
    /// instant: what every timezone's daily active users derive from.
    pub async fn user_activity_days(&self) -> Result<Vec<ActivityDay>, StoreError> {
        self.core().db.user_activity_days().await
    }

    /// Every (user, UTC day) with a connection on any template, with the day's first and last instant.
    pub async fn user_activity_by_day(&self) -> Result<Vec<UserActivityDay>, StoreError> {
        self.core().db.user_activity_by_day().await
    }

    /// Active users per template and UTC day.
    pub async fn template_users_by_day(&self) -> Result<Vec<TemplateDayUsers>, StoreError> {
        self.core().db.template_users_by_day().await
    }

    /// Distinct users ever active per template.
    pub async fn template_unique_users(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        self.core().db.template_unique_users().await
    }

    /// The `per_template` most recent successful builds of each non-deleted template whose job started after
    /// `started_after`, with their execution times.
    pub async fn recent_build_durations(
        &self,
        started_after: UnixMicros,
        per_template: i64,
    ) -> Result<Vec<BuildDuration>, StoreError> {
        self.core().db.recent_build_durations(started_after, per_template).await
    }

    /// Agent stats rows created after `since`: two statements (sums, then the latencies).
    pub async fn agent_stats_window(&self, since: UnixMicros) -> Result<AgentStatsWindow, StoreError> {
        self.core().db.agent_stats_window(since).await
    }

    /// Non-deleted workspaces by the state of their latest build's job; a job running without a heartbeat since
    /// `heartbeat_after` is not counted as building.
    pub async fn workspace_state_counts(
        &self,
        heartbeat_after: UnixMicros,
    ) -> Result<WorkspaceStateCounts, StoreError> {
        self.core().db.workspace_state_counts(heartbeat_after).await
    }

    /// A template that is not deleted, by id.
    pub async fn template_by_id(&self, template_id: Uuid) -> Result<Option<TemplateRow>, StoreError> {
        self.core().db.template_by_id(template_id).await
    }
}

// The demo-data writer.

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

/// Rows `agentwire demo-data` writes (see [`Store::insert_demo_history`]).
#[derive(Debug, Clone, Default)]
#[allow(missing_docs)]
pub struct DemoHistory {
    pub users: Vec<DemoUser>,
    pub templates: Vec<DemoTemplate>,
    pub workspaces: Vec<DemoWorkspace>,
    pub builds: Vec<DemoBuild>,
    pub stats: Vec<DemoStat>,
}

impl Store {
    /// Write `history` in organization `org` (created when missing): multi-row INSERTs, one transaction per
    /// table, so a million stats rows take seconds, not hours.
    pub async fn insert_demo_history(&self, org: &str, h: &DemoHistory) -> Result<(), StoreError> {
        let org_id = self.admin().ensure_organization(org).await?;
        let db = &self.core().db;
        db.insert_demo_fixtures(org_id, h).await?;
        // Stats in several transactions: one huge transaction would hold SQLite's writer (and PostgreSQL's WAL) for
        // the whole load.
        for batch in h.stats.chunks(DEMO_STATS_ROWS_PER_TRANSACTION) {
            let days = fold_activity(
                batch.iter().filter(|s| s.connection_count > 0).map(|s| (s.template_id, s.user_id, s.created_at)),
            );
            db.insert_demo_stats(batch, &days).await?;
        }
        Ok(())
    }
}

/// Stats rows per demo-data transaction.
pub const DEMO_STATS_ROWS_PER_TRANSACTION: usize = 100_000;
