//! The loadgen's command line and the validated configuration a run takes. Every limit has a named default, a flag
//! and an `AGENTWIRE_LOADGEN_*` variable, and a cap, so no run can be unbounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::LoadgenError;

/// Most simulated agents (sessions) one run may hold.
pub const MAX_AGENTS: usize = 100_000;
/// Longest measured phase.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Highest total rate of the fixed-rate mode, in RPC/s.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Most concurrent calls per session in saturating mode: the server's default stream limit per session.
pub const MAX_CONCURRENCY: usize = 512;
/// Highest connect ramp, in new sessions per second.
pub const MAX_CONNECT_RATE: u32 = 100_000;
/// Source addresses 127.0.0.1 ..= 127.0.0.254.
pub const MAX_SOURCE_IPS: u8 = 254;

/// Connect ramp: new sessions per second at start.
pub const DEFAULT_CONNECT_RATE: u32 = 2000;
/// Coder's agent reconnect backoff (`retry.New(100ms, 10s)`): first retry after 100 ms, doubling to 10 s.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Reconnect attempts in flight at once, across all agents. One machine simulating thousands of agents would
/// otherwise overflow the server's accept backlog (1024) and pay SYN retransmits of a second or more, which real
/// agents spread over many hosts do not.
pub const DEFAULT_RECONNECT_CONCURRENCY: usize = 512;
/// How long the initial ramp may take beyond its schedule before measuring starts anyway.
pub const DEFAULT_RAMP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long calls in flight at the end may take to finish before they are abandoned.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// One call's (or one connect's) longest wait.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Coder's agent reports changed metadata at most this often (`ReportMetadataInterval`).
pub const DEFAULT_METADATA_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Coder's agent asks for the announcement banners this often (`ServiceBannerRefreshInterval`), and once on connect.
pub const DEFAULT_BANNER_REFRESH_INTERVAL: Duration = Duration::from_secs(120);
/// Fixed-rate mode: calls one agent may have in flight before its next send waits (the wait still counts).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Concurrent calls per session in saturating mode.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Log lines each agent sends at start in realistic mode.
pub const DEFAULT_LOG_LINES: usize = 10;
/// Seconds between progress lines when stderr is not a terminal.
pub const DEFAULT_PROGRESS_EVERY: u64 = 5;

/// The agent endpoint's path, appended to a `--url` that names none. 2.10 is what current Coder agents send.
pub const RPC_PATH: &str = "/api/v2/workspaceagents/me/rpc?version=2.10";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeName {
    /// What Coder's agent sends at its defaults: startup calls, metadata every second, stats every report interval,
    /// banners every 2 minutes, resource usage once its window is full, the DERP map and coordinate streams held open.
    Realistic,
    /// Each session runs --concurrency calls back to back (closed loop), of --rpc (by default the real agent's
    /// mix).
    Saturating,
    /// --rate calls per second in total, of --rpc, latency from the intended send time (open loop).
    FixedRate,
    /// Sessions held with no calls (or only the two streams, --hold-streams).
    Idle,
}

/// What the saturating and fixed-rate modes call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RpcName {
    /// The calls a real agent makes while idle at Coder's defaults, in their measured proportions and with its
    /// payloads: BatchUpdateMetadata, PushResourcesMonitoringUsage, UpdateStats and GetAnnouncementBanners,
    /// drawn in a fixed order across all agents (the report's config lists the weights).
    Mix,
    /// UpdateStats alone, with the payload of earlier runs (one SSH session, no metrics), so figures compare.
    UpdateStats,
    /// BatchUpdateMetadata alone, two keys per call as in earlier runs.
    BatchUpdateMetadata,
    /// PushResourcesMonitoringUsage alone, the real agent's 20 datapoints of memory and one volume.
    PushResourcesMonitoringUsage,
    /// GetAnnouncementBanners alone, the banner call agents since API 2.1 make.
    GetAnnouncementBanners,
    /// GetServiceBanner alone (API 2.0's banner call).
    GetServiceBanner,
    /// GetManifest alone.
    GetManifest,
}

#[derive(Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// The agentwire (or coderd) server: ws://HOST:PORT, the agent endpoint's path appended unless given.
    #[arg(long, env = "AGENTWIRE_LOADGEN_URL", conflicts_with = "tcp", required_unless_present = "tcp")]
    pub url: Option<String>,
    /// Plain-TCP yamux instead (the server's --tcp-listen): every session is that listener's one agent.
    #[arg(long, env = "AGENTWIRE_LOADGEN_TCP")]
    pub tcp: Option<SocketAddr>,
    /// Agent tokens, one per line (WebSocket).
    #[arg(long, env = "AGENTWIRE_LOADGEN_TOKENS_FILE", conflicts_with = "any_token")]
    pub tokens_file: Option<PathBuf>,
    /// Random tokens, for a server that accepts any (the Go reference server).
    #[arg(long, env = "AGENTWIRE_LOADGEN_ANY_TOKEN")]
    pub any_token: bool,
    /// Simulated agents: one session each.
    #[arg(long, env = "AGENTWIRE_LOADGEN_AGENTS", default_value_t = 100)]
    pub agents: usize,
    #[arg(long, env = "AGENTWIRE_LOADGEN_MODE", value_enum, default_value_t = ModeName::Realistic)]
    pub mode: ModeName,
    /// Seconds measured, after the connect ramp.
    #[arg(long, env = "AGENTWIRE_LOADGEN_DURATION")]
    pub duration: u64,
    /// What the saturating and fixed-rate modes call: the real agent's steady-state mix, or one RPC.
    #[arg(long, env = "AGENTWIRE_LOADGEN_RPC", value_enum, default_value_t = RpcName::Mix)]
    pub rpc: RpcName,
    /// Saturating: concurrent calls per session.
    #[arg(long, env = "AGENTWIRE_LOADGEN_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Fixed-rate: total calls per second, spread evenly over the agents.
    #[arg(long, env = "AGENTWIRE_LOADGEN_RATE")]
    pub rate: Option<f64>,
    /// Fixed-rate: calls one agent may have in flight; the next send waits, its latency still counted from when it
    /// was due.
    #[arg(long, env = "AGENTWIRE_LOADGEN_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Idle: hold the StreamDERPMaps and Coordinate streams open.
    #[arg(long, env = "AGENTWIRE_LOADGEN_HOLD_STREAMS")]
    pub hold_streams: bool,
    /// Stop after this many calls in total (counted when they start).
    #[arg(long, env = "AGENTWIRE_LOADGEN_MAX_RPCS")]
    pub max_rpcs: Option<u64>,
    /// New sessions per second during the initial ramp.
    #[arg(long, env = "AGENTWIRE_LOADGEN_CONNECT_RATE", default_value_t = DEFAULT_CONNECT_RATE)]
    pub connect_rate: u32,
    /// Seconds the ramp may overrun its schedule before measuring starts anyway.
    #[arg(long, env = "AGENTWIRE_LOADGEN_RAMP_TIMEOUT", default_value_t = DEFAULT_RAMP_TIMEOUT.as_secs())]
    pub ramp_timeout: u64,
    /// Spread sessions over source addresses 127.0.0.1..=127.0.0.N (loopback targets): each address has its own
    /// ephemeral port range (32768–60999, ~28k ports).
    #[arg(long, env = "AGENTWIRE_LOADGEN_SOURCE_IPS", default_value_t = 1)]
    pub source_ips: u8,
    /// Reconnect backoff: first wait in milliseconds…
    #[arg(long, env = "AGENTWIRE_LOADGEN_BACKOFF_MIN_MS", default_value_t = DEFAULT_BACKOFF_MIN.as_millis() as u64)]
    pub backoff_min_ms: u64,
    /// …doubling up to this many.
    #[arg(long, env = "AGENTWIRE_LOADGEN_BACKOFF_MAX_MS", default_value_t = DEFAULT_BACKOFF_MAX.as_millis() as u64)]
    pub backoff_max_ms: u64,
    /// Reconnect attempts in flight at once, across all agents.
    #[arg(long, env = "AGENTWIRE_LOADGEN_RECONNECT_CONCURRENCY", default_value_t = DEFAULT_RECONNECT_CONCURRENCY)]
    pub reconnect_concurrency: usize,
    /// Seconds calls in flight at the end may take to finish.
    #[arg(long, env = "AGENTWIRE_LOADGEN_DRAIN_TIMEOUT", default_value_t = DEFAULT_DRAIN_TIMEOUT.as_secs())]
    pub drain_timeout: u64,
    /// Seconds one call or connect may take.
    #[arg(long, env = "AGENTWIRE_LOADGEN_CALL_TIMEOUT", default_value_t = DEFAULT_CALL_TIMEOUT.as_secs())]
    pub call_timeout: u64,
    /// Realistic: milliseconds between metadata reports (changed keys only).
    #[arg(long, env = "AGENTWIRE_LOADGEN_METADATA_REPORT_MS",
          default_value_t = DEFAULT_METADATA_REPORT_INTERVAL.as_millis() as u64)]
    pub metadata_report_ms: u64,
    /// Realistic: seconds between GetAnnouncementBanners calls after the one on connect.
    #[arg(long, env = "AGENTWIRE_LOADGEN_BANNER_REFRESH_INTERVAL",
          default_value_t = DEFAULT_BANNER_REFRESH_INTERVAL.as_secs())]
    pub banner_refresh_interval: u64,
    /// Realistic: the agents are already running (ready) on connect, as after a server restart or a move to another
    /// replica: no lifecycle, startup or log calls, only what every session does (manifest, banners, the monitoring
    /// configuration, streams, the periodic reports). Without it every agent starts up once per run (four writes
    /// each). Either way a session's resource usage window starts empty, as the agent's does on every connection.
    #[arg(long, env = "AGENTWIRE_LOADGEN_ALREADY_STARTED")]
    pub already_started: bool,
    /// Realistic: log lines each agent sends on its first connect.
    #[arg(long, env = "AGENTWIRE_LOADGEN_LOG_LINES", default_value_t = DEFAULT_LOG_LINES)]
    pub log_lines: usize,
    /// The server's process id: its CPU time and RSS over the run go into the report.
    #[arg(long, env = "AGENTWIRE_LOADGEN_SERVER_PID")]
    pub server_pid: Option<u32>,
    /// Write the JSON report here.
    #[arg(long, env = "AGENTWIRE_LOADGEN_REPORT")]
    pub report: Option<PathBuf>,
    /// Write an SVG of throughput and p50/p99 latency per second here.
    #[arg(long, env = "AGENTWIRE_LOADGEN_PLOT")]
    pub plot: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long, env = "AGENTWIRE_LOADGEN_QUIET")]
    pub quiet: bool,
    /// RLIMIT_NOFILE to ask for (raising the hard limit too when permitted); default: two per agent plus 1024.
    #[arg(long, env = "AGENTWIRE_LOADGEN_NOFILE")]
    pub nofile: Option<u64>,
}

/// Where the sessions go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The agent endpoint over WebSocket: the full URL and the address it resolves to.
    Ws { url: String, addr: SocketAddr },
    /// Plain-TCP yamux.
    Tcp { addr: SocketAddr },
}

impl Target {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::Ws { addr, .. } | Target::Tcp { addr } => *addr,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Ws { .. } => "ws",
            Target::Tcp { .. } => "tcp",
        }
    }
}

/// What each session does.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Realistic,
    Saturating { rpc: RpcName, concurrency: usize },
    FixedRate { rpc: RpcName, rate: f64, max_in_flight: usize },
    Idle { hold_streams: bool },
}

impl Mode {
    pub fn name(&self) -> ModeName {
        match self {
            Mode::Realistic => ModeName::Realistic,
            Mode::Saturating { .. } => ModeName::Saturating,
            Mode::FixedRate { .. } => ModeName::FixedRate,
            Mode::Idle { .. } => ModeName::Idle,
        }
    }
}

/// Where the agents' tokens come from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// Plain-TCP sessions carry no token.
    None,
    /// Tokens the caller holds: `agentwire loadgen --db` creates the agents in the server's database and passes
    /// theirs here (this crate has no database).
    List(Vec<String>),
    /// One token per line.
    File(PathBuf),
    /// Made up, for a server that accepts any token.
    Any,
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    pub target: Target,
    pub tokens: TokenSource,
    pub agents: usize,
    pub mode: Mode,
    pub duration: Duration,
    pub max_rpcs: Option<u64>,
    pub connect_rate: u32,
    pub ramp_timeout: Duration,
    pub source_ips: u8,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub reconnect_concurrency: usize,
    pub drain_timeout: Duration,
    pub call_timeout: Duration,
    pub metadata_report_interval: Duration,
    /// See [`DEFAULT_BANNER_REFRESH_INTERVAL`].
    pub banner_refresh_interval: Duration,
    pub log_lines: usize,
    /// See [`LoadgenArgs::already_started`].
    pub already_started: bool,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

impl LoadgenConfig {
    /// A small run against `target` in `mode` with every other setting at its default.
    pub fn new(target: Target, tokens: TokenSource, agents: usize, mode: Mode, duration: Duration) -> Self {
        LoadgenConfig {
            target,
            tokens,
            agents,
            mode,
            duration,
            max_rpcs: None,
            connect_rate: DEFAULT_CONNECT_RATE,
            ramp_timeout: DEFAULT_RAMP_TIMEOUT,
            source_ips: 1,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            reconnect_concurrency: DEFAULT_RECONNECT_CONCURRENCY,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            metadata_report_interval: DEFAULT_METADATA_REPORT_INTERVAL,
            banner_refresh_interval: DEFAULT_BANNER_REFRESH_INTERVAL,
            log_lines: DEFAULT_LOG_LINES,
            already_started: false,
            server_pid: None,
            progress: false,
        }
    }

    /// Checks every bound and that WebSocket sessions have tokens; the run relies on them.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        self.validate_bounds()?;
        match (&self.target, &self.tokens) {
            (Target::Tcp { .. }, TokenSource::None) => Ok(()),
            (Target::Tcp { .. }, _) => Err(LoadgenError::Config("plain-TCP sessions carry no token".into())),
            (Target::Ws { .. }, TokenSource::None) => {
                Err(LoadgenError::Config("WebSocket sessions need tokens: --tokens-file, --db or --any-token".into()))
            }
            (Target::Ws { .. }, TokenSource::List(tokens)) if tokens.len() < self.agents => {
                Err(LoadgenError::Config(format!("{} tokens for {} agents", tokens.len(), self.agents)))
            }
            _ => Ok(()),
        }
    }

    /// Every bound but the tokens, which a caller may still have to make (see [`TokenSource::List`]).
    pub fn validate_bounds(&self) -> Result<(), LoadgenError> {
        let bad = |what: String| Err(LoadgenError::Config(what));
        if self.agents == 0 || self.agents > MAX_AGENTS {
            return bad(format!("--agents must be 1..={MAX_AGENTS}, got {}", self.agents));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad(format!("--duration must be 1..={} s", MAX_DURATION.as_secs()));
        }
        if self.connect_rate == 0 || self.connect_rate > MAX_CONNECT_RATE {
            return bad(format!("--connect-rate must be 1..={MAX_CONNECT_RATE}"));
        }
        if self.source_ips == 0 || self.source_ips > MAX_SOURCE_IPS {
            return bad(format!("--source-ips must be 1..={MAX_SOURCE_IPS}"));
        }
        if self.source_ips > 1 && !is_loopback_v4(self.target.addr().ip()) {
            return bad("--source-ips above 1 needs an IPv4 loopback target".into());
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return bad("the backoff needs 0 < min <= max".into());
        }
        if self.reconnect_concurrency == 0 || self.call_timeout.is_zero() || self.metadata_report_interval.is_zero() {
            return bad("--reconnect-concurrency, --call-timeout and --metadata-report-ms must be above 0".into());
        }
        if self.banner_refresh_interval.is_zero() {
            return bad("--banner-refresh-interval must be above 0".into());
        }
        match &self.mode {
            Mode::Saturating { concurrency, .. } if *concurrency == 0 || *concurrency > MAX_CONCURRENCY => {
                return bad(format!("--concurrency must be 1..={MAX_CONCURRENCY}"));
            }
            Mode::FixedRate { rate, max_in_flight, .. } => {
                if !(rate.is_finite() && *rate > 0.0 && *rate <= MAX_RATE) {
                    return bad(format!("--rate must be above 0 and at most {MAX_RATE}"));
                }
                if *max_in_flight == 0 || *max_in_flight > MAX_CONCURRENCY {
                    return bad(format!("--max-in-flight must be 1..={MAX_CONCURRENCY}"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The source address of agent `index`: round robin over 127.0.0.1..=127.0.0.N, or the system's choice.
    pub fn source_ip(&self, index: usize) -> Option<IpAddr> {
        (self.source_ips > 1)
            .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (index % self.source_ips as usize) as u8)))
    }
}

fn is_loopback_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_loopback())
}

/// `ws://HOST:PORT[/path]` with the agent endpoint's path appended when none is given.
pub fn rpc_url(url: &str) -> Result<String, LoadgenError> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| LoadgenError::Config(format!("--url must be ws://HOST:PORT (no TLS), got {url:?}")))?;
    match rest.find('/') {
        None => Ok(format!("{url}{RPC_PATH}")),
        Some(i) if rest[i..] == *"/" => Ok(format!("ws://{}{RPC_PATH}", &rest[..i])),
        Some(_) => Ok(url.to_owned()),
    }
}

/// The `HOST:PORT` of a ws:// URL, resolved.
pub async fn resolve_ws(url: &str) -> Result<SocketAddr, LoadgenError> {
    let rest = url.strip_prefix("ws://").unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
    let mut addrs = tokio::net::lookup_host(&host_port)
        .await
        .map_err(|err| LoadgenError::Config(format!("resolving {host_port}: {err}")))?;
    addrs.next().ok_or_else(|| LoadgenError::Config(format!("{host_port} resolves to no address")))
}

impl LoadgenArgs {
    /// The run these flags describe (resolving the URL's host), its bounds checked. A WebSocket run without
    /// `--tokens-file` or `--any-token` gets [`TokenSource::None`]: the caller sets the tokens it made, and the run
    /// refuses to start without any.
    pub async fn config(&self) -> Result<LoadgenConfig, LoadgenError> {
        let target = match (&self.url, self.tcp) {
            (_, Some(addr)) => Target::Tcp { addr },
            (Some(url), None) => {
                let url = rpc_url(url)?;
                let addr = resolve_ws(&url).await?;
                Target::Ws { url, addr }
            }
            (None, None) => return Err(LoadgenError::Config("give --url or --tcp".into())),
        };
        let tokens = if matches!(target, Target::Tcp { .. }) {
            TokenSource::None
        } else if let Some(file) = &self.tokens_file {
            TokenSource::File(file.clone())
        } else if self.any_token {
            TokenSource::Any
        } else {
            TokenSource::None
        };
        let mode = match self.mode {
            ModeName::Realistic => Mode::Realistic,
            ModeName::Saturating => Mode::Saturating { rpc: self.rpc, concurrency: self.concurrency },
            ModeName::FixedRate => Mode::FixedRate {
                rpc: self.rpc,
                rate: self.rate.ok_or_else(|| LoadgenError::Config("--mode fixed-rate needs --rate".into()))?,
                max_in_flight: self.max_in_flight,
            },
            ModeName::Idle => Mode::Idle { hold_streams: self.hold_streams },
        };
        let config = LoadgenConfig {
            target,
            tokens,
            agents: self.agents,
            mode,
            duration: Duration::from_secs(self.duration),
            max_rpcs: self.max_rpcs,
            connect_rate: self.connect_rate,
            ramp_timeout: Duration::from_secs(self.ramp_timeout),
            source_ips: self.source_ips,
            backoff_min: Duration::from_millis(self.backoff_min_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            reconnect_concurrency: self.reconnect_concurrency,
            drain_timeout: Duration::from_secs(self.drain_timeout),
            call_timeout: Duration::from_secs(self.call_timeout),
            metadata_report_interval: Duration::from_millis(self.metadata_report_ms),
            banner_refresh_interval: Duration::from_secs(self.banner_refresh_interval),
            log_lines: self.log_lines,
            already_started: self.already_started,
            server_pid: self.server_pid,
            progress: !self.quiet,
        };
        config.validate_bounds()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_path_is_appended_only_when_missing() {
        assert_eq!(rpc_url("ws://127.0.0.1:3000").unwrap(), format!("ws://127.0.0.1:3000{RPC_PATH}"));
        assert_eq!(rpc_url("ws://127.0.0.1:3000/").unwrap(), format!("ws://127.0.0.1:3000{RPC_PATH}"));
        let given = "ws://h:1/api/v2/workspaceagents/me/rpc?version=2.7";
        assert_eq!(rpc_url(given).unwrap(), given);
        assert!(rpc_url("wss://h:1").is_err());
    }

    /// Without --rpc, the saturating and fixed-rate modes send the real agent's mix; one RPC stays a choice.
    #[test]
    fn the_mix_is_the_default_rpc() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: LoadgenArgs,
        }
        let parse = |extra: &[&str]| {
            let base = ["loadgen", "--url", "ws://127.0.0.1:1", "--duration", "1", "--mode", "saturating"];
            Cli::try_parse_from(base.iter().chain(extra)).unwrap().args.rpc
        };
        assert_eq!(parse(&[]), RpcName::Mix);
        assert_eq!(parse(&["--rpc", "update-stats"]), RpcName::UpdateStats);
        assert_eq!(parse(&["--rpc", "push-resources-monitoring-usage"]), RpcName::PushResourcesMonitoringUsage);
    }

    /// The realistic mode's banner interval is the agent's unless told, by flag or variable.
    #[tokio::test]
    async fn the_banner_interval_is_the_agents_unless_told() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: LoadgenArgs,
        }
        let interval = |extra: &[&str]| {
            let base = ["loadgen", "--tcp", "127.0.0.1:1", "--duration", "1"];
            let args = Cli::try_parse_from(base.iter().chain(extra)).unwrap().args;
            async move { args.config().await.map(|c| c.banner_refresh_interval) }
        };
        assert_eq!(interval(&[]).await.unwrap(), Duration::from_secs(120));
        assert_eq!(interval(&["--banner-refresh-interval", "7"]).await.unwrap(), Duration::from_secs(7));
        assert!(interval(&["--banner-refresh-interval", "0"]).await.is_err());
        let command = Cli::command();
        let arg = command.get_arguments().find(|a| a.get_id() == "banner_refresh_interval").unwrap();
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some("AGENTWIRE_LOADGEN_BANNER_REFRESH_INTERVAL"));
    }

    #[test]
    fn bounds_are_enforced() {
        let target = Target::Tcp { addr: "127.0.0.1:1".parse().unwrap() };
        let ok = LoadgenConfig::new(target.clone(), TokenSource::None, 10, Mode::Realistic, Duration::from_secs(1));
        assert!(ok.validate().is_ok());
        let too_many = LoadgenConfig { agents: MAX_AGENTS + 1, ..ok.clone() };
        assert!(too_many.validate().is_err());
        let forever = LoadgenConfig { duration: MAX_DURATION + Duration::from_secs(1), ..ok.clone() };
        assert!(forever.validate().is_err());
        let no_banner_pause = LoadgenConfig { banner_refresh_interval: Duration::ZERO, ..ok.clone() };
        assert!(no_banner_pause.validate().is_err());
        let rate = LoadgenConfig {
            mode: Mode::FixedRate { rpc: RpcName::UpdateStats, rate: MAX_RATE * 2.0, max_in_flight: 1 },
            ..ok.clone()
        };
        assert!(rate.validate().is_err());
        let ws = LoadgenConfig {
            target: Target::Ws { url: "ws://127.0.0.1:1".into(), addr: "127.0.0.1:1".parse().unwrap() },
            ..ok.clone()
        };
        assert!(ws.validate().is_err(), "a WebSocket run without tokens");
        let spread = LoadgenConfig { source_ips: 3, ..ok };
        assert_eq!(spread.source_ip(4), Some("127.0.0.2".parse().unwrap()));
    }
}
