//! The run's report: JSON for scripts (`--report`), and a one-screen summary for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{LoadgenConfig, Mode, ModeName, RpcName};
use crate::mix::agent_mix;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub config: ReportConfig,
    pub started_unix_ms: u64,
    /// From the first connect to the start of the measured phase.
    pub ramp_seconds: f64,
    pub measured_seconds: f64,
    pub calls: CallFigures,
    /// By full method path (`/coder.agent.v2.Agent/UpdateStats`): every call of the run, ramp included.
    pub rpcs: BTreeMap<String, RpcFigures>,
    /// Calls, connects and stream opens that failed, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Successful calls of the measured phase, in µs. In the fixed-rate mode from the intended send time.
    pub latency_us: Percentiles,
    /// Fixed-rate mode: from the actual send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_latency_us: Option<Percentiles>,
    /// Fixed-rate mode: how late sends of the measured phase left against their schedule, in µs, the loadgen's own
    /// error in every latency figure above (the summary prints it beside each). Other modes have no schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_us: Option<Percentiles>,
    pub connect_us: Percentiles,
    pub sessions: SessionFigures,
    pub reconnect: ReconnectFigures,
    /// One point per second of the whole run.
    pub series: Vec<SecondPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerFigures>,
    pub nofile_limit: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportConfig {
    pub mode: ModeName,
    pub transport: String,
    pub target: String,
    pub agents: usize,
    pub duration_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcName>,
    /// `--rpc mix`: each method's calls per period of the mix's order ([`crate::mix::AGENT_MIX`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix: Option<BTreeMap<String, u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_streams: Option<bool>,
    pub max_rpcs: Option<u64>,
    #[serde(default)]
    pub already_started: bool,
    pub connect_rate: u32,
    pub source_ips: u8,
}

impl ReportConfig {
    pub fn from(config: &LoadgenConfig) -> Self {
        let (mut rpc, mut concurrency, mut rate, mut hold_streams) = (None, None, None, None);
        match &config.mode {
            Mode::Realistic => {}
            Mode::Saturating { rpc: r, concurrency: c } => (rpc, concurrency) = (Some(*r), Some(*c)),
            Mode::FixedRate { rpc: r, rate: x, .. } => (rpc, rate) = (Some(*r), Some(*x)),
            Mode::Idle { hold_streams: h } => hold_streams = Some(*h),
        }
        let mix = rpc
            .filter(|r| *r == RpcName::Mix)
            .map(|_| agent_mix().weights().iter().map(|&(call, w)| (call.name().to_owned(), w)).collect());
        ReportConfig {
            mode: config.mode.name(),
            transport: config.target.kind().to_owned(),
            target: match &config.target {
                crate::config::Target::Ws { url, .. } => url.clone(),
                crate::config::Target::Tcp { addr } => addr.to_string(),
            },
            agents: config.agents,
            duration_seconds: config.duration.as_secs(),
            rpc,
            mix,
            concurrency,
            rate,
            hold_streams,
            max_rpcs: config.max_rpcs,
            already_started: config.already_started,
            connect_rate: config.connect_rate,
            source_ips: config.source_ips,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallFigures {
    pub ok: u64,
    pub errors: u64,
    pub measured_ok: u64,
    pub measured_errors: u64,
    /// Successful calls per second of the measured phase.
    pub throughput_per_second: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RpcFigures {
    pub ok: u64,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<Percentiles>,
    /// Fixed-rate mode, the scheduled RPC: its sends' lag (the run's `send_lag_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_us: Option<Percentiles>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionFigures {
    pub agents: usize,
    pub ever_connected: usize,
    pub connected_at_end: usize,
    pub connects: u64,
    pub connect_failures: u64,
    pub drops: u64,
    pub reconnects: u64,
    pub streams_opened: u64,
    pub stream_messages: u64,
    /// Agent tasks still running after the drain timeout, abandoned.
    pub abandoned: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconnectFigures {
    /// Each stretch from a drop (while all agents were connected) until all were connected again.
    pub storms: Vec<StormFigure>,
    /// The longest recovered storm.
    pub longest_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormFigure {
    pub started_unix_ms: u64,
    pub drops: u64,
    /// `None`: not all agents were back by the end of the run.
    pub recovered_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecondPoint {
    /// Seconds since the run started (end of the second).
    pub t: u64,
    pub ok: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Fixed-rate mode: the second's send lag p99, beside its latencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_p99_us: Option<u64>,
    pub connected: usize,
    pub measured: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerFigures {
    pub pid: u32,
    /// utime + stime over the measured phase.
    pub cpu_seconds: Option<f64>,
    pub cpu_us_per_rpc: Option<f64>,
    /// Share of one core over the measured phase.
    pub cpu_cores: Option<f64>,
    pub rss_before_kib: Option<u64>,
    pub rss_connected_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// (RSS at the end − RSS before the first connect) / sessions connected at the end.
    pub rss_per_session_bytes: Option<f64>,
}

impl Report {
    /// The one-screen summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        let _ = writeln!(
            out,
            "loadgen {:?} over {} to {}: {} agents, {} s measured after a {:.1} s ramp",
            c.mode,
            c.transport,
            c.target,
            c.agents,
            self.measured_seconds.round(),
            self.ramp_seconds
        );
        if let Some(rpc) = c.rpc {
            let _ = writeln!(
                out,
                "  rpc {rpc:?}{}{}",
                c.concurrency.map(|k| format!(", {k} concurrent per session")).unwrap_or_default(),
                c.rate.map(|r| format!(", {r} rpc/s offered")).unwrap_or_default()
            );
        }
        if let Some(mix) = &c.mix {
            let mut weights: Vec<(&String, &u32)> = mix.iter().collect();
            weights.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let period: u32 = mix.values().sum();
            let listed: Vec<String> = weights.iter().map(|(name, w)| format!("{name} {w}")).collect();
            let _ = writeln!(out, "  mix per {period} calls: {}", listed.join(", "));
        }
        let calls = &self.calls;
        let _ = writeln!(
            out,
            "calls: {} ok, {} errors; measured {} ok at {:.0} rpc/s",
            calls.ok, calls.errors, calls.measured_ok, calls.throughput_per_second
        );
        let l = &self.latency_us;
        // Every latency figure is printed with the send lag beside it: the loadgen's own error in that figure.
        let lag = |p: &Option<Percentiles>| match p {
            Some(lag) => format!("  | send lag p50 {}  p99 {}  max {}", lag.p50, lag.p99, lag.max),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "latency µs{}: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={}){}",
            if self.send_lag_us.is_some() { " from the intended send" } else { "" },
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            l.count,
            lag(&self.send_lag_us)
        );
        if let Some(s) = &self.service_latency_us {
            let _ = writeln!(
                out,
                "  from the actual send: p50 {}  p99 {}  max {}{}",
                s.p50,
                s.p99,
                s.max,
                lag(&self.send_lag_us)
            );
        }
        let all = (calls.ok + calls.errors).max(1) as f64;
        for (method, f) in &self.rpcs {
            let short = method.rsplit('/').next().unwrap_or(method);
            // A mix's share of the calls, to set beside its weights.
            let share = c.mix.as_ref().map(|_| format!(" {:>5.1} %", (f.ok + f.errors) as f64 * 100.0 / all));
            let lat = f.latency_us.map(|p| format!("  p50 {} p99 {}", p.p50, p.p99)).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {short:<28} {:>9} ok {:>6} err{}{lat}{}",
                f.ok,
                f.errors,
                share.unwrap_or_default(),
                lag(&f.send_lag_us)
            );
        }
        let s = &self.sessions;
        let _ = writeln!(
            out,
            "sessions: {}/{} connected at end, {} connects ({} failed), {} drops, {} reconnects, {} streams",
            s.connected_at_end, s.agents, s.connects, s.connect_failures, s.drops, s.reconnects, s.streams_opened
        );
        let cu = &self.connect_us;
        let _ = writeln!(out, "connect µs: p50 {}  p99 {}  max {}", cu.p50, cu.p99, cu.max);
        if !self.reconnect.storms.is_empty() {
            let storms: Vec<String> = self
                .reconnect
                .storms
                .iter()
                .map(|s| match s.recovered_after_ms {
                    Some(ms) => format!("{} drops, all back in {ms} ms", s.drops),
                    None => format!("{} drops, not all back", s.drops),
                })
                .collect();
            let _ = writeln!(out, "reconnect storms: {}", storms.join("; "));
        }
        if !self.errors.is_empty() {
            let errors: Vec<String> = self.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(out, "errors: {}", errors.join(", "));
        }
        if let Some(server) = &self.server {
            let f = |x: Option<f64>, d: usize| x.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "?".into());
            let _ = writeln!(
                out,
                "server pid {}: {} CPU s ({} cores), {} µs CPU per rpc; RSS {} → {} → {} KiB, {} B per session",
                server.pid,
                f(server.cpu_seconds, 2),
                f(server.cpu_cores, 2),
                f(server.cpu_us_per_rpc, 1),
                server.rss_before_kib.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                server.rss_connected_kib.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                server.rss_after_kib.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                f(server.rss_per_session_bytes, 0),
            );
        }
        out
    }
}
