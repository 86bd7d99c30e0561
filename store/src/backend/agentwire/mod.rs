//! agentwire's own schema (`migrations/`), served by both engines: the pools of a store, and [`with_pool!`],
//! which runs one body of Rust and SQL once per engine's native driver.

mod admin;
mod admin_sql;
mod agent;
mod agent_sql;
mod aggregates;
mod aggregates_sql;
mod batch;
mod builds;
mod definition;
mod definition_sql;
mod lookup;
mod owner;
mod tailnet;

use std::sync::Arc;

use sqlx::{PgPool, SqlitePool};

use crate::engine::Engine;
use crate::QueryCounters;

/// The backend serving agentwire's schema: an engine's pools, and the counters every statement bumps.
#[derive(Debug, Clone)]
pub(crate) struct AgentwireDb {
    pub pools: Pools,
    pub counters: Arc<QueryCounters>,
}

/// The pools of one engine.
#[derive(Debug, Clone)]
pub(crate) enum Pools {
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

impl AgentwireDb {
    pub fn engine(&self) -> Engine {
        match self.pools {
            Pools::Sqlite { .. } => Engine::Sqlite,
            Pools::Postgres(_) => Engine::Postgres,
        }
    }

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres(p) => p.close().await,
        }
    }
}

/// Run `$body` once per engine of a [`AgentwireDb`] with `$pool` bound to the reading (`read`) or the writing (`write`) pool
/// and `$eng` to the [`Engine`]. The body is written once and type-checked against each driver, which is
/// how one set of SQL serves both engines without sqlx's type-erased `Any` driver. PostgreSQL has one pool for both.
macro_rules! with_pool {
    ($db:expr, $side:ident, |$eng:ident, $pool:ident| $body:expr) => {
        match &($db).pools {
            // `$side` names the field: `read` or `write`, anything else does not compile.
            $crate::backend::Pools::Sqlite { $side: $pool, .. } => {
                #[allow(unused_variables)]
                let $eng = $crate::engine::Engine::Sqlite;
                $body
            }
            $crate::backend::Pools::Postgres($pool) => {
                #[allow(unused_variables)]
                let $eng = $crate::engine::Engine::Postgres;
                $body
            }
        }
    };
}
pub(crate) use with_pool;
