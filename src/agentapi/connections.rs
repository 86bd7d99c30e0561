//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn report_connection(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::ReportConnectionRequest,
) -> Result<(), RpcError> {
    Err(RpcError::Unimplemented)
}
