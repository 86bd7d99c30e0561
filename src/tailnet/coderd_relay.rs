//! Beside coderd ([`super::CoderCoordination::Relay`]): an agent's Tailnet streams relayed to coderd's own agent
//! endpoint, so that coderd's coordinator holds the agent and the clients that coordinate through coderd (`coder
//! ssh`, port-forward, the web terminal, coderd's app proxy) reach it.
//!
//! Each agent session gets at most one session to coderd (WebSocket → yamux → dRPC, as the agent itself dials:
//! `GET /api/v2/workspaceagents/me/rpc?version=<the agent's>`, its token in `Coder-Session-Token`), dialled when
//! the session first needs it (its manifest's DERP map, or its first Tailnet stream) and closed when the agent's
//! session ends. `Coordinate` and `StreamDERPMaps` are opened as the same calls on coderd and relayed message by
//! message both ways until either side ends; coderd's errors reach the agent as coderd sent them. To coderd the
//! relay is the agent: its coordinator registers the agent's id with the agent's auth, as if the agent had dialled
//! it, and nothing else is called on that session.
//!
//! What it costs coderd per relayed agent is what any agent connection costs it apart from the agent's own calls:
//! the token lookup and a workspace read at dial, and its connection monitor (a yamux ping, a connection-time
//! update and a latest-build check every 15 s, and the disconnect's update and notification); the measured counts
//! are in BENCHMARKS.md ("Beside coderd: relayed coordination"). The relay answers coderd's yamux pings from the
//! session's driver task, which reads the WebSocket for as long as the session lives.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentwire_transport::client::{CallError, Client};
use agentwire_transport::io::ws::{ws_config, WsByteStream, DEFAULT_MAX_WS_MESSAGE_SIZE};
use agentwire_transport::io::{spawn_session, Mode, SessionConfig};
use agentwire_transport::limits::Limits;
use agentwire_transport::server::{RequestStream, ResponseSink, Status};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use crate::agent_dial::{ApiVersion, TOKEN_HEADER};
use crate::proto::tailnet::v2 as pb;

/// How long a dial to coderd (TCP, the upgrade) and the first DERP map it sends may take.
pub const CODERD_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent endpoint's URL for a `--coderd-url`: coderd's own plain-HTTP address (its `--http-address`, not the
/// front's). agentwire has no TLS client, so an `https://` coderd is refused here rather than at every dial.
pub fn agent_endpoint(coderd_url: &str) -> Result<String, String> {
    let trimmed = coderd_url.trim().trim_end_matches('/');
    let rest = if let Some(rest) = trimmed.strip_prefix("http://") {
        rest
    } else if let Some(rest) = trimmed.strip_prefix("ws://") {
        rest
    } else if trimmed.starts_with("https://") || trimmed.starts_with("wss://") {
        return Err(format!(
            "{coderd_url:?}: agentwire dials coderd without TLS; give coderd's plain --http-address (http://HOST:PORT)"
        ));
    } else {
        return Err(format!("{coderd_url:?}: expected http://HOST:PORT, coderd's own address"));
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(format!("{coderd_url:?}: expected http://HOST:PORT with no path (coderd serves at its root)"));
    }
    let endpoint = format!("ws://{rest}/api/v2/workspaceagents/me/rpc");
    endpoint.as_str().into_client_request().map_err(|e| format!("{coderd_url:?}: {e}"))?;
    Ok(endpoint)
}

/// Counters of the relay, rendered on `/metrics` with the tailnet's.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Sessions to coderd open now.
    pub sessions: AtomicI64,
    /// Relayed streams (Coordinate, StreamDERPMaps) open now.
    pub streams: AtomicI64,
    pub dials: AtomicU64,
    pub dial_failures: AtomicU64,
    /// Manifests that carried agentwire's own DERP map because coderd's could not be read.
    pub manifest_fallbacks: AtomicU64,
}

impl RelayStats {
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let gauge = |v: &AtomicI64| v.load(Ordering::Relaxed).max(0) as u64;
        let count = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let series: [(&str, &str, &str, u64); 5] = [
            (
                "coderd_relay_sessions",
                "gauge",
                "Sessions to coderd relaying agents' Tailnet calls now.",
                gauge(&self.sessions),
            ),
            ("coderd_relay_streams", "gauge", "Tailnet streams relayed to coderd now.", gauge(&self.streams)),
            ("coderd_relay_dials_total", "counter", "Sessions to coderd dialled.", count(&self.dials)),
            (
                "coderd_relay_dial_failures_total",
                "counter",
                "Dials to coderd that failed or were refused.",
                count(&self.dial_failures),
            ),
            (
                "coderd_relay_manifest_fallbacks_total",
                "counter",
                "Manifests sent with agentwire's DERP map because coderd's could not be read.",
                count(&self.manifest_fallbacks),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP agentwire_{name} {help}");
            let _ = writeln!(out, "# TYPE agentwire_{name} {kind}");
            let _ = writeln!(out, "agentwire_{name} {value}");
        }
    }
}

/// The relay of one server: where coderd is and how its sessions are run.
#[derive(Debug)]
pub struct CoderdRelay {
    /// `ws://…/api/v2/workspaceagents/me/rpc`, or why the configured URL is not one (each dial then fails with it).
    endpoint: Result<String, String>,
    session: SessionConfig,
    limits: Limits,
    stats: Arc<RelayStats>,
}

impl CoderdRelay {
    /// `session` and `limits` are the agents' own (yamux keepalive, write timeout, dRPC message size): coderd is
    /// held to what agents are.
    pub fn new(coderd_url: &str, session: SessionConfig, limits: Limits, stats: Arc<RelayStats>) -> Arc<Self> {
        let endpoint = agent_endpoint(coderd_url);
        if let Err(err) = &endpoint {
            tracing::error!(error = %err, "--coderd-url is not usable: relayed Tailnet calls will fail");
        }
        Arc::new(CoderdRelay { endpoint, session, limits, stats })
    }

    /// The relay of one agent session. Boxed: only relayed sessions pay for it, the others hold a null pointer.
    pub fn link(self: &Arc<Self>, token: Uuid, version: ApiVersion) -> Box<AgentLink> {
        Box::new(AgentLink {
            relay: self.clone(),
            token,
            version,
            closed: AtomicBool::new(false),
            client: tokio::sync::Mutex::new(None),
        })
    }
}

/// One agent session's way to coderd. The token is the agent's own: coderd must see the agent, not agentwire.
pub struct AgentLink {
    relay: Arc<CoderdRelay>,
    token: Uuid,
    version: ApiVersion,
    /// Set when the agent's session ended: a call still unwinding must not dial again.
    closed: AtomicBool,
    /// Dialled on first use; shared by the session's relayed calls.
    client: tokio::sync::Mutex<Option<Client>>,
}

impl std::fmt::Debug for AgentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLink").field("version", &self.version).finish_non_exhaustive()
    }
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            client.session().close();
        }
    }
}

impl AgentLink {
    /// Ends the session to coderd (GoAway), if one is open: the agent's session is over.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // A dial in progress holds the lock; its session is closed by the check after it, or by the drop.
        if let Ok(mut client) = self.client.try_lock() {
            if let Some(client) = client.take() {
                client.session().close();
            }
        }
    }

    /// The open session to coderd, dialled now if there is none (or the last one ended). Concurrent first calls wait
    /// for one dial.
    async fn client(&self) -> Result<Client, Status> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            if !client.session().is_closed() {
                return Ok(client.clone());
            }
        }
        if self.closed.load(Ordering::Relaxed) {
            return Err(Status::error("the agent's session is over"));
        }
        let client = self.dial().await?;
        if self.closed.load(Ordering::Relaxed) {
            client.session().close();
            return Err(Status::error("the agent's session is over"));
        }
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn dial(&self) -> Result<Client, Status> {
        let stats = &self.relay.stats;
        stats.dials.fetch_add(1, Ordering::Relaxed);
        let result = tokio::time::timeout(CODERD_TIMEOUT, self.upgrade())
            .await
            .unwrap_or_else(|_| Err(Status::error(format!("dial coderd: no answer in {}s", CODERD_TIMEOUT.as_secs()))));
        let ws = match result {
            Ok(ws) => ws,
            Err(status) => {
                stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %status.message, "relaying to coderd: dial failed");
                return Err(status);
            }
        };
        let (handle, incoming) = spawn_session(ws, Mode::Client, &self.relay.session);
        stats.sessions.fetch_add(1, Ordering::Relaxed);
        let watched = self.relay.stats.clone();
        // coderd opens no streams towards an agent; the task only sees the session out. Holding `incoming` keeps
        // the session from closing by itself when the last handle goes: `close` ends it, so that coderd hears the
        // agent leave at once rather than at its next ping.
        tokio::spawn(async move {
            if let Err(err) = incoming.ended().await {
                tracing::info!(error = %err, "relaying to coderd: session ended");
            }
            watched.sessions.fetch_sub(1, Ordering::Relaxed);
        });
        tracing::debug!("relaying to coderd: session open");
        Ok(Client::new(handle, self.relay.limits))
    }

    /// The WebSocket to coderd's agent endpoint, as the agent dials it: binary, no compression, Nagle off.
    async fn upgrade(&self) -> Result<agentwire_transport::io::ws::ClientWs, Status> {
        let endpoint = self.relay.endpoint.as_ref().map_err(|e| Status::error(format!("dial coderd: {e}")))?;
        let url = format!("{endpoint}?version={}", self.version);
        let mut request = url.into_client_request().map_err(|e| Status::error(format!("dial coderd: {e}")))?;
        let token = tungstenite::http::HeaderValue::from_str(&self.token.to_string())
            .map_err(|e| Status::error(format!("dial coderd: {e}")))?;
        request.headers_mut().insert(TOKEN_HEADER, token);
        let config = ws_config(DEFAULT_MAX_WS_MESSAGE_SIZE);
        match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
            Ok((ws, _)) => Ok(WsByteStream::new(ws)),
            Err(tungstenite::Error::Http(response)) => Err(refusal(&response)),
            Err(err) => Err(Status::error(format!("dial coderd: {err}"))),
        }
    }

    /// Coordinate on coderd, relayed both ways until either side ends it.
    pub async fn coordinate(
        &self,
        mut requests: RequestStream<pb::CoordinateRequest>,
        responses: ResponseSink<pb::CoordinateResponse>,
    ) -> Result<(), Status> {
        let client = self.client().await?;
        let mut upstream = pb::TailnetClient::new(client).coordinate().await.map_err(call_status)?;
        let _open = OpenStream::new(&self.relay.stats);
        let mut agent_sending = true;
        loop {
            tokio::select! {
                request = requests.recv(), if agent_sending => match request? {
                    Some(request) => {
                        if let Err(err) = upstream.send(&request).await {
                            // The stream's driver is gone; what ended it is its last event.
                            return upstream_end(upstream.recv().await.err().unwrap_or(err));
                        }
                    }
                    // The agent closed its side (after its Disconnect, on a graceful stop): so does the relay, and
                    // coderd's answer ends the call.
                    None => {
                        agent_sending = false;
                        if let Err(err) = upstream.close_send().await {
                            return upstream_end(err);
                        }
                    }
                },
                response = upstream.recv() => match response {
                    Ok(Some(response)) => {
                        if responses.send(&response).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(err) => return upstream_end(err),
                },
                // The agent left: dropping `upstream` closes coderd's call, and coderd's coordinator marks the agent
                // lost, as when an agent's own connection to it drops.
                _ = responses.closed() => return Ok(()),
            }
        }
    }

    /// StreamDERPMaps on coderd: every map coderd sends, until either side ends.
    pub async fn stream_derp_maps(
        &self,
        request: pb::StreamDerpMapsRequest,
        responses: ResponseSink<pb::DerpMap>,
    ) -> Result<(), Status> {
        let client = self.client().await?;
        let mut upstream = pb::TailnetClient::new(client).stream_derp_maps(&request).await.map_err(call_status)?;
        let _open = OpenStream::new(&self.relay.stats);
        loop {
            tokio::select! {
                map = upstream.recv() => match map {
                    Ok(Some(map)) => {
                        if responses.send(&map).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(err) => return upstream_end(err),
                },
                _ = responses.closed() => return Ok(()),
            }
        }
    }

    /// coderd's DERP map now: the first message of a StreamDERPMaps call, which coderd sends at once.
    pub async fn derp_map(&self) -> Result<pb::DerpMap, Status> {
        let read = async {
            let client = self.client().await?;
            let mut upstream = pb::TailnetClient::new(client)
                .stream_derp_maps(&pb::StreamDerpMapsRequest {})
                .await
                .map_err(call_status)?;
            match upstream.recv().await {
                Ok(Some(map)) => Ok(map),
                Ok(None) => Err(Status::error("coderd ended StreamDERPMaps without a map")),
                Err(err) => Err(call_status(err)),
            }
        };
        tokio::time::timeout(CODERD_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| Err(Status::error(format!("coderd sent no DERP map in {}s", CODERD_TIMEOUT.as_secs()))))
    }
}

/// GetManifest for a relayed agent: the manifest `build` makes, with coderd's DERP map, read beside the manifest's
/// own queries. The map is read once per manifest rather than watched for all sessions: an agent reads its manifest
/// once per connection and then follows coderd's StreamDERPMaps, which is relayed, so a shared watch would only
/// save coderd one short stream per connection, at the price of a session to coderd under nobody's token. Should
/// coderd not answer, the manifest keeps agentwire's own map (coderd's default, as `--coder-db` builds it) rather
/// than failing the agent's start: its scripts and apps do not depend on coderd.
pub async fn manifest<F, E>(link: Option<&AgentLink>, build: F) -> Result<crate::proto::agent::v2::Manifest, E>
where
    F: std::future::Future<Output = Result<crate::proto::agent::v2::Manifest, E>>,
{
    let Some(link) = link else { return build.await };
    let (manifest, coderd_map) = tokio::join!(build, link.derp_map());
    let mut manifest = manifest?;
    match coderd_map {
        Ok(map) => manifest.derp_map = Some(map),
        Err(status) => {
            link.relay.stats.manifest_fallbacks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %status.message, "the manifest carries agentwire's DERP map: coderd's was not read");
        }
    }
    Ok(manifest)
}

/// coderd's HTTP refusal of the dial (401 for a token it does not take, 400 for a version it does not speak), with
/// the message and detail of its JSON body.
fn refusal(response: &tungstenite::http::Response<Option<Vec<u8>>>) -> Status {
    #[derive(serde::Deserialize, Default)]
    struct Body {
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: String,
    }
    let body: Body = response.body().as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
    let mut text = format!("coderd refused the relay: {}", response.status());
    for part in [body.message, body.detail] {
        if !part.is_empty() {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    Status::error(text)
}

/// A failure of a call on coderd as the agent's call ends: coderd's own dRPC error as it sent it; its handler's
/// close (Go's `stream.Close()`, which a Go client reads as EOF) as a clean end; a broken session to coderd as an
/// error, which makes the agent reconnect as a broken connection to coderd would.
fn upstream_end(err: CallError) -> Result<(), Status> {
    match err {
        CallError::RemoteClosed => Ok(()),
        err => Err(call_status(err)),
    }
}

fn call_status(err: CallError) -> Status {
    match err {
        CallError::Status(status) => status,
        err => Status::error(format!("relaying to coderd: {err}")),
    }
}

/// Counts a relayed stream while it is open.
struct OpenStream<'a>(&'a RelayStats);

impl<'a> OpenStream<'a> {
    fn new(stats: &'a RelayStats) -> Self {
        stats.streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(stats)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coderd_urls_become_its_agent_endpoint() {
        let ok = |url: &str| agent_endpoint(url).unwrap();
        assert_eq!(ok("http://127.0.0.1:7080"), "ws://127.0.0.1:7080/api/v2/workspaceagents/me/rpc");
        assert_eq!(ok("http://coderd.internal:7080/"), "ws://coderd.internal:7080/api/v2/workspaceagents/me/rpc");
        assert_eq!(ok("ws://[::1]:7080"), "ws://[::1]:7080/api/v2/workspaceagents/me/rpc");
        for (bad, why) in [
            ("https://coder.example.com", "without TLS"),
            ("wss://coder.example.com", "without TLS"),
            ("coderd:7080", "expected http://"),
            ("http://", "expected http://"),
            ("http://coderd/prefix", "no path"),
            ("http://coderd:7080?x=1", "no path"),
        ] {
            let err = agent_endpoint(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn refusals_carry_coderds_words() {
        let response = tungstenite::http::Response::builder()
            .status(401)
            .body(Some(
                br#"{"message":"Workspace agent not authorized.","detail":"The agent cannot authenticate."}"#.to_vec(),
            ))
            .unwrap();
        let status = refusal(&response);
        assert_eq!(status.code, 0);
        assert_eq!(
            status.message,
            "coderd refused the relay: 401 Unauthorized: Workspace agent not authorized.: The agent cannot authenticate."
        );
        let bare = tungstenite::http::Response::builder().status(502).body(None).unwrap();
        assert_eq!(refusal(&bare).message, "coderd refused the relay: 502 Bad Gateway");
    }

    #[test]
    fn coderds_errors_reach_the_agent_as_sent() {
        assert_eq!(upstream_end(CallError::RemoteClosed), Ok(()));
        let coderd = Status::new(0, "coordinator closed");
        assert_eq!(upstream_end(CallError::Status(coderd.clone())), Err(coderd));
        let broken = upstream_end(CallError::NoReply).unwrap_err();
        assert!(broken.message.starts_with("relaying to coderd: "), "{broken:?}");
    }
}
