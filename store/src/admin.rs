//! The operator's writes ([`Admin`]): fixtures, `agent create`, `serve --demo`, site configuration and user
//! API keys. Handlers have no reason to call any of it; the agent's own rows go through [`crate::AgentScope`].

use std::time::Duration;

use uuid::Uuid;

use crate::api_key::{hash_api_key_secret, random_api_key_chars, API_KEY_ID_LEN, API_KEY_SECRET_LEN};
use crate::backend::{AdminSql, Db};
use crate::pubsub::SITE_CONFIG_CHANNEL;
use crate::rows::{BuildIds, CreatedAgent, JobState, NewAgent, NewApp, NewMetadata, NewScript, TemplateIds};
use crate::site_config::{SITE_CONFIG_ANNOUNCEMENT_BANNERS, SITE_CONFIG_DERP_MAP, SITE_CONFIG_SERVICE_BANNER};
use crate::{Store, StoreError};

/// Operator surface of the store (see [`Store::admin`]).
#[derive(Debug, Clone)]
pub struct Admin {
    pub(crate) store: Store,
}

impl Admin {
    fn db(&self) -> &Db {
        &self.store.core().db
    }

    /// Create (or find) an organization by name.
    pub async fn ensure_organization(&self, name: &str) -> Result<Uuid, StoreError> {
        self.db().ensure_organization(name).await
    }

    /// Create a user.
    pub async fn create_user(&self, username: &str, email: &str) -> Result<Uuid, StoreError> {
        self.db().create_user(username, email).await
    }

    /// The id of a user that is not deleted, by username: lets operator commands reuse an owner.
    pub async fn user_id(&self, username: &str) -> Result<Option<Uuid>, StoreError> {
        self.db().user_id(username).await
    }

    /// Create a template with one (active) version, in the named organization.
    pub async fn create_template(&self, org: &str, name: &str) -> Result<TemplateIds, StoreError> {
        let organization_id = self.ensure_organization(org).await?;
        self.db().create_template(organization_id, name).await
    }

    /// Create a workspace of `template_id` owned by `owner_id`, with a first `start` build
    /// whose job has succeeded, and one resource for agents.
    pub async fn create_workspace_with_build(
        &self,
        owner_id: Uuid,
        template_id: Uuid,
        name: &str,
    ) -> Result<BuildIds, StoreError> {
        let workspace_id = self.db().create_workspace(owner_id, template_id, name).await?;
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
        self.db().create_build(workspace_id, transition, state).await
    }

    /// Move a provisioner job to `state`.
    pub async fn set_job_state(&self, job_id: Uuid, state: JobState) -> Result<(), StoreError> {
        self.db().set_job_state(job_id, state).await
    }

    /// Set a build's autostop deadline and its hard cap (unix µs; 0 = none), as the provisioner would.
    pub async fn set_build_deadline(&self, build_id: Uuid, deadline: i64, max_deadline: i64) -> Result<(), StoreError> {
        self.db().set_build_deadline(build_id, deadline, max_deadline).await
    }

    /// A build's deadline and the workspace's `last_used_at` (unix µs), for operators and tests.
    pub async fn build_activity(&self, build_id: Uuid) -> Result<Option<(i64, i64)>, StoreError> {
        self.db().build_activity(build_id).await
    }

    /// Soft-delete a workspace.
    pub async fn delete_workspace(&self, workspace_id: Uuid) -> Result<(), StoreError> {
        self.db().delete_workspace(workspace_id).await
    }

    /// Create an agent on a resource with a fresh token.
    pub async fn create_agent(&self, resource_id: Uuid, agent: &NewAgent) -> Result<CreatedAgent, StoreError> {
        self.db().create_agent(resource_id, agent).await
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
        self.db().add_app(agent_id, app).await
    }

    /// Add a script (and its log source) to an agent.
    pub async fn add_script(&self, agent_id: Uuid, s: &NewScript) -> Result<Uuid, StoreError> {
        self.db().add_script(agent_id, s).await
    }

    /// Add a metadata description (the row the agent's updates then change).
    pub async fn add_metadata_description(&self, agent_id: Uuid, m: &NewMetadata) -> Result<(), StoreError> {
        self.db().add_metadata_description(agent_id, m).await
    }

    /// Add a devcontainer to an agent.
    pub async fn add_devcontainer(
        &self,
        agent_id: Uuid,
        name: &str,
        workspace_folder: &str,
        config_path: &str,
    ) -> Result<Uuid, StoreError> {
        self.db().add_devcontainer(agent_id, name, workspace_folder, config_path).await
    }

    /// Add a memory monitor (threshold in percent).
    pub async fn add_memory_monitor(&self, agent_id: Uuid, enabled: bool, threshold: i64) -> Result<(), StoreError> {
        self.db().add_memory_monitor(agent_id, enabled, threshold).await
    }

    /// Add a volume monitor (threshold in percent).
    pub async fn add_volume_monitor(
        &self,
        agent_id: Uuid,
        path: &str,
        enabled: bool,
        threshold: i64,
    ) -> Result<(), StoreError> {
        self.db().add_volume_monitor(agent_id, path, enabled, threshold).await
    }

    /// Set a `site_configs` value (JSON text).
    pub async fn set_site_config(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.db().set_site_config(key, value).await
    }

    /// Get a `site_configs` value.
    pub async fn site_config(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.store.site_config(key).await
    }

    /// Set a setting that servers serve from memory, and announce it on [`SITE_CONFIG_CHANNEL`] so that they re-read
    /// it now rather than at their next interval.
    async fn set_served_site_config(&self, key: &'static str, json: &str) -> Result<(), StoreError> {
        self.set_site_config(key, json).await?;
        // The value is stored: an announcement that does not go out only delays it to the servers' next re-read, so
        // it does not fail the write.
        if let Err(err) = self.store.pubsub().publish(SITE_CONFIG_CHANNEL, key).await {
            tracing::warn!(key, error = %err, "announcing a site configuration write");
        }
        Ok(())
    }

    /// Set the DERP map JSON; running servers are told.
    pub async fn set_derp_map(&self, json: &str) -> Result<(), StoreError> {
        self.set_served_site_config(SITE_CONFIG_DERP_MAP, json).await
    }

    /// Set the announcement banners JSON array; running servers are told.
    pub async fn set_announcement_banners(&self, json: &str) -> Result<(), StoreError> {
        self.set_served_site_config(SITE_CONFIG_ANNOUNCEMENT_BANNERS, json).await
    }

    /// Set the legacy service banner JSON object. Nothing serves it: coderd v2.30 answers GetServiceBanner with the
    /// first announcement banner, and its migration 208 moved this key into that list.
    pub async fn set_service_banner(&self, json: &str) -> Result<(), StoreError> {
        self.set_site_config(SITE_CONFIG_SERVICE_BANNER, json).await
    }

    /// Create an API key for `user_id` valid for `lifetime` and return its token, `<id>-<secret>` as Coder
    /// shapes it. Only the secret's hash is stored: the token cannot be shown again.
    pub async fn create_api_key(&self, user_id: Uuid, lifetime: Duration) -> Result<String, StoreError> {
        let key_id = random_api_key_chars(API_KEY_ID_LEN);
        let secret = random_api_key_chars(API_KEY_SECRET_LEN);
        self.db().insert_api_key(&key_id, &hash_api_key_secret(&secret), user_id, lifetime).await?;
        Ok(format!("{key_id}-{secret}"))
    }
}
