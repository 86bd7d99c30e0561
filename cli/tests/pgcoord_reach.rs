//! The data plane across coordinators of one Coder deployment: the real `coder agent` (Coder's own slim build,
//! `scripts/build-coder.sh agent`) connects to `agentwire serve --coder-db … --coder-coordination postgres` on a
//! database made by Coder's migrations and fixtures, and a client coordinated by Coder's own PGCoordinator in another
//! process (`interop pgcoord --url`, tests/go/README.md) reaches it: the agent's node comes to the client through
//! Coder's tables, the client's DERP map is the one agentwire gives the agent's clients (its embedded relay), and
//! the agent answers a ping and `echo NONCE` over its SSH server. Once with a direct path between them, once with
//! direct connections blocked, through agentwire's relay. Then agentwire is killed with SIGKILL, so that nothing of
//! it writes another row, and PGCoordinator tells each client the agent is LOST once its missed heartbeats are up
//! (within a bound made of PGCoordinator's own timeout, read from Coder's package through the client's ready line).
//! Then agentwire comes back on the same address and database, the agent reconnects by its own backoff, and each
//! client, still running on the same Conn, is given the agent's node again and makes a second round trip.
//!
//! Needs PostgreSQL: run under `scripts/with-postgres.sh`. A `coder agent` or Go driver that cannot be built fails
//! the test; it never skips.

mod beside;

#[path = "../../tests/common/coderdb.rs"]
mod coderdb;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use agentwire::derp::region::{DEFAULT_REGION_ID, DISABLE_STUN};
use agentwire::tailnet::pgcoord;
use beside::{build_coder, free_port, spawn, until_http_ok, until_metric, Logs, STEP};

const BIN: &str = env!("CARGO_BIN_EXE_agentwire");
/// The peer updates of a node exchange with the agent: its nodes, and its acknowledgements of the client's (the real
/// agent sends one for each node it is given).
const EXCHANGE: [&str; 2] = ["NODE", "READY_FOR_HANDSHAKE"];
/// How many of PGCoordinator's heartbeat timeouts a client may wait for LOST after the kill: one is the expiry
/// itself, counted from the last heartbeat it heard; the rest is slack for a loaded machine, not a claim on speed.
const LOST_WITHIN_TIMEOUTS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgcoordinator_client_reaches_the_real_agent_before_and_after_agentwire_dies() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut logs = Logs::new(dir);
    let coder = build_coder("agent");
    let interop = coderdb::binary();
    let db = coderdb::fresh_coder_db().await;
    let agent_id = seed_str(&db.seed, &["agent", "id"]);
    let agent_token = seed_str(&db.seed, &["agent", "token"]);
    let user_token = seed_str(&db.seed, &["owner", "api_token"]);

    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let url = format!("http://{addr}");
    let mut agentwire = serve("agentwire", &db.url, addr, &mut logs);
    until_http_ok(&mut agentwire, addr, "/healthz", STEP).await;

    let agent = start_agent(&coder, dir, &url, &agent_token, &mut logs);
    until_metric(addr, "agentwire_sessions_active", |n| n >= 1.0).await;

    let mut clients = Vec::new();
    for relay_only in [false, true] {
        let mut client = PgcoordClient::spawn(&interop, &db.url, &agent_id, &url, &user_token, relay_only, &mut logs);
        client.ready().await;
        assert_pgcoordinators_timing(&client.ready);
        // The map is agentwire's: its embedded relay's region alone (STUN is off).
        assert_eq!(client.ready["derp_regions"], json!([DEFAULT_REGION_ID]), "{}", client.ready);
        assert_eq!(client.ready["block_endpoints"], relay_only, "{}", client.ready);
        let lines = client.reach().await;
        let what = format!("relay only: {relay_only}, lines: {lines:#?}");
        assert_steps_passed(&lines, relay_only);
        // The agent's node came from PGCoordinator, which has it from no one but agentwire, and so did the agent's
        // acknowledgement of the client's node, which reached the agent the other way (PGCoordinator forwards an
        // acknowledgement at once but sends nodes after a query: either may come first). Nothing else came.
        let mut updates: Vec<Value> = lines.iter().filter(|l| l.get("kind").is_some()).cloned().collect();
        assert!(updates.iter().any(|u| u["kind"] == "NODE"), "{what}");
        if !updates.iter().any(|u| u["kind"] == "READY_FOR_HANDSHAKE") {
            // tailnet handshakes without it after a timeout: then it may come later, but it must come.
            updates.push(client.until(|l| l.get("kind").is_some_and(|k| k != "NODE") || l.get("end").is_some()).await);
        }
        let exchange = |u: &Value| u["id"] == agent_id && u["kind"].as_str().is_some_and(|k| EXCHANGE.contains(&k));
        assert!(updates.iter().all(exchange), "{updates:#?}, {what}");
        clients.push(client);
    }

    // agentwire dies: its heartbeats stop, and each PGCoordinator says LOST once its missed heartbeats are up. Only
    // the node exchange's updates, still in flight, may come first.
    let killed = Instant::now();
    agentwire.child.kill().await.expect("SIGKILL agentwire");
    let lost_within = heartbeat_timeout(&clients[0].ready) * LOST_WITHIN_TIMEOUTS;
    for client in &mut clients {
        let exchange = |l: &Value| l.get("kind").and_then(Value::as_str).is_some_and(|k| EXCHANGE.contains(&k));
        let update = client.until(|l| !exchange(l) && (l.get("kind").is_some() || l.get("end").is_some())).await;
        assert_eq!((&update["id"], &update["kind"]), (&json!(agent_id), &json!("LOST")), "{update}");
        let waited = killed.elapsed();
        assert!(waited <= lost_within, "LOST after {waited:?}, past {lost_within:?}: {update}");
    }

    // agentwire comes back on the same address and database, a new coordinator with nothing of the dead one's: the
    // agent reconnects by its own backoff, each client (still on its Conn, its tunnel still in PGCoordinator's
    // table) is given the agent's node again, and a second round trip goes through, direct and relayed as before.
    let mut agentwire = serve("agentwire-again", &db.url, addr, &mut logs);
    until_http_ok(&mut agentwire, addr, "/healthz", STEP).await;
    until_metric(addr, "agentwire_sessions_active", |n| n >= 1.0).await;
    for client in &mut clients {
        let found = client.until(|l| l["id"] == agent_id.as_str() && l["kind"] == "NODE").await;
        assert_eq!(found["reason"], "found", "the agent lost before: {found}");
        client.command("reach").await;
        let lines = client.reach().await;
        assert_steps_passed(&lines, client.ready["block_endpoints"] == true);
    }
    for client in clients {
        client.close().await;
    }
    drop(agent);
    drop(agentwire);
    logs.passed();
}

/// `agentwire serve` on the Coder database at `addr`, coordinating through PGCoordinator's protocol; its output in
/// the logs under `name`.
fn serve(name: &str, db: &str, addr: SocketAddr, logs: &mut Logs) -> beside::Server {
    let listen = addr.to_string();
    let args = [
        "serve",
        "--coder-db",
        db,
        "--coder-coordination",
        "postgres",
        "--listen",
        &listen,
        // coderd's default STUN servers are a third party this test never needs: peers on one machine find each
        // other on the addresses they share, and offline each netcheck would wait out their timeout.
        "--derp-server-stun-addresses",
        DISABLE_STUN,
    ];
    spawn(name, Command::new(BIN).args(args), logs)
}

/// A round trip's steps all passed, the ping direct, or through agentwire's relay when direct paths are blocked.
fn assert_steps_passed(lines: &[Value], relay_only: bool) {
    let what = format!("relay only: {relay_only}, lines: {lines:#?}");
    let step = |name: &str| lines.iter().find(|l| l["step"] == name).cloned().unwrap_or_default();
    for name in ["reachable", "ping", "ssh"] {
        assert_eq!(step(name)["ok"], true, "step {name}: {what}");
    }
    let ping = step("ping");
    if relay_only {
        assert_eq!(ping["p2p"], false, "{what}");
        assert_eq!(ping["derp_region_id"], DEFAULT_REGION_ID, "through agentwire's relay: {what}");
    } else {
        assert_eq!(ping["p2p"], true, "{what}");
    }
}

/// PGCoordinator's heartbeat timeout (`MissedHeartbeats` × `HeartbeatPeriod`), as Coder's package has it in the
/// ready line.
fn heartbeat_timeout(ready: &Value) -> Duration {
    let period = ready["heartbeat_period_ms"].as_u64().unwrap_or_else(|| panic!("no heartbeat period: {ready}"));
    let missed = ready["missed_heartbeats"].as_u64().unwrap_or_else(|| panic!("no missed heartbeats: {ready}"));
    Duration::from_millis(period * missed)
}

/// agentwire's copy of PGCoordinator's timing is the package's.
fn assert_pgcoordinators_timing(ready: &Value) {
    assert_eq!(heartbeat_timeout(ready), pgcoord::HEARTBEAT_TIMEOUT, "{ready}");
    assert_eq!(ready["heartbeat_period_ms"].as_u64(), Some(pgcoord::HEARTBEAT_PERIOD.as_millis() as u64), "{ready}");
}

fn seed_str(seed: &Value, path: &[&str]) -> String {
    let value = path.iter().fold(seed, |v, k| &v[*k]);
    value.as_str().unwrap_or_else(|| panic!("seed has no {path:?}: {seed}")).to_owned()
}

/// The real agent (`coder_agent_command`), its output in the logs; killed when dropped.
fn start_agent(coder: &Path, dir: &Path, url: &str, token: &str, logs: &mut Logs) -> beside::Server {
    let mut cmd = beside::coder_agent_command(coder, dir, &dir.join("agent-tmp"), url, token);
    spawn("coder agent", &mut cmd, logs)
}

/// `interop pgcoord --as client --url`: Coder's PGCoordinator on the database, and a tailnet client coordinating
/// through it to the agent. Its stdout lines are read here, its stderr goes to the logs; killed when dropped.
struct PgcoordClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its first line: `{"ready":true,…,"derp_regions":[…]}`.
    ready: Value,
    /// Every line read so far, for failure messages.
    seen: Vec<Value>,
}

impl PgcoordClient {
    fn spawn(
        interop: &Path,
        db: &str,
        agent_id: &str,
        url: &str,
        token: &str,
        relay_only: bool,
        logs: &mut Logs,
    ) -> PgcoordClient {
        let name = if relay_only { "pgcoord-relayed" } else { "pgcoord-direct" };
        let stderr = logs.dir.join(format!("{name}.err"));
        let mut args = vec!["pgcoord", "--postgres-url", db, "--as", "client", "--agent-id", agent_id];
        args.extend(["--url", url, "--token", token]);
        if relay_only {
            args.push("--disable-direct");
        }
        let mut child = Command::new(interop)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start interop pgcoord");
        logs.add(&format!("{name}'s stderr"), stderr);
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        PgcoordClient { child, stdin, lines, ready: Value::Null, seen: Vec::new() }
    }

    /// The next line, within `STEP`; the client's exit, or an error from its coordinator, fails the test.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("interop pgcoord said nothing more in {STEP:?}; so far {:#?}", self.seen))
            .expect("read interop pgcoord")
            .unwrap_or_else(|| panic!("interop pgcoord exited; it said {:#?}", self.seen));
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("interop pgcoord said {line:?}"));
        self.seen.push(value.clone());
        // A step's error is the step's to judge; any other is PGCoordinator's or the client's own end.
        assert!(value.get("error").is_none() || value.get("step").is_some(), "interop pgcoord: {:#?}", self.seen);
        value
    }

    async fn until(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self.next().await;
            if matches(&line) {
                return line;
            }
        }
    }

    /// Its first line must be the ready line.
    async fn ready(&mut self) {
        self.ready = self.next().await;
        assert_eq!(self.ready["ready"], true, "{}", self.ready);
    }

    /// One command on its stdin.
    async fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("interop pgcoord's stdin is open");
        stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write to interop pgcoord");
        stdin.flush().await.expect("flush to interop pgcoord");
    }

    /// The lines up to its last step (`ssh`) or its first failed one.
    async fn reach(&mut self) -> Vec<Value> {
        let mut lines = Vec::new();
        loop {
            let line = self.next().await;
            let done = line["step"] == "ssh" || line["ok"] == false;
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Ends its stdin: it disconnects from PGCoordinator gracefully, closes it and exits 0.
    async fn close(mut self) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(STEP, self.child.wait()).await.expect("interop pgcoord exits").unwrap();
        assert!(status.success(), "{status}");
    }
}
