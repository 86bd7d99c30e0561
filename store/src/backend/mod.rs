//! Where the store meets a database: the engines (SQLite, PostgreSQL) and how a URL picks one, the counted
//! query and transaction helpers every statement goes through, and the backend serving agentwire's schema.

mod agentwire;
mod postgres;
mod sqlite;

use std::time::Duration;

use sqlx::{Database, Pool, Transaction};

use crate::{StoreError, StoreOptions};

pub(crate) use agentwire::{with_pool, Db};
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
pub(crate) async fn connect(url: &str, opts: &StoreOptions) -> Result<Db, StoreError> {
    if url.starts_with("sqlite:") {
        sqlite::connect(url, opts).await
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        postgres::connect(url, opts).await
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
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
