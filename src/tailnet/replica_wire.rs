//! The wire between replicas: the coordinated state's [`Event`]s and how they travel as pubsub payloads, compact
//! JSON on [`COORDINATOR_CHANNEL`] (`{"r":"<replica>","e":"node","p":"<peer>","n":"<base64 of the Node protobuf>"}`,
//! and likewise `tunnel` / `untunnel` / `ready` (`s`, `d`), `gone` (`p`, `lost`) and `hello`). The coordinator makes
//! and applies events; `remote` carries them.

use std::sync::Arc;

use agentwire_store::pubsub::PG_NOTIFY_MAX_PAYLOAD;
use base64::Engine as _;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::proto::tailnet::v2 as pb;

/// A change to the coordinated state, from a local peer or from another replica.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Node { peer: Uuid, node: Arc<pb::Node> },
    AddTunnel { src: Uuid, dst: Uuid },
    RemoveTunnel { src: Uuid, dst: Uuid },
    Ready { src: Uuid, dst: Uuid },
    Gone { peer: Uuid, lost: bool },
}

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
            Some(Event::Node { peer: p, node: Arc::new(pb::Node::decode(bytes.as_slice()).ok()?) })
        }
        WireEvent::Tunnel { s, d } => Some(Event::AddTunnel { src: s, dst: d }),
        WireEvent::Untunnel { s, d } => Some(Event::RemoveTunnel { src: s, dst: d }),
        WireEvent::Ready { s, d } => Some(Event::Ready { src: s, dst: d }),
        WireEvent::Gone { p, lost } => Some(Event::Gone { peer: p, lost }),
    };
    Some((wire.r, event))
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
            Event::Node { peer: p, node: Arc::new(node) },
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
