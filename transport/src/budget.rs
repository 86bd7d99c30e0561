//! Memory budgets for what peers send: bytes read off a session's streams and not yet dispatched to a handler
//! (partial frames and packets, messages a handler has not taken), bounded per session, per group of sessions (an
//! agent, say) and for the whole server.
//!
//! A budget is soft by one read: a stream may read while its session and every pool above it are under their limits,
//! and counts what the read brought (at most one yamux window, 256 KiB) afterwards. When a limit is reached the
//! streams that want to read wait, which stops the yamux window they would grant: that is the back-pressure. A wait
//! that lasts [`DEFAULT_MEMORY_WAIT`] ends the session that holds the most under the exhausted limit (often the
//! waiter's own), so a peer that fills its budget with packets it never finishes cannot stall anyone for ever.
//!
//! One stream per session may read past the session's own limit, until its packet is whole: otherwise streams that
//! each hold part of a large message could wait on one another for ever. A packet is capped
//! ([`crate::limits::DEFAULT_MAX_PACKET_SIZE`]), so this overdraft is too.
//!
//! Each session is guaranteed the first [`DEFAULT_SESSION_GUARANTEED_MEMORY`] of its budget: bytes up to it are not
//! drawn from the pools above, so a full server pool cannot stall the small calls of well-behaved sessions, and their
//! hot path touches no shared counter. The bound on what peers can make the server hold is therefore
//! `server limit + sessions × guaranteed`, plus, per session, the yamux windows of its open streams (the protocol
//! grants each new stream 256 KiB that the peer may send before anyone reads).
//!
//! Over 600 lines with its unit tests (~120), which drive the accounting, the overdraft and eviction directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

// Named in `limits` with every other transport limit; re-exported so `budget::…` paths keep working.
pub use crate::limits::{DEFAULT_MEMORY_WAIT, DEFAULT_SESSION_GUARANTEED_MEMORY, DEFAULT_SESSION_MEMORY};

/// How a session ran out of memory budget, for logs and metrics: the name of the limit that was exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("memory budget exhausted: {limit}")]
pub struct Evicted {
    pub limit: &'static str,
}

/// The name of the per-session limit, as [`Evicted::limit`] and metrics labels carry it.
pub const SESSION_LIMIT: &str = "session";

/// Counts what the budgets did, by limit name: shared by every pool and session of one server.
#[derive(Debug, Default)]
pub struct BudgetEvents {
    evictions: Mutex<HashMap<&'static str, u64>>,
    waits: AtomicU64,
}

impl BudgetEvents {
    /// Sessions ended because a limit stayed exhausted, by limit name.
    pub fn evictions(&self) -> Vec<(&'static str, u64)> {
        let mut all: Vec<_> =
            self.evictions.lock().map(|m| m.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default();
        all.sort();
        all
    }

    /// Times a stream had to wait for room before reading.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    fn evicted(&self, limit: &'static str) {
        if let Ok(mut map) = self.evictions.lock() {
            *map.entry(limit).or_default() += 1;
        }
    }
}

struct Pool {
    name: &'static str,
    limit: usize,
    used: AtomicUsize,
    parent: Option<Arc<Pool>>,
    room: Notify,
    /// The sessions below this pool that hold bytes past their guaranteed parts, so the largest can be found when the
    /// pool stays exhausted. A session joins when it first draws from the pool and leaves when it no longer does:
    /// idle sessions cost the pool nothing.
    sessions: Mutex<HashMap<u64, Weak<Leaf>>>,
    events: Arc<BudgetEvents>,
}

impl Pool {
    fn ancestors(self: &Arc<Self>) -> impl Iterator<Item = &Arc<Pool>> {
        std::iter::successors(Some(self), |pool| pool.parent.as_ref())
    }

    fn release(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        if before >= self.limit && before - n < self.limit {
            self.room.notify_waiters();
        }
    }
}

/// A pool of memory shared by sessions (the server's, or one agent's below it). Cheap to clone.
#[derive(Clone)]
pub struct MemoryBudget(Arc<Pool>);

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget").field("name", &self.0.name).field("limit", &self.0.limit).finish()
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(0);
static NEXT_STREAM: AtomicU64 = AtomicU64::new(0);

impl MemoryBudget {
    /// A top-level pool; `name` names its limit in logs and metrics.
    pub fn root(name: &'static str, limit: usize) -> MemoryBudget {
        MemoryBudget::new(name, limit, None, Arc::new(BudgetEvents::default()))
    }

    /// A pool below this one: what its sessions hold counts against both.
    pub fn child(&self, name: &'static str, limit: usize) -> MemoryBudget {
        MemoryBudget::new(name, limit, Some(self.0.clone()), self.0.events.clone())
    }

    fn new(name: &'static str, limit: usize, parent: Option<Arc<Pool>>, events: Arc<BudgetEvents>) -> MemoryBudget {
        MemoryBudget(Arc::new(Pool {
            name,
            limit,
            used: AtomicUsize::new(0),
            parent,
            room: Notify::new(),
            sessions: Mutex::new(HashMap::new()),
            events,
        }))
    }

    /// A budget for one session below this pool.
    pub fn session(&self, limit: usize, guaranteed: usize) -> SessionMemory {
        SessionMemory(Arc::new(Leaf {
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            limit,
            guaranteed: guaranteed.min(limit),
            parent: Some(self.0.clone()),
            state: Mutex::new(LeafState::default()),
            signal: Notify::new(),
            events: self.0.events.clone(),
        }))
    }

    /// Bytes held below this pool past their sessions' guaranteed parts.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Sessions below this pool that hold bytes past their guaranteed parts: the ones the pool may end.
    pub fn holders(&self) -> usize {
        self.0.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn events(&self) -> &Arc<BudgetEvents> {
        &self.0.events
    }
}

struct Leaf {
    id: u64,
    limit: usize,
    guaranteed: usize,
    parent: Option<Arc<Pool>>,
    state: Mutex<LeafState>,
    /// Wakes the session's waiters: for room under its own limit, for the overdraft, for its end.
    signal: Notify,
    events: Arc<BudgetEvents>,
}

#[derive(Default)]
struct LeafState {
    used: usize,
    /// The limit that ended the session, once one has.
    evicted_by: Option<&'static str>,
    /// The stream that may read past the session's limit to finish its packet.
    overdraft: Option<u64>,
}

impl Drop for Leaf {
    fn drop(&mut self) {
        let used = self.state.get_mut().map(|state| state.used).unwrap_or(0);
        let held = self.excess(used);
        if let (Some(parent), true) = (&self.parent, held > 0) {
            for pool in parent.ancestors() {
                pool.release(held);
                if let Ok(mut sessions) = pool.sessions.lock() {
                    sessions.remove(&self.id);
                }
            }
        }
    }
}

impl Leaf {
    fn excess(&self, used: usize) -> usize {
        used.saturating_sub(self.guaranteed)
    }

    fn used(&self) -> usize {
        self.state.lock().map(|state| state.used).unwrap_or(0)
    }

    fn evict(&self, limit: &'static str) {
        if let Ok(mut state) = self.state.lock() {
            if state.evicted_by.is_some() {
                return;
            }
            state.evicted_by = Some(limit);
        }
        self.events.evicted(limit);
        self.signal.notify_waiters();
    }
}

/// Where a read has to wait: the session's own limit, or a pool above it.
enum Blocked {
    Session,
    Pool(Arc<Pool>),
}

/// One session's budget. Cloned by its streams; every clone counts against the same limits.
#[derive(Clone)]
pub struct SessionMemory(Arc<Leaf>);

impl std::fmt::Debug for SessionMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMemory").field("limit", &self.0.limit).field("used", &self.0.used()).finish()
    }
}

impl SessionMemory {
    /// A session under no pool (clients, tests): only its own limit applies.
    pub fn standalone(limit: usize) -> SessionMemory {
        SessionMemory(Arc::new(Leaf {
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            limit,
            guaranteed: limit,
            parent: None,
            state: Mutex::new(LeafState::default()),
            signal: Notify::new(),
            events: Arc::new(BudgetEvents::default()),
        }))
    }

    /// Bytes this session holds.
    pub fn used(&self) -> usize {
        self.0.used()
    }

    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Whether the session may read now, and if not, where it is blocked.
    fn blocked(&self) -> Option<Blocked> {
        self.blocked_at(self.0.used())
    }

    fn blocked_at(&self, used: usize) -> Option<Blocked> {
        if used < self.0.guaranteed {
            return None;
        }
        if used >= self.0.limit {
            return Some(Blocked::Session);
        }
        let parent = self.0.parent.as_ref()?;
        parent.ancestors().find(|pool| pool.used.load(Ordering::Acquire) >= pool.limit).cloned().map(Blocked::Pool)
    }

    /// Where `stream` stands, under one lock of the session: ended, free to read (`Ok(None)`; at the session's own
    /// limit that means taking or holding the overdraft, which only a stream holding part of a packet may take), or
    /// blocked.
    fn check(&self, stream: u64, holding: bool) -> Result<Option<Blocked>, Evicted> {
        let Ok(mut state) = self.0.state.lock() else { return Ok(None) };
        if let Some(limit) = state.evicted_by {
            return Err(Evicted { limit });
        }
        Ok(match self.blocked_at(state.used) {
            Some(Blocked::Session) => match state.overdraft {
                Some(holder) if holder == stream => None,
                None if holding => {
                    state.overdraft = Some(stream);
                    None
                }
                _ => Some(Blocked::Session),
            },
            blocked => blocked,
        })
    }

    /// An id for a stream of this session, for the overdraft.
    pub fn stream_id() -> u64 {
        NEXT_STREAM.fetch_add(1, Ordering::Relaxed)
    }

    /// Gives the overdraft back once `stream` holds nothing undispatched.
    pub fn end_overdraft(&self, stream: u64) {
        let released = match self.0.state.lock() {
            Ok(mut state) if state.overdraft == Some(stream) => {
                state.overdraft = None;
                true
            }
            _ => false,
        };
        if released {
            // Another stream may now take it.
            self.0.signal.notify_waiters();
        }
    }

    /// Counts `n` bytes the session now holds.
    pub fn add(&self, n: usize) {
        if n == 0 {
            return;
        }
        let Ok(mut state) = self.0.state.lock() else { return };
        let before = self.0.excess(state.used);
        state.used += n;
        let extra = self.0.excess(state.used) - before;
        if extra > 0 {
            if let Some(parent) = &self.0.parent {
                for pool in parent.ancestors() {
                    pool.used.fetch_add(extra, Ordering::AcqRel);
                    if before == 0 {
                        // Now drawing from the pool: one of the sessions it may end.
                        if let Ok(mut sessions) = pool.sessions.lock() {
                            sessions.insert(self.0.id, Arc::downgrade(&self.0));
                        }
                    }
                }
            }
        }
    }

    /// Gives back `n` of the bytes counted with [`SessionMemory::add`].
    pub fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let Ok(mut state) = self.0.state.lock() else { return };
        let n = n.min(state.used);
        let before = state.used;
        state.used -= n;
        let freed = self.0.excess(before) - self.0.excess(state.used);
        let left_pool = freed > 0 && self.0.excess(state.used) == 0;
        if freed > 0 {
            if let Some(parent) = &self.0.parent {
                for pool in parent.ancestors() {
                    pool.release(freed);
                    if left_pool {
                        if let Ok(mut sessions) = pool.sessions.lock() {
                            sessions.remove(&self.0.id);
                        }
                    }
                }
            }
        }
        drop(state);
        if before >= self.0.limit && before - n < self.0.limit {
            self.0.signal.notify_waiters();
        }
    }

    /// Whether `stream` may read now, without waiting: the check a read makes first, so that the waiting (and its
    /// timers) costs nothing until a limit is reached.
    pub fn may_read(&self, stream: u64, holding: bool) -> bool {
        matches!(self.check(stream, holding), Ok(None))
    }

    /// Resolves once `stream` may read, or with the limit that ended the session. `holding` says whether the stream
    /// holds part of a packet (it may then take the session's overdraft). `waiting_since` is when the stream started
    /// waiting, kept by the caller so that the wait survives the cancellation of this future (it runs inside
    /// `select!`s): after `patience` of waiting, the largest session under the exhausted limit is ended.
    pub async fn room(
        &self,
        stream: u64,
        holding: bool,
        waiting_since: &mut Option<Instant>,
        patience: Duration,
    ) -> Result<(), Evicted> {
        loop {
            let Some(blocked) = self.check(stream, holding)? else {
                *waiting_since = None;
                return Ok(());
            };
            let since = *waiting_since.get_or_insert_with(|| {
                self.0.events.waits.fetch_add(1, Ordering::Relaxed);
                Instant::now()
            });
            let (notify, name) = match &blocked {
                Blocked::Session => (&self.0.signal, SESSION_LIMIT),
                Blocked::Pool(pool) => (&pool.room, pool.name),
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering, so a release between the check and the wait is not missed.
            if !matches!(
                (self.blocked(), &blocked),
                (Some(Blocked::Session), Blocked::Session) | (Some(Blocked::Pool(_)), Blocked::Pool(_))
            ) {
                continue;
            }
            let deadline = since + patience;
            tokio::select! {
                _ = &mut notified => {}
                _ = self.evicted() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    match &blocked {
                        Blocked::Session => self.0.evict(name),
                        Blocked::Pool(pool) => evict_largest(pool, name),
                    }
                    // Give the ended session's bytes a further `patience` to come back before ending another.
                    *waiting_since = Some(Instant::now());
                }
            }
        }
    }

    /// Counts `n` bytes until the returned guard is dropped: for data handed on but not yet taken.
    pub fn charge(&self, n: usize) -> MemoryCharge {
        self.add(n);
        MemoryCharge { memory: self.clone(), n }
    }

    /// Resolves when a limit has ended this session.
    pub async fn evicted(&self) -> Evicted {
        loop {
            let ended = self.0.signal.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(limit) = self.evicted_by() {
                return Evicted { limit };
            }
            ended.await;
        }
    }

    /// The limit that ended this session, if one has.
    pub fn evicted_by(&self) -> Option<&'static str> {
        self.0.state.lock().ok().and_then(|state| state.evicted_by)
    }
}

/// Bytes counted against a session until this is dropped.
#[derive(Debug)]
pub struct MemoryCharge {
    memory: SessionMemory,
    n: usize,
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.memory.release(self.n);
    }
}

fn evict_largest(pool: &Pool, limit: &'static str) {
    // Copied out first: a session takes its own lock before the pool's when it joins or leaves.
    let holders: Vec<Weak<Leaf>> = pool.sessions.lock().map(|s| s.values().cloned().collect()).unwrap_or_default();
    let holders: Vec<Arc<Leaf>> = holders.iter().filter_map(Weak::upgrade).collect();
    // One at a time: while an ended session still holds bytes its tasks are giving them back, and every other
    // stream whose wait runs out meanwhile would otherwise end whoever is largest by then, a bystander included.
    if holders.iter().any(|leaf| leaf.state.lock().is_ok_and(|state| state.evicted_by.is_some())) {
        return;
    }
    let largest = holders.iter().max_by_key(|leaf| leaf.used());
    if let Some(leaf) = largest {
        tracing::warn!(limit, held = leaf.used(), "memory budget exhausted; ending the session that holds the most");
        leaf.evict(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_past_the_guaranteed_part_count_against_every_pool_above() {
        let server = MemoryBudget::root("server", 100);
        let agent = server.child("agent", 50);
        let session = agent.session(40, 10);
        session.add(8);
        assert_eq!((server.used(), agent.used()), (0, 0), "within the guaranteed part");
        session.add(12);
        assert_eq!((server.used(), agent.used(), session.used()), (10, 10, 20));
        session.release(15);
        assert_eq!((server.used(), agent.used(), session.used()), (0, 0, 5));
        session.release(100);
        assert_eq!(session.used(), 0, "over-release is clamped");
    }

    #[test]
    fn each_level_blocks_reads_at_its_limit() {
        let server = MemoryBudget::root("server", 30);
        let agent = server.child("agent", 20);
        let a = agent.session(15, 5);
        let b = agent.session(30, 5);
        a.add(15);
        assert!(matches!(a.blocked(), Some(Blocked::Session)));
        assert!(b.blocked().is_none(), "b is within its guaranteed part");
        b.add(10);
        // a: 10 past guaranteed, b: 5; the agent pool (20) is not yet full.
        assert!(b.blocked().is_none());
        b.add(5);
        match b.blocked() {
            Some(Blocked::Pool(pool)) => assert_eq!(pool.name, "agent"),
            _ => panic!("b should be blocked by the agent pool"),
        }
        let other = server.session(100, 0);
        other.add(10);
        match other.blocked() {
            Some(Blocked::Pool(pool)) => assert_eq!(pool.name, "server"),
            _ => panic!("the server pool is full"),
        }
        let small = server.session(100, 4);
        assert!(small.blocked().is_none(), "a session under its guaranteed part always reads");
    }

    #[test]
    fn pools_know_the_sessions_that_draw_from_them() {
        let server = MemoryBudget::root("server", 30);
        let agent = server.child("agent", 20);
        let a = agent.session(15, 5);
        assert_eq!((server.holders(), agent.holders()), (0, 0), "an idle session costs the pools nothing");
        a.add(5);
        assert_eq!((server.holders(), agent.holders()), (0, 0), "within its guaranteed part");
        a.add(3);
        assert_eq!((server.holders(), agent.holders(), server.used()), (1, 1, 3));
        a.release(3);
        assert_eq!((server.holders(), agent.holders(), server.used()), (0, 0, 0));
        a.add(9);
        drop(a);
        assert_eq!((server.holders(), agent.holders(), server.used(), agent.used()), (0, 0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_wakes_a_waiter() {
        let session = SessionMemory::standalone(10);
        session.add(10);
        let waiter = {
            let session = session.clone();
            tokio::spawn(async move { session.room(1, false, &mut None, Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        session.release(1);
        assert_eq!(waiter.await.ok(), Some(Ok(())));
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_pool_ends_its_largest_session_after_the_wait() {
        let server = MemoryBudget::root("server", 10);
        let hog = server.session(100, 0);
        hog.add(10);
        let victim = server.session(100, 0);
        let started = Instant::now();
        let waited = {
            let victim = victim.clone();
            tokio::spawn(async move { victim.room(1, false, &mut None, Duration::from_secs(5)).await })
        };
        hog.evicted().await;
        assert_eq!(hog.evicted_by(), Some("server"));
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert_eq!(victim.evicted_by(), None);
        hog.release(10);
        assert_eq!(waited.await.ok(), Some(Ok(())));
        assert_eq!(server.events().evictions(), vec![("server", 1)]);
    }

    #[test]
    fn a_pool_ends_no_one_else_while_an_ended_session_still_holds_bytes() {
        let server = MemoryBudget::root("server", 10);
        let hog = server.session(100, 0);
        let victim = server.session(100, 0);
        hog.add(8);
        victim.add(4);
        evict_largest(&server.0, "server");
        assert_eq!((hog.evicted_by(), victim.evicted_by()), (Some("server"), None));
        // The hog's streams are still giving its bytes back; another wait running out must not end the victim.
        hog.release(6);
        evict_largest(&server.0, "server");
        assert_eq!(victim.evicted_by(), None);
        assert_eq!(server.events().evictions(), vec![("server", 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_stuck_at_its_own_limit_ends_itself() {
        let session = SessionMemory::standalone(10);
        session.add(10);
        let mut since = None;
        let result = session.room(1, false, &mut since, Duration::from_secs(5)).await;
        assert_eq!(result, Err(Evicted { limit: SESSION_LIMIT }));
    }

    #[tokio::test(start_paused = true)]
    async fn one_stream_holding_part_of_a_packet_may_read_past_the_session_limit() {
        let session = SessionMemory::standalone(10);
        session.add(10);
        let mut since = None;
        let patience = Duration::from_secs(5);
        assert_eq!(session.room(1, true, &mut since, patience).await, Ok(()), "the first holder takes the overdraft");
        assert_eq!(session.room(1, true, &mut since, patience).await, Ok(()), "and keeps it");
        let other = {
            let session = session.clone();
            tokio::spawn(async move { session.room(2, true, &mut None, Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        assert!(!other.is_finished(), "a second stream shares the overdraft");
        session.end_overdraft(1);
        assert_eq!(other.await.ok(), Some(Ok(())), "the overdraft passes on when its holder is done");
        assert_eq!(session.evicted_by(), None);
    }
}
