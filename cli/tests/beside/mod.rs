//! The harness of the tests beside a real coderd (`beside_coderd.rs`, `beside_coderd_reach.rs`): Coder's own binaries
//! and the Go driver, built once; child processes killed when dropped; bounded waits on HTTP answers, metrics and log
//! lines; the children's logs printed when a test fails.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

#[path = "../common/coder_agent.rs"]
mod coder_agent;
pub use coder_agent::coder_agent_command;

/// coderd migrates an empty database before it answers; on two busy cores that takes a while.
pub const CODERD_START: Duration = Duration::from_secs(240);
/// Each step that waits on a real agent, coderd or a provisioner job.
pub const STEP: Duration = Duration::from_secs(180);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Now as RFC 3339 UTC with nanoseconds, from the system clock coderd's rows are compared against.
pub fn now_rfc3339() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%NZ"]).output().unwrap();
    assert!(out.status.success(), "date failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Coder's own binaries at the version tests/go/go.mod pins, built once and cached under target/coder/. A build that
/// cannot happen fails the test.
pub fn build_coder(kind: &str) -> PathBuf {
    let out = std::process::Command::new(repo_root().join("scripts/build-coder.sh"))
        .arg(kind)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/build-coder.sh runs");
    assert!(out.status.success(), "scripts/build-coder.sh {kind} failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The Go driver (tests/go), built with scripts/build-go-interop.sh.
pub fn go_interop_binary() -> PathBuf {
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
pub async fn run_interop(interop: &Path, args: &[&str]) -> String {
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
pub async fn coderd_check(interop: &Path, checks: &str, args: &[String]) {
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
pub fn spawn(name: &str, cmd: &mut Command, logs: &mut Logs) -> Server {
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

pub struct Server {
    pub name: String,
    pub child: Child,
}

impl Server {
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// Waits until `GET path` on `addr` answers 200, failing at once if the server exits first.
pub async fn until_http_ok(server: &mut Server, addr: SocketAddr, path: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("{} exited ({status}) before {path} answered on {addr}", server.name);
        }
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), http_get(addr, path)).await {
            // HTTP/1.0 too: Python's http.server (the agent's app) answers in it.
            if response.starts_with("HTTP/1.") && response.split(' ').nth(1) == Some("200") {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{} did not answer {path} on {addr} in {wait:?}", server.name);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut body = String::new();
    tcp.read_to_string(&mut body).await?;
    Ok(body)
}

/// Waits until agentwire's `/metrics` gauge `name` satisfies `ok`.
pub async fn until_metric(addr: SocketAddr, name: &str, ok: impl Fn(f64) -> bool) {
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
pub async fn until_log_line(path: &Path, what: &str, want: impl Fn(&str) -> bool) {
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

/// The real agent as a child process (`coder_agent_command`), its output in a file.
pub struct AgentProcess {
    pub child: Child,
    pub log_path: PathBuf,
    /// Where the startup script keeps the pid of the app's server (the template's startup script).
    app_pid_file: PathBuf,
}

impl AgentProcess {
    pub fn start(coder: &Path, dir: &Path, url: &str, token: &str, app_port: u64) -> AgentProcess {
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let tmp = dir.join("agent-tmp");
        let child = coder_agent_command(coder, dir, &tmp, url, token)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the coder agent starts");
        let app_pid_file = tmp.join(format!("agentwire-beside-{app_port}")).join("http.pid");
        AgentProcess { child, log_path, app_pid_file }
    }

    pub fn signal(&self, signal: &str) {
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
pub struct Logs {
    pub dir: PathBuf,
    files: Vec<(String, PathBuf)>,
    passed: bool,
}

impl Logs {
    pub fn new(dir: &Path) -> Logs {
        Logs { dir: dir.to_owned(), files: Vec::new(), passed: false }
    }

    pub fn add(&mut self, what: &str, path: PathBuf) {
        self.files.push((what.to_owned(), path));
    }

    pub fn passed(&mut self) {
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

/// The sample `name` (no labels) on a Prometheus page at `addr` now; NaN when absent.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let body = http_get(addr, "/metrics").await.unwrap_or_default();
    body.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// A GET with extra headers, bounded: its status and the whole response as text.
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let get = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(STEP, get)
        .await
        .unwrap_or_else(|_| panic!("GET {path} on {addr} did not finish in time"))
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response)
}

/// The real `coder` CLI (the AGPL server binary is also the CLI), logged in to a coderd by its environment, with a
/// config directory of its own.
pub struct CoderCli {
    pub bin: PathBuf,
    pub config_dir: PathBuf,
    pub url: String,
    pub token: String,
}

impl CoderCli {
    /// `coder ARGS…`, killed if dropped.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("CODER_URL", &self.url)
            .env("CODER_SESSION_TOKEN", &self.token)
            .env("CODER_CONFIG_DIR", &self.config_dir)
            .env_remove("CODER_DISABLE_DIRECT_CONNECTIONS")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// `coder ARGS…` to its end, within `wait`, failing the test unless it exits 0; its stdout.
    pub async fn run(&self, args: &[&str], wait: Duration) -> String {
        let what = format!("coder {}", args.join(" "));
        let out = tokio::time::timeout(wait, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("{what} did not finish in {wait:?}"))
            .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{what} failed ({}):\n{stdout}\n{stderr}", out.status);
        eprintln!("{what}: {}\n{stderr}", stdout.trim_end());
        stdout.into_owned()
    }
}

/// coderd on `db` behind the nginx front, and the workspace `interop coderd-setup` made through them; agentwire's
/// address is picked now (the front names it from the start) but agentwire is the test's to start, after coderd has
/// migrated the database and made the workspace. coderd and the front are killed when this is dropped.
pub struct Deployment {
    pub coderd_addr: SocketAddr,
    pub agentwire_addr: SocketAddr,
    /// The front's URL: the deployment's access URL, the agents' and the users'.
    pub front: String,
    pub front_addr: SocketAddr,
    /// One line per request the front served, naming the server that answered.
    pub access_log: PathBuf,
    /// What `coderd-setup` wrote: the session token, the user, and per workspace its agent's id, name and token.
    pub setup: serde_json::Value,
    /// The port the template's app listens on in the workspace.
    pub app_port: u16,
    _coderd: Server,
    _front: Server,
}

impl Deployment {
    /// Starts coderd (with `coderd_flags` after `scripts/coderd.sh`'s own) and the front, then sets the workspace
    /// up through the front.
    pub async fn start(dir: &Path, logs: &mut Logs, interop: &Path, db: &str, coderd_flags: &[&str]) -> Deployment {
        let loopback = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
        let (coderd_addr, agentwire_addr, front_addr) = (loopback(), loopback(), loopback());
        let front = format!("http://{front_addr}");

        let coderd_dir = dir.join("coderd");
        let (coderd_listen, coderd_out) = (coderd_addr.to_string(), coderd_dir.to_str().unwrap().to_owned());
        let mut args = vec!["--postgres-url", db, "--http-address", &coderd_listen, "--access-url", &front];
        args.extend(["--dir", &coderd_out]);
        if !coderd_flags.is_empty() {
            args.push("--");
            args.extend_from_slice(coderd_flags);
        }
        let mut coderd = spawn("coderd", Command::new(repo_root().join("scripts/coderd.sh")).args(&args), logs);
        logs.add("coderd's log", coderd_dir.join("coderd.log"));
        until_http_ok(&mut coderd, coderd_addr, "/api/v2/buildinfo", CODERD_START).await;

        let front_dir = dir.join("front");
        let mut nginx = spawn(
            "front",
            Command::new(repo_root().join("scripts/front-nginx.sh")).args([
                "--agentwire",
                &agentwire_addr.to_string(),
                "--coderd",
                &coderd_listen,
                "--listen",
                &front_addr.to_string(),
                "--dir",
                front_dir.to_str().unwrap(),
            ]),
            logs,
        );
        logs.add("the front's error log", front_dir.join("error.log"));
        // nginx is installed on first use: apt-get counts against this wait.
        until_http_ok(&mut nginx, front_addr, "/api/v2/buildinfo", STEP).await;

        let setup_path = dir.join("setup.json");
        let app_port = free_port();
        let (setup_out, app) = (setup_path.to_str().unwrap().to_owned(), app_port.to_string());
        let setup_args =
            ["coderd-setup", "--url", &front, "--postgres-url", db, "--out", &setup_out, "--app-port", &app];
        run_interop(interop, &setup_args).await;
        let setup: serde_json::Value = serde_json::from_slice(&std::fs::read(&setup_path).unwrap()).unwrap();
        assert_eq!(setup["app_port"].as_u64(), Some(u64::from(app_port)), "setup's app port: {setup}");
        Deployment {
            coderd_addr,
            agentwire_addr,
            front,
            front_addr,
            access_log: front_dir.join("access.log"),
            setup,
            app_port,
            _coderd: coderd,
            _front: nginx,
        }
    }

    /// A string field of `coderd-setup`'s output.
    pub fn setup_str(&self, key: &str) -> String {
        string_field(&self.setup, key)
    }

    /// A string field of the first workspace `coderd-setup` made (its id, name, agent's id, name and token).
    pub fn workspace_str(&self, key: &str) -> String {
        string_field(&self.setup["workspaces"][0], key)
    }
}

fn string_field(value: &serde_json::Value, key: &str) -> String {
    value[key].as_str().unwrap_or_else(|| panic!("setup has no {key}: {value}")).to_owned()
}
