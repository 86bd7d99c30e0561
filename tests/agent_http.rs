//! The agent's HTTP endpoints beside the RPC endpoint (`src/http/agent_me/`), end to end over plain TCP: coderd's
//! status codes and JSON bodies, the rows they store and the notifications they send, the reinit stream's pings,
//! limits and end, on SQLite and (for what they store) on PostgreSQL.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use agentwire::http::agent_me::reinit::{DEFAULT_MAX_REINIT_STREAMS, DEFAULT_MAX_REINIT_STREAMS_PER_AGENT};
use agentwire::http::agent_me::{routes_with, AgentMeConfig, MeState, DEFAULT_MAX_REQUEST_BODY};
use agentwire::server::{AgentHttpLimits, AppState, ServeConfig};
use agentwire_store::pubsub::{agent_logs_channel, workspace_owner_channel};
use agentwire_store::{BuildIds, CreatedAgent, JobState, NewApp, ResolvedAgent, Store, StoreOptions};
use base64::Engine as _;
use common::pg::fresh_pg_url;
use common::server::{memory_store, start};
use common::sse::{dechunk, read_head, Events};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);
const ME: &str = "/api/v2/workspaceagents/me";

/// An answer: status, lowercased head, the body (de-chunked).
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Status, message and detail of a coderd error body.
    fn error(&self) -> (u16, String, String) {
        let body = self.json();
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        (self.status, text("message"), text("detail"))
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    if let Some(body) = body {
        stream.write_all(body).await.unwrap();
    }
    stream
}

async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    tokio::time::timeout(WAIT, async {
        let mut stream = send(addr, method, path, headers, body).await;
        let (status, head, mut raw) = read_head(&mut stream).await;
        stream.read_to_end(&mut raw).await.unwrap();
        let body = if head.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            assert!(dechunk(&mut raw, &mut body), "an unfinished chunked body");
            body
        } else {
            raw
        };
        Reply { status, head, body }
    })
    .await
    .expect("an answer in time")
}

fn token_header(agent: &CreatedAgent) -> String {
    agent.auth_token.to_string()
}

async fn call(addr: SocketAddr, agent: &CreatedAgent, method: &str, path: &str, body: Option<Value>) -> Reply {
    let token = token_header(agent);
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    request(addr, method, &format!("{ME}/{path}"), &[("Coder-Session-Token", &token)], body.as_deref()).await
}

impl Events {
    /// Opens `agent`'s reinit stream: the answer, and the stream when it is a 200.
    async fn open(addr: SocketAddr, agent: &CreatedAgent) -> (Reply, Option<Events>) {
        let token = token_header(agent);
        tokio::time::timeout(WAIT, async {
            let mut stream = send(addr, "GET", &format!("{ME}/reinit"), &[("Coder-Session-Token", &token)], None).await;
            let (status, head, raw) = read_head(&mut stream).await;
            if status != 200 {
                let mut raw = raw;
                stream.read_to_end(&mut raw).await.unwrap();
                let mut body = Vec::new();
                dechunk(&mut raw, &mut body);
                let body = if head.contains("transfer-encoding: chunked") { body } else { raw };
                return (Reply { status, head, body }, None);
            }
            let reply = Reply { status, head, body: Vec::new() };
            (reply, Some(Events::new(stream, raw)))
        })
        .await
        .expect("the reinit answer in time")
    }
}

/// A user, template, workspace with one build, and an agent on it with one app (`web`).
async fn agent(store: &Store, user: &str) -> (BuildIds, CreatedAgent, ResolvedAgent) {
    let admin = store.admin();
    let (build, created) = admin.create_demo_agent(user, &format!("{user}-ws"), "main").await.unwrap();
    admin
        .add_app(created.id, &NewApp { slug: "web".into(), display_name: "Web".into(), ..NewApp::default() })
        .await
        .unwrap();
    let resolved = store.resolve_agent_by_token(&created.auth_token.to_string()).await.unwrap().unwrap();
    (build, created, resolved)
}

/// The `me/…` endpoints alone, with `config`, on their own listener, ended by the server's shutdown token.
async fn start_me(store: Store, config: AgentMeConfig) -> (SocketAddr, MeState) {
    let app = AppState::new(store, ServeConfig::default());
    let me = MeState::new(app.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = app.shutdown_token().clone();
    let router = routes_with(me.clone());
    tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await });
    (addr, me)
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} in time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_me_endpoint_authenticates_as_the_rpc_endpoint() {
    let store = memory_store().await;
    let (build, created, _) = agent(&store, "alice").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let endpoints = [
        ("GET", "reinit"),
        ("GET", "gitsshkey"),
        ("POST", "log-source"),
        ("PATCH", "logs"),
        ("PATCH", "app-status"),
        ("GET", "external-auth?url=x"),
        ("GET", "gitauth?url=x"),
    ];
    let not_authorized = "The agent cannot authenticate until the workspace provision job has been completed. If the \
                          job is no longer running, this agent is invalid.";
    for (method, path) in endpoints {
        let url = format!("{ME}/{path}");
        let body = (method != "GET").then_some(&b"{}"[..]);
        let reply = request(server.addr, method, &url, &[], body).await;
        assert_eq!(reply.error(), (401, r#"Cookie "coder_session_token" must be provided."#.into(), String::new()));
        let reply = request(server.addr, method, &url, &[("Coder-Session-Token", "not-a-uuid")], body).await;
        assert_eq!(
            reply.error(),
            (401, "Workspace agent token invalid.".into(), "An agent token must be a valid UUIDv4. (len 10)".into())
        );
        let unknown = Uuid::new_v4().to_string();
        let reply = request(server.addr, method, &url, &[("Coder-Session-Token", &unknown)], body).await;
        assert_eq!(reply.error(), (401, "Workspace agent not authorized.".into(), not_authorized.into()), "{path}");
        // The body is not read before the agent is known: a refusal never says it is bad JSON.
        let reply = request(server.addr, method, &url, &[], Some(b"not json")).await;
        assert_eq!(reply.status, 401);
    }
    // The session cookie and the query parameter work as the header does.
    let token = created.auth_token.to_string();
    let cookie = format!("other=1; coder_session_token={token}");
    let reply = request(server.addr, "GET", &format!("{ME}/external-auth"), &[("Cookie", &cookie)], None).await;
    assert_eq!(reply.error().1, "'url' or 'id' must be provided!");
    let reply =
        request(server.addr, "GET", &format!("{ME}/external-auth?coder_session_token={token}"), &[], None).await;
    assert_eq!(reply.status, 400);
    // A newer build makes the agent's build stale: 401, as on the RPC endpoint.
    store.admin().create_build(build.workspace_id, "start", JobState::Succeeded).await.unwrap();
    for (method, path) in endpoints {
        let body = (method != "GET").then_some(&b"{}"[..]);
        let reply =
            request(server.addr, method, &format!("{ME}/{path}"), &[("Coder-Session-Token", &token)], body).await;
        assert_eq!(reply.error().0, 401, "{path}");
        assert_eq!(reply.error().1, "Workspace agent not authorized.");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinit_sends_coders_pings_costs_no_queries_and_ends_when_the_client_goes() {
    let store = memory_store().await;
    let (_, created, _) = agent(&store, "alice").await;
    let config = AgentMeConfig { reinit_heartbeat: Duration::from_millis(100), ..AgentMeConfig::default() };
    let (addr, me) = start_me(store.clone(), config).await;

    let before = store.queries().snapshot();
    let (reply, events) = Events::open(addr, &created).await;
    assert_eq!(reply.status, 200);
    assert!(reply.head.contains("content-type: text/event-stream"), "{}", reply.head);
    assert!(reply.head.contains("cache-control: no-cache"), "{}", reply.head);
    assert!(reply.head.contains("x-accel-buffering: no"), "{}", reply.head);
    let mut events = events.unwrap();
    // Only pings, exactly as coderd writes them, and no event an agent would act on.
    for _ in 0..3 {
        assert_eq!(events.next(WAIT).await.as_deref(), Some("event: ping\n\n"));
    }
    // The token lookup and nothing else, however long the stream (the server's background readers aside: the
    // metrics snapshotter's deployment and template reads, the DERP map poller's site config).
    let d = store.queries().snapshot().since(&before);
    let ours: Vec<(&str, u64)> = d
        .by_name
        .iter()
        .map(|(name, n)| (&name[..], *n))
        .filter(|(name, _)| !["GetDeployment", "GetTemplate", "GetSiteConfig"].iter().any(|bg| name.starts_with(bg)))
        .collect();
    assert_eq!(ours, [("GetAuthenticatedWorkspaceAgentAndBuildByAuthToken", 1)], "{d:?}");
    assert_eq!((d.begins, d.notifications), (0, 0));
    assert_eq!(me.reinit.open(), 1);
    // The agent hangs up: its place is given back once a ping finds the connection gone.
    drop(events);
    wait_until("the stream's place given back", || me.reinit.open() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinit_streams_are_bounded_per_agent_and_per_server() {
    let store = memory_store().await;
    let (_, a, _) = agent(&store, "alice").await;
    let (_, b, _) = agent(&store, "bob").await;
    let config = AgentMeConfig {
        reinit_heartbeat: Duration::from_secs(3600),
        limits: AgentHttpLimits {
            max_reinit_streams: 3,
            max_reinit_streams_per_agent: 2,
            ..AgentHttpLimits::default()
        },
    };
    let (addr, me) = start_me(store.clone(), config).await;
    let mut first = Events::open(addr, &a).await.1.unwrap();
    let _second = Events::open(addr, &a).await.1.unwrap();
    assert_eq!(me.reinit.open(), 2);
    // A third stream of the same agent ends its oldest instead of being refused.
    let _third = Events::open(addr, &a).await.1.unwrap();
    assert_eq!(first.next(WAIT).await, None, "the oldest stream ends");
    assert_eq!(me.reinit.open(), 2);
    let _b1 = Events::open(addr, &b).await.1.unwrap();
    assert_eq!(me.reinit.open(), 3);
    // The server is full: another agent's stream is refused with 503, coderd-shaped.
    let (_, c, _) = agent(&store, "carol").await;
    let (reply, none) = Events::open(addr, &c).await;
    assert!(none.is_none());
    let (status, message, detail) = reply.error();
    assert_eq!((status, message.as_str()), (503, "Too many agent connections."));
    assert!(detail.contains("maximum of 3 reinit streams"), "{detail}");
    // The defaults: as many as the server's sessions, per agent as many as an agent's sessions.
    assert_eq!((DEFAULT_MAX_REINIT_STREAMS, DEFAULT_MAX_REINIT_STREAMS_PER_AGENT), (100_000, 4));
    assert_eq!(AgentMeConfig::default().reinit_heartbeat, Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinit_on_the_real_router_ends_on_shutdown() {
    let store = memory_store().await;
    let (_, created, _) = agent(&store, "alice").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let (reply, events) = Events::open(server.addr, &created).await;
    assert_eq!(reply.status, 200, "{:?}", reply);
    let mut events = events.unwrap();
    // coderd's first ping comes after 15 s; the server stops long before it, and the stream ends with it.
    let stopping = tokio::spawn({
        let state = server.state.clone();
        async move { state.shutdown().await }
    });
    assert_eq!(events.next(Duration::from_secs(10)).await, None, "the stream ends on shutdown");
    tokio::time::timeout(WAIT, stopping).await.expect("shutdown in time").unwrap();
}

async fn git_ssh_key_case(store: Store) {
    let (_, created, resolved) = agent(&store, "alice").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let reply = call(server.addr, &created, "GET", "gitsshkey", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.head.contains("content-type: application/json"), "{}", reply.head);
    let key = reply.json();
    assert_eq!(key.as_object().unwrap().len(), 2, "agentsdk.GitSSHKey has two fields: {key}");
    let (private, public) = (key["private_key"].as_str().unwrap(), key["public_key"].as_str().unwrap());
    assert!(public.starts_with("ssh-ed25519 ") && public.ends_with('\n'), "{public}");
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"), "{private}");
    assert!(private.ends_with("-----END OPENSSH PRIVATE KEY-----\n"), "{private}");
    assert_private_key_matches(private, public);

    // Stored for the owner, and the same pair from then on, for every agent of the owner.
    let scope = store.agent(&resolved);
    let stored = scope.owner_git_ssh_key().await.unwrap().expect("stored");
    assert_eq!((stored.private_key.as_str(), stored.public_key.as_str()), (private, public));
    assert_eq!(stored.user_id, resolved.owner_id);
    let before = store.queries().snapshot();
    let again = call(server.addr, &created, "GET", "gitsshkey", None).await.json();
    assert_eq!(again, key);
    let d = store.queries().snapshot().since(&before);
    assert_eq!((d.total(), d.get("GetGitSSHKey"), d.begins), (2, 1, 0), "token lookup and one read: {d:?}");
    let admin = store.admin();
    let build = admin.create_workspace_with_build(resolved.owner_id, resolved.template_id, "second").await.unwrap();
    let sibling = admin
        .create_agent(build.resource_id, &agentwire_store::NewAgent { name: "main".into(), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(call(server.addr, &sibling, "GET", "gitsshkey", None).await.json(), key);
    // Another user gets a pair of their own.
    let (_, bob, _) = agent(&store, "bob").await;
    let theirs = call(server.addr, &bob, "GET", "gitsshkey", None).await.json();
    assert_ne!(theirs["public_key"], key["public_key"]);
    server.state.shutdown().await;
}

/// The PEM's key is an unencrypted OpenSSH ed25519 key whose seed gives the public key the answer carries.
fn assert_private_key_matches(private: &str, public: &str) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let lines: Vec<&str> = private.lines().collect();
    assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() <= 64), "Go's 64-column PEM");
    let raw = b64.decode(lines[1..lines.len() - 1].concat()).unwrap();
    let mut at = 0;
    let mut take = |n: usize| {
        let out = raw[at..at + n].to_vec();
        at += n;
        out
    };
    assert_eq!(take(15), b"openssh-key-v1\0");
    let string = |take: &mut dyn FnMut(usize) -> Vec<u8>| {
        let len = u32::from_be_bytes(take(4).try_into().unwrap()) as usize;
        take(len)
    };
    assert_eq!(string(&mut take), b"none");
    assert_eq!(string(&mut take), b"none");
    assert_eq!(string(&mut take), b"");
    assert_eq!(take(4), [0, 0, 0, 1]);
    let public_blob = string(&mut take);
    let private_block = string(&mut take);
    assert_eq!(format!("ssh-ed25519 {}\n", b64.encode(&public_blob)), public);
    assert_eq!(private_block.len() % 8, 0);
    assert_eq!(private_block[0..4], private_block[4..8], "the two check words agree");
    let seed: [u8; 32] = private_block[8 + 4 + 11 + 4 + 32 + 4..][..32].try_into().unwrap();
    let derived = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    assert_eq!(&public_blob[public_blob.len() - 32..], derived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_git_ssh_key_is_made_once_per_user() {
    git_ssh_key_case(memory_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_git_ssh_key_is_made_once_per_user() {
    git_ssh_key_case(Store::open(&fresh_pg_url().await, StoreOptions::default()).await.unwrap()).await;
}

async fn logs_case(store: Store) {
    let limit = store.options().max_logs_length;
    let (_, created, resolved) = agent(&store, "alice").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let scope = store.agent(&resolved);
    let mut logs_sub = store.pubsub().subscribe(&agent_logs_channel(created.id)).await.unwrap();
    let mut owner_sub = store.pubsub().subscribe(&workspace_owner_channel(resolved.owner_id)).await.unwrap();

    // A log source: 201 with coderd's shape; the row stored; a second post with the same id leaves the row alone
    // and still answers the request's values.
    let source = Uuid::new_v4();
    let reply = call(
        server.addr,
        &created,
        "POST",
        "log-source",
        Some(json!({"id": source.to_string(), "display_name": "Build", "icon": "/icon/x.svg"})),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["workspace_agent_id"], created.id.to_string());
    assert_eq!(
        (body["id"].as_str(), body["display_name"].as_str()),
        (Some(source.to_string().as_str()), Some("Build"))
    );
    assert_eq!(body["icon"], "/icon/x.svg");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'), "{body}");
    let again = call(
        server.addr,
        &created,
        "POST",
        "log-source",
        Some(json!({"id": source.to_string(), "display_name": "New"})),
    )
    .await;
    assert_eq!((again.status, again.json()["display_name"].as_str()), (201, Some("New")));
    let sources = scope.list_log_sources().await.unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!((sources[0].id, sources[0].display_name.as_str()), (source, "Build"));
    let long = "n".repeat(128);
    let reply = call(
        server.addr,
        &created,
        "POST",
        "log-source",
        Some(json!({"id": Uuid::new_v4().to_string(), "display_name": long})),
    )
    .await;
    assert_eq!(reply.error().0, 500, "coderd's varchar(127) refusal");
    assert_eq!(reply.error().2, "value too long for type character varying(127)");
    assert!(
        call(server.addr, &created, "POST", "log-source", Some(json!({"display_name": "n".repeat(127)}))).await.status
            == 201
    );
    let reply = call(server.addr, &created, "POST", "log-source", Some(json!({"id": "abc"}))).await;
    assert_eq!(reply.error().1, "Request body must be valid JSON.");
    assert!(reply.error().2.contains("invalid UUID length: 3"), "{:?}", reply.error());

    // Lines: stored under the source with their levels (none is info), one agent-logs notification, and the
    // first-logs event once.
    let lines = json!({"log_source_id": source.to_string(), "logs": [
        {"created_at": "2024-01-01T00:00:00Z", "output": "one", "level": "debug"},
        {"output": "two"},
        {"output": "three", "level": "error"},
    ]});
    let reply = call(server.addr, &created, "PATCH", "logs", Some(lines)).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"null\n"[..]), "{reply:?}");
    let rows = scope.logs_after(0).await.unwrap();
    let got: Vec<(&str, &str)> = rows.iter().map(|r| (r.level.as_str(), r.output.as_str())).collect();
    assert_eq!(got, [("debug", "one"), ("info", "two"), ("error", "three")]);
    assert!(rows.iter().all(|r| r.log_source_id == source));
    let first = rows[0].id;
    let notified = tokio::time::timeout(WAIT, logs_sub.recv()).await.unwrap().unwrap();
    assert_eq!(notified, format!(r#"{{"created_after":{}}}"#, first - 1));
    let event = tokio::time::timeout(WAIT, owner_sub.recv()).await.unwrap().unwrap();
    assert!(event.contains(r#""kind":"agt_first_logs""#), "{event}");

    // The nil source is Coder's External source.
    let reply = call(server.addr, &created, "PATCH", "logs", Some(json!({"logs": [{"output": "ext"}]}))).await;
    assert_eq!(reply.status, 200);
    let last = scope.logs_after(0).await.unwrap().pop().unwrap();
    assert_eq!(last.log_source_id, uuid::uuid!("3b579bf4-1ed8-4b99-87a8-e9a1e3410410"));
    tokio::time::timeout(WAIT, logs_sub.recv()).await.unwrap().unwrap();

    // coderd's refusals, nothing stored.
    let count = scope.logs_after(0).await.unwrap().len();
    for (body, expect) in [
        (json!({"logs": []}), (400, "No logs provided.", "")),
        (json!({"log_source_id": source.to_string()}), (400, "No logs provided.", "")),
        (
            json!({"logs": [{"output": "x"}, {"output": "y", "level": "LOUD"}]}),
            (400, "Invalid log level provided.", r#"invalid log level: "LOUD""#),
        ),
    ] {
        let reply = call(server.addr, &created, "PATCH", "logs", Some(body)).await;
        let (status, message, detail) = reply.error();
        assert_eq!((status, message.as_str(), detail.as_str()), expect);
    }
    let reply =
        call(server.addr, &created, "PATCH", "logs", Some(json!({"logs": [{"created_at": "yesterday"}]}))).await;
    assert_eq!(reply.error().1, "Request body must be valid JSON.");
    let token = token_header(&created);
    let reply =
        request(server.addr, "PATCH", &format!("{ME}/logs"), &[("Coder-Session-Token", &token)], Some(b"")).await;
    assert_eq!(reply.error(), (400, "Request body must be valid JSON.".into(), "EOF".into()));
    assert_eq!(scope.logs_after(0).await.unwrap().len(), count);

    // The budget: a batch past it is 413 and flags the agent (the overflow event once); after that, 413 with why.
    let used = scope.state().await.unwrap().unwrap().logs_length;
    let over = "o".repeat(usize::try_from(limit - used).unwrap() + 1);
    let reply = call(server.addr, &created, "PATCH", "logs", Some(json!({"logs": [{"output": over}]}))).await;
    assert_eq!(reply.error(), (413, "Logs limit exceeded".into(), String::new()));
    assert!(scope.state().await.unwrap().unwrap().logs_overflowed);
    let event = tokio::time::timeout(WAIT, owner_sub.recv()).await.unwrap().unwrap();
    assert!(event.contains(r#""kind":"agt_logs_overflow""#), "{event}");
    let reply = call(server.addr, &created, "PATCH", "logs", Some(json!({"logs": [{"output": over}]}))).await;
    let (status, message, detail) = reply.error();
    assert_eq!((status, message.as_str()), (413, "Logs limit exceeded"));
    assert_eq!(detail, format!("the agent's logs are over their limit of {limit} bytes"));
    assert!(owner_sub.try_recv().is_none(), "the overflow event is sent once");
    assert_eq!(scope.logs_after(0).await.unwrap().len(), count);
    // Once flagged, the agent stays over its budget: even a line that would fit is refused, as the RPC path does.
    let reply = call(server.addr, &created, "PATCH", "logs", Some(json!({"logs": [{"output": "fits"}]}))).await;
    assert_eq!(reply.error().0, 413);
    assert_eq!(scope.logs_after(0).await.unwrap().len(), count);
    server.state.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_sources_and_logs_as_coderd_takes_them() {
    let options = StoreOptions { max_logs_length: 4096, ..StoreOptions::default() };
    logs_case(Store::open("sqlite::memory:", options).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_log_sources_and_logs_as_coderd_takes_them() {
    let options = StoreOptions { max_logs_length: 4096, ..StoreOptions::default() };
    logs_case(Store::open(&fresh_pg_url().await, options).await.unwrap()).await;
}

async fn app_status_case(store: Store) {
    let (build, created, resolved) = agent(&store, "alice").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let scope = store.agent(&resolved);
    let mut owner_sub = store.pubsub().subscribe(&workspace_owner_channel(resolved.owner_id)).await.unwrap();
    let admin = store.admin();
    let now = agentwire_store::now_micros();
    admin.set_build_deadline(build.build_id, now + 60_000_000, 0).await.unwrap();

    // `working`: stored (sanitised), announced, and the workspace's deadline bumped by the template's hour.
    let body = json!({"app_slug": "web", "state": "working", "message": "Building <b>it</b>\n\n now", "uri": "https://x/1",
                      "icon": "ignored", "needs_user_attention": true});
    let reply = call(server.addr, &created, "PATCH", "app-status", Some(body)).await;
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"null\n"[..]), "{reply:?}");
    let event = tokio::time::timeout(WAIT, owner_sub.recv()).await.unwrap().unwrap();
    assert!(event.contains(r#""kind":"agt_app_status_update""#) && event.contains(&created.id.to_string()), "{event}");
    let (deadline, _) = admin.build_activity(build.build_id).await.unwrap().unwrap();
    assert!(deadline >= now + 3_600_000_000, "bumped by the template's activity bump: {deadline}");
    // The stored status is the latest: the next one sees `working` before it.
    let probe = scope.insert_app_status("web", "idle", "", None).await.unwrap().unwrap();
    assert_eq!(probe.previous_state.as_deref(), Some("working"));

    // coderd's checks, in its order: the app first, then the message's length, then the state.
    let cases = [
        (
            json!({"app_slug": "nope", "state": "working"}),
            (400, "Failed to get workspace app.", r#"No app found with slug "nope""#),
        ),
        (
            json!({"app_slug": "nope", "state": "bogus", "message": "m".repeat(161)}),
            (400, "Failed to get workspace app.", r#"No app found with slug "nope""#),
        ),
        (
            json!({"app_slug": "web", "state": "bogus", "message": "m".repeat(161)}),
            (400, "Message is too long.", "Message must be less than 160 characters."),
        ),
        (json!({"app_slug": "web", "state": "bogus"}), (400, "Invalid state provided.", r#"invalid state: "bogus""#)),
        (json!({"app_slug": "web"}), (400, "Invalid state provided.", r#"invalid state: """#)),
    ];
    for (body, expect) in cases {
        let reply = call(server.addr, &created, "PATCH", "app-status", Some(body)).await;
        let (status, message, detail) = reply.error();
        assert_eq!((status, message.as_str(), detail.as_str()), expect);
    }
    let reply =
        call(server.addr, &created, "PATCH", "app-status", Some(json!({"app_slug": "web", "state": "x"}))).await;
    assert_eq!(
        reply.json()["validations"],
        json!([{"field": "state", "detail": "State must be one of: complete, failure, working."}])
    );
    // 160 bytes is the most a message may have.
    let ok = json!({"app_slug": "web", "state": "complete", "message": "m".repeat(160)});
    assert_eq!(call(server.addr, &created, "PATCH", "app-status", Some(ok)).await.status, 200);
    server.state.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_app_status_as_coderd_takes_it() {
    app_status_case(memory_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_app_status_as_coderd_takes_it() {
    app_status_case(Store::open(&fresh_pg_url().await, StoreOptions::default()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_auth_and_instance_identities_answer_as_an_unconfigured_coderd() {
    let store = memory_store().await;
    let (_, created, _) = agent(&store, "alice").await;
    let server = start(store.clone(), ServeConfig::default()).await;
    for path in ["external-auth", "gitauth"] {
        let reply = call(server.addr, &created, "GET", path, None).await;
        assert_eq!(reply.error(), (400, "'url' or 'id' must be provided!".into(), String::new()));
        let reply =
            call(server.addr, &created, "GET", &format!("{path}?match=https://github.com/a&id=github"), None).await;
        assert_eq!(reply.error(), (400, "'url' and 'id' cannot be provided together!".into(), String::new()));
        let reply =
            call(server.addr, &created, "GET", &format!("{path}?match=https%3A%2F%2Fgithub.com%2Fa&listen"), None)
                .await;
        assert_eq!(
            reply.error(),
            (
                404,
                r#"No matching external auth provider found in Coder for the url "https://github.com/a"."#.into(),
                "External auth provider not found.".into()
            )
        );
    }

    // The instance identity logins: not agent-authenticated; coderd's body checks, then its refusal.
    let clouds = [
        ("aws", json!({"signature": "s", "document": "d"}), vec!["signature", "document"], "Invalid AWS identity."),
        (
            "azure",
            json!({"signature": "s", "encoding": "pem"}),
            vec!["signature", "encoding"],
            "Invalid Azure identity.",
        ),
        ("google", json!({"json_web_token": "t"}), vec!["json_web_token"], "Invalid GCP identity."),
    ];
    for (cloud, full, fields, refusal) in clouds {
        let path = format!("/api/v2/workspaceagents/{cloud}-instance-identity");
        let reply = request(server.addr, "POST", &path, &[], Some(b"{")).await;
        assert_eq!(reply.error().1, "Request body must be valid JSON.");
        let reply = request(server.addr, "POST", &path, &[], Some(b"{}")).await;
        assert_eq!(reply.error().1, "Validation failed.");
        let validations = reply.json()["validations"].clone();
        let named: Vec<&str> = validations.as_array().unwrap().iter().map(|v| v["field"].as_str().unwrap()).collect();
        assert_eq!(named, fields);
        assert_eq!(validations[0]["detail"], r#"Validation failed for tag "required" with value: """#);
        let reply = request(server.addr, "POST", &path, &[], Some(&serde_json::to_vec(&full).unwrap())).await;
        let (status, message, detail) = reply.error();
        assert_eq!((status, message.as_str()), (401, refusal));
        assert!(detail.contains("agent token"), "{detail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_bounded() {
    assert_eq!(DEFAULT_MAX_REQUEST_BODY, 4 * 1024 * 1024, "Coder's dRPC message limit");
    let store = memory_store().await;
    let (_, created, resolved) = agent(&store, "alice").await;
    let (addr, _me) = start_me(
        store.clone(),
        AgentMeConfig::with_limits(AgentHttpLimits { max_request_body: 1024, ..AgentHttpLimits::default() }),
    )
    .await;
    let fits = json!({"logs": [{"output": "x".repeat(900)}]});
    assert_eq!(call(addr, &created, "PATCH", "logs", Some(fits)).await.status, 200);
    let over = json!({"logs": [{"output": "x".repeat(1100)}]});
    let reply = call(addr, &created, "PATCH", "logs", Some(over)).await;
    assert_eq!(
        reply.error(),
        (413, "Request body too large.".into(), "request bodies are limited to 1024 bytes".into())
    );
    assert_eq!(store.agent(&resolved).logs_after(0).await.unwrap().len(), 1);
}
