//! The tailnet coordinator: who is connected, which tunnels exist, and which node updates each peer must see.
//!
//! Semantics are coderd's in-memory `core` (tailnet/coordinator.go), because stock agents and clients are written
//! against it:
//! * a peer is identified by a UUID: the agent id for an agent (a reconnecting agent takes its place back, and the
//!   tunnels clients opened to it survive the gap), a fresh UUID per client connection;
//! * tunnels are directed, client → agent; both ends of a tunnel receive each other's node (`NODE`), and only
//!   tunnels whose *source* is a peer die with that peer, so a client's tunnel waits for an agent that is not
//!   connected yet or is reconnecting;
//! * each peer remembers what it was sent: no `NODE` twice for an unchanged node, no `DISCONNECTED`/`LOST` about
//!   a peer it never heard of;
//! * a peer that says `disconnect` leaves as `DISCONNECTED` ("graceful disconnect"); one whose stream ends any
//!   other way (closed without it, cancelled, its session dead after the yamux keepalive deadline) leaves as
//!   `LOST` ("lost"), so the other side can tell a peer that left from one that may come back;
//! * a peer whose response queue is full is removed (`DISCONNECTED`, "failed update"), as coderd does: a peer that
//!   does not read must not make the coordinator buffer without bound.
//!
//! State is one map under one short synchronous lock; every operation is in-memory and never awaits while
//! holding it (deliveries are `try_send` into each peer's bounded queue), so a peer's handler can run it from
//! `Drop` when the call is cancelled.
//!
//! Replicas: every change a local peer makes is also published on [`COORDINATOR_CHANNEL`] (see
//! [`super::remote`]), and every replica applies the changes of the others to the same state, delivering only to
//! its own peers. Each replica therefore holds the whole picture (peers it has heard of, all tunnels), which is
//! what lets a client on replica B see an agent on replica A. A replica announces itself with heartbeats; when it
//! first hears of another replica it re-publishes its own peers so late joiners catch up, and when a replica falls
//! silent for [`super::DEFAULT_REPLICA_TIMEOUT`] its peers are marked `LOST` everywhere.
//!
//! Over 600 lines on purpose: peers, tunnels and replicas are one state under one lock, and its rules (who sees
//! which node, when a peer is lost) only read as a whole.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use agentwire_store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::replica_wire::{self, Event};
use super::{TailnetConfig, TailnetStats};
use crate::proto::tailnet::v2 as pb;

use pb::coordinate_response::peer_update::Kind;
use pb::coordinate_response::PeerUpdate;

/// coderd's `CloseErrOverwritten`.
pub const CLOSE_ERR_OVERWRITTEN: &str = "peer ID overwritten by new connection";
/// coderd's `ReadyForHandshakeError` prefix.
pub const READY_FOR_HANDSHAKE_ERROR: &str = "ready for handshake error";

/// coderd's Tailscale service prefix (`fd7a:115c:a1e0::/48`) and Coder service prefix (`fd60:627a:a42b::/48`):
/// an agent's address is one of them followed by the last ten bytes of its id.
pub const TAILSCALE_SERVICE_PREFIX: [u8; 6] = [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0];
pub const CODER_SERVICE_PREFIX: [u8; 6] = [0xfd, 0x60, 0x62, 0x7a, 0xa4, 0x2b];
/// coderd's `legacyWorkspaceAgentIP`, still accepted from agents.
pub const LEGACY_AGENT_IP: [u8; 16] =
    [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0x49, 0xd6, 0xb2, 0x59, 0xb7, 0xac, 0xb1, 0xb2, 0x48, 0xf4];

/// What a peer is, which decides what it may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An agent: may not open tunnels; its addresses must be its own.
    Agent,
    /// A client coordinating with one agent: may open tunnels to that agent only.
    Client { agent_id: Uuid },
}

/// Why a peer's stream was ended by the coordinator. The text is what the peer gets as the dRPC error.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CoordinateError {
    #[error("this coordinator holds its maximum of {0} peers (max peers)")]
    TooManyPeers(usize),
    #[error("node is {size} bytes, over the limit of {limit} (max node size)")]
    NodeTooLarge { size: usize, limit: usize },
    #[error("peer already has {0} tunnels, the most allowed (max tunnels per peer)")]
    TooManyTunnels(usize),
    #[error("agents cannot open tunnels")]
    AgentTunnel,
    #[error("invalid agent id, expected {expected}, got {got}")]
    WrongAgent { expected: Uuid, got: Uuid },
    #[error("clients may not send ready_for_handshake")]
    ClientReady,
    #[error("unable to convert bytes to UUID: {0} bytes")]
    BadId(usize),
    #[error("parse node address: {0:?}")]
    BadAddress(String),
    #[error("invalid address bits, expected 128, got {0}")]
    AddressBits(u8),
    #[error("invalid node address, got {0}")]
    ForeignAddress(String),
    #[error("update_self without a node")]
    MissingNode,
    #[error("{0}")]
    Closed(String),
}

/// Gauges and counters of one coordinator, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct CoordinatorStats {
    pub updates_delivered: AtomicU64,
    pub peers_kicked: AtomicU64,
    pub rule_breaches: AtomicU64,
    pub published: AtomicU64,
    pub publish_dropped: AtomicU64,
    pub remote_events: AtomicU64,
}

/// What a local peer's stream is told when the coordinator ends it.
type CloseSlot = Arc<Mutex<Option<String>>>;

struct LocalPeer {
    generation: u64,
    tx: mpsc::Sender<pb::CoordinateResponse>,
    /// The last node sent about each peer (coderd's `peer.sent`), bounded by this peer's tunnel peers.
    sent: HashMap<Uuid, Arc<pb::Node>>,
    close: CloseSlot,
}

enum Home {
    Local(LocalPeer),
    Remote { replica: Uuid },
}

struct Peer {
    node: Option<Arc<pb::Node>>,
    home: Home,
}

#[derive(Default)]
struct State {
    peers: HashMap<Uuid, Peer>,
    by_src: HashMap<Uuid, HashSet<Uuid>>,
    by_dst: HashMap<Uuid, HashSet<Uuid>>,
    replicas: HashMap<Uuid, Instant>,
    /// Replicas whose hello we have answered with our peers.
    greeted: HashSet<Uuid>,
    local: usize,
    /// Local peers whose queue was full during the current `apply`.
    overflow: Vec<Uuid>,
    /// Why new local peers are turned away, while they are ([`Coordinator::refuse`]).
    refusing: Option<String>,
}

impl State {
    fn tunnel_peers(&self, id: Uuid) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = self.by_src.get(&id).into_iter().flatten().copied().collect();
        for src in self.by_dst.get(&id).into_iter().flatten() {
            if !out.contains(src) {
                out.push(*src);
            }
        }
        out
    }

    fn tunnel_exists(&self, a: Uuid, b: Uuid) -> bool {
        self.by_src.get(&a).is_some_and(|d| d.contains(&b)) || self.by_dst.get(&a).is_some_and(|s| s.contains(&b))
    }

    fn add_tunnel(&mut self, src: Uuid, dst: Uuid) {
        self.by_src.entry(src).or_default().insert(dst);
        self.by_dst.entry(dst).or_default().insert(src);
    }

    fn remove_tunnel(&mut self, src: Uuid, dst: Uuid) {
        if let Some(d) = self.by_src.get_mut(&src) {
            d.remove(&dst);
            if d.is_empty() {
                self.by_src.remove(&src);
            }
        }
        if let Some(s) = self.by_dst.get_mut(&dst) {
            s.remove(&src);
            if s.is_empty() {
                self.by_dst.remove(&dst);
            }
        }
    }

    fn node(&self, id: Uuid) -> Option<Arc<pb::Node>> {
        self.peers.get(&id).and_then(|p| p.node.clone())
    }

    /// Sends `recipient` (if it is ours) the news about `about`, as coderd's `storeMappingLocked` filters it.
    /// A full queue marks the recipient for removal.
    fn deliver(
        &mut self,
        stats: &CoordinatorStats,
        recipient: Uuid,
        about: Uuid,
        node: Option<Arc<pb::Node>>,
        kind: Kind,
        reason: &str,
    ) {
        let Some(Peer { home: Home::Local(local), .. }) = self.peers.get_mut(&recipient) else { return };
        match (local.sent.get(&about), kind) {
            (None, Kind::Lost | Kind::Disconnected) => return,
            (Some(_), Kind::Lost | Kind::Disconnected) => {
                local.sent.remove(&about);
            }
            (Some(old), Kind::Node) if node.as_deref() == Some(old.as_ref()) => return,
            (_, Kind::Node) => {
                if let Some(n) = &node {
                    local.sent.insert(about, n.clone());
                }
            }
            _ => {}
        }
        let update = PeerUpdate {
            id: about.as_bytes().to_vec().into(),
            node: node.map(|n| (*n).clone()),
            kind: kind as i32,
            reason: reason.to_owned(),
        };
        let response = pb::CoordinateResponse { peer_updates: vec![update], error: String::new() };
        if Self::push(stats, local, response) {
            self.overflow.push(recipient);
        }
    }

    /// Queues `response`; true when the queue is full.
    fn push(stats: &CoordinatorStats, local: &LocalPeer, response: pb::CoordinateResponse) -> bool {
        match local.tx.try_send(response) {
            Ok(()) => {
                stats.updates_delivered.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Full(_)) => true,
            // The handler is gone and its guard will remove the peer.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Applies one event; `origin` is the replica it came from (`None`: one of ours). Returns the local peers that
    /// must be removed because their queue overflowed.
    fn apply(&mut self, stats: &CoordinatorStats, event: &Event, origin: Option<Uuid>) -> Vec<Uuid> {
        let is_local = |s: &State, id: Uuid| matches!(s.peers.get(&id), Some(Peer { home: Home::Local(_), .. }));
        match event {
            Event::Node { peer, node } => {
                match origin {
                    // The same id connected here too (an agent reconnecting through another replica): ours wins.
                    Some(_) if is_local(self, *peer) => return Vec::new(),
                    Some(replica) => {
                        self.peers.entry(*peer).or_insert(Peer { node: None, home: Home::Remote { replica } }).node =
                            Some(node.clone());
                    }
                    None => match self.peers.get_mut(peer) {
                        Some(p) => p.node = Some(node.clone()),
                        None => return Vec::new(),
                    },
                }
                for other in self.tunnel_peers(*peer) {
                    self.deliver(stats, other, *peer, Some(node.clone()), Kind::Node, "node update");
                }
            }
            Event::AddTunnel { src, dst } => {
                if let Some(replica) = origin {
                    if is_local(self, *src) {
                        return Vec::new();
                    }
                    self.peers.entry(*src).or_insert(Peer { node: None, home: Home::Remote { replica } });
                }
                self.add_tunnel(*src, *dst);
                if let Some(node) = self.node(*dst) {
                    self.deliver(stats, *src, *dst, Some(node), Kind::Node, "add tunnel");
                }
                if let Some(node) = self.node(*src) {
                    self.deliver(stats, *dst, *src, Some(node), Kind::Node, "add tunnel");
                }
            }
            Event::RemoveTunnel { src, dst } => {
                if origin.is_some() && is_local(self, *src) {
                    return Vec::new();
                }
                self.deliver(stats, *src, *dst, None, Kind::Disconnected, "remove tunnel");
                self.deliver(stats, *dst, *src, None, Kind::Disconnected, "remove tunnel");
                self.remove_tunnel(*src, *dst);
            }
            Event::Ready { src, dst } => {
                if let Some(Peer { home: Home::Local(local), .. }) = self.peers.get(dst) {
                    let update = PeerUpdate {
                        id: src.as_bytes().to_vec().into(),
                        node: None,
                        kind: Kind::ReadyForHandshake as i32,
                        reason: String::new(),
                    };
                    let response = pb::CoordinateResponse { peer_updates: vec![update], error: String::new() };
                    if Self::push(stats, local, response) {
                        self.overflow.push(*dst);
                    }
                }
            }
            Event::Gone { peer, lost } => {
                if origin.is_some() && is_local(self, *peer) {
                    return Vec::new();
                }
                let (kind, reason) =
                    if *lost { (Kind::Lost, "lost") } else { (Kind::Disconnected, "graceful disconnect") };
                for other in self.tunnel_peers(*peer) {
                    self.deliver(stats, other, *peer, None, kind, reason);
                }
                self.forget(*peer);
            }
        }
        std::mem::take(&mut self.overflow)
    }

    /// Drops a peer and the tunnels it is the source of (not those to it: a client waits for its agent).
    fn forget(&mut self, id: Uuid) {
        for dst in self.by_src.get(&id).cloned().unwrap_or_default() {
            self.remove_tunnel(id, dst);
        }
        if let Some(Peer { home: Home::Local(_), .. }) = self.peers.remove(&id) {
            self.local -= 1;
        }
        for sent in self.peers.values_mut().filter_map(|p| match &mut p.home {
            Home::Local(l) => Some(&mut l.sent),
            Home::Remote { .. } => None,
        }) {
            sent.remove(&id);
        }
    }
}

pub(crate) struct Shared {
    config: TailnetConfig,
    /// The pubsub side starts with the first peer: a replica without peers costs the database nothing.
    start: std::sync::OnceLock<()>,
    /// What starts it: the replica link's publisher and receiver (`remote::start`).
    start_link: StartLink,
    store: Store,
    stop: CancellationToken,
    outbox: Mutex<Option<mpsc::Receiver<String>>>,
    /// The replica link's publisher, once started: shutdown waits for it to send the last events.
    publisher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    replica: Uuid,
    state: Mutex<State>,
    generation: AtomicU64,
    publish: mpsc::Sender<String>,
    stats: Arc<TailnetStats>,
}

/// Starts the tasks that carry events between replicas: given the coordinator, the store whose pubsub carries them,
/// the queue of payloads to publish, and when to stop. Returns the publisher's task, if it runs one.
pub type StartLink =
    fn(Coordinator, Store, mpsc::Receiver<String>, CancellationToken) -> Option<tokio::task::JoinHandle<()>>;

/// A [`StartLink`] for a coordinator that has no other replicas: no pubsub traffic is ever started.
pub fn no_replica_link(
    _: Coordinator,
    _: Store,
    _: mpsc::Receiver<String>,
    _: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    None
}

/// The coordinator of one server process. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator(Arc<Shared>);

impl Coordinator {
    /// A coordinator publishing to and applying from `store`'s pubsub; its background tasks stop with `stop`.
    /// Must be called inside a Tokio runtime. `start_link` runs once, with the first peer.
    pub fn new(
        store: Store,
        replica: Uuid,
        config: TailnetConfig,
        stats: Arc<TailnetStats>,
        stop: CancellationToken,
        start_link: StartLink,
    ) -> Self {
        let mut config = config;
        if config.max_node_size > replica_wire::MAX_NODE_SIZE_FOR_PUBSUB {
            tracing::warn!(
                configured = config.max_node_size,
                used = replica_wire::MAX_NODE_SIZE_FOR_PUBSUB,
                "the max node size must keep a node's pubsub message under PostgreSQL's NOTIFY limit; lowering it"
            );
            config.max_node_size = replica_wire::MAX_NODE_SIZE_FOR_PUBSUB;
        }
        let (publish, outbox) = mpsc::channel(config.publish_queue.max(1));
        let shared = Arc::new(Shared {
            config,
            start: std::sync::OnceLock::new(),
            start_link,
            store,
            stop,
            outbox: Mutex::new(Some(outbox)),
            publisher: Mutex::new(None),
            replica,
            state: Mutex::new(State::default()),
            generation: AtomicU64::new(0),
            publish,
            stats,
        });
        Coordinator(shared)
    }

    /// Starts the replica traffic once (subscription, publisher, heartbeats).
    fn ensure_started(&self) {
        self.0.start.get_or_init(|| {
            let outbox = self.0.outbox.lock().ok().and_then(|mut o| o.take());
            if let Some(outbox) = outbox {
                let publisher = (self.0.start_link)(self.clone(), self.0.store.clone(), outbox, self.0.stop.clone());
                if let Ok(mut slot) = self.0.publisher.lock() {
                    *slot = publisher;
                }
            }
        });
    }

    /// Once `stop` has fired: waits, at most `limit`, for the publisher to send what was queued (the peers lost at
    /// shutdown among it), so the store is not closed under it.
    pub async fn publisher_finished(&self, limit: std::time::Duration) {
        let publisher = self.0.publisher.lock().ok().and_then(|mut slot| slot.take());
        if let Some(publisher) = publisher {
            if tokio::time::timeout(limit, publisher).await.is_err() {
                tracing::warn!(?limit, "the coordinator's last events were not all published in time");
            }
        }
    }

    pub fn replica(&self) -> Uuid {
        self.0.replica
    }

    pub fn config(&self) -> &TailnetConfig {
        &self.0.config
    }

    pub(crate) fn stats(&self) -> &CoordinatorStats {
        &self.0.stats.coordinator
    }

    /// Local peers connected now, and peers of other replicas known here.
    pub fn peer_counts(&self) -> (usize, usize) {
        self.0.state.lock().map(|s| (s.local, s.peers.len() - s.local)).unwrap_or((0, 0))
    }

    /// Tunnels known (all replicas).
    pub fn tunnel_count(&self) -> usize {
        self.0.state.lock().map(|s| s.by_src.values().map(HashSet::len).sum()).unwrap_or(0)
    }

    /// Adds a local peer. An existing local peer with the same id is closed with coderd's "overwritten" error and
    /// replaced; the tunnels survive. The new peer is sent the nodes of the peers it already shares tunnels with.
    pub fn register(
        &self,
        id: Uuid,
        role: Role,
    ) -> Result<(PeerHandle, mpsc::Receiver<pb::CoordinateResponse>), CoordinateError> {
        self.ensure_started();
        let (tx, rx) = mpsc::channel(self.0.config.peer_queue.max(1));
        let generation = self.0.generation.fetch_add(1, Ordering::Relaxed);
        let close: CloseSlot = Arc::default();
        let mut state = self.lock()?;
        if let Some(reason) = &state.refusing {
            return Err(CoordinateError::Closed(reason.clone()));
        }
        let replacing = match state.peers.get(&id) {
            Some(Peer { home: Home::Local(old), .. }) => {
                set_close(&old.close, CLOSE_ERR_OVERWRITTEN);
                true
            }
            _ => false,
        };
        if !replacing && state.local >= self.0.config.max_peers {
            self.stats().rule_breaches.fetch_add(1, Ordering::Relaxed);
            return Err(CoordinateError::TooManyPeers(self.0.config.max_peers));
        }
        if !replacing {
            state.local += 1;
        }
        let mut local = LocalPeer { generation, tx, sent: HashMap::new(), close: close.clone() };
        let mut init = Vec::new();
        for other in state.tunnel_peers(id) {
            if let Some(node) = state.node(other) {
                local.sent.insert(other, node.clone());
                init.push(PeerUpdate {
                    id: other.as_bytes().to_vec().into(),
                    node: Some((*node).clone()),
                    kind: Kind::Node as i32,
                    reason: "init".to_owned(),
                });
            }
        }
        if !init.is_empty() {
            // The queue is new and empty; an init batch is one message.
            let _ = local.tx.try_send(pb::CoordinateResponse { peer_updates: init, error: String::new() });
        }
        state.peers.insert(id, Peer { node: None, home: Home::Local(local) });
        drop(state);
        Ok((PeerHandle { coordinator: self.clone(), id, role, generation, close, done: false }, rx))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, CoordinateError> {
        self.0.state.lock().map_err(|_| CoordinateError::Closed("coordinator state poisoned".to_owned()))
    }

    /// Applies a local peer's event, removes peers that overflowed, and publishes what happened.
    fn local_event(&self, event: Event) {
        let mut publish = vec![event.clone()];
        if let Ok(mut state) = self.0.state.lock() {
            let mut overflow = state.apply(&self.0.stats.coordinator, &event, None);
            while let Some(id) = overflow.pop() {
                if let Some(Peer { home: Home::Local(local), .. }) = state.peers.get(&id) {
                    set_close(&local.close, "failed to update tunnel peer mapping");
                    self.stats().peers_kicked.fetch_add(1, Ordering::Relaxed);
                    let gone = Event::Gone { peer: id, lost: false };
                    overflow.extend(state.apply(&self.0.stats.coordinator, &gone, None));
                    publish.push(gone);
                }
            }
        }
        for event in publish {
            self.publish(&event);
        }
    }

    pub(crate) fn publish(&self, event: &Event) {
        if let Some(payload) = replica_wire::encode(self.0.replica, event) {
            self.publish_raw(payload);
        }
    }

    /// Queues a payload for the publisher; a full queue drops it (counted) rather than block a peer.
    pub(crate) fn publish_raw(&self, payload: String) {
        match self.0.publish.try_send(payload) {
            Ok(()) => {
                self.stats().published.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats().publish_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Applies another replica's event (`None`: its hello). Returns whether this is the first hello of that replica
    /// (the caller then publishes our peers so it learns about them).
    ///
    /// A replica is greeted on its hello, not on its first event: it says hello only once it listens, while its
    /// publisher may send its own peers' events before that. Greeting on such an event sent our peers to a replica
    /// not yet listening, and its hello, arriving later, found it already known: it never learned of our peers.
    pub(crate) fn remote_event(&self, replica: Uuid, event: Option<&Event>) -> bool {
        self.stats().remote_events.fetch_add(1, Ordering::Relaxed);
        let Ok(mut state) = self.0.state.lock() else { return false };
        state.replicas.insert(replica, Instant::now());
        let Some(event) = event else { return state.greeted.insert(replica) };
        let mut overflow = state.apply(&self.0.stats.coordinator, event, Some(replica));
        let mut publish = Vec::new();
        while let Some(id) = overflow.pop() {
            if let Some(Peer { home: Home::Local(local), .. }) = state.peers.get(&id) {
                set_close(&local.close, "failed to update tunnel peer mapping");
                let gone = Event::Gone { peer: id, lost: false };
                overflow.extend(state.apply(&self.0.stats.coordinator, &gone, None));
                publish.push(gone);
            }
        }
        drop(state);
        for event in publish {
            self.publish(&event);
        }
        false
    }

    /// Marks every peer of replicas silent since `deadline` lost, and forgets those replicas.
    pub(crate) fn expire_replicas(&self, deadline: Instant) {
        let Ok(mut state) = self.0.state.lock() else { return };
        let dead: Vec<Uuid> = state.replicas.iter().filter(|(_, seen)| **seen < deadline).map(|(r, _)| *r).collect();
        for replica in dead {
            tracing::warn!(%replica, "a coordinator replica fell silent; its peers are lost");
            state.replicas.remove(&replica);
            state.greeted.remove(&replica);
            let peers: Vec<Uuid> = state
                .peers
                .iter()
                .filter(|(_, p)| matches!(p.home, Home::Remote { replica: r } if r == replica))
                .map(|(id, _)| *id)
                .collect();
            for peer in peers {
                let _ = state.apply(&self.0.stats.coordinator, &Event::Gone { peer, lost: true }, Some(replica));
            }
        }
    }

    /// Ends every local peer's stream with `reason` (a response carrying it, then the stream's error) and turns new
    /// ones away with it until [`Coordinator::accept`]; the ended peers are lost to the others, as a stream that ends
    /// without a disconnect. PGCoordinator does this when it is unhealthy, so that its peers reconnect elsewhere.
    pub(crate) fn refuse(&self, reason: &str) {
        let mut publish = Vec::new();
        if let Ok(mut state) = self.0.state.lock() {
            state.refusing = Some(reason.to_owned());
            let ended: Vec<(Uuid, mpsc::Sender<pb::CoordinateResponse>)> = state
                .peers
                .iter()
                .filter_map(|(id, p)| match &p.home {
                    Home::Local(local) => {
                        set_close(&local.close, reason);
                        Some((*id, local.tx.clone()))
                    }
                    Home::Remote { .. } => None,
                })
                .collect();
            for (peer, _) in &ended {
                let gone = Event::Gone { peer: *peer, lost: true };
                // A peer whose queue overflows here is one of those being ended anyway.
                let _ = state.apply(&self.0.stats.coordinator, &gone, None);
                publish.push(gone);
            }
            // After the LOSTs of each other, if they shared tunnels; the streams end once these senders go.
            for (_, tx) in ended {
                let _ = tx.try_send(pb::CoordinateResponse { peer_updates: Vec::new(), error: reason.to_owned() });
            }
        }
        for event in publish {
            self.publish(&event);
        }
    }

    /// Takes new local peers again after [`Coordinator::refuse`].
    pub(crate) fn accept(&self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.refusing = None;
        }
    }

    /// Our peers' nodes and tunnels, for a replica that just appeared.
    pub(crate) fn snapshot(&self) -> Vec<Event> {
        let Ok(state) = self.0.state.lock() else { return Vec::new() };
        let mut out = Vec::new();
        for (id, peer) in &state.peers {
            if let Home::Local(_) = peer.home {
                if let Some(node) = &peer.node {
                    out.push(Event::Node { peer: *id, node: node.clone() });
                }
                for dst in state.by_src.get(id).into_iter().flatten() {
                    out.push(Event::AddTunnel { src: *id, dst: *dst });
                }
            }
        }
        out
    }
}

fn set_close(slot: &CloseSlot, reason: &str) {
    if let Ok(mut slot) = slot.lock() {
        if slot.is_none() {
            *slot = Some(reason.to_owned());
        }
    }
}

/// A local peer's place in the coordinator. Dropping it without [`PeerHandle::disconnect`] marks the peer
/// `LOST`, so a handler that is cancelled (its session gone) still leaves the right trace.
pub struct PeerHandle {
    coordinator: Coordinator,
    id: Uuid,
    role: Role,
    generation: u64,
    close: CloseSlot,
    done: bool,
}

impl PeerHandle {
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Why the coordinator ended this peer, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.close.lock().ok().and_then(|s| s.clone())
    }

    fn current(&self) -> bool {
        self.coordinator.0.state.lock().is_ok_and(
            |s| matches!(s.peers.get(&self.id), Some(Peer { home: Home::Local(l), .. }) if l.generation == self.generation),
        )
    }

    /// Checks a request against the rules (coderd's `AgentCoordinateeAuth`/`ClientCoordinateeAuth` plus our size
    /// limits) before anything of it is applied.
    fn authorize(&self, request: &pb::CoordinateRequest) -> Result<(), CoordinateError> {
        let config = &self.coordinator.0.config;
        if let Some(tunnel) = &request.add_tunnel {
            let dst = parse_id(&tunnel.id)?;
            match self.role {
                Role::Agent => return Err(CoordinateError::AgentTunnel),
                Role::Client { agent_id } if agent_id != dst => {
                    return Err(CoordinateError::WrongAgent { expected: agent_id, got: dst })
                }
                Role::Client { .. } => {}
            }
        }
        if let Some(update) = &request.update_self {
            let node = update.node.as_ref().ok_or(CoordinateError::MissingNode)?;
            let size = prost::Message::encoded_len(node);
            if size > config.max_node_size {
                return Err(CoordinateError::NodeTooLarge { size, limit: config.max_node_size });
            }
            for address in &node.addresses {
                check_address(self.role, self.id, address)?;
            }
        }
        if !request.ready_for_handshake.is_empty() {
            if let Role::Client { .. } = self.role {
                return Err(CoordinateError::ClientReady);
            }
        }
        if let Some(tunnel) = &request.remove_tunnel {
            parse_id(&tunnel.id)?;
        }
        for ready in &request.ready_for_handshake {
            parse_id(&ready.id)?;
        }
        Ok(())
    }

    /// Handles one request in coderd's order: node, add tunnel, remove tunnel, disconnect, ready for handshake.
    /// Returns `Ok(true)` once the peer has disconnected. A broken rule is an error naming it.
    pub fn handle(&mut self, request: pb::CoordinateRequest) -> Result<bool, CoordinateError> {
        let stats = self.coordinator.stats();
        if let Err(err) = self.authorize(&request) {
            stats.rule_breaches.fetch_add(1, Ordering::Relaxed);
            return Err(err);
        }
        if !self.current() {
            return Err(CoordinateError::Closed(self.close_reason().unwrap_or_else(|| "peer removed".to_owned())));
        }
        if let Some(node) = request.update_self.and_then(|u| u.node) {
            self.coordinator.local_event(Event::Node { peer: self.id, node: Arc::new(node) });
        }
        if let Some(tunnel) = request.add_tunnel {
            let dst = parse_id(&tunnel.id)?;
            let max = self.coordinator.0.config.max_tunnels_per_peer;
            let full =
                self.coordinator.lock()?.by_src.get(&self.id).is_some_and(|d| !d.contains(&dst) && d.len() >= max);
            if full {
                stats.rule_breaches.fetch_add(1, Ordering::Relaxed);
                return Err(CoordinateError::TooManyTunnels(max));
            }
            self.coordinator.local_event(Event::AddTunnel { src: self.id, dst });
        }
        if let Some(tunnel) = request.remove_tunnel {
            let dst = parse_id(&tunnel.id)?;
            self.coordinator.local_event(Event::RemoveTunnel { src: self.id, dst });
        }
        if request.disconnect.is_some() {
            self.leave(false);
            return Ok(true);
        }
        for ready in request.ready_for_handshake {
            let dst = parse_id(&ready.id)?;
            let shared = self.coordinator.lock()?.tunnel_exists(self.id, dst);
            if shared {
                self.coordinator.local_event(Event::Ready { src: self.id, dst });
            } else if let Ok(state) = self.coordinator.0.state.lock() {
                // Not fatal, as in coderd: the other side may just have left.
                if let Some(Peer { home: Home::Local(local), .. }) = state.peers.get(&self.id) {
                    let error = format!("{READY_FOR_HANDSHAKE_ERROR}: you do not share a tunnel with \"{dst}\"");
                    let _ = local.tx.try_send(pb::CoordinateResponse { peer_updates: Vec::new(), error });
                }
            }
        }
        Ok(false)
    }

    /// Leaves: `DISCONNECTED` to the tunnel peers when `lost` is false, `LOST` otherwise. Only the current
    /// connection of this id leaves; an overwritten one just goes.
    pub fn leave(&mut self, lost: bool) {
        if self.done {
            return;
        }
        self.done = true;
        if self.current() {
            self.coordinator.local_event(Event::Gone { peer: self.id, lost });
        }
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        self.leave(true);
    }
}

fn parse_id(bytes: &[u8]) -> Result<Uuid, CoordinateError> {
    Uuid::from_slice(bytes).map_err(|_| CoordinateError::BadId(bytes.len()))
}

/// coderd's `ServicePrefix.AddrFromUUID`: the prefix, then the id's last ten bytes.
pub fn service_address(prefix_is_coder: bool, id: Uuid) -> std::net::Ipv6Addr {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(if prefix_is_coder { &CODER_SERVICE_PREFIX } else { &TAILSCALE_SERVICE_PREFIX });
    bytes[6..].copy_from_slice(&id.as_bytes()[6..]);
    std::net::Ipv6Addr::from(bytes)
}

fn check_address(role: Role, id: Uuid, address: &str) -> Result<(), CoordinateError> {
    let bad = || CoordinateError::BadAddress(address.to_owned());
    let (ip, bits) = address.split_once('/').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    if bits > if ip.is_ipv4() { 32 } else { 128 } {
        return Err(bad());
    }
    if bits != 128 {
        return Err(CoordinateError::AddressBits(bits));
    }
    if role == Role::Agent {
        let std::net::IpAddr::V6(v6) = ip else { return Err(CoordinateError::ForeignAddress(ip.to_string())) };
        if v6 != service_address(false, id) && v6 != service_address(true, id) && v6.octets() != LEGACY_AGENT_IP {
            return Err(CoordinateError::ForeignAddress(v6.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another replica gets our peers when its hello arrives, once, even if its peers' events came first.
    #[tokio::test]
    async fn a_replica_is_greeted_on_its_hello_not_on_its_first_event() {
        let store = Store::open("sqlite::memory:", agentwire_store::StoreOptions::default()).await.unwrap();
        let stats = Arc::new(TailnetStats::default());
        let stop = CancellationToken::new();
        let coordinator =
            Coordinator::new(store, Uuid::new_v4(), TailnetConfig::default(), stats, stop, no_replica_link);
        let other = Uuid::new_v4();
        let event = Event::Gone { peer: Uuid::new_v4(), lost: true };
        assert!(!coordinator.remote_event(other, Some(&event)), "an event before its hello greets no one");
        assert!(coordinator.remote_event(other, None), "its hello: it listens now, so it gets our peers");
        assert!(!coordinator.remote_event(other, None), "greeted once");
        assert!(!coordinator.remote_event(other, Some(&event)));
        // Once it fell silent and was forgotten, its next hello is greeted again.
        coordinator.expire_replicas(Instant::now() + std::time::Duration::from_secs(1));
        assert!(coordinator.remote_event(other, None));
    }

    /// Refusing ends every local peer's stream with the reason, last, and turns new peers away until accepted.
    #[tokio::test]
    async fn refusing_ends_every_local_peer_and_turns_new_ones_away_until_accepted() {
        let store = Store::open("sqlite::memory:", agentwire_store::StoreOptions::default()).await.unwrap();
        let stats = Arc::new(TailnetStats::default());
        let coordinator = Coordinator::new(
            store,
            Uuid::new_v4(),
            TailnetConfig::default(),
            stats,
            CancellationToken::new(),
            no_replica_link,
        );
        let (agent, client) = (Uuid::new_v4(), Uuid::new_v4());
        let (mut agent_handle, mut agent_rx) = coordinator.register(agent, Role::Agent).unwrap();
        let (_client_handle, mut client_rx) = coordinator.register(client, Role::Client { agent_id: agent }).unwrap();
        let node = pb::Node { id: 1, ..Default::default() };
        coordinator.local_event(Event::Node { peer: agent, node: Arc::new(node) });
        coordinator.local_event(Event::AddTunnel { src: client, dst: agent });
        const REASON: &str = "coordinator unhealthy";
        coordinator.refuse(REASON);
        assert_eq!(coordinator.peer_counts(), (0, 0));
        for rx in [&mut agent_rx, &mut client_rx] {
            let mut last = None;
            while let Some(response) = rx.recv().await {
                last = Some(response);
            }
            assert_eq!(last.map(|r| r.error), Some(REASON.to_owned()));
        }
        assert_eq!(agent_handle.close_reason().as_deref(), Some(REASON));
        assert!(
            matches!(agent_handle.handle(pb::CoordinateRequest::default()), Err(CoordinateError::Closed(r)) if r == REASON)
        );
        assert!(matches!(coordinator.register(agent, Role::Agent), Err(CoordinateError::Closed(r)) if r == REASON));
        coordinator.accept();
        assert!(coordinator.register(agent, Role::Agent).is_ok());
    }

    #[test]
    fn agent_addresses_follow_coder() {
        let id = Uuid::parse_str("11111111-2222-3333-4444-555555555555").unwrap();
        assert_eq!(service_address(false, id).to_string(), "fd7a:115c:a1e0:3333:4444:5555:5555:5555");
        let own = format!("{}/128", service_address(true, id));
        assert!(check_address(Role::Agent, id, &own).is_ok());
        assert_eq!(check_address(Role::Agent, id, "fd7a:115c:a1e0::1/64"), Err(CoordinateError::AddressBits(64)));
        assert!(matches!(
            check_address(Role::Agent, id, "fd7a:115c:a1e0::1/128"),
            Err(CoordinateError::ForeignAddress(_))
        ));
        assert!(check_address(Role::Agent, id, "fd7a:115c:a1e0:49d6:b259:b7ac:b1b2:48f4/128").is_ok());
        assert!(check_address(Role::Client { agent_id: id }, Uuid::nil(), "fd60::1/128").is_ok());
        assert!(matches!(check_address(Role::Agent, id, "nonsense"), Err(CoordinateError::BadAddress(_))));
    }
}
