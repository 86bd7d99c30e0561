//! [`BatchSql`] on agentwire's schema: the batchers' flushes (stats, metadata, heartbeats, resource monitor states),
//! each one transaction of multi-row statements built with `QueryBuilder`, written once for both engines.

use uuid::Uuid;

use super::aggregates::{activity_days_upsert, ACTIVITY_DAY_COLS};
use crate::backend::{begin, commit, q, rows_per_statement, with_pool, AgentwireDb, BatchSql};
use crate::counting::Stmt;
use crate::engine::Engine;
use crate::model::{id, now_micros, UnixMicros};
use crate::rows::{
    ActivitySpan, HeartbeatEntry, MemoryMonitorEntry, MetaEntry, StatsRow, VolumeMonitorEntry, UPSERT_ACTIVITY_DAYS,
};
use crate::StoreError;

/// Statement name under which each multi-row stats INSERT is counted.
const INSERT_STATS: &str = "InsertWorkspaceAgentStats";
/// Statement names of the stats flush's activity writes.
pub(super) const ACTIVITY_BUMP: &str = "ActivityBumpWorkspace";
const UPDATE_LAST_USED: &str = "BatchUpdateWorkspaceLastUsedAt";
const STATS_COLS: usize = 18;
/// Statement name under which each batched metadata UPDATE is counted.
const BATCH_UPDATE_METADATA: &str = "BatchUpdateWorkspaceAgentMetadata";
const METADATA_COLS: usize = 5;
/// Statement name under which each batched heartbeat UPDATE is counted.
const BATCH_UPDATE_HEARTBEATS: &str = "BatchUpdateWorkspaceAgentHeartbeats";
const HEARTBEAT_COLS: usize = 3;
/// Statement names of the monitor flush: Coder's per-monitor queries, each here carrying every agent of the flush.
const UPDATE_MEMORY_MONITORS: &str = "UpdateMemoryResourceMonitor";
const MEMORY_MONITOR_COLS: usize = 4;
const UPDATE_VOLUME_MONITORS: &str = "UpdateVolumeResourceMonitor";
const VOLUME_MONITOR_COLS: usize = 5;

/// PostgreSQL's NOTIFY inside a flush transaction: delivered at commit, with the rows, and costing no transaction
/// of its own (sent after the commit, each message would be one more write transaction).
const NOTIFY_IN_FLUSH: Stmt = Stmt::new("pg_notify", "SELECT pg_notify($1, $2)");

/// The per-row metadata write: Coder's single-key `UpdateWorkspaceAgentMetadata` shape, one `(agent, key)` per
/// statement. Counted under its own name so it never mixes with the batched statement in the counters.
const UPDATE_METADATA_ROW: Stmt = Stmt::new(
    "BenchUpdateWorkspaceAgentMetadataRow",
    "UPDATE workspace_agent_metadata SET value = $3, error = $4, collected_at = $5 \
     WHERE workspace_agent_id = $1 AND key = $2",
);

/// The end of a flush inside [`with_pool!`]: on PostgreSQL the `$notices` go out in `$tx`, then `$tx` commits, and
/// the value is whether they were sent.
macro_rules! notify_and_commit {
    ($db:expr, $eng:ident, $tx:ident, $notices:expr) => {{
        let in_tx = $eng == Engine::Postgres;
        if in_tx {
            for (channel, payload) in $notices {
                q!($db.counters, $eng, NOTIFY_IN_FLUSH).bind(*channel).bind(*payload).execute(&mut *$tx).await?;
            }
        }
        commit(&$db.counters, $tx).await?;
        if in_tx {
            $db.counters.notified($notices.len() as u64);
        }
        Ok(in_tx)
    }};
}

impl BatchSql for AgentwireDb {
    async fn flush_stats(
        &self,
        rows: &[StatsRow],
        days: &[ActivitySpan],
        active: &[Uuid],
        notices: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            for chunk in rows.chunks(rows_per_statement(STATS_COLS)) {
                self.counters.hit(INSERT_STATS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO workspace_agent_stats (id, created_at, agent_id, workspace_id, \
                     template_id, user_id, connections_by_proto, connection_count, rx_packets, \
                     rx_bytes, tx_packets, tx_bytes, connection_median_latency_ms, \
                     session_count_vscode, session_count_jetbrains, session_count_reconnecting_pty, \
                     session_count_ssh, usage) ",
                );
                qb.push_values(chunk, |mut b, r| {
                    let s = &r.report;
                    let by_proto = if s.connections_by_proto.is_empty() {
                        "{}".to_owned()
                    } else {
                        s.connections_by_proto.clone()
                    };
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
                // A flush whose commit reached the database but whose answer did not (the connection died at
                // COMMIT) is retried with the same ids: skipping them keeps the retry from failing on the primary
                // key forever.
                qb.push(" ON CONFLICT (id) DO NOTHING");
                qb.build().execute(&mut *tx).await?;
            }
            for chunk in days.chunks(rows_per_statement(ACTIVITY_DAY_COLS)) {
                self.counters.hit(UPSERT_ACTIVITY_DAYS);
                activity_days_upsert(chunk).build().execute(&mut *tx).await?;
            }
            if !active.is_empty() {
                let now = now_micros();
                self.counters.hit(UPDATE_LAST_USED);
                let mut qb = sqlx::QueryBuilder::new("UPDATE workspaces SET last_used_at = ");
                qb.push_bind(now).push(" WHERE last_used_at < ").push_bind(now).push(" AND id IN (");
                let mut ids = qb.separated(", ");
                for w in active {
                    ids.push_bind(id(*w));
                }
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
                self.counters.hit(ACTIVITY_BUMP);
                bump_deadlines(now, active).build().execute(&mut *tx).await?;
            }
            notify_and_commit!(self, eng, tx, notices)
        })
    }

    async fn flush_metadata(&self, entries: &[MetaEntry], notices: &[(&str, &str)]) -> Result<bool, StoreError> {
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            for chunk in entries.chunks(rows_per_statement(METADATA_COLS)) {
                self.counters.hit(BATCH_UPDATE_METADATA);
                // Only keys created at build time change (UPDATE … FROM), as in Coder.
                let mut qb = sqlx::QueryBuilder::new(
                    "UPDATE workspace_agent_metadata AS m SET value = v.column3, error = v.column4, \
                     collected_at = v.column5 FROM (",
                );
                qb.push_values(chunk, |mut b, ((agent, key), (value, error, at))| {
                    b.push_bind(id(*agent))
                        .push_bind(key.as_str())
                        .push_bind(value.as_str())
                        .push_bind(error.as_str())
                        .push_bind(*at);
                });
                qb.push(") AS v WHERE m.workspace_agent_id = v.column1 AND m.key = v.column2");
                qb.build().execute(&mut *tx).await?;
            }
            notify_and_commit!(self, eng, tx, notices)
        })
    }

    async fn flush_heartbeats(&self, entries: &[HeartbeatEntry]) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            for chunk in entries.chunks(rows_per_statement(HEARTBEAT_COLS)) {
                self.counters.hit(BATCH_UPDATE_HEARTBEATS);
                let mut qb = sqlx::QueryBuilder::new(
                    "UPDATE workspace_agents SET last_connected_at = v.column2, \
                     last_connected_replica_id = v.column3, updated_at = v.column2 FROM (",
                );
                qb.push_values(chunk, |mut b, (agent, (at, replica))| {
                    b.push_bind(id(*agent)).push_bind(*at).push_bind(id(*replica));
                });
                // Never move the timestamp backwards (a late flush after a newer direct write).
                qb.push(
                    ") AS v WHERE workspace_agents.id = v.column1 AND \
                     (workspace_agents.last_connected_at IS NULL OR \
                     workspace_agents.last_connected_at < v.column2)",
                );
                qb.build().execute(&mut *tx).await?;
            }
            commit(&self.counters, tx).await
        })
    }

    async fn flush_monitors(
        &self,
        memory: &[MemoryMonitorEntry],
        volumes: &[VolumeMonitorEntry],
    ) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            // One statement per kind, unless a flush holds more monitors of a kind than one statement's binds allow
            // (7,500 memory, 6,000 volume monitors: past the default flush size of 500).
            for chunk in memory.chunks(rows_per_statement(MEMORY_MONITOR_COLS)) {
                self.counters.hit(UPDATE_MEMORY_MONITORS);
                let mut qb = sqlx::QueryBuilder::new(
                    "UPDATE workspace_agent_memory_resource_monitors AS m SET state = v.column2, \
                     updated_at = v.column3, debounced_until = v.column4 FROM (",
                );
                qb.push_values(chunk, |mut b, (agent, w)| {
                    b.push_bind(id(*agent))
                        .push_bind(w.state.as_str())
                        .push_bind(w.updated_at)
                        .push_bind(w.debounced_until);
                });
                qb.push(") AS v WHERE m.agent_id = v.column1");
                qb.build().execute(&mut *tx).await?;
            }
            for chunk in volumes.chunks(rows_per_statement(VOLUME_MONITOR_COLS)) {
                self.counters.hit(UPDATE_VOLUME_MONITORS);
                let mut qb = sqlx::QueryBuilder::new(
                    "UPDATE workspace_agent_volume_resource_monitors AS m SET state = v.column3, \
                     updated_at = v.column4, debounced_until = v.column5 FROM (",
                );
                qb.push_values(chunk, |mut b, ((agent, path), w)| {
                    b.push_bind(id(*agent))
                        .push_bind(path.as_str())
                        .push_bind(w.state.as_str())
                        .push_bind(w.updated_at)
                        .push_bind(w.debounced_until);
                });
                qb.push(") AS v WHERE m.agent_id = v.column1 AND m.path = v.column2");
                qb.build().execute(&mut *tx).await?;
            }
            commit(&self.counters, tx).await
        })
    }

    async fn update_metadata_row_per_tx(
        &self,
        agent_id: Uuid,
        key: &str,
        value: &str,
        error: &str,
        collected_at: UnixMicros,
    ) -> Result<u64, StoreError> {
        let changed = with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            let done = q!(self.counters, eng, UPDATE_METADATA_ROW)
                .bind(id(agent_id))
                .bind(key)
                .bind(value)
                .bind(error)
                .bind(collected_at)
                .execute(&mut *tx)
                .await?;
            commit(&self.counters, tx).await?;
            done.rows_affected()
        });
        Ok(changed)
    }
}

/// Coder's `ActivityBumpWorkspace` for a set of workspaces, on their latest builds: push the deadline to at least
/// `now + templates.activity_bump` (capped at `max_deadline` when set), only for a completed `start` build that has a
/// deadline, and only once 5 % of the interval has passed. Coder lengthens the interval when the bump would cross the
/// next autostart; a workspace with an autostart schedule gets the plain interval here.
pub(super) fn bump_deadlines<DB: sqlx::Database>(now: UnixMicros, workspaces: &[Uuid]) -> sqlx::QueryBuilder<DB>
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
