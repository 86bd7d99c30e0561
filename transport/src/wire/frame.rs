//! One dRPC frame: control byte, stream id, message id, data length (three varints), data.

use bytes::{BufMut, Bytes, BytesMut};

use super::kind::{ControlByte, Kind};
use super::varint::{self, VarintError};

/// A packet's identity. Ordered stream first, then message, as drpcwire's `ID.Less`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id {
    pub stream: u64,
    pub message: u64,
}

impl Id {
    pub const fn new(stream: u64, message: u64) -> Id {
        Id { stream, message }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{},{}>", self.stream, self.message)
    }
}

/// drpcwire does not try to parse before 4 bytes: a control byte and three one-byte varints.
pub const MIN_FRAME_LEN: usize = 4;

/// The most a frame header can take: control byte and three 10-byte varints.
pub const MAX_FRAME_HEADER_LEN: usize = 1 + 3 * varint::MAX_VARINT_LEN;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: Id,
    pub kind: Kind,
    pub control: bool,
    pub done: bool,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Varint(#[from] VarintError),
    /// drpcwire's "data overflow", raised from the declared length before any of the data is buffered.
    #[error("data overflow")]
    TooLarge { len: u64, max: usize },
}

struct Header {
    control: ControlByte,
    id: Id,
    data_len: usize,
    header_len: usize,
}

fn parse_header(buf: &[u8], max_data_len: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < MIN_FRAME_LEN {
        return Ok(None);
    }
    let control = ControlByte::parse(buf[0]);
    let mut at = 1;
    let mut fields = [0u64; 3];
    for field in &mut fields {
        match varint::decode(&buf[at..])? {
            Some((value, used)) => {
                *field = value;
                at += used;
            }
            None => return Ok(None),
        }
    }
    let [stream, message, len] = fields;
    // Cap first: a declared length past the packet limit is refused before we wait for (or buffer) its bytes.
    if len > max_data_len as u64 {
        return Err(FrameError::TooLarge { len, max: max_data_len });
    }
    Ok(Some(Header { control, id: Id { stream, message }, data_len: len as usize, header_len: at }))
}

/// The id and declared data length of the frame at the front of `buf`, as soon as its header is whole (its data
/// may still be missing). Lets a reader check a frame against the packet it belongs to before buffering its data.
pub fn peek_header(buf: &[u8], max_data_len: usize) -> Result<Option<(Id, usize)>, FrameError> {
    Ok(parse_header(buf, max_data_len)?.map(|header| (header.id, header.data_len)))
}

impl Frame {
    /// Takes one whole frame off the front of `buf`; `Ok(None)` leaves `buf` untouched and asks for more bytes.
    pub fn decode(buf: &mut BytesMut, max_data_len: usize) -> Result<Option<Frame>, FrameError> {
        let Some(header) = parse_header(buf, max_data_len)? else {
            return Ok(None);
        };
        // Nothing is reserved for the declared length: a peer that declares 4 MiB and sends 10 bytes costs 10 bytes.
        if buf.len() - header.header_len < header.data_len {
            return Ok(None);
        }
        let _ = buf.split_to(header.header_len);
        let data = buf.split_to(header.data_len).freeze();
        Ok(Some(Frame {
            id: header.id,
            kind: header.control.kind,
            control: header.control.control,
            done: header.control.done,
            data,
        }))
    }

    /// Same as [`Frame::decode`] on a borrowed slice; returns the frame and how many bytes it took.
    pub fn decode_slice(buf: &[u8], max_data_len: usize) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(header) = parse_header(buf, max_data_len)? else {
            return Ok(None);
        };
        let end = header.header_len + header.data_len;
        if buf.len() < end {
            return Ok(None);
        }
        let frame = Frame {
            id: header.id,
            kind: header.control.kind,
            control: header.control.control,
            done: header.control.done,
            data: Bytes::copy_from_slice(&buf[header.header_len..end]),
        };
        Ok(Some((frame, end)))
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        encode_frame(dst, self.id, self.kind, self.control, self.done, &self.data);
    }

    pub fn encoded_len(&self) -> usize {
        header_len(self.id, self.data.len()) + self.data.len()
    }
}

pub fn header_len(id: Id, data_len: usize) -> usize {
    1 + varint::encoded_len(id.stream) + varint::encoded_len(id.message) + varint::encoded_len(data_len as u64)
}

pub fn encode_frame(dst: &mut BytesMut, id: Id, kind: Kind, control: bool, done: bool, data: &[u8]) {
    dst.reserve(header_len(id, data.len()) + data.len());
    dst.put_u8(ControlByte { kind, control, done }.to_byte());
    varint::encode(id.stream, dst);
    varint::encode(id.message, dst);
    varint::encode(data.len() as u64, dst);
    dst.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_captured_get_manifest_invoke() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x03, 0x01, 0x01, 0x21]);
        buf.extend_from_slice(b"/coder.agent.v2.Agent/GetManifest");
        buf.extend_from_slice(&[0x05, 0x01, 0x02, 0x00]);
        let invoke = Frame::decode(&mut buf, 1 << 22).unwrap().unwrap();
        assert_eq!(invoke.kind, Kind::Invoke);
        assert_eq!(invoke.id, Id::new(1, 1));
        assert!(invoke.done && !invoke.control);
        assert_eq!(&invoke.data[..], b"/coder.agent.v2.Agent/GetManifest");
        let message = Frame::decode(&mut buf, 1 << 22).unwrap().unwrap();
        assert_eq!((message.kind, message.id, message.data.len()), (Kind::Message, Id::new(1, 2), 0));
        assert!(buf.is_empty());
        assert_eq!(Frame::decode(&mut buf, 1 << 22), Ok(None));
    }

    #[test]
    fn incomplete_frames_wait_and_leave_the_buffer_alone() {
        let mut whole = BytesMut::new();
        encode_frame(&mut whole, Id::new(1, 2), Kind::Message, false, true, b"hello");
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(Frame::decode(&mut part, 100), Ok(None), "cut at {cut}");
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn declared_length_over_the_cap_fails_before_buffering() {
        let mut buf = BytesMut::new();
        buf.put_u8(0x05);
        varint::encode(1, &mut buf);
        varint::encode(1, &mut buf);
        varint::encode(u64::MAX, &mut buf);
        assert!(matches!(Frame::decode(&mut buf, 4 << 20), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn a_declared_length_reserves_nothing_before_the_data_arrives() {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(0x03);
        varint::encode(1, &mut buf);
        varint::encode(1, &mut buf);
        varint::encode((4 << 20) - 1024, &mut buf);
        buf.extend_from_slice(b"/coder.agent");
        let capacity = buf.capacity();
        assert_eq!(Frame::decode(&mut buf, 4 << 20), Ok(None));
        assert_eq!(buf.capacity(), capacity, "the buffer grew to the declared length");
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let mut buf = BytesMut::from(&[0x05u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01][..]);
        assert_eq!(Frame::decode(&mut buf, 100), Err(FrameError::Varint(VarintError::TooLong)));
    }
}
