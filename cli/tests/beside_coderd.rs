//! agentwire beside a real coderd, as an operator deploys it: coderd v2.30.0 (`scripts/coderd.sh`, Coder's own AGPL
//! server) and `agentwire serve --coder-db` on one PostgreSQL database, behind the nginx front of
//! `deploy/nginx/beside-coderd.conf` (`scripts/front-nginx.sh`), which sends only the agents'
//! `/api/v2/workspaceagents/me/rpc` to agentwire and everything else to coderd. coderd makes the user, template and
//! workspace (`interop coderd-setup`); the real `coder agent` is given the front's URL and its build's token; then
//! everything is asserted through coderd's own API and Coder's own queries (`interop coderd-check`): what coderd shows
//! of an agent served by agentwire must be what it shows of one it serves itself (the checks were proven against
//! coderd serving the agent). Last the workspace is stopped through coderd: agentwire must end the agent's session
//! and refuse its reconnects, as coderd does.

mod beside;
mod common;

#[path = "../../tests/common/pg.rs"]
mod pg;

use tokio::process::Command;

use beside::*;
use common::BIN;
/// How long each `coderd-check` may poll. coderd marks a workspace used in batches a minute apart, so the usage
/// check needs more than a minute.
const CHECK_DEADLINE: &str = "150s";
/// Connected and ready must hold for longer than coderd's inactivity timeout (twice its 15 s connection update
/// period), so the server must keep the agent's connection time fresh, not just set it once.
const STABLE: &str = "35s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_beside_real_coderd() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut logs = Logs::new(dir);

    // Every tool first, so that a build (minutes, once) is not counted against a server's start.
    let coder_agent = build_coder("agent");
    build_coder("server");
    let interop = go_interop_binary();
    // lib/pq (coderd and the Go checks) asks for TLS unless told not to; the throwaway cluster has none.
    let db = format!("{}?sslmode=disable", pg::fresh_pg_url().await);

    let deployment = Deployment::start(dir, &mut logs, &interop, &db, &[]).await;
    let Deployment { coderd_addr, agentwire_addr, front_addr, .. } = deployment;
    let (front, access_log) = (deployment.front.clone(), deployment.access_log.clone());
    let session_token = deployment.setup_str("session_token");
    let (workspace_id, agent_id, agent_token) =
        (deployment.workspace_str("id"), deployment.workspace_str("agent_id"), deployment.workspace_str("agent_token"));
    let app_port = u64::from(deployment.app_port);

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
        ]),
        &mut logs,
    );
    until_http_ok(&mut agentwire, agentwire_addr, "/healthz", STEP).await;

    let mut agent = AgentProcess::start(&coder_agent, dir, &front, &agent_token, app_port);
    logs.add("the agent's log", agent.log_path.clone());

    let check = |checks: &'static str, extra: Vec<String>| {
        let mut args = vec![
            "coderd-check".to_owned(),
            "--url".to_owned(),
            front.clone(),
            "--token".to_owned(),
            session_token.clone(),
            "--agent-id".to_owned(),
            agent_id.clone(),
            "--workspace-id".to_owned(),
            workspace_id.clone(),
            "--postgres-url".to_owned(),
            db.clone(),
            "--deadline".to_owned(),
            CHECK_DEADLINE.to_owned(),
            "--checks".to_owned(),
            checks.to_owned(),
        ];
        args.extend(extra);
        let interop = interop.clone();
        async move { coderd_check(&interop, checks, &args).await }
    };

    // The agent's session is agentwire's: coderd is not where it connected.
    until_metric(agentwire_addr, "agentwire_sessions_active", |n| n >= 1.0).await;
    check("status", vec!["--stable".into(), STABLE.into()]).await;
    check("logs", vec![]).await;
    check("metadata", vec![]).await;
    check("app", vec![]).await;

    // A stats report with a session, through the front on the agent's token, as the agent sends one while a user is
    // connected: coderd must show the workspace used and its deadline bumped.
    let since = now_rfc3339();
    let stats = run_interop(
        &interop,
        &[
            "agent",
            "--url",
            &format!("ws://{front_addr}"),
            "--token",
            &agent_token,
            "--token-cookie",
            "--rpc",
            "UpdateStats",
        ],
    )
    .await;
    assert!(stats.contains(r#""ok":true"#), "UpdateStats through the front failed:\n{stats}");
    check("usage", vec!["--since".into(), since]).await;
    check("db", vec!["--expect-stats".into()]).await;
    // That report's session ended and set disconnected_at; the agent's own session must make coderd show it
    // connected again, as coderd's per-session connection updates do within their 15 s period.
    check("status", vec![]).await;

    // A user stops the workspace through coderd: the agent's build is no longer the latest, so agentwire ends its
    // session and refuses its token, and coderd shows it disconnected.
    run_interop(
        &interop,
        &["coderd-stop", "--url", &front, "--token", &session_token, "--workspace-id", &workspace_id],
    )
    .await;
    check("stopped", vec!["--agent-token".into(), agent_token.clone()]).await;
    until_metric(agentwire_addr, "agentwire_sessions_active", |n| n == 0.0).await;
    // The real agent keeps redialling; each attempt reaches agentwire through the front and is refused there.
    let refused = format!("GET /api/v2/workspaceagents/me/rpc 401 {agentwire_addr}");
    until_log_line(&access_log, &refused, |l| l == refused).await;

    // The agent stops cleanly: its shutdown script runs and takes the app's server with it.
    agent.signal("-TERM");
    let status = tokio::time::timeout(STEP, agent.child.wait()).await.expect("the agent exits in time").unwrap();
    assert!(status.success(), "the agent exits cleanly on SIGTERM: {status}");
    agentwire.signal("-TERM");
    let status = tokio::time::timeout(STEP, agentwire.child.wait()).await.expect("agentwire exits in time").unwrap();
    assert!(status.success(), "agentwire exits 0 on SIGTERM: {status}");

    // Where the front sent what: every agent RPC to agentwire, nothing else there. nginx logs a long-lived request
    // (an upgrade, the agent's reinit stream) when it ends, so these wait for the agent's to be logged.
    let upgraded = format!("GET /api/v2/workspaceagents/me/rpc 101 {agentwire_addr}");
    until_log_line(&access_log, "the agent's session through the front to agentwire", |l| l == upgraded).await;
    let coderd_suffix = format!(" {coderd_addr}");
    let reinit = |l: &str| l.starts_with("GET /api/v2/workspaceagents/me/reinit ") && l.ends_with(&coderd_suffix);
    until_log_line(&access_log, "the agent's reinit stream through the front to coderd", reinit).await;
    let access = std::fs::read_to_string(&access_log).unwrap();
    let agentwire_suffix = format!(" {agentwire_addr}");
    for line in access.lines() {
        let rpc = line.starts_with("GET /api/v2/workspaceagents/me/rpc ");
        let upstream = if rpc { &agentwire_suffix } else { &coderd_suffix };
        assert!(line.ends_with(upstream.as_str()), "the front routed wrongly: {line}");
    }

    logs.passed();
}
