//! The SQLite engine: pools, pragmas and migrations of the embedded default deployment.
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

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::ConnectOptions;

use super::Pools;
use crate::{StoreError, StoreOptions};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Open the pools (one writer, WAL readers; or one connection for an in-memory database) and migrate.
pub(super) async fn connect(url: &str, opts: &StoreOptions) -> Result<Pools, StoreError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let synchronous = if opts.sqlite_synchronous_full { SqliteSynchronous::Full } else { SqliteSynchronous::Normal };
    let base = SqliteConnectOptions::from_str(url)?
        .foreign_keys(true)
        .busy_timeout(opts.sqlite_busy_timeout)
        .synchronous(synchronous);

    if in_memory {
        // One pooled connection: a single writer, as on a file. `sqlite::memory:` names a shared-cache database per
        // URL parse, so the anchor (see `Pools::Sqlite`) reaches the same database; it connects first so the database
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
        return Ok(Pools::Sqlite { read: pool.clone(), write: pool, _memory_anchor: memory_anchor });
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
    Ok(Pools::Sqlite { read, write, _memory_anchor: None })
}

/// Rows a SQLite reader's worker thread may run ahead of the task consuming them. sqlx's default of 50 makes a
/// large read (the metrics snapshotter's ~100k rollup rows) a thread handoff every few rows; a deeper buffer lets
/// the worker stream while the task drains in bursts.
pub const SQLITE_READ_ROW_BUFFER: usize = 4096;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::SqlitePool;

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
        let Pools::Sqlite { write, .. } = &db else { unreachable!("a SQLite URL") };
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
