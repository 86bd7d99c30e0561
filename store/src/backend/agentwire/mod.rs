//! agentwire's own schema (`migrations/`), served by both engines: the pools of a store, and [`with_pool!`],
//! which runs one body of Rust and SQL once per engine's native driver.

use std::sync::Arc;

use sqlx::{PgPool, SqlitePool};

use super::Engine;

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
