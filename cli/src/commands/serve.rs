//! `agentwire serve`: the agent endpoint, `/metrics` and the user endpoints on one address. Its flags come in
//! groups, one struct per help heading, the three a newcomer needs (`--listen`, `--db`, `--demo`) first; every
//! default is the library's constant.

use std::net::SocketAddr;

use agentwire::agent_spec;
use agentwire::agentapi::{self, AgentApiConfig};
use agentwire::derp;
use agentwire::metrics_cache as mc;
use agentwire::server::{self, AppState, ServeConfig};
use agentwire::tailnet;
use agentwire_store::{AgentPlacement, StoreOptions};
use agentwire_transport::io::{self as tio, keepalive, KeepaliveConfig};
use agentwire_transport::{budget, limits};
use anyhow::Context;
use clap::Args;
use uuid::Uuid;

use super::{open_store, secs, DbArgs};

#[derive(Args)]
pub struct ServeArgs {
    /// HTTP address to listen on.
    #[arg(long, env = "AGENTWIRE_LISTEN", default_value_t = ServeConfig::default().listen)]
    listen: SocketAddr,
    #[command(flatten)]
    db: DbArgs,
    /// Create a demo workspace and agent on first start and print how to connect it.
    #[arg(long, env = "AGENTWIRE_DEMO")]
    demo: bool,
    /// Serve the agents of a Coder deployment from its own PostgreSQL database (coderd's --postgres-url), beside
    /// its coderd: route the agents' /api/v2/workspaceagents/me/rpc here and everything else to coderd (README,
    /// "Beside coderd"). Nothing is migrated; an unknown Coder schema version is refused.
    #[arg(long, env = "AGENTWIRE_CODER_DB", conflicts_with_all = ["db", "demo"])]
    coder_db: Option<String>,
    #[command(flatten)]
    listening: ListeningArgs,
    #[command(flatten)]
    deployment: DeploymentArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    batching: BatchingArgs,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    timers: TimerArgs,
    #[command(flatten)]
    tailnet: TailnetArgs,
    #[command(flatten)]
    metrics_cache: MetricsCacheArgs,
    #[command(flatten)]
    derp: DerpArgs,
}

/// Who reaches the server, and how it names itself.
#[derive(Args)]
#[command(next_help_heading = "Listening")]
struct ListeningArgs {
    /// Also serve plain-TCP yamux (no WebSocket) on this address; every session there is --tcp-agent-token's agent.
    #[arg(long, env = "AGENTWIRE_TCP_LISTEN", requires = "tcp_agent_token")]
    tcp_listen: Option<SocketAddr>,
    /// The agent token whose agent the --tcp-listen sessions are.
    #[arg(long, env = "AGENTWIRE_TCP_AGENT_TOKEN")]
    tcp_agent_token: Option<String>,
    /// The URL agents and users reach this server at.
    #[arg(long, env = "AGENTWIRE_ACCESS_URL")]
    access_url: Option<String>,
    /// This replica's id, recorded on the agents it serves (random by default).
    #[arg(long, env = "AGENTWIRE_REPLICA_ID")]
    replica_id: Option<Uuid>,
}

/// What a Coder deployment configures that its agents are told in their manifest, under coderd's flag names and with
/// its defaults: beside coderd, set each as coderd's is set (README, "Beside coderd").
#[derive(Args)]
#[command(next_help_heading = "Deployment")]
struct DeploymentArgs {
    /// Wildcard host of subdomain apps, such as `*.apps.example.com` (coderd's --wildcard-access-url); empty: apps
    /// get no subdomain names and agents no port-proxy URI.
    #[arg(long, env = "AGENTWIRE_WILDCARD_ACCESS_URL", default_value = "")]
    wildcard_access_url: String,
    /// The type of each of coderd's external auth providers, one entry per provider, as its
    /// CODER_EXTERNAL_AUTH_<n>_TYPE says (github,gitlab,slack,…); agents are told how many are Git providers.
    #[arg(long, env = "AGENTWIRE_EXTERNAL_AUTH_TYPES", value_delimiter = ',')]
    external_auth_types: Vec<String>,
    /// Peers connect only through DERP, never directly; the default DERP map then has no STUN regions (coderd's
    /// --block-direct-connections).
    #[arg(long, env = "AGENTWIRE_BLOCK_DIRECT_CONNECTIONS")]
    block_direct_connections: bool,
    /// Agents reach DERP relays over WebSockets only, never `Upgrade: DERP` (coderd's --derp-force-websockets).
    #[arg(long, env = "AGENTWIRE_DERP_FORCE_WEBSOCKETS")]
    derp_force_websockets: bool,
}

/// The connection pool.
#[derive(Args)]
#[command(next_help_heading = "Database")]
struct DatabaseArgs {
    /// PostgreSQL connections in the pool.
    #[arg(long, env = "AGENTWIRE_PG_MAX_CONNECTIONS", default_value_t = StoreOptions::default().pg_max_connections)]
    pg_max_connections: u32,
    /// Milliseconds a query waits for a pooled connection (or for the database to accept one) before it fails: how
    /// long an RPC can wait on an unreachable database before the agent gets an error.
    #[arg(long, env = "AGENTWIRE_DB_ACQUIRE_TIMEOUT_MS",
          default_value_t = StoreOptions::default().acquire_timeout.as_millis() as u64)]
    db_acquire_timeout_ms: u64,
}

/// The store's write batchers; defaults are Coder's where Coder has them.
#[derive(Args)]
#[command(next_help_heading = "Batching")]
struct BatchingArgs {
    /// Metadata batcher: flush at this many distinct (agent, key) updates…
    #[arg(long, env = "AGENTWIRE_METADATA_FLUSH_AT", default_value_t = StoreOptions::default().metadata_flush_at)]
    metadata_flush_at: usize,
    /// …or after this many milliseconds.
    #[arg(long, env = "AGENTWIRE_METADATA_FLUSH_INTERVAL_MS",
          default_value_t = StoreOptions::default().metadata_flush_interval.as_millis() as u64)]
    metadata_flush_interval_ms: u64,
    /// Metadata updates queued at most; past it updates are dropped and counted.
    #[arg(long, env = "AGENTWIRE_METADATA_QUEUE", default_value_t = StoreOptions::default().metadata_queue_capacity)]
    metadata_queue: usize,
    /// Stats batcher: rows held at most (a flush is forced at the configured percentage of it)…
    #[arg(long, env = "AGENTWIRE_STATS_MAX_ROWS", default_value_t = StoreOptions::default().stats_max_rows)]
    stats_max_rows: usize,
    /// …and flushed after this many milliseconds.
    #[arg(long, env = "AGENTWIRE_STATS_FLUSH_INTERVAL_MS",
          default_value_t = StoreOptions::default().stats_flush_interval.as_millis() as u64)]
    stats_flush_interval_ms: u64,
    /// Heartbeat batcher: flush at this many agents…
    #[arg(long, env = "AGENTWIRE_HEARTBEAT_FLUSH_AT", default_value_t = StoreOptions::default().heartbeat_flush_at)]
    heartbeat_flush_at: usize,
    /// …or after this many milliseconds.
    #[arg(long, env = "AGENTWIRE_HEARTBEAT_FLUSH_INTERVAL_MS",
          default_value_t = StoreOptions::default().heartbeat_flush_interval.as_millis() as u64)]
    heartbeat_flush_interval_ms: u64,
    /// Resource monitor batcher (the states PushResourcesMonitoringUsage computes): flush at this many monitors…
    #[arg(long, env = "AGENTWIRE_MONITOR_FLUSH_AT", default_value_t = StoreOptions::default().monitor_flush_at)]
    monitor_flush_at: usize,
    /// …or after this many milliseconds.
    #[arg(long, env = "AGENTWIRE_MONITOR_FLUSH_INTERVAL_MS",
          default_value_t = StoreOptions::default().monitor_flush_interval.as_millis() as u64)]
    monitor_flush_interval_ms: u64,
    /// Monitor states queued at most; past it a push's states are dropped and counted (the next push writes again).
    #[arg(long, env = "AGENTWIRE_MONITOR_QUEUE", default_value_t = StoreOptions::default().monitor_queue_capacity)]
    monitor_queue: usize,
}

/// What one agent, session or request may make the server hold (README, "Limits").
#[derive(Args)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Most agent sessions at once.
    #[arg(long, env = "AGENTWIRE_MAX_SESSIONS", default_value_t = server::DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,
    /// Most sessions one agent may hold at once.
    #[arg(long, env = "AGENTWIRE_MAX_SESSIONS_PER_AGENT", default_value_t = server::DEFAULT_MAX_SESSIONS_PER_AGENT)]
    max_sessions_per_agent: usize,
    /// Most yamux streams open at once in one session.
    #[arg(long, env = "AGENTWIRE_MAX_STREAMS_PER_SESSION",
          default_value_t = tio::yamux::DEFAULT_MAX_STREAMS_PER_SESSION)]
    max_streams_per_session: usize,
    /// Most calls running at once in one session.
    #[arg(long, env = "AGENTWIRE_MAX_CONCURRENT_CALLS",
          default_value_t = agentwire_transport::server::DEFAULT_MAX_CONCURRENT_CALLS_PER_SESSION)]
    max_concurrent_calls: usize,
    /// Largest dRPC message accepted, in bytes.
    #[arg(long, env = "AGENTWIRE_MAX_MESSAGE_SIZE", default_value_t = limits::DEFAULT_MAX_PACKET_SIZE)]
    max_message_size: usize,
    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "AGENTWIRE_MAX_WS_MESSAGE_SIZE", default_value_t = tio::DEFAULT_MAX_WS_MESSAGE_SIZE)]
    max_ws_message_size: usize,
    /// Bytes queued on an agent's WebSocket (pongs included) before further pongs replace the one waiting.
    #[arg(long, env = "AGENTWIRE_MAX_WS_WRITE_BUFFER", default_value_t = server::DEFAULT_MAX_WS_WRITE_BUFFER)]
    max_ws_write_buffer: usize,
    /// Bytes an agent's WebSocket reads at a time; resident per connection, so it sets the floor of an idle
    /// session's memory. Larger messages still arrive whole.
    #[arg(long, env = "AGENTWIRE_WS_READ_BUFFER", default_value_t = tio::DEFAULT_WS_READ_BUFFER)]
    ws_read_buffer: usize,
    /// Bytes of logs one agent may store (Coder: 1 MiB).
    #[arg(long, env = "AGENTWIRE_MAX_LOGS_LENGTH", default_value_t = StoreOptions::default().max_logs_length)]
    max_logs_length: i64,
    /// Largest request body the agent's `me/…` HTTP endpoints read (`PATCH me/logs` and the like), in bytes.
    #[arg(long, env = "AGENTWIRE_MAX_AGENT_REQUEST_BODY",
          default_value_t = server::AgentHttpLimits::default().max_request_body)]
    max_agent_request_body: usize,
    /// Most `me/reinit` streams open at once in the server.
    #[arg(long, env = "AGENTWIRE_MAX_REINIT_STREAMS",
          default_value_t = server::AgentHttpLimits::default().max_reinit_streams)]
    max_reinit_streams: usize,
    /// Most `me/reinit` streams one agent may hold; a new one closes its oldest.
    #[arg(long, env = "AGENTWIRE_MAX_REINIT_STREAMS_PER_AGENT",
          default_value_t = server::AgentHttpLimits::default().max_reinit_streams_per_agent)]
    max_reinit_streams_per_agent: usize,
    /// Most boundary decisions one ReportBoundaryLogs call may carry (Coder: 1000); a larger batch is refused.
    #[arg(long, env = "AGENTWIRE_MAX_BOUNDARY_LOGS_PER_BATCH",
          default_value_t = AgentApiConfig::default().max_boundary_logs_per_batch)]
    max_boundary_logs_per_batch: usize,
    /// Most resources one PushContextState may carry (Coder: 1000); a larger push is refused.
    #[arg(long, env = "AGENTWIRE_MAX_CONTEXT_RESOURCES",
          default_value_t = AgentApiConfig::default().max_context_resources)]
    max_context_resources: usize,
    /// Largest body of one PushContextState resource, in encoded bytes (Coder: 256 KiB).
    #[arg(long, env = "AGENTWIRE_MAX_CONTEXT_BODY_BYTES",
          default_value_t = AgentApiConfig::default().max_context_body_bytes)]
    max_context_body_bytes: usize,
    /// Largest sum of the resource bodies of one PushContextState, in encoded bytes (Coder: 4 MiB).
    #[arg(long, env = "AGENTWIRE_MAX_CONTEXT_TOTAL_BODY_BYTES",
          default_value_t = AgentApiConfig::default().max_context_total_body_bytes)]
    max_context_total_body_bytes: usize,
}

/// Memory budgets for undispatched bytes (README, "Limits").
#[derive(Args)]
#[command(next_help_heading = "Memory")]
struct MemoryArgs {
    /// Bytes one session may hold read but not yet handed to a handler; past it its reads wait.
    #[arg(long, env = "AGENTWIRE_MAX_SESSION_MEMORY", default_value_t = budget::DEFAULT_SESSION_MEMORY)]
    max_session_memory: usize,
    /// The part of each session's memory that is its own, not drawn from the agent and server limits.
    #[arg(long, env = "AGENTWIRE_SESSION_GUARANTEED_MEMORY",
          default_value_t = budget::DEFAULT_SESSION_GUARANTEED_MEMORY)]
    session_guaranteed_memory: usize,
    /// Bytes all of one agent's sessions may hold past their guaranteed parts.
    #[arg(long, env = "AGENTWIRE_MAX_AGENT_MEMORY", default_value_t = server::DEFAULT_AGENT_MEMORY)]
    max_agent_memory: usize,
    /// Bytes every session together may hold past their guaranteed parts.
    #[arg(long, env = "AGENTWIRE_MAX_SERVER_MEMORY", default_value_t = server::DEFAULT_SERVER_MEMORY)]
    max_server_memory: usize,
    /// Seconds a read may wait under an exhausted memory limit before the session holding the most under it ends.
    #[arg(long, env = "AGENTWIRE_MEMORY_WAIT", default_value_t = budget::DEFAULT_MEMORY_WAIT.as_secs())]
    memory_wait: u64,
}

/// Keepalives, timeouts and the intervals agents are told.
#[derive(Args)]
#[command(next_help_heading = "Timers")]
struct TimerArgs {
    /// Seconds between yamux keepalive pings (0 turns them off).
    #[arg(long, env = "AGENTWIRE_KEEPALIVE_INTERVAL", default_value_t = keepalive::DEFAULT_KEEPALIVE_INTERVAL.as_secs())]
    keepalive_interval: u64,
    /// Seconds a keepalive ping may go unanswered.
    #[arg(long, env = "AGENTWIRE_KEEPALIVE_TIMEOUT", default_value_t = keepalive::DEFAULT_KEEPALIVE_TIMEOUT.as_secs())]
    keepalive_timeout: u64,
    /// Seconds a write may stall (a peer that stopped reading) before the session ends.
    #[arg(long, env = "AGENTWIRE_WRITE_TIMEOUT", default_value_t = keepalive::DEFAULT_WRITE_TIMEOUT.as_secs())]
    write_timeout: u64,
    /// Seconds between WebSocket pings to an agent (0 turns them off).
    #[arg(long, env = "AGENTWIRE_WS_PING_INTERVAL", default_value_t = tio::DEFAULT_WS_PING_INTERVAL.as_secs())]
    ws_ping_interval: u64,
    /// Seconds a WebSocket may stay silent before it is dropped.
    #[arg(long, env = "AGENTWIRE_WS_PING_TIMEOUT", default_value_t = tio::DEFAULT_WS_PING_TIMEOUT.as_secs())]
    ws_ping_timeout: u64,
    /// Seconds a client may take to send a request's head (the WebSocket upgrade included).
    #[arg(long, env = "AGENTWIRE_HANDSHAKE_TIMEOUT", default_value_t = server::DEFAULT_HANDSHAKE_TIMEOUT.as_secs())]
    handshake_timeout: u64,
    /// Seconds between agent stats reports, as told to agents.
    #[arg(long, env = "AGENTWIRE_STATS_REPORT_INTERVAL",
          default_value_t = agentapi::DEFAULT_STATS_REPORT_INTERVAL.as_secs())]
    stats_report_interval: u64,
    /// Seconds between connection heartbeats (last_connected_at).
    #[arg(long, env = "AGENTWIRE_HEARTBEAT_INTERVAL", default_value_t = server::DEFAULT_HEARTBEAT_INTERVAL.as_secs())]
    heartbeat_interval: u64,
    /// Seconds between checks of the sessions' builds: a session whose workspace has a newer build (stopped,
    /// restarted, deleted) is ended, as coderd's connection monitor ends it (one query for all sessions).
    #[arg(long, env = "AGENTWIRE_BUILD_CHECK_INTERVAL",
          default_value_t = agentwire::build_watch::DEFAULT_BUILD_CHECK_INTERVAL.as_secs())]
    build_check_interval: u64,
    /// Seconds between re-reads of the announcement banners served to agents. agentwire's own writes reach running
    /// servers at once; beside coderd, a banner changed in coderd is served within this.
    #[arg(long, env = "AGENTWIRE_BANNER_REFRESH_INTERVAL",
          default_value_t = agentapi::DEFAULT_BANNER_REFRESH_INTERVAL.as_secs())]
    banner_refresh_interval: u64,
    /// Seconds shutdown waits for calls in flight.
    #[arg(long, env = "AGENTWIRE_SHUTDOWN_GRACE", default_value_t = server::DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace: u64,
}

/// The coordinator's limits and the DERP map check interval.
#[derive(Args)]
#[command(next_help_heading = "Tailnet")]
struct TailnetArgs {
    /// Seconds between DERP map checks for open StreamDERPMaps streams (coderd: 5).
    #[arg(long, env = "AGENTWIRE_DERP_MAP_CHECK_INTERVAL",
          default_value_t = tailnet::DEFAULT_DERP_MAP_CHECK_INTERVAL.as_secs())]
    derp_map_check_interval: u64,
    /// Largest encoded node a coordinating peer may send, in bytes.
    #[arg(long, env = "AGENTWIRE_TAILNET_MAX_NODE_SIZE", default_value_t = tailnet::DEFAULT_MAX_NODE_SIZE)]
    tailnet_max_node_size: usize,
    /// Most tunnels one peer may open.
    #[arg(long, env = "AGENTWIRE_TAILNET_MAX_TUNNELS_PER_PEER", default_value_t = tailnet::DEFAULT_MAX_TUNNELS_PER_PEER)]
    tailnet_max_tunnels_per_peer: usize,
    /// Most peers this replica coordinates at once.
    #[arg(long, env = "AGENTWIRE_TAILNET_MAX_PEERS", default_value_t = tailnet::DEFAULT_MAX_PEERS)]
    tailnet_max_peers: usize,
    /// Responses queued per peer before a peer that does not read is removed.
    #[arg(long, env = "AGENTWIRE_TAILNET_PEER_QUEUE", default_value_t = tailnet::DEFAULT_PEER_QUEUE)]
    tailnet_peer_queue: usize,
    /// Coordinator events queued for other replicas before they are dropped.
    #[arg(long, env = "AGENTWIRE_TAILNET_PUBLISH_QUEUE", default_value_t = tailnet::DEFAULT_PUBLISH_QUEUE)]
    tailnet_publish_queue: usize,
    /// Seconds between coordinator heartbeats to other replicas.
    #[arg(long, env = "AGENTWIRE_TAILNET_REPLICA_HEARTBEAT",
          default_value_t = tailnet::DEFAULT_REPLICA_HEARTBEAT.as_secs())]
    tailnet_replica_heartbeat: u64,
    /// Seconds of silence after which another replica's peers are lost.
    #[arg(long, env = "AGENTWIRE_TAILNET_REPLICA_TIMEOUT", default_value_t = tailnet::DEFAULT_REPLICA_TIMEOUT.as_secs())]
    tailnet_replica_timeout: u64,
    /// Beside coderd: whose coordinator the agents join. `relay`: each agent's Coordinate and StreamDERPMaps go to
    /// coderd at --coderd-url with the agent's token, so that coderd's clients (coder ssh, port-forward, the web
    /// terminal, the app proxy) reach it; `own`: agentwire's coordinator, which coderd's clients never see;
    /// `postgres`: coderd's PGCoordinator protocol on its database. Default: relay with --coderd-url, else own.
    #[arg(long, env = "AGENTWIRE_CODER_COORDINATION", value_enum, requires = "coder_db")]
    coder_coordination: Option<CoordinationArg>,
    /// coderd's own address as agentwire reaches it, not the front's: its --http-address (http://HOST:PORT).
    #[arg(long, env = "AGENTWIRE_CODERD_URL", requires = "coder_db")]
    coderd_url: Option<String>,
}

/// `--coder-coordination`, the names of [`tailnet::CoderCoordination`]'s variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CoordinationArg {
    Own,
    Relay,
    Postgres,
}

/// The background aggregates behind the insights endpoints.
#[derive(Args)]
#[command(next_help_heading = "Metrics cache")]
struct MetricsCacheArgs {
    /// Seconds between refreshes of the template aggregates (DAUs, unique users, build times).
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_TEMPLATE_INTERVAL",
          default_value_t = mc::DEFAULT_TEMPLATE_INTERVAL.as_secs())]
    metrics_cache_template_interval: u64,
    /// Seconds between refreshes of the deployment stats.
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_DEPLOYMENT_STATS_INTERVAL",
          default_value_t = mc::DEFAULT_DEPLOYMENT_STATS_INTERVAL.as_secs())]
    metrics_cache_deployment_stats_interval: u64,
    /// Milliseconds before the first retry of a failed refresh (doubling from there)…
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_BACKOFF_MIN_MS",
          default_value_t = mc::DEFAULT_BACKOFF_MIN.as_millis() as u64)]
    metrics_cache_backoff_min_ms: u64,
    /// …up to this many milliseconds.
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_BACKOFF_MAX_MS",
          default_value_t = mc::DEFAULT_BACKOFF_MAX.as_millis() as u64)]
    metrics_cache_backoff_max_ms: u64,
    /// Seconds of agent stats the deployment stats aggregate.
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_STATS_WINDOW", default_value_t = mc::DEFAULT_STATS_WINDOW.as_secs())]
    metrics_cache_stats_window: u64,
    /// Seconds without a heartbeat after which a running build job no longer counts as building.
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_BUILD_HEARTBEAT_WINDOW",
          default_value_t = mc::DEFAULT_BUILD_HEARTBEAT_WINDOW.as_secs())]
    metrics_cache_build_heartbeat_window: u64,
    /// Seconds back that build times look for started jobs.
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_BUILD_TIME_WINDOW",
          default_value_t = mc::DEFAULT_BUILD_TIME_WINDOW.as_secs())]
    metrics_cache_build_time_window: u64,
    /// Most recent successful builds per template that build times use.
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_BUILD_TIME_SAMPLE", default_value_t = mc::DEFAULT_BUILD_TIME_SAMPLE)]
    metrics_cache_build_time_sample: i64,
    /// Timezone offsets (hours) deployment DAUs are computed for; others get the closest.
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_TZ_OFFSETS", value_delimiter = ',', allow_negative_numbers = true,
          default_values_t = mc::DEFAULT_DEPLOYMENT_TZ_OFFSETS.to_vec())]
    metrics_cache_tz_offsets: Vec<i32>,
    /// Timezone offsets (hours) template DAUs are computed for.
    #[arg(long, env = "AGENTWIRE_METRICS_CACHE_TEMPLATE_TZ_OFFSETS", value_delimiter = ',',
          allow_negative_numbers = true, default_values_t = mc::DEFAULT_TEMPLATE_TZ_OFFSETS.to_vec())]
    metrics_cache_template_tz_offsets: Vec<i32>,
}

impl ServeArgs {
    fn store_options(&self) -> StoreOptions {
        let b = &self.batching;
        StoreOptions {
            metadata_flush_at: b.metadata_flush_at,
            metadata_flush_interval: std::time::Duration::from_millis(b.metadata_flush_interval_ms),
            metadata_queue_capacity: b.metadata_queue,
            stats_max_rows: b.stats_max_rows,
            stats_flush_interval: std::time::Duration::from_millis(b.stats_flush_interval_ms),
            heartbeat_flush_at: b.heartbeat_flush_at,
            heartbeat_flush_interval: std::time::Duration::from_millis(b.heartbeat_flush_interval_ms),
            monitor_flush_at: b.monitor_flush_at,
            monitor_flush_interval: std::time::Duration::from_millis(b.monitor_flush_interval_ms),
            monitor_queue_capacity: b.monitor_queue,
            max_logs_length: self.limits.max_logs_length,
            pg_max_connections: self.database.pg_max_connections,
            acquire_timeout: std::time::Duration::from_millis(self.database.db_acquire_timeout_ms),
            ..StoreOptions::default()
        }
    }

    fn config(&self, access_url: String) -> anyhow::Result<ServeConfig> {
        let (l, m, t, d) = (&self.limits, &self.memory, &self.timers, &self.deployment);
        let derp = self.derp.config(&access_url, d.block_direct_connections, self.coder_db.is_some())?;
        agentapi::check_wildcard_access_url(&d.wildcard_access_url)
            .map_err(|e| anyhow::anyhow!("--wildcard-access-url: {e}"))?;
        let mut config = ServeConfig {
            listen: self.listen,
            replica_id: self.listening.replica_id.unwrap_or_else(Uuid::new_v4),
            max_sessions: l.max_sessions,
            max_sessions_per_agent: l.max_sessions_per_agent,
            agent_memory: m.max_agent_memory,
            server_memory: m.max_server_memory,
            max_ws_message_size: l.max_ws_message_size,
            heartbeat_interval: secs(t.heartbeat_interval),
            build_check_interval: secs(t.build_check_interval.max(1)),
            ws_ping_interval: (t.ws_ping_interval > 0).then(|| secs(t.ws_ping_interval)),
            ws_ping_timeout: secs(t.ws_ping_timeout),
            shutdown_grace: secs(t.shutdown_grace),
            handshake_timeout: secs(t.handshake_timeout.max(1)),
            max_ws_write_buffer: l.max_ws_write_buffer,
            ws_read_buffer: l.ws_read_buffer.max(64),
            agent_api: AgentApiConfig {
                stats_report_interval: secs(t.stats_report_interval),
                access_url,
                app_hostname: d.wildcard_access_url.clone(),
                git_auth_configs: agentapi::git_auth_configs(&d.external_auth_types),
                disable_direct_connections: d.block_direct_connections,
                derp_force_websockets: d.derp_force_websockets,
                max_boundary_logs_per_batch: l.max_boundary_logs_per_batch,
                max_context_resources: l.max_context_resources,
                max_context_body_bytes: l.max_context_body_bytes,
                max_context_total_body_bytes: l.max_context_total_body_bytes,
                banner_refresh_interval: secs(t.banner_refresh_interval.max(1)),
                ..AgentApiConfig::default()
            },
            tcp_listen: self.listening.tcp_listen,
            tcp_agent_token: self.listening.tcp_agent_token.clone(),
            metrics_cache: self.metrics_cache.config()?,
            tailnet: self.tailnet.config(),
            agent_http: server::AgentHttpLimits {
                max_request_body: l.max_agent_request_body,
                max_reinit_streams: l.max_reinit_streams,
                max_reinit_streams_per_agent: l.max_reinit_streams_per_agent,
            },
            ..ServeConfig::default()
        };
        config.rpc.session.max_streams = l.max_streams_per_session;
        config.rpc.max_concurrent_calls = l.max_concurrent_calls;
        config.rpc.limits.max_packet_size = l.max_message_size;
        config.rpc.session_memory = m.max_session_memory;
        config.rpc.session_guaranteed_memory = m.session_guaranteed_memory;
        config.rpc.memory_wait = secs(m.memory_wait.max(1));
        config.rpc.session.keepalive = KeepaliveConfig {
            interval: (t.keepalive_interval > 0).then(|| secs(t.keepalive_interval)),
            timeout: secs(t.keepalive_timeout),
            write_timeout: (t.write_timeout > 0).then(|| secs(t.write_timeout)),
        };
        config.tailnet.derp = derp;
        config.tailnet.coder_coordination = self.tailnet.coder_coordination()?;
        Ok(config)
    }
}

impl TailnetArgs {
    /// Relay is the default once coderd's address is given: it is the one choice under which coderd's clients reach
    /// the agents on one coderd, the deployment that builds everywhere, and the address says the operator wants
    /// coderd to be reached; without it nothing can be relayed, and agentwire keeps its own coordinator, as before
    /// the flag existed.
    fn coder_coordination(&self) -> anyhow::Result<tailnet::CoderCoordination> {
        let choice = self.coder_coordination.unwrap_or(match self.coderd_url {
            Some(_) => CoordinationArg::Relay,
            None => CoordinationArg::Own,
        });
        match (choice, &self.coderd_url) {
            (CoordinationArg::Relay, Some(url)) => {
                tailnet::coderd_relay::agent_endpoint(url).map_err(|e| anyhow::anyhow!("--coderd-url: {e}"))?;
                Ok(tailnet::CoderCoordination::Relay { coderd_url: url.clone() })
            }
            (CoordinationArg::Relay, None) => {
                anyhow::bail!("--coder-coordination relay needs --coderd-url, coderd's own address")
            }
            (other, Some(_)) => {
                anyhow::bail!("--coderd-url is for --coder-coordination relay; {other:?} does not use it")
            }
            (CoordinationArg::Own, None) => Ok(tailnet::CoderCoordination::Own),
            (CoordinationArg::Postgres, None) => Ok(tailnet::CoderCoordination::Postgres),
        }
    }

    fn config(&self) -> tailnet::TailnetConfig {
        tailnet::TailnetConfig {
            derp_map_check_interval: secs(self.derp_map_check_interval.max(1)),
            max_node_size: self.tailnet_max_node_size,
            max_tunnels_per_peer: self.tailnet_max_tunnels_per_peer,
            max_peers: self.tailnet_max_peers,
            peer_queue: self.tailnet_peer_queue,
            publish_queue: self.tailnet_publish_queue,
            replica_heartbeat: secs(self.tailnet_replica_heartbeat.max(1)),
            replica_timeout: secs(self.tailnet_replica_timeout.max(1)),
            ..tailnet::TailnetConfig::default()
        }
    }
}

impl MetricsCacheArgs {
    fn config(&self) -> anyhow::Result<mc::MetricsCacheConfig> {
        let config = mc::MetricsCacheConfig {
            template_interval: secs(self.metrics_cache_template_interval),
            deployment_stats_interval: secs(self.metrics_cache_deployment_stats_interval),
            backoff_min: std::time::Duration::from_millis(self.metrics_cache_backoff_min_ms),
            backoff_max: std::time::Duration::from_millis(self.metrics_cache_backoff_max_ms),
            stats_window: secs(self.metrics_cache_stats_window),
            build_heartbeat_window: secs(self.metrics_cache_build_heartbeat_window),
            build_time_window: secs(self.metrics_cache_build_time_window),
            build_time_sample: self.metrics_cache_build_time_sample,
            deployment_tz_offsets: self.metrics_cache_tz_offsets.clone(),
            template_tz_offsets: self.metrics_cache_template_tz_offsets.clone(),
            clock: mc::Clock::System,
        };
        config.validate().context("metrics cache flags")?;
        Ok(config)
    }
}

/// How long the user token `--demo` prints lives: 30 days, as `agentwire user token`'s default.
const DEMO_USER_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// The port the files app of examples/agent.toml serves on.
const DEMO_APP_PORT: u16 = 13380;

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    return_large_buffers_to_the_system();
    let store = match &args.coder_db {
        Some(url) => agentwire_store::Store::open_coder(url, args.store_options())
            .await
            .context("opening the Coder database given by --coder-db")?,
        None => open_store(&args.db.db, args.store_options()).await?,
    };
    let access_url = args.listening.access_url.clone().unwrap_or_else(|| format!("http://{}", args.listen));
    if args.demo && store.admin().user_id("demo").await?.is_none() {
        // The shipped example, built in: startup and shutdown scripts, metadata, an app with a health check, env.
        let example = agent_spec::parse(agent_spec::EXAMPLE, "examples/agent.toml")?;
        let placement = AgentPlacement { owner: "demo", template: "demo", workspace: "demo", agent: "main" };
        let agent = agent_spec::create_agent(&store, placement, &example.spec).await?.agent;
        let token = agent.auth_token;
        println!("demo agent created from examples/agent.toml; connect a Coder agent with:");
        println!("  CODER_AGENT_URL={access_url} CODER_AGENT_TOKEN={token} coder agent");
        println!("or the Go test client:");
        println!(
            "  scripts/build-go-interop.sh && target/go-interop/interop agent --url ws://{}/api/v2/workspaceagents/me/rpc --token {}",
            args.listen, token
        );
        // The client side: the owner's API token, for Coder's own client (the Go driver's `ssh`).
        let admin = store.admin();
        let owner = admin.user_id("demo").await?.context("the demo owner was just created")?;
        let user_token = admin.create_api_key(owner, DEMO_USER_TOKEN_LIFETIME).await?;
        println!("then, once the Coder agent is ready, reach the workspace with Coder's own client (SSH `echo`, and a");
        println!("port-forward to the files app):");
        println!(
            "  target/go-interop/interop ssh --url {access_url} --token {user_token} --agent-id {} --port {DEMO_APP_PORT}",
            agent.id
        );
    }
    let config = args.config(access_url)?;

    let state = AppState::new(store, config);
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let bound = listener.local_addr()?;
    tracing::info!(listen = %bound, replica = %state.config().replica_id, "serving agents");
    // On stdout, for scripts and tests that listen on port 0.
    println!("agentwire: listening on http://{bound}");
    if let (Some(addr), Some(token)) = (args.listening.tcp_listen, args.listening.tcp_agent_token) {
        let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        tracing::info!(listen = %tcp.local_addr()?, "serving plain-TCP yamux");
        tokio::spawn(server::serve_tcp(state.clone(), tcp, token));
    }
    let http = tokio::spawn(agentwire::http::serve(listener, state.clone(), state.shutdown_token().clone()));
    wait_for_signal().await;
    tracing::info!("shutting down: no new sessions, finishing calls in flight, flushing batchers");
    state.shutdown().await;
    let _ = tokio::time::timeout(secs(2), http).await;
    state.store().close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Blocks of this size and up (a message being read, a yamux window's chunk) get mappings of their own, given back to
/// the system when freed. glibc would otherwise raise its mmap threshold to the largest block freed and keep every
/// later one in its heaps: after issue 15's attack the server held 100 MiB instead of 47 (BENCHMARKS.md, "Memory
/// budgets"). Agents' ordinary messages are far smaller, so their calls make no system call for it.
const MMAP_THRESHOLD: i32 = 128 * 1024;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_buffers_to_the_system() {
    // SAFETY: mallopt only changes glibc's allocation parameters; it takes the allocator's own locks.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
        tracing::warn!("mallopt(M_MMAP_THRESHOLD) refused; large buffers stay in the heap when freed");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers_to_the_system() {}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The embedded DERP relay at `/derp` and the default DERP map that names it (coderd's `--derp-server-*` flags);
/// `agentwire derp set` overrides the map.
#[derive(Args)]
#[command(next_help_heading = "DERP relay")]
struct DerpArgs {
    /// Serve the embedded DERP relay and make it the default DERP map (`--derp-server-enable=false`: no relay, and
    /// an empty map until `derp set`).
    #[arg(long, env = "AGENTWIRE_DERP_SERVER_ENABLE", default_value_t = derp::DerpConfig::default().enabled,
          action = clap::ArgAction::Set)]
    derp_server_enable: bool,
    /// Region ID of the embedded relay in the default map (coderd: 999).
    #[arg(long, env = "AGENTWIRE_DERP_SERVER_REGION_ID", default_value_t = derp::region::DEFAULT_REGION_ID)]
    derp_server_region_id: i64,
    /// Region code of the embedded relay (coderd: coder).
    #[arg(long, env = "AGENTWIRE_DERP_SERVER_REGION_CODE", default_value = derp::region::DEFAULT_REGION_CODE)]
    derp_server_region_code: String,
    /// Region name of the embedded relay (coderd: Coder Embedded Relay).
    #[arg(long, env = "AGENTWIRE_DERP_SERVER_REGION_NAME", default_value = derp::region::DEFAULT_REGION_NAME)]
    derp_server_region_name: String,
    /// STUN servers peers learn their public addresses from, to connect directly: each gets a STUN-only region of
    /// the default map, IDs counting up from the relay's; `disable` turns STUN off. Default: with --coder-db
    /// coderd's (Google's stun.l.google.com:19302 and stun1..4), as the map must be coderd's; standalone none, so
    /// that agents and clients reach no third party unasked.
    #[arg(long, env = "AGENTWIRE_DERP_SERVER_STUN_ADDRESSES", value_delimiter = ',')]
    derp_server_stun_addresses: Option<Vec<String>>,
    /// Relay connections held at once; past it upgrades get 503.
    #[arg(long, env = "AGENTWIRE_DERP_MAX_CONNECTIONS", default_value_t = derp::relay::DEFAULT_MAX_CONNECTIONS)]
    derp_max_connections: usize,
    /// Largest packet a client may relay, in bytes (tailscale: 64 KiB); a larger frame ends its connection.
    #[arg(long, env = "AGENTWIRE_DERP_MAX_PACKET_SIZE", default_value_t = derp::frame::DEFAULT_MAX_PACKET_SIZE)]
    derp_max_packet_size: usize,
    /// Packets queued to one client, per queue (data, disco), before its oldest is dropped (Coder: 512).
    #[arg(long, env = "AGENTWIRE_DERP_QUEUE_DEPTH", default_value_t = derp::relay::DEFAULT_QUEUE_DEPTH)]
    derp_queue_depth: usize,
    /// Packet bytes queued to one client before its oldest packet is dropped.
    #[arg(long, env = "AGENTWIRE_DERP_MAX_CLIENT_QUEUED_BYTES",
          default_value_t = derp::relay::DEFAULT_MAX_CLIENT_QUEUED_BYTES)]
    derp_max_client_queued_bytes: usize,
    /// Packet bytes queued to all clients together before packets are dropped.
    #[arg(long, env = "AGENTWIRE_DERP_MAX_QUEUED_BYTES", default_value_t = derp::relay::DEFAULT_MAX_QUEUED_BYTES)]
    derp_max_queued_bytes: usize,
    /// Seconds a client has to log in after the upgrade (tailscale: 10).
    #[arg(long, env = "AGENTWIRE_DERP_LOGIN_TIMEOUT", default_value_t = derp::relay::DEFAULT_LOGIN_TIMEOUT.as_secs())]
    derp_login_timeout: u64,
    /// Seconds one write to a client may block before the client is dropped (tailscale: 2).
    #[arg(long, env = "AGENTWIRE_DERP_WRITE_TIMEOUT", default_value_t = derp::relay::DEFAULT_WRITE_TIMEOUT.as_secs())]
    derp_write_timeout: u64,
    /// Seconds between keep-alive frames to an idle client (tailscale: 60).
    #[arg(long, env = "AGENTWIRE_DERP_KEEPALIVE", default_value_t = derp::relay::DEFAULT_KEEPALIVE.as_secs())]
    derp_keepalive: u64,
}

impl DerpArgs {
    fn config(&self, access_url: &str, block_direct: bool, beside_coderd: bool) -> anyhow::Result<derp::DerpConfig> {
        let region = derp::EmbeddedRegion {
            region_id: self.derp_server_region_id,
            region_code: self.derp_server_region_code.clone(),
            region_name: self.derp_server_region_name.clone(),
        };
        let stun_addresses = match self.derp_server_stun_addresses.as_deref() {
            None if beside_coderd => derp::region::CODERD_STUN_ADDRESSES.map(String::from).to_vec(),
            None => derp::DerpConfig::default().stun_addresses,
            // serpent reads an empty value as no addresses, not as one empty address.
            Some([only]) if only.is_empty() => Vec::new(),
            Some(addresses) => addresses.to_vec(),
        };
        let config = derp::DerpConfig {
            enabled: self.derp_server_enable,
            region,
            access_url: access_url.to_owned(),
            stun_addresses,
            block_direct,
            relay: derp::RelayConfig {
                max_packet_size: self.derp_max_packet_size,
                queue_depth: self.derp_queue_depth.max(1),
                max_client_queued_bytes: self.derp_max_client_queued_bytes,
                max_queued_bytes: self.derp_max_queued_bytes,
                max_connections: self.derp_max_connections,
                login_timeout: secs(self.derp_login_timeout.max(1)),
                write_timeout: secs(self.derp_write_timeout.max(1)),
                keepalive: secs(self.derp_keepalive.max(1)),
                ..derp::RelayConfig::default()
            },
        };
        // The default map is built from it on every replica: a bad URL or STUN address should stop the start, as
        // it stops coderd's, not leave agents without a map.
        config.default_map().context("the default DERP map (--access-url, --derp-server-stun-addresses)")?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: super::ServeArgs,
    }

    fn config(argv: &[&str]) -> agentwire::server::ServeConfig {
        let parsed = Serve::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).unwrap();
        parsed.args.config("http://127.0.0.1:3000".into()).unwrap()
    }

    /// The monitor batcher's sizes reach the store from their flags, and default to the store's own.
    #[test]
    fn monitor_batcher_flags_reach_the_store_options() {
        let options = |argv: &[&str]| {
            let parsed = Serve::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).unwrap();
            let o = parsed.args.store_options();
            (o.monitor_flush_at, o.monitor_flush_interval, o.monitor_queue_capacity)
        };
        let defaults = agentwire_store::StoreOptions::default();
        assert_eq!(
            options(&[]),
            (defaults.monitor_flush_at, defaults.monitor_flush_interval, defaults.monitor_queue_capacity)
        );
        let set = options(&["--monitor-flush-at", "7", "--monitor-flush-interval-ms", "1500", "--monitor-queue", "9"]);
        assert_eq!(set, (7, std::time::Duration::from_millis(1500), 9));
    }

    /// The agent HTTP endpoints' limits reach the server from their flags, and default to the server's own.
    #[test]
    fn agent_http_limits_come_from_their_flags() {
        assert_eq!(config(&[]).agent_http, agentwire::server::AgentHttpLimits::default());
        let set = config(&[
            "--max-agent-request-body",
            "65536",
            "--max-reinit-streams",
            "7",
            "--max-reinit-streams-per-agent",
            "2",
        ]);
        let want = agentwire::server::AgentHttpLimits {
            max_request_body: 65_536,
            max_reinit_streams: 7,
            max_reinit_streams_per_agent: 2,
        };
        assert_eq!(set.agent_http, want);
    }

    /// The Agent API's limits reach it from their flags, and default to its own.
    #[test]
    fn agent_api_limits_come_from_their_flags() {
        let defaults = agentwire::agentapi::AgentApiConfig::default();
        let api = config(&[]).agent_api;
        assert_eq!(
            (
                api.max_boundary_logs_per_batch,
                api.max_context_resources,
                api.max_context_body_bytes,
                api.max_context_total_body_bytes
            ),
            (
                defaults.max_boundary_logs_per_batch,
                defaults.max_context_resources,
                defaults.max_context_body_bytes,
                defaults.max_context_total_body_bytes
            )
        );
        let api = config(&[
            "--max-boundary-logs-per-batch",
            "10",
            "--max-context-resources",
            "11",
            "--max-context-body-bytes",
            "12",
            "--max-context-total-body-bytes",
            "13",
        ])
        .agent_api;
        assert_eq!(
            (
                api.max_boundary_logs_per_batch,
                api.max_context_resources,
                api.max_context_body_bytes,
                api.max_context_total_body_bytes
            ),
            (10, 11, 12, 13)
        );
    }

    /// The banners' re-read interval reaches the Agent API from its flag, or its variable, and defaults to the
    /// library's; 0 is raised to a second rather than re-reading without pause.
    #[test]
    fn banner_refresh_interval_comes_from_its_flag() {
        use clap::CommandFactory;
        let interval = |argv: &[&str]| config(argv).agent_api.banner_refresh_interval;
        assert_eq!(interval(&[]), agentwire::agentapi::DEFAULT_BANNER_REFRESH_INTERVAL);
        assert_eq!(interval(&["--banner-refresh-interval", "7"]), std::time::Duration::from_secs(7));
        assert_eq!(interval(&["--banner-refresh-interval", "0"]), std::time::Duration::from_secs(1));
        let command = Serve::command();
        let arg = command.get_arguments().find(|a| a.get_id() == "banner_refresh_interval").expect("the flag");
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some("AGENTWIRE_BANNER_REFRESH_INTERVAL"));
    }

    fn regions(derp: &agentwire::derp::DerpConfig) -> Vec<i64> {
        let mut regions: Vec<i64> = derp.default_map().unwrap().unwrap().regions.into_keys().collect();
        regions.sort_unstable();
        regions
    }

    fn beside_coderd<'a>(flags: &[&'a str]) -> Vec<&'a str> {
        [&["--coder-db", "postgres://coder@db/coder"], flags].concat()
    }

    /// What coderd's deployment sets reaches the manifest's settings and the default DERP map from coderd's flags,
    /// and defaults to coderd's: no wildcard host, no external auth, direct connections and DERP upgrades allowed,
    /// and beside coderd Google's STUN servers (standalone none, the library's default).
    #[test]
    fn deployment_flags_reach_the_manifest_settings_and_the_derp_map() {
        let defaults = config(&[]);
        let api = &defaults.agent_api;
        let manifest = |api: &agentwire::agentapi::AgentApiConfig| {
            (api.app_hostname.clone(), api.git_auth_configs, api.disable_direct_connections, api.derp_force_websockets)
        };
        assert_eq!(manifest(api), (String::new(), 0, false, false));
        let derp = &defaults.tailnet.derp;
        assert!(!derp.block_direct);
        assert_eq!(derp.stun_addresses, agentwire::derp::DerpConfig::default().stun_addresses);
        assert_eq!(regions(derp), [999]);
        let beside = config(&beside_coderd(&[]));
        assert_eq!(manifest(&beside.agent_api), manifest(api));
        let derp = &beside.tailnet.derp;
        assert_eq!(derp.stun_addresses, agentwire::derp::region::CODERD_STUN_ADDRESSES.map(String::from));
        assert_eq!(regions(derp), [999, 1000, 1001, 1002, 1003, 1004]);

        let set = config(&beside_coderd(&[
            "--wildcard-access-url",
            "*.apps.example.com",
            "--external-auth-types",
            "github,slack,gitlab",
            "--block-direct-connections",
            "--derp-force-websockets",
            "--derp-server-stun-addresses",
            "stun.example.com:3478,[2001:db8::1]:3478",
        ]));
        assert_eq!(manifest(&set.agent_api), ("*.apps.example.com".to_owned(), 2, true, true));
        let derp = &set.tailnet.derp;
        assert_eq!(derp.stun_addresses, ["stun.example.com:3478", "[2001:db8::1]:3478"]);
        assert!(derp.block_direct);
        // Blocked direct connections leave the STUN servers out of the map, as in coderd.
        assert_eq!(regions(derp), [999]);

        let stun = |argv: &[&str]| {
            let derp = config(argv).tailnet.derp;
            (derp.stun_addresses.clone(), regions(&derp))
        };
        let disable = stun(&beside_coderd(&["--derp-server-stun-addresses", "disable"]));
        assert_eq!(disable, (vec!["disable".to_owned()], vec![999]));
        assert_eq!(stun(&beside_coderd(&["--derp-server-stun-addresses", ""])), (vec![], vec![999]));
        let repeated = ["--derp-server-stun-addresses", "a:1", "--derp-server-stun-addresses", "b:2"];
        let with_region = [&repeated[..], &["--derp-server-region-id", "5"]].concat();
        assert_eq!(stun(&with_region), (vec!["a:1".to_owned(), "b:2".to_owned()], vec![5, 6, 7]));
    }

    /// What coderd refuses to start with is refused here too, before anything is served.
    #[test]
    fn settings_coderd_refuses_are_refused() {
        let refused = |argv: &[&str]| {
            let parsed = Serve::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).unwrap();
            parsed.args.config("http://127.0.0.1:3000".into()).map(|_| ()).unwrap_err().to_string()
        };
        let err = refused(&["--wildcard-access-url", "https://*.apps.example.com"]);
        assert!(err.contains("--wildcard-access-url"), "{err}");
        let err = refused(&["--derp-server-stun-addresses", "stun.example.com"]);
        assert!(err.contains("--derp-server-stun-addresses"), "{err}");
        // Unless the map leaves them out, as coderd's does.
        config(&["--derp-server-stun-addresses", "stun.example.com", "--block-direct-connections"]);
        config(&["--derp-server-stun-addresses", "stun.example.com", "--derp-server-enable=false"]);
    }

    /// Beside coderd, relay is chosen by giving coderd's address; each choice needs what it uses and nothing else,
    /// and none is taken without --coder-db.
    #[test]
    fn coordination_beside_coderd_follows_coderds_address() {
        use agentwire::tailnet::CoderCoordination;
        let coordination = |argv: &[&str]| config(&beside_coderd(argv)).tailnet.coder_coordination;
        assert_eq!(config(&[]).tailnet.coder_coordination, CoderCoordination::Own);
        assert_eq!(coordination(&[]), CoderCoordination::Own);
        let relay = CoderCoordination::Relay { coderd_url: "http://10.0.0.4:7080".into() };
        assert_eq!(coordination(&["--coderd-url", "http://10.0.0.4:7080"]), relay);
        assert_eq!(coordination(&["--coder-coordination", "relay", "--coderd-url", "http://10.0.0.4:7080"]), relay);
        assert_eq!(coordination(&["--coder-coordination", "postgres"]), CoderCoordination::Postgres);
        assert_eq!(coordination(&["--coder-coordination", "own"]), CoderCoordination::Own);

        let refused = |argv: &[&str]| {
            let parsed = Serve::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).unwrap();
            parsed.args.config("http://127.0.0.1:3000".into()).map(|_| ()).unwrap_err().to_string()
        };
        let err = refused(&beside_coderd(&["--coder-coordination", "relay"]));
        assert!(err.contains("needs --coderd-url"), "{err}");
        let err = refused(&beside_coderd(&["--coder-coordination", "own", "--coderd-url", "http://c:7080"]));
        assert!(err.contains("--coderd-url is for"), "{err}");
        let err = refused(&beside_coderd(&["--coderd-url", "https://coder.example.com"]));
        assert!(err.contains("without TLS"), "{err}");
        for flags in [&["--coderd-url", "http://c:7080"][..], &["--coder-coordination", "relay"]] {
            let argv = std::iter::once("serve").chain(flags.iter().copied());
            assert!(Serve::try_parse_from(argv).is_err(), "{flags:?} without --coder-db");
        }
    }

    /// Flags under these help headings are limits: README's "Limits" table must name each (the relay's identity,
    /// `--derp-server-*`, is no limit), and every flag it names must be a `serve` flag, so the table cannot drift.
    #[test]
    fn the_readme_limits_table_names_every_limit_flag() {
        use clap::CommandFactory;
        const LIMIT_HEADINGS: [&str; 3] = ["Limits", "Memory", "DERP relay"];
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let section = readme.split("\n## Limits\n").nth(1).expect("README has a Limits section");
        let section = section.split("\n## ").next().unwrap_or(section);
        // The flag column is the second: `--flag`, or a note for limits that have none.
        let in_table: std::collections::BTreeSet<String> = section
            .lines()
            .filter(|line| line.starts_with('|'))
            .filter_map(|line| line.split('|').nth(2))
            .filter_map(|cell| cell.trim().strip_prefix("`--")?.strip_suffix('`').map(str::to_owned))
            .collect();
        let command = Serve::command();
        let all: std::collections::BTreeSet<String> =
            command.get_arguments().filter_map(|a| a.get_long()).map(str::to_owned).collect();
        let limits: std::collections::BTreeSet<String> = command
            .get_arguments()
            .filter(|a| a.get_help_heading().is_some_and(|h| LIMIT_HEADINGS.contains(&h)))
            .filter_map(|a| a.get_long())
            .filter(|long| !long.starts_with("derp-server-"))
            .map(str::to_owned)
            .collect();
        assert!(limits.len() > 20, "the headings lost their flags: {limits:?}");
        let missing: Vec<_> = limits.difference(&in_table).collect();
        assert!(missing.is_empty(), "README's Limits table lacks {missing:?}");
        let unknown: Vec<_> = in_table.difference(&all).collect();
        assert!(unknown.is_empty(), "README's Limits table names flags serve does not have: {unknown:?}");
    }
}
