//! Where the store meets a database: the engines (SQLite, PostgreSQL) and how a URL picks one, the counted
//! query and transaction helpers every statement goes through, and the backend serving agentwire's schema.

mod agentwire;
mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Database, Pool, Transaction};

use std::collections::HashMap;

use uuid::Uuid;

use crate::model::*;
use crate::{AgentScope, QueryCounters, StoreError, StoreOptions};

pub(crate) use agentwire::{with_pool, Db, Pools};
pub use sqlite::SQLITE_READ_ROW_BUFFER;

/// Which engine a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite (the default deployment).
    Sqlite,
    /// PostgreSQL (multi-replica deployments).
    Postgres,
}

/// `sqlx::query` for a named statement, counting it.
macro_rules! q {
    ($counters:expr, $eng:expr, $stmt:expr) => {{
        let stmt: &$crate::counting::Stmt = &$stmt;
        $counters.hit(stmt.name);
        sqlx::query(stmt.sql($eng))
    }};
}
pub(crate) use q;

/// `sqlx::query_as` for a named statement, counting it.
macro_rules! qa {
    ($counters:expr, $eng:expr, $stmt:expr, $ty:ty) => {{
        let stmt: &$crate::counting::Stmt = &$stmt;
        $counters.hit(stmt.name);
        sqlx::query_as::<_, $ty>(stmt.sql($eng))
    }};
}
pub(crate) use qa;

/// `sqlx::query_scalar` for a named statement, counting it.
macro_rules! qs {
    ($counters:expr, $eng:expr, $stmt:expr, $ty:ty) => {{
        let stmt: &$crate::counting::Stmt = &$stmt;
        $counters.hit(stmt.name);
        sqlx::query_scalar::<_, $ty>(stmt.sql($eng))
    }};
}
pub(crate) use qs;

/// Begin a counted write transaction (`BEGIN IMMEDIATE` on SQLite, see the module doc).
pub(crate) async fn begin<DB: Database>(
    counters: &crate::QueryCounters,
    eng: Engine,
    pool: &Pool<DB>,
) -> Result<Transaction<'static, DB>, StoreError> {
    counters.begin();
    let tx = match eng {
        Engine::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Engine::Postgres => pool.begin().await?,
    };
    Ok(tx)
}

/// Commit a transaction begun with [`begin`], counting it.
pub(crate) async fn commit<DB: Database>(
    counters: &crate::QueryCounters,
    tx: Transaction<'static, DB>,
) -> Result<(), StoreError> {
    match tx.commit().await {
        Ok(()) => {
            counters.commit();
            Ok(())
        }
        Err(e) => {
            counters.rollback();
            Err(e.into())
        }
    }
}

/// Roll back explicitly (dropping a transaction also rolls back, but is not counted).
pub(crate) async fn rollback<DB: Database>(
    counters: &crate::QueryCounters,
    tx: Transaction<'static, DB>,
) -> Result<(), StoreError> {
    counters.rollback();
    tx.rollback().await?;
    Ok(())
}

/// Connect from a URL and apply the embedded migrations (idempotent: already-applied versions
/// are skipped, a changed one is an error).
pub(crate) async fn connect(url: &str, opts: &StoreOptions, counters: Arc<QueryCounters>) -> Result<Db, StoreError> {
    let pools = if url.starts_with("sqlite:") {
        sqlite::connect(url, opts).await?
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        postgres::connect(url, opts).await?
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    };
    Ok(Db { pools, counters })
}

/// Largest number of bind parameters put in one multi-row statement. SQLite's default
/// `SQLITE_MAX_VARIABLE_NUMBER` is 32766 (since 3.32) and Postgres' protocol limit is 65535;
/// staying well under both keeps one code path.
pub(crate) const MAX_BINDS_PER_STATEMENT: usize = 30_000;

/// Rows per multi-row statement for `cols` columns.
pub(crate) fn rows_per_statement(cols: usize) -> usize {
    (MAX_BINDS_PER_STATEMENT / cols.max(1)).max(1)
}

/// Busy timeouts and other SQLite pragmas are applied per connection; this is the default.
pub const DEFAULT_SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The statements behind [`AgentScope`]: every read and write of one agent's rows. Each takes the scope, whose
/// agent id the implementation puts in every statement; values arrive validated (lifecycle states, subsystems,
/// health and log levels are checked by the scope before it calls).
pub(crate) trait AgentSql {
    /// The mutable part of the agent's own row; `None` once it is deleted.
    async fn agent_state(&self, a: &AgentScope) -> Result<Option<AgentState>, StoreError>;
    /// Apps, ordered by slug.
    async fn list_apps(&self, a: &AgentScope) -> Result<Vec<App>, StoreError>;
    /// Scripts, ordered by id.
    async fn list_scripts(&self, a: &AgentScope) -> Result<Vec<Script>, StoreError>;
    /// Metadata descriptions and values, by display order then key.
    async fn list_metadata(&self, a: &AgentScope) -> Result<Vec<Metadata>, StoreError>;
    /// Devcontainers, ordered by creation.
    async fn list_devcontainers(&self, a: &AgentScope) -> Result<Vec<Devcontainer>, StoreError>;
    /// Log sources, ordered by creation.
    async fn list_log_sources(&self, a: &AgentScope) -> Result<Vec<LogSource>, StoreError>;
    /// One statement applying Coder's started_at/ready_at rules; `None` when the agent is deleted.
    async fn update_lifecycle(
        &self,
        a: &AgentScope,
        state: &str,
        changed_at: UnixMicros,
    ) -> Result<Option<LifecycleTimes>, StoreError>;
    /// Version, expanded directory, subsystems (de-duplicated and sorted) and API version.
    async fn update_startup(
        &self,
        a: &AgentScope,
        version: &str,
        expanded_directory: &str,
        subsystems: &[String],
        api_version: &str,
    ) -> Result<(), StoreError>;
    /// Every app of the agent: id, healthcheck URL, current health.
    async fn app_healths(&self, a: &AgentScope) -> Result<HashMap<Uuid, (String, String)>, StoreError>;
    /// Set these apps' health, in one transaction.
    async fn update_app_healths(&self, a: &AgentScope, writes: &[(Uuid, &str)]) -> Result<(), StoreError>;
    /// Insert a status for the app with this slug, reading the previous one in the same transaction; `None`
    /// (nothing written) when the agent has no such app.
    async fn insert_app_status(
        &self,
        a: &AgentScope,
        slug: &str,
        state: &str,
        message: &str,
        uri: Option<&str>,
    ) -> Result<Option<AppStatusOutcome>, StoreError>;
    /// In one transaction: create the "External" source if asked, add `bytes` to the agent's log length unless
    /// that passes `limit` (then mark it overflowed), and insert the already sanitised `(output, level)` lines.
    async fn insert_logs(&self, a: &AgentScope, batch: LogBatch<'_>) -> Result<InsertLogsOutcome, StoreError>;
    /// Insert log sources; existing `(agent, id)` pairs are left as they are.
    async fn upsert_log_sources(&self, a: &AgentScope, sources: &[LogSource]) -> Result<(), StoreError>;
    /// A script's timing; `false` when the script is not the agent's.
    async fn insert_script_timing(&self, a: &AgentScope, t: &ScriptTiming) -> Result<bool, StoreError>;
    /// One upsert into `connection_logs` (Coder SEED semantics); `ip` is already checked.
    async fn insert_connection_log(
        &self,
        a: &AgentScope,
        ev: &ConnectionEvent,
        ip: Option<&str>,
    ) -> Result<(), StoreError>;
    /// The memory monitor, if configured.
    async fn memory_monitor(&self, a: &AgentScope) -> Result<Option<MemoryMonitor>, StoreError>;
    /// Volume monitors, by path.
    async fn volume_monitors(&self, a: &AgentScope) -> Result<Vec<VolumeMonitor>, StoreError>;
    /// Write the memory monitor's state; `false` if there is none.
    async fn update_memory_monitor(
        &self,
        a: &AgentScope,
        state: &str,
        updated_at: UnixMicros,
        debounced_until: UnixMicros,
    ) -> Result<bool, StoreError>;
    /// Write one volume monitor's state; `false` if there is none at `path`.
    async fn update_volume_monitor(
        &self,
        a: &AgentScope,
        path: &str,
        state: &str,
        updated_at: UnixMicros,
        debounced_until: UnixMicros,
    ) -> Result<bool, StoreError>;
    /// Insert `sub` as a child of the agent on its resource, inheriting its timeout, URL and key scope.
    async fn create_sub_agent(&self, a: &AgentScope, sub: &SubAgent, new: &NewSubAgent) -> Result<(), StoreError>;
    /// The agent's live children.
    async fn list_sub_agents(&self, a: &AgentScope) -> Result<Vec<SubAgent>, StoreError>;
    /// Soft-delete one of the agent's children and its context rows; `false` if no such child.
    async fn delete_sub_agent(&self, a: &AgentScope, sub_agent_id: Uuid) -> Result<bool, StoreError>;
    /// Ensure the session (owned by the agent) and insert the logs in one transaction; `false` and nothing
    /// written when the session belongs to another agent.
    async fn insert_boundary_logs(
        &self,
        a: &AgentScope,
        session_id: Uuid,
        confined_process_name: &str,
        logs: &[BoundaryLog],
    ) -> Result<bool, StoreError>;
    /// Read-modify-write of the context snapshot and resources; `false` (nothing written) when a snapshot
    /// exists, the push is not `initial`, and its version is not newer.
    async fn push_context_state(&self, a: &AgentScope, st: &ContextState) -> Result<bool, StoreError>;
    /// Log lines with an id above `after_id`, oldest first.
    async fn logs_after(&self, a: &AgentScope, after_id: i64) -> Result<Vec<AgentLog>, StoreError>;
    /// Timings of the agent's scripts.
    async fn script_timings(&self, a: &AgentScope) -> Result<Vec<ScriptTiming>, StoreError>;
    /// Connection log entries of the agent (its workspace and name), oldest first.
    async fn connection_logs(&self, a: &AgentScope) -> Result<Vec<ConnectionLogEntry>, StoreError>;
    /// Set a pre-provisioned child's display apps, and its directory unless empty; `None` when it is not a live
    /// child of the agent.
    async fn update_sub_agent(
        &self,
        a: &AgentScope,
        sub_agent_id: Uuid,
        display_apps: &[String],
        directory: &str,
    ) -> Result<Option<SubAgent>, StoreError>;
    /// Connection start; `None` when the agent is deleted.
    async fn mark_connected(
        &self,
        a: &AgentScope,
        replica_id: Uuid,
        api_version: &str,
    ) -> Result<Option<ConnectionTimes>, StoreError>;
    /// Connection end.
    async fn mark_disconnected(&self, a: &AgentScope, replica_id: Uuid) -> Result<(), StoreError>;
}

/// A batch of log lines for [`AgentSql::insert_logs`], validated and sanitised by the scope.
pub(crate) struct LogBatch<'a> {
    /// The source the lines belong to.
    pub source: Uuid,
    /// Create Coder's "External" source first (the agent sent the nil source id).
    pub ensure_external_source: bool,
    /// `(output, level)`, outputs already cut.
    pub lines: &'a [(String, &'a str)],
    /// Full sanitised length of the lines, what counts against the limit.
    pub bytes: i64,
    /// The agent's log byte limit.
    pub limit: i64,
}
