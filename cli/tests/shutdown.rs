//! SIGTERM under load: the server stops accepting, lets calls in flight finish, flushes its batchers and exits 0;
//! afterwards every RPC that was answered is in the database, the batched ones included. A server restarted on the
//! same database then serves the agent again on top of all of it.

mod common;

use agentwire::proto::agent::v2 as pb;
use agentwire_store::{NewMetadata, Store, StoreOptions};
use common::chaos::dial;
use common::{create_agent, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_answered_write() {
    let dir = std::env::temp_dir().join(format!("agentwire-shutdown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.join("agentwire.db").display());

    let (token, agent_id) = create_agent(&db, "w", "main").await;
    {
        let store = Store::open(&db, StoreOptions::default()).await.unwrap();
        let key = NewMetadata { key: "progress".into(), display_name: "progress".into(), ..NewMetadata::default() };
        store.admin().add_metadata_description(agent_id, &key).await.unwrap();
        store.close().await;
    }

    let mut server = ServerProcess::start(&db, "127.0.0.1:0", &[]).await.expect("the server starts");
    let client = dial(server.addr, &token).await.unwrap();
    let manifest = client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    // No scripts on this agent: the nil source, which Coder files under "External".
    assert!(manifest.scripts.is_empty());
    let log_source = bytes::Bytes::from_static(&[0u8; 16]);

    // Durable logs and batched metadata, one after the other, until the server goes away.
    let mut answered_logs = Vec::new();
    let mut answered_metadata = None;
    for i in 0..100_000u32 {
        if i == 200 {
            server.signal("-TERM");
        }
        let line = format!("line-{i}");
        let log = pb::Log { created_at: None, output: line.clone(), level: pb::log::Level::Info as i32 };
        let logs = client
            .batch_create_logs(&pb::BatchCreateLogsRequest { log_source_id: log_source.clone(), logs: vec![log] })
            .await;
        match logs {
            Ok(_) => answered_logs.push(line),
            Err(err) => {
                assert!(i >= 200, "call {i} failed before the signal: {err}");
                break;
            }
        }
        let metadata = pb::Metadata {
            key: "progress".into(),
            result: Some(pb::workspace_agent_metadata::Result { value: i.to_string(), ..Default::default() }),
        };
        match client.batch_update_metadata(&pb::BatchUpdateMetadataRequest { metadata: vec![metadata] }).await {
            Ok(_) => answered_metadata = Some(i.to_string()),
            Err(_) => break,
        }
    }
    assert!(answered_logs.len() >= 200, "the load ran before the signal");
    let status = server.wait().await;
    assert!(status.success(), "the server exited with {status}");

    // A new process on the same database: everything answered before is there while it runs, and the agent picks
    // up where it left off through it.
    let mut server = ServerProcess::start(&db, "127.0.0.1:0", &[]).await.expect("the server restarts");
    let client = dial(server.addr, &token).await.unwrap();
    let manifest = client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    assert!(manifest.metadata.iter().any(|m| m.key == "progress"), "the restarted server reads the agent's rows");
    let store = Store::open(&db, StoreOptions::default()).await.unwrap();
    let agent = store.resolve_agent_by_token(&token).await.unwrap().unwrap();
    let scope = store.agent(&agent);
    let stored: Vec<String> = scope.logs_after(0).await.unwrap().into_iter().map(|l| l.output).collect();
    for line in &answered_logs {
        assert!(stored.contains(line), "{line} was answered but is not in the database");
    }
    let progress = scope.list_metadata().await.unwrap().into_iter().find(|m| m.key == "progress").unwrap();
    assert_eq!(Some(progress.value), answered_metadata, "the last answered metadata value was flushed at shutdown");
    let state = scope.state().await.unwrap().unwrap();
    let (disconnected, reconnected) = (state.disconnected_at.unwrap_or(0), state.last_connected_at.unwrap_or(0));
    assert!(disconnected > 0, "the disconnection was recorded");
    assert!(reconnected >= disconnected, "the new session was recorded after it");

    let line = "after-restart".to_owned();
    let log = pb::Log { created_at: None, output: line.clone(), level: pb::log::Level::Info as i32 };
    let request = pb::BatchCreateLogsRequest { log_source_id: log_source.clone(), logs: vec![log] };
    client.batch_create_logs(&request).await.expect("a durable write through the restarted server");
    let stored: Vec<String> = scope.logs_after(0).await.unwrap().into_iter().map(|l| l.output).collect();
    assert!(stored.contains(&line), "the write through the restarted server is stored");
    let distinct: std::collections::BTreeSet<&String> = stored.iter().collect();
    assert_eq!(distinct.len(), stored.len(), "every line is stored once");
    server.signal("-KILL");
    let _ = server.wait().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
