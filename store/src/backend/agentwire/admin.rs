//! [`AdminSql`] on agentwire's schema: the operator's writes behind [`crate::Admin`] (fixtures, site
//! configuration, API keys), written once for both engines.

use std::time::Duration;

use uuid::Uuid;

use super::admin_sql::*;
use crate::backend::{begin, commit, q, qa, qs, with_pool, AdminSql, AgentwireDb};
use crate::model::{id, now_micros, UnixMicros};
use crate::rows::{BuildIds, CreatedAgent, JobState, NewAgent, NewApp, NewMetadata, NewScript, TemplateIds};
use crate::StoreError;

/// A template's rows: the import job that made its version (succeeded at `now`), the template, and the version,
/// made active. Ids of existing rows as stored (text).
pub(super) struct TemplateRows<'a> {
    pub org: &'a str,
    pub name: &'a str,
    pub template_id: Uuid,
    pub version_id: Uuid,
    pub job_id: Uuid,
    pub now: UnixMicros,
}

/// A workspace of `template_id` (and of its organization), without builds.
pub(super) struct WorkspaceRow<'a> {
    pub workspace_id: Uuid,
    pub owner: &'a str,
    pub name: &'a str,
    pub template_id: Uuid,
    pub now: UnixMicros,
}

/// A build's rows: its provisioner job (started and completed as given), the build, and its one resource.
pub(super) struct BuildRows<'a> {
    pub org: &'a str,
    pub workspace_id: Uuid,
    pub version: &'a str,
    pub owner: &'a str,
    pub number: i64,
    pub transition: &'a str,
    pub build_id: Uuid,
    pub job_id: Uuid,
    pub resource_id: Uuid,
    pub now: UnixMicros,
    pub started: Option<UnixMicros>,
    pub completed: Option<UnixMicros>,
}

/// Writes [`TemplateRows`] inside the open transaction `$tx`: for `create_template`, and for an agent definition's
/// first write (`definition.rs`). Macros, like `write_definition_rows!` there, because they expand inside each
/// engine's arm of [`with_pool!`], where the transaction has that driver's concrete type.
macro_rules! insert_template_rows {
    ($db:expr, $eng:expr, $tx:expr, $rows:expr) => {{
        use $crate::backend::agentwire::admin_sql::{
            INSERT_JOB, INSERT_TEMPLATE, INSERT_TEMPLATE_VERSION, SET_ACTIVE_VERSION,
        };
        use $crate::model::id;
        let (db, eng, r): (&$crate::backend::AgentwireDb, _, &$crate::backend::agentwire::admin::TemplateRows) =
            ($db, $eng, $rows);
        $crate::backend::q!(db.counters, eng, INSERT_JOB)
            .bind(id(r.job_id))
            .bind(r.org)
            .bind("template_version_import")
            .bind(r.now)
            .bind(Some(r.now))
            .bind(Some(r.now))
            .execute(&mut *$tx)
            .await?;
        $crate::backend::q!(db.counters, eng, INSERT_TEMPLATE)
            .bind(id(r.template_id))
            .bind(r.org)
            .bind(r.name)
            .bind(r.now)
            .execute(&mut *$tx)
            .await?;
        $crate::backend::q!(db.counters, eng, INSERT_TEMPLATE_VERSION)
            .bind(id(r.version_id))
            .bind(id(r.template_id))
            .bind(r.org)
            .bind("v1")
            .bind(id(r.job_id))
            .bind(r.now)
            .execute(&mut *$tx)
            .await?;
        $crate::backend::q!(db.counters, eng, SET_ACTIVE_VERSION)
            .bind(id(r.template_id))
            .bind(id(r.version_id))
            .execute(&mut *$tx)
            .await?;
    }};
}
pub(super) use insert_template_rows;

/// Writes a [`WorkspaceRow`] through `$exec` (a pool, or `&mut *tx`), as [`insert_template_rows!`] does its rows.
macro_rules! insert_workspace_row {
    ($db:expr, $eng:expr, $exec:expr, $row:expr) => {{
        use $crate::model::id;
        let (db, eng, r): (&$crate::backend::AgentwireDb, _, &$crate::backend::agentwire::admin::WorkspaceRow) =
            ($db, $eng, $row);
        $crate::backend::q!(db.counters, eng, $crate::backend::agentwire::admin_sql::INSERT_WORKSPACE)
            .bind(id(r.workspace_id))
            .bind(r.now)
            .bind(r.owner)
            .bind(r.name)
            .bind(id(r.template_id))
            .execute($exec)
            .await?;
    }};
}
pub(super) use insert_workspace_row;

/// Writes [`BuildRows`] inside the open transaction `$tx`, as [`insert_template_rows!`] does its rows.
macro_rules! insert_build_rows {
    ($db:expr, $eng:expr, $tx:expr, $rows:expr) => {{
        use $crate::backend::agentwire::admin_sql::{INSERT_BUILD, INSERT_JOB, INSERT_RESOURCE};
        use $crate::model::id;
        let (db, eng, r): (&$crate::backend::AgentwireDb, _, &$crate::backend::agentwire::admin::BuildRows) =
            ($db, $eng, $rows);
        $crate::backend::q!(db.counters, eng, INSERT_JOB)
            .bind(id(r.job_id))
            .bind(r.org)
            .bind("workspace_build")
            .bind(r.now)
            .bind(r.started)
            .bind(r.completed)
            .execute(&mut *$tx)
            .await?;
        $crate::backend::q!(db.counters, eng, INSERT_BUILD)
            .bind(id(r.build_id))
            .bind(r.now)
            .bind(id(r.workspace_id))
            .bind(r.version)
            .bind(r.number)
            .bind(r.transition)
            .bind(r.owner)
            .bind(id(r.job_id))
            .execute(&mut *$tx)
            .await?;
        $crate::backend::q!(db.counters, eng, INSERT_RESOURCE)
            .bind(id(r.resource_id))
            .bind(r.now)
            .bind(id(r.job_id))
            .bind(r.transition)
            .execute(&mut *$tx)
            .await?;
    }};
}
pub(super) use insert_build_rows;

/// Binds a script's run settings to `$query`, in the order INSERT_SCRIPT and UPDATE_SCRIPT both give them: script,
/// cron, start_blocks_login, run_on_start, run_on_stop, timeout_seconds. `$s` is a [`NewScript`] (`add_script`) or a
/// definition's script (`definition.rs`), whose fields are named alike.
macro_rules! bind_script_run {
    ($query:expr, $s:expr) => {{
        let s = $s;
        $query
            .bind(&s.script)
            .bind(&s.cron)
            .bind(s.start_blocks_login)
            .bind(s.run_on_start)
            .bind(s.run_on_stop)
            .bind(s.timeout_seconds)
    }};
}
pub(super) use bind_script_run;

/// Binds a [`NewMetadata`]'s columns to `$query`, in the order INSERT_METADATA and a definition's UPSERT_METADATA
/// both end with: display name through display order.
macro_rules! bind_metadata_description {
    ($query:expr, $m:expr) => {{
        let m: &$crate::rows::NewMetadata = $m;
        $query.bind(&m.display_name).bind(&m.key).bind(&m.script).bind(m.timeout).bind(m.interval).bind(m.display_order)
    }};
}
pub(super) use bind_metadata_description;

impl AdminSql for AgentwireDb {
    async fn ensure_organization(&self, name: &str) -> Result<Uuid, StoreError> {
        let got = with_pool!(self, write, |eng, pool| {
            qs!(self.counters, eng, UPSERT_ORG, String)
                .bind(id(Uuid::new_v4()))
                .bind(name)
                .bind(now_micros())
                .fetch_one(pool)
                .await?
        });
        Uuid::parse_str(&got).map_err(|e| StoreError::corrupt("organizations", e.to_string()))
    }

    async fn create_user(&self, username: &str, email: &str) -> Result<Uuid, StoreError> {
        let user = Uuid::new_v4();
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, INSERT_USER)
                .bind(id(user))
                .bind(email)
                .bind(username)
                .bind(now_micros())
                .execute(pool)
                .await?;
        });
        Ok(user)
    }

    async fn user_id(&self, username: &str) -> Result<Option<Uuid>, StoreError> {
        let got: Option<String> = with_pool!(self, read, |eng, pool| {
            qs!(self.counters, eng, SELECT_USER_ID, String).bind(username).fetch_optional(pool).await?
        });
        got.map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::corrupt("users", e.to_string()))).transpose()
    }

    async fn create_template(&self, organization_id: Uuid, name: &str) -> Result<TemplateIds, StoreError> {
        let (template_id, version_id, job_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        let org = id(organization_id);
        let rows = TemplateRows { org: &org, name, template_id, version_id, job_id, now };
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            insert_template_rows!(self, eng, tx, &rows);
            commit(&self.counters, tx).await?;
        });
        Ok(TemplateIds { organization_id, template_id, version_id })
    }

    async fn create_workspace(&self, owner_id: Uuid, template_id: Uuid, name: &str) -> Result<Uuid, StoreError> {
        let workspace_id = Uuid::new_v4();
        let owner = id(owner_id);
        let rows = WorkspaceRow { workspace_id, owner: &owner, name, template_id, now: now_micros() };
        with_pool!(self, write, |eng, pool| insert_workspace_row!(self, eng, pool, &rows));
        Ok(workspace_id)
    }

    async fn create_build(
        &self,
        workspace_id: Uuid,
        transition: &str,
        state: JobState,
    ) -> Result<BuildIds, StoreError> {
        let (build_id, job_id, resource_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        let (started, completed) = match state {
            JobState::Pending => (None, None),
            JobState::Running => (Some(now), None),
            JobState::Succeeded | JobState::Failed => (Some(now), Some(now)),
        };
        let build_number = with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            let (org, version, owner) =
                qa!(self.counters, eng, WORKSPACE_ORG_AND_TEMPLATE, (String, Option<String>, String))
                    .bind(id(workspace_id))
                    .fetch_one(&mut *tx)
                    .await?;
            let version = version.ok_or_else(|| StoreError::Invalid("template has no active version".into()))?;
            let number =
                qs!(self.counters, eng, NEXT_BUILD_NUMBER, i64).bind(id(workspace_id)).fetch_one(&mut *tx).await?;
            let rows = BuildRows {
                org: &org,
                workspace_id,
                version: &version,
                owner: &owner,
                number,
                transition,
                build_id,
                job_id,
                resource_id,
                now,
                started,
                completed,
            };
            insert_build_rows!(self, eng, tx, &rows);
            if state == JobState::Failed {
                q!(self.counters, eng, SET_JOB_STATE)
                    .bind(id(job_id))
                    .bind(started)
                    .bind(completed)
                    .bind(None::<i64>)
                    .bind(Some("failed"))
                    .execute(&mut *tx)
                    .await?;
            }
            commit(&self.counters, tx).await?;
            number
        });
        Ok(BuildIds { workspace_id, build_id, job_id, resource_id, build_number })
    }

    async fn set_job_state(&self, job_id: Uuid, state: JobState) -> Result<(), StoreError> {
        let now = now_micros();
        let (started, completed, error) = match state {
            JobState::Pending => (None, None, None),
            JobState::Running => (Some(now), None, None),
            JobState::Succeeded => (Some(now), Some(now), None),
            JobState::Failed => (Some(now), Some(now), Some("failed")),
        };
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, SET_JOB_STATE)
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

    async fn set_build_deadline(&self, build_id: Uuid, deadline: i64, max_deadline: i64) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, SET_BUILD_DEADLINE)
                .bind(id(build_id))
                .bind(deadline)
                .bind(max_deadline)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn build_activity(&self, build_id: Uuid) -> Result<Option<(i64, i64)>, StoreError> {
        let got: Option<(i64, i64)> = with_pool!(self, read, |eng, pool| {
            qa!(self.counters, eng, GET_BUILD_ACTIVITY, (i64, i64)).bind(id(build_id)).fetch_optional(pool).await?
        });
        Ok(got)
    }

    async fn delete_workspace(&self, workspace_id: Uuid) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, DELETE_WORKSPACE).bind(id(workspace_id)).execute(pool).await?;
        });
        Ok(())
    }

    async fn create_agent(&self, resource_id: Uuid, agent: &NewAgent) -> Result<CreatedAgent, StoreError> {
        let created = CreatedAgent { id: Uuid::new_v4(), auth_token: Uuid::new_v4() };
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, INSERT_AGENT)
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

    async fn add_app(&self, agent_id: Uuid, app: &NewApp) -> Result<Uuid, StoreError> {
        let app_id = Uuid::new_v4();
        let health = app.health.clone().unwrap_or_else(|| {
            if app.healthcheck_url.is_empty() {
                "disabled".into()
            } else {
                "initializing".into()
            }
        });
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, INSERT_APP)
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

    async fn add_script(&self, agent_id: Uuid, s: &NewScript) -> Result<Uuid, StoreError> {
        let (script_id, source_id) = (Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            q!(self.counters, eng, INSERT_LOG_SOURCE)
                .bind(id(agent_id))
                .bind(id(source_id))
                .bind(now)
                .bind(&s.display_name)
                .execute(&mut *tx)
                .await?;
            let insert = q!(self.counters, eng, INSERT_SCRIPT)
                .bind(id(script_id))
                .bind(id(agent_id))
                .bind(id(source_id))
                .bind(&s.log_path)
                .bind(now);
            bind_script_run!(insert, s).bind(&s.display_name).execute(&mut *tx).await?;
            commit(&self.counters, tx).await?;
        });
        Ok(script_id)
    }

    async fn add_metadata_description(&self, agent_id: Uuid, m: &NewMetadata) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            let insert = q!(self.counters, eng, INSERT_METADATA).bind(id(agent_id));
            bind_metadata_description!(insert, m).execute(pool).await?;
        });
        Ok(())
    }

    async fn add_devcontainer(
        &self,
        agent_id: Uuid,
        name: &str,
        workspace_folder: &str,
        config_path: &str,
    ) -> Result<Uuid, StoreError> {
        let dc = Uuid::new_v4();
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, INSERT_DEVCONTAINER)
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

    async fn add_memory_monitor(&self, agent_id: Uuid, enabled: bool, threshold: i64) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, INSERT_MEMORY_MONITOR)
                .bind(id(agent_id))
                .bind(enabled)
                .bind(threshold)
                .bind(now_micros())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn add_volume_monitor(
        &self,
        agent_id: Uuid,
        path: &str,
        enabled: bool,
        threshold: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, INSERT_VOLUME_MONITOR)
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

    async fn set_site_config(&self, key: &str, value: &str) -> Result<(), StoreError> {
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, UPSERT_SITE_CONFIG).bind(key).bind(value).execute(pool).await?;
        });
        Ok(())
    }

    async fn insert_api_key(
        &self,
        key_id: &str,
        hashed_secret: &str,
        user_id: Uuid,
        lifetime: Duration,
    ) -> Result<(), StoreError> {
        let now = now_micros();
        let expires_at = now.saturating_add(i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX));
        with_pool!(self, write, |eng, pool| {
            q!(self.counters, eng, INSERT_API_KEY)
                .bind(key_id)
                .bind(hashed_secret)
                .bind(id(user_id))
                .bind(now)
                .bind(expires_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
