//! CreateSubAgent, DeleteSubAgent, ListSubAgents (Coder's `subagent.go`): dev-container agents that run under this
//! agent, on the same workspace resource.
//!
//! Tighter than Coder on ownership: Coder lets an agent delete any sub-agent of any workspace of the same owner; here
//! every statement carries this agent as the parent, so an id that is not one of its own children matches nothing.
//!
//! Apps on a *new* sub-agent are not stored: Coder derives each stored slug from a SHA-256 of the agent name and slug
//! and clamps sharing to the template's maximum, and neither the hash nor the template's limit is available to this
//! server yet. Each requested app is therefore answered with an `AppCreationError` (which Coder's agent logs; the
//! RPC itself still succeeds, as it does in Coder when apps fail), never silently dropped.

use agentwire_store::{NewSubAgent, SubAgent};
use uuid::Uuid;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

/// Coder's `provisioner.AgentNameRegex`, which [`valid_agent_name`] implements.
pub const AGENT_NAME_REGEX: &str = "(?i)^[a-z0-9](-?[a-z0-9])*$";
/// What each app of a new sub-agent is answered with until sub-agent apps are stored.
pub const APPS_NOT_SUPPORTED: &str = "sub-agent apps are not supported by this server";

pub(super) async fn create_sub_agent(
    _api: &AgentApi,
    session: &Session,
    request: pb::CreateSubAgentRequest,
) -> Result<pb::CreateSubAgentResponse, RpcError> {
    let display_apps = display_app_names(&request.display_apps)?;

    if let Some(raw_id) = &request.id {
        // Pre-provisioned (Terraform) dev-container agent: it exists already; set what the agent learned, keep the
        // rest. Coder ignores apps on this path too.
        let id = Uuid::from_slice(raw_id)
            .map_err(|_| RpcError::invalid(format!("parse agent id: invalid UUID (got {} bytes)", raw_id.len())))?;
        let sub = session
            .scope
            .update_sub_agent(id, &display_apps, &request.directory)
            .await
            .map_err(RpcError::store("update sub agent"))?
            .ok_or_else(|| RpcError::invalid("subagent does not belong to this parent agent"))?;
        return Ok(pb::CreateSubAgentResponse { agent: Some(to_proto(&sub)), app_creation_errors: Vec::new() });
    }

    if request.name.is_empty() {
        return Err(validation("name", "agent name cannot be empty".to_owned()));
    }
    if !valid_agent_name(&request.name) {
        return Err(validation(
            "name",
            format!("agent name {:?} does not match regex {:?}", request.name, AGENT_NAME_REGEX),
        ));
    }
    let sub = session
        .scope
        .create_sub_agent(&NewSubAgent {
            name: request.name,
            directory: request.directory,
            architecture: request.architecture,
            operating_system: request.operating_system,
            display_apps,
        })
        .await
        .map_err(RpcError::store("insert sub agent"))?;
    let app_creation_errors = (0..request.apps.len())
        .map(|i| pb::create_sub_agent_response::AppCreationError {
            index: i32::try_from(i).unwrap_or(i32::MAX),
            field: None,
            error: APPS_NOT_SUPPORTED.to_owned(),
        })
        .collect();
    Ok(pb::CreateSubAgentResponse { agent: Some(to_proto(&sub)), app_creation_errors })
}

pub(super) async fn delete_sub_agent(
    _api: &AgentApi,
    session: &Session,
    request: pb::DeleteSubAgentRequest,
) -> Result<pb::DeleteSubAgentResponse, RpcError> {
    let id = Uuid::from_slice(&request.id)
        .map_err(|_| RpcError::invalid(format!("invalid UUID (got {} bytes)", request.id.len())))?;
    let deleted = session.scope.delete_sub_agent(id).await.map_err(RpcError::store("delete sub agent"))?;
    if !deleted {
        // Coder's delete is an `:exec` that succeeds when nothing matches, so a retried delete is not an error; here
        // "nothing" also covers ids that are not this agent's children, which are left alone.
        tracing::debug!(agent_id = %session.agent_id(), sub_agent_id = %id, "delete sub agent: no such child");
    }
    Ok(pb::DeleteSubAgentResponse {})
}

pub(super) async fn list_sub_agents(
    _api: &AgentApi,
    session: &Session,
    _request: pb::ListSubAgentsRequest,
) -> Result<pb::ListSubAgentsResponse, RpcError> {
    let subs = session.scope.list_sub_agents().await.map_err(RpcError::store("list sub agents"))?;
    Ok(pb::ListSubAgentsResponse { agents: subs.iter().map(to_proto).collect() })
}

fn to_proto(s: &SubAgent) -> pb::SubAgent {
    pb::SubAgent {
        name: s.name.clone(),
        id: s.id.as_bytes().to_vec().into(),
        auth_token: s.auth_token.as_bytes().to_vec().into(),
    }
}

/// Coder's `codersdk.ValidationError` text.
fn validation(field: &str, detail: String) -> RpcError {
    RpcError::invalid(format!("field: {field} detail: {detail}"))
}

/// The DB names of the requested display apps, in order; an unknown value fails the call as in Coder.
fn display_app_names(raw: &[i32]) -> Result<Vec<String>, RpcError> {
    use pb::create_sub_agent_request::DisplayApp;
    raw.iter()
        .enumerate()
        .map(|(i, v)| {
            let name = match DisplayApp::try_from(*v) {
                Ok(DisplayApp::Vscode) => "vscode",
                Ok(DisplayApp::VscodeInsiders) => "vscode_insiders",
                Ok(DisplayApp::WebTerminal) => "web_terminal",
                Ok(DisplayApp::SshHelper) => "ssh_helper",
                Ok(DisplayApp::PortForwardingHelper) => "port_forwarding_helper",
                Err(_) => {
                    return Err(validation(&format!("display_apps[{i}]"), format!("{v:?} is not a valid display app")))
                }
            };
            Ok(name.to_owned())
        })
        .collect()
}

/// `(?i)^[a-z0-9](-?[a-z0-9])*$`: ASCII letters and digits, single hyphens between them.
fn valid_agent_name(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) if alnum(first) && alnum(last) => {
            b.iter().all(|c| alnum(c) || *c == b'-') && !b.windows(2).any(|w| w == b"--")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{another_agent, fixture, session_for};
    use super::*;
    use pb::create_sub_agent_request::DisplayApp;

    fn create(name: &str) -> pb::CreateSubAgentRequest {
        pb::CreateSubAgentRequest {
            name: name.to_owned(),
            directory: "/workspaces/app".into(),
            architecture: "arm64".into(),
            operating_system: "linux".into(),
            apps: Vec::new(),
            display_apps: vec![DisplayApp::Vscode as i32, DisplayApp::PortForwardingHelper as i32],
            id: None,
        }
    }

    fn ids(resp: &pb::ListSubAgentsResponse) -> Vec<Uuid> {
        resp.agents.iter().map(|a| Uuid::from_slice(&a.id).expect("id")).collect()
    }

    #[test]
    fn agent_name_rule() {
        for ok in ["a", "dev", "Dev-Container-1", "a-b-c", "9"] {
            assert!(valid_agent_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "a_b", "a.b", "dév", "a b"] {
            assert!(!valid_agent_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn creates_a_child_with_one_insert_and_a_working_token() {
        let f = fixture().await;
        let before = f.store.queries().snapshot();
        let resp = create_sub_agent(&f.api, &f.session, create("dev")).await.expect("create");
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!(d.total(), 1, "one INSERT, no parent read: {d:?}");
        assert_eq!(d.get("InsertWorkspaceAgent"), 1);
        assert!(resp.app_creation_errors.is_empty());
        let agent = resp.agent.expect("agent");
        assert_eq!(agent.name, "dev");
        let token = Uuid::from_slice(&agent.auth_token).expect("token");
        let child = f.store.resolve_agent_by_token(&token.to_string()).await.expect("resolve").expect("child");
        assert_eq!(child.id, Uuid::from_slice(&agent.id).expect("id"));
        assert_eq!(child.parent_id, Some(f.agent.id));
        assert_eq!(child.resource_id, f.session.agent().resource_id);
        assert_eq!((child.directory.as_str(), child.architecture.as_str()), ("/workspaces/app", "arm64"));
        assert_eq!(child.display_apps, r#"["vscode","port_forwarding_helper"]"#);
    }

    #[tokio::test]
    async fn validation_errors_write_nothing() {
        let f = fixture().await;
        let before = f.store.queries().snapshot();
        let cases = [
            (create(""), "field: name detail: agent name cannot be empty".to_owned()),
            (
                create("bad_name"),
                r#"field: name detail: agent name "bad_name" does not match regex "(?i)^[a-z0-9](-?[a-z0-9])*$""#
                    .to_owned(),
            ),
            (
                pb::CreateSubAgentRequest { display_apps: vec![0, 17], ..create("dev") },
                "field: display_apps[1] detail: 17 is not a valid display app".to_owned(),
            ),
            (
                pb::CreateSubAgentRequest { id: Some(vec![1, 2].into()), ..create("dev") },
                "parse agent id: invalid UUID (got 2 bytes)".to_owned(),
            ),
        ];
        for (request, text) in cases {
            let err = create_sub_agent(&f.api, &f.session, request).await.expect_err(&text);
            assert_eq!(err.to_string(), text);
        }
        let err = delete_sub_agent(&f.api, &f.session, pb::DeleteSubAgentRequest { id: vec![0; 4].into() })
            .await
            .expect_err("bad id");
        assert_eq!(err.to_string(), "invalid UUID (got 4 bytes)");
        assert_eq!(f.store.queries().snapshot().since(&before), Default::default());
    }

    #[tokio::test]
    async fn apps_are_reported_not_dropped() {
        let f = fixture().await;
        let app = |slug: &str| pb::create_sub_agent_request::App { slug: slug.to_owned(), ..Default::default() };
        let resp = create_sub_agent(
            &f.api,
            &f.session,
            pb::CreateSubAgentRequest { apps: vec![app("web"), app("api")], ..create("dev") },
        )
        .await
        .expect("create");
        assert!(resp.agent.is_some());
        let errs: Vec<(i32, &str)> = resp.app_creation_errors.iter().map(|e| (e.index, e.error.as_str())).collect();
        assert_eq!(errs, vec![(0, APPS_NOT_SUPPORTED), (1, APPS_NOT_SUPPORTED)]);
    }

    #[tokio::test]
    async fn list_and_delete_see_only_this_agents_children() {
        let f = fixture().await;
        let (other, other_session) = another_agent(&f.store, "bob").await;
        let mine = create_sub_agent(&f.api, &f.session, create("dev")).await.expect("mine").agent.expect("agent");
        let theirs =
            create_sub_agent(&f.api, &other_session, create("dev")).await.expect("theirs").agent.expect("agent");
        let my_id = Uuid::from_slice(&mine.id).expect("id");
        let their_id = Uuid::from_slice(&theirs.id).expect("id");

        let before = f.store.queries().snapshot();
        let list = list_sub_agents(&f.api, &f.session, pb::ListSubAgentsRequest {}).await.expect("list");
        assert_eq!(f.store.queries().snapshot().since(&before).total(), 1);
        assert_eq!(ids(&list), vec![my_id]);
        assert_eq!(list.agents[0], mine, "list returns name, id and token as create did");

        // Their child, and the other top-level agent itself: answered like a missing id, left alone.
        for id in [their_id, other.id] {
            delete_sub_agent(&f.api, &f.session, pb::DeleteSubAgentRequest { id: id.as_bytes().to_vec().into() })
                .await
                .expect("no-op");
        }
        let list = list_sub_agents(&f.api, &other_session, pb::ListSubAgentsRequest {}).await.expect("list");
        assert_eq!(ids(&list), vec![their_id]);
        assert!(session_for_token(&f, &theirs.auth_token).await, "their child still authenticates");

        let before = f.store.queries().snapshot();
        delete_sub_agent(&f.api, &f.session, pb::DeleteSubAgentRequest { id: mine.id.clone() }).await.expect("delete");
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits), (1, 1), "{d:?}");
        let list = list_sub_agents(&f.api, &f.session, pb::ListSubAgentsRequest {}).await.expect("list");
        assert!(list.agents.is_empty());
        assert!(!session_for_token(&f, &mine.auth_token).await, "a deleted child's token no longer resolves");
        // Deleting again is fine, as in Coder.
        delete_sub_agent(&f.api, &f.session, pb::DeleteSubAgentRequest { id: mine.id }).await.expect("again");
    }

    async fn session_for_token(f: &super::super::test_support::Fixture, token: &[u8]) -> bool {
        let token = Uuid::from_slice(token).expect("token");
        f.store.resolve_agent_by_token(&token.to_string()).await.expect("resolve").is_some()
    }

    #[tokio::test]
    async fn pre_provisioned_child_is_updated_only_under_its_parent() {
        let f = fixture().await;
        let (_, other_session) = another_agent(&f.store, "bob").await;
        let child = f
            .session
            .scope
            .create_sub_agent(&NewSubAgent { name: "tf-dev".into(), directory: "/tf".into(), ..Default::default() })
            .await
            .expect("child");
        let request = |dir: &str| pb::CreateSubAgentRequest {
            id: Some(child.id.as_bytes().to_vec().into()),
            directory: dir.to_owned(),
            display_apps: vec![DisplayApp::WebTerminal as i32],
            // Name and apps are ignored on this path, as in Coder.
            name: "ignored_name".into(),
            apps: vec![pb::create_sub_agent_request::App { slug: "x".into(), ..Default::default() }],
            ..create("x")
        };

        let err = create_sub_agent(&f.api, &other_session, request("/evil")).await.expect_err("not their child");
        assert_eq!(err.to_string(), "subagent does not belong to this parent agent");

        let before = f.store.queries().snapshot();
        let resp = create_sub_agent(&f.api, &f.session, request("")).await.expect("update");
        assert_eq!(f.store.queries().snapshot().since(&before).total(), 1);
        assert!(resp.app_creation_errors.is_empty());
        let agent = resp.agent.expect("agent");
        assert_eq!((agent.name.as_str(), Uuid::from_slice(&agent.id).expect("id")), ("tf-dev", child.id));
        assert_eq!(Uuid::from_slice(&agent.auth_token).expect("token"), child.auth_token);
        let resolved = f.store.resolve_agent_by_token(&child.auth_token.to_string()).await.expect("r").expect("child");
        assert_eq!((resolved.directory.as_str(), resolved.display_apps.as_str()), ("/tf", r#"["web_terminal"]"#));

        let child_session =
            session_for(&f.store, &agentwire_store::CreatedAgent { id: child.id, auth_token: child.auth_token }).await;
        assert_eq!(child_session.agent().parent_id, Some(f.agent.id));
    }
}
