//! The backend on **Coder's own schema**: a Coder deployment's PostgreSQL database, shared with the coderd that
//! created it. agentwire serves the agents' endpoint from it while coderd keeps serving everything else, so every
//! write here must be one coderd would make (Coder's columns, enums and constraints) and every read must see rows
//! coderd wrote.
//!
//! Nothing is migrated: the schema is coderd's. A store opened on a database whose `schema_migrations` version is
//! not in [`SUPPORTED_CODER_SCHEMA_VERSIONS`] is refused before any other statement runs, because a column this
//! build writes may have moved.
//!
//! # Representation
//!
//! Coder's columns are `uuid`, `timestamptz` and enum types, where the domain values are [`Uuid`]s, unix
//! microseconds and lower-case strings. The statements convert at the boundary, in SQL: ids are bound and read as
//! text (`$1::uuid`, `id::text`), times as microseconds (`to_timestamp($1::float8 / 1e6)`,
//! [`micros`]), enums as text (`$1::workspace_agent_lifecycle_state`, `state::text`). So no row type, driver
//! feature or date crate is needed beyond what the agentwire backend uses, and a value coderd would refuse is
//! refused by the same cast and constraint here.
//!
//! # Rooms
//!
//! | file | what |
//! | --- | --- |
//! | `agent.rs` | `AgentSql`: one agent's rows, always bound to the scope's agent id |
//! | `lookup.rs` | `LookupSql`: the token lookup as coderd's middleware does it, API keys, site configuration |
//! | `batch.rs` | `BatchSql`: the batchers' flushes into Coder's tables |
//! | `builds.rs` | `BuildSql`: which sessions' builds a newer build superseded |
//! | `aggregates.rs` | `AggregateSql`: the metrics snapshotter's reads |
//! | `tailnet.rs` | `TailnetSql`: PGCoordinator's statements on the HA tailnet tables |
//! | `refused.rs` | `AdminSql`, `DefinitionSql`: the operator's writes, refused (coderd owns them) |
//! | this file | the pool and the schema check |

mod agent;
mod aggregates;
mod batch;
mod builds;
mod lookup;
mod refused;
mod tailnet;

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::{QueryCounters, StoreError, StoreOptions};

/// The `schema_migrations` versions this build reads and writes correctly: coder v2.30.0's last migration.
pub const SUPPORTED_CODER_SCHEMA_VERSIONS: &[i64] = &[412];

/// A Coder deployment's database.
#[derive(Debug, Clone)]
pub(crate) struct CoderDb {
    pub pool: PgPool,
    pub counters: Arc<QueryCounters>,
}

/// Connect and check the schema version.
pub(super) async fn connect(
    url: &str,
    opts: &StoreOptions,
    counters: Arc<QueryCounters>,
) -> Result<CoderDb, StoreError> {
    let connect = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(opts.pg_max_connections)
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(connect)
        .await?;
    check_schema_version(&pool).await?;
    Ok(CoderDb { pool, counters })
}

/// golang-migrate's table: one row, the version and whether a migration stopped half-way.
async fn check_schema_version(pool: &PgPool) -> Result<(), StoreError> {
    let found: Option<(i64, bool)> =
        match sqlx::query_as("SELECT version, dirty FROM schema_migrations LIMIT 1").fetch_optional(pool).await {
            Ok(row) => row,
            // 42P01 undefined_table: not a Coder database at all.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => None,
            Err(e) => return Err(e.into()),
        };
    match found {
        Some((version, false)) if SUPPORTED_CODER_SCHEMA_VERSIONS.contains(&version) => Ok(()),
        Some((version, dirty)) => Err(StoreError::CoderSchema { found: Some(version), dirty }),
        None => Err(StoreError::CoderSchema { found: None, dirty: false }),
    }
}
