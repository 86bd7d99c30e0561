//! On a Coder deployment's database (Coder's own schema, migrated and seeded by Coder's own code), 20 agents at
//! Coder's default intervals: after connecting, agentwire reads no agent row, and the hot calls (metadata, stats,
//! resource monitoring pushes) run no statement of their own — what reaches the database is the batchers' flushes,
//! one transaction each. Counted with the store's statement counters, never timed.

// Not `mod common;`: coderdb.rs includes common/pg.rs itself, and one file loaded as two modules is refused.
#[path = "common/coderdb.rs"]
mod coderdb;

#[path = "common/server.rs"]
#[allow(dead_code)]
mod server;

use std::time::Duration;

use agentwire::proto::agent::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire_store::{Store, StoreOptions};
use server::{agent_row_reads, connect_at, start};
use uuid::Uuid;

const AGENTS: usize = 20;
/// How long the hot calls are measured: a few of each batcher's flush intervals.
const WINDOW: Duration = Duration::from_secs(20);
/// The most statements one flush runs (stats: the rows, `last_used_at`, the activity bump; monitors: one per kind;
/// one each for the others).
const MAX_STATEMENTS_PER_FLUSH: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_on_a_coder_database_read_no_agent_row_and_write_through_the_batchers() {
    let db = coderdb::fresh_coder_db_with(&["--agents", &AGENTS.to_string()]).await;
    let agents = db.seed["agents"].as_array().expect("seed agents").clone();
    assert_eq!(agents.len(), AGENTS, "{}", db.seed);
    let store = Store::open_coder(&db.url, StoreOptions::default()).await.unwrap();
    let server = start(store.clone(), ServeConfig::default()).await;

    // Connect and start as Coder's agent does.
    let mut clients = Vec::new();
    for agent in &agents {
        let token = Uuid::parse_str(agent["token"].as_str().expect("token")).unwrap();
        let client =
            pb::AgentClient::new(connect_at(&server, token, agentwire::session::ApiVersion::CODER_V2_30).await);
        let manifest = client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
        assert!(!manifest.metadata.is_empty(), "the seeded agent describes metadata");
        for state in [pb::lifecycle::State::Starting, pb::lifecycle::State::Ready] {
            let lifecycle = pb::Lifecycle { state: state as i32, changed_at: None };
            client.update_lifecycle(&pb::UpdateLifecycleRequest { lifecycle: Some(lifecycle) }).await.unwrap();
        }
        // The agent asks for its monitors once at start; the session reads them then, and never again.
        let monitoring = client
            .get_resources_monitoring_configuration(&pb::GetResourcesMonitoringConfigurationRequest {})
            .await
            .unwrap();
        assert_eq!(
            monitoring.memory,
            Some(pb::get_resources_monitoring_configuration_response::Memory { enabled: true })
        );
        clients.push((client, manifest));
    }
    assert_eq!(agent_row_reads(&store), AGENTS as u64, "one token lookup per session");
    store.flush().await;
    let before = store.queries().snapshot();
    let flushes_before = store.batcher_stats();

    // The hot calls, at the intervals Coder's agent keeps: each metadata key at its own interval (seconds, from the
    // manifest), stats at the interval the first reply gives.
    let hot = run_hot_calls(&clients).await;
    store.flush().await;

    let during = store.queries().snapshot().since(&before);
    let flushes_after = store.batcher_stats();
    let flushes = (flushes_after.stats.flushes - flushes_before.stats.flushes)
        + (flushes_after.metadata.flushes - flushes_before.metadata.flushes)
        + (flushes_after.heartbeats.flushes - flushes_before.heartbeats.flushes)
        + (flushes_after.monitors.flushes - flushes_before.monitors.flushes);
    let monitor_flushes = flushes_after.monitors.flushes - flushes_before.monitors.flushes;
    assert_eq!(agent_row_reads(&store), AGENTS as u64, "a hot call read an agent row: {:?}", during.by_name);
    assert!(flushes >= 2, "the window saw {flushes} flushes");
    assert!(
        during.commits <= flushes,
        "{} write transactions for {flushes} flushes: {:?}",
        during.commits,
        during.by_name
    );
    // Pushes read no monitor row (the session's copy), and their states land only through the monitor flushes.
    let monitor_reads =
        during.get("FetchMemoryResourceMonitorsByAgentID") + during.get("FetchVolumesResourceMonitorsByAgentID");
    assert_eq!(monitor_reads, 0, "a push read the monitors: {:?}", during.by_name);
    assert!(monitor_flushes >= 1, "no monitor flush: {:?}", during.by_name);
    for kind in ["UpdateMemoryResourceMonitor", "UpdateVolumeResourceMonitor"] {
        assert!(during.get(kind) <= monitor_flushes, "{kind} beyond one per flush: {:?}", during.by_name);
    }
    let monitor_states = flushes_after.monitors.enqueued - flushes_before.monitors.enqueued;
    let monitor_writes = during.get("UpdateMemoryResourceMonitor") + during.get("UpdateVolumeResourceMonitor");
    println!(
        "{} pushes (2 monitors each): {monitor_writes} monitor statements in {monitor_flushes} flushes",
        monitor_states / 2
    );
    // Statements besides the flushes': the build watch's one per interval, for all sessions at once.
    let build_checks = during.get("GetLatestWorkspaceBuildByWorkspaceID");
    let bound = MAX_STATEMENTS_PER_FLUSH * flushes + build_checks;
    assert!(hot > 2 * bound, "too few hot calls ({hot}) for the bound ({bound}) to mean anything");
    assert!(
        during.total() <= bound,
        "{} statements for {hot} hot calls, {flushes} flushes and {build_checks} build checks: {:?}",
        during.total(),
        during.by_name
    );

    // What the batchers wrote is in Coder's tables, readable by coderd's own queries.
    let first = coderdb::read_agent(&db.url, agents[0]["id"].as_str().unwrap()).await;
    assert!(first.to_string().contains("hot-value"), "the metadata values did not land: {first}");
    // The pushes' memory at 95 % of a threshold of 80 %: NOK, debounced from the first push's alert.
    let memory = &first["memory_monitor"];
    assert_eq!(memory["state"], "NOK", "the monitor state did not land: {first}");
    assert_ne!(memory["debounced_until"], "0001-01-01T00:00:00Z", "the alert's debounce did not land: {first}");
}

/// Every agent's metadata, stats and resource monitoring pushes for [`WINDOW`]; the number of calls made.
async fn run_hot_calls(clients: &[(pb::AgentClient, pb::Manifest)]) -> u64 {
    let started = tokio::time::Instant::now();
    let mut calls = 0;
    let mut next_stats = vec![started; clients.len()];
    let mut next_push = vec![started; clients.len()];
    let mut next_metadata: Vec<Vec<tokio::time::Instant>> =
        clients.iter().map(|(_, m)| vec![started; m.metadata.len()]).collect();
    while started.elapsed() < WINDOW {
        let now = tokio::time::Instant::now();
        for (i, (client, manifest)) in clients.iter().enumerate() {
            let mut due = Vec::new();
            for (k, description) in manifest.metadata.iter().enumerate() {
                if next_metadata[i][k] <= now {
                    let interval = description.interval.as_ref().map(|d| d.seconds).unwrap_or(1).max(1) as u64;
                    next_metadata[i][k] = now + Duration::from_secs(interval);
                    due.push(pb::Metadata {
                        key: description.key.clone(),
                        result: Some(pb::workspace_agent_metadata::Result {
                            collected_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                            age: 0,
                            value: "hot-value".into(),
                            error: String::new(),
                        }),
                    });
                }
            }
            if !due.is_empty() {
                client.batch_update_metadata(&pb::BatchUpdateMetadataRequest { metadata: due }).await.unwrap();
                calls += 1;
            }
            if next_stats[i] <= now {
                let stats = pb::Stats { connection_count: 1, rx_bytes: 1, ..Default::default() };
                let reply = client.update_stats(&pb::UpdateStatsRequest { stats: Some(stats) }).await.unwrap();
                let interval = reply.report_interval.map(|d| d.seconds).unwrap_or(30).max(1) as u64;
                next_stats[i] = now + Duration::from_secs(interval);
                calls += 1;
            }
            if next_push[i] <= now {
                // The agent's window of Coder's 20 datapoints, pushed every collection interval (10 s).
                use pb::push_resources_monitoring_usage_request::{datapoint, Datapoint};
                let point = Datapoint {
                    collected_at: None,
                    memory: Some(datapoint::MemoryUsage { used: 95, total: 100 }),
                    volumes: vec![datapoint::VolumeUsage { volume: "/home/coder".into(), used: 10, total: 100 }],
                };
                let usage = pb::PushResourcesMonitoringUsageRequest { datapoints: vec![point; 20] };
                client.push_resources_monitoring_usage(&usage).await.unwrap();
                next_push[i] = now + agentwire::agentapi::DEFAULT_RESOURCES_MONITORING_COLLECTION_INTERVAL;
                calls += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    calls
}
