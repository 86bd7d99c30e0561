//! What the binary's tests share: the `agentwire` binary run as a child process, and the server suite's fault-test
//! tools (`tests/common/chaos.rs`), included from there so both suites use one copy. Only this package's tests see
//! `CARGO_BIN_EXE_agentwire`.

#![allow(dead_code)]

#[path = "../../../tests/common/chaos.rs"]
pub mod chaos;

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use chaos::WAIT;

pub const BIN: &str = env!("CARGO_BIN_EXE_agentwire");

/// `agentwire agent create` on `db`: (token, agent id).
pub async fn create_agent(db: &str, workspace: &str, name: &str) -> (String, Uuid) {
    let out = Command::new(BIN)
        .args(["agent", "create", "--db", db, "--workspace", workspace, "--name", name, "--json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "agent create: {}", String::from_utf8_lossy(&out.stderr));
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    (token, Uuid::parse_str(created["agent_id"].as_str().unwrap()).unwrap())
}

/// `agentwire serve` as a child process (killed if dropped).
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `serve --db db --listen listen` plus `extra`, and waits for the address it prints. `None` when it
    /// exits first (e.g. the port is still taken).
    pub async fn start(db: &str, listen: &str, extra: &[&str]) -> Option<ServerProcess> {
        let mut child = Command::new(BIN)
            .args(["serve", "--db", db, "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("serve printed its address in time");
        let line = line.ok().flatten()?;
        let addr = line.rsplit("http://").next()?.trim().parse().ok()?;
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(ServerProcess { child, addr })
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("the server exited in time").unwrap()
    }
}
