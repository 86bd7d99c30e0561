//! Where the store meets a database: the contract a backend implements (`AgentSql`, `AdminSql`,
//! `LookupSql`, `BatchSql`, `AggregateSql`, `TailnetSql`; `DefinitionSql` in `definition.rs`), the engines and how a
//! URL picks one, and the counted query and transaction helpers.
//!
//! The traits are the whole of what the rooms above ask of a database: domain values in, rows out, every
//! statement counted under its name. `agentwire/` implements them for agentwire's own schema on both engines;
//! a backend on another schema (Coder's) implements them in a module of its own.

mod agentwire;
mod coder;
mod definition;
mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Database, Pool, Transaction};

use uuid::Uuid;

use crate::model::*;
use crate::rows::{
    ActivityDay, ActivitySpan, AgentStatsWindow, BuildDuration, BuildIds, CreatedAgent, DemoHistory, DemoStat,
    HeartbeatEntry, JobState, MemoryMonitorEntry, MetaEntry, NewAgent, NewApp, NewMetadata, NewScript, StatsRow,
    TemplateDayUsers, TemplateIds, TemplateRow, UserActivityDay, VolumeMonitorEntry, WorkspaceStateCounts,
};
use crate::tailnet::rows::{TailnetCoordinator, TailnetPeer, TailnetTunnel, TailnetWrites};
use crate::{AgentScope, QueryCounters, StoreError, StoreOptions};

pub use crate::engine::Engine;
pub(crate) use agentwire::{with_pool, AgentwireDb, Pools};
pub(crate) use coder::CoderDb;
pub use coder::SUPPORTED_CODER_SCHEMA_VERSIONS;
pub(crate) use definition::DefinitionSql;
pub use sqlite::SQLITE_READ_ROW_BUFFER;

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

/// The database a store talks to: agentwire's own schema (either engine), or a Coder deployment's.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    /// agentwire's schema (`migrations/`), SQLite or PostgreSQL.
    Agentwire(AgentwireDb),
    /// Coder's schema, on the PostgreSQL database coderd itself uses.
    Coder(CoderDb),
}

impl Db {
    pub fn engine(&self) -> Engine {
        match self {
            Db::Agentwire(db) => db.engine(),
            Db::Coder(_) => Engine::Postgres,
        }
    }

    pub fn schema(&self) -> crate::Schema {
        match self {
            Db::Agentwire(_) => crate::Schema::Agentwire,
            Db::Coder(_) => crate::Schema::Coder,
        }
    }

    /// The agentwire-schema backend; panics on a Coder database (tests of agentwire's own tables only).
    #[cfg(test)]
    pub fn agentwire(&self) -> &AgentwireDb {
        match self {
            Db::Agentwire(db) => db,
            Db::Coder(_) => panic!("a store on agentwire's schema"),
        }
    }

    /// The PostgreSQL pool, for LISTEN/NOTIFY; `None` on SQLite.
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match self {
            Db::Agentwire(AgentwireDb { pools: Pools::Postgres(pool), .. }) => Some(pool),
            Db::Agentwire(_) => None,
            Db::Coder(db) => Some(&db.pool),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Agentwire(db) => db.close().await,
            Db::Coder(db) => db.pool.close().await,
        }
    }
}

/// Connect from a URL and apply the embedded migrations (idempotent: already-applied versions
/// are skipped, a changed one is an error).
pub(crate) async fn connect(url: &str, opts: &StoreOptions, counters: Arc<QueryCounters>) -> Result<Db, StoreError> {
    let pools = if url.starts_with("sqlite:") {
        sqlite::connect(url, opts).await?
    } else if is_postgres_url(url) {
        postgres::connect(url, opts).await?
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    };
    Ok(Db::Agentwire(AgentwireDb { pools, counters }))
}

/// Connect to a Coder deployment's database. Nothing is migrated: the schema is coderd's, and a version this
/// build does not know is refused (see [`SUPPORTED_CODER_SCHEMA_VERSIONS`]).
pub(crate) async fn connect_coder(
    url: &str,
    opts: &StoreOptions,
    counters: Arc<QueryCounters>,
) -> Result<Db, StoreError> {
    if !is_postgres_url(url) {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    Ok(Db::Coder(coder::connect(url, opts, counters).await?))
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres:") || url.starts_with("postgresql:")
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

/// Declares a trait of the backend contract and implements it for [`Db`], each method handing the call to the
/// backend the store was opened on. The signatures are written once, here, so a method added to the contract is
/// forwarded by construction and a backend that lacks it does not compile.
macro_rules! contract {
    (
        $(#[$trait_meta:meta])*
        pub(crate) trait $trait:ident {
            $(
                $(#[$meta:meta])*
                async fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
            )*
        }
    ) => {
        $(#[$trait_meta])*
        pub(crate) trait $trait {
            $(
                $(#[$meta])*
                async fn $name(&self $(, $arg: $ty)*) -> $ret;
            )*
        }

        impl $trait for $crate::backend::Db {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        $crate::backend::Db::Agentwire(db) => db.$name($($arg),*).await,
                        $crate::backend::Db::Coder(db) => db.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}
pub(crate) use contract;

contract! {
    /// The statements behind [`AgentScope`]: every read and write of one agent's rows. Each takes the scope, whose
    /// agent id the implementation puts in every statement; values arrive validated (lifecycle states, subsystems,
    /// health and log levels are checked by the scope before it calls).
    pub(crate) trait AgentSql {
        /// The mutable part of the agent's own row; `None` once it is deleted.
        async fn agent_state(&self, a: &AgentScope) -> Result<Option<AgentState>, StoreError>;
        /// Apps, ordered by slug.
        async fn list_apps(&self, a: &AgentScope) -> Result<Vec<App>, StoreError>;
        /// Scripts, in the order the backend's coderd would hand them out (agentwire's schema: by id).
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
        /// The key pair of the agent's owner, if stored.
        async fn owner_git_ssh_key(&self, a: &AgentScope) -> Result<Option<GitSshKey>, StoreError>;
        /// Store a key pair for the agent's owner unless one exists; the owner's key as stored.
        async fn insert_owner_git_ssh_key(
            &self,
            a: &AgentScope,
            private_key: &str,
            public_key: &str,
        ) -> Result<GitSshKey, StoreError>;
        /// `ActivityBumpWorkspace` of the agent's workspace.
        async fn bump_workspace_activity(&self, a: &AgentScope) -> Result<(), StoreError>;
    }
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

contract! {
    /// The operator's writes behind [`crate::Admin`]: fixtures, site configuration, API keys. Ids of new rows are
    /// made by the implementation unless passed in.
    pub(crate) trait AdminSql {
        /// Create (or find) an organization by name.
        async fn ensure_organization(&self, name: &str) -> Result<Uuid, StoreError>;
        /// Create a user.
        async fn create_user(&self, username: &str, email: &str) -> Result<Uuid, StoreError>;
        /// The id of a user that is not deleted, by username: lets operator commands reuse an owner.
        async fn user_id(&self, username: &str) -> Result<Option<Uuid>, StoreError>;
        /// A template with one (active) version and its import job, in the given organization, in one transaction.
        async fn create_template(&self, organization_id: Uuid, name: &str) -> Result<TemplateIds, StoreError>;
        /// A workspace of `template_id` owned by `owner_id`, without builds; its id.
        async fn create_workspace(&self, owner_id: Uuid, template_id: Uuid, name: &str) -> Result<Uuid, StoreError>;
        /// Add a build (`start`, `stop` or `delete`) to a workspace, with its job in `state` and
        /// one resource.
        async fn create_build(&self, workspace_id: Uuid, transition: &str, state: JobState)
            -> Result<BuildIds, StoreError>;
        /// Move a provisioner job to `state`.
        async fn set_job_state(&self, job_id: Uuid, state: JobState) -> Result<(), StoreError>;
        /// Set a build's autostop deadline and its hard cap (unix µs; 0 = none), as the provisioner would.
        async fn set_build_deadline(&self, build_id: Uuid, deadline: i64, max_deadline: i64) -> Result<(), StoreError>;
        /// A build's deadline and the workspace's `last_used_at` (unix µs), for operators and tests.
        async fn build_activity(&self, build_id: Uuid) -> Result<Option<(i64, i64)>, StoreError>;
        /// Soft-delete a workspace.
        async fn delete_workspace(&self, workspace_id: Uuid) -> Result<(), StoreError>;
        /// Create an agent on a resource with a fresh token.
        async fn create_agent(&self, resource_id: Uuid, agent: &NewAgent) -> Result<CreatedAgent, StoreError>;
        /// Add an app to an agent.
        async fn add_app(&self, agent_id: Uuid, app: &NewApp) -> Result<Uuid, StoreError>;
        /// Add a script (and its log source) to an agent.
        async fn add_script(&self, agent_id: Uuid, s: &NewScript) -> Result<Uuid, StoreError>;
        /// Add a metadata description (the row the agent's updates then change).
        async fn add_metadata_description(&self, agent_id: Uuid, m: &NewMetadata) -> Result<(), StoreError>;
        /// Add a devcontainer to an agent.
        async fn add_devcontainer(
            &self,
            agent_id: Uuid,
            name: &str,
            workspace_folder: &str,
            config_path: &str,
        ) -> Result<Uuid, StoreError>;
        /// Add a memory monitor (threshold in percent).
        async fn add_memory_monitor(&self, agent_id: Uuid, enabled: bool, threshold: i64) -> Result<(), StoreError>;
        /// Add a volume monitor (threshold in percent).
        async fn add_volume_monitor(
            &self,
            agent_id: Uuid,
            path: &str,
            enabled: bool,
            threshold: i64,
        ) -> Result<(), StoreError>;
        /// Set a `site_configs` value (JSON text).
        async fn set_site_config(&self, key: &str, value: &str) -> Result<(), StoreError>;
        /// Store an API key of `user_id` (its id and the secret's hash) valid for `lifetime` from now.
        async fn insert_api_key(
            &self,
            key_id: &str,
            hashed_secret: &str,
            user_id: Uuid,
            lifetime: Duration,
        ) -> Result<(), StoreError>;
    }
}

contract! {
    /// The store-wide reads: the token lookup, `site_configs`, user API keys and a watcher's metadata read.
    pub(crate) trait LookupSql {
        /// The live agent holding this token, with its workspace, owner, template and build verdicts.
        async fn resolve_agent_by_token(&self, token: Uuid) -> Result<Option<ResolvedAgent>, StoreError>;
        /// A `site_configs` value.
        async fn site_config(&self, key: &str) -> Result<Option<String>, StoreError>;
        /// The user of the unexpired key `key_id` (of a user not deleted) when its stored hash equals
        /// `hashed_secret`, compared in constant time.
        async fn user_by_api_key(&self, key_id: &str, hashed_secret: &str) -> Result<Option<Uuid>, StoreError>;
        /// An agent's metadata rows when `user_id` owns its workspace; `None` when the agent is unknown, deleted, or
        /// not the user's.
        async fn agent_metadata_for_user(&self, user_id: Uuid, agent_id: Uuid)
            -> Result<Option<Vec<Metadata>>, StoreError>;
    }
}

contract! {
    /// The build watcher's read: which sessions' builds are no longer their workspace's latest.
    pub(crate) trait BuildSql {
        /// Those of `build_ids` that a newer build of the same workspace has superseded (a deleted workspace's
        /// builds included: coderd ends those agents too). One statement per [`rows_per_statement`] ids.
        async fn superseded_builds(&self, build_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;
    }
}

contract! {
    /// The batchers' writes: each flush is one transaction, every statement in it counted under its name. A flush's
    /// notifications (`(channel, payload)`) may be sent inside that transaction, delivered at commit and costing no
    /// transaction of their own; a backend that does so answers `true`, otherwise the batcher publishes them after.
    pub(crate) trait BatchSql {
        /// Insert stats `rows` (ids already stored are skipped, so a flush retried after a commit whose answer was
        /// lost succeeds), widen the activity rollup by `days`, and for the `active` workspaces set `last_used_at` and
        /// bump the deadline of their latest build (Coder's `ActivityBumpWorkspace`).
        async fn flush_stats(
            &self,
            rows: &[StatsRow],
            days: &[ActivitySpan],
            active: &[Uuid],
            notices: &[(&str, &str)],
        ) -> Result<bool, StoreError>;
        /// Set the value, error and collection time of these `(agent, key)` metadata rows; keys that were not
        /// described at build time are left alone.
        async fn flush_metadata(&self, entries: &[MetaEntry], notices: &[(&str, &str)]) -> Result<bool, StoreError>;
        /// Refresh agents' `last_connected_at` and replica, never moving the timestamp backwards.
        async fn flush_heartbeats(&self, entries: &[HeartbeatEntry]) -> Result<(), StoreError>;
        /// Set the state, `updated_at` and debounce of these memory monitors (by agent) and volume monitors (by agent
        /// and path): one statement per kind that has entries. A monitor that no longer exists is left alone.
        async fn flush_monitors(
            &self,
            memory: &[MemoryMonitorEntry],
            volumes: &[VolumeMonitorEntry],
        ) -> Result<(), StoreError>;
        /// Benchmark only: one metadata key in a transaction of its own, the per-row shape the batcher replaces,
        /// counted under a name of its own. The rows changed.
        async fn update_metadata_row_per_tx(
            &self,
            agent_id: Uuid,
            key: &str,
            value: &str,
            error: &str,
            collected_at: UnixMicros,
        ) -> Result<u64, StoreError>;
    }
}

contract! {
    /// The deployment-wide reads of the metrics snapshotter and the insights endpoints, and the bulk writer behind
    /// `agentwire demo-data`. Reads return rows as they are; percentiles, timezones and rollups are the caller's.
    pub(crate) trait AggregateSql {
        /// Ids of the templates that are not deleted, in id order.
        async fn active_template_ids(&self) -> Result<Vec<Uuid>, StoreError>;
        /// The activity rollup: one row per (template, user, UTC day).
        async fn user_activity_days(&self) -> Result<Vec<ActivityDay>, StoreError>;
        /// The activity rollup folded per (user, UTC day) across templates.
        async fn user_activity_by_day(&self) -> Result<Vec<UserActivityDay>, StoreError>;
        /// Active users per (template, UTC day).
        async fn template_users_by_day(&self) -> Result<Vec<TemplateDayUsers>, StoreError>;
        /// Distinct users ever active per template.
        async fn template_unique_users(&self) -> Result<Vec<(Uuid, i64)>, StoreError>;
        /// The `per_template` most recent successful builds of each non-deleted template whose job started after
        /// `started_after`.
        async fn recent_build_durations(
            &self,
            started_after: UnixMicros,
            per_template: i64,
        ) -> Result<Vec<BuildDuration>, StoreError>;
        /// Sums and latencies of the agent stats rows created after `since`.
        async fn agent_stats_window(&self, since: UnixMicros) -> Result<AgentStatsWindow, StoreError>;
        /// Non-deleted workspaces by their latest build's job state; a running job without a heartbeat since
        /// `heartbeat_after` counts as neither building nor anything else.
        async fn workspace_state_counts(&self, heartbeat_after: UnixMicros) -> Result<WorkspaceStateCounts, StoreError>;
        /// A template that is not deleted.
        async fn template_by_id(&self, template_id: Uuid) -> Result<Option<TemplateRow>, StoreError>;
        /// Demo data: the users, templates (with their version and import job), workspaces, and builds with their jobs
        /// of `h`, in organization `organization_id`, in one transaction.
        async fn insert_demo_fixtures(&self, organization_id: Uuid, h: &DemoHistory) -> Result<(), StoreError>;
        /// Demo data: stats rows and the activity rollup `days` folded from them, in one transaction.
        async fn insert_demo_stats(&self, stats: &[DemoStat], days: &[ActivitySpan]) -> Result<(), StoreError>;
    }
}

contract! {
    /// Coder's HA tailnet coordination state (enterprise PGCoordinator's, `crate::tailnet`): each statement one of
    /// `coderd/database/queries/tailnet.sql`, counted under its name, several rows at once where PGCoordinator writes
    /// or reads one per peer. agentwire's schema has none of these tables and refuses every call.
    pub(crate) trait TailnetSql {
        /// `UpsertTailnetCoordinator`.
        async fn upsert_tailnet_coordinator(&self, coordinator: Uuid) -> Result<(), StoreError>;
        /// A coordinator's writes in the order of [`TailnetWrites`]' fields, in one transaction when more than one
        /// statement runs.
        async fn write_tailnet(&self, coordinator: Uuid, writes: &TailnetWrites) -> Result<(), StoreError>;
        /// `UpdateTailnetPeerStatusByCoordinator` to `lost`.
        async fn mark_tailnet_peers_lost(&self, coordinator: Uuid) -> Result<(), StoreError>;
        /// `GetTailnetPeers` of several peers.
        async fn tailnet_peers(&self, ids: &[Uuid]) -> Result<Vec<TailnetPeer>, StoreError>;
        /// The rows of these `(src, dst)` tunnels.
        async fn tailnet_tunnels(&self, pairs: &[(Uuid, Uuid)]) -> Result<Vec<TailnetTunnel>, StoreError>;
        /// `GetAllTailnetPeers`.
        async fn all_tailnet_peers(&self) -> Result<Vec<TailnetPeer>, StoreError>;
        /// `GetAllTailnetTunnels`.
        async fn all_tailnet_tunnels(&self) -> Result<Vec<TailnetTunnel>, StoreError>;
        /// `GetAllTailnetCoordinators`.
        async fn tailnet_coordinators(&self) -> Result<Vec<TailnetCoordinator>, StoreError>;
        /// `CleanTailnetCoordinators`, `CleanTailnetLostPeers`, `CleanTailnetTunnels`.
        async fn clean_tailnet(&self) -> Result<(), StoreError>;
    }
}
