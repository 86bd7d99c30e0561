//! Unsigned LEB128 varints as drpcwire reads and writes them: 7 bits per byte, least significant group first.

use bytes::BufMut;

/// drpcwire stops after 10 bytes ("varint too long"); 10 bytes carry 70 bits, enough for a u64.
pub const MAX_VARINT_LEN: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    #[error("varint too long")]
    TooLong,
    /// Go silently drops the bits past 64; no honest peer sends them, so we refuse instead of guessing.
    #[error("varint overflows u64")]
    Overflow,
}

/// Decodes a varint from the front of `buf`. `Ok(None)` means more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(u64, usize)>, VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        let group = u64::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && group > 1 {
            return Err(VarintError::Overflow);
        }
        value |= group << (7 * i);
        if byte < 0x80 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Err(VarintError::TooLong)
    } else {
        Ok(None)
    }
}

pub fn encode(mut value: u64, dst: &mut impl BufMut) {
    while value >= 0x80 {
        dst.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

pub fn encoded_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    #[test]
    fn known_encodings_match_drpcwire() {
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(4464), [0xf0, 0x22]);
        assert_eq!(enc(65536), [0x80, 0x80, 0x04]);
        assert_eq!(enc(u64::MAX).len(), MAX_VARINT_LEN);
    }

    #[test]
    fn round_trip_and_length() {
        for v in [0, 1, 127, 128, 16383, 16384, 1 << 35, u64::MAX - 1, u64::MAX] {
            let bytes = enc(v);
            assert_eq!(bytes.len(), encoded_len(v), "length of {v}");
            assert_eq!(decode(&bytes), Ok(Some((v, bytes.len()))));
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), Ok(None), "prefix {cut} of {v}");
            }
        }
    }

    #[test]
    fn eleven_bytes_is_too_long_and_bits_past_64_overflow() {
        assert_eq!(decode(&[0x80; 11]), Err(VarintError::TooLong));
        assert_eq!(decode(&[0x80; 10]), Err(VarintError::TooLong));
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(decode(&over), Err(VarintError::Overflow));
    }
}
