//! The other coordinators' peers and tunnels as this one last read them, and what the coordinator's state must be
//! told when they change. Pure: the reader feeds it rows and heartbeats and applies the events it returns.
//!
//! Which of a peer's rows counts is PGCoordinator's `bestMappings`: a row of a coordinator whose heartbeats stopped
//! is `LOST` whatever its status; a `NODE` beats a `LOST`; a newer `NODE` beats an older one. The coordinator's
//! state then learns, as if from a replica (the row's coordinator):
//! * a peer whose best row is a node: `Node`, and `AddTunnel` for its tunnels (the state forgets a peer's tunnels
//!   when it is lost; PGCoordinator keeps them, so a peer found again has them back);
//! * a peer shown before whose best row is now lost: `Gone { lost: true }`; one with no row left: `Gone { lost:
//!   false }`, DISCONNECTED, as PGCoordinator's mapper says of a peer whose row went;
//! * a tunnel of a shown peer: `AddTunnel`; gone: `RemoveTunnel`.
//!
//! Events are re-sent whenever a peer's rows are read, not only on a change: the state drops repeats (no update
//! for an unchanged node), and a peer that was also connected here, and left, is put back from another
//! coordinator's row this way.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::proto::tailnet::v2 as pb;
use crate::tailnet::replica_wire::Event;

/// A peer's row from another coordinator.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub coordinator: Uuid,
    pub updated_at: i64,
    pub node: Arc<pb::Node>,
    pub lost: bool,
}

/// Events for the coordinator's state, each with the coordinator it comes from.
pub(super) type Out = Vec<(Uuid, Event)>;

pub(super) struct Mirror {
    me: Uuid,
    timeout: Duration,
    rows: HashMap<Uuid, Vec<Row>>,
    /// Each tunnel and one other coordinator that holds it.
    tunnels: HashMap<(Uuid, Uuid), Uuid>,
    by_src: HashMap<Uuid, HashSet<Uuid>>,
    /// Other coordinators heard from within `timeout`, and when last.
    alive: HashMap<Uuid, Instant>,
    /// Peers the state was last told are a node, and by which coordinator.
    shown: HashMap<Uuid, Uuid>,
}

impl Mirror {
    /// `me` is this coordinator, whose own rows are the state's local peers and never mirrored; `timeout` is how
    /// long another coordinator may be silent before its peers are lost.
    pub fn new(me: Uuid, timeout: Duration) -> Self {
        Mirror {
            me,
            timeout,
            rows: HashMap::new(),
            tunnels: HashMap::new(),
            by_src: HashMap::new(),
            alive: HashMap::new(),
            shown: HashMap::new(),
        }
    }

    /// Peers with rows of other coordinators, and peers shown as nodes.
    pub fn counts(&self) -> (usize, usize) {
        (self.rows.len(), self.shown.len())
    }

    /// The coordinator that showed `peer`, if it is shown.
    pub fn coordinator_of(&self, peer: Uuid) -> Option<Uuid> {
        self.shown.get(&peer).copied()
    }

    /// `peer`'s rows as they are now (none: it has no row).
    pub fn set_peer(&mut self, peer: Uuid, mut rows: Vec<Row>, out: &mut Out) {
        rows.retain(|r| r.coordinator != self.me);
        if rows.is_empty() {
            self.rows.remove(&peer);
        } else {
            self.rows.insert(peer, rows);
        }
        self.reconcile(peer, out);
    }

    /// The tunnel `src → dst` as it is now: held by `holder`, another coordinator, or by none.
    pub fn set_tunnel(&mut self, src: Uuid, dst: Uuid, holder: Option<Uuid>, out: &mut Out) {
        match holder.filter(|h| *h != self.me) {
            Some(holder) => {
                self.tunnels.insert((src, dst), holder);
                self.by_src.entry(src).or_default().insert(dst);
                if self.shown.contains_key(&src) {
                    out.push((holder, Event::AddTunnel { src, dst }));
                }
            }
            None => {
                let Some(holder) = self.tunnels.remove(&(src, dst)) else { return };
                if let Some(dsts) = self.by_src.get_mut(&src) {
                    dsts.remove(&dst);
                    if dsts.is_empty() {
                        self.by_src.remove(&src);
                    }
                }
                if self.shown.contains_key(&src) {
                    out.push((holder, Event::RemoveTunnel { src, dst }));
                }
            }
        }
    }

    /// Everything at once (a first read, or a resync after lost notifications).
    pub fn replace_all(&mut self, rows: Vec<(Uuid, Row)>, tunnels: Vec<((Uuid, Uuid), Uuid)>, out: &mut Out) {
        let mut peers: HashSet<Uuid> = self.rows.keys().copied().collect();
        self.rows.clear();
        for (peer, row) in rows {
            if row.coordinator != self.me {
                peers.insert(peer);
                self.rows.entry(peer).or_default().push(row);
            }
        }
        let before: HashSet<(Uuid, Uuid)> = self.tunnels.keys().copied().collect();
        self.tunnels.clear();
        self.by_src.clear();
        for ((src, dst), holder) in tunnels {
            if holder != self.me {
                self.tunnels.insert((src, dst), holder);
                self.by_src.entry(src).or_default().insert(dst);
            }
        }
        peers.extend(self.shown.keys().copied());
        for peer in peers {
            self.reconcile(peer, out);
        }
        for (src, dst) in before {
            if !self.tunnels.contains_key(&(src, dst)) {
                if let Some(holder) = self.shown.get(&src) {
                    out.push((*holder, Event::RemoveTunnel { src, dst }));
                }
            }
        }
    }

    /// `coordinator` beat at `at`, by what its row says: known alive before the rows are read, so no event yet.
    pub fn seen(&mut self, coordinator: Uuid, at: Instant) {
        if coordinator != self.me {
            self.alive.insert(coordinator, at);
        }
    }

    /// A heartbeat of `coordinator` at `now`. One not alive before brings its peers' rows back.
    pub fn beat(&mut self, coordinator: Uuid, now: Instant, out: &mut Out) {
        if coordinator == self.me {
            return;
        }
        if self.alive.insert(coordinator, now).is_none() {
            tracing::info!(%coordinator, "a tailnet coordinator's heartbeats (re)started");
            self.reconcile_coordinator(coordinator, out);
        }
    }

    /// Coordinators silent for the timeout at `now` are dead: their peers' rows count as lost.
    pub fn expire(&mut self, now: Instant, out: &mut Out) {
        let dead: Vec<Uuid> = self
            .alive
            .iter()
            .filter(|(_, seen)| now.saturating_duration_since(**seen) >= self.timeout)
            .map(|(c, _)| *c)
            .collect();
        for coordinator in dead {
            tracing::warn!(%coordinator, "a tailnet coordinator missed its heartbeats; its peers are lost");
            self.alive.remove(&coordinator);
            self.reconcile_coordinator(coordinator, out);
        }
    }

    /// When the next coordinator falls silent for the timeout, if none beats before.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.alive.values().min().map(|seen| *seen + self.timeout)
    }

    fn reconcile_coordinator(&mut self, coordinator: Uuid, out: &mut Out) {
        let peers: Vec<Uuid> = self
            .rows
            .iter()
            .filter(|(_, rows)| rows.iter().any(|r| r.coordinator == coordinator))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in peers {
            self.reconcile(peer, out);
        }
    }

    /// PGCoordinator's best row of `peer`: `(coordinator, Some(node))` for a node, `(coordinator, None)` for lost.
    fn best(&self, peer: Uuid) -> Option<(Uuid, Option<Arc<pb::Node>>)> {
        let mut best: Option<(&Row, bool)> = None;
        for row in self.rows.get(&peer).into_iter().flatten() {
            let node = !row.lost && self.alive.contains_key(&row.coordinator);
            best = match best {
                None => Some((row, node)),
                Some((_, false)) if node => Some((row, node)),
                Some((b, _)) if node && row.updated_at > b.updated_at => Some((row, node)),
                keep => keep,
            };
        }
        best.map(|(row, node)| (row.coordinator, node.then(|| row.node.clone())))
    }

    fn reconcile(&mut self, peer: Uuid, out: &mut Out) {
        match self.best(peer) {
            Some((coordinator, Some(node))) => {
                out.push((coordinator, Event::Node { peer, node }));
                self.shown.insert(peer, coordinator);
                for dst in self.by_src.get(&peer).into_iter().flatten() {
                    let holder = self.tunnels.get(&(peer, *dst)).copied().unwrap_or(coordinator);
                    out.push((holder, Event::AddTunnel { src: peer, dst: *dst }));
                }
            }
            lost_or_gone => {
                if let Some(was) = self.shown.remove(&peer) {
                    let (coordinator, lost) = match lost_or_gone {
                        Some((coordinator, None)) => (coordinator, true),
                        _ => (was, false),
                    };
                    out.push((coordinator, Event::Gone { peer, lost }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i64) -> Arc<pb::Node> {
        Arc::new(pb::Node { id, ..Default::default() })
    }

    fn row(coordinator: Uuid, updated_at: i64, id: i64, lost: bool) -> Row {
        Row { coordinator, updated_at, node: node(id), lost }
    }

    fn kinds(out: &Out) -> Vec<String> {
        out.iter()
            .map(|(_, e)| match e {
                Event::Node { node, .. } => format!("node {}", node.id),
                Event::AddTunnel { .. } => "tunnel".to_owned(),
                Event::RemoveTunnel { .. } => "untunnel".to_owned(),
                Event::Ready { .. } => "ready".to_owned(),
                Event::Gone { lost, .. } => if *lost { "lost" } else { "disconnected" }.to_owned(),
            })
            .collect()
    }

    const TIMEOUT: Duration = Duration::from_secs(6);

    /// A peer's rows as PGCoordinator ranks them: a dead coordinator's row is lost, a node beats a lost row, and a
    /// newer node beats an older one.
    #[test]
    fn the_best_row_is_pgcoordinators() {
        let (me, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let peer = Uuid::new_v4();
        let now = Instant::now();
        let mut m = Mirror::new(me, TIMEOUT);
        let mut out = Out::new();
        m.beat(a, now, &mut out);
        m.beat(b, now, &mut out);
        m.set_peer(peer, vec![row(a, 1, 1, false), row(b, 2, 2, false)], &mut out);
        assert_eq!(kinds(&out), ["node 2"]);
        out.clear();
        // The newer row is lost: the older node still wins.
        m.set_peer(peer, vec![row(a, 1, 1, false), row(b, 2, 2, true)], &mut out);
        assert_eq!(kinds(&out), ["node 1"]);
        out.clear();
        // Only lost rows: lost, once.
        m.set_peer(peer, vec![row(a, 1, 1, true), row(b, 2, 2, true)], &mut out);
        assert_eq!(kinds(&out), ["lost"]);
        out.clear();
        m.set_peer(peer, vec![row(a, 1, 1, true)], &mut out);
        assert!(out.is_empty());
        // Found again, then every row gone: disconnected.
        m.set_peer(peer, vec![row(a, 3, 3, false)], &mut out);
        m.set_peer(peer, Vec::new(), &mut out);
        assert_eq!(kinds(&out), ["node 3", "disconnected"]);
        // Our own rows are the state's, never mirrored.
        out.clear();
        m.set_peer(peer, vec![row(me, 9, 9, false)], &mut out);
        assert!(out.is_empty());
    }

    /// A coordinator that misses its heartbeats loses its peers; when it beats again they are found, with their
    /// tunnels.
    #[test]
    fn a_silent_coordinator_loses_its_peers_until_it_beats_again() {
        let (me, p) = (Uuid::new_v4(), Uuid::new_v4());
        let (client, agent) = (Uuid::new_v4(), Uuid::new_v4());
        let start = Instant::now();
        let mut m = Mirror::new(me, TIMEOUT);
        let mut out = Out::new();
        // Rows of a coordinator not heard from yet are lost: nothing to show.
        m.set_peer(client, vec![row(p, 1, 7, false)], &mut out);
        m.set_tunnel(client, agent, Some(p), &mut out);
        assert!(out.is_empty());
        m.beat(p, start, &mut out);
        assert_eq!(kinds(&out), ["node 7", "tunnel"]);
        assert_eq!(m.next_expiry(), Some(start + TIMEOUT));
        out.clear();
        m.expire(start + TIMEOUT - Duration::from_millis(1), &mut out);
        assert!(out.is_empty());
        m.expire(start + TIMEOUT, &mut out);
        assert_eq!(kinds(&out), ["lost"]);
        assert_eq!(m.next_expiry(), None);
        out.clear();
        m.beat(p, start + TIMEOUT * 2, &mut out);
        assert_eq!(kinds(&out), ["node 7", "tunnel"]);
        out.clear();
        m.set_tunnel(client, agent, None, &mut out);
        assert_eq!(kinds(&out), ["untunnel"]);
    }

    #[test]
    fn replacing_everything_says_what_changed() {
        let (me, p) = (Uuid::new_v4(), Uuid::new_v4());
        let (client, agent, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut m = Mirror::new(me, TIMEOUT);
        let mut out = Out::new();
        m.beat(p, Instant::now(), &mut out);
        m.set_peer(gone, vec![row(p, 1, 1, false)], &mut out);
        m.set_peer(client, vec![row(p, 1, 7, false)], &mut out);
        m.set_tunnel(client, agent, Some(p), &mut out);
        out.clear();
        m.replace_all(vec![(client, row(p, 2, 8, false))], Vec::new(), &mut out);
        let mut got = kinds(&out);
        got.sort();
        assert_eq!(got, ["disconnected", "node 8", "untunnel"]);
        assert_eq!(m.counts(), (1, 1));
    }
}
