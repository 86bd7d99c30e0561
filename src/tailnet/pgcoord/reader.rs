//! The other coordinators into the coordinator's state: PGCoordinator's querier (peer and tunnel changes, ready
//! for handshake) and its heartbeat monitor, in one task.
//!
//! A notification names what changed, not how: the reader reads the rows again, as the querier does, and the
//! [`Mirror`] says what the state must learn. Notifications queued together are read together, one statement for
//! all their peers and one for all their tunnels. The changes of this coordinator's own peers (its own writes come
//! back as notifications too) are not read: the state has those peers already.
//!
//! Everything is read once at start (the coordinators alive by their last heartbeat, all peers, all tunnels), and
//! again when notifications may have been lost, checked every [`HEARTBEAT_PERIOD`]: the pubsub dropped messages
//! for a full queue, or its LISTEN connection was lost and is back (it counts a reconnect only once it listens
//! again, so a read after that misses nothing that was sent in the gap); and when a read failed (retried with
//! backoff). PGCoordinator's resync after `ErrDroppedMessages`, which coderd's pubsub says in both cases.

use std::collections::HashMap;
use std::sync::Arc;

use agentwire_store::pubsub::{Pubsub, Subscription};
use agentwire_store::tailnet::{
    CoderTailnet, TailnetPeer, HEARTBEAT_CHANNEL, PEER_UPDATE_CHANNEL, READY_FOR_HANDSHAKE_CHANNEL,
    TUNNEL_UPDATE_CHANNEL,
};
use agentwire_store::StoreError;
use prost::Message as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::mirror::{Mirror, Out, Row};
use super::{Backoff, LocalPeers, HEARTBEAT_PERIOD, HEARTBEAT_TIMEOUT};
use crate::proto::tailnet::v2 as pb;
use crate::tailnet::coordinator::Coordinator;
use crate::tailnet::replica_wire::Event;

struct Subs {
    peers: Subscription,
    tunnels: Subscription,
    ready: Subscription,
    beats: Subscription,
}

async fn subscribe(pubsub: &Arc<dyn Pubsub>, stop: &CancellationToken) -> Option<Subs> {
    let mut backoff = Backoff::default();
    loop {
        let subs = async {
            Ok::<_, StoreError>(Subs {
                peers: pubsub.subscribe(PEER_UPDATE_CHANNEL).await?,
                tunnels: pubsub.subscribe(TUNNEL_UPDATE_CHANNEL).await?,
                ready: pubsub.subscribe(READY_FOR_HANDSHAKE_CHANNEL).await?,
                beats: pubsub.subscribe(HEARTBEAT_CHANNEL).await?,
            })
        };
        match subs.await {
            Ok(subs) => return Some(subs),
            Err(err) => {
                let delay = backoff.next();
                tracing::warn!(error = %err, retry_in = ?delay, "subscribing to Coder's tailnet channels");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// `first` and what else is queued on `sub` (at most `batch` in all), parsed; unparsable payloads are skipped.
fn collect<T>(first: String, sub: &mut Subscription, batch: usize, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    let mut out = Vec::new();
    let mut payload = Some(first);
    while let Some(p) = payload {
        match parse(&p) {
            Some(v) => out.push(v),
            None => tracing::warn!(channel = sub.channel(), payload = %p, "ignoring a malformed notification"),
        }
        payload = if out.len() < batch { sub.try_recv() } else { None };
    }
    out
}

fn pair(payload: &str) -> Option<(Uuid, Uuid)> {
    let (a, b) = payload.split_once(',')?;
    Some((Uuid::parse_str(a).ok()?, Uuid::parse_str(b).ok()?))
}

fn row(peer: TailnetPeer) -> Option<(Uuid, Row)> {
    match pb::Node::decode(peer.node.as_slice()) {
        Ok(node) => Some((
            peer.id,
            Row {
                coordinator: peer.coordinator_id,
                updated_at: peer.updated_at,
                node: Arc::new(node),
                lost: peer.lost,
            },
        )),
        Err(err) => {
            tracing::warn!(peer = %peer.id, coordinator = %peer.coordinator_id, error = %err, "a tailnet peer's node does not decode");
            None
        }
    }
}

async fn load(tailnet: &CoderTailnet, mirror: &mut Mirror, out: &mut Out) -> Result<(), StoreError> {
    let coordinators = tailnet.coordinators().await?;
    let peers = tailnet.all_peers().await?;
    let tunnels = tailnet.all_tunnels().await?;
    let now = std::time::Instant::now();
    for c in coordinators {
        if c.heartbeat_age < HEARTBEAT_TIMEOUT {
            mirror.seen(c.id, now.checked_sub(c.heartbeat_age).unwrap_or(now));
        }
    }
    let rows = peers.into_iter().filter_map(row).collect();
    let tunnels = tunnels.into_iter().map(|t| ((t.src_id, t.dst_id), t.coordinator_id)).collect();
    mirror.replace_all(rows, tunnels, out);
    Ok(())
}

fn is_local(local: &LocalPeers, peer: Uuid) -> bool {
    local.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(&peer)
}

/// Until `stop`: the other coordinators' changes into `coordinator`'s state. `batch` bounds the notifications read
/// at once (the pubsub's subscriber queue).
pub(super) async fn run(
    coordinator: Coordinator,
    tailnet: CoderTailnet,
    pubsub: Arc<dyn Pubsub>,
    batch: usize,
    me: Uuid,
    local: LocalPeers,
    stop: CancellationToken,
) {
    let Some(mut subs) = subscribe(&pubsub, &stop).await else { return };
    let mut mirror = Mirror::new(me, HEARTBEAT_TIMEOUT);
    let mut reload_at = Some(Instant::now());
    let mut backoff = Backoff::default();
    // What the pubsub lost so far: messages for full queues, and LISTEN connections.
    let losses = |p: &Arc<dyn Pubsub>| (p.dropped(), p.reconnects());
    let mut lost = losses(&pubsub);
    let mut check = tokio::time::interval(HEARTBEAT_PERIOD);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let batch = batch.max(1);
    loop {
        let mut out = Out::new();
        let mut failed = None;
        let expiry = mirror.next_expiry().map(Instant::from_std);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(reload_at.unwrap_or_else(Instant::now)), if reload_at.is_some() => {
                match load(&tailnet, &mut mirror, &mut out).await {
                    Ok(()) => {
                        reload_at = None;
                        backoff = Backoff::default();
                        let (peers, shown) = mirror.counts();
                        tracing::debug!(peers, shown, "read Coder's tailnet peers and tunnels");
                    }
                    Err(err) => failed = Some(err),
                }
            }
            payload = subs.peers.recv() => {
                let Some(first) = payload else { break };
                let mut ids = collect(first, &mut subs.peers, batch, |p| Uuid::parse_str(p).ok());
                ids.retain(|id| !is_local(&local, *id));
                ids.sort_unstable();
                ids.dedup();
                match tailnet.peers(&ids).await {
                    Ok(found) => {
                        let mut rows: HashMap<Uuid, Vec<Row>> = ids.iter().map(|id| (*id, Vec::new())).collect();
                        for (peer, r) in found.into_iter().filter_map(row) {
                            rows.entry(peer).or_default().push(r);
                        }
                        for (peer, rows) in rows {
                            mirror.set_peer(peer, rows, &mut out);
                        }
                    }
                    Err(err) => failed = Some(err),
                }
            }
            payload = subs.tunnels.recv() => {
                let Some(first) = payload else { break };
                let mut pairs = collect(first, &mut subs.tunnels, batch, pair);
                pairs.retain(|(src, _)| !is_local(&local, *src));
                pairs.sort_unstable();
                pairs.dedup();
                match tailnet.tunnels(&pairs).await {
                    Ok(found) => {
                        let mut holders: HashMap<(Uuid, Uuid), Option<Uuid>> =
                            pairs.iter().map(|p| (*p, None)).collect();
                        for t in found.into_iter().filter(|t| t.coordinator_id != me) {
                            holders.insert((t.src_id, t.dst_id), Some(t.coordinator_id));
                        }
                        for ((src, dst), holder) in holders {
                            mirror.set_tunnel(src, dst, holder, &mut out);
                        }
                    }
                    Err(err) => failed = Some(err),
                }
            }
            payload = subs.ready.recv() => {
                let Some(first) = payload else { break };
                for (to, from) in collect(first, &mut subs.ready, batch, pair) {
                    // From one of ours, it was delivered when it was made.
                    if !is_local(&local, from) {
                        let origin = mirror.coordinator_of(from).unwrap_or(Uuid::nil());
                        out.push((origin, Event::Ready { src: from, dst: to }));
                    }
                }
            }
            payload = subs.beats.recv() => {
                let Some(first) = payload else { break };
                let now = std::time::Instant::now();
                for beat in collect(first, &mut subs.beats, batch, |p| Uuid::parse_str(p).ok()) {
                    mirror.beat(beat, now, &mut out);
                }
            }
            _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                mirror.expire(std::time::Instant::now(), &mut out);
            }
            _ = check.tick() => {
                let now_lost = losses(&pubsub);
                if now_lost != lost {
                    let (dropped, reconnects) = (now_lost.0.saturating_sub(lost.0), now_lost.1.saturating_sub(lost.1));
                    lost = now_lost;
                    tracing::warn!(
                        dropped,
                        reconnects,
                        "the pubsub may have lost notifications; reading Coder's tailnet peers and tunnels again"
                    );
                    reload_at.get_or_insert_with(Instant::now);
                }
            }
        }
        for (origin, event) in out {
            coordinator.remote_event(origin, Some(&event));
        }
        if let Some(err) = failed {
            let delay = backoff.next();
            tracing::warn!(error = %err, retry_in = ?delay, "reading Coder's tailnet peers and tunnels");
            reload_at = Some(Instant::now() + delay);
        }
    }
    tracing::warn!("the pubsub closed; changes of the other tailnet coordinators stop");
}
