//! Placeholder until this concern is implemented: answers Unimplemented (code 12), never a silent success.

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

pub(super) async fn get_service_banner(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::GetServiceBannerRequest,
) -> Result<pb::ServiceBanner, RpcError> {
    Err(RpcError::Unimplemented)
}

pub(super) async fn get_announcement_banners(
    _api: &AgentApi,
    _session: &Session,
    _request: pb::GetAnnouncementBannersRequest,
) -> Result<pb::GetAnnouncementBannersResponse, RpcError> {
    Err(RpcError::Unimplemented)
}
