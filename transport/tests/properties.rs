//! Property tests of the sans-IO layers: varints, frames, packet reassembly across arbitrary transport cuts, and
//! the server `Connection` under arbitrary bytes (no panic, bounded buffering).

use agentwire_transport::limits::Limits;
use agentwire_transport::stream::{Connection, Event, Role};
use agentwire_transport::wire::frame::{encode_frame, MAX_FRAME_HEADER_LEN};
use agentwire_transport::wire::kind::Kind;
use agentwire_transport::wire::{encode_packet, varint, Frame, FrameError, Id};
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

const METHOD: &str = "/agentwire.interop.v1.Interop/Unary";

fn packet(id: Id, kind: Kind, data: &[u8], split: usize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_packet(&mut buf, id, kind, data, split);
    buf.to_vec()
}

/// Cuts `bytes` at the given offsets (taken modulo its length, sorted, duplicates kept as empty chunks).
fn cut(bytes: &[u8], offsets: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = offsets.iter().map(|o| o % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut at = 0;
    for p in points {
        chunks.push(bytes[at..p].to_vec());
        at = p;
    }
    chunks.push(bytes[at..].to_vec());
    chunks
}

/// Every event the connection has for us now; panics on a protocol error.
fn drain(conn: &mut Connection) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(event) = conn.poll_event().expect("well-formed input must not be a protocol error") {
        events.push(event);
    }
    events
}

fn server() -> Connection {
    Connection::new(Role::Server, Limits::default())
}

fn invoke_event(stream: u64) -> Event {
    Event::Invoke { stream, method: METHOD.to_owned(), metadata: Default::default() }
}

/// Invoke, Message and CloseSend of stream 1, as a Go client writes a unary call.
fn unary_call(body: &[u8], split: usize) -> Vec<u8> {
    let mut bytes = packet(Id::new(1, 1), Kind::Invoke, METHOD.as_bytes(), split);
    bytes.extend(packet(Id::new(1, 2), Kind::Message, body, split));
    bytes.extend(packet(Id::new(1, 3), Kind::CloseSend, b"", split));
    bytes
}

fn unary_events(body: &[u8]) -> Vec<Event> {
    vec![
        invoke_event(1),
        Event::Message { stream: 1, data: Bytes::copy_from_slice(body) },
        Event::CloseSend { stream: 1 },
    ]
}

/// Feeds `chunks` one at a time, polling after each, and returns every event.
fn feed(conn: &mut Connection, chunks: &[Vec<u8>]) -> Vec<Event> {
    let mut events = Vec::new();
    for chunk in chunks {
        conn.handle_input(chunk);
        events.extend(drain(conn));
    }
    events
}

fn kind_code() -> impl Strategy<Value = u8> {
    0u8..64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn varint_round_trips_for_any_u64(value in any::<u64>()) {
        let mut bytes = Vec::new();
        varint::encode(value, &mut bytes);
        prop_assert_eq!(bytes.len(), varint::encoded_len(value));
        prop_assert!(bytes.len() <= varint::MAX_VARINT_LEN);
        prop_assert_eq!(varint::decode(&bytes), Ok(Some((value, bytes.len()))));
        // Every strict prefix asks for more bytes; trailing bytes are left alone.
        for end in 0..bytes.len() {
            prop_assert_eq!(varint::decode(&bytes[..end]), Ok(None));
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xff, 0x01]);
        prop_assert_eq!(varint::decode(&longer), Ok(Some((value, bytes.len()))));
    }

    #[test]
    fn varint_values_concentrated_near_group_boundaries_round_trip(shift in 0u32..64, delta in 0u64..3) {
        let value = (1u64 << shift).wrapping_sub(1).wrapping_add(delta);
        let mut bytes = Vec::new();
        varint::encode(value, &mut bytes);
        prop_assert_eq!(varint::decode(&bytes), Ok(Some((value, bytes.len()))));
        prop_assert_eq!(bytes.len(), varint::encoded_len(value));
    }

    #[test]
    fn frame_round_trips(
        stream in any::<u64>(),
        message in any::<u64>(),
        code in kind_code(),
        control in any::<bool>(),
        done in any::<bool>(),
        data in vec(any::<u8>(), 0..600),
        trailing in vec(any::<u8>(), 0..8),
    ) {
        let id = Id::new(stream, message);
        let kind = Kind::from_code(code);
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, id, kind, control, done, &data);
        let encoded_len = buf.len();
        let expected = Frame { id, kind, control, done, data: Bytes::from(data.clone()) };
        prop_assert_eq!(expected.encoded_len(), encoded_len);
        prop_assert!(encoded_len <= MAX_FRAME_HEADER_LEN + data.len());
        let mut again = BytesMut::new();
        expected.encode(&mut again);
        prop_assert_eq!(&again[..], &buf[..]);

        // Slice decoding reports how much it took, with bytes of the next frame behind.
        let mut with_tail = buf.to_vec();
        with_tail.extend_from_slice(&trailing);
        let (frame, used) = Frame::decode_slice(&with_tail, data.len()).unwrap().unwrap();
        prop_assert_eq!(&frame, &expected);
        prop_assert_eq!(used, encoded_len);

        // Owned decoding takes exactly the frame off the front.
        let mut owned = BytesMut::from(&with_tail[..]);
        let frame = Frame::decode(&mut owned, data.len()).unwrap().unwrap();
        prop_assert_eq!(frame, expected);
        prop_assert_eq!(&owned[..], &trailing[..]);

        // Any strict prefix waits for more and leaves the buffer as it was.
        for end in 0..encoded_len {
            let mut part = BytesMut::from(&buf[..end]);
            prop_assert_eq!(Frame::decode(&mut part, data.len()), Ok(None));
            prop_assert_eq!(part.len(), end);
        }

        // A declared length one past the cap is refused from the header alone.
        if !data.is_empty() {
            let mut owned = BytesMut::from(&buf[..]);
            let refused = matches!(Frame::decode(&mut owned, data.len() - 1), Err(FrameError::TooLarge { .. }));
            prop_assert!(refused);
        }
    }

    #[test]
    fn a_split_packet_cut_anywhere_yields_exactly_one_message(
        data in vec(any::<u8>(), 0..3000),
        split in 1usize..700,
        offsets in vec(any::<usize>(), 0..12),
    ) {
        let mut conn = server();
        conn.handle_input(&packet(Id::new(1, 1), Kind::Invoke, METHOD.as_bytes(), split));
        prop_assert_eq!(drain(&mut conn), vec![invoke_event(1)]);

        let bytes = packet(Id::new(1, 2), Kind::Message, &data, split);
        let events = feed(&mut conn, &cut(&bytes, &offsets));
        prop_assert_eq!(events, vec![Event::Message { stream: 1, data: Bytes::from(data) }]);
        prop_assert_eq!(conn.buffered_input(), 0);
        prop_assert_eq!(conn.active_stream(), Some(1));
    }

    #[test]
    fn a_unary_call_cut_anywhere_yields_invoke_message_close_send(
        body in vec(any::<u8>(), 0..2000),
        split in 1usize..500,
        offsets in vec(any::<usize>(), 0..16),
    ) {
        let mut conn = server();
        let events = feed(&mut conn, &cut(&unary_call(&body, split), &offsets));
        prop_assert_eq!(events, unary_events(&body));
        prop_assert_eq!(conn.buffered_input(), 0);
    }

    /// Arbitrary bytes, in arbitrary chunks, with a small packet cap so overflows are reachable: no panic, and what
    /// the connection holds never exceeds one frame (header and data) plus the chunk just fed.
    #[test]
    fn arbitrary_bytes_never_panic_and_buffering_stays_bounded(
        max_packet_size in 1usize..300,
        chunks in vec(vec(any::<u8>(), 0..200), 0..40),
    ) {
        check_bounded(max_packet_size, &chunks)?;
    }

    /// The same with chunks made of plausible frames (valid control bytes, small ids, lengths near the cap, Done
    /// often unset), which reach the reassembly paths that random bytes rarely do.
    #[test]
    fn frame_shaped_bytes_never_panic_and_buffering_stays_bounded(
        max_packet_size in 1usize..300,
        frames in vec(
            (0u64..4, 0u64..6, kind_code(), any::<bool>(), any::<bool>(), 0usize..320, 0usize..3, any::<u64>()),
            0..40,
        ),
        offsets in vec(any::<usize>(), 0..20),
    ) {
        let mut bytes = BytesMut::new();
        for (stream, message, code, control, done, len, mangle, seed) in frames {
            let data: Vec<u8> = (0..len).map(|i| (seed >> (i % 64)) as u8).collect();
            let start = bytes.len();
            encode_frame(&mut bytes, Id::new(stream, message), Kind::from_code(code), control, done, &data);
            match mangle {
                // Truncate the frame: what follows is read as its data.
                1 => bytes.truncate(start + (bytes.len() - start) / 2),
                // Stretch a varint past ten bytes.
                2 => bytes.extend_from_slice(&[0x80; 11]),
                _ => {}
            }
        }
        let chunks = cut(&bytes, &offsets);
        check_bounded(max_packet_size, &chunks)?;
    }
}

fn check_bounded(max_packet_size: usize, chunks: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let limits = Limits { max_packet_size, ..Limits::default() };
    let mut conn = Connection::new(Role::Server, limits);
    let mut failed = None;
    for chunk in chunks {
        // A driver that ignores the error and keeps feeding must not make the connection grow either.
        conn.handle_input(chunk);
        let bound = max_packet_size + MAX_FRAME_HEADER_LEN + chunk.len();
        prop_assert!(conn.buffered_input() <= bound, "{} buffered > {bound} after feeding", conn.buffered_input());
        loop {
            match conn.poll_event() {
                Ok(Some(event)) => {
                    if let Event::Message { data, .. } = &event {
                        prop_assert!(data.len() <= max_packet_size);
                    }
                    // A server may answer anything; answers are refused when the stream is gone, never a panic.
                    if let Event::Invoke { stream, .. } = event {
                        let _ = conn.send_message(stream, b"reply");
                        let _ = conn.poll_transmit();
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    // Once failed, always failed with the same error.
                    if let Some(first) = &failed {
                        prop_assert_eq!(first, &err);
                    }
                    failed = Some(err);
                    break;
                }
            }
        }
        let bound = max_packet_size + MAX_FRAME_HEADER_LEN;
        prop_assert!(conn.buffered_input() <= bound, "{} buffered > {bound} after polling", conn.buffered_input());
    }
    Ok(())
}

/// Every single and double cut of a small unary call (37 bytes with a 3-byte body), split into frames of 1, 2, 5
/// and 64 KiB: the same three events every time.
#[test]
fn a_small_unary_call_split_at_every_pair_of_offsets() {
    for split in [1usize, 2, 5, 64 * 1024] {
        let bytes = unary_call(b"abc", split);
        let expected = unary_events(b"abc");
        for first in 0..=bytes.len() {
            for second in first..=bytes.len() {
                let chunks = [bytes[..first].to_vec(), bytes[first..second].to_vec(), bytes[second..].to_vec()];
                let mut conn = server();
                assert_eq!(feed(&mut conn, &chunks), expected, "split {split}, cuts at {first} and {second}");
                assert_eq!(conn.buffered_input(), 0);
            }
        }
    }
}

/// The whole call fed one byte at a time: an event appears exactly when the last byte of its packet arrives.
#[test]
fn a_unary_call_fed_byte_by_byte_delivers_each_event_on_its_last_byte() {
    let invoke = packet(Id::new(1, 1), Kind::Invoke, METHOD.as_bytes(), 4);
    let message = packet(Id::new(1, 2), Kind::Message, b"hello", 4);
    let close_send = packet(Id::new(1, 3), Kind::CloseSend, b"", 4);
    let ends = [invoke.len(), invoke.len() + message.len(), invoke.len() + message.len() + close_send.len()];
    let bytes = unary_call(b"hello", 4);
    let expected = unary_events(b"hello");
    let mut conn = server();
    let mut seen = 0;
    for (i, byte) in bytes.iter().enumerate() {
        conn.handle_input(std::slice::from_ref(byte));
        let events = drain(&mut conn);
        if ends.contains(&(i + 1)) {
            assert_eq!(events, vec![expected[seen].clone()], "at byte {}", i + 1);
            seen += 1;
        } else {
            assert!(events.is_empty(), "early event at byte {}: {events:?}", i + 1);
        }
    }
    assert_eq!(seen, 3);
}

/// The largest legal packet (exactly the cap) in 64 KiB frames is delivered; one byte more is "data overflow".
#[test]
fn a_packet_of_exactly_the_cap_passes_and_one_byte_more_overflows() {
    let max = 256 * 1024;
    let limits = Limits { max_packet_size: max, ..Limits::default() };
    for (len, ok) in [(max, true), (max + 1, false)] {
        let mut conn = Connection::new(Role::Server, limits);
        conn.handle_input(&packet(Id::new(1, 1), Kind::Invoke, METHOD.as_bytes(), 64 * 1024));
        conn.handle_input(&packet(Id::new(1, 2), Kind::Message, &vec![7u8; len], 64 * 1024));
        assert_eq!(conn.poll_event().unwrap(), Some(invoke_event(1)));
        match conn.poll_event() {
            Ok(Some(Event::Message { data, .. })) => assert!(ok && data.len() == len),
            Err(err) => assert!(!ok && err.to_string() == "protocol error: data overflow", "{err}"),
            other => panic!("unexpected {other:?} for {len} bytes"),
        }
    }
}

/// The bound above, at its edge: a partial packet just under the cap, then the header of its next frame declaring
/// more than the rest. "data overflow" comes from the header alone, so the partial packet and that frame's data are
/// never held together; the input that arrives after the error is not kept either.
#[test]
fn a_continuation_frame_past_the_cap_fails_from_its_header() {
    let max = 1000;
    let mut conn = Connection::new(Role::Server, Limits { max_packet_size: max, ..Limits::default() });
    conn.handle_input(&packet(Id::new(1, 1), Kind::Invoke, METHOD.as_bytes(), 64));
    assert_eq!(drain(&mut conn), vec![invoke_event(1)]);
    let mut first = BytesMut::new();
    encode_frame(&mut first, Id::new(1, 2), Kind::Message, false, false, &[1u8; 900]);
    conn.handle_input(&first);
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.buffered_input(), 900);
    // The next frame of the same packet declares 101 bytes: 1001 in all. Only its header is sent.
    let mut second = BytesMut::new();
    encode_frame(&mut second, Id::new(1, 2), Kind::Message, false, true, &[2u8; 101]);
    conn.handle_input(&second[..4]);
    let err = conn.poll_event().unwrap_err();
    assert_eq!(err.to_string(), "protocol error: data overflow");
    assert_eq!(conn.buffered_input(), 0);
    conn.handle_input(&second[4..]);
    assert_eq!(conn.buffered_input(), 0);
    assert_eq!(conn.poll_event(), Err(err));
}

/// A frame of a newer id starts a new packet and the unfinished one is dropped (drpcwire's rule): as soon as the
/// newer frame's header is in, not when its data completes.
#[test]
fn a_newer_id_drops_the_unfinished_packet_from_its_header() {
    let mut conn = server();
    conn.handle_input(&packet(Id::new(1, 1), Kind::Invoke, METHOD.as_bytes(), 64));
    assert_eq!(drain(&mut conn), vec![invoke_event(1)]);
    let mut lost = BytesMut::new();
    encode_frame(&mut lost, Id::new(1, 2), Kind::Message, false, false, &[1u8; 500]);
    conn.handle_input(&lost);
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.buffered_input(), 500);
    let kept = packet(Id::new(1, 3), Kind::Message, b"kept", 64);
    conn.handle_input(&kept[..4]);
    assert_eq!(conn.poll_event(), Ok(None));
    assert_eq!(conn.buffered_input(), 4, "the dropped packet is still held");
    conn.handle_input(&kept[4..]);
    assert_eq!(drain(&mut conn), vec![Event::Message { stream: 1, data: Bytes::from_static(b"kept") }]);
}
