//! The embedded DERP relay's frame decoder ([`agentwire::derp::frame::Decoder`]) on what a hostile client may send.
//!
//! # Input format
//!
//! `[flags] [chunk] [stream…]`: bit 0 of `flags` starts past the login (else the first frame must be ClientInfo),
//! bit 1 picks small limits (256-byte packets, 512-byte client info) so the limits are reached; `chunk` is the size
//! of the reads the stream arrives in (0: all at once).
//!
//! # Properties
//!
//! * no panic, and the result does not depend on how the stream is cut: the frames decoded and whether it ends in
//!   an error are the same whole and chunked;
//! * what the decoder leaves buffered after `Ok(None)` is under one frame at the limit plus one read: a frame over
//!   its limit is refused from its header and skipped types are never buffered;
//! * every frame decoded re-encodes to bytes that decode to the same frame, within the limits.

use agentwire::derp::frame::{encode_client_frame, ClientFrame, DecodeLimits, Decoder, FrameError, HEADER_LEN};
use bytes::BytesMut;

fn limits(flags: u8) -> DecodeLimits {
    if flags & 2 != 0 {
        DecodeLimits { max_packet_size: 256, max_client_info_size: 512 }
    } else {
        DecodeLimits::default()
    }
}

fn decoder(flags: u8) -> Decoder {
    if flags & 1 != 0 {
        Decoder::logged_in(limits(flags))
    } else {
        Decoder::new(limits(flags))
    }
}

/// The frames of `stream` read `chunk` bytes at a time, and the error that ended it, if any.
fn decode(flags: u8, stream: &[u8], chunk: usize) -> (Vec<ClientFrame>, Option<FrameError>) {
    let limits = limits(flags);
    let most = HEADER_LEN + limits.max_frame_len().max(limits.max_client_info_size);
    let mut decoder = decoder(flags);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return (frames, Some(err)),
            }
        }
        assert!(buf.len() <= most + chunk.max(1), "{} bytes buffered, limit {most}", buf.len());
    }
    (frames, None)
}

pub fn run(data: &[u8]) {
    let [flags, chunk, stream @ ..] = data else { return };
    let whole = decode(*flags, stream, stream.len());
    let chunked = decode(*flags, stream, usize::from(*chunk));
    assert_eq!(whole, chunked, "the cut changed the result");

    let limits = limits(*flags);
    for frame in &whole.0 {
        let mut wire = BytesMut::new();
        encode_client_frame(&mut wire, frame);
        let mut again = match frame {
            ClientFrame::ClientInfo { .. } => Decoder::new(limits),
            _ => Decoder::logged_in(limits),
        };
        assert_eq!(again.decode(&mut wire), Ok(Some(frame.clone())));
        assert!(wire.is_empty());
    }
}
