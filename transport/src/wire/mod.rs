//! The dRPC wire format: bytes ↔ frames ↔ packets. No I/O, no async.

pub mod frame;
pub mod kind;
pub mod packet;
pub mod payload;
pub mod varint;

pub use frame::{Frame, FrameError, Id};
pub use kind::Kind;
pub use packet::{encode_packet, Packet, PacketAssembler, PacketError};
pub use payload::{decode_metadata, encode_metadata, ErrorBody, Metadata, MetadataError, CODE_UNIMPLEMENTED};
