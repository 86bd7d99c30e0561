//! Load for `bench/unary_cpu.sh`: `bench_client ADDR CALLS CONCURRENCY SESSIONS [RATE]` makes CALLS unary calls
//! (`Interop/Unary`, 100-byte body) from CONCURRENCY tasks spread over SESSIONS yamux sessions, at most RATE calls
//! per second in total when RATE is given, and prints one JSON line: calls, seconds, calls_per_second and latency
//! percentiles in microseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentwire_transport::client::Client;
use agentwire_transport::io::{spawn_session, Mode, SessionConfig};
use agentwire_transport::testing::path;
use agentwire_transport::Limits;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).ok_or("usage: bench_client ADDR CALLS CONCURRENCY SESSIONS [RATE]")?;
    let (calls, concurrency, sessions, rate) = (arg(2, 100_000), arg(3, 64), arg(4, 4), arg(5, 0));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        let mut clients = Vec::new();
        for _ in 0..sessions.max(1) {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            clients.push(Client::new(spawn_session(tcp, Mode::Client, &SessionConfig::default()).0, Limits::default()));
        }
        let method = path("Unary");
        let per_task = calls / concurrency.max(1);
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(calls as usize)));
        let interval = (rate > 0).then(|| Duration::from_secs_f64(concurrency as f64 / rate as f64));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let client = clients[(t % sessions.max(1)) as usize].clone();
            let method = method.clone();
            let latencies = latencies.clone();
            tasks.push(tokio::spawn(async move {
                let body = vec![b'x'; 100];
                let mut mine = Vec::with_capacity(per_task as usize);
                let mut tick = interval.map(tokio::time::interval);
                for _ in 0..per_task {
                    if let Some(tick) = tick.as_mut() {
                        tick.tick().await;
                    }
                    let t0 = Instant::now();
                    client.unary(&method, &body).await.expect("call failed");
                    mine.push(t0.elapsed().as_micros() as u64);
                }
                latencies.lock().await.extend(mine);
            }));
        }
        for task in tasks {
            task.await?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut l = latencies.lock().await;
        l.sort_unstable();
        let pct = |p: f64| l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).copied().unwrap_or(0);
        println!(
            "{{\"calls\":{},\"seconds\":{seconds:.3},\"calls_per_second\":{:.0},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
            l.len(),
            l.len() as f64 / seconds,
            pct(0.50),
            pct(0.99),
            l.last().copied().unwrap_or(0)
        );
        Ok(())
    })
}
