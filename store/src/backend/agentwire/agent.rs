//! [`AgentSql`] on agentwire's schema: the per-agent reads and writes behind [`AgentScope`], written once for
//! both engines. Ids are bound as text (the scope's `agent_key`), JSON arrays as text.

use std::collections::HashMap;

use uuid::Uuid;

use super::agent_sql::*;
use crate::backend::{
    begin, commit, q, qa, qs, rollback, rows_per_statement, with_pool, AgentSql, AgentwireDb, LogBatch,
};
use crate::counting::Stmt;
use crate::model::*;
use crate::scope::EXTERNAL_LOG_SOURCE_ID;
use crate::{AgentScope, StoreError};

/// A JSON array of strings, as the TEXT columns `display_apps` and `subsystems` hold it.
pub(crate) fn json_string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

/// A row type both engines' rows decode into (every `#[derive(sqlx::FromRow)]` of the model).
trait FromEngineRow:
    for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin
{
}

impl<T> FromEngineRow for T where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin
{
}

impl AgentwireDb {
    /// Every row `stmt` reads for the scope's agent, whose key is the statement's one parameter.
    async fn agent_rows<T: FromEngineRow>(&self, a: &AgentScope, stmt: &Stmt) -> Result<Vec<T>, StoreError> {
        let rows = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, *stmt, T).bind(&a.agent_key).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// The row `stmt` reads for the scope's agent, if any, as [`AgentwireDb::agent_rows`].
    async fn agent_row<T: FromEngineRow>(&self, a: &AgentScope, stmt: &Stmt) -> Result<Option<T>, StoreError> {
        let row = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, *stmt, T).bind(&a.agent_key).fetch_optional(pool).await?
        });
        Ok(row)
    }
}

impl AgentSql for AgentwireDb {
    async fn agent_state(&self, a: &AgentScope) -> Result<Option<AgentState>, StoreError> {
        self.agent_row(a, &GET_STATE).await
    }

    async fn list_apps(&self, a: &AgentScope) -> Result<Vec<App>, StoreError> {
        self.agent_rows(a, &LIST_APPS).await
    }

    async fn list_scripts(&self, a: &AgentScope) -> Result<Vec<Script>, StoreError> {
        self.agent_rows(a, &LIST_SCRIPTS).await
    }

    async fn list_metadata(&self, a: &AgentScope) -> Result<Vec<Metadata>, StoreError> {
        self.agent_rows(a, &LIST_METADATA).await
    }

    async fn list_devcontainers(&self, a: &AgentScope) -> Result<Vec<Devcontainer>, StoreError> {
        self.agent_rows(a, &LIST_DEVCONTAINERS).await
    }

    async fn list_log_sources(&self, a: &AgentScope) -> Result<Vec<LogSource>, StoreError> {
        self.agent_rows(a, &LIST_LOG_SOURCES).await
    }

    async fn update_lifecycle(
        &self,
        a: &AgentScope,
        state: &str,
        changed_at: UnixMicros,
    ) -> Result<Option<LifecycleTimes>, StoreError> {
        let row = with_pool!(self, write, |eng, pool| {
            qa!(self.counters, eng, UPDATE_LIFECYCLE, LifecycleTimes)
                .bind(&a.agent_key)
                .bind(state)
                .bind(changed_at)
                .bind(now_micros())
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    async fn update_startup(
        &self,
        a: &AgentScope,
        version: &str,
        expanded_directory: &str,
        subsystems: &[String],
        api_version: &str,
    ) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, UPDATE_STARTUP)
                .bind(&a.agent_key)
                .bind(version)
                .bind(expanded_directory)
                .bind(json_string_array(subsystems))
                .bind(api_version)
                .bind(now_micros())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn app_healths(&self, a: &AgentScope) -> Result<HashMap<Uuid, (String, String)>, StoreError> {
        let apps: Vec<(String, String, String)> = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, APP_HEALTHS, (String, String, String)).bind(&a.agent_key).fetch_all(pool).await?
        });
        // Ids are written by this store in canonical form; one that does not parse matches no caller's id.
        Ok(apps.into_iter().filter_map(|(i, u, h)| Some((Uuid::parse_str(&i).ok()?, (u, h)))).collect())
    }

    async fn update_app_healths(&self, a: &AgentScope, writes: &[(Uuid, &str)]) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            for (app, health) in writes {
                q!(self.counters, eng, UPDATE_APP_HEALTH)
                    .bind(id(*app))
                    .bind(&a.agent_key)
                    .bind(*health)
                    .execute(&mut *tx)
                    .await?;
            }
            commit(&self.counters, tx).await?;
        });
        Ok(())
    }

    async fn insert_app_status(
        &self,
        a: &AgentScope,
        slug: &str,
        state: &str,
        message: &str,
        uri: Option<&str>,
    ) -> Result<Option<AppStatusOutcome>, StoreError> {
        let status_id = Uuid::new_v4();
        let out = with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            let app: Option<String> = qs!(self.counters, eng, APP_BY_SLUG, String)
                .bind(&a.agent_key)
                .bind(slug)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(app) = app else {
                rollback(&self.counters, tx).await?;
                return Ok(None);
            };
            let previous: Option<String> =
                qs!(self.counters, eng, LATEST_APP_STATUS, String).bind(&app).fetch_optional(&mut *tx).await?;
            q!(self.counters, eng, INSERT_APP_STATUS)
                .bind(id(status_id))
                .bind(now_micros())
                .bind(id(a.agent().workspace_id))
                .bind(&a.agent_key)
                .bind(&app)
                .bind(state)
                .bind(message)
                .bind(uri)
                .execute(&mut *tx)
                .await?;
            commit(&self.counters, tx).await?;
            let app_id = Uuid::parse_str(&app).map_err(|e| StoreError::corrupt("workspace_apps", e.to_string()))?;
            AppStatusOutcome { app_id, status_id, previous_state: previous }
        });
        Ok(Some(out))
    }

    async fn insert_logs(&self, a: &AgentScope, batch: LogBatch<'_>) -> Result<InsertLogsOutcome, StoreError> {
        let LogBatch { source, ensure_external_source, lines, bytes, limit } = batch;
        let now = now_micros();
        let out = with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            if ensure_external_source {
                q!(self.counters, eng, INSERT_LOG_SOURCE)
                    .bind(&a.agent_key)
                    .bind(id(EXTERNAL_LOG_SOURCE_ID))
                    .bind(now)
                    .bind("External")
                    .bind("/emojis/1f310.png")
                    .execute(&mut *tx)
                    .await?;
            }
            let before: Option<i64> = qs!(self.counters, eng, ADD_LOGS_LENGTH, i64)
                .bind(&a.agent_key)
                .bind(bytes)
                .bind(limit)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(before) = before else {
                let r = q!(self.counters, eng, SET_LOGS_OVERFLOWED).bind(&a.agent_key).execute(&mut *tx).await?;
                commit(&self.counters, tx).await?;
                return Ok(InsertLogsOutcome::LimitExceeded { newly: r.rows_affected() > 0 });
            };
            let mut first_id = i64::MAX;
            for chunk in lines.chunks(rows_per_statement(5)) {
                self.counters.hit(INSERT_LOGS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO workspace_agent_logs (agent_id, created_at, output, level, \
                     log_source_id) ",
                );
                qb.push_values(chunk, |mut b, (output, level)| {
                    b.push_bind(a.agent_key.as_str())
                        .push_bind(now)
                        .push_bind(output.as_str())
                        .push_bind(*level)
                        .push_bind(id(source));
                });
                qb.push(" RETURNING id");
                let ids: Vec<i64> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
                if let Some(m) = ids.into_iter().min() {
                    first_id = first_id.min(m);
                }
            }
            commit(&self.counters, tx).await?;
            InsertLogsOutcome::Inserted { first_id, count: lines.len(), first_logs: before == 0 }
        });
        Ok(out)
    }

    async fn upsert_log_sources(&self, a: &AgentScope, sources: &[LogSource]) -> Result<(), StoreError> {
        let now = now_micros();
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            for s in sources {
                q!(self.counters, eng, INSERT_LOG_SOURCE)
                    .bind(&a.agent_key)
                    .bind(id(s.id))
                    .bind(now)
                    .bind(&s.display_name)
                    .bind(&s.icon)
                    .execute(&mut *tx)
                    .await?;
            }
            commit(&self.counters, tx).await?;
        });
        Ok(())
    }

    async fn insert_script_timing(&self, a: &AgentScope, t: &ScriptTiming) -> Result<bool, StoreError> {
        let n = with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, INSERT_SCRIPT_TIMING)
                .bind(id(t.script_id))
                .bind(&a.agent_key)
                .bind(t.started_at)
                .bind(t.ended_at)
                .bind(t.exit_code)
                .bind(&t.stage)
                .bind(&t.status)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    async fn insert_connection_log(
        &self,
        a: &AgentScope,
        ev: &ConnectionEvent,
        ip: Option<&str>,
    ) -> Result<(), StoreError> {
        let (disconnect_time, reason, code) =
            if ev.connect { (None, None, None) } else { (Some(ev.time), ev.disconnect_reason.as_deref(), ev.code) };
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, UPSERT_CONNECTION_LOG)
                .bind(id(Uuid::new_v4()))
                .bind(ev.time)
                .bind(id(a.agent().organization_id))
                .bind(id(a.agent().owner_id))
                .bind(id(a.agent().workspace_id))
                .bind(&a.agent().workspace_name)
                .bind(&a.agent().name)
                .bind(&ev.kind)
                .bind(code)
                .bind(ip)
                .bind(id(ev.connection_id))
                .bind(disconnect_time)
                .bind(reason)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn memory_monitor(&self, a: &AgentScope) -> Result<Option<MemoryMonitor>, StoreError> {
        self.agent_row(a, &GET_MEMORY_MONITOR).await
    }

    async fn volume_monitors(&self, a: &AgentScope) -> Result<Vec<VolumeMonitor>, StoreError> {
        self.agent_rows(a, &GET_VOLUME_MONITORS).await
    }

    async fn create_sub_agent(&self, a: &AgentScope, sub: &SubAgent, new: &NewSubAgent) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, INSERT_SUB_AGENT)
                .bind(id(sub.id))
                .bind(now_micros())
                .bind(&new.name)
                .bind(&a.agent_key)
                .bind(id(a.agent().resource_id))
                .bind(id(sub.auth_token))
                .bind(&new.architecture)
                .bind(&new.operating_system)
                .bind(&new.directory)
                .bind(json_string_array(&new.display_apps))
                .bind(a.agent().connection_timeout_seconds)
                .bind(&a.agent().troubleshooting_url)
                .bind(&a.agent().api_key_scope)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn list_sub_agents(&self, a: &AgentScope) -> Result<Vec<SubAgent>, StoreError> {
        self.agent_rows(a, &LIST_SUB_AGENTS).await
    }

    async fn delete_sub_agent(&self, a: &AgentScope, sub_agent_id: Uuid) -> Result<bool, StoreError> {
        let deleted = with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            let n = q!(self.counters, eng, DELETE_SUB_AGENT)
                .bind(id(sub_agent_id))
                .bind(&a.agent_key)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                rollback(&self.counters, tx).await?;
                return Ok(false);
            }
            q!(self.counters, eng, DELETE_SUB_AGENT_CONTEXT).bind(id(sub_agent_id)).execute(&mut *tx).await?;
            q!(self.counters, eng, DELETE_SUB_AGENT_SNAPSHOT).bind(id(sub_agent_id)).execute(&mut *tx).await?;
            commit(&self.counters, tx).await?;
            true
        });
        Ok(deleted)
    }

    async fn insert_boundary_logs(
        &self,
        a: &AgentScope,
        session_id: Uuid,
        confined_process_name: &str,
        logs: &[BoundaryLog],
    ) -> Result<bool, StoreError> {
        let now = now_micros();
        let ok = with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            q!(self.counters, eng, ENSURE_BOUNDARY_SESSION)
                .bind(id(session_id))
                .bind(&a.agent_key)
                .bind(id(a.agent().owner_id))
                .bind(confined_process_name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let owner: String = qs!(self.counters, eng, BOUNDARY_SESSION_OWNER, String)
                .bind(id(session_id))
                .fetch_one(&mut *tx)
                .await?;
            if owner != a.agent_key {
                rollback(&self.counters, tx).await?;
                return Ok(false);
            }
            for chunk in logs.chunks(rows_per_statement(10)) {
                self.counters.hit(INSERT_BOUNDARY_LOGS);
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO boundary_logs (id, session_id, sequence_number, captured_at, \
                     created_at, proto, method, detail, matched_rule, owner_id) ",
                );
                qb.push_values(chunk, |mut b, l| {
                    b.push_bind(id(l.id))
                        .push_bind(id(session_id))
                        .push_bind(l.sequence_number)
                        .push_bind(now)
                        .push_bind(l.created_at)
                        .push_bind("http")
                        .push_bind(l.method.as_str())
                        .push_bind(l.detail.as_str())
                        .push_bind(l.matched_rule.as_deref())
                        .push_bind(id(a.agent().owner_id));
                });
                qb.build().execute(&mut *tx).await?;
            }
            commit(&self.counters, tx).await?;
            true
        });
        Ok(ok)
    }

    async fn push_context_state(&self, a: &AgentScope, st: &ContextState) -> Result<bool, StoreError> {
        let now = now_micros();
        let accepted = with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            let existing: Option<i64> =
                qs!(self.counters, eng, GET_CONTEXT_VERSION, i64).bind(&a.agent_key).fetch_optional(&mut *tx).await?;
            if let Some(v) = existing {
                if !st.initial && st.version <= v {
                    rollback(&self.counters, tx).await?;
                    return Ok(false);
                }
            }
            q!(self.counters, eng, UPSERT_CONTEXT_SNAPSHOT)
                .bind(&a.agent_key)
                .bind(st.version)
                .bind(&st.aggregate_hash)
                .bind(&st.snapshot_error)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            for r in &st.resources {
                q!(self.counters, eng, UPSERT_CONTEXT_RESOURCE)
                    .bind(&a.agent_key)
                    .bind(&r.source)
                    .bind(&r.body_kind)
                    .bind(&r.body)
                    .bind(&r.content_hash)
                    .bind(r.size_bytes)
                    .bind(&r.status)
                    .bind(&r.error)
                    .bind(&r.source_path)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            self.counters.hit(DELETE_STALE_CONTEXT);
            let mut qb =
                sqlx::QueryBuilder::new("DELETE FROM workspace_agent_context_resources WHERE workspace_agent_id = ");
            qb.push_bind(a.agent_key.as_str());
            if !st.resources.is_empty() {
                qb.push(" AND source NOT IN (");
                let mut sep = qb.separated(", ");
                for r in &st.resources {
                    sep.push_bind(r.source.as_str());
                }
                qb.push(")");
            }
            qb.build().execute(&mut *tx).await?;
            commit(&self.counters, tx).await?;
            true
        });
        Ok(accepted)
    }

    async fn logs_after(&self, a: &AgentScope, after_id: i64) -> Result<Vec<AgentLog>, StoreError> {
        let rows = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, LOGS_AFTER, AgentLog).bind(&a.agent_key).bind(after_id).fetch_all(pool).await?
        });
        Ok(rows)
    }

    async fn script_timings(&self, a: &AgentScope) -> Result<Vec<ScriptTiming>, StoreError> {
        self.agent_rows(a, &LIST_SCRIPT_TIMINGS).await
    }

    async fn connection_logs(&self, a: &AgentScope) -> Result<Vec<ConnectionLogEntry>, StoreError> {
        let rows = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, LIST_CONNECTION_LOGS, ConnectionLogEntry)
                .bind(id(a.agent().workspace_id))
                .bind(&a.agent().name)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    async fn update_sub_agent(
        &self,
        a: &AgentScope,
        sub_agent_id: Uuid,
        display_apps: &[String],
        directory: &str,
    ) -> Result<Option<SubAgent>, StoreError> {
        let row = with_pool!(self, write, |eng, pool| {
            qa!(self.counters, eng, UPDATE_SUB_AGENT, SubAgent)
                .bind(id(sub_agent_id))
                .bind(&a.agent_key)
                .bind(json_string_array(display_apps))
                .bind(directory)
                .bind(now_micros())
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    async fn mark_connected(
        &self,
        a: &AgentScope,
        replica_id: Uuid,
        api_version: &str,
    ) -> Result<Option<ConnectionTimes>, StoreError> {
        let row = with_pool!(self, write, |eng, pool| {
            qa!(self.counters, eng, MARK_CONNECTED, ConnectionTimes)
                .bind(&a.agent_key)
                .bind(now_micros())
                .bind(id(replica_id))
                .bind(api_version)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    async fn mark_disconnected(&self, a: &AgentScope, replica_id: Uuid) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, MARK_DISCONNECTED)
                .bind(&a.agent_key)
                .bind(now_micros())
                .bind(id(replica_id))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn owner_git_ssh_key(&self, a: &AgentScope) -> Result<Option<GitSshKey>, StoreError> {
        super::owner::git_ssh_key(self, a).await
    }

    async fn insert_owner_git_ssh_key(
        &self,
        a: &AgentScope,
        private_key: &str,
        public_key: &str,
    ) -> Result<GitSshKey, StoreError> {
        super::owner::insert_git_ssh_key(self, a, private_key, public_key).await
    }

    async fn bump_workspace_activity(&self, a: &AgentScope) -> Result<(), StoreError> {
        super::owner::bump_workspace_activity(self, a).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array_escapes() {
        assert_eq!(json_string_array(&["a\"b".into(), "c".into()]), r#"["a\"b","c"]"#);
        assert_eq!(json_string_array(&[]), "[]");
    }
}
