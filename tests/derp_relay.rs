//! The embedded DERP relay through the real HTTP server: clients logging in over `Upgrade: DERP` and over the
//! WebSocket fallback, packets between them, peer-gone notices, the limits (oversized frames, slow readers, the
//! connection cap), the routes' answers, and the default DERP map that points at the relay until `derp set`.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use agentwire::derp::frame::{self, kind, ClientFrame, RawDecoder, RawFrame, MAGIC};
use agentwire::derp::keys::{NodeKey, PrivateKey};
use agentwire::derp::stats::DropReason;
use agentwire::derp::{DerpConfig, RelayConfig};
use agentwire::server::ServeConfig;
use agentwire::tailnet::TailnetConfig;
use agentwire_transport::io::ws;
use bytes::{Bytes, BytesMut};
use common::server::{memory_store, start, TestServer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone, Copy, Debug)]
enum Style {
    Derp,
    WebSocket,
}

/// A DERP client written from the protocol, on the codec the relay uses.
struct Client {
    io: Box<dyn Io>,
    key: PrivateKey,
    server: NodeKey,
    buf: BytesMut,
}

fn config(relay: RelayConfig) -> ServeConfig {
    ServeConfig {
        tailnet: TailnetConfig {
            derp_map_check_interval: Duration::from_millis(100),
            derp: DerpConfig { relay, ..DerpConfig::default() },
            ..TailnetConfig::default()
        },
        ..ServeConfig::default()
    }
}

async fn server(relay: RelayConfig) -> TestServer {
    start(memory_store().await, config(relay)).await
}

/// Opens `/derp` the given way; the relay's 101 (or WebSocket handshake) is done when this returns.
async fn open(server: &TestServer, style: Style) -> Box<dyn Io> {
    match style {
        Style::Derp => {
            let mut tcp = TcpStream::connect(server.addr).await.unwrap();
            let request =
                format!("GET /derp HTTP/1.1\r\nHost: {}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n", server.addr);
            tcp.write_all(request.as_bytes()).await.unwrap();
            let head = read_head(&mut tcp).await;
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("upgrade: derp") && lower.contains("derp-version: 2"), "{head}");
            let key = server.state.tailnet().derp_relay().unwrap().public_key().hex();
            assert!(lower.contains(&format!("derp-public-key: {key}")), "{head}");
            Box::new(tcp)
        }
        Style::WebSocket => {
            let mut request = format!("ws://{}/derp", server.addr).into_client_request().unwrap();
            request.headers_mut().insert("Sec-WebSocket-Protocol", "derp".parse().unwrap());
            Box::new(ws::connect(request, 1 << 20).await.unwrap())
        }
    }
}

/// Reads an HTTP response head byte by byte, so nothing after it is consumed.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 1, "EOF in the response head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

impl Client {
    async fn connect(server: &TestServer, style: Style) -> Client {
        let io = open(server, style).await;
        let mut client = Client { io, key: PrivateKey::generate(), server: NodeKey([0; 32]), buf: BytesMut::new() };
        let greeting = client.frame().await.expect("server key");
        assert_eq!(greeting.kind, kind::SERVER_KEY);
        assert_eq!(&greeting.body[..8], &MAGIC);
        client.server = NodeKey(greeting.body[8..40].try_into().unwrap());
        let info = br#"{"version":2,"CanAckPings":true}"#;
        let sealed = client.key.seal_to(&client.server, info).unwrap();
        client.write(&ClientFrame::ClientInfo { key: client.key.public(), sealed: sealed.into() }).await;
        let info = client.frame().await.expect("server info");
        assert_eq!(info.kind, kind::SERVER_INFO);
        let json = client.key.open_from(&client.server, &info.body).unwrap();
        assert_eq!(json, br#"{"version":2}"#);
        client
    }

    fn public(&self) -> NodeKey {
        self.key.public()
    }

    async fn write(&mut self, frame: &ClientFrame) {
        let mut out = BytesMut::new();
        frame::encode_client_frame(&mut out, frame);
        self.write_raw(&out).await;
    }

    async fn write_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    async fn send(&mut self, dst: NodeKey, packet: &[u8]) {
        self.write(&ClientFrame::SendPacket { dst, packet: Bytes::copy_from_slice(packet) }).await;
    }

    /// The next frame, or `None` at EOF.
    async fn frame(&mut self) -> Option<RawFrame> {
        let decoder = RawDecoder { max_len: 1 << 20 };
        loop {
            if let Some(frame) = decoder.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            self.buf.reserve(64 << 10);
            match tokio::time::timeout(WAIT, self.io.read_buf(&mut self.buf)).await.expect("no frame in time") {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next frame other than a keep-alive.
    async fn next(&mut self) -> RawFrame {
        loop {
            let frame = self.frame().await.expect("connection ended");
            if frame.kind != kind::KEEP_ALIVE {
                return frame;
            }
        }
    }

    async fn recv_packet(&mut self) -> (NodeKey, Bytes) {
        let frame = self.next().await;
        assert_eq!(frame.kind, kind::RECV_PACKET, "{frame:?}");
        (NodeKey(frame.body[..32].try_into().unwrap()), frame.body.slice(32..))
    }

    /// Reads until the relay closes the connection.
    async fn closed(&mut self) {
        while self.frame().await.is_some() {}
    }
}

async fn exchange(server: &TestServer, a: Style, b: Style) {
    let mut alice = Client::connect(server, a).await;
    let mut bob = Client::connect(server, b).await;
    alice.send(bob.public(), b"hello bob").await;
    assert_eq!(bob.recv_packet().await, (alice.public(), Bytes::from_static(b"hello bob")));
    bob.send(alice.public(), b"hello alice").await;
    assert_eq!(alice.recv_packet().await, (bob.public(), Bytes::from_static(b"hello alice")));
    // The largest packet tailscale allows, whole.
    let big = vec![0x5a; 64 << 10];
    alice.send(bob.public(), &big).await;
    assert_eq!(bob.recv_packet().await.1, big);
    // A ping is answered with its payload.
    alice.write(&ClientFrame::Ping(*b"pingpong")).await;
    let pong = alice.next().await;
    assert_eq!((pong.kind, &pong.body[..]), (kind::PONG, &b"pingpong"[..]));
}

#[tokio::test]
async fn two_clients_exchange_packets_over_upgrade_derp() {
    let server = server(RelayConfig::default()).await;
    exchange(&server, Style::Derp, Style::Derp).await;
}

#[tokio::test]
async fn two_clients_exchange_packets_over_the_websocket_fallback() {
    let server = server(RelayConfig::default()).await;
    exchange(&server, Style::WebSocket, Style::WebSocket).await;
    // Either way to the same relay.
    exchange(&server, Style::Derp, Style::WebSocket).await;
    let stats = server.state.tailnet().derp_relay().unwrap().stats().clone();
    assert_eq!(stats.packets_sent.load(Ordering::Relaxed), 6);
}

#[tokio::test]
async fn a_peer_that_leaves_is_announced_to_those_it_sent_to() {
    let server = server(RelayConfig::default()).await;
    let mut alice = Client::connect(&server, Style::Derp).await;
    let mut bob = Client::connect(&server, Style::WebSocket).await;
    let carol = Client::connect(&server, Style::Derp).await;
    alice.send(bob.public(), b"hi").await;
    bob.recv_packet().await;
    let alice_key = alice.public();
    drop(alice);
    let gone = bob.next().await;
    assert_eq!(gone.kind, kind::PEER_GONE);
    assert_eq!((NodeKey(gone.body[..32].try_into().unwrap()), gone.body[32]), (alice_key, 0));
    // Carol, whom alice never wrote to, hears nothing; a disco probe to alice now gets "not here".
    drop(carol);
    let mut disco = b"TS\xf0\x9f\x92\xac".to_vec();
    disco.resize(80, 1);
    bob.send(alice_key, &disco).await;
    let not_here = bob.next().await;
    assert_eq!((not_here.kind, not_here.body[32]), (kind::PEER_GONE, 1));
    let relay = server.state.tailnet().derp_relay().unwrap().clone();
    assert_eq!(relay.stats().drops(DropReason::UnknownDest), 1);
}

#[tokio::test]
async fn an_oversized_frame_closes_that_connection_only() {
    let server = server(RelayConfig { max_packet_size: 1000, ..RelayConfig::default() }).await;
    let mut alice = Client::connect(&server, Style::Derp).await;
    let mut bob = Client::connect(&server, Style::Derp).await;
    let mut mallory = Client::connect(&server, Style::WebSocket).await;
    // Only the header of a frame over the limit: the relay ends the connection without waiting for the body.
    let mut header = BytesMut::new();
    frame::put_header(&mut header, kind::SEND_PACKET, 32 + 1001);
    mallory.write_raw(&header).await;
    mallory.closed().await;
    let relay = server.state.tailnet().derp_relay().unwrap().clone();
    assert_eq!(relay.stats().protocol_errors.load(Ordering::Relaxed), 1);
    // At the limit is fine, and the others never noticed.
    alice.send(bob.public(), &[1; 1000]).await;
    assert_eq!(bob.recv_packet().await.1.len(), 1000);

    // A client that sends anything but its login first is closed too.
    let mut io = open(&server, Style::Derp).await;
    let mut frame = BytesMut::new();
    frame::encode_client_frame(&mut frame, &ClientFrame::NotePreferred(true));
    io.write_all(&frame).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, io.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest[0], kind::SERVER_KEY, "only the greeting came back");
    assert_eq!(rest.len(), 5 + 40);
}

#[tokio::test]
async fn a_login_with_a_box_that_does_not_open_is_refused() {
    let server = server(RelayConfig::default()).await;
    let mut client = Client {
        io: open(&server, Style::Derp).await,
        key: PrivateKey::generate(),
        server: NodeKey([0; 32]),
        buf: BytesMut::new(),
    };
    let greeting = client.frame().await.unwrap();
    assert_eq!(greeting.kind, kind::SERVER_KEY);
    // Sealed to the wrong key.
    let sealed = client.key.seal_to(&PrivateKey::generate().public(), b"{}").unwrap();
    client.write(&ClientFrame::ClientInfo { key: client.public(), sealed: sealed.into() }).await;
    client.closed().await;
}

#[tokio::test]
async fn a_slow_reader_loses_packets_and_nobody_else_does() {
    let relay = RelayConfig { queue_depth: 8, write_timeout: Duration::from_millis(500), ..RelayConfig::default() };
    let server = server(relay).await;
    let mut alice = Client::connect(&server, Style::Derp).await;
    let mut bob = Client::connect(&server, Style::Derp).await;
    let mut sloth = Client::connect(&server, Style::Derp).await;
    let sloth_key = sloth.public();
    // Far more than the socket buffers hold: the relay's writes to sloth stall, its queue fills and drops.
    let packet = vec![7; 60 << 10];
    let relay = server.state.tailnet().derp_relay().unwrap().clone();
    for i in 0..2000 {
        alice.send(sloth_key, &packet).await;
        if i % 100 == 0 {
            // Meanwhile bob still gets alice's packets.
            alice.send(bob.public(), &[i as u8; 10]).await;
            assert_eq!(bob.recv_packet().await.1, vec![i as u8; 10]);
        }
    }
    let stats = relay.stats();
    let dropped = stats.drops(DropReason::QueueHead) + stats.drops(DropReason::WriteError);
    assert!(dropped > 0, "no drops: {}", stats.total_drops());
    // What the relay holds for sloth stays within its queue.
    let queued = stats.queued_bytes.load(Ordering::Relaxed);
    assert!(queued <= 8 * (60 << 10), "{queued}");
    // A reader stalled past the write timeout is dropped, and its queue with it.
    tokio::time::timeout(WAIT, async {
        while relay.is_connected(&sloth_key) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stalled reader was not dropped");
    assert_eq!(stats.queued_bytes.load(Ordering::Relaxed), 0);
    alice.send(bob.public(), b"still here").await;
    assert_eq!(bob.recv_packet().await.1, &b"still here"[..]);
    sloth.buf.clear();
}

#[tokio::test]
async fn a_client_that_does_not_log_in_is_dropped_and_an_idle_one_kept_alive() {
    let relay = RelayConfig {
        login_timeout: Duration::from_millis(300),
        keepalive: Duration::from_millis(200),
        ..RelayConfig::default()
    };
    let server = server(relay).await;
    let mut silent = open(&server, Style::Derp).await;
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, silent.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest.len(), 5 + 40, "the greeting, then the end");
    // Not before the timeout (which started a moment before the 101 reached us).
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    assert_eq!(server.state.tailnet().derp_relay().unwrap().stats().protocol_errors.load(Ordering::Relaxed), 1);

    let mut idle = Client::connect(&server, Style::WebSocket).await;
    for _ in 0..2 {
        let frame = idle.frame().await.expect("a keep-alive");
        assert_eq!((frame.kind, frame.body.len()), (kind::KEEP_ALIVE, 0));
    }
}

/// A plain HTTP/1.1 request; the status line and the body.
async fn get(server: &TestServer, path: &str, headers: &str) -> (String, String) {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test]
async fn the_routes_answer_as_coderds_do() {
    let server = server(RelayConfig { max_connections: 1, ..RelayConfig::default() }).await;
    assert_eq!(get(&server, "/derp/latency-check", "").await.0, "HTTP/1.1 200 OK");
    let (status, body) = get(&server, "/derp", "").await;
    assert_eq!(status, "HTTP/1.1 426 Upgrade Required");
    assert_eq!(body, "DERP requires connection upgrade");
    let (status, _) = get(&server, "/derp", "Upgrade: DERP\r\nConnection: Upgrade\r\nDerp-Fast-Start: 1\r\n").await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    // The connection cap answers before the upgrade.
    let _one = Client::connect(&server, Style::Derp).await;
    let (status, _) = get(&server, "/derp", "Upgrade: DERP\r\nConnection: Upgrade\r\n").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");

    let metrics = get(&server, "/metrics", "").await.1;
    assert!(metrics.contains("agentwire_derp_connections 1"), "{metrics}");
    assert!(metrics.contains("agentwire_derp_refused_total 1"), "{metrics}");
    assert!(metrics.contains("agentwire_derp_packets_dropped_total{reason=\"queue_head\"} 0"), "{metrics}");

    // Off, the relay is not there at all, and the map is empty again.
    let mut off = config(RelayConfig::default());
    off.tailnet.derp.enabled = false;
    let off = start(memory_store().await, off).await;
    assert_eq!(get(&off, "/derp/latency-check", "").await.0, "HTTP/1.1 404 Not Found");
    assert_eq!(get(&off, "/derp", "Upgrade: DERP\r\nConnection: Upgrade\r\n").await.0, "HTTP/1.1 404 Not Found");
    let map = current_map(&off).await;
    assert!(map.regions.is_empty());
}

async fn current_map(server: &TestServer) -> std::sync::Arc<agentwire::proto::tailnet::v2::DerpMap> {
    let mut maps = server.state.tailnet().derp_maps().subscribe();
    let map = tokio::time::timeout(WAIT, maps.wait_for(Option::is_some)).await.unwrap().unwrap();
    map.clone().unwrap()
}

#[tokio::test]
async fn the_default_map_is_the_embedded_relay_until_derp_set() {
    let mut config = config(RelayConfig::default());
    config.tailnet.derp.access_url = "https://coder.example.com:8443".into();
    let server = start(memory_store().await, config).await;
    let map = current_map(&server).await;
    let region = &map.regions[&999];
    assert!(region.embedded_relay);
    assert_eq!(region.region_name, "Coder Embedded Relay");
    let node = &region.nodes[0];
    assert_eq!((node.host_name.as_str(), node.derp_port, node.force_http), ("coder.example.com", 8443, false));

    // An operator's map replaces it within the check interval.
    let json = r#"{"Regions":{"1":{"RegionID":1,"RegionCode":"own","Nodes":[{"Name":"1a","RegionID":1,"HostName":"derp.example.com"}]}}}"#;
    server.store.admin().set_derp_map(json).await.unwrap();
    let mut maps = server.state.tailnet().derp_maps().subscribe();
    let map = tokio::time::timeout(WAIT, maps.wait_for(|m| m.as_ref().is_some_and(|m| m.regions.contains_key(&1))))
        .await
        .expect("the operator's map did not arrive")
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(map.regions.len(), 1);
}

/// The referee: tailscale's own client (Coder's fork, `derphttp`) in the Go driver, two of them exchanging packets
/// through this relay over `Upgrade: DERP`, over the WebSocket fallback and one of each (`interop derp`).
#[tokio::test]
async fn tailscales_derphttp_clients_relay_through_us() {
    let server = server(RelayConfig::default()).await;
    let url = format!("http://{}/derp", server.addr);
    let output = tokio::process::Command::new(common::go_interop::binary())
        .args(["derp", "--url", &url])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output).await.expect("interop derp hung").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut passed = Vec::new();
    for line in stdout.lines() {
        if let Ok(check) = serde_json::from_str::<serde_json::Value>(line) {
            assert_eq!(check["pass"], true, "{line}");
            passed.push(check["check"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert!(output.status.success(), "{stdout}");
    for mode in ["upgrade", "websocket", "mixed"] {
        for check in ["server-key", "a-to-b", "b-to-a", "max-packet", "ping", "peer-gone"] {
            assert!(passed.contains(&format!("{mode}/{check}")), "{mode}/{check} missing: {stdout}");
        }
    }
    let relay = server.state.tailnet().derp_relay().unwrap().clone();
    assert_eq!(relay.stats().packets_sent.load(Ordering::Relaxed), 9);
    assert_eq!(relay.stats().protocol_errors.load(Ordering::Relaxed), 0);
}
