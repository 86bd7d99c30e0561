//! One simulated agent: connect (on its slot of the ramp), run the scenario on the session, and when the session
//! drops reconnect with Coder's backoff until the run ends. Session events feed the reconnect-storm figure.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connect::{dial, ConnectError};
use crate::scenario::{self, AgentState, Outcome};
use crate::shared::Shared;

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
}
