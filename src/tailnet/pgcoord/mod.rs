//! The coordinator as one more coordinator of a Coder HA deployment ([`CoderCoordination::Postgres`]): it speaks
//! enterprise PGCoordinator's protocol (coder v2.30 `enterprise/tailnet/pgcoord.go`) on the Coder database's
//! tailnet tables and channels, so that a client coordinated by a coderd replica and an agent coordinated here find
//! each other, both ways.
//!
//! A replica link ([`start`], a [`super::coordinator::StartLink`]) in place of agentwire's own
//! ([`super::remote`]); the coordinator's state, rules and deliveries are unchanged:
//! * **this coordinator**: a fresh id per start, as `NewPGCoord` takes one, its row in `tailnet_coordinators`
//!   written every [`HEARTBEAT_PERIOD`] (its trigger notifies the others), first before any peer row, which
//!   references it;
//! * **its peers** ([`writer`]): the local peers' events go into `tailnet_peers` (node, status `ok`, or `lost`
//!   when a connection ends without a disconnect, keeping its tunnels) and `tailnet_tunnels`; a disconnect deletes
//!   the peer and its tunnels; each row's trigger tells the other coordinators; ready for handshake is published on
//!   its channel; closing marks every peer lost (`UpdateTailnetPeerStatusByCoordinator`);
//! * **the others' peers** ([`reader`], [`mirror`]): on their notifications the rows are read again and the state
//!   learns their nodes, tunnels, ready for handshake, LOST and DISCONNECTED as from a replica; the coordinator
//!   then delivers to its local peers what PGCoordinator's mapper would;
//! * **a dead coordinator**: one whose heartbeats stop for [`HEARTBEAT_TIMEOUT`] ([`MISSED_HEARTBEATS`] ×
//!   [`HEARTBEAT_PERIOD`], 6 s) has its peers lost here, and when this process is killed, coderd's replicas lose
//!   its peers within the same time; its rows stay until PGCoordinator's cleanup (every [`CLEANUP_PERIOD`], run
//!   here too) deletes coordinators silent for a day, with their peers and tunnels. Until then a peer it held
//!   that later leaves another coordinator gracefully is LOST, not DISCONNECTED: its dead coordinator's row is the
//!   best left, as PGCoordinator ranks rows;
//! * **its own heartbeats failing**: after [`UNHEALTHY_AFTER_FAILED_HEARTBEATS`] in a row the others are about to
//!   think it dead, so, as PGCoordinator's `unhealthyCloseAll`, every local peer is told [`CLOSE_ERR_UNHEALTHY`]
//!   and its stream ended (LOST to the others), and new peers are turned away with the same words until a heartbeat
//!   goes through: they reconnect, to a healthy replica if the front has one.
//!
//! The state holds every peer of the deployment that has a node, as the link to agentwire's own replicas does (a
//! client connecting here gets its agent's node at once): one read per burst of notifications, whatever its size.
//! Notifications are lost while the LISTEN connection is down (PostgreSQL keeps none for a listener that is not
//! there); once the store's pubsub says it listens again, or that a full queue dropped some, everything is read
//! again, as PGCoordinator resyncs on `ErrDroppedMessages`, so a change made in the gap still arrives.

mod mirror;
mod reader;
mod writer;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentwire_store::tailnet::CoderTailnet;
use agentwire_store::{Schema, Store};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::coordinator::{Coordinator, StartLink};
use super::CoderCoordination;

/// PGCoordinator's `HeartbeatPeriod`: how often a coordinator writes its heartbeat.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(2);
/// PGCoordinator's `MissedHeartbeats`: heartbeats a coordinator may miss before it is dead.
pub const MISSED_HEARTBEATS: u32 = 3;
/// A coordinator silent this long is dead and its peers lost: [`MISSED_HEARTBEATS`] × [`HEARTBEAT_PERIOD`].
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(HEARTBEAT_PERIOD.as_secs() * MISSED_HEARTBEATS as u64);
/// PGCoordinator's `cleanupPeriod`: how often the day-old rows of dead coordinators and lost peers are deleted.
pub const CLEANUP_PERIOD: Duration = Duration::from_secs(3600);
/// PGCoordinator's `dbMaxBackoff`: the longest wait before a failed write or read is tried again.
pub const DB_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The first wait before a failed write or read is tried again: cenkalti/backoff's `DefaultInitialInterval`, as
/// PGCoordinator's workers use it.
pub const DB_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// cenkalti/backoff's `DefaultMultiplier`: each further wait is this much longer.
pub const DB_BACKOFF_MULTIPLIER: f64 = 1.5;
/// Failed heartbeats in a row after which PGCoordinator calls itself unhealthy: its `heartbeats.failedHeartbeats`
/// reaching 3 in `sendBeat`, a literal there rather than a constant of the package.
pub const UNHEALTHY_AFTER_FAILED_HEARTBEATS: u32 = 3;
/// PGCoordinator's `CloseErrUnhealthy`: what an unhealthy coordinator tells the peers it closes or turns away.
pub const CLOSE_ERR_UNHEALTHY: &str = "coordinator unhealthy";

/// Why a configuration cannot join PGCoordinator.
pub const AGENTWIRE_SCHEMA_REFUSAL: &str = "--coder-coordination postgres joins coderd's PGCoordinator on a Coder \
     database's tailnet tables; agentwire's own schema has none (use it with --coder-db)";

/// Whether `coordination` can run on a store of `schema`: PGCoordinator's protocol needs Coder's.
pub fn check(coordination: &CoderCoordination, schema: Schema) -> Result<(), &'static str> {
    match (coordination, schema) {
        (CoderCoordination::Postgres, Schema::Agentwire) => Err(AGENTWIRE_SCHEMA_REFUSAL),
        _ => Ok(()),
    }
}

/// The replica link for `coordination` on a store of `schema`, when it is this one. PGCoordinator's protocol on
/// agentwire's own schema is refused (logged; the caller keeps its own link), as [`check`] says.
pub fn link(coordination: &CoderCoordination, schema: Schema) -> Option<StartLink> {
    if *coordination != CoderCoordination::Postgres {
        return None;
    }
    match check(coordination, schema) {
        Ok(()) => Some(start),
        Err(refusal) => {
            tracing::error!("{refusal}; the coordinator joins agentwire's own replicas instead");
            None
        }
    }
}

/// The peers this coordinator holds, as its events say; shared by the writer (which learns them) and the reader
/// (which does not read their changes back).
pub(super) type LocalPeers = Arc<Mutex<HashSet<Uuid>>>;

/// Exponential waits from [`DB_INITIAL_BACKOFF`] by [`DB_BACKOFF_MULTIPLIER`] up to [`DB_MAX_BACKOFF`].
#[derive(Debug, Default)]
pub(super) struct Backoff(Option<Duration>);

impl Backoff {
    pub fn next(&mut self) -> Duration {
        let wait = match self.0 {
            None => DB_INITIAL_BACKOFF,
            Some(last) => last.mul_f64(DB_BACKOFF_MULTIPLIER).min(DB_MAX_BACKOFF),
        };
        self.0 = Some(wait);
        wait
    }
}

/// Starts the heartbeats, the cleanup, the reader and the writer; all end with `stop`. The writer's task is
/// returned: at shutdown it writes what is left and marks this coordinator's peers lost.
pub(crate) fn start(
    coordinator: Coordinator,
    store: Store,
    outbox: mpsc::Receiver<String>,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let me = Uuid::new_v4();
    tracing::info!(
        coordinator = %me,
        replica = %coordinator.replica(),
        "coordinating with coderd's replicas through the Coder database (PGCoordinator's protocol)"
    );
    let tailnet = store.coder_tailnet();
    let (beat_tx, beat_rx) = watch::channel(false);
    let local = LocalPeers::default();
    tokio::spawn(heartbeats(coordinator.clone(), tailnet.clone(), me, beat_tx, stop.clone()));
    tokio::spawn(cleanup(tailnet.clone(), stop.clone()));
    let batch = store.options().subscriber_queue;
    tokio::spawn(reader::run(
        coordinator,
        tailnet.clone(),
        store.pubsub().clone(),
        batch,
        me,
        local.clone(),
        stop.clone(),
    ));
    Some(tokio::spawn(writer::run(tailnet, me, outbox, local, beat_rx, stop)))
}

/// What a heartbeat's outcome turns this coordinator into, when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    Unhealthy,
    Healthy,
}

/// PGCoordinator's count of its own failed heartbeats in a row (`heartbeats.failedHeartbeats`).
#[derive(Debug, Default)]
struct Health {
    failed: u32,
}

impl Health {
    /// One heartbeat's outcome: unhealthy at the [`UNHEALTHY_AFTER_FAILED_HEARTBEATS`]th failure in a row (once, not
    /// again at the next failures), healthy at the first success after that.
    fn beat(&mut self, ok: bool) -> Option<Turn> {
        if ok {
            let was_unhealthy = self.failed >= UNHEALTHY_AFTER_FAILED_HEARTBEATS;
            self.failed = 0;
            return was_unhealthy.then_some(Turn::Healthy);
        }
        self.failed = self.failed.saturating_add(1);
        (self.failed == UNHEALTHY_AFTER_FAILED_HEARTBEATS).then_some(Turn::Unhealthy)
    }
}

/// `UpsertTailnetCoordinator` every [`HEARTBEAT_PERIOD`]; `beat` turns true with the first that succeeds. After
/// [`UNHEALTHY_AFTER_FAILED_HEARTBEATS`] failures in a row the others think this coordinator dead and its peers lost
/// (they need three missed beats too): as PGCoordinator's `unhealthyCloseAll`, every local peer is ended with
/// [`CLOSE_ERR_UNHEALTHY`], so that it reconnects, perhaps to a healthy replica, and new ones are turned away until a
/// heartbeat succeeds again.
async fn heartbeats(
    coordinator: Coordinator,
    tailnet: CoderTailnet,
    me: Uuid,
    beat: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(HEARTBEAT_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health = Health::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let result = tailnet.heartbeat(me).await;
        let turn = health.beat(result.is_ok());
        match (result, turn) {
            (Ok(()), turn) => {
                if turn == Some(Turn::Healthy) {
                    tracing::info!(coordinator = %me, "the tailnet coordinator's heartbeats work again: it takes peers again");
                    coordinator.accept();
                }
                beat.send_if_modified(|b| !std::mem::replace(b, true));
            }
            (Err(err), Some(Turn::Unhealthy)) => {
                tracing::error!(
                    coordinator = %me,
                    error = %err,
                    "the tailnet coordinator failed {UNHEALTHY_AFTER_FAILED_HEARTBEATS} heartbeats and is unhealthy: \
                     its peers are ended and new ones turned away until a heartbeat succeeds"
                );
                coordinator.refuse(CLOSE_ERR_UNHEALTHY);
            }
            (Err(err), _) => {
                tracing::warn!(coordinator = %me, error = %err, "a tailnet coordinator heartbeat failed");
            }
        }
    }
}

/// PGCoordinator's cleanup, at start and every [`CLEANUP_PERIOD`]; a failure waits for the next (the rows only
/// take space).
async fn cleanup(tailnet: CoderTailnet, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CLEANUP_PERIOD);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = tailnet.clean().await {
            tracing::warn!(error = %err, "cleaning up day-old tailnet coordinators, lost peers and tunnels");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_pgcoordinators_cap() {
        let mut b = Backoff::default();
        assert_eq!(b.next(), DB_INITIAL_BACKOFF);
        assert_eq!(b.next(), Duration::from_millis(750));
        assert_eq!((0..20).map(|_| b.next()).last(), Some(DB_MAX_BACKOFF));
    }

    /// Unhealthy once, at the last of PGCoordinator's count of failures in a row; healthy at the next success, and
    /// only after being unhealthy.
    #[test]
    fn health_turns_at_pgcoordinators_count_of_failed_heartbeats() {
        let mut h = Health::default();
        for _ in 1..UNHEALTHY_AFTER_FAILED_HEARTBEATS {
            assert_eq!(h.beat(false), None);
        }
        assert_eq!(h.beat(true), None, "one short, then a success: the count starts again");
        for _ in 1..UNHEALTHY_AFTER_FAILED_HEARTBEATS {
            assert_eq!(h.beat(false), None);
        }
        assert_eq!(h.beat(false), Some(Turn::Unhealthy));
        assert_eq!(h.beat(false), None, "unhealthy once");
        assert_eq!(h.beat(true), Some(Turn::Healthy));
        assert_eq!(h.beat(true), None);
    }

    #[test]
    fn postgres_coordination_needs_coders_schema() {
        assert_eq!(check(&CoderCoordination::Postgres, Schema::Agentwire), Err(AGENTWIRE_SCHEMA_REFUSAL));
        assert!(check(&CoderCoordination::Postgres, Schema::Coder).is_ok());
        assert!(check(&CoderCoordination::Own, Schema::Agentwire).is_ok());
        assert!(link(&CoderCoordination::Postgres, Schema::Agentwire).is_none());
        assert!(link(&CoderCoordination::Own, Schema::Coder).is_none());
        assert!(link(&CoderCoordination::Postgres, Schema::Coder).is_some());
    }
}
