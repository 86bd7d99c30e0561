//! coderd's clients reach an agent agentwire serves: the deployment of `beside_coderd.rs` (a real coderd v2.30, the
//! nginx front, `agentwire serve --coder-db`, the real `coder agent` given the front's URL), with agentwire relaying
//! the agent's Tailnet calls to coderd (`--coderd-url`, relay by default then). The real `coder` CLI, logged in to
//! that coderd, runs a command over `coder ssh` (peer to peer, then through DERP only) and fetches the agent's app
//! through `coder port-forward`; coderd's own path-based app proxy serves the app too. Every one of them coordinates
//! through coderd's in-memory coordinator, which must hold the agent, while agentwire's own holds no peer.
//!
//! On the way it measures what the relay costs coderd: the statements coderd runs for the relay's connection
//! (coderd's own `coderd_db_query_counts_total`, whose route label is the agent endpoint's) over a minute with the
//! agent idle, printed for BENCHMARKS.md and bounded here.

mod beside;
mod common;

#[path = "../../tests/common/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::Command;

use beside::*;
use common::BIN;

/// The route coderd's query counters name the agent endpoint's statements by.
const AGENT_RPC_ROUTE: &str = "/api/v2/workspaceagents/me/rpc";
/// How long the relay's cost is measured with the agent idle.
const WINDOW: Duration = Duration::from_secs(60);
/// The page the template's app serves (its startup script writes it).
const APP_PAGE: &str = "agentwire beside coderd\n";
/// `coder ssh` and `coder port-forward` dial through coderd, the relay and the agent; the first dial also waits for
/// the agent's startup script (it blocks login).
const CLIENT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coderds_clients_reach_an_agent_agentwire_serves() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut logs = Logs::new(dir);

    let coder_agent = build_coder("agent");
    let coder = build_coder("server");
    let interop = go_interop_binary();
    let db = format!("{}?sslmode=disable", pg::fresh_pg_url().await);

    let coderd_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let coderd_metrics_listen = coderd_metrics.to_string();
    // Its statements, counted per query and route, are how the relay's cost is measured.
    let metrics_flags = ["--prometheus-enable", "--prometheus-address", &coderd_metrics_listen];
    let deployment = Deployment::start(
        dir,
        &mut logs,
        &interop,
        &db,
        &[&metrics_flags[..], &["--prometheus-collect-db-metrics"]].concat(),
    )
    .await;
    let Deployment { coderd_addr, agentwire_addr, front_addr, app_port, .. } = deployment;
    let front = deployment.front.clone();
    let session_token = deployment.setup_str("session_token");
    let username = deployment.setup_str("username");
    let (workspace_id, workspace_name, agent_id, agent_name, agent_token) = (
        deployment.workspace_str("id"),
        deployment.workspace_str("name"),
        deployment.workspace_str("agent_id"),
        deployment.workspace_str("agent_name"),
        deployment.workspace_str("agent_token"),
    );

    let coderd_url = format!("http://{coderd_addr}");
    let mut agentwire = spawn(
        "agentwire",
        Command::new(BIN).args([
            "serve",
            "--coder-db",
            &db,
            "--listen",
            &agentwire_addr.to_string(),
            "--access-url",
            &front,
            // Relay is the default once coderd's address is given.
            "--coderd-url",
            &coderd_url,
        ]),
        &mut logs,
    );
    until_http_ok(&mut agentwire, agentwire_addr, "/healthz", STEP).await;

    let mut agent = AgentProcess::start(&coder_agent, dir, &front, &agent_token, u64::from(app_port));
    logs.add("the agent's log", agent.log_path.clone());

    // The agent's session is agentwire's, and coderd shows the agent connected and ready.
    until_metric(agentwire_addr, "agentwire_sessions_active", |n| n >= 1.0).await;
    let status = [
        "coderd-check",
        "--url",
        &front,
        "--token",
        &session_token,
        "--agent-id",
        &agent_id,
        "--workspace-id",
        &workspace_id,
        "--checks",
        "status",
    ];
    run_interop(&interop, &status).await;

    // Its coordination reached coderd: the relay holds the agent's Coordinate and StreamDERPMaps open on one session
    // to coderd, coderd's coordinator lists the agent as a peer, and agentwire's own coordinator holds none.
    until_metric(agentwire_addr, "agentwire_coderd_relay_streams", |n| n >= 2.0).await;
    assert_eq!(metric(agentwire_addr, "agentwire_coderd_relay_sessions").await, 1.0);
    // One dial served the manifest's DERP map and both streams.
    assert_eq!(metric(agentwire_addr, "agentwire_coderd_relay_dials_total").await, 1.0);
    assert_eq!(metric(agentwire_addr, "agentwire_coderd_relay_manifest_fallbacks_total").await, 0.0);
    assert_eq!(metric(agentwire_addr, "agentwire_coderd_relay_dial_failures_total").await, 0.0);
    assert_eq!(metric(agentwire_addr, "agentwire_tailnet_peers").await, 0.0);
    let cell = format!("<td>{agent_id}</td>");
    let is_peer = |page: &Coordinator| page.peers.contains(&cell);
    until_coordinator_page(front_addr, &session_token, "lists the agent as a peer", is_peer).await;

    // What the relay costs coderd, the agent idle: the statements coderd runs on the agent endpoint's route.
    let before = coderd_query_counts(coderd_metrics).await;
    // Only the relay reaches coderd on this route (the front sends the agent's own to agentwire): what it counts so
    // far is the relay's dial.
    for ((route, query), n) in &before {
        if route == AGENT_RPC_ROUTE {
            eprintln!("relay cost at dial: {query} {n}");
        }
    }
    tokio::time::sleep(WINDOW).await;
    let after = coderd_query_counts(coderd_metrics).await;
    let per_minute = |(route, query): &(String, String), n: f64| {
        let was = before.get(&(route.clone(), query.clone())).copied().unwrap_or(0.0);
        (n - was) * 60.0 / WINDOW.as_secs_f64()
    };
    let mut relay_total = 0.0;
    let mut coderd_total = 0.0;
    for (key, n) in &after {
        let rate = per_minute(key, *n);
        coderd_total += rate;
        if key.0 == AGENT_RPC_ROUTE && rate > 0.0 {
            relay_total += rate;
            eprintln!("relay cost: {} {rate:.1} per minute", key.1);
        }
    }
    eprintln!(
        "relay cost: {relay_total:.1} statements per minute on {AGENT_RPC_ROUTE}; coderd ran {coderd_total:.1} per \
         minute in all (the agent's reinit stream and coderd's own background work included)"
    );
    // coderd's connection monitor: a connection-time update and a latest-build check every 15 s, nothing else.
    let rate = |query: &str| {
        after
            .get(&(AGENT_RPC_ROUTE.to_owned(), query.to_owned()))
            .map_or(0.0, |n| per_minute(&(AGENT_RPC_ROUTE.to_owned(), query.to_owned()), *n))
    };
    for query in ["UpdateWorkspaceAgentConnectionByID", "GetLatestWorkspaceBuildByWorkspaceID"] {
        let n = rate(query);
        assert!((3.0..=5.0).contains(&n), "{query}: {n} per minute, coderd's monitor runs it every 15 s");
    }
    assert!(relay_total <= 10.0, "the relay costs coderd {relay_total} statements per minute");

    let cli =
        CoderCli { bin: coder.clone(), config_dir: dir.join("coder-cli"), url: front.clone(), token: session_token };

    // coder ssh, peer to peer where it can, then with direct connections off, so that every packet goes through the
    // DERP relay coderd's map names (coderd's, through the front).
    let echoed = cli.run(&["ssh", &workspace_name, "--", "echo", "ok"], CLIENT).await;
    assert_eq!(echoed.trim(), "ok");
    let echoed = cli.run(&["--disable-direct-connections", "ssh", &workspace_name, "--", "echo", "ok"], CLIENT).await;
    assert_eq!(echoed.trim(), "ok");

    // coder port-forward to the agent's app, and a GET through it.
    let local = free_port();
    let mut forward = spawn(
        "port-forward",
        &mut cli.command(&["port-forward", &workspace_name, "--tcp", &format!("127.0.0.1:{local}:{app_port}")]),
        &mut logs,
    );
    let local_addr: SocketAddr = format!("127.0.0.1:{local}").parse().unwrap();
    until_http_ok(&mut forward, local_addr, "/", CLIENT).await;
    let (status, response) = http_get_with(local_addr, "/", &[]).await;
    assert!(status == 200 && response.ends_with(APP_PAGE), "the app's page through coder port-forward:\n{response}");
    // coderd's coordinator holds the client's tunnel to the agent while the forward is open.
    let has_tunnel = |page: &Coordinator| page.tunnels.contains(&cell);
    until_coordinator_page(front_addr, &cli.token, "holds a tunnel to the agent", has_tunnel).await;
    drop(forward);

    // coderd's path-based app proxy, as a browser reaches the app with the user's session.
    let app = format!("/@{username}/{workspace_name}.{agent_name}/apps/files/");
    let (status, response) = http_get_with(front_addr, &app, &[("Coder-Session-Token", &cli.token)]).await;
    assert_eq!(status, 200, "GET {app} through coderd's app proxy:\n{response}");
    assert!(response.ends_with(APP_PAGE), "the app's own page through coderd's app proxy:\n{response}");

    // Through all of it agentwire's coordinator held no peer: every client coordinated through coderd.
    assert_eq!(metric(agentwire_addr, "agentwire_tailnet_peers").await, 0.0);
    assert_eq!(metric(agentwire_addr, "agentwire_tailnet_peer_updates_total").await, 0.0);

    // The agent stops: its session to agentwire ends, and with it the relay's to coderd, whose coordinator lets the
    // agent go.
    agent.signal("-TERM");
    let status = tokio::time::timeout(STEP, agent.child.wait()).await.expect("the agent exits in time").unwrap();
    assert!(status.success(), "the agent exits cleanly on SIGTERM: {status}");
    until_metric(agentwire_addr, "agentwire_sessions_active", |n| n == 0.0).await;
    until_metric(agentwire_addr, "agentwire_coderd_relay_sessions", |n| n == 0.0).await;
    assert_eq!(metric(agentwire_addr, "agentwire_coderd_relay_streams").await, 0.0);
    // (coderd's own tailnet, the app proxy's, keeps its tunnel to the agent: only the peer goes.)
    until_coordinator_page(front_addr, &cli.token, "lets the agent go", |page| !is_peer(page)).await;

    agentwire.signal("-TERM");
    let status = tokio::time::timeout(STEP, agentwire.child.wait()).await.expect("agentwire exits in time").unwrap();
    assert!(status.success(), "agentwire exits 0 on SIGTERM: {status}");
    logs.passed();
}

/// coderd's coordinator debug page (`/api/v2/debug/coordinator`, owners only), cut into its two tables.
struct Coordinator {
    peers: String,
    tunnels: String,
}

/// Waits until coderd's coordinator debug page satisfies `ok`.
async fn until_coordinator_page(front: SocketAddr, token: &str, what: &str, ok: impl Fn(&Coordinator) -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let (status, page) = http_get_with(front, "/api/v2/debug/coordinator", &[("Coder-Session-Token", token)]).await;
        assert_eq!(status, 200, "coderd's coordinator page:\n{page}");
        let (peers, tunnels) = page
            .split_once("id=tunnels")
            .unwrap_or_else(|| panic!("coderd's coordinator page has no tunnels:\n{page}"));
        if ok(&Coordinator { peers: peers.to_owned(), tunnels: tunnels.to_owned() }) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "coderd's coordinator never {what}:\n{page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// coderd's `coderd_db_query_counts_total`, by (route, query), summed over methods.
async fn coderd_query_counts(addr: SocketAddr) -> BTreeMap<(String, String), f64> {
    let (status, page) = http_get_with(addr, "/metrics", &[]).await;
    assert_eq!(status, 200, "coderd's Prometheus endpoint:\n{page}");
    let mut counts = BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("coderd_db_query_counts_total{") else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=\""))?.strip_suffix('"'))
                .map(str::to_owned)
        };
        let (Some(route), Some(query), Ok(value)) = (label("route"), label("query"), value.parse::<f64>()) else {
            continue;
        };
        *counts.entry((route, query)).or_insert(0.0) += value;
    }
    assert!(!counts.is_empty(), "coderd counts no queries: is --prometheus-collect-db-metrics on?\n{page}");
    counts
}
