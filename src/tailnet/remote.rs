//! Coordination between replicas through the store's pubsub (LISTEN/NOTIFY on PostgreSQL, in-process on SQLite).
//!
//! One channel, [`COORDINATOR_CHANNEL`], carries every replica's events as compact JSON:
//! `{"r":"<replica>","e":"node","p":"<peer>","n":"<base64 of the Node protobuf>"}`, and likewise `tunnel` /
//! `untunnel` / `ready` (`s`, `d`), `gone` (`p`, `lost`) and `hello` (a heartbeat). PostgreSQL refuses NOTIFY
//! payloads of 8000 bytes or more, so a node may be at most [`MAX_NODE_SIZE_FOR_PUBSUB`] bytes encoded: the
//! coordinator's node limit is clamped to it, and a peer sending a larger node is refused with "max node size".
//! Keeping nodes out of a table keeps the database out of the hot path (a node update is one NOTIFY, no write).
//!
//! A publisher task sends what the coordinator queued, in order; a receiver task applies the other replicas'
//! events, answers a replica it has not heard from with our peers' current state (so a replica that starts late,
//! or restarts, learns the picture), sends a heartbeat every `replica_heartbeat` and expires replicas silent for
//! `replica_timeout`. The subscriber queue is the store's (`DEFAULT_SUBSCRIBER_QUEUE`); the receiver only does
//! in-memory work, so it keeps up, and drops are counted by the pubsub.

use std::time::Instant;

use agentwire_store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::coordinator::Coordinator;
use super::replica_wire::{decode, hello, COORDINATOR_CHANNEL};

/// Starts the publisher and the receiver; both end with `stop`.
pub(crate) fn start(
    coordinator: Coordinator,
    store: Store,
    mut outbox: mpsc::Receiver<String>,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let publisher_store = store.clone();
    let publisher_stop = stop.clone();
    let publisher = tokio::spawn(async move {
        loop {
            let payload = tokio::select! {
                _ = publisher_stop.cancelled() => {
                    // The last events (peers lost at shutdown) still go out.
                    while let Ok(payload) = outbox.try_recv() {
                        let _ = publisher_store.pubsub().publish(COORDINATOR_CHANNEL, &payload).await;
                    }
                    return;
                }
                payload = outbox.recv() => match payload { Some(p) => p, None => return },
            };
            if let Err(err) = publisher_store.pubsub().publish(COORDINATOR_CHANNEL, &payload).await {
                tracing::warn!(error = %err, "publishing a coordinator event");
            }
        }
    });
    tokio::spawn(async move {
        let mut sub = loop {
            match store.pubsub().subscribe(COORDINATOR_CHANNEL).await {
                Ok(sub) => break sub,
                Err(err) => {
                    tracing::warn!(error = %err, "subscribing to coordinator events; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let config = coordinator.config().clone();
        let replica = coordinator.replica();
        let mut heartbeat = tokio::time::interval(config.replica_heartbeat);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = heartbeat.tick() => {
                    if let Some(hello) = hello(replica) {
                        coordinator.publish_raw(hello);
                    }
                    coordinator.expire_replicas(Instant::now() - config.replica_timeout);
                }
                payload = sub.recv() => {
                    let Some(payload) = payload else {
                        tracing::warn!("the pubsub closed; coordinator events from other replicas stop");
                        return;
                    };
                    let Some((from, event)) = decode(&payload) else {
                        tracing::warn!(len = payload.len(), "ignoring a malformed coordinator event");
                        continue;
                    };
                    if from == replica {
                        continue;
                    }
                    if coordinator.remote_event(from, event.as_ref()) {
                        tracing::info!(%from, "a coordinator replica appeared; sending it our peers");
                        if let Some(hello) = hello(replica) {
                            coordinator.publish_raw(hello);
                        }
                        for event in coordinator.snapshot() {
                            coordinator.publish(&event);
                        }
                    }
                }
            }
        }
    });
    Some(publisher)
}
