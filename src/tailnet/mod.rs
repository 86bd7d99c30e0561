//! The `coder.tailnet.v2.Tailnet` service, on the agent connection and on the client coordinate endpoint.
//!
//! * StreamDERPMaps: the current DERP map at once, then the map again whenever it changes ([`derp_map`]).
//! * Coordinate: a bridge between the dRPC stream and the [`coordinator`], which has coderd's semantics and
//!   spans replicas through the store's pubsub ([`remote`]), or, beside an HA coderd, joins coderd's replicas
//!   through PGCoordinator's tables and channels ([`pgcoord`]).
//! * PostTelemetry: accepted and counted (`agentwire_tailnet_telemetry_events_total`).
//! * RefreshResumeToken: for clients, a token for their peer id that the coordinate endpoint takes back on
//!   reconnection ([`resume`], coderd's format and key semantics). Agents get Unimplemented, as coderd's agent
//!   endpoint has no resume token provider.
//! * WorkspaceUpdates answers Unimplemented, as coderd's agent and per-agent coordinate endpoints have no workspace
//!   updates provider.
//!
//! The same service answers agents (context: their [`Session`], peer id = agent id) and clients (context: a
//! [`ClientPeer`], a fresh peer id per connection, tunnels only to the agent in the URL).

pub mod coderd_relay;
pub mod coordinator;
pub mod derp_json;
pub mod derp_map;
pub mod pgcoord;
pub mod remote;
pub mod replica_wire;
pub mod resume;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentwire_store::Store;
use agentwire_transport::budget::MemoryBudget;
use agentwire_transport::server::{RequestStream, ResponseSink, Router, Server, ServerConfig, SessionEnd, Status};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::coordinator::{CoordinateError, Coordinator, CoordinatorStats, Role};
use self::derp_map::DerpMaps;
use self::resume::ResumeTokens;
use crate::proto::tailnet::v2 as pb;
use crate::session::Session;

/// How often the DERP map is re-read for open StreamDERPMaps streams (coderd's `DERPMapUpdateFrequency`).
pub const DEFAULT_DERP_MAP_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Largest encoded node a peer may send; real nodes are well under 1 KiB. Capped at
/// [`remote::MAX_NODE_SIZE_FOR_PUBSUB`] so a node always fits one NOTIFY.
pub const DEFAULT_MAX_NODE_SIZE: usize = 4096;
/// Tunnels one peer may have open as their source; a Coder client opens one per agent it talks to.
pub const DEFAULT_MAX_TUNNELS_PER_PEER: usize = 64;
/// Peers (agents and clients) one replica coordinates at once.
pub const DEFAULT_MAX_PEERS: usize = 100_000;
/// Responses queued per peer before it counts as stuck and is removed (coderd's `ResponseBufferSize`).
pub const DEFAULT_PEER_QUEUE: usize = 512;
/// Coordinator events queued for the pubsub publisher; past it events are dropped and counted.
pub const DEFAULT_PUBLISH_QUEUE: usize = 8192;
/// How often a replica tells the others it is alive.
pub const DEFAULT_REPLICA_HEARTBEAT: Duration = Duration::from_secs(5);
/// A replica silent this long is gone: its peers are marked lost.
pub const DEFAULT_REPLICA_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct TailnetConfig {
    /// See [`DEFAULT_DERP_MAP_CHECK_INTERVAL`].
    pub derp_map_check_interval: Duration,
    /// See [`DEFAULT_MAX_NODE_SIZE`].
    pub max_node_size: usize,
    /// See [`DEFAULT_MAX_TUNNELS_PER_PEER`].
    pub max_tunnels_per_peer: usize,
    /// See [`DEFAULT_MAX_PEERS`].
    pub max_peers: usize,
    /// See [`DEFAULT_PEER_QUEUE`].
    pub peer_queue: usize,
    /// See [`DEFAULT_PUBLISH_QUEUE`].
    pub publish_queue: usize,
    /// See [`DEFAULT_REPLICA_HEARTBEAT`].
    pub replica_heartbeat: Duration,
    /// See [`DEFAULT_REPLICA_TIMEOUT`].
    pub replica_timeout: Duration,
    /// The embedded DERP relay and the default DERP map that points at it.
    pub derp: crate::derp::DerpConfig,
    /// On a Coder database: whose coordinator the agents join.
    pub coder_coordination: CoderCoordination,
}

/// Whose coordinator the agents served on a Coder deployment's database join, so that the deployment's clients
/// (`coder ssh`, port-forward, the web terminal, coderd's app proxy), which coordinate through coderd, reach them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CoderCoordination {
    /// agentwire's own coordinator (its replicas joined through the pubsub): only clients that coordinate through
    /// agentwire reach the agents. The only choice on agentwire's own schema.
    #[default]
    Own,
    /// Each agent's Tailnet calls relayed to coderd's agent endpoint at this URL, with the agent's token: coderd's
    /// coordinator (in-memory on one replica, PostgreSQL on several) holds the agent, and its DERP map is the
    /// agent's.
    Relay {
        /// coderd's own address as agentwire reaches it (not the front's).
        coderd_url: String,
    },
    /// agentwire's coordinator speaks coderd's PGCoordinator protocol on the Coder database's tailnet tables and
    /// channels, as one more coordinator of an HA deployment.
    Postgres,
}

impl Default for TailnetConfig {
    fn default() -> Self {
        TailnetConfig {
            derp_map_check_interval: DEFAULT_DERP_MAP_CHECK_INTERVAL,
            max_node_size: DEFAULT_MAX_NODE_SIZE,
            max_tunnels_per_peer: DEFAULT_MAX_TUNNELS_PER_PEER,
            max_peers: DEFAULT_MAX_PEERS,
            peer_queue: DEFAULT_PEER_QUEUE,
            publish_queue: DEFAULT_PUBLISH_QUEUE,
            replica_heartbeat: DEFAULT_REPLICA_HEARTBEAT,
            replica_timeout: DEFAULT_REPLICA_TIMEOUT,
            derp: crate::derp::DerpConfig::default(),
            coder_coordination: CoderCoordination::Own,
        }
    }
}

/// Counters of the tailnet service, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct TailnetStats {
    pub telemetry_events: AtomicU64,
    pub coordinator: CoordinatorStats,
    /// Local peers now (agents + clients).
    pub peers: std::sync::atomic::AtomicI64,
    /// The embedded DERP relay's counters.
    pub derp: Arc<crate::derp::RelayStats>,
    /// Tailnet calls relayed to coderd ([`CoderCoordination::Relay`]).
    pub coderd_relay: Arc<coderd_relay::RelayStats>,
}

impl TailnetStats {
    pub fn render(&self, out: &mut String) {
        let c = &self.coordinator;
        let series: [(&str, &str, &str, u64); 7] = [
            (
                "tailnet_telemetry_events_total",
                "counter",
                "Tailnet telemetry events received.",
                self.telemetry_events.load(Ordering::Relaxed),
            ),
            (
                "tailnet_peers",
                "gauge",
                "Peers coordinating on this replica now.",
                self.peers.load(Ordering::Relaxed).max(0) as u64,
            ),
            (
                "tailnet_peer_updates_total",
                "counter",
                "Peer updates queued to local peers.",
                c.updates_delivered.load(Ordering::Relaxed),
            ),
            (
                "tailnet_peers_kicked_total",
                "counter",
                "Peers removed because their queue was full.",
                c.peers_kicked.load(Ordering::Relaxed),
            ),
            (
                "tailnet_rule_breaches_total",
                "counter",
                "Coordinate streams ended for breaking a rule.",
                c.rule_breaches.load(Ordering::Relaxed),
            ),
            (
                "tailnet_events_published_total",
                "counter",
                "Coordinator events queued for other replicas.",
                c.published.load(Ordering::Relaxed),
            ),
            (
                "tailnet_events_received_total",
                "counter",
                "Coordinator events received from other replicas.",
                c.remote_events.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP agentwire_{name} {help}");
            let _ = writeln!(out, "# TYPE agentwire_{name} {kind}");
            let _ = writeln!(out, "agentwire_{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP agentwire_tailnet_publish_dropped_total Coordinator events dropped: publish queue full."
        );
        let _ = writeln!(out, "# TYPE agentwire_tailnet_publish_dropped_total counter");
        let _ = writeln!(out, "agentwire_tailnet_publish_dropped_total {}", c.publish_dropped.load(Ordering::Relaxed));
        self.derp.render(out);
        self.coderd_relay.render(out);
    }
}

/// Who is on the other end of a Tailnet call, as the coordinator sees it.
pub trait TailnetPeer: Clone + Send + Sync + 'static {
    /// The peer id in the coordinator.
    fn peer_id(&self) -> Uuid;
    fn role(&self) -> Role;
    /// Where this peer's Coordinate and StreamDERPMaps go instead of this server: coderd, for an agent whose
    /// coordination is relayed there.
    fn coderd_relay(&self) -> Option<&coderd_relay::AgentLink> {
        None
    }
}

impl TailnetPeer for Arc<Session> {
    fn peer_id(&self) -> Uuid {
        self.agent_id()
    }
    fn role(&self) -> Role {
        Role::Agent
    }
    fn coderd_relay(&self) -> Option<&coderd_relay::AgentLink> {
        self.coderd_relay.as_deref()
    }
}

/// A client connection of `GET /api/v2/workspaceagents/{id}/coordinate`.
#[derive(Debug)]
pub struct ClientPeer {
    pub user_id: Uuid,
    pub agent_id: Uuid,
    /// Fresh per connection, as coderd's `uuid.New()` for a client.
    pub peer_id: Uuid,
}

impl TailnetPeer for Arc<ClientPeer> {
    fn peer_id(&self) -> Uuid {
        self.peer_id
    }
    fn role(&self) -> Role {
        Role::Client { agent_id: self.agent_id }
    }
}

/// Everything tailnet of one server: the coordinator, the DERP map poller, the embedded DERP relay, the
/// client-side dRPC server.
pub struct Tailnet {
    coordinator: Coordinator,
    derp_maps: Arc<DerpMaps>,
    derp_relay: Option<Arc<crate::derp::Relay>>,
    stats: Arc<TailnetStats>,
    clients: Server<Arc<ClientPeer>>,
    resume_tokens: Arc<ResumeTokens>,
    /// Set when agents' coordination is relayed to coderd.
    coderd_relay: Option<Arc<coderd_relay::CoderdRelay>>,
    /// The server's pool, under which every client session reads.
    memory: MemoryBudget,
    stop: CancellationToken,
}

impl Tailnet {
    /// Must be called inside a Tokio runtime. `stats` is where the counters go (the server's metrics).
    pub fn new(
        store: Store,
        replica: Uuid,
        config: TailnetConfig,
        rpc: ServerConfig,
        memory: MemoryBudget,
        stats: Arc<TailnetStats>,
        observer: Option<Arc<dyn agentwire_transport::server::CallObserver>>,
    ) -> Arc<Self> {
        let stop = CancellationToken::new();
        let derp = &config.derp;
        // The embedded relay's region is the map until the operator sets one, as in coderd.
        let default_map = match derp.default_map() {
            Ok(map) => map.map(Arc::new),
            Err(err) => {
                tracing::error!(error = %err, "no default DERP map");
                None
            }
        };
        let derp_relay = derp.enabled.then(|| crate::derp::Relay::new(derp.relay.clone(), stats.derp.clone()));
        let derp_maps =
            DerpMaps::with_default(store.clone(), config.derp_map_check_interval, default_map, stop.clone());
        let resume_tokens = Arc::new(ResumeTokens::new(store.clone()));
        let coderd_relay = match &config.coder_coordination {
            CoderCoordination::Relay { coderd_url } => {
                Some(coderd_relay::CoderdRelay::new(coderd_url, rpc.session, rpc.limits, stats.coderd_relay.clone()))
            }
            CoderCoordination::Own | CoderCoordination::Postgres => None,
        };
        let link = pgcoord::link(&config.coder_coordination, store.schema()).unwrap_or(remote::start);
        let coordinator = Coordinator::new(store, replica, config, stats.clone(), stop.clone(), link);
        let mut router = Router::new();
        let mut client_api = TailnetApi::<Arc<ClientPeer>>::with(&coordinator, &derp_maps, &stats);
        client_api.resume_tokens = Some(resume_tokens.clone());
        pb::register_tailnet(&mut router, Arc::new(client_api));
        let mut clients = Server::new(router, rpc);
        if let Some(observer) = observer {
            clients = clients.with_observer(observer);
        }
        Arc::new(Tailnet {
            coordinator,
            derp_maps,
            derp_relay,
            stats,
            clients,
            resume_tokens,
            coderd_relay,
            memory,
            stop,
        })
    }

    /// The service as registered on the agent connection.
    pub fn agent_api(&self) -> Arc<TailnetApi<Arc<Session>>> {
        Arc::new(TailnetApi::with(&self.coordinator, &self.derp_maps, &self.stats))
    }

    /// The DERP map poller that StreamDERPMaps and the manifest watch.
    pub fn derp_maps(&self) -> &Arc<DerpMaps> {
        &self.derp_maps
    }

    /// The embedded DERP relay, unless it is off.
    pub fn derp_relay(&self) -> Option<&Arc<crate::derp::Relay>> {
        self.derp_relay.as_ref()
    }

    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The relay to coderd that agent sessions take their link from, when coordination is relayed.
    pub fn coderd_relay(&self) -> Option<&Arc<coderd_relay::CoderdRelay>> {
        self.coderd_relay.as_ref()
    }

    /// The resume tokens clients get from RefreshResumeToken and give back to the coordinate endpoint.
    pub fn resume_tokens(&self) -> &Arc<ResumeTokens> {
        &self.resume_tokens
    }

    /// Serves one client connection (yamux over `io`) until it leaves or `shutdown` fires.
    pub async fn serve_client<T>(&self, io: T, peer: Arc<ClientPeer>, shutdown: CancellationToken) -> SessionEnd
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let rpc = self.clients.config();
        let memory = self.memory.session(rpc.session_memory, rpc.session_guaranteed_memory);
        self.clients.serve_session_in(io, peer, shutdown, memory).await
    }

    /// Stops the background tasks, after the publisher has sent what is queued (the peers lost at shutdown, for
    /// the other replicas), waiting for it at most `drain`.
    pub async fn stop(&self, drain: std::time::Duration) {
        self.stop.cancel();
        self.coordinator.publisher_finished(drain).await;
    }
}

pub struct TailnetApi<C> {
    coordinator: Coordinator,
    derp_maps: Arc<DerpMaps>,
    stats: Arc<TailnetStats>,
    /// Set for clients only (see [`resume`]).
    resume_tokens: Option<Arc<ResumeTokens>>,
    _peer: std::marker::PhantomData<fn(C)>,
}

impl<C> TailnetApi<C> {
    fn with(coordinator: &Coordinator, derp_maps: &Arc<DerpMaps>, stats: &Arc<TailnetStats>) -> Self {
        TailnetApi {
            coordinator: coordinator.clone(),
            derp_maps: derp_maps.clone(),
            stats: stats.clone(),
            resume_tokens: None,
            _peer: std::marker::PhantomData,
        }
    }

    /// Telemetry events received since start.
    pub fn telemetry_events(&self) -> u64 {
        self.stats.telemetry_events.load(Ordering::Relaxed)
    }
}

/// A coordinator refusal as the dRPC error the peer sees.
fn status(err: CoordinateError) -> Status {
    Status::error(err.to_string())
}

impl<C: TailnetPeer> pb::TailnetServer for TailnetApi<C> {
    type Context = C;

    async fn post_telemetry(&self, _: &C, request: pb::TelemetryRequest) -> Result<pb::TelemetryResponse, Status> {
        self.stats.telemetry_events.fetch_add(request.events.len() as u64, Ordering::Relaxed);
        Ok(pb::TelemetryResponse {})
    }

    async fn stream_derp_maps(
        &self,
        peer: &C,
        request: pb::StreamDerpMapsRequest,
        responses: ResponseSink<pb::DerpMap>,
    ) -> Result<(), Status> {
        if let Some(coderd) = peer.coderd_relay() {
            return coderd.stream_derp_maps(request, responses).await;
        }
        let mut maps = self.derp_maps.subscribe();
        let mut sent: Option<Arc<pb::DerpMap>> = None;
        loop {
            let current = maps.borrow_and_update().clone();
            if let Some(map) = current {
                if sent.as_deref() != Some(map.as_ref()) {
                    responses.send(map.as_ref()).await?;
                    sent = Some(map);
                }
            }
            tokio::select! {
                changed = maps.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                _ = responses.closed() => return Ok(()),
            }
        }
    }

    async fn refresh_resume_token(
        &self,
        peer: &C,
        _: pb::RefreshResumeTokenRequest,
    ) -> Result<pb::RefreshResumeTokenResponse, Status> {
        let Some(tokens) = &self.resume_tokens else { return Err(Status::unimplemented()) };
        tokens.generate(peer.peer_id()).await.map_err(|err| {
            tracing::error!(error = %err, "generating a resume token");
            Status::error(format!("generate resume token: {err}"))
        })
    }

    async fn coordinate(
        &self,
        peer: &C,
        mut requests: RequestStream<pb::CoordinateRequest>,
        responses: ResponseSink<pb::CoordinateResponse>,
    ) -> Result<(), Status> {
        if let Some(coderd) = peer.coderd_relay() {
            return coderd.coordinate(requests, responses).await;
        }
        let (mut handle, mut updates) = self.coordinator.register(peer.peer_id(), peer.role()).map_err(status)?;
        self.stats.peers.fetch_add(1, Ordering::Relaxed);
        let _count = PeerCount(&self.stats);
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Ok(Some(request)) => match handle.handle(request) {
                        Ok(false) => {}
                        // Disconnected: deliver what is queued, then end the call cleanly.
                        Ok(true) => {
                            while let Ok(update) = updates.try_recv() {
                                if responses.send(&update).await.is_err() {
                                    break;
                                }
                            }
                            return Ok(());
                        }
                        Err(err) => {
                            tracing::info!(peer = %handle.id(), error = %err, "ending a coordinate stream: rule broken");
                            handle.leave(true);
                            return Err(status(err));
                        }
                    },
                    // Closed without a disconnect, or broken: lost (the handle's drop says so).
                    Ok(None) => return Ok(()),
                    Err(err) => return Err(err),
                },
                update = updates.recv() => match update {
                    Some(update) => {
                        if responses.send(&update).await.is_err() {
                            return Ok(());
                        }
                    }
                    None => {
                        let reason = handle.close_reason().unwrap_or_else(|| "coordinator closed".to_owned());
                        return Err(Status::error(reason));
                    }
                },
                _ = responses.closed() => return Ok(()),
            }
        }
    }

    async fn workspace_updates(
        &self,
        _: &C,
        _: pb::WorkspaceUpdatesRequest,
        _: ResponseSink<pb::WorkspaceUpdate>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented())
    }
}

struct PeerCount<'a>(&'a TailnetStats);

impl Drop for PeerCount<'_> {
    fn drop(&mut self) {
        self.0.peers.fetch_sub(1, Ordering::Relaxed);
    }
}
