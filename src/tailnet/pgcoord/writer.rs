//! The local peers' changes into Coder's tables: PGCoordinator's binder (a peer's node and status), tunneler (its
//! tunnels) and handshaker (ready for handshake), in one task.
//!
//! Like the binder and the tunneler, the writer keeps only each key's latest state (a peer: its node and whether it
//! is lost, or gone; a tunnel: open or not), so a burst of updates of one peer is one row written, and a write that
//! fails is retried with the latest state, backing off as they do (up to [`super::DB_MAX_BACKOFF`]). Unlike them,
//! whatever is pending when the task wakes is one transaction, one statement per kind of write.
//!
//! The rules are PGCoordinator's: a peer that disconnects is deleted with all its tunnels; a lost peer stays, with
//! status `lost` and its last node, and keeps its tunnels (the other side then sees LOST, not DISCONNECTED); a peer
//! lost before it ever sent a node has no row. Ready for handshake is published only when its destination is not
//! one of ours: the coordinator has delivered it to a local one already.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use agentwire_store::tailnet::{CoderTailnet, TailnetWrites};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Backoff, LocalPeers};
use crate::proto::tailnet::v2 as pb;
use crate::tailnet::replica_wire::{self, Event};

enum PeerWrite {
    Upsert { node: Arc<pb::Node>, lost: bool },
    Delete,
}

/// What is still to be written, each key at its latest state.
#[derive(Default)]
pub(super) struct Pending {
    /// The last node of each connected local peer (the binder's `latest`), which a lost peer's row keeps.
    nodes: HashMap<Uuid, Arc<pb::Node>>,
    peers: HashMap<Uuid, PeerWrite>,
    tunnels: HashMap<(Uuid, Uuid), bool>,
    delete_all: HashSet<Uuid>,
    /// `(to, from)` to publish.
    ready: Vec<(Uuid, Uuid)>,
}

impl Pending {
    /// Takes in one local event; `local` says which peers are ours, and is kept up to date here.
    pub fn apply(&mut self, event: Event, local: &mut HashSet<Uuid>) {
        match event {
            Event::Node { peer, node } => {
                local.insert(peer);
                self.nodes.insert(peer, node.clone());
                self.peers.insert(peer, PeerWrite::Upsert { node, lost: false });
            }
            Event::Gone { peer, lost: true } => {
                local.remove(&peer);
                let write = match self.nodes.remove(&peer) {
                    Some(node) => PeerWrite::Upsert { node, lost: true },
                    None => PeerWrite::Delete,
                };
                self.peers.insert(peer, write);
            }
            Event::Gone { peer, lost: false } => {
                local.remove(&peer);
                self.nodes.remove(&peer);
                self.peers.insert(peer, PeerWrite::Delete);
                self.tunnels.retain(|(src, _), _| *src != peer);
                self.delete_all.insert(peer);
            }
            Event::AddTunnel { src, dst } => {
                local.insert(src);
                self.tunnels.insert((src, dst), true);
            }
            Event::RemoveTunnel { src, dst } => {
                local.insert(src);
                self.tunnels.insert((src, dst), false);
            }
            Event::Ready { src, dst } => {
                local.insert(src);
                if !local.contains(&dst) {
                    self.ready.push((dst, src));
                }
            }
        }
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty() && self.tunnels.is_empty() && self.delete_all.is_empty()
    }

    /// The pending writes, as one transaction's.
    pub fn writes(&self) -> TailnetWrites {
        let mut w =
            TailnetWrites { delete_all_tunnels: self.delete_all.iter().copied().collect(), ..Default::default() };
        for (peer, write) in &self.peers {
            match write {
                PeerWrite::Upsert { node, lost } => w.upsert_peers.push((*peer, node.encode_to_vec(), *lost)),
                PeerWrite::Delete => w.delete_peers.push(*peer),
            }
        }
        for ((src, dst), open) in &self.tunnels {
            if *open {
                w.upsert_tunnels.push((*src, *dst));
            } else {
                w.delete_tunnels.push((*src, *dst));
            }
        }
        w
    }

    /// The writes went through.
    pub fn written(&mut self) {
        self.peers.clear();
        self.tunnels.clear();
        self.delete_all.clear();
    }

    pub fn take_ready(&mut self) -> Vec<(Uuid, Uuid)> {
        std::mem::take(&mut self.ready)
    }
}

/// Applies every payload already queued after `first`; false once the queue has closed.
fn drain(
    first: Option<String>,
    outbox: &mut mpsc::Receiver<String>,
    pending: &mut Pending,
    local: &LocalPeers,
) -> bool {
    // A panic elsewhere while holding the set leaves it whole: each change is one insert or remove.
    let mut local = local.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut open = true;
    let mut take = |payload: String| match replica_wire::decode(&payload) {
        Some((_, Some(event))) => pending.apply(event, &mut local),
        _ => tracing::warn!(len = payload.len(), "ignoring a malformed local coordinator event"),
    };
    if let Some(payload) = first {
        take(payload);
    }
    loop {
        match outbox.try_recv() {
            Ok(payload) => take(payload),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                open = false;
                break;
            }
        }
    }
    open
}

async fn publish_ready(tailnet: &CoderTailnet, ready: Vec<(Uuid, Uuid)>) {
    for (to, from) in ready {
        if let Err(err) = tailnet.ready_for_handshake(to, from).await {
            tracing::warn!(error = %err, %to, %from, "publishing ready for handshake");
        }
    }
}

/// Writes until `stop`, then writes what is left, and marks every peer of this coordinator lost, as
/// PGCoordinator's binder does when its coordinator closes. Writes wait for `beat` (the first heartbeat): a peer's
/// row needs its coordinator's.
pub(super) async fn run(
    tailnet: CoderTailnet,
    me: Uuid,
    mut outbox: mpsc::Receiver<String>,
    local: LocalPeers,
    mut beat: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut pending = Pending::default();
    let mut backoff = Backoff::default();
    let mut retry_at: Option<Instant> = None;
    let mut beating = *beat.borrow();
    let mut beat_open = true;
    loop {
        let write_at = (beating && !pending.is_empty()).then(|| retry_at.unwrap_or_else(Instant::now));
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            changed = beat.changed(), if beat_open && !beating => {
                match changed {
                    Ok(()) => beating = *beat.borrow(),
                    Err(_) => beat_open = false,
                }
                None
            }
            payload = outbox.recv() => match payload {
                Some(payload) => Some(payload),
                None => break,
            },
            _ = tokio::time::sleep_until(write_at.unwrap_or_else(Instant::now)), if write_at.is_some() => None,
        };
        if !drain(first, &mut outbox, &mut pending, &local) {
            break;
        }
        publish_ready(&tailnet, pending.take_ready()).await;
        if !beating || pending.is_empty() || retry_at.is_some_and(|at| Instant::now() < at) {
            continue;
        }
        match tailnet.write(me, &pending.writes()).await {
            Ok(()) => {
                pending.written();
                backoff = Backoff::default();
                retry_at = None;
            }
            Err(err) => {
                let delay = backoff.next();
                tracing::warn!(error = %err, retry_in = ?delay, "writing this coordinator's peers and tunnels");
                retry_at = Some(Instant::now() + delay);
            }
        }
    }
    drain(None, &mut outbox, &mut pending, &local);
    if beating && !pending.is_empty() {
        if let Err(err) = tailnet.write(me, &pending.writes()).await {
            tracing::warn!(error = %err, "writing this coordinator's last peers and tunnels");
        }
    }
    if let Err(err) = tailnet.mark_lost(me).await {
        tracing::warn!(error = %err, "marking this coordinator's peers lost");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i64) -> Arc<pb::Node> {
        Arc::new(pb::Node { id, ..Default::default() })
    }

    /// Only the latest state of each key is written, with PGCoordinator's rules for lost and disconnected peers.
    #[test]
    fn pending_keeps_each_keys_latest_state() {
        let (agent, client, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut local = HashSet::new();
        let mut p = Pending::default();
        p.apply(Event::Node { peer: agent, node: node(1) }, &mut local);
        p.apply(Event::Node { peer: agent, node: node(2) }, &mut local);
        p.apply(Event::AddTunnel { src: client, dst: agent }, &mut local);
        let w = p.writes();
        assert_eq!(w.upsert_peers, vec![(agent, node(2).encode_to_vec(), false)]);
        assert_eq!(w.upsert_tunnels, vec![(client, agent)]);
        p.written();
        assert!(p.is_empty());

        // Lost keeps the last node and the tunnels; a peer lost without a node has no row.
        p.apply(Event::Gone { peer: agent, lost: true }, &mut local);
        p.apply(Event::Gone { peer: other, lost: true }, &mut local);
        let w = p.writes();
        assert_eq!(w.upsert_peers, vec![(agent, node(2).encode_to_vec(), true)]);
        assert_eq!(w.delete_peers, vec![other]);
        assert!(w.delete_all_tunnels.is_empty() && w.delete_tunnels.is_empty());
        p.written();

        // Disconnected: the row and all its tunnels go; a tunnel opened after that in the same flush stays.
        p.apply(Event::Node { peer: client, node: node(7) }, &mut local);
        p.apply(Event::Gone { peer: client, lost: false }, &mut local);
        p.apply(Event::AddTunnel { src: client, dst: other }, &mut local);
        let w = p.writes();
        assert_eq!((w.delete_peers, w.delete_all_tunnels), (vec![client], vec![client]));
        assert_eq!(w.upsert_tunnels, vec![(client, other)]);
        assert!(w.upsert_peers.is_empty());
    }

    /// Ready for handshake is published for a destination that is not ours only.
    #[test]
    fn ready_goes_out_for_remote_peers_only() {
        let (agent, mine, theirs) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut local = HashSet::new();
        let mut p = Pending::default();
        p.apply(Event::AddTunnel { src: mine, dst: agent }, &mut local);
        p.apply(Event::Ready { src: agent, dst: mine }, &mut local);
        p.apply(Event::Ready { src: agent, dst: theirs }, &mut local);
        assert_eq!(p.take_ready(), vec![(theirs, agent)]);
        assert!(local.contains(&agent) && local.contains(&mine) && !local.contains(&theirs));
    }
}
