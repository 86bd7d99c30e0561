//! agentwire's coordinator as one more coordinator of a Coder HA deployment (`CoderCoordination::Postgres`), refereed
//! by Coder's own PGCoordinator (`interop pgcoord`: enterprise/tailnet's `NewPGCoord` with coderd's pubsub and sqlc
//! store, on the same database): a client coordinated by PGCoordinator and an agent coordinated by agentwire find
//! each other, and the other way round; a graceful leave is DISCONNECTED; an agentwire process killed hard is LOST
//! for PGCoordinator's client after PGCoordinator's missed heartbeats, and found again when it comes back; two
//! agentwire replicas coordinate through the same tables; a coordinator whose own heartbeats fail ends its peers
//! and turns new ones away, as PGCoordinator does when unhealthy, until they work again; a change made while
//! agentwire's LISTEN connection is down still reaches its peer once it is back. The nodes here are fake; the data plane, the real `coder
//! agent` reached over SSH by a client of PGCoordinator, is `cli/tests/pgcoord_reach.rs`.
//!
//! PGCoordinator's timing comes from Coder's package through the referee's first line, never from a copy here.

// Not `mod common;`: coderdb.rs includes common/pg.rs itself, and one file loaded as two modules is refused.
#[path = "common/coderdb.rs"]
mod coderdb;
#[path = "common/server.rs"]
#[allow(dead_code)]
mod server;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use agentwire::server::ServeConfig;
use agentwire::tailnet::{pgcoord, CoderCoordination, TailnetConfig};
use agentwire_store::{Store, StoreOptions};
use serde_json::Value;
use server::{start, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Long enough for PGCoordinator's missed heartbeats (3 × 2 s) and a process start; what is asserted is the
/// updates' count and kind, never how long they took.
const WAIT: Duration = Duration::from_secs(30);
/// Where the child server's database comes from (`child_server`).
const CHILD_ENV: &str = "AGENTWIRE_TEST_PGCOORD_CHILD_DB";

fn config() -> ServeConfig {
    ServeConfig {
        tailnet: TailnetConfig { coder_coordination: CoderCoordination::Postgres, ..TailnetConfig::default() },
        ..ServeConfig::default()
    }
}

/// A Go peer that prints JSON lines and takes commands on stdin: `interop coordinate` (through agentwire) or
/// `interop pgcoord` (through Coder's PGCoordinator).
struct GoPeer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Its first line: `{"ready":true,…}`.
    ready: Value,
}

impl GoPeer {
    async fn spawn(args: &[&str]) -> GoPeer {
        let mut peer = GoPeer::start(args);
        peer.ready = peer.expect(|l| l["ready"] == true).await;
        peer
    }

    /// Started, its ready line not awaited.
    fn start(args: &[&str]) -> GoPeer {
        let mut child = tokio::process::Command::new(coderdb::binary())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the Go peer");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        GoPeer { child, stdin, lines, ready: Value::Null }
    }

    fn agentwire_args(url: &str, token: &str, role: &str, agent_id: &str, node: &str) -> Vec<String> {
        ["coordinate", "--url", url, "--token", token, "--as", role, "--agent-id", agent_id, "--node-id", node]
            .map(str::to_owned)
            .into()
    }

    /// `interop coordinate` through agentwire.
    async fn agentwire(url: &str, token: &str, role: &str, agent_id: &str, node: i64) -> GoPeer {
        let args = GoPeer::agentwire_args(url, token, role, agent_id, &node.to_string());
        GoPeer::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
    }

    /// `interop pgcoord`: Coder's PGCoordinator on `db`, with one peer.
    async fn pgcoord(db: &str, role: &str, agent_id: &str, node: i64) -> GoPeer {
        let node = node.to_string();
        GoPeer::spawn(&["pgcoord", "--postgres-url", db, "--as", role, "--agent-id", agent_id, "--node-id", &node])
            .await
    }

    async fn command(&mut self, line: &str) {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write to the Go peer");
        self.stdin.flush().await.expect("flush to the Go peer");
    }

    /// Reads lines until one matches; fails on the peer's exit or after `WAIT`.
    async fn expect(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                let line = self.lines.next_line().await.expect("read the Go peer").expect("the Go peer exited");
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("the Go peer said {line:?}"));
                if matches(&value) {
                    return value;
                }
            }
        })
        .await
        .expect("the expected line in time")
    }

    /// The next peer update (or the stream's end, or an error), skipping command acknowledgements.
    async fn update(&mut self) -> Value {
        self.expect(|l| l.get("kind").is_some() || l.get("end").is_some() || l.get("error").is_some()).await
    }

    /// The next update, which must be `kind` about `id` (with node `node`, when given).
    async fn expect_update(&mut self, id: &str, kind: &str, node: Option<i64>) -> Value {
        let u = self.update().await;
        assert_eq!((u["id"].as_str(), u["kind"].as_str()), (Some(id), Some(kind)), "{u}");
        if let Some(node) = node {
            assert_eq!(u["node"].as_i64(), Some(node), "{u}");
        }
        u
    }

    /// SIGKILL: a coderd replica crashing, for a pgcoord referee.
    async fn kill(mut self) {
        self.child.kill().await.expect("kill the Go peer");
    }

    /// Ends its input (a pgcoord referee closes its coordinator) and waits for it.
    async fn close(mut self) {
        drop(self.stdin);
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.expect("the Go peer exited").expect("wait");
        assert!(status.success(), "{status}");
    }
}

/// agentwire serving on the Coder database as a child process (this test binary's `child_server`), so that it can
/// be killed as a crash kills it: no shutdown path runs, its rows stay as they were.
struct ChildServer {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn start(db: &str) -> ChildServer {
        let mut child = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args(["child_server", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, db)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the child server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test child_server ... " on the same line first.
                if let Some(i) = line.find("LISTENING ") {
                    let _ = tx.send(line[i + "LISTENING ".len()..].trim().to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("the child server listens").parse().expect("an address");
        ChildServer { child, addr }
    }

    fn rpc_url(&self) -> String {
        format!("ws://{}/api/v2/workspaceagents/me/rpc?version=2.0", self.addr)
    }

    /// SIGKILL.
    fn kill(mut self) {
        self.child.kill().expect("kill the child server");
        let status = self.child.wait().expect("wait for the child server");
        assert!(!status.success());
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Not a test on its own: the server `ChildServer` runs, when `CHILD_ENV` names a database.
#[test]
fn child_server() {
    let Ok(db) = std::env::var(CHILD_ENV) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = Store::open_coder(&db, StoreOptions::default()).await.expect("open the Coder database");
        let server = start(store, config()).await;
        println!("LISTENING {}", server.addr);
        std::future::pending::<()>().await;
    });
}

fn seed_str<'a>(seed: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(seed, |v, k| &v[*k]).as_str().unwrap_or_else(|| panic!("seed has no {path:?}: {seed}"))
}

/// PGCoordinator's constants, as its package has them, are agentwire's.
fn assert_pgcoordinators_timing(referee: &GoPeer) {
    let r = &referee.ready;
    assert_eq!(r["heartbeat_period_ms"].as_u64(), Some(pgcoord::HEARTBEAT_PERIOD.as_millis() as u64), "{r}");
    assert_eq!(r["missed_heartbeats"].as_u64(), Some(u64::from(pgcoord::MISSED_HEARTBEATS)), "{r}");
    assert_eq!(r["heartbeat_channel"], agentwire_store::tailnet::HEARTBEAT_CHANNEL, "{r}");
    assert_eq!(r["close_err_unhealthy"], pgcoord::CLOSE_ERR_UNHEALTHY, "{r}");
}

/// A client on Coder's PGCoordinator and an agent on agentwire: nodes both ways, ready for handshake, a graceful
/// leave; then agentwire is killed and the client sees its agent LOST, once, and found again when agentwire and
/// the agent come back; a graceful disconnect of the client reaches the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgcoordinator_client_and_an_agentwire_agent_find_each_other() {
    let db = coderdb::fresh_coder_db().await;
    let agent_id = seed_str(&db.seed, &["agent", "id"]).to_owned();
    let token = seed_str(&db.seed, &["agent", "token"]).to_owned();
    let server = ChildServer::start(&db.url);

    let mut agent = GoPeer::agentwire(&server.rpc_url(), &token, "agent", &agent_id, 1).await;
    let mut client = GoPeer::pgcoord(&db.url, "client", &agent_id, 7).await;
    assert_pgcoordinators_timing(&client);
    let client_id = client.ready["peer_id"].as_str().expect("peer_id").to_owned();

    client.expect_update(&agent_id, "NODE", Some(1)).await;
    agent.expect_update(&client_id, "NODE", Some(7)).await;
    agent.command("node 2").await;
    client.expect_update(&agent_id, "NODE", Some(2)).await;
    client.command("node 8").await;
    agent.expect_update(&client_id, "NODE", Some(8)).await;
    agent.command(&format!("ready {client_id}")).await;
    client.expect_update(&agent_id, "READY_FOR_HANDSHAKE", None).await;

    // The agent leaves gracefully: DISCONNECTED. It comes back with a new node.
    agent.command("disconnect").await;
    agent.expect(|l| l.get("end").is_some()).await;
    client.expect_update(&agent_id, "DISCONNECTED", None).await;
    let mut agent = GoPeer::agentwire(&server.rpc_url(), &token, "agent", &agent_id, 3).await;
    agent.expect_update(&client_id, "NODE", Some(8)).await;
    client.expect_update(&agent_id, "NODE", Some(3)).await;

    // agentwire dies: its heartbeats stop, and PGCoordinator says LOST once its missed heartbeats are up. Nothing
    // else comes first.
    server.kill();
    agent.expect(|l| l.get("end").is_some()).await;
    let lost = client.update().await;
    assert_eq!((lost["id"].as_str(), lost["kind"].as_str()), (Some(agent_id.as_str()), Some("LOST")), "{lost}");

    // agentwire comes back (a new coordinator), and so does the agent: found.
    let server = ChildServer::start(&db.url);
    let mut agent = GoPeer::agentwire(&server.rpc_url(), &token, "agent", &agent_id, 4).await;
    agent.expect_update(&client_id, "NODE", Some(8)).await;
    let found = client.expect_update(&agent_id, "NODE", Some(4)).await;
    assert_eq!(found["reason"], "found", "{found}");

    client_leaves_gracefully(client, agent, &client_id).await;
}

/// The client leaves gracefully, the agent is told DISCONNECTED, then the agent leaves too.
async fn client_leaves_gracefully(mut client: GoPeer, mut agent: GoPeer, client_id: &str) {
    client.command("disconnect").await;
    client.expect(|l| l["end"] == "closed").await;
    agent.expect_update(client_id, "DISCONNECTED", None).await;
    client.close().await;
    agent.command("disconnect").await;
    agent.expect(|l| l.get("end").is_some()).await;
}

fn client_url(server: &TestServer, agent_id: &str) -> String {
    format!("ws://{}/api/v2/workspaceagents/{agent_id}/coordinate?version=2.0", server.addr)
}

/// The other way round: an agent on Coder's PGCoordinator and a client on agentwire, through the death of Coder's
/// coordinator, a graceful leave and a lost client. Then two agentwire replicas in Postgres mode: the agent on one,
/// a client on the other, through Coder's tables alone, and the agent's replica shutting down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agentwire_client_reaches_a_pgcoordinator_agent_and_replicas_coordinate_through_coders_tables() {
    let db = coderdb::fresh_coder_db().await;
    let agent_id = seed_str(&db.seed, &["agent", "id"]).to_owned();
    let agent_token = seed_str(&db.seed, &["agent", "token"]).to_owned();
    let user_token = seed_str(&db.seed, &["owner", "api_token"]).to_owned();
    let replica_a = start(Store::open_coder(&db.url, StoreOptions::default()).await.expect("store"), config()).await;
    let replica_b = start(Store::open_coder(&db.url, StoreOptions::default()).await.expect("store"), config()).await;

    let mut agent = GoPeer::pgcoord(&db.url, "agent", &agent_id, 1).await;
    let mut client = GoPeer::agentwire(&client_url(&replica_a, &agent_id), &user_token, "client", &agent_id, 7).await;
    client.expect_update(&agent_id, "NODE", Some(1)).await;
    let u = agent.update().await;
    assert_eq!((u["kind"].as_str(), u["node"].as_i64()), (Some("NODE"), Some(7)), "{u}");
    let client_id = u["id"].as_str().expect("the client's id").to_owned();
    agent.command("node 2").await;
    client.expect_update(&agent_id, "NODE", Some(2)).await;
    agent.command(&format!("ready {client_id}")).await;
    client.expect_update(&agent_id, "READY_FOR_HANDSHAKE", None).await;

    // The agent leaves gracefully, and comes back: DISCONNECTED, then its node.
    agent.command("disconnect").await;
    agent.expect(|l| l["end"] == "closed").await;
    client.expect_update(&agent_id, "DISCONNECTED", None).await;
    agent.command("reconnect 3").await;
    client.expect_update(&agent_id, "NODE", Some(3)).await;
    agent.expect_update(&client_id, "NODE", Some(7)).await;

    // Coder's coordinator dies with its agent: agentwire hears no more heartbeats and, once PGCoordinator's missed
    // heartbeats are up, says LOST, and nothing else first. A new coordinator with the agent: found.
    agent.kill().await;
    client.expect_update(&agent_id, "LOST", None).await;
    let mut agent = GoPeer::pgcoord(&db.url, "agent", &agent_id, 4).await;
    client.expect_update(&agent_id, "NODE", Some(4)).await;
    agent.expect_update(&client_id, "NODE", Some(7)).await;
    // While the dead coordinator's row of the agent stays (until the day-old cleanup), it is the best row left when
    // the agent leaves gracefully: LOST, as PGCoordinator's own clients are told.
    agent.command("disconnect").await;
    agent.expect(|l| l["end"] == "closed").await;
    client.expect_update(&agent_id, "LOST", None).await;
    agent.command("reconnect 5").await;
    client.expect_update(&agent_id, "NODE", Some(5)).await;
    agent.expect_update(&client_id, "NODE", Some(7)).await;
    // The client vanishes without a disconnect: LOST for PGCoordinator's agent.
    client.command("quit").await;
    agent.expect_update(&client_id, "LOST", None).await;
    agent.command("disconnect").await;
    agent.expect(|l| l["end"] == "closed").await;
    agent.close().await;

    // The agent on replica A, a client on replica B: the only way between them is Coder's tables.
    let agent_url = format!("ws://{}/api/v2/workspaceagents/me/rpc?version=2.0", replica_a.addr);
    let mut agent = GoPeer::agentwire(&agent_url, &agent_token, "agent", &agent_id, 3).await;
    let mut client = GoPeer::agentwire(&client_url(&replica_b, &agent_id), &user_token, "client", &agent_id, 9).await;
    client.expect_update(&agent_id, "NODE", Some(3)).await;
    let u = agent.update().await;
    assert_eq!((u["kind"].as_str(), u["node"].as_i64()), (Some("NODE"), Some(9)), "{u}");
    let client_id = u["id"].as_str().expect("the client's id").to_owned();
    agent.command(&format!("ready {client_id}")).await;
    client.expect_update(&agent_id, "READY_FOR_HANDSHAKE", None).await;
    client.command("disconnect").await;
    client.expect(|l| l.get("end").is_some()).await;
    agent.expect_update(&client_id, "DISCONNECTED", None).await;

    // Replica A shuts down with a PGCoordinator client tunnelled to its agent: the agent is lost for it, written
    // by A on its way out rather than left to the missed heartbeats.
    let mut client = GoPeer::pgcoord(&db.url, "client", &agent_id, 5).await;
    client.expect_update(&agent_id, "NODE", Some(3)).await;
    agent.expect(|l| l["kind"] == "NODE" && l["node"] == 5).await;
    replica_a.state.shutdown().await;
    agent.expect(|l| l.get("end").is_some()).await;
    client.expect_update(&agent_id, "LOST", None).await;
    client.close().await;

    // Every statement was one of PGCoordinator's.
    let q = replica_a.store.queries().snapshot();
    for name in ["UpsertTailnetCoordinator", "UpsertTailnetPeer", "GetTailnetPeers", "GetAllTailnetPeers"] {
        assert!(q.get(name) > 0, "{name} never ran: {:?}", q.by_name);
    }
}

/// PGCoordinator's unhealthy coordinator (`unhealthyCloseAll`): agentwire's own heartbeats fail (a trigger refuses
/// its row's upserts, and counts them in a sequence, which no rollback undoes), and after PGCoordinator's count of
/// failures its agent is told PGCoordinator's `CloseErrUnhealthy` and its stream ends; PGCoordinator's client sees
/// the agent LOST; a new connection is turned away with the same words. Once a heartbeat goes through again, the
/// agent is taken back and found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_heartbeats_fail_ends_its_peers_until_they_work_again() {
    use sqlx::Connection;

    let db = coderdb::fresh_coder_db().await;
    let agent_id = seed_str(&db.seed, &["agent", "id"]).to_owned();
    let token = seed_str(&db.seed, &["agent", "token"]).to_owned();
    let replica = start(Store::open_coder(&db.url, StoreOptions::default()).await.expect("store"), config()).await;
    let agent_url = format!("ws://{}/api/v2/workspaceagents/me/rpc?version=2.0", replica.addr);

    let mut agent = GoPeer::agentwire(&agent_url, &token, "agent", &agent_id, 1).await;
    let mut client = GoPeer::pgcoord(&db.url, "client", &agent_id, 7).await;
    assert_pgcoordinators_timing(&client);
    let unhealthy = client.ready["close_err_unhealthy"].as_str().expect("CloseErrUnhealthy").to_owned();
    let client_id = client.ready["peer_id"].as_str().expect("peer_id").to_owned();
    client.expect_update(&agent_id, "NODE", Some(1)).await;
    agent.expect_update(&client_id, "NODE", Some(7)).await;

    // agentwire's coordinator is the one whose row holds the agent; only its heartbeats are refused.
    let mut sql = sqlx::PgConnection::connect(&db.url).await.expect("connect to the Coder database");
    let me: String = sqlx::query_scalar("SELECT coordinator_id::text FROM tailnet_peers WHERE id = $1::uuid")
        .bind(&agent_id)
        .fetch_one(&mut sql)
        .await
        .expect("the agent's row");
    for statement in [
        "CREATE SEQUENCE refused_heartbeats".to_owned(),
        "CREATE FUNCTION refuse_heartbeat() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM nextval('refused_heartbeats'); RAISE EXCEPTION 'heartbeat refused by the test'; END $$"
            .to_owned(),
        format!(
            "CREATE TRIGGER refuse_heartbeat BEFORE INSERT OR UPDATE ON tailnet_coordinators FOR EACH ROW \
             WHEN (NEW.id = '{me}') EXECUTE FUNCTION refuse_heartbeat()"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut sql).await.expect("refuse agentwire's heartbeats");
    }

    // Unhealthy: the agent is told why, then its stream ends; not before PGCoordinator's count of failures.
    let told = agent.expect(|l| l.get("error").is_some() && l.get("end").is_none()).await;
    assert_eq!(told["error"], unhealthy.as_str(), "{told}");
    let refused: i64 = sqlx::query_scalar("SELECT last_value FROM refused_heartbeats")
        .fetch_one(&mut sql)
        .await
        .expect("the refused heartbeats");
    assert!(refused >= i64::from(pgcoord::UNHEALTHY_AFTER_FAILED_HEARTBEATS), "closed after {refused} failures");
    let end = agent.expect(|l| l.get("end").is_some()).await;
    assert!(end["error"].as_str().is_some_and(|e| e.contains(&unhealthy)), "{end}");
    client.expect_update(&agent_id, "LOST", None).await;

    // Still unhealthy: a new connection is turned away with the same words.
    let args = GoPeer::agentwire_args(&agent_url, &token, "agent", &agent_id, "2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut turned_away = GoPeer::start(&args);
    let end = turned_away.expect(|l| l.get("end").is_some()).await;
    assert!(end["error"].as_str().is_some_and(|e| e.contains(&unhealthy)), "{end}");
    assert_eq!(replica.state.tailnet().coordinator().peer_counts().0, 0);

    // Heartbeats go through again: the agent, trying again as its backoff would, is taken back, and found.
    sqlx::query("DROP TRIGGER refuse_heartbeat ON tailnet_coordinators").execute(&mut sql).await.expect("drop");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut agent = loop {
        let mut agent = GoPeer::start(&args);
        let first = agent.expect(|l| l.get("kind").is_some() || l.get("end").is_some()).await;
        if first.get("kind").is_some() {
            assert_eq!((first["id"].as_str(), first["node"].as_i64()), (Some(client_id.as_str()), Some(7)), "{first}");
            break agent;
        }
        assert!(first["error"].as_str().is_some_and(|e| e.contains(&unhealthy)), "{first}");
        assert!(tokio::time::Instant::now() < deadline, "still turned away after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let found = client.expect_update(&agent_id, "NODE", Some(2)).await;
    assert_eq!(found["reason"], "found", "{found}");
    agent.command("disconnect").await;
    agent.expect(|l| l.get("end").is_some()).await;
    client.expect_update(&agent_id, "DISCONNECTED", None).await;
    client.close().await;
}

/// Notifications sent while agentwire's LISTEN connection is down are lost (PostgreSQL keeps none for a listener
/// that is not there); once it listens again, agentwire reads Coder's tables again, as PGCoordinator resyncs on
/// coderd's pubsub's `ErrDroppedMessages`, so a change made in the gap still reaches its peer. agentwire connects as
/// a role of its own, so that its LISTEN backend can be terminated and its reconnection held off (the role may not
/// log in) while PGCoordinator's client, as `postgres`, sends a new node. Every backend of the role goes, not only
/// the LISTEN one: the pool would hand the listener one of its idle connections at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_agentwires_listen_connection_is_down_still_reaches_its_peer() {
    use sqlx::Connection;

    let db = coderdb::fresh_coder_db().await;
    let agent_id = seed_str(&db.seed, &["agent", "id"]).to_owned();
    let token = seed_str(&db.seed, &["agent", "token"]).to_owned();
    let mut sql = sqlx::PgConnection::connect(&db.url).await.expect("connect to the Coder database");
    let role = format!("aw_listen_{}", uuid::Uuid::new_v4().simple());
    let role_url = db.url.replacen("://postgres@", &format!("://{role}@"), 1);
    assert_ne!(role_url, db.url, "the test cluster's URL names the postgres user");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN SUPERUSER")))
        .execute(&mut sql)
        .await
        .expect("create agentwire's role");
    let replica = start(Store::open_coder(&role_url, StoreOptions::default()).await.expect("store"), config()).await;
    let agent_url = format!("ws://{}/api/v2/workspaceagents/me/rpc?version=2.0", replica.addr);

    let mut agent = GoPeer::agentwire(&agent_url, &token, "agent", &agent_id, 1).await;
    let mut client = GoPeer::pgcoord(&db.url, "client", &agent_id, 7).await;
    let client_id = client.ready["peer_id"].as_str().expect("peer_id").to_owned();
    client.expect_update(&agent_id, "NODE", Some(1)).await;
    agent.expect_update(&client_id, "NODE", Some(7)).await;

    let backends = |what: &'static str| {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 {what}"
        )))
        .bind(role.clone())
    };
    const LISTENING: &str = "AND query LIKE 'LISTEN %'";
    assert!(backends(LISTENING).fetch_one(&mut sql).await.expect("backends") >= 1, "agentwire listens as {role}");
    let reconnects = replica.store.pubsub().reconnects();

    // The gap: agentwire's role may not log in, and every backend of it is gone (waited for, up to WAIT).
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE {role} NOLOGIN"))).execute(&mut sql).await.expect("nologin");
    let wait_ms = WAIT.as_millis() as i64;
    let terminated: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity WHERE usename = $1")
            .bind(&role)
            .bind(wait_ms)
            .fetch_all(&mut sql)
            .await
            .expect("terminate agentwire's backends");
    assert!(!terminated.is_empty() && terminated.iter().all(|t| *t), "{terminated:?}");

    // PGCoordinator's client sends a new node; its row is written, and its notification goes to no one of
    // agentwire's.
    let node = "SELECT node FROM tailnet_peers WHERE id = $1::uuid";
    let before: Vec<u8> = sqlx::query_scalar(node).bind(&client_id).fetch_one(&mut sql).await.expect("the row");
    client.command("node 8").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now: Vec<u8> = sqlx::query_scalar(node).bind(&client_id).fetch_one(&mut sql).await.expect("the row");
        if now != before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "PGCoordinator wrote no new node in {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // (The listener may have listened again for a moment on one of the pool's connections not yet terminated, and
    // counted it; by now there is none.)
    assert_eq!(backends(LISTENING).fetch_one(&mut sql).await.expect("backends"), 0, "no listener in the gap");

    // agentwire may log in again: it listens again, reads the tables again, and its agent gets the node.
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE {role} LOGIN"))).execute(&mut sql).await.expect("login");
    agent.expect_update(&client_id, "NODE", Some(8)).await;
    assert!(replica.store.pubsub().reconnects() > reconnects);

    // And the notifications flow again.
    client_leaves_gracefully(client, agent, &client_id).await;
}

/// The store's statements on Coder's tables: each row as PGCoordinator's queries read it back, each change
/// notified by Coder's triggers, several rows per statement and one transaction per flush, every statement counted
/// under Coder's query name; agentwire's own schema refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_tailnet_statements_are_pgcoordinators() {
    use agentwire_store::tailnet::{TailnetWrites, PEER_UPDATE_CHANNEL, TUNNEL_UPDATE_CHANNEL};
    use uuid::Uuid;

    let url = coderdb::migrated_db().await;
    let store = Store::open_coder(&url, StoreOptions::default()).await.expect("store");
    let mut peer_updates = store.pubsub().subscribe(PEER_UPDATE_CHANNEL).await.expect("subscribe");
    let mut tunnel_updates = store.pubsub().subscribe(TUNNEL_UPDATE_CHANNEL).await.expect("subscribe");
    let tailnet = store.coder_tailnet();
    let (me, agent, client, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    tailnet.heartbeat(me).await.expect("heartbeat");

    let before = store.queries().snapshot();
    let writes = TailnetWrites {
        upsert_peers: vec![(agent, vec![8, 1], false), (client, vec![8, 7], true), (gone, vec![8, 9], false)],
        upsert_tunnels: vec![(client, agent), (gone, agent)],
        ..TailnetWrites::default()
    };
    tailnet.write(me, &writes).await.expect("write");
    let q = store.queries().snapshot().since(&before);
    assert_eq!((q.get("UpsertTailnetPeer"), q.get("UpsertTailnetTunnel"), q.begins, q.commits), (1, 1, 1, 1), "{q:?}");

    let mut peers = tailnet.peers(&[agent, client, Uuid::new_v4()]).await.expect("peers");
    peers.sort_by_key(|p| p.node.clone());
    let got: Vec<_> = peers.iter().map(|p| (p.id, p.coordinator_id, p.node.clone(), p.lost)).collect();
    assert_eq!(got, vec![(agent, me, vec![8, 1], false), (client, me, vec![8, 7], true)]);
    let tunnels = tailnet.tunnels(&[(client, agent), (agent, client)]).await.expect("tunnels");
    assert_eq!(tunnels.len(), 1);
    assert_eq!((tunnels[0].src_id, tunnels[0].dst_id, tunnels[0].coordinator_id), (client, agent, me));
    let mut notified = Vec::new();
    for _ in 0..3 {
        let payload = tokio::time::timeout(WAIT, peer_updates.recv()).await.expect("notified").expect("open");
        notified.push(Uuid::parse_str(&payload).expect("a peer id"));
    }
    notified.sort();
    let mut want = vec![agent, client, gone];
    want.sort();
    assert_eq!(notified, want);
    let mut tunnel_payloads = Vec::new();
    for _ in 0..2 {
        tunnel_payloads.push(tokio::time::timeout(WAIT, tunnel_updates.recv()).await.expect("notified").expect("open"));
    }
    assert!(tunnel_payloads.contains(&format!("{client},{agent}")), "{tunnel_payloads:?}");

    // A graceful disconnect: the peer and all its tunnels, in one flush; one statement alone needs no transaction.
    let before = store.queries().snapshot();
    let writes = TailnetWrites { delete_all_tunnels: vec![gone], delete_peers: vec![gone], ..TailnetWrites::default() };
    tailnet.write(me, &writes).await.expect("write");
    tailnet
        .write(me, &TailnetWrites { delete_tunnels: vec![(client, agent)], ..TailnetWrites::default() })
        .await
        .expect("write");
    let q = store.queries().snapshot().since(&before);
    assert_eq!(
        (q.get("DeleteAllTailnetTunnels"), q.get("DeleteTailnetPeer"), q.get("DeleteTailnetTunnel"), q.begins),
        (1, 1, 1, 1),
        "{q:?}"
    );
    assert!(tailnet.peers(&[gone]).await.expect("peers").is_empty());
    assert!(tailnet.all_tunnels().await.expect("tunnels").is_empty());

    // Closing: every peer of the coordinator lost.
    tailnet.mark_lost(me).await.expect("mark lost");
    assert!(tailnet.all_peers().await.expect("peers").iter().all(|p| p.lost));
    let coordinators = tailnet.coordinators().await.expect("coordinators");
    assert!(
        coordinators.iter().any(|c| c.id == me && c.heartbeat_age < pgcoord::HEARTBEAT_TIMEOUT),
        "{coordinators:?}"
    );
    let before = store.queries().snapshot();
    tailnet.clean().await.expect("clean");
    let q = store.queries().snapshot().since(&before);
    for name in ["CleanTailnetCoordinators", "CleanTailnetLostPeers", "CleanTailnetTunnels"] {
        assert_eq!(q.get(name), 1, "{q:?}");
    }
    assert_eq!(tailnet.all_peers().await.expect("peers").len(), 2, "nothing is a day old");

    // agentwire's own schema has no such tables: refused, before any statement.
    let own = Store::open("sqlite::memory:", StoreOptions::default()).await.expect("store");
    let refused = own.coder_tailnet().heartbeat(me).await.expect_err("refused");
    assert!(matches!(refused, agentwire_store::StoreError::Invalid(_)), "{refused}");
    assert_eq!(own.queries().snapshot().total(), 0);
    assert!(pgcoord::check(&CoderCoordination::Postgres, own.schema()).is_err());
}
