//! `GET /api/v2/workspaceagents/me/reinit`: the prebuild re-initialisation stream.
//!
//! Every v2.30 agent holds this request open from start (`agentsdk.WaitForReinitLoop`), reconnecting with a backoff
//! of 100 ms to 10 s, and logs an error on each failed attempt. coderd answers every agent, prebuild or not, with a
//! server-sent event stream: it subscribes to `prebuild_claimed_<workspace>` and sends `event: data` with
//! `{"WorkspaceID": …, "reason": "prebuild_claimed"}` when the prebuilt workspace is claimed, and `event: ping`
//! every 15 s (`httpapi.HeartbeatInterval`) otherwise, until the agent goes or the server stops.
//!
//! agentwire has no prebuilds, so no claim is ever published: what it sends is what coderd sends an agent that is
//! not a prebuild, pings until the agent hangs up or the server shuts down, and the agent waits quietly. A stream
//! costs one timer and the connection; no subscription and no database query beyond the token lookup. Streams are
//! bounded ([`DEFAULT_MAX_REINIT_STREAMS`], [`DEFAULT_MAX_REINIT_STREAMS_PER_AGENT`]) and end on shutdown.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{MeAgent, MeState};
use crate::http::error::ApiError;

/// Reinit streams one server holds at once: one per agent it can hold sessions for
/// ([`crate::server::DEFAULT_MAX_SESSIONS`]). coderd has no limit. Past it: 503, and the agent retries.
pub const DEFAULT_MAX_REINIT_STREAMS: usize = crate::server::DEFAULT_MAX_SESSIONS;
/// Reinit streams one agent holds at once: a v2.30 agent holds one, and briefly two while it reconnects past a
/// connection that died without a close. coderd has no limit. The same bound as an agent's sessions
/// ([`crate::server::DEFAULT_MAX_SESSIONS_PER_AGENT`]); past it the agent's oldest stream ends, so a reconnect is
/// never refused because of streams whose connections are dead but not yet noticed.
pub const DEFAULT_MAX_REINIT_STREAMS_PER_AGENT: usize = crate::server::DEFAULT_MAX_SESSIONS_PER_AGENT;

/// The open reinit streams, by agent, under their limits.
#[derive(Debug)]
pub struct ReinitStreams {
    max: usize,
    per_agent: usize,
    inner: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    next_id: u64,
    /// Each agent's streams, oldest first, with what ends each one.
    agents: HashMap<Uuid, VecDeque<(u64, CancellationToken)>>,
}

/// One stream's place; given back on drop. `ended` fires when a newer stream of the same agent takes its place.
#[derive(Debug)]
pub struct ReinitSlot {
    streams: Arc<ReinitStreams>,
    agent_id: Uuid,
    id: u64,
    pub ended: CancellationToken,
}

impl ReinitStreams {
    /// At most `max` streams in all (at least 1), and `per_agent` per agent (at least 1).
    pub fn new(max: usize, per_agent: usize) -> Self {
        ReinitStreams { max: max.max(1), per_agent: per_agent.max(1), inner: Mutex::new(Open::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The table stays consistent across a panic elsewhere: every change is a single push, pop or count.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// A place for one more stream of `agent_id`. An agent at its limit gives up its oldest stream; the server at its
    /// limit refuses, with the reason.
    pub fn admit(self: &Arc<Self>, agent_id: Uuid) -> Result<ReinitSlot, String> {
        let mut open = self.lock();
        let mine = open.agents.get(&agent_id).map_or(0, VecDeque::len);
        if mine >= self.per_agent {
            if let Some(queue) = open.agents.get_mut(&agent_id) {
                if let Some((_, oldest)) = queue.pop_front() {
                    oldest.cancel();
                    open.total -= 1;
                }
            }
        } else if open.total >= self.max {
            return Err(format!("this server holds its maximum of {} reinit streams", self.max));
        }
        let id = open.next_id;
        open.next_id += 1;
        let ended = CancellationToken::new();
        open.agents.entry(agent_id).or_default().push_back((id, ended.clone()));
        open.total += 1;
        Ok(ReinitSlot { streams: self.clone(), agent_id, id, ended })
    }
}

impl Drop for ReinitSlot {
    fn drop(&mut self) {
        let mut open = self.streams.lock();
        let Some(queue) = open.agents.get_mut(&self.agent_id) else { return };
        // An evicted stream was taken out (and counted out) when it was evicted.
        let Some(at) = queue.iter().position(|(id, _)| *id == self.id) else { return };
        queue.remove(at);
        if queue.is_empty() {
            open.agents.remove(&self.agent_id);
        }
        open.total -= 1;
    }
}

/// One agent's stream: pings until the server stops, a newer stream of the agent takes its place, or the client
/// goes (the body is dropped then, and the slot with it).
struct Reinit {
    _slot: ReinitSlot,
    ended: CancellationToken,
    shutdown: CancellationToken,
    ping: tokio::time::Interval,
}

impl Reinit {
    async fn next(&mut self) -> Option<Event> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => None,
            _ = self.ended.cancelled() => None,
            _ = self.ping.tick() => Some(Event::default().event("ping")),
        }
    }
}

pub async fn reinit(State(state): State<MeState>, MeAgent(agent): MeAgent) -> Response {
    let shutdown = state.app.shutdown_token().clone();
    if shutdown.is_cancelled() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The server is shutting down.").into_response();
    }
    let slot = match state.reinit.admit(agent.id) {
        Ok(slot) => slot,
        Err(limit) => {
            tracing::warn!(agent_id = %agent.id, %limit, "refusing a reinit stream");
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Too many agent connections.")
                .detail(limit)
                .into_response();
        }
    };
    tracing::debug!(agent_id = %agent.id, workspace_id = %agent.workspace_id, "agent waiting for reinit instruction");
    let every = state.config.reinit_heartbeat;
    let ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let ended = slot.ended.clone();
    let stream = Reinit { _slot: slot, ended, shutdown, ping };
    let events = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        Some((Ok::<_, Infallible>(event), stream))
    });
    // As coderd's `ServerSentEventSender`: no buffering by proxies in between.
    let no_buffering = [(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"))];
    (no_buffering, Sse::new(events)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_limit_refuses_and_the_agent_limit_ends_the_oldest() {
        let streams = Arc::new(ReinitStreams::new(3, 2));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = streams.admit(a).unwrap();
        let a2 = streams.admit(a).unwrap();
        assert_eq!(streams.open(), 2);
        // A third stream of `a` ends its oldest, and the count stays.
        let a3 = streams.admit(a).unwrap();
        assert!(a1.ended.is_cancelled() && !a2.ended.is_cancelled() && !a3.ended.is_cancelled());
        assert_eq!(streams.open(), 2);
        drop(a1);
        assert_eq!(streams.open(), 2, "an evicted slot was counted out when it was evicted");
        let b1 = streams.admit(b).unwrap();
        assert_eq!(streams.open(), 3);
        // The server is full: another agent is refused, while `a` may still replace its own.
        let refused = streams.admit(Uuid::new_v4()).unwrap_err();
        assert!(refused.contains("maximum of 3 reinit streams"), "{refused}");
        let a4 = streams.admit(a).unwrap();
        assert!(a2.ended.is_cancelled());
        assert_eq!(streams.open(), 3);
        drop((a2, a3, a4, b1));
        assert_eq!(streams.open(), 0);
        assert!(streams.lock().agents.is_empty());
    }

    #[test]
    fn the_defaults_are_the_session_limits() {
        assert_eq!(DEFAULT_MAX_REINIT_STREAMS, 100_000);
        assert_eq!(DEFAULT_MAX_REINIT_STREAMS_PER_AGENT, 4);
    }
}
