//! Target `drpc_frame`: `Frame::decode` / `decode_slice` / `encode` and `wire::varint`.
//!
//! Input: raw dRPC bytes (a seed is one recorded yamux stream's payload in one direction), no header.
//!
//! Properties, for each frame cap in [`MAXES`]:
//! - every decoded frame respects the cap, re-encodes to at most the bytes it came from (exactly those bytes when
//!   they were canonical), and the re-encoding decodes to an equal frame, with `decode_slice` agreeing;
//! - `Ok(None)` leaves the buffer untouched and holds less than one frame header plus the cap;
//! - feeding the same bytes one at a time, or in pseudo-random chunks, gives the same frames and the same end
//!   (leftover length or error) as decoding them in one piece;
//! - varints: every u64 round-trips with `encoded_len` bytes, every proper prefix asks for more, and `decode`
//!   on arbitrary bytes matches an independent u128 reference, including the `TooLong` and `Overflow` cases.

use agentwire_transport::limits::DEFAULT_MAX_PACKET_SIZE;
use agentwire_transport::wire::frame::{MAX_FRAME_HEADER_LEN, MIN_FRAME_LEN};
use agentwire_transport::wire::varint::{self, VarintError, MAX_VARINT_LEN};
use agentwire_transport::wire::{Frame, FrameError};
use bytes::BytesMut;

use crate::chunks;

pub const MAXES: [usize; 4] = [0, 5, 64, DEFAULT_MAX_PACKET_SIZE];

pub fn run(data: &[u8]) {
    varints(data);
    for max in MAXES {
        let whole = decode_whole(data, max);
        for seed in [1u8, 7] {
            let chunked = decode_chunked(data, max, seed);
            assert_eq!(chunked, whole, "chunking (seed {seed}) changed the outcome at max {max}");
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Frame>,
    /// Ok(bytes left over) or the error that stopped decoding.
    end: Result<usize, FrameError>,
}

fn decode_whole(data: &[u8], max: usize) -> Outcome {
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    let mut offset = 0;
    loop {
        let rest = &data[offset..];
        match Frame::decode(&mut buf, max) {
            Ok(Some(frame)) => {
                let consumed = rest.len() - buf.len();
                check_frame(&frame, &rest[..consumed], max);
                offset += consumed;
                frames.push(frame);
            }
            Ok(None) => {
                assert_eq!(&buf[..], rest, "Ok(None) must leave the buffer untouched");
                assert!(buf.len() < MAX_FRAME_HEADER_LEN + max, "{} bytes waiting at max {max}", buf.len());
                assert_eq!(Frame::decode_slice(rest, max), Ok(None));
                return Outcome { frames, end: Ok(buf.len()) };
            }
            Err(err) => {
                assert_eq!(Frame::decode_slice(rest, max), Err(err.clone()), "decode_slice disagrees");
                if let FrameError::TooLarge { len, max: m } = &err {
                    assert_eq!(*m, max);
                    assert!(*len > max as u64);
                }
                return Outcome { frames, end: Err(err) };
            }
        }
    }
}

fn check_frame(frame: &Frame, original: &[u8], max: usize) {
    assert!(frame.data.len() <= max, "frame of {} bytes past max {max}", frame.data.len());
    assert!(original.len() >= MIN_FRAME_LEN);
    let header = original.len() - frame.data.len();
    assert!(header <= MAX_FRAME_HEADER_LEN);
    assert_eq!(&original[header..], &frame.data[..], "frame data is not the tail of its bytes");
    assert_eq!(Frame::decode_slice(original, max), Ok(Some((frame.clone(), original.len()))));

    let mut encoded = BytesMut::new();
    frame.encode(&mut encoded);
    assert_eq!(encoded.len(), frame.encoded_len());
    // Non-canonical (padded) varints decode but re-encode shorter; same length means the same bytes.
    assert!(encoded.len() <= original.len(), "re-encoding grew: {} > {}", encoded.len(), original.len());
    if encoded.len() == original.len() {
        assert_eq!(&encoded[..], original, "same-length re-encoding differs");
    }
    let mut again = encoded.clone();
    assert_eq!(Frame::decode(&mut again, max), Ok(Some(frame.clone())), "re-encoded frame decodes differently");
    assert!(again.is_empty());
    // A canonical encoding must also fit a cap of exactly its data length.
    let mut tight = encoded;
    assert_eq!(Frame::decode(&mut tight, frame.data.len()), Ok(Some(frame.clone())));
}

fn decode_chunked(data: &[u8], max: usize, seed: u8) -> Outcome {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks(data, seed) {
        buf.extend_from_slice(chunk);
        loop {
            match Frame::decode(&mut buf, max) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => return Outcome { frames, end: Err(err) },
            }
        }
    }
    Outcome { frames, end: Ok(buf.len()) }
}

fn varints(data: &[u8]) {
    for chunk in data.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        let v = u64::from_le_bytes(b);
        varint_round_trip(v);
        // Random u64s are nearly all 10 bytes long; a shift reaches every length.
        varint_round_trip(v >> (b[0] & 63));
    }
    for start in 0..data.len().min(32) {
        varint_against_reference(&data[start..]);
    }
    varint_against_reference(&[]);
}

fn varint_round_trip(v: u64) {
    let mut enc = Vec::new();
    varint::encode(v, &mut enc);
    assert_eq!(enc.len(), varint::encoded_len(v), "encoded_len({v})");
    assert!((1..=MAX_VARINT_LEN).contains(&enc.len()));
    assert!(enc.len() == 1 || *enc.last().unwrap() != 0, "non-canonical encoding of {v}");
    assert_eq!(varint::decode(&enc), Ok(Some((v, enc.len()))));
    for cut in 0..enc.len() {
        assert_eq!(varint::decode(&enc[..cut]), Ok(None), "prefix {cut} of {v}");
    }
    enc.push(0xff);
    assert_eq!(varint::decode(&enc), Ok(Some((v, enc.len() - 1))), "trailing byte changed {v}");
}

/// drpcwire's rules, stated independently: groups of 7 bits, low first, at most 10 bytes, no bits past 64.
fn reference_decode(buf: &[u8]) -> Result<Option<(u64, usize)>, VarintError> {
    let mut acc: u128 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        acc |= u128::from(byte & 0x7f) << (7 * i);
        if acc > u128::from(u64::MAX) {
            return Err(VarintError::Overflow);
        }
        if byte & 0x80 == 0 {
            return Ok(Some((acc as u64, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Err(VarintError::TooLong)
    } else {
        Ok(None)
    }
}

fn varint_against_reference(buf: &[u8]) {
    let got = varint::decode(buf);
    assert_eq!(got, reference_decode(buf), "varint::decode({buf:02x?})");
    if let Ok(Some((v, n))) = got {
        let mut enc = Vec::new();
        varint::encode(v, &mut enc);
        assert!(enc.len() <= n);
        if enc.len() == n {
            assert_eq!(&enc[..], &buf[..n]);
        }
    }
}
