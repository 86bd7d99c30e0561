//! What Coder's client asks of the server besides coordination: the connection info endpoints
//! (`/api/v2/workspaceagents/{id}/connection` and `/api/v2/workspaceagents/connection`) in coderd's shapes, and
//! resume tokens: RefreshResumeToken on the coordinate connection, and the coordinate endpoint giving a client that
//! comes back with its token the peer id it had, so its agent sees the same peer again.

mod common;

use std::time::Duration;

use agentwire::proto::tailnet::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire_transport::client::{Client, TypedClientStream};
use agentwire_transport::io::{spawn_session, ws, Mode, SessionConfig, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::Limits;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::server::{connect, memory_store, owner_token, start, TestServer};
use pb::coordinate_response::peer_update::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

type Coordinate = TypedClientStream<pb::CoordinateRequest, pb::CoordinateResponse>;

/// Status and body of a GET, with a user token in coderd's header when given.
async fn get(server: &TestServer, path: &str, token: &str) -> (u16, serde_json::Value) {
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", server.addr);
    if !token.is_empty() {
        request.push_str(&format!("Coder-Session-Token: {token}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

async fn connect_client(server: &TestServer, agent_id: Uuid, token: &str, resume: Option<&str>) -> Client {
    let mut url = format!("ws://{}/api/v2/workspaceagents/{agent_id}/coordinate?version=2.0", server.addr);
    if let Some(resume) = resume {
        url.push_str(&format!("&resume_token={resume}"));
    }
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Coder-Session-Token", token.parse().unwrap());
    let io = ws::connect(request, DEFAULT_MAX_WS_MESSAGE_SIZE).await.unwrap();
    Client::new(spawn_session(io, Mode::Client, &SessionConfig::default()).0, Limits::default())
}

fn node(id: i64) -> pb::Node {
    pb::Node {
        id,
        key: vec![1; 32].into(),
        disco: format!("discokey:{}", "0".repeat(64)),
        addresses: vec![format!("fd7a:115c:a1e0::{id:x}/128")],
        allowed_ips: vec![format!("fd7a:115c:a1e0::{id:x}/128")],
        ..Default::default()
    }
}

async fn next_update(stream: &mut Coordinate) -> (Uuid, Kind) {
    loop {
        let response = tokio::time::timeout(WAIT, stream.recv()).await.unwrap().unwrap().unwrap();
        if let Some(update) = response.peer_updates.into_iter().next() {
            return (Uuid::from_slice(&update.id).unwrap(), update.kind());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_info_has_coderds_shape_and_checks() {
    let store = memory_store().await;
    let (_, agent) = store.admin().create_demo_agent("alice", "alice-ws", "main").await.unwrap();
    let alice = owner_token(&store, "alice").await;
    store.admin().create_demo_agent("bob", "bob-ws", "main").await.unwrap();
    let bob = owner_token(&store, "bob").await;
    let server = start(store, ServeConfig::default()).await;
    let path = format!("/api/v2/workspaceagents/{}/connection", agent.id);

    let (status, info) = get(&server, &path, &alice).await;
    assert_eq!(status, 200, "{info}");
    let region = &info["derp_map"]["Regions"]["999"];
    assert_eq!(region["EmbeddedRelay"], true, "{info}");
    assert_eq!(region["Nodes"][0]["Name"], "999b", "{info}");
    assert_eq!(info["derp_force_websockets"], false);
    assert_eq!(info["disable_direct_connections"], false);
    assert_eq!(info["hostname_suffix"], "coder");
    let (status, generic) = get(&server, "/api/v2/workspaceagents/connection", &alice).await;
    assert_eq!((status, &generic), (200, &info));

    // coderd's answers, in its order: no or a bad token, a bad id, an agent that is not the caller's.
    for (path, token, want) in [
        (path.as_str(), "", 401),
        (path.as_str(), "nope-nope", 401),
        ("/api/v2/workspaceagents/not-a-uuid/connection", alice.as_str(), 400),
        (path.as_str(), bob.as_str(), 404),
        ("/api/v2/workspaceagents/connection", "", 401),
    ] {
        let (status, body) = get(&server, path, token).await;
        assert_eq!(status, want, "{path} with {token:?}: {body}");
        assert!(body["message"].is_string(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_info_tells_clients_what_the_manifest_tells_agents() {
    let store = memory_store().await;
    let (_, agent) = store.admin().create_demo_agent("carol", "carol-ws", "main").await.unwrap();
    let carol = owner_token(&store, "carol").await;
    let mut config = ServeConfig::default();
    config.agent_api.derp_force_websockets = true;
    config.agent_api.disable_direct_connections = true;
    let server = start(store, config).await;
    let (status, info) = get(&server, &format!("/api/v2/workspaceagents/{}/connection", agent.id), &carol).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!((&info["derp_force_websockets"], &info["disable_direct_connections"]), (&true.into(), &true.into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_its_peer_id_with_its_token() {
    let store = memory_store().await;
    let (_, agent) = store.admin().create_demo_agent("alice", "alice-ws", "main").await.unwrap();
    let token = owner_token(&store, "alice").await;
    let server = start(store, ServeConfig::default()).await;

    let agent_rpc = pb::TailnetClient::new(connect(&server, agent.auth_token).await);
    let mut agent_stream = agent_rpc.coordinate().await.unwrap();
    // Agents get no tokens, as from coderd's agent endpoint.
    assert!(agent_rpc.refresh_resume_token(&pb::RefreshResumeTokenRequest {}).await.is_err());

    let raw = connect_client(&server, agent.id, &token, None).await;
    let client_rpc = pb::TailnetClient::new(raw.clone());
    let refreshed = client_rpc.refresh_resume_token(&pb::RefreshResumeTokenRequest {}).await.unwrap();
    assert_eq!(refreshed.refresh_in.unwrap().seconds, 12 * 3600);
    assert!(refreshed.expires_at.unwrap().seconds > 0);
    let client = client_rpc.coordinate().await.unwrap();
    let tunnel = Some(pb::coordinate_request::Tunnel { id: agent.id.as_bytes().to_vec().into() });
    let hello = pb::CoordinateRequest {
        update_self: Some(pb::coordinate_request::UpdateSelf { node: Some(node(7)) }),
        add_tunnel: tunnel,
        ..Default::default()
    };
    client.send(&hello).await.unwrap();
    let (first_id, kind) = next_update(&mut agent_stream).await;
    assert_eq!(kind, Kind::Node);
    raw.session().close();
    assert_eq!(next_update(&mut agent_stream).await, (first_id, Kind::Lost));

    // Back with the token: the same peer id.
    let raw = connect_client(&server, agent.id, &token, Some(&refreshed.token)).await;
    let client_rpc = pb::TailnetClient::new(raw.clone());
    let client = client_rpc.coordinate().await.unwrap();
    client.send(&hello).await.unwrap();
    assert_eq!(next_update(&mut agent_stream).await, (first_id, Kind::Node));
    // The token it gets now names the same peer.
    let again = client_rpc.refresh_resume_token(&pb::RefreshResumeTokenRequest {}).await.unwrap();
    let claims = again.token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["sub"], first_id.to_string());
    raw.session().close();
    assert_eq!(next_update(&mut agent_stream).await, (first_id, Kind::Lost));

    // A token that does not verify: coderd's 401 with the validation Coder's client looks for to drop it.
    let path = format!("/api/v2/workspaceagents/{}/coordinate?resume_token=", agent.id);
    let (status, body) = get(&server, &format!("{path}{}x", refreshed.token), &token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["message"], "Invalid resume token");
    assert_eq!(body["validations"][0]["field"], "resume_token");
    // One without a key id is an old token: ignored, and the connection gets a fresh peer id.
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS512"}"#);
    let old = format!("{header}.e30.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    let raw = connect_client(&server, agent.id, &token, Some(&old)).await;
    let client = pb::TailnetClient::new(raw.clone()).coordinate().await.unwrap();
    client.send(&hello).await.unwrap();
    let (fresh_id, kind) = next_update(&mut agent_stream).await;
    assert_eq!(kind, Kind::Node);
    assert_ne!(fresh_id, first_id);
}
