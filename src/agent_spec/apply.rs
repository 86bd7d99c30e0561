//! From a checked definition to the store's rows, with Coder's defaults, and the two operations on them: create an
//! agent from a definition, or bring an existing agent to one.

use agentwire_store::{
    AgentDefinition, AgentPlacement, AppDefinition, DefinedAgent, MonitorDefinition, NewMetadata, ScriptDefinition,
    Store, StoreError, VolumeMonitorDefinition,
};
use uuid::Uuid;

use super::model::{AgentSpec, DisplayApps};

/// provider/agent.go:154: `connection_timeout` defaults to 120 seconds.
const DEFAULT_CONNECTION_TIMEOUT: i64 = 120;

/// Why an update did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// No live top-level agent has that id (deleted, a sub-agent, or never created).
    #[error(
        "no agent {0} to update (it may be deleted, or a devcontainer's sub-agent, which a definition cannot set)"
    )]
    NoSuchAgent(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store's rows for a definition that passed validation.
pub fn definition(spec: &AgentSpec) -> AgentDefinition {
    AgentDefinition {
        architecture: spec.arch.clone().unwrap_or_else(|| host_arch().to_owned()),
        operating_system: spec.os.clone().unwrap_or_else(|| host_os().to_owned()),
        directory: spec.dir.clone(),
        // coderd stores NULL for no variables (coderd/provisionerdserver/provisionerdserver.go:2755-2765).
        environment_variables: (!spec.env.is_empty())
            .then(|| serde_json::to_string(&spec.env).unwrap_or_else(|_| "{}".to_owned())),
        motd_file: spec.motd_file.clone(),
        troubleshooting_url: spec.troubleshooting_url.clone(),
        connection_timeout_seconds: spec.connection_timeout.unwrap_or(DEFAULT_CONNECTION_TIMEOUT),
        // Left out, Coder's default set (provisioner/terraform/resources.go:315).
        display_apps: display_app_names(&spec.display_apps.unwrap_or_default()),
        apps: spec
            .apps
            .iter()
            .map(|a| AppDefinition {
                slug: a.slug.clone(),
                // The slug when left out (provisioner/terraform/resources.go:509-517).
                display_name: if a.display_name.is_empty() { a.slug.clone() } else { a.display_name.clone() },
                icon: a.icon.clone(),
                // Empty is NULL, as coderd stores them (provisionerdserver.go:3033-3040).
                command: a.command.clone().filter(|c| !c.is_empty()),
                url: a.url.clone().filter(|u| !u.is_empty()),
                external: a.external,
                subdomain: a.subdomain,
                sharing_level: a.share.clone().unwrap_or_else(|| "owner".to_owned()),
                healthcheck_url: a.healthcheck.as_ref().map(|h| h.url.clone()).unwrap_or_default(),
                healthcheck_interval: a.healthcheck.as_ref().and_then(|h| h.interval).unwrap_or(0),
                healthcheck_threshold: a.healthcheck.as_ref().and_then(|h| h.threshold).unwrap_or(0),
                display_order: a.order,
                // An empty group is NULL (provisionerdserver.go:3001-3004).
                display_group: (!a.group.is_empty()).then(|| a.group.clone()),
                hidden: a.hidden,
                open_in: a.open_in.clone().unwrap_or_else(|| "slim-window".to_owned()),
                tooltip: a.tooltip.clone(),
            })
            .collect(),
        scripts: spec
            .scripts
            .iter()
            .map(|s| ScriptDefinition {
                display_name: s.display_name.clone(),
                icon: s.icon.clone(),
                script: s.script.clone(),
                cron: s.cron.clone(),
                log_path: s.log_path.clone(),
                run_on_start: s.run_on_start,
                run_on_stop: s.run_on_stop,
                start_blocks_login: s.start_blocks_login,
                timeout_seconds: s.timeout.unwrap_or(0),
            })
            .collect(),
        metadata: spec
            .metadata
            .iter()
            .map(|m| NewMetadata {
                key: m.key.clone(),
                display_name: m.display_name.clone(),
                script: m.script.clone(),
                // Seconds, stored as they are, as coderd does (provisionerdserver.go:2815-2822).
                interval: m.interval.unwrap_or(0),
                timeout: m.timeout.unwrap_or(0),
                display_order: m.order,
            })
            .collect(),
        memory_monitor: spec
            .resources_monitoring
            .as_ref()
            .and_then(|rm| rm.memory.as_ref())
            .map(|m| MonitorDefinition { enabled: m.enabled.unwrap_or(false), threshold: m.threshold.unwrap_or(0) }),
        volume_monitors: spec
            .resources_monitoring
            .iter()
            .flat_map(|rm| &rm.volume)
            .map(|v| VolumeMonitorDefinition {
                path: v.path.clone(),
                enabled: v.enabled.unwrap_or(false),
                threshold: v.threshold.unwrap_or(0),
            })
            .collect(),
    }
}

/// In coderd's order (convertDisplayApps, coderd/provisionerdserver/provisionerdserver.go:3340-3363).
fn display_app_names(d: &DisplayApps) -> Vec<String> {
    [
        (d.vscode, "vscode"),
        (d.vscode_insiders, "vscode_insiders"),
        (d.ssh_helper, "ssh_helper"),
        (d.port_forwarding_helper, "port_forwarding_helper"),
        (d.web_terminal, "web_terminal"),
    ]
    .into_iter()
    .filter(|(shown, _)| *shown)
    .map(|(_, name)| name.to_owned())
    .collect()
}

/// This machine's architecture in Coder's words, for definitions that leave `arch` out.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "arm" => "armv7",
        _ => "amd64",
    }
}

/// This machine's operating system in Coder's words, for definitions that leave `os` out.
fn host_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "windows",
        _ => "linux",
    }
}

/// Create an agent from a definition, with its owner (when missing), template, workspace and build, in one
/// transaction.
pub async fn create_agent(
    store: &Store,
    placement: AgentPlacement<'_>,
    spec: &AgentSpec,
) -> Result<DefinedAgent, StoreError> {
    store.admin().create_defined_agent(placement, &definition(spec)).await
}

/// Bring an existing agent to a definition in one transaction, keeping its id and token: what a template version
/// update gives an agent in Coder. A connected agent sees it at its next manifest fetch, which a Coder agent makes
/// when it (re)connects; nothing is pushed to it, as coderd pushes nothing either.
pub async fn update_agent(store: &Store, agent_id: Uuid, spec: &AgentSpec) -> Result<(), UpdateError> {
    if store.admin().replace_agent_definition(agent_id, &definition(spec)).await? {
        Ok(())
    } else {
        Err(UpdateError::NoSuchAgent(agent_id))
    }
}
