//! `GET /api/v2/workspaceagents/{id}/watch-metadata` end to end: a user's watcher reads server-sent events over a
//! plain TCP connection while an agent, connected over the real endpoint, reports metadata. On SQLite through one
//! server; on PostgreSQL across two replicas sharing the database, the update crossing over LISTEN/NOTIFY.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use agentwire::http::watch_metadata::{RESOURCE_NOT_FOUND, SIGNED_OUT};
use agentwire::proto::agent::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire_store::{CreatedAgent, Store, StoreOptions};
use common::pg::fresh_pg_url;
use common::server::{agent_with_rows, connect, memory_store, owner_token, start, TestServer};
use common::sse::{read_head, Events};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

/// The response to a GET: status, raw header block, and either the whole body (when not 200) or the open stream.
struct Reply {
    status: u16,
    headers: String,
    stream: TcpStream,
    /// Bytes read past the header block, not yet consumed.
    raw: Vec<u8>,
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    tokio::time::timeout(WAIT, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, headers, raw) = read_head(&mut stream).await;
        Reply { status, headers, stream, raw }
    })
    .await
    .expect("response head in time")
}

impl Reply {
    /// The JSON body of an error answer (sized by Content-Length).
    async fn json(mut self) -> Value {
        let len: usize = self
            .headers
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("a sized body")
            .trim()
            .parse()
            .unwrap();
        tokio::time::timeout(WAIT, async {
            while self.raw.len() < len {
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed inside the body");
                self.raw.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("body in time");
        serde_json::from_slice(&self.raw[..len]).unwrap()
    }

    fn into_events(self) -> Events {
        assert_eq!(self.status, 200, "{}", self.headers);
        assert!(self.headers.contains("content-type: text/event-stream"), "{}", self.headers);
        assert!(self.headers.contains("transfer-encoding: chunked"), "{}", self.headers);
        Events::new(self.stream, self.raw)
    }
}

impl Events {
    /// The next event as (type, data), or `None` when the stream ends.
    async fn event(&mut self) -> Option<(String, Option<String>)> {
        let block = self.next(WAIT).await?;
        let mut kind = String::from("message");
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                kind = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v.to_owned());
            }
        }
        Some((kind, data))
    }

    /// The next `data` event's JSON array (pings are skipped).
    async fn data(&mut self) -> Vec<Value> {
        loop {
            let (kind, data) = self.event().await.expect("the stream ended");
            match kind.as_str() {
                "ping" => continue,
                "data" => return serde_json::from_str::<Vec<Value>>(&data.expect("data")).unwrap(),
                other => panic!("unexpected {other} event: {data:?}"),
            }
        }
    }
}

fn path(agent_id: Uuid) -> String {
    format!("/api/v2/workspaceagents/{agent_id}/watch-metadata")
}

/// The value of `key` in a data event.
fn value_of(items: &[Value], key: &str) -> String {
    let item = items.iter().find(|m| m["description"]["key"] == key).unwrap_or_else(|| panic!("no {key}: {items:?}"));
    item["result"]["value"].as_str().unwrap().to_owned()
}

async fn report(client: &pb::AgentClient, key: &str, value: &str) {
    let metadata = vec![pb::Metadata {
        key: key.into(),
        result: Some(pb::workspace_agent_metadata::Result {
            collected_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            age: 0,
            value: value.into(),
            error: String::new(),
        }),
    }];
    client.batch_update_metadata(&pb::BatchUpdateMetadataRequest { metadata }).await.unwrap();
}

fn owner_reads(store: &Store) -> u64 {
    store.queries().get("GetWorkspaceAgentMetadataForOwner")
}

async fn agent_client(server: &TestServer, agent: &CreatedAgent) -> pb::AgentClient {
    tokio::time::timeout(WAIT, async { pb::AgentClient::new(connect(server, agent.auth_token).await) })
        .await
        .expect("the agent connects in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_watcher_gets_the_state_then_every_update() {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, "watcher").await;
    let other = agent_with_rows(&store, "neighbour").await;
    let token = owner_token(&store, "watcher").await;
    let server = start(store.clone(), ServeConfig::default()).await;

    let reply = get(server.addr, &path(agent.id), &[("Coder-Session-Token", &token)]).await;
    assert!(reply.headers.contains("cache-control: no-cache"), "{}", reply.headers);
    let mut events = reply.into_events();
    // The full current state first, in coderd's shape; never-collected rows carry Go's zero time.
    let first = events.data().await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0]["description"]["key"], "cpu");
    assert_eq!(first[0]["result"]["collected_at"], "0001-01-01T00:00:00Z");
    assert_eq!(first[0]["result"]["value"], "");
    assert_eq!(first[0]["description"]["interval"], 1i64);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&first[0]), ["description", "result"]);
    assert_eq!(keys(&first[0]["result"]), ["age", "collected_at", "error", "value"]);
    assert_eq!(keys(&first[0]["description"]), ["display_name", "interval", "key", "script", "timeout"]);

    // The token also works as the cookie and as the query parameter.
    let mut by_cookie = get(server.addr, &path(agent.id), &[("Cookie", &format!("a=b; coder_session_token={token}"))])
        .await
        .into_events();
    assert_eq!(by_cookie.data().await.len(), 2);
    let mut by_query =
        get(server.addr, &format!("{}?coder_session_token={token}", path(agent.id)), &[]).await.into_events();
    assert_eq!(by_query.data().await.len(), 2);

    let client = agent_client(&server, &agent).await;
    let neighbour = agent_client(&server, &other).await;
    // Another agent's update is announced too, but is not this watcher's business: no read, no event.
    report(&neighbour, "cpu", "1%").await;
    store.flush().await;
    let reads_before = owner_reads(&store);
    report(&client, "cpu", "42%").await;
    store.flush().await;
    for watcher in [&mut events, &mut by_cookie, &mut by_query] {
        let update = watcher.data().await;
        assert_eq!(value_of(&update, "cpu"), "42%");
        assert_eq!(value_of(&update, "mem"), "");
        let cpu = update.iter().find(|m| m["description"]["key"] == "cpu").unwrap();
        assert_ne!(cpu["result"]["collected_at"], "0001-01-01T00:00:00Z");
        assert!(cpu["result"]["age"].as_i64().unwrap() < 60, "{cpu}");
    }
    // One owner-checked read per watcher, for the one notification that named the agent.
    assert_eq!(owner_reads(&store) - reads_before, 3);

    report(&client, "mem", "1 GiB").await;
    store.flush().await;
    let update = events.data().await;
    assert_eq!((value_of(&update, "cpu"), value_of(&update, "mem")), ("42%".into(), "1 GiB".into()));

    // Shutdown ends the stream.
    server.state.shutdown_token().cancel();
    loop {
        match events.event().await {
            None => break,
            Some((kind, data)) => assert!(kind == "ping" || kind == "data", "{kind}: {data:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refusals_are_coderd_shaped() {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, "alice").await;
    let theirs = agent_with_rows(&store, "bob").await;
    let token = owner_token(&store, "alice").await;
    let server = start(store.clone(), ServeConfig::default()).await;

    // No token: 401 with coderd's texts.
    let reply = get(server.addr, &path(agent.id), &[]).await;
    assert_eq!(reply.status, 401);
    let body = reply.json().await;
    assert_eq!(body["message"], SIGNED_OUT);
    assert_eq!(body["detail"], r#"Cookie "coder_session_token" or query parameter must be provided."#);

    // Unknown, malformed, expired tokens, and an agent's token: 401.
    let (key_id, _) = token.split_once('-').unwrap();
    let owner = store.admin().user_id("alice").await.unwrap().unwrap();
    let expired = store.admin().create_api_key(owner, Duration::ZERO).await.unwrap();
    let agent_token = agent.auth_token.to_string();
    for bad in [format!("{key_id}-{}", "x".repeat(22)), "nope".into(), expired, agent_token] {
        let reply = get(server.addr, &path(agent.id), &[("Coder-Session-Token", &bad)]).await;
        assert_eq!(reply.status, 401, "{bad}");
        assert_eq!(reply.json().await["message"], SIGNED_OUT);
    }

    // Someone else's agent and an unknown agent are both "not found".
    for id in [theirs.id, Uuid::new_v4()] {
        let reply = get(server.addr, &path(id), &[("Coder-Session-Token", &token)]).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json().await["message"], RESOURCE_NOT_FOUND);
    }

    // Not a UUID: 400.
    let reply =
        get(server.addr, "/api/v2/workspaceagents/not-a-uuid/watch-metadata", &[("Coder-Session-Token", &token)]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json().await["message"], r#"Invalid UUID "not-a-uuid"."#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_update_on_replica_a_reaches_a_watcher_on_replica_b() {
    let url = fresh_pg_url().await;
    let store_a = Store::open(&url, StoreOptions::default()).await.unwrap();
    let store_b = Store::open(&url, StoreOptions::default()).await.unwrap();
    let agent = agent_with_rows(&store_a, "replicated").await;
    let token = owner_token(&store_a, "replicated").await;
    let replica_a = start(store_a.clone(), ServeConfig::default()).await;
    let replica_b = start(store_b.clone(), ServeConfig::default()).await;

    // The watcher is on B; B's refusals hold too.
    let mut events = get(replica_b.addr, &path(agent.id), &[("Coder-Session-Token", &token)]).await.into_events();
    assert_eq!(value_of(&events.data().await, "cpu"), "");
    let reply = get(replica_b.addr, &path(Uuid::new_v4()), &[("Coder-Session-Token", &token)]).await;
    assert_eq!(reply.status, 404);

    // The agent is on A; A's batcher writes and NOTIFYs, B's LISTEN connection hears it and B re-reads.
    let client = agent_client(&replica_a, &agent).await;
    report(&client, "cpu", "77%").await;
    let b_reads = owner_reads(&store_b);
    store_a.flush().await;
    let update = events.data().await;
    assert_eq!(value_of(&update, "cpu"), "77%");
    assert_eq!(store_a.queries().get("GetWorkspaceAgentMetadataForOwner"), 0, "replica A served no watcher");
    assert_eq!(owner_reads(&store_b) - b_reads, 1);

    report(&client, "mem", "3 GiB").await;
    store_a.flush().await;
    let update = events.data().await;
    assert_eq!((value_of(&update, "cpu"), value_of(&update, "mem")), ("77%".into(), "3 GiB".into()));

    replica_b.state.shutdown_token().cancel();
    while let Some((kind, _)) = events.event().await {
        assert!(kind == "ping" || kind == "data", "{kind}");
    }
    replica_a.state.shutdown().await;
    drop(client);
    store_a.close().await;
    store_b.close().await;
}
