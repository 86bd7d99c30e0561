//! An agent's definition: what a Coder template gives an agent (the `coder_agent` block with its metadata, display
//! apps and resource monitors, and the `coder_app`, `coder_script` and `coder_env` resources attached to it), as the
//! rows coderd's `InsertWorkspaceResource` writes. Creating an agent from one and replacing an existing agent's are
//! each one transaction.
//!
//! A replacement keeps the agent's id and token, so a running agent keeps its session, and what it already wrote
//! (logs and their sources, connection logs, stats, lifecycle). Parts are matched across the two definitions by
//! what names them, so that a part that stays keeps its rows: apps by slug (with their statuses, and their health
//! while the health check URL is unchanged), scripts by display name (with their id, log source and timings),
//! metadata by key (with the last value), volume monitors by path and the memory monitor (with their alert state).
//! Parts that are gone are deleted; log sources never are, since the logs written under them stay.

use uuid::Uuid;

use crate::backend::DefinitionSql;
use crate::rows::{CreatedAgent, NewMetadata};
use crate::{Admin, StoreError};

/// Everything a definition sets on an agent. The agent row's columns, then its other rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AgentDefinition {
    pub architecture: String,
    pub operating_system: String,
    pub directory: String,
    /// A JSON object of names to values, or `None` for no variables (Coder stores NULL then).
    pub environment_variables: Option<String>,
    pub motd_file: String,
    pub troubleshooting_url: String,
    pub connection_timeout_seconds: i64,
    /// Coder's display app names (`vscode`, `vscode_insiders`, `web_terminal`, `ssh_helper`,
    /// `port_forwarding_helper`), in the order coderd stores them.
    pub display_apps: Vec<String>,
    /// Slugs are unique.
    pub apps: Vec<AppDefinition>,
    /// Display names are unique: each names its log source.
    pub scripts: Vec<ScriptDefinition>,
    /// Keys are unique. Interval and timeout in seconds, the unit coderd stores.
    pub metadata: Vec<NewMetadata>,
    pub memory_monitor: Option<MonitorDefinition>,
    /// Paths are unique.
    pub volume_monitors: Vec<VolumeMonitorDefinition>,
}

/// A `workspace_apps` row as a definition gives it. Its health follows from the health check URL: `initializing`
/// with one, `disabled` without.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct AppDefinition {
    pub slug: String,
    pub display_name: String,
    pub icon: String,
    pub command: Option<String>,
    pub url: Option<String>,
    pub external: bool,
    pub subdomain: bool,
    /// `owner`, `authenticated`, `organization` or `public`.
    pub sharing_level: String,
    pub healthcheck_url: String,
    /// Seconds.
    pub healthcheck_interval: i64,
    pub healthcheck_threshold: i64,
    pub display_order: i64,
    pub display_group: Option<String>,
    pub hidden: bool,
    /// `tab` or `slim-window`.
    pub open_in: String,
    pub tooltip: String,
}

/// A `workspace_agent_scripts` row and its log source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ScriptDefinition {
    pub display_name: String,
    /// The log source's icon.
    pub icon: String,
    pub script: String,
    pub cron: String,
    pub log_path: String,
    pub run_on_start: bool,
    pub run_on_stop: bool,
    pub start_blocks_login: bool,
    /// 0 = none.
    pub timeout_seconds: i64,
}

/// The memory monitor: alert past `threshold` percent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MonitorDefinition {
    pub enabled: bool,
    pub threshold: i64,
}

/// A volume monitor: alert when the volume at `path` is past `threshold` percent full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct VolumeMonitorDefinition {
    pub path: String,
    pub enabled: bool,
    pub threshold: i64,
}

/// Where [`Admin::create_defined_agent`] puts the agent: the user (created when missing), a new template with one
/// version, and a new workspace with a succeeded `start` build, all in organization `default`.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct AgentPlacement<'a> {
    pub owner: &'a str,
    pub template: &'a str,
    pub workspace: &'a str,
    pub agent: &'a str,
}

/// What [`Admin::create_defined_agent`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct DefinedAgent {
    pub agent: CreatedAgent,
    pub workspace_id: Uuid,
    pub build_id: Uuid,
    pub resource_id: Uuid,
}

impl AgentDefinition {
    /// The identities an update matches parts by must be unique, or the match would be a guess.
    pub(crate) fn check_unique_names(&self) -> Result<(), StoreError> {
        fn unique<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<(), StoreError> {
            let mut seen = std::collections::HashSet::new();
            for name in names {
                if !seen.insert(name) {
                    return Err(StoreError::Invalid(format!("duplicate {what} {name:?}")));
                }
            }
            Ok(())
        }
        unique("app slug", self.apps.iter().map(|a| a.slug.as_str()))?;
        unique("script display name", self.scripts.iter().map(|s| s.display_name.as_str()))?;
        unique("metadata key", self.metadata.iter().map(|m| m.key.as_str()))?;
        unique("volume monitor path", self.volume_monitors.iter().map(|v| v.path.as_str()))
    }
}

impl Admin {
    /// Create an agent and every row of its definition, with its owner (when missing), template, workspace and
    /// build, in one transaction: a failure leaves nothing behind.
    pub async fn create_defined_agent(
        &self,
        placement: AgentPlacement<'_>,
        definition: &AgentDefinition,
    ) -> Result<DefinedAgent, StoreError> {
        definition.check_unique_names()?;
        self.store.core().db.create_defined_agent(placement, definition).await
    }

    /// Replace the definition of a live top-level agent in one transaction, keeping its id, token and the rows
    /// named in the module documentation. `false` when there is no such agent. A connected agent sees the new
    /// definition at its next manifest fetch.
    pub async fn replace_agent_definition(
        &self,
        agent_id: Uuid,
        definition: &AgentDefinition,
    ) -> Result<bool, StoreError> {
        definition.check_unique_names()?;
        self.store.core().db.replace_agent_definition(agent_id, definition).await
    }

    /// The live top-level agent `agent` of `owner`'s workspace `workspace`, in its latest build.
    pub async fn find_agent(&self, owner: &str, workspace: &str, agent: &str) -> Result<Option<Uuid>, StoreError> {
        self.store.core().db.find_agent(owner, workspace, agent).await
    }
}
