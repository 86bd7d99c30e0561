//! An agentwire server in the test process, on an ephemeral loopback port, plus ways to reach it as an agent.

use std::net::SocketAddr;

use agentwire::server::{AppState, ServeConfig};
use agentwire_store::{CreatedAgent, NewApp, NewMetadata, NewScript, Store, StoreOptions};
use agentwire_transport::client::Client;
use agentwire_transport::io::{spawn_session, ws, Mode, SessionConfig, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::Limits;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub store: Store,
}

impl TestServer {
    pub fn rpc_url(&self, version: &str) -> String {
        format!("ws://{}/api/v2/workspaceagents/me/rpc?version={version}", self.addr)
    }
}

pub async fn start(store: Store, config: ServeConfig) -> TestServer {
    let state = AppState::new(store.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(agentwire::http::serve(listener, state.clone(), state.shutdown_token().clone()));
    TestServer { addr, state, store }
}

pub async fn memory_store() -> Store {
    Store::open("sqlite::memory:", StoreOptions::default()).await.unwrap()
}

/// An agent with one app (with a health check), one script and the metadata keys the Go driver reports.
pub async fn agent_with_rows(store: &Store, user: &str) -> CreatedAgent {
    let admin = store.admin();
    let (_, agent) = admin.create_demo_agent(user, &format!("{user}-ws"), "main").await.unwrap();
    admin
        .add_app(
            agent.id,
            &NewApp {
                slug: "web".into(),
                display_name: "Web".into(),
                url: Some("http://localhost:8080".into()),
                healthcheck_url: "http://localhost:8080/healthz".into(),
                healthcheck_interval: 5,
                healthcheck_threshold: 3,
                ..NewApp::default()
            },
        )
        .await
        .unwrap();
    admin
        .add_script(
            agent.id,
            &NewScript {
                display_name: "startup".into(),
                script: "echo hi".into(),
                run_on_start: true,
                timeout_seconds: 60,
                ..NewScript::default()
            },
        )
        .await
        .unwrap();
    for key in ["cpu", "mem"] {
        admin
            .add_metadata_description(
                agent.id,
                &NewMetadata {
                    key: key.into(),
                    display_name: key.into(),
                    script: "true".into(),
                    // Seconds, as coderd stores them.
                    interval: 1,
                    timeout: 1,
                    display_order: 0,
                },
            )
            .await
            .unwrap();
    }
    agent
}

/// A Rust agent-side client over WebSocket, the token in the header, as Coder's agent dials.
pub async fn connect(server: &TestServer, token: Uuid) -> Client {
    connect_at(server, token, agentwire::session::ApiVersion::CURRENT).await
}

/// [`connect`] at `version`: beside coderd, agentwire serves no version newer than coderd's
/// ([`agentwire::session::ApiVersion::CODER_V2_30`]).
pub async fn connect_at(server: &TestServer, token: Uuid, version: agentwire::session::ApiVersion) -> Client {
    let mut request = server.rpc_url(&version.to_string()).into_client_request().unwrap();
    request.headers_mut().insert("Coder-Session-Token", token.to_string().parse().unwrap());
    let io = ws::connect(request, DEFAULT_MAX_WS_MESSAGE_SIZE).await.unwrap();
    Client::new(spawn_session(io, Mode::Client, &SessionConfig::default()).0, Limits::default())
}

/// The statements that read an agent row: the connect-time token lookup and the scope's own-state read.
pub fn agent_row_reads(store: &Store) -> u64 {
    let q = store.queries().snapshot();
    ["GetAuthenticatedWorkspaceAgentAndBuildByAuthToken", "GetWorkspaceAgentStateBySelf"]
        .iter()
        .map(|name| q.by_name.get(name).copied().unwrap_or(0))
        .sum()
}

/// An hour-long API token for an existing user, for the user-facing endpoints.
pub async fn owner_token(store: &Store, user: &str) -> String {
    let admin = store.admin();
    let owner = admin.user_id(user).await.unwrap().expect("the user exists");
    admin.create_api_key(owner, std::time::Duration::from_secs(3600)).await.unwrap()
}
