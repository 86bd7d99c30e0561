//! Deployment-wide aggregates for the server's metrics snapshotter (Coder's `metricscache`): daily active users,
//! build times, workspace states and the last minutes of agent stats, plus the bulk writer behind
//! `agentwire demo-data`.
//!
//! Every read is one named, counted statement that both engines accept. Percentiles are computed by the caller in
//! Rust from the values these reads return, not with PostgreSQL's `percentile_disc`/`percentile_cont`: SQLite has
//! neither, and one Rust implementation gives both engines bit-identical answers. The values are small sets (at
//! most `per_template` builds per template; the latencies of one stats window), so shipping them costs little.
//!
//! Daily active users are read as one row per (template, user, UTC day) with the first and last activity of that
//! day. A whole-hour timezone offset moves a UTC day's activity onto at most two local days, and the local day is
//! monotonic in time, so the first and last instants decide exactly which local days the user was active on: one
//! scan answers every offset, where Coder ran one query per offset.
//!
//! Over 600 lines: its SQL, row types and reads are still one room; they move behind the backend contract next.

use sqlx::FromRow;
use uuid::Uuid;

use crate::backend::{begin, commit, qa, qs, rows_per_statement, with_pool};
use crate::counting::Stmt;
use crate::model::{id, UnixMicros};
use crate::{Store, StoreError};

/// Microseconds in a UTC day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

mod sql {
    use super::Stmt;

    pub const ACTIVE_TEMPLATES: Stmt =
        Stmt::new("GetTemplatesWithFilter", "SELECT id FROM templates WHERE deleted = FALSE ORDER BY id");

    // Coder's GetTemplateDAUs/GetDeploymentDAUs: rows with a connection, by day and user; here per UTC day with the
    // day's first and last instant (see the module doc), for all templates at once, from the rollup the stats flush
    // keeps (migration 0004) rather than a GROUP BY over every stats row.
    pub const USER_ACTIVITY_DAYS: Stmt = Stmt::new(
        "GetUserActivityDays",
        "SELECT template_id, user_id, utc_day AS day, first_at, last_at FROM template_user_activity_days",
    );

    // The rollup folded per user and UTC day across templates: what the deployment DAUs of every offset derive from
    // (a user's first and last instant of a UTC day decide its local days). Index order, no sort (migration 0005).
    pub const USER_DAYS: Stmt = Stmt::new(
        "GetDeploymentUserActivityDays",
        "SELECT user_id, utc_day AS day, MIN(first_at) AS first_at, MAX(last_at) AS last_at \
         FROM template_user_activity_days GROUP BY user_id, utc_day",
    );

    // Coder's GetTemplateDAUs at offset 0 for every template at once: a rollup row is one user on one UTC day.
    pub const TEMPLATE_DAY_USERS: Stmt = Stmt::new(
        "GetTemplateDAUsByUTCDay",
        "SELECT template_id, utc_day, COUNT(*) FROM template_user_activity_days GROUP BY template_id, utc_day",
    );

    // Coder's GetTemplateUniqueUsers (the template's active_user_count) for every template at once.
    pub const TEMPLATE_UNIQUE_USERS: Stmt = Stmt::new(
        "GetTemplateUniqueUsers",
        "SELECT template_id, COUNT(DISTINCT user_id) FROM template_user_activity_days GROUP BY template_id",
    );

    // Coder's GetTemplateAverageBuildTime for every non-deleted template in one statement: the `$2` most recent
    // builds per template (all transitions together, as Coder's LIMIT 100) whose job started after `$1`, completed,
    // was not cancelled and has no error. The caller takes the percentiles per transition.
    pub const BUILD_DURATIONS: Stmt = Stmt::new(
        "GetTemplateAverageBuildTime",
        "SELECT template_id, transition, duration FROM ( \
           SELECT tv.template_id, b.transition, j.completed_at - j.started_at AS duration, \
             ROW_NUMBER() OVER (PARTITION BY tv.template_id ORDER BY b.created_at DESC, b.id DESC) AS rn \
           FROM workspace_builds b \
           JOIN template_versions tv ON tv.id = b.template_version_id \
           JOIN templates t ON t.id = tv.template_id \
           JOIN provisioner_jobs j ON j.id = b.job_id \
           WHERE t.deleted = FALSE AND j.started_at IS NOT NULL AND j.completed_at IS NOT NULL \
             AND j.started_at > $1 AND j.canceled_at IS NULL AND COALESCE(j.error, '') = '' \
         ) AS recent WHERE rn <= $2",
    );

    // Coder's GetDeploymentWorkspaceAgentStats without the percentiles: byte sums over every row of the window,
    // session counts over each agent's latest row only (ties broken by id, so both engines pick the same row).
    pub const AGENT_STATS_SUMS: Stmt = Stmt::new(
        "GetDeploymentWorkspaceAgentStats",
        "SELECT CAST(COALESCE(SUM(rx_bytes), 0) AS BIGINT), CAST(COALESCE(SUM(tx_bytes), 0) AS BIGINT), \
           CAST(COALESCE(SUM(CASE WHEN rn = 1 THEN session_count_vscode ELSE 0 END), 0) AS BIGINT), \
           CAST(COALESCE(SUM(CASE WHEN rn = 1 THEN session_count_ssh ELSE 0 END), 0) AS BIGINT), \
           CAST(COALESCE(SUM(CASE WHEN rn = 1 THEN session_count_jetbrains ELSE 0 END), 0) AS BIGINT), \
           CAST(COALESCE(SUM(CASE WHEN rn = 1 THEN session_count_reconnecting_pty ELSE 0 END), 0) AS BIGINT) \
         FROM ( \
           SELECT rx_bytes, tx_bytes, session_count_vscode, session_count_ssh, session_count_jetbrains, \
             session_count_reconnecting_pty, \
             ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY created_at DESC, id DESC) AS rn \
           FROM workspace_agent_stats WHERE created_at > $1 \
         ) AS windowed",
    );

    // The latencies GetDeploymentWorkspaceAgentStats takes PERCENTILE_CONT of (only those > 0), sorted.
    pub const AGENT_LATENCIES: Stmt = Stmt::new(
        "GetDeploymentWorkspaceAgentLatencies",
        "SELECT connection_median_latency_ms FROM workspace_agent_stats \
         WHERE created_at > $1 AND connection_median_latency_ms > 0 ORDER BY connection_median_latency_ms",
    );

    // Coder's GetDeploymentWorkspaceStats: each non-deleted workspace's latest build and its job. `$1` is
    // now − 30 s: a running job whose heartbeat (updated_at) is older counts as neither building nor anything else.
    pub const WORKSPACE_STATS: Stmt = Stmt::new(
        "GetDeploymentWorkspaceStats",
        "SELECT \
           COUNT(CASE WHEN j.started_at IS NULL THEN 1 END), \
           COUNT(CASE WHEN j.started_at IS NOT NULL AND j.canceled_at IS NULL AND j.completed_at IS NULL \
             AND j.updated_at > $1 THEN 1 END), \
           COUNT(CASE WHEN j.completed_at IS NOT NULL AND j.canceled_at IS NULL AND j.error IS NULL \
             AND b.transition = 'start' THEN 1 END), \
           COUNT(CASE WHEN (j.canceled_at IS NOT NULL AND j.error IS NOT NULL) \
             OR (j.completed_at IS NOT NULL AND j.error IS NOT NULL) THEN 1 END), \
           COUNT(CASE WHEN j.completed_at IS NOT NULL AND j.canceled_at IS NULL AND j.error IS NULL \
             AND b.transition = 'stop' THEN 1 END) \
         FROM workspaces w \
         JOIN workspace_builds b ON b.workspace_id = w.id AND b.build_number = \
           (SELECT MAX(x.build_number) FROM workspace_builds x WHERE x.workspace_id = w.id) \
         JOIN provisioner_jobs j ON j.id = b.job_id \
         WHERE w.deleted = FALSE",
    );

    pub const TEMPLATE_BY_ID: Stmt = Stmt::new(
        "GetTemplateByID",
        "SELECT id, organization_id, name, display_name, active_version_id, created_at, updated_at \
         FROM templates WHERE id = $1 AND deleted = FALSE",
    );
}

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

// Decoded straight from the row's text, with no owned String in between: the snapshotter reads ~100k of these per
// refresh, and two allocations per row were a measurable part of it.
impl<'r, R: sqlx::Row> FromRow<'r, R> for ActivityDay
where
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(ActivityDay {
            template_id: uuid_column(row, 0)?,
            user_id: uuid_column(row, 1)?,
            day: row.try_get(2)?,
            first_at: row.try_get(3)?,
            last_at: row.try_get(4)?,
        })
    }
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

impl<'r, R: sqlx::Row> FromRow<'r, R> for UserActivityDay
where
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(UserActivityDay {
            user_id: uuid_column(row, 0)?,
            day: row.try_get(1)?,
            first_at: row.try_get(2)?,
            last_at: row.try_get(3)?,
        })
    }
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

/// A text id column, parsed without an owned String in between.
fn uuid_column<'r, R: sqlx::Row>(row: &'r R, index: usize) -> Result<Uuid, sqlx::Error>
where
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let text: &str = row.try_get(index)?;
    Uuid::parse_str(text).map_err(|e| sqlx::Error::ColumnDecode { index: index.to_string(), source: e.into() })
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

fn uuid(table: &'static str, s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::corrupt(table, e.to_string()))
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

/// Rollup columns per row, for chunking under the bind limit.
pub(crate) const ACTIVITY_DAY_COLS: usize = 5;

/// The upsert of one chunk of [`fold_activity`]'s rows: a day already present widens to the earlier first and the
/// later last instant (CASE rather than min()/LEAST(): the engines spell those differently).
pub(crate) fn activity_days_upsert<DB: sqlx::Database>(chunk: &[ActivitySpan]) -> sqlx::QueryBuilder<DB>
where
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut qb = sqlx::QueryBuilder::new(
        "INSERT INTO template_user_activity_days (template_id, user_id, utc_day, first_at, last_at) ",
    );
    qb.push_values(chunk, |mut b, (k, first, last)| {
        b.push_bind(id(k.template_id)).push_bind(id(k.user_id)).push_bind(k.day).push_bind(*first).push_bind(*last);
    });
    qb.push(
        " ON CONFLICT (template_id, user_id, utc_day) DO UPDATE SET \
         first_at = CASE WHEN excluded.first_at < template_user_activity_days.first_at \
           THEN excluded.first_at ELSE template_user_activity_days.first_at END, \
         last_at = CASE WHEN excluded.last_at > template_user_activity_days.last_at \
           THEN excluded.last_at ELSE template_user_activity_days.last_at END",
    );
    qb
}

impl Store {
    /// Ids of the templates that are not deleted.
    pub async fn active_template_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let core = self.core();
        let rows: Vec<String> = with_pool!(&core.db, read, |eng, pool| {
            qs!(core.counters, eng, sql::ACTIVE_TEMPLATES, String).fetch_all(pool).await?
        });
        rows.iter().map(|s| uuid("templates", s)).collect()
    }

    /// Every (template, user, UTC day) with a connection in `workspace_agent_stats`, with the day's first and last
    /// instant: what every timezone's daily active users derive from.
    pub async fn user_activity_days(&self) -> Result<Vec<ActivityDay>, StoreError> {
        let core = self.core();
        Ok(with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, sql::USER_ACTIVITY_DAYS, ActivityDay).fetch_all(pool).await?
        }))
    }

    /// Every (user, UTC day) with a connection on any template, with the day's first and last instant.
    pub async fn user_activity_by_day(&self) -> Result<Vec<UserActivityDay>, StoreError> {
        let core = self.core();
        Ok(with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, sql::USER_DAYS, UserActivityDay).fetch_all(pool).await?
        }))
    }

    /// Active users per template and UTC day.
    pub async fn template_users_by_day(&self) -> Result<Vec<TemplateDayUsers>, StoreError> {
        let core = self.core();
        let rows: Vec<(String, i64, i64)> = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, sql::TEMPLATE_DAY_USERS, (String, i64, i64)).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(t, day, users)| {
                Ok(TemplateDayUsers { template_id: uuid("template_user_activity_days", &t)?, day, users })
            })
            .collect()
    }

    /// Distinct users ever active per template.
    pub async fn template_unique_users(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        let core = self.core();
        let rows: Vec<(String, i64)> = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, sql::TEMPLATE_UNIQUE_USERS, (String, i64)).fetch_all(pool).await?
        });
        rows.into_iter().map(|(t, n)| Ok((uuid("template_user_activity_days", &t)?, n))).collect()
    }

    /// The `per_template` most recent successful builds of each non-deleted template whose job started after
    /// `started_after`, with their execution times.
    pub async fn recent_build_durations(
        &self,
        started_after: UnixMicros,
        per_template: i64,
    ) -> Result<Vec<BuildDuration>, StoreError> {
        let core = self.core();
        let rows: Vec<(String, String, i64)> = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, sql::BUILD_DURATIONS, (String, String, i64))
                .bind(started_after)
                .bind(per_template)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(t, transition, micros)| {
                Ok(BuildDuration { template_id: uuid("template_versions", &t)?, transition, micros })
            })
            .collect()
    }

    /// Agent stats rows created after `since`: two statements (sums, then the latencies).
    pub async fn agent_stats_window(&self, since: UnixMicros) -> Result<AgentStatsWindow, StoreError> {
        let core = self.core();
        let (sums, latencies_ms) = with_pool!(&core.db, read, |eng, pool| {
            let sums = qa!(core.counters, eng, sql::AGENT_STATS_SUMS, (i64, i64, i64, i64, i64, i64))
                .bind(since)
                .fetch_one(pool)
                .await?;
            let latencies = qs!(core.counters, eng, sql::AGENT_LATENCIES, f64).bind(since).fetch_all(pool).await?;
            (sums, latencies)
        });
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

    /// Non-deleted workspaces by the state of their latest build's job; a job running without a heartbeat since
    /// `heartbeat_after` is not counted as building.
    pub async fn workspace_state_counts(
        &self,
        heartbeat_after: UnixMicros,
    ) -> Result<WorkspaceStateCounts, StoreError> {
        let core = self.core();
        let (pending, building, running, failed, stopped) = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, sql::WORKSPACE_STATS, (i64, i64, i64, i64, i64))
                .bind(heartbeat_after)
                .fetch_one(pool)
                .await?
        });
        Ok(WorkspaceStateCounts { pending, building, running, failed, stopped })
    }

    /// A template that is not deleted, by id.
    pub async fn template_by_id(&self, template_id: Uuid) -> Result<Option<TemplateRow>, StoreError> {
        let core = self.core();
        let row = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, sql::TEMPLATE_BY_ID, TemplateDbRow)
                .bind(id(template_id))
                .fetch_optional(pool)
                .await?
        });
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
        let org_id = id(self.admin().ensure_organization(org).await?);
        let core = self.core();
        let c = &core.counters;
        with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(c, eng, pool).await?;
            for chunk in h.users.chunks(rows_per_statement(5)) {
                c.hit(INSERT_DEMO_ROWS);
                let mut qb =
                    sqlx::QueryBuilder::new("INSERT INTO users (id, email, username, created_at, updated_at) ");
                qb.push_values(chunk, |mut b, u| {
                    b.push_bind(id(u.id))
                        .push_bind(format!("{}@example.com", u.username))
                        .push_bind(&u.username)
                        .push_bind(u.created_at)
                        .push_bind(u.created_at);
                });
                qb.build().execute(&mut *tx).await?;
            }
            for t in &h.templates {
                c.hit(INSERT_DEMO_ROWS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO provisioner_jobs (id, organization_id, type, created_at, updated_at, started_at, \
                     completed_at) VALUES (",
                );
                let mut s = qb.separated(", ");
                s.push_bind(id(t.import_job_id))
                    .push_bind(&org_id)
                    .push_bind("template_version_import")
                    .push_bind(t.created_at)
                    .push_bind(t.created_at)
                    .push_bind(t.created_at)
                    .push_bind(t.created_at);
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
                c.hit(INSERT_DEMO_ROWS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO templates (id, organization_id, name, display_name, deleted, created_at, updated_at) \
                     VALUES (",
                );
                let mut s = qb.separated(", ");
                s.push_bind(id(t.id))
                    .push_bind(&org_id)
                    .push_bind(&t.name)
                    .push_bind(&t.name)
                    .push_bind(t.deleted)
                    .push_bind(t.created_at)
                    .push_bind(t.created_at);
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
                c.hit(INSERT_DEMO_ROWS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO template_versions (id, template_id, organization_id, name, job_id, created_at, \
                     updated_at) VALUES (",
                );
                let mut s = qb.separated(", ");
                s.push_bind(id(t.version_id))
                    .push_bind(id(t.id))
                    .push_bind(&org_id)
                    .push_bind("v1")
                    .push_bind(id(t.import_job_id))
                    .push_bind(t.created_at)
                    .push_bind(t.created_at);
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
                c.hit(INSERT_DEMO_ROWS);
                let mut qb = sqlx::QueryBuilder::new("UPDATE templates SET active_version_id = ");
                qb.push_bind(id(t.version_id)).push(" WHERE id = ").push_bind(id(t.id));
                qb.build().execute(&mut *tx).await?;
            }
            for chunk in h.workspaces.chunks(rows_per_statement(8)) {
                c.hit(INSERT_DEMO_ROWS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, template_id, \
                     deleted, name) ",
                );
                qb.push_values(chunk, |mut b, w| {
                    b.push_bind(id(w.id))
                        .push_bind(w.created_at)
                        .push_bind(w.created_at)
                        .push_bind(id(w.owner_id))
                        .push_bind(&org_id)
                        .push_bind(id(w.template_id))
                        .push_bind(w.deleted)
                        .push_bind(&w.name);
                });
                qb.build().execute(&mut *tx).await?;
            }
            for chunk in h.builds.chunks(rows_per_statement(10)) {
                c.hit(INSERT_DEMO_ROWS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO provisioner_jobs (id, organization_id, type, created_at, updated_at, started_at, \
                     completed_at, canceled_at, error) ",
                );
                qb.push_values(chunk, |mut b, x| {
                    b.push_bind(id(x.job_id))
                        .push_bind(&org_id)
                        .push_bind("workspace_build")
                        .push_bind(x.created_at)
                        .push_bind(x.job_updated_at)
                        .push_bind(x.started_at)
                        .push_bind(x.completed_at)
                        .push_bind(x.canceled_at)
                        .push_bind(&x.error);
                });
                qb.build().execute(&mut *tx).await?;
                c.hit(INSERT_DEMO_ROWS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO workspace_builds (id, created_at, updated_at, workspace_id, template_version_id, \
                     build_number, transition, initiator_id, job_id) ",
                );
                qb.push_values(chunk, |mut b, x| {
                    b.push_bind(id(x.id))
                        .push_bind(x.created_at)
                        .push_bind(x.created_at)
                        .push_bind(id(x.workspace_id))
                        .push_bind(id(x.version_id))
                        .push_bind(x.build_number)
                        .push_bind(x.transition)
                        .push_bind(id(x.initiator_id))
                        .push_bind(id(x.job_id));
                });
                qb.build().execute(&mut *tx).await?;
            }
            commit(c, tx).await?;
            // Stats in several transactions: one huge transaction would hold SQLite's writer (and PostgreSQL's WAL)
            // for the whole load.
            for batch in h.stats.chunks(DEMO_STATS_ROWS_PER_TRANSACTION) {
                let mut tx = begin(c, eng, pool).await?;
                for chunk in batch.chunks(rows_per_statement(14)) {
                    c.hit(INSERT_DEMO_ROWS);
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO workspace_agent_stats (id, created_at, user_id, agent_id, workspace_id, \
                         template_id, connection_count, rx_bytes, tx_bytes, connection_median_latency_ms, \
                         session_count_vscode, session_count_jetbrains, session_count_reconnecting_pty, \
                         session_count_ssh) ",
                    );
                    qb.push_values(chunk, |mut b, s| {
                        b.push_bind(id(s.id))
                            .push_bind(s.created_at)
                            .push_bind(id(s.user_id))
                            .push_bind(id(s.agent_id))
                            .push_bind(id(s.workspace_id))
                            .push_bind(id(s.template_id))
                            .push_bind(s.connection_count)
                            .push_bind(s.rx_bytes)
                            .push_bind(s.tx_bytes)
                            .push_bind(s.connection_median_latency_ms)
                            .push_bind(s.session_count_vscode)
                            .push_bind(s.session_count_jetbrains)
                            .push_bind(s.session_count_reconnecting_pty)
                            .push_bind(s.session_count_ssh);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                let days = fold_activity(
                    batch.iter().filter(|s| s.connection_count > 0).map(|s| (s.template_id, s.user_id, s.created_at)),
                );
                for chunk in days.chunks(rows_per_statement(ACTIVITY_DAY_COLS)) {
                    c.hit(UPSERT_ACTIVITY_DAYS);
                    activity_days_upsert(chunk).build().execute(&mut *tx).await?;
                }
                commit(c, tx).await?;
            }
        });
        Ok(())
    }
}

/// Stats rows per demo-data transaction.
pub const DEMO_STATS_ROWS_PER_TRANSACTION: usize = 100_000;
