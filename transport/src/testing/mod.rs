//! Test support shared by this crate's tests, the server's tests and the Go interop suite: the raw-bytes
//! `agentwire.interop.v1.Interop` service, whose behaviour the Go driver under `tests/go` implements too; frames and
//! packets by hand; a scripted raw yamux peer that plays them; and bounded waits.

pub mod drpc_packets;
pub mod raw_peer;
pub mod wait;
pub mod yamux_frames;

use bytes::Bytes;

use crate::server::{Router, Status};

pub const INTEROP_SERVICE: &str = "/agentwire.interop.v1.Interop/";

/// The error `Fail` answers with.
pub const FAIL_CODE: u64 = 42;
pub const FAIL_MESSAGE: &str = "interop failure";

pub fn path(method: &str) -> String {
    format!("{INTEROP_SERVICE}{method}")
}

/// The `Big` reply: byte `i` is `i % 251`, so a shifted or truncated copy never matches.
pub fn big_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn parse_number(body: &[u8]) -> Result<u64, Status> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Status::error("request is not a decimal number"))
}

/// Registers every Interop method on `router`.
pub fn register_interop<C: Send + 'static>(router: &mut Router<C>) {
    router
        .unary(&path("Unary"), |_, body: Bytes| async move {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&body);
            Ok(reply.into())
        })
        .unary(&path("Empty"), |_, _| async { Ok(Bytes::new()) })
        .unary(&path("Slow"), |_, body| async move {
            let ms = parse_number(&body)?;
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(format!("slept:{ms}").into())
        })
        .unary(&path("Fail"), |_, _| async { Err(Status::new(FAIL_CODE, FAIL_MESSAGE)) })
        .unary(&path("Big"), |_, body| async move {
            let len = parse_number(&body)?;
            Ok(big_payload(len as usize).into())
        })
        .streaming(&path("ServerStream"), |_, mut stream| async move {
            let request = stream.recv().await.ok_or_else(|| Status::error("EOF"))?;
            let count = parse_number(&request)?;
            for i in 0..count {
                stream.send(format!("item-{i}").into()).await?;
            }
            Ok(())
        })
        .streaming(&path("ClientStream"), |_, mut stream| async move {
            let mut received = Vec::new();
            while let Some(message) = stream.recv().await {
                received.push(String::from_utf8_lossy(&message).into_owned());
            }
            stream.send(received.join(",").into()).await
        })
        .streaming(&path("Bidi"), |_, mut stream| async move {
            while let Some(message) = stream.recv().await {
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&message);
                stream.send(reply.into()).await?;
            }
            Ok(())
        });
}
