//! Creating agents for operators and tests, through the store's admin writes: one with its owner, template and
//! workspace (`agent create`, `serve --demo`), or many at once for a load run (`loadgen --db`).

use std::time::Duration;

use agentwire_store::{NewAgent, NewMetadata, Store, StoreError};
use futures::stream::{self, StreamExt, TryStreamExt};
use uuid::Uuid;

/// An agent made by [`create_agent`].
#[derive(Debug, Clone)]
pub struct CreatedAgent {
    pub workspace: String,
    pub agent: String,
    pub agent_id: Uuid,
    pub token: Uuid,
}

/// Creates agent `agent` of workspace `workspace` (with its build), owned by `owner` (created when missing), from a
/// template named `template`. The agent reports this machine's architecture and operating system.
pub async fn create_agent(
    store: &Store,
    owner: &str,
    template: &str,
    workspace: &str,
    agent: &str,
) -> Result<CreatedAgent, StoreError> {
    let admin = store.admin();
    let owner_id = match admin.user_id(owner).await? {
        Some(id) => id,
        None => admin.create_user(owner, &format!("{owner}@example.com")).await?,
    };
    let template = admin.create_template("default", template).await?;
    let build = admin.create_workspace_with_build(owner_id, template.template_id, workspace).await?;
    let created = admin
        .create_agent(
            build.resource_id,
            &NewAgent {
                name: agent.to_owned(),
                directory: "/home/coder".to_owned(),
                architecture: std::env::consts::ARCH.to_owned(),
                operating_system: std::env::consts::OS.to_owned(),
                ..NewAgent::default()
            },
        )
        .await?;
    Ok(CreatedAgent {
        workspace: workspace.to_owned(),
        agent: agent.to_owned(),
        agent_id: created.id,
        token: created.auth_token,
    })
}

/// Metadata keys each agent created for a load run gets.
pub const DEFAULT_LOAD_METADATA_KEYS: usize = 2;
/// Agents created at once (SQLite serialises them anyway; PostgreSQL overlaps round trips).
const CREATE_CONCURRENCY: usize = 16;
/// The memory and `/` volume monitors load agents get, as the shipped example's (`examples/agent.toml`): the real
/// agent pushes its resources usage to an agent with monitors, and each push updates their states.
const LOAD_MONITOR_THRESHOLD_PERCENT: i64 = 90;
/// Metadata keys of load agents collect every 1..=10 s, drawn per key (Coder's template examples use 1–10 s).
const METADATA_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 1..=10;

/// Creates `n` agents for a load run (one workspace each, owned by the user `loadgen`, each with `metadata_keys`
/// metadata keys and the example's memory and `/` monitors) and returns their tokens.
pub async fn create_load_agents(store: &Store, n: usize, metadata_keys: usize) -> Result<Vec<String>, StoreError> {
    let admin = store.admin();
    let owner = match admin.user_id("loadgen").await? {
        Some(id) => id,
        None => admin.create_user("loadgen", "loadgen@example.com").await?,
    };
    let template = admin.create_template("default", "loadgen").await?;
    // Workspace names are unique per owner: a run id keeps repeated creations apart.
    let run = &Uuid::new_v4().simple().to_string()[..8];
    stream::iter(0..n)
        .map(|i| {
            let admin = store.admin();
            async move {
                let build =
                    admin.create_workspace_with_build(owner, template.template_id, &format!("lg-{run}-{i}")).await?;
                let agent = admin
                    .create_agent(
                        build.resource_id,
                        &NewAgent {
                            name: "main".to_owned(),
                            directory: "/home/coder".to_owned(),
                            architecture: "amd64".to_owned(),
                            operating_system: "linux".to_owned(),
                            ..NewAgent::default()
                        },
                    )
                    .await?;
                for k in 0..metadata_keys {
                    let every = Duration::from_secs(fastrand::u64(METADATA_INTERVAL_SECS));
                    admin
                        .add_metadata_description(
                            agent.id,
                            &NewMetadata {
                                key: format!("key{k}"),
                                display_name: format!("key {k}"),
                                script: "true".into(),
                                // Seconds, as coderd stores them (the agent multiplies the value by a second).
                                interval: every.as_secs() as i64,
                                timeout: 1,
                                display_order: k as i64,
                            },
                        )
                        .await?;
                }
                admin.add_memory_monitor(agent.id, true, LOAD_MONITOR_THRESHOLD_PERCENT).await?;
                admin.add_volume_monitor(agent.id, "/", true, LOAD_MONITOR_THRESHOLD_PERCENT).await?;
                Ok::<_, StoreError>(agent.auth_token.to_string())
            }
        })
        .buffered(CREATE_CONCURRENCY)
        .try_collect()
        .await
}
