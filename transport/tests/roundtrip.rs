//! Our client against our server over an in-memory duplex: every call shape, errors, and what the bytes on the
//! yamux stream look like.

use std::time::Duration;

use agentwire_transport::client::{CallError, Client};
use agentwire_transport::io::{spawn_session, Mode, SessionConfig};
use agentwire_transport::server::{Router, Server, ServerConfig, SessionEnd};
use agentwire_transport::testing::{big_payload, path, register_interop, FAIL_CODE, FAIL_MESSAGE};
use agentwire_transport::Limits;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

fn start() -> (Client, CancellationToken, tokio::task::JoinHandle<SessionEnd>) {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let mut router = Router::<()>::new();
    register_interop(&mut router);
    let server = Server::new(router, ServerConfig::default());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let served = tokio::spawn(async move { server.serve_session(server_io, (), token).await });
    let (session, _incoming) = spawn_session(client_io, Mode::Client, &SessionConfig::default());
    (Client::new(session, Limits::default()), shutdown, served)
}

#[tokio::test]
async fn unary_empty_and_big() {
    let (client, _, _) = start();
    assert_eq!(&client.unary(&path("Unary"), b"hi").await.unwrap()[..], b"echo:hi");
    assert!(client.unary(&path("Empty"), b"").await.unwrap().is_empty());
    for len in [0usize, 1, 65_536, 70_000, (4 << 20) - 1024] {
        let reply = client.unary(&path("Big"), len.to_string().as_bytes()).await.unwrap();
        assert_eq!(reply.len(), len);
        assert!(reply[..] == big_payload(len)[..], "payload of {len} bytes differs");
    }
}

#[tokio::test]
async fn errors_carry_code_and_text() {
    let (client, _, _) = start();
    match client.unary(&path("Fail"), b"").await {
        Err(CallError::Status(status)) => {
            assert_eq!((status.code, status.message.as_str()), (FAIL_CODE, FAIL_MESSAGE));
        }
        other => panic!("unexpected {other:?}"),
    }
    match client.unary("/agentwire.interop.v1.Interop/Nope", b"").await {
        Err(CallError::Status(status)) => {
            assert_eq!(status.code, 0);
            assert_eq!(status.message, r#"protocol error: unknown rpc: "/agentwire.interop.v1.Interop/Nope""#);
        }
        other => panic!("unexpected {other:?}"),
    }
    // the session is still usable afterwards
    assert_eq!(&client.unary(&path("Unary"), b"x").await.unwrap()[..], b"echo:x");
}

#[tokio::test]
async fn server_client_and_bidi_streams() {
    let (client, _, _) = start();
    let mut stream = client.open_stream(&path("ServerStream")).await.unwrap();
    stream.send(Bytes::from_static(b"5")).await.unwrap();
    stream.close_send().await.unwrap();
    let mut items = Vec::new();
    while let Some(item) = stream.recv().await.unwrap() {
        items.push(String::from_utf8(item.to_vec()).unwrap());
    }
    assert_eq!(items, ["item-0", "item-1", "item-2", "item-3", "item-4"]);

    let mut stream = client.open_stream(&path("ClientStream")).await.unwrap();
    for m in ["a", "b", "c"] {
        stream.send(Bytes::from(m)).await.unwrap();
    }
    stream.close_send().await.unwrap();
    assert_eq!(&stream.recv().await.unwrap().unwrap()[..], b"a,b,c");
    assert_eq!(stream.recv().await.unwrap(), None);

    let mut stream = client.open_stream(&path("Bidi")).await.unwrap();
    for m in ["x", "y", "z"] {
        stream.send(Bytes::from(m)).await.unwrap();
        let reply = stream.recv().await.unwrap().unwrap();
        assert_eq!(reply, Bytes::from(format!("echo:{m}")));
    }
    stream.close_send().await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), None);
}

/// A dropped client ends its session (GoAway, then the transport closes) instead of holding the connection and the
/// peer's session open for ever; a stream opened before keeps the session until it is dropped too.
#[tokio::test]
async fn dropping_the_client_ends_the_session_once_its_streams_are_gone() {
    let (client, _, served) = start();
    assert_eq!(&client.unary(&path("Unary"), b"hi").await.unwrap()[..], b"echo:hi");
    let mut stream = client.open_stream(&path("Bidi")).await.unwrap();
    drop(client);
    stream.send(Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(Bytes::from_static(b"echo:x")));
    assert!(!served.is_finished(), "the open stream keeps the session");
    drop(stream);
    let end = tokio::time::timeout(Duration::from_secs(10), served).await.expect("the session ends").unwrap();
    assert!(matches!(end, SessionEnd::PeerClosed), "ended by the client's GoAway");
}

#[tokio::test]
async fn many_concurrent_calls() {
    let (client, _, _) = start();
    let calls = (0..200).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let body = format!("n{i}");
            let reply = client.unary(&path("Unary"), body.as_bytes()).await.unwrap();
            assert_eq!(reply, Bytes::from(format!("echo:{body}")));
        })
    });
    for call in calls {
        call.await.unwrap();
    }
}

/// Paused time: the clock moves only when every task waits for it, so by the time 50 ms have passed the call has
/// reached the server and its handler is asleep.
#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_call_in_flight_finish() {
    let (client, shutdown, served) = start();
    let started = tokio::time::Instant::now();
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.unary(&path("Slow"), b"200").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    assert_eq!(&slow.await.unwrap().unwrap()[..], b"slept:200");
    assert_eq!(started.elapsed(), Duration::from_millis(200), "the handler slept through the shutdown");
    assert!(matches!(served.await.unwrap(), SessionEnd::Shutdown));
}

#[tokio::test(start_paused = true)]
async fn an_idle_session_lives_on_keepalive_pings() {
    let (client, _, served) = start();
    assert_eq!(&client.unary(&path("Unary"), b"before").await.unwrap()[..], b"echo:before");
    // Ten keepalive intervals with nothing to do: each side's pings must be answered and filtered correctly.
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(!served.is_finished(), "the server gave up on a live peer");
    assert_eq!(&client.unary(&path("Unary"), b"after").await.unwrap()[..], b"echo:after");
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_after_interval_plus_timeout() {
    let (_peer, server_io) = tokio::io::duplex(1 << 16);
    let mut router = Router::<()>::new();
    register_interop(&mut router);
    let server = Server::new(router, ServerConfig::default());
    let started = tokio::time::Instant::now();
    let end = server.serve_session(server_io, (), CancellationToken::new()).await;
    assert!(matches!(end, SessionEnd::Failed(_)), "{end:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(40));
}
