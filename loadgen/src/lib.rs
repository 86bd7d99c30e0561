//! `agentwire loadgen`: N simulated Coder agents against an agent endpoint (agentwire, coderd, or the Go reference
//! server), over WebSocket or plain-TCP yamux, in one of four modes:
//!
//! - **realistic**: what Coder's v2.30 agent sends at Coder's defaults: on connect the manifest,
//!   GetAnnouncementBanners (again every `--banner-refresh-interval`, the agent's 2 minutes) and
//!   GetResourcesMonitoringConfiguration, then (once per agent, unless `--already-started`) the start-up calls;
//!   metadata every second for changed keys and stats every report interval, their phases spread at random; the
//!   agent's resources monitor, one datapoint of the configured memory and volumes per `collection_interval_seconds`
//!   into a window of `num_datapoints` that starts empty on every connection, and once it is full (at coderd's 20 ×
//!   10 s, 200 s after the connect) PushResourcesMonitoringUsage with the whole window each interval; the DERP map
//!   and coordinate streams held open;
//! - **saturating**: every session runs K unary calls back to back (closed loop);
//! - **fixed-rate**: R calls per second in total on a schedule (open loop), latency from the intended send time so
//!   a stalled server cannot hide behind fewer samples (coordinated omission);
//! - **idle**: sessions held with nothing (or only the two streams) for memory figures.
//!
//! Saturating and fixed-rate runs call one RPC, or by default the real agent's steady-state mix in its measured
//! proportions and with its payloads (`mix.rs`).
//!
//! A run connects its agents on a ramp, then measures for `duration`; a dropped session reconnects with Coder's
//! backoff and the report counts drops, reconnects and how long until all agents were back. With the server's pid
//! it adds the server's CPU time per call and RSS per session from /proc.
//!
//! It depends on `agentwire-transport` (the dRPC client, yamux and the WebSocket dial, as an agent uses them) and
//! `agentwire-proto` (the messages and typed clients), never on the server or the store: it loads coderd as well as
//! agentwire, and creating agents in the server's database for `--db` is the `agentwire` binary's job, which hands
//! their tokens in ([`TokenSource::List`]). Its own dependencies: `hdrhistogram` (latency percentiles), `fastrand`
//! (phase jitter), `libc` (`RLIMIT_NOFILE`, clock ticks, the pacer's timerfd), `tokio-tungstenite` (dialing from
//! a chosen source address), `clap` (its flags, which the binary flattens into `agentwire loadgen`) and `serde` (the
//! JSON report).
//!
//! The fixed-rate mode's send times come from a timerfd per agent (`pace.rs`), not tokio's millisecond timer, and
//! every latency figure of the report carries the send lag beside it.

mod agent;
pub mod config;
mod connect;
pub mod mix;
mod pace;
pub mod plot;
pub mod procfs;
mod progress;
mod recorder;
pub mod report;
mod scenario;
mod shared;
mod tokens;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{LoadgenArgs, LoadgenConfig, Mode, ModeName, RpcName, Target, TokenSource};
pub use connect::ConnectError;
pub use report::Report;

use report::{
    CallFigures, Percentiles, ReconnectFigures, ReportConfig, RpcFigures, SecondPoint, ServerFigures, SessionFigures,
    StormFigure,
};
use shared::Shared;

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("loadgen: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// How often the ramp and the `--max-rpcs` end are checked.
const POLL: Duration = Duration::from_millis(10);

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The command, once the caller has the run's `config` from `args` ([`LoadgenArgs::config`]) and its tokens: raises
/// the fd limit, runs, writes the report and plot, prints the summary.
pub async fn main(args: &LoadgenArgs, config: LoadgenConfig) -> Result<Report, LoadgenError> {
    let want = args.nofile.unwrap_or(2 * config.agents as u64 + 1024);
    if let Err(err) = procfs::raise_nofile(want) {
        tracing::warn!(error = %err, want, "could not raise RLIMIT_NOFILE");
    }
    let report = run(config).await?;
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).map_err(|source| LoadgenError::Io { path: path.clone(), source })?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::render(&report))
            .map_err(|source| LoadgenError::Io { path: path.clone(), source })?;
    }
    print!("{}", report.summary());
    Ok(report)
}

/// One run, start to end; bounded by the ramp (its schedule plus `ramp_timeout`), `duration` and `drain_timeout`.
pub async fn run(config: LoadgenConfig) -> Result<Report, LoadgenError> {
    config.validate()?;
    let tokens = tokens::resolve(&config)?;
    let pid = config.server_pid;
    let rss_before = pid.and_then(procfs::rss_kib);
    let shared = Arc::new(Shared::new(config.clone()));
    let started = Instant::now();
    let started_wall = SystemTime::now();

    let sampler_stop = CancellationToken::new();
    let sampler = tokio::spawn(sample(shared.clone(), started, sampler_stop.clone()));

    let mut agents = JoinSet::new();
    let t0 = tokio::time::Instant::now();
    let slot = Duration::from_secs_f64(1.0 / f64::from(config.connect_rate));
    for (index, token) in tokens.into_iter().enumerate() {
        agents.spawn(agent::run(shared.clone(), index, token, t0 + slot * index as u32));
    }

    // The ramp: until every agent has connected once, or its schedule plus the ramp timeout has passed.
    let ramp_deadline = t0 + slot * config.agents as u32 + config.ramp_timeout;
    let sessions = &shared.recorder.sessions;
    while sessions.ever_connected.load(Ordering::Relaxed) < config.agents && tokio::time::Instant::now() < ramp_deadline
    {
        tokio::time::sleep(POLL).await;
    }
    let ramp_seconds = started.elapsed().as_secs_f64();
    let rss_connected = pid.and_then(procfs::rss_kib);

    let cpu_start = pid.and_then(procfs::cpu_seconds);
    let measure_start = Instant::now();
    shared.recorder.start_measuring();
    let measure_end = tokio::time::Instant::now() + config.duration;
    loop {
        if tokio::time::Instant::now() >= measure_end {
            break;
        }
        if let Some(max) = config.max_rpcs {
            if shared.budget.spent() && shared.recorder.finished.load(Ordering::Relaxed) >= max {
                break;
            }
        }
        tokio::time::sleep(POLL.min(measure_end.saturating_duration_since(tokio::time::Instant::now()))).await;
    }
    let measured_seconds = measure_start.elapsed().as_secs_f64();
    let cpu_end = pid.and_then(procfs::cpu_seconds);
    let rss_after = pid.and_then(procfs::rss_kib);
    let connected_at_end = sessions.connected.load(Ordering::SeqCst);

    // Stop: no new calls; calls in flight finish within the drain timeout, then whatever is left is abandoned.
    shared.stop.cancel();
    let drained =
        tokio::time::timeout(config.drain_timeout, async { while agents.join_next().await.is_some() {} }).await;
    let abandoned = if drained.is_err() { agents.len() } else { 0 };
    agents.abort_all();
    shared.recorder.stop_measuring();
    sampler_stop.cancel();
    let series = sampler.await.unwrap_or_default();

    let totals = shared.recorder.totals();
    let calls = CallFigures {
        ok: totals.methods.values().map(|m| m.ok).sum(),
        errors: totals.methods.values().map(|m| m.errors).sum(),
        measured_ok: totals.measured_ok,
        measured_errors: totals.measured_errors,
        throughput_per_second: if measured_seconds > 0.0 { totals.measured_ok as f64 / measured_seconds } else { 0.0 },
    };
    // The send lag is the schedule's, not a method's: a single RPC's figures carry it, a mix's do not.
    let (fixed_rate, scheduled) = match config.mode {
        Mode::FixedRate { rpc, .. } => (true, mix::Plan::of(rpc).single()),
        _ => (false, None),
    };
    let send_lag = fixed_rate.then(|| Percentiles::of(&totals.send_lag));
    let rpcs = totals
        .methods
        .iter()
        .map(|(method, m)| {
            let figures = RpcFigures {
                ok: m.ok,
                errors: m.errors,
                latency_us: m.latency.as_ref().map(Percentiles::of),
                send_lag_us: send_lag.filter(|_| scheduled == Some(*method)),
            };
            ((*method).to_owned(), figures)
        })
        .collect();
    let storms: Vec<StormFigure> = shared
        .storms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|s| StormFigure {
            started_unix_ms: unix_ms(started_wall + s.started.duration_since(started)),
            drops: s.drops,
            recovered_after_ms: s.recovered.map(|r| r.duration_since(s.started).as_millis() as u64),
        })
        .collect();
    let server = pid.map(|pid| {
        let cpu_seconds = cpu_start.zip(cpu_end).map(|(a, b)| b - a);
        ServerFigures {
            pid,
            cpu_seconds,
            cpu_us_per_rpc: cpu_seconds
                .filter(|_| calls.measured_ok > 0)
                .map(|s| s * 1e6 / (calls.measured_ok + calls.measured_errors) as f64),
            cpu_cores: cpu_seconds.map(|s| s / measured_seconds.max(1e-9)),
            rss_before_kib: rss_before,
            rss_connected_kib: rss_connected,
            rss_after_kib: rss_after,
            rss_per_session_bytes: rss_before
                .zip(rss_after)
                .filter(|_| connected_at_end > 0)
                .map(|(a, b)| (b as f64 - a as f64) * 1024.0 / connected_at_end as f64),
        }
    });
    let s = &shared.recorder.sessions;
    Ok(Report {
        config: ReportConfig::from(&config),
        started_unix_ms: unix_ms(started_wall),
        ramp_seconds,
        measured_seconds,
        calls,
        rpcs,
        errors: totals.errors.clone(),
        latency_us: Percentiles::of(&totals.measured),
        service_latency_us: fixed_rate.then(|| Percentiles::of(&totals.service)),
        send_lag_us: send_lag,
        connect_us: Percentiles::of(&totals.connect),
        sessions: SessionFigures {
            agents: config.agents,
            ever_connected: s.ever_connected.load(Ordering::Relaxed),
            connected_at_end,
            connects: s.connects.load(Ordering::Relaxed),
            connect_failures: s.connect_failures.load(Ordering::Relaxed),
            drops: s.drops.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            streams_opened: s.streams_opened.load(Ordering::Relaxed),
            stream_messages: s.stream_messages.load(Ordering::Relaxed),
            abandoned,
        },
        reconnect: ReconnectFigures { longest_ms: storms.iter().filter_map(|s| s.recovered_after_ms).max(), storms },
        series,
        server,
        nofile_limit: procfs::nofile(),
    })
}

/// One point per second for the report and the plot, and the progress line.
async fn sample(shared: Arc<Shared>, started: Instant, stop: CancellationToken) -> Vec<SecondPoint> {
    let mut progress = progress::Progress::new(shared.config.progress);
    let mut series = Vec::new();
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut total_ok = 0;
    // Bounded by the run: the caller cancels `stop` once the agents are done.
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let second = shared.recorder.take_second();
        let latency = second.latency;
        total_ok += second.ok;
        let point = SecondPoint {
            t: started.elapsed().as_secs_f64().round() as u64,
            ok: second.ok,
            errors: second.errors,
            p50_us: if latency.is_empty() { 0 } else { latency.value_at_quantile(0.5) },
            p99_us: if latency.is_empty() { 0 } else { latency.value_at_quantile(0.99) },
            send_lag_p99_us: (!second.send_lag.is_empty()).then(|| second.send_lag.value_at_quantile(0.99)),
            connected: shared.recorder.sessions.connected.load(Ordering::Relaxed),
            measured: shared.recorder.is_measuring(),
        };
        progress.update(&progress::Line {
            t: point.t,
            phase: if shared.stop.is_cancelled() {
                "draining"
            } else if point.measured {
                "measured"
            } else {
                "ramp"
            },
            connected: point.connected,
            agents: shared.config.agents,
            ok_per_s: point.ok,
            errors_per_s: point.errors,
            p50_us: point.p50_us,
            p99_us: point.p99_us,
            send_lag_p99_us: point.send_lag_p99_us,
            total_ok,
        });
        if !last || point.ok > 0 || point.errors > 0 {
            series.push(point);
        }
        if last {
            break;
        }
    }
    progress.finish();
    series
}
