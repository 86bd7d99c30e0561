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
//! # Rooms
//!
//! | module | what |
//! | --- | --- |
//! | `lib.rs` | this map: [`Store`], [`StoreOptions`], the re-exports |
//! | `scope.rs` | [`AgentScope`]: validation of what an agent sends, then the per-agent contract |
//! | `admin.rs`, `definition.rs` | [`Admin`]: the operator's writes; agents created from and updated to a definition ([`AgentDefinition`]) |
//! | `api_key.rs`, `site_config.rs` | user API keys (shape, hash, lookup); `site_configs` keys and reads |
//! | `backend/` | the contract below, the engines (`sqlite.rs`, `postgres.rs`), and `agentwire/`, the backend of agentwire's own schema with its SQL |
//! | [`batch`], [`aggregates`], [`pubsub`], `counting.rs` | write batchers, metrics-cache reads, notifications, statement counters |
//! | [`tailnet`] | Coder's HA tailnet coordination tables and channels (PGCoordinator's), behind [`Store::coder_tailnet`] |
//! | [`model`], `rows.rs`, `engine.rs` | the values the backend contract exchanges (the agent's rows; the operator's, aggregates' and batchers' values); [`Engine`] |
//!
//! # The backend contract
//!
//! Everything the store asks of a database, notifications aside, goes through the traits in
//! `backend/mod.rs`: `AgentSql` (one agent's rows, always bound to the scope's agent id), `AdminSql` (the
//! operator's writes), `LookupSql` (the token lookup, `site_configs`, API keys), `BuildSql` (which sessions' builds
//! were superseded), `BatchSql` (the batchers' flushes, each one transaction) and `AggregateSql` (the metrics
//! snapshotter's reads and the demo-data writer), plus `DefinitionSql` for agent definitions and `TailnetSql` for
//! Coder's HA tailnet tables ([`tailnet`], Coder's schema only). Each is declared
//! through `contract!`, which also forwards it from `Db` to the backend the store was opened on. A backend implements them with domain values in and out; validation, merging, retries and rollup
//! folding stay in the rooms above, so a backend only chooses SQL and representation. Each statement it runs
//! goes through a named `Stmt` (Coder's query name) or is counted under a name of its own, and bumps
//! [`QueryCounters`]; transactions are counted by the `begin`/`commit` helpers. Two backends implement
//! the contract: agentwire's own schema (`backend/agentwire/`) and Coder's (`backend/coder/`, a Coder
//! deployment's database shared with its coderd, opened with [`Store::open_coder`]).
//! Outside `backend/`, only the PostgreSQL pubsub ([`PgPubsub`]: `pg_notify` and `LISTEN`) talks to a
//! database.
//!
//! # Sharing code between the engines
//!
//! agentwire's schema is served by SQLite and PostgreSQL from one set of code.
//! Each statement is written once (`$1` placeholders work on both engines) as a named
//! `Stmt` constant; a macro (`with_pool!`) expands the calling code once per engine, so the same Rust and
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
//! returns. Stats, metadata, heartbeats and resource monitor states: batched ([`batch`]), each flush one
//! transaction.
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

mod admin;
pub mod aggregates;
mod api_key;
pub mod backend;
pub mod batch;
#[doc(hidden)]
pub mod bench_support;
mod counting;
mod definition;
mod engine;
pub mod enums;
mod error;
pub mod model;
pub mod pubsub;
mod rows;
mod scope;
mod site_config;
pub mod tailnet;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

pub use admin::Admin;
pub use api_key::{API_KEY_ID_LEN, API_KEY_SECRET_LEN};
pub use backend::DEFAULT_SQLITE_BUSY_TIMEOUT;
pub use batch::{BatchOptions, BatcherStats};
pub use counting::{QueryCounters, QuerySnapshot};
pub use definition::{
    AgentDefinition, AgentPlacement, AppDefinition, DefinedAgent, MonitorDefinition, ScriptDefinition,
    VolumeMonitorDefinition,
};
pub use engine::Engine;
pub use enums::{AppHealth, LifecycleState, LogLevel, MonitorState, Subsystem};
pub use error::StoreError;
pub use model::*;
pub use pubsub::{InProcessPubsub, PgPubsub, Pubsub, Subscription};
pub use rows::{BuildIds, CreatedAgent, JobState, NewAgent, NewApp, NewMetadata, NewScript, TemplateIds};
pub use scope::{without_nul, AgentScope, EXTERNAL_LOG_SOURCE_ID};
pub use site_config::{SITE_CONFIG_ANNOUNCEMENT_BANNERS, SITE_CONFIG_DERP_MAP, SITE_CONFIG_SERVICE_BANNER};

use backend::{BuildSql, Db, LookupSql};
use batch::heartbeat::{Heartbeat, HeartbeatFlush};
use batch::metadata::{MetaItem, MetadataFlush};
use batch::monitors::{MonitorFlush, MonitorItem};
use batch::stats::StatsFlush;
use batch::{BatchCounters, Batcher};
use rows::StatsRow;

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
/// Resource monitor states: flush every 5 s (an agent pushes every 10 s; coderd writes each push at once).
pub const DEFAULT_MONITOR_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Resource monitor states: flush at 500 distinct monitors.
pub const DEFAULT_MONITOR_FLUSH_AT: usize = 500;
/// Resource monitor states: queue capacity; beyond it a push's writes are dropped (the next push writes again).
pub const DEFAULT_MONITOR_QUEUE_CAPACITY: usize = 2500;

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
    /// Resource monitor batcher timing.
    pub monitor_flush_interval: Duration,
    /// Resource monitors: flush at this many distinct monitors.
    pub monitor_flush_at: usize,
    /// Resource monitor queue capacity (monitor states).
    pub monitor_queue_capacity: usize,
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
            monitor_flush_interval: DEFAULT_MONITOR_FLUSH_INTERVAL,
            monitor_flush_at: DEFAULT_MONITOR_FLUSH_AT,
            monitor_queue_capacity: DEFAULT_MONITOR_QUEUE_CAPACITY,
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
    monitors: Batcher<MonitorFlush>,
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

/// Whose schema a store reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// agentwire's own (`migrations/`), on SQLite or PostgreSQL: agentwire is the whole deployment.
    Agentwire,
    /// A Coder deployment's, on the PostgreSQL database its coderd uses: agentwire serves the agents beside coderd.
    Coder,
}

/// Counters of the four batchers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllBatcherStats {
    /// Stats batcher.
    pub stats: BatcherStats,
    /// Metadata batcher.
    pub metadata: BatcherStats,
    /// Heartbeat batcher.
    pub heartbeats: BatcherStats,
    /// Resource monitor batcher.
    pub monitors: BatcherStats,
}

impl Store {
    /// Connect, migrate, and start the batchers. Must be called inside a tokio runtime.
    pub async fn open(url: &str, opts: StoreOptions) -> Result<Store, StoreError> {
        opts.validate()?;
        let counters = Arc::new(QueryCounters::default());
        let db = backend::connect(url, &opts, counters.clone()).await?;
        Ok(Store::start(db, counters, opts))
    }

    /// Open a Coder deployment's PostgreSQL database (the one its coderd uses) to serve its agents: no migration
    /// runs, a schema version this build does not know is refused, and the operator's writes
    /// ([`Store::admin`]) fail with [`StoreError::ManagedByCoderd`]. Must be called inside a tokio runtime.
    pub async fn open_coder(url: &str, opts: StoreOptions) -> Result<Store, StoreError> {
        opts.validate()?;
        let counters = Arc::new(QueryCounters::default());
        let db = backend::connect_coder(url, &opts, counters.clone()).await?;
        Ok(Store::start(db, counters, opts))
    }

    fn start(db: Db, counters: Arc<QueryCounters>, opts: StoreOptions) -> Store {
        let pubsub: Arc<dyn Pubsub> = match db.pg_pool() {
            Some(pool) => Arc::new(PgPubsub::new(pool.clone(), opts.subscriber_queue, counters.clone())),
            None => Arc::new(InProcessPubsub::new(opts.subscriber_queue, counters.clone())),
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
        let monitors = Batcher::spawn(
            MonitorFlush { core: core.clone() },
            BatchOptions {
                flush_interval: opts.monitor_flush_interval,
                flush_at: opts.monitor_flush_at,
                queue_capacity: opts.monitor_queue_capacity,
            },
            Arc::new(BatchCounters::default()),
        );
        Store { inner: Arc::new(Inner { core, stats, metadata, heartbeats, monitors }) }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// Which engine this store talks to.
    pub fn engine(&self) -> Engine {
        self.inner.core.db.engine()
    }

    /// Whose schema the store reads and writes.
    pub fn schema(&self) -> Schema {
        self.inner.core.db.schema()
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
            monitors: self.inner.monitors.stats(),
        }
    }

    /// Flush every batcher now and wait (tests, and before answering a health probe).
    pub async fn flush(&self) {
        self.inner.stats.flush().await;
        self.inner.metadata.flush().await;
        self.inner.heartbeats.flush().await;
        self.inner.monitors.flush().await;
    }

    /// Flush every batcher and stop them; later enqueues are dropped and counted. Does not
    /// close the pools (other clones may still run durable writes); see [`Store::close`].
    pub async fn shutdown(&self) {
        self.inner.stats.shutdown().await;
        self.inner.metadata.shutdown().await;
        self.inner.heartbeats.shutdown().await;
        self.inner.monitors.shutdown().await;
    }

    /// [`Store::shutdown`], then close the pools.
    pub async fn close(&self) {
        self.shutdown().await;
        self.inner.core.db.close().await;
    }

    /// Resolve an agent token: **one** indexed query. `Ok(None)` when the token is not a UUID
    /// (no query is run then), unknown, or belongs to a deleted agent or workspace. An agent of an
    /// outdated build resolves, with [`ResolvedAgent::is_latest_build`] and
    /// [`ResolvedAgent::in_shutdown_case`] saying whether it may connect.
    pub async fn resolve_agent_by_token(&self, token: &str) -> Result<Option<ResolvedAgent>, StoreError> {
        let Ok(token) = Uuid::parse_str(token) else {
            return Ok(None);
        };
        self.core().db.resolve_agent_by_token(token).await
    }

    /// Those of `build_ids` that a newer build of their workspace superseded: the agents of those builds must go,
    /// as coderd's connection monitor ends them. One statement for any number of sessions.
    pub async fn superseded_builds(&self, build_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        if build_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.core().db.superseded_builds(build_ids).await
    }

    /// The only door to per-agent rows.
    pub fn agent(&self, agent: &ResolvedAgent) -> AgentScope {
        AgentScope::new(self.clone(), agent.clone())
    }

    /// [`Store::agent`], keeping `agent` rather than a copy: what a session does with the agent its token resolved.
    pub fn into_agent_scope(&self, agent: ResolvedAgent) -> AgentScope {
        AgentScope::new(self.clone(), agent)
    }

    /// Coder's HA tailnet coordination tables and channels (enterprise PGCoordinator's protocol), for a coordinator
    /// that joins coderd's; on agentwire's own schema every call fails.
    pub fn coder_tailnet(&self) -> tailnet::CoderTailnet {
        tailnet::CoderTailnet { store: self.clone() }
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

    pub(crate) fn enqueue_monitor(&self, item: MonitorItem) -> bool {
        self.inner.monitors.enqueue(item)
    }
}
