//! A unary call end to end, client and server in one process: over an in-memory duplex (our code only) and over
//! loopback TCP (plus the kernel). One call at a time, so the figure is latency.

use agentwire_transport::client::Client;
use agentwire_transport::io::{spawn_session, Mode, SessionConfig};
use agentwire_transport::server::{Router, Server, ServerConfig};
use agentwire_transport::testing::{path, register_interop};
use agentwire_transport::Limits;
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn server() -> Server<()> {
    let mut router = Router::new();
    register_interop(&mut router);
    Server::new(router, ServerConfig::default())
}

fn unary(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (duplex_client, tcp_client) = rt.block_on(async {
        let (a, b) = tokio::io::duplex(1 << 20);
        let s = server();
        tokio::spawn(async move { s.serve_session(b, (), CancellationToken::new()).await });
        let duplex = Client::new(spawn_session(a, Mode::Client, &SessionConfig::default()).0, Limits::default());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            server().serve_session(tcp, (), CancellationToken::new()).await
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tcp = Client::new(spawn_session(tcp, Mode::Client, &SessionConfig::default()).0, Limits::default());
        (duplex, tcp)
    });
    let method = path("Unary");
    let body = vec![b'x'; 100];
    c.bench_function("unary_roundtrip/duplex", |b| {
        b.to_async(&rt).iter(|| async { duplex_client.unary(&method, &body).await.unwrap() })
    });
    c.bench_function("unary_roundtrip/loopback_tcp", |b| {
        b.to_async(&rt).iter(|| async { tcp_client.unary(&method, &body).await.unwrap() })
    });
}

criterion_group!(benches, unary);
criterion_main!(benches);
