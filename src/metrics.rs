//! Prometheus metrics of the server, rendered in the text exposition format on `/metrics`.
//!
//! The series are few and their labels bounded (RPC methods come from the registered set, unknown paths are one
//! label), so plain atomics and one mutex-guarded map per family do; the hot path takes one short lock per call.
//! The `prometheus-client` crate is not used: most series here are read from other crates' counters (the store's
//! batchers and query counts, the transport's budgets, the snapshotter) at scrape time, which it would need each
//! wrapped in a custom collector, for the same text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use agentwire_store::Store;
use agentwire_transport::server::{CallObserver, CallOutcome};

/// Upper bounds of the RPC latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// A call's outcome as a label: ordered, so the exposition is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    Cancelled,
    Error(u64),
}

impl From<CallOutcome> for Outcome {
    fn from(outcome: CallOutcome) -> Self {
        match outcome {
            CallOutcome::Ok => Outcome::Ok,
            CallOutcome::Cancelled => Outcome::Cancelled,
            CallOutcome::Error(code) => Outcome::Error(code),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Cancelled => f.write_str("cancelled"),
            Outcome::Error(code) => write!(f, "{code}"),
        }
    }
}

/// Everything kept per RPC method. One entry per method, made on its first call; later calls look it up by `&str`
/// under one lock and allocate nothing.
#[derive(Default)]
struct MethodStats {
    outcomes: BTreeMap<Outcome, u64>,
    latency: Histogram,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    sessions_active: AtomicI64,
    sessions_total: AtomicU64,
    sessions_refused: Mutex<BTreeMap<&'static str, u64>>,
    rpcs: Mutex<BTreeMap<String, MethodStats>>,
    /// The metrics snapshotter whose refresh series are rendered too (set once by the server).
    metrics_cache: std::sync::OnceLock<std::sync::Arc<crate::metrics_cache::MetricsCache>>,
    /// Tailnet counters (telemetry events, coordinator), kept by the tailnet service.
    pub tailnet: std::sync::Arc<crate::tailnet::TailnetStats>,
    /// The watch of the sessions' builds, whose count of ended sessions is rendered too (set once by the server).
    build_watch: std::sync::OnceLock<std::sync::Arc<crate::build_watch::BuildWatch>>,
    /// The server's memory pool, whose use and evictions are rendered too (set once by the server).
    memory: std::sync::OnceLock<agentwire_transport::budget::MemoryBudget>,
    /// The banners served, whose decode errors are rendered too (set once by the server).
    banners: std::sync::OnceLock<std::sync::Arc<crate::agentapi::Banners>>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Renders `cache`'s refresh series with the others (the first call wins).
    pub fn attach_metrics_cache(&self, cache: std::sync::Arc<crate::metrics_cache::MetricsCache>) {
        let _ = self.metrics_cache.set(cache);
    }

    /// Renders how many sessions ended because a newer build superseded theirs (the first call wins).
    pub fn attach_build_watch(&self, watch: std::sync::Arc<crate::build_watch::BuildWatch>) {
        let _ = self.build_watch.set(watch);
    }

    /// Renders how often the stored banners did not decode (the first call wins).
    pub fn attach_banners(&self, banners: std::sync::Arc<crate::agentapi::Banners>) {
        let _ = self.banners.set(banners);
    }

    /// Renders the memory pool's use and what its limits did (the first call wins).
    pub fn attach_memory_budget(&self, memory: agentwire_transport::budget::MemoryBudget) {
        let _ = self.memory.set(memory);
    }

    pub fn session_started(&self) {
        self.sessions_active.fetch_add(1, Ordering::Relaxed);
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn session_ended(&self) {
        self.sessions_active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn sessions_active(&self) -> i64 {
        self.sessions_active.load(Ordering::Relaxed)
    }

    /// A connection refused before the upgrade, by reason (`unauthorized`, `stale_build`, `bad_version`, `limit`).
    pub fn session_refused(&self, reason: &'static str) {
        if let Ok(mut refused) = self.sessions_refused.lock() {
            *refused.entry(reason).or_default() += 1;
        }
    }

    /// Calls of `method` that ended with `code` (`ok`, `cancelled` or the dRPC error code).
    pub fn rpc_count(&self, method: &str, code: &str) -> u64 {
        let Ok(rpcs) = self.rpcs.lock() else {
            return 0;
        };
        rpcs.get(method)
            .map(|m| m.outcomes.iter().filter(|(o, _)| o.to_string() == code).map(|(_, n)| n).sum())
            .unwrap_or(0)
    }

    /// The exposition text, with the store's per-statement query counters.
    pub fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP agentwire_sessions_active Agent sessions connected now.");
        let _ = writeln!(out, "# TYPE agentwire_sessions_active gauge");
        let _ = writeln!(out, "agentwire_sessions_active {}", self.sessions_active());
        let _ = writeln!(out, "# HELP agentwire_sessions_total Agent sessions accepted since start.");
        let _ = writeln!(out, "# TYPE agentwire_sessions_total counter");
        let _ = writeln!(out, "agentwire_sessions_total {}", self.sessions_total.load(Ordering::Relaxed));
        if let Some(watch) = self.build_watch.get() {
            let _ = writeln!(
                out,
                "# HELP agentwire_sessions_superseded_total Agent sessions ended because a newer build of their \
                 workspace exists."
            );
            let _ = writeln!(out, "# TYPE agentwire_sessions_superseded_total counter");
            let _ = writeln!(out, "agentwire_sessions_superseded_total {}", watch.sessions_ended());
        }
        let _ = writeln!(out, "# HELP agentwire_sessions_refused_total Connections refused before the upgrade.");
        let _ = writeln!(out, "# TYPE agentwire_sessions_refused_total counter");
        if let Ok(refused) = self.sessions_refused.lock() {
            for (reason, n) in refused.iter() {
                let _ = writeln!(out, "agentwire_sessions_refused_total{{reason=\"{reason}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# HELP agentwire_rpc_total RPCs served, by method and outcome code.");
        let _ = writeln!(out, "# TYPE agentwire_rpc_total counter");
        let rpcs = self.rpcs.lock();
        if let Ok(rpcs) = &rpcs {
            for (method, stats) in rpcs.iter() {
                for (code, n) in &stats.outcomes {
                    let _ = writeln!(out, "agentwire_rpc_total{{method=\"{method}\",code=\"{code}\"}} {n}");
                }
            }
        }
        let _ = writeln!(out, "# HELP agentwire_rpc_duration_seconds Time from request to answer, by method.");
        let _ = writeln!(out, "# TYPE agentwire_rpc_duration_seconds histogram");
        if let Ok(rpcs) = &rpcs {
            for (method, MethodStats { latency: h, .. }) in rpcs.iter() {
                let mut cumulative = 0;
                for (le, n) in LATENCY_BUCKETS.iter().zip(h.buckets.iter()) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "agentwire_rpc_duration_seconds_bucket{{method=\"{method}\",le=\"{le}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "agentwire_rpc_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "agentwire_rpc_duration_seconds_sum{{method=\"{method}\"}} {}", h.sum);
                let _ = writeln!(out, "agentwire_rpc_duration_seconds_count{{method=\"{method}\"}} {}", h.count);
            }
        }
        let queries = store.queries().snapshot();
        let _ = writeln!(out, "# HELP agentwire_db_queries_total SQL statements run, by statement name.");
        let _ = writeln!(out, "# TYPE agentwire_db_queries_total counter");
        for (name, n) in queries.by_name.iter() {
            let _ = writeln!(out, "agentwire_db_queries_total{{query=\"{name}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP agentwire_db_transactions_total Transactions committed.");
        let _ = writeln!(out, "# TYPE agentwire_db_transactions_total counter");
        let _ = writeln!(out, "agentwire_db_transactions_total {}", queries.commits);
        render_batchers(&mut out, &store.batcher_stats());
        if let Some(banners) = self.banners.get() {
            let _ = writeln!(
                out,
                "# HELP agentwire_banner_decode_errors_total Stored announcement banners that did not decode (the \
                 last good ones are served)."
            );
            let _ = writeln!(out, "# TYPE agentwire_banner_decode_errors_total counter");
            let _ = writeln!(out, "agentwire_banner_decode_errors_total {}", banners.decode_errors());
        }
        if let Some(memory) = self.memory.get() {
            render_memory(&mut out, memory);
        }
        self.tailnet.render(&mut out);
        if let Some(cache) = self.metrics_cache.get() {
            cache.render_prometheus(&mut out);
        }
        out
    }
}

/// The memory budgets: what sessions hold past their guaranteed parts, reads that waited for room, and sessions ended
/// because a limit stayed exhausted, by limit (`session`, `agent`, `server`).
fn render_memory(out: &mut String, memory: &agentwire_transport::budget::MemoryBudget) {
    let _ = writeln!(
        out,
        "# HELP agentwire_memory_budget_used_bytes Undispatched bytes sessions hold past their guaranteed parts."
    );
    let _ = writeln!(out, "# TYPE agentwire_memory_budget_used_bytes gauge");
    let _ = writeln!(out, "agentwire_memory_budget_used_bytes {}", memory.used());
    let _ = writeln!(out, "# HELP agentwire_memory_budget_limit_bytes The server's memory limit.");
    let _ = writeln!(out, "# TYPE agentwire_memory_budget_limit_bytes gauge");
    let _ = writeln!(out, "agentwire_memory_budget_limit_bytes {}", memory.limit());
    let events = memory.events();
    let _ =
        writeln!(out, "# HELP agentwire_memory_budget_waits_total Reads that waited for room under a memory limit.");
    let _ = writeln!(out, "# TYPE agentwire_memory_budget_waits_total counter");
    let _ = writeln!(out, "agentwire_memory_budget_waits_total {}", events.waits());
    let _ = writeln!(
        out,
        "# HELP agentwire_memory_budget_evictions_total Sessions ended because a memory limit stayed exhausted."
    );
    let _ = writeln!(out, "# TYPE agentwire_memory_budget_evictions_total counter");
    for (limit, n) in events.evictions() {
        let _ = writeln!(out, "agentwire_memory_budget_evictions_total{{limit=\"{limit}\"}} {n}");
    }
}

/// The batchers' counters, one series per counter and batcher. Together they account for every item offered:
/// `enqueued + refused = written + superseded + dropped + pending`, so what an outage cost can be read off them.
fn render_batchers(out: &mut String, batchers: &agentwire_store::AllBatcherStats) {
    type Field = fn(&agentwire_store::BatcherStats) -> u64;
    let series: [(&str, &str, Field); 7] = [
        ("enqueued", "Items accepted into a batcher's queue.", |s| s.enqueued),
        ("refused", "Items a full (or shut down) batcher queue refused; counted in dropped too.", |s| s.refused),
        ("dropped", "Items lost: refused by the queue, over a full buffer, or discarded by a failed flush.", |s| {
            s.dropped
        }),
        ("superseded", "Items replaced by a newer one of the same key before they were written.", |s| s.superseded),
        ("written", "Items written by successful flushes.", |s| s.items_flushed),
        ("flushes", "Batcher flushes (one transaction each).", |s| s.flushes),
        ("flush_errors", "Batcher flushes that failed.", |s| s.flush_errors),
    ];
    for (name, help, field) in series {
        let _ = writeln!(out, "# HELP agentwire_batcher_{name}_total {help}");
        let _ = writeln!(out, "# TYPE agentwire_batcher_{name}_total counter");
        for (batcher, stats) in [
            ("stats", &batchers.stats),
            ("metadata", &batchers.metadata),
            ("heartbeats", &batchers.heartbeats),
            ("monitors", &batchers.monitors),
        ] {
            let _ = writeln!(out, "agentwire_batcher_{name}_total{{batcher=\"{batcher}\"}} {}", field(stats));
        }
    }
}

impl CallObserver for Metrics {
    fn call_finished(&self, method: &str, outcome: CallOutcome, elapsed: Duration) {
        let Ok(mut rpcs) = self.rpcs.lock() else {
            return;
        };
        if !rpcs.contains_key(method) {
            rpcs.insert(method.to_owned(), MethodStats::default());
        }
        if let Some(stats) = rpcs.get_mut(method) {
            *stats.outcomes.entry(outcome.into()).or_default() += 1;
            let h = &mut stats.latency;
            let secs = elapsed.as_secs_f64();
            if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
                h.buckets[i] += 1;
            }
            h.count += 1;
            h.sum += secs;
        }
    }
}
