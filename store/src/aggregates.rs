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
pub use crate::rows::{
    ActivityDay, AgentStatsWindow, BuildDuration, DemoBuild, DemoHistory, DemoStat, DemoTemplate, DemoUser,
    DemoWorkspace, TemplateDayUsers, TemplateRow, UserActivityDay, WorkspaceStateCounts, INSERT_DEMO_ROWS,
    UPSERT_ACTIVITY_DAYS,
};
use crate::rows::{ActivityKey, ActivitySpan};
use crate::{Store, StoreError};

/// Microseconds in a UTC day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

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
