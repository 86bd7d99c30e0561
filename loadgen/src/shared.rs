//! What every simulated agent shares with the others and with the run: the configuration, the recorder, the
//! `--max-rpcs` budget, the stop signal and the reconnect storms. The agent loop and its scenarios both take it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use agentwire_transport::io::SessionConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::LoadgenConfig;
use crate::recorder::Recorder;

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
    /// Run-wide call numbers of the saturating and fixed-rate modes: one counter for all agents, so that the
    /// mix's calls follow its order across the run, whichever agent makes them.
    slots: AtomicU64,
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
            slots: AtomicU64::new(0),
        }
    }

    /// The next call's number, from 0; taken only for a call that is then made.
    pub fn next_slot(&self) -> u64 {
        self.slots.fetch_add(1, Ordering::Relaxed)
    }

    fn storms(&self) -> std::sync::MutexGuard<'_, Vec<Storm>> {
        self.storms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a session that came up; the last agent back closes the open reconnect storm.
    pub fn on_connected(&self, reconnect: bool) {
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

    /// Counts a session that ended; a drop while the run goes on opens a storm or adds to the open one.
    pub fn on_disconnected(&self, dropped: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_gives_exactly_its_calls() {
        let b = Budget::new(Some(3));
        assert_eq!((0..10).filter(|_| b.take()).count(), 3);
        assert!(b.spent());
        assert!(Budget::new(None).take());
    }
}
