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

use agentwire_store::pubsub::PG_NOTIFY_MAX_PAYLOAD;
use agentwire_store::Store;
use base64::Engine as _;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::coordinator::{Coordinator, Event};
use crate::proto::tailnet::v2 as pb;

/// The pubsub channel of coordinator events.
pub const COORDINATOR_CHANNEL: &str = "tailnet_coordinator";
/// The largest encoded node whose `node` message stays under PostgreSQL's NOTIFY limit: base64 makes 5632 bytes
/// 7510 characters, plus at most ~130 of JSON, ids and replica.
pub const MAX_NODE_SIZE_FOR_PUBSUB: usize = 5632;

#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(with = "uuid_text")]
    r: Uuid,
    #[serde(flatten)]
    e: WireEvent,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
enum WireEvent {
    Hello,
    Node {
        #[serde(with = "uuid_text")]
        p: Uuid,
        n: String,
    },
    Tunnel {
        #[serde(with = "uuid_text")]
        s: Uuid,
        #[serde(with = "uuid_text")]
        d: Uuid,
    },
    Untunnel {
        #[serde(with = "uuid_text")]
        s: Uuid,
        #[serde(with = "uuid_text")]
        d: Uuid,
    },
    Ready {
        #[serde(with = "uuid_text")]
        s: Uuid,
        #[serde(with = "uuid_text")]
        d: Uuid,
    },
    Gone {
        #[serde(with = "uuid_text")]
        p: Uuid,
        lost: bool,
    },
}

/// Uuids as their hyphenated text (the workspace `uuid` has no serde feature enabled).
mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let text = <&str>::deserialize(d)?;
        Uuid::parse_str(text).map_err(serde::de::Error::custom)
    }
}

/// The payload of `event` from `replica`; `None` (logged) if it would not fit in a NOTIFY.
pub fn encode(replica: Uuid, event: &Event) -> Option<String> {
    let e = match event {
        Event::Node { peer, node } => {
            WireEvent::Node { p: *peer, n: base64::engine::general_purpose::STANDARD.encode(node.encode_to_vec()) }
        }
        Event::AddTunnel { src, dst } => WireEvent::Tunnel { s: *src, d: *dst },
        Event::RemoveTunnel { src, dst } => WireEvent::Untunnel { s: *src, d: *dst },
        Event::Ready { src, dst } => WireEvent::Ready { s: *src, d: *dst },
        Event::Gone { peer, lost } => WireEvent::Gone { p: *peer, lost: *lost },
    };
    encode_wire(Wire { r: replica, e })
}

fn encode_wire(wire: Wire) -> Option<String> {
    let payload = serde_json::to_string(&wire).ok()?;
    if payload.len() > PG_NOTIFY_MAX_PAYLOAD {
        tracing::warn!(len = payload.len(), "a coordinator event does not fit in a NOTIFY; not published");
        return None;
    }
    Some(payload)
}

pub fn hello(replica: Uuid) -> Option<String> {
    encode_wire(Wire { r: replica, e: WireEvent::Hello })
}

/// The sending replica and its event (`None` for a heartbeat); `None` if the payload is malformed.
pub fn decode(payload: &str) -> Option<(Uuid, Option<Event>)> {
    let wire: Wire = serde_json::from_str(payload).ok()?;
    let event = match wire.e {
        WireEvent::Hello => None,
        WireEvent::Node { p, n } => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(n).ok()?;
            Some(Event::Node { peer: p, node: std::sync::Arc::new(pb::Node::decode(bytes.as_slice()).ok()?) })
        }
        WireEvent::Tunnel { s, d } => Some(Event::AddTunnel { src: s, dst: d }),
        WireEvent::Untunnel { s, d } => Some(Event::RemoveTunnel { src: s, dst: d }),
        WireEvent::Ready { s, d } => Some(Event::Ready { src: s, dst: d }),
        WireEvent::Gone { p, lost } => Some(Event::Gone { peer: p, lost }),
    };
    Some((wire.r, event))
}

/// Starts the publisher and the receiver; both end with `stop`.
pub(crate) fn start(
    coordinator: Coordinator,
    store: Store,
    mut outbox: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    let publisher_store = store.clone();
    let publisher_stop = stop.clone();
    tokio::spawn(async move {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_fit_a_notify() {
        let (r, p, d) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let node = pb::Node { key: vec![7; MAX_NODE_SIZE_FOR_PUBSUB - 3].into(), ..Default::default() };
        assert_eq!(node.encoded_len(), MAX_NODE_SIZE_FOR_PUBSUB);
        let events = [
            Event::Node { peer: p, node: std::sync::Arc::new(node) },
            Event::AddTunnel { src: p, dst: d },
            Event::RemoveTunnel { src: p, dst: d },
            Event::Ready { src: p, dst: d },
            Event::Gone { peer: p, lost: true },
        ];
        for event in events {
            let payload = encode(r, &event).expect("fits");
            assert!(payload.len() <= PG_NOTIFY_MAX_PAYLOAD, "{}", payload.len());
            assert_eq!(decode(&payload), Some((r, Some(event))));
        }
        assert_eq!(decode(&hello(r).unwrap()), Some((r, None)));
        assert_eq!(decode("{\"r\":1}"), None);
    }
}
