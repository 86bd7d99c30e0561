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
//! | this file | the pool, the schema check, and the operator writes refused (coderd owns them) |

mod agent;
mod aggregates;
mod batch;
mod builds;
mod lookup;
mod tailnet;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;

use super::{AdminSql, DefinitionSql};
use crate::definition::{AgentDefinition, AgentPlacement, DefinedAgent};
use crate::rows::{BuildIds, CreatedAgent, JobState, NewAgent, NewApp, NewMetadata, NewScript, TemplateIds};
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

/// Operator writes belong to coderd on its own database: templates, workspaces and agents are made by its
/// provisioners, keys and site settings through its API.
fn managed_by_coderd<T>(what: &'static str) -> Result<T, StoreError> {
    Err(StoreError::ManagedByCoderd(what))
}

impl AdminSql for CoderDb {
    async fn ensure_organization(&self, _name: &str) -> Result<Uuid, StoreError> {
        managed_by_coderd("organizations")
    }
    async fn create_user(&self, _username: &str, _email: &str) -> Result<Uuid, StoreError> {
        managed_by_coderd("users")
    }
    async fn user_id(&self, _username: &str) -> Result<Option<Uuid>, StoreError> {
        managed_by_coderd("users")
    }
    async fn create_template(&self, _organization_id: Uuid, _name: &str) -> Result<TemplateIds, StoreError> {
        managed_by_coderd("templates")
    }
    async fn create_workspace(&self, _owner_id: Uuid, _template_id: Uuid, _name: &str) -> Result<Uuid, StoreError> {
        managed_by_coderd("workspaces")
    }
    async fn create_build(
        &self,
        _workspace_id: Uuid,
        _transition: &str,
        _state: JobState,
    ) -> Result<BuildIds, StoreError> {
        managed_by_coderd("workspace builds")
    }
    async fn set_job_state(&self, _job_id: Uuid, _state: JobState) -> Result<(), StoreError> {
        managed_by_coderd("provisioner jobs")
    }
    async fn set_build_deadline(&self, _build_id: Uuid, _deadline: i64, _max_deadline: i64) -> Result<(), StoreError> {
        managed_by_coderd("workspace builds")
    }
    async fn build_activity(&self, _build_id: Uuid) -> Result<Option<(i64, i64)>, StoreError> {
        managed_by_coderd("workspace builds")
    }
    async fn delete_workspace(&self, _workspace_id: Uuid) -> Result<(), StoreError> {
        managed_by_coderd("workspaces")
    }
    async fn create_agent(&self, _resource_id: Uuid, _agent: &NewAgent) -> Result<CreatedAgent, StoreError> {
        managed_by_coderd("agents")
    }
    async fn add_app(&self, _agent_id: Uuid, _app: &NewApp) -> Result<Uuid, StoreError> {
        managed_by_coderd("apps")
    }
    async fn add_script(&self, _agent_id: Uuid, _s: &NewScript) -> Result<Uuid, StoreError> {
        managed_by_coderd("scripts")
    }
    async fn add_metadata_description(&self, _agent_id: Uuid, _m: &NewMetadata) -> Result<(), StoreError> {
        managed_by_coderd("metadata descriptions")
    }
    async fn add_devcontainer(
        &self,
        _agent_id: Uuid,
        _name: &str,
        _workspace_folder: &str,
        _config_path: &str,
    ) -> Result<Uuid, StoreError> {
        managed_by_coderd("devcontainers")
    }
    async fn add_memory_monitor(&self, _agent_id: Uuid, _enabled: bool, _threshold: i64) -> Result<(), StoreError> {
        managed_by_coderd("resource monitors")
    }
    async fn add_volume_monitor(
        &self,
        _agent_id: Uuid,
        _path: &str,
        _enabled: bool,
        _threshold: i64,
    ) -> Result<(), StoreError> {
        managed_by_coderd("resource monitors")
    }
    async fn set_site_config(&self, _key: &str, _value: &str) -> Result<(), StoreError> {
        managed_by_coderd("site configuration")
    }
    async fn insert_api_key(
        &self,
        _key_id: &str,
        _hashed_secret: &str,
        _user_id: Uuid,
        _lifetime: Duration,
    ) -> Result<(), StoreError> {
        managed_by_coderd("API keys")
    }
}

impl DefinitionSql for CoderDb {
    async fn create_defined_agent(
        &self,
        _placement: AgentPlacement<'_>,
        _definition: &AgentDefinition,
    ) -> Result<DefinedAgent, StoreError> {
        managed_by_coderd("agents (define them in the template)")
    }
    async fn replace_agent_definition(
        &self,
        _agent_id: Uuid,
        _definition: &AgentDefinition,
    ) -> Result<bool, StoreError> {
        managed_by_coderd("agents (define them in the template)")
    }
    async fn find_agent(&self, _owner: &str, _workspace: &str, _agent: &str) -> Result<Option<Uuid>, StoreError> {
        managed_by_coderd("agents")
    }
}
