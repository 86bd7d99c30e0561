//! ReportConnection (Coder's `connectionlog.go`): SSH/IDE/PTY sessions into the workspace, for the audit trail.
//!
//! Stored as Coder's enterprise SEED build does: one `UpsertConnectionLog` per call, keyed by
//! `(connection_id, workspace, agent name)`, so a disconnect completes its connect row once and a disconnect seen
//! first is stored with `connect_time = disconnect_time`. The workspace identity and agent name come from the
//! session, so no call reads the agent or the workspace (Coder's MAIN also takes them from its cache).

use agentwire_store::{now_micros, ConnectionEvent, UnixMicros};
use uuid::Uuid;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn report_connection(
    _api: &AgentApi,
    session: &Session,
    request: pb::ReportConnectionRequest,
) -> Result<(), RpcError> {
    // A missing connection reads as an empty one, as Go's getters make it: it fails on the id.
    let conn = request.connection.unwrap_or_default();
    let connection_id = Uuid::from_slice(&conn.id).map_err(|_| {
        RpcError::invalid(format!("connection id from bytes: invalid UUID (got {} bytes)", conn.id.len()))
    })?;
    if connection_id.is_nil() {
        return Err(RpcError::invalid("connection ID cannot be nil"));
    }
    let connect = match pb::connection::Action::try_from(conn.action) {
        Ok(pb::connection::Action::Connect) => true,
        Ok(pb::connection::Action::Disconnect) => false,
        other => {
            return Err(RpcError::invalid(format!(
                "unknown agent connection action {:?}",
                enum_name(other.map(|a| a.as_str_name()), conn.action)
            )))
        }
    };
    let kind = match pb::connection::Type::try_from(conn.r#type) {
        Ok(pb::connection::Type::Ssh) => "ssh",
        Ok(pb::connection::Type::Vscode) => "vscode",
        Ok(pb::connection::Type::Jetbrains) => "jetbrains",
        Ok(pb::connection::Type::ReconnectingPty) => "reconnecting_pty",
        other => {
            return Err(RpcError::invalid(format!(
                "unknown agent connection type {:?}",
                enum_name(other.map(|t| t.as_str_name()), conn.r#type)
            )))
        }
    };
    let event = ConnectionEvent {
        connection_id,
        time: event_time(conn.timestamp.as_ref()),
        connect,
        kind: kind.to_owned(),
        // Coder sets the code on disconnects only, and NULLs an empty reason.
        code: (!connect).then_some(i64::from(conn.status_code)),
        // The store turns "localhost" into 127.0.0.1 and anything unparsable into NULL, as Coder does.
        ip: Some(conn.ip),
        disconnect_reason: conn.reason.filter(|r| !r.is_empty()),
    };
    session.scope.insert_connection_log(&event).await.map_err(RpcError::store("export connection log"))
}

/// Go's `%q` of a proto enum prints its name, or the number when the value is not one it knows.
fn enum_name(known: Result<&'static str, prost::UnknownEnumValue>, raw: i32) -> String {
    known.map(str::to_owned).unwrap_or_else(|_| raw.to_string())
}

/// The agent's timestamp in microseconds. Coder stores an absent timestamp as the Unix epoch; a connection log dated
/// 1970 helps nobody, so an absent or unrepresentable one is stamped with the server's clock instead.
fn event_time(ts: Option<&prost_types::Timestamp>) -> UnixMicros {
    ts.and_then(|t| t.seconds.checked_mul(1_000_000)?.checked_add(i64::from(t.nanos) / 1_000))
        .unwrap_or_else(now_micros)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{another_agent, fixture};
    use super::*;

    fn conn(id: Uuid, action: pb::connection::Action, secs: i64) -> pb::Connection {
        pb::Connection {
            id: id.as_bytes().to_vec().into(),
            action: action as i32,
            r#type: pb::connection::Type::Ssh as i32,
            timestamp: Some(prost_types::Timestamp { seconds: secs, nanos: 5_000 }),
            ip: "10.0.0.7".into(),
            status_code: 0,
            reason: None,
            app_name: String::new(),
        }
    }

    fn req(c: pb::Connection) -> pb::ReportConnectionRequest {
        pb::ReportConnectionRequest { connection: Some(c) }
    }

    #[tokio::test]
    async fn validation_errors_in_coders_words_and_no_queries() {
        let f = fixture().await;
        let id = Uuid::new_v4();
        let before = f.store.queries().snapshot();
        let cases: Vec<(pb::ReportConnectionRequest, &str)> = vec![
            (pb::ReportConnectionRequest { connection: None }, "connection id from bytes: invalid UUID (got 0 bytes)"),
            (
                req(pb::Connection { id: vec![1, 2, 3].into(), ..conn(id, pb::connection::Action::Connect, 1) }),
                "connection id from bytes: invalid UUID (got 3 bytes)",
            ),
            (req(conn(Uuid::nil(), pb::connection::Action::Connect, 1)), "connection ID cannot be nil"),
            (
                req(conn(id, pb::connection::Action::Unspecified, 1)),
                r#"unknown agent connection action "ACTION_UNSPECIFIED""#,
            ),
            (
                req(pb::Connection { action: 9, ..conn(id, pb::connection::Action::Connect, 1) }),
                r#"unknown agent connection action "9""#,
            ),
            (
                req(pb::Connection { r#type: 0, ..conn(id, pb::connection::Action::Connect, 1) }),
                r#"unknown agent connection type "TYPE_UNSPECIFIED""#,
            ),
            (
                req(pb::Connection { r#type: 42, ..conn(id, pb::connection::Action::Connect, 1) }),
                r#"unknown agent connection type "42""#,
            ),
        ];
        for (request, text) in cases {
            let err = report_connection(&f.api, &f.session, request).await.expect_err(text);
            assert_eq!(err.to_string(), text);
        }
        assert_eq!(f.store.queries().snapshot().since(&before), Default::default());
        assert!(f.session.scope.connection_logs().await.expect("read").is_empty());
    }

    #[tokio::test]
    async fn connect_then_disconnect_completes_one_row_with_one_statement_each() {
        let f = fixture().await;
        let id = Uuid::new_v4();
        let before = f.store.queries().snapshot();
        report_connection(&f.api, &f.session, req(conn(id, pb::connection::Action::Connect, 100)))
            .await
            .expect("connect");
        let d = f.store.queries().snapshot().since(&before);
        // One autocommitted upsert: no agent or workspace read, no explicit transaction.
        assert_eq!(d.total(), 1, "{d:?}");
        assert_eq!(d.get("UpsertConnectionLog"), 1);
        assert_eq!(d.begins, 0);

        let rows = f.session.scope.connection_logs().await.expect("read");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].connection_id, Some(id));
        assert_eq!(rows[0].connect_time, 100_000_005);
        assert_eq!((rows[0].kind.as_str(), rows[0].ip.as_deref()), ("ssh", Some("10.0.0.7")));
        assert_eq!((rows[0].code, rows[0].disconnect_time, rows[0].disconnect_reason.as_deref()), (None, None, None));

        let mut bye = conn(id, pb::connection::Action::Disconnect, 160);
        bye.status_code = 255;
        bye.reason = Some("process exited".into());
        report_connection(&f.api, &f.session, req(bye)).await.expect("disconnect");
        let rows = f.session.scope.connection_logs().await.expect("read");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].connect_time, 100_000_005);
        assert_eq!(rows[0].disconnect_time, Some(160_000_005));
        assert_eq!((rows[0].code, rows[0].disconnect_reason.as_deref()), (Some(255), Some("process exited")));
    }

    #[tokio::test]
    async fn types_ips_and_first_seen_disconnects() {
        let f = fixture().await;
        use pb::connection::{Action, Type};
        for (i, (t, ip)) in
            [(Type::Vscode, "localhost"), (Type::Jetbrains, "not-an-ip"), (Type::ReconnectingPty, "::1")]
                .into_iter()
                .enumerate()
        {
            let c = pb::Connection {
                r#type: t as i32,
                ip: ip.into(),
                ..conn(Uuid::new_v4(), Action::Connect, 10 + i as i64)
            };
            report_connection(&f.api, &f.session, req(c)).await.expect("connect");
        }
        // A disconnect with no connect before it, an empty reason and a zero code.
        let c = pb::Connection { reason: Some(String::new()), ..conn(Uuid::new_v4(), Action::Disconnect, 20) };
        report_connection(&f.api, &f.session, req(c)).await.expect("disconnect");
        let rows = f.session.scope.connection_logs().await.expect("read");
        let got: Vec<(&str, Option<&str>)> = rows.iter().map(|r| (r.kind.as_str(), r.ip.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                ("vscode", Some("127.0.0.1")),
                ("jetbrains", None),
                ("reconnecting_pty", Some("::1")),
                ("ssh", Some("10.0.0.7"))
            ]
        );
        let last = &rows[3];
        assert_eq!((last.connect_time, last.disconnect_time), (20_000_005, Some(20_000_005)));
        assert_eq!((last.code, last.disconnect_reason.as_deref()), (Some(0), None));
    }

    #[tokio::test]
    async fn absent_timestamp_uses_the_server_clock() {
        let f = fixture().await;
        let before = now_micros();
        let c = pb::Connection { timestamp: None, ..conn(Uuid::new_v4(), pb::connection::Action::Connect, 0) };
        report_connection(&f.api, &f.session, req(c)).await.expect("connect");
        let rows = f.session.scope.connection_logs().await.expect("read");
        assert!(rows[0].connect_time >= before);
    }

    #[tokio::test]
    async fn another_agent_cannot_close_my_connection() {
        let f = fixture().await;
        let (_, other) = another_agent(&f.store, "bob").await;
        let id = Uuid::new_v4();
        report_connection(&f.api, &f.session, req(conn(id, pb::connection::Action::Connect, 1))).await.expect("mine");
        // The same connection id from another agent is that agent's own entry.
        report_connection(&f.api, &other, req(conn(id, pb::connection::Action::Disconnect, 2))).await.expect("theirs");
        let mine = f.session.scope.connection_logs().await.expect("read");
        assert_eq!((mine.len(), mine[0].disconnect_time), (1, None));
        let theirs = other.scope.connection_logs().await.expect("read");
        assert_eq!((theirs.len(), theirs[0].disconnect_time), (1, Some(2_000_005)));
    }
}
