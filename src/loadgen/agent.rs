//! One simulated agent: connect (on its slot of the ramp), run the scenario on the session, and when the session
//! drops reconnect with Coder's backoff until the run ends. Session events feed the reconnect-storm figure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentwire_transport::io::SessionConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::config::LoadgenConfig;
use super::connect::{dial, ConnectError};
use super::recorder::Recorder;
use super::scenario::{self, AgentState, Outcome};

/// The calls a run may still start (`--max-rpcs`), shared by all agents.
pub(crate) struct Budget {
    remaining: Option<AtomicU64>,
}

impl Budget {
    pub fn new(max: Option<u64>) -> Self {
        Budget { remaining: max.map(AtomicU64::new) }
    }

    /// Takes one call from the budget; false once it is spent.
    pub fn take(&self) -> bool {
        match &self.remaining {
            None => true,
            Some(left) => left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok(),
        }
    }

    pub fn spent(&self) -> bool {
        matches!(&self.remaining, Some(left) if left.load(Ordering::Relaxed) == 0)
    }
}

/// A stretch from the first drop while every agent was connected until all are connected again.
#[derive(Debug, Clone)]
pub(crate) struct Storm {
    pub started: Instant,
    pub drops: u64,
    pub recovered: Option<Instant>,
}

/// What every agent task shares.
pub(crate) struct Shared {
    pub config: LoadgenConfig,
    pub recorder: Recorder,
    pub budget: Budget,
    /// Cancelled at the end of the measured phase: no new calls, calls in flight finish.
    pub stop: CancellationToken,
    pub reconnect_gate: Semaphore,
    pub storms: Mutex<Vec<Storm>>,
    pub session: SessionConfig,
}

impl Shared {
    pub fn new(config: LoadgenConfig) -> Self {
        let gate = Semaphore::new(config.reconnect_concurrency);
        let budget = Budget::new(config.max_rpcs);
        Shared {
            config,
            recorder: Recorder::new(),
            budget,
            stop: CancellationToken::new(),
            reconnect_gate: gate,
            storms: Mutex::new(Vec::new()),
            session: SessionConfig::default(),
        }
    }

    fn storms(&self) -> std::sync::MutexGuard<'_, Vec<Storm>> {
        self.storms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_connected(&self, reconnect: bool) {
        let s = &self.recorder.sessions;
        s.connects.fetch_add(1, Ordering::Relaxed);
        if reconnect {
            s.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let now_connected = s.connected.fetch_add(1, Ordering::SeqCst) + 1;
        if now_connected == self.config.agents {
            let mut storms = self.storms();
            if let Some(open) = storms.last_mut().filter(|s| s.recovered.is_none()) {
                open.recovered = Some(Instant::now());
            }
        }
    }

    fn on_disconnected(&self, dropped: bool) {
        let s = &self.recorder.sessions;
        s.connected.fetch_sub(1, Ordering::SeqCst);
        if dropped && !self.stop.is_cancelled() {
            s.drops.fetch_add(1, Ordering::Relaxed);
            let mut storms = self.storms();
            match storms.last_mut().filter(|s| s.recovered.is_none()) {
                Some(open) => open.drops += 1,
                None => storms.push(Storm { started: Instant::now(), drops: 1, recovered: None }),
            }
        }
    }
}

/// Coder's agent retry: the first attempt at once, then waits doubling from min to max.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff { next: min, min, max }
    }

    fn wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Runs agent `index` until the run stops. `start_at` is its slot on the connect ramp.
pub(crate) async fn run(shared: Arc<Shared>, index: usize, token: Option<String>, start_at: tokio::time::Instant) {
    tokio::select! {
        _ = tokio::time::sleep_until(start_at) => {}
        _ = shared.stop.cancelled() => return,
    }
    let config = &shared.config;
    let source = config.source_ip(index);
    let mut state = AgentState::new(index, config.already_started);
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    let mut first_attempt = true;
    let mut after_drop = false;
    while !shared.stop.is_cancelled() {
        // The ramp paces first connects; later attempts (after a drop or a failure) share the reconnect gate.
        let permit = if first_attempt {
            None
        } else {
            tokio::select! {
                permit = shared.reconnect_gate.acquire() => permit.ok(),
                _ = shared.stop.cancelled() => break,
            }
        };
        let started = Instant::now();
        let dialed = tokio::select! {
            dialed = tokio::time::timeout(config.call_timeout, dial(&config.target, token.as_deref(), source, &shared.session)) => {
                dialed.unwrap_or(Err(ConnectError::Timeout))
            }
            _ = shared.stop.cancelled() => break,
        };
        drop(permit);
        if first_attempt {
            shared.recorder.sessions.first_attempted.fetch_add(1, Ordering::Relaxed);
        }
        first_attempt = false;
        match dialed {
            Ok(connection) => {
                shared.recorder.connected(index, started.elapsed());
                if !state.ever_connected {
                    state.ever_connected = true;
                    shared.recorder.sessions.ever_connected.fetch_add(1, Ordering::Relaxed);
                }
                shared.on_connected(after_drop);
                backoff.reset();
                let outcome = scenario::run_session(&shared, &mut state, connection).await;
                let dropped = outcome == Outcome::Dropped;
                shared.on_disconnected(dropped);
                after_drop = dropped;
                if !dropped {
                    break;
                }
            }
            Err(err) => {
                shared.recorder.sessions.connect_failures.fetch_add(1, Ordering::Relaxed);
                shared.recorder.error(index, err.kind());
                tokio::select! {
                    _ = tokio::time::sleep(backoff.wait()) => {}
                    _ = shared.stop.cancelled() => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let waits: Vec<u128> = (0..6).map(|_| b.wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.wait().as_millis(), 100);
    }

    #[test]
    fn a_budget_gives_exactly_its_calls() {
        let b = Budget::new(Some(3));
        assert_eq!((0..10).filter(|_| b.take()).count(), 3);
        assert!(b.spent());
        assert!(Budget::new(None).take());
    }
}
