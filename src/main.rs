//! `agentwire`: serve Coder agents, and the operator commands around it.

use std::net::SocketAddr;
use std::time::Duration;

use agentwire::agentapi::AgentApiConfig;
use agentwire::metrics_cache as mc;
use agentwire::server::{self, AppState, ServeConfig};
use agentwire_store::{NewAgent, Store, StoreOptions};
use agentwire_transport::io::KeepaliveConfig;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

const DEFAULT_DB: &str = "sqlite://agentwire.db?mode=rwc";

#[derive(Parser)]
#[command(name = "agentwire", version, about = "A wire-compatible server for Coder's workspace agent endpoint")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve agents on /api/v2/workspaceagents/me/rpc.
    Serve(Box<ServeArgs>),
    /// Manage agents.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Fill a database with realistic history (users, templates, workspaces, builds, agent stats): demos,
    /// benchmarks.
    DemoData(DemoDataArgs),
    /// Manage the DERP map served to agents and clients.
    Derp {
        #[command(subcommand)]
        command: DerpCommand,
    },
    /// Simulated agents against an agent endpoint: realistic, saturating, fixed-rate or idle load, with a JSON
    /// report and an SVG plot.
    Loadgen(Box<LoadgenCommand>),
}

/// The load generator's flags, and the agents it may create in the server's database first.
#[derive(Args)]
struct LoadgenCommand {
    #[command(flatten)]
    run: agentwire_loadgen::LoadgenArgs,
    /// Create --agents agents in this database (the server's --db) and use their tokens.
    #[arg(long, env = "AGENTWIRE_LOADGEN_DB", conflicts_with_all = ["tokens_file", "any_token"])]
    db: Option<String>,
    /// With --db: write the created tokens here, one per line, for a later --tokens-file.
    #[arg(long, env = "AGENTWIRE_LOADGEN_WRITE_TOKENS", requires = "db")]
    write_tokens: Option<std::path::PathBuf>,
    /// With --db: metadata keys per created agent (interval 1–10 s, drawn per key).
    #[arg(long, env = "AGENTWIRE_LOADGEN_METADATA_KEYS",
          default_value_t = agentwire::provision::DEFAULT_LOAD_METADATA_KEYS)]
    metadata_keys: usize,
}

#[derive(Subcommand)]
enum DerpCommand {
    /// Set the DERP map from a file of Coder's DERP map JSON (`tailcfg.DERPMap`); connected agents get it within
    /// the check interval.
    Set(DerpSetArgs),
}

#[derive(Args)]
struct DerpSetArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The JSON file (`-` for standard input).
    file: std::path::PathBuf,
}

/// The coordinator's limits and the DERP map check interval.
#[derive(Args)]
struct TailnetArgs {
    /// Seconds between DERP map checks for open StreamDERPMaps streams (coderd: 5).
    #[arg(long, env = "AGENTWIRE_DERP_MAP_CHECK_INTERVAL",
          default_value_t = agentwire::tailnet::DEFAULT_DERP_MAP_CHECK_INTERVAL.as_secs())]
    derp_map_check_interval: u64,
    /// Largest encoded node a coordinating peer may send, in bytes.
    #[arg(long, env = "AGENTWIRE_TAILNET_MAX_NODE_SIZE", default_value_t = agentwire::tailnet::DEFAULT_MAX_NODE_SIZE)]
    tailnet_max_node_size: usize,
    /// Most tunnels one peer may open.
    #[arg(long, env = "AGENTWIRE_TAILNET_MAX_TUNNELS_PER_PEER",
          default_value_t = agentwire::tailnet::DEFAULT_MAX_TUNNELS_PER_PEER)]
    tailnet_max_tunnels_per_peer: usize,
    /// Most peers this replica coordinates at once.
    #[arg(long, env = "AGENTWIRE_TAILNET_MAX_PEERS", default_value_t = agentwire::tailnet::DEFAULT_MAX_PEERS)]
    tailnet_max_peers: usize,
    /// Responses queued per peer before a peer that does not read is removed.
    #[arg(long, env = "AGENTWIRE_TAILNET_PEER_QUEUE", default_value_t = agentwire::tailnet::DEFAULT_PEER_QUEUE)]
    tailnet_peer_queue: usize,
    /// Coordinator events queued for other replicas before they are dropped.
    #[arg(long, env = "AGENTWIRE_TAILNET_PUBLISH_QUEUE", default_value_t = agentwire::tailnet::DEFAULT_PUBLISH_QUEUE)]
    tailnet_publish_queue: usize,
    /// Seconds between coordinator heartbeats to other replicas.
    #[arg(long, env = "AGENTWIRE_TAILNET_REPLICA_HEARTBEAT",
          default_value_t = agentwire::tailnet::DEFAULT_REPLICA_HEARTBEAT.as_secs())]
    tailnet_replica_heartbeat: u64,
    /// Seconds of silence after which another replica's peers are lost.
    #[arg(long, env = "AGENTWIRE_TAILNET_REPLICA_TIMEOUT",
          default_value_t = agentwire::tailnet::DEFAULT_REPLICA_TIMEOUT.as_secs())]
    tailnet_replica_timeout: u64,
}

impl TailnetArgs {
    fn config(&self) -> agentwire::tailnet::TailnetConfig {
        agentwire::tailnet::TailnetConfig {
            derp_map_check_interval: Duration::from_secs(self.derp_map_check_interval.max(1)),
            max_node_size: self.tailnet_max_node_size,
            max_tunnels_per_peer: self.tailnet_max_tunnels_per_peer,
            max_peers: self.tailnet_max_peers,
            peer_queue: self.tailnet_peer_queue,
            publish_queue: self.tailnet_publish_queue,
            replica_heartbeat: Duration::from_secs(self.tailnet_replica_heartbeat.max(1)),
            replica_timeout: Duration::from_secs(self.tailnet_replica_timeout.max(1)),
        }
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an API token for a user (created when missing) and print it: the session token of
    /// `watch-metadata` and the other user endpoints.
    Token(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    db: DbArgs,
    /// The user's username.
    #[arg(long)]
    username: String,
    /// Hours until the token expires.
    #[arg(long, default_value_t = 720)]
    lifetime_hours: u64,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Create an agent (and its user, template, workspace and build) and print its token.
    Create(CreateArgs),
}

#[derive(Args)]
struct DbArgs {
    /// Database URL: sqlite://FILE?mode=rwc (embedded, the default) or postgres://… (shared by replicas).
    #[arg(long, env = "AGENTWIRE_DB", default_value = DEFAULT_DB)]
    db: String,
}

/// The store's write batchers and limits; defaults are Coder's where Coder has them.
#[derive(Args)]
struct StoreArgs {
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
    /// Bytes of logs one agent may store (Coder: 1 MiB).
    #[arg(long, env = "AGENTWIRE_MAX_LOGS_LENGTH", default_value_t = StoreOptions::default().max_logs_length)]
    max_logs_length: i64,
    /// PostgreSQL connections in the pool.
    #[arg(long, env = "AGENTWIRE_PG_MAX_CONNECTIONS", default_value_t = StoreOptions::default().pg_max_connections)]
    pg_max_connections: u32,
    /// Milliseconds a query waits for a pooled connection (or for the database to accept one) before it fails: how
    /// long an RPC can wait on an unreachable database before the agent gets an error.
    #[arg(long, env = "AGENTWIRE_DB_ACQUIRE_TIMEOUT_MS",
          default_value_t = StoreOptions::default().acquire_timeout.as_millis() as u64)]
    db_acquire_timeout_ms: u64,
}

impl StoreArgs {
    fn options(&self) -> StoreOptions {
        StoreOptions {
            metadata_flush_at: self.metadata_flush_at,
            metadata_flush_interval: Duration::from_millis(self.metadata_flush_interval_ms),
            metadata_queue_capacity: self.metadata_queue,
            stats_max_rows: self.stats_max_rows,
            stats_flush_interval: Duration::from_millis(self.stats_flush_interval_ms),
            heartbeat_flush_at: self.heartbeat_flush_at,
            heartbeat_flush_interval: Duration::from_millis(self.heartbeat_flush_interval_ms),
            max_logs_length: self.max_logs_length,
            pg_max_connections: self.pg_max_connections,
            acquire_timeout: Duration::from_millis(self.db_acquire_timeout_ms),
            ..StoreOptions::default()
        }
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    tailnet: TailnetArgs,
    /// HTTP address to listen on.
    #[arg(long, env = "AGENTWIRE_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Create a demo workspace and agent on first start and print how to connect it.
    #[arg(long, env = "AGENTWIRE_DEMO")]
    demo: bool,
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
    /// Most agent sessions at once.
    #[arg(long, env = "AGENTWIRE_MAX_SESSIONS", default_value_t = server::DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,
    /// Most sessions one agent may hold at once.
    #[arg(long, env = "AGENTWIRE_MAX_SESSIONS_PER_AGENT", default_value_t = server::DEFAULT_MAX_SESSIONS_PER_AGENT)]
    max_sessions_per_agent: usize,
    /// Most yamux streams open at once in one session.
    #[arg(long, env = "AGENTWIRE_MAX_STREAMS_PER_SESSION",
          default_value_t = agentwire_transport::io::yamux::DEFAULT_MAX_STREAMS_PER_SESSION)]
    max_streams_per_session: usize,
    /// Most calls running at once in one session.
    #[arg(long, env = "AGENTWIRE_MAX_CONCURRENT_CALLS",
          default_value_t = agentwire_transport::server::DEFAULT_MAX_CONCURRENT_CALLS_PER_SESSION)]
    max_concurrent_calls: usize,
    /// Largest dRPC message accepted, in bytes.
    #[arg(long, env = "AGENTWIRE_MAX_MESSAGE_SIZE", default_value_t = agentwire_transport::limits::DEFAULT_MAX_PACKET_SIZE)]
    max_message_size: usize,
    /// Bytes one session may hold read but not yet handed to a handler; past it its reads wait.
    #[arg(long, env = "AGENTWIRE_MAX_SESSION_MEMORY", default_value_t = agentwire_transport::budget::DEFAULT_SESSION_MEMORY)]
    max_session_memory: usize,
    /// The part of each session's memory that is its own, not drawn from the agent and server limits.
    #[arg(long, env = "AGENTWIRE_SESSION_GUARANTEED_MEMORY",
          default_value_t = agentwire_transport::budget::DEFAULT_SESSION_GUARANTEED_MEMORY)]
    session_guaranteed_memory: usize,
    /// Bytes all of one agent's sessions may hold past their guaranteed parts.
    #[arg(long, env = "AGENTWIRE_MAX_AGENT_MEMORY", default_value_t = server::DEFAULT_AGENT_MEMORY)]
    max_agent_memory: usize,
    /// Bytes every session together may hold past their guaranteed parts.
    #[arg(long, env = "AGENTWIRE_MAX_SERVER_MEMORY", default_value_t = server::DEFAULT_SERVER_MEMORY)]
    max_server_memory: usize,
    /// Seconds a read may wait under an exhausted memory limit before the session holding the most under it ends.
    #[arg(long, env = "AGENTWIRE_MEMORY_WAIT", default_value_t = agentwire_transport::budget::DEFAULT_MEMORY_WAIT.as_secs())]
    memory_wait: u64,
    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "AGENTWIRE_MAX_WS_MESSAGE_SIZE", default_value_t = agentwire_transport::io::DEFAULT_MAX_WS_MESSAGE_SIZE)]
    max_ws_message_size: usize,
    /// Seconds between yamux keepalive pings (0 turns them off).
    #[arg(long, env = "AGENTWIRE_KEEPALIVE_INTERVAL", default_value_t = 30)]
    keepalive_interval: u64,
    /// Seconds a keepalive ping may go unanswered.
    #[arg(long, env = "AGENTWIRE_KEEPALIVE_TIMEOUT", default_value_t = 10)]
    keepalive_timeout: u64,
    /// Seconds a write may stall (a peer that stopped reading) before the session ends.
    #[arg(long, env = "AGENTWIRE_WRITE_TIMEOUT", default_value_t = 10)]
    write_timeout: u64,
    /// Seconds between agent stats reports, as told to agents.
    #[arg(long, env = "AGENTWIRE_STATS_REPORT_INTERVAL", default_value_t = 30)]
    stats_report_interval: u64,
    /// Seconds between connection heartbeats (last_connected_at).
    #[arg(long, env = "AGENTWIRE_HEARTBEAT_INTERVAL", default_value_t = 15)]
    heartbeat_interval: u64,
    /// Seconds between WebSocket pings to an agent (0 turns them off).
    #[arg(long, env = "AGENTWIRE_WS_PING_INTERVAL", default_value_t = 15)]
    ws_ping_interval: u64,
    /// Seconds a WebSocket may stay silent before it is dropped.
    #[arg(long, env = "AGENTWIRE_WS_PING_TIMEOUT", default_value_t = 30)]
    ws_ping_timeout: u64,
    /// Seconds shutdown waits for calls in flight.
    #[arg(long, env = "AGENTWIRE_SHUTDOWN_GRACE", default_value_t = 10)]
    shutdown_grace: u64,
    /// Seconds a client may take to send a request's head (the WebSocket upgrade included).
    #[arg(long, env = "AGENTWIRE_HANDSHAKE_TIMEOUT", default_value_t = server::DEFAULT_HANDSHAKE_TIMEOUT.as_secs())]
    handshake_timeout: u64,
    /// Bytes queued on an agent's WebSocket (pongs included) before further pongs replace the one waiting.
    #[arg(long, env = "AGENTWIRE_MAX_WS_WRITE_BUFFER", default_value_t = server::DEFAULT_MAX_WS_WRITE_BUFFER)]
    max_ws_write_buffer: usize,
    /// Bytes an agent's WebSocket reads at a time; resident per connection, so it sets the floor of an idle
    /// session's memory. Larger messages still arrive whole.
    #[arg(long, env = "AGENTWIRE_WS_READ_BUFFER", default_value_t = agentwire_transport::io::DEFAULT_WS_READ_BUFFER)]
    ws_read_buffer: usize,
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

#[derive(Args)]
struct CreateArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Workspace name.
    #[arg(long)]
    workspace: String,
    /// Agent name.
    #[arg(long)]
    name: String,
    /// Owner's username (created when missing).
    #[arg(long, default_value = "admin")]
    owner: String,
    /// Template name.
    #[arg(long, default_value = "default")]
    template: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AGENTWIRE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Agent { command: AgentCommand::Create(args) } => create_agent(args).await,
            Command::User { command: UserCommand::Token(args) } => user_token(args).await,
            Command::DemoData(args) => demo_data(args).await,
            Command::Derp { command: DerpCommand::Set(args) } => derp_set(args).await,
            Command::Loadgen(args) => loadgen(*args).await,
        }
    })
}

/// With `--db`, creates the run's agents in the server's database (WebSocket runs) and hands their tokens in.
async fn loadgen(cmd: LoadgenCommand) -> anyhow::Result<()> {
    let mut config = cmd.run.config().await?;
    if let (Some(db), agentwire_loadgen::Target::Ws { .. }) = (&cmd.db, &config.target) {
        let store = open_store(db, StoreOptions::default()).await?;
        let created = agentwire::provision::create_load_agents(&store, config.agents, cmd.metadata_keys).await;
        store.close().await;
        let tokens = created.context("creating agents")?;
        if let Some(path) = &cmd.write_tokens {
            let lines: String = tokens.iter().map(|token| format!("{token}\n")).collect();
            std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
        }
        config.tokens = agentwire_loadgen::TokenSource::List(tokens);
    }
    agentwire_loadgen::main(&cmd.run, config).await?;
    Ok(())
}

async fn open_store(db: &str, options: StoreOptions) -> anyhow::Result<Store> {
    Store::open(db, options).await.with_context(|| format!("opening the database {db}"))
}

struct Created {
    workspace: String,
    agent: String,
    agent_id: Uuid,
    token: Uuid,
}

async fn create(store: &Store, owner: &str, template: &str, workspace: &str, agent: &str) -> anyhow::Result<Created> {
    let admin = store.admin();
    let owner_id = match admin.user_id(owner).await? {
        Some(id) => id,
        None => admin.create_user(owner, &format!("{owner}@example.com")).await?,
    };
    let template = admin.create_template("default", template).await?;
    let build = admin.create_workspace_with_build(owner_id, template.template_id, workspace).await?;
    let created = admin
        .create_agent(
            build.resource_id,
            &NewAgent {
                name: agent.to_owned(),
                directory: "/home/coder".to_owned(),
                architecture: std::env::consts::ARCH.to_owned(),
                operating_system: std::env::consts::OS.to_owned(),
                ..NewAgent::default()
            },
        )
        .await?;
    Ok(Created {
        workspace: workspace.to_owned(),
        agent: agent.to_owned(),
        agent_id: created.id,
        token: created.auth_token,
    })
}

async fn create_agent(args: CreateArgs) -> anyhow::Result<()> {
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    let created = create(&store, &args.owner, &args.template, &args.workspace, &args.name).await?;
    if args.json {
        let out = serde_json::json!({
            "workspace": created.workspace,
            "agent": created.agent,
            "agent_id": created.agent_id.to_string(),
            "token": created.token.to_string(),
        });
        println!("{out}");
    } else {
        println!("agent {} of workspace {} created", created.agent, created.workspace);
        println!("token: {}", created.token);
    }
    store.close().await;
    Ok(())
}

async fn user_token(args: TokenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.lifetime_hours > 0, "--lifetime-hours must be at least 1");
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    let admin = store.admin();
    let user = match admin.user_id(&args.username).await? {
        Some(id) => id,
        None => admin.create_user(&args.username, &format!("{}@example.com", args.username)).await?,
    };
    let lifetime = Duration::from_secs(args.lifetime_hours.saturating_mul(3600));
    let token = admin.create_api_key(user, lifetime).await?;
    println!("{token}");
    store.close().await;
    Ok(())
}

async fn derp_set(args: DerpSetArgs) -> anyhow::Result<()> {
    let json = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the DERP map from standard input")?
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    let map = agentwire::tailnet::derp_map::parse_derp_map(&json).context("not a DERP map (Coder's JSON)")?;
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    store.admin().set_derp_map(&json).await?;
    let nodes: usize = map.regions.values().map(|r| r.nodes.len()).sum();
    println!("DERP map set: {} regions, {nodes} nodes", map.regions.len());
    store.close().await;
    Ok(())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = open_store(&args.db.db, args.store.options()).await?;
    let access_url = args.access_url.clone().unwrap_or_else(|| format!("http://{}", args.listen));
    if args.demo && store.admin().user_id("demo").await?.is_none() {
        let created = create(&store, "demo", "demo", "demo", "main").await?;
        println!("demo agent created; connect a Coder agent with:");
        println!("  CODER_AGENT_URL={access_url} CODER_AGENT_TOKEN={} coder agent", created.token);
        println!("or the Go test client:");
        println!(
            "  scripts/build-go-interop.sh && target/go-interop/interop agent --url ws://{}/api/v2/workspaceagents/me/rpc --token {}",
            args.listen, created.token
        );
    }
    let mut config = ServeConfig {
        listen: args.listen,
        replica_id: args.replica_id.unwrap_or_else(Uuid::new_v4),
        max_sessions: args.max_sessions,
        max_sessions_per_agent: args.max_sessions_per_agent,
        agent_memory: args.max_agent_memory,
        server_memory: args.max_server_memory,
        max_ws_message_size: args.max_ws_message_size,
        heartbeat_interval: secs(args.heartbeat_interval),
        ws_ping_interval: (args.ws_ping_interval > 0).then(|| secs(args.ws_ping_interval)),
        ws_ping_timeout: secs(args.ws_ping_timeout),
        shutdown_grace: secs(args.shutdown_grace),
        handshake_timeout: secs(args.handshake_timeout.max(1)),
        max_ws_write_buffer: args.max_ws_write_buffer,
        ws_read_buffer: args.ws_read_buffer.max(64),
        agent_api: AgentApiConfig {
            stats_report_interval: secs(args.stats_report_interval),
            access_url,
            ..AgentApiConfig::default()
        },
        tcp_listen: args.tcp_listen,
        tcp_agent_token: args.tcp_agent_token.clone(),
        metrics_cache: args.metrics_cache_config()?,
        tailnet: args.tailnet.config(),
        ..ServeConfig::default()
    };
    config.rpc.session.max_streams = args.max_streams_per_session;
    config.rpc.max_concurrent_calls = args.max_concurrent_calls;
    config.rpc.limits.max_packet_size = args.max_message_size;
    config.rpc.session_memory = args.max_session_memory;
    config.rpc.session_guaranteed_memory = args.session_guaranteed_memory;
    config.rpc.memory_wait = secs(args.memory_wait.max(1));
    config.rpc.session.keepalive = KeepaliveConfig {
        interval: (args.keepalive_interval > 0).then(|| secs(args.keepalive_interval)),
        timeout: secs(args.keepalive_timeout),
        write_timeout: (args.write_timeout > 0).then(|| secs(args.write_timeout)),
    };

    let state = AppState::new(store, config);
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let bound = listener.local_addr()?;
    tracing::info!(listen = %bound, replica = %state.config().replica_id, "serving agents");
    // On stdout, for scripts and tests that listen on port 0.
    println!("agentwire: listening on http://{bound}");
    if let (Some(addr), Some(token)) = (args.tcp_listen, args.tcp_agent_token) {
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

impl ServeArgs {
    fn metrics_cache_config(&self) -> anyhow::Result<mc::MetricsCacheConfig> {
        let config = mc::MetricsCacheConfig {
            template_interval: secs(self.metrics_cache_template_interval),
            deployment_stats_interval: secs(self.metrics_cache_deployment_stats_interval),
            backoff_min: Duration::from_millis(self.metrics_cache_backoff_min_ms),
            backoff_max: Duration::from_millis(self.metrics_cache_backoff_max_ms),
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

#[derive(Args)]
struct DemoDataArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Workspaces to create (users: one per 5 workspaces; templates: one per 100, 2 to 10).
    #[arg(long, default_value_t = 100)]
    workspaces: usize,
    /// Days of history, ending now.
    #[arg(long, default_value_t = 30)]
    days: usize,
    /// Agent stats rows per workspace per day.
    #[arg(long, default_value_t = mc::demo::DEFAULT_STATS_PER_WORKSPACE_DAY)]
    stats_per_day: usize,
    /// Seed of the generator (the same seed and size give the same shape; ids are seeded too).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

async fn demo_data(args: DemoDataArgs) -> anyhow::Result<()> {
    let spec = mc::demo::DemoSpec {
        workspaces: args.workspaces,
        days: args.days,
        stats_per_workspace_day: args.stats_per_day,
        seed: args.seed,
        now: agentwire_store::now_micros(),
    };
    let history = mc::demo::generate(&spec)?;
    let store = open_store(&args.db.db, StoreOptions::default()).await?;
    let started = std::time::Instant::now();
    store.insert_demo_history("default", &history).await.context("writing the demo history")?;
    println!(
        "demo data: {} users, {} templates, {} workspaces, {} builds, {} agent stats rows in {:.1?}",
        history.users.len(),
        history.templates.len(),
        history.workspaces.len(),
        history.builds.len(),
        history.stats.len(),
        started.elapsed()
    );
    store.close().await;
    Ok(())
}
