//! The real `coder agent` (Coder's own slim build at the version tests/go/go.mod pins, built by
//! `scripts/build-coder.sh agent`) lives its whole life against agentwire with the shipped example definition
//! (`examples/agent.toml`): it starts, runs its startup script, reports metadata, checks its app's health and sends
//! stats; a client built from Coder's own packages runs a command over its SSH server and forwards a port to its app,
//! directly and through the embedded DERP relay; agentwire is stopped with SIGTERM and started again and the agent
//! comes back with nothing lost; then the agent is stopped and runs its shutdown script. Everything is asserted from
//! the database and from the agent's own log, which must hold no error the server caused. Once on SQLite, once on
//! PostgreSQL.

mod common;
// Not in `common`: the beside-coderd tests load it through `beside`, beside `common`.
#[path = "common/coder_agent.rs"]
mod coder_agent;

#[path = "../../tests/common/pg.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use common::{ServerProcess, BIN};

/// How long the agent may take for each step. Generous: the agent runs real scripts on a machine that may be busy
/// compiling, and the slowest step waits for two metadata collections 10 s apart.
const AGENT_WAIT: Duration = Duration::from_secs(120);

/// Entries of the agent's log at warning level or above that are not the server's doing, or that only a deliberate
/// stop of the server causes: every needle of an entry must be in the log entry, each says why it is tolerated, and
/// an entry marked per restart may appear at most once for each time agentwire is stopped ([`SERVER_RESTARTS`]).
struct Tolerated {
    needles: &'static [&'static str],
    per_restart: bool,
    why: &'static str,
}

const TOLERATED: &[Tolerated] = &[
    Tolerated {
        needles: &["failed to wait for agent reinitialization instructions", "- EOF"],
        per_restart: true,
        why: "agentwire was stopped on purpose: the agent reads every end of its reinit stream as an error \
              (agentsdk.go:702, :810), so a coderd restart logs the same",
    },
    Tolerated {
        needles: &["failed to close remote coordination", "send disconnect"],
        per_restart: true,
        why: "agentwire was stopped on purpose: when its connection ends the agent closes its coordination by \
              sending Disconnect on it (controllers.go:242, agent.go:1723), which fails once the server has hung up; \
              a coderd restart logs the same",
    },
    Tolerated {
        needles: &["failed to wait for agent reinitialization instructions", "terminated signal received"],
        per_restart: false,
        why: "the agent's own SIGTERM cancelling its reinit wait",
    },
    Tolerated {
        needles: &["reporting script completed: session shutdown"],
        per_restart: false,
        why: "on SIGTERM the agent closes its own session after reporting `off` while its goroutine still reports \
              the shutdown script's completion (agentscripts.go:390, agent.go:2008); agentwire then sees the \
              agent's reset",
    },
    Tolerated {
        needles: &["use of closed network connection"],
        per_restart: false,
        why: "the agent's own tailnet listener, closed while it shuts down",
    },
    Tolerated {
        needles: &["context canceled"],
        per_restart: false,
        why: "the agent's loops ending while it shuts down",
    },
];

/// How often agentwire is stopped while the agent runs.
const SERVER_RESTARTS: usize = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_coder_agent_lives_its_life_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("agentwire.db").display());
    real_agent_life(dir.path(), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_coder_agent_lives_its_life_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = pg::fresh_pg_url().await;
    real_agent_life(dir.path(), &db).await;
}

async fn real_agent_life(dir: &Path, db: &str) {
    let coder = coder_agent_binary();
    // The example's app listens on a fixed port; each run gets its own so the two databases' runs can overlap.
    let app_port = free_port();
    let spec = std::fs::read_to_string(repo_root().join("examples/agent.toml")).unwrap().replace("13380", &app_port);
    let spec_path = dir.join("agent.toml");
    std::fs::write(&spec_path, spec).unwrap();

    let created = Command::new(BIN)
        .args(["agent", "create", "--db", db, "--workspace", "real", "--name", "main", "--json", "--spec"])
        .arg(&spec_path)
        .output()
        .await
        .unwrap();
    assert!(created.status.success(), "agent create --spec: {}", String::from_utf8_lossy(&created.stderr));
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let agent_id = created["agent_id"].as_str().unwrap().to_owned();
    let db_view = Db::open(db, &agent_id).await;

    let serve_flags = ["--stats-report-interval", "5"];
    let mut server = ServerProcess::start(db, "127.0.0.1:0", &serve_flags).await.expect("agentwire starts");
    let addr = server.addr;
    let mut agent = AgentProcess::start(&coder, dir, &format!("http://{addr}"), &token);

    // Start-up: READY with both timestamps, the startup script's lines under its log source.
    db_view.until("lifecycle ready", |d| async move { d.lifecycle().await == "ready" }).await;
    let (started_at, ready_at) = db_view.lifecycle_times().await;
    assert!(started_at.is_some() && ready_at.is_some(), "started_at {started_at:?}, ready_at {ready_at:?}");
    let startup = db_view.script_log_lines("Startup").await;
    assert!(
        startup.iter().any(|line| line.contains("the files app answers; startup done")),
        "the startup script's output is in the logs under its log source: {startup:?}"
    );

    // Metadata: each key collected, then collected again.
    assert_eq!(db_view.metadata().await.len(), 2, "both metadata items are described");
    db_view
        .until("every metadata key collected once", |d| async move {
            d.metadata().await.iter().all(|(_, at, _)| !at.is_empty() && at != "0")
        })
        .await;
    let first = db_view.metadata().await;
    db_view
        .until("every metadata key collected twice", |d| {
            let first = first.clone();
            async move {
                let now = d.metadata().await;
                now.iter()
                    .all(|(key, at, _)| first.iter().any(|(k, first_at, _)| k == key && first_at != at && at != "0"))
            }
        })
        .await;
    // The app's health check passes against the server the startup script started.
    db_view.until("the files app is healthy", |d| async move { d.app_health("files").await == "healthy" }).await;
    db_view.until("stats rows stored", |d| async move { d.stats_rows().await > 0 }).await;

    // The data plane: a client built from Coder's own packages reaches the workspace through agentwire.
    client_reaches_workspace(db, addr, &agent_id, &app_port).await;

    // agentwire stops (SIGTERM) and comes back on the same address: the agent reconnects with its backoff, and what
    // was answered before is still there.
    let logs_before = db_view.log_count().await;
    server.signal("-TERM");
    assert!(server.wait().await.success(), "agentwire exits 0 on SIGTERM");
    let mut server = restart_on(db, addr, &serve_flags).await;
    until_metric(addr, "agentwire_sessions_active", |n| n >= 1.0).await;
    assert_eq!(db_view.lifecycle().await, "ready", "a reconnecting agent stays ready");
    assert!(db_view.log_count().await >= logs_before, "no log line lost across the restart");
    let after_restart = db_view.metadata().await;
    db_view
        .until("metadata collected again after the restart", |d| {
            let before = after_restart.clone();
            async move {
                let now = d.metadata().await;
                now.iter().any(|(key, at, _)| before.iter().any(|(k, then, _)| k == key && then != at))
            }
        })
        .await;

    // The agent stops: its shutdown script runs and it reports off.
    agent.signal("-TERM");
    let status = tokio::time::timeout(AGENT_WAIT, agent.child.wait()).await.expect("the agent exits in time").unwrap();
    assert!(status.success(), "the agent exits cleanly on SIGTERM: {status}");
    db_view.until("lifecycle off", |d| async move { d.lifecycle().await == "off" }).await;
    let shutdown = db_view.script_log_lines("Shutdown").await;
    assert!(shutdown.iter().any(|line| line.contains("agentwire demo: bye")), "shutdown script output: {shutdown:?}");

    server.signal("-TERM");
    assert!(server.wait().await.success());
    db_view.close().await;

    let log = std::fs::read_to_string(&agent.log_path).unwrap();
    let entries = problem_entries(&log);
    let explains = |t: &Tolerated, entry: &str| t.needles.iter().all(|n| entry.contains(n));
    let unexplained: Vec<&String> =
        entries.iter().filter(|entry| !TOLERATED.iter().any(|t| explains(t, entry))).collect();
    assert!(
        unexplained.is_empty(),
        "the agent logged problems no entry of TOLERATED explains:\n{}\n\n(full log: {})",
        unexplained.iter().map(|e| e.as_str()).collect::<Vec<_>>().join("\n"),
        agent.log_path.display()
    );
    for tolerated in TOLERATED.iter().filter(|t| t.per_restart) {
        let seen = entries.iter().filter(|entry| explains(tolerated, entry)).count();
        assert!(
            seen <= SERVER_RESTARTS,
            "{:?} logged {seen} times for {SERVER_RESTARTS} restart; it is allowed only because {}",
            tolerated.needles,
            tolerated.why
        );
    }
}

/// The agent's log entries (a line and its indented continuation lines) at warning level or above.
fn problem_entries(log: &str) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for line in log.lines() {
        match entries.last_mut() {
            Some(entry) if line.starts_with(char::is_whitespace) => {
                entry.push('\n');
                entry.push_str(line);
            }
            _ => entries.push(line.to_owned()),
        }
    }
    entries.retain(|entry| {
        let head = entry.lines().next().unwrap_or_default();
        ["[warn]", "[erro]", "[crit]", "[fata]"].iter().any(|level| head.contains(level))
    });
    entries
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The slim `coder` binary, built once and cached under target/coder/. A build that cannot happen fails the test.
fn coder_agent_binary() -> PathBuf {
    let out = std::process::Command::new(repo_root().join("scripts/build-coder.sh"))
        .arg("agent")
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/build-coder.sh runs");
    assert!(out.status.success(), "scripts/build-coder.sh agent failed: the real agent could not be built");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port().to_string()
}

/// Starts the server again on `addr`, retrying while the old socket's port is not yet free.
async fn restart_on(db: &str, addr: std::net::SocketAddr, flags: &[&str]) -> ServerProcess {
    let deadline = tokio::time::Instant::now() + AGENT_WAIT;
    loop {
        if let Some(server) = ServerProcess::start(db, &addr.to_string(), flags).await {
            return server;
        }
        assert!(tokio::time::Instant::now() < deadline, "agentwire could not listen on {addr} again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the `/metrics` gauge `name` satisfies `ok`.
async fn until_metric(addr: std::net::SocketAddr, name: &str, ok: impl Fn(f64) -> bool) {
    let deadline = tokio::time::Instant::now() + AGENT_WAIT;
    loop {
        let body = http_get(addr, "/metrics").await;
        let value = body
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok()))
            .unwrap_or(f64::NAN);
        if ok(value) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    body
}

/// The real agent as a child process, its output in a file the test reads at the end.
struct AgentProcess {
    child: Child,
    log_path: PathBuf,
}

impl AgentProcess {
    fn start(coder: &Path, dir: &Path, url: &str, token: &str) -> AgentProcess {
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = coder_agent::coder_agent_command(coder, dir, &dir.join("tmp"), url, token)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the coder agent starts");
        AgentProcess { child, log_path }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the agent is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// A read-only view of one agent's rows, for either dialect. Every value is read as text, so the same SQL serves
/// SQLite (ids and times stored as text and integers) and PostgreSQL (uuid, timestamptz, enums).
#[derive(Clone)]
struct Db {
    pool: Pool,
    agent: String,
}

#[derive(Clone)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    async fn open(url: &str, agent: &str) -> Db {
        let pool = if url.starts_with("postgres") {
            Pool::Postgres(sqlx::PgPool::connect(url).await.unwrap())
        } else {
            Pool::Sqlite(sqlx::SqlitePool::connect(url).await.unwrap())
        };
        uuid::Uuid::parse_str(agent).expect("the agent id is a UUID, safe to put in SQL text");
        Db { pool, agent: agent.to_owned() }
    }

    async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// Rows of `sql` (where `{agent}` stands for the agent id as text), every column as optional text.
    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let sql = sql.replace("{agent}", &self.agent);
        fn collect<R: Row>(rows: Vec<R>) -> Vec<Vec<Option<String>>>
        where
            for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            usize: sqlx::ColumnIndex<R>,
        {
            rows.into_iter()
                .map(|row| (0..row.len()).map(|i| row.try_get::<Option<String>, _>(i).unwrap()).collect())
                .collect()
        }
        match &self.pool {
            Pool::Sqlite(pool) => collect(sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap()),
            Pool::Postgres(pool) => collect(sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap()),
        }
    }

    async fn one(&self, sql: &str) -> Option<String> {
        self.rows(sql).await.into_iter().next().and_then(|row| row.into_iter().next().flatten())
    }

    async fn lifecycle(&self) -> String {
        self.one("SELECT CAST(lifecycle_state AS TEXT) FROM workspace_agents WHERE CAST(id AS TEXT) = '{agent}'")
            .await
            .unwrap_or_default()
    }

    async fn lifecycle_times(&self) -> (Option<String>, Option<String>) {
        let row = self
            .rows(
                "SELECT CAST(started_at AS TEXT), CAST(ready_at AS TEXT) FROM workspace_agents \
                 WHERE CAST(id AS TEXT) = '{agent}'",
            )
            .await;
        let mut row = row.into_iter().next().unwrap_or_default().into_iter();
        (row.next().flatten(), row.next().flatten())
    }

    /// Output lines logged under the log source of the script named `display_name`.
    async fn script_log_lines(&self, display_name: &str) -> Vec<String> {
        self.rows(&format!(
            "SELECT l.output FROM workspace_agent_logs l \
             JOIN workspace_agent_log_sources s ON s.id = l.log_source_id AND s.workspace_agent_id = l.agent_id \
             WHERE CAST(l.agent_id AS TEXT) = '{{agent}}' AND s.display_name = '{display_name}' ORDER BY l.id"
        ))
        .await
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect()
    }

    async fn log_count(&self) -> usize {
        let n = self
            .one("SELECT CAST(COUNT(*) AS TEXT) FROM workspace_agent_logs WHERE CAST(agent_id AS TEXT) = '{agent}'");
        n.await.and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// (key, collected_at, value) of every metadata item.
    async fn metadata(&self) -> Vec<(String, String, String)> {
        self.rows(
            "SELECT key, CAST(collected_at AS TEXT), value FROM workspace_agent_metadata \
             WHERE CAST(workspace_agent_id AS TEXT) = '{agent}' ORDER BY key",
        )
        .await
        .into_iter()
        .map(|row| {
            let mut row = row.into_iter().map(Option::unwrap_or_default);
            (row.next().unwrap_or_default(), row.next().unwrap_or_default(), row.next().unwrap_or_default())
        })
        .collect()
    }

    async fn app_health(&self, slug: &str) -> String {
        self.one(&format!(
            "SELECT CAST(health AS TEXT) FROM workspace_apps WHERE CAST(agent_id AS TEXT) = '{{agent}}' AND slug = '{slug}'"
        ))
        .await
        .unwrap_or_default()
    }

    async fn stats_rows(&self) -> usize {
        let n = self
            .one("SELECT CAST(COUNT(*) AS TEXT) FROM workspace_agent_stats WHERE CAST(agent_id AS TEXT) = '{agent}'");
        n.await.and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Polls `ok` until it holds, failing the test after [`AGENT_WAIT`].
    async fn until<F, Fut>(&self, what: &str, ok: F)
    where
        F: Fn(Db) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + AGENT_WAIT;
        while !ok(self.clone()).await {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

// ---- The data plane: Coder's own client (the Go driver's `interop ssh`) through agentwire to the real agent ----

/// Who `agent create` makes the owner when `--owner` is not given.
const DEFAULT_OWNER: &str = "admin";

/// `interop ssh` (codersdk/workspacesdk's DialAgent: the connection info endpoint, the client coordinate endpoint,
/// tailnet) runs `echo NONCE` over the agent's SSH server and GETs the app through a port-forward, first over
/// whatever path tailnet picks, then with direct connections blocked, through the embedded DERP relay.
async fn client_reaches_workspace(db: &str, addr: std::net::SocketAddr, agent_id: &str, app_port: &str) {
    let token =
        Command::new(BIN).args(["user", "token", "--db", db, "--username", DEFAULT_OWNER]).output().await.unwrap();
    assert!(token.status.success(), "user token: {}", String::from_utf8_lossy(&token.stderr));
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let url = format!("http://{addr}");
    for relay_only in [false, true] {
        let mut args = vec!["ssh", "--url", &url, "--token", &token, "--agent-id", agent_id, "--port", app_port];
        if relay_only {
            args.push("--disable-direct");
        }
        let run = tokio::time::timeout(AGENT_WAIT, Command::new(go_interop_binary()).args(&args).output())
            .await
            .expect("interop ssh finishes in time")
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        let what =
            format!("interop ssh (relay only: {relay_only}):\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
        assert!(run.status.success(), "{what}");
        let steps: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let step = |name: &str| steps.iter().find(|s| s["step"] == name).cloned().unwrap_or_default();
        for name in ["dial", "ping", "ssh", "port-forward"] {
            assert_eq!(step(name)["ok"], true, "step {name}: {what}");
        }
        assert_eq!(step("port-forward")["status"], 200, "{what}");
        if relay_only {
            assert_eq!(step("dial")["block_endpoints"], true, "{what}");
            assert_eq!(step("ping")["p2p"], false, "{what}");
            assert_eq!(step("ping")["derp_region_id"], 999, "through the embedded relay's region: {what}");
        }
    }
}

/// The Go driver (tests/go), built once per test process with scripts/build-go-interop.sh.
fn go_interop_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = repo_root().join("target/go-interop/interop");
            let status = std::process::Command::new("bash")
                .arg(repo_root().join("scripts/build-go-interop.sh"))
                .arg(&out)
                .status()
                .expect("scripts/build-go-interop.sh runs");
            assert!(status.success(), "building the Go interop driver failed: Go and its module proxy are required");
            out
        })
        .clone()
}
