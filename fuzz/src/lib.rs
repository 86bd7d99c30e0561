//! The dRPC fuzz targets' logic, shared by the libFuzzer binaries in `fuzz_targets/` and by the replay test in
//! `tests/replay.rs` (which runs every checked-in seed and regression on stable, without libFuzzer).
//!
//! Every target reads a small, documented byte format (see each module) rather than `arbitrary`'s, so that
//! `gen_seeds.py` can write seeds from the recorded Go conversation and a crash input can be read by hand.
//! The typed targets still implement [`arbitrary::Arbitrary`], so `cargo fuzz fmt TARGET FILE` prints the ops.
//!
//! Only `wire` and `stream` are used: this package builds the transport with `default-features = false` (no tokio).

pub mod conn;
pub mod frame;
pub mod packet;

/// A forgiving cursor over fuzz input: reads past the end yield zeros and empty slices, never errors, so every
/// input parses to something.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Little-endian.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for byte in &mut b {
            *byte = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// A compact u64 that reaches the edges cheaply: one byte `t`; `t < 0xfe` is the value itself, `0xfe` is
    /// `u64::MAX`, `0xff` is followed by 8 little-endian bytes.
    pub fn id(&mut self) -> u64 {
        match self.u8() {
            0xfe => u64::MAX,
            0xff => self.u64(),
            t => u64::from(t),
        }
    }

    /// Up to `n` bytes (fewer at the end of input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Cuts `data` into chunks whose sizes depend on `seed` only: 0 is one chunk, 1 is single bytes, anything else a
/// deterministic pseudo-random walk of sizes 1..=4*seed. Used to prove results do not depend on read boundaries.
pub fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    match seed {
        0 => vec![data],
        1 => data.chunks(1).collect(),
        _ => {
            let mut state = u32::from(seed).wrapping_mul(0x9e37_79b9) | 1;
            let mut out = Vec::new();
            let mut rest = data;
            while !rest.is_empty() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let size = 1 + (state % (4 * u32::from(seed))) as usize;
                let (head, tail) = rest.split_at(size.min(rest.len()));
                out.push(head);
                rest = tail;
            }
            out
        }
    }
}
