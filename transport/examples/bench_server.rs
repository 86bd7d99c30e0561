//! A dRPC server over plain TCP yamux serving the raw-bytes interop service, for CPU-per-call measurements
//! (`bench/unary_cpu.sh`). Prints `LISTENING tcp ADDR` once ready; runs until killed.

use agentwire_transport::server::{Router, Server, ServerConfig};
use agentwire_transport::testing::register_interop;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let threads = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async move {
        let mut router = Router::new();
        register_interop(&mut router);
        let server = Server::new(router, ServerConfig::default());
        let listener = TcpListener::bind(listen).await?;
        println!("LISTENING tcp {}", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let server = server.clone();
            tokio::spawn(async move { server.serve_session(tcp, (), CancellationToken::new()).await });
        }
    })
}
