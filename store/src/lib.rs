//! agentwire's SQL store: SQLite (embedded default) or PostgreSQL through sqlx, write batchers,
//! pubsub and query counting.
//!
//! # Shape
//!
//! * [`Store::open`] connects from a URL (`sqlite://path?mode=rwc`, `sqlite::memory:`,
//!   `postgres://…`) and applies the embedded migrations (`migrations/{sqlite,postgres}`).
//! * [`Store::resolve_agent_by_token`] is the **only** agent lookup the session layer gets: one
//!   indexed query joining agent, resource, build, workspace, owner and template.
//! * [`Store::agent`] turns a [`ResolvedAgent`] into an [`AgentScope`], the only door to
//!   per-agent rows. A scope's agent id is fixed at construction and every statement it runs is
//!   constrained by it, so a handler cannot read or write another agent's rows whatever ids it
//!   is handed. There is deliberately no "fetch agent by id" anywhere in the handler API, and a
//!   [`ResolvedAgent`] cannot be built outside this crate: the rule is a matter of types.
//! * [`Store::admin`] is the operator surface (fixtures, `agent create`, `serve --demo`,
//!   site configuration); handlers have no reason to call it.
//!
//! # Sharing code between the engines
//!
//! One [`Store`] type over an internal `enum Db { Sqlite { read, write }, Postgres(pool) }`.
//! Each statement is written once (`$1` placeholders work on both engines) as a named
//! `Stmt` constant; a macro expands the calling code once per engine, so the same Rust and
//! the same SQL are type-checked against both native drivers. Why not sqlx's `Any` driver: it
//! erases types to a handful of scalars, cannot hand out the `PgPool` that `PgListener` needs,
//! and cannot express SQLite's separate single-writer pool. Why not generics over
//! `DB: Database`: the trait bounds for every bound type grow unreadable. No statement currently
//! needs a per-engine spelling (multi-row writes use `QueryBuilder`, which emits each driver's
//! placeholders); DDL lives in two migration folders that differ only
//! in the log table's serial id.
//!
//! # Representation
//!
//! UUIDs are TEXT (lowercase hyphenated) and timestamps BIGINT unix **microseconds** on both
//! engines: one Rust type per column for both drivers, no chrono/time dependency, Postgres'
//! own precision (Coder's `dbtime.Now()`), and integer comparisons in indexes. The cost is
//! that this schema is agentwire's own: it keeps Coder's table and column names, but a Go
//! coderd cannot share the database. Integers are BIGINT (`i64`) everywhere for the same
//! reason.
//!
//! # SQLite writes
//!
//! WAL, `synchronous=NORMAL` (a committed transaction survives a process crash; set
//! [`StoreOptions::sqlite_synchronous_full`] to survive power loss too), a busy timeout, and a
//! single writer connection: in-process writers queue on the pool, never on `SQLITE_BUSY`.
//! Write transactions use `BEGIN IMMEDIATE`.
//!
//! # Durability classes
//!
//! Lifecycle, startup, logs, log sources, script timings, connection logs, app health/status,
//! sub-agents, boundary logs, context state, connect/disconnect: written before the call
//! returns. Stats, metadata and heartbeats: batched ([`batch`]), each flush one transaction.
//!
//! # Pubsub
//!
//! [`Pubsub`] with an in-process implementation (SQLite) and a PostgreSQL LISTEN/NOTIFY one.
//! Channel names and payloads follow Coder's MAIN era (2026): metadata changes are announced on
//! `workspace_agent_metadata_batch` as concatenated 22-character base64 agent ids, not on the
//! seed era's per-agent `workspace_agent_metadata:<id>` JSON. See [`pubsub`].
//!
//! # Counting
//!
//! Every statement runs under a name and bumps [`QueryCounters`] (exported by the server as
//! `agentwire_db_queries_total{query=…}`); transactions and notifications are counted too.
//! Migrations at open time are not counted.

#![warn(missing_docs)]

pub mod aggregates;
pub mod backend;
pub mod batch;
#[doc(hidden)]
pub mod bench_support;
mod counting;
mod error;
pub mod model;
pub mod pubsub;
mod scope;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

pub use backend::{Engine, DEFAULT_SQLITE_BUSY_TIMEOUT};
pub use batch::{BatchOptions, BatcherStats};
pub use counting::{QueryCounters, QuerySnapshot};
pub use error::StoreError;
pub use model::*;
pub use pubsub::{InProcessPubsub, PgPubsub, Pubsub, Subscription};
pub use scope::AgentScope;

use backend::{begin, commit, q, qa, qs, with_pool, Db};
use batch::heartbeat::{Heartbeat, HeartbeatFlush};
use batch::metadata::{MetaItem, MetadataFlush};
use batch::stats::{StatsFlush, StatsRow};
use batch::{BatchCounters, Batcher};
use counting::Stmt;
use model::id;

/// Default SQLite read pool size (WAL readers run beside the single writer).
pub const DEFAULT_SQLITE_READ_CONNECTIONS: u32 = 4;
/// Default PostgreSQL pool size.
pub const DEFAULT_PG_MAX_CONNECTIONS: u32 = 10;
/// Default wait for a pooled connection before a call fails with a (retryable) timeout.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Coder's `max_logs_length`: 1 MiB of log output per agent. Also the schema's CHECK ceiling.
pub const DEFAULT_MAX_LOGS_LENGTH: i64 = 1 << 20;
/// Coder stores `output::varchar(1024)`: longer lines are cut to 1024 characters.
pub const DEFAULT_MAX_LOG_LINE_CHARS: usize = 1024;
/// Stats: flush every second (Coder `defaultFlushInterval`).
pub const DEFAULT_STATS_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Stats: buffer of 1024 rows (Coder `defaultBufferSize`).
pub const DEFAULT_STATS_MAX_ROWS: usize = 1024;
/// Stats: forced flush when the buffer is 80 % full.
pub const DEFAULT_STATS_FORCE_FLUSH_PERCENT: usize = 80;
/// Stats: queue between handlers and the batcher task.
pub const DEFAULT_STATS_QUEUE_CAPACITY: usize = 1024;
/// Metadata: flush every 5 s.
pub const DEFAULT_METADATA_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Metadata: flush at 500 distinct `(agent, key)` entries.
pub const DEFAULT_METADATA_FLUSH_AT: usize = 500;
/// Metadata: queue of 2500 key updates (Coder: batch size × 5); beyond it updates are dropped.
pub const DEFAULT_METADATA_QUEUE_CAPACITY: usize = 2500;
/// Metadata: agent ids per `workspace_agent_metadata_batch` message, ⌊8000 / 22⌋.
pub const DEFAULT_METADATA_NOTIFY_MAX_IDS: usize = 363;
/// Heartbeats: flush every 5 s (well inside Coder's 30 s inactive-disconnect timeout).
pub const DEFAULT_HEARTBEAT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Heartbeats: flush at 500 distinct agents.
pub const DEFAULT_HEARTBEAT_FLUSH_AT: usize = 500;
/// Heartbeats: queue capacity.
pub const DEFAULT_HEARTBEAT_QUEUE_CAPACITY: usize = 2500;

/// Every knob of the store. `Default` gives Coder's values.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// SQLite: how long a connection waits on another *process* holding the lock.
    pub sqlite_busy_timeout: Duration,
    /// SQLite: reader pool size (file databases only).
    pub sqlite_read_connections: u32,
    /// SQLite: `synchronous=FULL` instead of `NORMAL` (survive power loss, slower commits).
    pub sqlite_synchronous_full: bool,
    /// PostgreSQL: pool size.
    pub pg_max_connections: u32,
    /// Wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// Per-agent log byte limit; must not exceed the schema ceiling [`DEFAULT_MAX_LOGS_LENGTH`].
    pub max_logs_length: i64,
    /// Stored log lines are cut to this many characters (the full length still counts).
    pub max_log_line_chars: usize,
    /// Stats batcher timing.
    pub stats_flush_interval: Duration,
    /// Stats rows held at most (also what a failing flush keeps for retry).
    pub stats_max_rows: usize,
    /// Flush when this percentage of `stats_max_rows` is pending.
    pub stats_force_flush_percent: usize,
    /// Stats queue capacity.
    pub stats_queue_capacity: usize,
    /// Metadata batcher timing.
    pub metadata_flush_interval: Duration,
    /// Metadata: flush at this many distinct keys.
    pub metadata_flush_at: usize,
    /// Metadata queue capacity (key updates).
    pub metadata_queue_capacity: usize,
    /// Agent ids per metadata notification.
    pub metadata_notify_max_ids: usize,
    /// Heartbeat batcher timing.
    pub heartbeat_flush_interval: Duration,
    /// Heartbeats: flush at this many distinct agents.
    pub heartbeat_flush_at: usize,
    /// Heartbeat queue capacity.
    pub heartbeat_queue_capacity: usize,
    /// Per-subscriber pubsub queue.
    pub subscriber_queue: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sqlite_busy_timeout: DEFAULT_SQLITE_BUSY_TIMEOUT,
            sqlite_read_connections: DEFAULT_SQLITE_READ_CONNECTIONS,
            sqlite_synchronous_full: false,
            pg_max_connections: DEFAULT_PG_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            max_logs_length: DEFAULT_MAX_LOGS_LENGTH,
            max_log_line_chars: DEFAULT_MAX_LOG_LINE_CHARS,
            stats_flush_interval: DEFAULT_STATS_FLUSH_INTERVAL,
            stats_max_rows: DEFAULT_STATS_MAX_ROWS,
            stats_force_flush_percent: DEFAULT_STATS_FORCE_FLUSH_PERCENT,
            stats_queue_capacity: DEFAULT_STATS_QUEUE_CAPACITY,
            metadata_flush_interval: DEFAULT_METADATA_FLUSH_INTERVAL,
            metadata_flush_at: DEFAULT_METADATA_FLUSH_AT,
            metadata_queue_capacity: DEFAULT_METADATA_QUEUE_CAPACITY,
            metadata_notify_max_ids: DEFAULT_METADATA_NOTIFY_MAX_IDS,
            heartbeat_flush_interval: DEFAULT_HEARTBEAT_FLUSH_INTERVAL,
            heartbeat_flush_at: DEFAULT_HEARTBEAT_FLUSH_AT,
            heartbeat_queue_capacity: DEFAULT_HEARTBEAT_QUEUE_CAPACITY,
            subscriber_queue: pubsub::DEFAULT_SUBSCRIBER_QUEUE,
        }
    }
}

impl StoreOptions {
    fn validate(&self) -> Result<(), StoreError> {
        if self.max_logs_length <= 0 || self.max_logs_length > DEFAULT_MAX_LOGS_LENGTH {
            return Err(StoreError::Options(format!(
                "max_logs_length {} must be in 1..={DEFAULT_MAX_LOGS_LENGTH} (schema CHECK)",
                self.max_logs_length
            )));
        }
        if self.stats_force_flush_percent == 0 || self.stats_force_flush_percent > 100 {
            return Err(StoreError::Options("stats_force_flush_percent must be in 1..=100".into()));
        }
        if self.max_log_line_chars == 0 {
            return Err(StoreError::Options("max_log_line_chars must be > 0".into()));
        }
        Ok(())
    }
}

/// What every clone of a store and every batcher shares.
pub(crate) struct Core {
    pub db: Db,
    pub counters: Arc<QueryCounters>,
    pub pubsub: Arc<dyn Pubsub>,
    pub opts: StoreOptions,
}

struct Inner {
    core: Arc<Core>,
    stats: Batcher<StatsFlush>,
    metadata: Batcher<MetadataFlush>,
    heartbeats: Batcher<HeartbeatFlush>,
}

/// The store handle: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("engine", &self.engine()).finish_non_exhaustive()
    }
}

/// Counters of the three batchers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllBatcherStats {
    /// Stats batcher.
    pub stats: BatcherStats,
    /// Metadata batcher.
    pub metadata: BatcherStats,
    /// Heartbeat batcher.
    pub heartbeats: BatcherStats,
}

const RESOLVE_AGENT_BY_TOKEN: Stmt = Stmt::new(
    "GetAuthenticatedWorkspaceAgentAndBuildByAuthToken",
    // Any live agent's token resolves, with two verdicts for the caller: whether its build is the
    // workspace's latest, and whether Coder MAIN's shutdown exception holds (a succeeded `start`
    // build whose successor is a `stop` still pending or running: the agent must be able to report
    // its shutdown). The endpoint admits either and answers 403 otherwise, so a stale agent learns
    // why instead of getting the 401 an unknown token gets.
    "SELECT a.id, a.name, a.resource_id, a.parent_id, a.directory, a.expanded_directory, \
       a.environment_variables, a.motd_file, a.troubleshooting_url, \
       a.connection_timeout_seconds, a.architecture, a.operating_system, a.version, \
       a.api_version, a.lifecycle_state, a.started_at, a.ready_at, a.logs_length, \
       a.logs_overflowed, a.display_apps, a.subsystems, a.api_key_scope, \
       a.first_connected_at, a.created_at, a.display_order, \
       w.id AS workspace_id, w.name AS workspace_name, w.organization_id, \
       w.autostart_schedule, u.id AS owner_id, u.username AS owner_username, \
       t.id AS template_id, t.name AS template_name, \
       b.id AS build_id, b.build_number, b.transition AS build_transition, \
       b.template_version_id, (b.build_number = lb.build_number) AS is_latest_build, \
       (b.transition = 'start' AND bj.completed_at IS NOT NULL AND bj.canceled_at IS NULL \
         AND COALESCE(bj.error, '') = '' \
         AND lb.build_number = b.build_number + 1 AND lb.transition = 'stop' \
         AND lj.completed_at IS NULL AND lj.canceled_at IS NULL \
         AND COALESCE(lj.error, '') = '') AS in_shutdown_case \
     FROM workspace_agents a \
     JOIN workspace_resources r ON r.id = a.resource_id \
     JOIN workspace_builds b ON b.job_id = r.job_id \
     JOIN provisioner_jobs bj ON bj.id = b.job_id \
     JOIN workspaces w ON w.id = b.workspace_id \
     JOIN users u ON u.id = w.owner_id \
     JOIN templates t ON t.id = w.template_id \
     JOIN workspace_builds lb ON lb.workspace_id = w.id AND lb.build_number = \
       (SELECT MAX(x.build_number) FROM workspace_builds x WHERE x.workspace_id = w.id) \
     JOIN provisioner_jobs lj ON lj.id = lb.job_id \
     WHERE a.auth_token = $1 AND a.deleted = FALSE AND w.deleted = FALSE",
);

impl Store {
    /// Connect, migrate, and start the batchers. Must be called inside a tokio runtime.
    pub async fn open(url: &str, opts: StoreOptions) -> Result<Store, StoreError> {
        opts.validate()?;
        let db = backend::connect(url, &opts).await?;
        let counters = Arc::new(QueryCounters::default());
        let pubsub: Arc<dyn Pubsub> = match &db {
            Db::Postgres(pool) => Arc::new(PgPubsub::new(pool.clone(), opts.subscriber_queue, counters.clone())),
            Db::Sqlite { .. } => Arc::new(InProcessPubsub::new(opts.subscriber_queue, counters.clone())),
        };
        let core = Arc::new(Core { db, counters, pubsub, opts: opts.clone() });
        let stats_flush_at = (opts.stats_max_rows * opts.stats_force_flush_percent / 100).max(1);
        let stats = Batcher::spawn(
            StatsFlush { core: core.clone(), max_rows: opts.stats_max_rows },
            BatchOptions {
                flush_interval: opts.stats_flush_interval,
                flush_at: stats_flush_at,
                queue_capacity: opts.stats_queue_capacity,
            },
            Arc::new(BatchCounters::default()),
        );
        let metadata = Batcher::spawn(
            MetadataFlush { core: core.clone(), notify_max_ids: opts.metadata_notify_max_ids },
            BatchOptions {
                flush_interval: opts.metadata_flush_interval,
                flush_at: opts.metadata_flush_at,
                queue_capacity: opts.metadata_queue_capacity,
            },
            Arc::new(BatchCounters::default()),
        );
        let heartbeats = Batcher::spawn(
            HeartbeatFlush { core: core.clone() },
            BatchOptions {
                flush_interval: opts.heartbeat_flush_interval,
                flush_at: opts.heartbeat_flush_at,
                queue_capacity: opts.heartbeat_queue_capacity,
            },
            Arc::new(BatchCounters::default()),
        );
        Ok(Store { inner: Arc::new(Inner { core, stats, metadata, heartbeats }) })
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// Which engine this store talks to.
    pub fn engine(&self) -> Engine {
        self.inner.core.db.engine()
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.core.opts
    }

    /// Statement, transaction and notification counters.
    pub fn queries(&self) -> &QueryCounters {
        &self.inner.core.counters
    }

    /// The pubsub this store publishes on.
    pub fn pubsub(&self) -> &Arc<dyn Pubsub> {
        &self.inner.core.pubsub
    }

    /// Batcher counters (enqueued, dropped, flushes, errors).
    pub fn batcher_stats(&self) -> AllBatcherStats {
        AllBatcherStats {
            stats: self.inner.stats.stats(),
            metadata: self.inner.metadata.stats(),
            heartbeats: self.inner.heartbeats.stats(),
        }
    }

    /// Flush every batcher now and wait (tests, and before answering a health probe).
    pub async fn flush(&self) {
        self.inner.stats.flush().await;
        self.inner.metadata.flush().await;
        self.inner.heartbeats.flush().await;
    }

    /// Flush every batcher and stop them; later enqueues are dropped and counted. Does not
    /// close the pools (other clones may still run durable writes); see [`Store::close`].
    pub async fn shutdown(&self) {
        self.inner.stats.shutdown().await;
        self.inner.metadata.shutdown().await;
        self.inner.heartbeats.shutdown().await;
    }

    /// [`Store::shutdown`], then close the pools.
    pub async fn close(&self) {
        self.shutdown().await;
        self.inner.core.db.close().await;
    }

    /// Resolve an agent token: **one** indexed query. `Ok(None)` when the token is not a UUID
    /// (no query is run then), unknown, or belongs to a deleted agent/workspace or an outdated
    /// build.
    pub async fn resolve_agent_by_token(&self, token: &str) -> Result<Option<ResolvedAgent>, StoreError> {
        let Ok(token) = Uuid::parse_str(token) else {
            return Ok(None);
        };
        let core = self.core();
        let row = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, RESOLVE_AGENT_BY_TOKEN, ResolvedAgent).bind(id(token)).fetch_optional(pool).await?
        });
        Ok(row)
    }

    /// The only door to per-agent rows.
    pub fn agent(&self, agent: &ResolvedAgent) -> AgentScope {
        AgentScope::new(self.clone(), agent)
    }

    /// Operator surface: fixtures and site configuration. Not for handlers.
    pub fn admin(&self) -> Admin {
        Admin { store: self.clone() }
    }

    pub(crate) fn enqueue_stats(&self, row: StatsRow) -> bool {
        self.inner.stats.enqueue(row)
    }

    pub(crate) fn enqueue_metadata(&self, item: MetaItem) -> bool {
        self.inner.metadata.enqueue(item)
    }

    pub(crate) fn enqueue_heartbeat(&self, hb: Heartbeat) -> bool {
        self.inner.heartbeats.enqueue(hb)
    }
}

/// Operator surface of the store (see [`Store::admin`]).
#[derive(Debug, Clone)]
pub struct Admin {
    store: Store,
}

/// A freshly created agent and its token (printed once by `agentwire agent create`).
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedAgent {
    /// Agent id.
    pub id: Uuid,
    /// The token the agent authenticates with.
    pub auth_token: Uuid,
}

impl std::fmt::Debug for CreatedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAgent").field("id", &self.id).field("auth_token", &"<redacted>").finish()
    }
}

/// Ids created by [`Admin::create_workspace_with_build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildIds {
    /// Workspace.
    pub workspace_id: Uuid,
    /// Build.
    pub build_id: Uuid,
    /// Its provisioner job.
    pub job_id: Uuid,
    /// The resource agents attach to.
    pub resource_id: Uuid,
    /// Build number.
    pub build_number: i64,
}

/// Ids created by [`Admin::create_template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateIds {
    /// Organization (created if needed).
    pub organization_id: Uuid,
    /// Template.
    pub template_id: Uuid,
    /// Its active version.
    pub version_id: Uuid,
}

/// Arguments for [`Admin::create_agent`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewAgent {
    pub name: String,
    pub directory: String,
    /// JSON object, or `None`.
    pub environment_variables: Option<String>,
    pub motd_file: String,
    pub architecture: String,
    pub operating_system: String,
    pub connection_timeout_seconds: i64,
    pub troubleshooting_url: String,
}

/// Arguments for [`Admin::add_app`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewApp {
    pub slug: String,
    pub display_name: String,
    pub url: Option<String>,
    pub command: Option<String>,
    pub healthcheck_url: String,
    pub healthcheck_interval: i64,
    pub healthcheck_threshold: i64,
    /// `disabled` unless a healthcheck URL is given (then `initializing`).
    pub health: Option<String>,
    pub subdomain: bool,
    /// Default `owner`.
    pub sharing_level: Option<String>,
    pub display_order: i64,
}

/// Arguments for [`Admin::add_script`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewScript {
    pub display_name: String,
    pub script: String,
    pub cron: String,
    pub run_on_start: bool,
    pub run_on_stop: bool,
    pub start_blocks_login: bool,
    pub timeout_seconds: i64,
    pub log_path: String,
}

/// Arguments for [`Admin::add_metadata_description`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewMetadata {
    pub key: String,
    pub display_name: String,
    pub script: String,
    /// Nanoseconds.
    pub interval: i64,
    /// Nanoseconds.
    pub timeout: i64,
    pub display_order: i64,
}

mod admin_sql {
    use super::Stmt;
    pub const UPSERT_ORG: Stmt = Stmt::new(
        "InsertOrganization",
        "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
    );
    pub const SELECT_USER_ID: Stmt =
        Stmt::new("GetUserByUsername", "SELECT id FROM users WHERE username = $1 AND deleted = FALSE");
    pub const INSERT_USER: Stmt = Stmt::new(
        "InsertUser",
        "INSERT INTO users (id, email, username, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4)",
    );
    pub const INSERT_JOB: Stmt = Stmt::new(
        "InsertProvisionerJob",
        "INSERT INTO provisioner_jobs (id, organization_id, type, created_at, updated_at, \
         started_at, completed_at) VALUES ($1, $2, $3, $4, $4, $5, $6)",
    );
    pub const INSERT_TEMPLATE: Stmt = Stmt::new(
        "InsertTemplate",
        "INSERT INTO templates (id, organization_id, name, display_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $3, $4, $4)",
    );
    pub const INSERT_TEMPLATE_VERSION: Stmt = Stmt::new(
        "InsertTemplateVersion",
        "INSERT INTO template_versions (id, template_id, organization_id, name, job_id, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    );
    pub const SET_ACTIVE_VERSION: Stmt =
        Stmt::new("UpdateTemplateActiveVersionByID", "UPDATE templates SET active_version_id = $2 WHERE id = $1");
    pub const INSERT_WORKSPACE: Stmt = Stmt::new(
        "InsertWorkspace",
        "INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, \
         template_id, name) SELECT $1, $2, $2, $3, t.organization_id, t.id, $4 \
         FROM templates t WHERE t.id = $5",
    );
    pub const NEXT_BUILD_NUMBER: Stmt = Stmt::new(
        "GetNextWorkspaceBuildNumber",
        "SELECT COALESCE(MAX(build_number), 0) + 1 FROM workspace_builds WHERE workspace_id = $1",
    );
    pub const WORKSPACE_ORG_AND_TEMPLATE: Stmt = Stmt::new(
        "GetWorkspaceTemplateVersion",
        "SELECT w.organization_id, t.active_version_id, w.owner_id FROM workspaces w \
         JOIN templates t ON t.id = w.template_id WHERE w.id = $1",
    );
    pub const INSERT_BUILD: Stmt = Stmt::new(
        "InsertWorkspaceBuild",
        "INSERT INTO workspace_builds (id, created_at, updated_at, workspace_id, \
         template_version_id, build_number, transition, initiator_id, job_id) \
         VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8)",
    );
    pub const INSERT_RESOURCE: Stmt = Stmt::new(
        "InsertWorkspaceResource",
        "INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name) \
         VALUES ($1, $2, $3, $4, 'agentwire_agent', 'main')",
    );
    pub const INSERT_AGENT: Stmt = Stmt::new(
        "InsertWorkspaceAgent",
        "INSERT INTO workspace_agents (id, created_at, updated_at, name, resource_id, \
         auth_token, architecture, operating_system, environment_variables, directory, \
         connection_timeout_seconds, troubleshooting_url, motd_file) \
         VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    );
    pub const INSERT_APP: Stmt = Stmt::new(
        "InsertWorkspaceApp",
        "INSERT INTO workspace_apps (id, created_at, agent_id, slug, display_name, url, command, \
         healthcheck_url, healthcheck_interval, healthcheck_threshold, health, subdomain, \
         sharing_level, display_order) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    );
    pub const INSERT_LOG_SOURCE: Stmt = Stmt::new(
        "InsertWorkspaceAgentLogSources",
        "INSERT INTO workspace_agent_log_sources (workspace_agent_id, id, created_at, \
         display_name, icon) VALUES ($1, $2, $3, $4, '') \
         ON CONFLICT (workspace_agent_id, id) DO NOTHING",
    );
    pub const INSERT_SCRIPT: Stmt = Stmt::new(
        "InsertWorkspaceAgentScripts",
        "INSERT INTO workspace_agent_scripts (id, workspace_agent_id, log_source_id, log_path, \
         created_at, script, cron, start_blocks_login, run_on_start, run_on_stop, \
         timeout_seconds, display_name) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    );
    pub const INSERT_METADATA: Stmt = Stmt::new(
        "InsertWorkspaceAgentMetadata",
        "INSERT INTO workspace_agent_metadata (workspace_agent_id, display_name, key, script, \
         timeout, interval, display_order) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    );
    pub const INSERT_DEVCONTAINER: Stmt = Stmt::new(
        "InsertWorkspaceAgentDevcontainers",
        "INSERT INTO workspace_agent_devcontainers (id, workspace_agent_id, created_at, \
         workspace_folder, config_path, name) VALUES ($1, $2, $3, $4, $5, $6)",
    );
    pub const INSERT_MEMORY_MONITOR: Stmt = Stmt::new(
        "InsertMemoryResourceMonitor",
        "INSERT INTO workspace_agent_memory_resource_monitors (agent_id, enabled, threshold, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
    );
    pub const INSERT_VOLUME_MONITOR: Stmt = Stmt::new(
        "InsertVolumeResourceMonitor",
        "INSERT INTO workspace_agent_volume_resource_monitors (agent_id, path, enabled, \
         threshold, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
    );
    pub const SET_BUILD_DEADLINE: Stmt = Stmt::new(
        "UpdateWorkspaceBuildDeadlineByID",
        "UPDATE workspace_builds SET deadline = $2, max_deadline = $3 WHERE id = $1",
    );
    pub const GET_BUILD_ACTIVITY: Stmt = Stmt::new(
        "GetWorkspaceBuildActivity",
        "SELECT b.deadline, w.last_used_at FROM workspace_builds b JOIN workspaces w ON w.id = b.workspace_id \
         WHERE b.id = $1",
    );
    pub const SET_JOB_STATE: Stmt = Stmt::new(
        "UpdateProvisionerJobState",
        "UPDATE provisioner_jobs SET started_at = $2, completed_at = $3, canceled_at = $4, \
         error = $5 WHERE id = $1",
    );
    pub const DELETE_WORKSPACE: Stmt =
        Stmt::new("UpdateWorkspaceDeletedByID", "UPDATE workspaces SET deleted = TRUE WHERE id = $1");
    pub const UPSERT_SITE_CONFIG: Stmt = Stmt::new(
        "UpsertSiteConfig",
        "INSERT INTO site_configs (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    );
    pub const GET_SITE_CONFIG: Stmt = Stmt::new("GetSiteConfig", "SELECT value FROM site_configs WHERE key = $1");
}

/// `site_configs` key of the announcement banners (JSON array of `{enabled, message,
/// background_color}`).
pub const SITE_CONFIG_ANNOUNCEMENT_BANNERS: &str = "announcement_banners";
/// `site_configs` key of the legacy service banner (JSON object).
pub const SITE_CONFIG_SERVICE_BANNER: &str = "service_banner";
/// `site_configs` key of the DERP map (JSON, tailnet `DERPMap`).
pub const SITE_CONFIG_DERP_MAP: &str = "derp_map";

/// Build state for [`Admin::create_workspace_with_build`] and [`Admin::set_job_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Not started.
    Pending,
    /// Started, not completed.
    Running,
    /// Completed without error.
    Succeeded,
    /// Completed with an error.
    Failed,
}

impl Admin {
    /// Create (or find) an organization by name.
    pub async fn ensure_organization(&self, name: &str) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let got = with_pool!(&core.db, write, |eng, pool| {
            qs!(core.counters, eng, admin_sql::UPSERT_ORG, String)
                .bind(id(Uuid::new_v4()))
                .bind(name)
                .bind(now_micros())
                .fetch_one(pool)
                .await?
        });
        Uuid::parse_str(&got).map_err(|e| StoreError::corrupt("organizations", e.to_string()))
    }

    /// Create a user.
    pub async fn create_user(&self, username: &str, email: &str) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let user = Uuid::new_v4();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_USER)
                .bind(id(user))
                .bind(email)
                .bind(username)
                .bind(now_micros())
                .execute(pool)
                .await?;
        });
        Ok(user)
    }

    /// The id of a user that is not deleted, by username: lets operator commands reuse an owner.
    pub async fn user_id(&self, username: &str) -> Result<Option<Uuid>, StoreError> {
        let core = self.store.core();
        let got: Option<String> = with_pool!(&core.db, read, |eng, pool| {
            qs!(core.counters, eng, admin_sql::SELECT_USER_ID, String).bind(username).fetch_optional(pool).await?
        });
        got.map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::corrupt("users", e.to_string()))).transpose()
    }

    /// Create a template with one (active) version, in the named organization.
    pub async fn create_template(&self, org: &str, name: &str) -> Result<TemplateIds, StoreError> {
        let organization_id = self.ensure_organization(org).await?;
        let core = self.store.core();
        let (template_id, version_id, job_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            q!(core.counters, eng, admin_sql::INSERT_JOB)
                .bind(id(job_id))
                .bind(id(organization_id))
                .bind("template_version_import")
                .bind(now)
                .bind(Some(now))
                .bind(Some(now))
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_TEMPLATE)
                .bind(id(template_id))
                .bind(id(organization_id))
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_TEMPLATE_VERSION)
                .bind(id(version_id))
                .bind(id(template_id))
                .bind(id(organization_id))
                .bind("v1")
                .bind(id(job_id))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::SET_ACTIVE_VERSION)
                .bind(id(template_id))
                .bind(id(version_id))
                .execute(&mut *tx)
                .await?;
            commit(&core.counters, tx).await?;
        });
        Ok(TemplateIds { organization_id, template_id, version_id })
    }

    /// Create a workspace of `template_id` owned by `owner_id`, with a first `start` build
    /// whose job has succeeded, and one resource for agents.
    pub async fn create_workspace_with_build(
        &self,
        owner_id: Uuid,
        template_id: Uuid,
        name: &str,
    ) -> Result<BuildIds, StoreError> {
        let core = self.store.core();
        let workspace_id = Uuid::new_v4();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_WORKSPACE)
                .bind(id(workspace_id))
                .bind(now_micros())
                .bind(id(owner_id))
                .bind(name)
                .bind(id(template_id))
                .execute(pool)
                .await?;
        });
        self.create_build(workspace_id, "start", JobState::Succeeded).await
    }

    /// Add a build (`start`, `stop` or `delete`) to a workspace, with its job in `state` and
    /// one resource.
    pub async fn create_build(
        &self,
        workspace_id: Uuid,
        transition: &str,
        state: JobState,
    ) -> Result<BuildIds, StoreError> {
        let core = self.store.core();
        let (build_id, job_id, resource_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        let (started, completed) = match state {
            JobState::Pending => (None, None),
            JobState::Running => (Some(now), None),
            JobState::Succeeded | JobState::Failed => (Some(now), Some(now)),
        };
        let build_number = with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            let (org, version, owner) =
                qa!(core.counters, eng, admin_sql::WORKSPACE_ORG_AND_TEMPLATE, (String, Option<String>, String))
                    .bind(id(workspace_id))
                    .fetch_one(&mut *tx)
                    .await?;
            let version = version.ok_or_else(|| StoreError::Invalid("template has no active version".into()))?;
            let number = qs!(core.counters, eng, admin_sql::NEXT_BUILD_NUMBER, i64)
                .bind(id(workspace_id))
                .fetch_one(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_JOB)
                .bind(id(job_id))
                .bind(&org)
                .bind("workspace_build")
                .bind(now)
                .bind(started)
                .bind(completed)
                .execute(&mut *tx)
                .await?;
            if state == JobState::Failed {
                q!(core.counters, eng, admin_sql::SET_JOB_STATE)
                    .bind(id(job_id))
                    .bind(started)
                    .bind(completed)
                    .bind(None::<i64>)
                    .bind(Some("failed"))
                    .execute(&mut *tx)
                    .await?;
            }
            q!(core.counters, eng, admin_sql::INSERT_BUILD)
                .bind(id(build_id))
                .bind(now)
                .bind(id(workspace_id))
                .bind(&version)
                .bind(number)
                .bind(transition)
                .bind(&owner)
                .bind(id(job_id))
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_RESOURCE)
                .bind(id(resource_id))
                .bind(now)
                .bind(id(job_id))
                .bind(transition)
                .execute(&mut *tx)
                .await?;
            commit(&core.counters, tx).await?;
            number
        });
        Ok(BuildIds { workspace_id, build_id, job_id, resource_id, build_number })
    }

    /// Move a provisioner job to `state`.
    pub async fn set_job_state(&self, job_id: Uuid, state: JobState) -> Result<(), StoreError> {
        let core = self.store.core();
        let now = now_micros();
        let (started, completed, error) = match state {
            JobState::Pending => (None, None, None),
            JobState::Running => (Some(now), None, None),
            JobState::Succeeded => (Some(now), Some(now), None),
            JobState::Failed => (Some(now), Some(now), Some("failed")),
        };
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::SET_JOB_STATE)
                .bind(id(job_id))
                .bind(started)
                .bind(completed)
                .bind(None::<i64>)
                .bind(error)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Set a build's autostop deadline and its hard cap (unix µs; 0 = none), as the provisioner would.
    pub async fn set_build_deadline(&self, build_id: Uuid, deadline: i64, max_deadline: i64) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::SET_BUILD_DEADLINE)
                .bind(id(build_id))
                .bind(deadline)
                .bind(max_deadline)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A build's deadline and the workspace's `last_used_at` (unix µs), for operators and tests.
    pub async fn build_activity(&self, build_id: Uuid) -> Result<Option<(i64, i64)>, StoreError> {
        let core = self.store.core();
        let got: Option<(i64, i64)> = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, admin_sql::GET_BUILD_ACTIVITY, (i64, i64))
                .bind(id(build_id))
                .fetch_optional(pool)
                .await?
        });
        Ok(got)
    }

    /// Soft-delete a workspace.
    pub async fn delete_workspace(&self, workspace_id: Uuid) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::DELETE_WORKSPACE).bind(id(workspace_id)).execute(pool).await?;
        });
        Ok(())
    }

    /// Create an agent on a resource with a fresh token.
    pub async fn create_agent(&self, resource_id: Uuid, agent: &NewAgent) -> Result<CreatedAgent, StoreError> {
        let core = self.store.core();
        let created = CreatedAgent { id: Uuid::new_v4(), auth_token: Uuid::new_v4() };
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_AGENT)
                .bind(id(created.id))
                .bind(now_micros())
                .bind(&agent.name)
                .bind(id(resource_id))
                .bind(id(created.auth_token))
                .bind(&agent.architecture)
                .bind(&agent.operating_system)
                .bind(&agent.environment_variables)
                .bind(&agent.directory)
                .bind(agent.connection_timeout_seconds)
                .bind(&agent.troubleshooting_url)
                .bind(&agent.motd_file)
                .execute(pool)
                .await?;
        });
        Ok(created)
    }

    /// One call for `serve --demo`, `agent create` and tests: organization `default`, a user,
    /// a template, a workspace with a succeeded build, and an agent named `agent_name`.
    pub async fn create_demo_agent(
        &self,
        username: &str,
        workspace: &str,
        agent_name: &str,
    ) -> Result<(BuildIds, CreatedAgent), StoreError> {
        let owner = self.create_user(username, &format!("{username}@example.com")).await?;
        let t = self.create_template("default", "demo").await?;
        let build = self.create_workspace_with_build(owner, t.template_id, workspace).await?;
        let agent = self
            .create_agent(
                build.resource_id,
                &NewAgent {
                    name: agent_name.to_owned(),
                    directory: "/home/coder".to_owned(),
                    architecture: "amd64".to_owned(),
                    operating_system: "linux".to_owned(),
                    ..NewAgent::default()
                },
            )
            .await?;
        Ok((build, agent))
    }

    /// Add an app to an agent.
    pub async fn add_app(&self, agent_id: Uuid, app: &NewApp) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let app_id = Uuid::new_v4();
        let health = app.health.clone().unwrap_or_else(|| {
            if app.healthcheck_url.is_empty() {
                "disabled".into()
            } else {
                "initializing".into()
            }
        });
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_APP)
                .bind(id(app_id))
                .bind(now_micros())
                .bind(id(agent_id))
                .bind(&app.slug)
                .bind(&app.display_name)
                .bind(&app.url)
                .bind(&app.command)
                .bind(&app.healthcheck_url)
                .bind(app.healthcheck_interval)
                .bind(app.healthcheck_threshold)
                .bind(&health)
                .bind(app.subdomain)
                .bind(app.sharing_level.as_deref().unwrap_or("owner"))
                .bind(app.display_order)
                .execute(pool)
                .await?;
        });
        Ok(app_id)
    }

    /// Add a script (and its log source) to an agent.
    pub async fn add_script(&self, agent_id: Uuid, s: &NewScript) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let (script_id, source_id) = (Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            q!(core.counters, eng, admin_sql::INSERT_LOG_SOURCE)
                .bind(id(agent_id))
                .bind(id(source_id))
                .bind(now)
                .bind(&s.display_name)
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_SCRIPT)
                .bind(id(script_id))
                .bind(id(agent_id))
                .bind(id(source_id))
                .bind(&s.log_path)
                .bind(now)
                .bind(&s.script)
                .bind(&s.cron)
                .bind(s.start_blocks_login)
                .bind(s.run_on_start)
                .bind(s.run_on_stop)
                .bind(s.timeout_seconds)
                .bind(&s.display_name)
                .execute(&mut *tx)
                .await?;
            commit(&core.counters, tx).await?;
        });
        Ok(script_id)
    }

    /// Add a metadata description (the row the agent's updates then change).
    pub async fn add_metadata_description(&self, agent_id: Uuid, m: &NewMetadata) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_METADATA)
                .bind(id(agent_id))
                .bind(&m.display_name)
                .bind(&m.key)
                .bind(&m.script)
                .bind(m.timeout)
                .bind(m.interval)
                .bind(m.display_order)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Add a devcontainer to an agent.
    pub async fn add_devcontainer(
        &self,
        agent_id: Uuid,
        name: &str,
        workspace_folder: &str,
        config_path: &str,
    ) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let dc = Uuid::new_v4();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_DEVCONTAINER)
                .bind(id(dc))
                .bind(id(agent_id))
                .bind(now_micros())
                .bind(workspace_folder)
                .bind(config_path)
                .bind(name)
                .execute(pool)
                .await?;
        });
        Ok(dc)
    }

    /// Add a memory monitor (threshold in percent).
    pub async fn add_memory_monitor(&self, agent_id: Uuid, enabled: bool, threshold: i64) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_MEMORY_MONITOR)
                .bind(id(agent_id))
                .bind(enabled)
                .bind(threshold)
                .bind(now_micros())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Add a volume monitor (threshold in percent).
    pub async fn add_volume_monitor(
        &self,
        agent_id: Uuid,
        path: &str,
        enabled: bool,
        threshold: i64,
    ) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_VOLUME_MONITOR)
                .bind(id(agent_id))
                .bind(path)
                .bind(enabled)
                .bind(threshold)
                .bind(now_micros())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Set a `site_configs` value (JSON text).
    pub async fn set_site_config(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::UPSERT_SITE_CONFIG).bind(key).bind(value).execute(pool).await?;
        });
        Ok(())
    }

    /// Get a `site_configs` value.
    pub async fn site_config(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.store.site_config(key).await
    }

    /// Set the DERP map JSON.
    pub async fn set_derp_map(&self, json: &str) -> Result<(), StoreError> {
        self.set_site_config(SITE_CONFIG_DERP_MAP, json).await
    }

    /// Set the announcement banners JSON array.
    pub async fn set_announcement_banners(&self, json: &str) -> Result<(), StoreError> {
        self.set_site_config(SITE_CONFIG_ANNOUNCEMENT_BANNERS, json).await
    }

    /// Set the service banner JSON object.
    pub async fn set_service_banner(&self, json: &str) -> Result<(), StoreError> {
        self.set_site_config(SITE_CONFIG_SERVICE_BANNER, json).await
    }
}

impl Store {
    /// Read a `site_configs` value (banners, DERP map): deployment-wide, not per agent.
    pub async fn site_config(&self, key: &str) -> Result<Option<String>, StoreError> {
        let core = self.core();
        let v = with_pool!(&core.db, read, |eng, pool| {
            qs!(core.counters, eng, admin_sql::GET_SITE_CONFIG, String).bind(key).fetch_optional(pool).await?
        });
        Ok(v)
    }

    /// The DERP map JSON, if configured.
    pub async fn derp_map(&self) -> Result<Option<String>, StoreError> {
        self.site_config(SITE_CONFIG_DERP_MAP).await
    }

    /// The announcement banners JSON array, if configured.
    pub async fn announcement_banners(&self) -> Result<Option<String>, StoreError> {
        self.site_config(SITE_CONFIG_ANNOUNCEMENT_BANNERS).await
    }

    /// The service banner JSON object, if configured.
    pub async fn service_banner(&self) -> Result<Option<String>, StoreError> {
        self.site_config(SITE_CONFIG_SERVICE_BANNER).await
    }
}

// User API keys and the watcher's metadata read.

/// Characters of a key's id and secret (Coder's `cryptorand.String` default: letters and digits).
const API_KEY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Length of a key's id, the part before the `-` (Coder's `GenerateAPIKeyIDSecret`).
pub const API_KEY_ID_LEN: usize = 10;
/// Length of a key's secret, the part after the `-`.
pub const API_KEY_SECRET_LEN: usize = 22;

mod api_key_sql {
    use super::Stmt;
    pub const INSERT_API_KEY: Stmt = Stmt::new(
        "InsertAPIKey",
        "INSERT INTO api_keys (id, hashed_secret, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    );
    pub const USER_BY_API_KEY: Stmt = Stmt::new(
        "GetAPIKeyByID",
        "SELECT k.user_id, k.hashed_secret FROM api_keys k JOIN users u ON u.id = k.user_id \
         WHERE k.id = $1 AND k.expires_at > $2 AND u.deleted = FALSE",
    );
    // The agent row is the anchor: no agent (or not the user's) gives no row at all, an owned agent
    // without metadata one row of NULLs.
    pub const AGENT_METADATA_FOR_USER: Stmt = Stmt::new(
        "GetWorkspaceAgentMetadataForOwner",
        "SELECT m.key, m.display_name, m.script, m.value, m.error, m.timeout, m.interval, m.collected_at, \
           m.display_order \
         FROM workspace_agents a \
         JOIN workspace_resources r ON r.id = a.resource_id \
         JOIN workspace_builds b ON b.job_id = r.job_id \
         JOIN workspaces w ON w.id = b.workspace_id \
         LEFT JOIN workspace_agent_metadata m ON m.workspace_agent_id = a.id \
         WHERE a.id = $1 AND w.owner_id = $2 AND a.deleted = FALSE AND w.deleted = FALSE \
         ORDER BY m.display_order, m.key",
    );
}

/// A row of [`api_key_sql::AGENT_METADATA_FOR_USER`]: all NULL for an owned agent without metadata.
#[derive(sqlx::FromRow)]
struct OwnedMetadataRow {
    key: Option<String>,
    display_name: Option<String>,
    script: Option<String>,
    value: Option<String>,
    error: Option<String>,
    timeout: Option<i64>,
    interval: Option<i64>,
    collected_at: Option<i64>,
    display_order: Option<i64>,
}

/// Lowercase hex SHA-256, as `api_keys.hashed_secret` holds it.
fn hash_api_key_secret(secret: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random characters of [`API_KEY_ALPHABET`], from the OS generator (through v4 UUIDs), unbiased.
fn random_api_key_chars(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let bytes = *Uuid::new_v4().as_bytes();
        // Bytes 6 and 8 carry the UUID's version and variant bits; the other 14 are random.
        for (i, b) in bytes.into_iter().enumerate() {
            // 248 = 4 × 62: rejecting the rest keeps every character equally likely.
            if i == 6 || i == 8 || b >= 248 || out.len() == n {
                continue;
            }
            out.push(char::from(API_KEY_ALPHABET[usize::from(b) % API_KEY_ALPHABET.len()]));
        }
    }
    out
}

/// Splits `<id>-<secret>` when both parts have Coder's shape.
fn split_api_key(token: &str) -> Option<(&str, &str)> {
    let (key_id, secret) = token.split_once('-')?;
    let shaped = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (shaped(key_id, API_KEY_ID_LEN) && shaped(secret, API_KEY_SECRET_LEN)).then_some((key_id, secret))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Admin {
    /// Create an API key for `user_id` valid for `lifetime` and return its token, `<id>-<secret>` as Coder
    /// shapes it. Only the secret's hash is stored: the token cannot be shown again.
    pub async fn create_api_key(&self, user_id: Uuid, lifetime: Duration) -> Result<String, StoreError> {
        let core = self.store.core();
        let key_id = random_api_key_chars(API_KEY_ID_LEN);
        let secret = random_api_key_chars(API_KEY_SECRET_LEN);
        let now = now_micros();
        let expires_at = now.saturating_add(i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX));
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, api_key_sql::INSERT_API_KEY)
                .bind(&key_id)
                .bind(hash_api_key_secret(&secret))
                .bind(id(user_id))
                .bind(now)
                .bind(expires_at)
                .execute(pool)
                .await?;
        });
        Ok(format!("{key_id}-{secret}"))
    }
}

impl Store {
    /// The user a `<id>-<secret>` API token belongs to: **one** query by key id, then the secret's hash compared
    /// in constant time. `Ok(None)` for a malformed token (no query then), an unknown id, a wrong secret, an
    /// expired key or a deleted user.
    pub async fn user_by_api_key(&self, token: &str) -> Result<Option<Uuid>, StoreError> {
        let Some((key_id, secret)) = split_api_key(token) else {
            return Ok(None);
        };
        let core = self.core();
        let row = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, api_key_sql::USER_BY_API_KEY, (String, String))
                .bind(key_id)
                .bind(now_micros())
                .fetch_optional(pool)
                .await?
        });
        let Some((user_id, hashed)) = row else {
            return Ok(None);
        };
        if !constant_time_eq(hashed.as_bytes(), hash_api_key_secret(secret).as_bytes()) {
            return Ok(None);
        }
        Uuid::parse_str(&user_id).map(Some).map_err(|e| StoreError::corrupt("api_keys", e.to_string()))
    }

    /// An agent's metadata for a watcher: **one** query that also checks `user_id` owns the agent's workspace.
    /// `Ok(None)` when the agent is unknown, deleted, or not the user's; otherwise the rows
    /// [`AgentScope::list_metadata`] returns, in the same order.
    pub async fn agent_metadata_for_user(
        &self,
        user_id: Uuid,
        agent_id: Uuid,
    ) -> Result<Option<Vec<Metadata>>, StoreError> {
        let core = self.core();
        let rows = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, api_key_sql::AGENT_METADATA_FOR_USER, OwnedMetadataRow)
                .bind(id(agent_id))
                .bind(id(user_id))
                .fetch_all(pool)
                .await?
        });
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .filter_map(|r| {
                    Some(Metadata {
                        key: r.key?,
                        display_name: r.display_name.unwrap_or_default(),
                        script: r.script.unwrap_or_default(),
                        value: r.value.unwrap_or_default(),
                        error: r.error.unwrap_or_default(),
                        timeout: r.timeout.unwrap_or_default(),
                        interval: r.interval.unwrap_or_default(),
                        collected_at: r.collected_at.unwrap_or_default(),
                        display_order: r.display_order.unwrap_or_default(),
                    })
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod api_key_tests {
    use super::*;

    #[test]
    fn tokens_have_coders_shape_and_hash_to_hex() {
        let (a, b) = (random_api_key_chars(API_KEY_ID_LEN), random_api_key_chars(API_KEY_SECRET_LEN));
        let token = format!("{a}-{b}");
        assert_eq!(split_api_key(&token), Some((a.as_str(), b.as_str())));
        assert_ne!(random_api_key_chars(API_KEY_SECRET_LEN), b);
        assert_eq!(split_api_key("short-x"), None);
        assert_eq!(split_api_key(&format!("{a}{b}")), None);
        assert_eq!(split_api_key(&format!("{a}-{b}!")), None);
        assert_eq!(hash_api_key_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac") && !constant_time_eq(b"a", b"ab"));
    }
}
