//! agentwire beside a real coderd, as an operator deploys it: coderd v2.30.0 (`scripts/coderd.sh`, Coder's own AGPL
//! server) and `agentwire serve --coder-db` on one PostgreSQL database, behind the nginx front of
//! `deploy/nginx/beside-coderd.conf` (`scripts/front-nginx.sh`), which sends only the agents'
//! `/api/v2/workspaceagents/me/rpc` to agentwire and everything else to coderd. coderd makes the user, template and
//! workspace (`interop coderd-setup`); the real `coder agent` is given the front's URL and its build's token; then
//! everything is asserted through coderd's own API and Coder's own queries (`interop coderd-check`): what coderd shows
//! of an agent served by agentwire must be what it shows of one it serves itself (the checks were proven against
//! coderd serving the agent). Last the workspace is stopped through coderd: agentwire must end the agent's session
//! and refuse its reconnects, as coderd does.

mod common;

#[path = "../../tests/common/pg.rs"]
mod pg;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use common::BIN;

/// coderd migrates an empty database before it answers; on two busy cores that takes a while.
const CODERD_START: Duration = Duration::from_secs(240);
/// Each step that waits on a real agent, coderd or a provisioner job.
const STEP: Duration = Duration::from_secs(180);
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

    let front_port = free_port();
    let coderd_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // agentwire starts after coderd has migrated the database and made the workspace, but the front names it from the
    // start: its port is picked now.
    let agentwire_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let front = format!("http://127.0.0.1:{front_port}");
    let front_addr: SocketAddr = format!("127.0.0.1:{front_port}").parse().unwrap();

    let coderd_dir = dir.join("coderd");
    let mut coderd = spawn(
        "coderd",
        Command::new(repo_root().join("scripts/coderd.sh")).args([
            "--postgres-url",
            &db,
            "--http-address",
            &coderd_addr.to_string(),
            "--access-url",
            &front,
            "--dir",
            coderd_dir.to_str().unwrap(),
        ]),
        &mut logs,
    );
    logs.add("coderd's log", coderd_dir.join("coderd.log"));
    until_http_ok(&mut coderd, coderd_addr, "/api/v2/buildinfo", CODERD_START).await;

    let front_dir = dir.join("front");
    let mut nginx = spawn(
        "front",
        Command::new(repo_root().join("scripts/front-nginx.sh")).args([
            "--agentwire",
            &agentwire_addr.to_string(),
            "--coderd",
            &coderd_addr.to_string(),
            "--listen",
            &front_addr.to_string(),
            "--dir",
            front_dir.to_str().unwrap(),
        ]),
        &mut logs,
    );
    logs.add("the front's error log", front_dir.join("error.log"));
    let access_log = front_dir.join("access.log");
    // nginx is installed on first use: apt-get counts against this wait.
    until_http_ok(&mut nginx, front_addr, "/api/v2/buildinfo", STEP).await;

    let setup_path = dir.join("setup.json");
    run_interop(
        &interop,
        &[
            "coderd-setup",
            "--url",
            &front,
            "--postgres-url",
            &db,
            "--out",
            setup_path.to_str().unwrap(),
            "--app-port",
            &free_port().to_string(),
        ],
    )
    .await;
    let setup: serde_json::Value = serde_json::from_slice(&std::fs::read(&setup_path).unwrap()).unwrap();
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_else(|| panic!("setup has no {k}")).to_owned();
    let session_token = field(&setup, "session_token");
    let workspace = &setup["workspaces"][0];
    let (workspace_id, agent_id, agent_token) =
        (field(workspace, "id"), field(workspace, "agent_id"), field(workspace, "agent_token"));
    let app_port = setup["app_port"].as_u64().expect("setup has the app port");

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
            &format!("ws://127.0.0.1:{front_port}"),
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

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Now as RFC 3339 UTC with nanoseconds, from the system clock coderd's rows are compared against.
fn now_rfc3339() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"]).output().unwrap();
    assert!(out.status.success(), "date failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Coder's own binaries at the version tests/go/go.mod pins, built once and cached under target/coder/. A build that
/// cannot happen fails the test.
fn build_coder(kind: &str) -> PathBuf {
    let out = std::process::Command::new(repo_root().join("scripts/build-coder.sh"))
        .arg(kind)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/build-coder.sh runs");
    assert!(out.status.success(), "scripts/build-coder.sh {kind} failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The Go driver (tests/go), built with scripts/build-go-interop.sh.
fn go_interop_binary() -> PathBuf {
    let out = repo_root().join("target/go-interop/interop");
    let status = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/build-go-interop.sh"))
        .arg(&out)
        .status()
        .expect("scripts/build-go-interop.sh runs");
    assert!(status.success(), "building the Go interop driver failed: Go and its module proxy are required");
    out
}

/// Runs the Go driver to its end (bounded), failing the test with its output unless it exits 0; its stdout.
async fn run_interop(interop: &Path, args: &[&str]) -> String {
    let run = tokio::time::timeout(STEP + Duration::from_secs(60), Command::new(interop).args(args).output())
        .await
        .unwrap_or_else(|_| panic!("interop {} did not finish in time", args[0]))
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "interop {} failed ({}):\n{stdout}\n{}",
        args[0],
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// One `interop coderd-check` step: every check it ran must have passed.
async fn coderd_check(interop: &Path, checks: &str, args: &[String]) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = tokio::time::timeout(STEP + Duration::from_secs(60), Command::new(interop).args(&args).output())
        .await
        .unwrap_or_else(|_| panic!("coderd-check {checks} did not finish in time"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let what = format!("coderd-check {checks} ({}):\n{stdout}\n{}", run.status, String::from_utf8_lossy(&run.stderr));
    let lines: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    for name in checks.split(',') {
        let line = lines.iter().find(|l| l["check"] == name).unwrap_or_else(|| panic!("no line for {name}: {what}"));
        assert_eq!(line["pass"], true, "check {name} failed: {what}");
    }
    assert!(run.status.success(), "{what}");
    eprintln!("{}", stdout.trim_end());
}

/// A server child process, its output in a file, killed if dropped.
fn spawn(name: &str, cmd: &mut Command, logs: &mut Logs) -> Server {
    let path = logs.dir.join(format!("{name}.out"));
    let out = std::fs::File::create(&path).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
    logs.add(&format!("{name}'s output"), path);
    Server { name: name.to_owned(), child }
}

struct Server {
    name: String,
    child: Child,
}

impl Server {
    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// Waits until `GET path` on `addr` answers 200, failing at once if the server exits first.
async fn until_http_ok(server: &mut Server, addr: SocketAddr, path: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("{} exited ({status}) before {path} answered on {addr}", server.name);
        }
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), http_get(addr, path)).await {
            if response.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{} did not answer {path} on {addr} in {wait:?}", server.name);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut body = String::new();
    tcp.read_to_string(&mut body).await?;
    Ok(body)
}

/// Waits until agentwire's `/metrics` gauge `name` satisfies `ok`.
async fn until_metric(addr: SocketAddr, name: &str, ok: impl Fn(f64) -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let body = http_get(addr, "/metrics").await.unwrap_or_default();
        let value = body
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or(f64::NAN);
        if ok(value) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the file holds a line `want` accepts.
async fn until_log_line(path: &Path, what: &str, want: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let file = tokio::fs::File::open(path).await.unwrap();
        let mut lines = BufReader::new(file).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            if want(&line) {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{} never logged {what}", path.display());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The real agent as a child process, env as in real_agent.rs, its output in a file.
struct AgentProcess {
    child: Child,
    log_path: PathBuf,
    /// Where the startup script keeps the pid of the app's server (the template's startup script).
    app_pid_file: PathBuf,
}

impl AgentProcess {
    fn start(coder: &Path, dir: &Path, url: &str, token: &str, app_port: u64) -> AgentProcess {
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let tmp = dir.join("agent-tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let child = Command::new(coder)
            .arg("agent")
            .env("CODER_AGENT_URL", url)
            .env("CODER_AGENT_TOKEN", token)
            .env("CODER_AGENT_AUTH", "token")
            .env("CODER_AGENT_LOG_DIR", dir.join("agent-logs"))
            .env("CODER_AGENT_SCRIPT_DATA_DIR", dir.join("agent-scripts"))
            .env("CODER_AGENT_DEBUG_ADDRESS", "127.0.0.1:0")
            .env("CODER_AGENT_PPROF_ADDRESS", "127.0.0.1:0")
            .env("CODER_AGENT_PROMETHEUS_ADDRESS", "127.0.0.1:0")
            // No Docker daemon here.
            .env("CODER_AGENT_DEVCONTAINERS_ENABLE", "false")
            // The template's scripts keep their files under $TMPDIR: one directory per run.
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the coder agent starts");
        let app_pid_file = tmp.join(format!("agentwire-beside-{app_port}")).join("http.pid");
        AgentProcess { child, log_path, app_pid_file }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the agent is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for AgentProcess {
    /// A test that fails before the agent's clean stop kills the agent, so its shutdown script never stops the app's
    /// server: this does.
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.app_pid_file) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// The children's logs, printed (their ends) when the test fails, so a failure says what each side saw.
struct Logs {
    dir: PathBuf,
    files: Vec<(String, PathBuf)>,
    passed: bool,
}

impl Logs {
    fn new(dir: &Path) -> Logs {
        Logs { dir: dir.to_owned(), files: Vec::new(), passed: false }
    }

    fn add(&mut self, what: &str, path: PathBuf) {
        self.files.push((what.to_owned(), path));
    }

    fn passed(&mut self) {
        self.passed = true;
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        if self.passed {
            return;
        }
        const TAIL: usize = 60;
        for (what, path) in &self.files {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(TAIL)..];
            eprintln!("\n==== {what} ({}), last {} lines ====\n{}", path.display(), tail.len(), tail.join("\n"));
        }
    }
}
