//! The relay's registry: who is connected under which key, each client's outbox, and who sent to whom (so that a
//! peer that leaves is announced to those it was talking to), as tailscale's `derp.Server` keeps them for one node.
//!
//! What a slow reader costs is bounded three ways: a packet count per queue ([`DEFAULT_QUEUE_DEPTH`]), queued bytes
//! per client ([`DEFAULT_MAX_CLIENT_QUEUED_BYTES`]) and queued bytes relay-wide ([`DEFAULT_MAX_QUEUED_BYTES`]). Past
//! any of them the destination's oldest packet is dropped to make room, as tailscale drops from the queue head, so
//! the sender never waits; only when the destination has nothing queued to drop does the new packet go.
//! Disco packets (path discovery) queue apart from data, so bulk traffic cannot crowd them out.
//!
//! Left out: meshing with other relays (tailscale's watchers and packet forwarders, coderd's multi-replica
//! `derpmesh`), client verification, and the policy that disables clients fighting over one key (the last one to
//! speak gets the traffic, tailscale's default).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::frame::{looks_like_disco, PeerGoneReason, DEFAULT_MAX_CLIENT_INFO_SIZE, DEFAULT_MAX_PACKET_SIZE, PING_LEN};
use super::keys::{NodeKey, PrivateKey};
use super::stats::{DropReason, RelayStats};

/// Packets queued per client and per queue (data, disco) before the oldest is dropped: Coder's
/// `perClientSendQueueDepth` (tailscale's is 32; Coder raised it for throughput).
pub const DEFAULT_QUEUE_DEPTH: usize = 512;
/// Packet bytes queued to one client, both queues together: a full queue of WireGuard-sized packets (about
/// 1.4 KiB) fits, a queue of 64 KiB packets does not. tailscale bounds the count only.
pub const DEFAULT_MAX_CLIENT_QUEUED_BYTES: usize = 2 << 20;
/// Packet bytes queued to all clients together: what 256 clients at their own limit hold.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 512 << 20;
/// Relay connections one server holds at once; past it upgrades get 503. Every agent and every client keeps one
/// connection to its home relay, so as many as agent sessions.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// How long a client has to log in after the upgrade (tailscale's 10 s deadline).
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write to a client may block before the client is dropped (tailscale's `writeTimeout`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Keep-alive frames to idle clients (tailscale's 60 s, plus up to 5 s of jitter); clients give up after 120 s
/// without a frame.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
/// Peer-gone "not here" answers to disco packets for unknown keys: a burst of 3, then 1 per second per client
/// (tailscale's limiter), so a client probing absent peers cannot make the relay write without bound.
const NOT_HERE_BURST: f64 = 3.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// See [`DEFAULT_MAX_PACKET_SIZE`].
    pub max_packet_size: usize,
    /// See [`DEFAULT_MAX_CLIENT_INFO_SIZE`].
    pub max_client_info_size: usize,
    /// See [`DEFAULT_QUEUE_DEPTH`].
    pub queue_depth: usize,
    /// See [`DEFAULT_MAX_CLIENT_QUEUED_BYTES`].
    pub max_client_queued_bytes: usize,
    /// See [`DEFAULT_MAX_QUEUED_BYTES`].
    pub max_queued_bytes: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_LOGIN_TIMEOUT`].
    pub login_timeout: Duration,
    /// See [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// See [`DEFAULT_KEEPALIVE`].
    pub keepalive: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_client_info_size: DEFAULT_MAX_CLIENT_INFO_SIZE,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_client_queued_bytes: DEFAULT_MAX_CLIENT_QUEUED_BYTES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
        }
    }
}

/// The embedded relay of one server.
pub struct Relay {
    config: RelayConfig,
    key: PrivateKey,
    stats: Arc<RelayStats>,
    registry: Mutex<Registry>,
    next_conn: AtomicU64,
    admitted: AtomicUsize,
    /// Bytes queued to all clients, against [`RelayConfig::max_queued_bytes`].
    queued: AtomicUsize,
}

#[derive(Default)]
struct Registry {
    /// Every connection of a key, the active one (the last to connect or to speak) last.
    clients: HashMap<NodeKey, Vec<Arc<Client>>>,
    /// Source key → destination key → the destination connection it sent to.
    sent_to: HashMap<NodeKey, HashMap<NodeKey, u64>>,
    /// Destination key → sources with an entry for it in `sent_to`, so a destination that leaves is pruned there
    /// too and the table stays as large as the live pairs.
    received_from: HashMap<NodeKey, HashSet<NodeKey>>,
}

/// One logged-in connection.
pub struct Client {
    pub key: NodeKey,
    conn: u64,
    outbox: Mutex<Outbox>,
    wake: Notify,
}

#[derive(Default)]
struct Outbox {
    data: VecDeque<Queued>,
    disco: VecDeque<Queued>,
    bytes: usize,
    pong: Option<[u8; PING_LEN]>,
    peer_gone: VecDeque<(NodeKey, PeerGoneReason)>,
    closed: bool,
}

pub(super) struct Queued {
    pub src: NodeKey,
    pub packet: Bytes,
}

/// What the writer takes from an outbox in one go.
#[derive(Default)]
pub(super) struct Batch {
    pub peer_gone: Vec<(NodeKey, PeerGoneReason)>,
    pub pong: Option<[u8; PING_LEN]>,
    pub packets: Vec<Queued>,
}

/// A place among the relay's connections, held from before the upgrade; given back on drop.
pub struct Admission {
    relay: Arc<Relay>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.relay.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn relay(&self) -> &Arc<Relay> {
        &self.relay
    }
}

/// A token bucket for "not here" answers, owned by one connection's reader.
pub(super) struct NotHereLimiter {
    tokens: f64,
    last: tokio::time::Instant,
}

impl NotHereLimiter {
    pub fn new() -> Self {
        NotHereLimiter { tokens: NOT_HERE_BURST, last: tokio::time::Instant::now() }
    }

    fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64()).min(NOT_HERE_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Relay {
    /// A relay with a fresh key; `stats` is where its counters go (the server's metrics).
    pub fn new(config: RelayConfig, stats: Arc<RelayStats>) -> Arc<Self> {
        Arc::new(Relay {
            config,
            key: PrivateKey::generate(),
            stats,
            registry: Mutex::new(Registry::default()),
            next_conn: AtomicU64::new(1),
            admitted: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
        })
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
    }

    pub fn public_key(&self) -> NodeKey {
        self.key.public()
    }

    pub(super) fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// A place for one more connection, or `None` at [`RelayConfig::max_connections`].
    pub fn admit(self: &Arc<Self>) -> Option<Admission> {
        let max = self.config.max_connections;
        let admitted = self.admitted.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        match admitted {
            Ok(_) => Some(Admission { relay: self.clone() }),
            Err(_) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Whether a client with `key` is connected now.
    pub fn is_connected(&self, key: &NodeKey) -> bool {
        self.registry.lock().map(|r| r.clients.contains_key(key)).unwrap_or(false)
    }

    /// Adds a logged-in client; it becomes the active connection of its key.
    pub(super) fn register(&self, key: NodeKey) -> Arc<Client> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let client = Arc::new(Client { key, conn, outbox: Mutex::new(Outbox::default()), wake: Notify::new() });
        if let Ok(mut registry) = self.registry.lock() {
            registry.clients.entry(key).or_default().push(client.clone());
        }
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        client
    }

    /// Removes a client and drops what was queued to it. When it was its key's last connection, every client it
    /// had sent to (on the connection it sent to) is told it is gone.
    pub(super) fn unregister(&self, client: &Arc<Client>) {
        let mut notify = Vec::new();
        if let Ok(mut registry) = self.registry.lock() {
            let registry = &mut *registry;
            let last = match registry.clients.get_mut(&client.key) {
                Some(conns) => {
                    conns.retain(|c| !Arc::ptr_eq(c, client));
                    conns.is_empty()
                }
                None => false,
            };
            if last {
                registry.clients.remove(&client.key);
                for (dst, conn) in registry.sent_to.remove(&client.key).unwrap_or_default() {
                    if let Some(sources) = registry.received_from.get_mut(&dst) {
                        sources.remove(&client.key);
                        if sources.is_empty() {
                            registry.received_from.remove(&dst);
                        }
                    }
                    if let Some(peer) = registry.clients.get(&dst).and_then(|c| c.iter().find(|c| c.conn == conn)) {
                        notify.push(peer.clone());
                    }
                }
                for src in registry.received_from.remove(&client.key).unwrap_or_default() {
                    if let Some(dsts) = registry.sent_to.get_mut(&src) {
                        dsts.remove(&client.key);
                        if dsts.is_empty() {
                            registry.sent_to.remove(&src);
                        }
                    }
                }
            }
        }
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        let dropped = client.close();
        for packet in dropped {
            self.release(packet.packet.len());
            self.stats.record_drop(DropReason::GoneDisconnected);
        }
        for peer in notify {
            peer.push_peer_gone(client.key, PeerGoneReason::Disconnected, self.config.queue_depth);
        }
    }

    /// Relays `packet` from `from` to the active connection of `dst`.
    pub(super) fn send(&self, from: &Arc<Client>, dst: NodeKey, packet: Bytes, not_here: &mut NotHereLimiter) {
        self.stats.packets_received.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_received.fetch_add(packet.len() as u64, Ordering::Relaxed);
        let target = match self.registry.lock() {
            Ok(mut registry) => {
                let registry = &mut *registry;
                let target = registry.clients.get(&dst).and_then(|conns| conns.last().cloned());
                if let Some(target) = &target {
                    registry.sent_to.entry(from.key).or_default().insert(dst, target.conn);
                    registry.received_from.entry(dst).or_default().insert(from.key);
                }
                target
            }
            Err(_) => None,
        };
        let Some(target) = target else {
            self.stats.record_drop(DropReason::UnknownDest);
            if looks_like_disco(&packet) && not_here.allow() {
                from.push_peer_gone(dst, PeerGoneReason::NotHere, self.config.queue_depth);
            }
            return;
        };
        self.enqueue(&target, Queued { src: from.key, packet });
    }

    /// A duplicate connection of a key that speaks becomes the one that receives (tailscale's
    /// `lastWriterIsActive`).
    pub(super) fn note_activity(&self, client: &Arc<Client>) {
        let Ok(mut registry) = self.registry.lock() else { return };
        if let Some(conns) = registry.clients.get_mut(&client.key) {
            if conns.len() > 1 && !conns.last().is_some_and(|c| Arc::ptr_eq(c, client)) {
                if let Some(i) = conns.iter().position(|c| Arc::ptr_eq(c, client)) {
                    let me = conns.remove(i);
                    conns.push(me);
                }
            }
        }
    }

    fn enqueue(&self, to: &Client, item: Queued) {
        let len = item.packet.len();
        let disco = looks_like_disco(&item.packet);
        let Ok(mut outbox) = to.outbox.lock() else { return };
        if outbox.closed {
            self.stats.record_drop(DropReason::GoneDisconnected);
            return;
        }
        loop {
            let depth = if disco { outbox.disco.len() } else { outbox.data.len() };
            let full = depth >= self.config.queue_depth;
            // The relay-wide reservation is taken last, once, when nothing else stands in the way.
            if !full && outbox.bytes + len <= self.config.max_client_queued_bytes && self.reserve(len) {
                break;
            }
            let outbox = &mut *outbox;
            let same = if disco { outbox.disco.pop_front() } else { outbox.data.pop_front() };
            // Past a byte limit the other queue pays too, data before disco.
            let oldest =
                if full { same } else { same.or_else(|| outbox.data.pop_front().or_else(|| outbox.disco.pop_front())) };
            match oldest {
                Some(old) => {
                    outbox.bytes -= old.packet.len();
                    self.release(old.packet.len());
                    self.stats.record_drop(DropReason::QueueHead);
                }
                None => {
                    self.stats.record_drop(DropReason::QueueTail);
                    return;
                }
            }
        }
        outbox.bytes += len;
        if disco {
            outbox.disco.push_back(item);
        } else {
            outbox.data.push_back(item);
        }
        drop(outbox);
        to.wake.notify_one();
    }

    /// Counts `len` more queued bytes if the relay-wide limit allows.
    fn reserve(&self, len: usize) -> bool {
        let max = self.config.max_queued_bytes;
        let reserved =
            self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| q.checked_add(len).filter(|&n| n <= max));
        if reserved.is_ok() {
            self.stats.queued_bytes.fetch_add(len as i64, Ordering::Relaxed);
        }
        reserved.is_ok()
    }

    pub(super) fn release(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
        self.stats.queued_bytes.fetch_sub(len as i64, Ordering::Relaxed);
    }

    /// Takes up to about `max_bytes` of what is queued to `client`, control frames first, then disco, then data.
    /// The packets' bytes leave the queue limits now: they are the writer's.
    pub(super) fn take_batch(&self, client: &Client, max_bytes: usize) -> Batch {
        let mut batch = Batch::default();
        let Ok(mut outbox) = client.outbox.lock() else { return batch };
        batch.peer_gone = outbox.peer_gone.drain(..).collect();
        batch.pong = outbox.pong.take();
        let mut taken = 0;
        while taken < max_bytes {
            let Some(item) = outbox.disco.pop_front().or_else(|| outbox.data.pop_front()) else { break };
            taken += item.packet.len();
            outbox.bytes -= item.packet.len();
            self.release(item.packet.len());
            batch.packets.push(item);
        }
        batch
    }
}

impl Client {
    /// Marks the outbox closed and returns what was still queued.
    fn close(&self) -> Vec<Queued> {
        let Ok(mut outbox) = self.outbox.lock() else { return Vec::new() };
        outbox.closed = true;
        outbox.bytes = 0;
        let mut left: Vec<Queued> = outbox.disco.drain(..).collect();
        left.extend(outbox.data.drain(..));
        left
    }

    /// Queues a pong; a client pinging faster than it reads loses the older ones (tailscale keeps one).
    pub(super) fn push_pong(&self, data: [u8; PING_LEN]) {
        if let Ok(mut outbox) = self.outbox.lock() {
            outbox.pong = Some(data);
        }
        self.wake.notify_one();
    }

    fn push_peer_gone(&self, peer: NodeKey, reason: PeerGoneReason, max: usize) {
        if let Ok(mut outbox) = self.outbox.lock() {
            if outbox.closed || outbox.peer_gone.len() >= max {
                return;
            }
            outbox.peer_gone.push_back((peer, reason));
        }
        self.wake.notify_one();
    }

    /// Resolves when something was queued since the last batch was taken.
    pub(super) async fn woken(&self) {
        self.wake.notified().await
    }

    /// Whether anything is queued.
    pub(super) fn has_pending(&self) -> bool {
        self.outbox
            .lock()
            .map(|o| !o.data.is_empty() || !o.disco.is_empty() || o.pong.is_some() || !o.peer_gone.is_empty())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(config: RelayConfig) -> Arc<Relay> {
        Relay::new(config, Arc::new(RelayStats::default()))
    }

    fn key(b: u8) -> NodeKey {
        NodeKey([b; 32])
    }

    fn packets(batch: &Batch) -> Vec<&[u8]> {
        batch.packets.iter().map(|q| &q.packet[..]).collect()
    }

    #[tokio::test]
    async fn a_packet_reaches_the_destination_and_its_source_is_noted() {
        let relay = relay(RelayConfig::default());
        let (a, b) = (relay.register(key(1)), relay.register(key(2)));
        let mut limiter = NotHereLimiter::new();
        relay.send(&a, key(2), Bytes::from_static(b"hi"), &mut limiter);
        let batch = relay.take_batch(&b, 1 << 20);
        assert_eq!(packets(&batch), vec![b"hi"]);
        assert_eq!(batch.packets[0].src, key(1));
        assert_eq!(relay.stats.queued_bytes.load(Ordering::Relaxed), 0);

        // a leaves: b, which a sent to, hears of it.
        relay.unregister(&a);
        let batch = relay.take_batch(&b, 1 << 20);
        assert_eq!(batch.peer_gone, vec![(key(1), PeerGoneReason::Disconnected)]);
        let registry = relay.registry.lock().unwrap();
        assert!(registry.sent_to.is_empty() && registry.received_from.is_empty());
    }

    #[tokio::test]
    async fn unknown_destinations_are_dropped_and_disco_gets_a_limited_not_here() {
        let relay = relay(RelayConfig::default());
        let a = relay.register(key(1));
        let mut limiter = NotHereLimiter::new();
        let mut disco = b"TS\xf0\x9f\x92\xac".to_vec();
        disco.resize(100, 0);
        for _ in 0..10 {
            relay.send(&a, key(9), Bytes::from(disco.clone()), &mut limiter);
        }
        relay.send(&a, key(9), Bytes::from_static(b"data"), &mut limiter);
        assert_eq!(relay.stats.drops(DropReason::UnknownDest), 11);
        let batch = relay.take_batch(&a, 1 << 20);
        assert_eq!(batch.peer_gone.len(), 3, "a burst of 3, then one a second");
        assert!(batch.peer_gone.iter().all(|g| *g == (key(9), PeerGoneReason::NotHere)));
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_oldest_packet() {
        let relay = relay(RelayConfig { queue_depth: 3, ..RelayConfig::default() });
        let (a, b) = (relay.register(key(1)), relay.register(key(2)));
        let mut limiter = NotHereLimiter::new();
        for i in 0..5u8 {
            relay.send(&a, key(2), Bytes::from(vec![i]), &mut limiter);
        }
        assert_eq!(relay.stats.drops(DropReason::QueueHead), 2);
        let batch = relay.take_batch(&b, 1 << 20);
        assert_eq!(packets(&batch), vec![&[2u8][..], &[3], &[4]]);
    }

    #[tokio::test]
    async fn queued_bytes_are_bounded_per_client_and_relay_wide() {
        let relay =
            relay(RelayConfig { max_client_queued_bytes: 250, max_queued_bytes: 400, ..RelayConfig::default() });
        let (a, b, c) = (relay.register(key(1)), relay.register(key(2)), relay.register(key(3)));
        let mut limiter = NotHereLimiter::new();
        for _ in 0..4 {
            relay.send(&a, key(2), Bytes::from(vec![0; 100]), &mut limiter);
        }
        // b holds at most 250 bytes: two packets; the two oldest went.
        assert_eq!(relay.stats.drops(DropReason::QueueHead), 2);
        assert_eq!(relay.stats.queued_bytes.load(Ordering::Relaxed), 200);
        relay.send(&a, key(3), Bytes::from(vec![0; 100]), &mut limiter);
        relay.send(&a, key(3), Bytes::from(vec![0; 100]), &mut limiter);
        // The relay holds 400: c's next packet replaces c's oldest.
        relay.send(&a, key(3), Bytes::from(vec![1; 100]), &mut limiter);
        assert_eq!(relay.stats.drops(DropReason::QueueHead), 3);
        assert_eq!(relay.stats.queued_bytes.load(Ordering::Relaxed), 400);
        // A client with nothing queued cannot push out others' packets: its packet is the one dropped.
        let d = relay.register(key(4));
        relay.send(&a, key(4), Bytes::from(vec![0; 100]), &mut limiter);
        assert_eq!(relay.stats.drops(DropReason::QueueTail), 1);
        assert!(relay.take_batch(&d, 1 << 20).packets.is_empty());
        assert_eq!(relay.take_batch(&b, 1 << 20).packets.len(), 2);
        assert_eq!(relay.take_batch(&c, 1 << 20).packets.len(), 2);
        assert_eq!(relay.stats.queued_bytes.load(Ordering::Relaxed), 0);
        // What a leaving client still had queued is counted as dropped and released.
        relay.send(&a, key(2), Bytes::from(vec![0; 100]), &mut limiter);
        relay.unregister(&b);
        assert_eq!(relay.stats.drops(DropReason::GoneDisconnected), 1);
        assert_eq!(relay.stats.queued_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn disco_packets_have_their_own_queue_and_go_first() {
        let relay = relay(RelayConfig { queue_depth: 2, ..RelayConfig::default() });
        let (a, b) = (relay.register(key(1)), relay.register(key(2)));
        let mut limiter = NotHereLimiter::new();
        let mut disco = b"TS\xf0\x9f\x92\xac".to_vec();
        disco.resize(62, 7);
        for i in 0..4u8 {
            relay.send(&a, key(2), Bytes::from(vec![i]), &mut limiter);
        }
        relay.send(&a, key(2), Bytes::from(disco.clone()), &mut limiter);
        let batch = relay.take_batch(&b, 1 << 20);
        assert_eq!(packets(&batch), vec![&disco[..], &[2], &[3]]);
    }

    #[tokio::test]
    async fn the_last_connection_of_a_key_to_speak_receives() {
        let relay = relay(RelayConfig::default());
        let a = relay.register(key(1));
        let (b1, b2) = (relay.register(key(2)), relay.register(key(2)));
        let mut limiter = NotHereLimiter::new();
        relay.send(&a, key(2), Bytes::from_static(b"1"), &mut limiter);
        assert_eq!(relay.take_batch(&b2, 1 << 20).packets.len(), 1);
        relay.note_activity(&b1);
        relay.send(&a, key(2), Bytes::from_static(b"2"), &mut limiter);
        assert_eq!(relay.take_batch(&b1, 1 << 20).packets.len(), 1);
        // One of two leaving is no peer-gone: the key is still here.
        relay.unregister(&b2);
        assert!(relay.is_connected(&key(2)));
        relay.unregister(&b1);
        assert!(!relay.is_connected(&key(2)));
    }

    #[test]
    fn admissions_stop_at_the_connection_cap_and_come_back() {
        let relay = relay(RelayConfig { max_connections: 2, ..RelayConfig::default() });
        let (one, _two) = (relay.admit().unwrap(), relay.admit().unwrap());
        assert!(relay.admit().is_none());
        assert_eq!(relay.stats.refused.load(Ordering::Relaxed), 1);
        drop(one);
        assert!(relay.admit().is_some());
    }
}
