//! Every `coder.agent.v2.Agent` handler, fed fuzzed request bytes against a real store (in-memory SQLite).
//!
//! # Input format
//!
//! `[rpc] [request…]`: the first byte picks the RPC (`byte % 19`, in `agent.proto` order, [`Rpc::ALL`]); the rest
//! is the request's protobuf encoding, decoded with prost as the router would. Before decoding, each 16-byte
//! placeholder of [`PLACEHOLDERS`] in the request is replaced by the real id it stands for (this agent's app,
//! script, log source or sub-agent, or the neighbour agent's), so inputs can name rows whose ids are random.
//!
//! # What runs
//!
//! The runtime (`current_thread`) and the store are built once per process; the store is replaced every
//! [`STORE_GENERATION`] inputs, so its size stays bounded. Each input gets a **fresh agent** (workspace, app,
//! script, metadata description, monitors, devcontainer, one sub-agent) and its session, so an input's outcome does
//! not depend on the inputs before it. One **neighbour** agent per store, with the same rows, is never the caller.
//!
//! # Properties
//!
//! * the handler never panics; it answers, or fails with `RpcError::Invalid` and a text: never `Store` (a healthy
//!   database must not fail on any request: input has to be refused before it reaches SQL) and never
//!   `Unimplemented` (every RPC is served);
//! * an answer decodes as the RPC's response type, and the echoing RPCs echo (UpdateLifecycle's state,
//!   UpdateStartup's report, UpdateStats' 30 s interval);
//! * afterwards the batchers flush without a failed flush, the session still serves GetManifest for its own agent,
//!   the agent row is there with `logs_length` within the store's budget;
//! * sub-agents follow a model: ListSubAgents after the call is the list before it, plus the one CreateSubAgent
//!   answered with, minus the one DeleteSubAgent removed; any other RPC leaves the list alone;
//! * the neighbour agent's rows (state, apps, scripts, metadata, devcontainers, log sources, logs, timings,
//!   connection logs, monitors, sub-agents) are exactly as they were: no request of one agent touches another's.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use agentwire::agentapi::error::RpcError;
use agentwire::agentapi::fuzzing::{dispatch, Dispatched, Rpc};
use agentwire::agentapi::{AgentApi, AgentApiConfig};
use agentwire::session::{ApiVersion, Session};
use agentwire_proto::agent::v2 as pb;
use agentwire_store::{
    AgentScope, NewAgent, NewApp, NewMetadata, NewScript, NewSubAgent, Store, StoreOptions, DEFAULT_MAX_LOGS_LENGTH,
};
use prost::Message;
use tokio::runtime::Runtime;
use uuid::Uuid;

/// Inputs served by one store before it is replaced by a fresh one.
pub const STORE_GENERATION: u64 = 2000;

/// What a placeholder in a request stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    App,
    Script,
    LogSource,
    SubAgent,
    NeighbourApp,
    NeighbourScript,
    NeighbourSubAgent,
}

/// The 16 bytes that stand for each id in an input (`AWFZ:` and the name, padded with `-`).
pub const PLACEHOLDERS: &[(Placeholder, &[u8; 16])] = &[
    (Placeholder::App, b"AWFZ:app--------"),
    (Placeholder::Script, b"AWFZ:script-----"),
    (Placeholder::LogSource, b"AWFZ:log-source-"),
    (Placeholder::SubAgent, b"AWFZ:sub-agent--"),
    (Placeholder::NeighbourApp, b"AWFZ:nb-app-----"),
    (Placeholder::NeighbourScript, b"AWFZ:nb-script--"),
    (Placeholder::NeighbourSubAgent, b"AWFZ:nb-subagent"),
];

/// The RPC and request bytes of an input, placeholders not yet replaced.
pub fn parse(data: &[u8]) -> Option<(Rpc, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((Rpc::ALL[usize::from(first) % Rpc::ALL.len()], rest))
}

/// One agent with its rows and session.
struct Agent {
    session: Arc<Session>,
    app: Uuid,
    script: Uuid,
    log_source: Uuid,
    sub_agent: Uuid,
}

/// Everything an agent owns that a request could change, to compare before and after.
#[derive(Debug, PartialEq)]
struct Rows {
    state: Option<agentwire_store::AgentState>,
    apps: Vec<agentwire_store::App>,
    scripts: Vec<agentwire_store::Script>,
    metadata: Vec<agentwire_store::Metadata>,
    devcontainers: Vec<agentwire_store::Devcontainer>,
    log_sources: Vec<agentwire_store::LogSource>,
    logs: Vec<agentwire_store::AgentLog>,
    timings: Vec<agentwire_store::ScriptTiming>,
    connections: Vec<agentwire_store::ConnectionLogEntry>,
    memory: Option<agentwire_store::MemoryMonitor>,
    volumes: Vec<agentwire_store::VolumeMonitor>,
    sub_agents: Vec<(Uuid, String)>,
}

async fn rows(scope: &AgentScope) -> Rows {
    Rows {
        state: scope.state().await.expect("read state"),
        apps: scope.list_apps().await.expect("list apps"),
        scripts: scope.list_scripts().await.expect("list scripts"),
        metadata: scope.list_metadata().await.expect("list metadata"),
        devcontainers: scope.list_devcontainers().await.expect("list devcontainers"),
        log_sources: scope.list_log_sources().await.expect("list log sources"),
        logs: scope.logs_after(0).await.expect("list logs"),
        timings: scope.script_timings().await.expect("list timings"),
        connections: scope.connection_logs().await.expect("list connection logs"),
        memory: scope.memory_monitor().await.expect("memory monitor"),
        volumes: scope.volume_monitors().await.expect("volume monitors"),
        sub_agents: sub_agents(scope).await,
    }
}

async fn sub_agents(scope: &AgentScope) -> Vec<(Uuid, String)> {
    let mut subs: Vec<_> =
        scope.list_sub_agents().await.expect("list sub agents").into_iter().map(|s| (s.id, s.name)).collect();
    subs.sort();
    subs
}

/// One store, its owner and template, the neighbour agent and a snapshot of its rows.
struct World {
    store: Store,
    api: AgentApi,
    owner: Uuid,
    template: Uuid,
    neighbour: Agent,
    neighbour_rows: Rows,
    served: u64,
}

static AGENTS: AtomicU64 = AtomicU64::new(0);

impl World {
    async fn open() -> World {
        let store = Store::open("sqlite::memory:", StoreOptions::default()).await.expect("open store");
        let admin = store.admin();
        let owner = admin.create_user("fuzz-owner", "fuzz@example.com").await.expect("user");
        let template = admin.create_template("default", "fuzz").await.expect("template").template_id;
        let neighbour = new_agent(&store, owner, template).await;
        let neighbour_rows = rows(&neighbour.session.scope).await;
        let api = AgentApi::new(store.clone(), AgentApiConfig::default());
        World { store, api, owner, template, neighbour, neighbour_rows, served: 0 }
    }
}

/// A fresh agent in a new workspace, with one row of each kind a handler reads or writes.
async fn new_agent(store: &Store, owner: Uuid, template: Uuid) -> Agent {
    let admin = store.admin();
    let n = AGENTS.fetch_add(1, Ordering::Relaxed);
    let build = admin.create_workspace_with_build(owner, template, &format!("ws{n}")).await.expect("workspace");
    let new = NewAgent {
        name: "main".to_owned(),
        directory: "/home/coder".to_owned(),
        environment_variables: Some(r#"{"FUZZ":"1"}"#.to_owned()),
        architecture: "amd64".to_owned(),
        operating_system: "linux".to_owned(),
        ..NewAgent::default()
    };
    let created = admin.create_agent(build.resource_id, &new).await.expect("agent");
    let app = NewApp {
        slug: "web".to_owned(),
        display_name: "Web".to_owned(),
        url: Some("http://localhost:8080".to_owned()),
        healthcheck_url: "http://localhost:8080/healthz".to_owned(),
        healthcheck_interval: 5,
        healthcheck_threshold: 3,
        ..NewApp::default()
    };
    let app = admin.add_app(created.id, &app).await.expect("app");
    let script = NewScript {
        display_name: "startup".to_owned(),
        script: "echo hi".to_owned(),
        run_on_start: true,
        timeout_seconds: 60,
        ..NewScript::default()
    };
    let script = admin.add_script(created.id, &script).await.expect("script");
    let metadata = NewMetadata {
        key: "cpu".to_owned(),
        display_name: "CPU".to_owned(),
        script: "true".to_owned(),
        interval: 1_000_000_000,
        timeout: 1_000_000_000,
        display_order: 0,
    };
    admin.add_metadata_description(created.id, &metadata).await.expect("metadata");
    admin.add_memory_monitor(created.id, true, 80).await.expect("memory monitor");
    admin.add_volume_monitor(created.id, "/home/coder", true, 90).await.expect("volume monitor");
    admin.add_devcontainer(created.id, "dev", "/workspaces/dev", ".devcontainer.json").await.expect("devcontainer");

    let resolved =
        store.resolve_agent_by_token(&created.auth_token.to_string()).await.expect("resolve").expect("token");
    let scope = store.agent(&resolved);
    let log_source = scope.list_log_sources().await.expect("log sources").first().expect("the script's source").id;
    let sub = NewSubAgent { name: "child".to_owned(), directory: "/workspaces/dev".to_owned(), ..Default::default() };
    let sub_agent = scope.create_sub_agent(&sub).await.expect("sub agent").id;
    let session = Arc::new(Session {
        scope,
        api_version: ApiVersion::CURRENT,
        replica_id: Uuid::new_v4(),
        coderd_relay: None,
        monitors: Default::default(),
    });
    Agent { session, app, script, log_source, sub_agent }
}

/// The request bytes with every placeholder replaced by its id.
fn substitute(body: &[u8], me: &Agent, neighbour: &Agent) -> Vec<u8> {
    let mut out = body.to_vec();
    for (what, pattern) in PLACEHOLDERS {
        let id = match what {
            Placeholder::App => me.app,
            Placeholder::Script => me.script,
            Placeholder::LogSource => me.log_source,
            Placeholder::SubAgent => me.sub_agent,
            Placeholder::NeighbourApp => neighbour.app,
            Placeholder::NeighbourScript => neighbour.script,
            Placeholder::NeighbourSubAgent => neighbour.sub_agent,
        };
        let mut at = 0;
        while let Some(i) = out[at..].windows(16).position(|w| w == *pattern) {
            out[at + i..at + i + 16].copy_from_slice(id.as_bytes());
            at += i + 16;
        }
    }
    out
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime"))
}

thread_local! {
    // libFuzzer runs inputs on one thread; the world is that thread's.
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

/// Runs one input and checks every property; panics (a crash to libFuzzer) on a violation.
pub fn run(data: &[u8]) {
    let Some((rpc, body)) = parse(data) else { return };
    let rt = runtime();
    let mut world = WORLD.with(|w| w.borrow_mut().take());
    if world.as_ref().is_none_or(|w| w.served >= STORE_GENERATION) {
        if let Some(old) = world.take() {
            rt.block_on(old.store.close());
        }
        world = Some(rt.block_on(World::open()));
    }
    let Some(mut w) = world else { unreachable!("just opened") };
    rt.block_on(check(&w, rpc, body));
    w.served += 1;
    WORLD.with(|slot| *slot.borrow_mut() = Some(w));
}

async fn check(w: &World, rpc: Rpc, body: &[u8]) {
    let me = new_agent(&w.store, w.owner, w.template).await;
    let body = substitute(body, &me, &w.neighbour);
    let subs_before = sub_agents(&me.session.scope).await;
    let batchers_before = w.store.batcher_stats();

    let outcome = dispatch(&w.api, &me.session, rpc, &body).await;
    let mut expected_subs = subs_before.clone();
    match &outcome {
        Dispatched::Undecodable(_) => {}
        Dispatched::Failed(RpcError::Invalid(text)) => assert!(!text.is_empty(), "{rpc:?}: an empty error text"),
        Dispatched::Failed(e) => panic!("{rpc:?}: a request made the handler fail with {e:?}"),
        Dispatched::Answered(reply) => answered(rpc, &body, reply, &mut expected_subs),
    }

    // Batched writes of this request land without breaking a flush (which would lose every agent's rows).
    w.store.flush().await;
    let batchers = w.store.batcher_stats();
    for (name, before, after) in [
        ("stats", &batchers_before.stats, &batchers.stats),
        ("metadata", &batchers_before.metadata, &batchers.metadata),
        ("heartbeats", &batchers_before.heartbeats, &batchers.heartbeats),
        ("monitors", &batchers_before.monitors, &batchers.monitors),
    ] {
        assert_eq!(before.flush_errors, after.flush_errors, "{rpc:?}: the {name} batcher failed a flush");
    }

    // The session is still good for its own agent.
    let manifest = match dispatch(&w.api, &me.session, Rpc::GetManifest, &[]).await {
        Dispatched::Answered(reply) => pb::Manifest::decode(&reply[..]).expect("manifest decodes"),
        other => panic!("{rpc:?}: GetManifest afterwards: {other:?}"),
    };
    assert_eq!(&manifest.agent_id[..], me.session.agent_id().as_bytes(), "{rpc:?}: manifest of another agent");
    let state = me.session.scope.state().await.expect("read state");
    let state = state.unwrap_or_else(|| panic!("{rpc:?}: the agent row is gone"));
    assert!(
        (0..=DEFAULT_MAX_LOGS_LENGTH).contains(&state.logs_length),
        "{rpc:?}: logs_length {} outside the budget",
        state.logs_length
    );

    let mut subs_after = sub_agents(&me.session.scope).await;
    subs_after.sort();
    expected_subs.sort();
    if rpc == Rpc::DeleteSubAgent && matches!(outcome, Dispatched::Answered(_)) {
        // The id deleted is the request's: whatever it named, only that child may be gone.
        let request = pb::DeleteSubAgentRequest::decode(&body[..]).expect("it decoded before");
        expected_subs.retain(|(id, _)| id.as_bytes()[..] != request.id[..]);
    }
    assert_eq!(subs_after, expected_subs, "{rpc:?}: sub-agents differ from the model");

    let neighbour = rows(&w.neighbour.session.scope).await;
    assert!(neighbour == w.neighbour_rows, "{rpc:?}: the neighbour agent's rows changed");
}

/// Properties of a successful answer; `subs` is updated with what it created.
fn answered(rpc: Rpc, body: &[u8], reply: &[u8], subs: &mut Vec<(Uuid, String)>) {
    fn decode<T: Message + Default>(rpc: Rpc, bytes: &[u8]) -> T {
        T::decode(bytes).unwrap_or_else(|e| panic!("{rpc:?}: the answer does not decode: {e}"))
    }
    match rpc {
        Rpc::UpdateStats => {
            let reply: pb::UpdateStatsResponse = decode(rpc, reply);
            assert_eq!(reply.report_interval, Some(prost_types::Duration { seconds: 30, nanos: 0 }));
        }
        Rpc::UpdateLifecycle => {
            let request: pb::UpdateLifecycleRequest = decode(rpc, body);
            let reply: pb::Lifecycle = decode(rpc, reply);
            assert_eq!(Some(reply.state), request.lifecycle.map(|l| l.state), "{rpc:?}: the state is not echoed");
            assert!(reply.changed_at.is_some(), "{rpc:?}: no changed_at");
        }
        Rpc::UpdateStartup => {
            let request: pb::UpdateStartupRequest = decode(rpc, body);
            let reply: pb::Startup = decode(rpc, reply);
            assert_eq!(reply, request.startup.unwrap_or_default(), "{rpc:?}: the startup is not echoed");
        }
        Rpc::CreateSubAgent => {
            let request: pb::CreateSubAgentRequest = decode(rpc, body);
            let reply: pb::CreateSubAgentResponse = decode(rpc, reply);
            let agent = reply.agent.expect("CreateSubAgent answered without an agent");
            let id = Uuid::from_slice(&agent.id).expect("sub-agent id is a UUID");
            assert_eq!(agent.auth_token.len(), 16, "sub-agent token is not a UUID");
            match request.id {
                // An existing child was updated: the list keeps the same members.
                Some(raw) => assert_eq!(&raw[..], id.as_bytes(), "updated another sub-agent than asked"),
                None => {
                    assert_eq!(agent.name, request.name);
                    assert_eq!(reply.app_creation_errors.len(), request.apps.len());
                    subs.push((id, agent.name));
                }
            }
        }
        Rpc::GetManifest => drop(decode::<pb::Manifest>(rpc, reply)),
        Rpc::GetServiceBanner => drop(decode::<pb::ServiceBanner>(rpc, reply)),
        Rpc::BatchUpdateAppHealths => drop(decode::<pb::BatchUpdateAppHealthResponse>(rpc, reply)),
        Rpc::BatchUpdateMetadata => drop(decode::<pb::BatchUpdateMetadataResponse>(rpc, reply)),
        Rpc::BatchCreateLogs => drop(decode::<pb::BatchCreateLogsResponse>(rpc, reply)),
        Rpc::GetAnnouncementBanners => drop(decode::<pb::GetAnnouncementBannersResponse>(rpc, reply)),
        Rpc::ScriptCompleted => drop(decode::<pb::WorkspaceAgentScriptCompletedResponse>(rpc, reply)),
        Rpc::GetResourcesMonitoringConfiguration => {
            drop(decode::<pb::GetResourcesMonitoringConfigurationResponse>(rpc, reply))
        }
        Rpc::PushResourcesMonitoringUsage => drop(decode::<pb::PushResourcesMonitoringUsageResponse>(rpc, reply)),
        Rpc::ReportConnection => assert!(reply.is_empty(), "ReportConnection answers google.protobuf.Empty"),
        Rpc::DeleteSubAgent => drop(decode::<pb::DeleteSubAgentResponse>(rpc, reply)),
        Rpc::ListSubAgents => drop(decode::<pb::ListSubAgentsResponse>(rpc, reply)),
        Rpc::ReportBoundaryLogs => drop(decode::<pb::ReportBoundaryLogsResponse>(rpc, reply)),
        Rpc::UpdateAppStatus => drop(decode::<pb::UpdateAppStatusResponse>(rpc, reply)),
        Rpc::PushContextState => drop(decode::<pb::PushContextStateResponse>(rpc, reply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The isolation check can fail: a write to the neighbour between its snapshot and an input is caught.
    #[test]
    #[should_panic(expected = "the neighbour agent's rows changed")]
    fn a_changed_neighbour_is_caught() {
        let rt = runtime();
        let w = rt.block_on(World::open());
        rt.block_on(async {
            w.neighbour.session.scope.update_lifecycle(agentwire_store::LifecycleState::Ready, 1).await.expect("write the neighbour");
            check(&w, Rpc::GetManifest, &[]).await;
        });
    }
}
