//! Packet bodies with a structure of their own: Error (8-byte big-endian code + text) and InvokeMetadata (a
//! protobuf-shaped `map<string,string>`, decoded as strictly as `drpcmetadata` does).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::varint;

/// `drpcerr.Unimplemented`: what generated `Unimplemented*Server` stubs answer.
pub const CODE_UNIMPLEMENTED: u64 = 12;

/// An Error packet's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: u64,
    pub message: String,
}

impl ErrorBody {
    pub fn encode(code: u64, message: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(8 + message.len());
        out.put_u64(code);
        out.put_slice(message.as_bytes());
        out.freeze()
    }

    /// Go's client turns a body under 8 bytes into an error built from the raw text; we keep the text and say why.
    pub fn decode(data: &[u8]) -> ErrorBody {
        if data.len() < 8 {
            return ErrorBody { code: 0, message: format!("invalid error data: {:?}", String::from_utf8_lossy(data)) };
        }
        let mut code = [0u8; 8];
        code.copy_from_slice(&data[..8]);
        ErrorBody { code: u64::from_be_bytes(code), message: String::from_utf8_lossy(&data[8..]).into_owned() }
    }
}

/// Call metadata (InvokeMetadata). Go keeps a `map[string]string`; a repeated key keeps its last value.
pub type Metadata = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("invalid metadata: {0}")]
    Malformed(&'static str),
}

const TAG_ENTRY: u8 = 0x0a;
const TAG_KEY: u8 = 0x0a;
const TAG_VALUE: u8 = 0x12;

/// Encodes every entry with both fields present, even when empty: drpcmetadata's decoder requires them.
pub fn encode_metadata(metadata: &Metadata) -> Bytes {
    let mut out = BytesMut::new();
    for (key, value) in metadata {
        let entry_len = 1
            + varint::encoded_len(key.len() as u64)
            + key.len()
            + 1
            + varint::encoded_len(value.len() as u64)
            + value.len();
        out.put_u8(TAG_ENTRY);
        varint::encode(entry_len as u64, &mut out);
        out.put_u8(TAG_KEY);
        varint::encode(key.len() as u64, &mut out);
        out.put_slice(key.as_bytes());
        out.put_u8(TAG_VALUE);
        varint::encode(value.len() as u64, &mut out);
        out.put_slice(value.as_bytes());
    }
    out.freeze()
}

fn take_len_prefixed<'a>(buf: &mut &'a [u8], tag: u8, what: &'static str) -> Result<&'a [u8], MetadataError> {
    if buf.first() != Some(&tag) {
        return Err(MetadataError::Malformed(what));
    }
    let (len, used) = varint::decode(&buf[1..])
        .map_err(|_| MetadataError::Malformed("bad length"))?
        .ok_or(MetadataError::Malformed("truncated length"))?;
    let start = 1 + used;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .filter(|&end| end <= buf.len())
        .ok_or(MetadataError::Malformed("truncated field"))?;
    let field = &buf[start..end];
    *buf = &buf[end..];
    Ok(field)
}

pub fn decode_metadata(mut data: &[u8]) -> Result<Metadata, MetadataError> {
    let mut out = Metadata::new();
    while !data.is_empty() {
        let mut entry = take_len_prefixed(&mut data, TAG_ENTRY, "expected an entry")?;
        let key = take_len_prefixed(&mut entry, TAG_KEY, "expected a key")?;
        let value = take_len_prefixed(&mut entry, TAG_VALUE, "expected a value")?;
        if !entry.is_empty() {
            return Err(MetadataError::Malformed("unexpected field in entry"));
        }
        out.insert(String::from_utf8_lossy(key).into_owned(), String::from_utf8_lossy(value).into_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_as_captured() {
        let body = ErrorBody::encode(CODE_UNIMPLEMENTED, "Unimplemented");
        assert_eq!(&body[..8], &[0, 0, 0, 0, 0, 0, 0, 12]);
        assert_eq!(&body[8..], b"Unimplemented");
        assert_eq!(ErrorBody::decode(&body), ErrorBody { code: 12, message: "Unimplemented".into() });
        assert_eq!(ErrorBody::decode(b"short").code, 0);
        assert!(ErrorBody::decode(b"short").message.contains("invalid error data"));
    }

    #[test]
    fn metadata_matches_capture_and_round_trips() {
        let md: Metadata = [("k".to_string(), "v".to_string())].into();
        assert_eq!(&encode_metadata(&md)[..], &[0x0a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']);
        let md: Metadata = [("".to_string(), "".to_string()), ("traceparent".into(), "00-ab".into())].into();
        assert_eq!(decode_metadata(&encode_metadata(&md)), Ok(md));
    }

    #[test]
    fn metadata_decoder_is_strict() {
        // value before key
        assert!(decode_metadata(&[0x0a, 0x06, 0x12, 0x01, b'v', 0x0a, 0x01, b'k']).is_err());
        // missing value
        assert!(decode_metadata(&[0x0a, 0x03, 0x0a, 0x01, b'k']).is_err());
        // trailing field in the entry
        assert!(decode_metadata(&[0x0a, 0x0a, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x1a, 0x01, b'x']).is_err());
        // length past the end
        assert!(decode_metadata(&[0x0a, 0x7f, 0x0a]).is_err());
        assert!(decode_metadata(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }
}
