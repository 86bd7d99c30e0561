//! The store on Coder's own schema, against databases that Coder's own Go code migrated and seeded
//! (`interop coderdb`, tests/common/coderdb.rs).

#[path = "../../tests/common/coderdb.rs"]
mod coderdb;

use agentwire_store::backend::SUPPORTED_CODER_SCHEMA_VERSIONS;
use agentwire_store::{Store, StoreError, StoreOptions};
use sqlx::Connection;

/// What `open_coder` says about a database it refuses; panics unless it is the schema refusal.
async fn refusal(url: &str) -> (Option<i64>, bool, String) {
    match Store::open_coder(url, StoreOptions::default()).await {
        Err(e @ StoreError::CoderSchema { found, dirty }) => (found, dirty, e.to_string()),
        Err(e) => panic!("expected StoreError::CoderSchema, got {e:?}"),
        Ok(store) => {
            store.close().await;
            panic!("open_coder accepted an unsupported database")
        }
    }
}

async fn execute(url: &str, sql: &'static str) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query(sql).execute(&mut conn).await.expect(sql);
    conn.close().await.ok();
}

fn names_supported_versions(message: &str) {
    for v in SUPPORTED_CODER_SCHEMA_VERSIONS {
        assert!(message.contains(&v.to_string()), "{message:?} does not name supported version {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_coder_migrated_and_seeded_opens() {
    let db = coderdb::fresh_coder_db().await;
    assert!(SUPPORTED_CODER_SCHEMA_VERSIONS.contains(&412), "coder v2.30.0's last migration is 412");
    let store = Store::open_coder(&db.url, StoreOptions::default()).await.expect("open_coder on coderd's schema");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_schema_versions_are_refused() {
    // One migration short: coderd's schema of a version this build was not written for.
    let url = coderdb::migrated_db().await;
    execute(&url, "UPDATE schema_migrations SET version = 411").await;
    let (found, dirty, message) = refusal(&url).await;
    assert_eq!((found, dirty), (Some(411), false), "{message}");
    assert!(message.contains("411"), "{message:?}");
    names_supported_versions(&message);

    // The right version, left dirty by a migration that stopped half-way.
    let url = coderdb::migrated_db().await;
    execute(&url, "UPDATE schema_migrations SET dirty = true").await;
    let (found, dirty, message) = refusal(&url).await;
    assert_eq!((found, dirty), (Some(412), true), "{message}");
    assert!(message.contains("dirty"), "{message:?}");
    names_supported_versions(&message);

    // Not a Coder database at all.
    let url = coderdb::empty_db().await;
    let (found, dirty, message) = refusal(&url).await;
    assert_eq!((found, dirty), (None, false), "{message}");
    names_supported_versions(&message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeded_agent_reads_back_through_coderds_queries() {
    let db = coderdb::fresh_coder_db().await;
    let seeded = &db.seed["agent"];
    let id = seeded["id"].as_str().expect("seeded agent id");
    let read = coderdb::read_agent(&db.url, id).await;

    let agent = &read["agent"];
    assert_eq!(agent["id"], seeded["id"]);
    assert_eq!(agent["name"], "main");
    assert_eq!(agent["auth_token"], seeded["token"]);
    assert_eq!(agent["lifecycle_state"], "created");
    assert_eq!(agent["api_key_scope"], "all");
    assert_eq!(agent["connection_timeout_seconds"], 120);
    assert_eq!(read["environment_variables"], serde_json::json!({"EDITOR": "vim", "GIT_AUTHOR_NAME": "Owner"}));

    let ids = |v: &serde_json::Value, key: &str| -> Vec<String> {
        let mut out: Vec<String> =
            v.as_array().expect("list").iter().map(|x| x[key].as_str().expect(key).to_owned()).collect();
        out.sort();
        out
    };
    assert_eq!(ids(&read["apps"], "id"), ids(&seeded["apps"], "id"));
    let health =
        |slug: &str| read["apps"].as_array().unwrap().iter().find(|a| a["slug"] == slug).unwrap()["health"].clone();
    assert_eq!(health("code-server"), "initializing");
    assert_eq!(health("web"), "disabled");
    assert_eq!(ids(&read["scripts"], "id"), ids(&seeded["scripts"], "id"));
    assert_eq!(ids(&read["log_sources"], "id"), ids(&seeded["log_sources"], "id"));
    assert_eq!(ids(&read["metadata"], "key"), ["cpu", "mem"]);
    assert_eq!(read["devcontainers"].as_array().unwrap().len(), 1);
    assert_eq!(read["memory_monitor"]["threshold"], 80);
    assert_eq!(read["volume_monitors"][0]["path"], "/home/coder");
    assert_eq!(ids(&read["sub_agents"], "id"), [db.seed["sub_agent"]["id"].as_str().unwrap()]);
    // Nothing written by an agent endpoint yet.
    assert_eq!(read["logs"], serde_json::json!([]));
    assert_eq!(read["stats"], serde_json::json!([]));
    assert_eq!(read["connection_logs"], serde_json::json!([]));

    let workspace = &db.seed["workspace"];
    assert_eq!(read["workspace"]["id"], workspace["id"]);
    assert_eq!(read["build"]["id"], workspace["build_id"]);
    assert_eq!(read["latest_build"]["id"], workspace["build_id"]);
    assert_eq!(read["latest_build"]["deadline"], workspace["deadline"]);
    assert_eq!(read["workspace"]["last_used_at"], workspace["last_used_at"]);
}

async fn notify(url: &str, channel: &str, payload: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(&mut conn).await.expect("pg_notify");
    conn.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_decodes_with_coderds_decoders() {
    let url = coderdb::empty_db().await;
    let [owner, agent, workspace] = [(); 3].map(|_| uuid::Uuid::new_v4().to_string());
    let channels = coderdb::channels(&owner, &agent).await;
    let channel = |key: &str| channels[key].as_str().unwrap_or_else(|| panic!("no {key} in {channels}")).to_owned();
    let wait = std::time::Duration::from_secs(20);

    // A workspace event coderd accepts, then one its Validate refuses (a lifecycle event names its agent).
    let mut events = coderdb::Listener::spawn(&url, &channel("workspace_owner"), 2, wait).await;
    let lifecycle = serde_json::json!({"kind": "agt_lifecycle_update", "workspace_id": workspace, "agent_id": agent});
    notify(&url, &channel("workspace_owner"), &lifecycle.to_string()).await;
    notify(
        &url,
        &channel("workspace_owner"),
        &serde_json::json!({"kind": "agt_lifecycle_update", "workspace_id": workspace}).to_string(),
    )
    .await;
    let first = events.next().await.expect("first event");
    assert_eq!(first["decoder"], "wspubsub.HandleWorkspaceEvent", "{first}");
    assert_eq!(first["decoded"], lifecycle, "{first}");
    assert!(first.get("decode_error").is_none(), "{first}");
    let second = events.next().await.expect("second event");
    assert!(second["decode_error"].is_string(), "{second}");
    let (rest, ok) = events.finish().await;
    assert!(rest.is_empty() && !ok, "an undecodable message fails the listener: {rest:?}");

    // The metadata batch names agents by metadatabatcher's encoding.
    let mut batch = coderdb::Listener::spawn(&url, &channel("agent_metadata_batch"), 1, wait).await;
    let id = channel("agent_metadata_batch_id");
    notify(&url, &channel("agent_metadata_batch"), &format!("{id}{id}")).await;
    let message = batch.next().await.expect("batch");
    assert_eq!(message["decoded"]["agent_ids"], serde_json::json!([agent, agent]), "{message}");
    assert!(batch.finish().await.1);

    let mut logs = coderdb::Listener::spawn(&url, &channel("agent_logs"), 1, wait).await;
    notify(&url, &channel("agent_logs"), r#"{"created_after":42}"#).await;
    let message = logs.next().await.expect("logs notification");
    assert_eq!(message["decoded"]["created_after"], 42, "{message}");
    assert!(logs.finish().await.1);
}
