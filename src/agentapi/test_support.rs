//! A real store (in-memory SQLite) with one demo agent and its session, for handler tests.

use std::sync::Arc;

use agentwire_store::{CreatedAgent, Store, StoreOptions};
use uuid::Uuid;

use super::{AgentApi, AgentApiConfig};
use crate::session::{ApiVersion, Session};

pub(crate) struct Fixture {
    pub api: AgentApi,
    pub session: Arc<Session>,
    pub store: Store,
    pub agent: CreatedAgent,
}

/// One user, template, workspace, build and agent; the session as the connect path would build it.
pub(crate) async fn fixture() -> Fixture {
    fixture_named("alice", "ws", "main").await
}

pub(crate) async fn fixture_named(user: &str, workspace: &str, agent_name: &str) -> Fixture {
    let store = Store::open("sqlite::memory:", StoreOptions::default()).await.expect("open store");
    let (_, agent) = store.admin().create_demo_agent(user, workspace, agent_name).await.expect("demo agent");
    let session = session_for(&store, &agent).await;
    Fixture { api: AgentApi::new(store.clone(), AgentApiConfig::default()), session, store, agent }
}

/// A second agent in the same store, for isolation tests.
pub(crate) async fn another_agent(store: &Store, user: &str) -> (CreatedAgent, Arc<Session>) {
    let (_, agent) = store.admin().create_demo_agent(user, &format!("{user}-ws"), "main").await.expect("agent");
    let session = session_for(store, &agent).await;
    (agent, session)
}

pub(crate) async fn session_for(store: &Store, agent: &CreatedAgent) -> Arc<Session> {
    let resolved =
        store.resolve_agent_by_token(&agent.auth_token.to_string()).await.expect("resolve").expect("known token");
    let scope = store.agent(&resolved);
    Arc::new(Session {
        scope,
        api_version: ApiVersion::CURRENT,
        replica_id: Uuid::new_v4(),
        coderd_relay: None,
        monitors: Default::default(),
    })
}
