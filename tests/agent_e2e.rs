//! The agent endpoint end to end: a real Go agent (Coder's own generated client over storj drpc, hashicorp yamux
//! and coder/websocket) calls every Agent RPC; what lands in the database is checked. Then the database budget of
//! a session, counted: hot RPCs never read the agent row and write only through the batchers.

mod common;

use std::collections::HashMap;
use std::process::Stdio;

use agentwire::proto::agent::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire_transport::testing::wait::{eventually, holds_for};
use common::go_interop;
use common::server::{agent_row_reads, agent_with_rows, connect, memory_store, start};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_agent_calls_every_rpc_and_the_effects_land_in_the_database() {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, "gopher").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    // The pinned Coder agent library speaks 2.7 and sends its token as a cookie, as real agents do.
    let output = Command::new(go_interop::binary())
        .args(["agent", "--url", &server.rpc_url("2.7"), "--token", &agent.auth_token.to_string(), "--token-cookie"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the Go agent's session failed:\n{stdout}");
    let mut results: HashMap<String, serde_json::Value> = HashMap::new();
    for line in stdout.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            let rpc = v["rpc"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
            assert_eq!(v["ok"], true, "{rpc} failed: {v}");
            results.insert(rpc, v);
        }
    }
    let expected = [
        "GetManifest",
        "GetServiceBanner",
        "UpdateStats",
        "UpdateLifecycle",
        "BatchUpdateAppHealths",
        "UpdateStartup",
        "BatchUpdateMetadata",
        "BatchCreateLogs",
        "GetAnnouncementBanners",
        "ScriptCompleted",
        "GetResourcesMonitoringConfiguration",
        "PushResourcesMonitoringUsage",
        "ReportConnection",
        "CreateSubAgent",
        "ListSubAgents",
        "DeleteSubAgent",
        "ReportBoundaryLogs",
    ];
    for rpc in expected {
        assert!(results.contains_key(rpc), "{rpc} was not called:\n{stdout}");
    }
    let manifest = &results["GetManifest"]["response"];
    assert_eq!(manifest["agent_name"], "main");
    assert_eq!(manifest["workspace_name"], "gopher-ws");
    assert_eq!(manifest["owner_username"], "gopher");
    assert_eq!(manifest["apps"][0]["slug"], "web");
    assert_eq!(results["UpdateStats"]["response"]["report_interval"], "30s");

    // What the RPCs wrote. Batched telemetry lands at the next flush.
    store.flush().await;
    let resolved = store.resolve_agent_by_token(&agent.auth_token.to_string()).await.unwrap().unwrap();
    let scope = store.agent(&resolved);
    let state = scope.state().await.unwrap().unwrap();
    assert_eq!(state.lifecycle_state, "ready");
    assert_eq!(state.version, "v2.30.0");
    assert_eq!(state.api_version, "2.7");
    assert!(state.first_connected_at.is_some() && state.disconnected_at.is_some());
    assert_eq!(scope.list_apps().await.unwrap()[0].health, "healthy");
    let metadata: HashMap<String, String> =
        scope.list_metadata().await.unwrap().into_iter().map(|m| (m.key, m.value)).collect();
    assert_eq!(metadata["cpu"], "12%");
    assert_eq!(metadata["mem"], "1.2 GiB");
    let logs: Vec<String> = scope.logs_after(0).await.unwrap().into_iter().map(|l| l.output).collect();
    assert_eq!(logs, ["starting", "started"]);
    assert_eq!(scope.script_timings().await.unwrap().len(), 1);
    assert_eq!(scope.connection_logs().await.unwrap().len(), 1);
    assert!(store.batcher_stats().stats.items_flushed >= 1, "the stats report was written");
    assert!(scope.list_sub_agents().await.unwrap().is_empty(), "the sub-agent was created, then deleted");
    let metrics = server.state.metrics();
    assert_eq!(metrics.rpc_count("/coder.agent.v2.Agent/UpdateLifecycle", "ok"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_rpcs_read_no_agent_row_and_write_only_through_the_batchers() {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, "budget").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let client = pb::AgentClient::new(connect(&server, agent.auth_token).await);
    let manifest = client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    let app_id = manifest.apps[0].id.clone();
    // Settle the connect-time writes, then count from a clean slate.
    store.flush().await;
    let reads_before = agent_row_reads(&store);
    let before = store.queries().snapshot();
    let flushes_before = store.batcher_stats();

    let now = Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 });
    for i in 0..1000u32 {
        match i % 3 {
            0 => {
                let metadata = ["cpu", "mem"]
                    .map(|key| pb::Metadata {
                        key: key.into(),
                        result: Some(pb::workspace_agent_metadata::Result {
                            collected_at: now,
                            age: 1,
                            value: format!("{i}"),
                            error: String::new(),
                        }),
                    })
                    .to_vec();
                client.batch_update_metadata(&pb::BatchUpdateMetadataRequest { metadata }).await.unwrap();
            }
            1 => {
                let stats = pb::Stats { connection_count: 1, rx_bytes: i64::from(i), ..Default::default() };
                let reply = client.update_stats(&pb::UpdateStatsRequest { stats: Some(stats) }).await.unwrap();
                assert_eq!(reply.report_interval.unwrap().seconds, 30);
            }
            _ => {
                // Health as it already is: an agent repeats it on every check.
                let update = pb::batch_update_app_health_request::HealthUpdate {
                    id: app_id.clone(),
                    health: pb::AppHealth::Initializing as i32,
                };
                client
                    .batch_update_app_healths(&pb::BatchUpdateAppHealthRequest { updates: vec![update] })
                    .await
                    .unwrap();
            }
        }
    }
    store.flush().await;
    let after = store.queries().snapshot();
    let flushes_after = store.batcher_stats();
    let flushes = (flushes_after.stats.flushes - flushes_before.stats.flushes)
        + (flushes_after.metadata.flushes - flushes_before.metadata.flushes)
        + (flushes_after.heartbeats.flushes - flushes_before.heartbeats.flushes);
    assert_eq!(agent_row_reads(&store), reads_before, "a hot RPC read the agent row");
    let commits = after.commits - before.commits;
    assert!(flushes >= 1);
    assert!(commits <= flushes, "{commits} write transactions for {flushes} batcher flushes");
    let metadata: HashMap<String, String> = store
        .agent(&store.resolve_agent_by_token(&agent.auth_token.to_string()).await.unwrap().unwrap())
        .list_metadata()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.key, m.value))
        .collect();
    assert_eq!(metadata["cpu"], "999", "the last value per key won");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_error_leaves_the_session_usable() {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, "strict").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let client = pb::AgentClient::new(connect(&server, agent.auth_token).await);
    let lifecycle = pb::Lifecycle { state: 99, changed_at: None };
    let err = client.update_lifecycle(&pb::UpdateLifecycleRequest { lifecycle: Some(lifecycle) }).await.unwrap_err();
    assert_eq!(err.code(), Some(0));
    assert!(err.to_string().contains("lifecycle state"), "{err}");
    let huge_key = "k".repeat(7000);
    let metadata = vec![pb::Metadata { key: huge_key, result: None }];
    let err = client.batch_update_metadata(&pb::BatchUpdateMetadataRequest { metadata }).await.unwrap_err();
    assert!(err.to_string().contains("exceeded 6144 bytes"), "{err}");
    let manifest = client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    assert_eq!(manifest.agent_name, "main");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_answers_websocket_pings_and_keeps_its_session() {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, "idle").await;
    let config = ServeConfig {
        ws_ping_interval: Some(std::time::Duration::from_millis(100)),
        ws_ping_timeout: std::time::Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let server = start(store.clone(), config).await;
    let client = pb::AgentClient::new(connect(&server, agent.auth_token).await);
    client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    // Ten ping intervals with nothing to say: only pongs keep the 300 ms silence timeout from firing. The session
    // must be there all along, not only at the end.
    holds_for("the idle session", std::time::Duration::from_secs(1), || server.state.metrics().sessions_active() == 1)
        .await;
    client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_is_dropped_after_the_ping_timeout() {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, "mute").await;
    let config = ServeConfig {
        ws_ping_interval: Some(std::time::Duration::from_millis(100)),
        ws_ping_timeout: std::time::Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let server = start(store.clone(), config).await;
    // Upgrade, then never read nor write: no pongs come back.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(server.rpc_url("2.10")).unwrap();
    request.headers_mut().insert("Coder-Session-Token", agent.auth_token.to_string().parse().unwrap());
    let (_socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let upgraded = tokio::time::Instant::now();
    eventually("the silent session to start", || server.state.metrics().sessions_active() == 1).await;
    eventually("the silent agent to be dropped", || server.state.metrics().sessions_active() == 0).await;
    // Dropped by the ping timeout (300 ms of silence), not before it, and not by a later timer.
    let dropped_after = upgraded.elapsed();
    assert!(dropped_after >= std::time::Duration::from_millis(150), "dropped after {dropped_after:?}");
    assert!(dropped_after < std::time::Duration::from_secs(3), "dropped only after {dropped_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_listener_serves_its_agent_without_websocket() {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, "tcp").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(agentwire::server::serve_tcp(server.state.clone(), listener, agent.auth_token.to_string()));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let session = agentwire_transport::io::spawn_session(
        tcp,
        agentwire_transport::io::Mode::Client,
        &agentwire_transport::io::SessionConfig::default(),
    )
    .0;
    let client =
        pb::AgentClient::new(agentwire_transport::client::Client::new(session, agentwire_transport::Limits::default()));
    let manifest = client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    assert_eq!(manifest.workspace_name, "tcp-ws");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served() {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, "observed").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let client = pb::AgentClient::new(connect(&server, agent.auth_token).await);
    client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    let lifecycle = pb::Lifecycle { state: 99, changed_at: None };
    let _ = client.update_lifecycle(&pb::UpdateLifecycleRequest { lifecycle: Some(lifecycle) }).await;

    let get = |path: &'static str| {
        let addr = server.addr;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut body = String::new();
            tcp.read_to_string(&mut body).await.unwrap();
            body
        }
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    // The server counts a call just after its reply leaves: wait for the count, boundedly, before reading it.
    let counted = || {
        let m = server.state.metrics();
        m.rpc_count("/coder.agent.v2.Agent/UpdateLifecycle", "0") == 1
            && m.rpc_count("/coder.agent.v2.Agent/GetManifest", "ok") == 1
    };
    eventually("both calls to be counted", counted).await;
    let metrics = get("/metrics").await;
    for line in [
        "agentwire_sessions_active 1",
        "agentwire_rpc_total{method=\"/coder.agent.v2.Agent/GetManifest\",code=\"ok\"} 1",
        "agentwire_rpc_total{method=\"/coder.agent.v2.Agent/UpdateLifecycle\",code=\"0\"} 1",
        "agentwire_rpc_duration_seconds_count{method=\"/coder.agent.v2.Agent/GetManifest\"} 1",
        "agentwire_db_queries_total{query=\"GetAuthenticatedWorkspaceAgentAndBuildByAuthToken\"} 1",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }
}

/// The three refusals coderd makes before the upgrade, with its status codes and JSON bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_stale_builds_and_bad_versions_are_refused_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Error;

    let store = memory_store().await;
    let agent = agent_with_rows(&store, "refused").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let refusal = |version: &'static str, token: String| {
        let url = server.rpc_url(version);
        async move {
            let mut request = url.into_client_request().unwrap();
            request.headers_mut().insert("Coder-Session-Token", token.parse().unwrap());
            match tokio_tungstenite::connect_async(request).await {
                Err(Error::Http(response)) => {
                    let status = response.status().as_u16();
                    let body: serde_json::Value =
                        serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                    (status, body)
                }
                Err(other) => panic!("unexpected error {other}"),
                Ok(_) => panic!("the upgrade went through"),
            }
        }
    };
    let (status, body) = refusal("2.10", uuid::Uuid::new_v4().to_string()).await;
    assert_eq!((status, body["message"].as_str().unwrap()), (401, "Workspace agent not authorized."));
    let (status, body) = refusal("2.10", "not-a-uuid".into()).await;
    assert_eq!((status, body["message"].as_str().unwrap()), (401, "Workspace agent token invalid."));
    let (status, body) = refusal("2.11", agent.auth_token.to_string()).await;
    assert_eq!((status, body["message"].as_str().unwrap()), (400, "Unknown or unsupported API version"));
    assert_eq!(body["validations"][0]["field"], "version");

    // A newer build of the workspace makes this agent's build stale: refused as an unknown token, as coderd v2.30's
    // lookup finds no row for it.
    let resolved = store.resolve_agent_by_token(&agent.auth_token.to_string()).await.unwrap().unwrap();
    store.admin().create_build(resolved.workspace_id, "start", agentwire_store::JobState::Succeeded).await.unwrap();
    let (status, body) = refusal("2.10", agent.auth_token.to_string()).await;
    assert_eq!((status, body["message"].as_str().unwrap()), (401, "Workspace agent not authorized."));
    assert_eq!(server.state.metrics().sessions_active(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_build_ends_the_old_builds_sessions_with_one_query_for_all() {
    let store = memory_store().await;
    let stopped = agent_with_rows(&store, "stopped").await;
    let others = [agent_with_rows(&store, "kept-a").await, agent_with_rows(&store, "kept-b").await];
    let interval = std::time::Duration::from_millis(100);
    let server = start(store.clone(), ServeConfig { build_check_interval: interval, ..ServeConfig::default() }).await;
    let client = pb::AgentClient::new(connect(&server, stopped.auth_token).await);
    let mut kept = Vec::new();
    for agent in &others {
        kept.push(pb::AgentClient::new(connect(&server, agent.auth_token).await));
    }
    client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    eventually("three sessions", || server.state.metrics().sessions_active() == 3).await;

    // Checks run while nothing is superseded: one statement per check, whatever the number of sessions.
    let before = store.queries().get("GetLatestWorkspaceBuildByWorkspaceID");
    let watched = tokio::time::Instant::now();
    tokio::time::sleep(interval * 5).await;
    let checks = store.queries().get("GetLatestWorkspaceBuildByWorkspaceID") - before;
    let ticks = (watched.elapsed().as_millis() / interval.as_millis()) as u64;
    assert!(checks >= 1 && checks <= ticks + 1, "{checks} statements for about {ticks} checks of 3 sessions");
    assert_eq!(server.state.metrics().sessions_active(), 3);

    // coderd stops the workspace: a newer build. The old build's session ends; the others stay.
    let resolved = store.resolve_agent_by_token(&stopped.auth_token.to_string()).await.unwrap().unwrap();
    store.admin().create_build(resolved.workspace_id, "stop", agentwire_store::JobState::Succeeded).await.unwrap();
    eventually("the stopped workspace's session to end", || server.state.metrics().sessions_active() == 2).await;
    assert!(client.get_manifest(&pb::GetManifestRequest {}).await.is_err(), "the ended session still answers");
    for other in &kept {
        other.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    }
    let metrics = server.state.metrics().render(&store);
    assert!(metrics.contains("agentwire_sessions_superseded_total 1\n"), "{metrics}");
    // Its reconnects are refused as coderd refuses them.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(server.rpc_url("2.7")).unwrap();
    request.headers_mut().insert("Coder-Session-Token", stopped.auth_token.to_string().parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("the stopped build's agent was not refused: {:?}", other.map(|_| ())),
    }
}
