//! Stats batcher: `workspace_agent_stats` rows, one multi-row INSERT per chunk, one transaction
//! per flush (Coder's `workspacestats.DBBatcher`: 1 s or 1024 rows, forced flush at 80 %).
//!
//! The same transaction carries what Coder does per call for a report with connections: the
//! workspace activity bump (`ActivityBumpWorkspace`, once per workspace per flush instead of once
//! per report), the usage tracker's `last_used_at` (Coder flushes that every 60 s on its own), and
//! the `stats_update` workspace event (on PostgreSQL a NOTIFY in the flush transaction; per report it
//! would be a write transaction per report), and the daily-activity rollup the metrics snapshotter reads.

use std::sync::Arc;

use uuid::Uuid;

use super::{Flush, Pushed};
use crate::aggregates::{activity_days_upsert, fold_activity, ACTIVITY_DAY_COLS, UPSERT_ACTIVITY_DAYS};
use crate::backend::{begin, commit, q, rows_per_statement, with_pool, Engine};
use crate::counting::Stmt;
use crate::model::{id, StatsReport, UnixMicros};
use crate::pubsub::{workspace_event_payload, workspace_owner_channel, STATS_UPDATE_KIND};
use crate::{Core, StoreError};

/// Statement name under which each multi-row stats INSERT is counted.
pub const INSERT_STATS: &str = "InsertWorkspaceAgentStats";
/// Statement names of the per-flush activity writes.
pub const ACTIVITY_BUMP: &str = "ActivityBumpWorkspace";
pub const UPDATE_LAST_USED: &str = "BatchUpdateWorkspaceLastUsedAt";
const COLS: usize = 18;

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

pub(crate) struct StatsFlush {
    pub core: Arc<Core>,
    /// Rows kept while flushes fail; beyond this new rows are dropped.
    pub max_rows: usize,
}

impl Flush for StatsFlush {
    type Item = StatsRow;
    type Acc = Vec<StatsRow>;

    fn push(&self, acc: &mut Vec<StatsRow>, item: StatsRow) -> Pushed {
        if acc.len() >= self.max_rows {
            return Pushed::Refused;
        }
        acc.push(item);
        Pushed::Added
    }

    fn len(acc: &Vec<StatsRow>) -> usize {
        acc.len()
    }

    async fn flush(&self, acc: &mut Vec<StatsRow>) -> Result<usize, StoreError> {
        // On error the rows stay in `acc` and are retried at the next flush, as Coder does.
        let active = active_workspaces(acc);
        let events: Vec<(String, String)> = active
            .iter()
            .map(|(owner, ws)| (workspace_owner_channel(*owner), workspace_event_payload(STATS_UPDATE_KIND, *ws, None)))
            .collect();
        let notified_in_tx = write(&self.core, acc, &active, &events).await?;
        if !notified_in_tx {
            for (channel, payload) in &events {
                if let Err(e) = self.core.pubsub.publish(channel, payload).await {
                    // The rows are written; watchers see the next update.
                    tracing::warn!(error = %e, "publish workspace stats update");
                }
            }
        }
        let n = acc.len();
        acc.clear();
        Ok(n)
    }
}

/// PostgreSQL's NOTIFY inside the flush transaction: delivered at commit, costing no transaction of its own.
const NOTIFY_IN_FLUSH: Stmt = Stmt::new("pg_notify", "SELECT pg_notify($1, $2)");

/// Writes one flush in one transaction: the rows, then for `active` workspaces the activity writes and, on
/// PostgreSQL, the `events` (returns true then; elsewhere the caller publishes them after the commit).
async fn write(
    core: &Core,
    rows: &[StatsRow],
    active: &[(Uuid, Uuid)],
    events: &[(String, String)],
) -> Result<bool, StoreError> {
    with_pool!(&core.db, write, |eng, pool| {
        let mut tx = begin(&core.counters, eng, pool).await?;
        for chunk in rows.chunks(rows_per_statement(COLS)) {
            core.counters.hit(INSERT_STATS);
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO workspace_agent_stats (id, created_at, agent_id, workspace_id, \
                 template_id, user_id, connections_by_proto, connection_count, rx_packets, \
                 rx_bytes, tx_packets, tx_bytes, connection_median_latency_ms, \
                 session_count_vscode, session_count_jetbrains, session_count_reconnecting_pty, \
                 session_count_ssh, usage) ",
            );
            qb.push_values(chunk, |mut b, r| {
                let s = &r.report;
                let by_proto =
                    if s.connections_by_proto.is_empty() { "{}".to_owned() } else { s.connections_by_proto.clone() };
                b.push_bind(id(r.id))
                    .push_bind(r.created_at)
                    .push_bind(id(r.agent_id))
                    .push_bind(id(r.workspace_id))
                    .push_bind(id(r.template_id))
                    .push_bind(id(r.user_id))
                    .push_bind(by_proto)
                    .push_bind(s.connection_count)
                    .push_bind(s.rx_packets)
                    .push_bind(s.rx_bytes)
                    .push_bind(s.tx_packets)
                    .push_bind(s.tx_bytes)
                    .push_bind(s.connection_median_latency_ms)
                    .push_bind(s.session_count_vscode)
                    .push_bind(s.session_count_jetbrains)
                    .push_bind(s.session_count_reconnecting_pty)
                    .push_bind(s.session_count_ssh)
                    .push_bind(s.usage);
            });
            // A flush whose commit reached the database but whose answer did not (the connection died at COMMIT)
            // is retried with the same ids: skipping them keeps the retry from failing on the primary key forever.
            qb.push(" ON CONFLICT (id) DO NOTHING");
            qb.build().execute(&mut *tx).await?;
        }
        let days = fold_activity(
            rows.iter().filter(|r| r.report.connection_count > 0).map(|r| (r.template_id, r.user_id, r.created_at)),
        );
        for chunk in days.chunks(rows_per_statement(ACTIVITY_DAY_COLS)) {
            core.counters.hit(UPSERT_ACTIVITY_DAYS);
            activity_days_upsert(chunk).build().execute(&mut *tx).await?;
        }
        let workspaces: Vec<Uuid> = active.iter().map(|(_, ws)| *ws).collect();
        if !workspaces.is_empty() {
            let now = crate::model::now_micros();
            core.counters.hit(UPDATE_LAST_USED);
            let mut qb = sqlx::QueryBuilder::new("UPDATE workspaces SET last_used_at = ");
            qb.push_bind(now).push(" WHERE last_used_at < ").push_bind(now).push(" AND id IN (");
            let mut ids = qb.separated(", ");
            for w in &workspaces {
                ids.push_bind(id(*w));
            }
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
            core.counters.hit(ACTIVITY_BUMP);
            bump_deadlines(now, &workspaces).build().execute(&mut *tx).await?;
        }
        let in_tx = eng == Engine::Postgres;
        if in_tx {
            for (channel, payload) in events {
                q!(core.counters, eng, NOTIFY_IN_FLUSH).bind(channel).bind(payload).execute(&mut *tx).await?;
            }
        }
        commit(&core.counters, tx).await?;
        if in_tx {
            core.counters.notified(events.len() as u64);
        }
        Ok(in_tx)
    })
}

/// (owner, workspace) of the workspaces with a live connection in this flush: the reports that count as activity.
fn active_workspaces(rows: &[StatsRow]) -> Vec<(Uuid, Uuid)> {
    let set: std::collections::BTreeSet<(Uuid, Uuid)> = rows
        .iter()
        .filter(|r| r.report.connection_count > 0 && !r.report.usage)
        .map(|r| (r.user_id, r.workspace_id))
        .collect();
    set.into_iter().collect()
}

/// Coder's `ActivityBumpWorkspace` for a set of workspaces, on their latest builds: push the deadline to at least
/// `now + templates.activity_bump` (capped at `max_deadline` when set), only for a completed `start` build that has a
/// deadline, and only once 5 % of the interval has passed. Coder lengthens the interval when the bump would cross the
/// next autostart; a workspace with an autostart schedule gets the plain interval here.
fn bump_deadlines<DB: sqlx::Database>(now: UnixMicros, workspaces: &[Uuid]) -> sqlx::QueryBuilder<DB>
where
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut qb = sqlx::QueryBuilder::new("UPDATE workspace_builds SET updated_at = ");
    qb.push_bind(now);
    // CASE rather than GREATEST/LEAST or max()/min(): the two engines spell those differently.
    qb.push(", deadline = CASE WHEN max_deadline <> 0 AND (CASE WHEN deadline > ");
    qb.push_bind(now).push(" + v.bump THEN deadline ELSE ").push_bind(now);
    qb.push(" + v.bump END) > max_deadline THEN max_deadline ELSE (CASE WHEN deadline > ");
    qb.push_bind(now).push(" + v.bump THEN deadline ELSE ").push_bind(now);
    qb.push(
        " + v.bump END) END \
         FROM (SELECT b.id AS build_id, t.activity_bump / 1000 AS bump \
               FROM workspace_builds b \
               JOIN provisioner_jobs j ON j.id = b.job_id \
               JOIN workspaces w ON w.id = b.workspace_id \
               JOIN templates t ON t.id = w.template_id \
               WHERE b.build_number = (SELECT MAX(x.build_number) FROM workspace_builds x \
                                       WHERE x.workspace_id = b.workspace_id) \
                 AND j.completed_at IS NOT NULL AND t.activity_bump >= 1000 \
                 AND b.transition = 'start' AND b.deadline <> 0 AND b.workspace_id IN (",
    );
    let mut ids = qb.separated(", ");
    for w in workspaces {
        ids.push_bind(id(*w));
    }
    qb.push(")) AS v WHERE workspace_builds.id = v.build_id AND workspace_builds.deadline - v.bump * 95 / 100 < ");
    qb.push_bind(now);
    qb
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreOptions};

    /// A flush retried after its commit reached the database (the answer lost with the connection) succeeds
    /// instead of failing on the primary key for ever, and stores each row once.
    #[tokio::test]
    async fn a_retried_flush_of_committed_rows_succeeds_and_stores_them_once() {
        let store = Store::open("sqlite::memory:", StoreOptions::default()).await.unwrap();
        let flush = StatsFlush { core: store.inner.core.clone(), max_rows: 16 };
        let row = |_| StatsRow {
            id: Uuid::new_v4(),
            created_at: 1,
            agent_id: Uuid::new_v4(),
            workspace_id: Uuid::new_v4(),
            template_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            report: StatsReport::default(),
        };
        let rows: Vec<StatsRow> = (0..3).map(row).collect();
        let mut acc = rows.clone();
        assert_eq!(flush.flush(&mut acc).await.unwrap(), 3);
        let mut again = rows;
        again.push(row(3));
        assert_eq!(flush.flush(&mut again).await.unwrap(), 4);
        let stored: i64 = with_pool!(&store.core().db, read, |eng, pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM workspace_agent_stats").fetch_one(pool).await.unwrap()
        });
        assert_eq!(stored, 4);
        store.close().await;
    }
}
