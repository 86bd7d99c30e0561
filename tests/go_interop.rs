//! Our dRPC, yamux and WebSocket layers against the real Go libraries, both ways, over TCP and WebSocket:
//! every call shape, errors, 4 MiB messages, concurrency, and a handler slower than the Go client's stream-open
//! timeout (our server must ACK streams at once).

mod common;

use std::time::Duration;

use agentwire::proto::agent::v2 as agent;
use agentwire_transport::client::{CallError, Client};
use agentwire_transport::io::ws;
use agentwire_transport::io::{spawn_session, Mode, SessionConfig, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::server::{Router, Server, ServerConfig};
use agentwire_transport::testing::{big_payload, path, register_interop, FAIL_CODE, FAIL_MESSAGE};
use agentwire_transport::Limits;
use bytes::Bytes;
use common::go_interop;
use common::recorded::{index, recorded_service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const RPC_PATH: &str = "/api/v2/workspaceagents/me/rpc";

/// Our server with the interop service and the recorded-Go Agent/Tailnet service, on TCP or WebSocket.
async fn our_server(websocket: bool) -> String {
    let mut router = Router::<()>::new();
    register_interop(&mut router);
    let service = recorded_service(&index());
    agent::register_agent(&mut router, service.clone());
    agentwire::proto::tailnet::v2::register_tailnet(&mut router, service);
    // Keepalive pings every 100 ms that must be answered within 300 ms: a Go peer that did not answer (or answers
    // our filter mishandled) would lose its session in the middle of the 1.5 s `slow` check.
    let mut config = ServerConfig::default();
    config.session.keepalive.interval = Some(Duration::from_millis(100));
    config.session.keepalive.timeout = Duration::from_millis(300);
    // The Go client below uses a 400 ms stream-open timeout (Coder's is 75 s): ACK well before it.
    config.ack_delay = Duration::from_millis(100);
    let server = Server::new(router, config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let server = server.clone();
            tokio::spawn(async move {
                if websocket {
                    let io = ws::accept(tcp, DEFAULT_MAX_WS_MESSAGE_SIZE).await.unwrap();
                    server.serve_session(io, (), CancellationToken::new()).await
                } else {
                    server.serve_session(tcp, (), CancellationToken::new()).await
                }
            });
        }
    });
    address
}

const ALL_CHECKS: &[&str] = &[
    "unary",
    "empty",
    "server_stream",
    "client_stream",
    "bidi",
    "fail",
    "unknown",
    "big",
    "concurrent",
    "slow",
    "coder_types",
];

async fn go_client_against_us(websocket: bool) {
    let address = our_server(websocket).await;
    let url = format!("ws://{address}{RPC_PATH}");
    let mut args: Vec<&str> = if websocket {
        vec!["--transport", "ws", "--url", &url]
    } else {
        vec!["--transport", "tcp", "--addr", &address]
    };
    let only = ALL_CHECKS.join(",");
    // A stream-open timeout far below the slow handler: only an immediate ACK keeps the Go session alive.
    args.extend(["--only", &only, "--slow-ms", "1500", "--stream-open-timeout", "400ms"]);
    let (checks, summary, success) = go_interop::call(&args).await;
    for check in &checks {
        assert!(check.pass, "Go check {} failed: {}", check.name, check.detail);
    }
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ALL_CHECKS, "every check ran, in order");
    assert_eq!(summary, format!("interop: {} passed, 0 failed", ALL_CHECKS.len()));
    assert!(success);
    let coder = checks.iter().find(|c| c.name == "coder_types").unwrap();
    assert!(coder.detail.contains("harness-ws"), "Coder's Go types decoded our manifest: {}", coder.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_to_our_server_over_tcp() {
    go_client_against_us(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_to_our_server_over_websocket() {
    go_client_against_us(true).await;
}

async fn our_client_against_go(websocket: bool) {
    let go = go_interop::serve(if websocket { "ws" } else { "tcp" }).await;
    let session = if websocket {
        let io = ws::connect(go.address.as_str().into_request(), DEFAULT_MAX_WS_MESSAGE_SIZE).await.unwrap();
        spawn_session(io, Mode::Client, &SessionConfig::default()).0
    } else {
        let tcp = tokio::net::TcpStream::connect(&go.address).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        spawn_session(tcp, Mode::Client, &SessionConfig::default()).0
    };
    let client = Client::new(session, Limits::default());

    assert_eq!(&client.unary(&path("Unary"), b"hello").await.unwrap()[..], b"echo:hello");
    assert!(client.unary(&path("Empty"), b"").await.unwrap().is_empty());
    for len in [70_000usize, (4 << 20) - 1024] {
        let reply = client.unary(&path("Big"), len.to_string().as_bytes()).await.unwrap();
        assert!(reply[..] == big_payload(len)[..], "Big({len}) differs");
    }
    match client.unary(&path("Fail"), b"").await {
        Err(CallError::Status(s)) => assert_eq!((s.code, s.message.as_str()), (FAIL_CODE, FAIL_MESSAGE)),
        other => panic!("Fail answered {other:?}"),
    }
    match client.unary(&path("Nope"), b"").await {
        Err(CallError::Status(s)) => {
            assert_eq!(s.code, 0);
            assert_eq!(s.message, format!("protocol error: unknown rpc: {:?}", path("Nope")));
        }
        other => panic!("Nope answered {other:?}"),
    }

    let mut stream = client.open_stream(&path("ServerStream")).await.unwrap();
    stream.send(Bytes::from_static(b"4")).await.unwrap();
    stream.close_send().await.unwrap();
    let mut items = Vec::new();
    while let Some(item) = stream.recv().await.unwrap() {
        items.push(item);
    }
    assert_eq!(items, ["item-0", "item-1", "item-2", "item-3"].map(|s| Bytes::from_static(s.as_bytes())));

    let mut stream = client.open_stream(&path("ClientStream")).await.unwrap();
    for m in ["one", "two", "three"] {
        stream.send(Bytes::from_static(m.as_bytes())).await.unwrap();
    }
    stream.close_send().await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(Bytes::from_static(b"one,two,three")));

    let mut stream = client.open_stream(&path("Bidi")).await.unwrap();
    for m in ["a", "b", "c"] {
        stream.send(Bytes::from_static(m.as_bytes())).await.unwrap();
        assert_eq!(stream.recv().await.unwrap(), Some(Bytes::from(format!("echo:{m}"))));
    }
    stream.close_send().await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), None);

    let calls: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let body = format!("c{i}");
                assert_eq!(client.unary(&path("Unary"), body.as_bytes()).await.unwrap(), format!("echo:{body}"));
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }

    // Coder's own generated Go server, through our typed client.
    let agent_client = agent::AgentClient::new(client.clone());
    let manifest = agent_client.get_manifest(&agent::GetManifestRequest {}).await.unwrap();
    assert_eq!(manifest.agent_name, "go-server");
    let lifecycle = agent::Lifecycle { state: agent::lifecycle::State::Ready as i32, changed_at: None };
    let echoed =
        agent_client.update_lifecycle(&agent::UpdateLifecycleRequest { lifecycle: Some(lifecycle) }).await.unwrap();
    assert_eq!(echoed, lifecycle);
    let err = agent_client.list_sub_agents(&agent::ListSubAgentsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Some(12), "{err}");

    // Still one healthy session after everything: a last call's answer comes after anything the Go side sent in
    // answer to the ones before (a GoAway, a reset), so the session is seen as it is after all of them.
    assert_eq!(&client.unary(&path("Unary"), b"last").await.unwrap()[..], b"echo:last");
    assert!(!client.session().is_closed());
}

trait IntoRequest {
    fn into_request(self) -> tokio_tungstenite::tungstenite::handshake::client::Request;
}

impl IntoRequest for &str {
    fn into_request(self) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = self.into_client_request().unwrap();
        request.headers_mut().insert("Coder-Session-Token", "interop".parse().unwrap());
        request
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_to_go_server_over_tcp() {
    our_client_against_go(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_to_go_server_over_websocket() {
    our_client_against_go(true).await;
}
