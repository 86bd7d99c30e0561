//! yamux frames by hand, for tests that play a peer byte by byte (hashicorp's spec: a 12-byte big-endian header of
//! version, type, flags, stream id and length; only Data frames carry a body).

pub const HEADER_LEN: usize = 12;
pub const TYPE_DATA: u8 = 0;
pub const TYPE_WINDOW_UPDATE: u8 = 1;
pub const TYPE_PING: u8 = 2;
pub const TYPE_GO_AWAY: u8 = 3;
pub const FLAG_SYN: u16 = 1;
pub const FLAG_ACK: u16 = 2;
pub const FLAG_FIN: u16 = 4;
pub const FLAG_RST: u16 = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamuxFrame {
    pub kind: u8,
    pub flags: u16,
    pub stream: u32,
    pub length: u32,
    pub body: Vec<u8>,
    /// The frame exactly as it was on the wire.
    pub raw: Vec<u8>,
}

impl YamuxFrame {
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

pub fn encode(version: u8, kind: u8, flags: u16, stream: u32, length: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![version, kind];
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn data_frame(flags: u16, stream: u32, body: &[u8]) -> Vec<u8> {
    encode(0, TYPE_DATA, flags, stream, body.len() as u32, body)
}

/// Opens a stream with its first bytes, as the `yamux` crate does (hashicorp sends a WindowUpdate SYN first).
pub fn syn_data(stream: u32, body: &[u8]) -> Vec<u8> {
    data_frame(FLAG_SYN, stream, body)
}

pub fn data(stream: u32, body: &[u8]) -> Vec<u8> {
    data_frame(0, stream, body)
}

pub fn window_update(flags: u16, stream: u32, delta: u32) -> Vec<u8> {
    encode(0, TYPE_WINDOW_UPDATE, flags, stream, delta, &[])
}

/// hashicorp's `OpenStream`: a WindowUpdate with SYN and delta 0.
pub fn syn(stream: u32) -> Vec<u8> {
    window_update(FLAG_SYN, stream, 0)
}

/// hashicorp's `Stream.Close`: a WindowUpdate with FIN.
pub fn fin(stream: u32) -> Vec<u8> {
    window_update(FLAG_FIN, stream, 0)
}

pub fn rst(stream: u32) -> Vec<u8> {
    window_update(FLAG_RST, stream, 0)
}

pub fn go_away(code: u32) -> Vec<u8> {
    encode(0, TYPE_GO_AWAY, 0, 0, code, &[])
}

pub fn pong(opaque: u32) -> Vec<u8> {
    encode(0, TYPE_PING, FLAG_ACK, 0, opaque, &[])
}

/// A ping request, as hashicorp's `Ping` sends it.
pub fn ping(opaque: u32) -> Vec<u8> {
    encode(0, TYPE_PING, FLAG_SYN, 0, opaque, &[])
}

/// A Ping frame with any flags, on any stream id.
pub fn ping_with(flags: u16, stream: u32, opaque: u32) -> Vec<u8> {
    encode(0, TYPE_PING, flags, stream, opaque, &[])
}

/// Takes every whole frame off the front of `buf`. Panics on a version other than 0: the peer under test sent
/// something no yamux peer may send.
pub fn parse_frames(buf: &mut Vec<u8>) -> Vec<YamuxFrame> {
    let mut frames = Vec::new();
    loop {
        if buf.len() < HEADER_LEN {
            return frames;
        }
        assert_eq!(buf[0], 0, "a yamux version other than 0");
        let kind = buf[1];
        let flags = u16::from_be_bytes([buf[2], buf[3]]);
        let stream = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let length = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let body_len = if kind == TYPE_DATA { length as usize } else { 0 };
        if buf.len() < HEADER_LEN + body_len {
            return frames;
        }
        let raw: Vec<u8> = buf.drain(..HEADER_LEN + body_len).collect();
        frames.push(YamuxFrame { kind, flags, stream, length, body: raw[HEADER_LEN..].to_vec(), raw });
    }
}
