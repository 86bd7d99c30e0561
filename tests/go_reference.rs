//! `interop reference`, the coderd-shaped Go server the benchmarks compare agentwire against, driven through our
//! typed clients over WebSocket and TCP: every Agent RPC of Coder v2.30.0 answers with coderd's shapes, and the
//! Tailnet streams (DERP maps, coordination) behave as coderd's do. A benchmark against a server that fails its
//! calls would measure errors, so this is what keeps the reference honest.

mod common;

use std::time::Duration;

use agentwire::proto::agent::v2 as pb;
use agentwire::proto::tailnet::v2 as tailnet;
use agentwire_transport::client::{CallError, Client};
use agentwire_transport::io::ws;
use agentwire_transport::io::{spawn_session, Mode, SessionConfig, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::Limits;
use bytes::Bytes;
use common::go_interop;
use prost_types::{Duration as PbDuration, Timestamp};

/// Long enough for any answer on a loaded CI machine; only failures wait this long.
const WAIT: Duration = Duration::from_secs(20);

/// One yamux session to the Go server; over WebSocket with `token` in Coder's header.
async fn connect(go: &go_interop::GoServer, transport: &str, token: &str) -> Client {
    let session = if transport == "ws" {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = go.address.as_str().into_client_request().unwrap();
        request.headers_mut().insert("Coder-Session-Token", token.parse().unwrap());
        let io = ws::connect(request, DEFAULT_MAX_WS_MESSAGE_SIZE).await.unwrap();
        spawn_session(io, Mode::Client, &SessionConfig::default()).0
    } else {
        let tcp = tokio::net::TcpStream::connect(&go.address).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        spawn_session(tcp, Mode::Client, &SessionConfig::default()).0
    };
    Client::new(session, Limits::default())
}

fn now() -> Timestamp {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    Timestamp { seconds: i64::try_from(since.as_secs()).unwrap(), nanos: 0 }
}

fn secs(s: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds: s, nanos: 0 })
}

/// The error text of a call that must fail with a plain Go error (drpc code 0, as coderd's handlers return).
fn plain_error<T: std::fmt::Debug>(result: Result<T, CallError>) -> String {
    match result {
        Err(CallError::Status(s)) => {
            assert_eq!(s.code, 0, "{s:?}");
            s.message
        }
        other => panic!("expected an error answer, got {other:?}"),
    }
}

async fn every_agent_rpc(transport: &str) {
    let go = go_interop::reference(transport).await;
    let client = connect(&go, transport, "agent-token-1").await;
    let agent = pb::AgentClient::new(client.clone());

    // GetManifest: one agent with the template's rows, and coderd's default DERP map.
    let manifest = agent.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    assert_eq!(manifest.agent_name, "main");
    assert_eq!(manifest.owner_username, "bench");
    assert_eq!((manifest.agent_id.len(), manifest.workspace_id.len()), (16, 16));
    assert!(manifest.workspace_name.starts_with("ws-"), "{}", manifest.workspace_name);
    assert_eq!(manifest.directory, "/home/coder");
    assert_eq!(manifest.environment_variables.len(), 4);
    assert_eq!(manifest.apps.len(), 2);
    assert_eq!(manifest.apps[0].slug, "code-server");
    assert_eq!(manifest.apps[0].health, pb::workspace_app::Health::Healthy as i32);
    assert_eq!(manifest.apps[0].sharing_level, pb::workspace_app::SharingLevel::Owner as i32);
    assert_eq!(manifest.apps[0].subdomain_name, format!("code-server--main--{}--bench", manifest.workspace_name));
    assert_eq!(manifest.apps[0].healthcheck.as_ref().unwrap().interval, secs(5));
    assert_eq!(manifest.scripts.len(), 2);
    assert!(manifest.scripts[0].run_on_start && manifest.scripts[1].run_on_stop);
    assert_eq!(manifest.scripts[0].timeout, secs(300));
    assert_eq!(manifest.metadata.len(), 3);
    assert_eq!(manifest.metadata[0].interval, secs(10));
    assert!(manifest.devcontainers.is_empty());
    let derp = manifest.derp_map.as_ref().unwrap();
    assert_eq!(derp.regions.len(), 1);
    assert_eq!(derp.regions[&999].nodes.len(), 6);
    assert_eq!(derp.regions[&999].nodes.iter().filter(|n| n.stun_only).count(), 5);
    // Built per call, and the same each time.
    assert_eq!(agent.get_manifest(&pb::GetManifestRequest {}).await.unwrap(), manifest);

    assert_eq!(agent.get_service_banner(&pb::GetServiceBannerRequest {}).await.unwrap(), pb::ServiceBanner::default());

    // UpdateStats: coderd's 30 s interval, with or without a report.
    let report = pb::Stats {
        connections_by_proto: [("ssh".to_owned(), 1)].into_iter().collect(),
        connection_count: 1,
        rx_bytes: 1024,
        tx_bytes: 2048,
        session_count_ssh: 1,
        metrics: vec![pb::stats::Metric {
            name: "agent_startup_seconds".to_owned(),
            r#type: pb::stats::metric::Type::Gauge as i32,
            value: 1.5,
            labels: Vec::new(),
        }],
        ..Default::default()
    };
    for stats in [Some(report), None] {
        let reply = agent.update_stats(&pb::UpdateStatsRequest { stats }).await.unwrap();
        assert_eq!(reply.report_interval, secs(30));
    }

    // UpdateLifecycle echoes; a missing time is filled in; an unspecified state fails.
    let ready = pb::Lifecycle { state: pb::lifecycle::State::Ready as i32, changed_at: Some(now()) };
    let echoed = agent.update_lifecycle(&pb::UpdateLifecycleRequest { lifecycle: Some(ready) }).await.unwrap();
    assert_eq!(echoed, ready);
    let starting = pb::Lifecycle { state: pb::lifecycle::State::Starting as i32, changed_at: None };
    let echoed = agent.update_lifecycle(&pb::UpdateLifecycleRequest { lifecycle: Some(starting) }).await.unwrap();
    assert_eq!(echoed.state, starting.state);
    assert!(echoed.changed_at.unwrap().seconds > 0);
    let unspecified = agent.update_lifecycle(&pb::UpdateLifecycleRequest { lifecycle: None }).await;
    assert!(plain_error(unspecified).contains("unknown lifecycle state"));

    // BatchUpdateAppHealths: the manifest's apps only.
    let health = |id: Bytes| pb::BatchUpdateAppHealthRequest {
        updates: vec![pb::batch_update_app_health_request::HealthUpdate { id, health: pb::AppHealth::Healthy as i32 }],
    };
    agent.batch_update_app_healths(&health(manifest.apps[0].id.clone())).await.unwrap();
    agent.batch_update_app_healths(&pb::BatchUpdateAppHealthRequest { updates: Vec::new() }).await.unwrap();
    let unknown = agent.batch_update_app_healths(&health(Bytes::from_static(&[7; 16]))).await;
    assert!(plain_error(unknown).contains("not found"));

    // UpdateStartup echoes a valid report and refuses a version that is not semver.
    let startup = pb::Startup {
        version: "v2.30.0".to_owned(),
        expanded_directory: "/home/coder".to_owned(),
        subsystems: vec![pb::startup::Subsystem::Envbox as i32],
    };
    let echoed = agent.update_startup(&pb::UpdateStartupRequest { startup: Some(startup.clone()) }).await.unwrap();
    assert_eq!(echoed, startup);
    let bad = pb::Startup { version: "2.30".to_owned(), ..startup };
    let refused = agent.update_startup(&pb::UpdateStartupRequest { startup: Some(bad) }).await;
    assert!(plain_error(refused).contains("invalid agent semver version"));

    let metadata = |key: &str, value: &str| pb::Metadata {
        key: key.to_owned(),
        result: Some(pb::workspace_agent_metadata::Result {
            collected_at: Some(now()),
            age: 0,
            value: value.to_owned(),
            error: String::new(),
        }),
    };
    let request = pb::BatchUpdateMetadataRequest { metadata: vec![metadata("0_cpu_usage", "12%"), metadata("x", "y")] };
    assert_eq!(agent.batch_update_metadata(&request).await.unwrap(), pb::BatchUpdateMetadataResponse {});

    // BatchCreateLogs: within the agent's 1 MiB budget, then over it, and over it stays.
    let logs = |lines: usize, len: usize| pb::BatchCreateLogsRequest {
        log_source_id: manifest.scripts[0].log_source_id.clone(),
        logs: (0..lines)
            .map(|_| pb::Log { created_at: Some(now()), output: "x".repeat(len), level: pb::log::Level::Info as i32 })
            .collect(),
    };
    assert!(!agent.batch_create_logs(&logs(2, 10)).await.unwrap().log_limit_exceeded);
    assert!(agent.batch_create_logs(&logs(17, 64 << 10)).await.unwrap().log_limit_exceeded);
    assert!(agent.batch_create_logs(&logs(1, 1)).await.unwrap().log_limit_exceeded);

    let banners = agent.get_announcement_banners(&pb::GetAnnouncementBannersRequest {}).await.unwrap();
    assert!(banners.announcement_banners.is_empty());

    let timing = pb::Timing {
        script_id: manifest.scripts[0].id.clone(),
        start: Some(now()),
        end: Some(now()),
        exit_code: 0,
        stage: pb::timing::Stage::Start as i32,
        status: pb::timing::Status::Ok as i32,
    };
    agent.script_completed(&pb::WorkspaceAgentScriptCompletedRequest { timing: Some(timing) }).await.unwrap();

    let config =
        agent.get_resources_monitoring_configuration(&pb::GetResourcesMonitoringConfigurationRequest {}).await.unwrap();
    let c = config.config.unwrap();
    assert_eq!((c.num_datapoints, c.collection_interval_seconds), (20, 10));
    assert_eq!(config.memory.map(|m| m.enabled), Some(true));
    assert_eq!(config.volumes.len(), 1);
    assert_eq!(config.volumes[0].path, "/home/coder");

    use pb::push_resources_monitoring_usage_request::{datapoint, Datapoint};
    let usage = pb::PushResourcesMonitoringUsageRequest {
        datapoints: vec![Datapoint {
            collected_at: Some(now()),
            memory: Some(datapoint::MemoryUsage { used: 1 << 30, total: 4 << 30 }),
            volumes: vec![datapoint::VolumeUsage { volume: "/home/coder".to_owned(), used: 45, total: 50 }],
        }],
    };
    agent.push_resources_monitoring_usage(&usage).await.unwrap();

    let connection = pb::Connection {
        id: Bytes::from_static(&[1; 16]),
        action: pb::connection::Action::Connect as i32,
        r#type: pb::connection::Type::Ssh as i32,
        timestamp: Some(now()),
        ip: "127.0.0.1".to_owned(),
        ..Default::default()
    };
    agent.report_connection(&pb::ReportConnectionRequest { connection: Some(connection) }).await.unwrap();

    // Sub-agents: created, listed, deleted; a bad app slug is reported per app, a bad name fails the call.
    let create = pb::CreateSubAgentRequest {
        name: "devcontainer".to_owned(),
        directory: "/workspaces/project".to_owned(),
        architecture: "amd64".to_owned(),
        operating_system: "linux".to_owned(),
        apps: vec![
            pb::create_sub_agent_request::App { slug: "web".to_owned(), ..Default::default() },
            pb::create_sub_agent_request::App { slug: "Not A Slug".to_owned(), ..Default::default() },
        ],
        ..Default::default()
    };
    let created = agent.create_sub_agent(&create).await.unwrap();
    let sub = created.agent.unwrap();
    assert_eq!((sub.name.as_str(), sub.id.len(), sub.auth_token.len()), ("devcontainer", 16, 16));
    assert_eq!(created.app_creation_errors.len(), 1);
    assert_eq!(created.app_creation_errors[0].index, 1);
    let listed = agent.list_sub_agents(&pb::ListSubAgentsRequest {}).await.unwrap();
    assert_eq!(listed.agents, vec![sub.clone()]);
    agent.delete_sub_agent(&pb::DeleteSubAgentRequest { id: sub.id.clone() }).await.unwrap();
    assert!(agent.list_sub_agents(&pb::ListSubAgentsRequest {}).await.unwrap().agents.is_empty());
    let bad_name = pb::CreateSubAgentRequest { name: "no spaces".to_owned(), ..Default::default() };
    assert!(plain_error(agent.create_sub_agent(&bad_name).await).contains("does not match regex"));

    let boundary = pb::ReportBoundaryLogsRequest {
        logs: vec![pb::BoundaryLog {
            allowed: true,
            time: Some(now()),
            resource: Some(pb::boundary_log::Resource::HttpRequest(pb::boundary_log::HttpRequest {
                method: "GET".to_owned(),
                url: "https://example.com/".to_owned(),
                matched_rule: "allow example.com".to_owned(),
            })),
            ..Default::default()
        }],
        ..Default::default()
    };
    agent.report_boundary_logs(&boundary).await.unwrap();

    // Newer than v2.30.0: not in the Go service at all, which drpcmux says with its own error.
    let status = plain_error(agent.update_app_status(&pb::UpdateAppStatusRequest::default()).await);
    assert!(status.contains("unknown rpc"), "{status}");

    assert!(!client.session().is_closed());
}

async fn tailnet_rpcs(transport: &str) {
    let go = go_interop::reference(transport).await;
    let client = connect(&go, transport, "agent-token-2").await;
    let manifest = pb::AgentClient::new(client.clone()).get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    let rpc = tailnet::TailnetClient::new(client.clone());

    // StreamDERPMaps: the manifest's map at once, then the stream stays open with nothing new to say.
    let mut maps = rpc.stream_derp_maps(&tailnet::StreamDerpMapsRequest {}).await.unwrap();
    let first = tokio::time::timeout(WAIT, maps.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(Some(&first), manifest.derp_map.as_ref());
    assert_eq!(first.regions[&999].region_name, "Coder Embedded Relay");
    assert!(tokio::time::timeout(Duration::from_millis(300), maps.recv()).await.is_err(), "a second map");

    let telemetry = tailnet::TelemetryRequest { events: vec![tailnet::TelemetryEvent::default(); 3] };
    rpc.post_telemetry(&telemetry).await.unwrap();

    let token = rpc.refresh_resume_token(&tailnet::RefreshResumeTokenRequest {}).await.unwrap();
    assert!(!token.token.is_empty());
    assert_eq!(token.refresh_in, secs(12 * 3600));
    assert!(token.expires_at.unwrap().seconds > now().seconds + 23 * 3600);

    // Coordinate: the agent's own node is accepted silently; a handshake with a peer it has no tunnel with gets a
    // non-fatal error; Disconnect ends the call.
    let mut own = [0u8; 16];
    own[..6].copy_from_slice(&[0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0]);
    own[6..].copy_from_slice(&manifest.agent_id[6..]);
    let address = format!("{}/128", std::net::Ipv6Addr::from(own));
    let node = tailnet::Node { id: 1, addresses: vec![address.clone()], preferred_derp: 999, ..Default::default() };
    let update_self = tailnet::CoordinateRequest {
        update_self: Some(tailnet::coordinate_request::UpdateSelf { node: Some(node) }),
        ..Default::default()
    };
    let mut coordinate = rpc.coordinate().await.unwrap();
    coordinate.send(&update_self).await.unwrap();
    let ready = tailnet::CoordinateRequest {
        ready_for_handshake: vec![tailnet::coordinate_request::ReadyForHandshake { id: Bytes::from_static(&[9; 16]) }],
        ..Default::default()
    };
    coordinate.send(&ready).await.unwrap();
    // The first answer is the handshake's: the node update before it was answered with nothing.
    let answer = tokio::time::timeout(WAIT, coordinate.recv()).await.unwrap().unwrap().unwrap();
    assert!(answer.peer_updates.is_empty());
    assert!(answer.error.contains("you do not share a tunnel"), "{}", answer.error);
    let disconnect = tailnet::CoordinateRequest { disconnect: Some(Default::default()), ..Default::default() };
    coordinate.send(&disconnect).await.unwrap();
    // coderd's handler ends with `stream.Close()`: a dRPC Close, which Go's client reads as EOF and ours reports.
    let end = tokio::time::timeout(WAIT, coordinate.recv()).await.unwrap();
    assert!(matches!(end, Err(CallError::RemoteClosed)), "{end:?}");

    // An agent may not open tunnels: the reason, then the end of the call.
    let mut coordinate = rpc.coordinate().await.unwrap();
    let add = tailnet::CoordinateRequest {
        add_tunnel: Some(tailnet::coordinate_request::Tunnel { id: Bytes::from_static(&[9; 16]) }),
        ..Default::default()
    };
    coordinate.send(&add).await.unwrap();
    let answer = tokio::time::timeout(WAIT, coordinate.recv()).await.unwrap().unwrap().unwrap();
    assert!(answer.error.contains("agents cannot open tunnels"), "{}", answer.error);
    let end = tokio::time::timeout(WAIT, coordinate.recv()).await.unwrap();
    assert!(matches!(end, Err(CallError::RemoteClosed)), "{end:?}");

    // A node with someone else's address is refused the same way.
    let mut coordinate = rpc.coordinate().await.unwrap();
    let foreign = tailnet::Node { id: 2, addresses: vec!["fd7a:115c:a1e0::1/128".to_owned()], ..Default::default() };
    let request = tailnet::CoordinateRequest {
        update_self: Some(tailnet::coordinate_request::UpdateSelf { node: Some(foreign) }),
        ..Default::default()
    };
    coordinate.send(&request).await.unwrap();
    let answer = tokio::time::timeout(WAIT, coordinate.recv()).await.unwrap().unwrap().unwrap();
    assert!(answer.error.contains("invalid node address"), "{}", answer.error);

    // WorkspaceUpdates is for user clients; the generated stub's Unimplemented (code 12).
    let mut updates = rpc.workspace_updates(&tailnet::WorkspaceUpdatesRequest::default()).await.unwrap();
    let err = tokio::time::timeout(WAIT, updates.recv()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(12), "{err}");

    // The DERP map stream outlived all of that, and so did the session.
    assert!(tokio::time::timeout(Duration::from_millis(100), maps.recv()).await.is_err());
    assert!(!client.session().is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_answers_every_agent_rpc_over_websocket() {
    every_agent_rpc("ws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_answers_every_agent_rpc_over_tcp() {
    every_agent_rpc("tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_tailnet_over_websocket() {
    tailnet_rpcs("ws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_tailnet_over_tcp() {
    tailnet_rpcs("tcp").await;
}

/// The token names the agent: the same token the same agent, another token another one, as coderd's lookup does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_agents_follow_their_tokens() {
    let go = go_interop::reference("ws").await;
    let mut ids = Vec::new();
    for token in ["alpha", "beta", "alpha"] {
        let agent = pb::AgentClient::new(connect(&go, "ws", token).await);
        ids.push(agent.get_manifest(&pb::GetManifestRequest {}).await.unwrap().agent_id);
    }
    assert_eq!(ids[0], ids[2]);
    assert_ne!(ids[0], ids[1]);
}
