//! Agent definitions through the real endpoint, on SQLite and PostgreSQL: an agent created from the shipped example
//! gets a manifest holding the file's scripts, apps, metadata descriptions and environment, and its monitors; after
//! an update the agent's next manifest fetch (a new connection, as a Coder agent makes one per connection) holds the
//! new values, under the same token, with the ids of the parts that stayed.

mod common;

use std::collections::HashMap;

use agentwire::agent_spec::{self, AgentSpec};
use agentwire::proto::agent::v2 as pb;
use agentwire::server::ServeConfig;
use agentwire_store::{AgentPlacement, Store, StoreOptions};
use common::server::{connect, memory_store, start, TestServer};
use uuid::Uuid;

use pb::workspace_app::{Health, SharingLevel};

/// What the example's update brings: a new directory and environment, one script kept (by name) and changed, the
/// others gone, one metadata item changed and one new, the files app kept and a new one, the memory monitor gone.
const UPDATE: &str = r#"
dir = "/srv"
motd_file = ""

[env]
GREETING = "updated"

[[scripts]]
display_name = "Startup"
run_on_start = true
script = "echo updated"

[[metadata]]
key = "load"
display_name = "Load"
script = "echo 0.5"
interval = 2

[[metadata]]
key = "uptime"
script = "cut -d' ' -f1 /proc/uptime"
interval = 60
timeout = 3

[[apps]]
slug = "files"
url = "http://127.0.0.1:13380"
[apps.healthcheck]
url = "http://127.0.0.1:13380/"
interval = 5
threshold = 6

[[apps]]
slug = "docs"
display_name = "Docs"
url = "http://127.0.0.1:13381"
share = "authenticated"

[[resources_monitoring.volume]]
path = "/srv"
enabled = true
threshold = 80
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_example_reaches_the_manifest_and_an_update_the_next_one() {
    example_then_update(memory_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_example_reaches_the_manifest_and_an_update_the_next_one() {
    let store = Store::open(&common::pg::fresh_pg_url().await, StoreOptions::default()).await.unwrap();
    example_then_update(store).await;
}

fn spec(text: &str) -> AgentSpec {
    agent_spec::parse(text, "test").unwrap_or_else(|e| panic!("{e}")).spec
}

async fn manifest(server: &TestServer, token: Uuid) -> (pb::AgentClient, pb::Manifest) {
    let client = pb::AgentClient::new(connect(server, token).await);
    let manifest = client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    (client, manifest)
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A duration as coderd sends metadata intervals and timeouts: the template's seconds as a Go `time.Duration`,
/// so nanoseconds on the wire, which the agent multiplies by a second again.
fn coder_seconds(n: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: 0, nanos: n })
}

fn seconds(n: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: n, nanos: 0 })
}

async fn example_then_update(store: Store) {
    let example = spec(agent_spec::EXAMPLE);
    let placement = AgentPlacement { owner: "demo", template: "demo", workspace: "demo", agent: "main" };
    let created = agent_spec::create_agent(&store, placement, &example).await.unwrap();
    let token = created.agent.auth_token;
    let server = start(store.clone(), ServeConfig::default()).await;

    let (first_client, m) = manifest(&server, token).await;
    assert_eq!((m.agent_name.as_str(), m.workspace_name.as_str(), m.owner_username.as_str()), ("main", "demo", "demo"));
    assert_eq!((m.directory.as_str(), m.motd_path.as_str()), ("~", "/etc/motd"));
    assert_eq!(
        m.environment_variables,
        env(&[("AGENTWIRE_DEMO", "1"), ("AGENTWIRE_DEMO_PORT", "13380"), ("GREETING", "hello from agentwire")])
    );

    let scripts: HashMap<&str, &pb::WorkspaceAgentScript> =
        example.scripts.iter().map(|s| s.display_name.as_str()).zip(by_script_text(&m, &example)).collect();
    let startup = scripts["Startup"];
    assert!(startup.run_on_start && startup.start_blocks_login && !startup.run_on_stop);
    assert_eq!((startup.timeout, startup.log_path.as_str()), (seconds(120), "agentwire-demo-startup.log"));
    assert!(startup.script.contains("python3 -m http.server"));
    assert_eq!((scripts["Heartbeat"].cron.as_str(), scripts["Heartbeat"].timeout), ("0 */10 * * * *", seconds(10)));
    assert!(scripts["Shutdown"].run_on_stop && !scripts["Shutdown"].run_on_start);

    let apps: HashMap<&str, &pb::WorkspaceApp> = m.apps.iter().map(|a| (a.slug.as_str(), a)).collect();
    let files = apps["files"];
    assert_eq!((files.url.as_str(), files.display_name.as_str()), ("http://127.0.0.1:13380", "Files"));
    let check = files.healthcheck.as_ref().unwrap();
    assert_eq!((check.url.as_str(), check.interval, check.threshold), ("http://127.0.0.1:13380/", seconds(5), 6));
    assert_eq!((files.health, files.sharing_level), (Health::Initializing as i32, SharingLevel::Owner as i32));
    assert_eq!((apps["top"].command.as_str(), apps["top"].health), ("top", Health::Disabled as i32));

    let metadata: HashMap<&str, &pb::workspace_agent_metadata::Description> =
        m.metadata.iter().map(|d| (d.key.as_str(), d)).collect();
    assert_eq!(metadata.len(), 2);
    let load = metadata["load"];
    assert_eq!((load.display_name.as_str(), load.script.as_str()), ("Load average", "cut -d' ' -f1 /proc/loadavg"));
    assert_eq!((load.interval, load.timeout), (coder_seconds(5), coder_seconds(3)));
    assert_eq!((metadata["home_disk"].interval, metadata["home_disk"].timeout), (coder_seconds(10), coder_seconds(5)));

    let monitors = first_client
        .get_resources_monitoring_configuration(&pb::GetResourcesMonitoringConfigurationRequest {})
        .await
        .unwrap();
    assert_eq!(monitors.memory.map(|m| m.enabled), Some(true));
    assert_eq!(monitors.volumes.iter().map(|v| v.path.as_str()).collect::<Vec<_>>(), ["/"]);

    // The update, while the first connection stays open: nothing is pushed to it.
    agent_spec::update_agent(&store, created.agent.id, &spec(UPDATE)).await.unwrap();
    let (client, m2) = manifest(&server, token).await;
    assert_eq!(m2.agent_id, m.agent_id, "the same agent, under the same token");
    assert_eq!((m2.directory.as_str(), m2.motd_path.as_str()), ("/srv", ""));
    assert_eq!(m2.environment_variables, env(&[("GREETING", "updated")]));

    assert_eq!(m2.scripts.len(), 1);
    let kept = &m2.scripts[0];
    assert_eq!((kept.script.as_str(), kept.run_on_start, kept.start_blocks_login), ("echo updated", true, false));
    assert_eq!((&kept.id, &kept.log_source_id), (&startup.id, &startup.log_source_id), "the Startup script kept");

    let apps2: HashMap<&str, &pb::WorkspaceApp> = m2.apps.iter().map(|a| (a.slug.as_str(), a)).collect();
    assert_eq!(apps2.len(), 2);
    assert_eq!(apps2["files"].id, files.id, "the files app kept its id");
    assert_eq!(apps2["files"].display_name, "files", "the slug, as the update left the display name out");
    assert_eq!(
        (apps2["docs"].url.as_str(), apps2["docs"].sharing_level, apps2["docs"].health),
        ("http://127.0.0.1:13381", SharingLevel::Authenticated as i32, Health::Disabled as i32)
    );

    let metadata2: HashMap<&str, &pb::workspace_agent_metadata::Description> =
        m2.metadata.iter().map(|d| (d.key.as_str(), d)).collect();
    assert_eq!(metadata2.len(), 2);
    assert_eq!((metadata2["load"].script.as_str(), metadata2["load"].interval), ("echo 0.5", coder_seconds(2)));
    assert_eq!((metadata2["uptime"].interval, metadata2["uptime"].timeout), (coder_seconds(60), coder_seconds(3)));

    let monitors = client
        .get_resources_monitoring_configuration(&pb::GetResourcesMonitoringConfigurationRequest {})
        .await
        .unwrap();
    assert_eq!(monitors.memory, None);
    assert_eq!(monitors.volumes.iter().map(|v| (v.path.as_str(), v.enabled)).collect::<Vec<_>>(), [("/srv", true)]);

    // The first connection is still served.
    first_client.get_manifest(&pb::GetManifestRequest {}).await.unwrap();
    let unknown = agent_spec::update_agent(&store, Uuid::new_v4(), &spec(UPDATE)).await.unwrap_err();
    assert!(matches!(unknown, agent_spec::UpdateError::NoSuchAgent(_)), "{unknown}");
}

/// The manifest's scripts in the order of the file's, matched by their text (the manifest leaves display names out,
/// as coderd's does).
fn by_script_text<'m>(m: &'m pb::Manifest, spec: &AgentSpec) -> Vec<&'m pb::WorkspaceAgentScript> {
    assert_eq!(m.scripts.len(), spec.scripts.len());
    spec.scripts
        .iter()
        .map(|s| m.scripts.iter().find(|w| w.script == s.script).unwrap_or_else(|| panic!("{}", s.display_name)))
        .collect()
}
