//! `kill -9` of the server mid-load (§4.4 item 34), restarted on the same port and SQLite file: agents reconnect,
//! every acknowledged durable write is there, and the stats lost are at most the last flush window's. The other
//! fault tests run the server in process (`tests/faults.rs`); this one needs the `agentwire` binary, which only
//! this package's tests can run. Waits are bounded; nothing asserts a latency.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentwire::proto::agent::v2 as pb;
use agentwire_store::{Store, StoreOptions};
use agentwire_transport::testing::wait::eventually_within;
use common::chaos::{dial, stats_marker, Progress, AGENTS, PROGRESS_WAIT, ROUND_PAUSE};
use common::{create_agent, ServerProcess};
use tokio_util::sync::CancellationToken;

/// One agent of the kill test: dials (again after every failure), then writes logs and stats until `stop`.
#[derive(Debug, Default)]
struct KillLedger {
    connects: u64,
    acked_logs: Vec<String>,
    /// (marker, the session it was acknowledged on, when).
    acked_stats: Vec<(i64, u64, Instant)>,
    /// When each session was dialled.
    dialled_at: Vec<Instant>,
}

async fn reconnecting_load(
    agent: usize,
    addr: std::net::SocketAddr,
    token: String,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> KillLedger {
    // The Go agent backs off up to 10 s between dials; shorter here, and bounded.
    const DIAL_ATTEMPTS: usize = 300;
    let mut ledger = KillLedger::default();
    let source = bytes::Bytes::from_static(&[0u8; 16]);
    let mut seq = 0u64;
    let mut client: Option<pb::AgentClient> = None;
    while !stop.is_cancelled() {
        let current = match client.take() {
            Some(c) => c,
            None => {
                let mut dialled = None;
                for _ in 0..DIAL_ATTEMPTS {
                    if let Ok(c) = dial(addr, &token).await {
                        dialled = Some(c);
                        break;
                    }
                    // The agent's backoff between dials (the scenario), not synchronisation.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                ledger.connects += 1;
                ledger.dialled_at.push(Instant::now());
                dialled.unwrap_or_else(|| panic!("agent {agent} could not reconnect"))
            }
        };
        seq += 1;
        let line = format!("k{agent}-{seq}");
        let log = pb::Log { created_at: None, output: line.clone(), level: pb::log::Level::Info as i32 };
        let request = pb::BatchCreateLogsRequest { log_source_id: source.clone(), logs: vec![log] };
        if current.batch_create_logs(&request).await.is_err() {
            continue; // the session is gone: dial again
        }
        ledger.acked_logs.push(line);
        progress.acked_logs.fetch_add(1, Ordering::Relaxed);
        let marker = stats_marker(agent, seq);
        let stats = pb::Stats { rx_bytes: marker, ..Default::default() };
        if current.update_stats(&pb::UpdateStatsRequest { stats: Some(stats) }).await.is_err() {
            continue;
        }
        ledger.acked_stats.push((marker, ledger.connects, Instant::now()));
        progress.rounds.fetch_add(1, Ordering::Relaxed);
        client = Some(current);
        // Pacing, not synchronisation: an agent's steady rate (ROUND_PAUSE).
        tokio::time::sleep(ROUND_PAUSE / 2).await;
    }
    ledger
}

/// §4.4 item 34: `kill -9` of the server mid-load on SQLite, restarted on the same port and file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_then_restart_loses_no_acknowledged_write() {
    const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
    let dir = std::env::temp_dir().join(format!("agentwire-kill9-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.join("agentwire.db").display());
    let mut tokens = Vec::new();
    for i in 0..AGENTS {
        tokens.push(create_agent(&db, &format!("kill-{i}"), "main").await.0);
    }
    let flush_ms = FLUSH_INTERVAL.as_millis().to_string();
    // The acquire timeout bounds how long a call can wait on the single SQLite writer.
    let flags = ["--stats-flush-interval-ms", flush_ms.as_str(), "--db-acquire-timeout-ms", "10000"];
    let mut first = ServerProcess::start(&db, "127.0.0.1:0", &flags).await.expect("the server starts");
    let addr = first.addr;

    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut progress = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let p = Arc::new(Progress::default());
        progress.push(p.clone());
        tasks.push(tokio::spawn(reconnecting_load(i, addr, token.clone(), p, stop.clone())));
    }
    // Several flush windows of load first, so the window lost at the kill is a small part of what was sent.
    let started = Instant::now();
    eventually_within("every agent's warm-up", PROGRESS_WAIT, || {
        started.elapsed() >= FLUSH_INTERVAL * 5 && progress.iter().all(|p| p.rounds.load(Ordering::Relaxed) >= 40)
    })
    .await;

    let killed_at = Instant::now();
    first.signal("-KILL");
    let status = first.wait().await;
    assert!(!status.success(), "the server was killed: {status}");
    // The same port again; the old listener is gone with the process, so only a stray taker can make this fail.
    let mut second = None;
    for _ in 0..20 {
        second = ServerProcess::start(&db, &addr.to_string(), &flags).await;
        if second.is_some() {
            break;
        }
        // A retry's pause: the start failed (the port still taken), nothing to wait on but another try.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut second = second.expect("the server restarts on the same port");
    let rounds_at_restart: Vec<u64> = progress.iter().map(|p| p.rounds.load(Ordering::Relaxed)).collect();
    eventually_within("every agent back at work", PROGRESS_WAIT, || {
        progress.iter().zip(&rounds_at_restart).all(|(p, at)| p.rounds.load(Ordering::Relaxed) >= at + 10)
    })
    .await;
    stop.cancel();
    let mut ledgers = Vec::new();
    for task in tasks {
        ledgers.push(task.await.unwrap());
    }
    // A clean stop flushes what the second server holds.
    second.signal("-TERM");
    assert!(second.wait().await.success());

    let store = Store::open(&db, StoreOptions::default()).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let landed: BTreeSet<i64> = sqlx::query_scalar("SELECT rx_bytes FROM workspace_agent_stats")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    pool.close().await;
    // One flush window, plus one flush in flight when the process died.
    let window = FLUSH_INTERVAL * 2;
    let (mut lost, mut in_window, mut landed_before) = (0usize, 0usize, 0usize);
    for (i, (token, ledger)) in tokens.iter().zip(&ledgers).enumerate() {
        assert!(ledger.connects >= 2, "agent {i} reconnected: {} sessions", ledger.connects);
        let resolved = store.resolve_agent_by_token(token).await.unwrap().unwrap();
        let stored: BTreeSet<String> =
            store.agent(&resolved).logs_after(0).await.unwrap().into_iter().map(|l| l.output).collect();
        for line in &ledger.acked_logs {
            assert!(stored.contains(line), "agent {i}: log {line:?} was acknowledged but is not stored");
        }
        // Sessions dialled before the kill were served by the killed process.
        let first_sessions = ledger.dialled_at.iter().filter(|t| **t < killed_at).count() as u64;
        let (before, after): (Vec<_>, Vec<_>) = ledger.acked_stats.iter().partition(|(_, s, _)| *s <= first_sessions);
        for (marker, _, _) in &after {
            assert!(landed.contains(marker), "agent {i}: stats {marker} acknowledged after the restart were lost");
        }
        // Stats land in order, so what the kill lost is the tail of what the first process acknowledged.
        let kept = before.iter().take_while(|(m, _, _)| landed.contains(m)).count();
        assert!(
            before[kept..].iter().all(|(m, _, _)| !landed.contains(m)),
            "agent {i}: the stats lost are not a tail of those acknowledged"
        );
        lost += before.len() - kept;
        landed_before += kept;
        // What this agent had acknowledged in the last window before the kill.
        in_window += before.iter().filter(|(_, _, at)| *at + window >= killed_at).count();
    }
    eprintln!(
        "kill -9: {landed_before} stats rows landed before the kill, {lost} lost ({in_window} in the last window)"
    );
    assert!(landed_before > in_window, "the load ran for several flush windows before the kill");
    assert!(lost <= in_window, "{lost} stats reports lost: more than one flush window ({in_window})");
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
