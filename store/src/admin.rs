//! The operator's writes ([`Admin`]): fixtures, `agent create`, `serve --demo`, site configuration and user
//! API keys. Handlers have no reason to call any of it; the agent's own rows go through [`crate::AgentScope`].

use std::time::Duration;

use uuid::Uuid;

use crate::api_key::{api_key_sql, hash_api_key_secret, random_api_key_chars, API_KEY_ID_LEN, API_KEY_SECRET_LEN};
use crate::backend::{begin, commit, q, qa, qs, with_pool};
use crate::counting::Stmt;
use crate::model::{id, now_micros};
use crate::site_config::{SITE_CONFIG_ANNOUNCEMENT_BANNERS, SITE_CONFIG_DERP_MAP, SITE_CONFIG_SERVICE_BANNER};
use crate::{Store, StoreError};

/// Operator surface of the store (see [`Store::admin`]).
#[derive(Debug, Clone)]
pub struct Admin {
    pub(crate) store: Store,
}

/// A freshly created agent and its token (printed once by `agentwire agent create`).
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedAgent {
    /// Agent id.
    pub id: Uuid,
    /// The token the agent authenticates with.
    pub auth_token: Uuid,
}

impl std::fmt::Debug for CreatedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAgent").field("id", &self.id).field("auth_token", &"<redacted>").finish()
    }
}

/// Ids created by [`Admin::create_workspace_with_build`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildIds {
    /// Workspace.
    pub workspace_id: Uuid,
    /// Build.
    pub build_id: Uuid,
    /// Its provisioner job.
    pub job_id: Uuid,
    /// The resource agents attach to.
    pub resource_id: Uuid,
    /// Build number.
    pub build_number: i64,
}

/// Ids created by [`Admin::create_template`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateIds {
    /// Organization (created if needed).
    pub organization_id: Uuid,
    /// Template.
    pub template_id: Uuid,
    /// Its active version.
    pub version_id: Uuid,
}

/// Arguments for [`Admin::create_agent`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewAgent {
    pub name: String,
    pub directory: String,
    /// JSON object, or `None`.
    pub environment_variables: Option<String>,
    pub motd_file: String,
    pub architecture: String,
    pub operating_system: String,
    pub connection_timeout_seconds: i64,
    pub troubleshooting_url: String,
}

/// Arguments for [`Admin::add_app`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewApp {
    pub slug: String,
    pub display_name: String,
    pub url: Option<String>,
    pub command: Option<String>,
    pub healthcheck_url: String,
    pub healthcheck_interval: i64,
    pub healthcheck_threshold: i64,
    /// `disabled` unless a healthcheck URL is given (then `initializing`).
    pub health: Option<String>,
    pub subdomain: bool,
    /// Default `owner`.
    pub sharing_level: Option<String>,
    pub display_order: i64,
}

/// Arguments for [`Admin::add_script`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewScript {
    pub display_name: String,
    pub script: String,
    pub cron: String,
    pub run_on_start: bool,
    pub run_on_stop: bool,
    pub start_blocks_login: bool,
    pub timeout_seconds: i64,
    pub log_path: String,
}

/// Arguments for [`Admin::add_metadata_description`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NewMetadata {
    pub key: String,
    pub display_name: String,
    pub script: String,
    /// Nanoseconds.
    pub interval: i64,
    /// Nanoseconds.
    pub timeout: i64,
    pub display_order: i64,
}

pub(crate) mod admin_sql {
    use super::Stmt;
    pub const UPSERT_ORG: Stmt = Stmt::new(
        "InsertOrganization",
        "INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
    );
    pub const SELECT_USER_ID: Stmt =
        Stmt::new("GetUserByUsername", "SELECT id FROM users WHERE username = $1 AND deleted = FALSE");
    pub const INSERT_USER: Stmt = Stmt::new(
        "InsertUser",
        "INSERT INTO users (id, email, username, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4)",
    );
    pub const INSERT_JOB: Stmt = Stmt::new(
        "InsertProvisionerJob",
        "INSERT INTO provisioner_jobs (id, organization_id, type, created_at, updated_at, \
         started_at, completed_at) VALUES ($1, $2, $3, $4, $4, $5, $6)",
    );
    pub const INSERT_TEMPLATE: Stmt = Stmt::new(
        "InsertTemplate",
        "INSERT INTO templates (id, organization_id, name, display_name, created_at, updated_at) \
         VALUES ($1, $2, $3, $3, $4, $4)",
    );
    pub const INSERT_TEMPLATE_VERSION: Stmt = Stmt::new(
        "InsertTemplateVersion",
        "INSERT INTO template_versions (id, template_id, organization_id, name, job_id, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    );
    pub const SET_ACTIVE_VERSION: Stmt =
        Stmt::new("UpdateTemplateActiveVersionByID", "UPDATE templates SET active_version_id = $2 WHERE id = $1");
    pub const INSERT_WORKSPACE: Stmt = Stmt::new(
        "InsertWorkspace",
        "INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, \
         template_id, name) SELECT $1, $2, $2, $3, t.organization_id, t.id, $4 \
         FROM templates t WHERE t.id = $5",
    );
    pub const NEXT_BUILD_NUMBER: Stmt = Stmt::new(
        "GetNextWorkspaceBuildNumber",
        "SELECT COALESCE(MAX(build_number), 0) + 1 FROM workspace_builds WHERE workspace_id = $1",
    );
    pub const WORKSPACE_ORG_AND_TEMPLATE: Stmt = Stmt::new(
        "GetWorkspaceTemplateVersion",
        "SELECT w.organization_id, t.active_version_id, w.owner_id FROM workspaces w \
         JOIN templates t ON t.id = w.template_id WHERE w.id = $1",
    );
    pub const INSERT_BUILD: Stmt = Stmt::new(
        "InsertWorkspaceBuild",
        "INSERT INTO workspace_builds (id, created_at, updated_at, workspace_id, \
         template_version_id, build_number, transition, initiator_id, job_id) \
         VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8)",
    );
    pub const INSERT_RESOURCE: Stmt = Stmt::new(
        "InsertWorkspaceResource",
        "INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name) \
         VALUES ($1, $2, $3, $4, 'agentwire_agent', 'main')",
    );
    pub const INSERT_AGENT: Stmt = Stmt::new(
        "InsertWorkspaceAgent",
        "INSERT INTO workspace_agents (id, created_at, updated_at, name, resource_id, \
         auth_token, architecture, operating_system, environment_variables, directory, \
         connection_timeout_seconds, troubleshooting_url, motd_file) \
         VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    );
    pub const INSERT_APP: Stmt = Stmt::new(
        "InsertWorkspaceApp",
        "INSERT INTO workspace_apps (id, created_at, agent_id, slug, display_name, url, command, \
         healthcheck_url, healthcheck_interval, healthcheck_threshold, health, subdomain, \
         sharing_level, display_order) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    );
    pub const INSERT_LOG_SOURCE: Stmt = Stmt::new(
        "InsertWorkspaceAgentLogSources",
        "INSERT INTO workspace_agent_log_sources (workspace_agent_id, id, created_at, \
         display_name, icon) VALUES ($1, $2, $3, $4, '') \
         ON CONFLICT (workspace_agent_id, id) DO NOTHING",
    );
    pub const INSERT_SCRIPT: Stmt = Stmt::new(
        "InsertWorkspaceAgentScripts",
        "INSERT INTO workspace_agent_scripts (id, workspace_agent_id, log_source_id, log_path, \
         created_at, script, cron, start_blocks_login, run_on_start, run_on_stop, \
         timeout_seconds, display_name) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    );
    pub const INSERT_METADATA: Stmt = Stmt::new(
        "InsertWorkspaceAgentMetadata",
        "INSERT INTO workspace_agent_metadata (workspace_agent_id, display_name, key, script, \
         timeout, interval, display_order) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    );
    pub const INSERT_DEVCONTAINER: Stmt = Stmt::new(
        "InsertWorkspaceAgentDevcontainers",
        "INSERT INTO workspace_agent_devcontainers (id, workspace_agent_id, created_at, \
         workspace_folder, config_path, name) VALUES ($1, $2, $3, $4, $5, $6)",
    );
    pub const INSERT_MEMORY_MONITOR: Stmt = Stmt::new(
        "InsertMemoryResourceMonitor",
        "INSERT INTO workspace_agent_memory_resource_monitors (agent_id, enabled, threshold, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
    );
    pub const INSERT_VOLUME_MONITOR: Stmt = Stmt::new(
        "InsertVolumeResourceMonitor",
        "INSERT INTO workspace_agent_volume_resource_monitors (agent_id, path, enabled, \
         threshold, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
    );
    pub const SET_BUILD_DEADLINE: Stmt = Stmt::new(
        "UpdateWorkspaceBuildDeadlineByID",
        "UPDATE workspace_builds SET deadline = $2, max_deadline = $3 WHERE id = $1",
    );
    pub const GET_BUILD_ACTIVITY: Stmt = Stmt::new(
        "GetWorkspaceBuildActivity",
        "SELECT b.deadline, w.last_used_at FROM workspace_builds b JOIN workspaces w ON w.id = b.workspace_id \
         WHERE b.id = $1",
    );
    pub const SET_JOB_STATE: Stmt = Stmt::new(
        "UpdateProvisionerJobState",
        "UPDATE provisioner_jobs SET started_at = $2, completed_at = $3, canceled_at = $4, \
         error = $5 WHERE id = $1",
    );
    pub const DELETE_WORKSPACE: Stmt =
        Stmt::new("UpdateWorkspaceDeletedByID", "UPDATE workspaces SET deleted = TRUE WHERE id = $1");
    pub const UPSERT_SITE_CONFIG: Stmt = Stmt::new(
        "UpsertSiteConfig",
        "INSERT INTO site_configs (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    );
    pub const GET_SITE_CONFIG: Stmt = Stmt::new("GetSiteConfig", "SELECT value FROM site_configs WHERE key = $1");
}

/// Build state for [`Admin::create_workspace_with_build`] and [`Admin::set_job_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Not started.
    Pending,
    /// Started, not completed.
    Running,
    /// Completed without error.
    Succeeded,
    /// Completed with an error.
    Failed,
}

impl Admin {
    /// Create (or find) an organization by name.
    pub async fn ensure_organization(&self, name: &str) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let got = with_pool!(&core.db, write, |eng, pool| {
            qs!(core.counters, eng, admin_sql::UPSERT_ORG, String)
                .bind(id(Uuid::new_v4()))
                .bind(name)
                .bind(now_micros())
                .fetch_one(pool)
                .await?
        });
        Uuid::parse_str(&got).map_err(|e| StoreError::corrupt("organizations", e.to_string()))
    }

    /// Create a user.
    pub async fn create_user(&self, username: &str, email: &str) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let user = Uuid::new_v4();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_USER)
                .bind(id(user))
                .bind(email)
                .bind(username)
                .bind(now_micros())
                .execute(pool)
                .await?;
        });
        Ok(user)
    }

    /// The id of a user that is not deleted, by username: lets operator commands reuse an owner.
    pub async fn user_id(&self, username: &str) -> Result<Option<Uuid>, StoreError> {
        let core = self.store.core();
        let got: Option<String> = with_pool!(&core.db, read, |eng, pool| {
            qs!(core.counters, eng, admin_sql::SELECT_USER_ID, String).bind(username).fetch_optional(pool).await?
        });
        got.map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::corrupt("users", e.to_string()))).transpose()
    }

    /// Create a template with one (active) version, in the named organization.
    pub async fn create_template(&self, org: &str, name: &str) -> Result<TemplateIds, StoreError> {
        let organization_id = self.ensure_organization(org).await?;
        let core = self.store.core();
        let (template_id, version_id, job_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            q!(core.counters, eng, admin_sql::INSERT_JOB)
                .bind(id(job_id))
                .bind(id(organization_id))
                .bind("template_version_import")
                .bind(now)
                .bind(Some(now))
                .bind(Some(now))
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_TEMPLATE)
                .bind(id(template_id))
                .bind(id(organization_id))
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_TEMPLATE_VERSION)
                .bind(id(version_id))
                .bind(id(template_id))
                .bind(id(organization_id))
                .bind("v1")
                .bind(id(job_id))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::SET_ACTIVE_VERSION)
                .bind(id(template_id))
                .bind(id(version_id))
                .execute(&mut *tx)
                .await?;
            commit(&core.counters, tx).await?;
        });
        Ok(TemplateIds { organization_id, template_id, version_id })
    }

    /// Create a workspace of `template_id` owned by `owner_id`, with a first `start` build
    /// whose job has succeeded, and one resource for agents.
    pub async fn create_workspace_with_build(
        &self,
        owner_id: Uuid,
        template_id: Uuid,
        name: &str,
    ) -> Result<BuildIds, StoreError> {
        let core = self.store.core();
        let workspace_id = Uuid::new_v4();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_WORKSPACE)
                .bind(id(workspace_id))
                .bind(now_micros())
                .bind(id(owner_id))
                .bind(name)
                .bind(id(template_id))
                .execute(pool)
                .await?;
        });
        self.create_build(workspace_id, "start", JobState::Succeeded).await
    }

    /// Add a build (`start`, `stop` or `delete`) to a workspace, with its job in `state` and
    /// one resource.
    pub async fn create_build(
        &self,
        workspace_id: Uuid,
        transition: &str,
        state: JobState,
    ) -> Result<BuildIds, StoreError> {
        let core = self.store.core();
        let (build_id, job_id, resource_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        let (started, completed) = match state {
            JobState::Pending => (None, None),
            JobState::Running => (Some(now), None),
            JobState::Succeeded | JobState::Failed => (Some(now), Some(now)),
        };
        let build_number = with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            let (org, version, owner) =
                qa!(core.counters, eng, admin_sql::WORKSPACE_ORG_AND_TEMPLATE, (String, Option<String>, String))
                    .bind(id(workspace_id))
                    .fetch_one(&mut *tx)
                    .await?;
            let version = version.ok_or_else(|| StoreError::Invalid("template has no active version".into()))?;
            let number = qs!(core.counters, eng, admin_sql::NEXT_BUILD_NUMBER, i64)
                .bind(id(workspace_id))
                .fetch_one(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_JOB)
                .bind(id(job_id))
                .bind(&org)
                .bind("workspace_build")
                .bind(now)
                .bind(started)
                .bind(completed)
                .execute(&mut *tx)
                .await?;
            if state == JobState::Failed {
                q!(core.counters, eng, admin_sql::SET_JOB_STATE)
                    .bind(id(job_id))
                    .bind(started)
                    .bind(completed)
                    .bind(None::<i64>)
                    .bind(Some("failed"))
                    .execute(&mut *tx)
                    .await?;
            }
            q!(core.counters, eng, admin_sql::INSERT_BUILD)
                .bind(id(build_id))
                .bind(now)
                .bind(id(workspace_id))
                .bind(&version)
                .bind(number)
                .bind(transition)
                .bind(&owner)
                .bind(id(job_id))
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_RESOURCE)
                .bind(id(resource_id))
                .bind(now)
                .bind(id(job_id))
                .bind(transition)
                .execute(&mut *tx)
                .await?;
            commit(&core.counters, tx).await?;
            number
        });
        Ok(BuildIds { workspace_id, build_id, job_id, resource_id, build_number })
    }

    /// Move a provisioner job to `state`.
    pub async fn set_job_state(&self, job_id: Uuid, state: JobState) -> Result<(), StoreError> {
        let core = self.store.core();
        let now = now_micros();
        let (started, completed, error) = match state {
            JobState::Pending => (None, None, None),
            JobState::Running => (Some(now), None, None),
            JobState::Succeeded => (Some(now), Some(now), None),
            JobState::Failed => (Some(now), Some(now), Some("failed")),
        };
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::SET_JOB_STATE)
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

    /// Set a build's autostop deadline and its hard cap (unix µs; 0 = none), as the provisioner would.
    pub async fn set_build_deadline(&self, build_id: Uuid, deadline: i64, max_deadline: i64) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::SET_BUILD_DEADLINE)
                .bind(id(build_id))
                .bind(deadline)
                .bind(max_deadline)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A build's deadline and the workspace's `last_used_at` (unix µs), for operators and tests.
    pub async fn build_activity(&self, build_id: Uuid) -> Result<Option<(i64, i64)>, StoreError> {
        let core = self.store.core();
        let got: Option<(i64, i64)> = with_pool!(&core.db, read, |eng, pool| {
            qa!(core.counters, eng, admin_sql::GET_BUILD_ACTIVITY, (i64, i64))
                .bind(id(build_id))
                .fetch_optional(pool)
                .await?
        });
        Ok(got)
    }

    /// Soft-delete a workspace.
    pub async fn delete_workspace(&self, workspace_id: Uuid) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::DELETE_WORKSPACE).bind(id(workspace_id)).execute(pool).await?;
        });
        Ok(())
    }

    /// Create an agent on a resource with a fresh token.
    pub async fn create_agent(&self, resource_id: Uuid, agent: &NewAgent) -> Result<CreatedAgent, StoreError> {
        let core = self.store.core();
        let created = CreatedAgent { id: Uuid::new_v4(), auth_token: Uuid::new_v4() };
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_AGENT)
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

    /// One call for `serve --demo`, `agent create` and tests: organization `default`, a user,
    /// a template, a workspace with a succeeded build, and an agent named `agent_name`.
    pub async fn create_demo_agent(
        &self,
        username: &str,
        workspace: &str,
        agent_name: &str,
    ) -> Result<(BuildIds, CreatedAgent), StoreError> {
        let owner = self.create_user(username, &format!("{username}@example.com")).await?;
        let t = self.create_template("default", "demo").await?;
        let build = self.create_workspace_with_build(owner, t.template_id, workspace).await?;
        let agent = self
            .create_agent(
                build.resource_id,
                &NewAgent {
                    name: agent_name.to_owned(),
                    directory: "/home/coder".to_owned(),
                    architecture: "amd64".to_owned(),
                    operating_system: "linux".to_owned(),
                    ..NewAgent::default()
                },
            )
            .await?;
        Ok((build, agent))
    }

    /// Add an app to an agent.
    pub async fn add_app(&self, agent_id: Uuid, app: &NewApp) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let app_id = Uuid::new_v4();
        let health = app.health.clone().unwrap_or_else(|| {
            if app.healthcheck_url.is_empty() {
                "disabled".into()
            } else {
                "initializing".into()
            }
        });
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_APP)
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

    /// Add a script (and its log source) to an agent.
    pub async fn add_script(&self, agent_id: Uuid, s: &NewScript) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let (script_id, source_id) = (Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        with_pool!(&core.db, write, |eng, pool| {
            let mut tx = begin(&core.counters, eng, pool).await?;
            q!(core.counters, eng, admin_sql::INSERT_LOG_SOURCE)
                .bind(id(agent_id))
                .bind(id(source_id))
                .bind(now)
                .bind(&s.display_name)
                .execute(&mut *tx)
                .await?;
            q!(core.counters, eng, admin_sql::INSERT_SCRIPT)
                .bind(id(script_id))
                .bind(id(agent_id))
                .bind(id(source_id))
                .bind(&s.log_path)
                .bind(now)
                .bind(&s.script)
                .bind(&s.cron)
                .bind(s.start_blocks_login)
                .bind(s.run_on_start)
                .bind(s.run_on_stop)
                .bind(s.timeout_seconds)
                .bind(&s.display_name)
                .execute(&mut *tx)
                .await?;
            commit(&core.counters, tx).await?;
        });
        Ok(script_id)
    }

    /// Add a metadata description (the row the agent's updates then change).
    pub async fn add_metadata_description(&self, agent_id: Uuid, m: &NewMetadata) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_METADATA)
                .bind(id(agent_id))
                .bind(&m.display_name)
                .bind(&m.key)
                .bind(&m.script)
                .bind(m.timeout)
                .bind(m.interval)
                .bind(m.display_order)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Add a devcontainer to an agent.
    pub async fn add_devcontainer(
        &self,
        agent_id: Uuid,
        name: &str,
        workspace_folder: &str,
        config_path: &str,
    ) -> Result<Uuid, StoreError> {
        let core = self.store.core();
        let dc = Uuid::new_v4();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_DEVCONTAINER)
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

    /// Add a memory monitor (threshold in percent).
    pub async fn add_memory_monitor(&self, agent_id: Uuid, enabled: bool, threshold: i64) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_MEMORY_MONITOR)
                .bind(id(agent_id))
                .bind(enabled)
                .bind(threshold)
                .bind(now_micros())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Add a volume monitor (threshold in percent).
    pub async fn add_volume_monitor(
        &self,
        agent_id: Uuid,
        path: &str,
        enabled: bool,
        threshold: i64,
    ) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::INSERT_VOLUME_MONITOR)
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

    /// Set a `site_configs` value (JSON text).
    pub async fn set_site_config(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let core = self.store.core();
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, admin_sql::UPSERT_SITE_CONFIG).bind(key).bind(value).execute(pool).await?;
        });
        Ok(())
    }

    /// Get a `site_configs` value.
    pub async fn site_config(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.store.site_config(key).await
    }

    /// Set the DERP map JSON.
    pub async fn set_derp_map(&self, json: &str) -> Result<(), StoreError> {
        self.set_site_config(SITE_CONFIG_DERP_MAP, json).await
    }

    /// Set the announcement banners JSON array.
    pub async fn set_announcement_banners(&self, json: &str) -> Result<(), StoreError> {
        self.set_site_config(SITE_CONFIG_ANNOUNCEMENT_BANNERS, json).await
    }

    /// Set the service banner JSON object.
    pub async fn set_service_banner(&self, json: &str) -> Result<(), StoreError> {
        self.set_site_config(SITE_CONFIG_SERVICE_BANNER, json).await
    }
}

impl Admin {
    /// Create an API key for `user_id` valid for `lifetime` and return its token, `<id>-<secret>` as Coder
    /// shapes it. Only the secret's hash is stored: the token cannot be shown again.
    pub async fn create_api_key(&self, user_id: Uuid, lifetime: Duration) -> Result<String, StoreError> {
        let core = self.store.core();
        let key_id = random_api_key_chars(API_KEY_ID_LEN);
        let secret = random_api_key_chars(API_KEY_SECRET_LEN);
        let now = now_micros();
        let expires_at = now.saturating_add(i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX));
        with_pool!(&core.db, write, |eng, pool| {
            q!(core.counters, eng, api_key_sql::INSERT_API_KEY)
                .bind(&key_id)
                .bind(hash_api_key_secret(&secret))
                .bind(id(user_id))
                .bind(now)
                .bind(expires_at)
                .execute(pool)
                .await?;
        });
        Ok(format!("{key_id}-{secret}"))
    }
}
