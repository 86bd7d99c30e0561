//! Every limit the dRPC layer enforces, named once.
//!
//! Each limit is a `DEFAULT_*` constant, a field of [`Limits`] with the same name, and a line saying what the peer
//! sees when it is hit. Defaults match storj drpc as Coder configures it (`drpcsdk.DefaultDRPCOptions`).

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

/// Largest packet (reassembled from frames) accepted from the peer. Go drpc's `Reader.MaximumBufferSize`, which
/// Coder sets to 4 MiB. Past it the connection ends with the protocol error "data overflow".
pub const DEFAULT_MAX_PACKET_SIZE: usize = 4 * MIB;

/// Size at which outgoing Invoke, InvokeMetadata and Message bodies are cut into frames. Go drpc's
/// `Stream.SplitSize` default (0 means 64 KiB).
pub const DEFAULT_SPLIT_SIZE: usize = 64 * KIB;

/// Largest InvokeMetadata map accepted, in encoded bytes. Go has no separate cap (the packet cap applies); ours is
/// lower because metadata is held for the whole call and Coder agents never send any.
pub const DEFAULT_MAX_METADATA_SIZE: usize = 64 * KIB;

/// Limits of one dRPC connection (one yamux stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`DEFAULT_MAX_PACKET_SIZE`].
    pub max_packet_size: usize,
    /// See [`DEFAULT_SPLIT_SIZE`]. Must be at least 1.
    pub split_size: usize,
    /// See [`DEFAULT_MAX_METADATA_SIZE`]. Past it the call is refused with "metadata too large".
    pub max_metadata_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            split_size: DEFAULT_SPLIT_SIZE,
            max_metadata_size: DEFAULT_MAX_METADATA_SIZE,
        }
    }
}
