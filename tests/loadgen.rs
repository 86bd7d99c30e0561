//! `agentwire loadgen` driven as a library against an in-process server: small bounded runs in each mode, checked
//! by counts (what the loadgen reports against what the server counted), never by timings.

mod common;

use std::time::Duration;

use agentwire::proto::agent::v2 as pb;
use agentwire::server::{AppState, ServeConfig};
use agentwire_loadgen::mix::AGENT_MIX;
use agentwire_loadgen::{self as loadgen, LoadgenConfig, Mode, Report, RpcName, Target, TokenSource};
use agentwire_store::{Store, StoreOptions};
// The server counts a call just after its reply leaves: its counts are waited for, boundedly.
use agentwire_transport::testing::wait::eventually;
use common::server::{memory_store, start, TestServer};

fn ws_target(server: &TestServer) -> Target {
    Target::Ws { url: server.rpc_url("2.10"), addr: server.addr }
}

async fn agents(store: &Store, n: usize) -> Vec<String> {
    agentwire::provision::create_load_agents(store, n, 2).await.unwrap()
}

fn ok(report: &Report, method: &str) -> u64 {
    report.rpcs.get(method).map(|f| f.ok).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_run_counts_what_the_server_counted() {
    let store = memory_store().await;
    let tokens = agents(&store, 10).await;
    let mut serve = ServeConfig::default();
    // A window of one datapoint a second, so that the run sees pushes: at coderd's 20 every 10 s the first would come
    // 200 s after the connect.
    serve.agent_api.resources_monitoring_num_datapoints = 1;
    serve.agent_api.resources_monitoring_collection_interval = Duration::from_secs(1);
    let server = start(store.clone(), serve).await;
    let config = LoadgenConfig::new(
        ws_target(&server),
        TokenSource::List(tokens.clone()),
        10,
        Mode::Realistic,
        Duration::from_secs(2),
    );
    let report = loadgen::run(config).await.unwrap();

    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    // Once per agent: the startup sequence.
    assert_eq!(ok(&report, pb::agent_methods::GET_MANIFEST), 10);
    assert_eq!(ok(&report, pb::agent_methods::GET_ANNOUNCEMENT_BANNERS), 10, "on connect; the next 2 minutes later");
    assert_eq!(ok(&report, pb::agent_methods::GET_RESOURCES_MONITORING_CONFIGURATION), 10);
    assert!(!report.rpcs.contains_key(pb::agent_methods::GET_SERVICE_BANNER), "a v2.30 agent does not call it");
    assert!(ok(&report, pb::agent_methods::PUSH_RESOURCES_MONITORING_USAGE) > 0, "no push once the window was full");
    assert_eq!(ok(&report, pb::agent_methods::UPDATE_LIFECYCLE), 20, "starting, then ready");
    assert_eq!(ok(&report, pb::agent_methods::UPDATE_STARTUP), 10);
    assert_eq!(ok(&report, pb::agent_methods::BATCH_CREATE_LOGS), 10);
    assert!(ok(&report, pb::agent_methods::UPDATE_STATS) >= 10, "the first stats call learns the interval");
    assert_eq!(report.sessions.streams_opened, 20, "StreamDERPMaps and Coordinate per agent");
    assert_eq!((report.sessions.connects, report.sessions.drops), (10, 0));

    // Every call the loadgen counted, the server counted, and no other.
    let metrics = server.state.metrics();
    for (method, figures) in &report.rpcs {
        assert_eq!(figures.errors, 0, "{method}");
        eventually(&format!("the server counted {} {method}", figures.ok), || {
            metrics.rpc_count(method, "ok") == figures.ok
        })
        .await;
    }

    // What the calls wrote: every agent ready, its startup logs stored.
    store.flush().await;
    for token in &tokens {
        let agent = store.resolve_agent_by_token(token).await.unwrap().unwrap();
        let scope = store.agent(&agent);
        assert_eq!(scope.state().await.unwrap().unwrap().lifecycle_state, "ready");
        assert_eq!(scope.logs_after(0).await.unwrap().len(), loadgen::config::DEFAULT_LOG_LINES);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturating_with_max_rpcs_makes_exactly_that_many_calls() {
    let store = memory_store().await;
    let tokens = agents(&store, 3).await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let mut config = LoadgenConfig::new(
        ws_target(&server),
        TokenSource::List(tokens),
        3,
        Mode::Saturating { rpc: RpcName::UpdateStats, concurrency: 4 },
        // The budget ends the run long before this.
        Duration::from_secs(60),
    );
    config.max_rpcs = Some(500);
    let report = loadgen::run(config).await.unwrap();

    assert_eq!(report.calls.ok, 500);
    assert_eq!(report.calls.errors, 0);
    assert_eq!(ok(&report, pb::agent_methods::UPDATE_STATS), 500);
    assert_eq!(report.rpcs.len(), 1, "only the chosen RPC");
    let metrics = server.state.metrics();
    eventually("the server counted 500 UpdateStats", || {
        metrics.rpc_count(pb::agent_methods::UPDATE_STATS, "ok") == 500
    })
    .await;
}

/// A run of whole periods of the mix makes each method exactly as often as the table says, by the server's count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturating_mix_makes_exactly_the_tables_calls_per_method() {
    let store = memory_store().await;
    let tokens = agents(&store, 3).await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let periods = 2;
    let period: u64 = AGENT_MIX.iter().map(|&(_, w)| u64::from(w)).sum();
    let mut config = LoadgenConfig::new(
        ws_target(&server),
        TokenSource::List(tokens.clone()),
        3,
        Mode::Saturating { rpc: RpcName::Mix, concurrency: 4 },
        Duration::from_secs(60),
    );
    config.max_rpcs = Some(periods * period);
    let report = loadgen::run(config).await.unwrap();

    assert_eq!((report.calls.ok, report.calls.errors), (periods * period, 0), "errors: {:?}", report.errors);
    assert_eq!(report.rpcs.len(), AGENT_MIX.len(), "{:?}", report.rpcs.keys());
    let metrics = server.state.metrics();
    for (call, weight) in AGENT_MIX {
        let want = periods * u64::from(weight);
        assert_eq!(ok(&report, call.method()), want, "{call:?}");
        eventually(&format!("the server counted {want} {call:?}"), || metrics.rpc_count(call.method(), "ok") == want)
            .await;
    }
    let weights = report.config.mix.as_ref().expect("the mix's weights in the report's config");
    assert_eq!(weights.len(), AGENT_MIX.len());
    for (call, weight) in AGENT_MIX {
        assert_eq!(weights.get(call.name()), Some(&weight), "{call:?}");
    }
    assert!(report.summary().contains("mix per 236 calls: BatchUpdateMetadata 151"), "{}", report.summary());

    // The metadata reports name the keys the agents were created with, so they are stored as a real agent's are.
    store.flush().await;
    let mut written = std::collections::BTreeSet::new();
    for token in &tokens {
        let agent = store.resolve_agent_by_token(token).await.unwrap().unwrap();
        for item in store.agent(&agent).list_metadata().await.unwrap() {
            if !item.value.is_empty() {
                written.insert(item.key);
            }
        }
    }
    assert_eq!(written.into_iter().collect::<Vec<_>>(), ["key0", "key1"]);
    // The pushes meet the memory and `/` monitors the load agents have, as the real agent's meet the example's: each
    // session reads them once and every push after that works from its own copy; their states reach the rows.
    let q = store.queries().snapshot();
    assert_eq!(q.get("FetchMemoryResourceMonitorsByAgentID"), tokens.len() as u64, "{:?}", q.by_name);
    assert!(q.get("UpdateMemoryResourceMonitor") >= 1 && q.get("UpdateVolumeResourceMonitor") >= 1, "{:?}", q.by_name);
}

/// An open-loop run ends wherever its time runs out: whatever the total, each method's count is the mix's order's
/// first calls, so within one period of the weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_mix_counts_follow_the_weights() {
    let store = memory_store().await;
    let tokens = agents(&store, 5).await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let config = LoadgenConfig::new(
        ws_target(&server),
        TokenSource::List(tokens),
        5,
        Mode::FixedRate { rpc: RpcName::Mix, rate: 300.0, max_in_flight: 8 },
        Duration::from_secs(2),
    );
    let report = loadgen::run(config).await.unwrap();
    assert_eq!(report.calls.errors, 0, "errors: {:?}", report.errors);

    let metrics = server.state.metrics();
    let total = report.calls.ok;
    let period: u64 = AGENT_MIX.iter().map(|&(_, w)| u64::from(w)).sum();
    assert!(total > period, "{total} calls: the run should see more than one period");
    let order = loadgen::mix::agent_mix().counts(total);
    for (call, weight) in AGENT_MIX {
        let got = ok(&report, call.method());
        eventually(&format!("the server counted {got} {call:?}"), || metrics.rpc_count(call.method(), "ok") == got)
            .await;
        let share = total as f64 * f64::from(weight) / period as f64;
        assert!((got as f64 - share).abs() <= f64::from(weight), "{call:?}: {got} of {total}, {share:.1} by weight");
        assert_eq!(got, order[call.method()], "{call:?}: the order's first {total} calls");
    }
    // The schedule's send lag is the run's; no one method of a mix carries it.
    assert!(report.send_lag_us.is_some());
    assert!(report.rpcs.values().all(|f| f.send_lag_us.is_none()));
}

/// A minimal well-formedness check: every element closed in order, attributes quoted, one root `svg`.
fn check_xml(svg: &str) -> usize {
    let body = svg.strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#).expect("an XML declaration");
    let mut stack: Vec<String> = Vec::new();
    let mut elements = 0;
    let mut rest = body;
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        assert!(!text.contains('>'), "a stray '>' in text {text:?}");
        let close = rest[open..].find('>').expect("an unterminated tag") + open;
        let tag = &rest[open + 1..close];
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "</{name}> closes the wrong element");
        } else {
            elements += 1;
            let name = tag.split_whitespace().next().unwrap_or_default().trim_end_matches('/').to_owned();
            if stack.is_empty() {
                roots += 1;
                assert_eq!(name, "svg");
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1);
    elements
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_report_is_json_with_percentiles_and_the_plot_is_well_formed_svg() {
    let store = memory_store().await;
    let tokens = agents(&store, 5).await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let mut config = LoadgenConfig::new(
        ws_target(&server),
        TokenSource::List(tokens),
        5,
        Mode::FixedRate { rpc: RpcName::BatchUpdateMetadata, rate: 200.0, max_in_flight: 8 },
        Duration::from_secs(2),
    );
    config.max_rpcs = Some(300);
    config.server_pid = Some(std::process::id());
    let report = loadgen::run(config).await.unwrap();
    assert_eq!(report.calls.errors, 0);
    assert!(report.calls.ok > 0 && report.calls.ok <= 300, "{}", report.calls.ok);

    let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    for key in ["p50", "p90", "p99", "p999", "max", "count"] {
        assert!(json["latency_us"][key].is_u64(), "latency_us.{key} in {}", json["latency_us"]);
        assert!(json["service_latency_us"][key].is_u64(), "service_latency_us.{key}");
    }
    assert_eq!(json["latency_us"]["count"], report.calls.measured_ok);
    let l = report.latency_us;
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    assert_eq!(json["config"]["mode"], "fixed-rate");
    assert_eq!(json["config"]["rpc"], "batch-update-metadata");
    assert!(json["config"].get("mix").is_none(), "one RPC has no mix");
    let method = pb::agent_methods::BATCH_UPDATE_METADATA;
    assert!(report.rpcs[method].send_lag_us.is_some(), "a single RPC's figures carry the schedule's send lag");
    let series_ok: u64 = report.series.iter().map(|p| p.ok).sum();
    assert_eq!(series_ok, report.calls.ok, "the per-second series adds up to the calls");
    let server_figures = report.server.as_ref().expect("server figures for --server-pid");
    assert!(server_figures.cpu_seconds.is_some() && server_figures.rss_after_kib.is_some());
    // The report round-trips through its own type (what bench scripts and later tools read).
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back.calls.ok, report.calls.ok);

    let svg = loadgen::plot::render(&report);
    assert!(check_xml(&svg) > 10);
    // Fixed-rate mode also plots the send lag p99 beside the latencies it is part of.
    assert_eq!(svg.matches("<polyline").count(), 4, "throughput, p50, p99, send lag p99");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_sessions_all_serve_the_listener_agent() {
    let store = memory_store().await;
    let token = agents(&store, 1).await.remove(0);
    let config = ServeConfig { max_sessions_per_agent: 16, ..ServeConfig::default() };
    let server = start(store.clone(), config).await;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(agentwire::server::serve_tcp(server.state.clone(), tcp, token));

    let mut config = LoadgenConfig::new(
        Target::Tcp { addr },
        TokenSource::None,
        8,
        Mode::Saturating { rpc: RpcName::GetServiceBanner, concurrency: 2 },
        Duration::from_secs(30),
    );
    config.max_rpcs = Some(200);
    let report = loadgen::run(config).await.unwrap();
    assert_eq!((report.calls.ok, report.calls.errors), (200, 0));
    assert_eq!(report.sessions.connects, 8);
    assert_eq!(report.config.transport, "tcp");
    let metrics = server.state.metrics();
    eventually("the server counted 200", || metrics.rpc_count(pb::agent_methods::GET_SERVICE_BANNER, "ok") == 200)
        .await;

    // Idle sessions holding the two streams.
    let config = LoadgenConfig::new(
        Target::Tcp { addr },
        TokenSource::None,
        6,
        Mode::Idle { hold_streams: true },
        Duration::from_secs(1),
    );
    let report = loadgen::run(config).await.unwrap();
    assert_eq!(report.calls.ok + report.calls.errors, 0, "idle makes no unary calls");
    assert_eq!(report.sessions.connected_at_end, 6);
    assert_eq!(report.sessions.streams_opened, 12);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

struct Served {
    state: AppState,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve_on(store: Store, addr: std::net::SocketAddr) -> Served {
    let config = ServeConfig { shutdown_grace: Duration::from_secs(1), ..ServeConfig::default() };
    let state = AppState::new(store, config);
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let http = tokio::spawn(agentwire::http::serve(listener, state.clone(), state.shutdown_token().clone()));
    Served { state, http }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_every_agent_reconnects_and_the_storm_is_reported() {
    let dir = std::env::temp_dir().join(format!("agentwire-loadgen-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.join("agentwire.db").display());
    let store = Store::open(&db, StoreOptions::default()).await.unwrap();
    let tokens = agents(&store, 10).await;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let first = serve_on(store.clone(), addr).await;
    let derp_maps = first.state.tailnet().derp_maps().clone();
    let own_views = derp_maps.subscribers();

    let url = format!("ws://{addr}/api/v2/workspaceagents/me/rpc?version=2.10");
    let mut config = LoadgenConfig::new(
        Target::Ws { url, addr },
        TokenSource::List(tokens),
        10,
        Mode::Idle { hold_streams: true },
        // Room for a loaded machine (the whole suite runs beside it) to bring every session back and open both its
        // streams before the run ends: a session is counted at its upgrade, its streams come after. With 5 s, a
        // restart that took most of the run left some sessions without their streams at its end.
        Duration::from_secs(10),
    );
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config.call_timeout = Duration::from_secs(2);
    let run = tokio::spawn(loadgen::run(config));

    let metrics = first.state.metrics();
    eventually("10 sessions on the first server", || metrics.sessions_active() == 10).await;
    // A session is counted at its upgrade and opens its streams after: a shutdown before they are open would leave
    // sessions that never had them, and the count below would not be the reconnects' doing.
    eventually("every session's DERP map stream on the first server", || derp_maps.subscribers() == own_views + 10)
        .await;
    // The server goes away (every session closed, the listener gone), then comes back on the same port and file.
    first.state.shutdown().await;
    let _ = first.http.await;
    store.close().await;
    let store = Store::open(&db, StoreOptions::default()).await.unwrap();
    let second = serve_on(store.clone(), addr).await;
    let metrics = second.state.metrics();
    eventually("10 sessions on the restarted server", || metrics.sessions_active() == 10).await;
    let derp_maps = second.state.tailnet().derp_maps().clone();
    eventually("every session's DERP map stream on the restarted server", || derp_maps.subscribers() == own_views + 10)
        .await;

    let report = run.await.unwrap().unwrap();
    assert_eq!(report.sessions.drops, 10);
    assert_eq!(report.sessions.reconnects, 10);
    assert_eq!(report.sessions.connects, 20);
    assert_eq!(report.sessions.connected_at_end, 10);
    assert_eq!(report.reconnect.storms.len(), 1, "{:?}", report.reconnect.storms);
    assert_eq!(report.reconnect.storms[0].drops, 10);
    assert!(report.reconnect.storms[0].recovered_after_ms.is_some(), "all agents were back");
    assert_eq!(report.reconnect.longest_ms, report.reconnect.storms[0].recovered_after_ms);
    assert_eq!(report.sessions.streams_opened, 40, "both streams again on every new session: {:?}", report.errors);
    second.state.shutdown().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn already_started_agents_skip_the_startup_writes() {
    let store = memory_store().await;
    let tokens = agents(&store, 3).await;
    let server = start(store.clone(), ServeConfig::default()).await;
    let mut config =
        LoadgenConfig::new(ws_target(&server), TokenSource::List(tokens), 3, Mode::Realistic, Duration::from_secs(1));
    config.already_started = true;
    let report = loadgen::run(config).await.unwrap();
    assert_eq!(ok(&report, pb::agent_methods::GET_MANIFEST), 3, "every session still reads its manifest");
    assert_eq!(ok(&report, pb::agent_methods::GET_RESOURCES_MONITORING_CONFIGURATION), 3, "and its monitors");
    // Its usage window starts empty, as the agent's on every connection: the first push is 200 s away.
    assert!(!report.rpcs.contains_key(pb::agent_methods::PUSH_RESOURCES_MONITORING_USAGE));
    for method in
        [pb::agent_methods::UPDATE_LIFECYCLE, pb::agent_methods::UPDATE_STARTUP, pb::agent_methods::BATCH_CREATE_LOGS]
    {
        assert!(!report.rpcs.contains_key(method), "{method} was called");
        assert_eq!(server.state.metrics().rpc_count(method, "ok"), 0);
    }
    assert!(report.config.already_started);
}
