//! `BatchSql` on Coder's schema: the batchers' flushes into Coder's tables, each one transaction.
//!
//! Rows travel as arrays, one per column, unnested by the statement: coderd's own shape for its batched writes
//! (`InsertWorkspaceAgentStats`, `BatchUpdateWorkspaceAgentMetadata`), and one statement per flush whatever its
//! size, since an array is one bind parameter.

use uuid::Uuid;

use super::CoderDb;
use crate::backend::{begin, commit, q, BatchSql};
use crate::counting::Stmt;
use crate::engine::Engine;
use crate::model::{id, now_micros, UnixMicros};
use crate::rows::{ActivitySpan, HeartbeatEntry, MemoryMonitorEntry, MetaEntry, StatsRow, VolumeMonitorEntry};
use crate::StoreError;

const PG: Engine = Engine::Postgres;

/// coderd's `InsertWorkspaceAgentStats` (its stats batcher's one statement per flush), with `ON CONFLICT (id) DO
/// NOTHING`: a flush whose COMMIT reached the database but whose answer did not is retried with the same ids, and
/// must not fail on `agent_stats_pkey` for ever. coderd never retries a flush, so it never needs the clause.
const INSERT_STATS: Stmt = Stmt::new(
    "InsertWorkspaceAgentStats",
    "INSERT INTO workspace_agent_stats (id, created_at, user_id, workspace_id, template_id, agent_id, \
       connections_by_proto, connection_count, rx_packets, rx_bytes, tx_packets, tx_bytes, session_count_vscode, \
       session_count_jetbrains, session_count_reconnecting_pty, session_count_ssh, connection_median_latency_ms, \
       usage) \
     SELECT unnest($1::uuid[]), to_timestamp(unnest($2::bigint[])::float8 / 1e6), unnest($3::uuid[]), \
       unnest($4::uuid[]), unnest($5::uuid[]), unnest($6::uuid[]), jsonb_array_elements($7::jsonb), \
       unnest($8::bigint[]), unnest($9::bigint[]), unnest($10::bigint[]), unnest($11::bigint[]), \
       unnest($12::bigint[]), unnest($13::bigint[]), unnest($14::bigint[]), unnest($15::bigint[]), \
       unnest($16::bigint[]), unnest($17::float8[]), unnest($18::boolean[]) \
     ON CONFLICT (id) DO NOTHING",
);

/// coderd's `BatchUpdateWorkspaceLastUsedAt`, which its usage tracker runs every 60 s for the workspaces reported
/// active since; here it runs in the stats flush that saw them active, so no second timer and transaction exist.
const UPDATE_LAST_USED: Stmt = Stmt::new(
    "BatchUpdateWorkspaceLastUsedAt",
    "UPDATE workspaces SET last_used_at = to_timestamp($1::float8 / 1e6) \
     WHERE id = ANY($2::uuid[]) AND last_used_at < to_timestamp($1::float8 / 1e6)",
);

/// coderd's `ActivityBumpWorkspace`, which its stats reporter runs once per report with a session, here once per
/// flush for every active workspace: `latest` takes each workspace's newest build (`DISTINCT ON` instead of coderd's
/// `ORDER BY … LIMIT 1` for its one workspace), and the rest is coderd's statement: the template's `activity_bump`
/// (whole seconds), never lowering the deadline, capped at `max_deadline`, only a completed `start` build that has a
/// deadline, once 5 % of the interval has passed, never a prebuild (owned by the prebuilds system user), and coderd's
/// `NOW()`.
///
/// coderd's reporter passes the workspace's next autostart, computed in Go from its cron schedule and the template's
/// allowed days, and lengthens a bump that would cross it to "autostart + TTL". The database cannot evaluate those
/// schedules, so every workspace is bumped as coderd bumps one without an autostart schedule (coderd's
/// `next_autostart` zero value): a workspace kept busy across its autostart time gets a deadline of now + the
/// activity bump, not autostart + TTL.
const ACTIVITY_BUMP: Stmt = Stmt::new(
    "ActivityBumpWorkspace",
    "WITH latest AS ( \
       SELECT DISTINCT ON (workspace_builds.workspace_id) \
         workspace_builds.id AS build_id, \
         workspace_builds.deadline AS build_deadline, \
         workspace_builds.max_deadline AS build_max_deadline, \
         workspace_builds.transition AS build_transition, \
         provisioner_jobs.completed_at AS job_completed_at, \
         templates.activity_bump AS activity_bump, \
         (templates.activity_bump / 1000 / 1000 / 1000 || ' seconds')::interval AS ttl_interval \
       FROM workspace_builds \
       JOIN provisioner_jobs ON provisioner_jobs.id = workspace_builds.job_id \
       JOIN workspaces ON workspaces.id = workspace_builds.workspace_id \
       JOIN templates ON templates.id = workspaces.template_id \
       WHERE workspace_builds.workspace_id = ANY($1::uuid[]) \
         AND workspaces.owner_id != 'c42fdf75-3097-471c-8c33-fb52454d81c0'::uuid \
       ORDER BY workspace_builds.workspace_id, workspace_builds.build_number DESC \
     ) \
     UPDATE workspace_builds wb SET \
       updated_at = NOW(), \
       deadline = CASE \
         WHEN l.build_max_deadline = '0001-01-01 00:00:00+00' \
         THEN GREATEST(wb.deadline, NOW() + l.ttl_interval) \
         ELSE LEAST(GREATEST(wb.deadline, NOW() + l.ttl_interval), l.build_max_deadline) \
       END \
     FROM latest l \
     WHERE wb.id = l.build_id \
       AND l.job_completed_at IS NOT NULL \
       AND l.activity_bump > 0 \
       AND l.build_transition = 'start' \
       AND l.ttl_interval > '0 seconds'::interval \
       AND l.build_deadline != '0001-01-01 00:00:00+00' \
       AND l.build_deadline - (l.ttl_interval * 0.95) < NOW()",
);

/// coderd's `BatchUpdateWorkspaceAgentMetadata` (its metadata batcher's statement): only `(agent, key)` rows described
/// at build time change.
const BATCH_UPDATE_METADATA: Stmt = Stmt::new(
    "BatchUpdateWorkspaceAgentMetadata",
    "WITH metadata AS ( \
       SELECT unnest($1::uuid[]) AS workspace_agent_id, unnest($2::text[]) AS key, unnest($3::text[]) AS value, \
         unnest($4::text[]) AS error, to_timestamp(unnest($5::bigint[])::float8 / 1e6) AS collected_at) \
     UPDATE workspace_agent_metadata wam \
     SET value = m.value, error = m.error, collected_at = m.collected_at \
     FROM metadata m \
     WHERE wam.workspace_agent_id = m.workspace_agent_id AND wam.key = m.key",
);

/// coderd's connection monitor refreshes each agent with `UpdateWorkspaceAgentConnectionByID` every ping period,
/// writing back the first-connected and disconnected times it read at connect unchanged; here only what a refresh
/// changes is written (`last_connected_at`, the replica, `updated_at` at the write, as coderd's `dbtime.Now()`), for
/// every agent of the flush at once. The agentwire backend's name for it: coderd has no batched form. A flush later
/// than a newer direct write never moves `last_connected_at` backwards.
const BATCH_UPDATE_HEARTBEATS: Stmt = Stmt::new(
    "BatchUpdateWorkspaceAgentHeartbeats",
    "UPDATE workspace_agents a \
     SET last_connected_at = to_timestamp(v.at::float8 / 1e6), last_connected_replica_id = v.replica, \
       updated_at = to_timestamp($4::float8 / 1e6) \
     FROM (SELECT unnest($1::uuid[]) AS id, unnest($2::bigint[]) AS at, unnest($3::uuid[]) AS replica) v \
     WHERE a.id = v.id \
       AND (a.last_connected_at IS NULL OR a.last_connected_at < to_timestamp(v.at::float8 / 1e6))",
);

/// coderd's `UpdateMemoryResourceMonitor` (state, `updated_at`, `debounced_until` by agent), which coderd runs once per
/// push for each agent; here for every agent of a monitor flush at once. A debounce of 0 is Go's zero time, the
/// column's "never", as coderd writes it.
const UPDATE_MEMORY_MONITORS: Stmt = Stmt::new(
    "UpdateMemoryResourceMonitor",
    "UPDATE workspace_agent_memory_resource_monitors m \
     SET updated_at = to_timestamp(v.updated_at::float8 / 1e6), state = v.state::workspace_agent_monitor_state, \
       debounced_until = CASE WHEN v.debounced_until = 0 THEN '0001-01-01 00:00:00+00'::timestamptz \
         ELSE to_timestamp(v.debounced_until::float8 / 1e6) END \
     FROM (SELECT unnest($1::uuid[]) AS agent_id, unnest($2::text[]) AS state, unnest($3::bigint[]) AS updated_at, \
       unnest($4::bigint[]) AS debounced_until) v \
     WHERE m.agent_id = v.agent_id",
);

/// coderd's `UpdateVolumeResourceMonitor` (by agent and path), for every volume monitor of a flush at once.
const UPDATE_VOLUME_MONITORS: Stmt = Stmt::new(
    "UpdateVolumeResourceMonitor",
    "UPDATE workspace_agent_volume_resource_monitors m \
     SET updated_at = to_timestamp(v.updated_at::float8 / 1e6), state = v.state::workspace_agent_monitor_state, \
       debounced_until = CASE WHEN v.debounced_until = 0 THEN '0001-01-01 00:00:00+00'::timestamptz \
         ELSE to_timestamp(v.debounced_until::float8 / 1e6) END \
     FROM (SELECT unnest($1::uuid[]) AS agent_id, unnest($2::text[]) AS path, unnest($3::text[]) AS state, \
       unnest($4::bigint[]) AS updated_at, unnest($5::bigint[]) AS debounced_until) v \
     WHERE m.agent_id = v.agent_id AND m.path = v.path",
);

/// The per-row metadata write: coderd's single-agent `UpdateWorkspaceAgentMetadata` with one key, counted under the
/// agentwire backend's benchmark name so it never mixes with the batched statement.
const UPDATE_METADATA_ROW: Stmt = Stmt::new(
    "BenchUpdateWorkspaceAgentMetadataRow",
    "UPDATE workspace_agent_metadata SET value = $3, error = $4, collected_at = to_timestamp($5::float8 / 1e6) \
     WHERE workspace_agent_id = $1::uuid AND key = $2",
);

/// A flush's notifications ride in its transaction: delivered at commit, with the rows, and costing no transaction
/// of their own; all of them in one statement, since a stats flush has one per active workspace (a statement each
/// was most of this backend's statements at 1,000 agents: BENCHMARKS.md, "Against coderd itself").
const NOTIFY_IN_FLUSH: Stmt = Stmt::new(
    "pg_notify",
    "SELECT pg_notify(n.channel, n.payload) FROM unnest($1::text[], $2::text[]) AS n(channel, payload)",
);

/// One row's `connections_by_proto` as an element of the statement's JSON array. The handler serialises a map, but
/// jsonb refuses `\u0000`, which an agent can put in a protocol name: one such row would fail every retry of the
/// whole flush, so it loses its breakdown instead (as an empty report has none).
fn proto_counts(json: &str) -> &str {
    if json.is_empty() || json.contains("\\u0000") {
        "{}"
    } else {
        json
    }
}

impl CoderDb {
    async fn notify_and_commit(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        notices: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        if !notices.is_empty() {
            let (channels, payloads): (Vec<&str>, Vec<&str>) = notices.iter().copied().unzip();
            q!(self.counters, PG, NOTIFY_IN_FLUSH).bind(channels).bind(payloads).execute(&mut *tx).await?;
        }
        commit(&self.counters, tx).await?;
        self.counters.notified(notices.len() as u64);
        Ok(true)
    }
}

impl BatchSql for CoderDb {
    // `_days` is agentwire's daily-activity rollup, kept in a table of agentwire's schema. Coder has no such table:
    // coderd's own rollup (`dbrollup` into `template_usage_stats`) reads `workspace_agent_stats` itself, which this
    // flush fills, so writing a rollup here would only duplicate (or contradict) coderd's.
    async fn flush_stats(
        &self,
        rows: &[StatsRow],
        _days: &[ActivitySpan],
        active: &[Uuid],
        notices: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        let mut tx = begin(&self.counters, PG, &self.pool).await?;
        if !rows.is_empty() {
            let n = rows.len();
            let (mut ids, mut created, mut users, mut workspaces, mut templates, mut agents) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let mut by_proto = String::from("[");
            let (mut conns, mut rx_packets, mut rx_bytes, mut tx_packets, mut tx_bytes) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut vscode, mut jetbrains, mut pty, mut ssh, mut latency, mut usage) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for (i, r) in rows.iter().enumerate() {
                let s = &r.report;
                ids.push(id(r.id));
                created.push(r.created_at);
                users.push(id(r.user_id));
                workspaces.push(id(r.workspace_id));
                templates.push(id(r.template_id));
                agents.push(id(r.agent_id));
                if i > 0 {
                    by_proto.push(',');
                }
                by_proto.push_str(proto_counts(&s.connections_by_proto));
                conns.push(s.connection_count);
                rx_packets.push(s.rx_packets);
                rx_bytes.push(s.rx_bytes);
                tx_packets.push(s.tx_packets);
                tx_bytes.push(s.tx_bytes);
                vscode.push(s.session_count_vscode);
                jetbrains.push(s.session_count_jetbrains);
                pty.push(s.session_count_reconnecting_pty);
                ssh.push(s.session_count_ssh);
                latency.push(s.connection_median_latency_ms);
                usage.push(s.usage);
            }
            by_proto.push(']');
            q!(self.counters, PG, INSERT_STATS)
                .bind(ids)
                .bind(created)
                .bind(users)
                .bind(workspaces)
                .bind(templates)
                .bind(agents)
                .bind(by_proto)
                .bind(conns)
                .bind(rx_packets)
                .bind(rx_bytes)
                .bind(tx_packets)
                .bind(tx_bytes)
                .bind(vscode)
                .bind(jetbrains)
                .bind(pty)
                .bind(ssh)
                .bind(latency)
                .bind(usage)
                .execute(&mut *tx)
                .await?;
        }
        if !active.is_empty() {
            let ids: Vec<String> = active.iter().map(|w| id(*w)).collect();
            q!(self.counters, PG, UPDATE_LAST_USED).bind(now_micros()).bind(&ids).execute(&mut *tx).await?;
            q!(self.counters, PG, ACTIVITY_BUMP).bind(&ids).execute(&mut *tx).await?;
        }
        self.notify_and_commit(tx, notices).await
    }

    async fn flush_metadata(&self, entries: &[MetaEntry], notices: &[(&str, &str)]) -> Result<bool, StoreError> {
        let mut tx = begin(&self.counters, PG, &self.pool).await?;
        if !entries.is_empty() {
            let n = entries.len();
            let (mut agents, mut keys, mut values, mut errors, mut at) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for ((agent, key), (value, error, collected_at)) in entries {
                agents.push(id(*agent));
                keys.push(key.as_str());
                values.push(value.as_str());
                errors.push(error.as_str());
                at.push(*collected_at);
            }
            q!(self.counters, PG, BATCH_UPDATE_METADATA)
                .bind(agents)
                .bind(keys)
                .bind(values)
                .bind(errors)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        self.notify_and_commit(tx, notices).await
    }

    async fn flush_heartbeats(&self, entries: &[HeartbeatEntry]) -> Result<(), StoreError> {
        let mut tx = begin(&self.counters, PG, &self.pool).await?;
        if !entries.is_empty() {
            let n = entries.len();
            let (mut agents, mut at, mut replicas) =
                (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
            for (agent, (when, replica)) in entries {
                agents.push(id(*agent));
                at.push(*when);
                replicas.push(id(*replica));
            }
            q!(self.counters, PG, BATCH_UPDATE_HEARTBEATS)
                .bind(agents)
                .bind(at)
                .bind(replicas)
                .bind(now_micros())
                .execute(&mut *tx)
                .await?;
        }
        commit(&self.counters, tx).await
    }

    async fn flush_monitors(
        &self,
        memory: &[MemoryMonitorEntry],
        volumes: &[VolumeMonitorEntry],
    ) -> Result<(), StoreError> {
        let mut tx = begin(&self.counters, PG, &self.pool).await?;
        if !memory.is_empty() {
            let n = memory.len();
            let (mut agents, mut states, mut updated, mut debounced) =
                (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
            for (agent, w) in memory {
                agents.push(id(*agent));
                states.push(w.state.as_str());
                updated.push(w.updated_at);
                debounced.push(w.debounced_until);
            }
            q!(self.counters, PG, UPDATE_MEMORY_MONITORS)
                .bind(agents)
                .bind(states)
                .bind(updated)
                .bind(debounced)
                .execute(&mut *tx)
                .await?;
        }
        if !volumes.is_empty() {
            let n = volumes.len();
            let (mut agents, mut paths, mut states, mut updated, mut debounced) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for ((agent, path), w) in volumes {
                agents.push(id(*agent));
                paths.push(path.as_str());
                states.push(w.state.as_str());
                updated.push(w.updated_at);
                debounced.push(w.debounced_until);
            }
            q!(self.counters, PG, UPDATE_VOLUME_MONITORS)
                .bind(agents)
                .bind(paths)
                .bind(states)
                .bind(updated)
                .bind(debounced)
                .execute(&mut *tx)
                .await?;
        }
        commit(&self.counters, tx).await
    }

    async fn update_metadata_row_per_tx(
        &self,
        agent_id: Uuid,
        key: &str,
        value: &str,
        error: &str,
        collected_at: UnixMicros,
    ) -> Result<u64, StoreError> {
        let mut tx = begin(&self.counters, PG, &self.pool).await?;
        let done = q!(self.counters, PG, UPDATE_METADATA_ROW)
            .bind(id(agent_id))
            .bind(key)
            .bind(value)
            .bind(error)
            .bind(collected_at)
            .execute(&mut *tx)
            .await?;
        commit(&self.counters, tx).await?;
        Ok(done.rows_affected())
    }
}

/// Coder's own code migrates the tests' databases (`interop coderdb`).
#[cfg(test)]
#[path = "../../../../tests/common/coderdb.rs"]
mod coderdb;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::StatsReport;
    use crate::{QueryCounters, StoreOptions};

    use super::coderdb;

    /// A stats flush retried after its COMMIT reached the database (the answer lost with the connection) succeeds
    /// and stores each row once, where coderd's statement would fail on `agent_stats_pkey` at every retry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_stats_flush_skips_the_rows_already_stored() {
        let url = coderdb::migrated_db().await;
        let db =
            super::super::connect(&url, &StoreOptions::default(), Arc::new(QueryCounters::default())).await.unwrap();
        let row = |_| StatsRow {
            id: Uuid::new_v4(),
            created_at: now_micros(),
            agent_id: Uuid::new_v4(),
            workspace_id: Uuid::new_v4(),
            template_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            report: StatsReport { connections_by_proto: r#"{"ssh":1}"#.into(), ..StatsReport::default() },
        };
        let mut rows: Vec<StatsRow> = (0..3).map(row).collect();
        assert!(db.flush_stats(&rows, &[], &[], &[]).await.unwrap());
        rows.push(row(3));
        assert!(db.flush_stats(&rows, &[], &[], &[]).await.unwrap());
        let stored: Vec<(String, String)> =
            sqlx::query_as("SELECT id::text, connections_by_proto::text FROM workspace_agent_stats ORDER BY id")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        let mut want: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
        want.sort();
        assert_eq!(stored.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), want);
        assert!(stored.iter().all(|(_, p)| p == r#"{"ssh": 1}"#));
    }
}
