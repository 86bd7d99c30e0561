//! PushContextState (Coder's `context.go`, API 2.10): the agent's snapshot of instruction files, skills and MCP
//! servers found in the workspace.
//!
//! Coder's caps are checked before any query; the snapshot is then applied in one read-modify-write transaction by
//! the store (stale pushes are answered `accepted: false` with nothing written). Bodies are stored as protojson-style
//! JSON (proto field names, unpopulated fields omitted, bytes as base64); hashes, `bytea` in Coder, are stored as
//! lowercase hex in this schema's TEXT columns. Coder's optional chatd hydration is not part of this server.

use std::collections::HashSet;

use agentwire_store::{ContextResource, ContextState};
use serde_json::{Map, Value};

use super::{pb, AgentApi, AgentApiConfig, RpcError};
use crate::session::Session;

/// Coder's cap on `aggregate_hash` and each resource's `content_hash` (a SHA-256 is 32 bytes): fixed.
pub const DEFAULT_MAX_CONTEXT_HASH_BYTES: usize = 64;
/// Coder's cap on `snapshot_error` and each resource's `error`: fixed.
pub const DEFAULT_MAX_CONTEXT_ERROR_BYTES: usize = 4096;
/// Coder's cap on resources per push; `serve --max-context-resources`.
pub const DEFAULT_MAX_CONTEXT_RESOURCES: usize = 1000;
/// Coder's cap on a resource's `source` and `source_path`: fixed.
pub const DEFAULT_MAX_CONTEXT_SOURCE_BYTES: usize = 1024;
/// Coder's cap on one resource body, as encoded JSON; `serve --max-context-body-bytes`.
pub const DEFAULT_MAX_CONTEXT_BODY_BYTES: usize = 256 * 1024;
/// Coder's cap on the sum of encoded bodies of one push; `serve --max-context-total-body-bytes`.
pub const DEFAULT_MAX_CONTEXT_TOTAL_BODY_BYTES: usize = 4 * 1024 * 1024;

pub(super) async fn push_context_state(
    api: &AgentApi,
    session: &Session,
    request: pb::PushContextStateRequest,
) -> Result<pb::PushContextStateResponse, RpcError> {
    let state = validate(request, &api.config)?;
    let accepted = session.scope.push_context_state(&state).await.map_err(RpcError::store("push context state"))?;
    Ok(pb::PushContextStateResponse { accepted })
}

fn too_long(what: &str, len: usize, max: usize) -> Result<(), RpcError> {
    if len > max {
        return Err(RpcError::invalid(format!("{what} is {len} bytes, exceeds maximum of {max}")));
    }
    Ok(())
}

/// The caps that bound what one push can make the server store (resources, bodies) are the operator's
/// (`AgentApiConfig`, `serve --max-context-*`); the field caps (hashes, errors, sources) are Coder's, fixed.
fn validate(request: pb::PushContextStateRequest, config: &AgentApiConfig) -> Result<ContextState, RpcError> {
    let version = i64::try_from(request.version)
        .map_err(|_| RpcError::invalid(format!("version {} exceeds maximum of {}", request.version, i64::MAX)))?;
    too_long("aggregate_hash", request.aggregate_hash.len(), DEFAULT_MAX_CONTEXT_HASH_BYTES)?;
    too_long("snapshot_error", request.snapshot_error.len(), DEFAULT_MAX_CONTEXT_ERROR_BYTES)?;
    if request.resources.len() > config.max_context_resources {
        return Err(RpcError::invalid(format!(
            "resources count {} exceeds maximum of {}",
            request.resources.len(),
            config.max_context_resources
        )));
    }
    let mut seen = HashSet::new();
    let mut total_body = 0usize;
    let mut resources = Vec::with_capacity(request.resources.len());
    for (i, r) in request.resources.into_iter().enumerate() {
        let field = |name: &str| format!("resources[{i}].{name}");
        if r.source.is_empty() {
            return Err(RpcError::invalid(format!("{} is required", field("source"))));
        }
        too_long(&field("source"), r.source.len(), DEFAULT_MAX_CONTEXT_SOURCE_BYTES)?;
        if !seen.insert(r.source.clone()) {
            return Err(RpcError::invalid(format!("{} {:?} is duplicated", field("source"), r.source)));
        }
        let source_path = r.source_path.unwrap_or_default();
        too_long(&field("source_path"), source_path.len(), DEFAULT_MAX_CONTEXT_SOURCE_BYTES)?;
        too_long(&field("error"), r.error.len(), DEFAULT_MAX_CONTEXT_ERROR_BYTES)?;
        too_long(&field("content_hash"), r.content_hash.len(), DEFAULT_MAX_CONTEXT_HASH_BYTES)?;
        let size_bytes = i64::try_from(r.size_bytes).map_err(|_| {
            RpcError::invalid(format!("{} {} exceeds maximum of {}", field("size_bytes"), r.size_bytes, i64::MAX))
        })?;
        use pb::context_resource::Status;
        let status = match Status::try_from(r.status) {
            Ok(Status::Ok) => "ok",
            Ok(Status::Oversize) => "oversize",
            Ok(Status::Unreadable) => "unreadable",
            Ok(Status::Invalid) => "invalid",
            Ok(Status::Excluded) => "excluded",
            Ok(Status::Unspecified) | Err(_) => {
                return Err(RpcError::invalid(format!("{} must be specified", field("status"))))
            }
        };
        let (body_kind, body) = match &r.body {
            Some(b) => encode_body(b),
            None => return Err(RpcError::invalid(format!("{} is required", field("body")))),
        };
        too_long(&field("body"), body.len(), config.max_context_body_bytes)?;
        total_body = total_body.saturating_add(body.len());
        too_long("resources bodies", total_body, config.max_context_total_body_bytes)?;
        resources.push(ContextResource {
            source: r.source,
            body_kind: body_kind.to_owned(),
            body,
            content_hash: hex(&r.content_hash),
            size_bytes,
            status: status.to_owned(),
            error: r.error,
            source_path,
        });
    }
    Ok(ContextState {
        version,
        initial: request.initial,
        aggregate_hash: hex(&request.aggregate_hash),
        snapshot_error: request.snapshot_error,
        resources,
    })
}

/// The body's kind and its protojson-style encoding.
fn encode_body(body: &pb::context_resource::Body) -> (&'static str, String) {
    use pb::context_resource::Body;
    let mut o = Map::new();
    let kind = match body {
        Body::InstructionFile(b) => {
            put_bytes(&mut o, "content", &b.content);
            "instruction_file"
        }
        Body::Skill(b) => {
            put_bytes(&mut o, "meta", &b.meta);
            put_str(&mut o, "name", &b.name);
            put_str(&mut o, "description", &b.description);
            "skill"
        }
        Body::McpConfig(_) => "mcp_config",
        Body::McpServer(b) => {
            put_str(&mut o, "server_name", &b.server_name);
            put_str(&mut o, "description", &b.description);
            if !b.tools.is_empty() {
                let tools = b
                    .tools
                    .iter()
                    .map(|t| {
                        let mut to = Map::new();
                        put_str(&mut to, "name", &t.name);
                        put_str(&mut to, "description", &t.description);
                        if let Some(s) = &t.input_schema {
                            to.insert("input_schema".into(), struct_json(s));
                        }
                        Value::Object(to)
                    })
                    .collect();
                o.insert("tools".into(), Value::Array(tools));
            }
            "mcp_server"
        }
    };
    (kind, Value::Object(o).to_string())
}

fn put_str(o: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        o.insert(k.to_owned(), Value::String(v.to_owned()));
    }
}

fn put_bytes(o: &mut Map<String, Value>, k: &str, v: &[u8]) {
    if !v.is_empty() {
        o.insert(k.to_owned(), Value::String(base64(v)));
    }
}

fn struct_json(s: &prost_types::Struct) -> Value {
    Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())
}

fn value_json(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_json).collect()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Standard base64 with padding, as protojson writes `bytes`.
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{another_agent, fixture};
    use super::*;
    use pb::context_resource::{Body, Status};

    fn res(source: &str) -> pb::ContextResource {
        pb::ContextResource {
            source: source.into(),
            source_path: Some("/home/coder/AGENTS.md".into()),
            content_hash: vec![0xab, 0x01].into(),
            size_bytes: 5,
            status: Status::Ok as i32,
            error: String::new(),
            body: Some(Body::InstructionFile(pb::InstructionFileBody { content: b"hello".to_vec().into() })),
        }
    }

    fn push(version: u64, initial: bool, resources: Vec<pb::ContextResource>) -> pb::PushContextStateRequest {
        pb::PushContextStateRequest {
            version,
            aggregate_hash: vec![1, 2].into(),
            resources,
            initial,
            snapshot_error: String::new(),
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi"), "aGk=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
        let (kind, body) =
            encode_body(&Body::InstructionFile(pb::InstructionFileBody { content: b"hello".to_vec().into() }));
        assert_eq!((kind, body.as_str()), ("instruction_file", r#"{"content":"aGVsbG8="}"#));
        let (kind, body) = encode_body(&Body::McpConfig(pb::McpConfigBody {}));
        assert_eq!((kind, body.as_str()), ("mcp_config", "{}"));
        let (_, body) = encode_body(&Body::McpServer(pb::McpServerBody {
            server_name: "gh".into(),
            description: String::new(),
            tools: vec![pb::McpTool { name: "t".into(), description: String::new(), input_schema: None }],
        }));
        assert_eq!(body, r#"{"server_name":"gh","tools":[{"name":"t"}]}"#);
    }

    #[tokio::test]
    async fn accepts_newer_versions_in_one_transaction_and_refuses_stale_ones() {
        let f = fixture().await;
        let before = f.store.queries().snapshot();
        let resp = push_context_state(&f.api, &f.session, push(2, true, vec![res("a"), res("b")])).await.expect("push");
        assert!(resp.accepted);
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!((d.begins, d.commits), (1, 1), "{d:?}");
        assert_eq!(d.get("UpsertWorkspaceAgentContextResource"), 2);

        let before = f.store.queries().snapshot();
        let resp = push_context_state(&f.api, &f.session, push(2, false, vec![res("a")])).await.expect("stale");
        assert!(!resp.accepted);
        let d = f.store.queries().snapshot().since(&before);
        assert_eq!((d.commits, d.get("UpsertWorkspaceAgentContextSnapshot")), (0, 0));
        // `initial` (an agent restart) resets the version.
        assert!(push_context_state(&f.api, &f.session, push(1, true, vec![])).await.expect("initial").accepted);
        assert!(push_context_state(&f.api, &f.session, push(3, false, vec![])).await.expect("newer").accepted);
        // Another agent's snapshot is its own: version 1 is new to it.
        let (_, other) = another_agent(&f.store, "bob").await;
        assert!(push_context_state(&f.api, &other, push(1, false, vec![])).await.expect("theirs").accepted);
        assert!(!push_context_state(&f.api, &f.session, push(3, false, vec![])).await.expect("mine").accepted);
    }

    #[tokio::test]
    async fn caps_are_checked_before_any_query() {
        let f = fixture().await;
        let big = |n: usize| "x".repeat(n);
        let cases: Vec<(pb::PushContextStateRequest, &str)> = vec![
            (push(u64::MAX, false, vec![]), "version 18446744073709551615 exceeds maximum of 9223372036854775807"),
            (
                pb::PushContextStateRequest { aggregate_hash: vec![0; 65].into(), ..push(1, false, vec![]) },
                "aggregate_hash is 65 bytes, exceeds maximum of 64",
            ),
            (
                pb::PushContextStateRequest { snapshot_error: big(4097), ..push(1, false, vec![]) },
                "snapshot_error is 4097 bytes, exceeds maximum of 4096",
            ),
            (
                push(1, false, (0..1001).map(|i| res(&i.to_string())).collect()),
                "resources count 1001 exceeds maximum of 1000",
            ),
            (push(1, false, vec![res("")]), "resources[0].source is required"),
            (push(1, false, vec![res("a"), res("a")]), r#"resources[1].source "a" is duplicated"#),
            (push(1, false, vec![res(&big(1025))]), "resources[0].source is 1025 bytes, exceeds maximum of 1024"),
            (
                push(1, false, vec![pb::ContextResource { source_path: Some(big(1025)), ..res("a") }]),
                "resources[0].source_path is 1025 bytes, exceeds maximum of 1024",
            ),
            (
                push(1, false, vec![pb::ContextResource { error: big(4097), ..res("a") }]),
                "resources[0].error is 4097 bytes, exceeds maximum of 4096",
            ),
            (
                push(1, false, vec![pb::ContextResource { content_hash: vec![0; 65].into(), ..res("a") }]),
                "resources[0].content_hash is 65 bytes, exceeds maximum of 64",
            ),
            (
                push(1, false, vec![pb::ContextResource { size_bytes: u64::MAX, ..res("a") }]),
                "resources[0].size_bytes 18446744073709551615 exceeds maximum of 9223372036854775807",
            ),
            (
                push(1, false, vec![pb::ContextResource { status: 0, ..res("a") }]),
                "resources[0].status must be specified",
            ),
            (push(1, false, vec![pb::ContextResource { body: None, ..res("a") }]), "resources[0].body is required"),
            (
                push(
                    1,
                    false,
                    vec![pb::ContextResource {
                        body: Some(Body::InstructionFile(pb::InstructionFileBody {
                            content: vec![0; 200 * 1024].into(),
                        })),
                        ..res("a")
                    }],
                ),
                "resources[0].body is 273082 bytes, exceeds maximum of 262144",
            ),
        ];
        let before = f.store.queries().snapshot();
        for (request, text) in cases {
            let err = push_context_state(&f.api, &f.session, request).await.expect_err(text);
            assert_eq!(err.to_string(), text);
        }
        // 18 bodies of ~240 KiB encoded each: each under its cap, together over 4 MiB.
        let chunky: Vec<_> = (0..18)
            .map(|i| pb::ContextResource {
                body: Some(Body::InstructionFile(pb::InstructionFileBody { content: vec![0; 180 * 1024].into() })),
                ..res(&i.to_string())
            })
            .collect();
        let err = push_context_state(&f.api, &f.session, push(1, false, chunky)).await.expect_err("total");
        assert!(err.to_string().starts_with("resources bodies is "), "{err}");
        assert_eq!(f.store.queries().snapshot().since(&before), Default::default());
    }
}
