//! Frames → packets (`PacketAssembler`, drpcwire's `Reader.ReadPacketUsing`) and packets → frames (`encode_packet`,
//! drpcwire's `SplitFrame`).

use bytes::{Bytes, BytesMut};

use super::frame::{encode_frame, Frame, Id};
use super::kind::Kind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub id: Id,
    pub kind: Kind,
    /// True when any frame of the packet carried the Control flag ("ignore me if you do not understand me").
    pub control: bool,
    pub data: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// A frame whose (stream, message) id is below one already seen: drpcwire tears the connection down.
    #[error("id monotonicity violation")]
    IdMonotonicity { got: Id, expected_at_least: Id },
    /// The same id with another kind mid-packet.
    #[error("packet kind change")]
    KindChange { id: Id },
    /// The reassembled packet grew past the limit.
    #[error("data overflow")]
    DataOverflow { max: usize },
    /// The peer used message id u64::MAX: nothing can follow it without an id going down.
    #[error("message id space exhausted")]
    IdExhausted { id: Id },
}

#[derive(Debug)]
struct Partial {
    id: Id,
    kind: Kind,
    control: bool,
    data: BytesMut,
}

/// Reassembles packets from frames, with drpcwire's rules, quoted where they are enforced.
#[derive(Debug)]
pub struct PacketAssembler {
    /// The lowest id a frame may carry. Starts at <1,1>, as drpcwire's reader does.
    next: Id,
    partial: Option<Partial>,
    max_packet_size: usize,
}

impl PacketAssembler {
    pub fn new(max_packet_size: usize) -> Self {
        PacketAssembler { next: Id::new(1, 1), partial: None, max_packet_size }
    }

    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Bytes held for a packet not yet complete.
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.len())
    }

    /// Memory held for a packet not yet complete: its buffer's capacity, which growth may take past what arrived.
    pub fn buffered_capacity(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.capacity())
    }

    pub fn push(&mut self, frame: Frame) -> Result<Option<Packet>, PacketError> {
        // "id monotonicity violation": ids only go up, per direction.
        if frame.id < self.next {
            return Err(PacketError::IdMonotonicity { got: frame.id, expected_at_least: self.next });
        }
        let continues = matches!(&self.partial, Some(p) if p.id == frame.id);
        if !continues {
            // A new id starts a new packet; a partial packet of an older id is thrown away on purpose
            // (drpcwire: "When a new ID is read, the old data is discarded").
            self.next = frame.id;
            if frame.done {
                // Fast path, nearly every packet: one frame, no copy.
                if frame.data.len() > self.max_packet_size {
                    return Err(PacketError::DataOverflow { max: self.max_packet_size });
                }
                self.partial = None;
                self.advance(frame.id)?;
                return Ok(Some(Packet { id: frame.id, kind: frame.kind, control: frame.control, data: frame.data }));
            }
            self.partial =
                Some(Partial { id: frame.id, kind: frame.kind, control: frame.control, data: BytesMut::new() });
        }
        let Some(partial) = self.partial.as_mut() else {
            unreachable!("a partial packet was just ensured");
        };
        if partial.kind != frame.kind {
            return Err(PacketError::KindChange { id: frame.id });
        }
        if partial.data.len() + frame.data.len() > self.max_packet_size {
            return Err(PacketError::DataOverflow { max: self.max_packet_size });
        }
        partial.data.extend_from_slice(&frame.data);
        partial.control |= frame.control;
        if !frame.done {
            return Ok(None);
        }
        let Some(done) = self.partial.take() else {
            unreachable!("checked above");
        };
        self.advance(done.id)?;
        Ok(Some(Packet { id: done.id, kind: done.kind, control: done.control, data: done.data.freeze() }))
    }

    /// Checks a frame from its header alone, before its data is buffered, with the rules `push` applies once the
    /// frame is whole: an id below the last one fails, and so does a frame that would take its packet past the cap.
    /// A partial packet of another id is dropped now rather than when the frame completes (drpcwire drops it then);
    /// either way it is never delivered. So the partial packet and the frame being read never hold more than the
    /// cap between them.
    pub fn admit(&mut self, id: Id, data_len: usize) -> Result<(), PacketError> {
        if id < self.next {
            return Err(PacketError::IdMonotonicity { got: id, expected_at_least: self.next });
        }
        match &self.partial {
            Some(partial) if partial.id == id && partial.data.len() + data_len > self.max_packet_size => {
                Err(PacketError::DataOverflow { max: self.max_packet_size })
            }
            Some(partial) if partial.id != id => {
                self.partial = None;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// "increment the message id so that we do not accept any frames with the same id".
    fn advance(&mut self, finished: Id) -> Result<(), PacketError> {
        let message = finished.message.checked_add(1).ok_or(PacketError::IdExhausted { id: finished })?;
        self.next = Id::new(finished.stream, message);
        Ok(())
    }
}

/// Appends `data` as one packet. Invoke, InvokeMetadata and Message bodies are cut at `split_size`; every other
/// kind goes as a single frame, as drpc sends them. An empty body is still one frame.
pub fn encode_packet(dst: &mut BytesMut, id: Id, kind: Kind, data: &[u8], split_size: usize) {
    let control = kind.sent_as_control();
    let splittable = matches!(kind, Kind::Invoke | Kind::InvokeMetadata | Kind::Message);
    let split = if splittable { split_size.max(1) } else { usize::MAX };
    let mut rest = data;
    loop {
        let take = rest.len().min(split);
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let done = rest.is_empty();
        encode_frame(dst, id, kind, control, done, chunk);
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::Frame;

    fn frames(buf: &mut BytesMut) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = Frame::decode(buf, usize::MAX >> 1).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn seventy_thousand_bytes_split_as_go_does() {
        let body = vec![7u8; 70_000];
        let mut buf = BytesMut::new();
        encode_packet(&mut buf, Id::new(1, 2), Kind::Message, &body, 64 * 1024);
        assert_eq!(&buf[..6], &[0x04, 0x01, 0x02, 0x80, 0x80, 0x04]);
        assert_eq!(&buf[6 + 65536..6 + 65536 + 5], &[0x05, 0x01, 0x02, 0xf0, 0x22]);
        let fs = frames(&mut buf);
        assert_eq!(fs.len(), 2);
        let mut asm = PacketAssembler::new(4 << 20);
        assert_eq!(asm.push(fs[0].clone()), Ok(None));
        let pkt = asm.push(fs[1].clone()).unwrap().unwrap();
        assert_eq!(pkt.data.len(), 70_000);
    }

    #[test]
    fn empty_message_is_one_frame_and_cancel_carries_control() {
        let mut buf = BytesMut::new();
        encode_packet(&mut buf, Id::new(1, 2), Kind::Message, b"", 64 * 1024);
        assert_eq!(&buf[..], &[0x05, 0x01, 0x02, 0x00]);
        buf.clear();
        encode_packet(&mut buf, Id::new(1, 5), Kind::Cancel, b"", 64 * 1024);
        assert_eq!(&buf[..], &[0x89, 0x01, 0x05, 0x00]);
    }

    fn frame(stream: u64, message: u64, kind: Kind, done: bool, data: &'static [u8]) -> Frame {
        Frame { id: Id::new(stream, message), kind, control: false, done, data: Bytes::from_static(data) }
    }

    #[test]
    fn ids_never_go_down() {
        let mut asm = PacketAssembler::new(100);
        assert!(asm.push(frame(1, 1, Kind::Invoke, true, b"/a")).unwrap().is_some());
        // the finished id may not be reused
        assert!(matches!(asm.push(frame(1, 1, Kind::Message, true, b"")), Err(PacketError::IdMonotonicity { .. })));
        let mut asm = PacketAssembler::new(100);
        assert!(matches!(asm.push(frame(0, 5, Kind::Invoke, true, b"")), Err(PacketError::IdMonotonicity { .. })));
    }

    #[test]
    fn kind_change_inside_one_id_is_an_error() {
        let mut asm = PacketAssembler::new(100);
        assert_eq!(asm.push(frame(1, 1, Kind::Message, false, b"ab")), Ok(None));
        assert_eq!(asm.push(frame(1, 1, Kind::Invoke, true, b"c")), Err(PacketError::KindChange { id: Id::new(1, 1) }));
    }

    #[test]
    fn a_new_id_discards_the_unfinished_packet() {
        let mut asm = PacketAssembler::new(100);
        assert_eq!(asm.push(frame(1, 1, Kind::Message, false, b"lost")), Ok(None));
        let pkt = asm.push(frame(1, 3, Kind::Message, true, b"kept")).unwrap().unwrap();
        assert_eq!((pkt.id, &pkt.data[..]), (Id::new(1, 3), &b"kept"[..]));
        assert_eq!(asm.buffered(), 0);
    }

    #[test]
    fn overflow_across_frames_is_refused() {
        let mut asm = PacketAssembler::new(4);
        assert_eq!(asm.push(frame(1, 1, Kind::Message, false, b"abc")), Ok(None));
        assert_eq!(asm.push(frame(1, 1, Kind::Message, true, b"de")), Err(PacketError::DataOverflow { max: 4 }));
    }

    #[test]
    fn message_id_exhaustion_is_an_error_not_a_wrap() {
        let mut asm = PacketAssembler::new(4);
        assert!(matches!(asm.push(frame(1, u64::MAX, Kind::Message, true, b"")), Err(PacketError::IdExhausted { .. })));
    }
}
