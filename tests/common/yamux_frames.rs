//! A yamux frame reader for tests that play one side of a session by hand, byte by byte.

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

    pub fn encode(kind: u8, flags: u16, stream: u32, length: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0, kind];
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(body);
        out
    }
}

/// Takes every whole frame off the front of `buf`.
pub fn parse_frames(buf: &mut Vec<u8>) -> Vec<YamuxFrame> {
    let mut frames = Vec::new();
    loop {
        if buf.len() < HEADER_LEN {
            return frames;
        }
        assert_eq!(buf[0], 0, "yamux version");
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
