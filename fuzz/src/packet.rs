//! Target `drpc_packet`: `PacketAssembler` and `encode_packet`.
//!
//! Input: a config byte `c`, then a mode-specific body.
//! - `c & 1 == 0`, **frames mode**: the body is raw dRPC bytes, decoded into frames (cap `CAPS[(c >> 1) & 7]`)
//!   in chunks chosen by `c >> 4` (see [`crate::chunks`]) and pushed into a `PacketAssembler` with the same cap.
//!   Properties: every packet's data fits the cap; packet ids strictly increase; `buffered()` never passes the
//!   cap; and every push's result (packet, `None` or error) equals that of an independent model of drpcwire's
//!   reader rules (monotonic ids, "a new ID discards the old data", kind change, overflow, id exhaustion).
//! - `c & 1 == 1`, **round-trip mode**: body = kind byte (`& 63`), stream and message ids
//!   ([`crate::Reader::id`]), a cap selector byte (`% 3`: exactly the data length, one less, 4 MiB), then the
//!   packet data. The packet is encoded with `encode_packet` at split size `SPLITS[(c >> 1) & 7]`, its frames are
//!   checked (count, ids, flags, sizes), then fed back at chunk boundaries `c >> 4`: it reassembles to the same
//!   packet, or fails with exactly the error its id or size calls for. A reassembled id cannot be reused.

use agentwire_transport::limits::DEFAULT_MAX_PACKET_SIZE;
use agentwire_transport::wire::{encode_packet, Frame, FrameError, Id, Kind, Packet, PacketAssembler, PacketError};
use bytes::{Bytes, BytesMut};

use crate::{chunks, Reader};

pub const CAPS: [usize; 8] = [0, 1, 4, 16, 64, 256, 4096, DEFAULT_MAX_PACKET_SIZE];
pub const SPLITS: [usize; 8] = [0, 1, 2, 3, 7, 64, 1024, 64 * 1024];

pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let config = r.u8();
    if config & 1 == 0 {
        frames_mode(config, r.rest());
    } else {
        round_trip_mode(config, &mut r);
    }
}

fn frames_mode(config: u8, data: &[u8]) {
    let cap = CAPS[usize::from((config >> 1) & 7)];
    let mut assembler = PacketAssembler::new(cap);
    assert_eq!(assembler.max_packet_size(), cap);
    let mut model = Model::new(cap);
    let mut last: Option<Id> = None;
    let mut buf = BytesMut::new();
    for chunk in chunks(data, config >> 4) {
        buf.extend_from_slice(chunk);
        loop {
            let frame = match Frame::decode(&mut buf, cap) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return,
            };
            let got = assembler.push(frame.clone());
            let want = model.push(&frame);
            assert_eq!(got, want, "assembler and model disagree on {frame:?}");
            match got {
                Ok(packet) => {
                    assert!(assembler.buffered() <= cap, "{} bytes buffered past cap {cap}", assembler.buffered());
                    assert_eq!(assembler.buffered(), model.buffered());
                    if let Some(packet) = packet {
                        assert!(packet.data.len() <= cap, "packet of {} bytes past cap {cap}", packet.data.len());
                        assert!(packet.id >= Id::new(1, 1), "packet id {} below <1,1>", packet.id);
                        if let Some(prev) = last {
                            assert!(packet.id > prev, "packet id {} not above {prev}", packet.id);
                        }
                        last = Some(packet.id);
                    }
                }
                Err(_) => return,
            }
        }
    }
}

/// drpcwire's `Reader.ReadPacketUsing`, restated plainly (no fast path, owned buffers).
struct Model {
    next: Id,
    partial: Option<(Id, Kind, bool, Vec<u8>)>,
    cap: usize,
}

impl Model {
    fn new(cap: usize) -> Self {
        Model { next: Id::new(1, 1), partial: None, cap }
    }

    fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.3.len())
    }

    fn push(&mut self, frame: &Frame) -> Result<Option<Packet>, PacketError> {
        if frame.id < self.next {
            return Err(PacketError::IdMonotonicity { got: frame.id, expected_at_least: self.next });
        }
        if self.partial.as_ref().is_none_or(|p| p.0 != frame.id) {
            self.next = frame.id;
            self.partial = Some((frame.id, frame.kind, frame.control, Vec::new()));
        }
        let partial = self.partial.as_mut().expect("just set");
        if partial.1 != frame.kind {
            return Err(PacketError::KindChange { id: frame.id });
        }
        if partial.3.len() + frame.data.len() > self.cap {
            return Err(PacketError::DataOverflow { max: self.cap });
        }
        partial.3.extend_from_slice(&frame.data);
        partial.2 |= frame.control;
        if !frame.done {
            return Ok(None);
        }
        let (id, kind, control, data) = self.partial.take().expect("present");
        let message = id.message.checked_add(1).ok_or(PacketError::IdExhausted { id })?;
        self.next = Id::new(id.stream, message);
        Ok(Some(Packet { id, kind, control, data: Bytes::from(data) }))
    }
}

#[derive(Debug)]
enum Reassembled {
    Packet(Packet),
    Frame(FrameError),
    Refused(PacketError),
    Incomplete,
}

fn round_trip_mode(config: u8, r: &mut Reader<'_>) {
    let split = SPLITS[usize::from((config >> 1) & 7)];
    let seed = config >> 4;
    let kind = Kind::from_code(r.u8() & 63);
    let id = Id::new(r.id(), r.id());
    let cap_selector = r.u8() % 3;
    let data = r.rest();
    let cap = match cap_selector {
        0 => data.len(),
        1 => data.len().saturating_sub(1),
        _ => DEFAULT_MAX_PACKET_SIZE,
    };

    let mut encoded = BytesMut::new();
    encode_packet(&mut encoded, id, kind, data, split);

    // The frames as written.
    let splittable = matches!(kind, Kind::Invoke | Kind::InvokeMetadata | Kind::Message);
    let effective_split = if splittable { split.max(1) } else { usize::MAX };
    let expected_frames = if splittable { data.len().div_ceil(effective_split).max(1) } else { 1 };
    let mut whole = encoded.clone();
    let mut frames = Vec::new();
    while let Some(frame) = Frame::decode(&mut whole, usize::MAX >> 1).expect("our own encoding must decode") {
        frames.push(frame);
    }
    assert!(whole.is_empty(), "encode_packet left a partial frame");
    assert_eq!(frames.len(), expected_frames, "frame count for {} bytes at split {split}", data.len());
    let mut joined = Vec::with_capacity(data.len());
    for (i, frame) in frames.iter().enumerate() {
        let last = i + 1 == frames.len();
        assert_eq!(frame.id, id);
        assert_eq!(frame.kind, kind);
        assert_eq!(frame.control, kind.sent_as_control());
        assert_eq!(frame.done, last);
        if !last {
            assert_eq!(frame.data.len(), effective_split, "a non-final frame must be full");
        }
        assert!(frame.data.len() <= effective_split);
        joined.extend_from_slice(&frame.data);
    }
    assert_eq!(joined, data);

    // Fed back, as a connection would: frames capped at the packet cap, then the assembler.
    let mut assembler = PacketAssembler::new(cap);
    let mut buf = BytesMut::new();
    let mut outcome = Reassembled::Incomplete;
    'feed: for chunk in chunks(&encoded, seed) {
        buf.extend_from_slice(chunk);
        loop {
            match Frame::decode(&mut buf, cap) {
                Ok(Some(frame)) => match assembler.push(frame) {
                    Ok(Some(packet)) => {
                        outcome = Reassembled::Packet(packet);
                        break 'feed;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        outcome = Reassembled::Refused(err);
                        break 'feed;
                    }
                },
                Ok(None) => break,
                Err(err) => {
                    outcome = Reassembled::Frame(err);
                    break 'feed;
                }
            }
        }
    }

    let first = Id::new(1, 1);
    let too_big = data.len() > cap;
    match outcome {
        Reassembled::Packet(packet) => {
            assert!(id >= first && !too_big && id.message != u64::MAX, "unexpected packet {packet:?}");
            assert_eq!(
                packet,
                Packet { id, kind, control: kind.sent_as_control(), data: Bytes::copy_from_slice(data) }
            );
            assert!(buf.is_empty(), "bytes left after the last frame");
            assert_eq!(assembler.buffered(), 0);
            // The id is used up: any frame of it again is refused.
            assert_eq!(
                assembler.push(frames[0].clone()),
                Err(PacketError::IdMonotonicity { got: id, expected_at_least: Id::new(id.stream, id.message + 1) })
            );
        }
        Reassembled::Frame(FrameError::TooLarge { len, max }) => {
            assert!(too_big, "frame of {len} refused though the packet fits {max}");
            assert_eq!(max, cap);
        }
        Reassembled::Frame(err) => panic!("our own encoding failed to decode: {err}"),
        Reassembled::Refused(PacketError::IdMonotonicity { got, expected_at_least }) => {
            assert!(id < first, "id {id} refused");
            assert_eq!((got, expected_at_least), (id, first));
        }
        Reassembled::Refused(PacketError::DataOverflow { max }) => {
            assert!(too_big, "overflow though {} bytes fit {max}", data.len());
            assert_eq!(max, cap);
        }
        Reassembled::Refused(PacketError::IdExhausted { id: got }) => {
            assert!(id.message == u64::MAX && !too_big && id >= first);
            assert_eq!(got, id);
        }
        Reassembled::Refused(err @ PacketError::KindChange { .. }) => panic!("one packet changed kind: {err}"),
        Reassembled::Incomplete => panic!("a whole encoded packet did not reassemble (id {id}, kind {kind:?})"),
    }
}
