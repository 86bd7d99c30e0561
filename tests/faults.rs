//! Faults under load (§4.4 items 32–34 and abrupt disconnects): what agents were told must match what the
//! database holds afterwards.
//!
//! * PostgreSQL stopped for a minute under load, then started again: sessions survive, every RPC is answered (a
//!   success or a dRPC error, none hangs), no acknowledged durable write is lost, every batched item is accounted
//!   for on `/metrics` (written, superseded or dropped, never vanished), and the server recovers without a restart.
//! * `kill -9` of the server mid-load, restarted on the same port and SQLite file: in the binary's package
//!   (`cli/tests/faults.rs`), which can run the `agentwire` binary.
//! * A TCP connection dropped under a live session (FIN or RST, no WebSocket close, no yamux GoAway): the
//!   disconnection is recorded and the agent's session slot is given back.
//!
//! The PostgreSQL test runs a private cluster it can stop (`common::pg_cluster`); `AGENTWIRE_FAULTS_PG_OUTAGE_SECS`
//! shortens or lengthens its outage (60 s by default). Waits are bounded; nothing asserts a latency except a hang
//! guard well above the pool's acquire timeout.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentwire::proto::agent::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire_store::{Store, StoreOptions, DEFAULT_ACQUIRE_TIMEOUT};
use agentwire_transport::client::CallError;
use agentwire_transport::testing::wait::{eventually, eventually_within, within, POLL};
use common::chaos::{dial, http_get, series, stats_marker, BatcherCounts, CutProxy, Progress};
use common::chaos::{AGENTS, PROGRESS_WAIT, ROUND_PAUSE};
use common::pg_cluster::PgCluster;
use common::server::{agent_with_rows, memory_store, start};
use prost_types::Timestamp;
use tokio_util::sync::CancellationToken;

/// How long PostgreSQL stays down (seconds); the minute by default.
const OUTAGE_ENV: &str = "AGENTWIRE_FAULTS_PG_OUTAGE_SECS";
const DEFAULT_OUTAGE: Duration = Duration::from_secs(60);

fn outage() -> Duration {
    std::env::var(OUTAGE_ENV)
        .ok()
        .map(|v| Duration::from_secs(v.parse().unwrap_or_else(|_| panic!("{OUTAGE_ENV}={v:?} is not a number"))))
        .unwrap_or(DEFAULT_OUTAGE)
}

/// A field written last-writer-wins: what the database holds must be the last acknowledged value or a value
/// attempted after it (a call answered with an error may still have committed; one answered with success must not
/// be lost).
#[derive(Debug, Default)]
struct LastWrite<T> {
    acked: Option<T>,
    failed_since: Vec<T>,
}

impl<T: PartialEq + std::fmt::Debug> LastWrite<T> {
    fn record(&mut self, value: T, ok: bool) {
        if ok {
            self.acked = Some(value);
            self.failed_since.clear();
        } else {
            self.failed_since.push(value);
        }
    }

    fn check(&self, what: &str, stored: &T) {
        let acked = self.acked.as_ref().unwrap_or_else(|| panic!("{what}: nothing was acknowledged"));
        assert!(
            stored == acked || self.failed_since.contains(stored),
            "{what}: the database holds {stored:?}, but {acked:?} was acknowledged (later attempts: {:?})",
            self.failed_since
        );
    }
}

/// Calls answered, by outcome; every call is bounded by a hang guard.
#[derive(Debug, Default)]
struct Calls {
    ok: u64,
    errors: u64,
}

impl Calls {
    /// Runs one call: a success or a dRPC error counts, anything else (no answer in time, a dead session) fails.
    async fn call<T>(
        &mut self,
        agent: usize,
        what: &str,
        guard: Duration,
        call: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> bool {
        let answer = tokio::time::timeout(guard, call)
            .await
            .unwrap_or_else(|_| panic!("agent {agent}: {what} got no answer within {guard:?}"));
        match answer {
            Ok(_) => {
                self.ok += 1;
                true
            }
            Err(err) => {
                assert!(err.code().is_some(), "agent {agent}: {what} failed without a dRPC error: {err}");
                self.errors += 1;
                false
            }
        }
    }
}

/// What one agent's durable writes were told.
#[derive(Debug, Default)]
struct DurableLedger {
    calls: Calls,
    acked_logs: Vec<String>,
    startup: LastWrite<String>,
    lifecycle_started_at: LastWrite<i64>,
}

/// What one agent's batched telemetry was told.
#[derive(Debug, Default)]
struct TelemetryLedger {
    calls: Calls,
    /// `rx_bytes` markers of acknowledged stats reports.
    acked_stats: Vec<i64>,
    /// Acknowledged metadata updates, and the last value sent.
    acked_metadata: u64,
    last_metadata: String,
}

/// Durable writes, one after another as an agent's log sender and lifecycle reporter make them: logs every round,
/// startup and lifecycle now and then, until `stop`.
async fn durable_load(
    agent: usize,
    client: pb::AgentClient,
    guard: Duration,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> DurableLedger {
    let mut ledger = DurableLedger::default();
    let source = bytes::Bytes::from_static(&[0u8; 16]);
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        seq += 1;
        let line = format!("a{agent}-{seq}");
        let log = pb::Log { created_at: None, output: line.clone(), level: pb::log::Level::Info as i32 };
        let request = pb::BatchCreateLogsRequest { log_source_id: source.clone(), logs: vec![log] };
        if ledger.calls.call(agent, "BatchCreateLogs", guard, client.batch_create_logs(&request)).await {
            ledger.acked_logs.push(line);
            progress.acked_logs.fetch_add(1, Ordering::Relaxed);
        }
        if seq.is_multiple_of(5) {
            let version = format!("v0.{agent}.{seq}");
            let startup =
                pb::Startup { version: version.clone(), expanded_directory: "/home".into(), subsystems: vec![] };
            let request = pb::UpdateStartupRequest { startup: Some(startup) };
            let ok = ledger.calls.call(agent, "UpdateStartup", guard, client.update_startup(&request)).await;
            ledger.startup.record(version, ok);
        }
        if seq % 5 == 2 {
            // `starting` stores the agent's `changed_at` as `started_at`: a distinct value per call.
            let changed_at = Timestamp { seconds: 1_700_000_000 + seq as i64, nanos: 0 };
            let micros = changed_at.seconds * 1_000_000;
            let lifecycle =
                pb::Lifecycle { state: pb::lifecycle::State::Starting as i32, changed_at: Some(changed_at) };
            let request = pb::UpdateLifecycleRequest { lifecycle: Some(lifecycle) };
            let ok = ledger.calls.call(agent, "UpdateLifecycle", guard, client.update_lifecycle(&request)).await;
            ledger.lifecycle_started_at.record(micros, ok);
        }
        // Pacing, not synchronisation: an agent's steady rate (ROUND_PAUSE).
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    ledger
}

/// Batched telemetry beside the durable writes, as an agent's stats and metadata reporters run: a stats report and
/// a metadata update every round, until `stop`.
async fn telemetry_load(
    agent: usize,
    client: pb::AgentClient,
    guard: Duration,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> TelemetryLedger {
    let mut ledger = TelemetryLedger::default();
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        seq += 1;
        let marker = stats_marker(agent, seq);
        let stats = pb::UpdateStatsRequest { stats: Some(pb::Stats { rx_bytes: marker, ..Default::default() }) };
        if ledger.calls.call(agent, "UpdateStats", guard, client.update_stats(&stats)).await {
            ledger.acked_stats.push(marker);
        }
        let value = seq.to_string();
        let metadata = pb::Metadata {
            key: "cpu".into(),
            result: Some(pb::workspace_agent_metadata::Result { value: value.clone(), ..Default::default() }),
        };
        let request = pb::BatchUpdateMetadataRequest { metadata: vec![metadata] };
        if ledger.calls.call(agent, "BatchUpdateMetadata", guard, client.batch_update_metadata(&request)).await {
            ledger.acked_metadata += 1;
            ledger.last_metadata = value;
        }
        progress.rounds.fetch_add(1, Ordering::Relaxed);
        // Pacing, not synchronisation: an agent's steady rate (ROUND_PAUSE).
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    ledger
}

/// §4.4 item 32: PostgreSQL stopped for a minute under load, then started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_under_load_loses_no_acknowledged_write_and_recovers() {
    let outage = outage();
    let mut pg = PgCluster::start().await;
    let url = pg.url();
    let options = StoreOptions {
        acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        heartbeat_flush_interval: Duration::from_secs(1),
        metadata_flush_interval: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let store = Store::open(&url, options).await.unwrap();
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(agent_with_rows(&store, &format!("pg-outage-{i}")).await);
    }
    let config = ServeConfig { heartbeat_interval: Duration::from_secs(1), ..ServeConfig::default() };
    let server = start(store.clone(), config).await;
    // A call may wait for a connection twice (a write, then its NOTIFY), each up to the acquire timeout.
    let hang_guard = DEFAULT_ACQUIRE_TIMEOUT * 3 + Duration::from_secs(30);

    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut progress = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        let client = dial(server.addr, &agent.auth_token.to_string()).await.unwrap();
        let p = Arc::new(Progress::default());
        progress.push(p.clone());
        let durable = tokio::spawn(durable_load(i, client.clone(), hang_guard, p.clone(), stop.clone()));
        let telemetry = tokio::spawn(telemetry_load(i, client.clone(), hang_guard, p, stop.clone()));
        tasks.push((durable, telemetry, client));
    }
    eventually_within("every agent's warm-up", PROGRESS_WAIT, || {
        progress.iter().all(|p| p.acked_logs.load(Ordering::Relaxed) >= 10)
    })
    .await;
    let rounds_at_stop: Vec<u64> = progress.iter().map(|p| p.rounds.load(Ordering::Relaxed)).collect();
    // Server and agents share this runtime: its live tasks are what the outage could pile up.
    let alive_tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let tasks_before = alive_tasks();

    pg.stop().await;
    let mut tasks_during_outage = 0;
    let outage_ends = Instant::now() + outage;
    while Instant::now() < outage_ends {
        // The outage's length is the scenario: the live tasks are sampled while it lasts.
        tokio::time::sleep(Duration::from_millis(500).min(outage_ends - Instant::now())).await;
        tasks_during_outage = tasks_during_outage.max(alive_tasks());
    }
    eprintln!("live tasks: {tasks_before} under load, at most {tasks_during_outage} during the outage");
    // Each agent has at most one durable and one telemetry call waiting on the database, each a task on both ends,
    // plus the batchers' flushes: a bound that does not grow with the outage's length.
    assert!(
        tasks_during_outage <= tasks_before + 4 * AGENTS + 8,
        "tasks piled up during the outage: {tasks_before} before, {tasks_during_outage} during"
    );
    // Telemetry never waits on the database: it went on through the outage.
    for (i, (p, at)) in progress.iter().zip(&rounds_at_stop).enumerate() {
        assert!(p.rounds.load(Ordering::Relaxed) > at + 10, "agent {i}: telemetry calls stalled during the outage");
    }
    pg.restart().await;
    let restarted_at = agentwire_store::now_micros();
    let logs_at_restart: Vec<u64> = progress.iter().map(|p| p.acked_logs.load(Ordering::Relaxed)).collect();
    // Recovery: every agent's durable writes succeed again on its old session, with no server restart.
    eventually_within("durable writes after the restart", hang_guard + PROGRESS_WAIT, || {
        progress.iter().zip(&logs_at_restart).all(|(p, at)| p.acked_logs.load(Ordering::Relaxed) >= at + 5)
    })
    .await;
    // Heartbeats made after the restart reach the database too: every session refreshes its agent's
    // last_connected_at each heartbeat interval, and the heartbeat batcher flushes each second.
    within("a heartbeat after the restart stored for every agent", async {
        for agent in &agents {
            let resolved = store.resolve_agent_by_token(&agent.auth_token.to_string()).await.unwrap().unwrap();
            let scope = store.agent(&resolved);
            while scope.state().await.unwrap().unwrap().last_connected_at.unwrap_or(0) < restarted_at {
                tokio::time::sleep(POLL).await;
            }
        }
    })
    .await;
    stop.cancel();
    let mut ledgers = Vec::new();
    let mut clients = Vec::new();
    for (durable, telemetry, client) in tasks {
        ledgers.push((durable.await.unwrap(), telemetry.await.unwrap()));
        // The same session is still up and answering.
        client.get_manifest(&pb::GetManifestRequest {}).await.expect("the session survived the outage");
        // Held until the session counts are read: a dropped client closes its session.
        clients.push(client);
    }
    let calls = || ledgers.iter().flat_map(|(d, t)| [&d.calls, &t.calls]);
    let errors: u64 = calls().map(|c| c.errors).sum();
    let ok: u64 = calls().map(|c| c.ok).sum();
    eprintln!("database outage of {outage:?}: {ok} calls answered with success, {errors} with an error");
    assert!(errors > 0, "the outage was visible to the agents");

    let (_, metrics) = http_get(server.addr, "/metrics").await;
    assert_eq!(series(&metrics, "agentwire_sessions_total", ""), AGENTS as u64, "no session was lost and redialled");
    assert_eq!(series(&metrics, "agentwire_sessions_active", ""), AGENTS as u64);
    // New sessions work again.
    for agent in &agents[..2] {
        let fresh = dial(server.addr, &agent.auth_token.to_string()).await.expect("a new session after the outage");
        fresh.get_manifest(&pb::GetManifestRequest {}).await.expect("a new session's first call");
    }

    // Every item the batchers were offered is written, superseded or counted as dropped; nothing is pending. Live
    // sessions enqueue a heartbeat every interval, one of which could land between the flush and the scrape: the
    // sessions end first, and a session's heartbeats stop before it counts as ended.
    drop(clients);
    eventually("every session ended", || server.state.metrics().sessions_active() == 0).await;
    store.flush().await;
    let (_, metrics) = http_get(server.addr, "/metrics").await;
    let [stats, metadata, heartbeats] = ["stats", "metadata", "heartbeats"].map(|b| BatcherCounts::scrape(&metrics, b));
    eprintln!("batchers after the outage:\n  stats {stats:?}\n  metadata {metadata:?}\n  heartbeats {heartbeats:?}");
    let acked_stats: u64 = ledgers.iter().map(|(_, t)| t.acked_stats.len() as u64).sum();
    let acked_metadata: u64 = ledgers.iter().map(|(_, t)| t.acked_metadata).sum();
    assert_eq!(stats.offered(), acked_stats, "every acknowledged stats report reached the batcher");
    assert_eq!(metadata.offered(), acked_metadata, "every acknowledged metadata update reached the batcher");
    for (name, b) in [("stats", stats), ("metadata", metadata), ("heartbeats", heartbeats)] {
        assert_eq!(b.settled(), b.offered(), "{name}: written + superseded + dropped = offered: {b:?}");
        assert!(b.flush_errors > 0, "{name}: the batcher saw the outage: {b:?}");
    }
    assert_eq!(heartbeats.dropped, heartbeats.refused, "failed heartbeat flushes are kept and retried");

    // What landed is what was counted as written, and only what was acknowledged.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let landed: Vec<i64> =
        sqlx::query_scalar("SELECT rx_bytes FROM workspace_agent_stats").fetch_all(&pool).await.unwrap();
    assert_eq!(landed.len() as u64, stats.written, "stats rows in the database = rows counted as written");
    let acked: BTreeSet<i64> = ledgers.iter().flat_map(|(_, t)| t.acked_stats.iter().copied()).collect();
    assert!(landed.iter().all(|m| acked.contains(m)), "every stored stats row was acknowledged");
    pool.close().await;

    // Durable writes: every acknowledged one is in the database.
    for (i, (agent, (durable, telemetry))) in agents.iter().zip(&ledgers).enumerate() {
        let resolved = store.resolve_agent_by_token(&agent.auth_token.to_string()).await.unwrap().unwrap();
        let scope = store.agent(&resolved);
        let stored: BTreeSet<String> = scope.logs_after(0).await.unwrap().into_iter().map(|l| l.output).collect();
        for line in &durable.acked_logs {
            assert!(stored.contains(line), "agent {i}: log {line:?} was acknowledged but is not stored");
        }
        let state = scope.state().await.unwrap().unwrap();
        durable.startup.check(&format!("agent {i} version"), &state.version);
        durable.lifecycle_started_at.check(&format!("agent {i} started_at"), &state.started_at.unwrap_or(0));
        let cpu = scope.list_metadata().await.unwrap().into_iter().find(|m| m.key == "cpu").unwrap();
        assert_eq!(cpu.value, telemetry.last_metadata, "agent {i}: the last metadata value landed");
        let last_connected = state.last_connected_at.unwrap_or(0);
        assert!(last_connected >= restarted_at, "agent {i}: heartbeats after the outage landed");
    }
    server.state.shutdown().await;
    store.close().await;
}

/// The TCP connection under a live session vanishes (FIN or RST; no WebSocket close, no GoAway).
async fn drop_tcp_under_session(reset: bool) {
    let store = memory_store().await;
    let agent = agent_with_rows(&store, if reset { "rst" } else { "fin" }).await;
    let token = agent.auth_token.to_string();
    let config = ServeConfig { max_sessions_per_agent: 1, ..ServeConfig::default() };
    let server = start(store.clone(), config).await;
    let proxy = CutProxy::start(server.addr).await;

    let client = dial(proxy.addr, &token).await.unwrap();
    client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    assert!(dial(server.addr, &token).await.is_err(), "a second session is refused while the first holds the slot");
    let resolved = store.resolve_agent_by_token(&token).await.unwrap().unwrap();
    let scope = store.agent(&resolved);
    let connected = scope.state().await.unwrap().unwrap();
    let connected_at = connected.last_connected_at.expect("the connection was recorded");
    assert_eq!(connected.disconnected_at, None);

    proxy.cut(reset);
    eventually("the session to end", || server.state.metrics().sessions_active() == 0).await;
    let state = scope.state().await.unwrap().unwrap();
    let disconnected_at = state.disconnected_at.expect("the disconnection was recorded");
    assert!(disconnected_at >= connected_at, "disconnected {disconnected_at} before connected {connected_at}");
    assert_eq!(state.last_connected_at, Some(connected_at));
    assert!(client.get_manifest(&pb::GetManifestRequest {}).await.is_err(), "the old session is gone");

    // The slot is free again: the same agent is admitted with a limit of one session.
    let again = dial(server.addr, &token).await.expect("the agent's slot was released");
    again.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    let (_, metrics) = http_get(server.addr, "/metrics").await;
    assert_eq!(series(&metrics, "agentwire_sessions_refused_total", "reason=\"limit\""), 1, "one refusal, none after");
    server.state.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_tcp_connection_records_the_disconnect_and_frees_the_slot() {
    tokio::join!(drop_tcp_under_session(false), drop_tcp_under_session(true));
}
