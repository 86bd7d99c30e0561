//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn report_boundary_logs(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::ReportBoundaryLogsRequest,
) -> Result<pb::ReportBoundaryLogsResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
