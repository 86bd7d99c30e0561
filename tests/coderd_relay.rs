//! Relayed coordination ([`CoderCoordination::Relay`]) between two servers in this process: the relaying server
//! (`relay`) and, in coderd's place, a second agentwire on the same database (`upstream`), which speaks coderd's agent
//! endpoint. A real coderd is in `cli/tests/beside_coderd_reach.rs`; here are what it cannot show quickly: the
//! upstream holds the agent while the relay's coordinator holds nothing, a client of the upstream's own coordinate
//! endpoint and the relayed agent exchange nodes, the upstream session ends with the agent's, and a refusing or
//! unreachable upstream reaches the agent as a dRPC error while its manifest falls back to the relay's DERP map.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agentwire::proto::agent::v2 as agent_pb;
use agentwire::proto::tailnet::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire::tailnet::coderd_relay::RelayStats;
use agentwire::tailnet::coordinator::service_address;
use agentwire::tailnet::CoderCoordination;
use agentwire_transport::client::{Client, TypedClientStream};
use agentwire_transport::io::{spawn_session, ws, Mode, SessionConfig, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::testing::wait::eventually;
use agentwire_transport::Limits;
use common::server::{connect, memory_store, owner_token, start, TestServer};
use pb::coordinate_response::peer_update::Kind;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

type Coordinate = TypedClientStream<pb::CoordinateRequest, pb::CoordinateResponse>;

/// A server relaying its agents' Tailnet calls to `upstream`, with its own DERP relay off, so that a DERP map an
/// agent gets from it can only be the upstream's.
fn relaying_to(upstream: &str) -> ServeConfig {
    let mut config = ServeConfig::default();
    config.tailnet.coder_coordination = CoderCoordination::Relay { coderd_url: upstream.to_owned() };
    config.tailnet.derp.enabled = false;
    config
}

fn relay_stats(server: &TestServer) -> Arc<RelayStats> {
    server.state.metrics().tailnet.coderd_relay.clone()
}

fn peers(server: &TestServer) -> i64 {
    server.state.metrics().tailnet.peers.load(Ordering::Relaxed)
}

async fn connect_client(server: &TestServer, agent_id: Uuid, token: &str) -> Client {
    let url = format!("ws://{}/api/v2/workspaceagents/{agent_id}/coordinate?version=2.0", server.addr);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Coder-Session-Token", token.parse().unwrap());
    let io = ws::connect(request, DEFAULT_MAX_WS_MESSAGE_SIZE).await.unwrap();
    Client::new(spawn_session(io, Mode::Client, &SessionConfig::default()).0, Limits::default())
}

fn update_self(node: pb::Node) -> pb::CoordinateRequest {
    pb::CoordinateRequest {
        update_self: Some(pb::coordinate_request::UpdateSelf { node: Some(node) }),
        ..Default::default()
    }
}

fn agent_node(agent_id: Uuid) -> pb::Node {
    let address = format!("{}/128", service_address(false, agent_id));
    pb::Node {
        id: 1,
        key: vec![1; 32].into(),
        disco: "discokey:agent".into(),
        preferred_derp: 999,
        addresses: vec![address.clone()],
        allowed_ips: vec![address],
        ..Default::default()
    }
}

fn client_node() -> pb::Node {
    pb::Node {
        id: 2,
        key: vec![2; 32].into(),
        disco: "discokey:client".into(),
        preferred_derp: 999,
        addresses: vec!["fd60:627a:a42b::2/128".into()],
        ..Default::default()
    }
}

/// The next peer update's peer and kind.
async fn next_update(stream: &mut Coordinate) -> (Uuid, Kind) {
    loop {
        let response =
            tokio::time::timeout(WAIT, stream.recv()).await.expect("in time").expect("no error").expect("open");
        assert!(response.error.is_empty(), "{response:?}");
        if let Some(update) = response.peer_updates.into_iter().next() {
            return (Uuid::from_slice(&update.id).unwrap(), update.kind());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_agent_is_the_upstreams_peer_for_as_long_as_its_session() {
    let store = memory_store().await;
    let (_, agent) = store.admin().create_demo_agent("alice", "alice-ws", "main").await.unwrap();
    let user = owner_token(&store, "alice").await;
    let upstream = start(store.clone(), ServeConfig::default()).await;
    let relay = start(store, relaying_to(&format!("http://{}", upstream.addr))).await;
    let stats = relay_stats(&relay);

    let session = connect(&relay, agent.auth_token).await;
    // The manifest's DERP map is the upstream's: the relay itself has none.
    let manifest = agent_pb::AgentClient::new(session.clone()).get_manifest(&agent_pb::GetManifestRequest {}).await;
    let manifest = manifest.unwrap();
    assert!(manifest.derp_map.unwrap().regions.contains_key(&999), "the upstream's embedded region");
    let tailnet = pb::TailnetClient::new(session.clone());
    let mut maps = tailnet.stream_derp_maps(&pb::StreamDerpMapsRequest {}).await.unwrap();
    let map = tokio::time::timeout(WAIT, maps.recv()).await.unwrap().unwrap().unwrap();
    assert!(map.regions.contains_key(&999));
    let mut agent_stream = tailnet.coordinate().await.unwrap();
    agent_stream.send(&update_self(agent_node(agent.id))).await.unwrap();

    // The upstream holds the agent, on a session of its own; the relay's coordinator holds nobody. One dial served
    // the manifest and both streams.
    eventually("the upstream coordinates the agent", || peers(&upstream) == 1).await;
    assert_eq!(peers(&relay), 0);
    assert_eq!(upstream.state.metrics().sessions_active(), 1);
    assert_eq!(relay.state.metrics().sessions_active(), 1);
    assert_eq!(stats.sessions.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dials.load(Ordering::Relaxed), 1);
    eventually("both streams relayed", || stats.streams.load(Ordering::Relaxed) == 2).await;

    // A client of the upstream's own endpoint and the relayed agent see each other's nodes.
    let client = pb::TailnetClient::new(connect_client(&upstream, agent.id, &user).await);
    let mut client_stream = client.coordinate().await.unwrap();
    let hello = pb::CoordinateRequest {
        add_tunnel: Some(pb::coordinate_request::Tunnel { id: agent.id.as_bytes().to_vec().into() }),
        ..update_self(client_node())
    };
    client_stream.send(&hello).await.unwrap();
    assert_eq!(next_update(&mut client_stream).await, (agent.id, Kind::Node));
    let (client_id, kind) = next_update(&mut agent_stream).await;
    assert_eq!(kind, Kind::Node);
    assert_ne!(client_id, agent.id);

    // The agent's session ends: the upstream's ends with it, and its client hears the agent lost.
    session.session().close();
    drop((agent_stream, maps, tailnet, session));
    assert_eq!(next_update(&mut client_stream).await, (agent.id, Kind::Lost));
    eventually("the upstream session ends", || upstream.state.metrics().sessions_active() == 0).await;
    eventually("the relay counts it gone", || stats.sessions.load(Ordering::Relaxed) == 0).await;
    eventually("no stream is relayed", || stats.streams.load(Ordering::Relaxed) == 0).await;
    assert_eq!(stats.dial_failures.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusal_reaches_the_agent_in_its_words() {
    // The upstream has its own database: it knows no such agent, and answers the relay's dial as coderd does.
    let upstream = start(memory_store().await, ServeConfig::default()).await;
    let store = memory_store().await;
    let (_, agent) = store.admin().create_demo_agent("bob", "bob-ws", "main").await.unwrap();
    let relay = start(store, relaying_to(&format!("http://{}", upstream.addr))).await;
    let stats = relay_stats(&relay);

    let session = connect(&relay, agent.auth_token).await;
    let tailnet = pb::TailnetClient::new(session.clone());
    let mut stream = tailnet.coordinate().await.unwrap();
    let err = tokio::time::timeout(WAIT, stream.recv()).await.unwrap().unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("coderd refused the relay: 401 Unauthorized: Workspace agent not authorized."),
        "{message}"
    );
    // The manifest does not depend on the upstream: it keeps the relay's own map (none here: an empty one).
    let manifest = agent_pb::AgentClient::new(session.clone()).get_manifest(&agent_pb::GetManifestRequest {}).await;
    assert_eq!(manifest.unwrap().derp_map.unwrap().regions.len(), 0);
    assert_eq!(stats.manifest_fallbacks.load(Ordering::Relaxed), 1);
    assert_eq!(stats.dial_failures.load(Ordering::Relaxed), 2);
    assert_eq!((stats.sessions.load(Ordering::Relaxed), peers(&relay)), (0, 0));
    // The session to the relay itself is unharmed.
    assert_eq!(relay.state.metrics().sessions_active(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_fails_the_call_not_the_session() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let store = memory_store().await;
    let (_, agent) = store.admin().create_demo_agent("carol", "carol-ws", "main").await.unwrap();
    let relay = start(store, relaying_to(&format!("http://{closed}"))).await;

    let session = connect(&relay, agent.auth_token).await;
    let tailnet = pb::TailnetClient::new(session.clone());
    let mut maps = tailnet.stream_derp_maps(&pb::StreamDerpMapsRequest {}).await.unwrap();
    let err = tokio::time::timeout(WAIT, maps.recv()).await.unwrap().unwrap_err();
    assert!(err.to_string().contains("dial coderd: "), "{err}");
    assert_eq!(relay_stats(&relay).dial_failures.load(Ordering::Relaxed), 1);
    let banner = agent_pb::AgentClient::new(session).get_service_banner(&agent_pb::GetServiceBannerRequest {}).await;
    assert!(banner.is_ok(), "{banner:?}");
}
