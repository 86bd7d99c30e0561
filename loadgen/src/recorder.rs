//! What a run counts: calls by method and outcome, latencies in HDR histograms, session events. Agents record into
//! one of a few shards (by agent index) so tens of thousands of calls a second do not queue on one lock; the
//! per-second sampler and the final report merge the shards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

const SHARDS: usize = 8;
/// Latencies are recorded in microseconds from 1 µs to 10 min (larger values are clamped), 3 significant digits.
const HIST_MAX_US: u64 = 600_000_000;
const HIST_SIGFIG: u8 = 3;

pub(crate) fn histogram() -> Histogram<u64> {
    // Constant bounds the crate accepts (1 <= low, high >= 2 * low, sigfig <= 5): no input reaches this.
    Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[derive(Default)]
pub(crate) struct MethodStats {
    pub ok: u64,
    pub errors: u64,
    /// Successful calls only, measured phase only.
    pub latency: Option<Histogram<u64>>,
}

struct Shard {
    methods: BTreeMap<&'static str, MethodStats>,
    errors: BTreeMap<String, u64>,
    /// Successful calls in the measured phase.
    measured: Histogram<u64>,
    measured_ok: u64,
    measured_errors: u64,
    /// The current second (whole run), taken by the sampler.
    second: Histogram<u64>,
    second_ok: u64,
    second_errors: u64,
    /// Fixed-rate mode: the current second's send lag (whole run), beside its latencies.
    second_send_lag: Histogram<u64>,
    connect: Histogram<u64>,
    /// Fixed-rate mode: send to reply (no queueing before the send), and how late sends left (measured phase).
    service: Histogram<u64>,
    send_lag: Histogram<u64>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            methods: BTreeMap::new(),
            errors: BTreeMap::new(),
            measured: histogram(),
            measured_ok: 0,
            measured_errors: 0,
            second: histogram(),
            second_ok: 0,
            second_errors: 0,
            second_send_lag: histogram(),
            connect: histogram(),
            service: histogram(),
            send_lag: histogram(),
        }
    }
}

/// Session-level counters, read live by the progress line.
#[derive(Default)]
pub(crate) struct Sessions {
    pub connected: AtomicUsize,
    pub ever_connected: AtomicUsize,
    /// Agents whose first connect attempt finished (either way): the ramp is over when all have.
    pub first_attempted: AtomicUsize,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub drops: AtomicU64,
    pub reconnects: AtomicU64,
    pub streams_opened: AtomicU64,
    pub stream_messages: AtomicU64,
}

pub(crate) struct Recorder {
    shards: Vec<Mutex<Shard>>,
    measuring: AtomicBool,
    /// Calls finished (either way), for ending a `--max-rpcs` run once all are back.
    pub finished: AtomicU64,
    pub sessions: Sessions,
}

/// One second's sample.
pub(crate) struct Second {
    pub ok: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
    /// Empty outside the fixed-rate mode.
    pub send_lag: Histogram<u64>,
}

/// Everything merged at the end.
pub(crate) struct Totals {
    pub methods: BTreeMap<&'static str, MethodStats>,
    pub errors: BTreeMap<String, u64>,
    pub measured: Histogram<u64>,
    pub measured_ok: u64,
    pub measured_errors: u64,
    pub connect: Histogram<u64>,
    pub service: Histogram<u64>,
    pub send_lag: Histogram<u64>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            measuring: AtomicBool::new(false),
            finished: AtomicU64::new(0),
            sessions: Sessions::default(),
        }
    }

    fn shard(&self, agent: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding the lock leaves plain counters behind, still worth reporting.
        self.shards[agent % SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn start_measuring(&self) {
        self.measuring.store(true, Ordering::Relaxed);
    }

    pub fn is_measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    pub fn stop_measuring(&self) {
        self.measuring.store(false, Ordering::Relaxed);
    }

    /// A call to `method` finished: `Ok` with its latency, or `Err` with its error kind.
    pub fn call(&self, agent: usize, method: &'static str, outcome: Result<Duration, String>) {
        let measuring = self.measuring.load(Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(agent);
        match outcome {
            Ok(latency) => {
                let us = micros(latency);
                let stats = shard.methods.entry(method).or_default();
                stats.ok += 1;
                if measuring {
                    stats.latency.get_or_insert_with(histogram).saturating_record(us);
                }
                shard.second.saturating_record(us);
                shard.second_ok += 1;
                if measuring {
                    shard.measured.saturating_record(us);
                    shard.measured_ok += 1;
                }
            }
            Err(kind) => {
                shard.methods.entry(method).or_default().errors += 1;
                *shard.errors.entry(kind).or_default() += 1;
                shard.second_errors += 1;
                if measuring {
                    shard.measured_errors += 1;
                }
            }
        }
    }

    pub fn connected(&self, agent: usize, took: Duration) {
        self.shard(agent).connect.saturating_record(micros(took));
    }

    pub fn service(&self, agent: usize, took: Duration) {
        if self.measuring.load(Ordering::Relaxed) {
            self.shard(agent).service.saturating_record(micros(took));
        }
    }

    pub fn send_lag(&self, agent: usize, late: Duration) {
        // Zero lag is recorded as 1 µs, the histogram's floor.
        let us = micros(late);
        let mut shard = self.shard(agent);
        shard.second_send_lag.saturating_record(us);
        if self.measuring.load(Ordering::Relaxed) {
            shard.send_lag.saturating_record(us);
        }
    }

    pub fn error(&self, agent: usize, kind: String) {
        *self.shard(agent).errors.entry(kind).or_default() += 1;
    }

    /// The calls since the last sample.
    pub fn take_second(&self) -> Second {
        let mut second = Second { ok: 0, errors: 0, latency: histogram(), send_lag: histogram() };
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            second.ok += std::mem::take(&mut shard.second_ok);
            second.errors += std::mem::take(&mut shard.second_errors);
            let _ = second.latency.add(&shard.second);
            shard.second.reset();
            let _ = second.send_lag.add(&shard.second_send_lag);
            shard.second_send_lag.reset();
        }
        second
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            methods: BTreeMap::new(),
            errors: BTreeMap::new(),
            measured: histogram(),
            measured_ok: 0,
            measured_errors: 0,
            connect: histogram(),
            service: histogram(),
            send_lag: histogram(),
        };
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (method, stats) in &shard.methods {
                let merged = totals.methods.entry(method).or_default();
                merged.ok += stats.ok;
                merged.errors += stats.errors;
                if let Some(h) = &stats.latency {
                    let _ = merged.latency.get_or_insert_with(histogram).add(h);
                }
            }
            for (kind, n) in &shard.errors {
                *totals.errors.entry(kind.clone()).or_default() += n;
            }
            let _ = totals.measured.add(&shard.measured);
            totals.measured_ok += shard.measured_ok;
            totals.measured_errors += shard.measured_errors;
            let _ = totals.connect.add(&shard.connect);
            let _ = totals.service.add(&shard.service);
            let _ = totals.send_lag.add(&shard.send_lag);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_only_measured_ones_enter_the_histogram() {
        let r = Recorder::new();
        r.call(0, "/a", Ok(Duration::from_micros(10)));
        r.start_measuring();
        for agent in 0..20 {
            r.call(agent, "/a", Ok(Duration::from_micros(100)));
        }
        r.call(3, "/b", Err("io".into()));
        let t = r.totals();
        assert_eq!(t.methods["/a"].ok, 21);
        assert_eq!(t.methods["/b"].errors, 1);
        assert_eq!(t.measured_ok, 20);
        assert_eq!(t.measured.len(), 20);
        assert_eq!(t.errors["io"], 1);
        let s = r.take_second();
        assert_eq!((s.ok, s.errors, s.latency.len()), (21, 1, 21));
        assert_eq!(r.take_second().ok, 0, "a sample takes the second's calls");
    }
}
