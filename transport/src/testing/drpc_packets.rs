//! dRPC packets and frames by hand, for tests that play a peer byte by byte: each call returns the bytes a Go drpc
//! writer would put on the stream, split into frames of at most 64 KiB as drpcwire does.

use bytes::BytesMut;

use crate::wire::frame::encode_frame;
use crate::wire::{encode_packet, Id, Kind};

/// drpcwire's default split size.
const SPLIT: usize = 64 * 1024;

/// One whole packet of `kind` on dRPC stream `stream`, message `message`.
pub fn packet(stream: u64, message: u64, kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_packet(&mut buf, Id::new(stream, message), kind, body, SPLIT);
    buf.to_vec()
}

/// One raw frame, any control and done bits.
pub fn drpc_frame(stream: u64, message: u64, kind: Kind, control: bool, done: bool, body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_frame(&mut buf, Id::new(stream, message), kind, control, done, body);
    buf.to_vec()
}

pub fn invoke(stream: u64, message: u64, method: &str) -> Vec<u8> {
    packet(stream, message, Kind::Invoke, method.as_bytes())
}

/// Invoke, Message and CloseSend of dRPC stream `stream`, as a Go client writes a unary call.
pub fn unary_on(stream: u64, method: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = invoke(stream, 1, method);
    bytes.extend(packet(stream, 2, Kind::Message, body));
    bytes.extend(packet(stream, 3, Kind::CloseSend, b""));
    bytes
}
