//! GetServiceBanner (deprecated) and GetAnnouncementBanners (Coder's `announcement_banners.go`).
//!
//! Deployment-wide appearance settings from the site configuration, not per agent. Agents poll them every couple
//! of minutes; each call is one `site_configs` read (Coder's enterprise build does three).

use serde::Deserialize;

use super::{pb, AgentApi, RpcError};
use crate::session::Session;

/// Coder's `codersdk.BannerConfig` JSON; missing fields are their zero value.
#[derive(Debug, Default, Deserialize)]
struct BannerJson {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    message: String,
    #[serde(default)]
    background_color: String,
}

pub(super) async fn get_service_banner(
    api: &AgentApi,
    _session: &Session,
    _request: pb::GetServiceBannerRequest,
) -> Result<pb::ServiceBanner, RpcError> {
    // A legacy `service_banner` setting wins; otherwise Coder answers with the first announcement banner, for older
    // agents that only know this call.
    let banner = match api.store.service_banner().await.map_err(RpcError::store("fetch appearance"))? {
        Some(json) => decode::<Option<BannerJson>>(&json)?.unwrap_or_default(),
        None => announcement_banners(api).await?.into_iter().next().unwrap_or_default(),
    };
    Ok(pb::ServiceBanner {
        enabled: banner.enabled,
        message: banner.message,
        background_color: banner.background_color,
    })
}

pub(super) async fn get_announcement_banners(
    api: &AgentApi,
    _session: &Session,
    _request: pb::GetAnnouncementBannersRequest,
) -> Result<pb::GetAnnouncementBannersResponse, RpcError> {
    let announcement_banners = announcement_banners(api)
        .await?
        .into_iter()
        .map(|b| pb::BannerConfig { enabled: b.enabled, message: b.message, background_color: b.background_color })
        .collect();
    Ok(pb::GetAnnouncementBannersResponse { announcement_banners })
}

/// The configured banners; none configured is an empty list (Coder's AGPL answer).
async fn announcement_banners(api: &AgentApi) -> Result<Vec<BannerJson>, RpcError> {
    match api.store.announcement_banners().await.map_err(RpcError::store("fetch appearance"))? {
        Some(json) => Ok(decode::<Option<Vec<BannerJson>>>(&json)?.unwrap_or_default()),
        None => Ok(Vec::new()),
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, RpcError> {
    serde_json::from_str(json).map_err(|e| RpcError::invalid(format!("fetch appearance: decode banners: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::fixture;
    use super::*;

    #[tokio::test]
    async fn nothing_configured_is_empty() {
        let f = fixture().await;
        let before = f.store.queries().snapshot();
        let resp =
            get_announcement_banners(&f.api, &f.session, pb::GetAnnouncementBannersRequest {}).await.expect("ok");
        assert!(resp.announcement_banners.is_empty());
        assert_eq!(f.store.queries().snapshot().since(&before).total(), 1);
        let banner = get_service_banner(&f.api, &f.session, pb::GetServiceBannerRequest {}).await.expect("ok");
        assert_eq!(banner, pb::ServiceBanner::default());
    }

    #[tokio::test]
    async fn banners_come_from_the_site_config() {
        let f = fixture().await;
        f.store
            .admin()
            .set_announcement_banners(
                r##"[{"enabled":true,"message":"maintenance at 5","background_color":"#ff0000"},{"message":"second"}]"##,
            )
            .await
            .expect("set");
        let resp =
            get_announcement_banners(&f.api, &f.session, pb::GetAnnouncementBannersRequest {}).await.expect("ok");
        assert_eq!(
            resp.announcement_banners,
            vec![
                pb::BannerConfig {
                    enabled: true,
                    message: "maintenance at 5".into(),
                    background_color: "#ff0000".into()
                },
                pb::BannerConfig { enabled: false, message: "second".into(), background_color: String::new() },
            ]
        );
        // Older agents get the first announcement banner.
        let banner = get_service_banner(&f.api, &f.session, pb::GetServiceBannerRequest {}).await.expect("ok");
        assert_eq!((banner.enabled, banner.message.as_str()), (true, "maintenance at 5"));

        f.store.admin().set_service_banner(r#"{"enabled":true,"message":"legacy"}"#).await.expect("set");
        let banner = get_service_banner(&f.api, &f.session, pb::GetServiceBannerRequest {}).await.expect("ok");
        assert_eq!((banner.enabled, banner.message.as_str()), (true, "legacy"));
    }

    #[tokio::test]
    async fn bad_json_is_an_error_and_the_session_goes_on() {
        let f = fixture().await;
        f.store.admin().set_announcement_banners("{not json").await.expect("set");
        let err = get_announcement_banners(&f.api, &f.session, pb::GetAnnouncementBannersRequest {})
            .await
            .expect_err("bad json");
        assert!(err.to_string().starts_with("fetch appearance: decode banners: "), "{err}");
        f.store.admin().set_announcement_banners("[]").await.expect("set");
        let resp =
            get_announcement_banners(&f.api, &f.session, pb::GetAnnouncementBannersRequest {}).await.expect("ok");
        assert!(resp.announcement_banners.is_empty());
    }
}
