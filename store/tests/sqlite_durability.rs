//! SQLite-only durability and concurrency tests.
//!
//! * `kill_nine_while_flushing`: a child process (this test binary, re-executed) writes in a
//!   loop with every batcher flushing; it is SIGKILLed mid-flight. The file must reopen,
//!   migrations must be a no-op, and no transaction may be half-written.
//! * `sixty_four_writers_never_see_busy`: 64 concurrent writers, split over two stores on the
//!   same file (two pools, as two processes would be), never surface `SQLITE_BUSY`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use agentwire_store::*;
use sqlx::{Connection, Row};
use uuid::Uuid;

const CHILD_ENV: &str = "AGENTWIRE_KILL_CHILD_DB";
const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

fn child_options() -> StoreOptions {
    let fast = Duration::from_millis(3);
    StoreOptions {
        stats_flush_interval: fast,
        metadata_flush_interval: fast,
        heartbeat_flush_interval: fast,
        ..StoreOptions::default()
    }
}

/// The child half: a no-op unless re-executed by `kill_nine_while_flushing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(&url, child_options()).await.unwrap();
    let (_, created) = store.admin().create_demo_agent("kill", "kill-ws", "main").await.unwrap();
    let agent = store.resolve_agent_by_token(&created.auth_token.to_string()).await.unwrap().unwrap();
    for k in 0..3 {
        store
            .admin()
            .add_metadata_description(agent.id, &NewMetadata { key: format!("k{k}"), ..Default::default() })
            .await
            .unwrap();
    }
    let scope = store.agent(&agent);
    println!("TOKEN {}", created.auth_token);
    let replica = Uuid::new_v4();
    let lines: Vec<LogLine> = (0..10).map(|_| LogLine { level: LogLevel::Info, output: LINE.into() }).collect();
    let mut i: i64 = 0;
    loop {
        for _ in 0..50 {
            scope.enqueue_stats(StatsReport { rx_bytes: i, ..Default::default() });
        }
        scope.enqueue_metadata(
            &(0..3)
                .map(|k| MetadataUpdate { key: format!("k{k}"), value: i.to_string(), error: String::new() })
                .collect::<Vec<_>>(),
        );
        scope.heartbeat(replica);
        let out = scope.insert_logs(Uuid::nil(), &lines).await.unwrap();
        if matches!(out, InsertLogsOutcome::LimitExceeded { .. }) {
            break;
        }
        scope.update_lifecycle(LifecycleState::Starting, i).await.unwrap();
        i += 1;
        if i == 20 {
            println!("READY");
        }
    }
    // Reaching the log limit before being killed would make the test meaningless.
    println!("DONE");
    std::process::exit(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_while_flushing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("kill.db").display());
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut token = None;
    loop {
        let line = rx.recv_timeout(Duration::from_secs(120)).expect("child never became ready");
        // libtest may print "test child_writer ... " on the same line first.
        if let Some(i) = line.find("TOKEN ") {
            token = Some(line[i + 6..].trim().to_owned());
        }
        if line.ends_with("READY") {
            break;
        }
        assert!(!line.ends_with("DONE"), "child hit the log limit before the kill");
    }
    // Let it keep writing and flushing for a moment, then SIGKILL (Child::kill on Unix).
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let token = token.expect("child printed its token");

    // The file opens and is intact.
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut raw).await.unwrap();
    assert_eq!(check, "ok");
    let migrations_before: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut raw).await.unwrap();
    raw.close().await.unwrap();

    // Migrations are a no-op on reopen.
    let store = Store::open(&url, common::quiet_options()).await.unwrap();
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let migrations_after: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut raw).await.unwrap();
    assert_eq!(migrations_before, migrations_after);
    let dirty: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE NOT success")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(dirty, 0);

    // Nothing half-written: logs_length (updated in the same transaction as the inserts)
    // equals the bytes of the stored lines, and lines come in whole batches of 10.
    let agent = store.resolve_agent_by_token(&token).await.unwrap().unwrap();
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(output)), 0) AS bytes \
         FROM workspace_agent_logs WHERE agent_id = $1",
    )
    .bind(agent.id.to_string())
    .fetch_one(&mut raw)
    .await
    .unwrap();
    let (n, bytes): (i64, i64) = (row.get("n"), row.get("bytes"));
    assert!(n >= 200, "the child wrote at least 20 batches: {n}");
    assert_eq!(n % 10, 0, "a log batch was half-written");
    let scope = store.agent(&agent);
    let st = scope.state().await.unwrap().unwrap();
    assert_eq!(st.logs_length, bytes);
    // Stats rows are whole rows from whole flushes; metadata values are some iteration's.
    let stats: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM workspace_agent_stats").fetch_one(&mut raw).await.unwrap();
    assert!(stats > 0, "stats batches were flushed before the kill");
    raw.close().await.unwrap();

    // And the store keeps working.
    assert!(matches!(
        scope.insert_logs(Uuid::nil(), &[LogLine { level: LogLevel::Info, output: "after".into() }]).await.unwrap(),
        InsertLogsOutcome::Inserted { .. }
    ));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_never_see_busy() {
    const WRITERS: usize = 64;
    const ROUNDS: usize = 15;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("busy.db").display());
    let a = Store::open(&url, common::quiet_options()).await.unwrap();
    // A second store on the same file stands in for a second process: its own single-writer
    // pool, so contention between the two goes through SQLite's lock and busy timeout.
    let b = Store::open(&url, common::quiet_options()).await.unwrap();
    let f = common::fixture(&a, "busy").await;
    let mut scopes = Vec::new();
    for i in 0..WRITERS {
        let agent = common::second_agent(&a, &f, &format!("w{i}")).await;
        let store = if i % 2 == 0 { &a } else { &b };
        scopes.push(store.agent(&agent));
    }
    let mut tasks = Vec::new();
    for scope in scopes {
        tasks.push(tokio::spawn(async move {
            for r in 0..ROUNDS {
                scope
                    .insert_logs(Uuid::nil(), &[LogLine { level: LogLevel::Info, output: format!("round {r}") }])
                    .await?;
                scope.update_lifecycle(LifecycleState::Starting, r as i64).await?;
                scope
                    .insert_connection_log(&ConnectionEvent {
                        connection_id: Uuid::new_v4(),
                        time: r as i64,
                        connect: true,
                        kind: "ssh".into(),
                        code: None,
                        ip: None,
                        disconnect_reason: None,
                    })
                    .await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            panic!("writer failed (busy: {}): {e}", e.is_retryable());
        }
    }
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspace_agent_logs").fetch_one(&mut raw).await.unwrap();
    assert_eq!(n as usize, WRITERS * ROUNDS);
    a.close().await;
    b.close().await;
}
