//! The real `coder agent`'s command line and environment, as every test that runs it sets them up: its token, its
//! own directories for logs, scripts and `$TMPDIR` under the test's directory, its HTTP side endpoints on free ports,
//! and devcontainer detection off (no Docker daemon here, and its absence is not an error the tests should tolerate).

use std::path::Path;

use tokio::process::Command;

/// `coder agent` against `url` with `token`; its files under `dir`, `$TMPDIR` at `tmp` (created), where the
/// example's and the templates' scripts keep theirs: one directory per run. Output and stdin are the caller's.
pub fn coder_agent_command(coder: &Path, dir: &Path, tmp: &Path, url: &str, token: &str) -> Command {
    std::fs::create_dir_all(tmp).expect("the agent's TMPDIR");
    let mut cmd = Command::new(coder);
    cmd.arg("agent")
        .env("CODER_AGENT_URL", url)
        .env("CODER_AGENT_TOKEN", token)
        .env("CODER_AGENT_AUTH", "token")
        .env("CODER_AGENT_LOG_DIR", dir.join("agent-logs"))
        .env("CODER_AGENT_SCRIPT_DATA_DIR", dir.join("agent-scripts"))
        .env("CODER_AGENT_DEBUG_ADDRESS", "127.0.0.1:0")
        .env("CODER_AGENT_PPROF_ADDRESS", "127.0.0.1:0")
        .env("CODER_AGENT_PROMETHEUS_ADDRESS", "127.0.0.1:0")
        .env("CODER_AGENT_DEVCONTAINERS_ENABLE", "false")
        .env("TMPDIR", tmp);
    cmd
}
