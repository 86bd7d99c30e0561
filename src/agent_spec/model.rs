//! The file's shape: one TOML document per agent, its top level the `coder_agent` block's attributes, with the
//! blocks and resources a Coder template attaches to an agent as tables and arrays of tables. Names are the Terraform
//! provider's (v2.13.1, the one Coder v2.30.0 pins), so a template's block reads across almost word for word.
//! Unknown keys are errors, so a misspelt key never goes unnoticed. What each field may hold is checked in
//! `validate.rs`; defaults are applied in `apply.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An agent's definition: `coder_agent` plus its `coder_script`, `coder_app` and `coder_env` resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// `linux`, `darwin` or `windows`; this machine's when left out.
    pub os: Option<String>,
    /// `amd64`, `armv7` or `arm64`; this machine's when left out.
    pub arch: Option<String>,
    /// The directory sessions start in; empty leaves it to the agent (the user's home).
    #[serde(default)]
    pub dir: String,
    /// Seconds without a connection before the agent counts as timed out; 0 = never. Default 120.
    pub connection_timeout: Option<i64>,
    /// A page to show when the agent has trouble connecting.
    #[serde(default)]
    pub troubleshooting_url: String,
    /// A file inside the workspace shown to users at SSH login, such as `/etc/motd`.
    #[serde(default)]
    pub motd_file: String,
    /// Environment variables of every process the agent starts (`coder_agent.env` and `coder_env` alike).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The built-in apps shown in the dashboard's agent bar; left out, Coder's default set.
    pub display_apps: Option<DisplayApps>,
    /// `[[scripts]]`: `coder_script` resources.
    #[serde(default)]
    pub scripts: Vec<ScriptSpec>,
    /// `[[metadata]]`: the `coder_agent` block's `metadata` items, values the agent collects and reports.
    #[serde(default)]
    pub metadata: Vec<MetadataSpec>,
    /// `[[apps]]`: `coder_app` resources.
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    /// `[resources_monitoring]`: alerts on memory and volume usage.
    pub resources_monitoring: Option<ResourcesMonitoring>,
}

/// `display_apps`: each flag shows or hides one built-in app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayApps {
    /// VS Code Desktop. Default true.
    #[serde(default = "yes")]
    pub vscode: bool,
    /// VS Code Insiders. Default false.
    #[serde(default)]
    pub vscode_insiders: bool,
    /// The web terminal. Default true.
    #[serde(default = "yes")]
    pub web_terminal: bool,
    /// The port-forwarding helper. Default true.
    #[serde(default = "yes")]
    pub port_forwarding_helper: bool,
    /// The SSH helper. Default true.
    #[serde(default = "yes")]
    pub ssh_helper: bool,
}

impl Default for DisplayApps {
    /// Coder's default when the block is left out: all but VS Code Insiders.
    fn default() -> Self {
        DisplayApps {
            vscode: true,
            vscode_insiders: false,
            web_terminal: true,
            port_forwarding_helper: true,
            ssh_helper: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// A `coder_script`: run at start, at stop, on a schedule, or a mix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptSpec {
    /// Required, unique among the scripts: names the script's logs in the dashboard.
    #[serde(default)]
    pub display_name: String,
    /// Required: the script, run by the agent's shell.
    #[serde(default)]
    pub script: String,
    /// An icon URL for the script's logs.
    #[serde(default)]
    pub icon: String,
    /// Run when the agent starts.
    #[serde(default)]
    pub run_on_start: bool,
    /// Run when the agent stops.
    #[serde(default)]
    pub run_on_stop: bool,
    /// Six fields, seconds first (`0 */5 * * * *`): run on this schedule.
    #[serde(default)]
    pub cron: String,
    /// Users wait for this start script before they log in; needs `run_on_start`.
    #[serde(default)]
    pub start_blocks_login: bool,
    /// Seconds the script may run before it is killed and the agent marked as timed out; at least 1. Left out, no
    /// limit.
    pub timeout: Option<i64>,
    /// The file the agent also writes the script's output to; relative paths are under the agent's log directory.
    #[serde(default)]
    pub log_path: String,
}

/// A `metadata` item: the agent runs `script` every `interval` seconds and reports its output under `key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSpec {
    /// Required, unique among the items.
    #[serde(default)]
    pub key: String,
    /// The name shown for the value.
    #[serde(default)]
    pub display_name: String,
    /// Required: prints the value.
    #[serde(default)]
    pub script: String,
    /// Required: seconds between collections; 0 collects once.
    pub interval: Option<i64>,
    /// Seconds one collection may take; left out or 0, the interval (or the agent's default when that is 0 too).
    pub timeout: Option<i64>,
    /// Position among the items, lowest first; equal orders sort by key.
    #[serde(default)]
    pub order: i64,
}

/// A `coder_app`: a URL the dashboard proxies into the workspace (or opens as is when `external`), or a command run
/// in a terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Required, unique among the apps: a hostname label (lower-case letters, digits, single inner hyphens).
    #[serde(default)]
    pub slug: String,
    /// The app's name in the dashboard; the slug when left out. At most 64 bytes.
    #[serde(default)]
    pub display_name: String,
    /// The address proxied to, such as `http://localhost:8080`; exclusive with `command`.
    pub url: Option<String>,
    /// A command run in a terminal; exclusive with `url`.
    pub command: Option<String>,
    /// An icon URL.
    #[serde(default)]
    pub icon: String,
    /// Open `url` on the user's machine instead of proxying it; excludes `healthcheck`, `command`, `subdomain` and
    /// `share`.
    #[serde(default)]
    pub external: bool,
    /// Serve the app on its own subdomain instead of under a path.
    #[serde(default)]
    pub subdomain: bool,
    /// Who may open it: `owner` (the default), `authenticated` or `public`.
    pub share: Option<String>,
    /// Health checks the agent runs; the app's health is `disabled` without them.
    pub healthcheck: Option<HealthcheckSpec>,
    /// The dashboard group the app is shown in. At most 64 bytes.
    #[serde(default)]
    pub group: String,
    /// Position among the apps, lowest first.
    #[serde(default)]
    pub order: i64,
    /// Hide the app from the dashboard.
    #[serde(default)]
    pub hidden: bool,
    /// `slim-window` (the default) or `tab`.
    pub open_in: Option<String>,
    /// Markdown shown on hover. At most 2048 bytes.
    #[serde(default)]
    pub tooltip: String,
}

/// `healthcheck`: the agent GETs `url` every `interval` seconds; a response below 500 within the interval is healthy,
/// and `threshold` failures in a row make the app unhealthy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckSpec {
    /// Required.
    #[serde(default)]
    pub url: String,
    /// Required, at least 1: seconds between checks.
    pub interval: Option<i64>,
    /// Required, at least 1: failures in a row before the app is unhealthy.
    pub threshold: Option<i64>,
}

/// `resources_monitoring`: alert when memory or a volume is used past a percentage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesMonitoring {
    /// `[resources_monitoring.memory]`.
    pub memory: Option<MonitorSpec>,
    /// `[[resources_monitoring.volume]]`, one per path.
    #[serde(default)]
    pub volume: Vec<VolumeSpec>,
}

/// The memory monitor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    /// Required.
    pub enabled: Option<bool>,
    /// Required, 0 to 100: percent of memory used.
    pub threshold: Option<i64>,
}

/// A volume monitor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Required, absolute, unique among the volumes.
    #[serde(default)]
    pub path: String,
    /// Required.
    pub enabled: Option<bool>,
    /// Required, 0 to 100: percent of the volume used.
    pub threshold: Option<i64>,
}
