//! Tools for the fault tests: the server binary as a child process, a TCP proxy whose connections can be cut,
//! agents dialled from Rust, and the batcher counters read off `/metrics`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use agentwire::proto::agent::v2 as pb;
use agentwire_transport::client::Client;
use agentwire_transport::io::{spawn_session, ws, Mode, SessionConfig, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::Limits;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const BIN: &str = env!("CARGO_BIN_EXE_agentwire");
/// Every single wait on the server (start, a scrape, a connect) is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

/// `agentwire agent create` on `db`: (token, agent id).
pub async fn create_agent(db: &str, workspace: &str, name: &str) -> (String, Uuid) {
    let out = Command::new(BIN)
        .args(["agent", "create", "--db", db, "--workspace", workspace, "--name", name, "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "agent create: {}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    (token, Uuid::parse_str(created["agent_id"].as_str().unwrap()).unwrap())
}

/// `agentwire serve` as a child process (killed if dropped).
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `serve --db db --listen listen` plus `extra`, and waits for the address it prints. `None` when it
    /// exits first (e.g. the port is still taken).
    pub async fn start(db: &str, listen: &str, extra: &[&str]) -> Option<ServerProcess> {
        let mut child = Command::new(BIN)
            .args(["serve", "--db", db, "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("serve printed its address in time");
        let line = line.ok().flatten()?;
        let addr = line.rsplit("http://").next()?.trim().parse().ok()?;
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(ServerProcess { child, addr })
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("the server exited in time").unwrap()
    }
}

/// Dials the agent endpoint at `addr` as the agent of `token`.
pub async fn dial(addr: SocketAddr, token: &str) -> std::io::Result<pb::AgentClient> {
    let url = format!("ws://{addr}/api/v2/workspaceagents/me/rpc?version=2.10");
    let mut request = url.into_client_request().map_err(std::io::Error::other)?;
    request.headers_mut().insert("Coder-Session-Token", token.parse().map_err(std::io::Error::other)?);
    let io = tokio::time::timeout(WAIT, ws::connect(request, DEFAULT_MAX_WS_MESSAGE_SIZE))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "dial timed out"))??;
    Ok(pb::AgentClient::new(Client::new(
        spawn_session(io, Mode::Client, &SessionConfig::default()).0,
        Limits::default(),
    )))
}

/// `GET path` over a fresh connection: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, body.to_owned())
    })
    .await
    .expect("an HTTP answer in time")
}

/// The value of the series `name{labels}` in a Prometheus exposition (0 when absent).
pub fn series(text: &str, name: &str, labels: &str) -> u64 {
    let key = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
    text.lines()
        .find_map(|l| l.strip_prefix(&key).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse::<f64>().unwrap_or(0.0) as u64)
        .unwrap_or(0)
}

/// One batcher's counters, as `/metrics` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherCounts {
    pub enqueued: u64,
    pub refused: u64,
    pub dropped: u64,
    pub superseded: u64,
    pub written: u64,
    pub flushes: u64,
    pub flush_errors: u64,
}

impl BatcherCounts {
    pub fn scrape(text: &str, batcher: &str) -> BatcherCounts {
        let labels = format!("batcher=\"{batcher}\"");
        let get = |counter: &str| series(text, &format!("agentwire_batcher_{counter}_total"), &labels);
        BatcherCounts {
            enqueued: get("enqueued"),
            refused: get("refused"),
            dropped: get("dropped"),
            superseded: get("superseded"),
            written: get("written"),
            flushes: get("flushes"),
            flush_errors: get("flush_errors"),
        }
    }

    /// Items offered to the batcher: accepted or refused at its queue.
    pub fn offered(&self) -> u64 {
        self.enqueued + self.refused
    }

    /// Items whose fate is known: written, superseded by a newer one, or dropped (and counted).
    pub fn settled(&self) -> u64 {
        self.written + self.superseded + self.dropped
    }
}

/// A loopback TCP proxy in front of `target` whose connections can be cut at once, both ways, with no WebSocket
/// close or yamux GoAway: what a vanished network path or a killed client looks like to the server.
pub struct CutProxy {
    pub addr: SocketAddr,
    cut: CancellationToken,
    reset: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = CancellationToken::new();
        let reset = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop, rst) = (cut.clone(), reset.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else { return };
                let Ok(mut upstream) = TcpStream::connect(target).await else { return };
                let (stop, rst) = (stop.clone(), rst.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                    }
                    if rst.load(std::sync::atomic::Ordering::SeqCst) {
                        // SO_LINGER 0: the close sends RST instead of FIN.
                        let _ = upstream.set_zero_linger();
                        let _ = client.set_zero_linger();
                    }
                });
            }
        });
        CutProxy { addr, cut, reset }
    }

    /// Drops every proxied connection: with a FIN, or with `reset` an RST.
    pub fn cut(&self, reset: bool) {
        self.reset.store(reset, std::sync::atomic::Ordering::SeqCst);
        self.cut.cancel();
    }
}
