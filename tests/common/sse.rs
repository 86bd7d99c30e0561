//! An HTTP/1.1 answer read off a plain TCP connection: its head, a chunked body, and a server-sent event stream.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads a response head off `stream`: status, lowercased head, and the bytes already read past it.
pub async fn read_head(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut raw = Vec::new();
    let end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the response head");
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), raw[end + 4..].to_vec())
}

/// Moves the payload of `raw`'s complete chunks to `body`; `true` once the last (empty) chunk was seen.
pub fn dechunk(raw: &mut Vec<u8>, body: &mut Vec<u8>) -> bool {
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else { return false };
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return true;
        }
        if raw.len() < eol + 2 + size + 2 {
            return false;
        }
        body.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw.drain(..eol + 2 + size + 2);
    }
}

/// A server-sent event stream over HTTP/1.1 chunked encoding.
pub struct Events {
    stream: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
}

impl Events {
    /// The stream of a 200 answer whose head [`read_head`] read; `raw` is what it read past the head.
    pub fn new(stream: TcpStream, raw: Vec<u8>) -> Events {
        Events { stream, raw, body: Vec::new(), ended: false }
    }

    /// The next event block (its lines through the blank line that ends it), or `None` when the stream ended.
    pub async fn next(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, async {
            loop {
                self.ended |= dechunk(&mut self.raw, &mut self.body);
                if let Some(i) = self.body.windows(2).position(|w| w == b"\n\n") {
                    let block = String::from_utf8(self.body[..i + 2].to_vec()).unwrap();
                    self.body.drain(..i + 2);
                    return Some(block);
                }
                if self.ended {
                    return None;
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
                self.raw.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("an event or the end in time")
    }
}
