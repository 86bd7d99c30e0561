//! [`AggregateSql`] on agentwire's schema: the metrics snapshotter's reads, the activity rollup's upsert and the
//! demo-data writer, written once for both engines. Ids are text here, parsed back into [`Uuid`]s on the way out.

use sqlx::FromRow;
use uuid::Uuid;

use super::aggregates_sql::*;
use crate::backend::{begin, commit, qa, qs, rows_per_statement, with_pool, AgentwireDb, AggregateSql};
use crate::model::{id, UnixMicros};
use crate::rows::{
    ActivityDay, ActivitySpan, AgentStatsWindow, BuildDuration, DemoHistory, DemoStat, TemplateDayUsers, TemplateRow,
    UserActivityDay, WorkspaceStateCounts, INSERT_DEMO_ROWS, UPSERT_ACTIVITY_DAYS,
};
use crate::StoreError;

/// One counted single-row statement of the demo writer inside [`with_pool!`]: `$head` ends in `VALUES (`, the values
/// are bound in order.
macro_rules! insert_demo_row {
    ($counters:expr, $tx:ident, $head:expr, $($value:expr),+ $(,)?) => {{
        $counters.hit(INSERT_DEMO_ROWS);
        let mut qb = sqlx::QueryBuilder::new($head);
        let mut s = qb.separated(", ");
        $(s.push_bind($value);)+
        qb.push(")");
        qb.build().execute(&mut *$tx).await?;
    }};
}

impl AggregateSql for AgentwireDb {
    async fn active_template_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let rows: Vec<String> = with_pool!(self, read, |eng, pool| {
            qs!(self.counters, eng, ACTIVE_TEMPLATES, String).fetch_all(pool).await?
        });
        rows.iter().map(|s| uuid("templates", s)).collect()
    }

    async fn user_activity_days(&self) -> Result<Vec<ActivityDay>, StoreError> {
        Ok(with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, USER_ACTIVITY_DAYS, ActivityDay).fetch_all(pool).await?
        }))
    }

    async fn user_activity_by_day(&self) -> Result<Vec<UserActivityDay>, StoreError> {
        Ok(with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, USER_DAYS, UserActivityDay).fetch_all(pool).await?
        }))
    }

    async fn template_users_by_day(&self) -> Result<Vec<TemplateDayUsers>, StoreError> {
        let rows: Vec<(String, i64, i64)> = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, TEMPLATE_DAY_USERS, (String, i64, i64)).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(t, day, users)| {
                Ok(TemplateDayUsers { template_id: uuid("template_user_activity_days", &t)?, day, users })
            })
            .collect()
    }

    async fn template_unique_users(&self) -> Result<Vec<(Uuid, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, TEMPLATE_UNIQUE_USERS, (String, i64)).fetch_all(pool).await?
        });
        rows.into_iter().map(|(t, n)| Ok((uuid("template_user_activity_days", &t)?, n))).collect()
    }

    async fn recent_build_durations(
        &self,
        started_after: UnixMicros,
        per_template: i64,
    ) -> Result<Vec<BuildDuration>, StoreError> {
        let rows: Vec<(String, String, i64)> = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, BUILD_DURATIONS, (String, String, i64))
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

    async fn agent_stats_window(&self, since: UnixMicros) -> Result<AgentStatsWindow, StoreError> {
        let (sums, latencies_ms) = with_pool!(self, read, |eng, pool| {
            let sums = qa!(self.counters, eng, AGENT_STATS_SUMS, (i64, i64, i64, i64, i64, i64))
                .bind(since)
                .fetch_one(pool)
                .await?;
            let latencies = qs!(self.counters, eng, AGENT_LATENCIES, f64).bind(since).fetch_all(pool).await?;
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

    async fn workspace_state_counts(&self, heartbeat_after: UnixMicros) -> Result<WorkspaceStateCounts, StoreError> {
        let (pending, building, running, failed, stopped) = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, WORKSPACE_STATS, (i64, i64, i64, i64, i64))
                .bind(heartbeat_after)
                .fetch_one(pool)
                .await?
        });
        Ok(WorkspaceStateCounts { pending, building, running, failed, stopped })
    }

    async fn template_by_id(&self, template_id: Uuid) -> Result<Option<TemplateRow>, StoreError> {
        let row = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, TEMPLATE_BY_ID, TemplateDbRow).bind(id(template_id)).fetch_optional(pool).await?
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

    async fn insert_demo_fixtures(&self, organization_id: Uuid, h: &DemoHistory) -> Result<(), StoreError> {
        let org_id = id(organization_id);
        let c = &self.counters;
        with_pool!(self, write, |eng, pool| {
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
                let at = t.created_at;
                insert_demo_row!(
                    c,
                    tx,
                    "INSERT INTO provisioner_jobs (id, organization_id, type, created_at, updated_at, started_at, \
                     completed_at) VALUES (",
                    id(t.import_job_id),
                    &org_id,
                    "template_version_import",
                    at,
                    at,
                    at,
                    at
                );
                insert_demo_row!(
                    c,
                    tx,
                    "INSERT INTO templates (id, organization_id, name, display_name, deleted, created_at, updated_at) \
                     VALUES (",
                    id(t.id),
                    &org_id,
                    &t.name,
                    &t.name,
                    t.deleted,
                    at,
                    at
                );
                insert_demo_row!(
                    c,
                    tx,
                    "INSERT INTO template_versions (id, template_id, organization_id, name, job_id, created_at, \
                     updated_at) VALUES (",
                    id(t.version_id),
                    id(t.id),
                    &org_id,
                    "v1",
                    id(t.import_job_id),
                    at,
                    at
                );
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
        });
        Ok(())
    }

    async fn insert_demo_stats(&self, stats: &[DemoStat], days: &[ActivitySpan]) -> Result<(), StoreError> {
        let c = &self.counters;
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(c, eng, pool).await?;
            for chunk in stats.chunks(rows_per_statement(14)) {
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
            for chunk in days.chunks(rows_per_statement(ACTIVITY_DAY_COLS)) {
                c.hit(UPSERT_ACTIVITY_DAYS);
                activity_days_upsert(chunk).build().execute(&mut *tx).await?;
            }
            commit(c, tx).await?;
        });
        Ok(())
    }
}

/// Rollup columns per row, for chunking under the bind limit.
pub(super) const ACTIVITY_DAY_COLS: usize = 5;

/// The upsert of one chunk of the folded rollup rows ([`ActivitySpan`]s): a day already present widens to the earlier first and the
/// later last instant (CASE rather than min()/LEAST(): the engines spell those differently).
pub(super) fn activity_days_upsert<DB: sqlx::Database>(chunk: &[ActivitySpan]) -> sqlx::QueryBuilder<DB>
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

/// `FromRow` for a rollup row type, decoded straight from the row's text with no owned String in between: the
/// snapshotter reads ~100k of these per refresh, and two allocations per row were a measurable part of it.
macro_rules! from_text_row {
    ($ty:ident, |$row:ident| $value:expr) => {
        impl<'r, R: sqlx::Row> FromRow<'r, R> for $ty
        where
            &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            usize: sqlx::ColumnIndex<R>,
        {
            fn from_row($row: &'r R) -> Result<Self, sqlx::Error> {
                Ok($value)
            }
        }
    };
}

from_text_row!(ActivityDay, |row| ActivityDay {
    template_id: uuid_column(row, 0)?,
    user_id: uuid_column(row, 1)?,
    day: row.try_get(2)?,
    first_at: row.try_get(3)?,
    last_at: row.try_get(4)?,
});

from_text_row!(UserActivityDay, |row| UserActivityDay {
    user_id: uuid_column(row, 0)?,
    day: row.try_get(1)?,
    first_at: row.try_get(2)?,
    last_at: row.try_get(3)?,
});

/// A text id column, parsed without an owned String in between.
fn uuid_column<'r, R: sqlx::Row>(row: &'r R, index: usize) -> Result<Uuid, sqlx::Error>
where
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let text: &str = row.try_get(index)?;
    Uuid::parse_str(text).map_err(|e| sqlx::Error::ColumnDecode { index: index.to_string(), source: e.into() })
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
