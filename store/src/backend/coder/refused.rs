//! The operator's writes on a Coder database, all refused: templates, workspaces and agents are made by coderd's
//! provisioners, keys and site settings through its API.

use std::time::Duration;

use uuid::Uuid;

use super::CoderDb;
use crate::backend::{AdminSql, DefinitionSql};
use crate::definition::{AgentDefinition, AgentPlacement, DefinedAgent};
use crate::rows::{BuildIds, CreatedAgent, JobState, NewAgent, NewApp, NewMetadata, NewScript, TemplateIds};
use crate::StoreError;

/// Operator writes belong to coderd on its own database: templates, workspaces and agents are made by its
/// provisioners, keys and site settings through its API.
pub(super) fn managed_by_coderd<T>(what: &'static str) -> Result<T, StoreError> {
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
