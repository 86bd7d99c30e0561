//! Connecting to SQLite or PostgreSQL from a URL, pool sizing, pragmas and migrations.
//!
//! SQLite runs a **single-writer discipline**: every write goes through a pool of exactly one
//! connection, so writers queue inside the process (on the pool's acquire) instead of racing for
//! the database lock and surfacing `SQLITE_BUSY`. Reads use a separate pool of
//! `sqlite_read_connections`, which WAL lets run beside the writer. `busy_timeout` still matters
//! for *other processes* on the same file (e.g. `agentwire agent create` while `serve` runs), and
//! write transactions start with `BEGIN IMMEDIATE` so a second process waits in the busy handler
//! up front instead of failing on a read-to-write lock upgrade.
//!
//! An in-memory SQLite database lives and dies with its connection, so `sqlite::memory:` uses one
//! connection for both reads and writes, never recycled.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Database, PgPool, Pool, SqlitePool, Transaction};

use crate::{StoreError, StoreOptions};

/// Which engine a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite (the default deployment).
    Sqlite,
    /// PostgreSQL (multi-replica deployments).
    Postgres,
}

/// The pools behind a store.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
        /// In-memory databases only: a connection the pools never lend out. The database lives as long as one
        /// connection to it does, and a pool may close (and replace) its own, which would otherwise leave an empty
        /// database behind.
        _memory_anchor: Option<Arc<tokio::sync::Mutex<sqlx::SqliteConnection>>>,
    },
    Postgres(PgPool),
}

impl Db {
    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite { .. } => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// Run `$body` once per engine with `$pool` bound to the reading or the writing pool and `$eng`
/// to the [`Engine`]. The body is written once and type-checked against each driver, which is
/// how one set of SQL serves both engines without sqlx's type-erased `Any` driver.
macro_rules! with_pool {
    ($db:expr, read, |$eng:ident, $pool:ident| $body:expr) => {
        match $db {
            $crate::backend::Db::Sqlite { read: $pool, .. } => {
                #[allow(unused_variables)]
                let $eng = $crate::backend::Engine::Sqlite;
                $body
            }
            $crate::backend::Db::Postgres($pool) => {
                #[allow(unused_variables)]
                let $eng = $crate::backend::Engine::Postgres;
                $body
            }
        }
    };
    ($db:expr, write, |$eng:ident, $pool:ident| $body:expr) => {
        match $db {
            $crate::backend::Db::Sqlite { write: $pool, .. } => {
                #[allow(unused_variables)]
                let $eng = $crate::backend::Engine::Sqlite;
                $body
            }
            $crate::backend::Db::Postgres($pool) => {
                #[allow(unused_variables)]
                let $eng = $crate::backend::Engine::Postgres;
                $body
            }
        }
    };
}
pub(crate) use with_pool;

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

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connect from a URL and apply the embedded migrations (idempotent: already-applied versions
/// are skipped, a changed one is an error).
pub(crate) async fn connect(url: &str, opts: &StoreOptions) -> Result<Db, StoreError> {
    if url.starts_with("sqlite:") {
        connect_sqlite(url, opts).await
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let connect = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.pg_max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await?;
        POSTGRES_MIGRATOR.run(&pool).await?;
        Ok(Db::Postgres(pool))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

async fn connect_sqlite(url: &str, opts: &StoreOptions) -> Result<Db, StoreError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let synchronous = if opts.sqlite_synchronous_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
    let base = SqliteConnectOptions::from_str(url)?
        .foreign_keys(true)
        .busy_timeout(opts.sqlite_busy_timeout)
        .synchronous(synchronous);

    if in_memory {
        // One pooled connection: a single writer, as on a file. `sqlite::memory:` names a shared-cache database per
        // URL parse, so the anchor (see `Db::Sqlite`) reaches the same database; it connects first so the database
        // never goes away between connections.
        let anchor = base.connect().await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(base)
            .await?;
        SQLITE_MIGRATOR.run(&pool).await?;
        let memory_anchor = Some(Arc::new(tokio::sync::Mutex::new(anchor)));
        return Ok(Db::Sqlite { read: pool.clone(), write: pool, _memory_anchor: memory_anchor });
    }

    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(base.clone().journal_mode(SqliteJournalMode::Wal))
        .await?;
    SQLITE_MIGRATOR.run(&write).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(opts.sqlite_read_connections.max(1))
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(base.create_if_missing(false).read_only(true).row_buffer_size(SQLITE_READ_ROW_BUFFER))
        .await?;
    Ok(Db::Sqlite { read, write, _memory_anchor: None })
}

/// Rows a SQLite reader's worker thread may run ahead of the task consuming them. sqlx's default of 50 makes a
/// large read (the metrics snapshotter's ~100k rollup rows) a thread handoff every few rows; a deeper buffer lets
/// the worker stream while the task drains in bursts.
pub const SQLITE_READ_ROW_BUFFER: usize = 4096;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    async fn has_schema(pool: &SqlitePool) -> bool {
        let tables: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'workspaces'")
                .fetch_one(pool)
                .await
                .unwrap();
        tables == 1
    }

    /// A query or transaction cancelled mid-flight, or a connection the pool closes: an in-memory database must
    /// outlive all of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_in_memory_database_survives_a_cancelled_query() {
        let db = connect("sqlite::memory:", &StoreOptions::default()).await.unwrap();
        let Db::Sqlite { write, .. } = &db else { unreachable!("a SQLite URL") };
        let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) \
                    SELECT count(*) FROM c";
        for round in 0..2 {
            let in_transaction = round % 2 == 1;
            let work = async {
                if in_transaction {
                    let mut tx = write.begin().await?;
                    sqlx::query(slow).execute(&mut *tx).await?;
                    tx.commit().await
                } else {
                    sqlx::query(slow).execute(write).await.map(|_| ())
                }
            };
            let cancelled = tokio::time::timeout(Duration::from_millis(20), work).await.is_err();
            assert!(cancelled, "the query outran the timeout");
            assert!(has_schema(write).await, "the schema is still there");
        }
        // However the pool comes to lose its connection, the database stays.
        write.acquire().await.unwrap().close().await.unwrap();
        assert!(has_schema(write).await, "the schema outlives the pool's connection");
    }
}
