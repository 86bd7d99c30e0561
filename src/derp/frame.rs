//! DERP's wire format, sans IO: a frame is one type byte, a big-endian `u32` length and that many bytes
//! (tailscale's `derp/derp.go`, protocol version 2).
//!
//! [`Decoder`] reads what a client sends the relay. Each frame type the relay acts on has a length range, checked
//! as soon as the 5-byte header is in, so an oversized frame is refused before a byte of its body is buffered; frame
//! types the relay does not act on are skipped as they stream past, never buffered, as tailscale's server skips
//! them. The `encode_*` functions write what the relay sends, and [`RawDecoder`] reads any frame whole under one
//! length cap (the client side: tests and probes).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::keys::{NodeKey, BOX_OVERHEAD, KEY_LEN, NONCE_LEN};

/// Sent first by the server, before its public key.
pub const MAGIC: [u8; 8] = *b"DERP\xf0\x9f\x94\x91";
/// The protocol version this relay speaks: received packets carry their source key.
pub const PROTOCOL_VERSION: u32 = 2;
/// Type byte plus length.
pub const HEADER_LEN: usize = 5;
/// Largest packet a client may relay (tailscale's `MaxPacketSize`, 64 KiB): payload only, without the
/// destination key in front of it.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 64 << 10;
/// Largest ClientInfo frame (tailscale's 256 KiB): the relay opens and parses it before it trusts the client.
/// A real one is about 100 bytes.
pub const DEFAULT_MAX_CLIENT_INFO_SIZE: usize = 256 << 10;
/// Largest ping payload accepted (tailscale's); 8 bytes are echoed, the rest is room for extensions.
pub const MAX_PING_SIZE: usize = 1000;
/// The ping payload echoed in a pong.
pub const PING_LEN: usize = 8;

/// The frame types of protocol version 2.
pub mod kind {
    pub const SERVER_KEY: u8 = 0x01;
    pub const CLIENT_INFO: u8 = 0x02;
    pub const SERVER_INFO: u8 = 0x03;
    pub const SEND_PACKET: u8 = 0x04;
    pub const RECV_PACKET: u8 = 0x05;
    pub const KEEP_ALIVE: u8 = 0x06;
    pub const NOTE_PREFERRED: u8 = 0x07;
    pub const PEER_GONE: u8 = 0x08;
    pub const PEER_PRESENT: u8 = 0x09;
    pub const FORWARD_PACKET: u8 = 0x0a;
    pub const WATCH_CONNS: u8 = 0x10;
    pub const CLOSE_PEER: u8 = 0x11;
    pub const PING: u8 = 0x12;
    pub const PONG: u8 = 0x13;
    pub const HEALTH: u8 = 0x14;
    pub const RESTARTING: u8 = 0x15;
}

/// Why a peer-gone frame was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerGoneReason {
    /// The peer was connected here and has left.
    Disconnected = 0x00,
    /// A disco packet was sent to a key that is not connected here.
    NotHere = 0x01,
}

/// A frame from a client, as the relay acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// The login: the client's key, then a NaCl box (nonce first) of its JSON info, sealed to the server's key.
    ClientInfo {
        key: NodeKey,
        sealed: Bytes,
    },
    SendPacket {
        dst: NodeKey,
        packet: Bytes,
    },
    NotePreferred(bool),
    /// The first 8 bytes of the payload, to echo.
    Ping([u8; PING_LEN]),
    /// Mesh frames: only for peers holding the mesh key, which this relay does not have, so their arrival ends
    /// the connection as tailscale's "insufficient permissions" does.
    ForwardPacket {
        src: NodeKey,
        dst: NodeKey,
        packet: Bytes,
    },
    WatchConns,
    ClosePeer(NodeKey),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame type {kind:#04x} with {len} bytes: {why}")]
    BadLength { kind: u8, len: u32, why: &'static str },
    #[error("the first frame is type {0:#04x}, not ClientInfo")]
    NotLogin(u8),
}

/// The limits a [`Decoder`] holds client frames to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// See [`DEFAULT_MAX_PACKET_SIZE`].
    pub max_packet_size: usize,
    /// See [`DEFAULT_MAX_CLIENT_INFO_SIZE`].
    pub max_client_info_size: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_packet_size: DEFAULT_MAX_PACKET_SIZE, max_client_info_size: DEFAULT_MAX_CLIENT_INFO_SIZE }
    }
}

impl DecodeLimits {
    /// The largest frame body a logged-in client may send: what its reader holds at most, beyond one read.
    pub fn max_frame_len(&self) -> usize {
        2 * KEY_LEN + self.max_packet_size
    }

    /// The body lengths accepted for `kind` after the login, or `None` for a type the relay skips.
    fn range(&self, kind: u8) -> Option<(usize, usize)> {
        Some(match kind {
            kind::SEND_PACKET => (KEY_LEN, KEY_LEN + self.max_packet_size),
            kind::FORWARD_PACKET => (2 * KEY_LEN, 2 * KEY_LEN + self.max_packet_size),
            kind::NOTE_PREFERRED => (1, 1),
            kind::PING => (PING_LEN, MAX_PING_SIZE),
            kind::WATCH_CONNS => (0, 0),
            kind::CLOSE_PEER => (KEY_LEN, KEY_LEN),
            _ => return None,
        })
    }
}

/// Reads client frames from a byte buffer that the caller fills. The first frame must be the login (ClientInfo),
/// as in tailscale's `recvClientKey`; after it, a ClientInfo frame is one more type to skip.
#[derive(Debug)]
pub struct Decoder {
    limits: DecodeLimits,
    logged_in: bool,
    /// Bytes of a skipped frame still to come.
    skip: u64,
    /// Frames skipped so far (types the relay does not act on).
    skipped: u64,
}

impl Decoder {
    /// A decoder expecting the login first.
    pub fn new(limits: DecodeLimits) -> Self {
        Decoder { limits, logged_in: false, skip: 0, skipped: 0 }
    }

    /// A decoder past the login (tests, the fuzz target).
    pub fn logged_in(limits: DecodeLimits) -> Self {
        Decoder { logged_in: true, ..Self::new(limits) }
    }

    /// The next whole frame in `buf` (consumed), or `None` when more bytes are needed. An error means the stream
    /// is broken: the connection ends.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ClientFrame>, FrameError> {
        loop {
            if self.skip > 0 {
                let n = usize::try_from(self.skip).unwrap_or(usize::MAX).min(buf.len());
                buf.advance(n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    return Ok(None);
                }
            }
            if buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let kind = buf[0];
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            let range = if self.logged_in {
                self.limits.range(kind)
            } else if kind == kind::CLIENT_INFO {
                Some((KEY_LEN + NONCE_LEN + BOX_OVERHEAD, self.limits.max_client_info_size))
            } else {
                return Err(FrameError::NotLogin(kind));
            };
            let Some((min, max)) = range else {
                buf.advance(HEADER_LEN);
                self.skip = u64::from(len);
                self.skipped += 1;
                continue;
            };
            let body = len as usize;
            if body < min {
                return Err(FrameError::BadLength { kind, len, why: "too short" });
            }
            if body > max {
                return Err(FrameError::BadLength { kind, len, why: "over the limit" });
            }
            if buf.len() < HEADER_LEN + body {
                // The whole frame, so the caller's reads need not be smaller than it.
                buf.reserve(HEADER_LEN + body - buf.len());
                return Ok(None);
            }
            buf.advance(HEADER_LEN);
            let body = buf.split_to(body).freeze();
            self.logged_in = true;
            return Ok(Some(parse(kind, body)));
        }
    }

    /// Frames of types the relay does not act on, skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// A body whose length `range` has accepted.
fn parse(kind: u8, mut body: Bytes) -> ClientFrame {
    match kind {
        kind::CLIENT_INFO => {
            let key = take_key(&mut body);
            ClientFrame::ClientInfo { key, sealed: body }
        }
        kind::SEND_PACKET => {
            let dst = take_key(&mut body);
            ClientFrame::SendPacket { dst, packet: body }
        }
        kind::FORWARD_PACKET => {
            let src = take_key(&mut body);
            let dst = take_key(&mut body);
            ClientFrame::ForwardPacket { src, dst, packet: body }
        }
        kind::NOTE_PREFERRED => ClientFrame::NotePreferred(body[0] != 0),
        kind::PING => {
            let mut ping = [0; PING_LEN];
            ping.copy_from_slice(&body[..PING_LEN]);
            ClientFrame::Ping(ping)
        }
        kind::WATCH_CONNS => ClientFrame::WatchConns,
        _ => ClientFrame::ClosePeer(take_key(&mut body)),
    }
}

fn take_key(body: &mut Bytes) -> NodeKey {
    let mut key = [0; KEY_LEN];
    key.copy_from_slice(&body[..KEY_LEN]);
    body.advance(KEY_LEN);
    NodeKey(key)
}

/// Appends a frame header; the caller appends exactly `len` bytes after it.
pub fn put_header(out: &mut BytesMut, kind: u8, len: usize) {
    out.put_u8(kind);
    // Every caller's body is bounded by the decode limits or a constant, all far below 4 GiB.
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Appends a whole frame.
pub fn put_frame(out: &mut BytesMut, kind: u8, body: &[u8]) {
    put_header(out, kind, body.len());
    out.put_slice(body);
}

/// The server's greeting: magic and its public key.
pub fn encode_server_key(out: &mut BytesMut, server: &NodeKey) {
    put_header(out, kind::SERVER_KEY, MAGIC.len() + KEY_LEN);
    out.put_slice(&MAGIC);
    out.put_slice(&server.0);
}

/// The server's info: a NaCl box (nonce first) of its JSON, sealed to the client's key.
pub fn encode_server_info(out: &mut BytesMut, sealed: &[u8]) {
    put_frame(out, kind::SERVER_INFO, sealed);
}

/// A relayed packet, version 2: the source key, then the packet.
pub fn encode_recv_packet(out: &mut BytesMut, src: &NodeKey, packet: &[u8]) {
    put_header(out, kind::RECV_PACKET, KEY_LEN + packet.len());
    out.put_slice(&src.0);
    out.put_slice(packet);
}

pub fn encode_keep_alive(out: &mut BytesMut) {
    put_header(out, kind::KEEP_ALIVE, 0);
}

pub fn encode_pong(out: &mut BytesMut, data: &[u8; PING_LEN]) {
    put_frame(out, kind::PONG, data);
}

pub fn encode_peer_gone(out: &mut BytesMut, peer: &NodeKey, reason: PeerGoneReason) {
    put_header(out, kind::PEER_GONE, KEY_LEN + 1);
    out.put_slice(&peer.0);
    out.put_u8(reason as u8);
}

/// A frame of any type, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: u8,
    pub body: Bytes,
}

/// Reads frames of any type whole, refusing any body over `max_len` (the client side's reader).
#[derive(Debug)]
pub struct RawDecoder {
    pub max_len: usize,
}

impl RawDecoder {
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<RawFrame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len as usize > self.max_len {
            return Err(FrameError::BadLength { kind, len, why: "over the limit" });
        }
        if buf.len() < HEADER_LEN + len as usize {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        Ok(Some(RawFrame { kind, body: buf.split_to(len as usize).freeze() }))
    }
}

/// Encodes `frame` as a client would send it; the inverse of [`Decoder::decode`] (tests, the fuzz target).
pub fn encode_client_frame(out: &mut BytesMut, frame: &ClientFrame) {
    match frame {
        ClientFrame::ClientInfo { key, sealed } => {
            put_header(out, kind::CLIENT_INFO, KEY_LEN + sealed.len());
            out.put_slice(&key.0);
            out.put_slice(sealed);
        }
        ClientFrame::SendPacket { dst, packet } => {
            put_header(out, kind::SEND_PACKET, KEY_LEN + packet.len());
            out.put_slice(&dst.0);
            out.put_slice(packet);
        }
        ClientFrame::ForwardPacket { src, dst, packet } => {
            put_header(out, kind::FORWARD_PACKET, 2 * KEY_LEN + packet.len());
            out.put_slice(&src.0);
            out.put_slice(&dst.0);
            out.put_slice(packet);
        }
        ClientFrame::NotePreferred(preferred) => put_frame(out, kind::NOTE_PREFERRED, &[u8::from(*preferred)]),
        ClientFrame::Ping(data) => put_frame(out, kind::PING, data),
        ClientFrame::WatchConns => put_header(out, kind::WATCH_CONNS, 0),
        ClientFrame::ClosePeer(key) => put_frame(out, kind::CLOSE_PEER, &key.0),
    }
}

/// Whether `packet` looks like a disco message (tailscale's `disco.LooksLikeDiscoWrapper`): such packets find
/// paths between peers and have a queue of their own, so bulk data cannot crowd them out.
pub fn looks_like_disco(packet: &[u8]) -> bool {
    const DISCO_MAGIC: &[u8] = b"TS\xf0\x9f\x92\xac";
    packet.len() >= DISCO_MAGIC.len() + KEY_LEN + NONCE_LEN && packet.starts_with(DISCO_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> NodeKey {
        NodeKey([b; KEY_LEN])
    }

    fn decode_all(bytes: &[u8], limits: DecodeLimits) -> Result<Vec<ClientFrame>, FrameError> {
        let mut decoder = Decoder::logged_in(limits);
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    #[test]
    fn the_magic_is_derp_and_a_key() {
        assert_eq!(MAGIC, [0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91]);
        let mut out = BytesMut::new();
        encode_server_key(&mut out, &key(7));
        assert_eq!(&out[..5], &[kind::SERVER_KEY, 0, 0, 0, 40]);
        assert_eq!(&out[5..13], &MAGIC);
        assert_eq!(&out[13..], &[7; 32]);
    }

    #[test]
    fn server_frames_have_tailscales_layout() {
        let mut out = BytesMut::new();
        encode_recv_packet(&mut out, &key(1), b"hi");
        assert_eq!(&out[..5], &[kind::RECV_PACKET, 0, 0, 0, 34]);
        assert_eq!(&out[5..37], &[1; 32]);
        assert_eq!(&out[37..], b"hi");
        out.clear();
        encode_peer_gone(&mut out, &key(2), PeerGoneReason::NotHere);
        assert_eq!(&out[..5], &[kind::PEER_GONE, 0, 0, 0, 33]);
        assert_eq!(out[37], 1);
        out.clear();
        encode_keep_alive(&mut out);
        encode_pong(&mut out, b"12345678");
        assert_eq!(&out[..], b"\x06\0\0\0\0\x13\0\0\0\x0812345678");
    }

    #[test]
    fn every_client_frame_round_trips_whole_and_byte_by_byte() {
        let frames = vec![
            ClientFrame::ClientInfo { key: key(1), sealed: Bytes::from(vec![9; NONCE_LEN + BOX_OVERHEAD + 13]) },
            ClientFrame::SendPacket { dst: key(2), packet: Bytes::from_static(b"packet") },
            ClientFrame::SendPacket { dst: key(3), packet: Bytes::new() },
            ClientFrame::ForwardPacket { src: key(4), dst: key(5), packet: Bytes::from_static(b"fwd") },
            ClientFrame::NotePreferred(true),
            ClientFrame::NotePreferred(false),
            ClientFrame::Ping(*b"pingping"),
            ClientFrame::WatchConns,
            ClientFrame::ClosePeer(key(6)),
        ];
        let mut wire = BytesMut::new();
        for frame in &frames {
            encode_client_frame(&mut wire, frame);
        }
        let mut decoder = Decoder::new(DecodeLimits::default());
        let mut buf = wire.clone();
        let mut got = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            got.push(frame);
        }
        assert_eq!(got, frames);

        let mut decoder = Decoder::new(DecodeLimits::default());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn unknown_and_server_only_types_are_skipped_without_buffering() {
        let mut wire = BytesMut::new();
        put_frame(&mut wire, 0x7f, &[1; 100]);
        put_frame(&mut wire, kind::PONG, b"12345678");
        put_frame(&mut wire, kind::KEEP_ALIVE, &[]);
        encode_client_frame(&mut wire, &ClientFrame::NotePreferred(true));
        let mut decoder = Decoder::logged_in(DecodeLimits::default());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            buf.put_slice(chunk);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                got.push(frame);
            }
            // A skipped body never accumulates: at most one partial header waits.
            assert!(buf.len() < HEADER_LEN + 7);
        }
        assert_eq!(got, vec![ClientFrame::NotePreferred(true)]);
        assert_eq!(decoder.skipped(), 3);

        // A 4 GiB unknown frame is skipped as it streams, not refused.
        let mut buf = BytesMut::from(&[0x7e, 0xff, 0xff, 0xff, 0xff, 0, 0][..]);
        let mut decoder = Decoder::logged_in(DecodeLimits::default());
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_packet_is_refused_from_its_header() {
        let limits = DecodeLimits { max_packet_size: 100, ..DecodeLimits::default() };
        let mut wire = BytesMut::new();
        put_header(&mut wire, kind::SEND_PACKET, KEY_LEN + 101);
        // Only the header: the body is never waited for.
        let err = decode_all(&wire, limits).unwrap_err();
        assert!(matches!(err, FrameError::BadLength { kind: kind::SEND_PACKET, len: 133, .. }), "{err}");
        let mut ok = BytesMut::new();
        encode_client_frame(&mut ok, &ClientFrame::SendPacket { dst: key(1), packet: vec![0; 100].into() });
        assert_eq!(decode_all(&ok, limits).unwrap().len(), 1);
        assert_eq!(DecodeLimits::default().max_frame_len(), 64 + (64 << 10));
    }

    #[test]
    fn lengths_outside_a_types_range_are_errors() {
        let cases: &[(u8, usize)] = &[
            (kind::SEND_PACKET, 31),
            (kind::NOTE_PREFERRED, 0),
            (kind::NOTE_PREFERRED, 2),
            (kind::PING, 7),
            (kind::PING, MAX_PING_SIZE + 1),
            (kind::WATCH_CONNS, 1),
            (kind::CLOSE_PEER, 31),
            (kind::FORWARD_PACKET, 63),
        ];
        for &(kind, len) in cases {
            let mut wire = BytesMut::new();
            put_frame(&mut wire, kind, &vec![0; len]);
            assert!(decode_all(&wire, DecodeLimits::default()).is_err(), "type {kind:#x} len {len}");
        }
        for len in [KEY_LEN + NONCE_LEN + BOX_OVERHEAD - 1, DEFAULT_MAX_CLIENT_INFO_SIZE + 1] {
            let mut wire = BytesMut::new();
            put_header(&mut wire, kind::CLIENT_INFO, len);
            let err = Decoder::new(DecodeLimits::default()).decode(&mut wire).unwrap_err();
            assert!(matches!(err, FrameError::BadLength { .. }), "{err}");
        }
        // A long ping echoes its first 8 bytes.
        let mut wire = BytesMut::new();
        put_frame(&mut wire, kind::PING, b"abcdefghXYZ");
        assert_eq!(decode_all(&wire, DecodeLimits::default()).unwrap(), vec![ClientFrame::Ping(*b"abcdefgh")]);
    }

    #[test]
    fn the_login_comes_first_and_only_once() {
        let mut wire = BytesMut::new();
        encode_client_frame(&mut wire, &ClientFrame::NotePreferred(true));
        assert_eq!(
            Decoder::new(DecodeLimits::default()).decode(&mut wire),
            Err(FrameError::NotLogin(kind::NOTE_PREFERRED))
        );

        let login = ClientFrame::ClientInfo { key: key(1), sealed: Bytes::from(vec![0; 100]) };
        let mut wire = BytesMut::new();
        encode_client_frame(&mut wire, &login);
        encode_client_frame(&mut wire, &login);
        encode_client_frame(&mut wire, &ClientFrame::WatchConns);
        let mut decoder = Decoder::new(DecodeLimits::default());
        assert_eq!(decoder.decode(&mut wire), Ok(Some(login)));
        // The second login is skipped.
        assert_eq!(decoder.decode(&mut wire), Ok(Some(ClientFrame::WatchConns)));
        assert_eq!(decoder.skipped(), 1);
    }

    #[test]
    fn the_raw_decoder_caps_every_frame() {
        let decoder = RawDecoder { max_len: 10 };
        let mut buf = BytesMut::new();
        put_frame(&mut buf, kind::HEALTH, b"0123456789");
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().body.len(), 10);
        put_frame(&mut buf, kind::HEALTH, b"0123456789A");
        assert!(decoder.decode(&mut buf).is_err());
    }

    #[test]
    fn disco_packets_are_recognised_by_magic_and_length() {
        let mut packet = b"TS\xf0\x9f\x92\xac".to_vec();
        packet.resize(6 + 32 + 24, 0);
        assert!(looks_like_disco(&packet));
        assert!(!looks_like_disco(&packet[..61]));
        packet[0] = b'X';
        assert!(!looks_like_disco(&packet));
    }
}
