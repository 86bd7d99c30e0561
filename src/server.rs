//! The running server: shared state, admission limits, the life of one agent session, listeners, shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwire_store::{AgentScope, Store};
use agentwire_transport::budget::MemoryBudget;
use agentwire_transport::limits::MIB;
use agentwire_transport::server::{Router, Server, ServerConfig, SessionEnd};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::agentapi::{AgentApi, AgentApiConfig};
use crate::build_watch::BuildWatch;
use crate::metrics::Metrics;
use crate::metrics_cache::{MetricsCache, MetricsCacheConfig};
use crate::proto::{agent::v2 as agent_pb, tailnet::v2 as tailnet_pb};
use crate::session::{ApiVersion, Session};
use crate::tailnet::{Tailnet, TailnetConfig};

/// Agent sessions one server holds at once; past it new agents get 503 before the upgrade.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// Sessions one agent may hold at once. A reconnecting agent briefly has two; more is a bug or an abuser.
pub const DEFAULT_MAX_SESSIONS_PER_AGENT: usize = 4;
/// Undispatched bytes all of one agent's sessions may hold past their guaranteed parts
/// ([`agentwire_transport::budget::DEFAULT_SESSION_GUARANTEED_MEMORY`]): two sessions' worth, for the moment a
/// reconnecting agent has two.
pub const DEFAULT_AGENT_MEMORY: usize = 2 * agentwire_transport::budget::DEFAULT_SESSION_MEMORY;
/// Undispatched bytes every session together may hold past their guaranteed parts: what 32 agents at their limit
/// hold. Peers can make the server hold at most this plus each session's guaranteed part and yamux windows.
pub const DEFAULT_SERVER_MEMORY: usize = 1024 * MIB;
/// The names of the shared memory limits, as logs and `agentwire_memory_budget_evictions_total` carry them.
pub const AGENT_MEMORY_LIMIT: &str = "agent";
pub const SERVER_MEMORY_LIMIT: &str = "server";
/// How often a session refreshes `last_connected_at` (through the heartbeat batcher); coderd's
/// `AgentConnectionUpdateFrequency`. Other replicas call an agent disconnected after 30 s without a refresh.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// How long shutdown waits for calls in flight before it closes what is left.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's head (the upgrade included) before its connection is dropped:
/// a slowloris client dribbling headers would otherwise hold a connection and a task for ever. hyper's own
/// default, which it applies only when given a timer (axum's `serve` gives none).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes queued on an agent's WebSocket before the socket takes them. Pongs to the peer's pings queue there too:
/// past it the library keeps only the latest pong, so a client that floods pings and never reads costs at most this
/// much. Floored at [`MIN_WS_WRITE_BUFFER`].
pub const DEFAULT_MAX_WS_WRITE_BUFFER: usize = 1024 * 1024;
/// The smallest write buffer that still takes our largest message (the 64 KiB coalescing buffer plus one write of
/// the yamux layer's 64 KiB buffer) and stays above tungstenite's 128 KiB flush threshold, which it asserts.
pub const MIN_WS_WRITE_BUFFER: usize = 512 * 1024;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub replica_id: Uuid,
    /// See [`DEFAULT_MAX_SESSIONS`].
    pub max_sessions: usize,
    /// See [`DEFAULT_MAX_SESSIONS_PER_AGENT`].
    pub max_sessions_per_agent: usize,
    /// See [`DEFAULT_AGENT_MEMORY`]; each session's own limit is `rpc.session_memory`.
    pub agent_memory: usize,
    /// See [`DEFAULT_SERVER_MEMORY`].
    pub server_memory: usize,
    /// See [`agentwire_transport::io::DEFAULT_MAX_WS_MESSAGE_SIZE`].
    pub max_ws_message_size: usize,
    /// See [`DEFAULT_HEARTBEAT_INTERVAL`].
    pub heartbeat_interval: Duration,
    /// How often the sessions' builds are checked for a newer build, which ends them (coderd's 15 s).
    pub build_check_interval: Duration,
    /// WebSocket pings to the agent (coderd's 15 s); `None` turns them off.
    pub ws_ping_interval: Option<Duration>,
    /// A WebSocket silent this long is dropped (coderd's 30 s).
    pub ws_ping_timeout: Duration,
    /// See [`DEFAULT_SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
    /// See [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`DEFAULT_MAX_WS_WRITE_BUFFER`].
    pub max_ws_write_buffer: usize,
    /// See [`agentwire_transport::io::DEFAULT_WS_READ_BUFFER`].
    pub ws_read_buffer: usize,
    pub rpc: ServerConfig,
    pub agent_api: AgentApiConfig,
    /// The metrics snapshotter's intervals and windows.
    pub metrics_cache: MetricsCacheConfig,
    /// The coordinator's limits and the DERP map check interval.
    pub tailnet: TailnetConfig,
    /// A plain-TCP yamux listener whose sessions are all the agent of `tcp_agent_token` (tests, benchmarks).
    pub tcp_listen: Option<SocketAddr>,
    pub tcp_agent_token: Option<String>,
    /// Limits of the agent's HTTP endpoints beside the RPC one (`crate::http::agent_me`).
    pub agent_http: AgentHttpLimits,
}

/// What the agent's `me/…` HTTP endpoints may hold. Here rather than beside the handlers so the server's settings
/// stay in one place that the HTTP layer reads, not the other way round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentHttpLimits {
    /// The largest request body read (`PATCH me/logs` and the like); past it, 413. coderd sets none: the dRPC
    /// message limit, so a log batch the RPC path takes fits here too.
    pub max_request_body: usize,
    /// Open `me/reinit` streams in the whole server; past it, 503. Coder has no limit: as many as sessions.
    pub max_reinit_streams: usize,
    /// Open `me/reinit` streams per agent; past it, the agent's oldest is closed. As many as its sessions.
    pub max_reinit_streams_per_agent: usize,
}

impl Default for AgentHttpLimits {
    fn default() -> Self {
        AgentHttpLimits {
            max_request_body: agentwire_transport::limits::DEFAULT_MAX_PACKET_SIZE,
            max_reinit_streams: DEFAULT_MAX_SESSIONS,
            max_reinit_streams_per_agent: DEFAULT_MAX_SESSIONS_PER_AGENT,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            replica_id: Uuid::new_v4(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_agent: DEFAULT_MAX_SESSIONS_PER_AGENT,
            agent_memory: DEFAULT_AGENT_MEMORY,
            server_memory: DEFAULT_SERVER_MEMORY,
            max_ws_message_size: agentwire_transport::io::DEFAULT_MAX_WS_MESSAGE_SIZE,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            build_check_interval: crate::build_watch::DEFAULT_BUILD_CHECK_INTERVAL,
            ws_ping_interval: Some(agentwire_transport::io::DEFAULT_WS_PING_INTERVAL),
            ws_ping_timeout: agentwire_transport::io::DEFAULT_WS_PING_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_ws_write_buffer: DEFAULT_MAX_WS_WRITE_BUFFER,
            ws_read_buffer: agentwire_transport::io::DEFAULT_WS_READ_BUFFER,
            rpc: ServerConfig::default(),
            agent_api: AgentApiConfig::default(),
            metrics_cache: MetricsCacheConfig::default(),
            tailnet: TailnetConfig::default(),
            tcp_listen: None,
            tcp_agent_token: None,
            agent_http: AgentHttpLimits::default(),
        }
    }
}

struct Inner {
    config: ServeConfig,
    store: Store,
    rpc: Server<Arc<Session>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
    per_agent: Mutex<HashMap<Uuid, AgentSessions>>,
    /// Undispatched bytes of every session, agents' and clients'.
    memory: MemoryBudget,
    metrics_cache: Arc<MetricsCache>,
    tailnet: Arc<Tailnet>,
    builds: Arc<BuildWatch>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// One agent's sessions: how many, and the memory pool they share.
struct AgentSessions {
    count: usize,
    memory: MemoryBudget,
}

/// A place among the sessions; given back on drop.
pub struct SessionPermit {
    state: AppState,
    agent_id: Uuid,
    memory: MemoryBudget,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        if let Ok(mut per_agent) = self.state.0.per_agent.lock() {
            if let Some(sessions) = per_agent.get_mut(&self.agent_id) {
                sessions.count -= 1;
                if sessions.count == 0 {
                    per_agent.remove(&self.agent_id);
                }
            }
        }
    }
}

impl AppState {
    pub fn new(store: Store, config: ServeConfig) -> AppState {
        let memory = MemoryBudget::root(SERVER_MEMORY_LIMIT, config.server_memory);
        let metrics = Arc::new(Metrics::new());
        metrics.attach_memory_budget(memory.clone());
        let mut router = Router::new();
        let observer: Arc<dyn agentwire_transport::server::CallObserver> = metrics.clone();
        let (replica, tailnet_config) = (config.replica_id, config.tailnet.clone());
        let tailnet = Tailnet::new(
            store.clone(),
            replica,
            tailnet_config,
            config.rpc,
            memory.clone(),
            metrics.tailnet.clone(),
            Some(observer),
        );
        let shutdown = CancellationToken::new();
        let agent_api = AgentApi::new(store.clone(), config.agent_api.clone())
            .with_derp_maps(tailnet.derp_maps())
            .with_watched_banners(shutdown.clone());
        metrics.attach_banners(agent_api.banners().clone());
        agent_pb::register_agent(&mut router, Arc::new(agent_api));
        tailnet_pb::register_tailnet(&mut router, tailnet.agent_api());
        let rpc = Server::new(router, config.rpc).with_observer(metrics.clone());
        let metrics_cache = MetricsCache::start(store.clone(), config.metrics_cache.clone());
        metrics.attach_metrics_cache(metrics_cache.clone());
        let builds = Arc::new(BuildWatch::default());
        metrics.attach_build_watch(builds.clone());
        tokio::spawn(builds.clone().run(store.clone(), config.build_check_interval, shutdown.clone()));
        AppState(Arc::new(Inner {
            config,
            store,
            rpc,
            metrics,
            shutdown,
            sessions: TaskTracker::new(),
            per_agent: Mutex::new(HashMap::new()),
            memory,
            metrics_cache,
            tailnet,
            builds,
        }))
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The memory pool every session reads under (agents' below their agent's pool).
    pub fn memory(&self) -> &MemoryBudget {
        &self.0.memory
    }

    /// The deployment aggregates' snapshots.
    pub fn metrics_cache(&self) -> &MetricsCache {
        &self.0.metrics_cache
    }

    pub fn config(&self) -> &ServeConfig {
        &self.0.config
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// The coordinator, the DERP map streams and the client coordinate endpoint's dRPC server.
    pub fn tailnet(&self) -> &Arc<Tailnet> {
        &self.0.tailnet
    }

    /// Checks the session limits for one more session of `agent_id`.
    pub fn admit(&self, agent_id: Uuid) -> Result<SessionPermit, String> {
        if self.0.shutdown.is_cancelled() {
            return Err("the server is shutting down".into());
        }
        let mut per_agent = self.0.per_agent.lock().map_err(|_| "session table poisoned".to_string())?;
        let total: usize = per_agent.values().map(|sessions| sessions.count).sum();
        if total >= self.0.config.max_sessions {
            return Err(format!("this server holds its maximum of {} sessions", self.0.config.max_sessions));
        }
        let mine = per_agent.entry(agent_id).or_insert_with(|| AgentSessions {
            count: 0,
            memory: self.0.memory.child(AGENT_MEMORY_LIMIT, self.0.config.agent_memory),
        });
        if mine.count >= self.0.config.max_sessions_per_agent {
            return Err(format!("this agent already holds {} sessions", self.0.config.max_sessions_per_agent));
        }
        mine.count += 1;
        Ok(SessionPermit { state: self.clone(), agent_id, memory: mine.memory.clone() })
    }

    /// Serves one agent over `io` until it leaves or the server shuts down. Connection bookkeeping as coderd does
    /// it: connected (first/last, replica) at start, `last_connected_at` kept fresh through the heartbeat batcher,
    /// disconnected at the end.
    ///
    /// Not an `async fn`: an async fn keeps its arguments for as long as its future lives, and this one lives as long
    /// as the session. Everything is moved into the one future it returns, which is all an idle session's task holds.
    ///
    /// `token` is the agent's, kept only when its Tailnet calls are relayed to coderd, which must see the agent's own.
    pub fn run_agent_session<T>(
        &self,
        io: T,
        scope: AgentScope,
        version: ApiVersion,
        token: Option<Uuid>,
        permit: SessionPermit,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let span = tracing::info_span!("session", agent_id = %scope.agent().id, agent_name = %scope.agent().name);
        let replica = self.0.config.replica_id;
        let coderd_relay = self.0.tailnet.coderd_relay().zip(token).map(|(relay, token)| relay.link(token, version));
        let session = Arc::new(Session {
            scope,
            api_version: version,
            replica_id: replica,
            coderd_relay,
            monitors: Default::default(),
        });
        let state = self.clone();
        let rpc = &self.0.config.rpc;
        let memory = permit.memory.session(rpc.session_memory, rpc.session_guaranteed_memory);
        let run = async move {
            let _permit = permit;
            state.0.metrics.session_started();
            tracing::info!(api_version = %version, "agent connected");
            // The database calls are boxed: inline, their futures would size this task, which lives as long as the
            // session, for a moment at either end of it.
            if let Err(err) = Box::pin(session.scope.mark_connected(replica, &version.to_string())).await {
                tracing::warn!(error = %err, "recording the connection");
            }
            Box::pin(publish_connection_update(&session)).await;
            // Ended by the server's shutdown, or by a newer build of the workspace.
            let end = state.0.shutdown.child_token();
            let _watched = state.0.builds.watch(session.agent().build_id, end.clone());
            let serve = state.0.rpc.serve_session_in(io, session.clone(), end, memory);
            tokio::pin!(serve);
            // The heartbeat ticks in this task, beside the calls: a task of its own would cost every idle session
            // another task's allocation.
            let every = state.0.config.heartbeat_interval;
            let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let end = loop {
                tokio::select! {
                    end = &mut serve => break end,
                    _ = heartbeat.tick() => {
                        if !session.scope.heartbeat(replica) {
                            tracing::warn!("heartbeat dropped: the heartbeat batcher is full");
                        }
                    }
                }
            };
            // coderd hears the agent leave now, not when the last call holding the session unwinds.
            if let Some(link) = &session.coderd_relay {
                link.close();
            }
            if let Err(err) = Box::pin(session.scope.mark_disconnected(replica)).await {
                tracing::warn!(error = %err, "recording the disconnection");
            }
            Box::pin(publish_connection_update(&session)).await;
            state.0.metrics.session_ended();
            match end {
                SessionEnd::Failed(err) => tracing::info!(error = %err, "agent session failed"),
                SessionEnd::OverBudget(evicted) => {
                    tracing::warn!(limit = evicted.limit, "agent session ended: memory budget exhausted")
                }
                end => tracing::info!(?end, "agent disconnected"),
            }
        };
        self.0.sessions.track_future(run.instrument(span))
    }

    /// Stops: no new sessions, calls in flight get `shutdown_grace` to finish, then the batchers flush.
    pub async fn shutdown(&self) {
        // Long-lived streams (Coordinate, StreamDERPMaps) end with their sessions: the transport drops their handlers
        // at shutdown, and a dropped peer is LOST to its tunnel peers, as coderd marks peers when its coordinator
        // closes. The coordinator is not closed first: its close reaches each agent as an error on its Coordinate
        // stream, which the agent logs ("run exited with error") before it sees the connection go.
        self.0.shutdown.cancel();
        self.0.sessions.close();
        if tokio::time::timeout(self.0.config.shutdown_grace, self.0.sessions.wait()).await.is_err() {
            tracing::warn!("sessions still open after the shutdown grace period");
        }
        // The same grace again for the other replicas to hear which peers this one lost.
        self.0.tailnet.stop(self.0.config.shutdown_grace).await;
        self.0.metrics_cache.stop().await;
        self.0.store.shutdown().await;
    }
}

/// The next connection on `listener` with Nagle off (as in Go: with it, a small RPC waits on delayed ACKs), or
/// `None` once `stop` fires. A failed accept (out of descriptors and the like) pauses rather than spins.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %err, "setting TCP_NODELAY");
                }
                return Some((tcp, peer));
            }
            Err(err) => {
                tracing::warn!(error = %err, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Tells the workspace's watchers (coderd's UI and API among them) that the agent connected or disconnected, as
/// coderd's connection monitor does. Best effort, as there: the connection times are already written.
async fn publish_connection_update(session: &Session) {
    if let Err(err) = session.scope.publish_workspace_event(agentwire_store::pubsub::AGENT_CONNECTION_UPDATE_KIND).await
    {
        tracing::warn!(error = %err, "publishing the agent's connection update");
    }
}

/// Accepts plain-TCP yamux sessions and serves each as the agent of `token` (resolved per connection, as the
/// WebSocket path does).
pub async fn serve_tcp(state: AppState, listener: TcpListener, token: String) {
    while let Some((tcp, peer)) = accept_until(&listener, state.shutdown_token()).await {
        let state = state.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let agent = match state.store().resolve_agent_by_token(&token).await {
                Ok(Some(agent)) => agent,
                Ok(None) => {
                    tracing::warn!(%peer, "--tcp-agent-token is not a known agent token; closing");
                    return;
                }
                Err(err) => {
                    tracing::error!(error = %err, "resolving the TCP listener's agent");
                    return;
                }
            };
            match state.admit(agent.id) {
                Ok(permit) => {
                    let scope = state.store().into_agent_scope(agent);
                    let token = Uuid::parse_str(&token).ok();
                    state.run_agent_session(tcp, scope, ApiVersion::CURRENT, token, permit).await
                }
                Err(limit) => tracing::warn!(%peer, %limit, "refusing a TCP session"),
            }
        });
    }
}
