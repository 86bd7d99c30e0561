//! The agent's HTTP endpoints through Coder's own Go client (`codersdk/agentsdk` v2.30.0, driven by
//! `interop agent-http` in tests/go): the key `coder gitssh` would use parses with Go's ssh package, log sources,
//! logs and app statuses go through, the refusals are the `codersdk.Error`s Coder's callers expect, and the reinit
//! stream of an agent that is not a prebuild neither fails nor delivers an event, only waits.

mod common;

use std::process::Stdio;
use std::time::Duration;

use agentwire::server::ServeConfig;
use agentwire_store::NewApp;
use common::go_interop::binary;
use common::server::{memory_store, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coders_agent_client_gets_coderd_answers() {
    let store = memory_store().await;
    let admin = store.admin();
    let (_, created) = admin.create_demo_agent("alice", "alice-ws", "main").await.unwrap();
    admin
        .add_app(created.id, &NewApp { slug: "web".into(), display_name: "Web".into(), ..NewApp::default() })
        .await
        .unwrap();
    let resolved = store.resolve_agent_by_token(&created.auth_token.to_string()).await.unwrap().unwrap();
    let server = start(store.clone(), ServeConfig::default()).await;

    let url = format!("http://{}", server.addr);
    let token = created.auth_token.to_string();
    let run = tokio::process::Command::new(binary())
        .args(["agent-http", "--url", &url, "--token", &token, "--app", "web", "--reinit-wait", "3s"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run).await.expect("interop agent-http hung").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut names = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let check: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(check["pass"], true, "{line}");
        names.push(check["check"].as_str().unwrap().to_owned());
    }
    assert!(output.status.success(), "{stdout}");
    assert_eq!(
        names,
        [
            "gitsshkey",
            "gitsshkey-unauthorized",
            "log-source",
            "logs",
            "logs-bad-level",
            "app-status",
            "app-status-unknown-app",
            "external-auth",
            "aws-instance-identity",
            "reinit"
        ]
    );
    assert!(stdout.contains("interop: 10 passed, 0 failed"), "{stdout}");

    // What the Go client sent is stored: the key for the owner, the source and its lines, the app's status.
    let scope = store.agent(&resolved);
    assert!(scope.owner_git_ssh_key().await.unwrap().is_some());
    let sources = scope.list_log_sources().await.unwrap();
    assert_eq!(sources.iter().map(|s| s.display_name.as_str()).collect::<Vec<_>>(), ["interop"]);
    let lines = scope.logs_after(0).await.unwrap();
    let got: Vec<(&str, &str)> = lines.iter().map(|l| (l.level.as_str(), l.output.as_str())).collect();
    assert_eq!(got, [("info", "interop line 1"), ("warn", "interop line 2")]);
    assert!(lines.iter().all(|l| l.log_source_id == sources[0].id));
    let probe = scope.insert_app_status("web", "idle", "", None).await.unwrap().unwrap();
    assert_eq!(probe.previous_state.as_deref(), Some("working"));
    server.state.shutdown().await;
}
