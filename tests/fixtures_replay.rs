//! Replays the recorded Go conversation (`tests/fixtures/go-wire`, copied from the shared fixtures) against our
//! server, stream by stream, and compares our answers with what the Go server sent, packet by packet and byte for
//! byte. Then decodes the Go server's bytes with our client side.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agentwire::proto::agent::v2 as agent;
use agentwire::proto::tailnet::v2 as tailnet;
use agentwire_transport::server::{Router, Server, ServerConfig};
use agentwire_transport::stream::{Connection, Event, Role};
use agentwire_transport::testing::yamux_frames::*;
use agentwire_transport::wire::{Frame, Kind, Metadata, PacketAssembler};
use agentwire_transport::Limits;
use common::recorded::{call_for_rpc, index, recorded_reply, recorded_service};
use common::{fixture_dir, unhex};
use prost::Message;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// A dRPC packet as the index describes it: kind, message id, body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Packet {
    kind: String,
    message_id: u64,
    data: Vec<u8>,
}

fn kind_name(kind: Kind) -> String {
    format!("{kind:?}")
}

/// Turns one direction of one yamux stream into dRPC packets, as the peer's reader would.
#[derive(Default)]
struct PacketReader {
    buf: bytes::BytesMut,
    assembler: Option<PacketAssembler>,
}

impl PacketReader {
    fn push(&mut self, bytes: &[u8]) -> Vec<Packet> {
        let assembler = self.assembler.get_or_insert_with(|| PacketAssembler::new(4 << 20));
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(frame) = Frame::decode(&mut self.buf, 4 << 20).unwrap() {
            if let Some(p) = assembler.push(frame).unwrap() {
                assert_eq!(p.id.stream, 1, "one dRPC stream per yamux stream");
                out.push(Packet { kind: kind_name(p.kind), message_id: p.id.message, data: p.data.to_vec() });
            }
        }
        out
    }
}

fn recorded_packets(call: &Value, direction: &str) -> Vec<Packet> {
    call[direction]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Packet {
            kind: p["kind"].as_str().unwrap().to_owned(),
            message_id: p["message_id"].as_u64().unwrap(),
            data: unhex(p["data_hex"].as_str().unwrap()),
        })
        .collect()
}

/// What the server sent on one yamux stream.
#[derive(Default)]
struct ServerSide {
    acked: bool,
    fin: bool,
    rst: bool,
    reader: PacketReader,
    packets: Vec<Packet>,
}

struct Peer {
    io: DuplexStream,
    inbound: Vec<u8>,
    streams: BTreeMap<u32, ServerSide>,
    go_aways: usize,
}

impl Peer {
    /// Reads server frames until `done` holds, answering the server's pings as a Go peer would.
    async fn read_until(&mut self, stream: u32, done: impl Fn(&ServerSide) -> bool) {
        let mut chunk = [0u8; 4096];
        loop {
            if self.streams.get(&stream).is_some_and(&done) {
                return;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut chunk))
                .await
                .expect("server went quiet")
                .unwrap();
            assert!(n > 0, "server closed the session");
            self.inbound.extend_from_slice(&chunk[..n]);
            for frame in parse_frames(&mut self.inbound) {
                match frame.kind {
                    TYPE_PING if frame.has(FLAG_SYN) => {
                        let pong = pong(frame.length);
                        self.io.write_all(&pong).await.unwrap();
                    }
                    TYPE_GO_AWAY => self.go_aways += 1,
                    TYPE_DATA | TYPE_WINDOW_UPDATE => {
                        let side = self.streams.entry(frame.stream).or_default();
                        side.acked |= frame.has(FLAG_ACK);
                        side.fin |= frame.has(FLAG_FIN);
                        side.rst |= frame.has(FLAG_RST);
                        let packets = side.reader.push(&frame.body);
                        side.packets.extend(packets);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn reply_complete(side: &ServerSide) -> bool {
    side.packets.iter().any(|p| p.kind == "CloseSend" || p.kind == "Error")
}

#[tokio::test]
async fn our_server_answers_the_recorded_client_like_the_go_server() {
    let index = index();
    let service = recorded_service(&index);
    let mut router = Router::<()>::new();
    agent::register_agent(&mut router, service.clone());
    tailnet::register_tailnet(&mut router, service.clone());
    // Not registered by the Go server of the recording either: the replay must see drpcmux's unknown-rpc error.
    let server = Server::new(router, ServerConfig::default());
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let served =
        tokio::spawn(
            async move { server.serve_session(server_io, (), tokio_util::sync::CancellationToken::new()).await },
        );

    let mut client_bytes = std::fs::read(fixture_dir().join("client_to_server.bin")).unwrap();
    let client_frames = parse_frames(&mut client_bytes);
    assert!(client_bytes.is_empty(), "the recording ends on a frame boundary");
    let mut peer = Peer { io: client_io, inbound: Vec::new(), streams: BTreeMap::new(), go_aways: 0 };

    for call in index["calls"].as_array().unwrap() {
        let stream = call["yamux_stream_id"].as_u64().unwrap() as u32;
        let frames: Vec<&YamuxFrame> = client_frames.iter().filter(|f| f.stream == stream).collect();
        // Send up to and including the frame that completes the client's CloseSend.
        let mut reader = PacketReader::default();
        let mut split = frames.len();
        for (i, frame) in frames.iter().enumerate() {
            if reader.push(&frame.body).iter().any(|p| p.kind == "CloseSend") {
                split = i + 1;
                break;
            }
        }
        assert!(split < frames.len(), "stream {stream}: the client's Close/FIN follow its CloseSend");
        for frame in &frames[..split] {
            peer.io.write_all(&frame.raw).await.unwrap();
        }
        peer.read_until(stream, reply_complete).await;
        for frame in &frames[split..] {
            peer.io.write_all(&frame.raw).await.unwrap();
        }
        peer.read_until(stream, |side| side.fin).await;

        let side = &peer.streams[&stream];
        let name = call["name"].as_str().unwrap();
        assert!(side.acked, "{name}: stream {stream} was never ACKed");
        assert!(side.fin && !side.rst, "{name}: stream {stream} must end with FIN, never RST");
        let expected = recorded_packets(call, "server_to_client");
        assert_eq!(side.packets.len(), expected.len(), "{name}: {:?}", side.packets);
        for (ours, theirs) in side.packets.iter().zip(&expected) {
            assert_eq!((&ours.kind, ours.message_id), (&theirs.kind, theirs.message_id), "{name}: packet kind and id");
            assert_eq!(ours.data, theirs.data, "{name}: {} #{} body", ours.kind, ours.message_id);
        }
        if let Some(code) = call["server_to_client"][0]["error_code"].as_u64() {
            let body = &side.packets[0].data;
            assert_eq!(u64::from_be_bytes(body[..8].try_into().unwrap()), code, "{name}: error code");
        }
    }
    assert_eq!(peer.go_aways, 0);
    // Every stream the recording opened was answered; the session is still alive.
    assert_eq!(peer.streams.len(), index["calls"].as_array().unwrap().len());
    assert!(!served.is_finished());

    // What the handlers received decodes to what the Go client sent.
    let received = service.received.lock().unwrap().join("\n");
    for needle in [
        "state: Starting",
        "state: Ready",
        "key: \"cpu_usage\"",
        "value: \"1.2/4.0 GiB\"",
        "rx_bytes: 1024",
        "session_counts: {\"ssh\": 1}",
        "output: \"harness: startup script running\"",
        "app_name: \"ssh\"",
        "ip: \"127.0.0.1\"",
    ] {
        assert!(received.contains(needle), "decoded requests lack {needle}:\n{received}");
    }
}

#[test]
fn our_client_side_decodes_the_recorded_server_bytes() {
    let index = index();
    let mut server_bytes = std::fs::read(fixture_dir().join("server_to_client.bin")).unwrap();
    let frames = parse_frames(&mut server_bytes);
    assert!(server_bytes.is_empty());
    for call in index["calls"].as_array().unwrap() {
        let stream = call["yamux_stream_id"].as_u64().unwrap() as u32;
        let name = call["name"].as_str().unwrap();
        let mut conn = Connection::new(Role::Client, Limits::default());
        conn.start_call(call["rpc"].as_str().unwrap(), &Metadata::new()).unwrap();
        for frame in frames.iter().filter(|f| f.stream == stream && f.kind == TYPE_DATA) {
            conn.handle_input(&frame.body);
        }
        let mut events = Vec::new();
        while let Some(event) = conn.poll_event().unwrap() {
            events.push(event);
        }
        let expected = recorded_packets(call, "server_to_client");
        assert_eq!(events.len(), expected.len(), "{name}: {events:?}");
        for (event, packet) in events.iter().zip(&expected) {
            match event {
                Event::Message { data, .. } => {
                    assert_eq!(packet.kind, "Message", "{name}");
                    assert_eq!(&data[..], &packet.data[..], "{name}");
                }
                Event::CloseSend { .. } => assert_eq!(packet.kind, "CloseSend", "{name}"),
                Event::Error { error, .. } => {
                    assert_eq!(packet.kind, "Error", "{name}");
                    let recorded = &call["server_to_client"][0];
                    assert_eq!(error.code, recorded["error_code"].as_u64().unwrap(), "{name}");
                    assert_eq!(error.message, recorded["error_message"].as_str().unwrap(), "{name}");
                }
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }

    // And the typed messages decode to what the Go client printed (agentclient.jsonl).
    let manifest: agent::Manifest = recorded_reply(&index, "/coder.agent.v2.Agent/GetManifest", 0);
    assert_eq!(manifest.agent_name, "main");
    assert_eq!(manifest.workspace_name, "harness-ws");
    assert_eq!(manifest.owner_username, "harness-owner");
    assert_eq!(manifest.environment_variables.get("CODER_HARNESS").map(String::as_str), Some("1"));
    assert_eq!(manifest.scripts.len(), 1);
    assert_eq!(manifest.apps[0].slug, "code-server");
    assert_eq!(manifest.metadata.len(), 3);
    let derp = manifest.derp_map.as_ref().unwrap();
    assert_eq!(derp.regions[&1000].region_code, "harness1");
    // Re-encoding gives the Go bytes back: same schema, same field order.
    let call = call_for_rpc(&index, "/coder.agent.v2.Agent/GetManifest");
    let recorded = unhex(call["server_to_client"][0]["data_hex"].as_str().unwrap());
    assert_eq!(manifest.encode_to_vec(), recorded);
}
