//! [`DefinitionSql`] on agentwire's schema: an agent created from a definition, or an agent's definition replaced,
//! each in one transaction, written once for both engines.

use std::collections::HashMap;

use uuid::Uuid;

use super::admin::{
    bind_metadata_description, bind_script_run, insert_build_rows, insert_template_rows, insert_workspace_row,
    BuildRows, TemplateRows, WorkspaceRow,
};
use super::admin_sql::{INSERT_SCRIPT, INSERT_USER, SELECT_USER_ID, UPSERT_ORG};
use super::agent::json_string_array;
use super::definition_sql::*;
use crate::backend::{begin, commit, q, qa, qs, rollback, with_pool, AgentwireDb, DefinitionSql};
use crate::definition::{AgentDefinition, AgentPlacement, DefinedAgent};
use crate::model::{id, now_micros};
use crate::rows::CreatedAgent;
use crate::StoreError;

/// The organization of every operator-created agent (`agent create`, `serve --demo`).
const ORGANIZATION: &str = "default";

/// Brings the agent's apps, scripts, metadata descriptions and monitors to `$def` inside the open transaction `$tx`,
/// matching parts by name. A macro rather than a function: its body is expanded inside each engine's arm of
/// [`with_pool!`], where the transaction has that driver's concrete type.
macro_rules! write_definition_rows {
    ($db:expr, $eng:expr, $tx:expr, $agent_key:expr, $def:expr, $now:expr) => {{
        let (db, eng, agent_key, def, now): (&AgentwireDb, _, &String, &AgentDefinition, i64) =
            ($db, $eng, $agent_key, $def, $now);

        let old_slugs = qs!(db.counters, eng, SELECT_APP_SLUGS, String).bind(agent_key).fetch_all(&mut *$tx).await?;
        for slug in old_slugs.iter().filter(|slug| !def.apps.iter().any(|a| &a.slug == *slug)) {
            q!(db.counters, eng, DELETE_APP).bind(agent_key).bind(slug).execute(&mut *$tx).await?;
        }
        for app in &def.apps {
            // coderd's InsertWorkspaceResource: `initializing` with a health check URL, `disabled` without.
            let health = if app.healthcheck_url.is_empty() { "disabled" } else { "initializing" };
            q!(db.counters, eng, UPSERT_APP)
                .bind(id(Uuid::new_v4()))
                .bind(now)
                .bind(agent_key)
                .bind(&app.slug)
                .bind(&app.display_name)
                .bind(&app.icon)
                .bind(&app.command)
                .bind(&app.url)
                .bind(&app.healthcheck_url)
                .bind(app.healthcheck_interval)
                .bind(app.healthcheck_threshold)
                .bind(health)
                .bind(app.subdomain)
                .bind(&app.sharing_level)
                .bind(app.external)
                .bind(app.display_order)
                .bind(app.hidden)
                .bind(&app.open_in)
                .bind(&app.display_group)
                .bind(&app.tooltip)
                .execute(&mut *$tx)
                .await?;
        }

        let old_scripts = qa!(db.counters, eng, SELECT_SCRIPT_NAMES, (String, String, String))
            .bind(agent_key)
            .fetch_all(&mut *$tx)
            .await?;
        // The first old script of each name that stays keeps its id and log source; every other goes.
        let mut kept: HashMap<&str, (&str, &str)> = HashMap::new();
        for (script_id, source_id, name) in &old_scripts {
            let stays = def.scripts.iter().any(|s| s.display_name == *name);
            if stays && !kept.contains_key(name.as_str()) {
                kept.insert(name.as_str(), (script_id.as_str(), source_id.as_str()));
            } else {
                q!(db.counters, eng, DELETE_SCRIPT).bind(script_id).bind(agent_key).execute(&mut *$tx).await?;
            }
        }
        for s in &def.scripts {
            match kept.get(s.display_name.as_str()) {
                Some((script_id, source_id)) => {
                    let update = q!(db.counters, eng, UPDATE_SCRIPT).bind(*script_id).bind(agent_key).bind(&s.log_path);
                    bind_script_run!(update, s).execute(&mut *$tx).await?;
                    q!(db.counters, eng, UPDATE_LOG_SOURCE_ICON)
                        .bind(agent_key)
                        .bind(*source_id)
                        .bind(&s.icon)
                        .execute(&mut *$tx)
                        .await?;
                }
                None => {
                    let (script_id, source_id) = (id(Uuid::new_v4()), id(Uuid::new_v4()));
                    q!(db.counters, eng, INSERT_SCRIPT_LOG_SOURCE)
                        .bind(agent_key)
                        .bind(&source_id)
                        .bind(now)
                        .bind(&s.display_name)
                        .bind(&s.icon)
                        .execute(&mut *$tx)
                        .await?;
                    let insert = q!(db.counters, eng, INSERT_SCRIPT)
                        .bind(&script_id)
                        .bind(agent_key)
                        .bind(&source_id)
                        .bind(&s.log_path)
                        .bind(now);
                    bind_script_run!(insert, s).bind(&s.display_name).execute(&mut *$tx).await?;
                }
            }
        }

        let old_keys = qs!(db.counters, eng, SELECT_METADATA_KEYS, String).bind(agent_key).fetch_all(&mut *$tx).await?;
        for key in old_keys.iter().filter(|key| !def.metadata.iter().any(|m| &m.key == *key)) {
            q!(db.counters, eng, DELETE_METADATA).bind(agent_key).bind(key).execute(&mut *$tx).await?;
        }
        for m in &def.metadata {
            let upsert = q!(db.counters, eng, UPSERT_METADATA).bind(agent_key);
            bind_metadata_description!(upsert, m).execute(&mut *$tx).await?;
        }

        match &def.memory_monitor {
            Some(m) => {
                q!(db.counters, eng, UPSERT_MEMORY_MONITOR)
                    .bind(agent_key)
                    .bind(m.enabled)
                    .bind(m.threshold)
                    .bind(now)
                    .execute(&mut *$tx)
                    .await?;
            }
            None => {
                q!(db.counters, eng, DELETE_MEMORY_MONITOR).bind(agent_key).execute(&mut *$tx).await?;
            }
        }
        let old_paths = qs!(db.counters, eng, SELECT_VOLUME_PATHS, String).bind(agent_key).fetch_all(&mut *$tx).await?;
        for path in old_paths.iter().filter(|path| !def.volume_monitors.iter().any(|v| &v.path == *path)) {
            q!(db.counters, eng, DELETE_VOLUME_MONITOR).bind(agent_key).bind(path).execute(&mut *$tx).await?;
        }
        for v in &def.volume_monitors {
            q!(db.counters, eng, UPSERT_VOLUME_MONITOR)
                .bind(agent_key)
                .bind(&v.path)
                .bind(v.enabled)
                .bind(v.threshold)
                .bind(now)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// Binds the agent row's defined columns to `$query`, in the order INSERT_DEFINED_AGENT and UPDATE_AGENT_DEFINITION
/// both end with: architecture through display apps.
macro_rules! bind_defined_columns {
    ($query:expr, $def:expr, $display_apps:expr) => {{
        let def: &AgentDefinition = $def;
        $query
            .bind(&def.architecture)
            .bind(&def.operating_system)
            .bind(&def.environment_variables)
            .bind(&def.directory)
            .bind(def.connection_timeout_seconds)
            .bind(&def.troubleshooting_url)
            .bind(&def.motd_file)
            .bind($display_apps)
    }};
}

impl DefinitionSql for AgentwireDb {
    async fn create_defined_agent(
        &self,
        p: AgentPlacement<'_>,
        def: &AgentDefinition,
    ) -> Result<DefinedAgent, StoreError> {
        let agent = CreatedAgent { id: Uuid::new_v4(), auth_token: Uuid::new_v4() };
        let (template_id, version_id, import_job) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (workspace_id, build_id, build_job, resource_id) =
            (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = now_micros();
        let agent_key = id(agent.id);
        let display_apps = json_string_array(&def.display_apps);
        with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            let org = qs!(self.counters, eng, UPSERT_ORG, String)
                .bind(id(Uuid::new_v4()))
                .bind(ORGANIZATION)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            let owner =
                match qs!(self.counters, eng, SELECT_USER_ID, String).bind(p.owner).fetch_optional(&mut *tx).await? {
                    Some(owner) => owner,
                    None => {
                        let owner = id(Uuid::new_v4());
                        q!(self.counters, eng, INSERT_USER)
                            .bind(&owner)
                            .bind(format!("{}@example.com", p.owner))
                            .bind(p.owner)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        owner
                    }
                };
            let template =
                TemplateRows { org: &org, name: p.template, template_id, version_id, job_id: import_job, now };
            insert_template_rows!(self, eng, tx, &template);
            let workspace = WorkspaceRow { workspace_id, owner: &owner, name: p.workspace, template_id, now };
            insert_workspace_row!(self, eng, &mut *tx, &workspace);
            // The first build, succeeded: the agent is as a provisioner would leave it.
            let build = BuildRows {
                org: &org,
                workspace_id,
                version: &id(version_id),
                owner: &owner,
                number: 1,
                transition: "start",
                build_id,
                job_id: build_job,
                resource_id,
                now,
                started: Some(now),
                completed: Some(now),
            };
            insert_build_rows!(self, eng, tx, &build);
            let insert = q!(self.counters, eng, INSERT_DEFINED_AGENT)
                .bind(&agent_key)
                .bind(now)
                .bind(p.agent)
                .bind(id(resource_id))
                .bind(id(agent.auth_token));
            bind_defined_columns!(insert, def, &display_apps).execute(&mut *tx).await?;
            write_definition_rows!(self, eng, tx, &agent_key, def, now);
            commit(&self.counters, tx).await?;
        });
        Ok(DefinedAgent { agent, workspace_id, build_id, resource_id })
    }

    async fn replace_agent_definition(&self, agent_id: Uuid, def: &AgentDefinition) -> Result<bool, StoreError> {
        let now = now_micros();
        let agent_key = id(agent_id);
        let display_apps = json_string_array(&def.display_apps);
        let replaced = with_pool!(self, write, |eng, pool| {
            let mut tx = begin(&self.counters, eng, pool).await?;
            let update = q!(self.counters, eng, UPDATE_AGENT_DEFINITION).bind(&agent_key).bind(now);
            let updated = bind_defined_columns!(update, def, &display_apps).execute(&mut *tx).await?.rows_affected();
            if updated == 0 {
                rollback(&self.counters, tx).await?;
                false
            } else {
                write_definition_rows!(self, eng, tx, &agent_key, def, now);
                commit(&self.counters, tx).await?;
                true
            }
        });
        Ok(replaced)
    }

    async fn find_agent(&self, owner: &str, workspace: &str, agent: &str) -> Result<Option<Uuid>, StoreError> {
        let got: Option<String> = with_pool!(self, read, |eng, pool| {
            qs!(self.counters, eng, FIND_AGENT, String)
                .bind(owner)
                .bind(workspace)
                .bind(agent)
                .fetch_optional(pool)
                .await?
        });
        got.map(|s| Uuid::parse_str(&s).map_err(|e| StoreError::corrupt("workspace_agents", e.to_string()))).transpose()
    }
}
