//! Tools for the fault tests, here (`tests/faults.rs`) and in the binary's package (`cli/tests/faults.rs`, which
//! includes this file): the load's pace and progress, agents dialled from Rust, a TCP proxy whose connections can
//! be cut, and the batcher counters read off `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use agentwire::proto::agent::v2 as pb;
use agentwire_transport::client::Client;
use agentwire_transport::io::{spawn_session, ws, Mode, SessionConfig, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

/// Every single wait on the server (start, a scrape, a connect) is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);
/// Agents under load in the database-outage and kill tests.
pub const AGENTS: usize = 6;
/// Pause between two rounds of an agent's calls: steady load without saturating two cores.
pub const ROUND_PAUSE: Duration = Duration::from_millis(50);
/// Bound on every wait for progress (warm-up, recovery, reconnects): load on two cores shared with a database, far
/// slower than a test kit's wait.
pub const PROGRESS_WAIT: Duration = Duration::from_secs(120);

/// Progress an agent publishes while it runs.
#[derive(Default)]
pub struct Progress {
    pub rounds: AtomicU64,
    pub acked_logs: AtomicU64,
}

/// Marks a stats report of agent `agent`, call `seq`, in a column the batcher stores verbatim.
pub fn stats_marker(agent: usize, seq: u64) -> i64 {
    ((agent as i64) << 32) | seq as i64
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
