//! The Tailnet service end to end: StreamDERPMaps following the stored map, and coordination between agents
//! (on the agent endpoint) and clients (on `/api/v2/workspaceagents/{id}/coordinate`), with Rust and Go peers, on
//! one server and across two replicas sharing PostgreSQL.
//!
//! Over 600 lines: the coordination cases share their Go peers and replica set-up.

mod common;

use std::time::Duration;

use agentwire::proto::tailnet::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire::tailnet::coordinator::service_address;
use agentwire::tailnet::TailnetConfig;
use agentwire_store::{CreatedAgent, Store, StoreOptions};
use agentwire_transport::client::{CallError, Client, TypedClientStream};
use agentwire_transport::io::{spawn_session, ws, Mode, SessionConfig, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::testing::wait::eventually;
use agentwire_transport::Limits;
use common::pg::fresh_pg_url;
use common::server::{connect, memory_store, owner_token, start, TestServer};
use pb::coordinate_response::peer_update::Kind;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

type Coordinate = TypedClientStream<pb::CoordinateRequest, pb::CoordinateResponse>;

const DERP_A: &str = r#"{"Regions":{"999":{"EmbeddedRelay":true,"RegionID":999,"RegionCode":"coder","RegionName":"Coder",
  "Nodes":[{"Name":"999a","RegionID":999,"HostName":"a.example.com","STUNPort":-1,"DERPPort":443}]}}}"#;
const DERP_B: &str = r#"{"Regions":{"999":{"EmbeddedRelay":true,"RegionID":999,"RegionCode":"coder","RegionName":"Coder",
  "Nodes":[{"Name":"999a","RegionID":999,"HostName":"b.example.com","STUNPort":-1,"DERPPort":443}]},
  "1000":{"RegionID":1000,"RegionCode":"two","RegionName":"Two","Nodes":[]}}}"#;

fn fast_config() -> ServeConfig {
    ServeConfig {
        tailnet: TailnetConfig {
            derp_map_check_interval: Duration::from_millis(100),
            replica_heartbeat: Duration::from_millis(200),
            replica_timeout: Duration::from_secs(2),
            ..TailnetConfig::default()
        },
        ..ServeConfig::default()
    }
}

/// A client peer: the coordinate endpoint over WebSocket, a user's token in the header.
async fn connect_client(server: &TestServer, agent_id: Uuid, token: &str) -> Client {
    let url = format!("ws://{}/api/v2/workspaceagents/{agent_id}/coordinate?version=2.0", server.addr);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Coder-Session-Token", token.parse().unwrap());
    let io = ws::connect(request, DEFAULT_MAX_WS_MESSAGE_SIZE).await.unwrap();
    Client::new(spawn_session(io, Mode::Client, &SessionConfig::default()).0, Limits::default())
}

fn agent_node(agent_id: Uuid, n: i64) -> pb::Node {
    pb::Node {
        id: n,
        key: vec![1; 32].into(),
        disco: format!("discokey:{n}"),
        preferred_derp: 999,
        addresses: vec![format!("{}/128", service_address(false, agent_id))],
        allowed_ips: vec![format!("{}/128", service_address(false, agent_id))],
        endpoints: vec![format!("192.0.2.1:{}", 41641 + n)],
        ..Default::default()
    }
}

fn client_node(n: i64) -> pb::Node {
    pb::Node {
        id: n,
        key: vec![2; 32].into(),
        disco: format!("discokey:client{n}"),
        preferred_derp: 999,
        addresses: vec![format!("fd60:627a:a42b::{n:x}/128")],
        ..Default::default()
    }
}

fn update_self(node: pb::Node) -> pb::CoordinateRequest {
    pb::CoordinateRequest {
        update_self: Some(pb::coordinate_request::UpdateSelf { node: Some(node) }),
        ..Default::default()
    }
}

fn tunnel(id: Uuid) -> Option<pb::coordinate_request::Tunnel> {
    Some(pb::coordinate_request::Tunnel { id: id.as_bytes().to_vec().into() })
}

async fn recv(stream: &mut Coordinate) -> pb::CoordinateResponse {
    tokio::time::timeout(WAIT, stream.recv()).await.expect("a response in time").expect("no error").expect("open")
}

/// The next peer update, one per response as the coordinator sends them.
async fn next_update(stream: &mut Coordinate) -> (Uuid, Kind, Option<pb::Node>, String) {
    let response = recv(stream).await;
    assert!(response.error.is_empty(), "{response:?}");
    let u = response.peer_updates.into_iter().next().expect("an update");
    (Uuid::from_slice(&u.id).unwrap(), Kind::try_from(u.kind).unwrap(), u.node, u.reason)
}

/// Silence for `d`: the subject is what does not arrive, so waiting out the time is the check itself, not a stand-in
/// for a signal.
async fn nothing_within(stream: &mut Coordinate, d: Duration) {
    if let Ok(r) = tokio::time::timeout(d, stream.recv()).await {
        panic!("expected silence, got {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derp_map_change_reaches_an_open_stream() {
    let store = memory_store().await;
    let (_, agent) = store.admin().create_demo_agent("derp", "derp-ws", "main").await.unwrap();
    store.admin().set_derp_map(DERP_A).await.unwrap();
    let server = start(store.clone(), fast_config()).await;
    let tailnet = pb::TailnetClient::new(connect(&server, agent.auth_token).await);
    let mut maps = tailnet.stream_derp_maps(&pb::StreamDerpMapsRequest {}).await.unwrap();
    let first = tokio::time::timeout(WAIT, maps.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.regions[&999].nodes[0].host_name, "a.example.com");
    // Unchanged: nothing more.
    assert!(tokio::time::timeout(Duration::from_millis(400), maps.recv()).await.is_err());
    store.admin().set_derp_map(DERP_B).await.unwrap();
    let started = std::time::Instant::now();
    let second = tokio::time::timeout(Duration::from_secs(5), maps.recv()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.regions[&999].nodes[0].host_name, "b.example.com");
    assert_eq!(second.regions.len(), 2);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // The stream stays open.
    assert!(tokio::time::timeout(Duration::from_millis(300), maps.recv()).await.is_err());
}

struct Pair {
    server: TestServer,
    agent: CreatedAgent,
    token: String,
}

async fn pair(config: ServeConfig) -> Pair {
    let store = memory_store().await;
    let (_, agent) = store.admin().create_demo_agent("alice", "alice-ws", "main").await.unwrap();
    let token = owner_token(&store, "alice").await;
    Pair { server: start(store, config).await, agent, token }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_agent_and_client_coordinate() {
    let p = pair(fast_config()).await;
    let agent_rpc = pb::TailnetClient::new(connect(&p.server, p.agent.auth_token).await);
    let mut agent = agent_rpc.coordinate().await.unwrap();
    agent.send(&update_self(agent_node(p.agent.id, 1))).await.unwrap();

    let client_rpc = pb::TailnetClient::new(connect_client(&p.server, p.agent.id, &p.token).await);
    let mut client = client_rpc.coordinate().await.unwrap();
    client
        .send(&pb::CoordinateRequest { add_tunnel: tunnel(p.agent.id), ..update_self(client_node(7)) })
        .await
        .unwrap();

    // The client learns the agent's node; the agent learns the client's, under the client's fresh peer id.
    let (id, kind, node, _) = next_update(&mut client).await;
    assert_eq!((id, kind, node.unwrap().id), (p.agent.id, Kind::Node, 1));
    let (client_id, kind, node, _) = next_update(&mut agent).await;
    assert_eq!((kind, node.unwrap().id), (Kind::Node, 7));
    assert_ne!(client_id, p.agent.id);

    // Updates flow both ways; an unchanged node is not sent again.
    agent.send(&update_self(agent_node(p.agent.id, 2))).await.unwrap();
    let (_, kind, node, reason) = next_update(&mut client).await;
    assert_eq!((kind, node.unwrap().id, reason.as_str()), (Kind::Node, 2, "node update"));
    agent.send(&update_self(agent_node(p.agent.id, 2))).await.unwrap();
    client.send(&update_self(client_node(8))).await.unwrap();
    let (id, _, node, _) = next_update(&mut agent).await;
    assert_eq!((id, node.unwrap().id), (client_id, 8));
    nothing_within(&mut client, Duration::from_millis(200)).await;

    // Ready for handshake goes from the agent to the client.
    let ready = pb::CoordinateRequest {
        ready_for_handshake: vec![pb::coordinate_request::ReadyForHandshake {
            id: client_id.as_bytes().to_vec().into(),
        }],
        ..Default::default()
    };
    agent.send(&ready).await.unwrap();
    let (id, kind, _, _) = next_update(&mut client).await;
    assert_eq!((id, kind), (p.agent.id, Kind::ReadyForHandshake));

    // Removing the tunnel tells the agent, and stops the updates.
    client.send(&pb::CoordinateRequest { remove_tunnel: tunnel(p.agent.id), ..Default::default() }).await.unwrap();
    let (id, kind, _, reason) = next_update(&mut agent).await;
    assert_eq!((id, kind, reason.as_str()), (client_id, Kind::Disconnected, "remove tunnel"));
    let (id, kind, _, _) = next_update(&mut client).await;
    assert_eq!((id, kind), (p.agent.id, Kind::Disconnected));
    agent.send(&update_self(agent_node(p.agent.id, 3))).await.unwrap();
    client.send(&update_self(client_node(9))).await.unwrap();
    nothing_within(&mut client, Duration::from_millis(300)).await;
    nothing_within(&mut agent, Duration::from_millis(100)).await;

    // Tunnel again: the latest nodes at once. Then a graceful disconnect is DISCONNECTED…
    client.send(&pb::CoordinateRequest { add_tunnel: tunnel(p.agent.id), ..Default::default() }).await.unwrap();
    let (_, kind, node, _) = next_update(&mut client).await;
    assert_eq!((kind, node.unwrap().id), (Kind::Node, 3));
    let (_, _, node, _) = next_update(&mut agent).await;
    assert_eq!(node.unwrap().id, 9);
    client.send(&pb::CoordinateRequest { disconnect: Some(Default::default()), ..Default::default() }).await.unwrap();
    let (id, kind, _, reason) = next_update(&mut agent).await;
    assert_eq!((id, kind, reason.as_str()), (client_id, Kind::Disconnected, "graceful disconnect"));
    assert!(tokio::time::timeout(WAIT, client.recv()).await.unwrap().unwrap().is_none(), "the call ends cleanly");

    // …and a client that just goes away is LOST.
    let raw = connect_client(&p.server, p.agent.id, &p.token).await;
    let client_rpc = pb::TailnetClient::new(raw.clone());
    let mut client = client_rpc.coordinate().await.unwrap();
    client
        .send(&pb::CoordinateRequest { add_tunnel: tunnel(p.agent.id), ..update_self(client_node(10)) })
        .await
        .unwrap();
    let (second_id, _, _, _) = next_update(&mut agent).await;
    next_update(&mut client).await;
    raw.session().close();
    let (id, kind, _, reason) = next_update(&mut agent).await;
    assert_eq!((id, kind, reason.as_str()), (second_id, Kind::Lost, "lost"));
    let metrics = p.server.state.metrics().render(&p.server.store);
    assert!(metrics.contains("agentwire_tailnet_peers 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_for_its_agent_and_sees_it_come_back() {
    let p = pair(fast_config()).await;
    let client_rpc = pb::TailnetClient::new(connect_client(&p.server, p.agent.id, &p.token).await);
    let mut client = client_rpc.coordinate().await.unwrap();
    client
        .send(&pb::CoordinateRequest { add_tunnel: tunnel(p.agent.id), ..update_self(client_node(1)) })
        .await
        .unwrap();
    nothing_within(&mut client, Duration::from_millis(200)).await;
    for round in 1..=2 {
        let raw = connect(&p.server, p.agent.auth_token).await;
        let agent_rpc = pb::TailnetClient::new(raw.clone());
        let mut agent = agent_rpc.coordinate().await.unwrap();
        // The tunnel was there before the agent: it gets the client's node at once ("init").
        let (_, kind, node, reason) = next_update(&mut agent).await;
        assert_eq!((kind, node.unwrap().id, reason.as_str()), (Kind::Node, 1, "init"));
        agent.send(&update_self(agent_node(p.agent.id, round))).await.unwrap();
        let (_, kind, node, _) = next_update(&mut client).await;
        assert_eq!((kind, node.unwrap().id), (Kind::Node, round));
        // The connection dies without a disconnect.
        raw.session().close();
        let (id, kind, _, _) = next_update(&mut client).await;
        assert_eq!((id, kind), (p.agent.id, Kind::Lost));
    }
}

async fn expect_error(stream: &mut Coordinate, rule: &str) {
    match tokio::time::timeout(WAIT, async {
        loop {
            match stream.recv().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap()
    {
        Err(CallError::Status(status)) => {
            let message = status.message;
            assert!(message.contains(rule), "{message:?} does not name {rule:?}");
        }
        other => panic!("expected an error naming {rule:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_breaking_a_rule_is_ended_with_the_rule() {
    let mut config = fast_config();
    config.tailnet.max_node_size = 256;
    config.tailnet.max_tunnels_per_peer = 1;
    let p = pair(config).await;
    let (_, other) = p.server.store.admin().create_demo_agent("bob", "bob-ws", "main").await.unwrap();
    let agent_rpc = pb::TailnetClient::new(connect(&p.server, p.agent.auth_token).await);

    let mut agent = agent_rpc.coordinate().await.unwrap();
    agent.send(&pb::CoordinateRequest { add_tunnel: tunnel(Uuid::new_v4()), ..Default::default() }).await.unwrap();
    expect_error(&mut agent, "agents cannot open tunnels").await;

    let mut agent = agent_rpc.coordinate().await.unwrap();
    agent.send(&update_self(agent_node(other.id, 1))).await.unwrap();
    expect_error(&mut agent, "invalid node address").await;

    let mut agent = agent_rpc.coordinate().await.unwrap();
    let mut big = agent_node(p.agent.id, 1);
    big.endpoints = (0..40).map(|i| format!("192.0.2.{i}:41641")).collect();
    agent.send(&update_self(big)).await.unwrap();
    expect_error(&mut agent, "(max node size)").await;

    let client_rpc = pb::TailnetClient::new(connect_client(&p.server, p.agent.id, &p.token).await);
    let mut client = client_rpc.coordinate().await.unwrap();
    client.send(&pb::CoordinateRequest { add_tunnel: tunnel(other.id), ..Default::default() }).await.unwrap();
    expect_error(&mut client, "invalid agent id").await;

    let mut client = client_rpc.coordinate().await.unwrap();
    let ready = pb::CoordinateRequest {
        ready_for_handshake: vec![pb::coordinate_request::ReadyForHandshake {
            id: p.agent.id.as_bytes().to_vec().into(),
        }],
        ..Default::default()
    };
    client.send(&ready).await.unwrap();
    expect_error(&mut client, "clients may not send ready_for_handshake").await;

    let metrics = p.server.state.metrics().render(&p.server.store);
    assert!(metrics.contains("agentwire_tailnet_rule_breaches_total 5\n"), "{metrics}");

    // The endpoint itself: a user token is required, and the agent must be the user's.
    let bob = owner_token(&p.server.store, "bob").await;
    for (token, status) in [("", 401), ("nope-nope", 401), (bob.as_str(), 404)] {
        let url = format!("http://{}/api/v2/workspaceagents/{}/coordinate", p.server.addr, p.agent.id);
        let got = http_status(&url, token).await;
        assert_eq!(got, status, "token {token:?}");
    }
}

async fn http_status(url: &str, token: &str) -> u16 {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if !token.is_empty() {
        request.push_str(&format!("Coder-Session-Token: {token}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut line = String::new();
    BufReader::new(tcp).read_line(&mut line).await.unwrap();
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// A Go `interop coordinate` peer: Coder's own DRPC Tailnet client over coder/websocket and hashicorp/yamux.
struct GoPeer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl GoPeer {
    async fn start(url: &str, token: &str, role: &str, agent_id: Uuid, node_id: i64) -> GoPeer {
        let mut child = tokio::process::Command::new(common::go_interop::binary())
            .args(["coordinate", "--url", url, "--token", token, "--as", role, "--agent-id", &agent_id.to_string()])
            .args(["--node-id", &node_id.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start interop coordinate");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut peer = GoPeer { child, stdin, lines };
        peer.expect(|l| l["ready"] == true).await;
        peer
    }

    async fn command(&mut self, line: &str) {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Reads lines until one matches; fails on the stream's end or after `WAIT`.
    async fn expect(&mut self, matches: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        tokio::time::timeout(WAIT, async {
            loop {
                let line = self.lines.next_line().await.unwrap().expect("the Go peer exited");
                let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                if matches(&value) {
                    return value;
                }
                assert!(value.get("end").is_none(), "the Go peer's stream ended: {value}");
            }
        })
        .await
        .expect("the expected line in time")
    }

    /// The next peer update line, skipping command acknowledgements.
    async fn update(&mut self) -> serde_json::Value {
        self.expect(|l| l.get("kind").is_some() || l.get("end").is_some() || l.get("error").is_some()).await
    }

    /// No update for `d` (acknowledgements of commands aside): waiting out the time is the check, as in
    /// [`nothing_within`].
    async fn silent_for(&mut self, d: Duration) {
        if let Ok(Ok(Some(line))) = tokio::time::timeout(d, self.lines.next_line()).await {
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(value.get("sent").is_some(), "expected silence, got {line}");
        }
    }

    async fn exit(mut self) {
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.unwrap().unwrap();
        assert!(status.success());
    }
}

fn agent_url(server: &TestServer) -> String {
    server.rpc_url("2.0")
}

fn client_url(server: &TestServer, agent_id: Uuid) -> String {
    format!("ws://{}/api/v2/workspaceagents/{agent_id}/coordinate?version=2.0", server.addr)
}

/// Go agent and Go client through agentwire (on `agent_side` and `client_side`, one server or two replicas).
async fn go_pair_scenario(agent_side: &TestServer, client_side: &TestServer, agent: &CreatedAgent, token: &str) {
    let mut go_agent = GoPeer::start(&agent_url(agent_side), &agent.auth_token.to_string(), "agent", agent.id, 1).await;
    let mut go_client = GoPeer::start(&client_url(client_side, agent.id), token, "client", agent.id, 7).await;

    let u = go_client.update().await;
    assert_eq!(
        (u["id"].as_str().unwrap(), u["kind"].as_str().unwrap(), u["node"].as_i64()),
        (agent.id.to_string().as_str(), "NODE", Some(1))
    );
    let u = go_agent.update().await;
    assert_eq!((u["kind"].as_str().unwrap(), u["node"].as_i64()), ("NODE", Some(7)));
    let client_id = u["id"].as_str().unwrap().to_owned();

    // Both ways.
    go_agent.command("node 2").await;
    let u = go_client.update().await;
    assert_eq!((u["kind"].as_str().unwrap(), u["node"].as_i64()), ("NODE", Some(2)));
    go_client.command("node 8").await;
    let u = go_agent.update().await;
    assert_eq!((u["id"].as_str().unwrap(), u["node"].as_i64()), (client_id.as_str(), Some(8)));
    go_agent.command(&format!("ready {client_id}")).await;
    let u = go_client.update().await;
    assert_eq!(u["kind"], "READY_FOR_HANDSHAKE");

    // Removing the tunnel: the agent is told, and updates stop.
    go_client.command("remove-tunnel").await;
    let u = go_agent.update().await;
    assert_eq!((u["id"].as_str().unwrap(), u["kind"].as_str().unwrap()), (client_id.as_str(), "DISCONNECTED"));
    let u = go_client.update().await;
    assert_eq!(u["kind"], "DISCONNECTED");
    go_agent.command("node 3").await;
    go_client.silent_for(Duration::from_millis(500)).await;

    // Again, then the agent vanishes (LOST), comes back, and the client disconnects gracefully (DISCONNECTED).
    go_client.command("add-tunnel").await;
    // Nothing orders the agent's node 3 before the client's new tunnel: `command` only writes to the Go peer's
    // stdin, and across replicas node 3 travels through pubsub. So the new tunnel may first carry the node the
    // coordinator already had (2), as coderd's would; node 3 must follow, and nothing else may come before it.
    let mut u = go_client.update().await;
    while u["node"].as_i64() == Some(2) {
        assert_eq!(u["kind"], "NODE");
        u = go_client.update().await;
    }
    assert_eq!((u["kind"].as_str().unwrap(), u["node"].as_i64()), ("NODE", Some(3)));
    go_agent.update().await;
    go_agent.command("quit").await;
    go_agent.exit().await;
    let u = go_client.update().await;
    assert_eq!((u["kind"].as_str().unwrap(), u["reason"].as_str().unwrap()), ("LOST", "lost"));

    let mut go_agent = GoPeer::start(&agent_url(agent_side), &agent.auth_token.to_string(), "agent", agent.id, 4).await;
    let u = go_agent.update().await;
    assert_eq!((u["id"].as_str().unwrap(), u["node"].as_i64()), (client_id.as_str(), Some(8)));
    let u = go_client.update().await;
    assert_eq!((u["kind"].as_str().unwrap(), u["node"].as_i64()), ("NODE", Some(4)));
    go_client.command("disconnect").await;
    let end = go_client.expect(|l| l.get("end").is_some()).await;
    assert_eq!(end["error"], "EOF", "{end}");
    let u = go_agent.update().await;
    assert_eq!((u["id"].as_str().unwrap(), u["kind"].as_str().unwrap()), (client_id.as_str(), "DISCONNECTED"));
    go_agent.command("disconnect").await;
    go_agent.exit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_agent_and_go_client_coordinate_through_agentwire() {
    let p = pair(fast_config()).await;
    go_pair_scenario(&p.server, &p.server, &p.agent, &p.token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_go_agent_on_replica_a_and_go_client_on_replica_b() {
    let url = fresh_pg_url().await;
    let store_a = Store::open(&url, StoreOptions::default()).await.unwrap();
    let store_b = Store::open(&url, StoreOptions::default()).await.unwrap();
    let (_, agent) = store_a.admin().create_demo_agent("carol", "carol-ws", "main").await.unwrap();
    let token = owner_token(&store_a, "carol").await;
    let replica_a = start(store_a, fast_config()).await;
    let replica_b = start(store_b, fast_config()).await;
    go_pair_scenario(&replica_a, &replica_b, &agent, &token).await;
    let metrics = replica_b.state.metrics().render(&replica_b.store);
    assert!(!metrics.contains("agentwire_tailnet_events_received_total 0\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replica_that_stops_loses_its_peers_on_the_others() {
    let url = fresh_pg_url().await;
    let store_a = Store::open(&url, StoreOptions::default()).await.unwrap();
    let store_b = Store::open(&url, StoreOptions::default()).await.unwrap();
    let (_, agent) = store_a.admin().create_demo_agent("dave", "dave-ws", "main").await.unwrap();
    let token = owner_token(&store_a, "dave").await;
    let replica_a = start(store_a, fast_config()).await;
    let replica_b = start(store_b, fast_config()).await;

    // The client is on B first; the agent then joins on A, which learns of the tunnel from B's snapshot.
    let client_rpc = pb::TailnetClient::new(connect_client(&replica_b, agent.id, &token).await);
    let mut client = client_rpc.coordinate().await.unwrap();
    client.send(&pb::CoordinateRequest { add_tunnel: tunnel(agent.id), ..update_self(client_node(5)) }).await.unwrap();
    let agent_rpc = pb::TailnetClient::new(connect(&replica_a, agent.auth_token).await);
    let mut agent_stream = agent_rpc.coordinate().await.unwrap();
    agent_stream.send(&update_self(agent_node(agent.id, 1))).await.unwrap();
    let (id, kind, node, _) = next_update(&mut client).await;
    assert_eq!((id, kind, node.unwrap().id), (agent.id, Kind::Node, 1));
    let (_, kind, node, _) = next_update(&mut agent_stream).await;
    assert_eq!((kind, node.unwrap().id), (Kind::Node, 5));

    // Replica A shuts down: its agent is lost for the client on B.
    replica_a.state.shutdown().await;
    let (id, kind, _, _) = next_update(&mut client).await;
    assert_eq!((id, kind), (agent.id, Kind::Lost));
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Hundreds of peers at once on one server: `AGENTWIRE_TAILNET_BENCH_AGENTS` agents (100) with
/// `AGENTWIRE_TAILNET_BENCH_CLIENTS` clients (500) spread over them, every peer sending `ROUNDS` node updates.
/// Every update must arrive; RSS (server and all peers, one process) is printed and the coordinator's state must
/// be empty once everyone left. Figures in BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_peers_coordinate_with_bounded_memory() {
    const ROUNDS: i64 = 10;
    let agents_n = env_or("AGENTWIRE_TAILNET_BENCH_AGENTS", 100);
    let clients_n = env_or("AGENTWIRE_TAILNET_BENCH_CLIENTS", 500);
    let store = memory_store().await;
    let mut agents = Vec::new();
    for i in 0..agents_n {
        let (_, agent) = store.admin().create_demo_agent(&format!("u{i}"), &format!("ws{i}"), "main").await.unwrap();
        let token = owner_token(&store, &format!("u{i}")).await;
        agents.push((agent, token));
    }
    let mut config = fast_config();
    config.max_sessions_per_agent = 4;
    let server = start(store, config).await;
    let rss_start = rss_kib();
    let started = std::time::Instant::now();

    // Agents first, each with its node.
    let mut agent_streams = Vec::new();
    for (agent, _) in &agents {
        let rpc = pb::TailnetClient::new(connect(&server, agent.auth_token).await);
        let stream = rpc.coordinate().await.unwrap();
        stream.send(&update_self(agent_node(agent.id, 0))).await.unwrap();
        agent_streams.push((rpc, stream));
    }
    // Then clients, round-robin over the agents.
    let mut client_streams = Vec::new();
    let mut clients_of = vec![0usize; agents_n];
    for c in 0..clients_n {
        let (agent, token) = &agents[c % agents_n];
        clients_of[c % agents_n] += 1;
        let rpc = pb::TailnetClient::new(connect_client(&server, agent.id, token).await);
        let stream = rpc.coordinate().await.unwrap();
        stream
            .send(&pb::CoordinateRequest { add_tunnel: tunnel(agent.id), ..update_self(client_node(c as i64)) })
            .await
            .unwrap();
        client_streams.push((rpc, stream));
    }
    // The first exchange: each client gets its agent's node, each agent its clients' nodes.
    let mut delivered = 0;
    for (_, stream) in &mut client_streams {
        delivered += recv(stream).await.peer_updates.len();
    }
    for (i, (_, stream)) in agent_streams.iter_mut().enumerate() {
        let mut got = 0;
        while got < clients_of[i] {
            got += recv(stream).await.peer_updates.len();
        }
        delivered += got;
    }
    let connected = started.elapsed();
    let rss_connected = rss_kib();

    // Clients send their rounds while agents read them, then agents send theirs while clients read. A peer of
    // the Rust test client that sends without reading while it is being sent to can stall its own connection
    // (its reader waits on a full stream queue), so each half has one direction of traffic per peer.
    let mut rpcs = Vec::new();
    let mut agent_tasks = tokio::task::JoinSet::new();
    for (i, (rpc, mut stream)) in agent_streams.into_iter().enumerate() {
        let expect = clients_of[i] * ROUNDS as usize;
        agent_tasks.spawn(async move {
            let mut got = 0;
            while got < expect {
                match tokio::time::timeout(WAIT, stream.recv()).await {
                    Ok(Ok(Some(r))) => got += r.peer_updates.len(),
                    other => panic!("agent {i}: {got} of {expect} updates, then {other:?}"),
                }
            }
            (i, rpc, stream, got)
        });
    }
    for (c, (_, stream)) in client_streams.iter().enumerate() {
        for round in 1..=ROUNDS {
            stream.send(&update_self(client_node(c as i64 * 100 + round))).await.unwrap();
        }
    }
    let mut agent_streams = Vec::new();
    while let Some(done) = agent_tasks.join_next().await {
        let (i, rpc, stream, got) = done.unwrap();
        delivered += got;
        agent_streams.push((i, rpc, stream));
    }
    let mut client_tasks = tokio::task::JoinSet::new();
    for (c, (rpc, mut stream)) in client_streams.into_iter().enumerate() {
        client_tasks.spawn(async move {
            let mut got = 0;
            while got < ROUNDS as usize {
                match tokio::time::timeout(WAIT, stream.recv()).await {
                    Ok(Ok(Some(r))) => got += r.peer_updates.len(),
                    other => panic!("client {c}: {got} of {ROUNDS} updates, then {other:?}"),
                }
            }
            (rpc, stream, got)
        });
    }
    for (i, _, stream) in &agent_streams {
        for round in 1..=ROUNDS {
            stream.send(&update_self(agent_node(agents[*i].0.id, round))).await.unwrap();
        }
    }
    while let Some(done) = client_tasks.join_next().await {
        let (rpc, stream, got) = done.unwrap();
        delivered += got;
        rpcs.push((rpc, stream));
    }
    for (_, rpc, stream) in agent_streams {
        rpcs.push((rpc, stream));
    }
    let exchanged = started.elapsed();
    let rss_peak = rss_kib();
    let expected = clients_n * (ROUNDS as usize + 1) * 2;
    assert_eq!(delivered, expected);
    let (local, _) = server.state.tailnet().coordinator().peer_counts();
    assert_eq!(local, agents_n + clients_n);
    assert_eq!(server.state.tailnet().coordinator().tunnel_count(), clients_n);

    drop(rpcs);
    eventually("every peer gone", || server.state.tailnet().coordinator().peer_counts() == (0, 0)).await;
    assert_eq!(server.state.tailnet().coordinator().tunnel_count(), 0);
    let rss_end = rss_kib();
    println!(
        "tailnet bench: {agents_n} agents + {clients_n} clients, {ROUNDS} rounds: connected in {:.2?}, \
         {delivered} peer updates delivered in {:.2?}; RSS KiB start {rss_start}, connected {rss_connected} \
         (+{} KiB, {:.1} KiB/peer), peak {rss_peak}, after all left {rss_end}",
        connected,
        exchanged - connected,
        rss_connected.saturating_sub(rss_start),
        rss_connected.saturating_sub(rss_start) as f64 / (agents_n + clients_n) as f64,
    );
}
