//! The PostgreSQL engine: the pool and migrations of multi-replica deployments.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::Pools;
use crate::{StoreError, StoreOptions};

static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connect and migrate.
pub(super) async fn connect(url: &str, opts: &StoreOptions) -> Result<Pools, StoreError> {
    let connect = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(opts.pg_max_connections)
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(connect)
        .await?;
    POSTGRES_MIGRATOR.run(&pool).await?;
    Ok(Pools::Postgres(pool))
}
