//! Databases with Coder v2.30.0's own schema, made and read by Coder's own Go code (`interop coderdb`, see
//! tests/go/README.md): the referee for agentwire's backend on a Coder deployment's database.
//!
//! Included by path from the tests of both packages (`#[path = "../../tests/common/coderdb.rs"] mod coderdb;`), so
//! it uses only what both have: tokio, serde_json, uuid and sqlx. PostgreSQL is the throwaway cluster of
//! `scripts/with-postgres.sh`; unset is a failure, never a skip.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

#[path = "pg.rs"]
mod pg;

/// A fresh database migrated and seeded by Coder's code. `seed` is what `interop coderdb seed` printed: every id,
/// name and token of the deployment (see tests/go/README.md for its shape).
pub struct CoderDb {
    pub url: String,
    pub seed: Value,
}

/// The Go interop driver, built once per test binary by `scripts/build-go-interop.sh` into the workspace's
/// `target/go-interop/interop`, as `go_interop::binary()` builds it. That helper resolves the script from the
/// including package's manifest directory, which for `store/` is not the workspace root, hence this twin.
pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .find(|dir| dir.join("scripts/build-go-interop.sh").is_file())
                .expect("scripts/build-go-interop.sh above CARGO_MANIFEST_DIR")
                .to_path_buf();
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

/// An empty database on the test cluster.
pub async fn empty_db() -> String {
    pg::fresh_pg_url().await
}

/// A fresh database with Coder's schema and nothing seeded.
pub async fn migrated_db() -> String {
    let url = empty_db().await;
    let out = coderdb(&["migrate", "--postgres-url", &url]).await.unwrap_or_else(|e| panic!("coderdb migrate: {e}"));
    assert_eq!(out["schema_migrations"]["version"], 412, "{out}");
    url
}

/// A fresh database with Coder's schema and the seeded deployment: one agent, and the deleted workspace too.
pub async fn fresh_coder_db() -> CoderDb {
    fresh_coder_db_with(&["--with-deleted-workspace"]).await
}

/// As [`fresh_coder_db`], with `seed`'s flags chosen by the caller (`--agents N`, `--with-deleted-workspace`, …).
pub async fn fresh_coder_db_with(seed_args: &[&str]) -> CoderDb {
    let url = migrated_db().await;
    let mut args = vec!["seed", "--postgres-url", &url];
    args.extend_from_slice(seed_args);
    let seed = coderdb(&args).await.unwrap_or_else(|e| panic!("coderdb seed: {e}"));
    CoderDb { url, seed }
}

/// Everything an agent endpoint writes for the agent, read with coderd's own queries. Panics with the Go error
/// when a row does not decode as coderd decodes it.
pub async fn read_agent(url: &str, agent_id: &str) -> Value {
    try_read_agent(url, agent_id).await.unwrap_or_else(|e| panic!("coderdb read --agent-id {agent_id}: {e}"))
}

/// As [`read_agent`], returning the Go side's error instead of panicking: for tests that expect the referee to
/// refuse a row.
pub async fn try_read_agent(url: &str, agent_id: &str) -> Result<Value, String> {
    coderdb(&["read", "--postgres-url", url, "--agent-id", agent_id]).await
}

/// The pubsub channels coderd uses for this owner and agent, named by Coder's helpers.
pub async fn channels(owner_id: &str, agent_id: &str) -> Value {
    coderdb(&["channels", "--owner-id", owner_id, "--agent-id", agent_id])
        .await
        .unwrap_or_else(|e| panic!("coderdb channels: {e}"))
}

/// Runs `interop coderdb ARGS` to completion. Ok is its one JSON line; Err is the error it reported (its
/// `{"error":…}` line, else its stderr).
pub async fn coderdb(args: &[&str]) -> Result<Value, String> {
    let output = Command::new(binary()).arg("coderdb").args(args).stdin(Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(180), output)
        .await
        .unwrap_or_else(|_| panic!("interop coderdb {args:?} hung"))
        .expect("run interop coderdb");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout.lines().rev().find_map(|line| serde_json::from_str::<Value>(line).ok());
    match (output.status.success(), last) {
        (true, Some(value)) => Ok(value),
        (false, Some(Value::Object(map))) if map.contains_key("error") => {
            Err(map["error"].as_str().unwrap_or_default().to_owned())
        }
        _ => Err(format!("{}, stdout {stdout:?}, stderr {stderr}", output.status)),
    }
}

/// `interop coderdb listen`: a subscriber on coderd's own pubsub, which prints each message with its decoding by
/// coderd's types. Killed when dropped.
pub struct Listener {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Listener {
    /// Subscribes to `channel` and returns once the subscription is live, so a publish after this is seen.
    /// `count` messages end the listener; `timeout` ends it with an error.
    pub async fn spawn(url: &str, channel: &str, count: usize, timeout: Duration) -> Listener {
        let mut child = Command::new(binary())
            .args(["coderdb", "listen", "--postgres-url", url, "--channel", channel])
            .arg(format!("--count={count}"))
            .arg(format!("--timeout={}ms", timeout.as_millis()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start interop coderdb listen");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("coderdb listen did not subscribe in 30 s")
            .expect("read coderdb listen")
            .expect("coderdb listen exited before subscribing");
        let ready: Value = serde_json::from_str(&first).unwrap_or_else(|_| panic!("coderdb listen said {first:?}"));
        assert_eq!(ready["ready"], true, "coderdb listen: {first}");
        Listener { child, lines }
    }

    /// The next message (`{"channel", "payload_base64", "payload", "decoded", …}`), or `None` once the listener
    /// ended. An `{"error":…}` line (the timeout, a subscription failure) is returned as it is.
    pub async fn next(&mut self) -> Option<Value> {
        let line = self.lines.next_line().await.expect("read coderdb listen")?;
        Some(serde_json::from_str(&line).unwrap_or_else(|_| panic!("coderdb listen printed {line:?}")))
    }

    /// Every remaining line until the listener exits, and whether it exited 0 (all `count` messages arrived).
    pub async fn finish(mut self) -> (Vec<Value>, bool) {
        let mut rest = Vec::new();
        while let Some(v) = self.next().await {
            rest.push(v);
        }
        let status = self.child.wait().await.expect("wait for coderdb listen");
        (rest, status.success())
    }
}
