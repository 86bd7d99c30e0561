//! Builds and runs the Go interop driver (`tests/go`): real storj drpc, hashicorp yamux and coder/websocket.
//! A missing Go toolchain fails the test loudly; it never skips.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let out = root.join("target/go-interop/interop");
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/build-go-interop.sh"))
                .arg(&out)
                .status()
                .expect("run scripts/build-go-interop.sh");
            assert!(status.success(), "building the Go interop driver failed: Go and its module proxy are required");
            out
        })
        .clone()
}

/// A Go `interop serve` or `interop reference` process, killed when dropped.
pub struct GoServer {
    pub address: String,
    _child: Child,
}

/// `interop serve`: Coder's generated services, mostly Unimplemented, plus the raw interop service.
pub async fn serve(transport: &str) -> GoServer {
    spawn("serve", transport).await
}

/// `interop reference`: the coderd-shaped benchmark server, answering every Agent and Tailnet RPC.
pub async fn reference(transport: &str) -> GoServer {
    spawn("reference", transport).await
}

async fn spawn(subcommand: &str, transport: &str) -> GoServer {
    let mut child = Command::new(binary())
        .args([subcommand, "--transport", transport, "--listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start Go interop server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("Go server did not start in 30 s")
        .expect("read Go server stdout")
        .expect("Go server exited before listening");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("LISTENING"), "unexpected first line {line:?}");
    assert_eq!(words.next(), Some(transport));
    let address = words.next().expect("address").to_owned();
    GoServer { address, _child: child }
}

/// One line of `interop call` output.
#[derive(Debug)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// Runs `interop call` with `args` and returns its checks and its closing line.
pub async fn call(args: &[&str]) -> (Vec<Check>, String, bool) {
    let output = Command::new(binary()).arg("call").args(args).stdin(Stdio::null()).stderr(Stdio::inherit()).output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .expect("interop call hung")
        .expect("run interop call");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut checks = Vec::new();
    let mut summary = String::new();
    for line in stdout.lines() {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
            checks.push(Check {
                name: value["check"].as_str().unwrap_or_default().to_owned(),
                pass: value["pass"].as_bool().unwrap_or(false),
                detail: value["detail"].as_str().unwrap_or_default().to_owned(),
            });
        } else if line.starts_with("interop:") {
            summary = line.to_owned();
        }
    }
    (checks, summary, output.status.success())
}
