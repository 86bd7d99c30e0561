//! `AggregateSql` on Coder's schema: the metrics snapshotter's reads, each one statement with coderd's meaning
//! (`metricscache` and the insights queries); the demo-data writer is refused.
//!
//! # Where activity comes from
//!
//! agentwire's own schema keeps a (template, user, UTC day) rollup that its stats flush maintains. Coder v2.30 has
//! no such table: its DAUs and insights (`GetTemplateInsightsByInterval`, `GetUserActivityInsights`,
//! `GetTemplateUsageStats`) read `template_usage_stats`, the half-hour buckets coderd's `dbrollup` folds from
//! `workspace_agent_stats` (rows with a session and a connection in the half hour) and `workspace_app_stats` every
//! five minutes. The four activity reads here read that table too, never the raw stats:
//!
//! * it is the durable record: coderd's `dbpurge` deletes raw stats a day behind the rollup's last bucket;
//! * it is what coderd counts: app-only usage is in it, a connection-less stats row is not;
//! * reading the not-yet-rolled-up raw tail as well would make these DAUs run ahead of coderd's own for up to a
//!   rollup interval, and the two servers answer the same endpoints from the same database.
//!
//! A bucket is one user active on one template at its `start_time`: coderd assigns a bucket to the interval its
//! `start_time` falls in, so the first and last instants of a day here are the earliest and latest bucket starts.
//! Buckets are whole half hours, so a whole-hour offset never splits one across local days.

use sqlx::FromRow;
use uuid::Uuid;

use super::CoderDb;
use crate::backend::{qa, qs, AggregateSql};
use crate::counting::Stmt;
use crate::model::*;
use crate::rows::{
    ActivityDay, ActivitySpan, AgentStatsWindow, BuildDuration, DemoHistory, DemoStat, TemplateDayUsers, TemplateRow,
    UserActivityDay, WorkspaceStateCounts,
};
use crate::{Engine, StoreError};

const PG: Engine = Engine::Postgres;

// coderd's refresh lists the templates with `GetTemplatesWithFilter(deleted: false)`; only the ids are needed.
const ACTIVE_TEMPLATES: Stmt =
    Stmt::new("GetTemplatesWithFilter", "SELECT id::text FROM templates WHERE deleted = false ORDER BY id");

// The four activity reads keep the agentwire backend's statement names, so the query counters mean the same
// read on either backend; each reads `template_usage_stats` (see the module doc) and returns what the rollup
// of agentwire's schema returns: per (template, user, UTC day) the first and last bucket start.
const USER_ACTIVITY_DAYS: Stmt = Stmt::new(
    "GetUserActivityDays",
    "SELECT template_id::text, user_id::text, day, \
       (EXTRACT(EPOCH FROM MIN(start_time)) * 1000000)::bigint, \
       (EXTRACT(EPOCH FROM MAX(start_time)) * 1000000)::bigint \
     FROM (SELECT template_id, user_id, start_time, floor(EXTRACT(EPOCH FROM start_time) / 86400)::bigint AS day \
           FROM template_usage_stats) AS buckets \
     GROUP BY template_id, user_id, day",
);

// Per (user, UTC day) across templates: GetTemplateInsightsByInterval with no template filter counts a user once
// per interval however many templates they used.
const USER_DAYS: Stmt = Stmt::new(
    "GetDeploymentUserActivityDays",
    "SELECT user_id::text, day, \
       (EXTRACT(EPOCH FROM MIN(start_time)) * 1000000)::bigint, \
       (EXTRACT(EPOCH FROM MAX(start_time)) * 1000000)::bigint \
     FROM (SELECT user_id, start_time, floor(EXTRACT(EPOCH FROM start_time) / 86400)::bigint AS day \
           FROM template_usage_stats) AS buckets \
     GROUP BY user_id, day",
);

// GetTemplateInsightsByInterval (interval_days 1, offset 0) for every template at once: COUNT(DISTINCT user_id)
// of the buckets starting in each UTC day.
const TEMPLATE_DAY_USERS: Stmt = Stmt::new(
    "GetTemplateDAUsByUTCDay",
    "SELECT template_id::text, floor(EXTRACT(EPOCH FROM start_time) / 86400)::bigint AS day, \
       COUNT(DISTINCT user_id) \
     FROM template_usage_stats GROUP BY template_id, day",
);

// Distinct users with any bucket on the template, over everything the rollup holds: the contract's "users ever
// active". coderd v2.30 no longer shows this number: its template `active_user_count` is
// GetWorkspaceUniqueOwnerCountByTemplateIDs (owners of the template's non-deleted workspaces).
const TEMPLATE_UNIQUE_USERS: Stmt = Stmt::new(
    "GetTemplateUniqueUsers",
    "SELECT template_id::text, COUNT(DISTINCT user_id) FROM template_usage_stats GROUP BY template_id",
);

// coderd's GetTemplateAverageBuildTime, run per non-deleted template, folded into one statement over all of them:
// the `$2` most recent builds (all transitions together, as its LIMIT 100) of the template's versions whose job
// completed, was not cancelled and has no error. Two differences, both deliberate: the job must have started after
// `$1` (the contract's window; coderd v2.30 has none, so a caller matching it passes `i64::MIN`), and ties
// in `created_at` are broken by id so repeated reads pick the same builds. The caller takes the percentiles.
const BUILD_DURATIONS: Stmt = Stmt::new(
    "GetTemplateAverageBuildTime",
    "SELECT template_id, transition, duration FROM ( \
       SELECT tv.template_id::text AS template_id, b.transition::text AS transition, \
         (EXTRACT(EPOCH FROM (j.completed_at - j.started_at)) * 1000000)::bigint AS duration, \
         ROW_NUMBER() OVER (PARTITION BY tv.template_id ORDER BY b.created_at DESC, b.id DESC) AS rn \
       FROM workspace_builds b \
       JOIN template_versions tv ON tv.id = b.template_version_id \
       JOIN templates t ON t.id = tv.template_id \
       JOIN provisioner_jobs j ON j.id = b.job_id \
       WHERE t.deleted = false AND j.completed_at IS NOT NULL AND j.started_at IS NOT NULL \
         AND j.canceled_at IS NULL AND (j.error IS NULL OR j.error = '') \
         AND j.started_at > to_timestamp($1::float8 / 1e6) \
     ) AS recent WHERE rn <= $2",
);

// coderd's GetDeploymentWorkspaceAgentStats (its metricscache reads this one unless the `workspace-usage`
// experiment is on) without the percentiles: bytes over every row of the window, sessions over each agent's
// latest row, ties broken by id so the pick is stable.
const AGENT_STATS_SUMS: Stmt = Stmt::new(
    "GetDeploymentWorkspaceAgentStats",
    "SELECT coalesce(SUM(rx_bytes), 0)::bigint, coalesce(SUM(tx_bytes), 0)::bigint, \
       coalesce(SUM(session_count_vscode) FILTER (WHERE rn = 1), 0)::bigint, \
       coalesce(SUM(session_count_ssh) FILTER (WHERE rn = 1), 0)::bigint, \
       coalesce(SUM(session_count_jetbrains) FILTER (WHERE rn = 1), 0)::bigint, \
       coalesce(SUM(session_count_reconnecting_pty) FILTER (WHERE rn = 1), 0)::bigint \
     FROM ( \
       SELECT rx_bytes, tx_bytes, session_count_vscode, session_count_ssh, session_count_jetbrains, \
         session_count_reconnecting_pty, \
         ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY created_at DESC, id DESC) AS rn \
       FROM workspace_agent_stats WHERE created_at > to_timestamp($1::float8 / 1e6) \
     ) AS windowed",
);

// The values GetDeploymentWorkspaceAgentStats takes PERCENTILE_CONT of (> 0: legacy agents report none), sorted.
const AGENT_LATENCIES: Stmt = Stmt::new(
    "GetDeploymentWorkspaceAgentLatencies",
    "SELECT connection_median_latency_ms FROM workspace_agent_stats \
     WHERE created_at > to_timestamp($1::float8 / 1e6) AND connection_median_latency_ms > 0 \
     ORDER BY connection_median_latency_ms",
);

// coderd's GetDeploymentWorkspaceStats: each non-deleted workspace's latest build (by build_number, LEFT JOINed as
// coderd does, so a workspace without a build counts as pending) and its job. One deliberate difference: coderd's
// building predicate `updated_at - INTERVAL '30 seconds' < NOW()` holds for any job not updated in the future, so
// it counts a job whose provisioner died as building forever; the contract asks for a live heartbeat (coderd's
// provisioner daemons bump `updated_at` while they run a job), so a running job counts only if updated after `$1`.
const WORKSPACE_STATS: Stmt = Stmt::new(
    "GetDeploymentWorkspaceStats",
    "SELECT \
       COUNT(*) FILTER (WHERE lb.started_at IS NULL), \
       COUNT(*) FILTER (WHERE lb.started_at IS NOT NULL AND lb.canceled_at IS NULL AND lb.completed_at IS NULL \
         AND lb.updated_at > to_timestamp($1::float8 / 1e6)), \
       COUNT(*) FILTER (WHERE lb.completed_at IS NOT NULL AND lb.canceled_at IS NULL AND lb.error IS NULL \
         AND lb.transition = 'start'::workspace_transition), \
       COUNT(*) FILTER (WHERE (lb.canceled_at IS NOT NULL AND lb.error IS NOT NULL) \
         OR (lb.completed_at IS NOT NULL AND lb.error IS NOT NULL)), \
       COUNT(*) FILTER (WHERE lb.completed_at IS NOT NULL AND lb.canceled_at IS NULL AND lb.error IS NULL \
         AND lb.transition = 'stop'::workspace_transition) \
     FROM workspaces w \
     LEFT JOIN LATERAL ( \
       SELECT b.transition, j.started_at, j.updated_at, j.canceled_at, j.completed_at, j.error \
       FROM workspace_builds b LEFT JOIN provisioner_jobs j ON j.id = b.job_id \
       WHERE b.workspace_id = w.id ORDER BY b.build_number DESC LIMIT 1 \
     ) AS lb ON TRUE \
     WHERE w.deleted = false",
);

// coderd's GetTemplateByID reads deleted templates too; its template middleware then answers 404 for them, which
// is what the filter here stands for.
const TEMPLATE_BY_ID: Stmt = Stmt::new(
    "GetTemplateByID",
    "SELECT id::text AS id, organization_id::text AS organization_id, name::text AS name, \
       display_name::text AS display_name, active_version_id::text AS active_version_id, \
       (EXTRACT(EPOCH FROM created_at) * 1000000)::bigint AS created_at, \
       (EXTRACT(EPOCH FROM updated_at) * 1000000)::bigint AS updated_at \
     FROM templates WHERE id = $1::uuid AND deleted = false",
);

#[derive(FromRow)]
struct TemplateDbRow {
    id: String,
    organization_id: String,
    name: String,
    display_name: String,
    active_version_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl AggregateSql for CoderDb {
    async fn active_template_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let rows = qs!(self.counters, PG, ACTIVE_TEMPLATES, String).fetch_all(&self.pool).await?;
        rows.iter().map(|s| uuid("templates", s)).collect()
    }

    async fn user_activity_days(&self) -> Result<Vec<ActivityDay>, StoreError> {
        // ActivityDay's FromRow reads the ids as text without an owned String per row (the agentwire backend's).
        Ok(qa!(self.counters, PG, USER_ACTIVITY_DAYS, ActivityDay).fetch_all(&self.pool).await?)
    }

    async fn user_activity_by_day(&self) -> Result<Vec<UserActivityDay>, StoreError> {
        Ok(qa!(self.counters, PG, USER_DAYS, UserActivityDay).fetch_all(&self.pool).await?)
    }

    async fn template_users_by_day(&self) -> Result<Vec<TemplateDayUsers>, StoreError> {
        let rows = qa!(self.counters, PG, TEMPLATE_DAY_USERS, (String, i64, i64)).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(t, day, users)| Ok(TemplateDayUsers { template_id: uuid("template_usage_stats", &t)?, day, users }))
            .collect()
    }

    async fn template_unique_users(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        let rows = qa!(self.counters, PG, TEMPLATE_UNIQUE_USERS, (String, i64)).fetch_all(&self.pool).await?;
        rows.into_iter().map(|(t, n)| Ok((uuid("template_usage_stats", &t)?, n))).collect()
    }

    async fn recent_build_durations(
        &self,
        started_after: UnixMicros,
        per_template: i64,
    ) -> Result<Vec<BuildDuration>, StoreError> {
        let rows = qa!(self.counters, PG, BUILD_DURATIONS, (String, String, i64))
            .bind(time_bound(started_after))
            .bind(per_template)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(t, transition, micros)| {
                Ok(BuildDuration { template_id: uuid("template_versions", &t)?, transition, micros })
            })
            .collect()
    }

    async fn agent_stats_window(&self, since: UnixMicros) -> Result<AgentStatsWindow, StoreError> {
        // Two statements where coderd has one: the percentiles are the caller's (see `crate::aggregates`), which
        // needs the latencies themselves.
        let sums = qa!(self.counters, PG, AGENT_STATS_SUMS, (i64, i64, i64, i64, i64, i64))
            .bind(time_bound(since))
            .fetch_one(&self.pool)
            .await?;
        let latencies_ms =
            qs!(self.counters, PG, AGENT_LATENCIES, f64).bind(time_bound(since)).fetch_all(&self.pool).await?;
        Ok(AgentStatsWindow {
            rx_bytes: sums.0,
            tx_bytes: sums.1,
            session_count_vscode: sums.2,
            session_count_ssh: sums.3,
            session_count_jetbrains: sums.4,
            session_count_reconnecting_pty: sums.5,
            latencies_ms,
        })
    }

    async fn workspace_state_counts(&self, heartbeat_after: UnixMicros) -> Result<WorkspaceStateCounts, StoreError> {
        let (pending, building, running, failed, stopped) =
            qa!(self.counters, PG, WORKSPACE_STATS, (i64, i64, i64, i64, i64))
                .bind(time_bound(heartbeat_after))
                .fetch_one(&self.pool)
                .await?;
        Ok(WorkspaceStateCounts { pending, building, running, failed, stopped })
    }

    async fn template_by_id(&self, template_id: Uuid) -> Result<Option<TemplateRow>, StoreError> {
        let row = qa!(self.counters, PG, TEMPLATE_BY_ID, TemplateDbRow)
            .bind(id(template_id))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(TemplateRow {
                id: uuid("templates", &r.id)?,
                organization_id: uuid("templates", &r.organization_id)?,
                name: r.name,
                display_name: r.display_name,
                active_version_id: r.active_version_id.as_deref().map(|v| uuid("templates", v)).transpose()?,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
        })
        .transpose()
    }

    // `agentwire demo-data` fabricates users, templates, builds and agent stats; on a Coder database those are made
    // by coderd (and its provisioners and agents), and template_usage_stats only by its rollup.
    async fn insert_demo_fixtures(&self, _organization_id: Uuid, _h: &DemoHistory) -> Result<(), StoreError> {
        super::refused::managed_by_coderd("demo users, templates, workspaces and builds")
    }

    async fn insert_demo_stats(&self, _stats: &[DemoStat], _days: &[ActivitySpan]) -> Result<(), StoreError> {
        super::refused::managed_by_coderd("demo agent stats and usage rollups")
    }
}

/// About 4700 BC, inside PostgreSQL's timestamp range (from 4713 BC; unix µs reach 292277 BC). A lower bound
/// before it selects the same rows (nothing is stored that early), where `to_timestamp` would refuse it.
const EARLIEST_BOUND: UnixMicros = -210_000_000_000_000_000;

/// A lower time bound as bound to the statements: "since the beginning" (`i64::MIN`) included.
fn time_bound(micros: UnixMicros) -> UnixMicros {
    micros.max(EARLIEST_BOUND)
}

fn uuid(table: &'static str, s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::corrupt(table, e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The refusals touch no connection: a pool that was never connected serves.
    #[tokio::test]
    async fn demo_writers_are_refused_without_a_statement() {
        let pool = match sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://nobody@127.0.0.1:1/none") {
            Ok(pool) => pool,
            Err(e) => panic!("lazy pool: {e}"),
        };
        let db = CoderDb { pool, counters: Arc::new(crate::QueryCounters::default()) };
        let history =
            DemoHistory { users: vec![], templates: vec![], workspaces: vec![], builds: vec![], stats: vec![] };
        assert!(matches!(db.insert_demo_fixtures(Uuid::nil(), &history).await, Err(StoreError::ManagedByCoderd(_))));
        assert!(matches!(db.insert_demo_stats(&[], &[]).await, Err(StoreError::ManagedByCoderd(_))));
        let counted = db.counters.snapshot();
        assert_eq!((counted.total(), counted.begins), (0, 0));
    }
}
