//! Ending the sessions of superseded builds, as coderd's connection monitor does (`checkBuildIsLatest`, every
//! `AgentConnectionUpdateFrequency`): once a newer build of the workspace exists — a stop, a restart, a delete,
//! made by coderd or by `agentwire agent update` — the old build's agent is disconnected, and its reconnects are
//! refused by the token check.
//!
//! coderd asks the database once per agent per interval. Here every session registers its build, and one task asks
//! once per interval for all of them ([`agentwire_store::Store::superseded_builds`]), so the cost is one statement
//! per replica per interval whatever the number of agents.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwire_store::Store;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// coderd's `AgentConnectionUpdateFrequency`: how long a superseded build's agent may stay connected.
pub const DEFAULT_BUILD_CHECK_INTERVAL: Duration = Duration::from_secs(15);

/// The builds of the live sessions, and how to end each session.
#[derive(Default)]
pub struct BuildWatch {
    sessions: Mutex<HashMap<Uuid, Vec<(u64, CancellationToken)>>>,
    next_key: AtomicU64,
    ended: AtomicU64,
}

/// A session's place in the watch, removed when dropped.
pub struct Watched {
    watch: Arc<BuildWatch>,
    build_id: Uuid,
    key: u64,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.watch.sessions.lock() {
            if let Some(list) = sessions.get_mut(&self.build_id) {
                list.retain(|(key, _)| *key != self.key);
                if list.is_empty() {
                    sessions.remove(&self.build_id);
                }
            }
        }
    }
}

impl BuildWatch {
    /// Watch a session of `build_id`: `end` is cancelled once a newer build supersedes it.
    pub fn watch(self: &Arc<Self>, build_id: Uuid, end: CancellationToken) -> Watched {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.entry(build_id).or_default().push((key, end));
        }
        Watched { watch: self.clone(), build_id, key }
    }

    /// Sessions ended because their build was superseded, since start.
    pub fn sessions_ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }

    /// One check: end the sessions of every superseded build. The number of sessions ended.
    pub async fn check(&self, store: &Store) -> Result<usize, agentwire_store::StoreError> {
        let builds: Vec<Uuid> = match self.sessions.lock() {
            Ok(sessions) => sessions.keys().copied().collect(),
            Err(_) => return Ok(0),
        };
        let superseded = store.superseded_builds(&builds).await?;
        let mut ended = 0;
        if let Ok(sessions) = self.sessions.lock() {
            for build in &superseded {
                for (_, end) in sessions.get(build).into_iter().flatten() {
                    tracing::info!(build_id = %build, "ending an agent session: its build is outdated");
                    end.cancel();
                    ended += 1;
                }
            }
        }
        self.ended.fetch_add(ended as u64, Ordering::Relaxed);
        Ok(ended)
    }

    /// Check every `interval` until `shutdown`. A failed check is logged and retried at the next tick: the
    /// sessions it would have ended stay until then, as coderd's monitor keeps an agent whose check errored.
    pub async fn run(self: Arc<Self>, store: Store, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(err) = self.check(&store).await {
                tracing::warn!(error = %err, "checking the sessions' builds");
            }
        }
    }
}
